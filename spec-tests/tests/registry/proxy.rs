//! The pull-through cache (`[[proxy]]`): an `rbuild serve` in front of an upstream — another
//! `rbuild serve` with htpasswd auth, or CNCF distribution 2.8.2 — pulled through by docker,
//! containerd (as a `hosts.toml` mirror) and the API directly.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rbuild_oci::{Digest, media_type};
use spec_tests::api::{Api, TestImage, error_code, header};
use spec_tests::distribution::Distribution;
use spec_tests::prometheus::Scrape;
use spec_tests::proxy::CountingProxy;
use spec_tests::registry::{RegistryProcess, ServeOptions, filesystem_only};
use spec_tests::tools::{Ctr, Docker, installed, run};
use spec_tests::wait::wait_until;

use crate::auth::{SERVICE, Secure, add_user, https_client};
use crate::gc::{build_image, docker_pull_and_check};

const USER: &str = "alice";
const PASSWORD: &str = "upstream-secret";

/// An upstream `rbuild serve` that wants Basic auth from `alice`, and an API client logged in.
fn authenticated_upstream() -> (RegistryProcess, Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    add_user(&htpasswd, USER, PASSWORD);
    let upstream = RegistryProcess::start_with_config(&format!(
        "[auth]\nmode = \"htpasswd\"\nhtpasswd = \"{}\"\n",
        htpasswd.display()
    ));
    let api = Api::new(&upstream).with_login(USER, PASSWORD);
    (upstream, api, dir)
}

/// A cache of the upstream at `url`, with more `[[proxy]]` keys in `extra`.
fn cache_of(url: &str, extra: &str) -> RegistryProcess {
    RegistryProcess::start_with_config(&format!("[[proxy]]\nurl = \"{url}\"\n{extra}\n"))
}

/// How many API requests (the `/v2/` ping aside) the upstream's access log shows for paths
/// containing `part`, once the log has caught up.
fn upstream_requests(upstream: &RegistryProcess, part: &str) -> usize {
    upstream_requests_with(upstream, &[part])
}

/// How many access lines of the upstream (the `/v2/` ping aside) contain every one of `parts`,
/// once the log has caught up.
fn upstream_requests_with(upstream: &RegistryProcess, parts: &[&str]) -> usize {
    let count = || {
        upstream
            .log()
            .lines()
            .filter(|l| {
                l.contains("rbuild::access")
                    && !l.contains("path=/v2/ ")
                    && parts.iter().all(|part| l.contains(part))
            })
            .count()
    };
    // Access lines are written when a response ends and read from a pipe: let them settle.
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Pulls `image` as `repo:reference` through `api` the way a client does: the manifest, then
/// every blob, each checked against its digest.
fn pull(api: &Api, repo: &str, reference: &str, image: &TestImage) {
    let manifest = api.get(&format!("/v2/{repo}/manifests/{reference}"));
    assert_eq!(manifest.status(), 200, "manifest {repo}:{reference}");
    assert_eq!(
        header(&manifest, "docker-content-digest"),
        image.digest().to_string()
    );
    assert_eq!(manifest.bytes().unwrap(), image.manifest);
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let response = api.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(response.status(), 200, "blob {digest}");
        assert_eq!(&response.bytes().unwrap()[..], &blob[..], "blob {digest}");
    }
}

/// The digest a tag has through `api`.
fn tag_digest(api: &Api, repo: &str, tag: &str) -> String {
    let response = api.head(&format!("/v2/{repo}/manifests/{tag}"));
    assert_eq!(response.status(), 200, "{repo}:{tag}");
    header(&response, "docker-content-digest")
}

/// A `hosts.toml` directory that makes containerd pull `image`'s registry through `cache` as
/// its mirror (what a Kubernetes node does), falling back to `server`.
fn containerd_mirror(image: &str, server: &str, cache: &RegistryProcess) -> tempfile::TempDir {
    let hosts = tempfile::tempdir().unwrap();
    let registry = image.split('/').next().unwrap();
    let host_dir = hosts.path().join(registry);
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"{server}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            cache.url("")
        ),
    )
    .unwrap();
    hosts
}

