//! `rbuild serve` with its blobs in a real S3 server (Garage, started by `scripts/test`).

use spec_tests::api::{Api, header};
use spec_tests::registry::{RegistryProcess, ServeOptions};
use spec_tests::tools;

/// `[storage.s3]` for the bucket `RBUILD_TEST_S3_*` names, under a prefix of its own; `None`
/// (outside CI) when the environment names no S3 server.
fn s3_storage(redirect: bool) -> Option<String> {
    let var = |name: &str| std::env::var(format!("RBUILD_TEST_S3_{name}")).ok();
    let endpoint = var("ENDPOINT");
    if !tools::require(
        "an S3 server (RBUILD_TEST_S3_ENDPOINT)",
        endpoint.is_some(),
        "source scripts/engines.sh and run engines_start",
    ) {
        return None;
    }
    Some(format!(
        "[storage]\ndriver = \"s3\"\n[storage.s3]\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\n\
         prefix = \"spec-{}\"\npath_style = true\nredirect = {redirect}\naccess_key_id = {:?}\n\
         secret_access_key = {:?}\n",
        endpoint.unwrap_or_default(),
        var("REGION").unwrap_or_else(|| "garage".to_owned()),
        var("BUCKET").unwrap_or_default(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        var("ACCESS_KEY_ID").unwrap_or_default(),
        var("SECRET_ACCESS_KEY").unwrap_or_default(),
    ))
}

/// With `redirect = true` a blob GET answers 307 to a presigned URL that serves the blob
/// without credentials (the replica sends no blob bytes); HEAD still answers itself.
#[test]
fn blob_get_redirects_to_a_presigned_url() {
    let Some(config) = s3_storage(true) else { return };
    let registry = RegistryProcess::start_with_config(&config);
    let api = Api::new(&registry);
    let content = b"served by the bucket ".repeat(5000);
    let digest = api.push_blob("lib/app", &content);
    let path = format!("/v2/lib/app/blobs/{digest}");

    let get = api.get(&path);
    assert_eq!(get.status(), 307);
    let location = header(&get, "location");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let fetched = reqwest::blocking::get(&location).unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().unwrap() == content);

    let head = api.head(&path);
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), content.len().to_string());
}

/// Without `redirect`, the replica streams blobs from the bucket itself, ranges included.
#[test]
fn blob_get_streams_from_the_bucket() {
    let Some(config) = s3_storage(false) else { return };
    let registry = RegistryProcess::start_with_config(&config);
    let api = Api::new(&registry);
    let content = b"streamed through the replica ".repeat(5000);
    let digest = api.push_blob("lib/app", &content);
    let path = format!("/v2/lib/app/blobs/{digest}");
    let get = api.get(&path);
    assert_eq!(get.status(), 200);
    assert!(get.bytes().unwrap() == content);
    let ranged = api
        .request(reqwest::Method::GET, &path)
        .header("range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().unwrap(), &content[10..20]);
}

/// With no key in the config or the environment, the store signs with the `AWS_PROFILE`
/// profile of the shared credentials file, as the AWS tools do.
#[test]
fn credentials_come_from_a_profile_of_the_shared_credentials_file() {
    let Some(config) = s3_storage(false) else { return };
    let var = |name: &str| std::env::var(format!("RBUILD_TEST_S3_{name}")).unwrap_or_default();
    let config: String = config
        .lines()
        .filter(|line| !line.starts_with("access_key_id") && !line.starts_with("secret_access_key"))
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[registry]\n\
             aws_access_key_id = {}\naws_secret_access_key = {}\n",
            var("ACCESS_KEY_ID"),
            var("SECRET_ACCESS_KEY")
        ),
    )
    .unwrap();
    let registry = RegistryProcess::start_with(ServeOptions {
        config,
        env: vec![
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                credentials.display().to_string(),
            ),
            ("AWS_PROFILE".to_owned(), "registry".to_owned()),
        ],
        ..ServeOptions::default()
    });
    let api = Api::new(&registry);
    let content = b"signed with the profile's key ".repeat(100);
    let digest = api.push_blob("lib/app", &content);
    let get = api.get(&format!("/v2/lib/app/blobs/{digest}"));
    assert_eq!(get.status(), 200);
    assert!(get.bytes().unwrap() == content);
}
