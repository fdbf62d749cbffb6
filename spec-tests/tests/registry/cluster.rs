//! Several `rbuild serve` replicas on loopback sharing one bucket (Garage) and one database
//! (PostgreSQL): any replica answers any request, and the faults a cluster meets — a replica
//! killed, the database or the object store stopped — lose nothing acknowledged, leave nothing
//! half-written, and heal without restarting a replica.
//!
//! Each test has a database and a bucket prefix of its own on the engines `scripts/test`
//! starts ([`spec_tests::engines`]); the fault tests start a private PostgreSQL or Garage,
//! since they stop it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use spec_tests::api::{Api, JsonBody, TestImage, header};
use spec_tests::engines::{ClusterStorage, Garage, Postgres};
use spec_tests::registry::{Backend, RegistryProcess, rbuild_bin};
use spec_tests::tools::{Ctr, Docker, run};
use spec_tests::wait::wait_until;

use crate::gc::{figure, http_pusher, noise};
use crate::interop::push_busybox;

/// A layer big enough to be an S3 multipart upload of two parts (parts are at least 5 MiB).
const BIG_LAYER: usize = 6 * 1024 * 1024 + 4321;

/// The chunk size of chunked uploads: smaller than an S3 part, so a replica has to keep an
/// acknowledged chunk somewhere shared before it can send it as a part.
const CHUNK: usize = 2 * 1024 * 1024;

/// The shared engines `scripts/test` started, under [`ClusterStorage::shared`]'s rule (in CI
/// their absence fails the test). The second pass of the registry tests on S3 + PostgreSQL
/// (`RBUILD_TEST_REGISTRY_BACKEND=cluster`) skips these: they choose their backends
/// themselves and ran in the first pass, on the same engines.
fn first_pass() -> bool {
    let second = Backend::of_run() == Backend::Cluster;
    if second {
        eprintln!("SKIPPED: the cluster tests ran in the first pass, on the same engines");
    }
    !second
}

