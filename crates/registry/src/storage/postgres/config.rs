//! `[metadata.postgres]`: which database, and how many connections a replica keeps to it.
//!
//! The URL carries the password, so it may come from the config file, from a file of its own
//! (a mounted Kubernetes Secret) or from the environment, never only from the command line
//! where `ps` shows it to every user; and it is never printed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PostgresError;

/// The environment variable read when the config names no URL.
pub const URL_ENV: &str = "RBUILD_POSTGRES_URL";

/// Settings of the PostgreSQL metadata store.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`; else `url_file`, else `RBUILD_POSTGRES_URL`.
    pub url: Option<String>,
    /// A file holding the URL (surrounding whitespace ignored).
    pub url_file: Option<PathBuf>,
    /// The most connections this replica opens.
    pub pool_size: usize,
    /// How long a call waits for a connection (connecting included) before it fails with
    /// 503: a database that is down is reported quickly instead of hanging requests.
    pub connect_timeout_secs: u64,
    /// A PEM bundle trusted besides the system's roots when the URL asks for TLS
    /// (`sslmode=require`): a private CA's, or a managed service's.
    pub ca: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> PostgresConfig {
        PostgresConfig {
            url: None,
            url_file: None,
            pool_size: 16,
            connect_timeout_secs: 5,
            ca: None,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("ca", &self.ca)
            .finish()
    }
}

impl PostgresConfig {
    /// The connection URL, from wherever the configuration says.
    pub fn resolve_url(&self) -> Result<String, PostgresError> {
        match (&self.url, &self.url_file) {
            (Some(_), Some(_)) => Err(PostgresError::Config(
                "set either url or url_file in [metadata.postgres], not both".into(),
            )),
            (Some(url), None) => Ok(url.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|source| PostgresError::UrlFile {
                    path: path.clone(),
                    source,
                }),
            (None, None) => std::env::var(URL_ENV).map_err(|_| {
                PostgresError::Config(format!(
                    "driver = \"postgres\" needs url or url_file in [metadata.postgres], or {URL_ENV}"
                ))
            }),
        }
    }

    /// [`connect_timeout_secs`](Self::connect_timeout_secs) as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}
