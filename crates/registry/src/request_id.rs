//! Request ids: every response carries one in `X-Request-Id`, and every log line written while
//! answering (the access line, an error's line) names the same one, so a client's report of a
//! failure leads to the server's account of it.

use std::fmt;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// `X-Request-Id`: the request's id, taken from the client (or a proxy in front) when it sent
/// a usable one, made up otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-supplied id kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// One request's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The id the client sent in `X-Request-Id` if it is sane (1 to 128 characters of letters,
    /// digits and `-_.:+/=`, so it cannot forge log lines or carry a payload), else a new one.
    pub fn of(headers: &HeaderMap) -> RequestId {
        headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_sane(id))
            .map_or_else(RequestId::generate, |id| RequestId(id.to_owned()))
    }

    /// A fresh random id (a UUID: unique across replicas and restarts without coordination).
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        // Only sane ids are ever held, and those are valid header values.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn is_sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(value: &str) -> RequestId {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        RequestId::of(&headers)
    }

    #[test]
    fn keeps_a_sane_client_id() {
        for id in ["abc", "7f0c1e2a-9d4b-4c1e-8f3a-0b5d6e7f8a9b", "trace:1/2+3=4_5.6"] {
            assert_eq!(sent(id).as_str(), id);
        }
        assert_eq!(sent(&"a".repeat(128)).as_str().len(), 128);
    }

    #[test]
    fn replaces_an_unusable_one() {
        for id in [
            "",
            "has space",
            "quote\"",
            "{\"json\":1}",
            "new\tline",
            &"a".repeat(129),
        ] {
            let made = sent(id);
            assert_ne!(made.as_str(), id);
            assert!(uuid::Uuid::try_parse(made.as_str()).is_ok(), "{made}");
        }
        let none = RequestId::of(&HeaderMap::new());
        assert!(uuid::Uuid::try_parse(none.as_str()).is_ok());
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
