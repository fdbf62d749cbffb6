//! Pushes one blob through the S3 blob store and reads it back, printing MB/s, the peak RSS
//! and what moving an upload to another replica costs; `benches/s3.sh` runs it beside curl
//! against the same Garage.
//!
//! Usage: `s3-throughput MIB` with the `RBUILD_TEST_S3_*` variables of `scripts/engines.sh`.

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use rbuild_oci::Digest;
use rbuild_registry::storage::s3::{S3BlobStore, S3Config};
use rbuild_registry::storage::{AppendCheck, BlobStore, ByteStream, UploadId};

const CHUNK: usize = 1 << 20;

fn config() -> S3Config {
    let var = |name: &str| std::env::var(format!("RBUILD_TEST_S3_{name}")).ok();
    S3Config {
        endpoint: var("ENDPOINT"),
        region: var("REGION").unwrap_or_else(|| "garage".into()),
        bucket: var("BUCKET").expect("RBUILD_TEST_S3_BUCKET"),
        prefix: format!("bench-{}", std::process::id()),
        access_key_id: var("ACCESS_KEY_ID"),
        secret_access_key: var("SECRET_ACCESS_KEY"),
        ..S3Config::default()
    }
}

/// `mib` MiB of a repeating 1 MiB pattern, as a request body would arrive.
fn body(chunk: &Bytes, mib: usize) -> ByteStream {
    Box::pin(futures_util::stream::iter((0..mib).map({
        let chunk = chunk.clone();
        move |_| Ok(chunk.clone())
    })))
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let chunk = Bytes::from((0..CHUNK).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let digest = sha2_of_repeated(&chunk, mib);
    let store = S3BlobStore::open(&config()).expect("S3 config");
    let other = S3BlobStore::open(&config()).expect("S3 config");

    let id = UploadId::new();
    let started = Instant::now();
    store.upload_create(&id).await.unwrap();
    store
        .upload_append(&id, body(&chunk, mib), AppendCheck::default())
        .await
        .unwrap();
    store.upload_commit(&id, &digest).await.unwrap();
    let put = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut stream = store.read(&digest, 0..(mib * CHUNK) as u64).await.unwrap();
    let mut read = 0;
    while let Some(bytes) = stream.next().await {
        read += bytes.unwrap().len();
    }
    assert_eq!(read, mib * CHUNK);
    let get = started.elapsed().as_secs_f64();

    // A replica switch: a 1 MiB chunk on one handle, then a 1 MiB chunk on the other, which
    // loads the state object (tail included) instead of re-reading anything.
    let id = UploadId::new();
    store.upload_create(&id).await.unwrap();
    let started = Instant::now();
    store
        .upload_append(&id, body(&chunk, 1), AppendCheck::default())
        .await
        .unwrap();
    let same = started.elapsed().as_secs_f64();
    let started = Instant::now();
    other
        .upload_append(&id, body(&chunk, 1), AppendCheck::default())
        .await
        .unwrap();
    let switched = started.elapsed().as_secs_f64();
    store.upload_cancel(&id).await.unwrap();
    store.delete(&digest).await.unwrap();

    let mb = (mib * CHUNK) as f64 / 1e6;
    println!(
        "rbuild-s3 {mib} MiB: put {:.0} MB/s, get {:.0} MB/s, peak RSS {} MiB; 1 MiB append {:.1} ms, after a switch {:.1} ms",
        mb / put,
        mb / get,
        peak_rss_mib(),
        same * 1e3,
        switched * 1e3
    );
}

fn sha2_of_repeated(chunk: &Bytes, mib: usize) -> Digest {
    let mut hasher = rbuild_oci::Hasher::new(rbuild_oci::Algorithm::Sha256);
    for _ in 0..mib {
        hasher.update(chunk);
    }
    hasher.finalize()
}