/// `ctr images pull` of `image` with the mirrors in `hosts`, then removes it again.
fn ctr_pull(ctr: &Ctr, hosts: &tempfile::TempDir, image: &str) {
    let hosts_dir = hosts.path().to_str().unwrap();
    run(ctr
        .cmd()
        .args(["images", "pull", "--hosts-dir", hosts_dir, image]));
    run(ctr.cmd().args(["images", "rm", image]));
}

/// Has `cache` fetch every blob of `repo:tag` it does not hold yet. A client skips the blobs it
/// holds — containerd shares the busybox layer other tests pulled — and may ask for one later,
/// once its own copy was collected with another test's image: only what the cache holds can be
/// expected to be answered without the upstream.
fn cache_every_blob(cache: &RegistryProcess, repo: &str, tag: &str) {
    let api = Api::new(cache);
    let manifest = api
        .request(reqwest::Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            format!("{}, {}", media_type::DOCKER_MANIFEST, media_type::OCI_MANIFEST),
        )
        .send()
        .expect("GET");
    assert_eq!(manifest.status(), 200, "manifest {repo}:{tag}");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes().unwrap()).unwrap();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    for descriptor in std::iter::once(&manifest["config"]).chain(&layers) {
        let digest = descriptor["digest"].as_str().unwrap();
        let blob = api.get(&format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(blob.status(), 200, "blob {digest}");
        blob.bytes().unwrap();
    }
}

/// Builds an image of busybox and a random layer no other test has as `pushed` (so docker and
/// containerd must fetch that layer when they pull it), pushes it with `push` (a docker
/// command logged in as it must be) and removes it locally; returns the sha256 hex of its `/blob`.
fn push_new_image(docker: &Docker, push: &mut Command, pushed: &str, seed: u64) -> String {
    let context = tempfile::tempdir().unwrap();
    let hex = build_image(docker, context.path(), pushed, seed);
    run(push.args(["push", pushed]));
    run(docker.cmd().args(["rmi", pushed]));
    hex
}

#[test]
fn docker_and_containerd_pull_through_an_authenticated_upstream() {
    let (Some(docker), Some(ctr)) = (Docker::get(), Ctr::get()) else {
        return;
    };
    let (mut upstream, _, _users) = authenticated_upstream();
    let login = tempfile::tempdir().unwrap();
    let docker_as_alice = || {
        let mut command = docker.cmd();
        command.arg("--config").arg(login.path());
        command
    };
    run(docker_as_alice().args(["login", "-u", USER, "-p", PASSWORD, &upstream.host()]));
    let pushed = format!("{}/team/busybox:1", upstream.host());
    let hex = push_new_image(&docker, &mut docker_as_alice(), &pushed, 40);

    // The cache logs in to the upstream itself; its clients need no credentials.
    let cache = cache_of(
        &upstream.url(""),
        &format!("username = \"{USER}\"\npassword = \"{PASSWORD}\""),
    );
    let through = format!("{}/team/busybox:1", cache.host());
    docker_pull_and_check(&docker, &through, &hex);
    assert!(
        upstream_requests(&upstream, "/v2/team/busybox/") > 0,
        "the first pull went upstream"
    );

    // containerd pulls the upstream's name with the cache as its mirror; the upstream wants
    // credentials containerd lacks, so only the mirror can answer.
    let hosts = containerd_mirror(&pushed, &upstream.url(""), &cache);
    ctr_pull(&ctr, &hosts, &pushed);
    cache_every_blob(&cache, "team/busybox", "1");
    let first = upstream_requests(&upstream, "/v2/team/busybox/");

    // Second pulls ask for nothing the first ones did not: the cache answers them all.
    docker_pull_and_check(&docker, &through, &hex);
    ctr_pull(&ctr, &hosts, &pushed);
    assert_eq!(
        upstream_requests(&upstream, "/v2/team/busybox/"),
        first,
        "second pulls sent no upstream request"
    );

    // Upstream gone: the cached tag still pulls, through both.
    upstream.kill();
    ctr_pull(&ctr, &hosts, &pushed);
    docker_pull_and_check(&docker, &through, &hex);
    run(docker.cmd().args(["rmi", &through]));
}

