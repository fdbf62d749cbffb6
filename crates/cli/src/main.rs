//! `rbuild`: build container images from Dockerfiles, and serve them from an OCI registry.
//!
//! The binary is thin: it parses arguments, sets up logging and hands over to the library
//! crates, where everything testable lives.

mod args;
mod check;
mod registry;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build container images, and serve them from an OCI registry.
#[derive(Parser)]
#[command(name = "rbuild", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an OCI Distribution v1.1 registry.
    Serve(serve::ServeArgs),
    /// Check a Dockerfile for problems without building it.
    Check(check::CheckArgs),
    /// Maintain a registry's storage.
    Registry {
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Registry { command } => registry::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
