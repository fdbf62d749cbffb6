//! The client against Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1, with
//! htpasswd Basic auth, credentials from a temporary docker config dir (the `auth` field and a
//! credential helper), and TLS with a CA of the test's own.
//!
//! Needs /usr/bin/docker-registry, htpasswd (apache2-utils) and openssl: without them the tests
//! skip with a message, or fail when `CI=true`.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{
    Distribution, TempStore, image_blobs, make_certificates, make_client_certificate, make_image,
    require_tool,
};
use rbuild_client::{BlobOutcome, Client, ClientError, ClientOptions, DockerConfig, platform};
use rbuild_oci::{Reference, RepositoryName};

fn tools_present() -> bool {
    require_tool("/usr/bin/docker-registry") && require_tool("htpasswd") && require_tool("openssl")
}

fn write_config(dir: &Path, json: &serde_json::Value) {
    std::fs::write(dir.join("config.json"), serde_json::to_vec(json).unwrap()).unwrap();
}

fn options(config_dir: &Path) -> ClientOptions {
    ClientOptions {
        docker_config_dir: Some(config_dir.to_owned()),
        certs_d: config_dir.join("certs.d"),
        ..ClientOptions::default()
    }
}

/// Pushes a fresh image to `name` and pulls it back into another store.
async fn round_trip(client: &Client, registry: &str, name: &str, seed: u64) -> Result<(), ClientError> {
    let store = TempStore::new();
    let manifest = make_image(&store, seed, &[2048, 2 * 1024 * 1024], "linux", "amd64");
    let reference: Reference = format!("{registry}/{name}").parse().unwrap();
    let report = client.push(&manifest, &store, &reference, None).await?;
    assert_eq!(report.digest, manifest.digest);
    let dest = TempStore::new();
    let pulled = client
        .pull(&reference, &platform::parse("linux/amd64").unwrap(), &dest)
        .await?;
    assert_eq!(pulled.digest(), &manifest.digest);
    for blob in image_blobs(&store, &manifest) {
        assert_eq!(
            dest.read(&blob.digest).unwrap(),
            store.read(&blob.digest).unwrap()
        );
    }
    Ok(())
}

