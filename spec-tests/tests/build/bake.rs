//! `rbuild bake --print` on the compose fixture (`fixtures/bake/compose`, three services:
//! app and worker sharing a base stage, tools reading app through `service:app`) prints the
//! targets as `docker buildx bake --print` does. No docker needed: nothing is built.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use spec_tests::tools::{output, run};

use crate::support::rbuild;

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
fn bake_without_print_or_with_an_unknown_target_fails_clearly() {
    let store = tempfile::tempdir().unwrap();
    let (mut command, _) = bake(store.path());
    let out = output(&mut command);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: rbuild bake cannot build yet: use --print to see the targets"
    );

    let (mut command, _) = bake(store.path());
    let out = output(command.args(["--print", "nope"]));
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no target or group \"nope\" in "),
        "{stderr}"
    );
}
