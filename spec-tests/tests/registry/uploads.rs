//! Every way a blob can be uploaded: monolithic, streamed, chunked, mounted, cancelled.

use std::io::Read;

use rbuild_oci::Digest;
use reqwest::Method;
use reqwest::blocking::Body;
use spec_tests::api::{Api, error_code, header};
use spec_tests::registry::RegistryProcess;

/// A body of unknown length, so it is sent with chunked transfer encoding (as docker does).
fn streamed(bytes: Vec<u8>) -> Body {
    Body::new(std::io::Cursor::new(bytes).take(u64::MAX))
}

#[test]
fn post_starts_a_session() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let response = api.request(Method::POST, "/v2/a/blobs/uploads/").send().unwrap();
    assert_eq!(response.status(), 202);
    let location = header(&response, "location");
    assert!(location.starts_with("/v2/a/blobs/uploads/"), "{location}");
    assert!(!header(&response, "docker-upload-uuid").is_empty());
    let status = api.get(&location);
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range"), "0-0");
    assert_eq!(header(&status, "location"), location);
}

#[test]
fn streamed_patch_then_put() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content = vec![7u8; 3 * 1024 * 1024 + 17];
    let digest = Digest::sha256_of(&content);
    let location = api.start_upload("stream");
    let patch = api
        .request(Method::PATCH, &location)
        .body(streamed(content.clone()))
        .send()
        .unwrap();
    assert_eq!(patch.status(), 202);
    assert_eq!(header(&patch, "range"), format!("0-{}", content.len() - 1));
    let next = header(&patch, "location");
    let put = api
        .request(Method::PUT, &format!("{next}?digest={digest}"))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(header(&put, "location"), format!("/v2/stream/blobs/{digest}"));
    assert_eq!(header(&put, "docker-content-digest"), digest.to_string());
    assert_eq!(
        api.get(&format!("/v2/stream/blobs/{digest}"))
            .bytes()
            .unwrap()
            .len(),
        content.len()
    );
    assert_eq!(api.get(&location).status(), 404, "the session ends with the PUT");
}

#[test]
fn chunked_upload_in_order_with_final_chunk_on_put() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&content);
    let location = api.start_upload("chunked");
    let chunk = |from: usize, to: usize| {
        api.request(Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{from}-{}", to - 1))
            .body(content[from..to].to_vec())
            .send()
            .unwrap()
    };
    let first = chunk(0, 10_000);
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "range"), "0-9999");

    // Out of order (and a retry of the chunk just sent) is refused with 416.
    assert_eq!(chunk(20_000, 30_000).status(), 416);
    assert_eq!(chunk(0, 10_000).status(), 416);
    let status = api.get(&location);
    assert_eq!(status.status(), 204);
    assert_eq!(header(&status, "range"), "0-9999");

    assert_eq!(chunk(10_000, 20_000).status(), 202);
    let put = api
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .header("content-range", "20000-29999")
        .body(content[20_000..].to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        api.get(&format!("/v2/chunked/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        content.as_slice()
    );
}

#[test]
fn monolithic_put_after_post() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content = b"whole blob in the PUT".to_vec();
    let digest = Digest::sha256_of(&content);
    let location = api.start_upload("mono");
    let put = api
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(content.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(header(&put, "location"), format!("/v2/mono/blobs/{digest}"));
    assert_eq!(
        api.get(&format!("/v2/mono/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        content.as_slice()
    );
}

#[test]
fn empty_blob_upload() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = Digest::sha256_of(b"");
    let location = api.start_upload("empty");
    let put = api
        .request(Method::PUT, &format!("{location}?digest={digest}"))
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
    let head = api.head(&format!("/v2/empty/blobs/{digest}"));
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "0");
}

#[test]
fn wrong_digest_on_put_stores_nothing() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let claimed = Digest::sha256_of(b"what the client claims");
    let location = api.start_upload("wrong");
    let put = api
        .request(Method::PUT, &format!("{location}?digest={claimed}"))
        .body(b"what it actually sends".to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 400);
    assert_eq!(error_code(put), "DIGEST_INVALID");
    assert_eq!(api.head(&format!("/v2/wrong/blobs/{claimed}")).status(), 404);
    let actual = Digest::sha256_of(b"what it actually sends");
    assert_eq!(api.head(&format!("/v2/wrong/blobs/{actual}")).status(), 404);
    assert_eq!(api.get(&location).status(), 404, "the failed session is dropped");

    let mono = api
        .request(
            Method::POST,
            &format!("/v2/wrong/blobs/uploads/?digest={claimed}"),
        )
        .body(b"not matching".to_vec())
        .send()
        .unwrap();
    assert_eq!(mono.status(), 400);
    assert_eq!(error_code(mono), "DIGEST_INVALID");
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
    assert!(
        !report.contains("staged upload data"),
        "a failed monolithic upload leaves no data: {report}"
    );
}

#[test]
fn put_without_digest_is_refused() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let location = api.start_upload("nodigest");
    let put = api
        .request(Method::PUT, &location)
        .body(b"x".to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 400);
    assert_eq!(error_code(put), "DIGEST_INVALID");
}

#[test]
fn cancelled_upload_is_gone() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let location = api.start_upload("cancel");
    assert_eq!(
        api.request(Method::PATCH, &location)
            .body(b"partial".to_vec())
            .send()
            .unwrap()
            .status(),
        202
    );
    assert_eq!(api.delete(&location).status(), 204);
    let status = api.get(&location);
    assert_eq!(status.status(), 404);
    assert_eq!(error_code(status), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn sessions_belong_to_their_repository() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let location = api.start_upload("owner");
    let elsewhere = location.replace("/v2/owner/", "/v2/intruder/");
    let response = api
        .request(Method::PATCH, &elsewhere)
        .body(b"x".to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response), "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn mount_from_another_repository() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_blob("source", b"shared layer");
    let mounted = api
        .request(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=source"),
        )
        .send()
        .unwrap();
    assert_eq!(mounted.status(), 201);
    assert_eq!(header(&mounted, "location"), format!("/v2/target/blobs/{digest}"));
    assert_eq!(header(&mounted, "docker-content-digest"), digest.to_string());
    assert_eq!(api.head(&format!("/v2/target/blobs/{digest}")).status(), 200);

    // A `from` that does not hold the blob starts an ordinary upload instead.
    let fallback = api
        .request(
            Method::POST,
            &format!("/v2/third/blobs/uploads/?mount={digest}&from=nowhere"),
        )
        .send()
        .unwrap();
    assert_eq!(fallback.status(), 202);
    assert!(header(&fallback, "location").starts_with("/v2/third/blobs/uploads/"));
    assert_eq!(api.head(&format!("/v2/third/blobs/{digest}")).status(), 404);

    // An unknown blob never mounts.
    let unknown = Digest::sha256_of(b"never pushed");
    let response = api
        .request(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={unknown}&from=source"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[test]
fn automatic_mount_without_from_is_configurable() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_blob("somewhere", b"known blob");
    let auto = api
        .request(Method::POST, &format!("/v2/auto/blobs/uploads/?mount={digest}"))
        .send()
        .unwrap();
    assert_eq!(auto.status(), 201);

    let strict = RegistryProcess::start_with_config("[uploads]\nauto_mount = false\n");
    let api = Api::new(&strict);
    let digest = api.push_blob("somewhere", b"known blob");
    let response = api
        .request(Method::POST, &format!("/v2/auto/blobs/uploads/?mount={digest}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
}
