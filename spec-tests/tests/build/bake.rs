//! `rbuild bake --print` on the compose fixture (`fixtures/bake/compose`, three services:
//! app and worker sharing a base stage, tools reading app through `service:app`) prints the
//! targets as `docker buildx bake --print` does, and `rbuild bake --push` builds them in one
//! process: the shared stage once, each image as building it alone gives, each run by docker.

use std::path::Path;
use std::process::Command;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spec_tests::registry::RegistryProcess;
use spec_tests::tools::Docker;
use spec_tests::tools::{output, run};

use crate::support::{docker_run, push_base, rbuild, runc_available, step_outcomes};

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

/// Each step's instruction and cache outcome in a target's metrics.
fn outcomes(metrics: &Path, target: &str) -> Vec<(String, String)> {
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(metrics.join(format!("{target}.json"))).unwrap()).unwrap();
    step_outcomes(&metrics)
        .into_iter()
        .map(|(instruction, outcome, _)| (instruction, outcome))
        .collect()
}

#[test]
fn bake_builds_the_compose_services_in_one_process_and_docker_runs_them() {
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

    // The base stage app and worker share is built once: worker finds it in the cache.
    let shared = "RUN echo shared > /shared".to_owned();
    assert!(outcomes(&metrics, "app").contains(&(shared.clone(), "miss".to_owned())));
    assert!(outcomes(&metrics, "worker").contains(&(shared, "hit".to_owned())));

    // Each image is the one building it alone gives.
    let alone = tempfile::tempdir().unwrap();
    let app_alone = run(rbuild(alone.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "build",
            "--progress",
            "plain",
            "--compression",
            "gzip",
            "--target",
            "app",
        ])
        .args([
            "--build-arg",
            &format!("BASE={base}"),
            "--label",
            "org.example.role=app",
        ])
        .arg(&dir));
    assert_eq!(app_alone.trim(), built["app"]);

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
