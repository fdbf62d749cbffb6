//! What the builder commands share: the local store, the registry client, and the adapter
//! through which the builder fetches base images.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use futures_util::future::{BoxFuture, FutureExt};
use rbuild_builder::solver::Remote;
use rbuild_builder::store::LocalStore;
use rbuild_builder::{BuildError, Result as BuildResult};
use rbuild_client::{Client, ClientOptions};
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageManifest, Platform};
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference};

/// Where the local store is and how registries are reached.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The local store [default: $XDG_CACHE_HOME/rbuild]
    #[arg(long, env = "RBUILD_ROOT")]
    pub root: Option<PathBuf>,
    /// A registry to reach over plain HTTP or unverified TLS (repeatable)
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) to trust for registries (repeatable)
    #[arg(long = "tls-ca")]
    pub ca_files: Vec<PathBuf>,
}

impl StoreArgs {
    /// The store directory: `--root`, else the XDG cache directory.
    pub fn root(&self) -> PathBuf {
        self.root.clone().unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/var/cache"));
            cache.join("rbuild")
        })
    }

    /// Opens the local store.
    pub fn open(&self) -> anyhow::Result<LocalStore> {
        let root = self.root();
        LocalStore::open(&root).with_context(|| format!("opening the local store at {}", root.display()))
    }

    /// A registry client with docker's credentials and these options.
    pub fn client(&self) -> anyhow::Result<Client> {
        let options = ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ca_files: self.ca_files.clone(),
            ..ClientOptions::default()
        };
        Ok(Client::new(options)?)
    }
}

/// Base images and ADD downloads come through the registry client.
pub struct ClientRemote(pub Client);

impl Remote for ClientRemote {
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        platform: &'a Platform,
        store: &'a ContentStore,
    ) -> BoxFuture<'a, BuildResult<(Descriptor, ImageManifest, ImageConfig)>> {
        async move {
            let image = self
                .0
                .pull(reference, platform, store)
                .await
                .map_err(|e| BuildError::Fetch(format!("pulling {reference}: {e}")))?;
            Ok((image.manifest_descriptor, image.manifest, image.config))
        }
        .boxed()
    }

    fn download<'a>(
        &'a self,
        url: &'a str,
        to: &'a Path,
    ) -> BoxFuture<'a, BuildResult<(Digest, Option<i64>)>> {
        async move {
            let download = self
                .0
                .download(url, to)
                .await
                .map_err(|e| BuildError::Fetch(e.to_string()))?;
            let modified = download
                .last_modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok());
            Ok((download.digest, modified))
        }
        .boxed()
    }
}

/// What a build reaches the network through: the registry client.
pub fn remote(args: &StoreArgs) -> anyhow::Result<Arc<dyn Remote>> {
    Ok(Arc::new(ClientRemote(args.client()?)))
}

/// A tokio runtime for a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Parses a reference the way docker does (`app` → `docker.io/library/app:latest`).
pub fn reference(text: &str) -> anyhow::Result<Reference> {
    text.parse()
        .with_context(|| format!("invalid image reference {text:?}"))
}
