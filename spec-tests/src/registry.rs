//! A `rbuild serve` process started for one test, on a free port with its own storage root,
//! on the storage backend of the test run ([`Backend`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engines::ClusterStorage;
use crate::wait::wait_until;

/// Where the registries of a test run keep their blobs and metadata, from
/// `RBUILD_TEST_REGISTRY_BACKEND`: `scripts/test` runs the registry spec tests once with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: files under the storage root (`filesystem`, or the variable unset).
    Filesystem,
    /// Blobs in S3 (the shared Garage), metadata in PostgreSQL (the shared server), each
    /// registry on a prefix and a database of its own (`cluster`).
    Cluster,
    /// Blobs in S3, metadata in files (`s3`): to tell which half a cluster failure is in.
    S3,
    /// Blobs in files, metadata in PostgreSQL (`postgres`): the same, for the other half.
    Postgres,
}

impl Backend {
    /// The backend of this test run; an unknown name fails the test.
    pub fn of_run() -> Backend {
        match std::env::var("RBUILD_TEST_REGISTRY_BACKEND").as_deref() {
            Err(_) | Ok("filesystem") => Backend::Filesystem,
            Ok("cluster") => Backend::Cluster,
            Ok("s3") => Backend::S3,
            Ok("postgres") => Backend::Postgres,
            Ok(other) => {
                panic!("RBUILD_TEST_REGISTRY_BACKEND={other}: expected filesystem, cluster, s3 or postgres")
            }
        }
    }

    /// The blob store's name in the registry's metrics (their `backend` label).
    pub fn blob_store(self) -> &'static str {
        match self {
            Backend::Filesystem | Backend::Postgres => "filesystem",
            Backend::S3 | Backend::Cluster => "s3",
        }
    }

    /// The shared engines' storage for one registry on this backend; `None` on the filesystem.
    fn storage(self) -> Option<ClusterStorage> {
        let (s3, postgres) = match self {
            Backend::Filesystem => return None,
            Backend::Cluster => (true, true),
            Backend::S3 => (true, false),
            Backend::Postgres => (false, true),
        };
        let storage = ClusterStorage::shared_parts(s3, postgres).unwrap_or_else(|| {
            panic!(
                "the {self:?} backend needs the engines' RBUILD_TEST_* variables \
                 (scripts/test sets them; by hand: source scripts/engines.sh; engines_start DIR)"
            )
        });
        Some(storage)
    }
}

/// For a test that inspects the files under a filesystem registry's root: whether it runs in
/// this test run. Under another backend it is skipped, and says so and why.
pub fn filesystem_only(why: &str) -> bool {
    let backend = Backend::of_run();
    if backend != Backend::Filesystem {
        eprintln!("SKIPPED on the {backend:?} backend: filesystem only, as it {why}");
    }
    backend == Backend::Filesystem
}

