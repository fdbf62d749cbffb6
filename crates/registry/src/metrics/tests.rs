//! The families as a scrape shows them after known work.

use std::time::Duration;

use ::http::{Method, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rbuild_oci::Digest;

use super::*;
use crate::storage::fs::FsBlobStore;
use crate::storage::{BlobStore, StorageError};

/// The value of one series (name and labels exactly as encoded) in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn finished(route: &'static str, method: Method, status: StatusCode) -> Finished {
    Finished {
        route,
        method,
        status,
        elapsed: Duration::from_millis(3),
    }
}

#[tokio::test]
async fn requests_count_by_route_method_and_status_with_their_bytes() {
    let metrics = Metrics::new();
    let http = metrics.http();
    http.finish(&finished("manifest", Method::GET, StatusCode::OK));
    http.finish(&finished("manifest", Method::GET, StatusCode::OK));
    http.finish(&finished("manifest", Method::GET, StatusCode::NOT_FOUND));
    http.finish(&finished(
        "blob",
        Method::from_bytes(b"BREW").unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    ));
    let sent = http.count_request("blob_upload", Full::new(Bytes::from_static(b"0123456789")));
    assert_eq!(sent.collect().await.unwrap().to_bytes().len(), 10);
    let (tx, rx) = std::sync::mpsc::channel();
    let answered = http
        .count_response("manifest", Full::new(Bytes::from_static(b"{}")))
        .on_end(move |bytes| tx.send(bytes).unwrap());
    answered.collect().await.unwrap();
    assert_eq!(rx.recv().unwrap(), 2, "on_end hears the bytes that went out");

    let scrape = metrics.encode();
    let requests = "rbuild_registry_http_requests_total";
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{requests}{{route="manifest",method="GET",status="200"}}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{requests}{{route="manifest",method="GET",status="404"}}"#)
        ),
        Some(1.0)
    );
    // A method nobody knows is `other`: clients cannot mint label values.
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{requests}{{route="blob",method="other",status="405"}}"#)
        ),
        Some(1.0)
    );
    let latency = "rbuild_registry_http_request_duration_seconds";
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{latency}_count{{route="manifest",method="GET"}}"#)
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{latency}_bucket{{le="0.0025",route="manifest",method="GET"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scrape,
            &format!(r#"{latency}_bucket{{le="0.005",route="manifest",method="GET"}}"#)
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"rbuild_registry_http_request_body_bytes_total{route="blob_upload"}"#
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &scrape,
            r#"rbuild_registry_http_response_body_bytes_total{route="manifest"}"#
        ),
        Some(2.0)
    );
    assert!(scrape.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
}

#[test]
fn uploads_are_in_flight_while_their_handler_runs() {
    let metrics = Metrics::new();
    let http = metrics.http();
    let gauge = |m: &Metrics| value(&m.encode(), "rbuild_registry_uploads_in_flight");
    let patch = http.begin("blob_upload", &Method::PATCH);
    let put = http.begin("blob_upload", &Method::PUT);
    let status = http.begin("blob_upload", &Method::GET);
    let pull = http.begin("blob", &Method::GET);
    assert_eq!(gauge(&metrics), Some(2.0));
    drop((patch, status, pull));
    assert_eq!(gauge(&metrics), Some(1.0));
    drop(put);
    assert_eq!(gauge(&metrics), Some(0.0));
}

#[test]
fn auth_failures_have_a_bounded_reason() {
    let bearer = |error: &str| format!(r#"Bearer realm="r",service="s",error="{error}""#);
    let cases = [
        (StatusCode::UNAUTHORIZED, false, None, Some("missing_credentials")),
        (
            StatusCode::UNAUTHORIZED,
            true,
            Some(r#"Basic realm="rbuild""#.to_owned()),
            Some("invalid_credentials"),
        ),
        (
            StatusCode::UNAUTHORIZED,
            true,
            Some(bearer("invalid_token")),
            Some("invalid_token"),
        ),
        (
            StatusCode::UNAUTHORIZED,
            true,
            Some(bearer("insufficient_scope")),
            Some("insufficient_scope"),
        ),
        (
            StatusCode::UNAUTHORIZED,
            true,
            Some(bearer("invalid_request")),
            Some("wrong_scheme"),
        ),
        (
            StatusCode::UNAUTHORIZED,
            true,
            Some(bearer("made_up")),
            Some("invalid_credentials"),
        ),
        (StatusCode::FORBIDDEN, true, None, Some("denied")),
        (StatusCode::TOO_MANY_REQUESTS, true, None, Some("rate_limited")),
        (StatusCode::OK, true, None, None),
        (StatusCode::NOT_FOUND, false, None, None),
    ];
    for (status, sent, challenge, reason) in cases {
        assert_eq!(
            auth_failure_reason(status, sent, challenge.as_deref()),
            reason,
            "{status} {challenge:?}"
        );
    }
    let metrics = Metrics::new();
    metrics.http().auth_failure("denied");
    metrics.http().auth_failure("denied");
    assert_eq!(
        value(
            &metrics.encode(),
            r#"rbuild_registry_auth_failures_total{reason="denied"}"#
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn storage_calls_count_by_operation_and_errors_only_when_the_backend_fails() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let blobs = Metered::new(FsBlobStore::open(dir.path(), false).unwrap(), metrics.storage());
    let content = Bytes::from_static(b"layer");
    let digest = Digest::sha256_of(&content);
    assert_eq!(blobs.stat(&digest).await.unwrap(), None);
    blobs.put(&digest, content.clone()).await.unwrap();
    let wrong = Digest::sha256_of(b"other");
    assert!(matches!(
        blobs.put(&wrong, content).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    blobs.health().await.unwrap();
    // The staging directory replaced by a file: the backend itself now fails.
    let uploads = dir.path().join("blobs/_uploads");
    std::fs::remove_dir_all(&uploads).unwrap();
    std::fs::write(&uploads, b"").unwrap();
    assert!(matches!(blobs.health().await, Err(StorageError::Io { .. })));

    let scrape = metrics.encode();
    let series = |family: &str, operation: &str| {
        let labels = format!(r#"{{backend="filesystem",store="blobs",operation="{operation}"}}"#);
        value(&scrape, &format!("rbuild_registry_{family}{labels}"))
    };
    assert_eq!(series("storage_operations_total", "stat"), Some(1.0));
    assert_eq!(series("storage_operations_total", "put"), Some(2.0));
    assert_eq!(series("storage_operations_total", "health"), Some(2.0));
    assert_eq!(
        series("storage_operation_duration_seconds_count", "put"),
        Some(2.0)
    );
    // A digest mismatch is the client's content, not a storage failure.
    assert_eq!(series("storage_errors_total", "put"), None);
    assert_eq!(series("storage_errors_total", "health"), Some(1.0));
}

#[test]
fn the_text_format_names_every_family_by_its_samples() {
    let metrics = Metrics::new();
    metrics
        .http()
        .finish(&finished("tags", Method::GET, StatusCode::OK));
    let text = format::to_text(&metrics.encode());
    assert!(text.contains("# TYPE rbuild_registry_http_requests_total counter\n"));
    assert!(text.contains("# TYPE rbuild_registry_http_request_duration_seconds histogram\n"));
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
}

#[test]
fn config_places_the_endpoint() {
    let parse = |toml: &str| toml::from_str::<crate::Config>(toml).unwrap().metrics;
    assert!(parse("").on_main_listener());
    assert!(!parse("[metrics]\nenabled = false\n").on_main_listener());
    let separate = parse("[metrics]\naddr = \"127.0.0.1:9091\"\n");
    assert!(!separate.on_main_listener());
    assert_eq!(separate.addr.map(|a| a.port()), Some(9091));
    assert!(toml::from_str::<crate::Config>("[metrics]\nport = 1\n").is_err());
}
