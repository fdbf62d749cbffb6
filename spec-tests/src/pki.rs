//! Certificates and signing keys for TLS and token tests, made by `openssl` in a temporary
//! directory: a CA, server and client certificates it signs, and ES256/RS256 signatures made
//! by OpenSSL (so tokens the server accepts are checked against an independent signer).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::tools::{require, run, which};

/// `openssl`, if installed.
pub fn openssl() -> Option<PathBuf> {
    let found = which("openssl");
    require(
        "openssl",
        found.is_some(),
        "apt-get install openssl (scripts/test does)",
    )
    .then_some(found)?
}

/// A certificate authority in a temporary directory.
pub struct TestCa {
    openssl: PathBuf,
    dir: tempfile::TempDir,
    serial: std::cell::Cell<u32>,
}

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key (PKCS#8).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA (P-256), or `None` (after [`require`]) without openssl.
    pub fn new(name: &str) -> Option<TestCa> {
        let openssl = openssl()?;
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new(&openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-days", "2", "-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(dir.path().join("ca.key"))
            .arg("-out")
            .arg(dir.path().join("ca.crt")));
        Some(TestCa {
            openssl,
            dir,
            serial: std::cell::Cell::new(1),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The directory files are made in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn issue(&self, file: &str, subject: &str, extensions: &str) -> Issued {
        let dir = self.dir.path();
        let key = dir.join(format!("{file}.key"));
        let csr = dir.join(format!("{file}.csr"));
        let cert = dir.join(format!("{file}.crt"));
        let ext = dir.join(format!("{file}.ext"));
        std::fs::write(&ext, extensions).expect("write extensions");
        run(Command::new(&self.openssl)
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args(["-subj", &format!("/CN={subject}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let serial = self.serial.get();
        self.serial.set(serial + 1);
        run(Command::new(&self.openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", &serial.to_string()])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(self.cert())
            .arg("-CAkey")
            .arg(dir.join("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        Issued { cert, key }
    }

    /// A server certificate for `name` (also valid for ::1 and 127.0.0.1). `file` names its
    /// files, so a test can issue a second one for a reload.
    pub fn server(&self, file: &str, name: &str) -> Issued {
        self.issue(
            file,
            name,
            &format!(
                "subjectAltName=DNS:{name},IP:::1,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )
    }

    /// A client certificate for `user`.
    pub fn client(&self, user: &str) -> Issued {
        self.issue(
            &format!("client-{user}"),
            user,
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )
    }

    /// A new signing key: `ec` (P-256, for ES256) or `rsa` (2048 bits, for RS256). Returns the
    /// private key (PKCS#8 PEM) and the public key (`PUBLIC KEY` PEM).
    pub fn signing_key(&self, file: &str, kind: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.path();
        let key = dir.join(format!("{file}.key"));
        let public = dir.join(format!("{file}.pub"));
        let mut command = Command::new(&self.openssl);
        command.arg("genpkey");
        match kind {
            "ec" => command.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
            "rsa" => command.args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
            other => panic!("unknown key kind {other}"),
        };
        run(command.arg("-out").arg(&key));
        run(Command::new(&self.openssl)
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&public));
        (key, public)
    }

    /// A self-signed certificate for an existing `key` (as token issuers publish their keys).
    pub fn self_signed(&self, key: &Path, name: &str) -> PathBuf {
        let cert = self.dir.path().join(format!("{name}.crt"));
        run(Command::new(&self.openssl)
            .args([
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-key",
            ])
            .arg(key)
            .arg("-out")
            .arg(&cert));
        cert
    }

    /// A compact JWS of `header` and `claims`, signed by OpenSSL with `key` (ES256 for an EC
    /// key, RS256 for an RSA key, as `header` says).
    pub fn sign_jwt(&self, key: &Path, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let input = self.dir.path().join("jws-input");
        std::fs::write(&input, &message).expect("write message");
        let output = Command::new(&self.openssl)
            .args(["dgst", "-sha256", "-sign"])
            .arg(key)
            .arg(&input)
            .output()
            .expect("run openssl dgst");
        assert!(
            output.status.success(),
            "openssl dgst: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let signature = if header["alg"] == "ES256" {
            ecdsa_der_to_fixed(&output.stdout)
        } else {
            output.stdout
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// OpenSSL writes ECDSA signatures as DER `SEQUENCE { INTEGER r, INTEGER s }`; JWS wants the
/// two 32-byte numbers side by side.
fn ecdsa_der_to_fixed(der: &[u8]) -> Vec<u8> {
    fn integer(input: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(input[0], 0x02, "DER INTEGER");
        let len = usize::from(input[1]);
        (&input[2..2 + len], &input[2 + len..])
    }
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut out = Vec::with_capacity(64);
    for n in [r, s] {
        let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
        out.extend(std::iter::repeat_n(0u8, 32 - n.len()));
        out.extend_from_slice(n);
    }
    out
}
