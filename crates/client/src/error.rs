//! What can go wrong talking to a registry, worded so that a user knows what to do next.

use std::fmt;
use std::path::PathBuf;

use rbuild_oci::{Digest, StoreError};
use serde::Deserialize;

use crate::credentials::{CredentialOrigin, CredentialsError};

/// One entry of a registry's `{"errors":[…]}` body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RegistryErrorDetail {
    /// The spec's code (`MANIFEST_UNKNOWN`, `DENIED`, …).
    #[serde(default)]
    pub code: String,
    /// The registry's message.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for RegistryErrorDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{}: {}", self.code, self.message),
            (false, true) => f.write_str(&self.code),
            _ => f.write_str(&self.message),
        }
    }
}

/// The details a registry sent with an error, as one displayable list (empty when none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details(pub Vec<RegistryErrorDetail>);

impl Details {
    /// Reads an error body: the spec's JSON, else the start of the text.
    pub fn parse(body: &[u8]) -> Details {
        #[derive(Deserialize)]
        struct Body {
            errors: Vec<RegistryErrorDetail>,
        }
        if let Ok(parsed) = rbuild_oci::json::from_slice::<Body>(body) {
            return Details(parsed.errors);
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() || text.starts_with('<') {
            return Details::default();
        }
        let mut message: String = text.chars().take(300).collect();
        if message.len() < text.len() {
            message.push('…');
        }
        Details(vec![RegistryErrorDetail {
            code: String::new(),
            message,
        }])
    }

    /// Whether any entry has `code`.
    pub fn has(&self, code: &str) -> bool {
        self.0.iter().any(|d| d.code == code)
    }
}

impl fmt::Display for Details {
    /// `" (CODE: message; CODE2: …)"`, or nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" (")?;
        for (i, detail) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{detail}")?;
        }
        f.write_str(")")
    }
}

/// What the user was doing with a repository when access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reading.
    Pull,
    /// Writing.
    Push,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Pull => "pull",
            Action::Push => "push",
        })
    }
}

