//! Running the server: health probes, delete policy, graceful shutdown, purge, logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use spec_tests::api::{Api, TestImage, error_code, header};
use spec_tests::registry::{RegistryProcess, filesystem_only};
use spec_tests::wait::wait_until;

#[test]
fn health_and_readiness_probes() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    assert_eq!(api.get("/healthz").status(), 200);
    assert_eq!(api.get("/readyz").status(), 200);
}

#[test]
fn deletion_can_be_disabled() {
    let registry = RegistryProcess::start_with_config("[storage]\ndelete_enabled = false\n");
    let api = Api::new(&registry);
    let digest = api.push_image("keep", "v1", &TestImage::new("keep"));
    let blob = api.push_blob("keep", b"blob");
    for path in [
        "/v2/keep/manifests/v1".to_owned(),
        format!("/v2/keep/manifests/{digest}"),
        format!("/v2/keep/blobs/{blob}"),
    ] {
        let response = api.delete(&path);
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(error_code(response), "UNSUPPORTED");
    }
    assert_eq!(api.get("/v2/keep/manifests/v1").status(), 200);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    if !filesystem_only(
        "knows the request is in flight by its first bytes in the upload file; S3 keeps a chunk \
         until its request ends",
    ) {
        return;
    }
    let mut registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let location = api.start_upload("graceful");
    let mut stream = TcpStream::connect(registry.addr()).unwrap();
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhalf"
    )
    .unwrap();
    wait_until(
        "the first half of the chunk to be staged",
        Duration::from_secs(10),
        || registry.staged_upload_bytes() == 4,
    );

    let pid = registry.pid();
    registry.send_sigterm();
    wait_until("the server to log the SIGTERM", Duration::from_secs(10), || {
        registry.log().contains("SIGTERM received")
    });
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the server waits for the request in flight"
    );
    stream.write_all(b"done").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    let status = registry.wait();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn stale_uploads_are_purged() {
    let registry =
        RegistryProcess::start_with_config("[uploads]\npurge_after_secs = 1\npurge_interval_secs = 1\n");
    let api = Api::new(&registry);
    let location = api.start_upload("stale");
    api.request(Method::PATCH, &location)
        .body(b"abandoned".to_vec())
        .send()
        .unwrap();
    wait_until("the upload to be purged", Duration::from_secs(15), || {
        api.get(&location).status() == 404
    });
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
    assert!(!report.contains("staged upload"), "{report}");
}

/// The first JSON access-log line `matches` accepts, waiting up to five seconds for it.
fn access_line(
    registry: &RegistryProcess,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut found = None;
    wait_until("a JSON access line", Duration::from_secs(5), || {
        found = registry
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "rbuild::access" && matches(v));
        found.is_some()
    });
    found.expect("found")
}

#[test]
fn json_access_logs() {
    let registry = RegistryProcess::start_with_config("[log]\nformat = \"json\"\n");
    let api = Api::new(&registry);
    assert_eq!(api.get("/v2/").status(), 200);
    let line = access_line(&registry, |_| true);
    assert_eq!(line["fields"]["method"], "GET");
    assert_eq!(line["fields"]["path"], "/v2/");
    assert_eq!(line["fields"]["status"], 200);
    assert!(line["fields"]["duration_ms"].is_number());
    let upload = api.request(Method::POST, "/v2/x/blobs/uploads/").send().unwrap();
    assert!(!header(&upload, "location").is_empty());
}

#[test]
fn access_log_shows_the_query_without_credentials() {
    let registry = RegistryProcess::start_with_config("[log]\nformat = \"json\"\n");
    let api = Api::new(&registry);
    let digest = api.push_blob("base", b"shared layer");
    let query = format!("mount={digest}&from=base&access_token=sekrit-token");
    let mounted = api
        .request(Method::POST, &format!("/v2/app/blobs/uploads/?{query}"))
        .send()
        .unwrap();
    assert_eq!(mounted.status(), 201);
    let line = access_line(&registry, |v| v["fields"]["path"] == "/v2/app/blobs/uploads/");
    assert_eq!(
        line["fields"]["query"],
        format!("mount={digest}&from=base&access_token=REDACTED")
    );
    let pushed = access_line(&registry, |v| v["fields"]["path"] == "/v2/base/blobs/uploads/");
    assert_eq!(pushed["fields"]["query"], format!("digest={digest}"));
    assert!(!registry.log().contains("sekrit"), "{}", registry.log());
}

#[test]
fn memory_storage_serves_and_fsck_and_gc_need_no_root_without_a_filesystem_store() {
    let config = "[storage]\ndriver = \"memory\"\n[metadata]\ndriver = \"memory\"\n";
    let registry = RegistryProcess::start_with_config(config);
    let api = Api::new(&registry);
    let image = TestImage::new("memory");
    let digest = api.push_image("mem/app", "v1", &image);
    let pulled = api.get("/v2/mem/app/manifests/v1");
    assert_eq!(pulled.status(), 200);
    assert_eq!(header(&pulled, "docker-content-digest"), digest.to_string());
    assert!(
        !registry.root().join("blobs").exists(),
        "nothing is kept under the root"
    );

    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("memory.toml");
    std::fs::write(&config_file, config).unwrap();
    let missing = dir.path().join("no-such-root");
    let maintain = |command: &str, config: Option<&std::path::Path>| {
        let mut run = std::process::Command::new(spec_tests::registry::rbuild_bin());
        run.args(["registry", command, "--root"]).arg(&missing);
        if let Some(config) = config {
            run.arg("--config").arg(config);
        }
        let out = run.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, report) = maintain("fsck", Some(&config_file));
    assert!(ok && report.ends_with(": ok\n"), "{report}");
    let (ok, report) = maintain("gc", Some(&config_file));
    assert!(ok, "{report}");
    let (ok, report) = maintain("fsck", None);
    assert!(!ok && report.contains("is not a directory"), "{report}");
    assert!(!missing.exists());
}
