//! The client against rbuild's own registry, served in-process on 127.0.0.1.

mod common;

use std::sync::Arc;

use common::{Fixture, RbuildRegistry, Recorder, TempStore, image_blobs, make_image, make_index};
use rbuild_client::{BlobOutcome, Client, ClientError, ClientOptions, Direction, platform};
use rbuild_oci::{Reference, RepositoryName};

fn reference(registry: &RbuildRegistry, rest: &str) -> Reference {
    format!("{}/{rest}", registry.name()).parse().unwrap()
}

/// Every blob of the push had `outcome`.
fn assert_all(report: &rbuild_client::PushReport, outcome: BlobOutcome) {
    assert!(
        report.blobs.iter().all(|b| b.outcome == outcome),
        "{:?}",
        report.blobs
    );
}

fn amd64() -> rbuild_oci::manifest::Platform {
    platform::parse("linux/amd64").unwrap()
}

#[tokio::test]
async fn push_then_pull_round_trips_and_skips_what_exists() {
    let Fixture {
        registry,
        config,
        store: source,
        client,
    } = Fixture::start().await;
    // One layer above the monolithic limit, so both upload paths run.
    let manifest = make_image(&source, 1, &[1000, 3 * 1024 * 1024 + 17, 0], "linux", "amd64");
    let blobs = image_blobs(&source, &manifest);
    let target = reference(&registry, "team/app:v1");

    let report = client.push(&manifest, &source, &target, None).await.unwrap();
    assert_eq!(report.digest, manifest.digest);
    assert_eq!(report.reference.digest(), Some(&manifest.digest));
    assert_eq!(report.blobs.len(), blobs.len());
    assert_all(&report, BlobOutcome::Uploaded);
    assert_eq!(report.bytes_uploaded(), blobs.iter().map(|b| b.size).sum::<u64>());
    assert_eq!(report.manifests.len(), 1);
    assert_eq!(report.manifests[0], manifest.digest);

    // Everything is there now: a second push (to another tag) uploads nothing.
    let again = client
        .push(&manifest, &source, &reference(&registry, "team/app:v2"), None)
        .await
        .unwrap();
    assert_all(&again, BlobOutcome::Existed);
    assert_eq!(again.bytes_uploaded(), 0);

    // Pull into an empty store with a fresh client.
    let dest = TempStore::new();
    let recorder = Arc::new(Recorder::default());
    let puller = Client::with_progress(
        ClientOptions {
            docker_config_dir: Some(config.path().to_owned()),
            ..ClientOptions::default()
        },
        recorder.clone(),
    )
    .unwrap();
    let pulled = puller.pull(&target, &amd64(), &dest).await.unwrap();
    assert_eq!(pulled.digest(), &manifest.digest);
    assert_eq!(pulled.index_digest, None);
    assert_eq!(pulled.config.os, "linux");
    assert_eq!(pulled.manifest_bytes, source.read(&manifest.digest).unwrap());
    assert!(dest.contains(&manifest.digest));
    for blob in &blobs {
        assert_eq!(
            dest.read(&blob.digest).unwrap(),
            source.read(&blob.digest).unwrap()
        );
    }
    let layers = blobs.len() - 1;
    assert_eq!(recorder.started.lock().unwrap().len(), layers);
    assert!(
        recorder
            .started
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, d)| *d == Direction::Download)
    );
    assert_eq!(*recorder.max_bytes.lock().unwrap(), 3 * 1024 * 1024 + 17);

    // Pulling again downloads nothing.
    let recorder2 = Arc::new(Recorder::default());
    let puller2 = Client::with_progress(ClientOptions::default(), recorder2.clone()).unwrap();
    puller2.pull(&target, &amd64(), &dest).await.unwrap();
    assert!(recorder2.started.lock().unwrap().is_empty());
    assert!(
        recorder2
            .finished
            .lock()
            .unwrap()
            .iter()
            .all(|(_, o)| *o == BlobOutcome::Existed)
    );

    // Pulling by digest works and pins the same manifest.
    let by_digest = target.with_digest(manifest.digest.clone());
    let resolved = client.resolve(&by_digest, &amd64()).await.unwrap();
    assert_eq!(resolved.digest(), &manifest.digest);
}

