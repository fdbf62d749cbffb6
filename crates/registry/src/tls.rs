//! HTTPS with rustls: the certificate chain and key (and, optionally, the CA that client
//! certificates must chain to) from PEM files, HTTP/2 and HTTP/1.1 offered through ALPN, and a
//! reload that swaps the configuration for new connections while established ones carry on.
//!
//! ```no_run
//! # fn demo() -> Result<(), rbuild_registry::tls::TlsError> {
//! use rbuild_registry::config::TlsConfig;
//! use rbuild_registry::tls::Tls;
//!
//! let tls = Tls::load(&TlsConfig {
//!     cert: "/etc/rbuild/tls.crt".into(),
//!     key: "/etc/rbuild/tls.key".into(),
//!     client_ca: None,
//! })?;
//! // After the files are renewed (on SIGHUP, say):
//! tls.reload()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// HTTPS settings. Every file is read again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, every
    /// connection must present one.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, say).
    #[error("TLS configuration from {cert} and {key}: {reason}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The server's TLS settings, reloadable.
pub struct Tls {
    settings: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// A client configuration trusting the system's roots (the built-in Mozilla set when the
/// system has none: a container built from scratch), and the PEM bundle `extra_ca` too.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    if loaded.certs.is_empty() {
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec());
    } else {
        roots.add_parsable_certificates(loaded.certs);
    }
    if let Some(path) = extra_ca {
        roots.add_parsable_certificates(certificates(path)?);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::File {
            path: extra_ca.unwrap_or(Path::new("")).to_owned(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the rustls configuration the settings describe.
fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key)
        .map_err(|e| file_error(&settings.key, format!("no usable private key: {e}")))?;
    let config_error = |reason: String| TlsError::Config {
        cert: settings.cert.clone(),
        key: settings.key.clone(),
        reason,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_error(path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Reads the files `settings` names.
    pub fn load(settings: &TlsConfig) -> Result<Tls, TlsError> {
        let config = server_config(settings)?;
        Ok(Tls {
            settings: settings.clone(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again. New connections use the new certificate; connections already
    /// established keep theirs. On error the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.settings)?);
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// An acceptor for one new connection, with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Whether connections must present a client certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_missing_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = TlsConfig {
            cert: dir.path().join("nope.crt"),
            key: empty.clone(),
            client_ca: None,
        };
        let err = Tls::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");
        let no_blocks = TlsConfig {
            cert: empty.clone(),
            key: empty,
            client_ca: None,
        };
        let err = Tls::load(&no_blocks).unwrap_err().to_string();
        assert!(err.contains("no CERTIFICATE"), "{err}");
    }
}