/// The `rbuild` binary under test: `$RBUILD_BIN`, else the one beside the test executable
/// (`target/<profile>/rbuild`, which `scripts/test` builds before the suite runs).
pub fn rbuild_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RBUILD_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("rbuild");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p rbuild` first (scripts/test does)",
        bin.display()
    );
    bin
}

/// How to start a registry, beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The TOML configuration (none when empty).
    pub config: String,
    /// More `rbuild serve` arguments (`--tls-cert`, `--htpasswd`, …).
    pub args: Vec<String>,
    /// The address to listen on; `127.0.0.1:0` when empty.
    pub addr: String,
    /// Environment variables set for the process (credentials files, profiles).
    pub env: Vec<(String, String)>,
}

/// A running registry. Killed (SIGKILL, by PID) when dropped; its log is printed if the test
/// is failing. On the cluster backend its database and prefix are removed after it.
pub struct RegistryProcess {
    child: Option<Child>,
    addr: SocketAddr,
    scheme: String,
    root: PathBuf,
    config: Option<PathBuf>,
    options: ServeOptions,
    log: Arc<Mutex<String>>,
    cluster: Option<ClusterStorage>,
    _dir: tempfile::TempDir,
}

impl RegistryProcess {
    /// Starts a registry with the default configuration.
    pub fn start() -> RegistryProcess {
        RegistryProcess::start_with_config("")
    }

    /// Starts a registry with a TOML configuration (the `root` and `addr` are set here).
    pub fn start_with_config(toml: &str) -> RegistryProcess {
        RegistryProcess::start_with(ServeOptions {
            config: toml.to_owned(),
            ..ServeOptions::default()
        })
    }

    /// Starts a registry with a configuration, extra arguments and an address, on the
    /// backend of the test run unless the configuration names one.
    pub fn start_with(options: ServeOptions) -> RegistryProcess {
        crate::failure::remember_panics();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let cluster = if ClusterStorage::names_backend(&options.config) {
            None
        } else {
            Backend::of_run().storage()
        };
        let toml = match &cluster {
            Some(cluster) => cluster.config(&options.config),
            None => options.config.clone(),
        };
        let config = (!toml.is_empty()).then(|| {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, &toml).expect("write config");
            path
        });
        let log = Arc::new(Mutex::new(String::new()));
        let (child, scheme, addr) = spawn(&root, config.as_deref(), &options, &log);
        RegistryProcess {
            child: Some(child),
            addr,
            scheme,
            root,
            config,
            options,
            log,
            cluster,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, the registry host for image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>` (`https` when the registry serves TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The prefix and database of a registry on the cluster backend.
    pub fn cluster(&self) -> Option<&ClusterStorage> {
        self.cluster.as_ref()
    }

    /// The bucket prefix of a registry whose blobs are in S3.
    fn prefix(&self) -> Option<&crate::engines::Prefix> {
        self.cluster.as_ref().and_then(|c| c.prefix.as_ref())
    }

    /// The storage root (which holds the blobs and metadata on the filesystem backend only).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The PID of the server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the server to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait()
    }

    /// Sends SIGTERM (a graceful shutdown) without waiting.
    pub fn send_sigterm(&self) {
        let child = self.child.as_ref().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) on the PID of a child we own and have not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits for the server to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        child.wait().expect("wait for server")
    }

    /// The bytes of upload data staged so far: in the files under the root. Filesystem only:
    /// S3 holds a chunk until its request ends or a part fills, so there is no such figure
    /// mid-request (tests watching it are marked [`filesystem_only`]).
    pub fn staged_upload_bytes(&self) -> u64 {
        assert!(
            self.prefix().is_none(),
            "staged_upload_bytes reads the filesystem root: mark the test filesystem_only"
        );
        files_under(&self.root.join("blobs/_uploads"), &|_| true)
    }

    /// Sends SIGHUP (reload certificates and auth files) and waits until the server has
    /// logged the reload.
    pub fn reload(&self) {
        let child = self.child.as_ref().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        let before = self.log().matches("SIGHUP received").count();
        // SAFETY: kill(2) on the PID of a child we own and have not yet reaped.
        unsafe {
            libc::kill(pid, libc::SIGHUP);
        }
        wait_until("the server to log a reload", Duration::from_secs(5), || {
            let log = self.log();
            log.matches("SIGHUP received").count() > before
                && log
                    .rsplit("SIGHUP received")
                    .next()
                    .is_some_and(|tail| tail.contains("auth: ") || tail.contains("auth reload failed"))
        });
    }

    /// Starts the server again on the same storage root (on a new port).
    pub fn restart(&mut self) {
        self.kill();
        let (child, scheme, addr) = spawn(&self.root, self.config.as_deref(), &self.options, &self.log);
        self.child = Some(child);
        self.scheme = scheme;
        self.addr = addr;
    }

    /// Runs `rbuild registry gc` on the root with the registry's config (and `args`, such as
    /// `--dry-run`), failing the test unless it succeeds; returns what it printed.
    pub fn gc(&self, args: &[&str]) -> String {
        let mut command = Command::new(rbuild_bin());
        command
            .args(["registry", "gc", "--root"])
            .arg(&self.root)
            .args(args);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        crate::tools::run(&mut command)
    }

    /// The bytes of the blobs stored (staged uploads not counted): under the root, or on the
    /// cluster backend under the prefix's `blobs/` in the bucket.
    pub fn stored_blob_bytes(&self) -> u64 {
        match self.prefix() {
            Some(prefix) => prefix
                .objects()
                .iter()
                .filter(|o| o.key[prefix.prefix().len()..].starts_with("blobs/"))
                .map(|o| o.size)
                .sum(),
            None => files_under(&self.root.join("blobs"), &|name| name != "_uploads"),
        }
    }

    /// Everything the registry has stored, to compare before and after requests that must
    /// store nothing: each file and directory under the root (`None` for a directory), and
    /// on the cluster backend each object under the prefix (`s3:<key>`) and each row of the
    /// database (`postgres:<INSERT …>`, `None`).
    pub fn stored(&self) -> BTreeMap<String, Option<u64>> {
        let mut stored = BTreeMap::new();
        tree(&self.root, &self.root, &mut stored);
        if let Some(prefix) = self.prefix() {
            for object in prefix.objects() {
                let key = &object.key[prefix.prefix().len()..];
                stored.insert(format!("s3:{key}"), Some(object.size));
            }
        }
        if let Some(database) = self.cluster.as_ref().and_then(|c| c.database.as_ref()) {
            for row in database.rows() {
                stored.insert(format!("postgres:{row}"), None);
            }
        }
        stored
    }

    /// Runs `rbuild registry fsck` on the root with the registry's config (so on whichever
    /// storage it names); returns whether it passed and what it printed.
    pub fn fsck(&self) -> (bool, String) {
        let mut command = Command::new(rbuild_bin());
        command.args(["registry", "fsck", "--root"]).arg(&self.root);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        let out = command.output().expect("run fsck");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- rbuild serve log ---\n{}", self.log());
            for panic in crate::failure::latest_panics() {
                eprintln!("--- {panic}");
            }
        }
    }
}

