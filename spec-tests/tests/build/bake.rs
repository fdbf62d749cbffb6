//! `rbuild bake --print` on the compose fixture (`fixtures/bake/compose`, three services:
//! app and worker sharing a base stage, tools reading app through `service:app`) prints the
//! targets as `docker buildx bake --print` does, and `rbuild bake --push` builds them in one
//! process, app and worker at the same time and tools after app: the shared stage once, each
//! image as building it alone gives, each run by docker.

use std::path::Path;
use std::process::Command;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::Docker;
use spec_tests::tools::{output, run};

use crate::support::{busybox_store, docker_run, push_base, rbuild, runc_available, step_outcomes};

/// `rbuild bake` in the compose fixture, with none of the variables it reads set.
fn bake(store: &Path) -> (Command, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/bake/compose")
        .canonicalize()
        .unwrap();
    let mut command = rbuild(store);
    command.current_dir(&dir).arg("bake");
    for var in [
        "BASE",
        "TAG",
        "REGISTRY",
        "GREETING",
        "BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP",
    ] {
        command.env_remove(var);
    }
    (command, dir)
}

#[test]
fn bake_print_shows_the_compose_services_as_buildx_does() {
    let store = tempfile::tempdir().unwrap();
    let (mut command, dir) = bake(store.path());
    command.args(["--print", "--set", "*.args.BASE=127.0.0.1:5000/base/busybox:1"]);
    let printed: Value =
        serde_json::from_str(&run(command.env("TAG", "1.0").env("GREETING", "hey"))).unwrap();
    let at = |p: &str| dir.join(p).display().to_string();
    let context = dir.display().to_string();
    let want = json!({
        "group": { "default": { "targets": ["tools", "app", "worker"] } },
        "target": {
            "app": {
                "context": context,
                "dockerfile": at("Dockerfile"),
                "args": { "BASE": "127.0.0.1:5000/base/busybox:1", "GREETING": "hey" },
                "labels": { "org.example.role": "app" },
                "tags": ["127.0.0.1:5000/app:1.0"],
                "target": "app",
                "cache-from": ["type=registry,ref=127.0.0.1:5000/cache:app"],
                "cache-to": ["type=registry,ref=127.0.0.1:5000/cache:app,mode=max"]
            },
            "tools": {
                "context": at("tools"),
                "dockerfile": at("tools/Dockerfile"),
                "args": { "BASE": "127.0.0.1:5000/base/busybox:1" },
                "contexts": { "app": "target:app" },
                "tags": ["127.0.0.1:5000/tools:1.0"],
                "no-cache": true
            },
            "worker": {
                "context": context,
                "dockerfile": at("Dockerfile"),
                "args": { "BASE": "127.0.0.1:5000/base/busybox:1" },
                "tags": ["127.0.0.1:5000/worker:1.0"],
                "target": "worker",
                "secret": [format!("id=token,src={}", at("token.txt"))]
            }
        }
    });
    assert_eq!(printed, want, "{printed:#}");
}

#[test]
fn an_unknown_target_fails_clearly() {
    let store = tempfile::tempdir().unwrap();
    let (mut command, _) = bake(store.path());
    let out = output(command.args(["--print", "nope"]));
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no target or group \"nope\" in "),
        "{stderr}"
    );
}

/// `name digest` lines of `rbuild bake`'s output, as a map.
fn digests(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, digest)| (name.to_owned(), digest.to_owned()))
        .collect()
}

/// A target's `--metrics-file`, as bake wrote it under `metrics`.
fn target_metrics(metrics: &Path, target: &str) -> Value {
    serde_json::from_slice(&std::fs::read(metrics.join(format!("{target}.json"))).unwrap()).unwrap()
}

/// Each step's instruction and cache outcome in a target's metrics.
fn outcomes(metrics: &Path, target: &str) -> Vec<(String, String)> {
    step_outcomes(&target_metrics(metrics, target))
        .into_iter()
        .map(|(instruction, outcome, _)| (instruction, outcome))
        .collect()
}

/// When a target's build started and ended, milliseconds since the Unix epoch.
fn span(metrics: &Path, target: &str) -> (f64, f64) {
    let metrics = target_metrics(metrics, target);
    let started = metrics["started_ms"].as_f64().unwrap();
    (started, started + metrics["duration_ms"].as_f64().unwrap())
}

