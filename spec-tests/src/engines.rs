//! The engines the registry's cluster backends run on — PostgreSQL and Garage, a real
//! S3-compatible object store — for tests. Nothing here is a fake: every call reaches the
//! real server.
//!
//! A test gets an engine one of two ways:
//! - the shared instance `scripts/test` starts (through `scripts/engines.sh`) and describes in
//!   the `RBUILD_TEST_*` variables: [`Postgres::shared`], [`Garage::shared`]. A test isolates
//!   itself on it with a database ([`Postgres::database`]) or a key prefix
//!   ([`Garage::prefix`]) of its own, removed again when dropped.
//! - a private instance it starts itself on free ports, to stop and start again (fault
//!   tests): [`Postgres::private`], [`Garage::private`]. It is stopped by PID when dropped.
//!
//! Private instances are started and stopped by the functions of `scripts/engines.sh`, so the
//! tests and `scripts/test` set the engines up one same way. Data go through the engines' own
//! clients: `psql` and curl's SigV4 signing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{output, require, run};

/// `scripts/engines.sh`, which starts and stops the engines.
const ENGINES_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/engines.sh");

/// Where the variables come from, for the skip/fail message.
const HINT: &str =
    "scripts/test starts PostgreSQL and Garage; by hand: `source scripts/engines.sh; engines_start DIR`";

/// A variable of the engines' contract, under [`require`]'s rule: `None` (the test skips)
/// when unset outside CI; the test fails when unset in CI.
fn contract(names: &[&str]) -> Option<Vec<String>> {
    let values: Vec<Option<String>> = names.iter().map(|n| std::env::var(n).ok()).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| *n)
        .collect();
    let what = format!("{} (unset: {})", names.join(", "), missing.join(", "));
    require(&what, missing.is_empty(), HINT).then(|| values.into_iter().flatten().collect())
}

/// A name no other test uses: `t_` and a random UUID's hex.
fn unique_name() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// An engine process this test started, in a directory of its own; stopped by PID when
/// dropped.
struct Private {
    dir: tempfile::TempDir,
    /// `pg` or `garage`: which `engines_<kind>_*` functions of `scripts/engines.sh` drive it.
    kind: &'static str,
    env: Vec<(&'static str, String)>,
}

impl Private {
    /// A fresh directory that the postgres user may enter (PostgreSQL refuses to run as root,
    /// so `scripts/engines.sh` runs it as postgres).
    fn new(kind: &'static str, env: Vec<(&'static str, String)>) -> Private {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod temp dir");
        Private { dir, kind, env }
    }

    /// The engine's directory.
    fn path(&self) -> PathBuf {
        self.dir.path().join(self.kind)
    }

    /// `engines_<kind>_<step>` for each step, on the engine's directory (and `args`).
    fn script(&self, steps: &[&str], args: &[&str]) -> Command {
        let script = steps
            .iter()
            .map(|step| format!("engines_{}_{step} \"$1\" \"${{@:2}}\"", self.kind))
            .collect::<Vec<_>>()
            .join(" && ");
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("source \"$0\" && {script}"))
            .arg(ENGINES_SH)
            .arg(self.path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the steps, failing the test unless all succeed.
    fn run(&self, steps: &[&str], args: &[&str]) {
        run(&mut self.script(steps, args));
    }

    /// A file the engine's functions wrote in its directory (`port`, `key_id`, …), trimmed.
    fn read(&self, name: &str) -> String {
        let path = self.path().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.trim().to_owned()
    }

    /// The private engine of a handle, which only one made by `constructor` has.
    fn of<'a>(private: &'a Option<Private>, constructor: &str) -> &'a Private {
        private
            .as_ref()
            .unwrap_or_else(|| panic!("only an engine from {constructor} can be stopped and started"))
    }

    fn stop(&self) {
        self.run(&["stop"], &[]);
    }

    fn start(&self) {
        self.run(&["start"], &[]);
    }
}

impl Drop for Private {
    /// Stops the engine by PID (as [`Private::stop`] does) if it runs.
    fn drop(&mut self) {
        if self.path().join("pid").exists() {
            let _ = self.script(&["stop"], &[]).status();
        }
    }
}

/// How to reach a PostgreSQL server as its superuser: `psql` and `postgres://…:PORT`.
#[derive(Clone, Debug)]
struct Server {
    /// `postgres://postgres@127.0.0.1:PORT`, without a database.
    base: String,
    psql: PathBuf,
}

