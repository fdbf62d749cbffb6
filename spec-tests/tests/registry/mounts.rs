//! Pushing an image built on a base from the same registry sends only the new layers: rbuild
//! remembers which repositories each blob of its store was pulled from or pushed to, and
//! mounts the base's layers from there (`POST ?mount=&from=`) as docker does — with no auth,
//! htpasswd and the token service (whose token must then also grant `pull` on the source).
//!
//! Every push goes through a forwarder that counts the bytes the registry received, so the
//! proof does not rest on what rbuild says it sent.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use spec_tests::proxy::CountingProxy;
use spec_tests::registry::{RegistryProcess, ServeOptions, rbuild_bin};
use spec_tests::tools::output;

use crate::auth::add_user;

/// The large base layer: 100 MB of random bytes, which no compression shrinks.
const BASE_BYTES: u64 = 100_000_000;

/// More than the new layers, config and manifest and every request's headers of a push; far
/// less than any base layer here.
const SMALL_PUSH: u64 = 512 * 1024;

/// alice may do anything; bob pushes to `apps/**` and pulls `shared/**`, and may not read
/// `private/**`.
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

/// A registry (auth `mode`: none, htpasswd or token) behind a counting forwarder.
struct Registry {
    proxy: CountingProxy,
    server: RegistryProcess,
}

impl Registry {
    fn start(mode: &str, dir: &Path) -> Registry {
        let config = match mode {
            "none" => String::new(),
            _ => {
                let htpasswd = dir.join(format!("htpasswd-{mode}"));
                for (user, password) in USERS {
                    add_user(&htpasswd, user, password);
                }
                format!(
                    r#"
                    [auth]
                    mode = "{mode}"
                    htpasswd = "{htpasswd}"
                    [[auth.rules]]
                    repositories = ["**"]
                    users = ["alice"]
                    actions = ["pull", "push"]
                    [[auth.rules]]
                    repositories = ["apps/**"]
                    users = ["bob"]
                    actions = ["pull", "push"]
                    [[auth.rules]]
                    repositories = ["shared/**"]
                    users = ["bob"]
                    actions = ["pull"]
                    "#,
                    htpasswd = htpasswd.display()
                )
            }
        };
        let server = RegistryProcess::start_with(ServeOptions {
            config,
            ..ServeOptions::default()
        });
        Registry {
            proxy: CountingProxy::start(server.addr()),
            server,
        }
    }

    /// `<proxy host>/<rest>`: references that go through the forwarder.
    fn image(&self, rest: &str) -> String {
        format!("{}/{rest}", self.proxy.host())
    }

    /// How many access-log lines show `method` on upload sessions of `repository` answered
    /// with `status`.
    fn upload_requests(&self, method: &str, repository: &str, status: u16) -> usize {
        let path = format!("method={method} path=/v2/{repository}/blobs/uploads/");
        self.server
            .log()
            .lines()
            .filter(|line| line.contains(&path) && line.contains(&format!(" status={status} ")))
            .count()
    }
}

