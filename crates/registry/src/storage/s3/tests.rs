//! The S3 store against a real S3 server (Garage in `scripts/test`), named by the
//! `RBUILD_TEST_S3_*` variables; each test works under a prefix of its own.

use std::io;

use bytes::Bytes;
use rbuild_oci::Digest;

use super::upload::PART_SIZE;
use super::*;
use crate::storage::conformance;

/// The bucket the environment names, under a fresh prefix; `None` (outside CI) when the
/// environment names none.
fn test_config() -> Option<S3Config> {
    let var = |name: &str| std::env::var(format!("RBUILD_TEST_S3_{name}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "RBUILD_TEST_S3_ENDPOINT is required in CI (scripts/test starts Garage)"
        );
        eprintln!("SKIPPED: no S3 server (set RBUILD_TEST_S3_* as scripts/engines.sh does)");
        return None;
    };
    Some(S3Config {
        endpoint: Some(endpoint),
        region: var("REGION").unwrap_or_else(|| "garage".to_owned()),
        bucket: var("BUCKET").unwrap_or_default(),
        prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
        path_style: true,
        access_key_id: var("ACCESS_KEY_ID"),
        secret_access_key: var("SECRET_ACCESS_KEY"),
        ..S3Config::default()
    })
}

/// Two handles on the same bucket and prefix, built separately: two replicas.
fn replicas(config: &S3Config) -> (S3BlobStore, S3BlobStore) {
    (
        S3BlobStore::open(config).unwrap(),
        S3BlobStore::open(config).unwrap(),
    )
}

fn body(bytes: &[u8]) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// Deterministic, incompressible-looking content.
fn content(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// How many multipart uploads are open under the store's prefix (ListMultipartUploads).
async fn open_multipart_uploads(store: &S3BlobStore) -> usize {
    let query = [("uploads", ""), ("prefix", store.prefix.as_str())];
    let response = store
        .client
        .send(reqwest::Method::GET, "", &query, &[], None)
        .await
        .unwrap();
    let body = client::ok("ListMultipartUploads", response)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    xml::elements(&body, "Upload").len()
}

/// Every key under the store's prefix.
async fn keys(store: &S3BlobStore) -> Vec<String> {
    let listing = store
        .client
        .list(&store.prefix, None, None, LIST_MAX)
        .await
        .unwrap();
    listing.objects.into_iter().map(|o| o.key).collect()
}

async fn append(store: &S3BlobStore, id: &UploadId, offset: u64, bytes: &[u8]) -> u64 {
    let check = AppendCheck {
        offset: Some(offset),
        length: Some(bytes.len() as u64),
    };
    store.upload_append(id, body(bytes), check).await.unwrap()
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some(config) = test_config() else { return };
    let (first, second) = replicas(&config);
    conformance::blob_store(&first).await;
    conformance::upload_moves_between_handles(&first, &second).await;
}

/// Chunks over and under the part size, each on the other replica, leave tails that the next
/// replica continues; the blob reads back whole and by ranges across part boundaries, and
/// nothing but the blob remains.
#[tokio::test]
async fn multipart_upload_moves_between_replicas() {
    let Some(config) = test_config() else { return };
    let (a, b) = replicas(&config);
    let data = content(2 * PART_SIZE + 3 * 1024 * 1024 + 17);
    let cuts = [
        1,
        3 * 1024 * 1024,
        PART_SIZE + 5,
        PART_SIZE + 6 * 1024 * 1024,
        data.len(),
    ];
    let id = UploadId::new();
    a.upload_create(&id).await.unwrap();
    let mut offset = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        let store = if i % 2 == 0 { &a } else { &b };
        let size = append(store, &id, offset, &data[offset as usize..cut]).await;
        assert_eq!(size, cut as u64);
        offset = size;
    }
    let (state, tail) = b.load_state(&id).await.unwrap();
    assert_eq!(state.parts.len(), 2, "two whole parts sent");
    assert_eq!(tail.len(), data.len() - 2 * PART_SIZE);
    let digest = Digest::sha256_of(&data);
    assert_eq!(a.upload_commit(&id, &digest).await.unwrap(), data.len() as u64);
    assert_eq!(b.stat(&digest).await.unwrap(), Some(data.len() as u64));
    let whole = conformance::read_all(&b, &digest, 0..data.len() as u64).await;
    assert!(whole == data, "the blob reads back as uploaded");
    let boundary = PART_SIZE as u64;
    for range in [
        boundary - 10..boundary + 10,
        0..1,
        data.len() as u64 - 3..data.len() as u64,
    ] {
        let start = range.start as usize;
        let end = range.end as usize;
        assert_eq!(conformance::read_all(&a, &digest, range).await, &data[start..end]);
    }
    assert_eq!(keys(&a).await, [a.blob_key(&digest)]);
}

