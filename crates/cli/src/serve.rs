//! `rbuild serve`: settings from flags, environment and config file, then the server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rbuild_registry::config::LogFormat;
use rbuild_registry::{Config, Registry, server};

/// Flags override the config file, which overrides the defaults.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "RBUILD_ADDR")]
    addr: Option<SocketAddr>,
    /// Storage root [default: $XDG_DATA_HOME/rbuild/registry]
    #[arg(long, env = "RBUILD_REGISTRY_ROOT")]
    root: Option<PathBuf>,
    /// TOML config file (see the README for every key)
    #[arg(long, env = "RBUILD_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format
    #[arg(long, env = "RBUILD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Where a new user expects a service's data: the XDG data directory.
fn default_root() -> PathBuf {
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    match data_home {
        Some(dir) => dir.join("rbuild").join("registry"),
        None => PathBuf::from("/var/lib/rbuild/registry"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot listen for signals; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if let Some(root) = args.root {
        config.root = Some(root);
    }
    if let Some(format) = args.log_format {
        config.log.format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    let root = config.root.clone().unwrap_or_else(default_root);
    init_logging(config.log.format);

    let registry = Registry::open_fs(&root, config.clone())
        .with_context(|| format!("opening registry storage at {}", root.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("listening on {}", config.addr))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            "rbuild registry listening on http://{addr}, storing data in {}",
            root.display()
        );
        server::run(Arc::new(registry), listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
