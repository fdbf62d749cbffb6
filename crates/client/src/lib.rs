//! A client for OCI and Docker registries: what `rbuild build` uses for `FROM` images and
//! `--push`, and what `rbuild pull` and `rbuild push` run.
//!
//! It talks to any registry that speaks the distribution API (Docker Hub, GHCR, ECR, Harbor,
//! distribution, zot, rbuild's own), with the credentials `docker login` keeps (see
//! [`credentials`]), docker's TLS layout (`/etc/docker/certs.d/<host>/ca.crt`) and docker's
//! rules for plain HTTP (loopback registries and configured insecure registries).
//!
//! - [`Client::resolve`] turns a reference into the manifest and config for one platform,
//!   following an index (manifest list) and verifying every digest.
//! - [`Client::pull`] also streams the layers into a local [`ContentStore`], several at once,
//!   skipping the ones it has and installing a blob only once its digest checks out.
//! - [`Client::push`] sends an image (or an index and its images) from a [`ContentStore`],
//!   skipping blobs the registry has and mounting blobs from a sibling repository the store
//!   knows them to be in (pulls and pushes record where each blob came from).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rbuild_client::{Client, ClientOptions, platform};
//! use rbuild_oci::{ContentStore, Reference};
//!
//! let client = Client::new(ClientOptions::default())?;
//! let store = ContentStore::open(std::path::Path::new("/tmp/rbuild-store"))?;
//!
//! let base: Reference = "alpine:3.20".parse()?;
//! let image = client.pull(&base, &platform::parse("linux/amd64")?, &store).await?;
//! println!("{base} is {} with {} layers", image.digest(), image.manifest.layers.len());
//! store.set_ref(&base.to_string(), &image.manifest_descriptor)?;
//!
//! let target: Reference = "localhost:5000/mirror/alpine:3.20".parse()?;
//! let report = client.push(&image.manifest_descriptor, &store, &target, None).await?;
//! println!("pushed {} ({} bytes uploaded)", report.reference, report.bytes_uploaded());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod artifact;
pub mod auth;
mod body;
pub mod challenge;
pub mod credentials;
pub mod download;
pub mod error;
mod inflight;
mod mount;
pub mod platform;
pub mod progress;
mod pull;
mod push;
mod tls;
mod transport;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rbuild_oci::manifest::Platform;
use rbuild_oci::{ContentStore, Descriptor, Reference, RepositoryName};
use rustls::pki_types::CertificateDer;

pub use artifact::Artifact;
pub use credentials::{Credential, CredentialOrigin, DockerConfig};
pub use download::Download;
pub use error::{Action, ClientError};
pub use progress::{BlobOutcome, Direction, NoProgress, Progress};
pub use pull::{MAX_MANIFEST_BYTES, ResolvedImage};
pub use push::{PushReport, PushedBlob};

use transport::{Endpoint, EndpointSettings};

/// How a [`Client`] reaches registries.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The docker config directory with `config.json` (credentials). `None`: `$DOCKER_CONFIG`,
    /// else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Where to look for `docker-credential-*` helpers, as a `PATH`-style list. `None`: `$PATH`.
    pub credential_helper_path: Option<std::ffi::OsString>,
    /// Registries (`host[:port]`, or CIDR ranges of IP addresses) reached over HTTPS without
    /// certificate verification, falling back to plain HTTP — docker's `insecure-registries`.
    /// Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) are always treated so.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) trusted for every registry.
    pub ca_files: Vec<PathBuf>,
    /// docker's per-registry TLS directory: `<certs_d>/<host[:port]>/*.crt` are CAs, and
    /// `client.cert` + `client.key` a client certificate.
    pub certs_d: PathBuf,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Fixed addresses for host names, like curl's `--resolve` (the port comes from the
    /// registry name; the address's port is ignored).
    pub resolve: Vec<(String, SocketAddr)>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a transfer may stall (no bytes either way) before it fails.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            docker_config_dir: None,
            credential_helper_path: None,
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            certs_d: PathBuf::from("/etc/docker/certs.d"),
            user_agent: format!("rbuild/{}", env!("CARGO_PKG_VERSION")),
            resolve: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
        }
    }
}

