//! HTTP to one registry: choosing the scheme, authenticating, following redirects safely, and
//! turning error statuses into [`ClientError`]s.
//!
//! - The first request to a registry pings `GET /v2/`, as docker does: that decides the scheme
//!   (insecure and loopback registries try HTTPS without verification, then plain HTTP) and
//!   learns the authentication challenge, so later requests carry credentials up front instead
//!   of collecting a 401 each.
//! - Every request names the scopes it needs. Under a `Bearer` challenge a token for exactly
//!   those scopes is fetched (or taken from the cache) and sent; under `Basic` the credentials
//!   are. A 401 updates the challenge, drops the token it refused, and the request is sent once
//!   more — request bodies are rebuildable (bytes, or a file reopened) for that reason.
//! - Redirects are followed by hand (blob GETs often go to object storage), and
//!   `Authorization` is only ever sent to the registry's own scheme, host and port.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rbuild_oci::{Digest, RepositoryName};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::{self, Scopes, TokenCache, TokenKey};
use crate::body::read_limited;
use crate::challenge::{self, Challenge};
use crate::credentials::{self, Credential, CredentialOrigin, DockerConfig};
use crate::error::{Action, ClientError, Details, chain};
use crate::inflight::InFlight;
use crate::progress::Progress;

/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// The registry host that serves Docker Hub's API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A request body that can be produced again for a retry or a redirect.
pub(crate) enum Body {
    /// No body.
    Empty,
    /// Bytes in memory (manifests).
    Bytes(Bytes),
    /// `len` bytes of a file (a blob in the local store), streamed.
    File {
        /// The file.
        path: PathBuf,
        /// How many bytes to send.
        len: u64,
        /// Told how many bytes have been sent.
        progress: Option<(Arc<dyn Progress>, Digest)>,
    },
}

impl Body {
    async fn build(&self) -> std::io::Result<(reqwest::Body, u64)> {
        match self {
            Body::Empty => Ok((reqwest::Body::from(Bytes::new()), 0)),
            Body::Bytes(bytes) => Ok((reqwest::Body::from(bytes.clone()), bytes.len() as u64)),
            Body::File { path, len, progress } => {
                let file = tokio::fs::File::open(path).await?;
                Ok((file_stream(file, *len, progress.clone()), *len))
            }
        }
    }
}

/// Streams `len` bytes of `file` in 256 KiB chunks, reporting progress.
fn file_stream(
    file: tokio::fs::File,
    len: u64,
    progress: Option<(Arc<dyn Progress>, Digest)>,
) -> reqwest::Body {
    use tokio::io::AsyncReadExt as _;
    const CHUNK: usize = 256 * 1024;
    let state = (file, 0u64);
    let stream = futures_util::stream::try_unfold(state, move |(mut file, sent)| {
        let progress = progress.clone();
        async move {
            if sent >= len {
                return Ok(None);
            }
            let want = usize::try_from(len - sent).map_or(CHUNK, |left| left.min(CHUNK));
            let mut buf = vec![0u8; want];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the file ended after {sent} of {len} bytes"),
                ));
            }
            buf.truncate(n);
            let sent = sent + n as u64;
            if let Some((progress, digest)) = &progress {
                progress.blob_bytes(digest, sent);
            }
            Ok::<_, std::io::Error>(Some((Bytes::from(buf), (file, sent))))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// One request, described for error messages.
pub(crate) struct Request<'a> {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Body,
    pub scopes: &'a Scopes,
}

impl Request<'_> {
    /// `GET /v2/…`, for messages.
    pub fn describe(&self) -> String {
        describe(&self.method, &self.url)
    }
}

