//! Turns a request path into the resource it names.
//!
//! Repository names contain slashes, so a path is read from its right-hand end: the fixed
//! suffix (`blobs/<digest>`, `manifests/<reference>`, `tags/list`, …) is matched first and
//! everything before it is the name. Every identifier is validated here, before any handler
//! sees it, so no unchecked string ever reaches storage.

use rbuild_oci::{Digest, RepositoryName, Tag};

use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{Malformed, percent_decode};
use crate::storage::UploadId;

/// What a manifest request names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRef {
    /// A tag such as `latest`.
    Tag(Tag),
    /// A content digest.
    Digest(Digest),
    /// Text that is neither a tag nor a digest (`.INVALID_MANIFEST_NAME`). No manifest can
    /// have it, so reading or deleting it is "not found" (as the conformance suite and
    /// distribution answer); only a PUT is refused, with TAG_INVALID. The text is kept for
    /// messages and never reaches storage.
    Invalid {
        /// The reference as the client sent it.
        reference: String,
        /// Why it is not a tag.
        reason: String,
    },
}

impl ManifestRef {
    fn parse(s: &str) -> Result<ManifestRef> {
        if s.contains(':') {
            s.parse()
                .map(ManifestRef::Digest)
                .map_err(|e: rbuild_oci::DigestError| {
                    RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
                })
        } else {
            Ok(s.parse()
                .map(ManifestRef::Tag)
                .unwrap_or_else(|e: rbuild_oci::NameError| ManifestRef::Invalid {
                    reference: s.to_owned(),
                    reason: e.to_string(),
                }))
        }
    }
}

impl std::fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestRef::Tag(t) => t.fmt(f),
            ManifestRef::Digest(d) => d.fmt(f),
            ManifestRef::Invalid { reference, .. } => reference.fmt(f),
        }
    }
}

/// A resource of the registry's HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`: the repository list.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags(RepositoryName),
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(RepositoryName, ManifestRef),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(RepositoryName, Digest),
    /// `/v2/<name>/blobs/uploads/`: starts an upload (or mounts).
    UploadStart(RepositoryName),
    /// `/v2/<name>/blobs/uploads/<id>`: an upload session.
    Upload(RepositoryName, UploadId),
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(RepositoryName, Digest),
    /// `/healthz`: the process is up.
    Health,
    /// `/readyz`: storage is usable.
    Ready,
    /// `/token`: the built-in token service (when auth uses it).
    Token,
    /// `/metrics`: Prometheus metrics (when served on the main listener).
    Metrics,
}

impl Route {
    /// Whether the route is part of the `/v2/` API (and gets its headers).
    pub fn is_api(&self) -> bool {
        !matches!(self, Route::Health | Route::Ready | Route::Token | Route::Metrics)
    }

    /// The route's name in metrics and logs: one of a fixed set, never a repository or digest,
    /// so a label made of it stays bounded whatever clients ask for.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags(_) => "tags",
            Route::Manifest(..) => "manifest",
            Route::Blob(..) => "blob",
            Route::UploadStart(_) | Route::Upload(..) => "blob_upload",
            Route::Referrers(..) => "referrers",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Token => "token",
            Route::Metrics => "metrics",
        }
    }
}

/// The route name of a path: [`Route::name`], or `unknown` for a path that names nothing or
/// fails to parse.
pub fn name_of(path: &str) -> &'static str {
    match parse(path) {
        Ok(Some(route)) => route.name(),
        Ok(None) | Err(_) => "unknown",
    }
}

/// Decodes `%XX` escapes in one path segment; `None` if an escape is malformed or decodes to
/// a `/` (which would smuggle an extra component into a name).
fn decode_segment(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_owned());
    }
    let bytes = percent_decode(segment, Malformed::Refuse)?;
    String::from_utf8(bytes).ok().filter(|s| !s.contains('/'))
}

fn parse_name(segments: &[String]) -> Result<RepositoryName> {
    let name = segments.join("/");
    name.parse().map_err(|e: rbuild_oci::NameError| {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string())
            .with_detail(serde_json::json!({ "name": name }))
    })
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e: rbuild_oci::DigestError| RegistryError::new(ErrorCode::DigestInvalid, e.to_string()))
}

