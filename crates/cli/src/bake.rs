//! `rbuild bake`: read compose and bake files into build targets (rbuild-bake), and print
//! them as `docker buildx bake --print` does. Building them is not wired yet.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Arguments of `rbuild bake`.
#[derive(Args)]
pub struct BakeArgs {
    /// A compose or bake file, repeatable, merged in order [default: compose.yaml (or
    /// compose.yml, docker-compose.yml, docker-compose.yaml), docker-bake.json,
    /// docker-bake.hcl, docker-bake.override.json, docker-bake.override.hcl, those found]
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// Override a target attribute: PATTERN.KEY[.SUB]=VALUE, or += to append (repeatable)
    #[arg(long = "set")]
    set: Vec<String>,
    /// Print the resolved targets as JSON and build nothing
    #[arg(long)]
    print: bool,
    /// Targets or groups [default: group default]
    targets: Vec<String>,
}

pub fn run(args: BakeArgs) -> anyhow::Result<ExitCode> {
    let options = rbuild_bake::Options {
        files: args.files,
        dir: std::env::current_dir().context("reading the current directory")?,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        overrides: args.set,
        targets: args.targets,
    };
    let bake = rbuild_bake::load(&options)?;
    if !args.print {
        anyhow::bail!("rbuild bake cannot build yet: use --print to see the targets");
    }
    println!("{}", serde_json::to_string_pretty(&bake.to_json())?);
    Ok(ExitCode::SUCCESS)
}
