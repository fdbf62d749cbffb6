//! Shared helpers: real registries on loopback and images built in a local store.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbuild_client::{BlobOutcome, Client, ClientOptions, Direction, Progress};
use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use rbuild_oci::{ContentStore, Descriptor, Digest, media_type};

/// rbuild's own registry, served in-process on 127.0.0.1.
pub struct RbuildRegistry {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RbuildRegistry {
    pub async fn start() -> RbuildRegistry {
        let root = tempfile::tempdir().unwrap();
        let mut config = rbuild_registry::Config::default();
        config.storage.fsync = false;
        let registry = rbuild_registry::Registry::open_fs(root.path(), config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            rbuild_registry::server::run(Arc::new(registry), listener, shutdown)
                .await
                .unwrap();
        });
        RbuildRegistry {
            addr,
            root,
            shutdown: Some(tx),
        }
    }

    /// `127.0.0.1:<port>`, as a registry name.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// Where the registry keeps a blob on disk.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .path()
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }
}

impl Drop for RbuildRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A client that reads credentials from `config_dir` (an empty temp dir means anonymous).
pub fn client(config_dir: &Path) -> Client {
    Client::new(ClientOptions {
        docker_config_dir: Some(config_dir.to_owned()),
        certs_d: config_dir.join("certs.d"),
        ..ClientOptions::default()
    })
    .unwrap()
}

/// Deterministic, incompressible-looking bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Stores an image with layers of `layer_sizes` bytes and returns its manifest descriptor.
pub fn make_image(
    store: &ContentStore,
    seed: u64,
    layer_sizes: &[usize],
    os: &str,
    arch: &str,
) -> Descriptor {
    let mut layers = Vec::new();
    for (i, size) in layer_sizes.iter().enumerate() {
        let bytes = noise(seed * 1000 + i as u64, *size);
        let digest = store.put(&bytes).unwrap();
        layers.push(Descriptor::new(media_type::OCI_LAYER_GZIP, digest, *size as u64));
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": os,
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = store.put_json(media_type::OCI_CONFIG, &config).unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: Default::default(),
    };
    store.put_json(media_type::OCI_MANIFEST, &manifest).unwrap()
}

/// Stores an index over `manifests` (each paired with its os/arch) and returns its descriptor.
pub fn make_index(store: &ContentStore, manifests: &[(Descriptor, &str, &str, Option<&str>)]) -> Descriptor {
    let manifests = manifests
        .iter()
        .map(|(d, os, arch, variant)| {
            let mut d = d.clone();
            d.platform = Some(rbuild_client::platform::new(os, arch, *variant));
            d
        })
        .collect();
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        artifact_type: None,
        manifests,
        subject: None,
        annotations: Default::default(),
    };
    store.put_json(media_type::OCI_INDEX, &index).unwrap()
}

/// Every blob an image manifest references, config first.
pub fn image_blobs(store: &ContentStore, manifest: &Descriptor) -> Vec<Descriptor> {
    let m: ImageManifest = serde_json::from_slice(&store.read(&manifest.digest).unwrap()).unwrap();
    std::iter::once(m.config).chain(m.layers).collect()
}

/// Records progress events.
#[derive(Default)]
pub struct Recorder {
    pub started: Mutex<Vec<(Digest, u64, Direction)>>,
    pub finished: Mutex<Vec<(Digest, BlobOutcome)>>,
    pub max_bytes: Mutex<u64>,
}

impl Progress for Recorder {
    fn blob_started(&self, digest: &Digest, size: u64, direction: Direction) {
        self.started
            .lock()
            .unwrap()
            .push((digest.clone(), size, direction));
    }
    fn blob_bytes(&self, _digest: &Digest, done: u64) {
        let mut max = self.max_bytes.lock().unwrap();
        *max = (*max).max(done);
    }
    fn blob_finished(&self, digest: &Digest, outcome: BlobOutcome) {
        self.finished.lock().unwrap().push((digest.clone(), outcome));
    }
}

/// Whether a tool the test needs exists; when not, CI fails and a developer run skips.
pub fn require_tool(path: &str) -> bool {
    if Path::new(path).exists() || which(path) {
        return true;
    }
    let message = format!("{path} is not installed (apt-get install docker-registry apache2-utils openssl)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    false
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's `docker-registry` (CNCF distribution 2.8), run as a child process.
pub struct Distribution {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

/// TLS material for a distribution instance.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl Distribution {
    /// Starts distribution with htpasswd users `users` (user, password), and TLS when given.
    pub fn start(users: &[(&str, &str)], tls: Option<&TlsFiles>) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let mut file = std::fs::File::create(&htpasswd).unwrap();
            for (user, password) in users {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "htpasswd failed");
                let line = String::from_utf8(out.stdout).unwrap();
                writeln!(file, "{}", line.trim()).unwrap();
            }
            auth = format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let tls_section = match tls {
            Some(t) => {
                let client_cas = match &t.client_ca {
                    Some(ca) => format!("    clientcas:\n      - {}\n", ca.display()),
                    None => String::new(),
                };
                format!(
                    "  tls:\n    certificate: {}\n    key: {}\n{client_cas}",
                    t.cert.display(),
                    t.key.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rbuild-test-secret\n{tls_section}{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Distribution { port, dir, child };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start on port {}:\n{log}", self.port);
    }

    pub fn name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        // Stop exactly the process this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs openssl in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a server certificate for `host` (and 127.0.0.1) with openssl.
pub fn make_certificates(dir: &Path, host: &str) -> (PathBuf, TlsFiles) {
    let ca = "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rbuild-test-CA -keyout ca.key -out ca.crt \
              -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
    openssl(dir, &ca.split_whitespace().collect::<Vec<_>>());
    let ext = format!(
        "subjectAltName=DNS:{host},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    );
    let (cert, key) = sign(dir, "server", host, &ext);
    (
        dir.join("ca.crt"),
        TlsFiles {
            cert,
            key,
            client_ca: None,
        },
    )
}

/// Makes `client.cert` and `client.key` in `dir`, signed by the CA `make_certificates` made there.
pub fn make_client_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    sign(
        dir,
        "client",
        "rbuild-test-client",
        "extendedKeyUsage=clientAuth\n",
    )
}

/// A key and a certificate for `subject`, signed by `dir`'s CA: `<name>.cert`, `<name>.key`.
fn sign(dir: &Path, name: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let (key, csr, cert, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cert"),
        format!("{name}.cnf"),
    );
    let subject = format!("/CN={subject}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// A content store in a temporary directory.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub store: ContentStore,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        TempStore { dir, store }
    }
}

impl std::ops::Deref for TempStore {
    type Target = ContentStore;
    fn deref(&self) -> &ContentStore {
        &self.store
    }
}

/// rbuild's registry, an empty docker config, a store and an anonymous client.
pub struct Fixture {
    pub registry: RbuildRegistry,
    pub config: tempfile::TempDir,
    pub store: TempStore,
    pub client: Client,
}

impl Fixture {
    pub async fn start() -> Fixture {
        let registry = RbuildRegistry::start().await;
        let config = tempfile::tempdir().unwrap();
        let client = client(config.path());
        Fixture {
            registry,
            config,
            store: TempStore::new(),
            client,
        }
    }

    /// `<registry>/<rest>` as a reference.
    pub fn reference(&self, rest: &str) -> rbuild_oci::Reference {
        format!("{}/{rest}", self.registry.name()).parse().unwrap()
    }
}
