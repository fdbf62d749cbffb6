//! Registry settings: what the TOML config file holds, with the defaults a new user gets.
//!
//! Every field has a default, so an empty file (or no file) is a valid configuration; unknown
//! keys are errors, so a typo is never silently ignored.
//!
//! ```toml
//! addr = "127.0.0.1:5000"
//! root = "/var/lib/rbuild/registry"
//!
//! [log]
//! format = "json"          # or "text"
//!
//! [storage]
//! fsync = true             # flush blobs and metadata to disk before acknowledging
//! delete_enabled = true    # false: DELETE answers 405 UNSUPPORTED
//!
//! [limits]
//! max_manifest_bytes = 4194304
//! max_page_entries = 1000  # most entries in one tags/catalog/referrers response
//!
//! [uploads]
//! auto_mount = true        # mount a known blob even when the client names no `from`
//! purge_after_secs = 86400 # abandon uploads idle this long
//! purge_interval_secs = 3600
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        source: toml::de::Error,
    },
}

/// Everything `rbuild serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// The storage root; when unset, the caller picks the platform's data directory.
    pub root: Option<PathBuf>,
    /// Logging.
    pub log: LogConfig,
    /// Storage behaviour.
    pub storage: StorageConfig,
    /// Request limits.
    pub limits: Limits,
    /// Upload behaviour.
    pub uploads: UploadConfig,
    /// How long in-flight requests may run after SIGTERM before the server exits anyway.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            root: None,
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            uploads: UploadConfig::default(),
            shutdown_grace_secs: 30,
        }
    }
}

impl Config {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The grace period for in-flight requests at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
}

/// Storage settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Flush data to disk before acknowledging it (survives power loss, not just crashes).
    pub fsync: bool,
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            fsync: true,
            delete_enabled: true,
        }
    }
}

/// Request limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The largest manifest accepted; larger ones get 413.
    pub max_manifest_bytes: u64,
    /// The most entries one tags, catalog or referrers response holds.
    pub max_page_entries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_page_entries: 1000,
        }
    }
}

/// Upload settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Mount a blob the registry holds when a client asks to mount it without naming `from`.
    pub auto_mount: bool,
    /// Uploads that have not grown for this long are discarded.
    pub purge_after_secs: u64,
    /// How often to look for stale uploads.
    pub purge_interval_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> UploadConfig {
        UploadConfig {
            auto_mount: true,
            purge_after_secs: 24 * 60 * 60,
            purge_interval_secs: 60 * 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    }

    #[test]
    fn reads_every_section() {
        let c: Config = toml::from_str(
            r#"
            addr = "0.0.0.0:6000"
            root = "/srv/registry"
            shutdown_grace_secs = 5
            [log]
            format = "json"
            [storage]
            fsync = false
            delete_enabled = false
            [limits]
            max_manifest_bytes = 1024
            max_page_entries = 10
            [uploads]
            auto_mount = false
            purge_after_secs = 60
            purge_interval_secs = 10
            "#,
        )
        .unwrap();
        assert_eq!(c.addr.port(), 6000);
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(!c.storage.delete_enabled);
        assert_eq!(c.limits.max_manifest_bytes, 1024);
        assert!(!c.uploads.auto_mount);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<Config>("[storage]\ndelete_enable = false\n").unwrap_err();
        assert!(err.to_string().contains("delete_enable"), "{err}");
    }
}
