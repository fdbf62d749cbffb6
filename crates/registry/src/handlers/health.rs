//! `/v2/` (the API check), `/healthz` (liveness) and `/readyz` (readiness).

use http::{Response, StatusCode};

use crate::Registry;
use crate::http::{Body, json};
use crate::storage::{BlobStore, MetadataStore};

/// `GET /v2/`: the registry speaks the v2 API.
pub(super) fn base() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({}), Vec::new())
}

/// `GET /healthz`: the process is up and answering.
pub(super) fn healthz() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }), Vec::new())
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// `GET /readyz`: both stores accept writes, so pushes will succeed.
    pub(super) async fn readyz(&self) -> Response<Body> {
        let checks = [self.blobs.health().await, self.metadata.health().await];
        match checks.into_iter().find_map(Result::err) {
            None => json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ready" }),
                Vec::new(),
            ),
            Some(e) => {
                tracing::warn!("readiness check failed: {e}");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({ "status": "unavailable", "reason": e.to_string() }),
                    Vec::new(),
                )
            }
        }
    }
}
