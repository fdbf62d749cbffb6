//! `rbuild registry gc` against a serving registry: what it frees is really gone from disk,
//! what it keeps pulls complete with docker and containerd, and collections in a loop while
//! pushes go on never break a pushed image; the scheduled collection shows in `/metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rbuild_oci::{Digest, media_type};
use reqwest::blocking::Client;
use spec_tests::api::{Api, TestImage, header};
use spec_tests::prometheus::Scrape;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Ctr, Docker, run, which};

/// Bytes of the layer that makes each test image its own.
const LAYER_BYTES: usize = 1024 * 1024;

/// `len` bytes no compressor shrinks, derived from `seed`.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Builds an image of busybox and a random `/blob`; returns the blob's sha256 hex.
pub(crate) fn build_image(docker: &Docker, dir: &Path, tag: &str, seed: u64) -> String {
    let context = dir.join(format!("context-{seed}"));
    std::fs::create_dir_all(&context).unwrap();
    let busybox = which("busybox").expect("busybox-static is installed by scripts/test");
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    let blob = noise(seed, LAYER_BYTES);
    std::fs::write(context.join("blob"), &blob).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY blob /blob\n",
    )
    .unwrap();
    run(docker
        .cmd()
        .args(["build", "--network=none", "-q", "-t", tag])
        .arg(&context));
    Digest::sha256_of(&blob).hex().to_owned()
}

/// The number after `word` in gc's summary line (`freed 123 bytes`).
pub(crate) fn figure(output: &str, word: &str) -> u64 {
    output
        .split(word)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure after {word:?} in:\n{output}"))
}

/// Pulls `remote` with docker into a clean local store and checks `/blob` hashes to `hex`.
pub(crate) fn docker_pull_and_check(docker: &Docker, remote: &str, hex: &str) {
    let _ = docker.cmd().args(["rmi", remote]).output();
    run(docker.cmd().args(["pull", remote]));
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--network=none",
        remote,
        "/bin/busybox",
        "sha256sum",
        "/blob",
    ]));
    assert!(out.starts_with(hex), "{remote}: /blob hashes to {out}, not {hex}");
}

#[test]
fn gc_frees_deleted_and_moved_images_and_the_rest_pull_complete() {
    let (Some(docker), Some(ctr)) = (Docker::get(), Ctr::get()) else {
        return;
    };
    let registry = RegistryProcess::start_with_config("[gc]\ngrace_secs = 0\n");
    let work = tempfile::tempdir().unwrap();
    let host = registry.host();
    let kept = format!("{host}/gc/app:1");
    let deleted = format!("{host}/gc/web:1");
    let moved = format!("{host}/gc/web:latest");
    let kept_hex = build_image(&docker, work.path(), &kept, 1);
    let gone_hex = build_image(&docker, work.path(), &deleted, 2);
    run(docker.cmd().args(["tag", &deleted, &moved]));
    for remote in [&kept, &deleted, &moved] {
        run(docker.cmd().args(["push", remote]));
    }
    // web:1 is deleted and web:latest moves to a new image: the second image is garbage.
    let api = Api::new(&registry);
    assert_eq!(api.delete("/v2/gc/web/manifests/1").status(), 202);
    let latest_hex = build_image(&docker, work.path(), &moved, 3);
    run(docker.cmd().args(["push", &moved]));
    assert_ne!(gone_hex, latest_hex);

    let before = registry.stored_blob_bytes();
    let dry = registry.gc(&["--dry-run"]);
    assert_eq!(
        registry.stored_blob_bytes(),
        before,
        "a dry run removes nothing:\n{dry}"
    );
    let collected = registry.gc(&[]);
    let freed = figure(&collected, "freed ");
    assert_eq!(freed, figure(&dry, "would free "), "{dry}\n{collected}");
    assert!(
        freed >= LAYER_BYTES as u64,
        "the garbage image's own layer is freed:\n{collected}"
    );
    assert_eq!(before - registry.stored_blob_bytes(), freed, "{collected}");
    assert!(collected.contains("removed manifest gc/web@"), "{collected}");
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");

    docker_pull_and_check(&docker, &kept, &kept_hex);
    docker_pull_and_check(&docker, &moved, &latest_hex);
    run(ctr.cmd().args(["images", "pull", "--plain-http", &moved]));
    run(ctr.cmd().args(["images", "rm", &moved]));
    let _ = docker.cmd().args(["rmi", &deleted]).output();
    let gone = docker.cmd().args(["pull", &deleted]).output().unwrap();
    assert!(!gone.status.success(), "the deleted tag stays gone");

    let again = registry.gc(&[]);
    assert_eq!(figure(&again, "freed "), 0, "{again}");
    for remote in [&kept, &moved] {
        let _ = docker.cmd().args(["rmi", remote]).output();
    }
}

