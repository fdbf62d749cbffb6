//! Where images go: a registry (then docker and skopeo pull them), an OCI layout, docker —
//! and what a user sees when a build cannot work.

use rbuild_oci::Digest;
use spec_tests::images::tree;
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::{Docker, output, run, skopeo};

use crate::support::{base_image, docker_run, fixture, rbuild, rbuild_into_docker};

/// What a fixture's image prints when run (its `expected-output.txt`).
fn expected_output(case: &str) -> String {
    std::fs::read_to_string(fixture(case).join("expected-output.txt")).unwrap()
}

#[test]
fn push_to_rbuild_serve_then_docker_pull_and_run() {
    let Some(docker) = Docker::get() else { return };
    let (_base_registry, base) = base_image(&docker);
    let registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    for case in ["multistage", "run-stages-cache"] {
        let image = format!("{}/apps/{case}:1", registry.host());
        run(rbuild(store.path())
            .args(["build", "--progress", "plain", "--push", "-t", &image])
            .arg("--build-arg")
            .arg(format!("BASE={base}"))
            .arg(fixture(case)));
        run(docker.cmd().args(["pull", &image]));
        assert_eq!(docker_run(&docker, &image), expected_output(case), "{case}");
    }
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

/// A build that only tags its image keeps the layers uncompressed, as docker's image store
/// does; `rbuild push` gzips them on the way out, to the very bytes a build with `--push`
/// writes, and docker runs what it pushed.
#[test]
fn a_tagged_image_is_kept_uncompressed_and_pushed_gzipped() {
    let Some(docker) = Docker::get() else { return };
    let (_base_registry, base) = base_image(&docker);
    let registry = RegistryProcess::start();
    let case = "multistage";
    let build = |store: &std::path::Path, image: &str, args: &[&str]| {
        run(rbuild(store)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "-t", image])
            .args(args)
            .arg(format!("--build-arg=BASE={base}"))
            .arg(fixture(case)))
        .trim()
        .to_owned()
    };
    let layer_types = |store: &std::path::Path, image: &str| -> Vec<String> {
        let report: serde_json::Value =
            serde_json::from_str(&run(rbuild(store).args(["inspect", image]))).unwrap();
        report["manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap().to_owned())
            .collect()
    };

    let local = tempfile::tempdir().unwrap();
    let later = format!("{}/apps/pushed-later:1", registry.host());
    let built = build(local.path(), &later, &[]);
    let types = layer_types(local.path(), &later);
    assert!(
        types.contains(&rbuild_oci::media_type::OCI_LAYER_TAR.to_owned())
            && !types.contains(&rbuild_oci::media_type::OCI_LAYER_GZIP.to_owned()),
        "layers kept locally: {types:?}"
    );
    let pushed = run(rbuild(local.path()).args(["push", &later]));
    let pushed_digest = pushed.trim().rsplit('@').next().unwrap().to_owned();
    assert_ne!(pushed_digest, built, "the pushed manifest names gzip layers");
    let again = run(rbuild(local.path()).args(["push", &later]));
    assert_eq!(again, pushed, "pushing again gives the same image");
    let cached = build(local.path(), &later, &["--push"]);
    assert_eq!(
        cached, pushed_digest,
        "a build from the cache that pushes gzips too"
    );

    let direct = format!("{}/apps/pushed-directly:1", registry.host());
    let clean = tempfile::tempdir().unwrap();
    let pushed_directly = build(clean.path(), &direct, &["--push"]);
    assert_eq!(
        pushed_digest, pushed_directly,
        "compressed later = compressed while building"
    );
    assert!(
        !layer_types(clean.path(), &direct).contains(&rbuild_oci::media_type::OCI_LAYER_TAR.to_owned()),
        "a build that pushes writes its layers gzipped"
    );

    run(docker.cmd().args(["pull", &later]));
    assert_eq!(docker_run(&docker, &later), expected_output(case));

    // `rbuild push --compression` chooses how the kept layers leave.
    let zstd = format!("{}/apps/pushed-zstd:1", registry.host());
    build(local.path(), &zstd, &[]);
    run(rbuild(local.path()).args(["push", "--compression", "zstd", &zstd]));
    let elsewhere = tempfile::tempdir().unwrap();
    run(rbuild(elsewhere.path()).args(["pull", &zstd]));
    let types = layer_types(elsewhere.path(), &zstd);
    assert!(
        types.contains(&rbuild_oci::media_type::OCI_LAYER_ZSTD.to_owned())
            && !types.contains(&rbuild_oci::media_type::OCI_LAYER_TAR.to_owned()),
        "pushed with --compression zstd: {types:?}"
    );
    let (ok, report) = registry.fsck();
    assert!(ok, "{report}");
}