impl Server {
    /// Runs `sql` on `database`; returns its unaligned output, or what went wrong.
    fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = output(
            Command::new(&self.psql)
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(format!("{}/{database}?connect_timeout=5", self.base))
                .args(["-c", sql]),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// A PostgreSQL server: the shared one or a private one.
pub struct Postgres {
    server: Server,
    bin: PathBuf,
    private: Option<Private>,
}

impl Postgres {
    /// The server `scripts/test` started (`RBUILD_TEST_POSTGRES_URL`, `RBUILD_TEST_PG_BIN`).
    pub fn shared() -> Option<Postgres> {
        let vars = contract(&["RBUILD_TEST_POSTGRES_URL", "RBUILD_TEST_PG_BIN"])?;
        let (url, bin) = (&vars[0], PathBuf::from(&vars[1]));
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        Some(Postgres {
            server: Server {
                base: base.to_owned(),
                psql: bin.join("psql"),
            },
            bin,
            private: None,
        })
    }

    /// A server of this test's own, from `RBUILD_TEST_PG_BIN`, on a free port: it can be
    /// [stopped](Postgres::stop) and [started](Postgres::start) again.
    pub fn private() -> Option<Postgres> {
        let bin = PathBuf::from(&contract(&["RBUILD_TEST_PG_BIN"])?[0]);
        let private = Private::new("pg", vec![("RBUILD_TEST_PG_BIN", bin.display().to_string())]);
        private.run(&["init", "start"], &[]);
        let base = format!("postgres://postgres@127.0.0.1:{}", private.read("port"));
        Some(Postgres {
            server: Server {
                base,
                psql: bin.join("psql"),
            },
            bin,
            private: Some(private),
        })
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.server.base)
    }

    /// PostgreSQL's bin directory (`pg_dump`, `psql`, …).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A new, empty database for this test, dropped (its connections closed) when the handle
    /// is dropped.
    pub fn database(&self) -> Database {
        let name = unique_name();
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        Database {
            name,
            server: self.server.clone(),
        }
    }

    /// Runs `sql` on `database`, failing the test unless it succeeds; returns the rows, one
    /// a line, columns separated by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.server
            .psql(database, sql)
            .unwrap_or_else(|e| panic!("psql {database} -c {sql:?} failed: {e}"))
    }

    /// Stops a private server (PostgreSQL's fast shutdown, by PID): clients get errors until
    /// it is [started](Postgres::start) again.
    pub fn stop(&self) {
        self.private_server().stop();
    }

    /// Starts a stopped private server again, on the same port with the same data; returns
    /// once it accepts connections.
    pub fn start(&self) {
        self.private_server().start();
    }

    fn private_server(&self) -> &Private {
        Private::of(&self.private, "Postgres::private")
    }
}

/// A database of one test; dropped with the handle.
pub struct Database {
    name: String,
    server: Server,
}

