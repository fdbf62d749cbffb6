//! The conformance suite every [`BlobStore`] and [`MetadataStore`] implementation must pass.
//!
//! Each backend's tests call these functions on fresh, empty stores: the filesystem and memory
//! stores in `storage::tests`, and any other backend in its own module, so that what the
//! handlers, garbage collection and fsck rely on is written down once and checked the same way
//! everywhere. Beside the single-caller behaviour of every method, the suite covers what a
//! store shared by replicas meets:
//!
//! - concurrent writers of the same digest (puts and upload commits at once): each succeeds
//!   and one blob with the right bytes results;
//! - partial and failed uploads: a body failing mid-stream (after more than an S3 part's worth
//!   of data) leaves the upload as it was and resumable, a cancel removes the staged data, and
//!   a commit with the wrong digest stores nothing and keeps the staged data;
//! - paginated listings (`blobs`, `repositories`, `tags`) walked while other tasks store and
//!   link new entries: every entry present before the walk appears exactly once, in strictly
//!   increasing order;
//! - deletion of blobs, of manifests (with their tags and referrers entries, in one repository
//!   only) and of tags.
//!
//! [`same_digest_through_two_handles`] runs the concurrent writers through two handles, as
//! [`upload_moves_between_handles`] moves an upload. The concurrent checks spawn Tokio tasks on clones of the store, so they run on either
//! runtime flavour; on a multi-thread runtime the writers really run in parallel.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
use rbuild_oci::{Algorithm, Digest, RepositoryName, Tag};

use super::*;

/// Runs every blob-store check on `blobs`, which must be empty.
pub async fn blob_store<B: BlobStore>(blobs: &B) {
    blob_suite(blobs).await;
    blob_gc_suite(blobs).await;
    concurrent_writers_of_one_digest(blobs, blobs).await;
    failed_and_cancelled_uploads(blobs).await;
    blob_listing_under_writes(blobs).await;
    blob_deletion(blobs).await;
}

/// Runs every metadata-store check on `metadata`, which must be empty.
pub async fn metadata_store<M: MetadataStore>(metadata: &M) {
    metadata_suite(metadata).await;
    metadata_gc_suite(metadata).await;
    metadata_listings_under_writes(metadata).await;
    metadata_deletion(metadata).await;
}

/// An upload begun through `first` continues and completes through `second`, another handle
/// on the same storage (a restarted process, or another replica).
pub async fn upload_moves_between_handles<B: BlobStore>(first: &B, second: &B) {
    let id = UploadId::new();
    first.upload_create(&id).await.unwrap();
    first
        .upload_append(&id, body(&[b"first half, "]), AppendCheck::default())
        .await
        .unwrap();
    let size = second.upload_size(&id).await.unwrap();
    assert_eq!(size, 12);
    let next = AppendCheck {
        offset: Some(size),
        length: None,
    };
    second
        .upload_append(&id, body(&[b"second half"]), next)
        .await
        .unwrap();
    let digest = Digest::sha256_of(b"first half, second half");
    assert_eq!(first.upload_commit(&id, &digest).await.unwrap(), 23);
    assert_eq!(second.stat(&digest).await.unwrap(), Some(23));
}

fn body(chunks: &[&[u8]]) -> ByteStream {
    stream_of(chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect(), false)
}

fn failing_body(first: &[u8]) -> ByteStream {
    stream_of(vec![Bytes::copy_from_slice(first)], true)
}

/// A body of `chunks`, ending in a client disconnect if `fail`.
fn stream_of(chunks: Vec<Bytes>, fail: bool) -> ByteStream {
    let mut items: Vec<io::Result<Bytes>> = chunks.into_iter().map(Ok).collect();
    if fail {
        items.push(Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )));
    }
    Box::pin(futures_util::stream::iter(items))
}

/// `content` in chunks of 64 KiB, as a request body arrives.
fn chunked(content: &Bytes) -> Vec<Bytes> {
    (0..content.len())
        .step_by(64 * 1024)
        .map(|at| content.slice(at..content.len().min(at + 64 * 1024)))
        .collect()
}

/// `len` bytes that differ with `seed` and do not compress to nothing.
fn noise(seed: u64, len: usize) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes.into()
}

