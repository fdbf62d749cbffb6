//! `rbuild htpasswd USER`: a bcrypt entry for `rbuild serve --htpasswd`, printed or written
//! into an htpasswd file (the same format as Apache's `htpasswd -B`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use rbuild_registry::auth::{
    DEFAULT_BCRYPT_COST, EntryChange, INVALID_USER, hash_password, is_valid_user, set_entry,
};

use crate::password;

/// `rbuild htpasswd`.
#[derive(Args)]
pub struct HtpasswdArgs {
    /// Add or replace the user's entry in this file (created, mode 0600) instead of printing it
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// bcrypt cost: each check costs 2^cost rounds; the server refuses entries above its
    /// auth.max_bcrypt_cost (14 unless configured)
    #[arg(long, default_value_t = DEFAULT_BCRYPT_COST, value_parser = clap::value_parser!(u32).range(4..=31))]
    cost: u32,
    /// Read the password from stdin instead of prompting
    #[arg(long)]
    password_stdin: bool,
    /// The user name
    user: String,
}

pub fn run(args: HtpasswdArgs) -> anyhow::Result<ExitCode> {
    if !is_valid_user(&args.user) {
        anyhow::bail!(INVALID_USER);
    }
    let password = if args.password_stdin {
        password::from_stdin("password")?
    } else if password::can_prompt() {
        let first = password::prompt_secret(&format!("New password for {}: ", args.user))?;
        let again = password::prompt_secret("Repeat the password: ")?;
        if first != again {
            anyhow::bail!("the passwords differ; nothing was written");
        }
        if first.is_empty() {
            anyhow::bail!("the password is empty; nothing was written");
        }
        first
    } else {
        anyhow::bail!("no terminal to prompt for the password: use --password-stdin");
    };
    if password.len() > 72 {
        eprintln!("note: bcrypt uses only the first 72 bytes of a password");
    }
    if args.cost > 14 {
        eprintln!(
            "note: cost {} is above the server's default auth.max_bcrypt_cost (14)",
            args.cost
        );
    }
    match &args.file {
        None => {
            let hash = hash_password(&password, args.cost).context("hashing the password")?;
            println!("{}:{hash}", args.user);
        }
        Some(path) => {
            let change = set_entry(path, &args.user, &password, args.cost)?;
            let done = match change {
                EntryChange::Added => "added",
                EntryChange::Updated => "updated",
            };
            eprintln!(
                "{done} {} in {} (send rbuild serve a SIGHUP to reload it)",
                args.user,
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
