//! Image references as users type them (`busybox`, `localhost:5000/app:1.0`,
//! `ghcr.io/o/r@sha256:…`), normalised the way docker does.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};
use crate::name::{NameError, RepositoryName, Tag};

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("empty image reference")]
    Empty,
    /// The registry host part is not a valid `host[:port]`.
    #[error("invalid registry host {0:?} in image reference")]
    InvalidRegistry(String),
    /// The repository name or tag is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The digest after `@` is invalid.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A fully qualified image reference: registry, repository, and a tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: RepositoryName,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

impl Reference {
    /// Builds a reference from its parts.
    pub fn new(
        registry: impl Into<String>,
        repository: RepositoryName,
        tag: Option<Tag>,
        digest: Option<Digest>,
    ) -> Reference {
        Reference {
            registry: registry.into(),
            repository,
            tag,
            digest,
        }
    }

    /// The registry host, with port if one was given (`docker.io` when none was).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository name within the registry (`library/busybox` for `busybox`).
    pub fn repository(&self) -> &RepositoryName {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&Tag> {
        self.tag.as_ref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same image pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// A host is `domain[:port]`: dot-separated labels of letters, digits and `-`, or a bracketed
/// IPv6 address, optionally followed by a numeric port.
fn is_valid_registry(host: &str) -> bool {
    let (domain_ok, port) = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, rest)) => {
                let port = match rest {
                    "" => None,
                    _ => match rest.strip_prefix(':') {
                        Some(port) => Some(port),
                        None => return false,
                    },
                };
                let address_ok =
                    !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
                (address_ok, port)
            }
            None => return false,
        },
        None => {
            let (domain, port) = match host.split_once(':') {
                Some((d, p)) => (d, Some(p)),
                None => (host, None),
            };
            let labels_ok = !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            (labels_ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    domain_ok && port_ok
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it was a port).
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag.parse::<Tag>()?)),
            _ => (rest, None),
        };
        let (registry, repository) = match path.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !is_valid_registry(first) {
                    return Err(ReferenceError::InvalidRegistry(first.to_owned()));
                }
                let registry = if first == "index.docker.io" || first == "registry-1.docker.io" {
                    DOCKER_HUB
                } else {
                    first
                };
                (registry.to_owned(), remainder.to_owned())
            }
            Some(_) => (DOCKER_HUB.to_owned(), path.to_owned()),
            None => (DOCKER_HUB.to_owned(), path.to_owned()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".parse::<Tag>()?),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry,
            repository: repository.parse()?,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts how `input` splits into registry, repository, tag and digest.
    fn check(input: &str, registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        let r: Reference = input.parse().unwrap();
        assert_eq!(r.registry(), registry, "{input}");
        assert_eq!(r.repository().as_str(), repository, "{input}");
        assert_eq!(r.tag().map(Tag::as_str), tag, "{input}");
        assert_eq!(r.digest().map(|d| d.to_string()).as_deref(), digest, "{input}");
    }

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        check("busybox", "docker.io", "library/busybox", Some("latest"), None);
        check("busybox:1.36", "docker.io", "library/busybox", Some("1.36"), None);
        check("user/app", "docker.io", "user/app", Some("latest"), None);
        check("localhost/app", "localhost", "app", Some("latest"), None);
        check("localhost:5000/a/b:v1", "localhost:5000", "a/b", Some("v1"), None);
        check(
            "127.0.0.1:5000/app",
            "127.0.0.1:5000",
            "app",
            Some("latest"),
            None,
        );
        check(
            "index.docker.io/library/x",
            "docker.io",
            "library/x",
            Some("latest"),
            None,
        );
        check(&format!("ghcr.io/o/r@{d}"), "ghcr.io", "o/r", None, Some(&d));
        check(
            &format!("ghcr.io/o/r:t@{d}"),
            "ghcr.io",
            "o/r",
            Some("t"),
            Some(&d),
        );
        check("[::1]:5000/app", "[::1]:5000", "app", Some("latest"), None);
    }

    #[test]
    fn rejects_bad_references() {
        for s in [
            "",
            "UPPER",
            "a:b:c",
            "host:port/x",
            "a@sha256:zz",
            "exa mple.com/x",
            "a/../b",
        ] {
            assert!(s.parse::<Reference>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn displays_canonically() {
        let r: Reference = "localhost:5000/a:v1".parse().unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a:v1");
        assert_eq!(r.manifest_reference(), "v1");
    }
}