#[tokio::test]
async fn mounts_blobs_from_a_sibling_repository() {
    let fixture = Fixture::start().await;
    let (registry, store, client) = (&fixture.registry, &fixture.store, &fixture.client);
    let manifest = make_image(store, 2, &[500, 600], "linux", "amd64");
    client
        .push(&manifest, store, &reference(registry, "base/img:1"), None)
        .await
        .unwrap();

    let from: RepositoryName = "base/img".parse().unwrap();
    let report = client
        .push(
            &manifest,
            store,
            &reference(registry, "apps/derived:1"),
            Some(&from),
        )
        .await
        .unwrap();
    assert_all(&report, BlobOutcome::Mounted);

    // Named no source, a third repository mounts from where the store saw the blobs go.
    let report = client
        .push(&manifest, store, &reference(registry, "apps/other:1"), None)
        .await
        .unwrap();
    assert_all(&report, BlobOutcome::Mounted);

    // A store that never saw them on this registry, pushed by another client (another
    // process), uploads them.
    let copy = || {
        let fresh = TempStore::new();
        for blob in image_blobs(store, &manifest) {
            fresh.put(&store.read(&blob.digest).unwrap()).unwrap();
        }
        fresh.put(&store.read(&manifest.digest).unwrap()).unwrap();
        fresh
    };
    let another = Client::new(ClientOptions::default()).unwrap();
    let report = another
        .push(&manifest, &copy(), &reference(registry, "apps/fresh:1"), None)
        .await
        .unwrap();
    assert_all(&report, BlobOutcome::Uploaded);

    // The same store through a client that sent them before mounts them: the client remembers
    // where they went.
    let report = client
        .push(
            &manifest,
            &copy(),
            &reference(registry, "apps/same-client:1"),
            None,
        )
        .await
        .unwrap();
    assert_all(&report, BlobOutcome::Mounted);

    // A mount source that lacks the blobs falls back to an upload.
    let empty: RepositoryName = "nothing/here".parse().unwrap();
    let m2 = make_image(store, 3, &[700], "linux", "amd64");
    let report = client
        .push(&m2, store, &reference(registry, "apps/third:1"), Some(&empty))
        .await
        .unwrap();
    assert_all(&report, BlobOutcome::Uploaded);
}

