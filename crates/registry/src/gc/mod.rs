//! Online garbage collection and retention: `rbuild registry gc`, and `[gc] interval_secs`
//! inside `rbuild serve`, while pushes go on.
//!
//! A collection starts at `now` and sets `cutoff = now - grace_secs`. **Mark** walks every
//! repository: retention picks the tags to drop; the remaining tags, and manifests pushed or
//! used after the cutoff (or a policy's untagged age), are roots; an index keeps its children
//! and a kept manifest its referrers. What kept manifests reference is marked, and so is every
//! blob a surviving link names. **Sweep** then removes, in this order, expired tags (only if
//! they still point where they did), unkept manifests, unused links, and unmarked blobs, each
//! through a `*_if_idle` call of the storage traits that refuses anything touched after the
//! cutoff.
//!
//! Why nothing in use is deleted, though the server never stops:
//! - Everything stored after the cutoff is young: an upload's blob is stamped when it is
//!   committed, a link when it is made, a manifest when it is stored.
//! - Whatever refers to something that already exists *touches* it first and checks it exists
//!   after: a manifest push touches every blob, link and child manifest it names (and the
//!   manifest's own bytes), a cross-repository mount touches the blob. The `*_if_idle`
//!   deletions are atomic with respect to those touches (the filesystem backend renames the
//!   file aside and looks again, `storage::fs` `aside`), so either the touch comes first and
//!   the entry is kept, or the deletion comes first and the push's check fails with
//!   `MANIFEST_BLOB_UNKNOWN` (the client uploads again); a manifest never names a deleted blob.
//! - A manifest that was a candidate but turns out in use keeps, for this run, everything it
//!   references, which mark did not count: an index pushed meanwhile may have just named it.
//! - Tags move only by a push, which stores the manifest first (a touch); a tag is removed by
//!   retention only if it still holds the digest retention saw and was not set again since the
//!   cutoff (a tag younger than the grace period never expires).
//!
//! The grace period must exceed the longest time a client takes between uploading a blob and
//! pushing the manifest that names it (a blob nothing refers to yet is only protected by being
//! young). distribution needs the registry read-only to collect; this does not.

mod config;
mod mark;
mod metrics;
mod retention;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rbuild_oci::{Digest, RepositoryName, Tag};

pub use config::{GcConfig, RetentionPolicy};
pub use metrics::GcMetrics;

use crate::Registry;
use crate::storage::{BlobStore, MetadataStore, StorageError};

/// Why a collection stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A retention pattern does not compile.
    #[error("gc.retention pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        source: rbuild_glob::SyntaxError,
    },
    /// A manifest that is kept cannot be read, so what it references is unknown.
    #[error(
        "manifest {digest} of {repo} is kept but its bytes cannot be read or parsed, so nothing was collected; run `rbuild registry fsck` and delete or re-push it"
    )]
    Unreadable {
        /// The repository.
        repo: RepositoryName,
        /// The manifest.
        digest: Digest,
    },
}

/// One thing a collection removed (or, in a dry run, would remove).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// A tag retention let go.
    Tag {
        /// Its repository.
        repo: RepositoryName,
        /// The tag.
        tag: Tag,
    },
    /// A manifest nothing kept.
    Manifest {
        /// Its repository.
        repo: RepositoryName,
        /// The manifest.
        digest: Digest,
    },
    /// A repository's link to a blob no kept manifest of it uses.
    Link {
        /// The repository.
        repo: RepositoryName,
        /// The blob.
        digest: Digest,
    },
    /// A blob nothing references.
    Blob {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removed::Tag { repo, tag } => write!(f, "tag {repo}:{tag}"),
            Removed::Manifest { repo, digest } => write!(f, "manifest {repo}@{digest}"),
            Removed::Link { repo, digest } => write!(f, "link {repo} -> {digest}"),
            Removed::Blob { digest, size } => write!(f, "blob {digest} ({size} bytes)"),
        }
    }
}

/// What a collection did.
#[derive(Clone, Debug)]
pub struct GcReport {
    /// Whether it only reported what it would remove.
    pub dry_run: bool,
    /// What it removed, in the order it did.
    pub removed: Vec<Removed>,
    /// Bytes of blobs removed.
    pub bytes_freed: u64,
    /// Candidates kept because something used them while the collection ran.
    pub kept_in_use: usize,
    /// How long it took.
    pub duration: Duration,
}

impl GcReport {
    fn count(&self, f: impl Fn(&Removed) -> bool) -> usize {
        self.removed.iter().filter(|r| f(r)).count()
    }
    /// Tags removed.
    pub fn tags(&self) -> usize {
        self.count(|r| matches!(r, Removed::Tag { .. }))
    }
    /// Manifests removed.
    pub fn manifests(&self) -> usize {
        self.count(|r| matches!(r, Removed::Manifest { .. }))
    }
    /// Links removed.
    pub fn links(&self) -> usize {
        self.count(|r| matches!(r, Removed::Link { .. }))
    }
    /// Blobs removed.
    pub fn blobs(&self) -> usize {
        self.count(|r| matches!(r, Removed::Blob { .. }))
    }
}