#[tokio::test]
async fn basic_auth_with_the_auth_field() {
    if !tools_present() {
        return;
    }
    let registry = Distribution::start(&[("alice", "s3cret")], None);
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    write_config(
        config.path(),
        &serde_json::json!({"auths": {registry.name(): {"auth": auth}}}),
    );
    let client = Client::new(options(config.path())).unwrap();
    round_trip(&client, &registry.name(), "team/app:v1", 1)
        .await
        .unwrap();

    // Mounting works against distribution too, and a repeat push skips every blob.
    let store = TempStore::new();
    let manifest = make_image(&store, 2, &[100, 200], "linux", "amd64");
    let base: Reference = format!("{}/base/img:1", registry.name()).parse().unwrap();
    client.push(&manifest, &store, &base, None).await.unwrap();
    let from: RepositoryName = "base/img".parse().unwrap();
    let derived: Reference = format!("{}/apps/derived:1", registry.name()).parse().unwrap();
    let report = client
        .push(&manifest, &store, &derived, Some(&from))
        .await
        .unwrap();
    assert!(
        report.blobs.iter().all(|b| b.outcome == BlobOutcome::Mounted),
        "{:?}",
        report.blobs
    );
    let report = client
        .push(&manifest, &store, &derived, Some(&from))
        .await
        .unwrap();
    assert!(
        report.blobs.iter().all(|b| b.outcome == BlobOutcome::Existed),
        "{:?}",
        report.blobs
    );

    // Tag that is not there: distribution's error code comes through.
    let missing: Reference = format!("{}/base/img:nope", registry.name()).parse().unwrap();
    let err = client
        .resolve(&missing, &platform::parse("linux/amd64").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ManifestUnknown { .. }), "{err}");
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");

    // Username/password fields work as well as `auth`.
    write_config(
        config.path(),
        &serde_json::json!({"auths": {format!("https://{}/v2/", registry.name()): {"username": "alice", "password": "s3cret"}}}),
    );
    let client = Client::new(options(config.path())).unwrap();
    round_trip(&client, &registry.name(), "team/app:v2", 3)
        .await
        .unwrap();
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_refused_clearly() {
    if !tools_present() {
        return;
    }
    let registry = Distribution::start(&[("alice", "s3cret")], None);
    let config = tempfile::tempdir().unwrap();
    let anonymous = Client::new(options(config.path())).unwrap();
    let err = round_trip(&anonymous, &registry.name(), "team/app:v1", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AccessDenied { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("push access denied for {}/team/app", registry.name())),
        "{message}"
    );
    assert!(
        message.contains(&format!("rbuild login {}", registry.name())),
        "{message}"
    );

    let auth = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    write_config(
        config.path(),
        &serde_json::json!({"auths": {registry.name(): {"auth": auth}}}),
    );
    let wrong = Client::new(options(config.path())).unwrap();
    let err = wrong
        .resolve(
            &format!("{}/team/app:v1", registry.name()).parse().unwrap(),
            &platform::parse("linux/amd64").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::AuthenticationFailed { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("config.json"), "{message}");
    assert!(
        message.contains(&format!("rbuild login {}", registry.name())),
        "{message}"
    );
}

/// Writes `docker-credential-<name>` answering `get` for `server` and recording `store`/`erase`.
fn write_helper(dir: &Path, name: &str, server: &str) {
    let script = format!(
        r#"#!/bin/sh
input=$(cat)
case "$1" in
  get)
    if [ "$input" = "{server}" ]; then
      printf '{{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}}\n' "$input"
    else
      echo "credentials not found in native keychain"
      exit 1
    fi ;;
  store) printf '%s' "$input" > "{dir}/stored" ;;
  erase) printf '%s' "$input" > "{dir}/erased" ;;
  *) exit 2 ;;
esac
"#,
        dir = dir.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test]
async fn credentials_from_a_helper() {
    if !tools_present() {
        return;
    }
    let registry = Distribution::start(&[("alice", "s3cret")], None);
    let config = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    write_helper(bin.path(), "rbuildtest", &registry.name());
    let helper_path = format!("{}:/usr/bin:/bin", bin.path().display());
    let with_helper = |json: serde_json::Value| {
        write_config(config.path(), &json);
        Client::new(ClientOptions {
            credential_helper_path: Some(helper_path.clone().into()),
            ..options(config.path())
        })
        .unwrap()
    };

    // credsStore: the helper's answer is used, and a stale `auth` in the file is not (docker).
    let stale = base64::engine::general_purpose::STANDARD.encode("alice:old");
    let client = with_helper(serde_json::json!({
        "credsStore": "rbuildtest",
        "auths": {registry.name(): {"auth": stale}}
    }));
    round_trip(&client, &registry.name(), "helper/store:1", 10)
        .await
        .unwrap();

    // credHelpers for this registry wins over credsStore.
    let client = with_helper(serde_json::json!({
        "credsStore": "absent-helper",
        "credHelpers": {registry.name(): "rbuildtest"}
    }));
    round_trip(&client, &registry.name(), "helper/per-registry:1", 11)
        .await
        .unwrap();

    // A helper that is not installed is named in the error.
    let client = with_helper(serde_json::json!({"credsStore": "absent-helper"}));
    let err = round_trip(&client, &registry.name(), "helper/absent:1", 12)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("docker-credential-absent-helper is not on PATH"),
        "{err}"
    );

    // login/logout go through the helper, leaving an empty entry in the file like docker.
    write_config(config.path(), &serde_json::json!({"credsStore": "rbuildtest"}));
    let docker = DockerConfig::new(config.path()).with_helper_path(helper_path.clone());
    docker.store(&registry.name(), "bob", "pw").unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bin.path().join("stored")).unwrap()).unwrap();
    assert_eq!(stored["ServerURL"], registry.name());
    assert_eq!(stored["Username"], "bob");
    assert_eq!(stored["Secret"], "pw");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(file["auths"][registry.name()], serde_json::json!({}));
    assert!(docker.erase(&registry.name()).unwrap());
    assert_eq!(
        std::fs::read_to_string(bin.path().join("erased")).unwrap(),
        registry.name()
    );
}