#[tokio::test]
async fn index_resolves_to_the_platform() {
    let fixture = Fixture::start().await;
    let (registry, store, client) = (&fixture.registry, &fixture.store, &fixture.client);
    let amd = make_image(store, 10, &[100], "linux", "amd64");
    let arm = make_image(store, 11, &[200], "linux", "arm64");
    let armv7 = make_image(store, 12, &[300], "linux", "arm");
    let index = make_index(
        store,
        &[
            (amd.clone(), "linux", "amd64", None),
            (arm.clone(), "linux", "arm64", Some("v8")),
            (armv7.clone(), "linux", "arm", Some("v7")),
        ],
    );
    let target = reference(registry, "multi:latest");
    let report = client.push(&index, store, &target, None).await.unwrap();
    assert_eq!(report.digest, index.digest);
    assert_eq!(report.manifests.len(), 4);
    assert_eq!(report.manifests.last(), Some(&index.digest));

    for (wanted, expected) in [
        ("linux/amd64", &amd),
        ("linux/arm64", &arm),
        ("linux/arm/v7", &armv7),
    ] {
        let resolved = client
            .resolve(&target, &platform::parse(wanted).unwrap())
            .await
            .unwrap();
        assert_eq!(resolved.index_digest.as_ref(), Some(&index.digest), "{wanted}");
        assert_eq!(resolved.digest(), &expected.digest, "{wanted}");
        assert!(resolved.manifest_descriptor.platform.is_some());
    }
    let err = client
        .resolve(&target, &platform::parse("linux/s390x").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NoMatchingPlatform { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("linux/s390x") && message.contains("linux/arm64"),
        "{message}"
    );

    // Pulling the index stores only the chosen platform's blobs.
    let dest = TempStore::new();
    client
        .pull(&target, &platform::parse("linux/arm64").unwrap(), &dest)
        .await
        .unwrap();
    assert!(dest.contains(&arm.digest));
    assert!(!dest.contains(&amd.digest));

    // Resolve first (a build's cache key), store later (a cache miss).
    let resolved = client
        .resolve(&target, &platform::parse("linux/arm/v7").unwrap())
        .await
        .unwrap();
    client.pull_resolved(&target, &resolved, &dest).await.unwrap();
    assert!(dest.contains(&armv7.digest));
    for blob in image_blobs(store, &armv7) {
        assert!(dest.contains(&blob.digest));
    }
}

#[tokio::test]
async fn corrupt_registry_content_is_refused() {
    let fixture = Fixture::start().await;
    let (registry, store, client) = (&fixture.registry, &fixture.store, &fixture.client);
    let manifest = make_image(store, 20, &[4096, 5000], "linux", "amd64");
    let target = reference(registry, "corrupt:1");
    client.push(&manifest, store, &target, None).await.unwrap();

    // Overwrite a layer in the registry's storage with other bytes of the same size.
    let blobs = image_blobs(store, &manifest);
    let layer = &blobs[2];
    let path = registry.blob_path(&layer.digest);
    assert!(path.is_file(), "{}", path.display());
    std::fs::write(&path, common::noise(999, layer.size as usize)).unwrap();

    let dest = TempStore::new();
    let err = client.pull(&target, &amd64(), &dest).await.unwrap_err();
    match &err {
        ClientError::DigestMismatch { expected, .. } => assert_eq!(expected, &layer.digest),
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(!dest.contains(&layer.digest));
    // Nothing half-written is left behind, and no manifest claims a complete image.
    assert!(!dest.contains(&manifest.digest));
    assert_eq!(
        std::fs::read_dir(dest.dir.path().join("ingest")).unwrap().count(),
        0
    );

    // A corrupt manifest is caught too, both by tag (Docker-Content-Digest) and by digest.
    std::fs::write(
        registry.blob_path(&manifest.digest),
        common::noise(5, manifest.size as usize),
    )
    .unwrap();
    for r in [target.clone(), target.with_digest(manifest.digest.clone())] {
        let err = client.resolve(&r, &amd64()).await.unwrap_err();
        assert!(matches!(err, ClientError::DigestMismatch { .. }), "{r}: {err}");
    }
}

#[tokio::test]
async fn errors_name_the_image_and_the_fix() {
    let fixture = Fixture::start().await;
    let (registry, store, client) = (&fixture.registry, &fixture.store, &fixture.client);
    let manifest = make_image(store, 30, &[10], "linux", "amd64");
    client
        .push(&manifest, store, &reference(registry, "o/r:v1"), None)
        .await
        .unwrap();

    let err = client
        .resolve(&reference(registry, "o/r:nope"), &amd64())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string().split(" (").next().unwrap(),
        format!("manifest unknown: tag nope not found in {}/o/r", registry.name())
    );
    assert!(matches!(
        err,
        ClientError::ManifestUnknown { .. } | ClientError::RepositoryUnknown { .. }
    ));

    // Pushing a manifest the store does not have.
    let missing = rbuild_oci::Descriptor::new(
        rbuild_oci::media_type::OCI_MANIFEST,
        rbuild_oci::Digest::sha256_of(b"nothing"),
        7,
    );
    let err = client
        .push(&missing, store, &reference(registry, "o/r:v2"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::MissingContent { .. }), "{err}");

    // A reference that pins another digest.
    let pinned = reference(registry, "o/r").with_digest(rbuild_oci::Digest::sha256_of(b"x"));
    let err = client.push(&manifest, store, &pinned, None).await.unwrap_err();
    assert!(matches!(err, ClientError::ReferenceDigest { .. }), "{err}");

    // Nothing listens here.
    let port = common::free_port();
    let nowhere: Reference = format!("127.0.0.1:{port}/x:1").parse().unwrap();
    let err = client.resolve(&nowhere, &amd64()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let client = Client::new(ClientOptions::default()).unwrap();
    let store = TempStore::new();
    let r: Reference = "localhost:1/x:1".parse().unwrap();
    let p = amd64();
    let d = rbuild_oci::Descriptor::new("x", rbuild_oci::Digest::sha256_of(b""), 0);
    assert_send(&client.resolve(&r, &p));
    assert_send(&client.pull(&r, &p, &store));
    assert_send(&client.push(&d, &store, &r, None));
}
