//! A base image from any producer: rbuild builds on it what `docker build` (BuildKit) builds,
//! and docker and containerd run the result. Docker is the oracle for what a child inherits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use spec_tests::images::{config, run_config, tree, tree_differences};
use spec_tests::registry::{RegistryProcess, ServeOptions};
use spec_tests::tools::{Buildah, Ctr, Docker, installed, run, skopeo};

use crate::producers::{Base, Corpus, docker_made, docker_push, producers_fixture};
use crate::support::{docker_build, rbuild};

/// What a container runs when its image has no command of its own (some bases have none): it
/// shows what the child's steps left, as which user, where.
const PROBE: [&str; 3] = ["/bin/sh", "-c", "cat ran.txt hello.txt; id; pwd"];

/// How many bases are checked at once: the time goes in waiting for docker more than in CPU.
const WORKERS: usize = 2;

/// What `docker run` of `image` prints: its own command, or [`PROBE`] when it has none.
fn docker_output(docker: &Docker, image: &str, has_command: bool) -> String {
    let probe: &[&str] = if has_command { &[] } else { &PROBE };
    run(docker
        .cmd()
        .args(["run", "--rm", "--network=none", image])
        .args(probe))
}

/// Whether an image's run configuration (as [`run_config`] gives it) names a command.
fn has_command(run_config: &serde_json::Value) -> bool {
    run_config.get("Cmd").is_some() || run_config.get("Entrypoint").is_some()
}

/// Builds the child fixture on `base` with docker (the oracle) and with rbuild (pushed to
/// `registry`), and compares what docker (or containerd) sees of the two: the config, the
/// file tree, and what a container prints.
fn check(docker: &Docker, ctr: &Ctr, skopeo: &Path, registry: &RegistryProcess, store: &Path, base: &Base) {
    let child = producers_fixture("child");
    let oracle = format!("rbuild-test/corpus-oracle-{}", base.producer);
    docker_build(
        docker,
        &child,
        &oracle,
        &["--build-arg", &format!("BASE={}", base.oracle)],
    );
    let ours = format!("{}/out/{}:1", registry.host(), base.producer);
    run(rbuild(store)
        .args(["build", "--progress", "plain", "--push", "-t", &ours])
        .arg(format!("--build-arg=BASE={}", base.reference))
        .arg(&child));
    let want = config(docker, &oracle);
    let command = has_command(&want);
    let expected_output = docker_output(docker, &oracle, command);

    if base.zstd {
        // docker 20.10 cannot unpack zstd layers; containerd (the kubelet's pull path) can.
        let raw = run(skopeo_inspect(skopeo, &ours).args(["--config", "--raw"]));
        let got: serde_json::Value = serde_json::from_str(&raw).expect("config JSON");
        assert_eq!(
            want,
            run_config(&got["config"]),
            "image configs differ (docker vs rbuild)"
        );
        run(ctr.cmd().args(["images", "pull", "--plain-http", &ours]));
        let id = format!("corpus-{}-{}", base.producer, registry.addr().port());
        let probe: &[&str] = if command { &[] } else { &PROBE };
        let output = run(ctr.cmd().args(["run", "--rm", &ours, &id]).args(probe));
        run(ctr.cmd().args(["images", "rm", &ours]));
        assert_eq!(
            expected_output, output,
            "what the containers print (docker's vs rbuild's)"
        );
        return;
    }
    run(docker.cmd().args(["pull", &ours]));
    assert_eq!(
        want,
        config(docker, &ours),
        "image configs differ (docker vs rbuild)"
    );
    let differences = tree_differences(&tree(docker, &oracle), &tree(docker, &ours));
    assert!(
        differences.is_empty(),
        "file trees differ (docker vs rbuild):\n{}",
        differences.join("\n")
    );
    assert_eq!(
        expected_output,
        docker_output(docker, &ours, command),
        "what the containers print (docker's vs rbuild's)"
    );
}

/// Every producer's base: `FROM` it, a RUN and a COPY, pushed, pulled and run by docker (or
/// containerd, for zstd layers); the config, the file tree and what the container prints
/// equal what `docker build` of the same Dockerfile on the same base gives. Every producer is
/// tried; the failures are reported together.
#[test]
fn a_base_from_every_producer_is_built_on_as_docker_does() {
    let (Some(docker), Some(ctr), Some(skopeo), Some(buildah), Some(umoci)) = (
        Docker::get(),
        Ctr::get(),
        skopeo(),
        Buildah::get(),
        installed("umoci"),
    ) else {
        return;
    };
    let corpus = Corpus::make(&docker, &skopeo, &buildah, &umoci);
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                // A store for each worker: each rbuild process has one to itself.
                let store = tempfile::tempdir().unwrap();
                while let Some(base) = corpus.bases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let checked = catch_unwind(AssertUnwindSafe(|| {
                        check(&docker, &ctr, &skopeo, &corpus.registry, store.path(), base)
                    }));
                    if let Err(panic) = checked {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        let failure = format!("{} ({}): {message}", base.producer, base.reference);
                        failures.lock().unwrap().push(failure);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} producers' bases failed:\n\n{}",
        failures.len(),
        corpus.bases.len(),
        failures.join("\n\n")
    );
}

