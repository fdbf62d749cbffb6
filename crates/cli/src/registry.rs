//! `rbuild registry …`: maintenance of a registry's storage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use rbuild_registry::storage::fs::fsck;

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Re-hash every blob and check every link; exit 1 if anything is wrong.
    Fsck {
        /// Storage root of the registry
        #[arg(long, env = "RBUILD_REGISTRY_ROOT")]
        root: PathBuf,
    },
}

pub fn run(command: RegistryCommand) -> anyhow::Result<ExitCode> {
    match command {
        RegistryCommand::Fsck { root } => {
            if !root.is_dir() {
                anyhow::bail!("{} is not a directory", root.display());
            }
            let report = fsck::fsck(&root)?;
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
    }
}
