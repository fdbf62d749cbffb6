//! An OCI Distribution v1.1 registry: the server behind `rbuild serve`.
//!
//! docker, containerd (and so Kubernetes), podman and skopeo push to it and pull from it
//! unchanged. The crate is layered the way a request flows:
//!
//! - [`route`] reads the resource from the path (from the right: names contain slashes) and
//!   validates every identifier before anything else sees it;
//! - [`Registry`] dispatches to one handler per resource (`handlers/`), which speak the spec's
//!   headers and [error codes](error::ErrorCode);
//! - [`storage`] keeps content behind two traits, with the filesystem as the default;
//! - [`server`] runs hyper with graceful shutdown, access logs and the stale-upload purge.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild_registry::{Config, Registry, server};
//!
//! let registry = Registry::open_fs(std::path::Path::new("/tmp/registry"), Config::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! server::run(registry.into(), listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod error;
mod handlers;
pub mod http;
pub mod route;
pub mod server;
pub mod storage;

use std::path::Path;

pub use config::Config;
pub use error::{ErrorCode, RegistryError};
use storage::fs::{FsBlobStore, FsMetadataStore};
use storage::{BlobStore, MetadataStore};

/// The registry application: storage plus settings. Cheap to share behind an `Arc`.
pub struct Registry<B = FsBlobStore, M = FsMetadataStore> {
    blobs: B,
    metadata: M,
    config: Config,
}

impl Registry<FsBlobStore, FsMetadataStore> {
    /// A registry keeping everything under `root` on the local filesystem.
    pub fn open_fs(root: &Path, config: Config) -> std::io::Result<Self> {
        let fsync = config.storage.fsync;
        Ok(Registry::new(
            FsBlobStore::open(root, fsync)?,
            FsMetadataStore::open(root, fsync)?,
            config,
        ))
    }
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// A registry over the given stores.
    pub fn new(blobs: B, metadata: M, config: Config) -> Self {
        Registry {
            blobs,
            metadata,
            config,
        }
    }

    /// The settings the registry runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}