#[test]
fn docker_and_containerd_pull_through_a_distribution_upstream() {
    let (Some(docker), Some(ctr), Some(distribution)) = (Docker::get(), Ctr::get(), Distribution::start())
    else {
        return;
    };
    let pushed = format!("{}/team/busybox:1", distribution.host());
    let hex = push_new_image(&docker, &mut docker.cmd(), &pushed, 41);
    // The cache reaches distribution through a forwarder that counts what it is sent;
    // containerd's fallback `server` is distribution itself, so the cache's access log shows
    // whether containerd used the mirror.
    let forwarder = CountingProxy::start(distribution.host().parse().unwrap());
    let cache = cache_of(&format!("http://{}", forwarder.host()), "");
    let hosts = containerd_mirror(&pushed, &format!("http://{}", distribution.host()), &cache);

    ctr_pull(&ctr, &hosts, &pushed);
    assert!(
        upstream_requests(&cache, "path=/v2/team/busybox/manifests/1 ") > 0,
        "containerd asked its mirror"
    );
    assert!(
        upstream_requests(&cache, "method=GET path=/v2/team/busybox/blobs/") >= 2,
        "containerd fetched the config and the new layer from its mirror"
    );
    assert!(forwarder.take_received() > 0, "the first pull went upstream");
    let through = format!("{}/team/busybox:1", cache.host());
    docker_pull_and_check(&docker, &through, &hex);
    cache_every_blob(&cache, "team/busybox", "1");

    // Second pulls: no upstream request.
    forwarder.take_received();
    ctr_pull(&ctr, &hosts, &pushed);
    docker_pull_and_check(&docker, &through, &hex);
    assert_eq!(
        forwarder.take_received(),
        0,
        "second pulls sent no upstream request"
    );

    // Distribution gone: the cached tag still pulls, through both.
    drop(distribution);
    ctr_pull(&ctr, &hosts, &pushed);
    docker_pull_and_check(&docker, &through, &hex);
    run(docker.cmd().args(["rmi", &through]));
}

#[test]
fn password_env_names_the_password_the_cache_logs_in_with() {
    let (upstream, upstream_api, _users) = authenticated_upstream();
    let image = TestImage::new("proxy-password-env");
    upstream_api.push_image("team/app", "1", &image);
    let cache_with = |password: &str| {
        RegistryProcess::start_with(ServeOptions {
            config: format!(
                "[[proxy]]\nurl = \"{}\"\nusername = \"{USER}\"\npassword_env = \"UPSTREAM_PASSWORD\"\n",
                upstream.url("")
            ),
            env: vec![("UPSTREAM_PASSWORD".to_owned(), password.to_owned())],
            ..ServeOptions::default()
        })
    };
    pull(&Api::new(&cache_with(PASSWORD)), "team/app", "1", &image);
    // The variable, not anything else, is what the upstream sees: a wrong one is refused.
    let refused = Api::new(&cache_with("not-the-password")).get("/v2/team/app/manifests/1");
    assert_eq!(refused.status(), 502);
    let body = refused.text().unwrap();
    assert!(body.contains("rejected the credentials"), "{body}");
    assert!(
        body.contains("[[proxy]] table") && body.contains("password_env") && !body.contains("rbuild login"),
        "the answer says where the credentials are set: {body}"
    );
}

