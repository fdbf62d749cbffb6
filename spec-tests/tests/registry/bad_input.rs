//! Bad input gets the right error and stores nothing.

use std::io::{Read, Write};
use std::net::TcpStream;

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use spec_tests::api::{Api, TestImage, error_code, header, raw_request};
use spec_tests::registry::RegistryProcess;

#[test]
fn hostile_names_are_refused_before_touching_disk() {
    let registry = RegistryProcess::start();
    let before = registry.stored();
    let digest = Digest::sha256_of(b"x");
    let names = [
        "../x",
        "a/../../b",
        "a//b",
        "%2e%2e/x",
        "a%2f..%2fb",
        "UPPER",
        "a..b",
        "-a",
        "a/_layers",
        &"a".repeat(256),
    ];
    for name in names {
        for path in [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/blobs/{digest}"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/blobs/uploads/"),
        ] {
            let method = if path.ends_with("uploads/") { "POST" } else { "GET" };
            let (status, body) = raw_request(registry.addr(), method, &path);
            // Paths that collapse or lose their resource shape are plain 404s; the rest are
            // named invalid. Either way nothing is created.
            assert!(
                (status == 400 && body.contains("NAME_INVALID")) || status == 404,
                "{method} {path}: {status} {body}"
            );
        }
    }
    assert_eq!(registry.stored(), before, "nothing was stored");
}

#[test]
fn malformed_digests_and_references() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    for (path, code) in [
        ("/v2/a/blobs/sha256:short", "DIGEST_INVALID"),
        (
            "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "DIGEST_INVALID",
        ),
        ("/v2/a/manifests/sha256:XYZ", "DIGEST_INVALID"),
        ("/v2/a/manifests/-bad-tag", "MANIFEST_UNKNOWN"),
        ("/v2/a/blobs/uploads/not-a-session", "BLOB_UPLOAD_UNKNOWN"),
    ] {
        let response = api.get(path);
        assert!(response.status().is_client_error(), "{path}");
        assert_eq!(error_code(response), code, "{path}");
    }
    let bad_mount = api
        .request(Method::POST, "/v2/a/blobs/uploads/?mount=sha256:nope&from=b")
        .send()
        .unwrap();
    assert_eq!(error_code(bad_mount), "DIGEST_INVALID");
    let bad_from = api
        .request(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?mount={}&from=../b", Digest::sha256_of(b"")),
        )
        .send()
        .unwrap();
    assert_eq!(error_code(bad_from), "NAME_INVALID");
}

#[test]
fn malformed_manifests_are_refused() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("valid");
    api.push_image("m", "good", &image);
    let bad_bodies: [&[u8]; 6] = [
        b"",
        b"not json",
        b"[1,2,3]",
        br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#,
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
        br#"{"schemaVersion":2,"mediaType":"text/plain","config":{}}"#,
    ];
    for body in bad_bodies {
        let response = api.put_manifest("m", "bad", media_type::OCI_MANIFEST, body);
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            error_code(response),
            "MANIFEST_INVALID",
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // The body says OCI index, the header says manifest.
    let mismatch = api.put_manifest("m", "bad", media_type::OCI_INDEX, &image.manifest);
    assert_eq!(error_code(mismatch), "MANIFEST_INVALID");
    assert_eq!(api.get("/v2/m/manifests/bad").status(), 404);
}

#[test]
fn manifest_digest_must_match_the_reference() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("digest");
    api.push_image("m", "v1", &image);
    let other = Digest::sha256_of(b"something else");
    let response = api.put_manifest("m", &other.to_string(), media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response), "DIGEST_INVALID");
    assert_eq!(api.get(&format!("/v2/m/manifests/{other}")).status(), 404);
}

#[test]
fn oversized_manifests_get_413() {
    let registry = RegistryProcess::start_with_config("[limits]\nmax_manifest_bytes = 1024\n");
    let api = Api::new(&registry);
    let mut big = TestImage::with_extra(
        "big",
        serde_json::json!({"annotations": {"pad": "x".repeat(2000)}}),
    );
    api.push_blob("big", &big.config);
    for layer in &big.layers {
        api.push_blob("big", layer);
    }
    let declared = api.put_manifest("big", "v1", media_type::OCI_MANIFEST, &big.manifest);
    assert_eq!(declared.status(), 413);
    assert_eq!(error_code(declared), "SIZE_INVALID");
    // Without a Content-Length the limit still holds while streaming.
    let manifest = std::mem::take(&mut big.manifest);
    let streamed = api
        .request(Method::PUT, "/v2/big/manifests/v1")
        .header("content-type", media_type::OCI_MANIFEST)
        .body(reqwest::blocking::Body::new(
            std::io::Cursor::new(manifest).take(u64::MAX),
        ))
        .send()
        .unwrap();
    assert_eq!(streamed.status(), 413);
    assert_eq!(api.get("/v2/big/manifests/v1").status(), 404);
}

#[test]
fn truncated_chunk_leaves_the_upload_where_it_was() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let location = api.start_upload("trunc");
    let first = api
        .request(Method::PATCH, &location)
        .header("content-range", "0-3")
        .body(b"abcd".to_vec())
        .send()
        .unwrap();
    assert_eq!(first.status(), 202);

    // Declare 1000 bytes, send 500, hang up.
    let mut stream = TcpStream::connect(registry.addr()).unwrap();
    write!(
        stream,
        "PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Range: 4-1003\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&[b'z'; 500]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        !reply.contains(" 202 "),
        "a truncated chunk is not accepted: {reply}"
    );

    let status = api.get(&location);
    assert_eq!(
        header(&status, "range"),
        "0-3",
        "the partial chunk was rolled back"
    );
    let short = api
        .request(Method::PATCH, &location)
        .header("content-range", "4-13")
        .body(b"12345".to_vec())
        .send()
        .unwrap();
    assert_eq!(short.status(), 400);
    assert_eq!(error_code(short), "SIZE_INVALID");
    assert_eq!(header(&api.get(&location), "range"), "0-3");

    let put = api
        .request(
            Method::PUT,
            &format!("{location}?digest={}", Digest::sha256_of(b"abcdefgh")),
        )
        .header("content-range", "4-7")
        .body(b"efgh".to_vec())
        .send()
        .unwrap();
    assert_eq!(put.status(), 201);
}

#[test]
fn unsupported_methods_are_refused() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let response = api.request(Method::POST, "/v2/a/tags/list").send().unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_code(response), "UNSUPPORTED");
}
