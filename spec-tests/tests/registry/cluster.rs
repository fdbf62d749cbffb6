//! Several `rbuild serve` replicas on loopback sharing one bucket (Garage) and one database
//! (PostgreSQL): any replica answers any request, and the faults a cluster meets — a replica
//! killed, the database or the object store stopped — lose nothing acknowledged, leave nothing
//! half-written, and heal without restarting a replica.
//!
//! Each test has a database and a bucket prefix of its own on the engines `scripts/test`
//! starts (`RBUILD_TEST_POSTGRES_URL`, `RBUILD_TEST_S3_*`); the fault tests start a private
//! PostgreSQL or Garage through `scripts/engines.sh`, since they stop it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use reqwest::blocking::{Client, Response};
use spec_tests::api::{Api, JsonBody, TestImage, header};
use spec_tests::registry::{RegistryProcess, rbuild_bin};
use spec_tests::tools::{Ctr, Docker, require, run};
use spec_tests::wait::wait_until;

use crate::gc::{figure, http_pusher, noise};
use crate::interop::push_busybox;

/// A layer big enough to be an S3 multipart upload of two parts (parts are at least 5 MiB).
const BIG_LAYER: usize = 6 * 1024 * 1024 + 4321;

/// The chunk size of chunked uploads: smaller than an S3 part, so a replica has to keep an
/// acknowledged chunk somewhere shared before it can send it as a part.
const CHUNK: usize = 2 * 1024 * 1024;

/// A name no other test (or run) uses, for database names and bucket prefixes.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An environment variable the engines contract names, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `scripts/engines.sh` in this checkout: the one way the suite starts and stops engines.
fn engines_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/engines.sh")
}

/// Runs `engines_<function> DIR` from `scripts/engines.sh`, failing the test unless it
/// succeeds; returns what it printed.
fn engines(function: &str, dir: &Path) -> String {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("source \"$1\" && engines_{function} \"$2\""))
        .arg("engines")
        .arg(engines_script())
        .arg(dir);
    if let Some(garage) = env("RBUILD_TEST_GARAGE") {
        command.env("RBUILD_GARAGE", garage);
    }
    run(&mut command).trim().to_owned()
}

/// A bucket (and a key prefix of the test's own in it) on an S3 server.
#[derive(Clone, Debug)]
struct Bucket {
    endpoint: String,
    region: String,
    bucket: String,
    key_id: String,
    secret: String,
    prefix: String,
}

impl Bucket {
    /// The bucket `scripts/test` made, under a fresh prefix.
    fn shared() -> Option<Bucket> {
        Some(Bucket {
            endpoint: env("RBUILD_TEST_S3_ENDPOINT")?,
            region: env("RBUILD_TEST_S3_REGION").unwrap_or_else(|| "garage".to_owned()),
            bucket: env("RBUILD_TEST_S3_BUCKET")?,
            key_id: env("RBUILD_TEST_S3_ACCESS_KEY_ID")?,
            secret: env("RBUILD_TEST_S3_SECRET_ACCESS_KEY")?,
            prefix: format!("{}/", unique("cluster")),
        })
    }

    /// `[storage]` for the replicas.
    fn toml(&self) -> String {
        format!(
            "[storage]\ndriver = \"s3\"\n[storage.s3]\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{}\"\n\
             prefix = \"{}\"\npath_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            self.endpoint, self.region, self.bucket, self.prefix, self.key_id, self.secret
        )
    }

    /// Every object under the prefix, with its size, through the S3 API (ListObjectsV2,
    /// signed by curl), so the test sees what the bucket holds and not what rbuild reports.
    fn objects(&self) -> BTreeMap<String, u64> {
        let mut objects = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut command = Command::new("curl");
            command
                .args(["-fsS", "--get", "--aws-sigv4"])
                .arg(format!("aws:amz:{}:s3", self.region))
                .arg("--user")
                .arg(format!("{}:{}", self.key_id, self.secret))
                .args(["--data-urlencode", "list-type=2"])
                .arg("--data-urlencode")
                .arg(format!("prefix={}", self.prefix));
            if let Some(token) = &token {
                command
                    .arg("--data-urlencode")
                    .arg(format!("continuation-token={token}"));
            }
            let listing = run(command.arg(format!("{}/{}", self.endpoint, self.bucket)));
            for contents in listing.split("<Contents>").skip(1) {
                let key = xml_field(contents, "Key").unwrap_or_default();
                let size = xml_field(contents, "Size").and_then(|s| s.parse().ok());
                objects.insert(key, size.unwrap_or(0));
            }
            token = xml_field(&listing, "NextContinuationToken");
            if token.is_none() {
                return objects;
            }
        }
    }
}

