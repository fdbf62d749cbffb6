//! Prometheus metrics: what `GET /metrics` serves, in the OpenMetrics text format.
//!
//! Every family is named `rbuild_registry_…` and labelled only from fixed sets (route names,
//! methods, status codes, storage operations, auth failure reasons), never by repository or
//! digest, so the number of series stays bounded whatever clients do. The families are filled
//! at two places only: the request wrapper in [`crate::server`] ([`HttpMetrics`]) and the
//! [`Metered`] wrapper around both stores ([`StorageMetrics`]).
//!
//! ```toml
//! [metrics]
//! enabled = true              # false: no /metrics anywhere (404 on the main listener)
//! addr = "127.0.0.1:9090"     # optional: serve /metrics here instead, without auth
//! ```

mod format;
mod http;
mod listener;
mod storage;

use std::net::SocketAddr;

use ::http::{HeaderMap, Response, StatusCode};
use prometheus_client::registry::Registry as Families;
use serde::{Deserialize, Serialize};

pub use self::http::{CountedBody, Finished, HttpMetrics, InFlight, auth_failure_reason};
pub use self::listener::serve;
pub use self::storage::{Metered, StorageMetrics};
use crate::http::{Body, full, response};

/// `[metrics]`: where `/metrics` is served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether `/metrics` is served at all.
    pub enabled: bool,
    /// A listener of its own for `/metrics` (and nothing else), outside the registry's auth;
    /// unset: `/metrics` is on the main listener, behind the registry's auth.
    pub addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            enabled: true,
            addr: None,
        }
    }
}

impl MetricsConfig {
    /// Whether the main listener answers `/metrics`.
    pub fn on_main_listener(&self) -> bool {
        self.enabled && self.addr.is_none()
    }
}

/// Every metric the registry keeps, and the Prometheus registry that encodes them.
pub struct Metrics {
    families: Families,
    http: HttpMetrics,
    storage: StorageMetrics,
}

/// Families another part of the registry keeps and fills (notifications, collections, the
/// pull-through cache): they live with the code that counts, and join the scrape here once, at
/// start, under the `rbuild_registry` prefix.
pub trait Part {
    /// Adds the part's families to `families`, named without the prefix.
    fn register(&self, families: &mut Families);
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh families, all at zero, registered under the `rbuild_registry` prefix.
    pub fn new() -> Metrics {
        Metrics::with_parts(&[])
    }

    /// Like [`Metrics::new`], with the families of `parts` in the scrape too.
    pub fn with_parts(parts: &[&dyn Part]) -> Metrics {
        let mut families = Families::with_prefix("rbuild_registry");
        for part in parts {
            part.register(&mut families);
        }
        let http = HttpMetrics::default();
        http.register(&mut families);
        let storage = StorageMetrics::default();
        storage.register(&mut families);
        Metrics {
            families,
            http,
            storage,
        }
    }

    /// The request families, for the server's request wrapper.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The storage families, for [`Metered`] stores.
    pub fn storage(&self) -> &StorageMetrics {
        &self.storage
    }

    /// The scrape: every family in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; encoding errors come only from the writer.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.families);
        text
    }

    /// The response to `GET /metrics` with `headers`: OpenMetrics when the scraper accepts
    /// it, the classic text format otherwise.
    pub fn response(&self, headers: &HeaderMap) -> Response<Body> {
        let (content_type, text) = if format::wants_openmetrics(headers) {
            (format::OPENMETRICS, self.encode())
        } else {
            (format::TEXT, format::to_text(&self.encode()))
        };
        let headers = [
            (::http::header::CONTENT_TYPE, content_type.to_owned()),
            (::http::header::CONTENT_LENGTH, text.len().to_string()),
        ];
        response(StatusCode::OK, headers, full(text))
    }
}

#[cfg(test)]
mod tests;