#[test]
fn distribution_upstream_revalidates_tags_after_their_ttl_and_serves_stale_when_down() {
    let Some(distribution) = Distribution::start() else {
        return;
    };
    let upstream = Api::at(&format!("http://{}", distribution.host())).with_upload_sessions();
    let forwarder = CountingProxy::start(distribution.host().parse().unwrap());
    let (a, b) = (TestImage::new("proxy-ttl-a"), TestImage::new("proxy-ttl-b"));
    upstream.push_image("lib/app", "1", &a);
    let ttl = Duration::from_secs(4);
    let cache = cache_of(
        &format!("http://{}", forwarder.host()),
        &format!("prefix = \"dist\"\ntag_ttl_secs = {}", ttl.as_secs()),
    );
    let api = Api::new(&cache);

    let fetched = Instant::now();
    pull(&api, "dist/lib/app", "1", &a);
    assert!(forwarder.take_received() > 0, "the first pull went upstream");
    pull(&api, "dist/lib/app", "1", &a);
    assert_eq!(
        forwarder.take_received(),
        0,
        "the second pull sent no upstream request"
    );

    // The tag moves upstream: the cache keeps its answer for the TTL, then sees the move.
    upstream.push_image("lib/app", "1", &b);
    forwarder.take_received();
    let digest = tag_digest(&api, "dist/lib/app", "1");
    // (On a machine so loaded that the TTL ran out already, only the move can be checked.)
    if fetched.elapsed() < ttl {
        assert_eq!(digest, a.digest().to_string());
        assert_eq!(
            forwarder.take_received(),
            0,
            "within the TTL the tag is not checked"
        );
    }
    std::thread::sleep(ttl.saturating_sub(fetched.elapsed()) + Duration::from_millis(500));
    pull(&api, "dist/lib/app", "1", &b);

    // A client that cannot read an index gets its linux/amd64 manifest, fetched on demand.
    let c = TestImage::new("proxy-ttl-c");
    upstream.push_image("lib/app", &c.digest().to_string(), &c);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": c.digest().to_string(),
            "size": c.manifest.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    });
    let response = upstream.put_manifest(
        "lib/app",
        "multi",
        media_type::OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    assert_eq!(response.status(), 201);
    let response = api
        .request(reqwest::Method::GET, "/v2/dist/lib/app/manifests/multi")
        .header("accept", media_type::OCI_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "docker-content-digest"), c.digest().to_string());

    // Upstream gone: past the TTL the cached tag is served anyway, and digests never ask.
    drop(distribution);
    std::thread::sleep(ttl + Duration::from_millis(500));
    pull(&api, "dist/lib/app", "1", &b);
    pull(&api, "dist/lib/app", &a.digest().to_string(), &a);
    wait_until("the stale-if-error warning", Duration::from_secs(5), || {
        cache
            .log()
            .contains("serving dist/lib/app:1 from the cache unchecked")
    });
    // /metrics tells the same story: hits, misses, bytes fetched, the stale answer, the errors.
    let scrape = Scrape::get(&cache.url("/metrics"));
    for family in [
        "hits",
        "misses",
        "fetched_bytes",
        "stale_served",
        "upstream_errors",
    ] {
        let series = format!("rbuild_registry_proxy_{family}_total");
        assert!(
            scrape.value(&series) > 0.0,
            "{series} did not move:\n{}",
            scrape.text
        );
    }
    // What was never cached fails with the upstream's failure named.
    let missing = api.get("/v2/dist/lib/app/manifests/2");
    assert_eq!(missing.status(), 502);
    assert!(missing.text().unwrap().contains(&forwarder.host()));

    // A proxied prefix takes no pushes; other repositories do.
    let refused = api
        .request(reqwest::Method::POST, "/v2/dist/lib/app/blobs/uploads/")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(error_code(refused), "UNSUPPORTED");
    api.start_upload("mine/app");
}

#[test]
fn proxy_metrics_move_by_exactly_what_a_scripted_workload_did() {
    let mut upstream = RegistryProcess::start();
    let image = TestImage::new("proxy-metrics");
    Api::new(&upstream).push_image("team/app", "1", &image);
    let cache = cache_of(&upstream.url(""), "tag_ttl_secs = 1");
    let api = Api::new(&cache);
    let families = [
        "hits",
        "misses",
        "upstream_errors",
        "fetched_bytes",
        "stale_served",
    ]
    .map(|family| format!("rbuild_registry_proxy_{family}_total"));
    let before = Scrape::get(&cache.url("/metrics"));

    // Cold: the manifest and three blobs are misses, every byte of them fetched.
    pull(&api, "team/app", "1", &image);
    // Warm, by tag and by digest: eight hits (a tag whose TTL ran out meanwhile is confirmed
    // by a HEAD, which is a hit as well).
    pull(&api, "team/app", "1", &image);
    pull(&api, "team/app", &image.digest().to_string(), &image);
    // What the upstream does not have is neither a miss nor an upstream error.
    assert_eq!(api.get("/v2/team/app/manifests/nope").status(), 404);

    // Upstream gone, the tag past its TTL: served stale (one error, one stale answer) with
    // three blob hits; what was never cached fails, one upstream error each.
    std::thread::sleep(Duration::from_millis(1100));
    upstream.kill();
    pull(&api, "team/app", "1", &image);
    assert_eq!(api.get("/v2/team/app/manifests/2").status(), 502);
    let never = Digest::sha256_of(b"never cached");
    assert_eq!(api.get(&format!("/v2/team/app/blobs/{never}")).status(), 502);

    let blob_bytes: usize = std::iter::once(&image.config)
        .chain(&image.layers)
        .map(Vec::len)
        .sum();
    let fetched = (image.manifest.len() + blob_bytes) as f64;
    let expected = [11.0, 4.0, 3.0, fetched, 1.0];
    let after = Scrape::get(&cache.url("/metrics"));
    let moved = after.deltas(&before, &families);
    let wanted: Vec<(String, f64)> = families.iter().cloned().zip(expected).collect();
    assert_eq!(moved, wanted, "\n{}", after.text);
}

