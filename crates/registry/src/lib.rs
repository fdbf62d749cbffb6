//! An OCI Distribution v1.1 registry: the server behind `rbuild serve`.
//!
//! docker, containerd (and so Kubernetes), podman and skopeo push to it and pull from it
//! unchanged. The crate is layered the way a request flows:
//!
//! - [`route`] reads the resource from the path (from the right: names contain slashes) and
//!   validates every identifier before anything else sees it;
//! - [`auth`] decides who may do what (htpasswd, a built-in token service, tokens from an
//!   external issuer, per-repository rules) before any handler runs;
//! - [`Registry`] dispatches to one handler per resource (`handlers/`), which speak the spec's
//!   headers and [error codes](error::ErrorCode);
//! - [`notify`] turns what requests did into events for the configured endpoints;
//! - [`storage`] keeps content behind two traits, with the filesystem as the default;
//! - [`proxy`] fills proxied repositories from upstream registries on first pull;
//! - [`server`] runs hyper (over [`tls`] when configured) with graceful shutdown, access logs
//!   (each request under a [`request_id`]) and the stale-upload purge;
//! - [`gc`] collects garbage and applies retention while the server runs;
//! - [`metrics`] counts requests, storage calls, notifications, collections and the
//!   pull-through cache for Prometheus (`GET /metrics`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild_registry::{Config, Registry, server};
//!
//! let registry = Registry::open(std::path::Path::new("/tmp/registry"), Config::default()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! server::run(registry.into(), listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod error;
mod fsck;
pub mod gc;
mod handlers;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod server;
pub mod storage;
pub mod tls;

use std::path::Path;

use auth::{Auth, AuthError};
pub use config::Config;
pub use error::{ErrorCode, RegistryError};
use metrics::{Metered, Metrics};
use notify::Notifier;
use storage::fs::{FsBlobStore, FsMetadataStore};
use storage::select::{self, Blobs, Metadata};
use storage::{BlobStore, MetadataStore};

/// The registry application: storage, settings, auth and metrics. Cheap to share behind an
/// `Arc`. Both stores are [`Metered`], so every storage call is counted where it is made.
/// By default the stores are those the configuration names ([`Registry::open`]).
pub struct Registry<B = Blobs, M = Metadata> {
    blobs: Metered<B>,
    metadata: Metered<M>,
    config: Config,
    auth: Auth,
    notifier: Notifier,
    gc_metrics: gc::GcMetrics,
    metrics: Metrics,
    proxies: proxy::Proxies,
}

/// Why a registry could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The storage root is not usable.
    #[error(transparent)]
    Storage(#[from] std::io::Error),
    /// A configured store could not be opened.
    #[error(transparent)]
    Select(#[from] select::SelectError),
    /// The auth configuration is not usable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A `[[proxy]]` table is not usable.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

impl Registry {
    /// A registry over the stores `config` names (`[storage]` and `[metadata]`); `root` is
    /// where the filesystem ones keep their files.
    pub async fn open(root: &Path, config: Config) -> Result<Self, OpenError> {
        let (blobs, metadata) = select::open(&config, root).await?;
        Registry::new(blobs, metadata, config)
    }
}

impl Registry<FsBlobStore, FsMetadataStore> {
    /// A registry keeping everything under `root` on the local filesystem.
    pub fn open_fs(root: &Path, config: Config) -> Result<Self, OpenError> {
        let fsync = config.storage.fsync;
        Registry::new(
            FsBlobStore::open(root, fsync)?,
            FsMetadataStore::open(root, fsync)?,
            config,
        )
    }
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// A registry over the given stores, with the auth and upstreams `config` describes (their
    /// files read now).
    pub fn new(blobs: B, metadata: M, config: Config) -> Result<Self, OpenError> {
        let auth = Auth::from_config(&config.auth)?;
        let notifier = Notifier::new(&config.notifications);
        let gc_metrics = gc::GcMetrics::default();
        let proxies = proxy::Proxies::open(&config.proxy)?;
        let metrics = Metrics::with_parts(&[notifier.metrics(), &gc_metrics, &proxies.metrics]);
        Ok(Registry {
            blobs: Metered::new(blobs, metrics.storage()),
            metadata: Metered::new(metadata, metrics.storage()),
            config,
            auth,
            notifier,
            gc_metrics,
            metrics,
            proxies,
        })
    }

    /// The settings the registry runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Authentication and authorization (to reload their files).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Event notifications (to start their senders and register their metrics).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
