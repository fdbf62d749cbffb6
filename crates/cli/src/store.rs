//! What the builder commands share: the local store and the registry client.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use rbuild_builder::remote::Remote;
use rbuild_builder::store::LocalStore;
use rbuild_client::{Client, ClientOptions};
use rbuild_oci::Reference;

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

/// What a build reaches the network through: the registry client.
pub fn remote(args: &StoreArgs) -> anyhow::Result<Arc<dyn Remote>> {
    Ok(Arc::new(args.client()?))
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