/// Images docker's classic builder, `docker commit` and `docker import` made (`null`s in their
/// configs): `rbuild pull` gets the manifest docker pushed, `rbuild inspect` shows docker's
/// configuration (and writes no `null`), `COPY --from=<image>` copies what docker copies, and
/// `rbuild push` to another registry gives back the very manifest, which docker pulls and runs.
#[test]
fn docker_made_images_pull_inspect_copy_from_and_push() {
    let (Some(docker), Some(skopeo)) = (Docker::get(), skopeo()) else {
        return;
    };
    let made = docker_made(&docker);
    let mut registry = RegistryProcess::start();
    let store = tempfile::tempdir().unwrap();
    let images = [
        ("docker-classic", &made.classic),
        ("docker-commit-bare", &made.commit_bare),
        ("docker-import-bare", &made.import_bare),
    ];
    let mut pushed = Vec::new();
    for (producer, image) in images {
        let reference = docker_push(&docker, &registry, image, producer);
        let digest = run(skopeo_inspect(&skopeo, &reference).arg("--format={{.Digest}}"))
            .trim()
            .to_owned();
        let pulled = run(rbuild(store.path()).args(["pull", &reference]));
        assert_eq!(
            pulled.trim(),
            format!("{reference}@{digest}"),
            "rbuild pull {producer}"
        );
        let text = run(rbuild(store.path()).args(["inspect", &reference]));
        let report: serde_json::Value = serde_json::from_str(&text).expect("inspect JSON");
        assert!(!has_null(&report), "rbuild inspect writes a null:\n{text}");
        assert_eq!(
            config(&docker, image),
            run_config(&report["config"]["config"]),
            "rbuild inspect {producer} against docker image inspect"
        );
        pushed.push((producer, reference, digest));
    }

    let context = tempfile::tempdir().unwrap();
    let copies: String = pushed
        .iter()
        .map(|(producer, reference, _)| format!("COPY --from={reference} /srv/app /from/{producer}\n"))
        .collect();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {}\n{copies}", pushed[0].1),
    )
    .unwrap();
    let (theirs, ours) = (
        "rbuild-test/corpus-copy-from-docker",
        "rbuild-test/corpus-copy-from-rbuild",
    );
    docker_build(&docker, context.path(), theirs, &[]);
    crate::support::rbuild_into_docker(&docker, store.path(), context.path(), ours, &[]);
    let differences = tree_differences(&tree(&docker, theirs), &tree(&docker, ours));
    assert!(
        differences.is_empty(),
        "COPY --from: file trees differ (docker vs rbuild):\n{}",
        differences.join("\n")
    );

    // Another registry on the same address: a push there must carry everything.
    registry.kill();
    let empty = RegistryProcess::start_with(ServeOptions {
        addr: registry.host(),
        ..ServeOptions::default()
    });
    for (producer, reference, digest) in &pushed {
        let out = run(rbuild(store.path()).args(["push", reference]));
        assert_eq!(
            out.trim(),
            format!("{reference}@{digest}"),
            "rbuild push {producer}"
        );
        let copy = tempfile::tempdir().unwrap();
        run(std::process::Command::new(&skopeo)
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:copy", copy.path().display())));
        run(docker.cmd().args(["rmi", reference]));
        run(docker.cmd().args(["pull", reference]));
        let printed = run(docker
            .cmd()
            .args([
                "run",
                "--rm",
                "--network=none",
                "--user",
                "0",
                "--entrypoint",
                "/bin/cat",
                reference,
            ])
            .arg("/srv/app/base.txt"));
        assert!(printed.starts_with("base made by"), "{producer}: {printed}");
    }
    let (ok, report) = empty.fsck();
    assert!(ok, "{report}");
}

/// Whether a JSON document holds a `null` anywhere: rbuild writes absent fields by omitting
/// them, whatever it read.
fn has_null(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Array(items) => items.iter().any(has_null),
        serde_json::Value::Object(members) => members.values().any(has_null),
        _ => false,
    }
}

/// `skopeo inspect` of an image in a loopback registry.
fn skopeo_inspect(skopeo: &Path, reference: &str) -> std::process::Command {
    let mut command = std::process::Command::new(skopeo);
    command
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{reference}"));
    command
}
