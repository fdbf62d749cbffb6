//! `GcMetrics`: what garbage collection did, for `/metrics`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::Part;

use super::GcReport;

/// Counters of collections and what they removed, and how long they took. Shared by clones.
#[derive(Clone, Debug)]
pub struct GcMetrics {
    runs: Counter,
    failures: Counter,
    blobs_deleted: Counter,
    manifests_deleted: Counter,
    tags_deleted: Counter,
    bytes_freed: Counter,
    duration: Histogram,
}

impl Default for GcMetrics {
    fn default() -> GcMetrics {
        GcMetrics {
            runs: Counter::default(),
            failures: Counter::default(),
            blobs_deleted: Counter::default(),
            manifests_deleted: Counter::default(),
            tags_deleted: Counter::default(),
            bytes_freed: Counter::default(),
            // 10 ms to about 45 minutes.
            duration: Histogram::new(exponential_buckets(0.01, 4.0, 10)),
        }
    }
}

impl Part for GcMetrics {
    /// Adds the families to `registry`, all named `rbuild_registry_gc_…`.
    fn register(&self, registry: &mut Registry) {
        registry.register("gc_runs", "Garbage collections completed", self.runs.clone());
        registry.register(
            "gc_failures",
            "Garbage collections that stopped on an error",
            self.failures.clone(),
        );
        registry.register(
            "gc_blobs_deleted",
            "Blobs garbage collection deleted",
            self.blobs_deleted.clone(),
        );
        registry.register(
            "gc_manifests_deleted",
            "Manifests garbage collection deleted",
            self.manifests_deleted.clone(),
        );
        registry.register(
            "gc_tags_deleted",
            "Tags retention policies deleted",
            self.tags_deleted.clone(),
        );
        registry.register_with_unit(
            "gc_freed",
            "Bytes of blobs garbage collection deleted",
            Unit::Bytes,
            self.bytes_freed.clone(),
        );
        registry.register_with_unit(
            "gc_duration",
            "How long garbage collections took",
            Unit::Seconds,
            self.duration.clone(),
        );
    }
}

impl GcMetrics {
    /// Counts a finished collection (a dry run removes nothing, so it counts as a run only).
    pub(crate) fn record(&self, report: &GcReport) {
        self.runs.inc();
        self.duration.observe(report.duration.as_secs_f64());
        if report.dry_run {
            return;
        }
        self.blobs_deleted.inc_by(report.blobs() as u64);
        self.manifests_deleted.inc_by(report.manifests() as u64);
        self.tags_deleted.inc_by(report.tags() as u64);
        self.bytes_freed.inc_by(report.bytes_freed);
    }

    /// Counts a collection that failed.
    pub(crate) fn record_failure(&self) {
        self.failures.inc();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rbuild_oci::Digest;

    use super::*;
    use crate::gc::Removed;

    #[test]
    fn a_report_moves_the_counters_and_a_dry_run_only_the_runs() {
        let metrics = GcMetrics::default();
        let repo = "a/b".parse().unwrap();
        let digest = Digest::sha256_of(b"x");
        let report = GcReport {
            dry_run: false,
            removed: vec![
                Removed::Tag {
                    repo: "a/b".parse().unwrap(),
                    tag: "old".parse().unwrap(),
                },
                Removed::Manifest {
                    repo,
                    digest: digest.clone(),
                },
                Removed::Blob { digest, size: 10 },
            ],
            bytes_freed: 10,
            kept_in_use: 0,
            duration: Duration::from_millis(30),
        };
        metrics.record(&report);
        metrics.record(&GcReport {
            dry_run: true,
            ..report
        });
        metrics.record_failure();
        assert_eq!(metrics.runs.get(), 2);
        assert_eq!(metrics.failures.get(), 1);
        assert_eq!(metrics.blobs_deleted.get(), 1);
        assert_eq!(metrics.manifests_deleted.get(), 1);
        assert_eq!(metrics.tags_deleted.get(), 1);
        assert_eq!(metrics.bytes_freed.get(), 10);

        let mut registry = Registry::with_prefix("rbuild_registry");
        Part::register(&metrics, &mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "gc_runs_total 2",
            "gc_freed_bytes_total 10",
            "gc_duration_seconds_count 2",
            "gc_duration_seconds_bucket{le=\"0.04\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