fn describe(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

/// What a failed request was about, to word its error.
pub(crate) enum Target<'a> {
    /// A manifest, by `tag x` or `digest sha256:…`.
    Manifest(String),
    /// A blob.
    Blob(&'a Digest),
    /// Anything else.
    Other,
}

/// The settings an endpoint is built from.
pub(crate) struct EndpointSettings {
    pub registry: String,
    pub certs_d: PathBuf,
    pub insecure: bool,
    pub http: reqwest::Client,
    pub docker_config: DockerConfig,
    /// Credentials to use instead of the docker config's (`None` inside: anonymous), and
    /// where they come from (`rbuild login` checks what it was given before storing it).
    pub credential: Option<(Option<Credential>, CredentialOrigin)>,
}

/// One registry, shared by every request to it from one [`Client`](crate::Client).
pub(crate) struct Endpoint {
    registry: String,
    certs_d: PathBuf,
    authority: String,
    insecure: bool,
    http: reqwest::Client,
    docker_config: DockerConfig,
    base: tokio::sync::OnceCell<Url>,
    challenge: Mutex<Option<Challenge>>,
    credential: tokio::sync::OnceCell<Option<Credential>>,
    origin: CredentialOrigin,
    tokens: TokenCache,
    in_flight: InFlight,
}

/// The host (and port) that serves a registry's API.
pub(crate) fn api_authority(registry: &str) -> &str {
    if registry == rbuild_oci::reference::DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl Endpoint {
    pub fn new(settings: EndpointSettings) -> Endpoint {
        let (credential, origin) = match settings.credential {
            Some((credential, origin)) => (tokio::sync::OnceCell::new_with(Some(credential)), origin),
            None => (
                tokio::sync::OnceCell::new(),
                CredentialOrigin::DockerConfig(settings.docker_config.dir().to_owned()),
            ),
        };
        Endpoint {
            authority: api_authority(&settings.registry).to_owned(),
            registry: settings.registry,
            certs_d: settings.certs_d,
            insecure: settings.insecure,
            http: settings.http,
            docker_config: settings.docker_config,
            base: tokio::sync::OnceCell::new(),
            challenge: Mutex::new(None),
            credential,
            origin,
            tokens: TokenCache::default(),
            in_flight: InFlight::default(),
        }
    }

    /// The blobs pushes through this client are sending to the registry now.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// The registry's name, as in image references.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `scheme://host[:port]/`, decided by the first ping.
    async fn base(&self) -> Result<&Url, ClientError> {
        self.base.get_or_try_init(|| self.ping()).await
    }

    /// The URL of an API path (`/v2/…`).
    pub async fn url(&self, path: &str) -> Result<Url, ClientError> {
        let base = self.base().await?;
        base.join(path).map_err(|e| ClientError::Protocol {
            registry: self.registry.clone(),
            request: path.to_owned(),
            reason: format!("cannot form a URL: {e}"),
        })
    }

    /// Resolves a `Location` header value against the URL of the request that returned it.
    pub fn location(&self, request: &Url, response: &Response) -> Result<Url, ClientError> {
        let fail = |reason: String| ClientError::Protocol {
            registry: self.registry.clone(),
            request: describe(&Method::POST, request),
            reason,
        };
        let value = response
            .headers()
            .get(LOCATION)
            .ok_or_else(|| fail(format!("HTTP {} without a Location header", response.status())))?
            .to_str()
            .map_err(|_| fail("the Location header is not text".to_owned()))?;
        request
            .join(value)
            .map_err(|e| fail(format!("the Location header {value:?} is not a URL: {e}")))
    }

    async fn ping(&self) -> Result<Url, ClientError> {
        let schemes: &[&str] = if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last_error = None;
        for scheme in schemes {
            let base = Url::parse(&format!("{scheme}://{}/", self.authority)).map_err(|e| {
                ClientError::Unreachable {
                    registry: self.registry.clone(),
                    url: format!("{scheme}://{}/", self.authority),
                    reason: format!("not a valid host: {e}"),
                }
            })?;
            let url = base.join("v2/").map_err(|e| ClientError::Unreachable {
                registry: self.registry.clone(),
                url: base.to_string(),
                reason: e.to_string(),
            })?;
            match self.http.get(url.clone()).send().await {
                Ok(response) => {
                    tracing::debug!("{}: ping {url}: {}", self.registry, response.status());
                    if response.status() == StatusCode::UNAUTHORIZED {
                        self.set_challenge(&response);
                    }
                    return Ok(base);
                }
                Err(e) => {
                    tracing::debug!("{}: ping {url}: {}", self.registry, chain(&e));
                    last_error = Some((url, e));
                }
            }
        }
        let (url, error) = last_error.ok_or_else(|| ClientError::Unreachable {
            registry: self.registry.clone(),
            url: self.authority.clone(),
            reason: "no scheme to try".to_owned(),
        })?;
        let mut reason = request_error(&error);
        if !self.insecure && reason.to_lowercase().contains("certificate") {
            reason.push_str(&format!(
                "; to trust its CA put it in {}, or list {} as an insecure registry",
                self.certs_d.join(&self.registry).join("ca.crt").display(),
                self.registry
            ));
        }
        Err(ClientError::Unreachable {
            registry: self.registry.clone(),
            url: url.to_string(),
            reason,
        })
    }

    fn set_challenge(&self, response: &Response) {
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        if let Some(found) = challenge::preferred(challenges)
            && let Ok(mut current) = self.challenge.lock()
        {
            *current = Some(found);
        }
    }

    fn current_challenge(&self) -> Option<Challenge> {
        self.challenge.lock().ok().and_then(|c| c.clone())
    }

    /// The credentials for this registry from the docker config (read once).
    async fn credential(&self) -> Result<Option<&Credential>, ClientError> {
        let credential = self
            .credential
            .get_or_try_init(|| async {
                let config = self.docker_config.clone();
                let registry = self.registry.clone();
                tokio::task::spawn_blocking(move || config.get(&registry))
                    .await
                    .map_err(|e| {
                        ClientError::Credentials(credentials::CredentialsError::Io {
                            path: self.docker_config.dir().join("config.json"),
                            source: std::io::Error::other(e.to_string()),
                        })
                    })?
                    .map_err(ClientError::from)
            })
            .await?;
        Ok(credential.as_ref())
    }

    /// The `Authorization` value for a request needing `scopes`, under the known challenge.
    async fn authorization(
        &self,
        scopes: &Scopes,
    ) -> Result<Option<(String, Option<TokenKey>)>, ClientError> {
        match self.current_challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match self.credential().await? {
                Some(Credential::Password { username, password }) => {
                    Some((auth::basic_header(username, password), None))
                }
                _ => None,
            }),
            Some(Challenge::Bearer(bearer)) => {
                let key = TokenKey::new(&bearer, scopes);
                let credential = self.credential().await?;
                let token = self
                    .tokens
                    .get_or_fetch(&key, || {
                        auth::fetch_token(
                            &self.http,
                            &self.registry,
                            &bearer,
                            scopes,
                            credential,
                            &self.origin,
                        )
                    })
                    .await?;
                Ok(Some((format!("Bearer {token}"), Some(key))))
            }
        }
    }

    /// Whether `url` is the registry itself (same scheme, host and port), the only place
    /// credentials go.
    fn is_registry_origin(&self, url: &Url) -> bool {
        self.base.get().is_some_and(|base| same_origin(base, url))
    }

    /// Sends a request, authenticating and retrying once after a 401, following redirects.
    /// Returns the final response whatever its status.
    pub async fn send(&self, request: &Request<'_>) -> Result<Response, ClientError> {
        self.base().await?;
        let mut retried = false;
        loop {
            let authorization = self.authorization(request.scopes).await?;
            let response = self
                .send_following(request, authorization.as_ref().map(|(value, _)| value.as_str()))
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED || !self.is_registry_origin(response.url()) {
                return Ok(response);
            }
            let sent_basic = authorization
                .as_ref()
                .is_some_and(|(value, _)| value.starts_with("Basic "));
            if retried && sent_basic {
                // Basic credentials refused twice: they are wrong (a Bearer 401 after a fresh
                // token means missing access instead, which `check` reports).
                let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
                return Err(ClientError::rejected(
                    &self.origin,
                    &self.registry,
                    Details::parse(&body),
                ));
            }
            if retried {
                return Ok(response);
            }
            retried = true;
            if let Some((value, Some(key))) = &authorization
                && let Some(token) = value.strip_prefix("Bearer ")
            {
                // A refused token is never offered again, even if it has not expired.
                self.tokens.invalidate(key, token).await;
            }
            self.set_challenge(&response);
            match self.current_challenge() {
                None => return Ok(response),
                Some(Challenge::Basic)
                    if !matches!(self.credential().await?, Some(Credential::Password { .. })) =>
                {
                    return Ok(response);
                }
                // Bearer: fetch a fresh token; Basic: send the credentials.
                Some(_) => {}
            }
        }
    }

    async fn send_following(
        &self,
        request: &Request<'_>,
        authorization: Option<&str>,
    ) -> Result<Response, ClientError> {
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut with_body = true;
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = self.http.request(method.clone(), url.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(authorization) = authorization
                && self.is_registry_origin(&url)
            {
                builder = builder.header(AUTHORIZATION, authorization);
            }
            if with_body && !matches!(method, Method::GET | Method::HEAD) {
                let (body, len) = request.body.build().await.map_err(|e| ClientError::Http {
                    registry: self.registry.clone(),
                    request: describe(&method, &url),
                    reason: format!("reading the request body: {e}"),
                })?;
                builder = builder.header(CONTENT_LENGTH, len).body(body);
            }
            let response = builder.send().await.map_err(|e| ClientError::Http {
                registry: self.registry.clone(),
                request: describe(&method, &url),
                reason: request_error(&e),
            })?;
            let status = response.status();
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect || !response.headers().contains_key(LOCATION) {
                return Ok(response);
            }
            let next = self.location(&url, &response)?;
            tracing::debug!(
                "{}: {} redirected to {}",
                self.registry,
                describe(&method, &url),
                next.host_str().unwrap_or_default()
            );
            if status == StatusCode::SEE_OTHER
                || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
            {
                method = Method::GET;
                with_body = false;
            }
            url = next;
        }
        Err(ClientError::Protocol {
            registry: self.registry.clone(),
            request: request.describe(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Passes a successful response through; turns any other into the matching error.
    pub async fn check(
        &self,
        response: Response,
        request: &str,
        repository: &RepositoryName,
        action: Action,
        target: Target<'_>,
    ) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
        let details = Details::parse(&body);
        let registry = self.registry.clone();
        let login = self.registry.clone();
        let repository = repository.to_string();
        Err(match (status.as_u16(), target) {
            (401 | 403, _) => ClientError::AccessDenied {
                action,
                registry,
                repository,
                login,
                details,
            },
            (404, _) if details.has("NAME_UNKNOWN") => ClientError::RepositoryUnknown {
                registry,
                repository,
                login,
                details,
            },
            (404, Target::Manifest(what)) => ClientError::ManifestUnknown {
                registry,
                repository,
                what,
                details,
            },
            (404, Target::Blob(digest)) => ClientError::BlobUnknown {
                registry,
                repository,
                digest: digest.clone(),
                details,
            },
            (429, _) => ClientError::TooManyRequests { registry, details },
            (code, _) => ClientError::Status {
                registry,
                repository,
                request: request.to_owned(),
                status: code,
                details,
            },
        })
    }
}

/// Same scheme, host and port (RFC 6454 origin): credentials never cross an origin.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// What went wrong with a request, without reqwest's "error sending request for url (…)"
/// preamble (the URL is in the message already).
pub(crate) fn request_error(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    match error.source() {
        Some(source) if error.is_request() || error.is_connect() => chain(source),
        _ => chain(error),
    }
}

/// Whether a registry name is a loopback address (docker and containerd allow plain HTTP to
/// these without configuration).
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]` or `[v6]:port`, without brackets.
pub(crate) fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// Whether `registry` matches an `insecure-registries` entry: `host[:port]` exactly, or a CIDR
/// range (`10.0.0.0/8`) containing the registry's IP address.
pub(crate) fn matches_insecure(registry: &str, entry: &str) -> bool {
    let entry = entry
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if entry.eq_ignore_ascii_case(registry) {
        return true;
    }
    let Some((network, bits)) = entry.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(bits), Ok(ip)) = (
        network.parse::<std::net::IpAddr>(),
        bits.parse::<u32>(),
        host_of(registry).parse::<std::net::IpAddr>(),
    ) else {
        return false;
    };
    match (network, ip) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure_matching() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:1234",
            "127.0.0.2",
            "[::1]:5000",
            "reg.localhost:80",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["ghcr.io", "10.0.0.1:5000", "[::2]:1", "localhost.example.com"] {
            assert!(!is_loopback(r), "{r}");
        }
        assert!(matches_insecure("reg.lan:5000", "reg.lan:5000"));
        assert!(matches_insecure("reg.lan:5000", "http://reg.lan:5000/"));
        assert!(!matches_insecure("reg.lan:5000", "reg.lan"));
        assert!(matches_insecure("10.1.2.3:5000", "10.0.0.0/8"));
        assert!(!matches_insecure("11.1.2.3:5000", "10.0.0.0/8"));
        assert!(matches_insecure("[fd00::1]:5000", "fd00::/8"));
        assert!(matches_insecure("1.2.3.4", "0.0.0.0/0"));
        assert!(!matches_insecure("reg.lan", "10.0.0.0/8"));
        assert!(!matches_insecure("10.0.0.1", "10.0.0.0/99"));
    }

    #[test]
    fn credentials_stay_on_the_registry_origin() {
        let base = Url::parse("https://registry-1.docker.io/").unwrap();
        let same = |u: &str| same_origin(&base, &Url::parse(u).unwrap());
        assert!(same("https://registry-1.docker.io/v2/library/x/blobs/sha256:0"));
        assert!(same("https://registry-1.docker.io:443/v2/"));
        assert!(!same(
            "https://production.cloudflare.docker.com/registry-v2/blobs/x"
        ));
        assert!(!same("http://registry-1.docker.io/v2/"));
        assert!(!same("https://registry-1.docker.io:8443/v2/"));
        assert!(!same("https://registry-1.docker.io.evil.example/v2/"));
    }

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_authority("docker.io"), "registry-1.docker.io");
        assert_eq!(api_authority("ghcr.io"), "ghcr.io");
        assert_eq!(host_of("[::1]:5000"), "::1");
        assert_eq!(host_of("a.b:99"), "a.b");
    }
}