/// A commit with the wrong digest stores nothing and keeps the staged data, which the right
/// digest then commits; a cancelled multipart upload leaves no key behind.
#[tokio::test]
async fn wrong_digest_stores_nothing_and_cancel_leaves_nothing() {
    let Some(config) = test_config() else { return };
    let (a, b) = replicas(&config);
    let data = content(PART_SIZE + 1000);
    let id = UploadId::new();
    a.upload_create(&id).await.unwrap();
    append(&a, &id, 0, &data).await;
    let wrong = Digest::sha256_of(b"something else");
    assert!(matches!(
        b.upload_commit(&id, &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(a.stat(&wrong).await.unwrap(), None);
    let listed = a
        .blobs(&PageRequest {
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    let digest = Digest::sha256_of(&data);
    assert_eq!(b.upload_commit(&id, &digest).await.unwrap(), data.len() as u64);
    // The same content again: the stored blob is touched and the second upload's parts go.
    let again = UploadId::new();
    a.upload_create(&again).await.unwrap();
    append(&a, &again, 0, &data).await;
    let (state, _) = a.load_state(&again).await.unwrap();
    assert!(state.multipart.is_some(), "a part was sent");
    assert_eq!(open_multipart_uploads(&a).await, 1);
    assert_eq!(b.upload_commit(&again, &digest).await.unwrap(), data.len() as u64);
    assert_eq!(
        open_multipart_uploads(&a).await,
        0,
        "no multipart upload left open"
    );

    let id = UploadId::new();
    b.upload_create(&id).await.unwrap();
    append(&b, &id, 0, &data).await;
    a.upload_cancel(&id).await.unwrap();
    assert_eq!(keys(&a).await, [a.blob_key(&digest), a.touched_key(&digest)]);
    assert_eq!(
        open_multipart_uploads(&a).await,
        0,
        "no multipart upload left open"
    );
    assert!(matches!(
        b.upload_size(&id).await,
        Err(StorageError::UploadUnknown)
    ));
}

/// A body that fails after a whole part was sent leaves the upload as it was; the retried
/// chunk then completes it.
#[tokio::test]
async fn failed_chunk_after_a_sent_part_changes_nothing() {
    let Some(config) = test_config() else { return };
    let (a, b) = replicas(&config);
    let data = content(PART_SIZE + 4096);
    let id = UploadId::new();
    a.upload_create(&id).await.unwrap();
    append(&a, &id, 0, &data[..100]).await;
    let failing: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&data[100..])),
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")),
    ]));
    assert!(matches!(
        a.upload_append(&id, failing, AppendCheck::default()).await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(b.upload_size(&id).await.unwrap(), 100);
    append(&b, &id, 100, &data[100..]).await;
    let digest = Digest::sha256_of(&data);
    assert_eq!(a.upload_commit(&id, &digest).await.unwrap(), data.len() as u64);
    assert!(conformance::read_all(&a, &digest, 0..data.len() as u64).await == data);
}

/// A presigned redirect URL serves the blob to a client without credentials.
#[tokio::test]
async fn redirect_url_serves_the_blob() {
    let Some(config) = test_config() else { return };
    let store = S3BlobStore::open(&S3Config {
        redirect: true,
        ..config.clone()
    })
    .unwrap();
    let data = Bytes::from_static(b"served by the bucket");
    let digest = Digest::sha256_of(&data);
    store.put(&digest, data.clone()).await.unwrap();
    let url = store.redirect(&digest).await.unwrap().unwrap();
    let anonymous = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::client_config(None).unwrap())
        .build()
        .unwrap();
    let fetched = anonymous.get(&url).send().await.unwrap();
    assert!(fetched.status().is_success(), "{}", fetched.status());
    assert_eq!(fetched.bytes().await.unwrap(), data);
    let plain = S3BlobStore::open(&config).unwrap();
    assert_eq!(plain.redirect(&digest).await.unwrap(), None);
}

/// A bucket nobody answers for is Unavailable (503 to clients), for the probe and for reads.
#[tokio::test]
async fn unreachable_bucket_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let store = S3BlobStore::open(&S3Config {
        endpoint: Some(format!("http://{addr}")),
        bucket: "registry".to_owned(),
        access_key_id: Some("key".to_owned()),
        secret_access_key: Some("secret".to_owned()),
        ..S3Config::default()
    })
    .unwrap();
    assert!(matches!(
        store.health().await,
        Err(StorageError::Unavailable { .. })
    ));
    let digest = Digest::sha256_of(b"x");
    assert!(matches!(
        store.stat(&digest).await,
        Err(StorageError::Unavailable { .. })
    ));
    let id = UploadId::new();
    assert!(matches!(
        store.upload_append(&id, body(b"x"), AppendCheck::default()).await,
        Err(StorageError::Unavailable { .. })
    ));
}

