//! A large layer goes through push and pull without ever being held in memory.
//!
//! This is its own test binary so that the peak-memory reading is not disturbed by other tests.

mod common;

use std::io::Write as _;

use common::{Fixture, TempStore, noise};
use rbuild_client::{BlobOutcome, platform};
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{Descriptor, media_type};

const LAYER_BYTES: usize = 64 * 1024 * 1024;

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_layer_is_streamed_both_ways() {
    let fixture = Fixture::start().await;
    let store = &fixture.store;

    // Write the layer to the store in 1 MiB pieces.
    let mut writer = store.writer().unwrap();
    let piece = noise(7, 1024 * 1024);
    for i in 0..LAYER_BYTES / piece.len() {
        writer.write_all(&piece).unwrap();
        writer.write_all(&(i as u64).to_le_bytes()).unwrap();
    }
    let (layer_digest, layer_size) = writer.commit(None).unwrap();
    let config = store
        .put_json(
            media_type::OCI_CONFIG,
            &serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}),
        )
        .unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config,
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer_digest.clone(),
            layer_size,
        )],
        subject: None,
        annotations: Default::default(),
    };
    let manifest = store.put_json(media_type::OCI_MANIFEST, &manifest).unwrap();
    let before = peak_rss();

    let target = fixture.reference("big/layer:1");
    let report = fixture
        .client
        .push(&manifest, store, &target, None)
        .await
        .unwrap();
    assert!(report.blobs.iter().all(|b| b.outcome == BlobOutcome::Uploaded));
    assert_eq!(
        report.bytes_uploaded(),
        layer_size + report.blobs[1..].iter().map(|b| b.size).sum::<u64>()
    );

    let dest = TempStore::new();
    let pulled = fixture
        .client
        .pull(&target, &platform::parse("linux/amd64").unwrap(), &dest)
        .await
        .unwrap();
    assert_eq!(pulled.digest(), &manifest.digest);
    assert_eq!(dest.size(&layer_digest), Some(layer_size));

    if let (Some(before), Some(after)) = (before, peak_rss()) {
        let growth = after.saturating_sub(before);
        eprintln!("peak RSS before {before}, after {after}, growth {growth}");
        assert!(
            growth < layer_size / 2,
            "peak memory grew by {growth} bytes moving a {layer_size}-byte layer"
        );
    }
}
