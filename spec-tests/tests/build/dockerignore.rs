//! Which `.dockerignore` applies: `<Dockerfile>.dockerignore` beside the Dockerfile, else the
//! context's own, and never a file in the directory rbuild was started from. Each test starts
//! rbuild from a working directory whose own `.dockerignore` would let the context's secret in.

use spec_tests::images::layout_tree;
use spec_tests::tools::output;

use crate::support::{build_to_layout_with, rbuild};

/// A context holding `secret.env` and `app.txt`, whose `.dockerignore` excludes the secret,
/// and a working directory whose `.dockerignore` excludes nothing that matters.
struct Setup {
    store: tempfile::TempDir,
    context: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

fn setup() -> Setup {
    let setup = Setup {
        store: tempfile::tempdir().unwrap(),
        context: tempfile::tempdir().unwrap(),
        cwd: tempfile::tempdir().unwrap(),
    };
    let context = setup.context.path();
    std::fs::write(context.join("secret.env"), "TOKEN=hunter2\n").unwrap();
    std::fs::write(context.join("app.txt"), "app\n").unwrap();
    std::fs::write(context.join(".dockerignore"), "secret.env\n").unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    std::fs::write(setup.cwd.path().join(".dockerignore"), "nothing-here\n").unwrap();
    setup
}

/// The paths in the image built from `setup` with `extra` arguments, started from the
/// working directory `setup.cwd`.
fn image_files(setup: &Setup, extra: &[&str]) -> Vec<String> {
    let store = setup.store.path();
    let mut command = rbuild(store);
    command.current_dir(setup.cwd.path());
    let layout = build_to_layout_with(&mut command, store, setup.context.path(), extra);
    layout_tree(&layout).into_keys().collect()
}

#[test]
fn the_working_directory_dockerignore_never_applies() {
    let setup = setup();
    let files = image_files(&setup, &[]);
    assert!(files.contains(&"app.txt".to_owned()), "{files:?}");
    assert!(
        !files.contains(&"secret.env".to_owned()),
        "the context's .dockerignore was not applied: {files:?}"
    );
}

#[test]
fn a_dockerfile_inside_the_context_without_its_own_ignore_file_uses_the_contexts() {
    let setup = setup();
    let sub = setup.context.path().join("docker");
    std::fs::create_dir(&sub).unwrap();
    let dockerfile = sub.join("app.Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nCOPY . /\n").unwrap();
    let files = image_files(&setup, &["-f", dockerfile.to_str().unwrap()]);
    assert!(files.contains(&"app.txt".to_owned()), "{files:?}");
    assert!(!files.contains(&"secret.env".to_owned()), "{files:?}");
}

#[test]
fn a_dockerfile_outside_the_context_uses_its_own_ignore_file_else_the_contexts() {
    let setup = setup();
    let elsewhere = tempfile::tempdir().unwrap();
    let dockerfile = elsewhere.path().join("app.Dockerfile");
    std::fs::write(&dockerfile, "FROM scratch\nCOPY . /\n").unwrap();
    let files = image_files(&setup, &["-f", dockerfile.to_str().unwrap()]);
    assert!(!files.contains(&"secret.env".to_owned()), "{files:?}");

    // `<Dockerfile>.dockerignore` replaces the context's file, as with docker.
    std::fs::write(elsewhere.path().join("app.Dockerfile.dockerignore"), "app.txt\n").unwrap();
    let files = image_files(&setup, &["-f", dockerfile.to_str().unwrap()]);
    assert!(!files.contains(&"app.txt".to_owned()), "{files:?}");
    assert!(files.contains(&"secret.env".to_owned()), "{files:?}");
}

#[test]
fn rbuild_check_reads_the_same_ignore_file_as_the_build() {
    let setup = setup();
    std::fs::write(
        setup.context.path().join("Dockerfile"),
        "FROM scratch\nCOPY secret.env /\n",
    )
    .unwrap();
    let out = output(
        rbuild(setup.store.path())
            .current_dir(setup.cwd.path())
            .arg("check")
            .arg(setup.context.path()),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CopyIgnoredFile"), "{text}");
}
