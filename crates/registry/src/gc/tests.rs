//! Collections over a filesystem store in a temporary directory (and, for the races between a
//! sweep and pushes, over the memory store too), with content pushed through the same storage
//! calls (and the same reference check) as the manifest handler's.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rbuild_oci::{Digest, ManifestSummary, RepositoryName, Tag, media_type};

use super::*;
use crate::storage::check::check;
use crate::storage::fs::fsck;
use crate::storage::fs::{FsBlobStore, FsMetadataStore};
use crate::storage::memory::{MemoryBlobStore, MemoryMetadataStore};
use crate::storage::select::{Blobs, Metadata};
use crate::storage::{ManifestRecord, PageRequest};
use crate::{Config, Registry, RegistryError};

/// Which stores a fixture's registry runs on.
#[derive(Clone, Copy)]
enum Backend {
    Filesystem,
    Memory,
}

struct Fixture {
    /// The filesystem stores' root (empty for the memory stores).
    dir: tempfile::TempDir,
    registry: Registry,
}

fn fixture(gc: GcConfig) -> Fixture {
    fixture_on(Backend::Filesystem, gc)
}

fn fixture_on(backend: Backend, gc: GcConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        gc,
        ..Config::default()
    };
    let (blobs, metadata) = match backend {
        Backend::Filesystem => (
            Blobs::Filesystem(FsBlobStore::open(dir.path(), false).unwrap()),
            Metadata::Filesystem(FsMetadataStore::open(dir.path(), false).unwrap()),
        ),
        Backend::Memory => (
            Blobs::Memory(MemoryBlobStore::new()),
            Metadata::Memory(MemoryMetadataStore::new()),
        ),
    };
    let registry = Registry::new(blobs, metadata, config).unwrap();
    Fixture { dir, registry }
}

/// Runs each named test, an `async fn(Backend)`, on the filesystem and on the memory stores.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod every_backend {
            $(
                mod $test {
                    use super::super::{Backend, $test};

                    #[tokio::test]
                    async fn filesystem() {
                        $test(Backend::Filesystem).await
                    }

                    #[tokio::test]
                    async fn memory() {
                        $test(Backend::Memory).await
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    sweeps_what_nothing_keeps_and_frees_its_bytes,
    a_blob_referenced_during_the_sweep_survives,
    a_push_after_the_sweep_removed_its_blob_is_refused,
    a_kept_manifest_deleted_since_the_listing_keeps_nothing,
);

fn no_grace() -> GcConfig {
    GcConfig {
        grace_secs: 0,
        ..GcConfig::default()
    }
}

fn name(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

/// Lets the file system's coarse clock pass the instants on either side of it, so entries
/// written before are older than a cutoff taken after, and touches after are newer.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(bytes),
        "size": bytes.len(),
    })
}

