//! The handlers over in-memory stores: fast, and with several registries on clones of one
//! store they stand for replicas sharing storage, so a handler that kept state of its own
//! (an upload's progress, a tag cache) would show here.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use rbuild_oci::{Digest, media_type};

use crate::http::{Body, RequestBody};
use crate::storage::check::check;
use crate::storage::memory::{MemoryBlobStore, MemoryMetadataStore};
use crate::{Config, Registry};

type Replica = Registry<MemoryBlobStore, MemoryMetadataStore>;

/// `n` registries over one pair of memory stores.
fn replicas(n: usize) -> (Vec<Replica>, MemoryBlobStore, MemoryMetadataStore) {
    let (blobs, metadata) = (MemoryBlobStore::new(), MemoryMetadataStore::new());
    let replicas = (0..n)
        .map(|_| Registry::new(blobs.clone(), metadata.clone(), Config::default()).unwrap())
        .collect();
    (replicas, blobs, metadata)
}

async fn send(
    registry: &Replica,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: RequestBody = Full::new(Bytes::copy_from_slice(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    registry.handle(request.body(body).unwrap()).await
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

async fn bytes(response: Response<Body>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Pushes `content` monolithically through `registry`.
async fn push_blob(registry: &Replica, repo: &str, content: &[u8]) -> Digest {
    let digest = Digest::sha256_of(content);
    let uri = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    let pushed = send(registry, Method::POST, &uri, &[], content).await;
    assert_eq!(pushed.status(), StatusCode::CREATED);
    digest
}

/// An image manifest of `config` and `layer`; `version` tells two apart.
fn image(config: &[u8], layer: &[u8], version: &str) -> Vec<u8> {
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": Digest::sha256_of(bytes), "size": bytes.len()});
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(media_type::OCI_CONFIG, config),
        "layers": [descriptor(media_type::OCI_LAYER_GZIP, layer)],
        "annotations": {"org.opencontainers.image.version": version},
    }))
    .unwrap()
}

#[tokio::test]
async fn an_upload_moves_between_replicas_and_a_tag_moved_on_one_is_seen_on_the_others() {
    let (replicas, blobs, metadata) = replicas(3);
    let [a, b, c] = [&replicas[0], &replicas[1], &replicas[2]];

    let layer = b"a layer uploaded in two chunks through three replicas";
    let started = send(a, Method::POST, "/v2/team/app/blobs/uploads/", &[], b"").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = header(&started, "location").to_owned();
    let first = send(
        b,
        Method::PATCH,
        &location,
        &[("content-range", "0-19")],
        &layer[..20],
    )
    .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&first, "range"), "0-19");
    let location = header(&first, "location").to_owned();
    let range = format!("20-{}", layer.len() - 1);
    let second = send(
        c,
        Method::PATCH,
        &location,
        &[("content-range", &range)],
        &layer[20..],
    )
    .await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let location = header(&second, "location").to_owned();
    let digest = Digest::sha256_of(layer);
    let separator = if location.contains('?') { '&' } else { '?' };
    let finished = send(
        a,
        Method::PUT,
        &format!("{location}{separator}digest={digest}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(finished.status(), StatusCode::CREATED);
    let read = send(b, Method::GET, &format!("/v2/team/app/blobs/{digest}"), &[], b"").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(bytes(read).await.as_ref(), layer);

    let config = br#"{"os":"linux"}"#;
    push_blob(c, "team/app", config).await;
    let (v1, v2) = (image(config, layer, "1"), image(config, layer, "2"));
    let content_type = [("content-type", media_type::OCI_MANIFEST)];
    for (manifest, via) in [(&v1, c), (&v2, a)] {
        let put = send(
            via,
            Method::PUT,
            "/v2/team/app/manifests/latest",
            &content_type,
            manifest,
        )
        .await;
        assert_eq!(put.status(), StatusCode::CREATED);
        for replica in [a, b, c] {
            let head = send(replica, Method::HEAD, "/v2/team/app/manifests/latest", &[], b"").await;
            assert_eq!(head.status(), StatusCode::OK);
            let expected = Digest::sha256_of(manifest).to_string();
            assert_eq!(header(&head, "docker-content-digest"), expected);
        }
    }

    let report = check(&blobs, &metadata, std::time::Duration::MAX).await.unwrap();
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!((report.blobs, report.manifests, report.tags), (4, 2, 1));
}
