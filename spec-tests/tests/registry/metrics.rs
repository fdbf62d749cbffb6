//! `GET /metrics` after real work, read as operators read it: exact counter movements, the
//! `promtool` linter, and a real Prometheus scraping `rbuild serve`; and request ids that tie
//! what a client saw to the server's log.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use spec_tests::api::{Api, JsonBody, TestImage, header};
use spec_tests::prometheus::{Prometheus, Scrape, free_port, promtool};
use spec_tests::registry::{Backend, RegistryProcess, filesystem_only};
use spec_tests::tools::{Docker, run};
use spec_tests::wait::wait_until;

use crate::auth::add_user;
use crate::interop::push_busybox;

/// A series of one of the registry's families, labels as the registry orders them.
fn series(family: &str, labels: &str) -> String {
    format!("rbuild_registry_{family}{{{labels}}}")
}

fn requests(route: &str, method: &str, status: u16) -> String {
    series(
        "http_requests_total",
        &format!(r#"route="{route}",method="{method}",status="{status}""#),
    )
}

fn storage(operation: &str) -> String {
    series(
        "storage_operations_total",
        &format!(
            r#"backend="{}",store="blobs",operation="{operation}""#,
            Backend::of_run().blob_store()
        ),
    )
}

/// Scrapes until every series has moved by what `expected` says since `before` (a request is
/// counted once its response body is done, a moment after the client has it), then shows the
/// movements side by side if they never match.
fn assert_moved(scrape: impl Fn() -> Scrape, before: &Scrape, expected: &[(String, f64)]) -> Scrape {
    let names: Vec<String> = expected.iter().map(|(s, _)| s.clone()).collect();
    let mut after = scrape();
    let settled = (0..250).any(|_| {
        after = scrape();
        let matched = after.deltas(before, &names) == expected;
        if !matched {
            std::thread::sleep(Duration::from_millis(20));
        }
        matched
    });
    assert!(
        settled,
        "counters moved by {:#?}, expected {expected:#?}",
        after.deltas(before, &names)
    );
    after
}

#[test]
fn a_workload_moves_the_counters_by_exactly_what_it_did() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let url = registry.url("/metrics");
    let before = Scrape::get(&url);

    let image = TestImage::new("metrics");
    api.push_image("team/app", "v1", &image);
    for _ in 0..3 {
        let pulled = api.get("/v2/team/app/manifests/v1");
        assert_eq!(pulled.status(), 200);
        assert!(!header(&pulled, "x-request-id").is_empty());
        // Read whole: a client that hangs up first may not be sent (or counted) the body.
        assert_eq!(pulled.bytes().unwrap(), image.manifest.as_slice());
    }
    let missing = api.get("/v2/team/app/manifests/missing");
    assert_eq!(missing.status(), 404);
    let missing_bytes = missing.bytes().unwrap().len();
    let layer = &image.layers[0];
    let layer_digest = rbuild_oci::Digest::sha256_of(layer);
    assert_eq!(
        api.head(&format!("/v2/team/app/blobs/{layer_digest}")).status(),
        200
    );
    let blob = api.get(&format!("/v2/team/app/blobs/{layer_digest}"));
    assert_eq!(blob.bytes().unwrap(), layer.as_slice());
    let chunk = vec![7u8; 1000];
    let location = api.start_upload("team/app");
    let patched = api
        .request(Method::PATCH, &location)
        .body(chunk.clone())
        .send()
        .unwrap();
    assert_eq!(patched.status(), 202);
    let digest = rbuild_oci::Digest::sha256_of(&chunk);
    let put = api
        .request(
            Method::PUT,
            &format!("{}?digest={digest}", header(&patched, "location")),
        )
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);

    let pushed: usize = image.config.len() + image.layers.iter().map(Vec::len).sum::<usize>();
    let latency = series(
        "http_request_duration_seconds_count",
        r#"route="manifest",method="GET""#,
    );
    let expected = [
        (requests("blob_upload", "POST", 201), 3.0),
        (requests("blob_upload", "POST", 202), 1.0),
        (requests("blob_upload", "PATCH", 202), 1.0),
        (requests("blob_upload", "PUT", 201), 1.0),
        (requests("manifest", "PUT", 201), 1.0),
        (requests("manifest", "GET", 200), 3.0),
        (requests("manifest", "GET", 404), 1.0),
        (requests("blob", "HEAD", 200), 1.0),
        (requests("blob", "GET", 200), 1.0),
        (latency, 4.0),
        (
            series("http_request_body_bytes_total", r#"route="blob_upload""#),
            (pushed + chunk.len()) as f64,
        ),
        (
            series("http_request_body_bytes_total", r#"route="manifest""#),
            image.manifest.len() as f64,
        ),
        (
            series("http_response_body_bytes_total", r#"route="manifest""#),
            (3 * image.manifest.len() + missing_bytes) as f64,
        ),
        (
            series("http_response_body_bytes_total", r#"route="blob""#),
            layer.len() as f64,
        ),
        (storage("upload_commit"), 4.0),
        (storage("put"), 1.0),
    ];
    let after = assert_moved(|| Scrape::get(&url), &before, &expected);
    assert_eq!(after.value("rbuild_registry_uploads_in_flight"), 0.0);
    assert!(
        !after.text.contains("rbuild_registry_storage_errors_total{"),
        "no storage call failed:\n{}",
        after.text
    );
    assert!(
        !after.text.contains("team/app") && !after.text.contains("sha256:"),
        "no repository or digest labels"
    );
}

#[test]
fn docker_push_counts_every_pushed_byte_once() {
    // (Pulls are counted by the raw-HTTP workload: docker, holding the shared busybox test
    // image's layers already, would download none.)
    let Some(docker) = Docker::get() else { return };
    let registry = RegistryProcess::start();
    let url = registry.url("/metrics");
    let before = Scrape::get(&url);
    let remote = push_busybox(&docker, &registry, "metrics/busybox:1");
    run(docker.cmd().args(["rmi", &remote]));

    // What docker pushed, as the registry holds it: the manifest and the blobs it names.
    let manifest = Api::new(&registry)
        .request(Method::GET, "/v2/metrics/busybox/manifests/1")
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layers = parsed["layers"].as_array().unwrap();
    let blob_bytes = parsed["config"]["size"].as_u64().unwrap()
        + layers.iter().map(|l| l["size"].as_u64().unwrap()).sum::<u64>();
    let expected = [
        (requests("manifest", "PUT", 201), 1.0),
        (requests("blob_upload", "PUT", 201), (1 + layers.len()) as f64),
        // Every pushed byte arrives once, in an upload's body (docker streams it chunked).
        (
            series("http_request_body_bytes_total", r#"route="blob_upload""#),
            blob_bytes as f64,
        ),
        (
            series("http_request_body_bytes_total", r#"route="manifest""#),
            manifest.len() as f64,
        ),
    ];
    let after = assert_moved(|| Scrape::get(&url), &before, &expected);
    assert_eq!(after.value("rbuild_registry_uploads_in_flight"), 0.0);
    assert!(!after.text.contains("rbuild_registry_storage_errors_total{"));
}

#[test]
fn promtool_accepts_the_scrape() {
    let Some(promtool) = promtool() else { return };
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    api.push_image("lint", "v1", &TestImage::new("lint"));
    assert_eq!(api.get("/v2/lint/manifests/nope").status(), 404);
    assert_eq!(api.request(Method::TRACE, "/v2/").send().unwrap().status(), 405);
    let scrape = Scrape::get(&registry.url("/metrics"));
    assert!(
        scrape
            .text
            .contains("rbuild_registry_http_request_duration_seconds_bucket")
    );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), scrape.text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        scrape.text
    );
}

#[test]
fn prometheus_scrapes_the_request_count_from_a_separate_listener() {
    let metrics = free_port();
    let registry = RegistryProcess::start_with_config(&format!("[metrics]\naddr = \"{metrics}\"\n"));
    let api = Api::new(&registry);
    // Served there and only there; the metrics listener serves nothing else.
    assert_eq!(api.get("/metrics").status(), 404);
    let elsewhere = reqwest::blocking::get(format!("http://{metrics}/v2/")).unwrap();
    assert_eq!(elsewhere.status(), 404);
    let Some(prometheus) = Prometheus::start(metrics) else {
        return;
    };
    for _ in 0..7 {
        assert_eq!(api.get("/v2/").status(), 200);
    }
    let query = r#"sum(rbuild_registry_http_requests_total{route="base",method="GET",status="200"})"#;
    let mut seen = None;
    wait_until(
        "prometheus to have scraped 7 requests",
        Duration::from_secs(60),
        || {
            seen = prometheus.query(query);
            seen == Some(7.0)
        },
    );
    assert_eq!(prometheus.query("up"), Some(1.0));
}

#[test]
fn metrics_can_be_turned_off() {
    let registry = RegistryProcess::start_with_config("[metrics]\nenabled = false\n");
    let api = Api::new(&registry);
    assert_eq!(api.get("/metrics").status(), 404);
    assert_eq!(api.get("/v2/").status(), 200);
}

#[test]
fn on_the_main_listener_metrics_need_a_login_and_auth_failures_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    add_user(&htpasswd, "scraper", "s3cret");
    let registry = RegistryProcess::start_with_config(&format!(
        "[auth]\nmode = \"htpasswd\"\nhtpasswd = \"{}\"\n",
        htpasswd.display()
    ));
    let api = Api::new(&registry);
    let scrape = || {
        let response = api
            .request(Method::GET, "/metrics")
            .basic_auth("scraper", Some("s3cret"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        Scrape::parse(&response.text().unwrap())
    };
    let before = scrape();
    assert_eq!(api.get("/metrics").status(), 401, "no credentials, no metrics");
    let wrong = api
        .request(Method::GET, "/v2/")
        .basic_auth("scraper", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let reason = |r: &str| series("auth_failures_total", &format!(r#"reason="{r}""#));
    let expected = [
        (reason("missing_credentials"), 1.0),
        (reason("invalid_credentials"), 1.0),
    ];
    assert_moved(scrape, &before, &expected);
}

/// The JSON log lines of `registry` whose `key` (a JSON pointer) is `value`.
fn log_lines(registry: &RegistryProcess, pointer: &str, value: &str) -> Vec<serde_json::Value> {
    registry
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.pointer(pointer).and_then(|f| f.as_str()) == Some(value))
        .collect()
}

#[test]
fn every_error_has_a_log_line_with_the_id_its_response_carries() {
    let registry = RegistryProcess::start_with_config("[log]\nformat = \"json\"\n");
    let api = Api::new(&registry);

    // A client's own id is kept and answered back.
    let missing = api
        .request(Method::GET, "/v2/app/manifests/latest")
        .header("x-request-id", "ticket-4711")
        .send()
        .unwrap();
    assert_eq!(header(&missing, "x-request-id"), "ticket-4711");
    let message = missing.json_value()["errors"][0]["message"].clone();
    let mut lines = Vec::new();
    wait_until("the 404's access line", Duration::from_secs(5), || {
        lines = log_lines(&registry, "/fields/request_id", "ticket-4711");
        !lines.is_empty()
    });
    let fields = &lines[0]["fields"];
    assert_eq!(lines[0]["target"], "rbuild::access");
    assert_eq!(fields["status"], 404);
    assert_eq!(fields["route"], "manifest");
    assert_eq!(fields["error_code"], "MANIFEST_UNKNOWN");
    assert_eq!(fields["error_message"], message);

    // An id that could forge a log line is replaced by one of the server's.
    let forged = api
        .request(Method::GET, "/v2/")
        .header("x-request-id", "x\" status=200")
        .send()
        .unwrap();
    let id = header(&forged, "x-request-id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    wait_until(
        "the access line of the replaced id",
        Duration::from_secs(5),
        || !log_lines(&registry, "/fields/request_id", &id).is_empty(),
    );

    // A server-side failure: its error line, written deep in storage, names the request too.
    if !filesystem_only("makes storage fail by putting a file where the uploads directory is") {
        return;
    }
    let uploads = registry.root().join("blobs/_uploads");
    std::fs::remove_dir_all(&uploads).unwrap();
    std::fs::write(&uploads, b"").unwrap();
    let failed = api
        .request(Method::POST, "/v2/app/blobs/uploads/")
        .send()
        .unwrap();
    assert_eq!(failed.status(), 500);
    let id = header(&failed, "x-request-id");
    let mut errors = Vec::new();
    wait_until("the storage error's line", Duration::from_secs(5), || {
        errors = log_lines(&registry, "/span/request_id", &id);
        errors.iter().any(|l| l["level"] == "ERROR")
    });
    let access = log_lines(&registry, "/fields/request_id", &id);
    assert_eq!(access.len(), 1, "{access:?}");
    assert_eq!(access[0]["fields"]["status"], 500);
}

/// The separate metrics listener answers as the main one does: every response carries an
/// `X-Request-Id` (the client's, if sane) and has an access-log line with that id, its route
/// and status; a path other than `/metrics`, or a method other than `GET` and `HEAD`, gets the
/// main listener's error body, whose code the line names too. Its requests count in
/// `http_requests_total` like any other.
#[test]
fn the_metrics_listener_gives_request_ids_and_access_lines() {
    let metrics = free_port();
    let registry = RegistryProcess::start_with_config(&format!(
        "[log]\nformat = \"json\"\n[metrics]\naddr = \"{metrics}\"\n"
    ));
    let client = reqwest::blocking::Client::new();
    let url = |path: &str| format!("http://{metrics}{path}");
    let sent = |method: Method, path: &str, id: &str| {
        client
            .request(method, url(path))
            .header("x-request-id", id)
            .send()
            .unwrap()
    };
    let before = Scrape::get(&url("/metrics"));

    let scraped = client.get(url("/metrics")).send().unwrap();
    assert_eq!(scraped.status(), 200);
    let scrape_id = header(&scraped, "x-request-id");
    assert_eq!(scrape_id.len(), 36, "a UUID: {scrape_id}");
    let elsewhere = sent(Method::GET, "/v2/", "metrics-404");
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(header(&elsewhere, "x-request-id"), "metrics-404");
    assert_eq!(elsewhere.json_value()["errors"][0]["code"], "UNSUPPORTED");
    let posted = sent(Method::POST, "/metrics", "metrics-405");
    assert_eq!(posted.status(), 405);
    assert_eq!(header(&posted, "x-request-id"), "metrics-405");
    let head = sent(Method::HEAD, "/metrics", "metrics-head");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "x-request-id"), "metrics-head");

    for (id, route, method, status, error) in [
        (scrape_id.as_str(), "metrics", "GET", 200, None),
        ("metrics-404", "base", "GET", 404, Some("UNSUPPORTED")),
        ("metrics-405", "metrics", "POST", 405, Some("UNSUPPORTED")),
        ("metrics-head", "metrics", "HEAD", 200, None),
    ] {
        let mut lines = Vec::new();
        wait_until(
            &format!("the access line of {id}"),
            Duration::from_secs(5),
            || {
                lines = log_lines(&registry, "/fields/request_id", id);
                !lines.is_empty()
            },
        );
        assert_eq!(lines.len(), 1, "{lines:?}");
        let fields = &lines[0]["fields"];
        assert_eq!(lines[0]["target"], "rbuild::access", "{fields}");
        assert_eq!(fields["route"], route, "{fields}");
        assert_eq!(fields["method"], method, "{fields}");
        assert_eq!(fields["status"], status, "{fields}");
        assert_eq!(fields["error_code"].as_str(), error, "{fields}");
        assert!(
            fields["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{fields}"
        );
    }
    // (Not the GETs of /metrics: each scrape that reads the counters adds one.)
    let expected = [
        (requests("metrics", "HEAD", 200), 1.0),
        (requests("metrics", "POST", 405), 1.0),
        (requests("base", "GET", 404), 1.0),
    ];
    assert_moved(|| Scrape::get(&url("/metrics")), &before, &expected);
}