/// The SHA-256 of everything `reader` yields, computed by `openssl` (SHA-NI: a debug build's
/// hashing would take most of the test's time).
fn openssl_sha256(reader: &mut impl Read) -> Digest {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    std::io::copy(reader, &mut child.stdin.take().unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", hex.split_whitespace().next().unwrap_or_default())
        .parse()
        .unwrap()
}

#[test]
fn ten_concurrent_pulls_of_a_100_mb_blob_through_three_repositories_download_it_once() {
    if installed("openssl").is_none() {
        return;
    }
    let (upstream, upstream_api, _users) = authenticated_upstream();
    let mut blob = vec![0u8; 100 * 1024 * 1024];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for chunk in blob.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let digest = upstream_api.push_blob("big/blob", &blob);
    drop(blob);
    // The upstream has it in big/blob and big/other, not in big/denied.
    let mount = upstream_api
        .request(
            reqwest::Method::POST,
            &format!("/v2/big/other/blobs/uploads/?mount={digest}&from=big/blob"),
        )
        .send()
        .unwrap();
    assert_eq!(mount.status(), 201);
    let cache = cache_of(
        &upstream.url(""),
        &format!("username = \"{USER}\"\npassword = \"{PASSWORD}\""),
    );
    let pulls: Vec<_> = ["big/blob", "big/other", "big/denied", "big/blob", "big/other"]
        .repeat(2)
        .into_iter()
        .map(|repo| {
            let url = cache.url(&format!("/v2/{repo}/blobs/{digest}"));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(None)
                    .build()
                    .unwrap();
                let mut response = client.get(&url).send().unwrap();
                let status = response.status().as_u16();
                (
                    repo,
                    status,
                    (status == 200).then(|| openssl_sha256(&mut response)),
                )
            })
        })
        .collect();
    for pull in pulls {
        match pull.join().unwrap() {
            ("big/denied", status, _) => assert_eq!(status, 404, "big/denied upstream lacks it"),
            (repo, status, got) => assert_eq!((status, got), (200, Some(digest.clone())), "{repo}"),
        }
    }
    let blob_path = format!("/blobs/{digest} ");
    assert_eq!(
        upstream_requests_with(&upstream, &["method=GET", &blob_path, "status=200"]),
        1,
        "one upstream download for ten pulls through three repositories"
    );
    // The repository that did not download it had the upstream confirm it has the blob; the
    // one whose upstream does not was given nothing.
    assert_eq!(
        upstream_requests_with(&upstream, &["method=HEAD", &blob_path, "status=200"]),
        1
    );
    // Once the blob is here, a request through big/denied asks the upstream one HEAD, and no
    // GET after the upstream said it lacks the blob.
    let denied = format!("/v2/big/denied/blobs/{digest} ");
    let refusals = || upstream_requests_with(&upstream, &[&denied, "status=404"]);
    let before = refusals();
    assert!(
        before <= 2,
        "at most one upstream request for each of its two pulls"
    );
    assert_eq!(
        Api::new(&cache)
            .head(&format!("/v2/big/denied/blobs/{digest}"))
            .status(),
        404
    );
    assert_eq!(refusals(), before + 1, "one HEAD upstream, no GET");
    let (ok, report) = cache.fsck();
    assert!(ok, "{report}");
}

