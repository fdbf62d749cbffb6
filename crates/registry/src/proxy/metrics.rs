//! The pull-through cache's Prometheus families. No repository or digest labels: one series
//! each, however many images pass through.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::metrics::Part;

/// Counters of what the cache did; [`Part::register`] exposes them.
#[derive(Clone, Debug, Default)]
pub struct ProxyMetrics {
    /// Manifests and blobs served from the cache without asking the upstream for content.
    pub hits: Counter,
    /// Manifests and blobs fetched from the upstream because the cache lacked them (or a tag
    /// had moved).
    pub misses: Counter,
    /// Upstream requests that failed: unreachable, 5xx, 429, refused credentials.
    pub upstream_errors: Counter,
    /// Bytes of blobs and manifests read from the upstream.
    pub fetched_bytes: Counter,
    /// Tags served from the cache past their TTL because the upstream could not confirm them.
    pub stale_served: Counter,
}

impl Part for ProxyMetrics {
    /// Adds the families to `registry`, named `rbuild_registry_proxy_…` under its prefix.
    fn register(&self, registry: &mut Registry) {
        let families = [
            ("hits", "manifests and blobs served from the cache", &self.hits),
            (
                "misses",
                "manifests and blobs fetched from the upstream",
                &self.misses,
            ),
            (
                "upstream_errors",
                "upstream requests that failed (unreachable, 5xx, 429, auth)",
                &self.upstream_errors,
            ),
            (
                "fetched_bytes",
                "bytes read from the upstream",
                &self.fetched_bytes,
            ),
            (
                "stale_served",
                "expired tags served because the upstream could not be asked",
                &self.stale_served,
            ),
        ];
        for (name, help, counter) in families {
            registry.register(
                format!("proxy_{name}"),
                format!("Pull-through cache: {help}"),
                counter.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_total_suffix() {
        let metrics = ProxyMetrics::default();
        let mut registry = Registry::with_prefix("rbuild_registry");
        Part::register(&metrics, &mut registry);
        metrics.hits.inc();
        metrics.misses.inc_by(2);
        metrics.fetched_bytes.inc_by(1024);
        metrics.stale_served.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "rbuild_registry_proxy_hits_total 1",
            "rbuild_registry_proxy_misses_total 2",
            "rbuild_registry_proxy_upstream_errors_total 0",
            "rbuild_registry_proxy_fetched_bytes_total 1024",
            "rbuild_registry_proxy_stale_served_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