/// The bytes of `range` of a stored blob, collected.
pub async fn read_all<B: BlobStore>(blobs: &B, digest: &Digest, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = blobs
        .read(digest, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// The upload ids staged now.
async fn staged<B: BlobStore>(blobs: &B) -> Vec<UploadId> {
    let mut ids: Vec<UploadId> = blobs
        .staged_uploads()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// Every referrer of `subject` in `repo`, whatever its artifact type.
async fn referrers_of<M: MetadataStore>(
    meta: &M,
    repo: &RepositoryName,
    subject: &Digest,
) -> Vec<ManifestRecord> {
    let all = PageRequest {
        after: None,
        limit: 100,
    };
    meta.referrers(repo, subject, None, &all).await.unwrap().items
}

fn name(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

async fn blob_suite<B: BlobStore>(blobs: &B) {
    // Put verifies, stat and ranged reads see it.
    let content = Bytes::from_static(b"hello, registry");
    let digest = Digest::sha256_of(&content);
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        blobs.put(&wrong, content.clone()).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(blobs.stat(&wrong).await.unwrap(), None);
    blobs.put(&digest, content.clone()).await.unwrap();
    blobs.put(&digest, content.clone()).await.unwrap();
    assert_eq!(blobs.stat(&digest).await.unwrap(), Some(content.len() as u64));
    assert_eq!(read_all(blobs, &digest, 0..15).await, b"hello, registry");
    assert_eq!(read_all(blobs, &digest, 7..15).await, b"registry");

    // A chunked upload, with an out-of-order chunk refused and a short chunk rolled back.
    let id = UploadId::new();
    blobs.upload_create(&id).await.unwrap();
    let size = blobs
        .upload_append(&id, body(&[b"abc", b"def"]), AppendCheck::default())
        .await
        .unwrap();
    assert_eq!(size, 6);
    let out_of_order = AppendCheck {
        offset: Some(3),
        length: Some(3),
    };
    assert!(matches!(
        blobs.upload_append(&id, body(&[b"xyz"]), out_of_order).await,
        Err(StorageError::OffsetMismatch {
            requested: 3,
            current: 6
        })
    ));
    let short = AppendCheck {
        offset: Some(6),
        length: Some(5),
    };
    assert!(matches!(
        blobs.upload_append(&id, body(&[b"gh"]), short).await,
        Err(StorageError::SizeMismatch {
            expected: 5,
            received: 2
        })
    ));
    assert!(matches!(
        blobs
            .upload_append(&id, failing_body(b"zz"), AppendCheck::default())
            .await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(blobs.upload_size(&id).await.unwrap(), 6);
    let exact = AppendCheck {
        offset: Some(6),
        length: Some(3),
    };
    assert_eq!(blobs.upload_append(&id, body(&[b"ghi"]), exact).await.unwrap(), 9);

    // Commit checks the digest and keeps the data on a mismatch.
    let expected = Digest::sha256_of(b"abcdefghi");
    assert!(matches!(
        blobs.upload_commit(&id, &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(blobs.stat(&wrong).await.unwrap(), None);
    assert_eq!(blobs.upload_commit(&id, &expected).await.unwrap(), 9);
    assert_eq!(read_all(blobs, &expected, 0..9).await, b"abcdefghi");
    assert!(matches!(
        blobs.upload_size(&id).await,
        Err(StorageError::UploadUnknown)
    ));

    // sha512 is verified too.
    let id = UploadId::new();
    blobs.upload_create(&id).await.unwrap();
    blobs
        .upload_append(&id, body(&[b"sha512 content"]), AppendCheck::default())
        .await
        .unwrap();
    let sha512 = Digest::of(Algorithm::Sha512, b"sha512 content");
    assert_eq!(blobs.upload_commit(&id, &sha512).await.unwrap(), 14);
    assert_eq!(blobs.stat(&sha512).await.unwrap(), Some(14));

    // Cancel discards; staged uploads are listed until then.
    let id = UploadId::new();
    blobs.upload_create(&id).await.unwrap();
    assert!(
        blobs
            .staged_uploads()
            .await
            .unwrap()
            .iter()
            .any(|(s, _)| s == &id)
    );
    blobs.upload_cancel(&id).await.unwrap();
    assert!(
        !blobs
            .staged_uploads()
            .await
            .unwrap()
            .iter()
            .any(|(s, _)| s == &id)
    );
    assert!(matches!(
        blobs
            .upload_append(&id, body(&[b"x"]), AppendCheck::default())
            .await,
        Err(StorageError::UploadUnknown)
    ));

    assert!(blobs.delete(&digest).await.unwrap());
    assert!(!blobs.delete(&digest).await.unwrap());
    assert!(matches!(
        blobs.read(&digest, 0..1).await,
        Err(StorageError::BlobUnknown)
    ));
    blobs.health().await.unwrap();
}

fn record(content: &[u8], subject: Option<&Digest>, artifact_type: &str) -> ManifestRecord {
    ManifestRecord {
        digest: Digest::sha256_of(content),
        media_type: rbuild_oci::media_type::OCI_MANIFEST.to_owned(),
        size: content.len() as u64,
        subject: subject.cloned(),
        artifact_type: Some(artifact_type.to_owned()),
        annotations: Default::default(),
    }
}

async fn metadata_suite<M: MetadataStore>(meta: &M) {
    let repo = name("team/app");
    let other = name("team/other");
    let blob = Digest::sha256_of(b"layer");

    // Links are per repository.
    assert!(!meta.blob_linked(&repo, &blob).await.unwrap());
    meta.link_blob(&repo, &blob).await.unwrap();
    assert!(meta.blob_linked(&repo, &blob).await.unwrap());
    assert!(!meta.blob_linked(&other, &blob).await.unwrap());

    // Manifests, tags and the referrers index.
    let image = record(b"image", None, "application/vnd.oci.image.config.v1+json");
    let sig = record(b"sig", Some(&image.digest), "application/x-sig");
    let sbom = record(b"sbom", Some(&image.digest), "application/x-sbom");
    for r in [&image, &sig, &sbom] {
        meta.put_manifest(&repo, r).await.unwrap();
    }
    assert_eq!(
        meta.manifest(&repo, &image.digest).await.unwrap(),
        Some(image.clone())
    );
    assert_eq!(meta.manifest(&other, &image.digest).await.unwrap(), None);
    for t in ["v2", "latest", "v1"] {
        meta.set_tag(&repo, &tag(t), &image.digest).await.unwrap();
    }
    meta.set_tag(&repo, &tag("sig"), &sig.digest).await.unwrap();
    assert_eq!(
        meta.resolve_tag(&repo, &tag("v1")).await.unwrap(),
        Some(image.digest.clone())
    );

    let all = PageRequest {
        after: None,
        limit: 100,
    };
    let tags = meta.tags(&repo, &all).await.unwrap().unwrap();
    let names: Vec<&str> = tags.items.iter().map(Tag::as_str).collect();
    assert_eq!(names, ["latest", "sig", "v1", "v2"]);
    assert!(!tags.more);
    let page = meta
        .tags(
            &repo,
            &PageRequest {
                after: Some("latest".into()),
                limit: 2,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.items, [tag("sig"), tag("v1")]);
    assert!(page.more);
    assert_eq!(meta.tags(&name("nobody"), &all).await.unwrap(), None);

    let referrers = meta.referrers(&repo, &image.digest, None, &all).await.unwrap();
    assert_eq!(referrers.items.len(), 2);
    let sigs = meta
        .referrers(&repo, &image.digest, Some("application/x-sig"), &all)
        .await
        .unwrap();
    assert_eq!(sigs.items, std::slice::from_ref(&sig));

    // Deleting a manifest removes its tags and its referrers entry.
    assert!(meta.delete_manifest(&repo, &sig.digest).await.unwrap());
    assert!(!meta.delete_manifest(&repo, &sig.digest).await.unwrap());
    assert_eq!(meta.resolve_tag(&repo, &tag("sig")).await.unwrap(), None);
    let referrers = meta.referrers(&repo, &image.digest, None, &all).await.unwrap();
    assert_eq!(referrers.items, std::slice::from_ref(&sbom));
    assert!(meta.delete_tag(&repo, &tag("v2")).await.unwrap());
    assert!(!meta.delete_tag(&repo, &tag("v2")).await.unwrap());
    assert_eq!(
        meta.manifest(&repo, &image.digest).await.unwrap(),
        Some(image.clone())
    );

    // Repositories, nested ones included, in order.
    meta.link_blob(&name("team"), &blob).await.unwrap();
    meta.link_blob(&name("a/b/c"), &blob).await.unwrap();
    let repos = meta.repositories(&all).await.unwrap();
    let repo_names: Vec<&str> = repos.items.iter().map(RepositoryName::as_str).collect();
    assert_eq!(repo_names, ["a/b/c", "team", "team/app"]);

    // Upload sessions.
    let session = UploadSession {
        id: UploadId::new(),
        started: SystemTime::now(),
    };
    meta.create_upload(&other, &session).await.unwrap();
    assert_eq!(
        meta.upload(&other, &session.id).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(meta.upload(&repo, &session.id).await.unwrap(), None);
    assert_eq!(meta.uploads().await.unwrap(), [(other.clone(), session.clone())]);
    meta.delete_upload(&other, &session.id).await.unwrap();
    assert_eq!(meta.upload(&other, &session.id).await.unwrap(), None);

    assert!(meta.unlink_blob(&repo, &blob).await.unwrap());
    assert!(!meta.unlink_blob(&repo, &blob).await.unwrap());
    meta.health().await.unwrap();
}

/// Lets the file system's coarse clock move past the instants around it.
async fn tick() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Listing, touching and idle-only deletion: what garbage collection relies on.
async fn blob_gc_suite<B: BlobStore>(blobs: &B) {
    let mut stored = Vec::new();
    for i in 0..5u8 {
        let content = Bytes::from(vec![i; 10 + usize::from(i)]);
        let digest = Digest::sha256_of(&content);
        blobs.put(&digest, content.clone()).await.unwrap();
        stored.push((digest, content));
    }
    stored.sort_by_key(|(d, _)| d.to_string());
    let digests: Vec<Digest> = stored.iter().map(|(d, _)| d.clone()).collect();
    let mut listed = walk(
        2,
        |request| async move { blobs.blobs(&request).await.unwrap() },
        |b: &BlobInfo| b.digest.to_string(),
    )
    .await;
    listed.retain(|d| digests.iter().any(|stored| stored.to_string() == *d));
    let expected: Vec<String> = digests.iter().map(Digest::to_string).collect();
    assert_eq!(listed, expected, "every blob stored is listed");
    let info = blobs.blob_info(&digests[0]).await.unwrap().unwrap();
    assert_eq!(blobs.stat(&digests[0]).await.unwrap(), Some(info.size));
    assert_eq!(
        blobs.blob_info(&Digest::sha256_of(b"absent")).await.unwrap(),
        None
    );

    tick().await;
    let cutoff = SystemTime::now();
    tick().await;
    assert!(blobs.touch(&digests[0]).await.unwrap());
    assert_eq!(
        blobs.delete_if_idle(&digests[0], cutoff).await.unwrap(),
        None,
        "touched"
    );
    let size = blobs.stat(&digests[1]).await.unwrap();
    assert_eq!(blobs.delete_if_idle(&digests[1], cutoff).await.unwrap(), size);
    assert_eq!(blobs.stat(&digests[1]).await.unwrap(), None);
    assert!(!blobs.touch(&digests[1]).await.unwrap(), "touch never creates");
    assert_eq!(blobs.stat(&digests[1]).await.unwrap(), None);
    assert_eq!(blobs.delete_if_idle(&digests[1], cutoff).await.unwrap(), None);
    // Stored again, it is new.
    blobs.put(&digests[1], stored[1].1.clone()).await.unwrap();
    let again = blobs.blob_info(&digests[1]).await.unwrap().unwrap();
    assert!(again.touched >= cutoff);
}

async fn metadata_gc_suite<M: MetadataStore>(meta: &M) {
    let repo = name("gc/app");
    let (kept, dropped) = (Digest::sha256_of(b"kept"), Digest::sha256_of(b"dropped"));
    meta.link_blob(&repo, &kept).await.unwrap();
    meta.link_blob(&repo, &dropped).await.unwrap();
    let image = record(b"image", None, "application/vnd.oci.image.config.v1+json");
    let sig = record(b"sig", Some(&image.digest), "application/x-sig");
    meta.put_manifest(&repo, &image).await.unwrap();
    meta.put_manifest(&repo, &sig).await.unwrap();
    meta.set_tag(&repo, &tag("v1"), &image.digest).await.unwrap();

    let mut links: Vec<Digest> = meta
        .list_links(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.digest)
        .collect();
    links.sort_by_key(|d| d.to_string());
    let mut expected = vec![kept.clone(), dropped.clone()];
    expected.sort_by_key(|d| d.to_string());
    assert_eq!(links, expected);
    let mut manifests: Vec<ManifestRecord> = meta
        .list_manifests(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.record)
        .collect();
    manifests.sort_by_key(|m| m.digest.to_string());
    let mut expected = vec![image.clone(), sig.clone()];
    expected.sort_by_key(|m| m.digest.to_string());
    assert_eq!(manifests, expected);
    let tags = meta.list_tags(&repo).await.unwrap();
    assert_eq!(tags.len(), 1);
    assert_eq!((&tags[0].tag, &tags[0].digest), (&tag("v1"), &image.digest));

    tick().await;
    let cutoff = SystemTime::now();
    tick().await;
    assert!(meta.touch_link(&repo, &kept).await.unwrap());
    assert!(!meta.unlink_blob_if_idle(&repo, &kept, cutoff).await.unwrap());
    assert!(meta.unlink_blob_if_idle(&repo, &dropped, cutoff).await.unwrap());
    assert!(meta.blob_linked(&repo, &kept).await.unwrap());
    assert!(!meta.blob_linked(&repo, &dropped).await.unwrap());
    assert!(
        !meta.touch_link(&repo, &dropped).await.unwrap(),
        "touch never creates"
    );
    assert!(!meta.blob_linked(&repo, &dropped).await.unwrap());

    assert!(meta.touch_manifest(&repo, &image.digest).await.unwrap());
    assert!(
        !meta
            .delete_manifest_if_idle(&repo, &image.digest, cutoff)
            .await
            .unwrap()
    );
    assert!(
        meta.delete_manifest_if_idle(&repo, &sig.digest, cutoff)
            .await
            .unwrap()
    );
    assert_eq!(meta.manifest(&repo, &sig.digest).await.unwrap(), None);
    assert!(referrers_of(meta, &repo, &image.digest).await.is_empty());
    assert!(!meta.touch_manifest(&repo, &sig.digest).await.unwrap());

    assert!(
        !meta
            .delete_tag_if_idle(&repo, &tag("v1"), &sig.digest, cutoff)
            .await
            .unwrap(),
        "moved meanwhile"
    );
    meta.set_tag(&repo, &tag("v2"), &image.digest).await.unwrap();
    assert!(
        !meta
            .delete_tag_if_idle(&repo, &tag("v2"), &image.digest, cutoff)
            .await
            .unwrap(),
        "pushed again after the cutoff"
    );
    assert_eq!(
        meta.resolve_tag(&repo, &tag("v1")).await.unwrap(),
        Some(image.digest.clone())
    );
    assert!(
        meta.delete_tag_if_idle(&repo, &tag("v1"), &image.digest, cutoff)
            .await
            .unwrap()
    );
    assert_eq!(meta.resolve_tag(&repo, &tag("v1")).await.unwrap(), None);
}

/// The most entries a background writer adds during one listing walk.
const MAX_BACKGROUND_WRITES: u64 = 2000;

/// Eight hex digits that differ with `seed`, to spread names over the whole listing order.
fn spread(seed: &str) -> String {
    Digest::sha256_of(seed.as_bytes()).hex()[..8].to_owned()
}

/// Walks a listing `limit` entries at a time (`page` answers each request) and checks what
/// every walk promises: no page over the limit, and every entry at most once, in strictly
/// increasing order. Returns the keys listed.
async fn walk<T, F, Fut>(limit: usize, mut page: F, key: impl Fn(&T) -> String) -> Vec<String>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Page<T>>,
{
    let mut listed: Vec<String> = Vec::new();
    let mut request = PageRequest { after: None, limit };
    loop {
        let got = page(request.clone()).await;
        assert!(got.items.len() <= limit, "a page holds at most {limit} entries");
        assert!(
            !(got.more && got.items.is_empty()),
            "a page that says more follow holds something"
        );
        listed.extend(got.items.iter().map(&key));
        if !got.more {
            break;
        }
        request.after = listed.last().cloned();
        // Lets writers on this thread run between pages.
        tokio::task::yield_now().await;
    }
    for pair in listed.windows(2) {
        assert!(
            pair[0] < pair[1],
            "listed {} then {}: every entry once, in increasing order",
            pair[0],
            pair[1]
        );
    }
    listed
}

/// Every key of `before` (listed before the walk) in `during` (a strictly increasing walk, so
/// exactly once).
fn assert_listed(before: &[String], during: &[String], what: &str) {
    for key in before {
        assert!(
            during.binary_search(key).is_ok(),
            "{what}: {key}, stored before the walk, was not listed during it"
        );
    }
}

/// Runs `during` while a task of its own calls `write(0)`, `write(1)`, … (each writing a new
/// entry) until `during` is done; returns what `during` returned, after checking every write
/// succeeded.
async fn while_writing<T, W, WF>(mut write: W, during: impl Future<Output = T>) -> T
where
    W: FnMut(u64) -> WF + Send + 'static,
    WF: Future<Output = StorageResult<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < MAX_BACKGROUND_WRITES {
                write(n).await?;
                n += 1;
                tokio::task::yield_now().await;
            }
            StorageResult::Ok(n)
        })
    };
    let result = during.await;
    stop.store(true, Ordering::Relaxed);
    writer
        .await
        .expect("the writer task")
        .expect("writes during a listing succeed");
    result
}

/// Writers of one digest racing through `first` and `second`, two handles on the same storage
/// (two replicas, or two processes), as [`blob_store`] races them through one: every write
/// succeeds and one blob with the right bytes results. The store may hold blobs already.
pub async fn same_digest_through_two_handles<B: BlobStore>(first: &B, second: &B) {
    concurrent_writers_of_one_digest(first, second).await;
}

/// Many tasks store the same content at once, half by `put` and half by committing a chunked
/// upload, alternating between the two handles: every one succeeds, one blob with the right
/// bytes results, and no staged data is left behind.
async fn concurrent_writers_of_one_digest<B: BlobStore>(first: &B, second: &B) {
    let blobs = first;
    const WRITERS: usize = 8;
    let content = noise(1, 300_000);
    let digest = Digest::sha256_of(&content);
    let staged_before = staged(blobs).await;
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let handle = if writer % 4 < 2 { first } else { second };
        let (blobs, content, digest) = (handle.clone(), content.clone(), digest.clone());
        writers.spawn(async move {
            if writer % 2 == 0 {
                return blobs.put(&digest, content).await;
            }
            let id = UploadId::new();
            blobs.upload_create(&id).await?;
            let half = content.len() / 2;
            blobs
                .upload_append(
                    &id,
                    stream_of(chunked(&content.slice(..half)), false),
                    AppendCheck::default(),
                )
                .await?;
            let rest = AppendCheck {
                offset: Some(half as u64),
                length: Some((content.len() - half) as u64),
            };
            blobs
                .upload_append(&id, stream_of(chunked(&content.slice(half..)), false), rest)
                .await?;
            blobs.upload_commit(&id, &digest).await.map(drop)
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined
            .expect("a writer task")
            .expect("every writer of the same content succeeds");
    }
    assert_eq!(blobs.stat(&digest).await.unwrap(), Some(content.len() as u64));
    assert_eq!(read_all(blobs, &digest, 0..content.len() as u64).await, content);
    let listed = walk(
        1000,
        |request| async move { blobs.blobs(&request).await.unwrap() },
        |b: &BlobInfo| b.digest.to_string(),
    )
    .await;
    assert_eq!(listed.iter().filter(|d| **d == digest.to_string()).count(), 1);
    assert_eq!(
        staged(blobs).await,
        staged_before,
        "no staged data is left behind"
    );
}

/// A body that fails mid-stream, after more than an S3 part's worth of data, leaves the
/// upload as it was and resumable; a commit with the wrong digest stores nothing and keeps
/// the staged data; a cancel removes it.
async fn failed_and_cancelled_uploads<B: BlobStore>(blobs: &B) {
    let content = noise(2, (6 << 20) + 4321);
    let digest = Digest::sha256_of(&content);
    let first = 1 << 20;
    let id = UploadId::new();
    blobs.upload_create(&id).await.unwrap();
    let head = chunked(&content.slice(..first));
    assert!(matches!(
        blobs
            .upload_append(&id, stream_of(head.clone(), true), AppendCheck::default())
            .await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(
        blobs.upload_size(&id).await.unwrap(),
        0,
        "a failed first chunk leaves the upload empty"
    );
    assert_eq!(
        blobs
            .upload_append(&id, stream_of(head, false), AppendCheck::default())
            .await
            .unwrap(),
        first as u64
    );
    let rest = chunked(&content.slice(first..));
    let resume = AppendCheck {
        offset: Some(first as u64),
        length: None,
    };
    assert!(matches!(
        blobs
            .upload_append(&id, stream_of(rest.clone(), true), resume)
            .await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(blobs.upload_size(&id).await.unwrap(), first as u64);
    let rest_len = (content.len() - first) as u64;
    let too_long = AppendCheck {
        offset: Some(first as u64),
        length: Some(rest_len + 1),
    };
    assert!(matches!(
        blobs.upload_append(&id, stream_of(rest.clone(), false), too_long).await,
        Err(StorageError::SizeMismatch { expected, received }) if expected == rest_len + 1 && received == rest_len
    ));
    assert_eq!(blobs.upload_size(&id).await.unwrap(), first as u64);
    let exact = AppendCheck {
        offset: Some(first as u64),
        length: Some(rest_len),
    };
    assert_eq!(
        blobs
            .upload_append(&id, stream_of(rest, false), exact)
            .await
            .unwrap(),
        content.len() as u64
    );

    let wrong = Digest::sha256_of(b"not the upload");
    assert!(matches!(
        blobs.upload_commit(&id, &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(blobs.stat(&wrong).await.unwrap(), None);
    assert_eq!(blobs.upload_size(&id).await.unwrap(), content.len() as u64);
    assert!(staged(blobs).await.contains(&id), "the staged data is kept");
    assert_eq!(
        blobs.upload_commit(&id, &digest).await.unwrap(),
        content.len() as u64
    );
    assert_eq!(read_all(blobs, &digest, 0..content.len() as u64).await, content);
    assert!(!staged(blobs).await.contains(&id));

    let id = UploadId::new();
    let data = b"cancelled upload data";
    blobs.upload_create(&id).await.unwrap();
    blobs
        .upload_append(&id, body(&[data]), AppendCheck::default())
        .await
        .unwrap();
    blobs.upload_cancel(&id).await.unwrap();
    assert!(
        !staged(blobs).await.contains(&id),
        "cancel removes the staged data"
    );
    assert!(matches!(
        blobs.upload_size(&id).await,
        Err(StorageError::UploadUnknown)
    ));
    let cancelled = Digest::sha256_of(data);
    assert!(matches!(
        blobs.upload_commit(&id, &cancelled).await,
        Err(StorageError::UploadUnknown)
    ));
    assert_eq!(blobs.stat(&cancelled).await.unwrap(), None);
}

/// `blobs()` walked three at a time while one task stores new blobs throughout and the walker
/// stores one between pages.
async fn blob_listing_under_writes<B: BlobStore>(blobs: &B) {
    for i in 0..24 {
        let content = noise(100 + i, 64);
        blobs.put(&Digest::sha256_of(&content), content).await.unwrap();
    }
    let key = |b: &BlobInfo| b.digest.to_string();
    let before = walk(
        1000,
        |request| async move { blobs.blobs(&request).await.unwrap() },
        key,
    )
    .await;
    let writer = blobs.clone();
    let write = move |n: u64| {
        let writer = writer.clone();
        async move {
            let content = Bytes::from(format!("stored during a listing {n}"));
            writer.put(&Digest::sha256_of(&content), content).await
        }
    };
    let between = std::sync::atomic::AtomicU64::new(0);
    let between = &between;
    let during = while_writing(
        write,
        walk(
            3,
            |request| async move {
                let n = between.fetch_add(1, Ordering::Relaxed);
                let content = Bytes::from(format!("stored between pages {n}"));
                blobs.put(&Digest::sha256_of(&content), content).await.unwrap();
                blobs.blobs(&request).await.unwrap()
            },
            key,
        ),
    )
    .await;
    assert_listed(&before, &during, "blobs()");
}

/// `repositories()` and `tags()` walked three at a time while one task links new repositories
/// (or sets and moves tags) throughout and the walker adds one between pages.
async fn metadata_listings_under_writes<M: MetadataStore>(meta: &M) {
    let blob = Digest::sha256_of(b"linked while listing");
    for i in 0..24 {
        let repo = name(&format!("walk/{}", spread(&format!("before {i}"))));
        meta.link_blob(&repo, &blob).await.unwrap();
    }
    let key = |r: &RepositoryName| r.as_str().to_owned();
    let repositories = |request: PageRequest| async move { meta.repositories(&request).await.unwrap() };
    let before = walk(1000, repositories, key).await;
    let writer = meta.clone();
    let linked = blob.clone();
    let write = move |n: u64| {
        let (writer, linked) = (writer.clone(), linked.clone());
        async move {
            let repo = name(&format!("walk/{}", spread(&format!("during {n}"))));
            writer.link_blob(&repo, &linked).await
        }
    };
    let between = std::sync::atomic::AtomicU64::new(0);
    let (between, blob) = (&between, &blob);
    let during = while_writing(
        write,
        walk(
            3,
            |request| async move {
                let n = between.fetch_add(1, Ordering::Relaxed);
                let repo = name(&format!("walk/{}", spread(&format!("between {n}"))));
                meta.link_blob(&repo, blob).await.unwrap();
                meta.repositories(&request).await.unwrap()
            },
            key,
        ),
    )
    .await;
    assert_listed(&before, &during, "repositories()");

    let repo = name("walk/tags");
    let (first, second) = (
        record(b"tagged while listing 1", None, "application/x-walk"),
        record(b"tagged while listing 2", None, "application/x-walk"),
    );
    meta.put_manifest(&repo, &first).await.unwrap();
    meta.put_manifest(&repo, &second).await.unwrap();
    let initial: Vec<Tag> = (0..24).map(|i| tag(&spread(&format!("tag {i}")))).collect();
    for t in &initial {
        meta.set_tag(&repo, t, &first.digest).await.unwrap();
    }
    let key = |t: &Tag| t.as_str().to_owned();
    let tags = |request: PageRequest| {
        let repo = repo.clone();
        async move { meta.tags(&repo, &request).await.unwrap().unwrap() }
    };
    let before = walk(1000, tags, key).await;
    let writer = meta.clone();
    let (writer_repo, targets) = (repo.clone(), [first.digest.clone(), second.digest.clone()]);
    let write = move |n: u64| {
        let (writer, repo, targets) = (writer.clone(), writer_repo.clone(), targets.clone());
        // New tags, and moves of the tags there before: a moved tag is still listed.
        let moved = &initial[n as usize % initial.len()];
        let new = tag(&spread(&format!("tag during {n}")));
        let (moved, target) = (moved.clone(), targets[n as usize % 2].clone());
        async move {
            writer.set_tag(&repo, &new, &targets[0]).await?;
            writer.set_tag(&repo, &moved, &target).await
        }
    };
    let (repo, retarget) = (&repo, &second.digest);
    let during = while_writing(
        write,
        walk(
            3,
            |request| async move {
                let n = between.fetch_add(1, Ordering::Relaxed);
                let new = tag(&spread(&format!("tag between {n}")));
                meta.set_tag(repo, &new, retarget).await.unwrap();
                meta.tags(repo, &request).await.unwrap().unwrap()
            },
            key,
        ),
    )
    .await;
    assert_listed(&before, &during, "tags()");
}

/// A deleted blob is gone from every view of the store and can be stored again; other blobs
/// stay.
async fn blob_deletion<B: BlobStore>(blobs: &B) {
    let (content, other) = (
        Bytes::from_static(b"deleted blob"),
        Bytes::from_static(b"kept blob"),
    );
    let (digest, kept) = (Digest::sha256_of(&content), Digest::sha256_of(&other));
    blobs.put(&digest, content.clone()).await.unwrap();
    blobs.put(&kept, other.clone()).await.unwrap();
    assert!(blobs.delete(&digest).await.unwrap());
    assert_eq!(blobs.stat(&digest).await.unwrap(), None);
    assert_eq!(blobs.blob_info(&digest).await.unwrap(), None);
    assert!(matches!(
        blobs.read(&digest, 0..1).await,
        Err(StorageError::BlobUnknown)
    ));
    assert!(!blobs.touch(&digest).await.unwrap(), "touch never creates");
    assert_eq!(
        blobs.delete_if_idle(&digest, SystemTime::now()).await.unwrap(),
        None
    );
    assert!(!blobs.delete(&digest).await.unwrap());
    let listed = walk(
        1000,
        |request| async move { blobs.blobs(&request).await.unwrap() },
        |b: &BlobInfo| b.digest.to_string(),
    )
    .await;
    assert!(!listed.contains(&digest.to_string()));
    assert!(listed.contains(&kept.to_string()));
    assert_eq!(read_all(blobs, &kept, 0..other.len() as u64).await, other);
    blobs.put(&digest, content.clone()).await.unwrap();
    assert_eq!(read_all(blobs, &digest, 0..content.len() as u64).await, content);
}

/// Deleting a manifest takes its tags and its referrers entry in that repository only, and
/// leaves other manifests and tags; deleting a tag leaves its manifest.
async fn metadata_deletion<M: MetadataStore>(meta: &M) {
    let (repo, other) = (name("delete/app"), name("delete/other"));
    let image = record(b"deleted image", None, "application/vnd.oci.image.config.v1+json");
    let sig = record(b"deleted sig", Some(&image.digest), "application/x-sig");
    let kept = record(b"kept image", None, "application/vnd.oci.image.config.v1+json");
    for r in [&image, &sig, &kept] {
        meta.put_manifest(&repo, r).await.unwrap();
    }
    meta.put_manifest(&other, &image).await.unwrap();
    meta.put_manifest(&other, &sig).await.unwrap();
    meta.set_tag(&other, &tag("v1"), &image.digest).await.unwrap();
    for (t, target) in [("v1", &image), ("latest", &image), ("sig", &sig), ("kept", &kept)] {
        meta.set_tag(&repo, &tag(t), &target.digest).await.unwrap();
    }
    let all = PageRequest {
        after: None,
        limit: 100,
    };

    assert!(meta.delete_manifest(&repo, &sig.digest).await.unwrap());
    assert_eq!(meta.resolve_tag(&repo, &tag("sig")).await.unwrap(), None);
    assert!(referrers_of(meta, &repo, &image.digest).await.is_empty());
    assert_eq!(
        meta.referrers(&other, &image.digest, None, &all)
            .await
            .unwrap()
            .items,
        std::slice::from_ref(&sig),
        "another repository's referrers stay"
    );

    assert!(meta.delete_manifest(&repo, &image.digest).await.unwrap());
    assert!(!meta.delete_manifest(&repo, &image.digest).await.unwrap());
    assert_eq!(meta.manifest(&repo, &image.digest).await.unwrap(), None);
    for t in ["v1", "latest"] {
        assert_eq!(meta.resolve_tag(&repo, &tag(t)).await.unwrap(), None, "{t}");
    }
    let tags = meta.tags(&repo, &all).await.unwrap().unwrap();
    assert_eq!(tags.items, [tag("kept")]);
    let listed: Vec<Tag> = meta
        .list_tags(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.tag)
        .collect();
    assert_eq!(listed, [tag("kept")]);
    let manifests: Vec<Digest> = meta
        .list_manifests(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.record.digest)
        .collect();
    assert_eq!(manifests, std::slice::from_ref(&kept.digest));
    assert_eq!(
        meta.manifest(&other, &image.digest).await.unwrap(),
        Some(image.clone()),
        "another repository's copy stays"
    );
    assert_eq!(
        meta.resolve_tag(&other, &tag("v1")).await.unwrap(),
        Some(image.digest.clone())
    );

    assert!(meta.delete_tag(&repo, &tag("kept")).await.unwrap());
    assert!(!meta.delete_tag(&repo, &tag("kept")).await.unwrap());
    assert_eq!(meta.resolve_tag(&repo, &tag("kept")).await.unwrap(), None);
    assert_eq!(
        meta.manifest(&repo, &kept.digest).await.unwrap(),
        Some(kept.clone()),
        "a tag's manifest stays"
    );
    assert!(meta.tags(&repo, &all).await.unwrap().unwrap().items.is_empty());
    assert!(meta.list_tags(&repo).await.unwrap().is_empty());
    let nobody = name("delete/nobody");
    assert!(!meta.delete_tag(&nobody, &tag("v1")).await.unwrap());
    assert!(!meta.delete_manifest(&nobody, &kept.digest).await.unwrap());
}
