//! Real PostgreSQL for the tests: a fresh database per test on the server
//! `RBUILD_TEST_POSTGRES_URL` names, and a private server (from `RBUILD_TEST_PG_BIN`) that a
//! test may stop and start again.
//!
//! In CI (`CI=true`) a missing variable fails the test; elsewhere the test is skipped and says
//! why, as `rbuild_spec_tests::tools::require` does for tools.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::NoTls;

use super::{PgMetadataStore, PostgresConfig};

/// The value of a test variable, or `None` (after saying why) when the test should be skipped.
fn require_env(name: &str, hint: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name) {
        return Some(value);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!in_ci, "{name} is required in CI but is not set: {hint}");
    eprintln!("SKIPPED: {name} is not set ({hint})");
    None
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let server = match base.rsplit_once('/') {
        Some((server, _)) if !server.ends_with(":/") => server,
        _ => base,
    };
    format!("{server}/{database}{query}")
}

/// Runs one statement on its own connection.
async fn admin(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test server: {e}"));
    let task = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    drop(client);
    let _ = task.await;
}

/// A database of its own for one test, dropped when the test ends (even by a panic).
pub(super) struct TestDb {
    admin: String,
    name: String,
    /// Its connection URL.
    pub url: String,
}

impl TestDb {
    /// A new empty database, or `None` when no test server is configured.
    pub async fn create() -> Option<TestDb> {
        TestDb::create_with("").await
    }

    /// A new empty database whose default collation is linguistic (ICU's en-US), unlike the
    /// byte order the test server may have been initialized with.
    pub async fn create_linguistic() -> Option<TestDb> {
        TestDb::create_with(" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'").await
    }

    async fn create_with(options: &str) -> Option<TestDb> {
        let admin_url = require_env(
            "RBUILD_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:PORT/postgres of a running PostgreSQL; scripts/test starts one",
        )?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin(&admin_url, &format!("CREATE DATABASE {name}{options}")).await;
        Some(TestDb {
            url: with_database(&admin_url, &name),
            admin: admin_url,
            name,
        })
    }

    /// A configuration naming this database.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: Some(self.url.clone()),
            ..PostgresConfig::default()
        }
    }

    /// A store (a replica's connection pool) on this database, migrated.
    pub async fn store(&self) -> PgMetadataStore {
        PgMetadataStore::open(&self.config()).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, sql) = (
            self.admin.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(admin(&url, &sql));
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A PostgreSQL server of the test's own, in a temporary directory, on a free loopback port.
pub(super) struct PrivateServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateServer {
    /// Initializes and starts a server, or `None` when `RBUILD_TEST_PG_BIN` is not set.
    pub fn start() -> Option<PrivateServer> {
        let bin = PathBuf::from(require_env(
            "RBUILD_TEST_PG_BIN",
            "the PostgreSQL bin directory, e.g. /usr/lib/postgresql/15/bin",
        )?);
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // initdb and postgres refuse to run as root; the cluster belongs to `postgres`.
            run(Command::new("chown").arg("postgres").arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        let port = free_port();
        let server = PrivateServer { bin, dir, port };
        server.resume();
        Some(server)
    }

    /// Its `postgres` database's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a failover).
    pub fn stop(&self) {
        run(self.pg_ctl().args(["stop", "-m", "fast", "-w"]));
    }

    /// Starts the server again, on the same port.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        run(self.pg_ctl().args(["start", "-w", "-o", &options, "-l"]).arg(log));
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.dir.path().join("data"));
        command
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.pg_ctl().args(["stop", "-m", "immediate", "-w"]).output();
    }
}

/// A loopback port nobody listens on, below Linux's ephemeral range (32768–60999) so that no
/// outgoing connection takes it while the server is stopped.
fn free_port() -> u16 {
    loop {
        let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into().unwrap());
        let port = 20_000 + random % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run as the `postgres` user when the tests run as root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_database_name_replaces_the_last_path_segment() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
        "postgres://postgres@127.0.0.1:5432/t_1"
    );
    assert_eq!(
        with_database("postgres://u@h:1/db?sslmode=disable", "t_1"),
        "postgres://u@h:1/t_1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h:1", "t_1"), "postgres://u@h:1/t_1");
}