/// The text of the first `<name>` element in `xml`.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].replace("&amp;", "&"))
}

/// A database of the test's own on a PostgreSQL server; dropped with the test.
struct Database {
    server: String,
    name: String,
}

impl Database {
    /// Creates a fresh database on the server at `server` (a URL naming its `postgres`
    /// database, as `RBUILD_TEST_POSTGRES_URL` does).
    fn create(server: &str) -> Database {
        let database = Database {
            server: server.to_owned(),
            name: unique("t_cluster"),
        };
        database.sql(&format!("CREATE DATABASE {}", database.name));
        database
    }

    /// The URL the replicas connect to.
    fn url(&self) -> String {
        let base = self
            .server
            .rsplit_once('/')
            .map_or(&*self.server, |(base, _)| base);
        format!("{base}/{}", self.name)
    }

    /// Runs one statement on the server's `postgres` database with `psql`.
    fn sql(&self, statement: &str) -> String {
        let psql = env("RBUILD_TEST_PG_BIN")
            .map_or_else(|| PathBuf::from("psql"), |bin| Path::new(&bin).join("psql"));
        run(Command::new(psql)
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-d"])
            .arg(&self.server)
            .arg("-c")
            .arg(statement))
    }

    /// `[metadata]` for the replicas.
    fn toml(&self) -> String {
        format!(
            "[metadata]\ndriver = \"postgres\"\n[metadata.postgres]\nurl = \"{}\"\n",
            self.url()
        )
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let psql = env("RBUILD_TEST_PG_BIN")
            .map_or_else(|| PathBuf::from("psql"), |bin| Path::new(&bin).join("psql"));
        // Best effort: a private server may already be gone with its directory.
        let _ = Command::new(psql)
            .args(["-qAt", "-d"])
            .arg(&self.server)
            .arg("-c")
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

/// Which engine a fault test runs privately, to stop and start it.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Postgres,
    Garage,
}

/// A PostgreSQL server or a Garage node of the test's own, started through
/// `scripts/engines.sh` in a temporary directory; stopped (by PID) when dropped.
struct PrivateEngine {
    engine: Engine,
    dir: tempfile::TempDir,
}

impl PrivateEngine {
    /// Starts `engine` in a new directory.
    fn start(engine: Engine) -> PrivateEngine {
        let dir = tempfile::tempdir().expect("temp dir");
        // The postgres user must reach the directory.
        let searchable = std::os::unix::fs::PermissionsExt::from_mode(0o711);
        std::fs::set_permissions(dir.path(), searchable).expect("chmod the engine directory");
        let private = PrivateEngine { engine, dir };
        match engine {
            Engine::Postgres => {
                engines("pg_init", private.dir.path());
                engines("pg_start", private.dir.path());
            }
            Engine::Garage => {
                engines("garage_init", private.dir.path());
                engines("garage_start", private.dir.path());
                let mut command = Command::new("bash");
                command
                    .arg("-c")
                    .arg("source \"$1\" && engines_garage_setup \"$2\" registry")
                    .arg("engines")
                    .arg(engines_script())
                    .arg(private.dir.path());
                if let Some(garage) = env("RBUILD_TEST_GARAGE") {
                    command.env("RBUILD_GARAGE", garage);
                }
                run(&mut command);
            }
        }
        private
    }

    /// Stops the engine (PostgreSQL's fast shutdown, Garage's SIGTERM) and waits for it.
    fn stop(&self) {
        match self.engine {
            Engine::Postgres => engines("pg_stop", self.dir.path()),
            Engine::Garage => engines("garage_stop", self.dir.path()),
        };
    }

    /// Starts the stopped engine again, on the same port with the same data.
    fn restart(&self) {
        match self.engine {
            Engine::Postgres => engines("pg_start", self.dir.path()),
            Engine::Garage => engines("garage_start", self.dir.path()),
        };
    }

    /// The server's URL (PostgreSQL).
    fn postgres_url(&self) -> String {
        engines("pg_url", self.dir.path())
    }

