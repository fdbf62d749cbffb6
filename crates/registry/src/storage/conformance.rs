//! The conformance suite every [`BlobStore`] and [`MetadataStore`] implementation must pass.
//!
//! Each backend's tests call these functions on fresh, empty stores: the filesystem stores in
//! `storage::tests`, and any other backend in its own module, so that what the handlers rely
//! on is written down once and checked the same way everywhere.

use std::io;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
use rbuild_oci::{Algorithm, Digest, RepositoryName, Tag};

use super::*;

/// Runs every blob-store check on `blobs`, which must be empty.
pub async fn blob_store<B: BlobStore>(blobs: &B) {
    blob_suite(blobs).await;
    blob_gc_suite(blobs).await;
}

/// Runs every metadata-store check on `metadata`, which must be empty.
pub async fn metadata_store<M: MetadataStore>(metadata: &M) {
    metadata_suite(metadata).await;
    metadata_gc_suite(metadata).await;
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
    let items: Vec<io::Result<Bytes>> = chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(items))
}

fn failing_body(first: &[u8]) -> ByteStream {
    let items: Vec<io::Result<Bytes>> = vec![
        Ok(Bytes::copy_from_slice(first)),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
    ];
    Box::pin(futures_util::stream::iter(items))
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
    let mut listed = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: 2,
    };
    loop {
        let got = blobs.blobs(&page).await.unwrap();
        assert!(got.items.len() <= 2);
        listed.extend(got.items.iter().map(|b| b.digest.clone()));
        page.after = got.items.last().map(|b| b.digest.to_string());
        if !got.more {
            break;
        }
    }
    let mut sorted = listed.clone();
    sorted.sort_by_key(Digest::to_string);
    sorted.dedup();
    assert_eq!(listed, sorted, "every blob once, in digest order, across pages");
    listed.retain(|d| digests.contains(d));
    assert_eq!(listed, digests, "every blob stored is listed");
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
    let all = PageRequest {
        after: None,
        limit: 10,
    };
    assert!(
        meta.referrers(&repo, &image.digest, None, &all)
            .await
            .unwrap()
            .items
            .is_empty()
    );
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
