//! Request dispatch and the handlers, one module per resource of the API.

mod blobs;
mod catalog;
mod health;
pub(crate) mod manifests;
mod referrers;
mod tags;
#[cfg(test)]
mod tests;
mod uploads;

use http::{Method, Request, Response, StatusCode};

use crate::Registry;
use crate::auth::{Peer, Permit};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{API_VERSION, Body, RequestBody, empty, error_response};
use crate::route::{self, Route};
use crate::storage::{BlobStore, MetadataStore};

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Answers one request. Never fails: every error becomes the spec's error response.
    pub async fn handle(&self, request: Request<RequestBody>) -> Response<Body> {
        self.handle_from(
            request,
            &Peer {
                addr: None,
                tls: false,
            },
        )
        .await
    }

    /// Answers one request that came from `peer`. Authorization is decided before any
    /// handler runs, so a refused request never touches storage.
    pub async fn handle_from(&self, request: Request<RequestBody>, peer: &Peer) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let is_head = parts.method == Method::HEAD;
        let result = match route::parse(parts.uri.path()) {
            Ok(Some(Route::Token)) => self.auth.token_endpoint(&parts, body, peer).await,
            Ok(Some(Route::Metrics)) if !self.config.metrics.on_main_listener() => Err(no_such_endpoint()),
            Ok(Some(route)) => match self.auth.authorize(&route, &parts, peer).await {
                Ok(permit) => {
                    let result = self.dispatch(route.clone(), &parts, body, &permit).await;
                    if let Ok(response) = &result {
                        self.notify(
                            &route,
                            &parts,
                            peer,
                            &permit,
                            response.status(),
                            response.headers(),
                        )
                        .await;
                    }
                    result
                }
                Err(refusal) => Err(refusal),
            },
            Ok(None) => Err(no_such_endpoint()),
            Err(e) => Err(e),
        };
        let mut response = result.unwrap_or_else(|e| error_response(&e));
        if parts.uri.path().starts_with("/v2") {
            response
                .headers_mut()
                .insert(API_VERSION, http::HeaderValue::from_static("registry/2.0"));
        }
        if is_head {
            // Headers (Content-Length included) stay; a HEAD response has no body.
            *response.body_mut() = empty();
        }
        response
    }

    /// Answers a request to the metrics listener: the scrape for `GET` or `HEAD /metrics`,
    /// else the error the main listener gives for a path it does not serve or a method the
    /// path does not take.
    pub(crate) fn handle_metrics_only<T>(&self, request: &Request<T>) -> Response<Body> {
        let method = request.method();
        let read = matches!(*method, Method::GET | Method::HEAD);
        let result = match route::parse(request.uri().path()) {
            Ok(Some(Route::Metrics)) if read => Ok(self.metrics.response(request.headers())),
            Ok(Some(Route::Metrics)) => Err(method_not_allowed(method)),
            _ => Err(no_such_endpoint()),
        };
        let mut response = result.unwrap_or_else(|e| error_response(&e));
        if *method == Method::HEAD {
            *response.body_mut() = empty();
        }
        response
    }

    async fn dispatch(
        &self,
        route: Route,
        parts: &http::request::Parts,
        body: RequestBody,
        permit: &Permit,
    ) -> Result<Response<Body>> {
        let method = &parts.method;
        let read = *method == Method::GET || *method == Method::HEAD;
        match route {
            Route::Base if read => Ok(health::base()),
            Route::Health if read => Ok(health::healthz()),
            Route::Metrics if read => Ok(self.metrics.response(&parts.headers)),
            Route::Ready if read => Ok(self.readyz().await),
            Route::Catalog if *method == Method::GET => self.catalog(parts).await,
            Route::Tags(name) if *method == Method::GET => self.tags(&name, parts).await,
            Route::Manifest(name, reference) => match *method {
                _ if read => self.get_manifest(&name, &reference, parts).await,
                Method::PUT => self.put_manifest(&name, &reference, parts, body).await,
                Method::DELETE => self.delete_manifest(&name, &reference).await,
                _ => Err(method_not_allowed(method)),
            },
            Route::Blob(name, digest) => match *method {
                _ if read => self.get_blob(&name, &digest, parts).await,
                Method::DELETE => self.delete_blob(&name, &digest).await,
                _ => Err(method_not_allowed(method)),
            },
            Route::UploadStart(name) if *method == Method::POST => {
                self.start_upload(&name, parts, body, permit).await
            }
            Route::Upload(name, id) => match *method {
                Method::GET => self.upload_status(&name, &id).await,
                Method::PATCH => self.patch_upload(&name, &id, parts, body).await,
                Method::PUT => self.finish_upload(&name, &id, parts, body).await,
                Method::DELETE => self.cancel_upload(&name, &id).await,
                _ => Err(method_not_allowed(method)),
            },
            Route::Referrers(name, digest) if *method == Method::GET => {
                self.referrers(&name, &digest, parts).await
            }
            _ => Err(method_not_allowed(method)),
        }
    }

    /// Refuses a delete when the configuration disables deletion.
    fn check_delete_enabled(&self) -> Result<()> {
        if self.config.storage.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::new(
                ErrorCode::Unsupported,
                "deletion is disabled on this registry (storage.delete_enabled = false)",
            ))
        }
    }
}

fn no_such_endpoint() -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported, "no such endpoint").with_status(StatusCode::NOT_FOUND)
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("method {method} is not allowed on this endpoint"),
    )
}

/// Storage failures as the client sees them.
impl From<crate::storage::StorageError> for RegistryError {
    fn from(e: crate::storage::StorageError) -> RegistryError {
        use crate::storage::StorageError as S;
        match e {
            S::BlobUnknown => RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry"),
            S::UploadUnknown => route::unknown_upload(),
            S::OffsetMismatch { requested, current } => RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk starts at byte {requested}, but the upload holds {current} bytes; send the next chunk from byte {current}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE),
            S::DigestMismatch { expected, actual } => RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("uploaded content has digest {actual}, not {expected}"),
            )
            .with_detail(serde_json::json!({ "expected": expected, "actual": actual })),
            S::SizeMismatch { expected, received } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("chunk declared {expected} bytes but {received} arrived; nothing was stored"),
            ),
            S::Body(e) => RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("request body failed before it ended ({e}); nothing was stored, retry the chunk"),
            ),
            S::Unavailable { backend, reason } => RegistryError::unavailable(backend, &reason),
            S::Io { context, source } => RegistryError::internal(&context, source),
        }
    }
}
