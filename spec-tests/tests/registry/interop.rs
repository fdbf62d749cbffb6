//! Real clients against `rbuild serve`: docker, skopeo, containerd and the oci-client crate.

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use rbuild_oci::media_type;
use spec_tests::api::{Api, JsonBody, header};
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Ctr, Docker, output, run, skopeo};

/// Pushes the busybox test image to `repo:tag` on `registry` with docker; returns the reference.
pub(crate) fn push_busybox(docker: &Docker, registry: &RegistryProcess, repo_tag: &str) -> String {
    let remote = format!("{}/{repo_tag}", registry.host());
    run(docker.cmd().args(["tag", &docker.busybox_image(), &remote]));
    run(docker.cmd().args(["push", &remote]));
    remote
}

#[test]
fn docker_push_pull_and_run() {
    let Some(docker) = Docker::get() else { return };
    let registry = RegistryProcess::start();
    let remote = push_busybox(&docker, &registry, "interop/busybox:1");
    // A second push finds every layer present; a push to another repository mounts them.
    let again = run(docker.cmd().args(["push", &remote]));
    assert!(again.contains("Layer already exists"), "{again}");
    let other = format!("{}/interop/other:1", registry.host());
    run(docker.cmd().args(["tag", &remote, &other]));
    let mounted = run(docker.cmd().args(["push", &other]));
    assert!(
        mounted.contains("Mounted from interop/busybox") || mounted.contains("Layer already exists"),
        "{mounted}"
    );

    run(docker.cmd().args(["rmi", &remote, &other]));
    run(docker.cmd().args(["pull", &remote]));
    let out = run(docker
        .cmd()
        .args(["run", "--rm", "--network=none", &remote, "echo", "pulled and ran"]));
    assert_eq!(out.trim(), "pulled and ran");
    run(docker.cmd().args(["rmi", &remote]));

    let tags = Api::new(&registry)
        .get("/v2/interop/busybox/tags/list")
        .json_value();
    assert_eq!(tags["tags"], serde_json::json!(["1"]));
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

#[test]
fn skopeo_copy_inspect_list_and_delete() {
    let (Some(docker), Some(skopeo)) = (Docker::get(), skopeo()) else {
        return;
    };
    let registry = RegistryProcess::start();
    let remote = push_busybox(&docker, &registry, "sk/busybox:1");
    let insecure = "--tls-verify=false";

    let inspect =
        run(std::process::Command::new(&skopeo).args(["inspect", insecure, &format!("docker://{remote}")]));
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Architecture"], "amd64");
    let digest = inspected["Digest"].as_str().unwrap().to_owned();

    // Registry → OCI layout → another repository, through skopeo both ways.
    let layout = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}:copied", layout.path().display());
    run(std::process::Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{remote}"),
        &oci,
    ]));
    let target = format!("docker://{}/sk/copy:2", registry.host());
    run(std::process::Command::new(&skopeo).args(["copy", "--dest-tls-verify=false", &oci, &target]));
    let copied = run(std::process::Command::new(&skopeo).args(["inspect", insecure, &target]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&copied).unwrap()["Os"],
        "linux"
    );

    let tags = run(std::process::Command::new(&skopeo).args([
        "list-tags",
        insecure,
        &format!("docker://{}/sk/busybox", registry.host()),
    ]));
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));

    run(std::process::Command::new(&skopeo).args(["delete", insecure, &format!("docker://{remote}")]));
    let gone = output(std::process::Command::new(&skopeo).args([
        "inspect",
        insecure,
        &format!("docker://{remote}"),
    ]));
    assert!(!gone.status.success(), "deleted image is gone");
    let api = Api::new(&registry);
    assert_eq!(
        api.head(&format!("/v2/sk/busybox/manifests/{digest}")).status(),
        404
    );
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

#[test]
fn containerd_pulls_and_runs() {
    let (Some(docker), Some(ctr)) = (Docker::get(), Ctr::get()) else {
        return;
    };
    let registry = RegistryProcess::start();
    let remote = push_busybox(&docker, &registry, "k8s/busybox:1");
    run(ctr.cmd().args(["images", "pull", "--plain-http", &remote]));
    let id = format!("rbuild-test-{}", registry.addr().port());
    let out = run(ctr
        .cmd()
        .args(["run", "--rm", &remote, &id, "echo", "hello from containerd"]));
    assert_eq!(out.trim(), "hello from containerd");
    run(ctr.cmd().args(["images", "rm", &remote]));
}

#[test]
fn oci_client_pushes_and_pulls() {
    let registry = RegistryProcess::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let digest = runtime.block_on(oci_client_round_trip(&registry));
    let api = Api::new(&registry);
    assert_eq!(
        header(&api.head("/v2/ocic/app/manifests/v1"), "docker-content-digest"),
        digest
    );
}

/// Pushes an image with oci-client, pulls it back, lists tags and referrers; returns the
/// manifest digest the client saw.
async fn oci_client_round_trip(registry: &RegistryProcess) -> String {
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    let reference: Reference = format!("{}/ocic/app:v1", registry.host()).parse().unwrap();
    let layers = vec![
        ImageLayer::oci_v1_gzip(b"first layer".to_vec(), None),
        ImageLayer::oci_v1_gzip(vec![9u8; 3 * 1024 * 1024], None),
    ];
    let config = Config::new(
        br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
        media_type::OCI_CONFIG.to_owned(),
        None,
    );
    client
        .push(&reference, &layers, config, &auth, None)
        .await
        .expect("oci-client push");

    let pulled = client
        .pull(&reference, &auth, vec![media_type::OCI_LAYER_GZIP])
        .await
        .expect("oci-client pull");
    // oci-client downloads layers concurrently and returns them as they finish, so compare
    // them as a set (by size, then content; not printed whole when they differ).
    let mut sizes: Vec<usize> = pulled.layers.iter().map(|l| l.data.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [b"first layer".len(), 3 * 1024 * 1024]);
    for layer in &pulled.layers {
        let want: &[u8] = if layer.data.len() == b"first layer".len() {
            b"first layer"
        } else {
            &layers[1].data
        };
        assert!(layer.data.as_ref() == want, "a pulled layer's content differs");
    }
    let digest = client.fetch_manifest_digest(&reference, &auth).await.unwrap();
    assert_eq!(Some(digest.clone()), pulled.digest);

    let tags = client.list_tags(&reference, &auth, None, None).await.unwrap();
    assert_eq!(tags.tags, ["v1"]);
    let subject: Reference = format!("{}/ocic/app@{digest}", registry.host()).parse().unwrap();
    let referrers = client.pull_referrers(&subject, None).await.unwrap();
    assert!(referrers.manifests.is_empty());
    digest
}