/// An image manifest of a config and layers.
fn image(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(media_type::OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(media_type::OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn index(children: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": children.iter().map(|c| descriptor(media_type::OCI_MANIFEST, c)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

impl Fixture {
    async fn blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let digest = Digest::sha256_of(bytes);
        let r = &self.registry;
        r.blobs.put(&digest, Bytes::copy_from_slice(bytes)).await.unwrap();
        r.metadata.link_blob(&name(repo), &digest).await.unwrap();
        digest
    }

    /// Pushes a manifest as the handler does: check (touching) its references, store its
    /// bytes, its record, then the tag.
    async fn try_manifest(
        &self,
        repo: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) -> Result<Digest, RegistryError> {
        let r = &self.registry;
        let repo = name(repo);
        let summary = ManifestSummary::parse(bytes, None).unwrap();
        r.check_references(&repo, &summary).await?;
        let digest = Digest::sha256_of(bytes);
        r.blobs.put(&digest, Bytes::copy_from_slice(bytes)).await?;
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: summary.media_type,
            size: bytes.len() as u64,
            subject: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        r.metadata.put_manifest(&repo, &record).await?;
        if let Some(tag) = tag {
            r.metadata.set_tag(&repo, &tag.parse().unwrap(), &digest).await?;
        }
        Ok(digest)
    }

    async fn manifest(&self, repo: &str, bytes: &[u8], tag: Option<&str>) -> Digest {
        self.try_manifest(repo, bytes, tag).await.unwrap()
    }

    /// Pushes an image's blobs and manifest; returns the manifest's bytes.
    async fn push_image(&self, repo: &str, config: &[u8], layers: &[&[u8]], tag: Option<&str>) -> Vec<u8> {
        self.blob(repo, config).await;
        for layer in layers {
            self.blob(repo, layer).await;
        }
        let manifest = image(config, layers);
        self.manifest(repo, &manifest, tag).await;
        manifest
    }

    async fn stored(&self, bytes: &[u8]) -> bool {
        self.registry
            .blobs
            .stat(&Digest::sha256_of(bytes))
            .await
            .unwrap()
            .is_some()
    }

    async fn assert_fsck_clean(&self) {
        let (blobs, metadata) = (&self.registry.blobs, &self.registry.metadata);
        let mut report = check(blobs, metadata, Duration::MAX).await.unwrap();
        report.findings.extend(fsck::files(self.dir.path()).unwrap());
        assert!(!report.has_errors(), "{:#?}", report.findings);
    }

    async fn collect(&self, dry_run: bool) -> GcReport {
        self.registry
            .collect_garbage(GcOptions { dry_run })
            .await
            .unwrap()
    }
}

/// A store holding a config and a layer in `app` that no manifest names yet, past the grace.
async fn orphans(backend: Backend) -> Fixture {
    let f = fixture_on(backend, no_grace());
    f.blob("app", b"config").await;
    f.blob("app", b"layer").await;
    tick().await;
    f
}

fn removed_blobs(report: &GcReport) -> HashSet<Digest> {
    report
        .removed
        .iter()
        .filter_map(|r| match r {
            Removed::Blob { digest, .. } => Some(digest.clone()),
            _ => None,
        })
        .collect()
}

async fn sweeps_what_nothing_keeps_and_frees_its_bytes(backend: Backend) {
    let f = fixture_on(backend, no_grace());
    let shared = b"shared layer".as_slice();
    let kept = f
        .push_image("app", b"config-1", &[b"layer-1", shared], Some("v1"))
        .await;
    let moved = f
        .push_image("app", b"config-2", &[b"layer-2", shared], Some("v2"))
        .await;
    let other = f
        .push_image("other", b"config-3", &[b"layer-3", shared], Some("v1"))
        .await;
    // v2 moves to the first image: the second is now untagged; and a blob nobody names.
    f.manifest("app", &kept, Some("v2")).await;
    f.blob("app", b"orphan").await;
    tick().await;

    let dry = f.collect(true).await;
    let garbage: Vec<&[u8]> = vec![b"config-2", b"layer-2", &moved, b"orphan"];
    let expected: HashSet<Digest> = garbage.iter().map(|b| Digest::sha256_of(b)).collect();
    assert_eq!(removed_blobs(&dry), expected, "{:#?}", dry.removed);
    assert_eq!(dry.manifests(), 1);
    assert_eq!(dry.links(), 3, "config-2, layer-2 and the orphan in app");
    for bytes in &garbage {
        assert!(f.stored(bytes).await, "a dry run removes nothing");
    }

    let report = f.collect(false).await;
    assert_eq!(removed_blobs(&report), expected);
    assert_eq!(report.bytes_freed, dry.bytes_freed);
    assert_eq!(
        report.bytes_freed,
        garbage.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    for bytes in &garbage {
        assert!(!f.stored(bytes).await);
    }
    for bytes in [
        b"config-1".as_slice(),
        b"layer-1",
        shared,
        &kept,
        b"config-3",
        b"layer-3",
        &other,
    ] {
        assert!(f.stored(bytes).await, "kept content stays");
    }
    f.assert_fsck_clean().await;

    let again = f.collect(false).await;
    assert!(again.removed.is_empty(), "{:#?}", again.removed);
}

#[tokio::test]
async fn nothing_younger_than_the_grace_period_is_removed() {
    let f = fixture(GcConfig::default());
    let untagged = f.push_image("app", b"config", &[b"layer"], None).await;
    f.blob("app", b"orphan").await;
    let report = f.collect(false).await;
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
    assert!(f.stored(&untagged).await && f.stored(b"orphan").await);
}

#[tokio::test]
async fn untagged_manifests_stay_when_configured_to() {
    let f = fixture(GcConfig {
        delete_untagged: false,
        ..no_grace()
    });
    let untagged = f.push_image("app", b"config", &[b"layer"], None).await;
    tick().await;
    let report = f.collect(false).await;
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
    assert!(f.stored(&untagged).await && f.stored(b"layer").await);
}

#[tokio::test]
async fn an_index_keeps_its_children() {
    let f = fixture(no_grace());
    let amd64 = f
        .push_image("multi", b"config-amd64", &[b"layer-amd64"], None)
        .await;
    let arm64 = f
        .push_image("multi", b"config-arm64", &[b"layer-arm64"], None)
        .await;
    let list = index(&[&amd64, &arm64]);
    f.manifest("multi", &list, Some("latest")).await;
    tick().await;
    let report = f.collect(false).await;
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
    f.assert_fsck_clean().await;
}

#[tokio::test]
async fn retention_keeps_the_last_tags_matching_its_pattern() {
    let f = fixture(GcConfig {
        retention: vec![RetentionPolicy {
            repositories: "ci/**".to_owned(),
            tag_pattern: Some("pr-*".to_owned()),
            keep_last_tags: Some(2),
            delete_untagged_after_secs: None,
        }],
        ..no_grace()
    });
    let mut manifests = Vec::new();
    for i in 1..=4 {
        let config = format!("config-{i}");
        let layer = format!("layer-{i}");
        let tag = format!("pr-{i}");
        manifests.push(
            f.push_image("ci/app", config.as_bytes(), &[layer.as_bytes()], Some(&tag))
                .await,
        );
        // Pushed in order, a second apart, whatever the clock's granularity.
        let path = f
            .dir
            .path()
            .join("repositories/ci/app/_manifests/tags")
            .join(&tag);
        let when = SystemTime::now() - Duration::from_secs(100 - i);
        std::fs::File::open(path).unwrap().set_modified(when).unwrap();
    }
    f.manifest("ci/app", &manifests[0], Some("latest")).await;
    f.push_image("other", b"config-o", &[b"layer-o"], Some("pr-1"))
        .await;
    tick().await;

    let report = f.collect(false).await;
    let tags: Vec<String> = report
        .removed
        .iter()
        .filter_map(|r| match r {
            Removed::Tag { repo, tag } => Some(format!("{repo}:{tag}")),
            _ => None,
        })
        .collect();
    assert_eq!(tags, ["ci/app:pr-2", "ci/app:pr-1"]);
    assert!(
        f.stored(&manifests[0]).await,
        "pr-1's image is still tagged latest"
    );
    assert!(!f.stored(&manifests[1]).await && !f.stored(b"layer-2").await);
    assert!(f.stored(&manifests[2]).await && f.stored(&manifests[3]).await);
    assert!(f.stored(b"layer-o").await, "the policy matches ci/** only");
    let left = f
        .registry
        .metadata
        .tags(
            &name("ci/app"),
            &PageRequest {
                after: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .unwrap();
    let left: Vec<&str> = left.items.iter().map(Tag::as_str).collect();
    assert_eq!(left, ["latest", "pr-3", "pr-4"]);
    f.assert_fsck_clean().await;
}

async fn a_blob_referenced_during_the_sweep_survives(backend: Backend) {
    let f = orphans(backend).await;
    let now = SystemTime::now();
    let plan = f.registry.mark(now, now).await.unwrap();
    assert_eq!(plan.blobs.len(), 2, "both blobs are candidates at the mark");

    // A push finishes between the mark and the sweep, naming both blobs.
    tick().await;
    let manifest = image(b"config", &[b"layer"]);
    f.manifest("app", &manifest, Some("v1")).await;
    let report = f.registry.sweep(plan, now, false).await.unwrap();
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
    assert!(report.kept_in_use >= 2);
    assert!(f.stored(b"config").await && f.stored(b"layer").await);
    f.assert_fsck_clean().await;
}

async fn a_push_after_the_sweep_removed_its_blob_is_refused(backend: Backend) {
    let f = orphans(backend).await;
    f.collect(false).await;
    let refused = f
        .try_manifest("app", &image(b"config", &[b"layer"]), Some("v1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code, crate::ErrorCode::ManifestBlobUnknown);
    f.assert_fsck_clean().await;
}

/// The mark lists a repository's tags, then reads each kept manifest; meanwhile another
/// replica's collection may delete one whose tag moved on. Such a manifest keeps nothing and
/// the collection goes on; one still held whose bytes are gone stops it.
async fn a_kept_manifest_deleted_since_the_listing_keeps_nothing(backend: Backend) {
    let f = fixture_on(backend, no_grace());
    let repo = name("app");
    let held = f.push_image("app", b"config", &[b"layer"], Some("v1")).await;
    let held = Digest::sha256_of(&held);
    let refs = f.registry.reread(&repo, &held).await.unwrap().unwrap();
    assert_eq!(refs.blobs.len(), 2, "a readable manifest's config and layer");

    let gone = f.push_image("app", b"old config", &[b"old layer"], None).await;
    let gone = Digest::sha256_of(&gone);
    f.registry.metadata.delete_manifest(&repo, &gone).await.unwrap();
    f.registry.blobs.delete(&gone).await.unwrap();
    assert!(f.registry.reread(&repo, &gone).await.unwrap().is_none());

    f.registry.blobs.delete(&held).await.unwrap();
    let damaged = f.registry.reread(&repo, &held).await.unwrap_err();
    assert!(matches!(damaged, GcError::Unreadable { .. }), "{damaged}");
}

#[tokio::test]
async fn an_index_pushed_during_the_sweep_keeps_its_untagged_child_and_layers() {
    let f = fixture(no_grace());
    let child = f.push_image("multi", b"config", &[b"layer"], None).await;
    tick().await;
    let now = SystemTime::now();
    let plan = f.registry.mark(now, now).await.unwrap();
    assert_eq!(plan.manifests.len(), 1);

    tick().await;
    f.manifest("multi", &index(&[&child]), Some("latest")).await;
    let report = f.registry.sweep(plan, now, false).await.unwrap();
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
    assert!(f.stored(&child).await && f.stored(b"layer").await && f.stored(b"config").await);
    f.assert_fsck_clean().await;
}

/// Pushes `app:v1` under a policy that keeps no tag, marks (v1 expires), pushes config-`n`
/// and layer-`n` to `app:v1` again, and sweeps; returns what v1 points at after, and the report.
async fn sweep_after_pushing_v1_again(n: u8) -> (Option<Digest>, GcReport) {
    let f = fixture(GcConfig {
        retention: vec![RetentionPolicy {
            repositories: "**".to_owned(),
            tag_pattern: None,
            keep_last_tags: Some(0),
            delete_untagged_after_secs: None,
        }],
        ..no_grace()
    });
    f.push_image("app", b"config-1", &[b"layer-1"], Some("v1")).await;
    tick().await;
    let now = SystemTime::now();
    let plan = f.registry.mark(now, now).await.unwrap();
    assert_eq!(plan.tags.len(), 1);

    tick().await;
    let (config, layer) = (format!("config-{n}"), format!("layer-{n}"));
    f.push_image("app", config.as_bytes(), &[layer.as_bytes()], Some("v1"))
        .await;
    let report = f.registry.sweep(plan, now, false).await.unwrap();
    f.assert_fsck_clean().await;
    let resolved = f
        .registry
        .metadata
        .resolve_tag(&name("app"), &"v1".parse().unwrap())
        .await
        .unwrap();
    (resolved, report)
}

#[tokio::test]
async fn a_tag_moved_during_the_sweep_is_not_removed() {
    let (resolved, report) = sweep_after_pushing_v1_again(2).await;
    assert_eq!(
        resolved,
        Some(Digest::sha256_of(&image(b"config-2", &[b"layer-2"])))
    );
    assert!(!report.removed.iter().any(|r| matches!(r, Removed::Tag { .. })));
}

#[tokio::test]
async fn a_tag_pushed_again_during_the_sweep_is_not_removed() {
    // The same image to the same tag: the digest is unchanged, but it is a new push.
    let (resolved, report) = sweep_after_pushing_v1_again(1).await;
    assert_eq!(
        resolved,
        Some(Digest::sha256_of(&image(b"config-1", &[b"layer-1"])))
    );
    assert!(report.removed.is_empty(), "{:#?}", report.removed);
}

#[tokio::test]
async fn fsck_reports_what_a_stopped_collection_left_aside() {
    let f = fixture(no_grace());
    let layer = f.blob("app", b"layer").await;
    let path = f
        .dir
        .path()
        .join("blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex());
    let aside = path.with_file_name(format!(".tmp-gc-{}.0123abcd", layer.hex()));
    std::fs::rename(&path, &aside).unwrap();
    let findings = fsck::files(f.dir.path()).unwrap();
    assert!(
        findings
            .iter()
            .any(|finding| finding.subject == aside.display().to_string()
                && finding
                    .message
                    .contains("the next `rbuild registry gc` puts it back")),
        "{findings:#?}"
    );
}
