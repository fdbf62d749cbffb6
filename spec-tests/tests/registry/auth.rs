//! Authentication, authorization and TLS with real clients: docker, skopeo, containerd and
//! rbuild itself log in and push and pull over TLS with a CA made for the test, and every
//! refusal is checked to be the status and challenge clients expect — with nothing written.
//!
//! The registry listens on `::1` under a name added to `/etc/hosts` for the test: docker
//! verifies certificates only for registries outside 127.0.0.0/8, so only such a name proves
//! that each client really trusts the CA through its own configuration (certs.d, `--cert-dir`,
//! `hosts.toml`, `--tls-ca`) — each test first shows the client refusing without it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rbuild_oci::Digest;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use spec_tests::hostname::LoopbackName;
use spec_tests::pki::{Issued, TestCa};
use spec_tests::registry::{RegistryProcess, ServeOptions, rbuild_bin};
use spec_tests::tools::{Ctr, Docker, output, run, skopeo, which};

pub(crate) const SERVICE: &str = "rbuild-test";

/// The test users: alice pushes to team/**, bob and deployer (a pull secret's user) only pull.
const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("deployer", "deployer-pw"),
];

/// A registry over TLS at a name for `::1`, with the test users.
pub(crate) struct Secure {
    registry: RegistryProcess,
    pub(crate) ca: TestCa,
    tls: Issued,
    token_key: PathBuf,
    name: LoopbackName,
}

impl Secure {
    /// Starts `rbuild serve` in auth `mode` (`htpasswd` or `token`) over TLS, plus `args`.
    pub(crate) fn start(mode: &str, tag: &str, args: &[&str]) -> Option<Secure> {
        let name = LoopbackName::add(tag)?;
        let ca = TestCa::new(&format!("{tag} test CA"))?;
        let tls = ca.server("server", name.name());
        let (token_key, _) = ca.signing_key("token", "ec");
        let htpasswd = ca.dir().join("htpasswd");
        for (user, password) in USERS {
            add_user(&htpasswd, user, password);
        }
        let config = format!(
            r#"
            [auth]
            mode = "{mode}"
            htpasswd = "{htpasswd}"
            [auth.token]
            service = "{SERVICE}"
            key = "{token_key}"
            [auth.groups]
            readers = ["bob", "deployer"]
            [[auth.rules]]
            repositories = ["team/**"]
            users = ["alice"]
            actions = ["pull", "push", "delete"]
            catalog = true
            [[auth.rules]]
            repositories = ["team/**"]
            groups = ["readers"]
            actions = ["pull"]
            "#,
            htpasswd = htpasswd.display(),
            token_key = token_key.display(),
        );
        let mut serve_args: Vec<String> = vec![
            "--tls-cert".into(),
            tls.cert.display().to_string(),
            "--tls-key".into(),
            tls.key.display().to_string(),
        ];
        serve_args.extend(args.iter().map(|a| a.to_string()));
        let registry = RegistryProcess::start_with(ServeOptions {
            config,
            args: serve_args,
            addr: "[::1]:0".to_owned(),
            ..ServeOptions::default()
        });
        Some(Secure {
            registry,
            ca,
            tls,
            token_key,
            name,
        })
    }

    /// `<name>:<port>`, the registry as image references name it.
    pub(crate) fn host(&self) -> String {
        format!("{}:{}", self.name.name(), self.registry.addr().port())
    }

    /// A directory holding only the CA as `ca.crt`: what skopeo's `--cert-dir` reads.
    fn cert_dir(&self, parent: &Path) -> String {
        let dir = parent.join("certs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(self.ca.cert(), dir.join("ca.crt")).unwrap();
        dir.display().to_string()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.host())
    }
}

/// Adds `user` to the htpasswd file with `rbuild htpasswd`, at the lowest bcrypt cost (which
/// keeps a debug build's logins fast).
pub(crate) fn add_user(htpasswd: &Path, user: &str, password: &str) {
    let mut child = Command::new(rbuild_bin())
        .args(["htpasswd", "--cost", "4", "--password-stdin", "-f"])
        .arg(htpasswd)
        .arg(user)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run rbuild htpasswd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "rbuild htpasswd {user}");
}

/// The CA in `/etc/docker/certs.d/<host>/ca.crt` while this lives (dockerd reads it per request).
struct DockerCerts(PathBuf);