impl fmt::Display for GcReport {
    /// The summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would remove" } else { "removed" };
        write!(
            f,
            "{verb} {} tags, {} manifests, {} links, {} blobs; {} {} bytes; {} candidates kept because they were in use; {:.1}s",
            self.tags(),
            self.manifests(),
            self.links(),
            self.blobs(),
            if self.dry_run { "would free" } else { "freed" },
            self.bytes_freed,
            self.kept_in_use,
            self.duration.as_secs_f64()
        )
    }
}

/// How to run a collection.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcOptions {
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Runs one collection with the configured grace period and policies, and counts it in
    /// the collection metrics `/metrics` serves.
    pub async fn collect_garbage(&self, options: GcOptions) -> Result<GcReport, GcError> {
        let started = Instant::now();
        let now = SystemTime::now();
        let cutoff = now
            .checked_sub(Duration::from_secs(self.config.gc.grace_secs))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let outcome = match self.mark(now, cutoff).await {
            Ok(plan) => self.sweep(plan, cutoff, options.dry_run).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mut report) => {
                report.duration = started.elapsed();
                self.gc_metrics.record(&report);
                Ok(report)
            }
            Err(e) => {
                self.gc_metrics.record_failure();
                Err(e)
            }
        }
    }

    /// Deletes what `plan` lists unless it was used after `cutoff` (or, dry, only lists it).
    async fn sweep(
        &self,
        mut plan: mark::Plan,
        cutoff: SystemTime,
        dry_run: bool,
    ) -> Result<GcReport, GcError> {
        let mut report = GcReport {
            dry_run,
            removed: Vec::new(),
            bytes_freed: 0,
            kept_in_use: 0,
            duration: Duration::ZERO,
        };
        for (repo, tag) in plan.tags {
            let deleted = dry_run
                || self
                    .metadata
                    .delete_tag_if_idle(&repo, &tag.tag, &tag.digest, cutoff)
                    .await?;
            if deleted {
                report.removed.push(Removed::Tag { repo, tag: tag.tag });
            } else {
                report.kept_in_use += 1;
            }
        }
        // Indexes first: one found in use protects the manifests it holds before they come up.
        plan.manifests.sort_by_key(|m| !m.is_index);
        let mut protected: HashSet<Digest> = HashSet::new();
        for candidate in plan.manifests {
            let deleted = !protected.contains(&candidate.digest)
                && (dry_run
                    || self
                        .metadata
                        .delete_manifest_if_idle(&candidate.repo, &candidate.digest, cutoff)
                        .await?);
            if deleted {
                report.removed.push(Removed::Manifest {
                    repo: candidate.repo,
                    digest: candidate.digest,
                });
            } else {
                report.kept_in_use += 1;
                protected.insert(candidate.digest);
                protected.extend(candidate.references);
            }
        }
        for (repo, digest) in plan.links {
            if protected.contains(&digest) {
                continue;
            }
            if dry_run || self.metadata.unlink_blob_if_idle(&repo, &digest, cutoff).await? {
                report.removed.push(Removed::Link { repo, digest });
            } else {
                report.kept_in_use += 1;
            }
        }
        for blob in plan.blobs {
            if protected.contains(&blob.digest) {
                continue;
            }
            let freed = if dry_run {
                Some(blob.size)
            } else {
                self.blobs.delete_if_idle(&blob.digest, cutoff).await?
            };
            match freed {
                Some(size) => {
                    report.bytes_freed += size;
                    report.removed.push(Removed::Blob {
                        digest: blob.digest,
                        size,
                    });
                }
                None => report.kept_in_use += 1,
            }
        }
        Ok(report)
    }
}

/// Runs a collection every `[gc] interval_secs` (first after one interval) for as long as the
/// server runs; does nothing when no interval is set.
pub async fn run_scheduled<B: BlobStore, M: MetadataStore>(registry: Arc<Registry<B, M>>) {
    let Some(interval) = registry.config().gc.interval_secs else {
        return;
    };
    if let Err(e) = retention::policies(&registry.config().gc) {
        tracing::error!("scheduled garbage collection is off: {e}");
        return;
    }
    let interval = Duration::from_secs(interval.max(1));
    loop {
        tokio::time::sleep(interval).await;
        match registry.collect_garbage(GcOptions::default()).await {
            Ok(report) => {
                for removed in &report.removed {
                    tracing::debug!("garbage collection removed {removed}");
                }
                tracing::info!("garbage collection: {report}");
            }
            Err(e) => tracing::warn!("garbage collection failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
