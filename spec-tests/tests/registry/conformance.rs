//! The checks of the OCI distribution-spec conformance suite v1.1.1 (opencontainers/
//! distribution-spec, `conformance/01_pull_test.go` … `04_management_test.go`) that the other
//! modules do not already make as the suite makes them, one test per check, named for it.
//!
//! The suite itself cannot be built here (its Go modules are out of reach), so these tests send
//! its requests: its reference `.INVALID_MANIFEST_NAME`, its manifests with `data` and an
//! unknown field in the config descriptor, its chunk ranges, its cross-mount sequence and its
//! set of referrers.

use std::collections::BTreeMap;

use base64::Engine;
use rbuild_oci::{Digest, media_type};
use reqwest::Method;
use spec_tests::api::{Api, JsonBody, TestImage, error_code, header};
use spec_tests::registry::RegistryProcess;

/// The reference the suite uses for a manifest that does not exist.
const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";

/// The codes the suite accepts in an error body (`errorCodes` in `setup.go`).
const SUITE_ERROR_CODES: [&str; 15] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
];

/// The suite's cross-mount namespace is `conformance-<uuid>` unless set.
const CROSSMOUNT: &str = "conformance-5b0e3f7a-4c1d-4e2b-9f6a-8d7c6b5a4e3f";

fn descriptor(media: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media,
        "digest": Digest::sha256_of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// An image as the suite writes its manifests: the config descriptor carries the config in
/// `data` and a field no spec defines (`newUnspecifiedField`), both base64 as Go encodes bytes.
fn suite_image(seed: &str) -> TestImage {
    let mut image = TestImage::new(seed);
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    let b64 = base64::engine::general_purpose::STANDARD;
    manifest["config"]["data"] = b64.encode(&image.config).into();
    manifest["config"]["newUnspecifiedField"] = b64.encode(b"hello world").into();
    image.manifest = serde_json::to_vec_pretty(&manifest).expect("manifest json");
    image
}

fn post(api: &Api, path: &str) -> reqwest::blocking::Response {
    api.request(Method::POST, path).send().expect("POST")
}

/// A registry holding what the suite's pull setup pushes: an image tagged `tagtest0`.
fn pull_setup() -> (RegistryProcess, Api) {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    api.push_image("pull", "tagtest0", &suite_image("pull"));
    (registry, api)
}

#[test]
fn head_of_a_reference_no_manifest_can_have_is_404() {
    let (_registry, api) = pull_setup();
    let head = api.head(&format!("/v2/pull/manifests/{NONEXISTENT_MANIFEST}"));
    assert_eq!(head.status(), 404);
}

#[test]
fn get_of_a_reference_no_manifest_can_have_is_404_manifest_unknown() {
    let (_registry, api) = pull_setup();
    let get = api.get(&format!("/v2/pull/manifests/{NONEXISTENT_MANIFEST}"));
    assert_eq!(get.status(), 404);
    assert_eq!(error_code(get), "MANIFEST_UNKNOWN");
}

#[test]
fn delete_of_a_reference_no_manifest_can_have_is_404() {
    let (_registry, api) = pull_setup();
    let delete = api.delete(&format!("/v2/pull/manifests/{NONEXISTENT_MANIFEST}"));
    assert_eq!(delete.status(), 404);
    assert_eq!(error_code(delete), "MANIFEST_UNKNOWN");
}

#[test]
fn put_of_a_reference_no_manifest_can_have_is_tag_invalid() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = suite_image("push");
    api.push_image("push", "test0", &image);
    let put = api.put_manifest(
        "push",
        NONEXISTENT_MANIFEST,
        media_type::OCI_MANIFEST,
        &image.manifest,
    );
    assert_eq!(put.status(), 400);
    assert_eq!(error_code(put), "TAG_INVALID");
}