/// Parses a request path. `Ok(None)` means the path names nothing (a plain 404).
pub fn parse(path: &str) -> Result<Option<Route>> {
    match path {
        "/healthz" => return Ok(Some(Route::Health)),
        "/readyz" => return Ok(Some(Route::Ready)),
        "/token" => return Ok(Some(Route::Token)),
        "/metrics" => return Ok(Some(Route::Metrics)),
        "/v2" | "/v2/" => return Ok(Some(Route::Base)),
        "/v2/_catalog" => return Ok(Some(Route::Catalog)),
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Ok(None);
    };
    let Some(segments) = rest.split('/').map(decode_segment).collect::<Option<Vec<_>>>() else {
        return Err(RegistryError::new(
            ErrorCode::NameInvalid,
            "a path segment has a malformed percent-escape or an encoded '/'",
        ));
    };
    let suffix = |fixed: &[&str]| -> bool {
        segments.len() > fixed.len()
            && segments[segments.len() - fixed.len()..]
                .iter()
                .zip(fixed)
                .all(|(s, f)| f.is_empty() || s == f)
    };
    let n = segments.len();
    // An empty string in a pattern matches any segment (the variable part).
    let route = if suffix(&["tags", "list"]) {
        Route::Tags(parse_name(&segments[..n - 2])?)
    } else if suffix(&["manifests", ""]) {
        let name = parse_name(&segments[..n - 2])?;
        Route::Manifest(name, ManifestRef::parse(&segments[n - 1])?)
    } else if suffix(&["referrers", ""]) {
        let name = parse_name(&segments[..n - 2])?;
        Route::Referrers(name, parse_digest(&segments[n - 1])?)
    } else if suffix(&["blobs", "uploads", ""]) {
        let name = parse_name(&segments[..n - 3])?;
        match segments[n - 1].as_str() {
            "" => Route::UploadStart(name),
            id => Route::Upload(name, UploadId::parse(id).ok_or_else(unknown_upload)?),
        }
    } else if suffix(&["blobs", "uploads"]) {
        Route::UploadStart(parse_name(&segments[..n - 2])?)
    } else if suffix(&["blobs", ""]) {
        let name = parse_name(&segments[..n - 2])?;
        Route::Blob(name, parse_digest(&segments[n - 1])?)
    } else {
        return Ok(None);
    };
    Ok(Some(route))
}

