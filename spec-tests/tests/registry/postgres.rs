//! `rbuild serve` with its metadata in a PostgreSQL server that requires TLS.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use spec_tests::api::Api;
use spec_tests::engines::Postgres;
use spec_tests::pki::TestCa;
use spec_tests::registry::{RegistryProcess, rbuild_bin};

/// Turns TLS on in a running private server with `ca`'s certificate for 127.0.0.1, and
/// refuses plain connections from the loopback address from then on.
fn require_tls(pg: &Postgres, ca: &TestCa) -> tempfile::TempDir {
    let issued = ca.server("postgres", "localhost");
    // The server runs as `postgres` and reads its key only when that user owns it, mode 0600.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::copy(&issued.cert, &cert).unwrap();
    std::fs::copy(&issued.key, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let chown = Command::new("chown")
        .arg("postgres")
        .arg(&cert)
        .arg(&key)
        .status();
    assert!(chown.is_ok_and(|s| s.success()), "chown the key to postgres");
    for setting in [
        format!("ssl_cert_file = '{}'", cert.display()),
        format!("ssl_key_file = '{}'", key.display()),
        "ssl = on".to_owned(),
    ] {
        pg.psql("postgres", &format!("ALTER SYSTEM SET {setting}"));
    }
    pg.psql("postgres", "SELECT pg_reload_conf()");
    dir
}

/// `sslmode=require` with the server's CA in `[metadata.postgres] ca`: the registry's
/// connections are TLS (`pg_stat_ssl`), and it serves; without the CA the certificate is
/// refused and nothing is sent in the clear.
#[test]
fn metadata_over_tls_checks_the_servers_certificate() {
    let (Some(pg), Some(ca)) = (Postgres::private(), TestCa::new("postgres-ca")) else {
        return;
    };
    let _files = require_tls(&pg, &ca);
    let database = pg.database();
    let url = format!("{}?sslmode=require", database.url());
    let config = |ca_line: &str| {
        format!("[metadata]\ndriver = \"postgres\"\n[metadata.postgres]\nurl = {url:?}\n{ca_line}")
    };

    let trusted = config(&format!("ca = {:?}\n", ca.cert().display().to_string()));
    let registry = RegistryProcess::start_with_config(&trusted);
    let api = Api::new(&registry);
    let digest = api.push_blob("tls/app", b"linked in a database reached over TLS");
    assert_eq!(api.head(&format!("/v2/tls/app/blobs/{digest}")).status(), 200);
    let encrypted = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND application_name = 'rbuild'",
    );
    assert_ne!(encrypted.trim(), "0", "the registry's connections use TLS");

    let dir = tempfile::tempdir().unwrap();
    let untrusted = dir.path().join("untrusted.toml");
    std::fs::write(&untrusted, config("")).unwrap();
    let migrate = Command::new(rbuild_bin())
        .args(["registry", "migrate", "--config"])
        .arg(&untrusted)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&migrate.stderr);
    assert!(!migrate.status.success(), "{stderr}");
    assert!(
        stderr.contains("certificate"),
        "the error names the certificate: {stderr}"
    );
}