#[test]
fn get_manifest_by_a_malformed_digest_answers_a_code_of_the_spec() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    // As the suite sends it: a GET that carries a body.
    let response = api
        .request(Method::GET, "/v2/pull/manifests/sha256:totallywrong")
        .header("content-type", media_type::OCI_MANIFEST)
        .body("blablabla")
        .send()
        .unwrap();
    let status = response.status();
    assert!(status == 400 || status == 404, "{status}");
    if status == 400 {
        let code = error_code(response);
        assert!(SUITE_ERROR_CODES.contains(&code.as_str()), "{code}");
    }
}

#[test]
fn manifests_with_data_and_unknown_descriptor_fields_are_served_by_tag_and_digest() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let first = suite_image("manifests[0]");
    let second = suite_image("manifests[1]");
    api.push_image("pull", "tagtest0", &first);
    api.push_image("pull", &second.digest().to_string(), &second);
    for (reference, image) in [
        ("tagtest0".to_owned(), &first),
        (first.digest().to_string(), &first),
        (second.digest().to_string(), &second),
    ] {
        let path = format!("/v2/pull/manifests/{reference}");
        for method in [Method::HEAD, Method::GET] {
            let response = api
                .request(method.clone(), &path)
                .header("accept", media_type::OCI_MANIFEST)
                .send()
                .unwrap();
            assert_eq!(response.status(), 200, "{method} {path}");
            assert_eq!(
                header(&response, "docker-content-digest"),
                image.digest().to_string(),
                "{method} {path}"
            );
        }
    }
}

#[test]
fn blobs_can_be_deleted_before_the_manifests_that_reference_them() {
    // OCI_DELETE_MANIFEST_BEFORE_BLOBS=false: the teardown deletes blobs first.
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = suite_image("teardown");
    let digest = api.push_image("pull", "tagtest0", &image);
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let path = format!("/v2/pull/blobs/{}", Digest::sha256_of(blob));
        assert_eq!(api.delete(&path).status(), 202, "{path}");
    }
    assert_eq!(api.delete(&format!("/v2/pull/manifests/{digest}")).status(), 202);
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

#[test]
fn single_post_upload_answers_201_with_a_location_and_the_blob_is_readable() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let content = br#"{"architecture":"amd64","os":"linux","author":"configs[1]"}"#;
    let digest = Digest::sha256_of(content);
    let response = api
        .request(Method::POST, &format!("/v2/push/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", content.len())
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "location"), format!("/v2/push/blobs/{digest}"));
    assert_eq!(api.get(&format!("/v2/push/blobs/{digest}")).status(), 200);
}

#[test]
fn out_of_order_first_chunk_is_416() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let response = api
        .request(Method::POST, "/v2/push/blobs/uploads/")
        .header("content-length", "0")
        .send()
        .unwrap();
    let location = header(&response, "location");
    assert!(!location.is_empty());
    // The suite's 42-byte blob in two chunks; the second is sent first.
    let blob: Vec<u8> = (0..42u8).collect();
    let second = &blob[22..];
    let patch = api
        .request(Method::PATCH, &location)
        .header("content-type", "application/octet-stream")
        .header("content-length", second.len())
        .header("content-range", "22-41")
        .body(second.to_vec())
        .send()
        .unwrap();
    assert_eq!(patch.status(), 416);
}

#[test]
fn mount_of_an_unknown_blob_without_from_starts_a_session() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let dummy = Digest::sha256_of(b"hello world");
    let response = post(&api, &format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={dummy}"));
    assert_eq!(response.status(), 202);
    let location = header(&response, "location");
    assert!(
        location.starts_with(&format!("/v2/{CROSSMOUNT}/blobs/uploads/")),
        "{location}"
    );
}