/// Photographs, video and archives do not compress: rbuild stores such gzip blocks without
/// searching them (see `rbuild_layer::gzip`). docker's and containerd's gzip readers (Go's)
/// must take them, between deflated ones, and give back the same bytes.
#[test]
fn incompressible_files_come_back_whole_through_docker_and_containerd() {
    let (Some(docker), Some(ctr)) = (Docker::get(), spec_tests::tools::Ctr::get()) else {
        return;
    };
    let (_base_registry, base) = base_image(&docker);
    let registry = RegistryProcess::start();
    let ctx = tempfile::tempdir().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let random: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(ctx.path().join("random.bin"), &random).unwrap();
    std::fs::write(ctx.path().join("text.txt"), "compressible line\n".repeat(100_000)).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY random.bin text.txt /data/\nCMD [\"md5sum\", \"/data/random.bin\", \"/data/text.txt\"]\n",
    )
    .unwrap();
    let expected = run(std::process::Command::new("md5sum")
        .current_dir(ctx.path())
        .args(["random.bin", "text.txt"]))
    .replace("random.bin", "/data/random.bin")
    .replace("text.txt", "/data/text.txt");
    let image = format!("{}/apps/incompressible:1", registry.host());
    let store = tempfile::tempdir().unwrap();
    run(rbuild(store.path())
        .args(["build", "--progress", "plain", "--push", "-t", &image])
        .arg(format!("--build-arg=BASE={base}"))
        .arg(ctx.path()));
    run(docker.cmd().args(["pull", &image]));
    assert_eq!(docker_run(&docker, &image), expected, "docker");
    run(ctr.cmd().args(["images", "pull", "--plain-http", &image]));
    let id = format!("rbuild-incompressible-{}", registry.addr().port());
    assert_eq!(
        run(ctr.cmd().args(["run", "--rm", &image, &id])),
        expected,
        "containerd"
    );
    run(ctr.cmd().args(["images", "rm", &image]));
}

#[test]
fn oci_layout_output_is_read_by_skopeo() {
    skopeo_copies_the_oci_output("layout", "oci");
}

#[test]
fn oci_tar_output_is_read_by_skopeo() {
    skopeo_copies_the_oci_output("image.tar", "oci-archive");
}

/// Builds the multistage fixture with `--output type=oci,dest=<store>/<dest>` (a layout
/// directory, or a tar when `dest` ends in `.tar`), copies it with skopeo's `transport` into
/// a registry, and checks that docker pulls and runs it.
fn skopeo_copies_the_oci_output(dest: &str, transport: &str) {
    let (Some(docker), Some(skopeo)) = (Docker::get(), skopeo()) else {
        return;
    };
    let (_base_registry, base) = base_image(&docker);
    let registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    let dest = store.path().join(dest);
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
        .arg(format!("type=oci,dest={}", dest.display()))
        .arg(fixture("multistage")));
    let target = format!("{}/apps/from-oci:1", registry.host());
    run(std::process::Command::new(skopeo)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("{transport}:{}:multistage:oci", dest.display()))
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

#[test]
fn named_contexts_from_a_directory_and_an_oci_layout() {
    let store = tempfile::tempdir().unwrap();
    let layout = store.path().join("scratch-layout");
    run(rbuild(store.path())
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            "scratch-only:tagged",
            "--output",
        ])
        .arg(format!("type=oci,dest={}", layout.display()))
        .arg(fixture("scratch-only")));
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("note.txt"), "from a named directory\n").unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY --from=layout /hello.txt /from-layout.txt\nCOPY --from=notes note.txt /from-dir.txt\n",
    )
    .unwrap();
    let out_layout = store.path().join("out");
    let result = output(
        rbuild(store.path())
            .args(["build", "--progress", "plain", "--build-arg", "UNUSED=1"])
            .arg("--build-context")
            .arg(format!(
                "layout=oci-layout://{}:scratch-only:tagged",
                layout.display()
            ))
            .arg("--build-context")
            .arg(format!("notes={}", extra.path().display()))
            .arg("--output")
            .arg(format!("type=oci,dest={}", out_layout.display()))
            .arg(ctx.path()),
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(stderr.contains("not consumed: [UNUSED]"), "{stderr}");
    let tree = spec_tests::images::layout_tree(&out_layout);
    assert_eq!(
        tree["from-layout.txt"].detail,
        Digest::sha256_of(b"hello\n").to_string()
    );
    assert_eq!(
        tree["from-dir.txt"].detail,
        Digest::sha256_of(b"from a named directory\n").to_string()
    );
}

#[test]
fn containerd_pulls_and_runs_rbuild_images_with_gzip_and_zstd_layers() {
    let (Some(docker), Some(ctr)) = (Docker::get(), spec_tests::tools::Ctr::get()) else {
        return;
    };
    let (_base_registry, base) = base_image(&docker);
    let registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    for (compression, case) in [
        ("gzip", "multistage"),
        ("zstd", "run-filesystem"),
        ("gzip", "run-stages-cache"),
    ] {
        let expected = expected_output(case);
        let image = format!("{}/k8s/{case}:{compression}", registry.host());
        run(rbuild(store.path())
            .args([
                "build",
                "--progress",
                "plain",
                "--push",
                "--compression",
                compression,
                "-t",
                &image,
            ])
            .arg("--build-arg")
            .arg(format!("BASE={base}"))
            .arg(fixture(case)));
        run(ctr.cmd().args(["images", "pull", "--plain-http", &image]));
        let id = format!("rbuild-{case}-{}", registry.addr().port());
        let out = run(ctr.cmd().args(["run", "--rm", &image, &id]));
        assert_eq!(out, expected, "{case} with {compression} layers");
        run(ctr.cmd().args(["images", "rm", &image]));
    }
}
