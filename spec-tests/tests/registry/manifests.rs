//! Manifests: every kind, exact bytes, content negotiation, validation, deletion.

use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use spec_tests::api::{Api, JsonBody, TestImage, error_code, header};
use spec_tests::registry::RegistryProcess;

#[test]
fn put_and_get_by_tag_and_digest() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("basic");
    for layer in std::iter::once(&image.config).chain(&image.layers) {
        api.push_blob("app", layer);
    }
    let put = api.put_manifest("app", "v1", media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(put.status(), 201);
    let digest = image.digest();
    assert_eq!(header(&put, "docker-content-digest"), digest.to_string());
    assert_eq!(header(&put, "location"), format!("/v2/app/manifests/{digest}"));

    for reference in ["v1".to_owned(), digest.to_string()] {
        let get = api.get(&format!("/v2/app/manifests/{reference}"));
        assert_eq!(get.status(), 200);
        assert_eq!(header(&get, "content-type"), media_type::OCI_MANIFEST);
        assert_eq!(header(&get, "docker-content-digest"), digest.to_string());
        assert_eq!(header(&get, "content-length"), image.manifest.len().to_string());
        assert_eq!(
            get.bytes().unwrap().as_ref(),
            image.manifest.as_slice(),
            "exact bytes are served"
        );

        let head = api.head(&format!("/v2/app/manifests/{reference}"));
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "docker-content-digest"), digest.to_string());
        assert_eq!(header(&head, "content-length"), image.manifest.len().to_string());
    }
    let missing = api.get("/v2/app/manifests/v2");
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing), "MANIFEST_UNKNOWN");
}

#[test]
fn etag_allows_conditional_get() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_image("etag", "v1", &TestImage::new("etag"));
    let response = api
        .request(Method::GET, "/v2/etag/manifests/v1")
        .header("if-none-match", format!("\"{digest}\""))
        .send()
        .unwrap();
    assert_eq!(response.status(), 304);
}

#[test]
fn docker_schema2_and_manifest_lists() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"docker layer";
    let config_digest = api.push_blob("docker", config);
    let layer_digest = api.push_blob("docker", layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST,
        "config": {"mediaType": media_type::DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": media_type::DOCKER_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let manifest_digest = Digest::sha256_of(&manifest);
    assert_eq!(
        api.put_manifest("docker", "amd64", media_type::DOCKER_MANIFEST, &manifest)
            .status(),
        201
    );
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::DOCKER_MANIFEST_LIST,
        "manifests": [{
            "mediaType": media_type::DOCKER_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"}
        }],
    }))
    .unwrap();
    assert_eq!(
        api.put_manifest("docker", "multi", media_type::DOCKER_MANIFEST_LIST, &list)
            .status(),
        201
    );

    let get = api
        .request(Method::GET, "/v2/docker/manifests/multi")
        .header("accept", media_type::DOCKER_MANIFEST_LIST)
        .header("accept", media_type::DOCKER_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(header(&get, "content-type"), media_type::DOCKER_MANIFEST_LIST);

    // A client that cannot read lists gets the linux/amd64 manifest, as from distribution.
    let old_client = api
        .request(Method::GET, "/v2/docker/manifests/multi")
        .header("accept", media_type::DOCKER_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(old_client.status(), 200);
    assert_eq!(header(&old_client, "content-type"), media_type::DOCKER_MANIFEST);
    assert_eq!(
        header(&old_client, "docker-content-digest"),
        manifest_digest.to_string()
    );
}

#[test]
fn accept_header_is_honoured() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    api.push_image("negotiate", "v1", &TestImage::new("negotiate"));
    let refused = api
        .request(Method::GET, "/v2/negotiate/manifests/v1")
        .header("accept", media_type::DOCKER_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert_eq!(error_code(refused), "MANIFEST_UNKNOWN");
    for accept in [
        media_type::OCI_MANIFEST,
        "*/*",
        &format!("{}, {}", media_type::DOCKER_MANIFEST, media_type::OCI_MANIFEST),
    ] {
        let ok = api
            .request(Method::GET, "/v2/negotiate/manifests/v1")
            .header("accept", accept)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "{accept}");
    }
}

