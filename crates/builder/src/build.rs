//! A build from start to end. [`Builder::build`] takes a [`BuildRequest`] along the data flow,
//! one module per stage of it:
//!
//! 1. [`prepare`](crate::prepare): the Dockerfile parsed and planned, its images resolved
//!    ([`resolve`](crate::resolve)), the context walked and the files COPY/ADD select hashed;
//! 2. [`schedule`](crate::schedule): every stage the target needs as a task of its own, each
//!    solved step by step against the cache ([`solve`](crate::solve), [`steps`](crate::steps));
//! 3. [`export::write_image`]: the target stage as an image in the local store.
//!
//! Sending the image elsewhere (a registry, an OCI layout, a docker archive) is
//! [`export::export`]'s job, after the build.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rbuild_layer::LayerOptions;
use rbuild_oci::manifest::Platform;

use crate::error::Result;
use crate::exec::SecretSource;
use crate::export::{self, Image};
use crate::metrics::BuildMetrics;
use crate::prepare;
use crate::progress::Progress;
use crate::remote::Remote;
use crate::schedule;
use crate::solve::Solver;
use crate::store::LocalStore;

/// Where a `--build-context name=…` points.
#[derive(Clone, Debug)]
pub enum NamedContext {
    /// A local directory.
    Dir(PathBuf),
    /// An image: a registry reference (`docker-image://REF`) or an OCI image layout on disk
    /// (`oci-layout://DIR[:TAG]`, kept with its scheme).
    Image(String),
}

/// What to build.
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
    /// Things the user should know (`--build-arg`s nothing consumed).
    pub warnings: Vec<String>,
}

/// Builds images.
pub struct Builder {
    store: Arc<LocalStore>,
    remote: Arc<dyn Remote>,
}

impl Builder {
    /// A builder over a local store, fetching base images and downloads from `remote`.
    pub fn new(store: LocalStore, remote: Arc<dyn Remote>) -> Builder {
        Builder {
            store: Arc::new(store),
            remote,
        }
    }

    /// The local store.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// Builds `request`, reporting to `progress`.
    pub async fn build(&self, request: BuildRequest, progress: Arc<dyn Progress>) -> Result<BuildOutput> {
        let started = Instant::now();
        let prepared =
            prepare::prepare(&request, &self.store, self.remote.as_ref(), progress.as_ref()).await?;
        let plan = prepared.plan;
        let mut metrics = BuildMetrics {
            context_bytes_hashed: prepared.context_bytes_hashed,
            context_files: prepared.context_files,
            ..BuildMetrics::default()
        };
        let solver = Arc::new(Solver::new(
            self.store.clone(),
            self.remote.clone(),
            request,
            prepared.inputs,
            &plan.stages,
            progress,
        ));
        let target = schedule::run(&solver, &plan).await?;

        let mut state = target.image.clone();
        for (key, value) in &solver.request.labels {
            state.config.config.labels.insert(key.clone(), value.clone());
        }
        // The image is as old as its newest step: a rebuild from the cache is the same image.
        let created = state
            .config
            .history
            .iter()
            .rev()
            .find_map(|h| h.created.clone())
            .unwrap_or_else(|| solver.created.clone());
        let image = export::write_image(&state, Some(&created), &self.store.content)?;

        metrics.steps = solver.step_metrics();
        metrics.cache_hits = metrics.steps.iter().filter(|s| s.cache == "hit").count();
        metrics.cache_misses = metrics.steps.iter().filter(|s| s.cache == "miss").count();
        metrics.image = image.manifest.digest.to_string();
        metrics.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let warnings = if plan.unused_build_args.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "one or more build args were not consumed: [{}]",
                plan.unused_build_args.join(" ")
            )]
        };
        Ok(BuildOutput {
            image,
            metrics,
            warnings,
        })
    }
}
