//! The registry token flow (distribution's `docs/spec/auth/token.md`), as docker runs it.
//!
//! After a `Bearer` challenge, a client asks the challenge's realm for a token:
//! `GET realm?service=…&scope=repository:<name>:pull[,push]` (one `scope` parameter per scope),
//! with Basic credentials when it has them, or — holding an identity (refresh) token — an
//! OAuth2 `POST realm` with `grant_type=refresh_token`. The reply's `token` (or `access_token`)
//! is good for `expires_in` seconds (at least 60) from `issued_at`. Tokens are cached per
//! registry and scope set, and refreshed when they expire or a request with them gets a 401.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rbuild_oci::RepositoryName;
use serde::Deserialize;

use crate::challenge::BearerChallenge;
use crate::credentials::{Credential, CredentialOrigin};
use crate::error::{ClientError, Details, chain};

/// The shortest lifetime a token is given, whatever the token service says (docker's rule).
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// A token is refreshed this long before it expires, so it does not lapse in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The OAuth2 client id rbuild sends (docker sends `docker`).
const CLIENT_ID: &str = "rbuild";

/// The scope to pull from (`push` false) or push to a repository.
pub fn repository_scope(repository: &RepositoryName, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// A set of scopes, in a canonical order.
pub type Scopes = BTreeSet<String>;

/// A bearer token and when it stops being usable.
#[derive(Clone, Debug)]
pub struct Token {
    /// The token to send as `Authorization: Bearer <value>`.
    pub value: String,
    /// When to stop using it.
    pub expires: Instant,
}

impl Token {
    fn is_fresh(&self, now: Instant) -> bool {
        now + EXPIRY_MARGIN < self.expires
    }
}

/// What a token service answers.
#[derive(Deserialize)]
struct TokenReply {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    issued_at: Option<String>,
}

/// Reads a token service's reply received at `now` (wall clock) and `received` (monotonic).
pub fn parse_token_reply(body: &[u8], now: SystemTime, received: Instant) -> Result<Token, String> {
    let reply: TokenReply =
        rbuild_oci::json::from_slice(body).map_err(|e| format!("the reply is not a token response: {e}"))?;
    let value = if reply.token.is_empty() {
        reply.access_token
    } else {
        reply.token
    };
    if value.is_empty() {
        return Err("the reply has neither token nor access_token".to_owned());
    }
    let lifetime = token_lifetime(reply.expires_in, reply.issued_at.as_deref(), now);
    Ok(Token {
        value,
        expires: received + lifetime,
    })
}

/// How long a token stays valid from `now`: `expires_in` (default and minimum 60 s) counted
/// from `issued_at`. When `issued_at` is missing, unreadable, or so far off the local clock that
/// the token would already have expired (clock skew), the lifetime counts from receipt.
pub fn token_lifetime(expires_in: Option<i64>, issued_at: Option<&str>, now: SystemTime) -> Duration {
    let expires_in = expires_in
        .and_then(|s| u64::try_from(s).ok())
        .map_or(MIN_TOKEN_LIFETIME, Duration::from_secs)
        .max(MIN_TOKEN_LIFETIME);
    if let Some(issued) = issued_at.and_then(parse_rfc3339) {
        let age = now.duration_since(issued).unwrap_or(Duration::ZERO);
        if age < expires_in {
            return expires_in - age;
        }
        tracing::debug!("token issued_at {issued_at:?} is older than its lifetime; assuming clock skew");
    }
    expires_in
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, fractions and offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let mut padded: String = fraction[..len].chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
        rest = &fraction[len..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Identifies a cached token: who issued it and for what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey {
    realm: String,
    service: Option<String>,
    scopes: Scopes,
}

impl TokenKey {
    /// The key for `scopes` under `challenge`.
    pub fn new(challenge: &BearerChallenge, scopes: &Scopes) -> TokenKey {
        TokenKey {
            realm: challenge.realm.clone(),
            service: challenge.service.clone(),
            scopes: scopes.clone(),
        }
    }
}

/// Tokens of one registry. Fetches are serialised (behind the async lock) so that concurrent
/// layer transfers share one token request instead of each making their own.
#[derive(Default)]
pub struct TokenCache {
    tokens: tokio::sync::Mutex<HashMap<TokenKey, Token>>,
}

impl TokenCache {
    /// A fresh cached token for `key`, or the result of `fetch` (cached when it succeeds).
    pub async fn get_or_fetch<F, Fut>(&self, key: &TokenKey, fetch: F) -> Result<String, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, ClientError>>,
    {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(key).filter(|t| t.is_fresh(Instant::now())) {
            return Ok(token.value.clone());
        }
        let token = fetch().await?;
        let value = token.value.clone();
        tokens.insert(key.clone(), token);
        Ok(value)
    }

    /// Forgets `value` for `key` (the registry refused it), unless it was already replaced.
    pub async fn invalidate(&self, key: &TokenKey, value: &str) {
        let mut tokens = self.tokens.lock().await;
        if tokens.get(key).is_some_and(|t| t.value == value) {
            tokens.remove(key);
        }
    }
}

/// `Authorization: Basic …` for a username and password.
pub fn basic_header(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                    out.push(char::from(byte))
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request to make to a token service.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// Where to send it: the realm, with `service` and one `scope` per scope in the query for
    /// a GET.
    pub url: reqwest::Url,
    /// For an OAuth2 refresh-token grant, the form to POST; `None` for a GET.
    pub form: Option<String>,
    /// `Authorization: Basic …` when there are a username and password.
    pub authorization: Option<String>,
}

/// Plans the token request docker would make for `scopes` under `challenge`: a GET (with Basic
/// credentials when there are some), or an OAuth2 POST when the credential is an identity token.
pub fn token_request(
    challenge: &BearerChallenge,
    scopes: &Scopes,
    credential: Option<&Credential>,
) -> Result<TokenRequest, String> {
    let mut url = reqwest::Url::parse(&challenge.realm)
        .map_err(|e| format!("the registry's realm is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the realm is not an http(s) URL".to_owned());
    }
    if let Some(Credential::IdentityToken { token, .. }) = credential {
        let scope = scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str()),
            ("client_id", CLIENT_ID),
        ];
        if let Some(service) = &challenge.service {
            form.push(("service", service));
        }
        if !scope.is_empty() {
            form.push(("scope", &scope));
        }
        return Ok(TokenRequest {
            url,
            form: Some(form_encode(&form)),
            authorization: None,
        });
    }
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = &challenge.service {
            query.append_pair("service", service);
        }
        for scope in scopes {
            query.append_pair("scope", scope);
        }
    }
    let authorization = match credential {
        Some(Credential::Password { username, password }) => Some(basic_header(username, password)),
        _ => None,
    };
    Ok(TokenRequest {
        url,
        form: None,
        authorization,
    })
}