/// A registry client. Cheap to clone; clones share connections, credentials and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    docker_config: DockerConfig,
    extra_roots: Vec<CertificateDer<'static>>,
    system_roots: OnceLock<Vec<CertificateDer<'static>>>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with `options`. Reads the CA files now, so a bad path fails here.
    pub fn new(options: ClientOptions) -> Result<Client, ClientError> {
        Client::with_progress(options, Arc::new(NoProgress))
    }

    /// A client that reports blob transfers to `progress`.
    pub fn with_progress(options: ClientOptions, progress: Arc<dyn Progress>) -> Result<Client, ClientError> {
        let mut extra_roots = Vec::new();
        for path in &options.ca_files {
            extra_roots.extend(tls::read_certificates(path)?);
        }
        let dir = options
            .docker_config_dir
            .clone()
            .unwrap_or_else(credentials::default_config_dir);
        let mut docker_config = DockerConfig::new(dir);
        if let Some(path) = &options.credential_helper_path {
            docker_config = docker_config.with_helper_path(path.clone());
        }
        Ok(Client {
            inner: Arc::new(Inner {
                options,
                docker_config,
                extra_roots,
                system_roots: OnceLock::new(),
                endpoints: Mutex::new(HashMap::new()),
                progress,
            }),
        })
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The docker config the client reads credentials from.
    pub fn docker_config(&self) -> &DockerConfig {
        &self.inner.docker_config
    }

    /// Whether `registry` is reached without certificate verification (and may be plain HTTP).
    pub fn is_insecure(&self, registry: &str) -> bool {
        transport::is_loopback(registry)
            || self
                .inner
                .options
                .insecure_registries
                .iter()
                .any(|entry| transport::matches_insecure(registry, entry))
    }

    /// The shared state for one registry, made on first use.
    fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>, ClientError> {
        if let Ok(endpoints) = self.inner.endpoints.lock()
            && let Some(endpoint) = endpoints.get(registry)
        {
            return Ok(endpoint.clone());
        }
        let endpoint = Arc::new(self.make_endpoint(registry)?);
        let mut endpoints = match self.inner.endpoints.lock() {
            Ok(endpoints) => endpoints,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(endpoints.entry(registry.to_owned()).or_insert(endpoint).clone())
    }

    fn make_endpoint(&self, registry: &str) -> Result<Endpoint, ClientError> {
        self.make_endpoint_with(registry, None)
    }

    fn make_endpoint_with(
        &self,
        registry: &str,
        credential: Option<(Option<Credential>, CredentialOrigin)>,
    ) -> Result<Endpoint, ClientError> {
        let options = &self.inner.options;
        let insecure = self.is_insecure(registry);
        let authority = transport::api_authority(registry);
        let host = tls::host_certs(&options.certs_d, &[registry, authority])?;
        let roots: Vec<CertificateDer<'static>> = if insecure {
            Vec::new()
        } else {
            let system = self.inner.system_roots.get_or_init(tls::system_roots);
            system.iter().chain(&self.inner.extra_roots).cloned().collect()
        };
        let tls = tls::client_config(&roots, host, !insecure, &options.certs_d)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tls_backend_preconfigured(tls);
        if transport::is_loopback(registry) {
            builder = builder.no_proxy();
        }
        for (name, address) in &options.resolve {
            builder = builder.resolve(name, *address);
        }
        let http = builder.build().map_err(|e| ClientError::Tls {
            path: options.certs_d.clone(),
            reason: format!("building the HTTP client for {registry}: {}", error::chain(&e)),
        })?;
        Ok(Endpoint::new(EndpointSettings {
            registry: registry.to_owned(),
            certs_d: options.certs_d.clone(),
            insecure,
            http,
            docker_config: self.inner.docker_config.clone(),
            credential,
        }))
    }

    /// Checks `credential` against `registry` the way `docker login` does: pings `/v2/`, then
    /// authenticates as the registry's challenge asks (Basic, or a token from its token
    /// service) and asks `/v2/` again. `Ok` means the registry accepted the credential, or
    /// asks for none. Nothing is stored: see [`DockerConfig::store`].
    pub async fn login(&self, registry: &str, credential: &Credential) -> Result<(), ClientError> {
        let origin = CredentialOrigin::Given {
            described: "the credentials given".to_owned(),
            remedy: "check the username and password (or token)".to_owned(),
        };
        let endpoint = self.make_endpoint_with(registry, Some((Some(credential.clone()), origin.clone())))?;
        let url = endpoint.url("/v2/").await?;
        let scopes = auth::Scopes::new();
        let request = transport::Request {
            method: reqwest::Method::GET,
            url,
            headers: Vec::new(),
            body: transport::Body::Empty,
            scopes: &scopes,
        };
        let response = endpoint.send(&request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = body::read_limited(response, 64 * 1024).await.unwrap_or_default();
        let details = error::Details::parse(&body);
        Err(match status.as_u16() {
            401 | 403 => ClientError::rejected(&origin, registry, details),
            code => ClientError::Protocol {
                registry: registry.to_owned(),
                request: "GET /v2/".to_owned(),
                reason: format!("HTTP {code}{details}"),
            },
        })
    }

    /// The manifest for `platform` (following an index), its config, and their digests.
    ///
    /// An image manifest named directly is returned whatever its platform, as docker does.
    pub async fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        pull::resolve(&endpoint, reference, platform).await
    }

    /// Resolves like [`resolve`](Client::resolve), then stores every layer, the config and the
    /// manifest in `store` (in that order, so a stored manifest means a complete image). Blobs
    /// the store has are skipped; every blob is verified against its digest while it streams
    /// to disk. The index (if any) is not stored and no name is set: call
    /// [`ContentStore::set_ref`] with the returned descriptor to name the image.
    pub async fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &ContentStore,
    ) -> Result<ResolvedImage, ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        let resolved = pull::resolve(&endpoint, reference, platform).await?;
        pull::store_image(
            &endpoint,
            reference,
            &resolved,
            store,
            self.inner.progress.clone(),
        )
        .await?;
        Ok(resolved)
    }

    /// Stores an image [`resolve`](Client::resolve) returned, as [`pull`](Client::pull) would,
    /// without fetching its manifest and config again: for a build that resolved `FROM` for its
    /// cache key and needs the layers only on a cache miss.
    pub async fn pull_resolved(
        &self,
        reference: &Reference,
        resolved: &ResolvedImage,
        store: &ContentStore,
    ) -> Result<(), ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        pull::store_image(&endpoint, reference, resolved, store, self.inner.progress.clone()).await
    }

    /// The artifact `reference` names — an OCI manifest of any config media type, such as a
    /// build cache — and its config, without its layers.
    pub async fn fetch_artifact(&self, reference: &Reference) -> Result<Artifact, ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        artifact::fetch(&endpoint, reference).await
    }

    /// The `blobs` that `reference`'s repository does not have (or has at another size): what
    /// a registry lost since a manifest naming them was written.
    pub async fn missing_blobs(
        &self,
        reference: &Reference,
        blobs: &[Descriptor],
    ) -> Result<Vec<Descriptor>, ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        artifact::missing_blobs(&endpoint, reference, blobs).await
    }

    /// Stores the `blobs` of `reference`'s repository that `store` lacks, verified, and records
    /// where they came from (so pushing them to that registry mounts instead of uploading).
    pub async fn fetch_blobs(
        &self,
        reference: &Reference,
        blobs: &[Descriptor],
        store: &ContentStore,
    ) -> Result<(), ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        artifact::store_blobs(&endpoint, reference, blobs, store, self.inner.progress.clone()).await
    }

    /// Pushes the image whose manifest (or index) `manifest` describes from `store` to
    /// `reference` (its tag, else its digest, which must then be the manifest's).
    ///
    /// A blob the registry lacks in that repository is mounted from another repository of the
    /// same registry when it can be: first `mount_from`, if named, then the ones `store`
    /// recorded it in (pulls and pushes record where their blobs are); it is uploaded when
    /// no mount succeeds.
    pub async fn push(
        &self,
        manifest: &Descriptor,
        store: &ContentStore,
        reference: &Reference,
        mount_from: Option<&RepositoryName>,
    ) -> Result<PushReport, ClientError> {
        let endpoint = self.endpoint(reference.registry())?;
        push::Push::new(
            &endpoint,
            store,
            reference,
            mount_from,
            self.inner.progress.clone(),
        )
        .run(manifest)
        .await
    }
}