impl Database {
    /// Its name (`t_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:PORT/<name>`, for `[metadata.postgres] url`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server.base, self.name)
    }

    /// Every row of every table, as `pg_dump --data-only` writes them (one `INSERT` a row,
    /// sorted): what a test compares to see that nothing was stored.
    pub fn rows(&self) -> Vec<String> {
        let pg_dump = self.server.psql.with_file_name("pg_dump");
        let dump = run(Command::new(pg_dump)
            .args(["--data-only", "--inserts", "--no-owner", "-d"])
            .arg(self.url()));
        let mut rows: Vec<String> = dump
            .lines()
            .filter(|l| l.starts_with("INSERT INTO"))
            .map(str::to_owned)
            .collect();
        rows.sort();
        rows
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = self.server.psql("postgres", &drop) {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

/// How to reach an S3 bucket: endpoint, region, bucket and a key allowed to use it.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The region the server signs for (`garage`).
    pub region: String,
    /// The bucket's name.
    pub bucket: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Object {
    /// Its full key (the prefix included).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Bucket {
    /// A curl command signed with the key (SigV4, unsigned payload).
    fn curl(&self) -> Command {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--fail-with-body", "--max-time", "60", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", self.region))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key_id, self.secret_access_key))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        command
    }

    /// `endpoint/bucket` and `rest` (a key, or a query starting with `?`), path-style.
    fn url(&self, rest: &str) -> String {
        format!("{}/{}{rest}", self.endpoint, self.bucket)
    }

    /// Every object whose key starts with `prefix`, in key order (all pages).
    pub fn list(&self, prefix: &str) -> Result<Vec<Object>, String> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // In sorted order: curl signs the query as written, and S3 checks the signature
            // of the sorted one.
            let continuation = token
                .as_ref()
                .map(|token| format!("continuation-token={}&", query_escape(token)))
                .unwrap_or_default();
            let query = format!("?{continuation}list-type=2&prefix={}", query_escape(prefix));
            let body = self.call(self.curl().arg(self.url(&query)))?;
            for contents in elements(&body, "Contents") {
                let key = elements(contents, "Key")
                    .next()
                    .map(xml_unescape)
                    .unwrap_or_default();
                let size = elements(contents, "Size")
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                objects.push(Object { key, size });
            }
            token = elements(&body, "NextContinuationToken").next().map(xml_unescape);
            if token.is_none() {
                return Ok(objects);
            }
        }
    }

    /// The keys and upload ids of the multipart uploads in progress under `prefix`.
    pub fn uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, String> {
        let body = self.call(
            self.curl()
                .arg(self.url(&format!("?prefix={}&uploads=", query_escape(prefix)))),
        )?;
        Ok(elements(&body, "Upload")
            .map(|upload| {
                let field = |tag| elements(upload, tag).next().map(xml_unescape).unwrap_or_default();
                (field("Key"), field("UploadId"))
            })
            .collect())
    }

    /// Stores `bytes` as the object `key`.
    pub fn put(&self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::fs::write(file.path(), bytes).map_err(|e| e.to_string())?;
        let url = self.url(&format!("/{}", path_escape(key)));
        self.call(self.curl().arg("-T").arg(file.path()).arg(url))
            .map(drop)
    }

    /// Deletes every object and aborts every multipart upload under `prefix`.
    pub fn clear(&self, prefix: &str) -> Result<(), String> {
        for object in self.list(prefix)? {
            let url = self.url(&format!("/{}", path_escape(&object.key)));
            self.call(self.curl().args(["-X", "DELETE"]).arg(url))?;
        }
        for (key, id) in self.uploads(prefix)? {
            let url = self.url(&format!("/{}?uploadId={}", path_escape(&key), query_escape(&id)));
            self.call(self.curl().args(["-X", "DELETE"]).arg(url))?;
        }
        Ok(())
    }

    fn call(&self, command: &mut Command) -> Result<String, String> {
        let out = output(command);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "{command:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// The contents of each `<tag>…</tag>` in `xml`, in order (S3's answers have no attributes
/// on the elements read here, and no nesting of an element in itself).
fn elements<'a>(xml: &'a str, tag: &str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let end = start + rest[start..].find(&close)?;
        let found = &rest[start..end];
        rest = &rest[end + close.len()..];
        Some(found)
    })
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Percent-encodes all but S3's unreserved characters (and `/` when `keep_slash`).
fn escape(text: &str, keep_slash: bool) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b'/' if keep_slash => "/".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_escape(text: &str) -> String {
    escape(text, false)
}

fn path_escape(text: &str) -> String {
    escape(text, true)
}

/// A Garage node: the shared one or a private one.
pub struct Garage {
    bucket: Bucket,
    private: Option<Private>,
}

impl Garage {
    /// The node `scripts/test` started (`RBUILD_TEST_S3_*`).
    pub fn shared() -> Option<Garage> {
        let vars = contract(&[
            "RBUILD_TEST_S3_ENDPOINT",
            "RBUILD_TEST_S3_REGION",
            "RBUILD_TEST_S3_BUCKET",
            "RBUILD_TEST_S3_ACCESS_KEY_ID",
            "RBUILD_TEST_S3_SECRET_ACCESS_KEY",
        ])?;
        let [endpoint, region, bucket, access_key_id, secret_access_key] =
            <[String; 5]>::try_from(vars).expect("five variables");
        Some(Garage {
            bucket: Bucket {
                endpoint,
                region,
                bucket,
                access_key_id,
                secret_access_key,
            },
            private: None,
        })
    }

    /// A node of this test's own, from `RBUILD_TEST_GARAGE`, on free ports, with a one-node
    /// layout, a bucket and a key: it can be [stopped](Garage::stop) and
    /// [started](Garage::start) again.
    pub fn private() -> Option<Garage> {
        let garage = contract(&["RBUILD_TEST_GARAGE"])?.remove(0);
        let private = Private::new("garage", vec![("RBUILD_GARAGE", garage)]);
        let bucket = "registry";
        private.run(&["init", "start", "setup"], &[bucket]);
        Some(Garage {
            bucket: Bucket {
                endpoint: format!("http://127.0.0.1:{}", private.read("s3_port")),
                region: "garage".to_owned(),
                bucket: bucket.to_owned(),
                access_key_id: private.read("key_id"),
                secret_access_key: private.read("secret_key"),
            },
            private: Some(private),
        })
    }

    /// The bucket and its key.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// A key prefix no other test uses (`t_<uuid>/`); what is stored under it is deleted
    /// when the handle is dropped.
    pub fn prefix(&self) -> Prefix {
        Prefix {
            prefix: format!("{}/", unique_name()),
            bucket: self.bucket.clone(),
        }
    }