/// `rbuild build` of the compose fixture's Dockerfile `dockerfile_dir` in a store of its own,
/// as bake builds a target there: `SOURCE_DATE_EPOCH` fixed, layers gzip-compressed for the
/// registry; returns the image digest.
fn build_alone(store: &Path, dockerfile_dir: &Path, base: &str, flags: &[&str]) -> String {
    let digest = run(rbuild(store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress", "plain", "--compression", "gzip"])
        .args(["--build-arg", &format!("BASE={base}")])
        .args(flags)
        .arg(dockerfile_dir));
    digest.trim().to_owned()
}

#[test]
fn bake_builds_the_compose_services_at_once_and_docker_runs_them() {
    let Some(docker) = Docker::get() else { return };
    if !runc_available() {
        return;
    }
    let registry = RegistryProcess::start();
    let host = registry.host();
    let base = push_base(&host);
    let store = tempfile::tempdir().unwrap();
    let metrics = store.path().join("metrics");
    let (mut command, dir) = bake(store.path());
    let env = [
        ("REGISTRY", host.as_str()),
        ("BASE", base.as_str()),
        ("TAG", "1"),
        ("SOURCE_DATE_EPOCH", "1700000000"),
    ];
    let stdout = run(command
        .envs(env)
        .args(["--push", "--progress", "plain", "--metrics-dir"])
        .arg(&metrics));
    let built = digests(&stdout);
    assert_eq!(
        built.keys().collect::<Vec<_>>(),
        ["app", "tools", "worker"],
        "{stdout}"
    );

    // app and worker, which read no other target, are built at the same time; tools, which
    // reads app's image, after app.
    let (app, worker, tools) = (
        span(&metrics, "app"),
        span(&metrics, "worker"),
        span(&metrics, "tools"),
    );
    assert!(
        app.0 < worker.1 && worker.0 < app.1,
        "app {app:?} and worker {worker:?} did not overlap"
    );
    assert!(
        tools.0 >= app.1,
        "tools {tools:?} started before app {app:?} ended"
    );

    // The base stage they share is built once: one of them builds it while the other waits,
    // then finds it in the cache.
    let shared = "RUN echo shared > /shared".to_owned();
    let mut outcomes_of_shared: Vec<String> = ["app", "worker"]
        .iter()
        .flat_map(|target| outcomes(&metrics, target))
        .filter(|(instruction, _)| *instruction == shared)
        .map(|(_, outcome)| outcome)
        .collect();
    outcomes_of_shared.sort();
    assert_eq!(outcomes_of_shared, ["hit", "miss"]);

    // Each image is the one building it alone gives, in a store of its own.
    let alone = tempfile::tempdir().unwrap();
    let app_alone = build_alone(
        alone.path(),
        &dir,
        &base,
        &[
            "--target",
            "app",
            "--label",
            "org.example.role=app",
            "-t",
            "alone/app:1",
        ],
    );
    assert_eq!(app_alone, built["app"], "app");
    let token = format!("id=token,src={}", dir.join("token.txt").display());
    let worker_alone = build_alone(
        alone.path(),
        &dir,
        &base,
        &["--target", "worker", "--secret", &token],
    );
    assert_eq!(worker_alone, built["worker"], "worker");
    let tools_alone = build_alone(
        alone.path(),
        &dir.join("tools"),
        &base,
        &["--no-cache", "--build-context", "app=docker-image://alone/app:1"],
    );
    assert_eq!(tools_alone, built["tools"], "tools");

    for (image, expected) in [
        ("app", "shared\nhello from app\n"),
        ("tools", "hello from app\n"),
        ("worker", "shared\nworker\n"),
    ] {
        let reference = format!("{host}/{image}:1");
        run(docker.cmd().args(["pull", "-q", &reference]));
        assert_eq!(docker_run(&docker, &reference), expected, "{image}");
    }
}

/// A failing target fails the targets that read it and stops the others, as `docker buildx
/// bake` does by default (fail-fast): `slow`, whose `sleep 300` would hold the bake for five
/// minutes, is canceled, and the errors name the failure and what it took down.
#[test]
fn a_failed_target_fails_the_targets_that_read_it_and_stops_the_others() {
    let Some((store, base, dir)) = busybox_store() else {
        return;
    };
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("broken/Dockerfile", "FROM scratch\nCOPY missing.txt /\n");
    write("reader/Dockerfile", "FROM scratch\nCOPY --from=broken / /\n");
    write("slow/Dockerfile", &format!("FROM {base}\nRUN sleep 300\n"));
    write(
        "compose.yaml",
        "services:
  broken:
    build: {context: broken}
  reader:
    build: {context: reader, additional_contexts: {broken: service:broken}}
  slow:
    build: {context: slow}
",
    );
    let out = output(
        rbuild(store.path())
            .current_dir(dir.path())
            .args(["bake", "--progress", "plain"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(digests(&stdout).is_empty(), "{stdout}");
    assert!(stderr.contains("2 targets failed"), "{stderr}");
    assert!(stderr.contains("target broken: "), "{stderr}");
    assert!(
        stderr.contains("target reader: target broken, which it reads, failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("canceled, as another target failed: slow"),
        "{stderr}"
    );
}
