//! Blob reads, ranges, deletion, and per-repository visibility.

use rbuild_oci::{Algorithm, Digest};
use spec_tests::api::{Api, error_code, header};
use spec_tests::registry::RegistryProcess;

#[test]
fn base_endpoint_answers_with_api_version() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let response = api.get("/v2/");
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "docker-distribution-api-version"),
        "registry/2.0"
    );
    let missing = api.get("/v2/nothing/here");
    assert_eq!(missing.status(), 404);
    assert_eq!(
        header(&missing, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[test]
fn blob_get_and_head_carry_digest_and_length() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content = b"some blob content".repeat(1000);
    let digest = api.push_blob("lib/app", &content);
    let path = format!("/v2/lib/app/blobs/{digest}");

    let head = api.head(&path);
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "docker-content-digest"), digest.to_string());
    assert_eq!(header(&head, "content-length"), content.len().to_string());
    assert_eq!(head.bytes().unwrap().len(), 0);

    let get = api.get(&path);
    assert_eq!(get.status(), 200);
    assert_eq!(header(&get, "docker-content-digest"), digest.to_string());
    assert_eq!(header(&get, "content-length"), content.len().to_string());
    assert_eq!(get.bytes().unwrap().as_ref(), content.as_slice());
}

#[test]
fn ranged_blob_reads() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let digest = api.push_blob("r", &content);
    let path = format!("/v2/r/blobs/{digest}");
    let ranged = |range: &str| {
        api.request(reqwest::Method::GET, &path)
            .header("range", range)
            .send()
            .unwrap()
    };

    let part = ranged("bytes=1000-1999");
    assert_eq!(part.status(), 206);
    assert_eq!(header(&part, "content-range"), "bytes 1000-1999/100000");
    assert_eq!(header(&part, "content-length"), "1000");
    assert_eq!(part.bytes().unwrap().as_ref(), &content[1000..2000]);

    let tail = ranged("bytes=-10");
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().unwrap().as_ref(), &content[99_990..]);

    let open = ranged("bytes=99000-");
    assert_eq!(open.bytes().unwrap().as_ref(), &content[99_000..]);

    let unsatisfiable = ranged("bytes=200000-");
    assert_eq!(unsatisfiable.status(), 416);
}

#[test]
fn blobs_are_visible_only_in_repositories_that_hold_them() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_blob("team/a", b"private to a");
    let other = api.get(&format!("/v2/team/b/blobs/{digest}"));
    assert_eq!(other.status(), 404);
    assert_eq!(error_code(other), "BLOB_UNKNOWN");
    assert_eq!(api.head(&format!("/v2/team/a/blobs/{digest}")).status(), 200);
}

#[test]
fn deleting_a_blob_unlinks_it() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_blob("d", b"to be deleted");
    let path = format!("/v2/d/blobs/{digest}");
    assert_eq!(api.delete(&path).status(), 202);
    let gone = api.get(&path);
    assert_eq!(gone.status(), 404);
    assert_eq!(error_code(gone), "BLOB_UNKNOWN");
    let again = api.delete(&path);
    assert_eq!(again.status(), 404);
    assert_eq!(error_code(again), "BLOB_UNKNOWN");
}

#[test]
fn sha512_blobs_are_accepted_and_verified() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content = b"sha512 content";
    let digest = Digest::of(Algorithm::Sha512, content);
    let response = api
        .request(
            reqwest::Method::POST,
            &format!("/v2/s/blobs/uploads/?digest={digest}"),
        )
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let get = api.get(&format!("/v2/s/blobs/{digest}"));
    assert_eq!(header(&get, "docker-content-digest"), digest.to_string());
    assert_eq!(get.bytes().unwrap().as_ref(), content);
}
