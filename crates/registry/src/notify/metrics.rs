//! The notification metrics: per endpoint, events queued, delivered, dropped and pending, and
//! failed delivery attempts. The only label is the endpoint's name, so there are as many
//! series as `[[notifications]]` tables.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::Part;

/// The `endpoint` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The endpoint's name (its `name`, or its index among the tables).
    pub endpoint: String,
}

/// The notification metric families, registered on `/metrics` with [`Part::register`].
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    queued: Family<EndpointLabels, Counter>,
    delivered: Family<EndpointLabels, Counter>,
    dropped: Family<EndpointLabels, Counter>,
    failures: Family<EndpointLabels, Counter>,
    pending: Family<EndpointLabels, Gauge>,
}

impl Part for NotifyMetrics {
    /// Adds the families to `registry` (the `_total` suffixes are added by the encoder).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "notification_events_queued",
            "Events accepted into an endpoint's delivery queue",
            self.queued.clone(),
        );
        registry.register(
            "notification_events_delivered",
            "Events an endpoint acknowledged with a 2xx or 3xx status",
            self.delivered.clone(),
        );
        registry.register(
            "notification_events_dropped",
            "Events dropped because an endpoint's queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "notification_delivery_failures",
            "Delivery attempts that failed (connection error, timeout or an error status) and will be retried",
            self.failures.clone(),
        );
        registry.register(
            "notification_events_pending",
            "Events queued or being delivered to an endpoint",
            self.pending.clone(),
        );
    }
}

impl NotifyMetrics {
    /// The counters of one endpoint, created at zero so every series exists from the start.
    pub(super) fn endpoint(&self, name: &str) -> EndpointCounters {
        let labels = EndpointLabels {
            endpoint: name.to_owned(),
        };
        EndpointCounters {
            queued: self.queued.get_or_create(&labels).clone(),
            delivered: self.delivered.get_or_create(&labels).clone(),
            dropped: self.dropped.get_or_create(&labels).clone(),
            failures: self.failures.get_or_create(&labels).clone(),
            pending: self.pending.get_or_create(&labels).clone(),
        }
    }
}

/// One endpoint's series, held by its queue and its sender (clones share the values).
#[derive(Clone, Debug, Default)]
pub(super) struct EndpointCounters {
    pub queued: Counter,
    pub delivered: Counter,
    pub dropped: Counter,
    pub failures: Counter,
    pub pending: Gauge,
}

impl EndpointCounters {
    /// An event entered the queue.
    pub fn on_queued(&self) {
        self.queued.inc();
        self.pending.inc();
    }

    /// An event was acknowledged.
    pub fn on_delivered(&self) {
        self.delivered.inc();
        self.pending.dec();
    }

    /// An event found the queue full. Returns how many have been dropped so far.
    pub fn on_dropped(&self) -> u64 {
        self.dropped.inc() + 1
    }

    /// A delivery attempt failed.
    pub fn on_failure(&self) {
        self.failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_endpoint_and_shared_with_the_families() {
        let metrics = NotifyMetrics::default();
        let a = metrics.endpoint("a");
        let b = metrics.endpoint("b");
        a.on_queued();
        a.on_queued();
        a.on_delivered();
        a.on_failure();
        assert_eq!(b.on_dropped(), 1);
        assert_eq!(b.on_dropped(), 2);
        let again = metrics.endpoint("a");
        assert_eq!(again.queued.get(), 2);
        assert_eq!(again.delivered.get(), 1);
        assert_eq!(again.pending.get(), 1);
        assert_eq!(again.failures.get(), 1);
        assert_eq!(again.dropped.get(), 0);
        assert_eq!(metrics.endpoint("b").dropped.get(), 2);
    }

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let metrics = NotifyMetrics::default();
        metrics.endpoint("ci").on_queued();
        let mut registry = Registry::with_prefix("rbuild_registry");
        Part::register(&metrics, &mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "rbuild_registry_notification_events_queued_total{endpoint=\"ci\"} 1",
            "rbuild_registry_notification_events_delivered_total{endpoint=\"ci\"} 0",
            "rbuild_registry_notification_events_dropped_total{endpoint=\"ci\"} 0",
            "rbuild_registry_notification_delivery_failures_total{endpoint=\"ci\"} 0",
            "rbuild_registry_notification_events_pending{endpoint=\"ci\"} 1",
            "# TYPE rbuild_registry_notification_events_queued counter",
            "# TYPE rbuild_registry_notification_events_pending gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
