//! Serving the registry over HTTP: the accept loop, graceful shutdown, request ids, access
//! logs and request metrics, and the background purge of abandoned uploads.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::Registry;
use crate::auth::Peer;
use crate::http::{Body, SentError, decode_component, header};
use crate::metrics::{Finished, HttpMetrics, auth_failure_reason};
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::route;
use crate::storage::{BlobStore, MetadataStore, StorageResult};
use crate::tls::Tls;

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `registry` over plain HTTP on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to the configured grace period) before returning.
pub async fn run<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(registry, listener, None, shutdown).await
}

/// Like [`run`], over TLS when `tls` is given (HTTP/2 or HTTP/1.1, as ALPN settles). The
/// handshake runs in the connection's own task, so a slow client holds up no one else.
pub async fn run_with<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    registry
        .notifier()
        .start(listener.local_addr()?)
        .map_err(io::Error::other)?;
    let purge = tokio::spawn(purge_loop(registry.clone()));
    let gc = tokio::spawn(crate::gc::run_scheduled(registry.clone()));
    let graceful = accept_until(registry.clone(), listener, tls, Serves::Api, shutdown).await;
    purge.abort();
    gc.abort();
    drain(graceful, registry.config().shutdown_grace()).await;
    Ok(())
}

/// What a listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Serves {
    /// The registry's API (and `/metrics`, unless `[metrics] addr` gives it a listener).
    Api,
    /// `/metrics` only, outside the registry's auth: `[metrics] addr`.
    MetricsOnly,
}

/// Accepts connections on `listener` and serves what `serves` says on each, until `shutdown`
/// completes; then closes the listener and returns the connections still open, to drain.
pub(crate) async fn accept_until<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    serves: Serves,
    shutdown: impl Future<Output = ()>,
) -> GracefulShutdown {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let registry = registry.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        let peer = Peer { addr: Some(addr), tls: false };
                        tokio::spawn(serve_connection(builder, watcher, stream, registry, peer, serves));
                    }
                    Some(tls) => {
                        let acceptor = tls.acceptor();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let peer = Peer { addr: Some(addr), tls: true };
                                    serve_connection(builder, watcher, stream, registry, peer, serves).await;
                                }
                                Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                                Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                            }
                        });
                    }
                }
            }
            () = &mut shutdown => return graceful,
        }
    }
}

