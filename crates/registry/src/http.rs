//! HTTP plumbing shared by the handlers: the body type, header names, query strings, ranges.

use std::io;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use hyper::body::Frame;

use crate::error::{ErrorCode, RegistryError, Result};
use crate::storage::ByteStream;

/// Every response body: empty, a small buffer, or a stream from storage.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// `Docker-Content-Digest`: the digest of the content served or stored.
pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Distribution-API-Version`: sent on every `/v2/` response.
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// `Docker-Upload-UUID`: the upload session id (docker reads it).
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`: the subject a stored manifest refers to.
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`: which referrers filters were applied.
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// `OCI-Tag`: a tag applied by a manifest PUT with `?tag=`.
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from storage.
pub fn stream(stream: ByteStream) -> Body {
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

/// Every request body, as the handlers read it: what hyper received, possibly wrapped (the
/// server counts its bytes), boxed so the handlers need not know.
pub type RequestBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A request body as a stream of data chunks (trailers are dropped).
pub fn body_stream(body: RequestBody) -> ByteStream {
    Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    }))
}

/// A response with the given status, headers and body.
pub fn response(
    status: StatusCode,
    headers: impl IntoIterator<Item = (HeaderName, String)>,
    body: Body,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let map = response.headers_mut();
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::try_from(value) {
            map.append(name, value);
        }
    }
    response
}

/// A JSON response.
pub fn json(
    status: StatusCode,
    value: &impl serde::Serialize,
    extra: Vec<(HeaderName, String)>,
) -> Response<Body> {
    json_as(status, "application/json", value, extra)
}

/// A JSON response served under another media type (an OCI index, say).
pub fn json_as(
    status: StatusCode,
    content_type: &str,
    value: &impl serde::Serialize,
    extra: Vec<(HeaderName, String)>,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut headers = vec![
        (http::header::CONTENT_TYPE, content_type.to_owned()),
        (http::header::CONTENT_LENGTH, bytes.len().to_string()),
    ];
    headers.extend(extra);
    response(status, headers, full(bytes))
}

/// The error a response reports, kept in its extensions for the access log.
#[derive(Clone, Debug)]
pub struct SentError {
    /// The spec's error code.
    pub code: ErrorCode,
    /// The message the client was given.
    pub message: String,
}

/// The response for a failed request.
pub fn error_response(error: &RegistryError) -> Response<Body> {
    let body = error.body();
    let headers = [
        (http::header::CONTENT_TYPE, "application/json".to_owned()),
        (http::header::CONTENT_LENGTH, body.len().to_string()),
    ];
    let mut response = response(
        error.status,
        headers.into_iter().chain(error.headers.iter().cloned()),
        full(body),
    );
    response.extensions_mut().insert(SentError {
        code: error.code,
        message: error.message.clone(),
    });
    response
}

/// What a `%` that does not start two hex digits becomes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Kept as written (query strings: be liberal in what is accepted).
    Keep,
    /// The whole text is refused (path segments, which name repositories).
    Refuse,
}

/// The bytes `s` stands for, its `%XX` escapes decoded; `None` for a malformed escape when
/// `malformed` is [`Malformed::Refuse`].
pub(crate) fn percent_decode(s: &str, malformed: Malformed) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None if bytes[i] == b'%' && malformed == Malformed::Refuse => return None,
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes in a query component; malformed escapes are kept as written.
pub(crate) fn decode_component(s: &str) -> String {
    let bytes = percent_decode(s, Malformed::Keep).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Percent-encodes a query component (everything but RFC 3986's unreserved characters).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The decoded `key=value` pairs of a query string, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// The first value of a query parameter.
pub fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A header's value as text, if present and printable.
pub fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Pagination parameters `n` and `last`, with `n` capped at `max`.
pub struct Pagination {
    /// How many entries the client asked for (None: all, up to the cap).
    pub n: Option<usize>,
    /// The entry to start after.
    pub last: Option<String>,
}

impl Pagination {
    /// Reads `n` and `last` from the query.
    pub fn parse(pairs: &[(String, String)]) -> Result<Pagination> {
        let n = query_value(pairs, "n")
            .map(|n| {
                n.parse::<usize>().map_err(|_| {
                    RegistryError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("invalid n={n:?}: expected a non-negative integer"),
                    )
                })
            })
            .transpose()?;
        let last = query_value(pairs, "last")
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        Ok(Pagination { n, last })
    }
}

/// A `Link` header pointing at the next page.
pub fn next_link(path: &str, n: usize, last: &str, extra_query: &str) -> (HeaderName, String) {
    (
        http::header::LINK,
        format!("<{path}?n={n}&last={last}{extra_query}>; rel=\"next\""),
    )
}

/// Parses a request's `Range: bytes=…` header against a blob of `size` bytes; `None` when the
/// range cannot be satisfied (416).
pub fn parse_range(value: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        let suffix: u64 = end.parse().ok()?;
        return (suffix > 0 && size > 0).then(|| size.saturating_sub(suffix)..size);
    }
    let start: u64 = start.parse().ok()?;
    let end = match end {
        "" => size,
        e => e.parse::<u64>().ok()?.saturating_add(1).min(size),
    };
    (start < end).then_some(start..end)
}

/// Parses a chunk's `Content-Range: <start>-<end>` (inclusive) into offset and length.
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let value = value.trim();
    let value = value.strip_prefix("bytes ").unwrap_or(value);
    let value = value.split('/').next().unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    let length = end.checked_sub(start)?.checked_add(1)?;
    Some((start, length))
}

/// The `Range` header value the spec wants for an upload holding `size` bytes.
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-500", 100), Some(0..100));
        assert_eq!(parse_range("bytes=50-500", 100), Some(50..100));
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-0",
        ] {
            assert_eq!(parse_range(bad, 100), None, "{bad}");
        }
        assert_eq!(parse_range("bytes=0-", 0), None);
    }

    #[test]
    fn parses_content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 100)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 100)));
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("x"), None);
        // Found by the `request` fuzz target: the length of the whole u64 range overflowed.
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        assert_eq!(parse_content_range("1-18446744073709551615"), Some((1, u64::MAX)));
    }

    #[test]
    fn decodes_queries() {
        let q = query_pairs(Some(
            "mount=sha256%3Aab&from=a%2Fb&n=&artifactType=application/x+json",
        ));
        assert_eq!(query_value(&q, "mount"), Some("sha256:ab"));
        assert_eq!(query_value(&q, "from"), Some("a/b"));
        assert_eq!(query_value(&q, "n"), Some(""));
        assert_eq!(query_value(&q, "artifactType"), Some("application/x+json"));
        assert_eq!(query_value(&q, "missing"), None);
        let malformed = query_pairs(Some("last=a%zz%4"));
        assert_eq!(query_value(&malformed, "last"), Some("a%zz%4"), "kept as written");
    }

    #[test]
    fn upload_ranges_are_inclusive() {
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