/// The error for an upload id that names no session.
pub fn unknown_upload() -> RegistryError {
    RegistryError::new(ErrorCode::BlobUploadUnknown, "blob upload unknown to registry")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_resource() {
        let id = UploadId::new();
        let cases = vec![
            ("/v2/".to_owned(), Route::Base),
            ("/v2".to_owned(), Route::Base),
            ("/v2/_catalog".to_owned(), Route::Catalog),
            ("/healthz".to_owned(), Route::Health),
            ("/token".to_owned(), Route::Token),
            ("/metrics".to_owned(), Route::Metrics),
            ("/v2/a/b/tags/list".to_owned(), Route::Tags(name("a/b"))),
            (
                "/v2/a/manifests/latest".to_owned(),
                Route::Manifest(name("a"), ManifestRef::Tag("latest".parse().unwrap())),
            ),
            (
                format!("/v2/a/b/c/manifests/{D}"),
                Route::Manifest(name("a/b/c"), ManifestRef::Digest(D.parse().unwrap())),
            ),
            (
                format!("/v2/a/blobs/{D}"),
                Route::Blob(name("a"), D.parse().unwrap()),
            ),
            (
                format!("/v2/a/blobs/sha256%3A{}", &D[7..]),
                Route::Blob(name("a"), D.parse().unwrap()),
            ),
            ("/v2/a/blobs/uploads/".to_owned(), Route::UploadStart(name("a"))),
            ("/v2/a/blobs/uploads".to_owned(), Route::UploadStart(name("a"))),
            (
                format!("/v2/a/blobs/uploads/{id}"),
                Route::Upload(name("a"), id.clone()),
            ),
            (
                format!("/v2/a/referrers/{D}"),
                Route::Referrers(name("a"), D.parse().unwrap()),
            ),
            // Names that look like the fixed parts still parse from the right.
            (
                format!("/v2/blobs/blobs/{D}"),
                Route::Blob(name("blobs"), D.parse().unwrap()),
            ),
            (
                "/v2/manifests/manifests/tags".to_owned(),
                Route::Manifest(name("manifests"), ManifestRef::Tag("tags".parse().unwrap())),
            ),
            (
                "/v2/tags/list/tags/list".to_owned(),
                Route::Tags(name("tags/list")),
            ),
        ];
        for (path, route) in cases {
            assert_eq!(parse(&path).unwrap(), Some(route), "{path}");
        }
    }

    #[test]
    fn rejects_hostile_names_and_identifiers() {
        let cases = [
            ("/v2/../x/tags/list", ErrorCode::NameInvalid),
            ("/v2/a//b/tags/list", ErrorCode::NameInvalid),
            ("/v2/%2e%2e/tags/list", ErrorCode::NameInvalid),
            ("/v2/a%2fb/tags/list", ErrorCode::NameInvalid),
            ("/v2//tags/list", ErrorCode::NameInvalid),
            ("/v2/A/tags/list", ErrorCode::NameInvalid),
            ("/v2/a/blobs/sha256:abc", ErrorCode::DigestInvalid),
            ("/v2/a/blobs/sha256:%2e%2e", ErrorCode::DigestInvalid),
            ("/v2/a/blobs/sha256:..%2f..%2fx", ErrorCode::NameInvalid),
            ("/v2/a/manifests/md5:abc", ErrorCode::DigestInvalid),
            ("/v2/a/blobs/uploads/..%2f..%2fetc", ErrorCode::NameInvalid),
            ("/v2/a/blobs/uploads/..", ErrorCode::BlobUploadUnknown),
            ("/v2/a/blobs/uploads/not-a-uuid", ErrorCode::BlobUploadUnknown),
            ("/v2/a/b%zz/tags/list", ErrorCode::NameInvalid),
        ];
        for (path, code) in cases {
            match parse(path) {
                Err(e) => assert_eq!(e.code, code, "{path}"),
                Ok(r) => panic!("{path} parsed as {r:?}"),
            }
        }
    }

    #[test]
    fn references_that_are_not_tags_route_as_invalid() {
        for reference in ["..", ".INVALID_MANIFEST_NAME", "-bad", &"t".repeat(129)] {
            match parse(&format!("/v2/a/manifests/{reference}")) {
                Ok(Some(Route::Manifest(n, ManifestRef::Invalid { reference: r, .. }))) => {
                    assert_eq!((n, r.as_str()), (name("a"), reference));
                }
                other => panic!("{reference}: {other:?}"),
            }
        }
    }

    #[test]
    fn route_names_are_a_fixed_set() {
        let id = UploadId::new();
        let cases = [
            ("/v2/".to_owned(), "base"),
            ("/v2/_catalog".to_owned(), "catalog"),
            ("/v2/a/b/tags/list".to_owned(), "tags"),
            ("/v2/a/manifests/latest".to_owned(), "manifest"),
            (format!("/v2/team/app/manifests/{D}"), "manifest"),
            (format!("/v2/a/blobs/{D}"), "blob"),
            ("/v2/a/blobs/uploads/".to_owned(), "blob_upload"),
            (format!("/v2/a/blobs/uploads/{id}"), "blob_upload"),
            (format!("/v2/a/referrers/{D}"), "referrers"),
            ("/healthz".to_owned(), "health"),
            ("/readyz".to_owned(), "ready"),
            ("/token".to_owned(), "token"),
            ("/metrics".to_owned(), "metrics"),
            // Nothing a client sends turns into a label of its own.
            ("/v2/a/unknown/x".to_owned(), "unknown"),
            ("/v2/../x/tags/list".to_owned(), "unknown"),
            ("/favicon.ico".to_owned(), "unknown"),
        ];
        for (path, name) in cases {
            assert_eq!(name_of(&path), name, "{path}");
        }
    }

    #[test]
    fn unknown_paths_are_not_routes() {
        for path in [
            "/",
            "/v1/",
            "/v2/a",
            "/v2/a/unknown/x",
            "/v2/_catalog/x",
            "/v2/a/blobs/sha256:../../x",
        ] {
            assert_eq!(parse(path).unwrap(), None, "{path}");
        }
    }
}
