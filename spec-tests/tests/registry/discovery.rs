//! Tag lists, the catalog and the referrers API, with pagination.

use rbuild_oci::media_type;
use reqwest::Method;
use spec_tests::api::{Api, JsonBody, TestImage, error_code, header};
use spec_tests::registry::RegistryProcess;

#[test]
fn tags_are_listed_in_order_and_paginated() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let image = TestImage::new("tags");
    api.push_image("paged", "v1", &image);
    for tag in ["b", "a", "v10", "v2", "_x", "Z"] {
        assert_eq!(
            api.put_manifest("paged", tag, media_type::OCI_MANIFEST, &image.manifest)
                .status(),
            201
        );
    }
    let all = api.get("/v2/paged/tags/list").json_value();
    assert_eq!(all["name"], "paged");
    assert_eq!(
        all["tags"],
        serde_json::json!(["Z", "_x", "a", "b", "v1", "v10", "v2"])
    );

    let first = api.get("/v2/paged/tags/list?n=3");
    let link = header(&first, "link");
    assert_eq!(link, "</v2/paged/tags/list?n=3&last=a>; rel=\"next\"");
    assert_eq!(first.json_value()["tags"], serde_json::json!(["Z", "_x", "a"]));
    let second = api.get("/v2/paged/tags/list?n=3&last=a");
    assert_eq!(second.json_value()["tags"], serde_json::json!(["b", "v1", "v10"]));
    let last = api.get("/v2/paged/tags/list?n=3&last=v10");
    assert!(header(&last, "link").is_empty(), "no Link on the last page");
    assert_eq!(last.json_value()["tags"], serde_json::json!(["v2"]));

    let none = api.get("/v2/paged/tags/list?n=0");
    assert!(header(&none, "link").is_empty());
    assert_eq!(none.json_value()["tags"], serde_json::json!([]));

    let bad = api.get("/v2/paged/tags/list?n=-1");
    assert_eq!(bad.status(), 400);
    let unknown = api.get("/v2/nobody/tags/list");
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown), "NAME_UNKNOWN");
}

#[test]
fn page_size_is_capped_by_configuration() {
    let registry = RegistryProcess::start_with_config("[limits]\nmax_page_entries = 2\n");
    let api = Api::new(&registry);
    let image = TestImage::new("cap");
    api.push_image("capped", "t1", &image);
    for tag in ["t2", "t3"] {
        api.put_manifest("capped", tag, media_type::OCI_MANIFEST, &image.manifest);
    }
    let response = api.get("/v2/capped/tags/list");
    assert_eq!(
        header(&response, "link"),
        "</v2/capped/tags/list?n=2&last=t2>; rel=\"next\""
    );
    assert_eq!(response.json_value()["tags"], serde_json::json!(["t1", "t2"]));
}

#[test]
fn catalog_lists_repositories_with_pagination() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    for repo in ["zeta", "alpha/one", "alpha", "alpha/two/deep", "beta"] {
        api.push_blob(repo, repo.as_bytes());
    }
    let all = api.get("/v2/_catalog").json_value();
    assert_eq!(
        all["repositories"],
        serde_json::json!(["alpha", "alpha/one", "alpha/two/deep", "beta", "zeta"])
    );
    let page = api.get("/v2/_catalog?n=2");
    assert_eq!(
        header(&page, "link"),
        "</v2/_catalog?n=2&last=alpha/one>; rel=\"next\""
    );
    let next = api.get("/v2/_catalog?n=2&last=alpha/one").json_value();
    assert_eq!(
        next["repositories"],
        serde_json::json!(["alpha/two/deep", "beta"])
    );
}

#[test]
fn referrers_list_filter_and_follow_deletes() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let subject = TestImage::new("subject");
    let subject_digest = api.push_image("ref", "v1", &subject);
    let referrer = |seed: &str, artifact_type: &str| {
        TestImage::with_extra(
            seed,
            serde_json::json!({
                "artifactType": artifact_type,
                "subject": subject.descriptor(),
                "annotations": {"org.example.seed": seed},
            }),
        )
    };
    let sig = referrer("sig", "application/vnd.example.sig");
    let sbom = referrer("sbom", "application/spdx+json");
    for (image, reference) in [(&sig, "sig"), (&sbom, "sbom")] {
        api.push_blob("ref", &image.config);
        for layer in &image.layers {
            api.push_blob("ref", layer);
        }
        let put = api.put_manifest("ref", reference, media_type::OCI_MANIFEST, &image.manifest);
        assert_eq!(put.status(), 201);
        assert_eq!(header(&put, "oci-subject"), subject_digest.to_string());
    }

    let list = api.get(&format!("/v2/ref/referrers/{subject_digest}"));
    assert_eq!(list.status(), 200);
    assert_eq!(header(&list, "content-type"), media_type::OCI_INDEX);
    assert!(header(&list, "oci-filters-applied").is_empty());
    let index = list.json_value();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], media_type::OCI_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let sig_entry = manifests
        .iter()
        .find(|m| m["digest"] == sig.digest().to_string())
        .expect("signature listed");
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["size"], sig.manifest.len());
    assert_eq!(sig_entry["annotations"]["org.example.seed"], "sig");

    let filtered = api.get(&format!(
        "/v2/ref/referrers/{subject_digest}?artifactType=application%2Fspdx%2Bjson"
    ));
    assert_eq!(header(&filtered, "oci-filters-applied"), "artifactType");
    let manifests = filtered.json_value()["manifests"].clone();
    assert_eq!(manifests.as_array().unwrap().len(), 1);
    assert_eq!(manifests[0]["digest"], sbom.digest().to_string());

    let first = api.get(&format!("/v2/ref/referrers/{subject_digest}?n=1"));
    assert!(header(&first, "link").contains("rel=\"next\""));
    assert_eq!(first.json_value()["manifests"].as_array().unwrap().len(), 1);

    assert_eq!(
        api.delete(&format!("/v2/ref/manifests/{}", sig.digest()))
            .status(),
        202
    );
    let after = api
        .get(&format!("/v2/ref/referrers/{subject_digest}"))
        .json_value();
    assert_eq!(after["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn referrers_of_unknown_subjects_are_empty_and_missing_subjects_are_allowed() {
    let registry = RegistryProcess::start();
    let api = Api::new(&registry);
    let absent = TestImage::new("never pushed");
    let empty = api.get(&format!("/v2/ref/referrers/{}", absent.digest()));
    assert_eq!(empty.status(), 200);
    assert_eq!(header(&empty, "content-type"), media_type::OCI_INDEX);
    assert_eq!(empty.json_value()["manifests"], serde_json::json!([]));

    // A referrer may be pushed before its subject.
    let orphan = TestImage::with_extra("orphan", serde_json::json!({"subject": absent.descriptor()}));
    let put = api.push_image("ref", "orphan", &orphan);
    assert_eq!(put, orphan.digest());
    let listed = api
        .get(&format!("/v2/ref/referrers/{}", absent.digest()))
        .json_value();
    assert_eq!(listed["manifests"][0]["digest"], orphan.digest().to_string());
    let bad = api
        .request(Method::GET, "/v2/ref/referrers/sha256:nothex")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(error_code(bad), "DIGEST_INVALID");
}