/// The total size of the files under `dir`, in the subdirectories whose names `descend`
/// accepts.
fn files_under(dir: &Path, descend: &dyn Fn(&std::ffi::OsStr) -> bool) -> u64 {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .filter(|e| descend(&e.file_name()))
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => files_under(&e.path(), descend),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Each file (with its size) and directory (`None`) under `dir`, by its path from `root`.
fn tree(dir: &Path, root: &Path, out: &mut BTreeMap<String, Option<u64>>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
        match entry.metadata() {
            Ok(m) if m.is_dir() => {
                out.insert(relative, None);
                tree(&path, root, out);
            }
            Ok(m) => {
                out.insert(relative, Some(m.len()));
            }
            Err(_) => {}
        }
    }
}

/// Starts `rbuild serve` on port 0 and reads the scheme and bound address from its start-up
/// line.
fn spawn(
    root: &Path,
    config: Option<&Path>,
    options: &ServeOptions,
    log: &Arc<Mutex<String>>,
) -> (Child, String, SocketAddr) {
    let addr = if options.addr.is_empty() {
        "127.0.0.1:0"
    } else {
        &options.addr
    };
    let mut command = Command::new(rbuild_bin());
    command
        .args(["serve", "--addr", addr, "--root"])
        .arg(root)
        .args(&options.args)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command.spawn().expect("start rbuild serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1)
                && let Some((scheme, rest)) = rest.split_once("://")
            {
                let addr = rest.split(',').next().unwrap_or(rest).trim().to_owned();
                let _ = tx.send((scheme.to_owned(), addr));
            }
            if let Ok(mut sink) = sink.lock() {
                sink.push_str(&line);
                sink.push('\n');
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok((scheme, addr)) => (child, scheme, addr.parse().expect("listen address")),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "rbuild serve did not start; log:\n{}",
                log.lock().map(|l| l.clone()).unwrap_or_default()
            );
        }
    }
}
