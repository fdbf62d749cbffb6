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
//! driver = "filesystem"    # where blobs live: see `crate::storage::select`
//! fsync = true             # flush blobs and metadata to disk before acknowledging
//! delete_enabled = true    # false: DELETE answers 405 UNSUPPORTED
//!
//! [storage.s3]             # driver = "s3": see `crate::storage::s3::S3Config`
//! endpoint = "http://127.0.0.1:3900"
//! bucket = "registry"
//!
//! [metadata]
//! driver = "filesystem"    # where repositories, manifests and tags live, or "postgres"
//!
//! [metadata.postgres]      # see `crate::storage::postgres`
//! url = "postgres://rbuild@127.0.0.1:5432/registry"  # or url_file, or env RBUILD_POSTGRES_URL
//! pool_size = 16
//! connect_timeout_secs = 5
//!
//! [limits]
//! max_manifest_bytes = 4194304
//! max_page_entries = 1000  # most entries in one tags/catalog/referrers response
//!
//! [uploads]
//! auto_mount = true        # mount a known blob even when the client names no `from`
//! purge_after_secs = 86400 # abandon uploads idle this long
//! purge_interval_secs = 3600
//!
//! [tls]                    # serve HTTPS (HTTP/1.1 and HTTP/2); reloaded on SIGHUP
//! cert = "/etc/rbuild/tls.crt"
//! key = "/etc/rbuild/tls.key"
//! client_ca = "/etc/rbuild/clients-ca.crt"   # optional: require client certificates
//!
//! [metrics]                # see `crate::metrics`
//! enabled = true
//! addr = "127.0.0.1:9090"  # optional: its own listener, without auth
//!
//! [auth]                   # see `crate::auth`
//! mode = "token"           # none | htpasswd | token | external
//! htpasswd = "/etc/rbuild/htpasswd"
//! anonymous_pull = false
//!
//! [auth.token]
//! service = "registry.example.com"
//! key = "/etc/rbuild/token.key"
//!
//! [auth.groups]
//! ci = ["builder"]
//!
//! [[auth.rules]]
//! repositories = ["team-a/**"]
//! groups = ["ci"]
//! actions = ["pull", "push"]
//!
//! [[notifications]]        # see `crate::notify`
//! url = "http://127.0.0.1:9000/events"
//! actions = ["push", "delete"]
//!
//! [gc]                     # see `crate::gc::GcConfig`
//! grace_secs = 3600
//!
//! [[proxy]]                # a pull-through cache: see `crate::proxy`
//! url = "https://registry-1.docker.io"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::proxy::ProxyConfig;
pub use crate::tls::TlsConfig;

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
    /// Storage behaviour, and where blobs live.
    pub storage: StorageConfig,
    /// Where named state lives.
    pub metadata: MetadataConfig,
    /// Request limits.
    pub limits: Limits,
    /// Upload behaviour.
    pub uploads: UploadConfig,
    /// How long in-flight requests may run after SIGTERM before the server exits anyway.
    pub shutdown_grace_secs: u64,
    /// HTTPS; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Event notification endpoints (`[[notifications]]`); see [`crate::notify`].
    pub notifications: Vec<crate::notify::EndpointConfig>,
    /// Garbage collection and retention (`crate::gc`).
    pub gc: crate::gc::GcConfig,
    /// Where `/metrics` is served.
    pub metrics: crate::metrics::MetricsConfig,
    /// Upstream registries this one is a pull-through cache of (`[[proxy]]`).
    pub proxy: Vec<ProxyConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            root: None,
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            metadata: MetadataConfig::default(),
            limits: Limits::default(),
            uploads: UploadConfig::default(),
            shutdown_grace_secs: 30,
            tls: None,
            auth: AuthConfig::default(),
            notifications: Vec::new(),
            gc: crate::gc::GcConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
            proxy: Vec::new(),
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
    /// Where blobs live (`driver = "filesystem"`, under the root, unless told otherwise).
    pub driver: BlobDriver,
    /// Flush data to disk before acknowledging it (survives power loss, not just crashes).
    pub fsync: bool,
    /// Whether DELETE of manifests, tags and blobs is allowed.
    pub delete_enabled: bool,
    /// The bucket, for `driver = "s3"`.
    pub s3: Option<crate::storage::s3::S3Config>,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            driver: BlobDriver::Filesystem,
            fsync: true,
            delete_enabled: true,
            s3: None,
        }
    }
}

/// The backend that holds blobs and uploads in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobDriver {
    /// Files under the storage root: the embedded default.
    #[default]
    Filesystem,
    /// An S3-compatible bucket, configured by `[storage.s3]`.
    S3,
    /// In this process's memory, gone when it exits: for tests and benchmarks.
    Memory,
}

/// Where named state (repositories, manifests, tags, upload sessions) lives: `[metadata]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataConfig {
    /// The backend (`driver = "filesystem"`, under the root, unless told otherwise).
    pub driver: MetadataDriver,
    /// The database, when `driver = "postgres"`.
    pub postgres: crate::storage::postgres::PostgresConfig,
}

/// The backend that holds named state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataDriver {
    /// Files under the storage root: the embedded default.
    #[default]
    Filesystem,
    /// In this process's memory, gone when it exits: for tests and benchmarks.
    Memory,
    /// A PostgreSQL database every replica shares (`[metadata.postgres]`).
    Postgres,
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