/// A docker config directory holding `user`'s credentials for every registry of `hosts`.
fn docker_config(dir: &Path, user: &str, hosts: &[String]) -> PathBuf {
    let config = dir.join(format!("docker-{user}"));
    std::fs::create_dir_all(&config).unwrap();
    let password = USERS.iter().find(|(u, _)| *u == user).map_or("", |(_, p)| p);
    let auth = STANDARD.encode(format!("{user}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|host| (host.clone(), serde_json::json!({ "auth": auth })))
        .collect();
    std::fs::write(
        config.join("config.json"),
        serde_json::to_vec(&serde_json::json!({ "auths": auths })).unwrap(),
    )
    .unwrap();
    config
}

/// Runs rbuild with a store and a docker config; returns its stderr, where pushes report.
fn rbuild(store: &Path, docker_config: &Path, args: &[&str]) -> String {
    let out = output(
        Command::new(rbuild_bin())
            .env("RBUILD_ROOT", store)
            .env("DOCKER_CONFIG", docker_config)
            .env("RUST_LOG", "warn")
            .args(args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rbuild {args:?} failed: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The bytes uploaded, as each `pushed … (N bytes uploaded` line of rbuild's report says.
fn reported_uploads(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("pushed "))
        .filter_map(|rest| rest.split(" (").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// A build context: `Dockerfile` and the files given.
fn context(dir: &Path, name: &str, dockerfile: &str, files: &[(&str, &[u8])]) -> String {
    let context = dir.join(name);
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    for (file, bytes) in files {
        std::fs::write(context.join(file), bytes).unwrap();
    }
    context.display().to_string()
}

/// A context whose one layer is `len` random bytes (xorshift: fast, incompressible).
fn random_base(dir: &Path, len: u64) -> String {
    let context = context(dir, "base", "FROM scratch\nCOPY big.bin /big.bin\n", &[]);
    let file = std::fs::File::create(Path::new(&context).join("big.bin")).unwrap();
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ len;
    for _ in 0..len.div_ceil(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.write_all(&state.to_le_bytes()).unwrap();
    }
    file.flush().unwrap();
    file.get_ref().set_len(len).unwrap();
    context
}

/// An image on `base` with a small layer of its own.
fn app_context(dir: &Path, name: &str, base: &str) -> String {
    let dockerfile = format!("FROM {base}\nCOPY app.txt /app.txt\n");
    context(dir, name, &dockerfile, &[("app.txt", b"the application\n")])
}

#[test]
fn pushing_onto_a_pulled_base_sends_only_the_new_layers() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let modes = ["none", "htpasswd", "token"];
    let registries: Vec<Registry> = modes.iter().map(|mode| Registry::start(mode, dir)).collect();
    let hosts: Vec<String> = registries.iter().map(|r| r.proxy.host()).collect();
    let alice = docker_config(dir, "alice", &hosts);

    // The base, built once (zstd keeps a debug build quick) and pushed to each registry.
    let base = random_base(dir, BASE_BYTES);
    let mut args = vec!["build", "--progress", "plain", "--compression", "zstd", "--push"];
    let bases: Vec<String> = registries.iter().map(|r| r.image("base/big:1")).collect();
    for base in &bases {
        args.extend(["-t", base]);
    }
    args.push(&base);
    let stderr = rbuild(&dir.join("base-store"), &alice, &args);
    assert!(
        reported_uploads(&stderr).iter().all(|&n| n > BASE_BYTES),
        "{stderr}"
    );

    for ((mode, registry), base) in modes.iter().zip(&registries).zip(&bases) {
        // A fresh store pulls the base for the build, then pushes to a new repository.
        let store = dir.join(format!("store-{mode}"));
        let app = registry.image("apps/app:1");
        let context = app_context(dir, &format!("app-{mode}"), base);
        registry.proxy.take_received();
        let stderr = rbuild(
            &store,
            &alice,
            &["build", "--progress", "plain", "--push", "-t", &app, &context],
        );
        let received = registry.proxy.take_received();
        eprintln!("{mode}: the build's push sent {received} bytes to the registry");
        assert!(
            received < SMALL_PUSH,
            "{mode}: the registry received {received} bytes for a push whose base it holds:\n{stderr}"
        );
        assert!(
            reported_uploads(&stderr).iter().all(|&n| n < SMALL_PUSH),
            "{mode}: {stderr}"
        );
    }

    // `rbuild pull`, then an image on it pushed with `rbuild push`.
    let registry = &registries[0];
    let store = dir.join("store-pulled");
    rbuild(&store, &alice, &["pull", &bases[0]]);
    let labelled = registry.image("apps/labelled:1");
    let dockerfile = format!("FROM {}\nLABEL purpose=mount\n", bases[0]);
    let context = context(dir, "labelled", &dockerfile, &[]);
    rbuild(
        &store,
        &alice,
        &["build", "--progress", "plain", "-t", &labelled, &context],
    );
    registry.proxy.take_received();
    let stderr = rbuild(&store, &alice, &["push", &labelled]);
    let received = registry.proxy.take_received();
    eprintln!("rbuild push after rbuild pull sent {received} bytes to the registry");
    assert!(
        received < SMALL_PUSH,
        "rbuild push after rbuild pull: the registry received {received} bytes:\n{stderr}"
    );
}

#[test]
fn a_refused_mount_falls_back_to_another_source_or_an_upload() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let registry = Registry::start("token", dir);
    let hosts = [registry.proxy.host()];
    let alice = docker_config(dir, "alice", &hosts);
    let bob = docker_config(dir, "bob", &hosts);
    let base_bytes = 4 * 1024 * 1024;
    let base = random_base(dir, base_bytes);
    let private = registry.image("private/base:1");
    let shared = registry.image("shared/base:1");
    let build = |store: &Path, who: &Path, tags: &[&str], context: &str| {
        let mut args = vec!["build", "--progress", "plain", "--push"];
        for tag in tags {
            args.extend(["-t", tag]);
        }
        args.push(context);
        rbuild(store, who, &args)
    };

    // Alice's base is only in private/, which bob may not read: his mount is refused (the
    // registry opens an upload instead) and he uploads the layer.
    let only_private = dir.join("store-private");
    build(&only_private, &alice, &[&private], &base);
    let app = app_context(dir, "app", &private);
    registry.proxy.take_received();
    let stderr = build(&only_private, &bob, &[&registry.image("apps/one:1")], &app);
    let received = registry.proxy.take_received();
    assert!(received > base_bytes, "received {received}:\n{stderr}");
    assert!(
        reported_uploads(&stderr).iter().all(|&n| n > base_bytes),
        "{stderr}"
    );
    // One session per blob (base layer, app layer, config): the refused mount's was used.
    assert_eq!(registry.upload_requests("POST", "apps/one", 202), 3);
    assert_eq!(registry.upload_requests("DELETE", "apps/one", 204), 0);
    rbuild(
        &dir.join("store-check"),
        &bob,
        &["pull", &registry.image("apps/one:1")],
    );

    // Known in private/ (newest) and shared/: the refused mount is followed by one that works.
    let both = dir.join("store-both");
    build(&both, &alice, &[&shared, &private], &base);
    registry.proxy.take_received();
    let stderr = build(&both, &bob, &[&registry.image("apps/two:1")], &app);
    let received = registry.proxy.take_received();
    assert!(received < SMALL_PUSH, "received {received}:\n{stderr}");
    // The refused mount's session was cancelled once the second source mounted the layer.
    assert_eq!(registry.upload_requests("POST", "apps/two", 201), 1);
    assert_eq!(registry.upload_requests("DELETE", "apps/two", 204), 1);
}