    /// The node's bucket (Garage), under a fresh prefix.
    fn bucket(&self) -> Bucket {
        let file = |name: &str| {
            std::fs::read_to_string(self.dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name} of the private Garage: {e}"))
                .trim()
                .to_owned()
        };
        Bucket {
            endpoint: format!("http://127.0.0.1:{}", file("s3_port")),
            region: "garage".to_owned(),
            bucket: "registry".to_owned(),
            key_id: file("key_id"),
            secret: file("secret_key"),
            prefix: format!("{}/", unique("cluster")),
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the shared engines are there; in CI their absence fails the test. The second
/// pass of the registry tests on S3 + PostgreSQL (`RBUILD_TEST_REGISTRY_BACKEND=cluster`)
/// skips these: they choose their backends themselves and ran in the first pass.
fn shared_engines() -> Option<(Bucket, String)> {
    if env("RBUILD_TEST_REGISTRY_BACKEND").is_some_and(|b| b == "cluster") {
        eprintln!("SKIPPED: the cluster tests ran in the first pass, on the same engines");
        return None;
    }
    let bucket = Bucket::shared();
    let postgres = env("RBUILD_TEST_POSTGRES_URL");
    let hint = "scripts/test starts them (scripts/engines.sh) and sets RBUILD_TEST_POSTGRES_URL and RBUILD_TEST_S3_*";
    let found = bucket.zip(postgres);
    if require("PostgreSQL and Garage", found.is_some(), hint) {
        found
    } else {
        None
    }
}

/// Whether private engines can be started: the same contract, plus the binaries.
fn private_engines_possible() -> bool {
    let garage = env("RBUILD_TEST_GARAGE").is_some_and(|g| Path::new(&g).is_file());
    let postgres = env("RBUILD_TEST_PG_BIN").is_some_and(|b| Path::new(&b).join("initdb").is_file());
    let hint = "scripts/test sets RBUILD_TEST_GARAGE and RBUILD_TEST_PG_BIN";
    require("Garage and PostgreSQL binaries", garage && postgres, hint)
}

/// Replicas of one registry: the same bucket, the same database, each its own process.
struct Cluster {
    replicas: Vec<RegistryProcess>,
    bucket: Bucket,
    config: PathBuf,
    _database: Database,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `count` replicas on `bucket` and a new database on the PostgreSQL server at
    /// `postgres`; `extra` is more configuration (`[gc]`).
    fn start(count: usize, bucket: Bucket, postgres: &str, extra: &str) -> Cluster {
        let database = Database::create(postgres);
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root for the maintenance commands");
        let toml = format!("{}{}{extra}", bucket.toml(), database.toml());
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("root = \"{}\"\n{toml}", root.display())).expect("write config");
        let replicas = (0..count)
            .map(|_| RegistryProcess::start_with_config(&toml))
            .collect();
        Cluster {
            replicas,
            bucket,
            config,
            _database: database,
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
    let (Some(docker), Some(ctr), Some((bucket, postgres))) = (Docker::get(), Ctr::get(), shared_engines())
    else {
        return;
    };
    let cluster = Cluster::start(3, bucket, &postgres, "");
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
    let Some((bucket, postgres)) = shared_engines() else {
        return;
    };
    let cluster = Cluster::start(3, bucket, &postgres, "");
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
    let Some((bucket, postgres)) = shared_engines() else {
        return;
    };
    let mut cluster = Cluster::start(3, bucket, &postgres, "");
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
    let Some((bucket, _)) = shared_engines() else {
        return;
    };
    if !private_engines_possible() {
        return;
    }
    let postgres = PrivateEngine::start(Engine::Postgres);
    let cluster = Cluster::start(3, bucket, &postgres.postgres_url(), "");
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
        postgres.restart();
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
    let Some((_, postgres)) = shared_engines() else {
        return;
    };
    if !private_engines_possible() {
        return;
    }
    let garage = PrivateEngine::start(Engine::Garage);
    let cluster = Cluster::start(3, garage.bucket(), &postgres, "");
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

    garage.restart();
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
    let Some((bucket, postgres)) = shared_engines() else {
        return;
    };
    // Every replica also collects on its own schedule, as each pod of a deployment would.
    let cluster = Cluster::start(3, bucket, &postgres, "[gc]\ngrace_secs = 2\ninterval_secs = 1\n");
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
    let stored = cluster.bucket.objects();
    let layer_hex = Digest::sha256_of(&doomed.layers[0]).hex().to_owned();
    assert!(
        stored
            .iter()
            .any(|(key, size)| key.contains(&layer_hex) && *size == BIG_LAYER as u64),
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
    let after = cluster.bucket.objects();
    assert!(
        !after.keys().any(|key| key.contains(&layer_hex)),
        "the deleted image's layer is gone from the bucket:\n{report}"
    );
    let before_bytes: u64 = stored.values().sum();
    let after_bytes: u64 = after.values().sum();
    assert!(
        before_bytes >= after_bytes + BIG_LAYER as u64,
        "the bucket shrank by the layer at least: {before_bytes} -> {after_bytes}\n{report}"
    );
    let path = format!("/v2/cluster/doomed/blobs/sha256:{layer_hex}");
    assert_eq!(cluster.api(2).head(&path).status(), 404, "{path}");
    check();
    cluster.assert_fsck_clean(3);
}