/// The configuration keys, credentials from files, open an S3 store through the
/// factory, and it answers the readiness probe.
#[tokio::test]
async fn config_keys_open_the_store_through_select() {
    let Some(config) = test_config() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (key_file, secret_file) = (dir.path().join("key"), dir.path().join("secret"));
    std::fs::write(
        &key_file,
        format!("{}\n", config.access_key_id.clone().unwrap_or_default()),
    )
    .unwrap();
    std::fs::write(&secret_file, config.secret_access_key.clone().unwrap_or_default()).unwrap();
    let text = format!(
        "[storage]\ndriver = \"s3\"\n[storage.s3]\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\n\
         prefix = {:?}\npath_style = true\naccess_key_id_file = {key_file:?}\n\
         secret_access_key_file = {secret_file:?}\n",
        config.endpoint.clone().unwrap_or_default(),
        config.region,
        config.bucket,
        config.prefix,
    );
    let parsed: crate::config::Config = toml::from_str(&text).unwrap();
    let (blobs, _) = crate::storage::select::open(&parsed, dir.path()).await.unwrap();
    assert_eq!(blobs.backend(), "s3");
    blobs.health().await.unwrap();
}

/// An object over CopyObject's limit is copied into place in UploadPartCopy pieces; here with
/// 5 MiB pieces (S3's minimum part size) of a 12 MiB object.
#[tokio::test]
async fn copy_in_pieces_copies_every_byte() {
    let Some(config) = test_config() else { return };
    let store = S3BlobStore::open(&config).unwrap();
    let data = content(12 * 1024 * 1024 + 7);
    let (source, dest) = (format!("{}source", store.prefix), format!("{}dest", store.prefix));
    store
        .client
        .put(&source, Bytes::from(data.clone()), (AT, millis_now()))
        .await
        .unwrap();
    store
        .copy_in_pieces(&source, &dest, data.len() as u64, 5 * 1024 * 1024)
        .await
        .unwrap();
    let copied = store
        .client
        .get(&dest, None)
        .await
        .unwrap()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(copied == data, "the copy has every byte in order");
    let head = store.client.head(&dest, AT).await.unwrap().unwrap();
    assert!(head.meta.is_some(), "the copy carries its store time");
}

/// A touch that finds collectors' deletion intents waits for every one of them to decide:
/// false if the blob went, true if they kept it. Two replicas collecting at once each have an
/// intent of their own, so the first to finish (having kept the blob) does not let the touch
/// pass while the second may still delete it. An intent older than INTENT_TTL (a dead
/// collector's) is not waited for, and removed.
#[tokio::test]
async fn touch_waits_out_every_deciding_collector() {
    let Some(config) = test_config() else { return };
    let (collector, toucher) = replicas(&config);
    let data = Bytes::from_static(b"contended blob");
    let digest = Digest::sha256_of(&data);
    let intend = |millis: String| {
        let (collector, key) = (collector.clone(), collector.intent_key(&digest, &millis));
        async move {
            collector
                .client
                .put(&key, Bytes::new(), (AT, millis))
                .await
                .unwrap();
            key
        }
    };
    for deleted in [true, false] {
        collector.put(&digest, data.clone()).await.unwrap();
        let (first, second) = (intend(millis_now()).await, intend(millis_now()).await);
        let touch = tokio::spawn({
            let (toucher, digest) = (toucher.clone(), digest.clone());
            async move { toucher.touch(&digest).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!touch.is_finished(), "the touch waits while the intents stand");
        collector.client.delete(&first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !touch.is_finished(),
            "the touch still waits: the second collector has not decided"
        );
        if deleted {
            collector
                .client
                .delete(&collector.blob_key(&digest))
                .await
                .unwrap();
        }
        collector.client.delete(&second).await.unwrap();
        assert_eq!(touch.await.unwrap(), !deleted);
    }
    let stale = UNIX_EPOCH.elapsed().unwrap() - INTENT_TTL - Duration::from_secs(1);
    let dead = intend(stale.as_millis().to_string()).await;
    assert!(
        toucher.touch(&digest).await.unwrap(),
        "a dead collector's intent is not waited for"
    );
    assert!(
        collector.client.head(&dead, AT).await.unwrap().is_none(),
        "and the touch removed it"
    );
}