#[tokio::test]
async fn tls_with_certs_d_ca_files_and_insecure() {
    if !tools_present() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let host = "registry.rbuild.test";
    let (ca, tls) = make_certificates(certs.path(), host);
    let registry = Distribution::start(&[("alice", "s3cret")], Some(&tls));
    let name = format!("{host}:{}", registry.port);
    let loopback = "127.0.0.1:0".parse().unwrap();
    let config = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    write_config(
        config.path(),
        &serde_json::json!({"auths": {name.clone(): {"auth": auth}}}),
    );
    let base = ClientOptions {
        resolve: vec![(host.to_owned(), loopback)],
        ..options(config.path())
    };

    // Unknown CA: refused, and the error says so.
    let client = Client::new(base.clone()).unwrap();
    let err = round_trip(&client, &name, "tls/app:1", 20).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains(&format!("certs.d/{name}/ca.crt")), "{message}");

    // docker's layout: certs.d/<host:port>/ca.crt.
    let host_dir = config.path().join("certs.d").join(&name);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    let client = Client::new(base.clone()).unwrap();
    round_trip(&client, &name, "tls/app:2", 21).await.unwrap();
    std::fs::remove_dir_all(&host_dir).unwrap();

    // An extra CA file for every registry.
    let client = Client::new(ClientOptions {
        ca_files: vec![ca.clone()],
        ..base.clone()
    })
    .unwrap();
    round_trip(&client, &name, "tls/app:3", 22).await.unwrap();

    // Listed as insecure: the certificate is not checked.
    let client = Client::new(ClientOptions {
        insecure_registries: vec![name.clone()],
        ..base.clone()
    })
    .unwrap();
    assert!(client.is_insecure(&name));
    round_trip(&client, &name, "tls/app:4", 23).await.unwrap();

    // A loopback name over TLS: HTTPS without verification is tried first, like docker.
    let client = Client::new(options(config.path())).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    write_config(
        config.path(),
        &serde_json::json!({"auths": {registry.name(): {"auth": auth}}}),
    );
    round_trip(&client, &registry.name(), "tls/app:5", 24)
        .await
        .unwrap();
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_in_certs_d() {
    if !tools_present() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let host = "mtls.rbuild.test";
    let (ca, mut tls) = make_certificates(certs.path(), host);
    let (client_cert, client_key) = make_client_certificate(certs.path());
    tls.client_ca = Some(ca.clone());
    let registry = Distribution::start(&[], Some(&tls));
    let name = format!("{host}:{}", registry.port);
    let config = tempfile::tempdir().unwrap();
    let base = ClientOptions {
        resolve: vec![(host.to_owned(), "127.0.0.1:0".parse().unwrap())],
        ..options(config.path())
    };
    let host_dir = config.path().join("certs.d").join(&name);
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();

    // The server CA alone is not enough: the registry wants a client certificate.
    let client = Client::new(base.clone()).unwrap();
    let err = round_trip(&client, &name, "mtls/app:1", 30).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unreachable { .. } | ClientError::Http { .. }),
        "{err}"
    );

    std::fs::copy(&client_cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(&client_key, host_dir.join("client.key")).unwrap();
    let client = Client::new(base).unwrap();
    round_trip(&client, &name, "mtls/app:2", 31).await.unwrap();
}
