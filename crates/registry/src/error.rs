//! The distribution spec's error model: every failure a client sees is one of its codes, with the
//! JSON body `{"errors":[{"code","message","detail"}]}` and the status the spec gives it.

use http::StatusCode;
use serde::Serialize;

/// An error code from the distribution spec (plus the two distribution added that clients know).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The blob is not in the repository.
    BlobUnknown,
    /// The upload's data or chunk ordering is not acceptable.
    BlobUploadInvalid,
    /// The upload session does not exist (or belongs to another repository).
    BlobUploadUnknown,
    /// A digest was malformed or did not match the content.
    DigestInvalid,
    /// A manifest references a blob the repository does not hold.
    ManifestBlobUnknown,
    /// A manifest could not be parsed or fails validation.
    ManifestInvalid,
    /// The manifest or tag is not in the repository.
    ManifestUnknown,
    /// The repository name is not valid.
    NameInvalid,
    /// The repository does not exist.
    NameUnknown,
    /// Content length did not match, or content is too large.
    SizeInvalid,
    /// Authentication is required.
    Unauthorized,
    /// Access to the resource was denied.
    Denied,
    /// The operation is not supported (or disabled, as delete may be).
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// A pagination parameter is invalid (distribution's extension, for `n`).
    PaginationNumberInvalid,
    /// A tag is invalid (legacy code, still what clients expect for a bad tag).
    TagInvalid,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
        }
    }

    /// The status the spec (or distribution, where the spec is silent) pairs with the code.
    pub fn default_status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationNumberInvalid
            | ErrorCode::TagInvalid => StatusCode::BAD_REQUEST,
        }
    }
}

/// A failed request, as the client will see it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{} {}: {message}", code.as_str(), status.as_u16())]
pub struct RegistryError {
    /// The spec's error code.
    pub code: ErrorCode,
    /// The HTTP status.
    pub status: StatusCode,
    /// A human-readable message saying what was wrong and, where possible, what to do.
    pub message: String,
    /// Structured detail (the offending digest, name, …).
    pub detail: Option<serde_json::Value>,
    /// Headers the response carries besides the body's (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(http::header::HeaderName, String)>,
}

impl RegistryError {
    /// An error with the code's usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RegistryError {
        RegistryError {
            code,
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// Overrides the HTTP status (416 for ranges, 413 for oversized manifests, …).
    pub fn with_status(mut self, status: StatusCode) -> RegistryError {
        self.status = status;
        self
    }

    /// Attaches structured detail.
    pub fn with_detail(mut self, detail: impl Serialize) -> RegistryError {
        self.detail = serde_json::to_value(detail).ok();
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: http::header::HeaderName, value: impl Into<String>) -> RegistryError {
        self.headers.push((name, value.into()));
        self
    }

    /// A server-side failure (storage I/O). The message is logged; the client gets a 500.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> RegistryError {
        tracing::error!("{context}: {error}");
        RegistryError {
            code: ErrorCode::Unsupported,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("{context}: internal storage error"),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// A backend that cannot be reached now: the client gets a 503 with `Retry-After`, so
    /// docker and containerd retry instead of giving up on the image.
    pub fn unavailable(backend: &str, reason: &str) -> RegistryError {
        tracing::error!("{backend} unavailable: {reason}");
        RegistryError {
            code: ErrorCode::Unsupported,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "storage backend {backend} is unavailable ({reason}); nothing was stored, retry shortly"
            ),
            detail: None,
            headers: vec![(http::header::RETRY_AFTER, "1".to_owned())],
        }
    }

    /// The JSON body the spec prescribes.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<&'a serde_json::Value>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.detail.as_ref(),
            }],
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Shorthand for handler results.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_spec_shaped() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({"digest": "sha256:x"}));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "blob unknown to registry");
        assert_eq!(v["errors"][0]["detail"]["digest"], "sha256:x");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
