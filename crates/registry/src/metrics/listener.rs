//! The separate `/metrics` listener (`[metrics] addr`): a plain HTTP/1.1 server that answers
//! `GET /metrics` and nothing else, outside the registry's auth, as distribution's debug
//! listener does. It is meant for a private address the scraper reaches.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Registry;
use crate::http::{Body, empty, response};
use crate::storage::{BlobStore, MetadataStore};

/// Serves `registry`'s metrics on `listener` until `shutdown` completes.
pub async fn serve<B: BlobStore, M: MetadataStore>(
    registry: Arc<Registry<B, M>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let registry = registry.clone();
                let service = hyper::service::service_fn(move |request| {
                    let answer = answer(&registry, &request);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                tokio::spawn(async move {
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = connection.await {
                        tracing::debug!("metrics listener: {e}");
                    }
                });
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}

fn answer<B: BlobStore, M: MetadataStore>(
    registry: &Registry<B, M>,
    request: &Request<Incoming>,
) -> Response<Body> {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if !read || request.uri().path() != "/metrics" {
        return response(StatusCode::NOT_FOUND, [], empty());
    }
    let mut answer = registry.metrics().response(request.headers());
    if *request.method() == Method::HEAD {
        *answer.body_mut() = empty();
    }
    answer
}
