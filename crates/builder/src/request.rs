//! What a build is asked for ([`BuildRequest`]: the Dockerfile, the context and the flags of
//! `docker build`) and what it gives back ([`BuildOutput`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_layer::LayerOptions;
use rbuild_oci::manifest::Platform;

use crate::exec::SecretSource;
use crate::export::Image;
use crate::metrics::BuildMetrics;
use crate::remote_cache::{CacheLocation, RemoteCaches, StepRecord};

/// Where a `--build-context name=…` points.
#[derive(Clone, Debug)]
pub enum NamedContext {
    /// A local directory.
    Dir(PathBuf),
    /// An image: a registry reference (`docker-image://REF`) or an OCI image layout on disk
    /// (`oci-layout://DIR[:TAG]`, kept with its scheme).
    Image(String),
}

/// What to build. Cloned when a build starts again (see [`RemoteCaches::lost`](crate::remote_cache::RemoteCaches::lost)).
#[derive(Clone)]
pub struct BuildRequest {
    /// The Dockerfile's path (for messages and the per-Dockerfile .dockerignore).
    pub dockerfile: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile_text: String,
    /// The context directory.
    pub context: PathBuf,
    /// `--build-arg`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`: look every base image up in its registry, even one the store already has
    /// under that name (otherwise the store's copy is used, as `docker build` does).
    pub pull: bool,
    /// `--no-cache-filter`: stages built without the cache.
    pub no_cache_filter: Vec<String>,
    /// `--label`: added to the image config.
    pub labels: BTreeMap<String, String>,
    /// `--platform` (`linux/amd64`).
    pub platform: String,
    /// `--build-context`.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Compression and timestamps of the layers written.
    pub layer_options: LayerOptions,
    /// `--secret`: values RUN may mount, by id.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh`: the SSH agent socket RUN may mount.
    pub ssh: Option<PathBuf>,
    /// `--network`: what `RUN --network=default` means (`default`/`host` or `none`).
    pub network: String,
    /// `--runtime`: the OCI runtime (else `$RBUILD_RUNTIME`, else `runc`).
    pub runtime: Option<PathBuf>,
    /// `--snapshotter`: how RUN's root is made (else `$RBUILD_SNAPSHOTTER`, else auto).
    pub snapshotter: Option<rbuild_runtime::Snapshotter>,
    /// `--cache-from`: remote caches to read, in order.
    pub cache_from: Vec<CacheLocation>,
    /// Whether every layer of the image must be in the store when the build ends (it is kept
    /// there, written to a file, or pushed where the caches' layers cannot be mounted from);
    /// else layers a remote cache gave may stay where they are.
    pub complete_image: bool,
}

impl BuildRequest {
    /// The platform the image is built for (`--platform`, `os/arch[/variant]`).
    pub(crate) fn target_platform(&self) -> Platform {
        let mut parts = self.platform.split('/');
        Platform {
            os: parts.next().unwrap_or("linux").to_owned(),
            architecture: parts.next().unwrap_or("amd64").to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: parts.next().map(str::to_owned),
        }
    }
}

/// A finished build.
pub struct BuildOutput {
    /// The image, written into the local store.
    pub image: Image,
    /// Its numbers.
    pub metrics: BuildMetrics,
    /// Things the user should know (`--build-arg`s nothing consumed, caches not used).
    pub warnings: Vec<String>,
    /// Every step solved, for `--cache-to`.
    pub steps: Vec<StepRecord>,
    /// The caches read: layers found there may not be in the local store yet
    /// ([`RemoteCaches::fetch_missing`] brings them).
    pub caches: Arc<RemoteCaches>,
}
