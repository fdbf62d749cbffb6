//! What the build tests share: the fixture directory, running rbuild, the busybox base.

use std::path::{Path, PathBuf};
use std::process::Command;

use spec_tests::registry::{RegistryProcess, rbuild_bin};
use spec_tests::tools::{Docker, run};

/// `fixtures/build/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/build")
        .join(name)
}

/// An `rbuild` command using the local store at `store`.
pub fn rbuild(store: &Path) -> Command {
    let mut command = Command::new(rbuild_bin());
    command.env("RBUILD_ROOT", store).env("RUST_LOG", "warn");
    command
}

/// Builds `context` with rbuild and exports it to an OCI layout in `store` (as `out:1`);
/// returns the layout directory.
pub fn build_to_layout(store: &Path, context: &Path, extra: &[&str]) -> PathBuf {
    build_to_layout_with(&mut rbuild(store), store, context, extra)
}

/// [`build_to_layout`] with `command`, an [`rbuild`] command the test has set up further
/// (its working directory, say).
pub fn build_to_layout_with(command: &mut Command, store: &Path, context: &Path, extra: &[&str]) -> PathBuf {
    let layout = store.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    run(command
        .args(["build", "--progress", "plain", "-t", "out:1", "--output"])
        .arg(format!("type=oci,dest={}", layout.display()))
        .args(extra)
        .arg(context));
    layout
}

/// A registry of the test's own holding the busybox test image, and the image's reference in
/// it (what the fixtures get as `--build-arg BASE=`). The registry stops when the returned
/// process is dropped (a shared one in a `static` would never be: statics are not dropped at
/// exit, and the server would outlive the tests).
pub fn base_image(docker: &Docker) -> (RegistryProcess, String) {
    let registry = RegistryProcess::start();
    let reference = format!("{}/base/busybox:1", registry.host());
    run(docker.cmd().args(["tag", &docker.busybox_image(), &reference]));
    run(docker.cmd().args(["push", &reference]));
    (registry, reference)
}

/// Builds `context` with rbuild into docker (through a docker-archive) as `tag`.
pub fn rbuild_into_docker(docker: &Docker, store: &Path, context: &Path, tag: &str, args: &[&str]) {
    let archive = store.join(format!("{}.tar", tag.replace(['/', ':'], "_")));
    let output = format!("type=docker,dest={}", archive.display());
    run(rbuild(store)
        .args(["build", "--progress", "plain", "-t", tag, "--output", &output])
        .args(args)
        .arg(context));
    run(docker.cmd().args(["load", "-i"]).arg(&archive));
}

/// Builds `context` with `docker build` (BuildKit) as `tag`.
pub fn docker_build(docker: &Docker, context: &Path, tag: &str, args: &[&str]) {
    run(docker
        .cmd()
        .args(["build", "--network=none", "-q", "-t", tag])
        .args(args)
        .arg(context));
}

/// What `docker run` of an image prints.
pub fn docker_run(docker: &Docker, image: &str) -> String {
    run(docker.cmd().args(["run", "--rm", "--network=none", image]))
}

/// The busybox fixture as a context: its Dockerfile plus Debian's static busybox.
pub fn busybox_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("busybox").join("Dockerfile"),
        dir.path().join("Dockerfile"),
    )
    .unwrap();
    let busybox = spec_tests::tools::which("busybox").expect("busybox-static is installed by scripts/test");
    std::fs::copy(busybox, dir.path().join("busybox")).unwrap();
    dir
}

/// Builds the busybox base with rbuild into `store` as `rbuild-test/busybox:latest`; later
/// builds in the same store find it there by name. Returns the name.
pub fn rbuild_busybox(store: &Path) -> String {
    let context = busybox_context();
    let name = "rbuild-test/busybox:latest".to_owned();
    run(rbuild(store)
        .args(["build", "--progress", "plain", "-t", &name])
        .arg(context.path()));
    name
}

/// Writes `text` as `dir`'s Dockerfile.
pub fn dockerfile(dir: &Path, text: &str) {
    std::fs::write(dir.join("Dockerfile"), text).unwrap();
}

/// Whether runc is there to run RUN steps (in CI it must be).
pub fn runc_available() -> bool {
    spec_tests::tools::require(
        "runc",
        spec_tests::tools::which("runc").is_some(),
        "apt-get install runc",
    )
}

/// A store holding the busybox base rbuild built, its name, and an empty context; `None`
/// when runc is missing (outside CI, which fails instead).
pub fn busybox_store() -> Option<(tempfile::TempDir, String, tempfile::TempDir)> {
    if !runc_available() {
        return None;
    }
    let store = tempfile::tempdir().unwrap();
    let base = rbuild_busybox(store.path());
    Some((store, base, tempfile::tempdir().unwrap()))
}

/// The busybox base pushed to `registry` by rbuild; returns its reference.
pub fn push_base(registry: &str) -> String {
    let store = tempfile::tempdir().unwrap();
    let context = busybox_context();
    let reference = format!("{registry}/base/busybox:1");
    run(rbuild(store.path())
        .args(["build", "--progress", "plain", "--push", "-t", &reference])
        .arg(context.path()));
    reference
}

/// Each step's (instruction, cache outcome, remote cache), in order.
pub fn step_outcomes(metrics: &serde_json::Value) -> Vec<(String, String, Option<String>)> {
    metrics["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["instruction"].as_str().unwrap().to_owned(),
                s["cache"].as_str().unwrap().to_owned(),
                s["cache_from"].as_str().map(str::to_owned),
            )
        })
        .collect()
}
