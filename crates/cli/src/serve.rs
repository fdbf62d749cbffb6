//! `rbuild serve`: settings from flags, environment and config file, then the server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rbuild_registry::config::{AuthMode, LogFormat, TlsConfig};
use rbuild_registry::tls::Tls;
use rbuild_registry::{Config, Registry, metrics, server};

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
    /// Serve HTTPS with this certificate chain (PEM; reloaded on SIGHUP) [config: tls.cert]
    #[arg(long, env = "RBUILD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM) [config: tls.key]
    #[arg(long, env = "RBUILD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM) [config: tls.client_ca]
    #[arg(long, env = "RBUILD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Users (bcrypt htpasswd file, see `rbuild htpasswd`); turns on Basic auth unless --auth
    /// says otherwise [config: auth.htpasswd]
    #[arg(long, env = "RBUILD_HTPASSWD")]
    htpasswd: Option<PathBuf>,
    /// How clients authenticate [config: auth.mode; default: none]
    #[arg(long, env = "RBUILD_AUTH", value_enum)]
    auth: Option<AuthModeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthModeArg {
    None,
    Htpasswd,
    Token,
    External,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Where a new user expects a service's data: the XDG data directory.
pub(crate) fn default_root() -> PathBuf {
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

/// Applies the TLS and auth flags on top of the config file.
fn apply_security_flags(config: &mut Config, args: &ServeArgs) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let client_ca = config.tls.as_ref().and_then(|t| t.client_ca.clone());
        config.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca,
        });
    }
    if let Some(ca) = &args.tls_client_ca {
        let Some(tls) = &mut config.tls else {
            anyhow::bail!(
                "--tls-client-ca needs TLS: give --tls-cert and --tls-key (or [tls] in the config)"
            );
        };
        tls.client_ca = Some(ca.clone());
    }
    if let Some(path) = &args.htpasswd {
        config.auth.htpasswd = Some(path.clone());
        if config.auth.mode == AuthMode::None {
            config.auth.mode = AuthMode::Htpasswd;
        }
    }
    if let Some(mode) = args.auth {
        config.auth.mode = match mode {
            AuthModeArg::None => AuthMode::None,
            AuthModeArg::Htpasswd => AuthMode::Htpasswd,
            AuthModeArg::Token => AuthMode::Token,
            AuthModeArg::External => AuthMode::External,
        };
    }
    Ok(())
}

/// Reloads certificates and auth files on every SIGHUP; a failed reload keeps what was loaded.
async fn reload_on_sighup(registry: Arc<Registry>, tls: Option<Arc<Tls>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates and users will not be reloaded");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading certificates and auth files");
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!("TLS reload failed, keeping the previous certificate: {e}"),
            }
        }
        match registry.auth().reload() {
            Ok(()) => tracing::info!("{}", registry.auth().describe()),
            Err(e) => tracing::error!("auth reload failed, keeping the previous users and keys: {e}"),
        }
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
    if let Some(root) = &args.root {
        config.root = Some(root.clone());
    }
    apply_security_flags(&mut config, &args)?;
    if let Some(format) = args.log_format {
        config.log.format = match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    let root = config.root.clone().unwrap_or_else(default_root);
    init_logging(config.log.format);

    let tls = config
        .tls
        .as_ref()
        .map(|settings| Tls::load(settings).map(Arc::new))
        .transpose()
        .context("loading the TLS certificate")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let registry = Arc::new(
            Registry::open(&root, config.clone())
                .await
                .with_context(|| format!("opening the registry at {}", root.display()))?,
        );
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("listening on {}", config.addr))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "rbuild registry listening on {scheme}://{addr}, storing data in {}",
            root.display()
        );
        tracing::info!("{}", registry.auth().describe());
        if tls.as_ref().is_some_and(|t| t.requires_client_certificates()) {
            tracing::info!("clients must present a certificate signed by the configured CA");
        }
        if tls.is_none() && registry.auth().mode() != AuthMode::None && !addr.ip().is_loopback() {
            tracing::warn!(
                "auth is on without TLS: credentials and tokens cross the network in the clear; give --tls-cert and --tls-key"
            );
        }
        if let Some(addr) = config.metrics.addr.filter(|_| config.metrics.enabled) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?;
            tracing::info!("metrics at http://{}/metrics", listener.local_addr()?);
            tokio::spawn(metrics::serve(registry.clone(), listener, std::future::pending()));
        }
        tokio::spawn(reload_on_sighup(registry.clone(), tls.clone()));
        server::run_with(registry, listener, tls, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
