//! `rbuild htpasswd USER`: a bcrypt entry for `rbuild serve --htpasswd`, printed or written
//! into an htpasswd file (the same format as Apache's `htpasswd -B`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use rbuild_oci::atomic::{WriteOptions, write_atomic_with};
use rbuild_registry::auth::{DEFAULT_BCRYPT_COST, hash_password};

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

/// Replaces `user`'s line in `text` (or appends one).
fn with_entry(text: &str, user: &str, entry: &str) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == user) {
            if !replaced {
                out.push_str(entry);
                out.push('\n');
                replaced = true;
            }
        } else if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(entry);
        out.push('\n');
    }
    out
}

/// Writes `text` to `path` atomically and durably, readable by its owner only.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let options = WriteOptions {
        mode: Some(0o600),
        ..WriteOptions::FLUSHED
    };
    write_atomic_with(path, text.as_bytes(), options).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: HtpasswdArgs) -> anyhow::Result<ExitCode> {
    if args.user.is_empty() || args.user.contains([':', '\n', '\r']) {
        anyhow::bail!("user names cannot be empty or contain ':' or line breaks");
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
    let hash = hash_password(&password, args.cost).context("hashing the password")?;
    let entry = format!("{}:{hash}", args.user);
    match &args.file {
        None => println!("{entry}"),
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            write_atomically(path, &with_entry(&text, &args.user, &entry))?;
            eprintln!(
                "{} {} in {} (send rbuild serve a SIGHUP to reload it)",
                if text.lines().any(|l| l.starts_with(&format!("{}:", args.user))) {
                    "updated"
                } else {
                    "added"
                },
                args.user,
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_or_appends_entries() {
        assert_eq!(with_entry("", "a", "a:x"), "a:x\n");
        assert_eq!(with_entry("a:1\nb:2\n", "a", "a:x"), "a:x\nb:2\n");
        assert_eq!(with_entry("b:2", "a", "a:x"), "b:2\na:x\n");
        assert_eq!(with_entry("ab:1\n", "a", "a:x"), "ab:1\na:x\n");
    }
}
