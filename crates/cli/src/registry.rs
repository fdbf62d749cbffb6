//! `rbuild registry …`: maintenance of a registry's storage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use rbuild_registry::config::{BlobDriver, MetadataDriver};
use rbuild_registry::gc::GcOptions;
use rbuild_registry::storage::fs::fsck;
use rbuild_registry::storage::select;
use rbuild_registry::{Config, Registry};

/// Which registry: its config file and storage root, as `rbuild serve` takes them.
#[derive(Args)]
pub struct Target {
    /// Storage root of the registry [default: the config's `root`, else serve's default]
    #[arg(long, env = "RBUILD_REGISTRY_ROOT")]
    root: Option<PathBuf>,
    /// The registry's TOML config file
    #[arg(long, env = "RBUILD_CONFIG")]
    config: Option<PathBuf>,
}

impl Target {
    /// The configuration and the storage root, which must exist.
    fn resolve(&self) -> anyhow::Result<(Config, PathBuf)> {
        let config = load_config(self.config.as_deref())?;
        let root = self
            .root
            .clone()
            .or_else(|| config.root.clone())
            .unwrap_or_else(crate::serve::default_root);
        if !root.is_dir() {
            anyhow::bail!("{} is not a directory", root.display());
        }
        Ok((config, root))
    }
}

/// The config file, or the defaults without one.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    })
}

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Re-hash every blob and check every link; exit 1 if anything is wrong.
    Fsck {
        #[command(flatten)]
        target: Target,
    },
    /// Remove what no tag keeps (and what retention policies let go), while the registry
    /// serves; see `[gc]` in the README.
    Gc {
        #[command(flatten)]
        target: Target,
        /// Print what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Bring the metadata database's schema up to date (`[metadata] driver = "postgres"`);
    /// every replica also does this when it starts.
    Migrate {
        /// The registry's TOML config file
        #[arg(long, env = "RBUILD_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn run(command: RegistryCommand) -> anyhow::Result<ExitCode> {
    match command {
        RegistryCommand::Fsck { target } => {
            let (config, root) = target.resolve()?;
            check(&root, config)
        }
        RegistryCommand::Gc { target, dry_run } => {
            let (config, root) = target.resolve()?;
            collect(&root, config, dry_run)
        }
        RegistryCommand::Migrate { config } => migrate(&load_config(config.as_deref())?),
    }
}

fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match runtime.block_on(select::migrate(config))? {
        Some(migrated) => println!("{migrated}"),
        None => println!(
            "the {:?} metadata store has no schema to migrate",
            config.metadata.driver
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The filesystem pair is checked file by file (which also finds files the stores never
/// list); any other store through the storage traits.
fn check(root: &Path, config: Config) -> anyhow::Result<ExitCode> {
    let on_files = config.storage.driver == BlobDriver::Filesystem
        && config.metadata.driver == MetadataDriver::Filesystem;
    let report = if on_files {
        fsck::fsck(root)?
    } else {
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        runtime.block_on(async {
            let registry = Registry::open(root, config)
                .await
                .with_context(|| format!("opening the registry at {}", root.display()))?;
            anyhow::Ok(registry.fsck().await?)
        })?
    };
    for finding in &report.findings {
        println!("{finding}");
    }
    println!(
        "checked {} blobs ({} bytes), {} repositories, {} links, {} manifests, {} tags, {} uploads: {}",
        report.blobs,
        report.bytes,
        report.repositories,
        report.links,
        report.manifests,
        report.tags,
        report.uploads,
        if report.has_errors() { "ERRORS FOUND" } else { "ok" }
    );
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn collect(root: &Path, config: Config, dry_run: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let registry = Registry::open(root, config)
            .await
            .with_context(|| format!("opening the registry at {}", root.display()))?;
        anyhow::Ok(registry.collect_garbage(GcOptions { dry_run }).await?)
    })?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for removed in &report.removed {
        println!("{verb} {removed}");
    }
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
