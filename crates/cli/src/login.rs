//! `rbuild login` and `rbuild logout`: credentials in the docker config (`$DOCKER_CONFIG`, else
//! `~/.docker/config.json`), through `credsStore`/`credHelpers` when configured, exactly as
//! `docker login` and `docker logout` keep them — so docker and rbuild share one login.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use rbuild_client::credentials::{self, DockerConfig};
use rbuild_client::{Client, ClientOptions, Credential};

use crate::password;
use crate::store::runtime;

/// `rbuild login`.
#[derive(Args)]
pub struct LoginArgs {
    /// The user name (prompted for when absent)
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Read the password (or access token) from stdin
    #[arg(long)]
    password_stdin: bool,
    /// A registry to reach over plain HTTP or unverified TLS (repeatable)
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// An extra CA certificate (PEM) to trust (repeatable); /etc/docker/certs.d is read too
    #[arg(long = "tls-ca")]
    ca_files: Vec<PathBuf>,
    /// The registry (`host[:port]`) [default: Docker Hub]
    registry: Option<String>,
}

/// `rbuild logout`.
#[derive(Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`) [default: Docker Hub]
    registry: Option<String>,
}

/// The registry as image references name it (`docker.io` for Docker Hub's aliases).
fn registry_name(argument: Option<&str>) -> String {
    let host = credentials::hostname(argument.unwrap_or("docker.io"));
    if credentials::server_address(&host) == credentials::DOCKER_HUB_SERVER {
        "docker.io".to_owned()
    } else {
        host
    }
}

pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry.as_deref());
    let username = match args.username {
        Some(user) => user,
        None if password::can_prompt() && !args.password_stdin => password::prompt_line("Username: ")?,
        None => anyhow::bail!("give --username (there is no terminal to prompt on)"),
    };
    if username.is_empty() {
        anyhow::bail!("the user name is empty");
    }
    let password = if args.password_stdin {
        password::from_stdin("password")?
    } else if password::can_prompt() {
        password::prompt_secret("Password: ")?
    } else {
        anyhow::bail!("no terminal to prompt for the password: use --password-stdin");
    };
    let client = Client::new(ClientOptions {
        insecure_registries: args.insecure_registries,
        ca_files: args.ca_files,
        ..ClientOptions::default()
    })?;
    let credential = Credential::Password {
        username: username.clone(),
        password: password.clone(),
    };
    runtime()?
        .block_on(client.login(&registry, &credential))
        .with_context(|| format!("logging in to {registry}"))?;
    let config = DockerConfig::default();
    config
        .store(&registry, &username, &password)
        .with_context(|| format!("saving the credentials in {}", config.dir().display()))?;
    println!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry.as_deref());
    let config = DockerConfig::default();
    let removed = config
        .erase(&registry)
        .with_context(|| format!("removing the credentials from {}", config.dir().display()))?;
    if removed {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_registries_as_references_do() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(registry_name(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(
            registry_name(Some("registry.example:5000")),
            "registry.example:5000"
        );
        assert_eq!(
            registry_name(Some("https://registry.example:5000/v2/")),
            "registry.example:5000"
        );
    }
}