#[test]
fn oci_index_requires_its_manifests() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let child = TestImage::new("child");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [child.descriptor()],
    }))
    .unwrap();
    let early = api.put_manifest("idx", "all", media_type::OCI_INDEX, &index);
    assert_eq!(early.status(), 400);
    assert_eq!(error_code(early), "MANIFEST_BLOB_UNKNOWN");
    api.push_image("idx", &child.digest().to_string(), &child);
    assert_eq!(
        api.put_manifest("idx", "all", media_type::OCI_INDEX, &index)
            .status(),
        201
    );
    let get = api.get("/v2/idx/manifests/all");
    assert_eq!(header(&get, "content-type"), media_type::OCI_INDEX);
}

#[test]
fn artifacts_with_any_config_type() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let config = b"{}";
    let blob = b"an sbom";
    let config_digest = api.push_blob("art", config);
    let blob_digest = api.push_blob("art", blob);
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": media_type::OCI_EMPTY, "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": blob_digest, "size": blob.len()}],
    }))
    .unwrap();
    assert_eq!(
        api.put_manifest("art", "sbom", media_type::OCI_MANIFEST, &artifact)
            .status(),
        201
    );
    let helm = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [],
    }))
    .unwrap();
    let put = api.put_manifest("art", "chart", media_type::OCI_MANIFEST, &helm);
    assert_eq!(put.status(), 201, "a manifest with no layers is accepted");
}

#[test]
fn put_by_digest_with_extra_tags() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("tags-param");
    api.push_blob("multi", &image.config);
    for layer in &image.layers {
        api.push_blob("multi", layer);
    }
    let digest = image.digest();
    let response = api
        .request(Method::PUT, &format!("/v2/multi/manifests/{digest}?tag=a&tag=b"))
        .header("content-type", media_type::OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let tags: Vec<String> = response
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(tags, ["a", "b"]);
    for tag in ["a", "b"] {
        assert_eq!(
            header(
                &api.head(&format!("/v2/multi/manifests/{tag}")),
                "docker-content-digest"
            ),
            digest.to_string()
        );
    }
}

#[test]
fn references_to_missing_blobs_are_refused() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("missing");
    api.push_blob("m", &image.config);
    let response = api.put_manifest("m", "v1", media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response), "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(api.get("/v2/m/manifests/v1").status(), 404);
    // Blobs pushed to another repository do not count.
    for layer in &image.layers {
        api.push_blob("elsewhere", layer);
    }
    let response = api.put_manifest("m", "v1", media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(error_code(response), "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn delete_by_tag_keeps_the_manifest() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let digest = api.push_image("del", "v1", &TestImage::new("del"));
    assert_eq!(api.delete("/v2/del/manifests/v1").status(), 202);
    assert_eq!(api.get("/v2/del/manifests/v1").status(), 404);
    assert_eq!(api.get(&format!("/v2/del/manifests/{digest}")).status(), 200);
    let tags = api.get("/v2/del/tags/list").json_value();
    assert_eq!(tags["tags"], serde_json::json!([]));
    let again = api.delete("/v2/del/manifests/v1");
    assert_eq!(again.status(), 404);
    assert_eq!(error_code(again), "MANIFEST_UNKNOWN");
}

#[test]
fn delete_by_digest_removes_manifest_and_its_tags() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("del-digest");
    let digest = api.push_image("dd", "v1", &image);
    api.put_manifest("dd", "latest", media_type::OCI_MANIFEST, &image.manifest);
    assert_eq!(api.delete(&format!("/v2/dd/manifests/{digest}")).status(), 202);
    assert_eq!(api.get(&format!("/v2/dd/manifests/{digest}")).status(), 404);
    assert_eq!(api.get("/v2/dd/manifests/v1").status(), 404);
    assert_eq!(
        api.get("/v2/dd/tags/list").json_value()["tags"],
        serde_json::json!([])
    );
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}
