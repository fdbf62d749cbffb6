//! The separate `/metrics` listener (`[metrics] addr`): answers `GET /metrics` and nothing
//! else, outside the registry's auth, as distribution's debug listener does. It is meant for a
//! private address the scraper reaches. Its connections are served by the main listener's
//! code ([`crate::server`]), so its answers carry request ids, have access-log lines and count
//! in the request metrics like any other.

use std::future::Future;
use std::io;
use std::sync::Arc;

use crate::Registry;
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