    /// Stops a private node (SIGTERM, by PID): requests fail until it is
    /// [started](Garage::start) again.
    pub fn stop(&self) {
        self.private_node().stop();
    }

    /// Starts a stopped private node again, on the same ports with the same data; returns
    /// once it reports itself healthy.
    pub fn start(&self) {
        self.private_node().start();
    }

    fn private_node(&self) -> &Private {
        Private::of(&self.private, "Garage::private")
    }
}

/// One test's part of a bucket: the objects under a unique prefix, deleted when dropped.
pub struct Prefix {
    prefix: String,
    bucket: Bucket,
}

impl Prefix {
    /// The prefix (`t_<uuid>/`), for `[storage.s3] prefix`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bucket it is in.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The objects stored under the prefix, in key order.
    pub fn objects(&self) -> Vec<Object> {
        self.bucket
            .list(&self.prefix)
            .unwrap_or_else(|e| panic!("listing {}: {e}", self.prefix))
    }

    /// The `[storage.s3]` table naming this prefix, its bucket and key.
    pub fn config(&self) -> toml::Table {
        let mut table = toml::Table::new();
        let b = &self.bucket;
        for (key, value) in [
            ("endpoint", &b.endpoint),
            ("region", &b.region),
            ("bucket", &b.bucket),
            ("prefix", &self.prefix),
            ("access_key_id", &b.access_key_id),
            ("secret_access_key", &b.secret_access_key),
        ] {
            table.insert(key.to_owned(), toml::Value::String(value.clone()));
        }
        table.insert("path_style".to_owned(), toml::Value::Boolean(true));
        table
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Err(e) = self.bucket.clear(&self.prefix) {
            eprintln!("cannot clear test prefix {}: {e}", self.prefix);
        }
    }
}

/// What a registry on the cluster backends keeps its state in: a key prefix in a bucket
/// (blobs) and a database (metadata), or one of the two with the filesystem for the other.
/// Replicas given the same one share their state.
pub struct ClusterStorage {
    /// The database (`[metadata.postgres] url`), if metadata are in PostgreSQL.
    pub database: Option<Database>,
    /// The prefix (`[storage.s3]`), if blobs are in S3.
    pub prefix: Option<Prefix>,
}

impl ClusterStorage {
    /// A new database and prefix on the shared engines (skipped or failed per [`require`]
    /// when `scripts/test` did not start them).
    pub fn shared() -> Option<ClusterStorage> {
        ClusterStorage::shared_parts(true, true)
    }

    /// A new prefix (if `s3`) and database (if `postgres`) on the shared engines.
    pub fn shared_parts(s3: bool, postgres: bool) -> Option<ClusterStorage> {
        let prefix = if s3 {
            Some(Garage::shared()?.prefix())
        } else {
            None
        };
        let database = if postgres {
            Some(Postgres::shared()?.database())
        } else {
            None
        };
        Some(ClusterStorage { database, prefix })
    }

    /// A new database and prefix on the given engines (private ones, for fault tests).
    pub fn on(postgres: &Postgres, garage: &Garage) -> ClusterStorage {
        ClusterStorage {
            database: Some(postgres.database()),
            prefix: Some(garage.prefix()),
        }
    }

    /// The registry configuration `toml` with its blobs in the prefix (`[storage] driver =
    /// "s3"`) and its metadata in the database (`[metadata] driver = "postgres"`); what
    /// `toml` sets itself in those tables stays.
    pub fn config(&self, toml: &str) -> String {
        let mut config: toml::Table = toml.parse().expect("the test's registry config is TOML");
        let postgres = self.database.as_ref().map(|database| {
            let mut table = toml::Table::new();
            table.insert("url".to_owned(), database.url().into());
            ("metadata", "postgres", table)
        });
        let s3 = self
            .prefix
            .as_ref()
            .map(|prefix| ("storage", "s3", prefix.config()));
        for (section, driver, table) in s3.into_iter().chain(postgres) {
            let section = config
                .entry(section)
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .expect("[storage] and [metadata] are tables");
            section.entry("driver").or_insert_with(|| driver.into());
            section.entry(driver).or_insert_with(|| table.into());
        }
        config.to_string()
    }

    /// Whether a registry configuration names a backend of its own (`driver` in `[storage]`
    /// or `[metadata]`).
    pub fn names_backend(toml: &str) -> bool {
        let config: toml::Table = toml.parse().expect("the test's registry config is TOML");
        ["storage", "metadata"]
            .iter()
            .any(|section| config.get(*section).and_then(|s| s.get("driver")).is_some())
    }
}
