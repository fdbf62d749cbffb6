//! TLS settings per registry, read the way docker reads them.
//!
//! Trusted roots are the system's (`rustls-native-certs`: `/etc/ssl/certs` and friends, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`; the Mozilla set built into rbuild when the system has none),
//! plus [`ClientOptions::ca_files`](crate::ClientOptions::ca_files), plus docker's per-registry
//! directory `<certs.d>/<host[:port]>/`: every `*.crt` is a CA, and a `client.cert` with its
//! `client.key` (any `<name>.cert` + `<name>.key` pair) is a client certificate for mutual TLS.
//! Insecure registries get a verifier that accepts any certificate, as docker's
//! `insecure-registries` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::ClientError;

/// The crypto provider rbuild uses (ring: pure Rust and C, no cmake).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots, or the built-in Mozilla set when the system has none.
pub(crate) fn system_roots() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::debug!("loading system certificates: {error}");
    }
    if loaded.certs.is_empty() {
        tracing::debug!("no system certificates found; using the built-in Mozilla roots");
        return webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
    }
    loaded.certs
}

/// Reads every certificate in a PEM file.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let tls_error = |reason: String| ClientError::Tls {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| tls_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// What docker's `certs.d/<host>/` holds for one registry.
#[derive(Default)]
pub(crate) struct HostCerts {
    /// Extra trusted roots (`*.crt`).
    pub roots: Vec<CertificateDer<'static>>,
    /// A client certificate chain and key (`*.cert` + `*.key`).
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// Reads `<certs_d>/<name>/` for each candidate directory name that exists.
pub(crate) fn host_certs(certs_d: &Path, names: &[&str]) -> Result<HostCerts, ClientError> {
    let mut found = HostCerts::default();
    for name in names {
        // A registry name is `host[:port]`; never let it walk out of certs.d.
        if name.is_empty() || name.contains('/') || name.contains("..") {
            continue;
        }
        let dir = certs_d.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in &files {
            match file.extension().and_then(|e| e.to_str()) {
                Some("crt") => found.roots.extend(read_certificates(file)?),
                Some("cert") if found.identity.is_none() => {
                    let key = file.with_extension("key");
                    if !key.is_file() {
                        return Err(ClientError::Tls {
                            path: file.clone(),
                            reason: format!("missing key pair: {} does not exist", key.display()),
                        });
                    }
                    let chain = read_certificates(file)?;
                    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| ClientError::Tls {
                        path: key.clone(),
                        reason: format!("not a PEM private key: {e}"),
                    })?;
                    found.identity = Some((chain, private));
                }
                Some("key") if !file.with_extension("cert").is_file() => {
                    return Err(ClientError::Tls {
                        path: file.clone(),
                        reason: format!(
                            "missing client certificate: {} does not exist",
                            file.with_extension("cert").display()
                        ),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(found)
}

/// A rustls client configuration trusting `roots` (or nothing, when `verify` is false).
pub(crate) fn client_config(
    roots: &[CertificateDer<'static>],
    host: HostCerts,
    verify: bool,
    certs_d: &Path,
) -> Result<rustls::ClientConfig, ClientError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            path: certs_d.to_owned(),
            reason: e.to_string(),
        })?;
    let builder = if verify {
        let mut store = rustls::RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(roots.iter().chain(&host.roots).cloned());
        if ignored > 0 {
            tracing::debug!("ignored {ignored} unparsable root certificates ({added} added)");
        }
        builder.with_root_certificates(store)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
    };
    match host.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Tls {
                path: certs_d.to_owned(),
                reason: format!("client certificate: {e}"),
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// docker's `InsecureSkipVerify`: any certificate is accepted (signatures are still checked,
/// so the handshake itself is sound).
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_are_found() {
        assert!(!system_roots().is_empty());
    }

    #[test]
    fn bad_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            read_certificates(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        assert!(read_certificates(&junk).is_err());

        let host = dir.path().join("reg:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("client.key"), "x").unwrap();
        let err = host_certs(dir.path(), &["reg:5000"]).err().unwrap().to_string();
        assert!(err.contains("missing client certificate"), "{err}");
        // Names that would leave certs.d are ignored.
        assert!(host_certs(dir.path(), &["../etc", ""]).unwrap().roots.is_empty());
    }

    #[test]
    fn insecure_config_builds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(client_config(&[], HostCerts::default(), false, dir.path()).is_ok());
        assert!(client_config(&system_roots(), HostCerts::default(), true, dir.path()).is_ok());
    }
}
