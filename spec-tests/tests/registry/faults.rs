//! Crashes and concurrency: `kill -9` at any point loses nothing that was acknowledged, and
//! leaves nothing half-written that a client can see.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use spec_tests::api::{Api, JsonBody, TestImage, header};
use spec_tests::registry::{RegistryProcess, filesystem_only};
use spec_tests::wait::wait_until;

/// The size of the one staged upload under `root`.
#[test]
fn upload_resumes_after_kill_9() {
    if !filesystem_only(
        "kills the server once part of a request body is in the upload file; S3 keeps a chunk \
         until its request ends or an 8 MiB part fills (cluster.rs kills replicas mid-upload)",
    ) {
        return;
    }
    let mut registry = RegistryProcess::start();
    let content: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = Digest::sha256_of(&content);
    let location = Api::new(&registry).start_upload("resume");

    // Stream the first half slowly enough that the kill lands mid-request.
    let url = registry.url(&location);
    let half = content[..content.len() / 2].to_vec();
    let sender = std::thread::spawn(move || {
        let body = reqwest::blocking::Body::new(SlowReader { data: half, pos: 0 });
        let _ = reqwest::blocking::Client::new().patch(url).body(body).send();
    });
    wait_until(
        "a MiB of the upload to be staged",
        Duration::from_secs(20),
        || registry.staged_upload_bytes() >= 1024 * 1024,
    );
    registry.kill();
    sender.join().unwrap();

    registry.restart();
    let api = Api::new(&registry);
    let status = api.get(&location);
    assert_eq!(status.status(), 204, "the session survives the crash");
    let range = header(&status, "range");
    let offset: usize = range.trim_start_matches("0-").parse::<usize>().unwrap() + 1;
    assert!(offset > 0 && offset < content.len(), "resume point {offset}");

    let rest = api
        .request(Method::PATCH, &location)
        .header("content-range", format!("{offset}-{}", content.len() - 1))
        .body(content[offset..].to_vec())
        .send()
        .unwrap();
    assert_eq!(rest.status(), 202);
    let put = api
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        api.get(&format!("/v2/resume/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        content.as_slice()
    );
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

/// A body that dribbles out 64 KiB every few milliseconds: a slow client, the fault under
/// test (its pause is the client's pace, not a wait for the server).
struct SlowReader {
    data: Vec<u8>,
    pos: usize,
}

impl std::io::Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(Duration::from_millis(5));
        let n = buf.len().min(64 * 1024).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn kill_9_during_pushes_leaves_a_consistent_store() {
    let mut registry = RegistryProcess::start();
    for round in 0..3usize {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let pushers: Vec<_> = (0..4)
            .map(|worker| {
                let base = registry.url("");
                let (stop, done) = (stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let mut acknowledged = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let image = TestImage::new(&format!("r{round}w{worker}i{i}"));
                        let tag = format!("r{round}-w{worker}-{i}");
                        let ok = push(&client, &base, "crash", &tag, &image);
                        if ok {
                            acknowledged.push((tag, image.digest()));
                            done.fetch_add(1, Ordering::Relaxed);
                        } else {
                            break;
                        }
                        i += 1;
                    }
                    acknowledged
                })
            })
            .collect();
        // Kill while pushes are running, each round later into them: after 1, 4 and 7
        // acknowledged pushes (counting events, not time: a fixed delay found none
        // acknowledged when fsyncs were slow on a busy disk).
        let acknowledged_before_kill = 1 + 3 * round;
        wait_until(
            &format!("{acknowledged_before_kill} pushes to be acknowledged"),
            Duration::from_secs(120),
            || done.load(Ordering::Relaxed) >= acknowledged_before_kill,
        );
        registry.kill();
        stop.store(true, Ordering::Relaxed);
        let acknowledged: Vec<(String, Digest)> =
            pushers.into_iter().flat_map(|p| p.join().unwrap()).collect();
        assert!(!acknowledged.is_empty(), "some pushes completed before the kill");

        registry.restart();
        let (ok, report) = registry.fsck();
        assert!(ok, "round {round}: {report}");
        let api = Api::new(&registry);
        for (tag, digest) in &acknowledged {
            let head = api.head(&format!("/v2/crash/manifests/{tag}"));
            assert_eq!(head.status(), 200, "acknowledged tag {tag} survived");
            assert_eq!(header(&head, "docker-content-digest"), digest.to_string());
        }
        // Every tag that exists at all (acknowledged or not) points at a whole manifest.
        let tags = api.get("/v2/crash/tags/list").json_value();
        for tag in tags["tags"].as_array().unwrap() {
            let get = api.get(&format!("/v2/crash/manifests/{}", tag.as_str().unwrap()));
            assert_eq!(get.status(), 200);
            let manifest = get.json_value();
            for layer in manifest["layers"].as_array().unwrap() {
                let path = format!("/v2/crash/blobs/{}", layer["digest"].as_str().unwrap());
                assert_eq!(api.head(&path).status(), 200);
            }
        }
    }
}

/// Pushes an image to `repo:tag` over plain HTTP; false once the server is gone.
fn push(client: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str, image: &TestImage) -> bool {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let sent = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(blob.clone())
            .send();
        if !sent.is_ok_and(|r| r.status() == 201) {
            return false;
        }
    }
    client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type::OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .is_ok_and(|r| r.status() == 201)
}

#[test]
fn concurrent_pushes_of_the_same_blob_and_tag() {
    let registry = RegistryProcess::start();
    let shared = vec![42u8; 2 * 1024 * 1024];
    let digest = Digest::sha256_of(&shared);
    let images: Vec<TestImage> = (0..8).map(|i| TestImage::new(&format!("same-tag-{i}"))).collect();
    let base = registry.url("");
    std::thread::scope(|scope| {
        for (i, image) in images.iter().enumerate() {
            let (base, shared, digest) = (base.clone(), shared.clone(), &digest);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                let location = client
                    .post(format!("{base}/v2/race/blobs/uploads/"))
                    .send()
                    .unwrap()
                    .headers()["location"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let patch = client
                    .patch(format!("{base}{location}"))
                    .body(shared)
                    .send()
                    .unwrap();
                assert_eq!(patch.status(), 202);
                let put = client
                    .put(format!("{base}{location}?digest={digest}"))
                    .send()
                    .unwrap();
                assert_eq!(put.status(), 201);
                assert!(push(&client, &base, "race", "same", image));
                assert!(push(&client, &base, "race", &format!("own-{i}"), image));
            });
        }
    });
    let api = Api::new(&registry);
    assert_eq!(
        api.get(&format!("/v2/race/blobs/{digest}"))
            .bytes()
            .unwrap()
            .len(),
        shared.len()
    );
    let winner = header(&api.head("/v2/race/manifests/same"), "docker-content-digest");
    assert!(
        images.iter().any(|i| i.digest().to_string() == winner),
        "the tag points at one of the pushes, not {winner:?}"
    );
    for (i, image) in images.iter().enumerate() {
        let head = api.head(&format!("/v2/race/manifests/own-{i}"));
        assert_eq!(header(&head, "docker-content-digest"), image.digest().to_string());
    }
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}
