//! [`PgMetadataStore`]: named state in a PostgreSQL database that every replica shares.
//!
//! The driver is tokio-postgres with a deadpool-postgres pool, rather than sqlx, because it
//! adds the least compile time, which every CI run on these 2-core machines pays: built alone
//! (`cargo build -j1`, two runs alternated, on a base of the crates rbuild already builds:
//! tokio, serde, tracing, url, sha2), tokio-postgres + deadpool-postgres took 16.8 and 14.7
//! CPU-seconds against sqlx 0.8's (postgres and json features only, no macros) 27.5 and 26.9,
//! about 0.6×; they add 29 crates to the registry's tree against sqlx's 41. sqlx's
//! compile-time query checking is not wanted anyway (it needs a database at build time); the
//! queries are few and every one runs in the tests against a real server.
//!
//! Each write the handlers make is a single SQL statement, so it is its own transaction and no
//! replica ever sees half of it: a manifest and its referrers-index entry are one row, a tag
//! move is one upsert, and deleting a manifest deletes its tags through the foreign key in the
//! same statement. The `*_if_idle` deletions are `DELETE … WHERE touched < $cutoff`, which
//! PostgreSQL re-checks against a row a concurrent touch has just updated, so the touch and the
//! deletion are atomic with respect to each other. Listings page by key
//! (`WHERE name > $after ORDER BY name LIMIT n + 1`), so a page never repeats or skips an entry
//! that existed when the listing started, however many are pushed meanwhile.
//!
//! A database that cannot be reached (refused, pool timeout, server shut down) is reported as
//! [`StorageError::Unavailable`] (503); the pool drops closed connections and opens new ones as
//! soon as the server is back, without a restart.

mod config;
mod migrate;
mod store;
mod tls;

use std::error::Error as _;
use std::io;
use std::path::PathBuf;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;

pub use config::{PostgresConfig, URL_ENV};
pub use migrate::Migrated;

use super::{StorageError, StorageResult};

/// The backend's name, in metrics and in [`StorageError::Unavailable`].
const BACKEND: &str = "postgres";

/// How long data sent to the database may stay unacknowledged before the connection is
/// declared dead (unless the URL sets `tcp_user_timeout`).
const UNACKNOWLEDGED_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the PostgreSQL store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// `[metadata.postgres]` is incomplete or contradictory.
    #[error("{0}")]
    Config(String),
    /// `url_file` could not be read.
    #[error("reading the PostgreSQL URL from {path}: {source}")]
    UrlFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The URL is not a PostgreSQL connection string.
    #[error("the PostgreSQL URL is not valid: {0}")]
    Url(tokio_postgres::Error),
    /// `[metadata.postgres] ca` could not be read.
    #[error("the CA bundle for PostgreSQL: {0}")]
    Ca(crate::tls::TlsError),
    /// The pool could not be built.
    #[error("building the PostgreSQL connection pool: {0}")]
    Pool(String),
    /// The schema could not be brought up to date.
    #[error("migrating the PostgreSQL schema: {0}")]
    Migrate(StorageError),
}

/// Repository metadata in PostgreSQL; a clone shares the connection pool.
#[derive(Clone)]
pub struct PgMetadataStore {
    pool: Pool,
}

impl PgMetadataStore {
    /// Connects to the database `config` names and brings its schema up to date.
    pub async fn open(config: &PostgresConfig) -> Result<PgMetadataStore, PostgresError> {
        let store = PgMetadataStore::connect(config)?;
        store.migrate().await.map_err(PostgresError::Migrate)?;
        Ok(store)
    }

    /// A store over a pool of connections to the database `config` names; nothing is
    /// connected yet, and the schema is not checked.
    pub fn connect(config: &PostgresConfig) -> Result<PgMetadataStore, PostgresError> {
        let url = config.resolve_url()?;
        let mut pg: tokio_postgres::Config = url.parse().map_err(PostgresError::Url)?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.connect_timeout());
        }
        if pg.get_tcp_user_timeout().is_none() {
            // A database host that vanishes without closing the connection (a node lost, a
            // partition) fails the calls in flight after this long instead of hanging them.
            pg.tcp_user_timeout(UNACKNOWLEDGED_LIMIT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("rbuild");
        }
        if pg.get_ssl_mode() == SslMode::Prefer {
            // libpq's `prefer` takes TLS without checking the certificate; this client always
            // checks it, so TLS is what the URL asks for with `sslmode=require`, as before.
            pg.ssl_mode(SslMode::Disable);
        }
        let tls = tls::MakeRustls::new(config.ca.as_deref()).map_err(PostgresError::Ca)?;
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let timeout = Some(config.connect_timeout());
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PostgresError::Pool(e.to_string()))?;
        Ok(PgMetadataStore { pool })
    }

    /// A connection from the pool.
    async fn client(&self) -> StorageResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => query_error("connecting to the database", e),
            PoolError::Timeout(_) => unavailable("no database connection became free in time".into()),
            PoolError::Closed => unavailable("the connection pool is closed".into()),
            other => StorageError::io("connecting to the database", io::Error::other(other.to_string())),
        })
    }
}

fn unavailable(reason: String) -> StorageError {
    StorageError::Unavailable {
        backend: BACKEND,
        reason,
    }
}

/// Maps a driver error: the database being unreachable or going away is
/// [`StorageError::Unavailable`] (worth a retry); anything else is a failure of the request.
fn query_error(context: &str, e: tokio_postgres::Error) -> StorageError {
    let reason = match e.as_db_error() {
        Some(db) => db.to_string(),
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    if is_unreachable(&e) {
        unavailable(format!("{context}: {reason}"))
    } else {
        StorageError::io(context, io::Error::other(reason))
    }
}

/// Whether an error means the server cannot be reached or is going away, rather than that it
/// refused the statement.
fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        // Class 08: connection exception; 53: insufficient resources (too many connections);
        // 57P: operator intervention (admin or crash shutdown, cannot connect now).
        let code = code.code();
        return code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    }
    e.is_closed() || e.source().is_some_and(|s| s.is::<io::Error>()) || e.to_string().starts_with("timeout")
}

#[cfg(test)]
mod testdb;
#[cfg(test)]
mod tests;