/// The suite's cross-mount sequence up to its last step: a blob pushed to `push`, mounted
/// with `from` into the cross-mount namespace (201, Location of the blob, readable there).
fn mount_with_from(api: &Api) -> Digest {
    let digest = api.push_blob("push", b"testBlobA: 42 bytes of the suite's seeded blob");
    let mounted = post(
        api,
        &format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}&from=push"),
    );
    assert_eq!(mounted.status(), 201);
    let location = header(&mounted, "location");
    assert_eq!(location, format!("/v2/{CROSSMOUNT}/blobs/{digest}"));
    assert_eq!(api.get(&location).status(), 200);
    digest
}

#[test]
fn mount_without_from_after_a_mount_with_auto_mount_on_is_201() {
    let registry = RegistryProcess::start_with_config("[uploads]\nauto_mount = true\n");
    let api = Api::new(&registry);
    let digest = mount_with_from(&api);
    let response = post(&api, &format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}"));
    assert_eq!(response.status(), 201);
}

#[test]
fn mount_without_from_after_a_mount_with_auto_mount_off_is_202() {
    let registry = RegistryProcess::start_with_config("[uploads]\nauto_mount = false\n");
    let api = Api::new(&registry);
    let digest = mount_with_from(&api);
    let response = post(&api, &format!("/v2/{CROSSMOUNT}/blobs/uploads/?mount={digest}"));
    assert_eq!(response.status(), 202);
}

const ANNOTATION: &str = "org.opencontainers.conformance.test";
const TYPE_A: &str = "application/vnd.nhl.peanut.butter.bagel";
const TYPE_B: &str = "application/vnd.nba.strawberry.jam.croissant";

/// What the suite's referrers setup leaves behind.
struct Referrers {
    /// The manifest the referrers point at, pushed between the two halves of them.
    subject: Digest,
    /// Each referrer of `subject` and the value of its one annotation.
    annotations: BTreeMap<String, String>,
    /// Referrers of artifact type A (one by config media type, one by `artifactType`).
    of_type_a: Vec<String>,
    /// The `OCI-Subject` header each referrer PUT answered, and the subject it names.
    subject_headers: Vec<(String, String)>,
}

/// Pushes the suite's referrers to `repo`: two typed by their config media type, two by
/// `artifactType`, an index, and one whose subject is never pushed; half before the subject
/// exists and half after.
fn push_suite_referrers(api: &Api, repo: &str) -> Referrers {
    let subject = suite_image("manifests[4]");
    let missing = suite_image("manifests[3]");
    let empty = b"{}";
    let blob_a = b"NHL Peanut Butter on my NHL bagel";
    let blob_b = b"NBA Strawberry Jam on my NBA croissant";
    for blob in [&empty[..], blob_a, blob_b] {
        api.push_blob(repo, blob);
    }
    let by_config = |blob: &[u8], artifact_type: &str, note: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": descriptor(artifact_type, blob),
            "subject": subject.descriptor(),
            "layers": [descriptor(media_type::OCI_EMPTY, empty)],
            "annotations": {ANNOTATION: note},
        })
    };
    let by_artifact_type = |blob: &[u8], artifact_type: &str, of: &TestImage, note: Option<&str>| {
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(media_type::OCI_EMPTY, empty),
            "subject": of.descriptor(),
            "layers": [descriptor(artifact_type, blob)],
        });
        if let Some(note) = note {
            manifest["annotations"] = serde_json::json!({ ANNOTATION: note });
        }
        manifest
    };
    let a_config = serde_json::to_vec_pretty(&by_config(blob_a, TYPE_A, "test config a")).unwrap();
    let a_layer =
        serde_json::to_vec_pretty(&by_artifact_type(blob_a, TYPE_A, &subject, Some("test layer a"))).unwrap();
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "artifactType": "application/vnd.food.stand",
        "manifests": [
            descriptor(media_type::OCI_MANIFEST, &a_config),
            descriptor(media_type::OCI_MANIFEST, &a_layer),
        ],
        "subject": subject.descriptor(),
        "annotations": {ANNOTATION: "test index"},
    }))
    .unwrap();
    let b_config = serde_json::to_vec_pretty(&by_config(blob_b, TYPE_B, "test config b")).unwrap();
    let b_layer =
        serde_json::to_vec_pretty(&by_artifact_type(blob_b, TYPE_B, &subject, Some("test layer b"))).unwrap();
    let c_layer = serde_json::to_vec_pretty(&by_artifact_type(blob_b, TYPE_B, &missing, None)).unwrap();

    let mut subject_headers = Vec::new();
    let mut put = |bytes: &[u8], media: &str, of: &TestImage| {
        let digest = Digest::sha256_of(bytes).to_string();
        let response = api.put_manifest(repo, &digest, media, bytes);
        assert_eq!(response.status(), 201, "{digest}");
        subject_headers.push((header(&response, "oci-subject"), of.digest().to_string()));
        digest
    };
    let mut annotations = BTreeMap::new();
    let a_config_digest = put(&a_config, media_type::OCI_MANIFEST, &subject);
    let a_layer_digest = put(&a_layer, media_type::OCI_MANIFEST, &subject);
    annotations.insert(
        put(&index, media_type::OCI_INDEX, &subject),
        "test index".to_owned(),
    );
    api.push_image(repo, "tagtest0", &subject);
    annotations.insert(
        put(&b_config, media_type::OCI_MANIFEST, &subject),
        "test config b".to_owned(),
    );
    annotations.insert(
        put(&b_layer, media_type::OCI_MANIFEST, &subject),
        "test layer b".to_owned(),
    );
    put(&c_layer, media_type::OCI_MANIFEST, &missing);
    annotations.insert(a_config_digest.clone(), "test config a".to_owned());
    annotations.insert(a_layer_digest.clone(), "test layer a".to_owned());
    Referrers {
        subject: subject.digest(),
        annotations,
        of_type_a: vec![a_config_digest, a_layer_digest],
        subject_headers,
    }
}