/// Lets the requests in flight on `graceful`'s connections finish, for up to `grace`.
pub(crate) async fn drain(graceful: GracefulShutdown, grace: Duration) {
    tracing::info!(
        "shutting down; waiting up to {}s for in-flight requests",
        grace.as_secs()
    );
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// Serves HTTP on one established connection until it closes or shutdown drains it.
async fn serve_connection<B, M, S>(
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stream: S,
    registry: Arc<Registry<B, M>>,
    peer: Peer,
    serves: Serves,
) where
    B: BlobStore,
    M: MetadataStore,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let registry = registry.clone();
        async move { Ok::<_, std::convert::Infallible>(logged(registry, request, peer, serves).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await
        && let Some(addr) = peer.addr
    {
        tracing::debug!("connection from {addr}: {e}");
    }
}

/// Handles a request: gives it an id (sent back in `X-Request-Id`, and on every log line
/// written while answering), and arranges for its access-log line and its metrics once the
/// response body is done. The one place every request on every listener passes, so the one
/// place it is counted.
async fn logged<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    request: Request<Incoming>,
    peer: Peer,
    serves: Serves,
) -> Response<Body> {
    let started = Instant::now();
    let id = RequestId::of(request.headers());
    let route = route::name_of(request.uri().path());
    let sent_credentials = request.headers().contains_key(AUTHORIZATION);
    let line = AccessLine {
        id: id.clone(),
        route,
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(loggable_query).unwrap_or_default(),
        peer: peer.addr,
        status: StatusCode::OK,
        error: None,
        started,
    };
    let in_flight = registry.metrics().http().begin(route, request.method());
    let request = request.map(|body| {
        registry
            .metrics()
            .http()
            .count_request(route, body)
            .boxed_unsync()
    });
    let span = tracing::info_span!("request", request_id = %id);
    let response = match serves {
        Serves::Api => registry.handle_from(request, &peer).instrument(span).await,
        Serves::MetricsOnly => span.in_scope(|| registry.handle_metrics_only(&request)),
    };
    drop(in_flight);
    let http = registry.metrics().http();
    let (mut parts, body) = response.into_parts();
    let challenge = header(&parts.headers, &WWW_AUTHENTICATE);
    if let Some(reason) = auth_failure_reason(parts.status, sent_credentials, challenge) {
        http.auth_failure(reason);
    }
    parts.headers.insert(X_REQUEST_ID, id.header_value());
    let line = AccessLine {
        status: parts.status,
        error: parts.extensions.remove::<SentError>(),
        ..line
    };
    let body = http.count_response(route, body);
    let body = body.on_end(move |bytes| line.end(bytes, registry.metrics().http()));
    Response::from_parts(parts, body.boxed_unsync())
}

/// What one access-log line records.
struct AccessLine {
    id: RequestId,
    /// [`route::Route::name`] of the path.
    route: &'static str,
    method: Method,
    path: String,
    /// The query as [`loggable_query`] leaves it.
    query: String,
    peer: Option<SocketAddr>,
    status: StatusCode,
    /// The error the client was sent, if any.
    error: Option<SentError>,
    started: Instant,
}

impl AccessLine {
    /// Writes the line and records the request's metrics, once `bytes` of the response body
    /// have gone out. The field names (and, for the text format, their order) are documented
    /// in the README: keep them stable, and add new fields at the end.
    fn end(self, bytes: u64, http: &HttpMetrics) {
        let elapsed = self.started.elapsed();
        tracing::info!(
            target: "rbuild::access",
            method = %self.method,
            path = %self.path,
            query = %self.query,
            status = self.status.as_u16(),
            bytes = bytes,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            peer = %self.peer.map(|p| p.to_string()).unwrap_or_default(),
            request_id = %self.id,
            route = %self.route,
            error_code = self.error.as_ref().map(|e| e.code.as_str()),
            error_message = self.error.as_ref().map(|e| e.message.as_str()),
        );
        http.finish(&Finished {
            route: self.route,
            method: self.method,
            status: self.status,
            elapsed,
        });
    }
}

/// Query parameters the access log shows as the client sent them: the ones the API and the
/// token endpoint read (`ns` is containerd's mirror namespace), so an operator sees mounts,
/// upload digests, pages and requested scopes. None of them carries a secret.
const LOGGED_PARAMETERS: [&str; 13] = [
    "mount",
    "from",
    "digest",
    "tag",
    "n",
    "last",
    "artifactType",
    "ns",
    "service",
    "scope",
    "account",
    "client_id",
    "offline_token",
];

/// A query string fit for the access log. Any parameter not in [`LOGGED_PARAMETERS`] may carry
/// a credential (`access_token`, `password`, a refresh token, distribution's `_state`, a
/// presigned URL's signature, whatever a proxy appends), so only its name is kept, with the
/// value `REDACTED`; a bare word is redacted whole. Kept parts stay as sent (still
/// percent-encoded: hyper refuses control characters in the target, so a line cannot be forged).
fn loggable_query(query: &str) -> String {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let key = part.split_once('=').map_or(part, |(key, _)| key);
            if LOGGED_PARAMETERS.contains(&decode_component(key).as_str()) {
                part.to_owned()
            } else if key.len() < part.len() {
                format!("{key}=REDACTED")
            } else {
                "REDACTED".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Purges stale uploads every `purge_interval_secs`.
async fn purge_loop<B: BlobStore, M: MetadataStore>(registry: Arc<Registry<B, M>>) {
    let uploads = &registry.config().uploads;
    let interval = Duration::from_secs(uploads.purge_interval_secs.max(1));
    let max_age = Duration::from_secs(uploads.purge_after_secs);
    loop {
        match registry.purge_stale_uploads(max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("purged {n} stale uploads"),
            Err(e) => tracing::warn!("purging stale uploads: {e}"),
        }
        tokio::time::sleep(interval).await;
    }
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Discards uploads that have not grown for `max_age`: sessions and their staged data,
    /// and staged data no session refers to (left by a crash). Returns how many went.
    pub async fn purge_stale_uploads(&self, max_age: Duration) -> StorageResult<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(max_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let sessions = self.metadata.uploads().await?;
        let staged = self.blobs.staged_uploads().await?;
        let mut purged = 0;
        for (id, modified) in &staged {
            let session = sessions.iter().find(|(_, s)| &s.id == id);
            let stale = *modified < cutoff && session.is_none_or(|(_, s)| s.started < cutoff);
            if stale {
                self.blobs.upload_cancel(id).await?;
                if let Some((repo, _)) = session {
                    self.metadata.delete_upload(repo, id).await?;
                }
                purged += 1;
            }
        }
        for (repo, session) in &sessions {
            let has_data = staged.iter().any(|(id, _)| id == &session.id);
            if !has_data && session.started < cutoff {
                self.metadata.delete_upload(repo, &session.id).await?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_shows_mounts_digests_and_pages_as_sent() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for query in [
            format!("mount={d}&from=team/base"),
            format!("digest={d}"),
            "digest=sha256%3Aabc".to_owned(),
            "n=10&last=v1.2".to_owned(),
            "tag=a&tag=b".to_owned(),
            "artifactType=application%2Fspdx%2Bjson".to_owned(),
            "ns=docker.io".to_owned(),
            "service=registry&scope=repository:a/b:pull,push&account=alice&offline_token=true&client_id=docker"
                .to_owned(),
        ] {
            assert_eq!(loggable_query(&query), query);
        }
        assert_eq!(loggable_query(""), "");
        assert_eq!(loggable_query("n=1&&last=a"), "n=1&last=a");
    }

    #[test]
    fn query_never_shows_credentials_or_unknown_values() {
        let cases = [
            ("access_token=eyJhbGciOi.secret", "access_token=REDACTED"),
            ("token=s3cr3t&digest=sha256:ab", "token=REDACTED&digest=sha256:ab"),
            ("password=hunter2", "password=REDACTED"),
            (
                "refresh_token=r&client_secret=c",
                "refresh_token=REDACTED&client_secret=REDACTED",
            ),
            ("_state=hmac.signed.state", "_state=REDACTED"),
            (
                "X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc",
                "X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED",
            ),
            (
                "mount=sha256:ab&from=a&code=oauth-code",
                "mount=sha256:ab&from=a&code=REDACTED",
            ),
            // A bare word may be a token itself; an encoded name is judged by what it decodes to.
            ("eyJhbGciOi.bare.token", "REDACTED"),
            (
                "access%5Ftoken=x&dig%65st=sha256:ab",
                "access%5Ftoken=REDACTED&dig%65st=sha256:ab",
            ),
            // A known name does not vouch for a different one that merely starts like it.
            ("digestx=secret&n=1", "digestx=REDACTED&n=1"),
        ];
        for (query, logged) in cases {
            assert_eq!(loggable_query(query), logged, "{query}");
        }
    }
}