/// An error from the registry client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A certificate or key file could not be used.
    #[error("TLS setup: {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file named by URL (`ADD https://…`) could not be downloaded.
    #[error("downloading {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The registry could not be reached at all.
    #[error("cannot reach registry {registry} at {url}: {reason}")]
    Unreachable {
        /// The registry (`host[:port]`).
        registry: String,
        /// The URL tried.
        url: String,
        /// The cause, with its sources.
        reason: String,
    },
    /// A request failed at the HTTP level, or its body broke off.
    #[error("{registry}: {request}: {reason}")]
    Http {
        /// The registry.
        registry: String,
        /// The request (`GET /v2/…`).
        request: String,
        /// The cause, with its sources.
        reason: String,
    },
    /// The registry refused access (401 after authenticating, or 403).
    #[error(
        "{action} access denied for {registry}/{repository}: the repository does not exist or needs `rbuild login {login}`{details}"
    )]
    AccessDenied {
        /// Pull or push.
        action: Action,
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The server to log in to.
        login: String,
        /// What the registry said.
        details: Details,
    },
    /// The credentials were rejected by the registry or its token service.
    #[error(
        "authentication to {registry} failed: the registry rejected the credentials from {source_desc}; {remedy}{details}"
    )]
    AuthenticationFailed {
        /// The registry.
        registry: String,
        /// Where the credentials came from.
        source_desc: String,
        /// How to correct them there.
        remedy: String,
        /// What the registry said.
        details: Details,
    },
    /// The registry's token service failed or answered something unusable.
    #[error("{registry}: token service {realm}: {reason}")]
    Token {
        /// The registry.
        registry: String,
        /// The token endpoint.
        realm: String,
        /// What went wrong.
        reason: String,
    },
    /// The tag or digest does not exist.
    #[error("manifest unknown: {what} not found in {registry}/{repository}{details}")]
    ManifestUnknown {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// `tag v1` or `digest sha256:…`.
        what: String,
        /// What the registry said.
        details: Details,
    },
    /// The repository does not exist (or is hidden from this user).
    #[error(
        "repository {registry}/{repository} not found: check the name, or run `rbuild login {login}` if it is private{details}"
    )]
    RepositoryUnknown {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The server to log in to.
        login: String,
        /// What the registry said.
        details: Details,
    },
    /// A blob a manifest names is missing from the registry.
    #[error("blob {digest} not found in {registry}/{repository}{details}")]
    BlobUnknown {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// The blob.
        digest: Digest,
        /// What the registry said.
        details: Details,
    },
    /// The registry is rate-limiting.
    #[error("{registry}: too many requests; wait and retry, or log in for a higher limit{details}")]
    TooManyRequests {
        /// The registry.
        registry: String,
        /// What the registry said.
        details: Details,
    },
    /// Any other error status.
    #[error("{registry}/{repository}: {request} failed with HTTP {status}{details}")]
    Status {
        /// The registry.
        registry: String,
        /// The repository (empty for registry-wide requests).
        repository: String,
        /// The request (`PUT /v2/…`).
        request: String,
        /// The HTTP status code.
        status: u16,
        /// What the registry said.
        details: Details,
    },
    /// The registry answered something the protocol does not allow.
    #[error("{registry}: {request}: {reason}")]
    Protocol {
        /// The registry.
        registry: String,
        /// The request.
        request: String,
        /// What was wrong.
        reason: String,
    },
    /// Content did not hash to the digest it was fetched by (or the registry announced).
    #[error(
        "digest mismatch for {what} from {from}: expected {expected}, got {actual}; the registry's copy is corrupt or was changed in transit"
    )]
    DigestMismatch {
        /// Where it came from: `registry/repository`.
        from: String,
        /// What was fetched (`layer`, `manifest for tag v1`).
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content was longer or shorter than its descriptor said.
    #[error(
        "size mismatch for {what} {digest} from {registry}/{repository}: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What was fetched.
        what: String,
        /// The content's digest.
        digest: Digest,
        /// The size the descriptor gives.
        expected: u64,
        /// The size that arrived (so far, when it was too long).
        actual: u64,
    },
    /// A document was larger than rbuild accepts for its kind.
    #[error("{what} from {registry}/{repository} is larger than {limit} bytes")]
    TooLarge {
        /// The registry.
        registry: String,
        /// The repository.
        repository: String,
        /// What it is.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A Docker schema 1 manifest: docker and containerd dropped support for these.
    #[error(
        "{reference} is a Docker schema 1 image, which rbuild (like current docker and containerd) does not support; re-push it with a current tool to convert it"
    )]
    Schema1 {
        /// The image.
        reference: String,
    },
    /// A manifest of a media type rbuild cannot use here.
    #[error(
        "{reference}: unsupported manifest media type {media_type:?}; expected an OCI or Docker schema 2 image manifest or index"
    )]
    UnsupportedMediaType {
        /// The image.
        reference: String,
        /// The media type.
        media_type: String,
    },
    /// A manifest or config that does not parse.
    #[error("{reference}: invalid {what}: {reason}")]
    Invalid {
        /// The image.
        reference: String,
        /// `manifest`, `image index`, `image config`.
        what: String,
        /// Why.
        reason: String,
    },
    /// The index has no manifest for the requested platform.
    #[error("{reference} has no image for platform {platform}; it has: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The requested platform.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// The reference asks for one digest but the content has another.
    #[error("{reference}: the manifest to push has digest {actual}, but the reference pins {expected}")]
    ReferenceDigest {
        /// The reference.
        reference: String,
        /// The digest in the reference.
        expected: Digest,
        /// The manifest's digest.
        actual: Digest,
    },
    /// Content needed from the local store is not there.
    #[error("{what} {digest} is not in the local store at {store}")]
    MissingContent {
        /// What it is.
        what: String,
        /// Its digest.
        digest: Digest,
        /// The store's directory.
        store: PathBuf,
    },
    /// The local store failed.
    #[error("local store: {context}")]
    Store {
        /// What was being done.
        context: String,
        /// The cause.
        source: StoreError,
    },
    /// Credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl ClientError {
    /// `registry` rejected the credentials from `origin`.
    pub(crate) fn rejected(origin: &CredentialOrigin, registry: &str, details: Details) -> ClientError {
        ClientError::AuthenticationFailed {
            registry: registry.to_owned(),
            source_desc: origin.describe(),
            remedy: origin.remedy(registry),
            details,
        }
    }

    /// Whether retrying the same request might succeed (network trouble, not a refusal).
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate problem does not go away by retrying.
            ClientError::Unreachable { reason, .. } => !reason.to_lowercase().contains("certificate"),
            ClientError::Http { .. } | ClientError::TooManyRequests { .. } => true,
            ClientError::Status { status, .. } => matches!(status, 408 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}

pub(crate) use rbuild_oci::report::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spec_error_bodies() {
        let d = Details::parse(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v1"}}]}"#,
        );
        assert!(d.has("MANIFEST_UNKNOWN"));
        assert_eq!(d.to_string(), " (MANIFEST_UNKNOWN: manifest unknown)");
        assert_eq!(Details::parse(b"").to_string(), "");
        assert_eq!(Details::parse(b"<html>nope</html>").to_string(), "");
        assert_eq!(Details::parse(b"plain text\n").to_string(), " (plain text)");
        let long = "x".repeat(1000);
        assert!(Details::parse(long.as_bytes()).to_string().len() < 320);
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = ClientError::ManifestUnknown {
            registry: "ghcr.io".into(),
            repository: "o/r".into(),
            what: "tag v1".into(),
            details: Details::default(),
        };
        assert_eq!(e.to_string(), "manifest unknown: tag v1 not found in ghcr.io/o/r");
        let e = ClientError::AccessDenied {
            action: Action::Pull,
            registry: "docker.io".into(),
            repository: "library/nope".into(),
            login: "docker.io".into(),
            details: Details::default(),
        };
        assert!(
            e.to_string()
                .starts_with("pull access denied for docker.io/library/nope")
        );
        assert!(e.to_string().contains("rbuild login docker.io"));
    }
}