/// How requests are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Everyone may do everything: for a registry on loopback or behind a trusted proxy.
    #[default]
    None,
    /// HTTP Basic authentication against an htpasswd file of bcrypt hashes.
    Htpasswd,
    /// The built-in token service (`/token`) issues ES256 JWTs to the htpasswd users; the
    /// registry accepts them as `Bearer` tokens.
    Token,
    /// Tokens issued by an external service, verified with its public keys.
    External,
}

/// An action on a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// Every action.
    #[serde(rename = "*")]
    All,
}

/// Who may do what, where: one entry of `[[auth.rules]]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    /// Repository patterns: `*` matches within one path component, `**` across components.
    pub repositories: Vec<String>,
    /// User names; `"*"` is every authenticated user.
    pub users: Vec<String>,
    /// Group names from `[auth.groups]`.
    pub groups: Vec<String>,
    /// What the rule allows on its repositories.
    pub actions: Vec<Action>,
    /// Whether the rule also lets unauthenticated clients pull (never push or delete).
    pub anonymous: bool,
    /// Whether the rule grants the catalog (`registry:catalog:*`).
    pub catalog: bool,
}

/// Failed-login limiting: after `max_failures` failed logins from one address within
/// `window_secs`, logins from it are answered 429 until the window ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginLimit {
    /// Failed logins allowed per window.
    pub max_failures: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

impl Default for LoginLimit {
    fn default() -> LoginLimit {
        LoginLimit {
            max_failures: 10,
            window_secs: 60,
        }
    }
}

/// Token settings, for `token` (the built-in service) and `external` (another issuer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The token endpoint clients are sent to. For `token`, the default is this server's
    /// `/token` at the scheme and host the client used; required for `external`.
    pub realm: Option<String>,
    /// The service name: the challenge's `service` and the tokens' audience (`aud`).
    pub service: String,
    /// The issuer (`iss`) tokens must name.
    pub issuer: String,
    /// `token`: the ES256 signing key (PEM, PKCS#8 P-256). Unset: a key is generated at
    /// start-up, and tokens do not survive a restart or work across replicas.
    pub key: Option<PathBuf>,
    /// `token`: lifetime of access tokens, in seconds (at least 60).
    pub ttl_secs: u64,
    /// `token`: lifetime of refresh tokens (`offline_token=true`, `access_type=offline`); 0
    /// issues none.
    pub refresh_ttl_secs: u64,
    /// `external`: the issuer's public keys (PEM public keys or certificates), ES256 or RS256.
    pub public_keys: Vec<PathBuf>,
    /// `external`: a JWKS file with the issuer's keys.
    pub jwks: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            realm: None,
            service: "rbuild".to_owned(),
            issuer: "rbuild".to_owned(),
            key: None,
            ttl_secs: 300,
            refresh_ttl_secs: 7 * 24 * 60 * 60,
            public_keys: Vec::new(),
            jwks: None,
            leeway_secs: 30,
        }
    }
}

/// Authentication and authorization settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How clients authenticate.
    pub mode: AuthMode,
    /// The users: an htpasswd file of bcrypt entries (`rbuild htpasswd` writes them).
    pub htpasswd: Option<PathBuf>,
    /// The highest bcrypt cost accepted in the htpasswd file (each verification costs
    /// 2^cost rounds; a file with dearer entries is refused at start-up).
    pub max_bcrypt_cost: u32,
    /// Everyone, logged in or not, may pull every repository.
    pub anonymous_pull: bool,
    /// Limits failed logins per client address; unset: no limit.
    pub login_limit: Option<LoginLimit>,
    /// Groups of users, for rules.
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// Authorization rules. With none, every authenticated user may do everything.
    pub rules: Vec<Rule>,
    /// Token settings.
    pub token: TokenConfig,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            mode: AuthMode::None,
            htpasswd: None,
            max_bcrypt_cost: 14,
            anonymous_pull: false,
            login_limit: None,
            groups: Default::default(),
            rules: Vec::new(),
            token: TokenConfig::default(),
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
    fn reads_tls_and_auth() {
        let c: Config = toml::from_str(
            r#"
            [tls]
            cert = "/tls/crt"
            key = "/tls/key"
            [auth]
            mode = "token"
            htpasswd = "/etc/htpasswd"
            anonymous_pull = true
            [auth.login_limit]
            max_failures = 3
            [auth.token]
            service = "reg"
            ttl_secs = 120
            [auth.groups]
            ci = ["bot"]
            [[auth.rules]]
            repositories = ["team/**"]
            groups = ["ci"]
            actions = ["pull", "push"]
            [[auth.rules]]
            users = ["admin"]
            repositories = ["**"]
            actions = ["*"]
            catalog = true
            "#,
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/tls/key"));
        assert_eq!(c.auth.mode, AuthMode::Token);
        assert_eq!(c.auth.login_limit.unwrap().max_failures, 3);
        assert_eq!(c.auth.token.service, "reg");
        assert_eq!(c.auth.token.issuer, "rbuild");
        assert_eq!(c.auth.rules[0].actions, [Action::Pull, Action::Push]);
        assert_eq!(c.auth.rules[1].actions, [Action::All]);
        assert!(c.auth.rules[1].catalog);
        assert!(toml::from_str::<Config>("[auth]\nmode = \"ldap\"\n").is_err());
        assert!(toml::from_str::<Config>("[[auth.rules]]\nactions = [\"write\"]\n").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<Config>("[storage]\ndelete_enable = false\n").unwrap_err();
        assert!(err.to_string().contains("delete_enable"), "{err}");
    }
}