/// The digests in a referrers response and the annotations of each.
fn listed(response: reqwest::blocking::Response) -> BTreeMap<String, serde_json::Value> {
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), media_type::OCI_INDEX);
    let index = response.json_value();
    index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap_or_default().to_owned(),
                m["annotations"].clone(),
            )
        })
        .collect()
}

#[test]
fn referrers_answer_oci_subject_before_and_after_their_subject_is_pushed() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let referrers = push_suite_referrers(&api, "discovery");
    assert_eq!(referrers.subject_headers.len(), 6);
    for (answered, subject) in &referrers.subject_headers {
        assert_eq!(answered, subject);
    }
}

#[test]
fn referrers_list_every_kind_with_exactly_its_own_annotation() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let referrers = push_suite_referrers(&api, "discovery");
    let list = listed(api.get(&format!("/v2/discovery/referrers/{}", referrers.subject)));
    assert_eq!(
        list.keys().collect::<Vec<_>>(),
        referrers.annotations.keys().collect::<Vec<_>>()
    );
    for (digest, annotations) in &list {
        assert_eq!(
            annotations,
            &serde_json::json!({ ANNOTATION: referrers.annotations[digest] }),
            "{digest}"
        );
    }
}

#[test]
fn artifact_type_filter_matches_config_media_type_and_artifact_type() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let referrers = push_suite_referrers(&api, "discovery");
    let response = api
        .request(
            Method::GET,
            &format!("/v2/discovery/referrers/{}", referrers.subject),
        )
        .query(&[("artifactType", TYPE_A)])
        .send()
        .unwrap();
    assert_eq!(header(&response, "oci-filters-applied"), "artifactType");
    let list = listed(response);
    let mut expected = referrers.of_type_a.clone();
    expected.sort();
    assert_eq!(list.keys().cloned().collect::<Vec<_>>(), expected);
    for (digest, annotations) in &list {
        assert_eq!(
            annotations,
            &serde_json::json!({ ANNOTATION: referrers.annotations[digest] }),
            "{digest}"
        );
    }
}
