//! The same Dockerfile through `docker build` and `rbuild build`: the same image, as a
//! container sees it.

use spec_tests::images::{config, tree, tree_differences};
use spec_tests::tools::Docker;

use crate::support::{base_image, docker_build, docker_run, fixture, rbuild_into_docker};

fn compare(case: &str) {
    compare_context(case, &fixture(case));
}

/// Builds `context` with docker and rbuild (both given the busybox base as `BASE`) and
/// compares the images.
pub fn compare_context(case: &str, context: &std::path::Path) {
    compare_with(case, context, &[]);
}

/// [`compare_context`], with `rbuild_flags` given to rbuild only.
fn compare_with(case: &str, context: &std::path::Path, rbuild_flags: &[&str]) {
    let Some(docker) = Docker::get() else { return };
    let (_base_registry, base) = base_image(&docker);
    let arg = format!("BASE={base}");
    let args = ["--build-arg", arg.as_str()];
    let store = tempfile::tempdir().unwrap();
    let (theirs, ours) = (
        format!("rbuild-test/docker-{case}"),
        format!("rbuild-test/rbuild-{case}"),
    );
    docker_build(&docker, context, &theirs, &args);
    let rbuild_args: Vec<&str> = args.iter().chain(rbuild_flags).copied().collect();
    rbuild_into_docker(&docker, store.path(), context, &ours, &rbuild_args);

    let differences = tree_differences(&tree(&docker, &theirs), &tree(&docker, &ours));
    assert!(
        differences.is_empty(),
        "file trees differ (docker vs rbuild):\n{}",
        differences.join("\n")
    );
    assert_eq!(
        config(&docker, &theirs),
        config(&docker, &ours),
        "image configs differ (docker vs rbuild)"
    );
    let expected = context.join("expected-output.txt");
    if expected.exists() {
        let want = std::fs::read_to_string(expected).unwrap();
        assert_eq!(docker_run(&docker, &theirs), want, "docker's image");
        assert_eq!(docker_run(&docker, &ours), want, "rbuild's image");
    }
}

#[test]
fn copy_semantics_match_docker() {
    compare("copy-semantics");
}

#[test]
fn multistage_matches_docker() {
    compare("multistage");
}

#[test]
fn scratch_only_matches_docker() {
    compare("scratch-only");
}

#[test]
fn busybox_base_matches_docker() {
    let context = crate::support::busybox_context();
    compare_context("busybox", context.path());
}

#[test]
fn run_filesystem_changes_match_docker() {
    compare("run-filesystem");
}

/// Without overlayfs (copies of the layers, compared after each RUN), the same image.
#[test]
fn run_filesystem_changes_match_docker_with_copied_snapshots() {
    compare_with(
        "run-filesystem-native",
        &fixture("run-filesystem"),
        &["--snapshotter", "native"],
    );
}

#[test]
fn run_stages_with_cache_and_bind_mounts_match_docker() {
    compare("run-stages-cache");
}

#[test]
fn run_env_users_and_shell_match_docker() {
    compare("run-env-user");
}
