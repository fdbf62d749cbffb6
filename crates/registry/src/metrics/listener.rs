//! The separate `/metrics` listener (`[metrics] addr`): answers `GET /metrics` and nothing
//! else, outside the registry's auth, as distribution's debug listener does. It is meant for a
//! private address the scraper reaches. Its connections are served by the main listener's
//! code ([`crate::server`]), so its answers carry request ids, have access-log lines and count
//! in the request metrics like any other.

use std::future::Future;
use std::io;
use std::sync::Arc;

use http::{Method, Request, Response};

use crate::Registry;
use crate::handlers::{method_not_allowed, no_such_endpoint};
use crate::http::{Body, empty, error_response};
use crate::route::{self, Route};
use crate::server::{Serves, accept_until, drain};
use crate::storage::{BlobStore, MetadataStore};

/// Serves `registry`'s metrics on `listener` until `shutdown` completes, then lets the
/// scrapes in flight finish (up to the configured grace period).
pub async fn serve<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let grace = registry.config().shutdown_grace();
    let graceful = accept_until(registry, listener, None, Serves::MetricsOnly, shutdown).await;
    drain(graceful, grace).await;
    Ok(())
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Answers a request to the metrics listener: the scrape for `GET` or `HEAD /metrics`,
    /// else the error the main listener gives for a path it does not serve or a method the
    /// path does not take.
    pub(crate) fn handle_metrics_only<T>(&self, request: &Request<T>) -> Response<Body> {
        let method = request.method();
        let read = matches!(*method, Method::GET | Method::HEAD);
        let result = match route::parse(request.uri().path()) {
            Ok(Some(Route::Metrics)) if read => Ok(self.metrics().response(request.headers())),
            Ok(Some(Route::Metrics)) => Err(method_not_allowed(method)),
            _ => Err(no_such_endpoint()),
        };
        let mut response = result.unwrap_or_else(|e| error_response(&e));
        if *method == Method::HEAD {
            *response.body_mut() = empty();
        }
        response
    }
}
