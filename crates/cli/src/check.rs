//! `rbuild check`: parse and plan a Dockerfile without building, and report problems the way
//! BuildKit's build checks do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use rbuild_builder::context::read_dockerignore;
use rbuild_dockerfile::{CheckOptions, check};

use crate::args::parse_key_value;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Arguments of `rbuild check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// A build argument, KEY=VALUE
    #[arg(long = "build-arg", value_parser = parse_key_value)]
    build_args: Vec<(String, String)>,
    /// Check only what this stage needs
    #[arg(long)]
    target: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The build context, for checks that need it (CopyIgnoredFile)
    #[arg(default_value = ".")]
    context: PathBuf,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let file = args.file.unwrap_or_else(|| args.context.join("Dockerfile"));
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut options = CheckOptions {
        file_name: file.display().to_string(),
        ..CheckOptions::default()
    };
    options.plan.build_args = args.build_args.into_iter().collect::<BTreeMap<_, _>>();
    options.plan.target = args.target;
    options.plan.dockerignore = read_dockerignore(&file, &args.context)?;
    let report = check(&text, &options);
    match args.format {
        Format::Text => print!("{}", report.render(&text)),
        Format::Json => println!("{}", report.to_json()),
    }
    Ok(if report.exit_code() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