impl DockerCerts {
    fn install(host: &str, ca: &Path) -> DockerCerts {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).expect("create certs.d entry");
        std::fs::copy(ca, dir.join("ca.crt")).expect("install the CA for docker");
        DockerCerts(dir)
    }
}

impl Drop for DockerCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `command` with `input` on stdin; returns (success, stdout + stderr).
fn with_stdin(command: &mut Command, input: &str) -> (bool, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn combined(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// docker, with its own config directory (credentials) per user.
fn docker_as(docker: &Docker, config: &Path) -> impl Fn(&[&str]) -> Command {
    let docker = docker.clone();
    let config = config.to_owned();
    move |args: &[&str]| {
        let mut command = docker.cmd();
        command.env("DOCKER_CONFIG", &config).args(args);
        command
    }
}

/// docker login, push, pull and run over TLS; a reader is denied a push and nothing is
/// stored; a wrong password is refused. Returns alice's docker config.json.
fn docker_round_trip(mode: &str) -> Option<serde_json::Value> {
    let docker = Docker::get()?;
    let secure = Secure::start(mode, &format!("docker-{mode}"), &[])?;
    secure.name.settle_for_go();
    let host = secure.host();
    let alice_config = tempfile::tempdir().unwrap();
    let alice = docker_as(&docker, alice_config.path());
    let login = |d: &dyn Fn(&[&str]) -> Command, user: &str, password: &str| {
        with_stdin(
            &mut d(&["login", "--username", user, "--password-stdin", &host]),
            password,
        )
    };

    // Without the CA in certs.d docker refuses the certificate: it is really verified.
    let (ok, text) = login(&alice, "alice", "alice-pw");
    assert!(!ok && text.contains("certificate"), "{text}");
    let _certs = DockerCerts::install(&host, &secure.ca.cert());

    let (ok, text) = login(&alice, "alice", "wrong");
    assert!(!ok && text.to_lowercase().contains("unauthorized"), "{text}");
    let (ok, text) = login(&alice, "alice", "alice-pw");
    assert!(ok && text.contains("Login Succeeded"), "{text}");

    let remote = format!("{host}/team/app:1");
    run(&mut alice(&["tag", &docker.busybox_image(), &remote]));
    run(&mut alice(&["push", &remote]));
    // rbuild reads what docker login stored (a password, or the refresh token the token service
    // gave docker) and trusts the CA through the same certs.d entry.
    let store = tempfile::tempdir().unwrap();
    let root = store.path().display().to_string();
    let pulled = run(Command::new(rbuild_bin())
        .env("DOCKER_CONFIG", alice_config.path())
        .args(["pull", "--root", &root, &remote]));
    assert!(pulled.contains(&remote), "{pulled}");
    run(&mut alice(&["rmi", &remote]));
    run(&mut alice(&["pull", &remote]));
    let out = run(&mut alice(&[
        "run",
        "--rm",
        "--network=none",
        &remote,
        "echo",
        "pulled over TLS",
    ]));
    assert_eq!(out.trim(), "pulled over TLS");

    // Bob may pull, but a push is denied (403) and leaves nothing behind.
    let bob_config = tempfile::tempdir().unwrap();
    let bob = docker_as(&docker, bob_config.path());
    let (ok, text) = login(&bob, "bob", "bob-pw");
    assert!(ok, "{text}");
    run(&mut bob(&["pull", &remote]));
    let before = secure.registry.stored();
    let theirs = format!("{host}/team/bob:1");
    run(&mut bob(&["tag", &remote, &theirs]));
    let out = output(&mut bob(&["push", &theirs]));
    let text = combined(&out);
    assert!(!out.status.success() && text.contains("denied"), "{text}");
    assert_eq!(secure.registry.stored(), before, "a refused push wrote something");
    run(&mut alice(&["rmi", &remote, &theirs]));

    run(&mut alice(&["logout", &host]));
    let config = std::fs::read_to_string(alice_config.path().join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(
        config["auths"].get(&host).is_none(),
        "docker logout removed the entry: {config}"
    );
    // What login had stored, from bob's file (same flow).
    let bob_file = std::fs::read_to_string(bob_config.path().join("config.json")).unwrap();
    config = serde_json::from_str(&bob_file).unwrap();
    let (ok, report) = secure.registry.fsck();
    assert!(ok, "{report}");
    let log = secure.registry.log();
    Some(serde_json::json!({ "config": config["auths"][&host], "log": log }))
}

#[test]
fn docker_logs_in_pushes_and_pulls_over_tls_with_htpasswd() {
    let Some(result) = docker_round_trip("htpasswd") else {
        return;
    };
    let auth = result["config"]["auth"].as_str().unwrap();
    assert_eq!(STANDARD.decode(auth).unwrap(), b"bob:bob-pw");
}

#[test]
fn docker_logs_in_pushes_and_pulls_with_the_token_service() {
    let Some(result) = docker_round_trip("token") else {
        return;
    };
    // docker asks for a refresh token at login and keeps it instead of the password; every
    // later token comes from the OAuth2 form with grant_type=refresh_token.
    assert!(
        result["config"]["identitytoken"].is_string(),
        "{}",
        result["config"]
    );
    let log = result["log"].as_str().unwrap();
    let answered = |method: &str| {
        log.lines()
            .any(|l| l.contains(&format!("method={method} path=/token ")) && l.contains(" status=200 "))
    };
    assert!(answered("GET"), "{log}");
    assert!(answered("POST"), "{log}");
}

/// The busybox test image as a docker archive.
fn busybox_archive(docker: &Docker, dir: &Path) -> String {
    let archive = dir.join("busybox.tar");
    run(docker
        .cmd()
        .args(["save", "-o"])
        .arg(&archive)
        .arg(docker.busybox_image()));
    format!("docker-archive:{}", archive.display())
}

#[test]
fn skopeo_copies_with_credentials_and_a_cert_dir() {
    let (Some(docker), Some(skopeo)) = (Docker::get(), skopeo()) else {
        return;
    };
    let Some(secure) = Secure::start("token", "skopeo", &[]) else {
        return;
    };
    let host = secure.host();
    let work = tempfile::tempdir().unwrap();
    let source = busybox_archive(&docker, work.path());
    let cert_dir = secure.cert_dir(work.path());
    let target = format!("docker://{host}/team/sk:1");

    let out =
        output(Command::new(&skopeo).args(["copy", "--dest-creds", "alice:alice-pw", &source, &target]));
    assert!(
        !out.status.success() && combined(&out).contains("certificate"),
        "{}",
        combined(&out)
    );
    run(Command::new(&skopeo).args([
        "copy",
        "--dest-creds",
        "alice:alice-pw",
        "--dest-cert-dir",
        &cert_dir,
        &source,
        &target,
    ]));

    let before = secure.registry.stored();
    for (creds, why) in [("bob:bob-pw", "denied"), ("alice:wrong", "unauthorized")] {
        let out = output(Command::new(&skopeo).args([
            "copy",
            "--dest-creds",
            creds,
            "--dest-cert-dir",
            &cert_dir,
            &source,
            &format!("docker://{host}/team/sk:2"),
        ]));
        let text = combined(&out).to_lowercase();
        assert!(!out.status.success() && text.contains(why), "{creds}: {text}");
    }
    assert_eq!(secure.registry.stored(), before, "a refused copy wrote something");

    let layout = format!("oci:{}:copied", work.path().join("layout").display());
    run(Command::new(&skopeo).args([
        "copy",
        "--src-creds",
        "deployer:deployer-pw",
        "--src-cert-dir",
        &cert_dir,
        &target,
        &layout,
    ]));
    let inspected = run(Command::new(&skopeo).args([
        "inspect",
        "--creds",
        "deployer:deployer-pw",
        "--cert-dir",
        &cert_dir,
        &target,
    ]));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["Architecture"], "amd64");
    let anonymous =
        output(Command::new(&skopeo).args(["inspect", "--no-creds", "--cert-dir", &cert_dir, &target]));
    assert!(
        !anonymous.status.success(),
        "anonymous inspect of a private image"
    );
}

#[test]
fn containerd_pulls_with_pull_secret_credentials_and_runs() {
    let (Some(docker), Some(skopeo), Some(ctr)) = (Docker::get(), skopeo(), Ctr::get()) else {
        return;
    };
    let Some(secure) = Secure::start("token", "ctr", &[]) else {
        return;
    };
    let host = secure.host();
    let work = tempfile::tempdir().unwrap();
    let source = busybox_archive(&docker, work.path());
    let image = format!("{host}/team/k8s:1");
    let cert_dir = secure.cert_dir(work.path());
    run(Command::new(&skopeo).args([
        "copy",
        "--dest-creds",
        "alice:alice-pw",
        "--dest-cert-dir",
        &cert_dir,
        &source,
        &format!("docker://{image}"),
    ]));

    // What a node's /etc/containerd/certs.d holds for the registry: its CA.
    let hosts_dir = work.path().join("certs.d");
    std::fs::create_dir_all(hosts_dir.join(&host)).unwrap();
    std::fs::write(
        hosts_dir.join(&host).join("hosts.toml"),
        format!(
            "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            secure.ca.cert().display()
        ),
    )
    .unwrap();
    let hosts_dir = hosts_dir.display().to_string();

    let out = output(ctr.cmd().args(["images", "pull", &image]));
    assert!(!out.status.success(), "pull without the CA: {}", combined(&out));
    let out = output(
        ctr.cmd()
            .args(["images", "pull", "--hosts-dir", &hosts_dir, &image]),
    );
    assert!(
        !out.status.success(),
        "pull without credentials: {}",
        combined(&out)
    );
    // The kubelet hands containerd the pull secret's user and password.
    run(ctr.cmd().args([
        "images",
        "pull",
        "--user",
        "deployer:deployer-pw",
        "--hosts-dir",
        &hosts_dir,
        &image,
    ]));
    let id = format!("rbuild-auth-{}", secure.registry.addr().port());
    let out = run(ctr
        .cmd()
        .args(["run", "--rm", &image, &id, "echo", "pulled with a pull secret"]));
    assert_eq!(out.trim(), "pulled with a pull secret");
    run(ctr.cmd().args(["images", "rm", &image]));
}

/// `rbuild` with a store and docker config of its own.
fn rbuild(docker_config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(rbuild_bin());
    command.env("DOCKER_CONFIG", docker_config).args(args);
    command
}

#[test]
fn rbuild_logs_in_builds_pushes_and_pulls_with_the_token_service() {
    rbuild_round_trip("token");
}

#[test]
fn rbuild_logs_in_builds_pushes_and_pulls_with_htpasswd() {
    rbuild_round_trip("htpasswd");
}

/// rbuild login (checked against the registry first), build --push, a build FROM a private
/// base in a fresh store, pull, a reader's refused push that writes nothing, logout.
fn rbuild_round_trip(mode: &str) {
    let Some(secure) = Secure::start(mode, &format!("rbuild-{mode}"), &[]) else {
        return;
    };
    let host = secure.host();
    let ca = secure.ca.cert().display().to_string();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("docker");
    let login = |extra: &[&str], user: &str, password: &str| {
        let mut args = vec!["login", "--username", user, "--password-stdin"];
        args.extend(extra);
        args.push(&host);
        with_stdin(&mut rbuild(&config, &args), password)
    };

    let (ok, text) = login(&[], "alice", "alice-pw");
    assert!(!ok && text.contains("certificate"), "without --tls-ca: {text}");
    let (ok, text) = login(&["--tls-ca", &ca], "alice", "wrong");
    assert!(!ok && text.contains("rejected"), "{text}");
    assert!(
        !config.join("config.json").exists(),
        "a failed login stores nothing"
    );
    let (ok, text) = login(&["--tls-ca", &ca], "alice", "alice-pw");
    assert!(ok && text.contains("Login Succeeded"), "{text}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        STANDARD
            .decode(stored["auths"][&host]["auth"].as_str().unwrap())
            .unwrap(),
        b"alice:alice-pw"
    );

    // A base image, built and pushed; then an image FROM it, built in a fresh store so the base
    // is pulled from the private repository.
    let base_context = work.path().join("base");
    std::fs::create_dir(&base_context).unwrap();
    std::fs::write(base_context.join("base.txt"), "base layer\n").unwrap();
    std::fs::write(
        base_context.join("Dockerfile"),
        "FROM scratch\nCOPY base.txt /base.txt\n",
    )
    .unwrap();
    let base = format!("{host}/team/base:1");
    let store = |name: &str| work.path().join(name).display().to_string();
    let build = |root: &str, tag: &str, context: &Path| {
        let context = context.display().to_string();
        let args = [
            "build", "--root", root, "--tls-ca", &ca, "-t", tag, "--push", &context,
        ];
        output(&mut rbuild(&config, &args))
    };
    let out = build(&store("store1"), &base, &base_context);
    assert!(out.status.success(), "{}", combined(&out));

    let app_context = work.path().join("app");
    std::fs::create_dir(&app_context).unwrap();
    std::fs::write(app_context.join("app.txt"), "app layer\n").unwrap();
    std::fs::write(
        app_context.join("Dockerfile"),
        format!("FROM {base}\nCOPY app.txt /app.txt\n"),
    )
    .unwrap();
    let app = format!("{host}/team/app:1");
    let out = build(&store("store2"), &app, &app_context);
    assert!(out.status.success(), "{}", combined(&out));

    let fresh = store("store3");
    let pulled = run(&mut rbuild(
        &config,
        &["pull", "--root", &fresh, "--tls-ca", &ca, &app],
    ));
    assert!(pulled.contains(&app), "{pulled}");
    let inspected = run(&mut rbuild(&config, &["inspect", "--root", &fresh, &app]));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["manifest"]["layers"].as_array().unwrap().len(), 2);

    // Bob can pull but not push; his refused push leaves the registry as it was.
    let bob_config = work.path().join("bob");
    let (ok, text) = with_stdin(
        &mut rbuild(
            &bob_config,
            &["login", "-u", "bob", "--password-stdin", "--tls-ca", &ca, &host],
        ),
        "bob-pw",
    );
    assert!(ok, "{text}");
    run(&mut rbuild(
        &bob_config,
        &["pull", "--root", &fresh, "--tls-ca", &ca, &app],
    ));
    let before = secure.registry.stored();
    let bobs = format!("{host}/team/bob:1");
    let context = app_context.display().to_string();
    let args = [
        "build", "--root", &fresh, "--tls-ca", &ca, "-t", &bobs, "--push", &context,
    ];
    let out = output(&mut rbuild(&bob_config, &args));
    let text = combined(&out);
    assert!(!out.status.success() && text.contains("denied"), "{text}");
    assert_eq!(secure.registry.stored(), before, "a refused push wrote something");

    // Logged out, the private image is out of reach.
    let out = run(&mut rbuild(&config, &["logout", &host]));
    assert!(out.contains("Removing login credentials"), "{out}");
    let out = output(&mut rbuild(
        &config,
        &["pull", "--root", &store("store4"), "--tls-ca", &ca, &app],
    ));
    assert!(
        !out.status.success(),
        "anonymous pull of a private image: {}",
        combined(&out)
    );
}

/// A blocking HTTPS client that trusts `ca` (and presents `identity`, if given).
pub(crate) fn https_client(ca: &Path, identity: Option<&Issued>) -> reqwest::blocking::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(issued) => {
            let chain = CertificateDer::pem_file_iter(&issued.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&issued.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(issuer: &str, repo: &str, actions: &[&str], expires_in: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": issuer, "sub": "alice", "aud": SERVICE,
        "exp": now() + expires_in, "nbf": now() - 10, "iat": now() - 10,
        "access": [{ "type": "repository", "name": repo, "actions": actions }],
    })
}

/// Sends `request` with Basic credentials.
fn as_user(
    request: reqwest::blocking::RequestBuilder,
    user: &str,
    password: &str,
) -> reqwest::blocking::Response {
    request.basic_auth(user, Some(password)).send().unwrap()
}

fn www_authenticate(response: &reqwest::blocking::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn error_code(response: reqwest::blocking::Response) -> String {
    let body: serde_json::Value = response.json().unwrap();
    body["errors"][0]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn refusals_are_the_right_401_or_403_and_write_nothing() {
    let Some(secure) = Secure::start("token", "refusals", &[]) else {
        return;
    };
    let http = https_client(&secure.ca.cert(), None);
    let host = secure.host();
    let blob = b"refused content".to_vec();
    let digest = Digest::sha256_of(&blob);
    let upload = secure.url(&format!("/v2/team/app/blobs/uploads/?digest={digest}"));
    let push = |authorization: Option<String>| {
        let mut request = http.post(&upload).body(blob.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().unwrap()
    };
    let bearer = |token: &str| Some(format!("Bearer {token}"));
    let before = secure.registry.stored();

    // No credentials: 401 with the challenge clients follow.
    let response = http.get(secure.url("/v2/")).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!("Bearer realm=\"https://{host}/token\",service=\"{SERVICE}\"")
    );
    let response = push(None);
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            "Bearer realm=\"https://{host}/token\",service=\"{SERVICE}\",scope=\"repository:team/app:pull,push\""
        )
    );
    assert_eq!(error_code(response), "UNAUTHORIZED");

    // Wrong password at the token service: 401.
    let token_url = secure.url(&format!(
        "/token?service={SERVICE}&scope=repository:team/app:pull,push"
    ));
    let response = as_user(http.get(&token_url), "alice", "wrong");
    assert_eq!(response.status(), 401);

    // Bob gets a token, but only for pull (a partial grant, not an error); pushing is 403.
    let response = as_user(http.get(&token_url), "bob", "bob-pw");
    assert_eq!(response.status(), 200);
    let reply: serde_json::Value = response.json().unwrap();
    let token = reply["token"].as_str().unwrap();
    let granted: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(granted["access"][0]["actions"], serde_json::json!(["pull"]));
    let response = push(bearer(token));
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response), "DENIED");
    let response = http
        .put(secure.url("/v2/team/app/manifests/1"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);

    // Tokens the registry must not accept, signed by OpenSSL: expired, for another repository,
    // with another key, with the wrong audience, alg=none, HS256.
    let es256 = serde_json::json!({ "alg": "ES256", "typ": "JWT" });
    let key = &secure.token_key;
    let (other_key, _) = secure.ca.signing_key("other", "ec");
    let mut wrong_audience = claims("rbuild", "team/app", &["pull", "push"], 300);
    wrong_audience["aud"] = serde_json::json!("another-registry");
    let signed = |key: &Path, claims: &serde_json::Value| secure.ca.sign_jwt(key, &es256, claims);
    let body = |header: &str, claims: &serde_json::Value| {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };
    let good = claims("rbuild", "team/app", &["pull", "push"], 300);
    let refused = [
        (
            "expired",
            signed(key, &claims("rbuild", "team/app", &["pull", "push"], -3600)),
            "invalid_token",
        ),
        (
            "another repository",
            signed(key, &claims("rbuild", "team/other", &["pull", "push"], 300)),
            "insufficient_scope",
        ),
        ("another key", signed(&other_key, &good), "invalid_token"),
        (
            "another issuer",
            signed(key, &claims("mallory", "team/app", &["pull", "push"], 300)),
            "invalid_token",
        ),
        ("wrong audience", signed(key, &wrong_audience), "invalid_token"),
        (
            "alg=none",
            format!("{}.", body(r#"{"alg":"none","typ":"JWT"}"#, &good)),
            "invalid_token",
        ),
        (
            "HS256",
            format!("{}.c2lnbmF0dXJl", body(r#"{"alg":"HS256","typ":"JWT"}"#, &good)),
            "invalid_token",
        ),
    ];
    for (what, token, error) in refused {
        let response = push(bearer(&token));
        assert_eq!(response.status(), 401, "{what}");
        let challenge = www_authenticate(&response);
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{what}: {challenge}"
        );
    }
    assert_eq!(
        secure.registry.stored(),
        before,
        "a refused request wrote something"
    );

    // The same claims, signed by OpenSSL with the registry's key, are accepted.
    let response = push(bearer(&signed(key, &good)));
    assert_eq!(response.status(), 201, "{:?}", response.text());
}

#[test]
fn htpasswd_refusals_are_401_or_403_and_write_nothing() {
    let Some(secure) = Secure::start("htpasswd", "basic", &[]) else {
        return;
    };
    let http = https_client(&secure.ca.cert(), None);
    let before = secure.registry.stored();
    let upload = secure.url("/v2/team/app/blobs/uploads/");
    let response = http.post(&upload).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(www_authenticate(&response), format!("Basic realm=\"{SERVICE}\""));
    let response = as_user(http.post(&upload), "alice", "wrong");
    assert_eq!(response.status(), 401);
    let response = as_user(http.post(&upload), "bob", "bob-pw");
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response), "DENIED");
    let response = as_user(http.get(secure.url("/v2/_catalog")), "bob", "bob-pw");
    assert_eq!(response.status(), 403);
    assert_eq!(
        as_user(http.get(secure.url("/v2/")), "bob", "bob-pw").status(),
        200
    );
    assert_eq!(
        secure.registry.stored(),
        before,
        "a refused request wrote something"
    );
    let response = as_user(http.get(secure.url("/v2/_catalog")), "alice", "alice-pw");
    assert_eq!(response.status(), 200);
    // Probes need no credentials.
    assert_eq!(http.get(secure.url("/healthz")).send().unwrap().status(), 200);
    assert_eq!(http.get(secure.url("/readyz")).send().unwrap().status(), 200);
}

#[test]
fn external_issuer_tokens_are_verified_with_its_keys() {
    let Some(ca) = TestCa::new("issuer") else { return };
    // The EC key is published as a certificate, the RSA key as a bare public key.
    let (ec_key, _) = ca.signing_key("issuer-ec", "ec");
    let ec_public = ca.self_signed(&ec_key, "auth.example");
    let (rsa_key, rsa_public) = ca.signing_key("issuer-rsa", "rsa");
    let config = format!(
        r#"
        [auth]
        mode = "external"
        [auth.token]
        realm = "https://auth.example/token"
        issuer = "auth.example"
        service = "{SERVICE}"
        public_keys = ["{}", "{}"]
        "#,
        ec_public.display(),
        rsa_public.display()
    );
    let registry = RegistryProcess::start_with_config(&config);
    let http = reqwest::blocking::Client::new();
    let url = registry.url("/v2/team/app/tags/list");
    let claims = claims("auth.example", "team/app", &["pull"], 60);
    for (key, alg) in [(&ec_key, "ES256"), (&rsa_key, "RS256")] {
        let token = ca.sign_jwt(key, &serde_json::json!({ "alg": alg, "typ": "JWT" }), &claims);
        let response = http.get(&url).bearer_auth(&token).send().unwrap();
        // Authorized: the repository is simply unknown.
        assert_eq!(response.status(), 404, "{alg}");
        let response = http
            .get(registry.url("/v2/team/other/tags/list"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{alg} token on another repository");
    }
    // An RS256 signature presented as ES256 (and the reverse) is not accepted.
    let token = ca.sign_jwt(&rsa_key, &serde_json::json!({ "alg": "RS256" }), &claims);
    let parts: Vec<&str> = token.split('.').collect();
    let relabelled = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#),
        parts[1],
        parts[2]
    );
    assert_eq!(
        http.get(&url).bearer_auth(&relabelled).send().unwrap().status(),
        401
    );
    let response = http.get(&url).send().unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        www_authenticate(&response),
        format!(
            "Bearer realm=\"https://auth.example/token\",service=\"{SERVICE}\",scope=\"repository:team/app:pull\""
        )
    );
    let response = http.get(registry.url("/token")).send().unwrap();
    assert_eq!(response.status(), 404, "no token service in external mode");
}

/// `openssl s_client` connected to `host` as `client`, its stdout piped (and its stdin, when
/// `keep_open`, for requests over the connection; otherwise it hangs up after the handshake).
fn s_client(host: &str, ca: &Path, client: &Issued, keep_open: bool) -> std::process::Child {
    let (name, port) = host.rsplit_once(':').unwrap();
    let mut command = Command::new(which("openssl").unwrap());
    command.args([
        "s_client",
        "-connect",
        &format!("{name}:{port}"),
        "-servername",
        name,
    ]);
    if keep_open {
        command.arg("-quiet");
    }
    command
        .arg("-CAfile")
        .arg(ca)
        .arg("-cert")
        .arg(&client.cert)
        .arg("-key")
        .arg(&client.key)
        .stdin(if keep_open { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The subject of the certificate a new TLS connection to `host` gets.
fn served_subject(host: &str, ca: &Path, client: &Issued) -> String {
    let openssl = which("openssl").unwrap();
    let mut connect = s_client(host, ca, client, false);
    let mut pem = String::new();
    connect.stdout.take().unwrap().read_to_string(&mut pem).unwrap();
    connect.wait().unwrap();
    let mut x509 = Command::new(&openssl)
        .args(["x509", "-noout", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn client_certificates_http2_and_reload_on_sighup() {
    let Some(curl) = which("curl") else {
        spec_tests::tools::require("curl", false, "apt-get install curl (scripts/test does)");
        return;
    };
    let Some(ca) = TestCa::new("mtls") else { return };
    let Some(secure) = Secure::start(
        "htpasswd",
        "mtls",
        &["--tls-client-ca", &ca.cert().display().to_string()],
    ) else {
        return;
    };
    let server_ca = secure.ca.cert();
    let client = ca.client("ci-runner");
    let host = secure.host();
    let curl_get = |identity: Option<&Issued>, extra: &[&str]| {
        let mut command = Command::new(&curl);
        command
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--cacert",
            ])
            .arg(&server_ca)
            .args(extra);
        if let Some(identity) = identity {
            command
                .arg("--cert")
                .arg(&identity.cert)
                .arg("--key")
                .arg(&identity.key);
        }
        output(command.arg(secure.url("/healthz")))
    };
    let out = curl_get(None, &[]);
    assert!(!out.status.success(), "no client certificate: {}", combined(&out));
    let stranger = secure.ca.client("stranger");
    let out = curl_get(Some(&stranger), &[]);
    assert!(
        !out.status.success(),
        "a certificate from another CA: {}",
        combined(&out)
    );
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl_get(Some(&client), &[flag]);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(status, format!("200 {version}"), "{}", combined(&out));
    }

    // A connection opened before the reload…
    let name = secure.name.name();
    let mut early = s_client(&host, &server_ca, &client, true);
    assert!(served_subject(&host, &server_ca, &client).contains(name));

    // …a renewed certificate written over the files, SIGHUP…
    let renewed = secure.ca.server("renewed", &format!("renewed.{name}"));
    std::fs::copy(&renewed.cert, &secure.tls.cert).unwrap();
    std::fs::copy(&renewed.key, &secure.tls.key).unwrap();
    secure.registry.reload();
    // …new connections get the new certificate, and the old connection still works.
    assert!(served_subject(&host, &server_ca, &client).contains(&format!("renewed.{name}")));
    let mut stdin = early.stdin.take().unwrap();
    write!(
        stdin,
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    early.stdout.take().unwrap().read_to_string(&mut reply).unwrap();
    drop(stdin);
    let _ = early.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// A `docker-credential-<name>` helper that keeps one credential in a file beside itself and
/// logs each call.
const HELPER: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$1" >> "$dir/calls"
case "$1" in
  store) cat > "$dir/secret.json" ;;
  get) cat > /dev/null; if [ -f "$dir/secret.json" ]; then cat "$dir/secret.json"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) cat > /dev/null; rm -f "$dir/secret.json" ;;
esac
"#;

#[test]
fn rbuild_login_keeps_credentials_in_the_configured_helper() {
    let Some(secure) = Secure::start("htpasswd", "helper", &[]) else {
        return;
    };
    let host = secure.host();
    let ca = secure.ca.cert().display().to_string();
    let work = tempfile::tempdir().unwrap();
    let helpers = work.path().join("bin");
    std::fs::create_dir(&helpers).unwrap();
    let helper = helpers.join("docker-credential-rbuildtest");
    std::fs::write(&helper, HELPER).unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&helper, executable).unwrap();
    let config = work.path().join("docker");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("config.json"), r#"{"credsStore": "rbuildtest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let rbuild = |args: &[&str]| {
        let mut command = rbuild(&config, args);
        command.env("PATH", &path);
        command
    };

    let (ok, text) = with_stdin(
        &mut rbuild(&["login", "-u", "alice", "--password-stdin", "--tls-ca", &ca, &host]),
        "alice-pw",
    );
    assert!(ok, "{text}");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(helpers.join("secret.json")).unwrap()).unwrap();
    assert_eq!(
        (stored["Username"].as_str(), stored["Secret"].as_str()),
        (Some("alice"), Some("alice-pw"))
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        file["auths"][&host],
        serde_json::json!({}),
        "no secret in config.json: {file}"
    );

    // The helper's credential is what the push uses.
    let context = work.path().join("context");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let image = format!("{host}/team/helper:1");
    let root = work.path().join("store").display().to_string();
    let context = context.display().to_string();
    run(&mut rbuild(&[
        "build", "--root", &root, "--tls-ca", &ca, "-t", &image, "--push", &context,
    ]));

    run(&mut rbuild(&["logout", &host]));
    assert!(
        !helpers.join("secret.json").exists(),
        "logout erased the helper's credential"
    );
    let calls = std::fs::read_to_string(helpers.join("calls")).unwrap();
    assert_eq!(calls.lines().next(), Some("store"), "{calls}");
    assert!(
        calls.contains("get") && calls.lines().last() == Some("erase"),
        "{calls}"
    );
}