/// Replicas of one registry: the same bucket prefix, the same database, each its own process.
struct Cluster {
    replicas: Vec<RegistryProcess>,
    config: PathBuf,
    storage: ClusterStorage,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` replicas on `storage`; `extra` is more configuration (`[gc]`).
    fn start(count: usize, storage: ClusterStorage, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root for the maintenance commands");
        let toml = storage.config(extra);
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("root = \"{}\"\n{toml}", root.display())).expect("write config");
        let replicas = (0..count)
            .map(|_| RegistryProcess::start_with_config(&toml))
            .collect();
        Cluster {
            replicas,
            config,
            storage,
            _dir: dir,
        }
    }

    /// A client for replica `i`.
    fn api(&self, i: usize) -> Api {
        Api::new(&self.replicas[i])
    }

    /// The base URL of every replica, in order.
    fn bases(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.url("")).collect()
    }

    /// `rbuild registry <command> --config FILE`, as an operator runs it beside the replicas.
    fn registry_command(&self, command: &str) -> (bool, String) {
        let out = Command::new(rbuild_bin())
            .args(["registry", command, "--config"])
            .arg(&self.config)
            .output()
            .expect("run rbuild registry");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// `rbuild registry gc`; returns what it printed.
    fn gc(&self) -> String {
        let (ok, text) = self.registry_command("gc");
        assert!(ok, "rbuild registry gc failed:\n{text}");
        text
    }

    /// `rbuild registry fsck` must pass, having checked the shared stores (at least `blobs`
    /// blobs: an fsck of an empty local root proves nothing).
    fn assert_fsck_clean(&self, blobs: u64) {
        let (ok, report) = self.registry_command("fsck");
        assert!(ok, "fsck found damage:\n{report}");
        let checked = figure(&report, "checked ");
        assert!(
            checked >= blobs,
            "fsck checked {checked} blobs, at least {blobs} are stored:\n{report}"
        );
    }
}

/// Whether `repo:tag` on the registry at `api` is `image`, whole: the tag resolves to its
/// manifest and every blob it names comes back with its digest.
fn assert_pulls_complete(api: &Api, repo: &str, tag: &str, image: &TestImage) {
    let head = api.head(&format!("/v2/{repo}/manifests/{tag}"));
    assert_eq!(head.status(), 200, "{repo}:{tag}");
    assert_eq!(
        header(&head, "docker-content-digest"),
        image.digest().to_string(),
        "{repo}:{tag}"
    );
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let got = api.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(got.status(), 200, "{repo}:{tag} blob {digest}");
        let bytes = got.bytes().expect("blob body");
        assert_eq!(Digest::sha256_of(&bytes), digest, "{repo}:{tag} blob {digest}");
    }
}

/// Every tag in `repo` points at a manifest whose blobs are all there: what a client can see
/// is never half of a push.
fn assert_every_tag_whole(api: &Api, repo: &str) {
    let tags = api.get(&format!("/v2/{repo}/tags/list")).json_value();
    for tag in tags["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
    {
        let manifest = api.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(manifest.status(), 200, "{repo}:{tag}");
        let manifest = manifest.json_value();
        let blobs =
            std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().into_iter().flatten());
        for blob in blobs {
            let digest = blob["digest"].as_str().unwrap_or_default();
            let path = format!("/v2/{repo}/blobs/{digest}");
            assert_eq!(
                api.head(&path).status(),
                200,
                "{repo}:{tag} names {digest}, which is missing"
            );
        }
    }
}

/// An image of a config, a layer of `big` incompressible bytes and a small one, from `seed`.
fn image_with_big_layer(seed: u64, big: usize) -> TestImage {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layers = vec![noise(seed, big), format!("small layer {seed}").into_bytes()];
    TestImage::from_parts(config, layers, serde_json::json!({}))
}

/// A PATCH of `bytes` at `offset` of the upload at `location`.
fn patch(
    client: &Client,
    base: &str,
    location: &str,
    offset: usize,
    bytes: &[u8],
) -> reqwest::Result<Response> {
    client
        .request(Method::PATCH, format!("{base}{location}"))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{offset}-{}", offset + bytes.len() - 1))
        .body(bytes.to_vec())
        .send()
}

/// The number of bytes an upload session holds, from its `Range` header (`0-<last>`), or
/// `None` when the replica does not answer 204.
fn upload_offset(client: &Client, base: &str, location: &str) -> Option<usize> {
    let status = client.get(format!("{base}{location}")).send().ok()?;
    if status.status() != 204 {
        return None;
    }
    let range = header(&status, "range");
    let last: usize = range.strip_prefix("0-")?.parse().ok()?;
    Some(if range == "0-0" { 0 } else { last + 1 })
}

#[test]
fn three_replicas_serve_one_registry() {
    if !first_pass() {
        return;
    }
    let (Some(docker), Some(ctr), Some(storage)) = (Docker::get(), Ctr::get(), ClusterStorage::shared())
    else {
        return;
    };
    let cluster = Cluster::start(3, storage, "");
    let [b, c] = [1, 2].map(|i| cluster.replicas[i].host());

    // docker push to A, docker pull from B and run it, ctr pull from C and run it.
    let pushed = push_busybox(&docker, &cluster.replicas[0], "cluster/busybox:1");
    let from_b = format!("{b}/cluster/busybox:1");
    let _ = docker.cmd().args(["rmi", &pushed, &from_b]).output();
    run(docker.cmd().args(["pull", &from_b]));
    let out = run(docker
        .cmd()
        .args(["run", "--rm", "--network=none", &from_b, "echo", "pulled from B"]));
    assert_eq!(out.trim(), "pulled from B");
    let from_c = format!("{c}/cluster/busybox:1");
    run(ctr.cmd().args(["images", "pull", "--plain-http", &from_c]));
    let id = format!("rbuild-cluster-{}", cluster.replicas[2].addr().port());
    let out = run(ctr
        .cmd()
        .args(["run", "--rm", &from_c, &id, "echo", "pulled from C"]));
    assert_eq!(out.trim(), "pulled from C");
    run(ctr.cmd().args(["images", "rm", &from_c]));
    run(docker.cmd().args(["rmi", &from_b]));

    // A chunked upload opened on A, continued on B and C, finished on C.
    let content = noise(15, 2 * CHUNK + CHUNK / 2);
    let digest = Digest::sha256_of(&content);
    let client = Client::new();
    let [base_a, base_b, base_c] = [0, 1, 2].map(|i| cluster.replicas[i].url(""));
    let location = cluster.api(0).start_upload("cluster/chunked");
    let first = patch(&client, &base_b, &location, 0, &content[..CHUNK]).expect("PATCH on B");
    assert_eq!(first.status(), 202, "{}", first.text().unwrap_or_default());
    assert_eq!(header(&first, "range"), format!("0-{}", CHUNK - 1));
    assert_eq!(
        upload_offset(&client, &base_a, &location),
        Some(CHUNK),
        "A sees B's chunk"
    );
    let second = patch(&client, &base_c, &location, CHUNK, &content[CHUNK..2 * CHUNK]).expect("PATCH on C");
    assert_eq!(second.status(), 202, "{}", second.text().unwrap_or_default());
    let put = client
        .put(format!("{base_c}{location}?digest={digest}"))
        .header("content-range", format!("{}-{}", 2 * CHUNK, content.len() - 1))
        .body(content[2 * CHUNK..].to_vec())
        .send()
        .expect("PUT on C");
    assert_eq!(put.status(), 201, "{}", put.text().unwrap_or_default());
    let path = format!("/v2/cluster/chunked/blobs/{digest}");
    assert_eq!(
        upload_offset(&client, &base_b, &location),
        None,
        "the session ended on every replica"
    );
    for i in 0..3 {
        let got = cluster.api(i).get(&path).bytes().expect("blob");
        assert!(
            got.as_ref() == content.as_slice(),
            "replica {i} serves the blob whole"
        );
    }

    // A tag moved on A is seen on B at once.
    let (first, second) = (TestImage::new("moving one"), TestImage::new("moving two"));
    for image in [&first, &second] {
        cluster.api(0).push_image("cluster/moving", "latest", image);
        let seen = cluster.api(1).head("/v2/cluster/moving/manifests/latest");
        assert_eq!(header(&seen, "docker-content-digest"), image.digest().to_string());
    }
    let tags = cluster.api(2).get("/v2/cluster/moving/tags/list").json_value();
    assert_eq!(tags["tags"], serde_json::json!(["latest"]));
    cluster.assert_fsck_clean(5);
}

#[test]
fn concurrent_pushes_of_one_image_to_every_replica_agree() {
    let Some(storage) = first_pass().then(ClusterStorage::shared).flatten() else {
        return;
    };
    let cluster = Cluster::start(3, storage, "");
    let image = image_with_big_layer(21, BIG_LAYER);
    let bases = cluster.bases();
    let start = Barrier::new(6);
    std::thread::scope(|scope| {
        for pusher in 0..6 {
            let (base, image, start) = (bases[pusher % 3].clone(), &image, &start);
            scope.spawn(move || {
                let api = Api::at(&base).with_upload_sessions();
                start.wait();
                api.push_image("cluster/same", "v1", image);
            });
        }
    });
    for i in 0..3 {
        assert_pulls_complete(&cluster.api(i), "cluster/same", "v1", &image);
        let tags = cluster.api(i).get("/v2/cluster/same/tags/list").json_value();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    }
    cluster.assert_fsck_clean(3);
}

/// A client that pushes through whichever replica answers: when its replica is gone it moves
/// to the next and resumes each upload from what the registry acknowledged, as a client
/// behind a load balancer would.
struct FailoverPusher {
    bases: Vec<String>,
    current: usize,
    client: Client,
    /// Chunks replica 0 acknowledged (shared by every pusher: the test kills on a count).
    acked_by_first: Arc<AtomicUsize>,
    /// How often this pusher moved to another replica.
    switches: usize,
}

impl FailoverPusher {
    /// Moves to the next replica after a failed request; panics when every one has failed
    /// many times over.
    fn switch(&mut self, what: &str, failure: String) {
        self.switches += 1;
        assert!(self.switches < 30, "{what} kept failing; last: {failure}");
        self.current = (self.current + 1) % self.bases.len();
    }

    fn base(&self) -> String {
        self.bases[self.current].clone()
    }

    /// Uploads `blob` in chunks, resuming on another replica after a failure.
    fn upload(&mut self, repo: &str, blob: &[u8]) {
        let digest = Digest::sha256_of(blob);
        let location = loop {
            match self
                .client
                .post(format!("{}/v2/{repo}/blobs/uploads/", self.base()))
                .send()
            {
                Ok(r) if r.status() == 202 => break header(&r, "location"),
                other => self.switch("POST", format!("{other:?}")),
            }
        };
        let mut offset = 0;
        // What the registry acknowledged: a resumed upload must hold at least that much.
        let mut acknowledged = 0;
        while offset < blob.len() {
            let end = (offset + CHUNK).min(blob.len());
            match patch(&self.client, &self.base(), &location, offset, &blob[offset..end]) {
                Ok(r) if r.status() == 202 => {
                    if self.current == 0 {
                        self.acked_by_first.fetch_add(1, Ordering::Relaxed);
                    }
                    offset = end;
                    acknowledged = end;
                }
                other => {
                    self.switch("PATCH", format!("{other:?}"));
                    if let Some(held) = upload_offset(&self.client, &self.base(), &location) {
                        assert!(
                            held >= acknowledged,
                            "{location}: {held} bytes held, {acknowledged} were acknowledged"
                        );
                        offset = held;
                    }
                }
            }
        }
        loop {
            let put = self
                .client
                .put(format!("{}{location}?digest={digest}", self.base()))
                .send();
            match put {
                Ok(r) if r.status() == 201 => return,
                // A PUT whose answer was lost with its replica may have finished the blob.
                _ if self
                    .client
                    .head(format!("{}/v2/{repo}/blobs/{digest}", self.base()))
                    .send()
                    .is_ok_and(|r| r.status() == 200) =>
                {
                    return;
                }
                other => self.switch("PUT", format!("{other:?}")),
            }
        }
    }

    /// Pushes `image` to `repo:tag`.
    fn push(&mut self, repo: &str, tag: &str, image: &TestImage) {
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            self.upload(repo, blob);
        }
        loop {
            let put = self
                .client
                .put(format!("{}/v2/{repo}/manifests/{tag}", self.base()))
                .header("content-type", media_type::OCI_MANIFEST)
                .body(image.manifest.clone())
                .send();
            match put {
                Ok(r) if r.status() == 201 => return,
                other => self.switch("manifest PUT", format!("{other:?}")),
            }
        }
    }
}

#[test]
fn sigkill_of_a_replica_during_eight_pushes() {
    let Some(storage) = first_pass().then(ClusterStorage::shared).flatten() else {
        return;
    };
    let mut cluster = Cluster::start(3, storage, "");
    let images: Vec<TestImage> = (0..8).map(|i| image_with_big_layer(100 + i, BIG_LAYER)).collect();
    let acked_by_first = Arc::new(AtomicUsize::new(0));
    let bases = cluster.bases();
    let switches = std::thread::scope(|scope| {
        let pushers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let mut pusher = FailoverPusher {
                    bases: bases.clone(),
                    current: i % 3,
                    client: Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()
                        .expect("client"),
                    acked_by_first: acked_by_first.clone(),
                    switches: 0,
                };
                scope.spawn(move || {
                    pusher.push("cluster/kill", &format!("p{i}"), image);
                    pusher.switches
                })
            })
            .collect();
        // Kill A once it has acknowledged a few chunks: its three pushers are mid-upload.
        wait_until(
            "replica A to acknowledge 3 chunks",
            Duration::from_secs(120),
            || acked_by_first.load(Ordering::Relaxed) >= 3,
        );
        cluster.replicas[0].kill();
        pushers
            .into_iter()
            .map(|p| p.join().expect("pusher"))
            .sum::<usize>()
    });
    assert!(switches > 0, "some pushers were on A when it died and moved on");
    for i in 1..3 {
        let api = cluster.api(i);
        for (n, image) in images.iter().enumerate() {
            assert_pulls_complete(&api, "cluster/kill", &format!("p{n}"), image);
        }
    }
    cluster.assert_fsck_clean(3 * images.len() as u64);
}

/// What pushers saw while an engine was down.
#[derive(Default)]
struct Outcomes {
    /// `(replica, tag, image)` of every push the registry acknowledged.
    acknowledged: Vec<(usize, String, TestImage)>,
    /// `(tag, image)` of pushes whose manifest PUT was refused with 503.
    refused: Vec<(String, TestImage)>,
    /// Bodies of the 503 answers.
    unavailable: Vec<String>,
    /// Anything else: a status that is neither success nor 503, with its body.
    unexpected: Vec<String>,
}

/// Pushes small images to replica `replica` until `stop`, as a client that honours
/// `Retry-After` would; records every outcome.
fn push_until(base: &str, replica: usize, repo: &str, stop: &AtomicBool, outcomes: &Mutex<Outcomes>) {
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    // Whether a request succeeded; a failure is recorded, and waited out as Retry-After says.
    let succeeded = |sent: reqwest::Result<Response>| -> bool {
        let (status, retry_after, body) = match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let retry_after = header(&r, "retry-after").parse::<u64>().ok();
                (r.status().as_u16(), retry_after, r.text().unwrap_or_default())
            }
            Err(e) => (0, None, e.to_string()),
        };
        let mut recorded = outcomes.lock().expect("outcomes");
        if status == 503 && retry_after.is_some() {
            recorded.unavailable.push(body);
        } else {
            recorded.unexpected.push(format!("{status} {body}"));
        }
        drop(recorded);
        std::thread::sleep(Duration::from_secs(retry_after.unwrap_or(1)));
        false
    };
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let image = TestImage::new(&format!("{repo} replica {replica} push {i}"));
        let tag = format!("r{replica}-{i}");
        let blobs_stored = std::iter::once(&image.config).chain(&image.layers).all(|blob| {
            let digest = Digest::sha256_of(blob);
            succeeded(
                client
                    .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
                    .body(blob.clone())
                    .send(),
            )
        });
        if !blobs_stored {
            continue;
        }
        let put = client
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", media_type::OCI_MANIFEST)
            .body(image.manifest.clone())
            .send();
        let acknowledged = succeeded(put);
        let mut recorded = outcomes.lock().expect("outcomes");
        if acknowledged {
            recorded.acknowledged.push((replica, tag, image));
        } else {
            recorded.refused.push((tag, image));
        }
    }
}

#[test]
fn postgres_stopped_for_five_seconds_during_pushes() {
    let Some((postgres, garage)) = first_pass()
        .then(|| Postgres::private().zip(Garage::shared()))
        .flatten()
    else {
        return;
    };
    let cluster = Cluster::start(3, ClusterStorage::on(&postgres, &garage), "");
    let stop = AtomicBool::new(false);
    let outcomes = Mutex::new(Outcomes::default());
    let acknowledged = |replica: usize| {
        let outcomes = outcomes.lock().expect("outcomes");
        outcomes
            .acknowledged
            .iter()
            .filter(|(r, _, _)| *r == replica)
            .count()
    };
    let bases = cluster.bases();
    let probe = std::thread::scope(|scope| {
        for (replica, base) in bases.iter().enumerate() {
            let (stop, outcomes) = (&stop, &outcomes);
            scope.spawn(move || push_until(base, replica, "cluster/pg", stop, outcomes));
        }
        wait_until("a push through every replica", Duration::from_secs(60), || {
            (0..3).all(|r| acknowledged(r) > 0)
        });
        postgres.stop();
        let before: Vec<usize> = (0..3).map(acknowledged).collect();
        let probe = cluster.api(1).get("/v2/cluster/pg/tags/list");
        let probe = (
            probe.status().as_u16(),
            header(&probe, "retry-after"),
            probe.text().unwrap_or_default(),
        );
        // The outage lasts five seconds, whatever the clients do meanwhile.
        std::thread::sleep(Duration::from_secs(5));
        postgres.start();
        wait_until(
            "every replica to take pushes again",
            Duration::from_secs(60),
            || (0..3).all(|r| acknowledged(r) > before[r]),
        );
        stop.store(true, Ordering::Relaxed);
        probe
    });
    let outcomes = outcomes.into_inner().expect("outcomes");
    assert_eq!(probe.0, 503, "a read while the database is down: {probe:?}");
    assert!(!probe.1.is_empty(), "503 carries Retry-After: {probe:?}");
    assert!(
        probe.2.contains("postgres") && probe.2.contains("unavailable"),
        "the error names what is down: {probe:?}"
    );
    assert!(
        outcomes.unexpected.is_empty(),
        "only 503 while the database is down: {:?}",
        outcomes.unexpected
    );
    assert!(!outcomes.unavailable.is_empty(), "pushes met the outage");
    for body in &outcomes.unavailable {
        assert!(body.contains("unavailable"), "a clear error: {body}");
    }
    for replica in 0..3 {
        let api = cluster.api(replica);
        for (_, tag, image) in &outcomes.acknowledged {
            assert_pulls_complete(&api, "cluster/pg", tag, image);
        }
        // A refused manifest left no tag behind, or (its answer lost after the commit) a whole one.
        for (tag, image) in &outcomes.refused {
            let head = api.head(&format!("/v2/cluster/pg/manifests/{tag}"));
            if head.status() != 404 {
                assert_pulls_complete(&api, "cluster/pg", tag, image);
            }
        }
        assert_every_tag_whole(&api, "cluster/pg");
    }
    cluster.assert_fsck_clean(3 * outcomes.acknowledged.len() as u64);
}

#[test]
fn s3_stopped_mid_upload() {
    let Some((postgres, garage)) = first_pass()
        .then(|| Postgres::shared().zip(Garage::private()))
        .flatten()
    else {
        return;
    };
    let cluster = Cluster::start(3, ClusterStorage::on(&postgres, &garage), "");
    let kept = TestImage::new("before the outage");
    cluster.api(0).push_image("cluster/s3", "kept", &kept);

    let image = image_with_big_layer(31, BIG_LAYER);
    let layer = &image.layers[0];
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let bases = cluster.bases();
    let location = cluster.api(0).start_upload("cluster/s3");
    let first = patch(&client, &bases[0], &location, 0, &layer[..CHUNK]).expect("PATCH");
    assert_eq!(first.status(), 202);

    garage.stop();
    // The next chunk, a whole blob and the image's other blobs fail cleanly, with 503.
    let second = patch(&client, &bases[1], &location, CHUNK, &layer[CHUNK..]).expect("PATCH");
    let second = (second.status().as_u16(), second.text().unwrap_or_default());
    assert_eq!(second.0, 503, "PATCH while the bucket is down: {second:?}");
    assert!(
        second.1.contains("s3") && second.1.contains("unavailable"),
        "{second:?}"
    );
    let digest = Digest::sha256_of(&image.config);
    let post = client
        .post(format!(
            "{}/v2/cluster/s3/blobs/uploads/?digest={digest}",
            bases[2]
        ))
        .body(image.config.clone())
        .send()
        .expect("POST");
    assert_eq!(post.status(), 503, "{}", post.text().unwrap_or_default());
    let manifest =
        cluster
            .api(2)
            .put_manifest("cluster/s3", "broken", media_type::OCI_MANIFEST, &image.manifest);
    assert!(
        [400, 503].contains(&manifest.status().as_u16()),
        "a manifest naming blobs that never arrived is refused: {} {}",
        manifest.status(),
        manifest.text().unwrap_or_default()
    );

    garage.start();
    wait_until(
        "the bucket to answer through the replicas",
        Duration::from_secs(60),
        || {
            let path = format!("/v2/cluster/s3/blobs/{}", Digest::sha256_of(&kept.layers[0]));
            cluster.api(1).head(&path).status() == 200
        },
    );
    assert_eq!(
        cluster.api(1).head("/v2/cluster/s3/manifests/broken").status(),
        404,
        "no manifest refers to the missing blobs"
    );
    // The session kept what was acknowledged: the client finishes it on another replica.
    let held = upload_offset(&client, &bases[2], &location).expect("the session survives the outage");
    assert!(held >= CHUNK, "{held} bytes held, {CHUNK} were acknowledged");
    let rest = patch(&client, &bases[2], &location, held, &layer[held..]).expect("PATCH");
    assert_eq!(rest.status(), 202, "{}", rest.text().unwrap_or_default());
    let put = client
        .put(format!(
            "{}{location}?digest={}",
            bases[2],
            Digest::sha256_of(layer)
        ))
        .send()
        .expect("PUT");
    assert_eq!(put.status(), 201, "{}", put.text().unwrap_or_default());
    let api = cluster.api(0);
    api.push_blob("cluster/s3", &image.config);
    api.push_blob("cluster/s3", &image.layers[1]);
    let pushed = api.put_manifest("cluster/s3", "after", media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(pushed.status(), 201);
    assert_pulls_complete(&cluster.api(1), "cluster/s3", "after", &image);
    assert_pulls_complete(&cluster.api(2), "cluster/s3", "kept", &kept);
    assert_every_tag_whole(&cluster.api(0), "cluster/s3");
    cluster.assert_fsck_clean(6);
}

#[test]
fn gc_in_a_loop_while_every_replica_takes_pushes() {
    let Some(storage) = first_pass().then(ClusterStorage::shared).flatten() else {
        return;
    };
    // Every replica also collects on its own schedule, as each pod of a deployment would.
    let cluster = Cluster::start(3, storage, "[gc]\ngrace_secs = 2\ninterval_secs = 1\n");
    let stop = Arc::new(AtomicBool::new(false));
    let (runs, pushed) = std::thread::scope(|scope| {
        let pushers: Vec<_> = cluster
            .bases()
            .into_iter()
            .enumerate()
            .map(|(worker, base)| {
                let stop = stop.clone();
                scope.spawn(move || http_pusher(base, worker, stop))
            })
            .collect();
        let mut runs = 0;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            cluster.gc();
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let pushed: Vec<_> = pushers.into_iter().map(|p| p.join().expect("pusher")).collect();
        (runs, pushed)
    });
    assert!(runs >= 2, "collections ran while pushes went on");
    let check = || {
        for (worker, (tagged, _)) in pushed.iter().enumerate() {
            // Each worker pushed to its own replica; read through the next one.
            let api = cluster.api((worker + 1) % 3);
            for (tag, image) in tagged {
                assert_pulls_complete(&api, &format!("load/w{worker}"), tag, image);
            }
        }
    };
    check();
    cluster.assert_fsck_clean(3);

    // Bytes of a deleted image leave the bucket.
    let doomed = image_with_big_layer(41, BIG_LAYER);
    cluster.api(0).push_image("cluster/doomed", "v1", &doomed);
    let stored = cluster.storage.prefix.objects();
    let layer_hex = Digest::sha256_of(&doomed.layers[0]).hex().to_owned();
    assert!(
        stored
            .iter()
            .any(|o| o.key.contains(&layer_hex) && o.size == BIG_LAYER as u64),
        "the layer is an object of its size in the bucket"
    );
    let digest = doomed.digest();
    assert_eq!(
        cluster
            .api(1)
            .delete(&format!("/v2/cluster/doomed/manifests/{digest}"))
            .status(),
        202
    );
    // Past the grace period (the client's pace, not a wait for the server).
    std::thread::sleep(Duration::from_secs(3));
    let report = cluster.gc();
    let after = cluster.storage.prefix.objects();
    assert!(
        !after.iter().any(|o| o.key.contains(&layer_hex)),
        "the deleted image's layer is gone from the bucket:\n{report}"
    );
    let before_bytes: u64 = stored.iter().map(|o| o.size).sum();
    let after_bytes: u64 = after.iter().map(|o| o.size).sum();
    assert!(
        before_bytes >= after_bytes + BIG_LAYER as u64,
        "the bucket shrank by the layer at least: {before_bytes} -> {after_bytes}\n{report}"
    );
    let path = format!("/v2/cluster/doomed/blobs/sha256:{layer_hex}");
    assert_eq!(cluster.api(2).head(&path).status(), 404, "{path}");
    check();
    cluster.assert_fsck_clean(3);
}
