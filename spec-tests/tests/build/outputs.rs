//! Where images go: a registry (then docker and skopeo pull them), an OCI layout, docker —
//! and what a user sees when a build cannot work.

use rbuild_oci::Digest;
use spec_tests::images::tree;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Docker, output, run, skopeo};

use crate::support::{base_image, docker_run, fixture, rbuild, rbuild_into_docker};

#[test]
fn push_to_rbuild_serve_then_docker_pull_and_run() {
    let Some(docker) = Docker::get() else { return };
    let base = base_image(&docker);
    let registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    let image = format!("{}/apps/multistage:1", registry.host());
    run(rbuild(store.path())
        .args([
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &image,
            "--build-arg",
        ])
        .arg(format!("BASE={base}"))
        .arg(fixture("multistage")));
    run(docker.cmd().args(["pull", &image]));
    assert_eq!(docker_run(&docker, &image), "a\nb\nc\n");
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

#[test]
fn oci_layout_output_is_read_by_skopeo() {
    let (Some(docker), Some(skopeo)) = (Docker::get(), skopeo()) else {
        return;
    };
    let base = base_image(&docker);
    let registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    let layout = store.path().join("layout");
    run(rbuild(store.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "multistage:oci",
            "--build-arg",
        ])
        .arg(format!("BASE={base}"))
        .arg("--output")
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(fixture("multistage")));
    let target = format!("{}/apps/from-oci:1", registry.host());
    run(std::process::Command::new(skopeo)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multistage:oci", layout.display()))
        .arg(format!("docker://{target}")));
    run(docker.cmd().args(["pull", &target]));
    assert_eq!(docker_run(&docker, &target), "a\nb\nc\n");
}

#[test]
fn newer_syntax_gives_the_expected_tree() {
    let Some(docker) = Docker::get() else { return };
    let store = tempfile::tempdir().unwrap();
    let context = fixture("newer-syntax");
    rbuild_into_docker(&docker, store.path(), &context, "rbuild-test/newer-syntax", &[]);
    let seen: Vec<String> = tree(&docker, "rbuild-test/newer-syntax")
        .iter()
        .map(|(path, node)| match node.kind.as_str() {
            "file" => format!("file {path} {:o} {}", node.mode, node.detail),
            kind => format!("{kind} {path}"),
        })
        .collect();
    // expected-tree.txt: `dir PATH` or `file PATH MODE CONTENT` (content without its newline).
    let expected: Vec<String> = std::fs::read_to_string(context.join("expected-tree.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.splitn(4, ' ').collect();
            match parts.as_slice() {
                ["file", path, mode, content] => {
                    format!(
                        "file {path} {mode} {}",
                        Digest::sha256_of(format!("{content}\n").as_bytes())
                    )
                }
                [kind, path, ..] => format!("{kind} {path}"),
                _ => panic!("bad line in expected-tree.txt: {line}"),
            }
        })
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn mistakes_are_reported_with_the_instruction_and_path() {
    let store = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    let cases = [
        (
            "FROM scratch\nCOPY missing.txt /\n",
            "Dockerfile:2",
            "missing.txt",
        ),
        (
            "FROM scratch\nCOPY ../outside /\n",
            "Dockerfile:2",
            "outside the build context",
        ),
        (
            "FROM scratch\nCOPY --chown=nobody:nogroup Dockerfile /\n",
            "Dockerfile:2",
            "nobody",
        ),
        ("FROM 127.0.0.1:1/nothing:here\n", "Dockerfile:1", "127.0.0.1:1"),
        ("FROM scratch\nBOGUS x\n", "Dockerfile", "BOGUS"),
    ];
    for (dockerfile, location, detail) in cases {
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = output(
            rbuild(store.path())
                .args(["build", "--progress", "plain"])
                .arg(ctx.path()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{dockerfile:?} should fail");
        assert!(
            stderr.contains(location) && stderr.contains(detail),
            "{dockerfile:?}:\n{stderr}"
        );
    }
}