#[test]
fn a_truncated_upstream_answer_is_never_stored() {
    let upstream = RegistryProcess::start();
    let blob: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = Api::new(&upstream).push_blob("cut/blob", &blob);
    let forwarder = CountingProxy::start(upstream.addr());
    forwarder.cut_answers_after(Some(1024 * 1024));
    let cache = cache_of(&format!("http://{}", forwarder.host()), "");
    let api = Api::new(&cache);
    let path = format!("/v2/cut/blob/blobs/{digest}");

    let response = api.get(&path);
    // Either the connection is aborted mid-body (what happens) or what arrives is not whole.
    if let Ok(body) = response.bytes() {
        assert_ne!(&body[..], &blob[..], "a cut answer cannot arrive whole");
    }
    std::thread::sleep(Duration::from_millis(500));
    let stored: Vec<String> = cache
        .stored()
        .into_keys()
        .filter(|p| p.contains(digest.hex()))
        .collect();
    assert!(stored.is_empty(), "the cut blob was stored: {stored:?}");

    // The network heals: the next pull fetches it whole, and it is stored.
    forwarder.cut_answers_after(None);
    let response = api.get(&path);
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().unwrap()[..], &blob[..]);
    wait_until("the blob to be stored", Duration::from_secs(5), || {
        cache.stored().keys().any(|p| p.ends_with(digest.hex()))
    });

    // The same blob in another upstream repository: a HEAD confirms it, nothing is downloaded.
    Api::new(&upstream).push_blob("cut/other", &blob);
    let response = api.get(&format!("/v2/cut/other/blobs/{digest}"));
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().unwrap()[..], &blob[..]);
    let other = format!("path=/v2/cut/other/blobs/{digest}");
    assert_eq!(upstream_requests(&upstream, &format!("method=HEAD {other}")), 1);
    assert_eq!(upstream_requests(&upstream, &format!("method=GET {other}")), 0);
    let (ok, report) = cache.fsck();
    assert!(ok, "{report}");
}

#[test]
fn a_fetched_manifest_is_answered_while_stored_and_fetched_again_when_storing_failed() {
    if !filesystem_only("blocks a path of the filesystem blob store with a file") {
        return;
    }
    let upstream = RegistryProcess::start();
    let image = TestImage::new("proxy-failed-store");
    Api::new(&upstream).push_image("team/app", "1", &image);
    let cache = cache_of(&upstream.url(""), "");
    // A file where the manifest's blob directory belongs: storing the manifest fails (and
    // nothing else, since no blob of the image shares the directory).
    let digest = image.digest();
    let fan_out = &digest.hex()[..2];
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        assert!(!Digest::sha256_of(blob).hex().starts_with(fan_out));
    }
    let sha256 = cache.root().join("blobs/sha256");
    std::fs::create_dir_all(&sha256).unwrap();
    std::fs::write(sha256.join(fan_out), b"").unwrap();

    // The client gets the upstream's verified bytes all the same; the failure is logged and
    // leaves nothing stored under the digest.
    let api = Api::new(&cache);
    pull(&api, "team/app", "1", &image);
    wait_until("the failed store to be logged", Duration::from_secs(5), || {
        cache.log().contains("storing it failed")
    });
    assert!(!holds(&cache, &image.manifest));

    // The next pull fetches it from the upstream again, and this time it is stored.
    std::fs::remove_file(sha256.join(fan_out)).unwrap();
    pull(&api, "team/app", "1", &image);
    let manifest_gets = "method=GET path=/v2/team/app/manifests/1 ";
    assert_eq!(upstream_requests(&upstream, manifest_gets), 2);
    wait_until("the manifest to be stored", Duration::from_secs(5), || {
        holds(&cache, &image.manifest)
    });
    pull(&api, "team/app", "1", &image);
    assert_eq!(upstream_requests(&upstream, manifest_gets), 2);
    let (ok, report) = cache.fsck();
    assert!(ok, "{report}");
}

#[test]
fn a_token_upstream_over_tls_is_read_with_its_ca() {
    let Some(secure) = Secure::start("token", "proxy-token", &[]) else {
        return;
    };
    let http = https_client(&secure.ca.cert(), None);
    let token_url = secure.url(&format!(
        "/token?service={SERVICE}&scope=repository:team/app:pull,push"
    ));
    let reply: serde_json::Value = http
        .get(&token_url)
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let bearer = format!("Bearer {}", reply["token"].as_str().unwrap());
    let image = TestImage::new("proxy-token");
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = Digest::sha256_of(blob);
        let response = http
            .post(secure.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}")))
            .header("authorization", &bearer)
            .body(blob.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = http
        .put(secure.url("/v2/team/app/manifests/1"))
        .header("authorization", &bearer)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.manifest.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);

    // The cache gets its own tokens from the upstream's token service, over TLS it trusts
    // through `ca` only.
    let login = "username = \"alice\"\npassword = \"alice-pw\"";
    let upstream = format!("https://{}", secure.host());
    let cache = cache_of(
        &upstream,
        &format!("{login}\nca = \"{}\"", secure.ca.cert().display()),
    );
    pull(&Api::new(&cache), "team/app", "1", &image);
    let untrusting = cache_of(&upstream, login);
    let refused = Api::new(&untrusting).get("/v2/team/app/manifests/1");
    assert_eq!(refused.status(), 502);
    assert!(refused.text().unwrap().contains("certificate"));
}