/// Pushes `image` to `repo:tag` as docker does: blobs the registry has are not sent again.
/// Returns whether the manifest was accepted; `false` means a collection removed a blob
/// between the check and the manifest (the client's cue to upload it again).
pub(crate) fn push_skipping_present(
    client: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    image: &TestImage,
) -> bool {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let head = client
            .head(format!("{base}/v2/{repo}/blobs/{digest}"))
            .send()
            .unwrap();
        if head.status() == 200 {
            continue;
        }
        let post = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
            .body(blob.clone())
            .send()
            .unwrap();
        assert_eq!(post.status(), 201, "uploading {digest}");
    }
    let put = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type::OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .unwrap();
    match put.status().as_u16() {
        201 => true,
        400 => {
            let body = put.text().unwrap_or_default();
            assert!(body.contains("MANIFEST_BLOB_UNKNOWN"), "{body}");
            false
        }
        status => panic!(
            "manifest PUT answered {status}: {}",
            put.text().unwrap_or_default()
        ),
    }
}

/// A worker's images: each has a layer of its own and one of an image pushed earlier (so a
/// layer may be garbage past the grace period when it is named again), and moves one of two
/// tags, leaving the image before it untagged.
pub(crate) fn http_pusher(
    base: String,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> (BTreeMap<String, TestImage>, usize) {
    let client = Client::new();
    let repo = format!("load/w{worker}");
    let mut own_layers: Vec<Vec<u8>> = Vec::new();
    let mut tagged = BTreeMap::new();
    let mut retries = 0;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let own = format!("worker {worker} image {i} {}", "x".repeat(4096)).into_bytes();
        let earlier = own_layers
            .get(i.wrapping_mul(2_654_435_761) % own_layers.len().max(1))
            .cloned()
            .unwrap_or_else(|| b"first".to_vec());
        let config = format!(r#"{{"architecture":"amd64","os":"linux","worker":{worker},"i":{i}}}"#);
        let image = TestImage::from_parts(
            config.into_bytes(),
            vec![own.clone(), earlier],
            serde_json::json!({}),
        );
        let tag = format!("t{}", i % 2);
        let mut attempts = 0;
        while !push_skipping_present(&client, &base, &repo, &tag, &image) {
            retries += 1;
            attempts += 1;
            assert!(attempts < 5, "push {i} of worker {worker} kept losing blobs");
        }
        own_layers.push(own);
        tagged.insert(tag, image);
        i += 1;
    }
    (tagged, retries)
}

/// Pushes the same docker image again and again under new tags, deleting each tag after
/// its push and waiting past the grace period, so its layers are garbage when docker asks
/// for them next; a push that loses the race is retried, as CI would.
fn docker_pusher(docker: Docker, remote_repo: String, stop: Arc<AtomicBool>) -> String {
    let base = remote_repo
        .split_once('/')
        .map(|(host, repo)| (host.to_owned(), repo.to_owned()));
    let (host, repo) = base.expect("host/repo");
    let api = Client::new();
    let mut n = 0;
    loop {
        let remote = format!("{remote_repo}:{n}");
        run(docker
            .cmd()
            .args(["tag", &format!("{remote_repo}:build"), &remote]));
        let mut attempts = 0;
        while !docker
            .cmd()
            .args(["push", &remote])
            .output()
            .unwrap()
            .status
            .success()
        {
            attempts += 1;
            assert!(attempts < 5, "docker push {remote} kept failing");
        }
        if stop.load(Ordering::Relaxed) {
            return remote;
        }
        let deleted = api
            .delete(format!("http://{host}/v2/{repo}/manifests/{n}"))
            .send()
            .unwrap();
        assert_eq!(deleted.status(), 202);
        let _ = docker.cmd().args(["rmi", &remote]).output();
        std::thread::sleep(Duration::from_millis(2500));
        n += 1;
    }
}

#[test]
fn gc_in_a_loop_while_pushes_go_on() {
    let (Some(docker), Some(ctr)) = (Docker::get(), Ctr::get()) else {
        return;
    };
    let registry = RegistryProcess::start_with_config("[gc]\ngrace_secs = 2\n");
    let work = tempfile::tempdir().unwrap();
    let docker_repos: Vec<String> = (0..2)
        .map(|i| format!("{}/load/docker{i}", registry.host()))
        .collect();
    let hexes: Vec<String> = docker_repos
        .iter()
        .enumerate()
        .map(|(i, repo)| build_image(&docker, work.path(), &format!("{repo}:build"), 10 + i as u64))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let ((runs, freed), pushed, docker_last) = std::thread::scope(|scope| {
        let gc = {
            let (registry, stop) = (&registry, stop.clone());
            scope.spawn(move || {
                let (mut runs, mut freed) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    freed += figure(&registry.gc(&[]), "freed ");
                    runs += 1;
                }
                (runs, freed)
            })
        };
        let pushers: Vec<_> = (0..4)
            .map(|w| {
                let (base, stop) = (registry.url(""), stop.clone());
                scope.spawn(move || http_pusher(base, w, stop))
            })
            .collect();
        let docker_pushers: Vec<_> = docker_repos
            .iter()
            .map(|repo| {
                let (docker, repo, stop) = (docker.clone(), repo.clone(), stop.clone());
                scope.spawn(move || docker_pusher(docker, repo, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(20));
        stop.store(true, Ordering::Relaxed);
        let pushed: Vec<_> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
        let docker_last: Vec<String> = docker_pushers.into_iter().map(|p| p.join().unwrap()).collect();
        (gc.join().unwrap(), pushed, docker_last)
    });
    let retries: usize = pushed.iter().map(|(_, r)| r).sum();
    eprintln!("{runs} collections freed {freed} bytes while pushes went on; {retries} pushes retried");
    assert!(
        runs >= 2 && freed > 0,
        "collections ran and removed garbage meanwhile"
    );

    let check = |registry: &RegistryProcess| {
        let api = Api::new(registry);
        for (w, (tagged, _)) in pushed.iter().enumerate() {
            for (tag, image) in tagged {
                let path = format!("/v2/load/w{w}/manifests/{tag}");
                assert_eq!(
                    header(&api.head(&path), "docker-content-digest"),
                    image.digest().to_string()
                );
                for blob in std::iter::once(&image.config).chain(&image.layers) {
                    let digest = Digest::sha256_of(blob);
                    let got = api.get(&format!("/v2/load/w{w}/blobs/{digest}")).bytes().unwrap();
                    assert_eq!(Digest::sha256_of(&got), digest, "load/w{w}:{tag} blob {digest}");
                }
            }
        }
        let (ok, report) = registry.fsck();
        assert!(ok, "{report}");
    };
    check(&registry);
    // And once everything is past the grace period, a last collection keeps it all.
    std::thread::sleep(Duration::from_secs(3));
    registry.gc(&[]);
    check(&registry);
    for (remote, hex) in docker_last.iter().zip(&hexes) {
        docker_pull_and_check(&docker, remote, hex);
        let _ = docker.cmd().args(["rmi", remote]).output();
    }
    run(ctr
        .cmd()
        .args(["images", "pull", "--plain-http", &docker_last[0]]));
    run(ctr.cmd().args(["images", "rm", &docker_last[0]]));
    for repo in &docker_repos {
        let _ = docker.cmd().args(["rmi", &format!("{repo}:build")]).output();
    }
}

/// The scheduled collections' log lines so far (one per run, written once it is counted).
fn scheduled_runs(registry: &RegistryProcess) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("garbage collection: removed "))
        .map(str::to_owned)
        .collect()
}

/// The scheduled runs the log shows and a scrape of `/metrics` taken between two readings of
/// the log that agree with it: no run ended while the scrape was taken, so the scrape counts
/// exactly the runs listed.
fn runs_and_scrape(registry: &RegistryProcess, metrics: &str) -> (Vec<String>, Scrape) {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let runs = scheduled_runs(registry);
        let scrape = Scrape::get(metrics);
        let counted = scrape.value("rbuild_registry_gc_runs_total");
        if scheduled_runs(registry).len() == runs.len() && counted == runs.len() as f64 {
            return (runs, scrape);
        }
        seen.push((runs.len(), counted));
    }
    panic!("the runs metric never matched the runs logged (logged, counted): {seen:?}");
}

