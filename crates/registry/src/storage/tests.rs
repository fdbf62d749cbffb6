//! The filesystem and in-memory stores against the [conformance suite](super::conformance),
//! and what only the filesystem layout promises.

use rbuild_oci::{Digest, RepositoryName, Tag};

use super::MetadataStore;
use super::conformance;
use super::fs::{FsBlobStore, FsMetadataStore};
use super::memory::{MemoryBlobStore, MemoryMetadataStore};

// The suites run on a multi-thread runtime so that their concurrent writers really run in
// parallel with the calls they race.

fn name(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

fn fs_stores() -> (tempfile::TempDir, FsBlobStore, FsMetadataStore) {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::open(dir.path(), true).unwrap();
    let metadata = FsMetadataStore::open(dir.path(), true).unwrap();
    (dir, blobs, metadata)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_blob_store_passes_the_suite() {
    let (_dir, blobs, _) = fs_stores();
    conformance::blob_store(&blobs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_metadata_store_passes_the_suite() {
    let (_dir, _, metadata) = fs_stores();
    conformance::metadata_store(&metadata).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_handles_on_one_root_share_uploads_and_race_writers() {
    let (dir, blobs, _) = fs_stores();
    let reopened = FsBlobStore::open(dir.path(), true).unwrap();
    conformance::upload_moves_between_handles(&blobs, &reopened).await;
    conformance::same_digest_through_two_handles(&blobs, &reopened).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_blob_store_passes_the_suite() {
    conformance::blob_store(&MemoryBlobStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_metadata_store_passes_the_suite() {
    conformance::metadata_store(&MemoryMetadataStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_clones_share_uploads_and_race_writers() {
    let blobs = MemoryBlobStore::new();
    conformance::upload_moves_between_handles(&blobs, &blobs.clone()).await;
    conformance::same_digest_through_two_handles(&blobs, &blobs.clone()).await;
}

#[tokio::test]
async fn fs_names_never_leave_the_root() {
    let (dir, _, metadata) = fs_stores();
    let repo = name("a/b");
    metadata
        .set_tag(&repo, &tag("_x"), &Digest::sha256_of(b"m"))
        .await
        .unwrap();
    let expected = dir.path().join("repositories/a/b/_manifests/tags/_x");
    assert!(expected.is_file());
}