/// Whether anything the cache stored (blob, link, manifest) is named by `blob`'s digest.
fn holds(cache: &RegistryProcess, blob: &[u8]) -> bool {
    let digest = Digest::sha256_of(blob);
    cache.stored().keys().any(|p| p.contains(digest.hex()))
}

#[test]
fn cached_content_obeys_retention_and_gc_and_is_fetched_again() {
    let upstream = RegistryProcess::start();
    let upstream_api = Api::new(&upstream);
    let image = |seed: &str| {
        let own = |what: &str| format!("{what} of {seed}").into_bytes();
        TestImage::from_parts(
            own("config"),
            vec![b"the base layer both share".to_vec(), own("layer")],
            serde_json::json!({}),
        )
    };
    let (old, new) = (image("proxy-gc-old"), image("proxy-gc-new"));
    upstream_api.push_image("team/app", "1", &old);
    upstream_api.push_image("team/app", "2", &new);
    // A cache bounded the way a user bounds one: retention keeps the last tag cached per
    // repository, and untagged manifests go at once.
    let cache = cache_of(
        &upstream.url(""),
        "\n[gc]\ngrace_secs = 0\n\n[[gc.retention]]\nrepositories = \"**\"\nkeep_last_tags = 1\n",
    );
    let api = Api::new(&cache);
    pull(&api, "team/app", "1", &old);
    std::thread::sleep(Duration::from_millis(50));
    pull(&api, "team/app", "2", &new);
    // (What a pull fetched is stored just after the client has it.)
    wait_until("the pulled images to be stored", Duration::from_secs(5), || {
        [&old.manifest, &old.layers[1], &new.manifest, &new.layers[1]]
            .iter()
            .all(|bytes| holds(&cache, bytes))
    });
    let fetches = |reference: &str| {
        upstream_requests(
            &upstream,
            &format!("method=GET path=/v2/team/app/manifests/{reference} "),
        )
    };
    let old_blob_fetches = || {
        upstream_requests(
            &upstream,
            &format!(
                "method=GET path=/v2/team/app/blobs/{}",
                Digest::sha256_of(&old.layers[1])
            ),
        )
    };
    assert_eq!((fetches("1"), old_blob_fetches()), (1, 1));

    // Retention lets tag 1 go; the collection takes its manifest and the blobs only it used.
    let collected = cache.gc(&[]);
    assert!(collected.contains("removed tag team/app:1"), "{collected}");
    assert!(
        collected.contains(&format!("removed manifest team/app@{}", old.digest())),
        "{collected}"
    );
    for blob in [&old.config, &old.layers[1]] {
        assert!(
            !holds(&cache, blob),
            "a blob only tag 1 used is still stored:\n{collected}"
        );
    }
    for blob in std::iter::once(&new.config).chain(&new.layers) {
        assert!(holds(&cache, blob), "the kept tag lost a blob:\n{collected}");
    }
    let (ok, report) = cache.fsck();
    assert!(ok, "{report}");
    assert_eq!(
        api.head(&format!(
            "/v2/team/app/blobs/{}",
            Digest::sha256_of(&new.layers[1])
        ))
        .status(),
        200
    );

    // The next pull of tag 1 goes to the upstream again and gets all of it.
    pull(&api, "team/app", "1", &old);
    assert_eq!((fetches("1"), old_blob_fetches()), (2, 2));

    // A tag deleted by hand is collected the same way, and fetched again after.
    assert_eq!(api.delete("/v2/team/app/manifests/2").status(), 202);
    let collected = cache.gc(&[]);
    assert!(
        collected.contains(&format!("removed manifest team/app@{}", new.digest())),
        "{collected}"
    );
    assert!(!holds(&cache, &new.layers[1]), "{collected}");
    let (ok, report) = cache.fsck();
    assert!(ok, "{report}");
    pull(&api, "team/app", "2", &new);
    assert_eq!(fetches("2"), 2);
}