/// `rbuild serve` collects on its schedule, and `/metrics` moves by exactly what each run did:
/// the run that finds the untagged image adds one run, its 4 blobs (manifest, config, two
/// layers), 1 manifest and the bytes of exactly those blobs (what left the store, and what the
/// test pushed); the runs after it add runs and nothing else.
#[test]
fn serve_collects_on_its_schedule() {
    // A grace period longer than a push: with none, a scheduled run between a blob's upload
    // and its manifest (or between the delete and the HEAD below) takes it, as it should.
    let registry = RegistryProcess::start_with_config("[gc]\ngrace_secs = 2\ninterval_secs = 4\n");
    let api = Api::new(&registry);
    let metrics = registry.url("/metrics");
    let kept = TestImage::new("kept");
    let garbage = TestImage::new("garbage");
    api.push_image("sched/app", "v1", &kept);
    api.push_image("sched/app", "old", &garbage);
    assert_eq!(api.delete("/v2/sched/app/manifests/old").status(), 202);
    let layer = format!("/v2/sched/app/blobs/{}", Digest::sha256_of(&garbage.layers[0]));
    assert_eq!(api.head(&layer).status(), 200);
    let stored = registry.stored_blob_bytes();
    let before = Scrape::get(&metrics);
    // The run that removes it may be the first or, on a slow start, a later one.
    spec_tests::wait::wait_until(
        "the scheduled collection to remove the untagged image",
        Duration::from_secs(30),
        || {
            let runs = scheduled_runs(&registry);
            runs.iter().any(|l| l.contains("removed 0 tags, 1 manifests, "))
        },
    );
    let (runs, removed) = runs_and_scrape(&registry, &metrics);
    // The manifest's bytes are a blob too.
    let garbage_blobs: Vec<&Vec<u8>> = [&garbage.manifest, &garbage.config]
        .into_iter()
        .chain(&garbage.layers)
        .collect();
    let garbage_bytes: usize = garbage_blobs.iter().map(|b| b.len()).sum();
    assert_eq!(api.head(&layer).status(), 404);
    assert_eq!(
        stored - registry.stored_blob_bytes(),
        garbage_bytes as u64,
        "the run deleted the garbage image's blobs and nothing else"
    );
    let gc = |family: &str| format!("rbuild_registry_gc_{family}_total");
    let families = [
        "runs",
        "freed_bytes",
        "blobs_deleted",
        "manifests_deleted",
        "tags_deleted",
        "failures",
    ]
    .map(gc);
    assert_eq!(
        removed.deltas(&before, &families),
        [
            (gc("runs"), runs.len() as f64 - before.value(&gc("runs"))),
            (gc("freed_bytes"), garbage_bytes as f64),
            (gc("blobs_deleted"), garbage_blobs.len() as f64),
            (gc("manifests_deleted"), 1.0),
            (gc("tags_deleted"), 0.0),
            (gc("failures"), 0.0),
        ],
        "{}\n{runs:#?}",
        removed.text
    );

    spec_tests::wait::wait_until("the next scheduled collection", Duration::from_secs(30), || {
        scheduled_runs(&registry).len() > runs.len()
    });
    let (later, next) = runs_and_scrape(&registry, &metrics);
    assert_eq!(
        next.deltas(&removed, &families),
        [
            (gc("runs"), (later.len() - runs.len()) as f64),
            (gc("freed_bytes"), 0.0),
            (gc("blobs_deleted"), 0.0),
            (gc("manifests_deleted"), 0.0),
            (gc("tags_deleted"), 0.0),
            (gc("failures"), 0.0),
        ],
        "{}",
        next.text
    );

    for blob in std::iter::once(&kept.config).chain(&kept.layers) {
        let path = format!("/v2/sched/app/blobs/{}", Digest::sha256_of(blob));
        assert_eq!(api.get(&path).bytes().unwrap().as_ref(), blob.as_slice());
    }
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}