/// Asks a token service for a token for `scopes`.
///
/// `registry` names the registry for messages; `credential` (with `source`, where it came
/// from) is sent as Basic auth, or exchanged through OAuth2 when it is an identity token.
pub async fn fetch_token(
    http: &reqwest::Client,
    registry: &str,
    challenge: &BearerChallenge,
    scopes: &Scopes,
    credential: Option<&Credential>,
    origin: &CredentialOrigin,
) -> Result<Token, ClientError> {
    let token_error = |reason: String| ClientError::Token {
        registry: registry.to_owned(),
        realm: challenge.realm.clone(),
        reason,
    };
    let plan = token_request(challenge, scopes, credential).map_err(token_error)?;
    let mut request = match plan.form {
        Some(form) => http
            .post(plan.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form),
        None => http.get(plan.url),
    };
    if let Some(authorization) = plan.authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    let now = SystemTime::now();
    let response = request
        .send()
        .await
        .map_err(|e| token_error(format!("request failed: {}", chain(&e))))?;
    let status = response.status();
    let body = crate::body::read_limited(response, 1 << 20)
        .await
        .map_err(|e| token_error(format!("reading the reply: {e}")))?;
    let received = Instant::now();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let details = Details::parse(&body);
        return Err(match credential {
            Some(_) => ClientError::rejected(origin, registry, details),
            None => token_error(format!("anonymous access refused (HTTP {status}){details}")),
        });
    }
    if !status.is_success() {
        return Err(token_error(format!("HTTP {status}{}", Details::parse(&body))));
    }
    parse_token_reply(&body, now, received).map_err(token_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> u64 {
        parse_rfc3339(s)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(at("1970-01-01T00:00:00Z"), 0);
        assert_eq!(at("2009-11-10T23:00:00Z"), 1_257_894_000);
        assert_eq!(at("2024-02-29T12:34:56.789123456Z"), 1_709_210_096);
        assert_eq!(at("2024-02-29T14:34:56+02:00"), 1_709_210_096);
        assert_eq!(at("2024-02-29T11:34:56-01:00"), 1_709_210_096);
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
            "2024-02-29T12:34:56.Z",
            "x024-02-29T12:34:56Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn lifetimes_follow_docker() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(token_lifetime(None, None, now), Duration::from_secs(60));
        assert_eq!(token_lifetime(Some(10), None, now), Duration::from_secs(60));
        assert_eq!(token_lifetime(Some(-5), None, now), Duration::from_secs(60));
        assert_eq!(token_lifetime(Some(300), None, now), Duration::from_secs(300));
        // Issued 100 s ago with a 300 s lifetime: 200 s left.
        assert_eq!(
            token_lifetime(Some(300), Some("1970-01-12T13:45:00Z"), now),
            Duration::from_secs(200)
        );
        // Issued "in the future" (server clock ahead): the full lifetime.
        assert_eq!(
            token_lifetime(Some(300), Some("2100-01-01T00:00:00Z"), now),
            Duration::from_secs(300)
        );
        // Issued long ago (server clock behind): counted from receipt instead.
        assert_eq!(
            token_lifetime(Some(300), Some("1970-01-01T00:00:00Z"), now),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn reads_token_replies() {
        let now = SystemTime::now();
        let received = Instant::now();
        let t = parse_token_reply(br#"{"token":"abc","expires_in":120}"#, now, received).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.expires, received + Duration::from_secs(120));
        let t = parse_token_reply(br#"{"access_token":"xyz"}"#, now, received).unwrap();
        assert_eq!(t.value, "xyz");
        assert_eq!(t.expires, received + MIN_TOKEN_LIFETIME);
        let t = parse_token_reply(br#"{"token":"a","access_token":"b"}"#, now, received).unwrap();
        assert_eq!(t.value, "a");
        assert!(parse_token_reply(br#"{"token":""}"#, now, received).is_err());
        assert!(parse_token_reply(b"not json", now, received).is_err());
    }

    #[tokio::test]
    async fn cache_reuses_refreshes_and_invalidates() {
        let challenge = BearerChallenge {
            realm: "https://auth.example/token".into(),
            service: Some("reg".into()),
            scopes: vec![],
            error: None,
        };
        let name: RepositoryName = "a/b".parse().unwrap();
        let pull: Scopes = [repository_scope(&name, false)].into();
        let push: Scopes = [repository_scope(&name, true)].into();
        let cache = TokenCache::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = |value: &'static str, lifetime: Duration| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let token = Token {
                value: value.to_owned(),
                expires: Instant::now() + lifetime,
            };
            async move { Ok(token) }
        };
        let long = Duration::from_secs(600);
        let pull_key = TokenKey::new(&challenge, &pull);
        assert_eq!(
            cache.get_or_fetch(&pull_key, || fetch("t1", long)).await.unwrap(),
            "t1"
        );
        assert_eq!(
            cache.get_or_fetch(&pull_key, || fetch("t2", long)).await.unwrap(),
            "t1"
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A different scope set is a different token.
        let push_key = TokenKey::new(&challenge, &push);
        assert_eq!(
            cache.get_or_fetch(&push_key, || fetch("p1", long)).await.unwrap(),
            "p1"
        );
        // A refused token is dropped; a stale value does not drop its replacement.
        cache.invalidate(&pull_key, "t1").await;
        assert_eq!(
            cache.get_or_fetch(&pull_key, || fetch("t3", long)).await.unwrap(),
            "t3"
        );
        cache.invalidate(&pull_key, "t1").await;
        assert_eq!(
            cache.get_or_fetch(&pull_key, || fetch("t4", long)).await.unwrap(),
            "t3"
        );
        // An expired (or nearly expired) token is refreshed.
        let short_key = TokenKey::new(&challenge, &[String::from("registry:catalog:*")].into());
        assert_eq!(
            cache
                .get_or_fetch(&short_key, || fetch("s1", Duration::from_secs(1)))
                .await
                .unwrap(),
            "s1"
        );
        assert_eq!(
            cache
                .get_or_fetch(&short_key, || fetch("s2", long))
                .await
                .unwrap(),
            "s2"
        );
        // Failures are not cached.
        let failing = TokenKey::new(&challenge, &[String::from("x")].into());
        let err = cache
            .get_or_fetch(&failing, || async {
                Err(ClientError::Token {
                    registry: "r".into(),
                    realm: "x".into(),
                    reason: "down".into(),
                })
            })
            .await;
        assert!(err.is_err());
        assert_eq!(
            cache.get_or_fetch(&failing, || fetch("f1", long)).await.unwrap(),
            "f1"
        );
    }

    #[test]
    fn plans_token_requests_like_docker() {
        let challenge = BearerChallenge {
            realm: "https://auth.example/token?account=x".into(),
            service: Some("registry.example".into()),
            scopes: vec![],
            error: None,
        };
        let push: RepositoryName = "team/app".parse().unwrap();
        let from: RepositoryName = "base/img".parse().unwrap();
        let scopes: Scopes = [repository_scope(&push, true), repository_scope(&from, false)].into();

        let anonymous = token_request(&challenge, &scopes, None).unwrap();
        assert_eq!(
            anonymous.url.as_str(),
            "https://auth.example/token?account=x&service=registry.example&scope=repository%3Abase%2Fimg%3Apull&scope=repository%3Ateam%2Fapp%3Apull%2Cpush"
        );
        assert_eq!(anonymous.form, None);
        assert_eq!(anonymous.authorization, None);

        let password = Credential::Password {
            username: "u".into(),
            password: "p".into(),
        };
        let basic = token_request(&challenge, &scopes, Some(&password)).unwrap();
        assert_eq!(basic.url, anonymous.url);
        assert_eq!(basic.authorization.as_deref(), Some("Basic dTpw"));

        let refresh = Credential::IdentityToken {
            username: None,
            token: "r3fresh".into(),
        };
        let oauth = token_request(&challenge, &scopes, Some(&refresh)).unwrap();
        assert_eq!(oauth.url.as_str(), "https://auth.example/token?account=x");
        assert_eq!(oauth.authorization, None);
        assert_eq!(
            oauth.form.as_deref(),
            Some(
                "grant_type=refresh_token&refresh_token=r3fresh&client_id=rbuild&service=registry.example&scope=repository%3Abase%2Fimg%3Apull+repository%3Ateam%2Fapp%3Apull%2Cpush"
            )
        );

        for realm in ["not a url", "ftp://auth.example/token"] {
            let bad = BearerChallenge {
                realm: realm.into(),
                ..challenge.clone()
            };
            assert!(token_request(&bad, &scopes, None).is_err(), "{realm}");
        }
    }

    #[test]
    fn encodes_scopes_and_forms() {
        let name: RepositoryName = "o/r".parse().unwrap();
        assert_eq!(repository_scope(&name, false), "repository:o/r:pull");
        assert_eq!(repository_scope(&name, true), "repository:o/r:pull,push");
        assert_eq!(
            form_encode(&[("scope", "repository:o/r:pull repository:x:pull"), ("a", "&=")]),
            "scope=repository%3Ao%2Fr%3Apull+repository%3Ax%3Apull&a=%26%3D"
        );
        assert_eq!(form_encode(&[("k", "caf\u{e9} ~/+")]), "k=caf%C3%A9+%7E%2F%2B");
        assert_eq!(basic_header("user", "pass"), "Basic dXNlcjpwYXNz");
    }
}
