//! The solver: from a Dockerfile and a context to an image.
//!
//! 1. Parse, then plan twice: once to learn which base images the Dockerfile names, and,
//!    once they are resolved, again with their configs (so `ENV PATH=$PATH:/x` sees the
//!    base's `PATH` and ONBUILD triggers run).
//! 2. Walk the context once and hash, in parallel, only the files COPY/ADD select.
//! 3. Run every stage the target needs as its own task: a stage waits only for the stages it
//!    reads from, so independent stages build at the same time.
//! 4. Each step that changes the filesystem is keyed from its inputs; a hit reuses the cached
//!    layer, a miss says which input changed and builds the layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use rbuild_dockerfile::plan::{Base, CopyFrom, CopyStep, RunStep, Source, Stage, Step, StepKind};
use rbuild_dockerfile::run_flags::MountType;
use rbuild_dockerfile::{BaseImageInfo, ImageResolver, PlanOptions, dockerignore};
use rbuild_layer::{Entry, Extras, LayerInfo, LayerOptions, PreviousBlocks, write_layer_with};
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageManifest, Platform};
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference, time};

use crate::cache::{Cache, CacheRecord, CachedLayer, Inputs};
use crate::context::Context;
use crate::copy::{self, Layout, Origin, Selection};
use crate::error::{BuildError, Result};
use crate::exec::{self, MountSources, SecretSource};
use crate::export::{self, Image};
use crate::image::ImageState;
use crate::metrics::{BuildMetrics, StepMetrics};
use crate::owner::{self, Owner};
use crate::progress::{Event, Progress, StepLabel};
use crate::rootfs::RootfsView;
use crate::snapshot::{PendingSnapshot, Snapshots};
use crate::statcache::StatCache;

/// The local store: content (an OCI layout), the cache index, snapshots, the stat cache.
pub struct LocalStore {
    /// Blobs and named images.
    pub content: ContentStore,
    /// The layer cache.
    pub cache: Cache,
    /// Unpacked layers.
    pub snapshots: Snapshots,
    /// Context file digests by stat.
    pub stat_cache: StatCache,
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<LocalStore> {
        Ok(LocalStore {
            content: ContentStore::open(&root.join("oci"))?,
            cache: Cache::open(&root.join("cache"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
            stat_cache: StatCache::load(&root.join("statcache")),
            root: root.to_owned(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A scratch directory for one build's temporary files.
    fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        tempfile::tempdir_in(&dir)
            .map_err(|e| BuildError::io(format!("creating a directory in {}", dir.display()), e))
    }
}

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

/// A finished build.
pub struct BuildOutput {
    /// The image, written into the local store.
    pub image: Image,
    /// Its numbers.
    pub metrics: BuildMetrics,
    /// Things the user should know (`--build-arg`s nothing consumed).
    pub warnings: Vec<String>,
}

/// A base image, resolved: its config, layers and manifest digest.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The manifest digest (what keys steps built on it).
    pub digest: String,
    /// The config.
    pub config: ImageConfig,
    /// The layers.
    pub layers: Vec<CachedLayer>,
}

/// What a build fetches over the network — base images and `ADD <url>` files — behind a
/// trait, so the solver does not depend on how they arrive (the CLI gives it the registry
/// client).
pub trait Remote: Send + Sync {
    /// Puts the image's manifest, config and layers into `store`; returns its manifest.
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        platform: &'a Platform,
        store: &'a ContentStore,
    ) -> BoxFuture<'a, Result<(Descriptor, ImageManifest, ImageConfig)>>;

    /// Downloads `url` into the file `to`; returns its digest and `Last-Modified` time.
    fn download<'a>(&'a self, url: &'a str, to: &'a Path) -> BoxFuture<'a, Result<(Digest, Option<i64>)>>;
}

/// Builds images.
pub struct Builder {
    store: Arc<LocalStore>,
    remote: Arc<dyn Remote>,
}

/// The result of one stage, shared with the stages that read from it.
struct StageResult {
    state: ImageState,
    fs_key: String,
}

type StageFuture = Shared<BoxFuture<'static, std::result::Result<Arc<StageResult>, Arc<BuildError>>>>;

/// A plan-time resolver that only remembers which images were asked for.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, String)>>);

impl ImageResolver for Recorder {
    fn image_config(&self, reference: &str, platform: &str) -> Option<BaseImageInfo> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((reference.to_owned(), platform.to_owned()));
        }
        None
    }
}

/// A plan-time resolver over images already fetched.
struct Known<'a>(&'a HashMap<String, BaseImage>);

impl ImageResolver for Known<'_> {
    fn image_config(&self, reference: &str, _platform: &str) -> Option<BaseImageInfo> {
        let config = &self.0.get(reference)?.config.config;
        Some(BaseImageInfo {
            env: config
                .env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map_or((kv.clone(), String::new()), |(k, v)| (k.to_owned(), v.to_owned()))
                })
                .collect(),
            onbuild: config.on_build.clone().unwrap_or_default(),
            working_dir: config.working_dir.clone(),
            user: config.user.clone(),
            shell: config.shell.clone().unwrap_or_default(),
        })
    }
}

fn parse_platform(platform: &str) -> Platform {
    let mut parts = platform.split('/');
    Platform {
        os: parts.next().unwrap_or("linux").to_owned(),
        architecture: parts.next().unwrap_or("amd64").to_owned(),
        os_version: None,
        os_features: Vec::new(),
        variant: parts.next().map(str::to_owned),
    }
}

/// The stages (original indexes) a stage reads from.
fn dependencies(stage: &Stage) -> HashSet<usize> {
    let mut deps = HashSet::new();
    if let Base::Stage { index } = stage.base {
        deps.insert(index);
    }
    for step in &stage.steps {
        match &step.kind {
            StepKind::Copy(c) | StepKind::Add(c) => {
                if let Some(CopyFrom::Stage { index }) = c.from {
                    deps.insert(index);
                }
            }
            StepKind::Run(run) => {
                for mount in &run.mounts {
                    if let Some(CopyFrom::Stage { index }) = mount.from {
                        deps.insert(index);
                    }
                }
            }
            _ => {}
        }
    }
    deps
}

/// Image references a plan reads files from (`COPY --from=image`).
fn copied_images(stages: &[Stage]) -> Vec<String> {
    let mut images = Vec::new();
    for step in stages.iter().flat_map(|s| &s.steps) {
        if let StepKind::Copy(c) | StepKind::Add(c) = &step.kind
            && let Some(CopyFrom::Image { reference }) = &c.from
        {
            images.push(reference.clone());
        }
    }
    images
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

    /// Resolves an image reference: a name in the local store first (images built here and
    /// tagged), else the registry.
    /// The image `reference` names: from the store when it has the image under that name
    /// for `platform` (unless `pull`), else from its registry, and then named in the store,
    /// so that later builds need no network to start.
    async fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
        pull: bool,
        progress: &dyn Progress,
    ) -> Result<BaseImage> {
        if let Some(layout) = reference.strip_prefix("oci-layout://") {
            let (descriptor, manifest, config) = self.import_layout(layout)?;
            return Ok(base_image(&descriptor, &manifest, config));
        }
        let parsed: Reference = reference
            .parse()
            .map_err(|e| BuildError::Fetch(format!("invalid image reference {reference:?}: {e}")))?;
        let content = &self.store.content;
        let name = parsed.to_string();
        let local = match pull {
            true => None,
            false => self.local_image(&name, platform)?,
        };
        let (descriptor, manifest, config) = match local {
            Some(image) => image,
            None => {
                progress.event(Event::Resolving {
                    reference: name.clone(),
                });
                let image = self.remote.pull(&parsed, platform, content).await?;
                content.set_ref(&name, &image.0)?;
                image
            }
        };
        progress.event(Event::Resolved {
            reference: parsed.to_string(),
            digest: descriptor.digest.to_string(),
        });
        Ok(base_image(&descriptor, &manifest, config))
    }

    /// The image the store has under `name`, if it is one for `platform`.
    fn local_image(
        &self,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<(Descriptor, ImageManifest, ImageConfig)>> {
        let content = &self.store.content;
        let Some(descriptor) = content.resolve_ref(name)? else {
            return Ok(None);
        };
        let manifest: ImageManifest = rbuild_oci::json::from_slice(&content.read(&descriptor.digest)?)
            .map_err(|e| BuildError::Fetch(format!("local image {name}: manifest: {e}")))?;
        let config: ImageConfig = rbuild_oci::json::from_slice(&content.read(&manifest.config.digest)?)
            .map_err(|e| BuildError::Fetch(format!("local image {name}: config: {e}")))?;
        let matches = config.os == platform.os && config.architecture == platform.architecture;
        Ok(matches.then_some((descriptor, manifest, config)))
    }

    /// Copies an image out of an OCI layout directory (`DIR` or `DIR:TAG`) into the store.
    fn import_layout(&self, spec: &str) -> Result<(Descriptor, ImageManifest, ImageConfig)> {
        // DIR:TAG, where TAG may itself hold ':' (`app:1`): the directory is the longest
        // prefix that is an OCI layout.
        let (dir, tag) = spec
            .rmatch_indices(':')
            .map(|(i, _)| (&spec[..i], Some(&spec[i + 1..])))
            .find(|(dir, _)| Path::new(dir).join("index.json").is_file())
            .unwrap_or((spec, None));
        let bad = |what: String| BuildError::Fetch(format!("oci-layout://{spec}: {what}"));
        let index_path = Path::new(dir).join("index.json");
        let index: rbuild_oci::manifest::ImageIndex = rbuild_oci::json::from_slice(
            &std::fs::read(&index_path)
                .map_err(|e| BuildError::io(format!("reading {}", index_path.display()), e))?,
        )
        .map_err(|e| bad(format!("index.json: {e}")))?;
        let descriptor = index
            .manifests
            .into_iter()
            .find(|d| {
                tag.is_none_or(|t| {
                    d.annotations.get(rbuild_oci::store::REF_NAME).map(String::as_str) == Some(t)
                })
            })
            .ok_or_else(|| bad(format!("no image tagged {}", tag.unwrap_or("(any)"))))?;
        let blob = |digest: &Digest| {
            Path::new(dir)
                .join("blobs")
                .join(digest.algorithm().name())
                .join(digest.hex())
        };
        let import = |digest: &Digest| -> Result<()> {
            if self.store.content.contains(digest) {
                return Ok(());
            }
            let mut writer = self.store.content.writer()?;
            let mut source = std::fs::File::open(blob(digest))
                .map_err(|e| BuildError::io(format!("reading blob {digest} of the layout"), e))?;
            std::io::copy(&mut source, &mut writer)
                .map_err(|e| BuildError::io("copying a layout blob", e))?;
            writer.commit(Some(digest))?;
            Ok(())
        };
        import(&descriptor.digest)?;
        let manifest: ImageManifest =
            rbuild_oci::json::from_slice(&self.store.content.read(&descriptor.digest)?)
                .map_err(|e| bad(format!("the tagged manifest is not an image manifest: {e}")))?;
        import(&manifest.config.digest)?;
        for layer in &manifest.layers {
            import(&layer.digest)?;
        }
        let config: ImageConfig =
            rbuild_oci::json::from_slice(&self.store.content.read(&manifest.config.digest)?)
                .map_err(|e| bad(format!("config: {e}")))?;
        Ok((descriptor, manifest, config))
    }

    /// Builds `request`, reporting to `progress`.
    pub async fn build(&self, request: BuildRequest, progress: Arc<dyn Progress>) -> Result<BuildOutput> {
        let started = Instant::now();
        let dockerfile_name = request.dockerfile.display().to_string();
        let parsed = rbuild_dockerfile::parse(&request.dockerfile_text)
            .map_err(|e| BuildError::Dockerfile(format!("{dockerfile_name}: {e}")))?;
        let platform = parse_platform(&request.platform);

        // .dockerignore: the one beside the Dockerfile wins over the context's.
        let ignore = {
            let candidates = dockerignore::ignore_file_candidates(&request.dockerfile.display().to_string());
            let beside = candidates.iter().map(PathBuf::from).find(|p| p.is_file());
            let path = beside.or_else(|| Some(request.context.join(".dockerignore")).filter(|p| p.is_file()));
            match path {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| BuildError::io(format!("reading {}", path.display()), e))?;
                    Some(
                        dockerignore::Matcher::from_dockerignore(&text)
                            .map_err(|e| BuildError::Dockerfile(format!("{}: {e}", path.display())))?,
                    )
                }
                None => None,
            }
        };

        let mut options = PlanOptions {
            build_args: request.build_args.clone(),
            target: request.target.clone(),
            target_platform: request.platform.clone(),
            build_platform: request.platform.clone(),
            named_contexts: request.named_contexts.keys().cloned().collect(),
            ..PlanOptions::default()
        };
        let recorder = Recorder::default();
        let first = rbuild_dockerfile::plan(&parsed, &options, &recorder)
            .map_err(|e| BuildError::Dockerfile(format!("{dockerfile_name}:{e}")))?;

        // Base images (and named image contexts), fetched concurrently.
        let mut wanted: Vec<String> = recorder
            .0
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        for named in request.named_contexts.values() {
            if let NamedContext::Image(reference) = named {
                wanted.push(reference.clone());
            }
        }
        // A base image that cannot be fetched is reported at its FROM line.
        let from_line = |reference: &str| {
            let stage = first
                .stages
                .iter()
                .find(|stage| matches!(&stage.base, Base::Image { reference: r, .. } if r == reference))?;
            let line = stage.span.start_line;
            let text = request
                .dockerfile_text
                .lines()
                .nth(line.checked_sub(1)?)?
                .trim()
                .to_owned();
            Some((line, text))
        };
        let images = self
            .resolve_all(wanted, &platform, request.pull, progress.as_ref())
            .await
            .map_err(|(reference, e)| match from_line(&reference) {
                Some((line, text)) => e.at(&dockerfile_name, line, &text),
                None => e,
            })?;
        options.dockerignore = ignore.clone();
        let plan = rbuild_dockerfile::plan(&parsed, &options, &Known(&images))
            .map_err(|e| BuildError::Dockerfile(format!("{dockerfile_name}:{e}")))?;
        let mut images = images;
        let extra = self
            .resolve_all(
                copied_images(&plan.stages),
                &platform,
                request.pull,
                progress.as_ref(),
            )
            .await
            .map_err(|(_, e)| e)?;
        images.extend(extra);

        // The context: walked once, and only selected files hashed.
        let uses_context = plan
            .stages
            .iter()
            .flat_map(|s| &s.steps)
            .any(|step| match &step.kind {
                StepKind::Copy(c) | StepKind::Add(c) => c.from.is_none(),
                StepKind::Run(run) => run
                    .mounts
                    .iter()
                    .any(|m| m.from.is_none() && m.kind == MountType::Bind),
                _ => false,
            });
        let mut metrics = BuildMetrics::default();
        let context = if uses_context {
            let mut context = Context::scan(&request.context, ignore)?;
            let mut roots = Vec::new();
            for step in plan.stages.iter().flat_map(|s| &s.steps) {
                if let StepKind::Copy(c) | StepKind::Add(c) = &step.kind
                    && c.from.is_none()
                {
                    let located =
                        |e: BuildError| e.at(&dockerfile_name, step.span.start_line, &step.instruction);
                    roots.extend(copy::context_roots(c, &context).map_err(located)?);
                }
                if let StepKind::Run(run) = &step.kind {
                    for mount in run
                        .mounts
                        .iter()
                        .filter(|m| m.from.is_none() && m.kind == MountType::Bind)
                    {
                        roots.push(crate::context::clean_source(
                            mount.source.as_deref().unwrap_or("/"),
                        )?);
                    }
                }
            }
            metrics.context_bytes_hashed = context.hash(&roots, &self.store.stat_cache)?;
            metrics.context_files = context.descendants("").len();
            if let Err(e) = self.store.stat_cache.save() {
                tracing::warn!("could not save the stat cache: {e}");
            }
            Some(Arc::new(context))
        } else {
            None
        };
        let mut named = HashMap::new();
        for (name, source) in &request.named_contexts {
            if let NamedContext::Dir(dir) = source {
                let mut ctx = Context::scan(dir, None)?;
                ctx.hash(&[String::new()], &self.store.stat_cache)?;
                named.insert(name.clone(), Arc::new(ctx));
            }
        }

        let now = time::now();
        let epoch = request.layer_options.source_date_epoch;
        let run = Arc::new(Run {
            store: self.store.clone(),
            remote: self.remote.clone(),
            request,
            dockerfile_name,
            context,
            named,
            images,
            progress,
            created: time::rfc3339(epoch.unwrap_or(now)),
            now: epoch.unwrap_or(now),
            scratch: std::sync::OnceLock::new(),
            step_numbers: number_steps(&plan.stages),
            metrics: std::sync::Mutex::new(Vec::new()),
            platform,
            runtime: std::sync::OnceLock::new(),
        });

        // One task per stage; each waits only for the stages it reads from.
        let mut futures: HashMap<usize, StageFuture> = HashMap::new();
        for stage in &plan.stages {
            let deps: Vec<(usize, StageFuture)> = dependencies(stage)
                .into_iter()
                .filter_map(|i| futures.get(&i).map(|f| (i, f.clone())))
                .collect();
            let run = run.clone();
            let index = stage.index;
            let stage = stage.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let runtime = tokio::runtime::Handle::current();
                let mut done = HashMap::new();
                for (index, dep) in deps {
                    done.insert(index, runtime.block_on(dep)?);
                }
                run.run_stage(&stage, &done).map(Arc::new).map_err(Arc::new)
            });
            let future = async move {
                handle
                    .await
                    .map_err(|e| Arc::new(BuildError::Context(format!("a build task failed: {e}"))))?
            }
            .boxed()
            .shared();
            futures.insert(index, future);
        }
        let target = plan
            .target_stage()
            .ok_or_else(|| BuildError::Dockerfile("the Dockerfile has no stages".to_owned()))?;
        let result = futures
            .get(&target.index)
            .cloned()
            .ok_or_else(|| BuildError::Dockerfile("the target stage was not planned".to_owned()))?
            .await
            .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(BuildError::Shared))?;

        let mut state = result.state.clone();
        for (key, value) in &run.request.labels {
            state.config.config.labels.insert(key.clone(), value.clone());
        }
        // The image is as old as its newest step: a rebuild from the cache is the same image.
        let created = state
            .config
            .history
            .iter()
            .rev()
            .find_map(|h| h.created.clone())
            .unwrap_or_else(|| run.created.clone());
        let image = export::write_image(&state, Some(&created), &self.store.content)?;

        let mut steps = run.metrics.lock().map(|m| m.clone()).unwrap_or_default();
        steps.sort_by_key(|s| s.step);
        metrics.cache_hits = steps.iter().filter(|s| s.cache == "hit").count();
        metrics.cache_misses = steps.iter().filter(|s| s.cache == "miss").count();
        metrics.steps = steps;
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

    async fn resolve_all(
        &self,
        references: Vec<String>,
        platform: &Platform,
        pull: bool,
        progress: &dyn Progress,
    ) -> std::result::Result<HashMap<String, BaseImage>, (String, BuildError)> {
        let mut unique = references;
        unique.sort();
        unique.dedup();
        let resolved = futures_util::future::join_all(
            unique
                .iter()
                .map(|reference| self.resolve_image(reference, platform, pull, progress)),
        )
        .await;
        let mut images = HashMap::new();
        for (reference, image) in unique.into_iter().zip(resolved) {
            match image {
                Ok(image) => images.insert(reference, image),
                Err(e) => return Err((reference, e)),
            };
        }
        Ok(images)
    }
}

/// A resolved image as the solver uses it.
fn base_image(descriptor: &Descriptor, manifest: &ImageManifest, config: ImageConfig) -> BaseImage {
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(descriptor, diff_id)| CachedLayer {
            descriptor: descriptor.clone(),
            diff_id: diff_id.clone(),
        })
        .collect();
    BaseImage {
        digest: descriptor.digest.to_string(),
        config,
        layers,
    }
}

/// Build-wide step numbers, in plan order.
fn number_steps(stages: &[Stage]) -> HashMap<(usize, usize), usize> {
    let mut numbers = HashMap::new();
    let mut n = 0;
    for stage in stages {
        for i in 0..stage.steps.len() {
            n += 1;
            numbers.insert((stage.index, i), n);
        }
    }
    numbers
}

/// Everything the stage tasks of one build share.
struct Run {
    store: Arc<LocalStore>,
    remote: Arc<dyn Remote>,
    request: BuildRequest,
    dockerfile_name: String,
    context: Option<Arc<Context>>,
    named: HashMap<String, Arc<Context>>,
    images: HashMap<String, BaseImage>,
    progress: Arc<dyn Progress>,
    created: String,
    now: i64,
    /// The build's directory for temporary files, made when first needed (a build whose
    /// every step is cached writes nothing) and removed with the `Run`.
    scratch: std::sync::OnceLock<tempfile::TempDir>,
    step_numbers: HashMap<(usize, usize), usize>,
    metrics: std::sync::Mutex<Vec<StepMetrics>>,
    platform: Platform,
    runtime: std::sync::OnceLock<Arc<rbuild_runtime::Runtime>>,
}

/// What a step did, for the display and the metrics.
enum Outcome {
    /// It only changed the config.
    Config,
    /// Its layer came from the cache.
    Hit,
    /// It ran; the reason says why the cache missed.
    Built { reason: String, layer: LayerWork },
}

/// What writing a step's layer took.
#[derive(Clone, Copy, Debug, Default)]
struct LayerWork {
    /// Uncompressed bytes.
    written: u64,
    /// Compressed bytes.
    compressed: u64,
    /// Uncompressed bytes whose compressed form was copied from the step's previous layer.
    reused: u64,
    /// Milliseconds.
    ms: f64,
}

impl Run {
    /// The build's scratch directory (see [`Run::scratch`](Run#structfield.scratch)).
    fn scratch(&self) -> Result<&Path> {
        if let Some(dir) = self.scratch.get() {
            return Ok(dir.path());
        }
        let dir = self.store.scratch_dir()?;
        Ok(self.scratch.get_or_init(|| dir).path())
    }

    /// The `created` time of a step reused from the cache: when it was built, unless
    /// `SOURCE_DATE_EPOCH` fixes every time.
    fn reused_created(&self, built: Option<String>) -> String {
        match (self.request.layer_options.source_date_epoch, built) {
            (None, Some(built)) => built,
            _ => self.created.clone(),
        }
    }

    /// The `created` time of a step that only changes the config: the time of the entry
    /// before it (see [`ImageState::last_created`]); the first entries of a `FROM scratch`
    /// image have none until the image is written (see [`export::write_image`]).
    fn created_after(&self, state: &ImageState) -> Option<String> {
        if self.request.layer_options.source_date_epoch.is_some() {
            return Some(self.created.clone());
        }
        state.last_created()
    }

    fn stage_name(stage: &Stage) -> String {
        stage.name.clone().unwrap_or_else(|| stage.index.to_string())
    }

    fn no_cache(&self, stage: &Stage) -> bool {
        self.request.no_cache
            || stage.name.as_ref().is_some_and(|n| {
                self.request
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            })
            || self.request.no_cache_filter.contains(&stage.index.to_string())
    }

    fn run_stage(&self, stage: &Stage, done: &HashMap<usize, Arc<StageResult>>) -> Result<StageResult> {
        let located = |e: BuildError| e.at(&self.dockerfile_name, stage.span.start_line, "FROM");
        let (mut state, mut fs_key) = match &stage.base {
            Base::Scratch => (
                ImageState::scratch(&self.platform.os, &self.platform.architecture),
                "scratch".to_owned(),
            ),
            Base::Image { reference, .. } => {
                let image = self.images.get(reference).ok_or_else(|| {
                    located(BuildError::Fetch(format!(
                        "base image {reference} was not resolved"
                    )))
                })?;
                (
                    ImageState::from_base(image.config.clone(), image.layers.clone()),
                    format!("image {}", image.digest),
                )
            }
            Base::Stage { index } => {
                let parent = done
                    .get(index)
                    .ok_or_else(|| located(BuildError::Context(format!("stage {index} did not finish"))))?;
                (parent.state.clone(), parent.fs_key.clone())
            }
            Base::Context { name } => match self.request.named_contexts.get(name) {
                Some(NamedContext::Image(reference)) => {
                    let image = self.images.get(reference).ok_or_else(|| {
                        located(BuildError::Fetch(format!(
                            "build context {name} ({reference}) was not resolved"
                        )))
                    })?;
                    (
                        ImageState::from_base(image.config.clone(), image.layers.clone()),
                        format!("image {}", image.digest),
                    )
                }
                _ => {
                    return Err(located(BuildError::Unsupported(format!(
                        "FROM {name}: a local directory build context cannot be a stage's base; use COPY --from={name}"
                    ))));
                }
            },
        };
        // The base's ONBUILD triggers are this stage's first steps (the plan put them there).
        // Having run, they leave the image, as docker and BuildKit do: a child of this image
        // runs only the triggers this stage itself adds.
        state.config.config.on_build = None;
        let total = stage.steps.len();
        for (i, step) in stage.steps.iter().enumerate() {
            let label = StepLabel {
                number: self.step_numbers.get(&(stage.index, i)).copied().unwrap_or(0),
                stage: Self::stage_name(stage),
                position: (i + 1, total),
                instruction: step.instruction.clone(),
                line: step.span.start_line,
            };
            self.progress.event(Event::Started(label.clone()));
            let started = Instant::now();
            let step_id = format!("{}#{}#{}", self.dockerfile_name, stage.index, i);
            let mut metrics = StepMetrics {
                step: label.number,
                stage: label.stage.clone(),
                instruction: step.instruction.clone(),
                line: step.span.start_line,
                ..StepMetrics::default()
            };
            let outcome = self
                .run_step(stage, step, &step_id, &mut state, &mut fs_key, done, &mut metrics)
                .map_err(|e| e.at(&self.dockerfile_name, step.span.start_line, &step.instruction))?;
            match outcome {
                Outcome::Config => metrics.cache = "none".to_owned(),
                Outcome::Hit => {
                    metrics.cache = "hit".to_owned();
                    self.progress.event(Event::Cached(label.clone()));
                }
                Outcome::Built { reason, layer } => {
                    metrics.cache = "miss".to_owned();
                    metrics.miss_reason = Some(reason);
                    metrics.bytes_written = layer.written;
                    metrics.bytes_compressed = layer.compressed;
                    metrics.bytes_reused = layer.reused;
                    metrics.layer_ms = layer.ms;
                }
            }
            if let Some(layer) = state.layers.last().filter(|_| metrics.cache != "none") {
                metrics.layer = Some(layer.descriptor.digest.to_string());
                metrics.layer_size = layer.descriptor.size;
            }
            let elapsed = started.elapsed();
            metrics.duration_ms = elapsed.as_secs_f64() * 1000.0;
            self.progress.event(Event::Finished(label, elapsed));
            if let Ok(mut all) = self.metrics.lock() {
                all.push(metrics);
            }
        }
        Ok(StageResult { state, fs_key })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        state: &mut ImageState,
        fs_key: &mut String,
        done: &HashMap<usize, Arc<StageResult>>,
        metrics: &mut StepMetrics,
    ) -> Result<Outcome> {
        match &step.kind {
            StepKind::Workdir { path } => {
                state.apply_metadata(&step.kind);
                self.workdir(stage, step, step_id, path, state, fs_key)
            }
            StepKind::Copy(copy) | StepKind::Add(copy) => {
                self.copy(stage, step, step_id, copy, state, fs_key, done, metrics)
            }
            StepKind::Run(run) => self.run_command(stage, step, step_id, run, state, fs_key, done),
            other => {
                state.apply_metadata(other);
                state.push_history(step.created_by.clone(), self.created_after(state), true);
                Ok(Outcome::Config)
            }
        }
    }

    /// The stage's filesystem so far.
    fn view(&self, state: &ImageState) -> Result<RootfsView> {
        self.store.snapshots.view(&state.layers, &self.store.content)
    }

    /// Looks a step up, or builds its layer with `build` and records it.
    #[allow(clippy::too_many_arguments)]
    fn cached_layer(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        inputs: Inputs,
        state: &mut ImageState,
        fs_key: &mut String,
        build: impl FnOnce() -> Result<(Vec<rbuild_layer::Entry>, Option<rbuild_runtime::Finished>)>,
    ) -> Result<Outcome> {
        let no_details = |_: &mut Inputs| {};
        self.cached_layer_detailed(stage, step, step_id, inputs, no_details, state, fs_key, build)
    }

    /// [`cached_layer`](Self::cached_layer), where `details` adds to `inputs` what only a
    /// miss needs (see [`Inputs::set_details`]).
    #[allow(clippy::too_many_arguments)]
    fn cached_layer_detailed(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        mut inputs: Inputs,
        details: impl FnOnce(&mut Inputs),
        state: &mut ImageState,
        fs_key: &mut String,
        build: impl FnOnce() -> Result<(Vec<rbuild_layer::Entry>, Option<rbuild_runtime::Finished>)>,
    ) -> Result<Outcome> {
        let content = &self.store.content;
        let usable = |record: &CacheRecord| {
            record
                .layer
                .as_ref()
                .is_none_or(|l| content.contains(&l.descriptor.digest))
        };
        let key = inputs.key();
        *fs_key = key.to_string();
        let no_cache = self.no_cache(stage);
        let hit = if no_cache {
            None
        } else {
            self.store.cache.lookup(&key, usable)
        };
        if let Some(record) = hit {
            let created = Some(self.reused_created(record.created));
            match record.layer {
                Some(layer) => state.push_layer(layer, step.created_by.clone(), created),
                None => state.push_history(step.created_by.clone(), created, true),
            }
            return Ok(Outcome::Hit);
        }
        details(&mut inputs);
        let reason = if no_cache {
            "--no-cache".to_owned()
        } else {
            self.store.cache.explain_miss(step_id, &inputs)
        };
        if let Some(label) = self.label(stage, step) {
            self.progress.event(Event::Missed(label, reason.clone()));
        }
        let created = Some(self.created.clone());
        let (entries, _run) = build()?;
        if entries.is_empty() {
            // Nothing changed on disk: no layer, as BuildKit leaves none for an empty diff.
            let record = CacheRecord {
                layer: None,
                created: created.clone(),
            };
            self.store.cache.store(step_id, &inputs, &record)?;
            state.push_history(step.created_by.clone(), created, true);
            return Ok(Outcome::Built {
                reason,
                layer: LayerWork::default(),
            });
        }
        let layer_started = Instant::now();
        // A RUN later in the stage will need the layer unpacked: do it while writing it, or
        // as a delta over the snapshot of what the step made last time.
        let snapshot = if self.run_follows(stage, step) {
            let previous = self.store.cache.previous_layer(step_id).map(|l| l.diff_id);
            let epoch = self.request.layer_options.source_date_epoch;
            Some(self.store.snapshots.plan(&entries, epoch, previous.as_ref())?)
        } else {
            None
        };
        let tap = snapshot.as_ref().and_then(|s| s.tap());
        let (info, digest, size, unpacked) = self.write_layer(step_id, entries, tap)?;
        if let Some(snapshot) = snapshot {
            snapshot.finish(&info.diff_id, unpacked)?;
        }
        let layer = CachedLayer {
            descriptor: Descriptor::new(info.media_type, digest, size),
            diff_id: info.diff_id,
        };
        self.store.cache.store(
            step_id,
            &inputs,
            &CacheRecord {
                layer: Some(layer.clone()),
                created: created.clone(),
            },
        )?;
        state.push_layer(layer, step.created_by.clone(), created);
        Ok(Outcome::Built {
            reason,
            layer: LayerWork {
                written: info.uncompressed_size,
                compressed: info.size,
                reused: info.reused,
                ms: layer_started.elapsed().as_secs_f64() * 1000.0,
            },
        })
    }

    /// Writes a step's layer to the content store, copying what it can from the layer the step
    /// made last time, and unpacking it into `snapshot` on the way. Returns the layer, its
    /// digest and size as stored, and whether the snapshot was unpacked.
    fn write_layer(
        &self,
        step_id: &str,
        entries: Vec<Entry>,
        snapshot: Option<&PendingSnapshot<'_>>,
    ) -> Result<(LayerInfo, Digest, u64, bool)> {
        let previous = self.previous_blocks(step_id);
        let mut writer = self.store.content.writer()?;
        let (info, unpacked) = std::thread::scope(|scope| {
            let pipe = match snapshot {
                Some(_) => {
                    let pipe = std::io::pipe().map_err(|e| BuildError::io("creating a pipe", e))?;
                    // A 1 MiB pipe rather than 64 KiB lets the writer and the unpacker run
                    // apart instead of in lockstep (best effort: the default still works).
                    let _ = rustix::pipe::fcntl_setpipe_size(&pipe.1, 1 << 20);
                    Some(pipe)
                }
                None => None,
            };
            let (reader, tap) = pipe.unzip();
            // Each tar header and each file's content would be a write to the pipe of its own.
            let mut tap = tap.map(|t| std::io::BufWriter::with_capacity(256 * 1024, t));
            let unpacker = snapshot
                .zip(reader)
                .map(|(s, r)| scope.spawn(move || s.unpack(r)));
            let extras = Extras {
                previous: previous.as_ref(),
                tap: tap.as_mut().map(|t| t as &mut (dyn std::io::Write + Send)),
            };
            let info = write_layer_with(entries, &self.request.layer_options, extras, &mut writer);
            // The end of the pipe (after what the buffer holds): the unpacker reads to it.
            drop(tap);
            let unpacked = unpacker.is_some_and(|u| matches!(u.join(), Ok(Ok(()))));
            let info = info.map_err(|e| BuildError::Context(format!("writing the layer: {e}")))?;
            Ok::<_, BuildError>((info, unpacked))
        })?;
        let (digest, size) = writer.commit(Some(&info.digest))?;
        if !info.blocks.blocks.is_empty() {
            self.store.cache.store_blocks(&digest, &info.blocks)?;
        }
        Ok((info, digest, size, unpacked))
    }

    /// Whether a RUN comes after `step` in `stage` (and so will need its layer unpacked).
    fn run_follows(&self, stage: &Stage, step: &Step) -> bool {
        stage
            .steps
            .iter()
            .skip_while(|s| !std::ptr::eq(*s, step))
            .skip(1)
            .any(|s| matches!(s.kind, StepKind::Run(_)))
    }

    /// The gzip blocks of the layer `step` made last time, which its new layer may copy.
    fn previous_blocks(&self, step: &str) -> Option<PreviousBlocks> {
        let layer = self.store.cache.previous_layer(step)?;
        let blocks = self.store.cache.blocks(&layer.descriptor.digest)?;
        let blob = self.store.content.open_blob(&layer.descriptor.digest).ok()?;
        Some(PreviousBlocks::new(&blocks, blob))
    }

    fn label(&self, stage: &Stage, step: &Step) -> Option<StepLabel> {
        let position = stage.steps.iter().position(|s| std::ptr::eq(s, step))?;
        Some(StepLabel {
            number: self
                .step_numbers
                .get(&(stage.index, position))
                .copied()
                .unwrap_or(0),
            stage: Self::stage_name(stage),
            position: (position + 1, stage.steps.len()),
            instruction: step.instruction.clone(),
            line: step.span.start_line,
        })
    }

    /// The owner a USER value stands for, for directories WORKDIR creates.
    fn user_owner(&self, user: &str, view: &RootfsView) -> Result<Option<Owner>> {
        if user.is_empty() {
            return Ok(None);
        }
        owner::resolve(user, view).map(Some)
    }

    fn workdir(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        path: &str,
        state: &mut ImageState,
        fs_key: &mut String,
    ) -> Result<Outcome> {
        let view = self.view(state)?;
        let exists = view.resolve(path, true)?.is_some_and(|f| f.is_dir());
        if path == "/" || exists {
            state.push_history(step.created_by.clone(), self.created_after(state), true);
            return Ok(Outcome::Config);
        }
        let owner = self.user_owner(&state.config.config.user, &view)?;
        let mut inputs = Inputs::default();
        inputs
            .set("instruction", step.instruction.clone())
            .set("flag:path", path)
            .set(
                "flag:owner",
                owner.map_or("0:0".to_owned(), |o| format!("{}:{}", o.uid, o.gid)),
            )
            .set("parent", fs_key.clone());
        let now = self.now;
        self.cached_layer(stage, step, step_id, inputs, state, fs_key, || {
            let owner = owner.unwrap_or(Owner::ROOT);
            let path = crate::rootfs::clean(path);
            let mut entries = BTreeMap::new();
            entries.insert(
                path.clone(),
                rbuild_layer::Entry {
                    path,
                    kind: rbuild_layer::EntryKind::Dir,
                    mode: 0o755,
                    uid: owner.uid,
                    gid: owner.gid,
                    mtime: now,
                    xattrs: BTreeMap::new(),
                    content_digest: None,
                },
            );
            copy::add_parents(&mut entries, Some(&view), owner, now);
            Ok((entries.into_values().collect(), None))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        copy: &CopyStep,
        state: &mut ImageState,
        fs_key: &mut String,
        done: &HashMap<usize, Arc<StageResult>>,
        metrics: &mut StepMetrics,
    ) -> Result<Outcome> {
        let is_add = matches!(step.kind, StepKind::Add(_));
        if let Some(Source::Git { url, .. }) = copy.sources.iter().find(|s| matches!(s, Source::Git { .. })) {
            return Err(BuildError::Unsupported(format!(
                "ADD {url}: git sources are not supported; clone the repository into the context instead"
            )));
        }
        // Where the sources come from, and the key of that origin.
        let origin_view;
        let (origin, origin_key) = match &copy.from {
            None => {
                let context = self
                    .context
                    .as_ref()
                    .ok_or_else(|| BuildError::Context("the build has no context".to_owned()))?;
                (Origin::Context(context), "context".to_owned())
            }
            Some(CopyFrom::Stage { index }) => {
                let source = done
                    .get(index)
                    .ok_or_else(|| BuildError::Context(format!("stage {index} did not finish")))?;
                origin_view = self.view(&source.state)?;
                (
                    Origin::Rootfs {
                        view: &origin_view,
                        name: "the source stage",
                    },
                    format!("stage {}", source.fs_key),
                )
            }
            Some(CopyFrom::Image { reference }) => {
                let image = self
                    .images
                    .get(reference)
                    .ok_or_else(|| BuildError::Fetch(format!("image {reference} was not resolved")))?;
                origin_view = self.store.snapshots.view(&image.layers, &self.store.content)?;
                (
                    Origin::Rootfs {
                        view: &origin_view,
                        name: reference,
                    },
                    format!("image {}", image.digest),
                )
            }
            Some(CopyFrom::Context { name }) => {
                match (self.named.get(name), self.request.named_contexts.get(name)) {
                    (Some(context), _) => (Origin::Context(context), format!("context {name}")),
                    (None, Some(NamedContext::Image(reference))) => {
                        let image = self.images.get(reference).ok_or_else(|| {
                            BuildError::Fetch(format!("image {reference} was not resolved"))
                        })?;
                        origin_view = self.store.snapshots.view(&image.layers, &self.store.content)?;
                        (
                            Origin::Rootfs {
                                view: &origin_view,
                                name: reference,
                            },
                            format!("image {}", image.digest),
                        )
                    }
                    _ => return Err(BuildError::Context(format!("unknown build context {name}"))),
                }
            }
        };
        let mut selection = copy::select(copy, &origin)?;
        selection.roots.extend(self.download_urls(copy)?);
        metrics.bytes_hashed = match copy.from {
            None => 0,
            Some(_) => selection.bytes()?,
        };

        // The stage's filesystem is needed for --chown names and to place the files, except
        // with --link, whose layer must not depend on what is below it.
        let below = if copy.link || state.layers.is_empty() {
            None
        } else {
            Some(self.view(state)?)
        };
        let owner = match &copy.chown {
            Some(spec) => Some(owner::resolve(
                spec,
                below.as_ref().unwrap_or(&RootfsView::default()),
            )?),
            None => None,
        };
        let mut inputs = Inputs::default();
        inputs
            .set("instruction", step.instruction.clone())
            .set("flag:dest", copy.dest_path.clone())
            .set(
                "flag:owner",
                owner.map_or("-".to_owned(), |o| format!("{}:{}", o.uid, o.gid)),
            )
            .set("flag:from", origin_key);
        if !copy.link {
            inputs.set("parent", fs_key.clone());
        }
        inputs.set("files", selection.digest()?.to_string());
        let now = self.now;
        let details = |inputs: &mut Inputs| {
            if let Ok(listing) = selection.listing() {
                inputs.set_details("files", listing);
            }
        };
        self.cached_layer_detailed(stage, step, step_id, inputs, details, state, fs_key, || {
            let unpacked;
            let selection = if is_add {
                unpacked = self.unpack_archives(selection.clone(), copy.unpack)?;
                &unpacked
            } else {
                &selection
            };
            let entries = copy::entries(
                selection,
                &Layout {
                    step: copy,
                    owner,
                    below: below.as_ref(),
                    now,
                },
            )?;
            Ok((entries, None))
        })
    }

    /// The runtime, created on the first RUN (so builds without RUN need no runc), after
    /// clearing what killed builds left behind.
    fn runtime(&self) -> Result<Arc<rbuild_runtime::Runtime>> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let mut runtime =
            rbuild_runtime::Runtime::new(&self.store.root().join("runtime"), self.request.runtime.clone())
                .map_err(|e| BuildError::Unsupported(e.to_string()))?;
        if let Some(snapshotter) = self.request.snapshotter {
            runtime = runtime.with_snapshotter(snapshotter);
        }
        let cleaned = runtime.cleanup_stale();
        if cleaned > 0 {
            tracing::info!("removed {cleaned} runs left by interrupted builds");
        }
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)).clone())
    }

    /// The layer directories a `from=` names (a stage, an image, a named context).
    fn layers_of(&self, from: &CopyFrom, done: &HashMap<usize, Arc<StageResult>>) -> Result<Vec<PathBuf>> {
        let image_layers = |reference: &str| -> Result<Vec<PathBuf>> {
            let image = self
                .images
                .get(reference)
                .ok_or_else(|| BuildError::Fetch(format!("image {reference} was not resolved")))?;
            Ok(self
                .store
                .snapshots
                .view(&image.layers, &self.store.content)?
                .layers()
                .to_vec())
        };
        match from {
            CopyFrom::Stage { index } => {
                let source = done
                    .get(index)
                    .ok_or_else(|| BuildError::Context(format!("stage {index} did not finish")))?;
                Ok(self.view(&source.state)?.layers().to_vec())
            }
            CopyFrom::Image { reference } => image_layers(reference),
            CopyFrom::Context { name } => match (self.named.get(name), self.request.named_contexts.get(name))
            {
                (Some(context), _) => Ok(vec![context.root().to_owned()]),
                (None, Some(NamedContext::Image(reference))) => image_layers(reference),
                _ => Err(BuildError::Context(format!("unknown build context {name}"))),
            },
        }
    }

    /// What keys a RUN: the command, its ARGs and environment (proxies left out), user, working
    /// directory, network and mounts (cache ids and secrets left out), and the step below it.
    fn run_inputs(
        &self,
        step: &Step,
        run: &RunStep,
        user: &str,
        fs_key: &str,
        done: &HashMap<usize, Arc<StageResult>>,
    ) -> Result<Inputs> {
        let mut inputs = Inputs::default();
        inputs
            .set("instruction", step.instruction.clone())
            .set("flag:argv", serde_json::to_string(&run.argv).unwrap_or_default())
            .set("flag:user", user)
            .set("flag:workdir", run.workdir.clone())
            .set(
                "flag:network",
                format!("{:?}", exec::network(run, &self.request.network)?),
            )
            .set("flag:security", run.security.clone())
            .set("parent", fs_key);
        for arg in &run.args {
            inputs.set(format!("arg:{}", arg.name), arg.value.clone());
        }
        for var in &run.env {
            inputs.set(format!("env:{}", var.name), var.value.clone());
        }
        for (n, mount) in run.mounts.iter().enumerate() {
            let origin = match (&mount.kind, &mount.from) {
                (MountType::Bind, None) => {
                    let context = self
                        .context
                        .as_ref()
                        .ok_or_else(|| BuildError::Context("the build has no context".to_owned()))?;
                    let source = crate::context::clean_source(mount.source.as_deref().unwrap_or("/"))?;
                    format!("context {}", context.tree_digest(&source))
                }
                (MountType::Bind, Some(CopyFrom::Stage { index })) => done
                    .get(index)
                    .map(|s| format!("stage {}", s.fs_key))
                    .unwrap_or_default(),
                (_, Some(from)) => format!("{from:?}"),
                _ => String::new(),
            };
            let described = serde_json::json!({
                "type": format!("{:?}", mount.kind),
                "target": mount.target,
                "source": mount.source,
                "origin": origin,
                "readonly": mount.read_only,
                "mode": mount.mode,
                "uid": mount.uid,
                "gid": mount.gid,
            });
            inputs.set(format!("flag:mount:{n}"), described.to_string());
        }
        for inline in &run.inline_files {
            inputs.set(
                format!("file:{}", inline.path),
                Digest::sha256_of(inline.content.as_bytes()).to_string(),
            );
        }
        Ok(inputs)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_command(
        &self,
        stage: &Stage,
        step: &Step,
        step_id: &str,
        run: &RunStep,
        state: &mut ImageState,
        fs_key: &mut String,
        done: &HashMap<usize, Arc<StageResult>>,
    ) -> Result<Outcome> {
        if run.security == "insecure" {
            return Err(BuildError::Unsupported(
                "RUN --security=insecure needs the security.insecure entitlement, which rbuild does not grant".to_owned(),
            ));
        }
        if !run.devices.is_empty() {
            return Err(BuildError::Unsupported(
                "RUN --device is not supported".to_owned(),
            ));
        }
        let user = if run.user.is_empty() {
            state.config.config.user.clone()
        } else {
            run.user.clone()
        };
        let inputs = self.run_inputs(step, run, &user, fs_key, done)?;
        let label = self.label(stage, step);
        let below = state.layers.clone();
        let diff_ms = std::cell::Cell::new(0.0);
        let outcome = self.cached_layer(stage, step, step_id, inputs, state, fs_key, || {
            let view = self.store.snapshots.view(&below, &self.store.content)?;
            let (owner, groups) = crate::owner::run_user(&user, &view)?;
            let runtime = self.runtime()?;
            let scratch = tempfile::tempdir_in(self.scratch()?)
                .map_err(|e| BuildError::io("creating a directory for the step", e))?;
            let cache_dir = self.store.root().join("cache-mounts");
            std::fs::create_dir_all(&cache_dir)
                .map_err(|e| BuildError::io("creating the cache-mount directory", e))?;
            let layers = |from: &CopyFrom| self.layers_of(from, done);
            let prepared = exec::prepare(
                run,
                &MountSources {
                    context: self.context.as_ref().map(|c| c.root()),
                    layers: &layers,
                    cache_dir: &cache_dir,
                    secrets: &self.request.secrets,
                    ssh: self.request.ssh.as_deref(),
                    scratch: scratch.path(),
                },
            )?;
            let host_file = |path: &str| Some(PathBuf::from(path)).filter(|p| p.is_file());
            let spec = rbuild_runtime::RunSpec {
                layers: view.layers().to_vec(),
                argv: run.argv.clone(),
                env: exec::environment(run, &prepared.env),
                cwd: if run.workdir.is_empty() {
                    "/".to_owned()
                } else {
                    run.workdir.clone()
                },
                user: rbuild_runtime::User {
                    uid: owner.uid,
                    gid: owner.gid,
                    additional_gids: groups,
                },
                network: exec::network(run, &self.request.network)?,
                mounts: prepared.mounts.clone(),
                resolv_conf: host_file("/etc/resolv.conf"),
                hosts: host_file("/etc/hosts"),
            };
            let output = |line: &str| {
                if let Some(label) = &label {
                    self.progress.event(Event::Output(label.clone(), line.to_owned()));
                }
            };
            let finished = runtime.run(&spec, &output).map_err(|e| match e {
                rbuild_runtime::RunError::Failed { exit_code, tail } => {
                    BuildError::RunFailed { exit_code, tail }
                }
                other => BuildError::Unsupported(format!("running the step: {other}")),
            })?;
            let diff_started = Instant::now();
            let entries = exec::layer_entries(&finished.upper(), &prepared.stubs, &view)?;
            diff_ms.set(diff_started.elapsed().as_secs_f64() * 1000.0);
            Ok((entries, Some(finished)))
        })?;
        // The layer's time includes reading the step's changes back from the upper directory.
        Ok(match outcome {
            Outcome::Built { reason, mut layer } => {
                layer.ms += diff_ms.get();
                Outcome::Built { reason, layer }
            }
            other => other,
        })
    }

    /// ADD <url>: each URL downloaded (every build: the content decides the cache key), checked
    /// against `--checksum`, and named after the URL's last path segment; docker gives it mode
    /// 0600 and the server's `Last-Modified` as its mtime.
    fn download_urls(&self, copy: &CopyStep) -> Result<Vec<copy::Selected>> {
        let mut downloaded = Vec::new();
        for source in &copy.sources {
            let Source::Url { url } = source else { continue };
            // The scratch directory is the build's, shared by stages running at once: each
            // download gets a name no other can have.
            let scratch = self.scratch()?;
            let file = tempfile::Builder::new()
                .prefix("download-")
                .tempfile_in(scratch)
                .and_then(|f| f.into_temp_path().keep().map_err(|e| e.error))
                .map_err(|e| BuildError::io(format!("creating a file in {}", scratch.display()), e))?;
            let (digest, modified) =
                tokio::runtime::Handle::current().block_on(self.remote.download(url, &file))?;
            if let Some(expected) = &copy.checksum
                && expected != &digest.to_string()
            {
                return Err(BuildError::Fetch(format!(
                    "ADD --checksum={expected}: {url} has digest {digest}; the file changed or the checksum is wrong"
                )));
            }
            let name = url
                .split(['?', '#'])
                .next()
                .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                .filter(|n| !n.is_empty() && !n.contains(':'))
                .ok_or_else(|| {
                    BuildError::Fetch(format!(
                        "ADD {url}: no file name in the URL; give a destination file name"
                    ))
                })?
                .to_owned();
            downloaded.push(copy::Selected::listed(
                url.clone(),
                name,
                vec![copy::Node {
                    relative: String::new(),
                    kind: copy::NodeKind::File { disk: file, digest },
                    mode: 0o600,
                    mtime: modified.unwrap_or(self.now),
                    owner: None,
                }],
            ));
        }
        Ok(downloaded)
    }

    /// ADD: local tar archives (plain or compressed) are extracted, not copied, unless
    /// `--unpack=false`; downloads are extracted only with `--unpack=true`.
    fn unpack_archives(&self, mut selection: Selection, unpack: Option<bool>) -> Result<Selection> {
        for root in &mut selection.roots {
            let remote = root.path.starts_with("http://") || root.path.starts_with("https://");
            if unpack == Some(false) || (remote && unpack != Some(true)) {
                continue;
            }
            let Some(disk) = root.root_file() else {
                continue;
            };
            if rbuild_layer::sniff_archive(&disk)
                .map_err(|e| BuildError::io(format!("reading {}", disk.display()), e))?
                .is_none()
            {
                continue;
            }
            let dest = tempfile::tempdir_in(self.scratch()?)
                .map_err(|e| BuildError::io("creating a directory for an archive", e))?
                .keep();
            let options = rbuild_layer::UnpackOptions {
                whiteouts: rbuild_layer::WhiteoutMode::Apply,
                same_owner: crate::snapshot::is_root(),
            };
            rbuild_layer::extract_archive(&disk, &dest, &options)
                .map_err(|e| BuildError::Context(format!("extracting {}: {e}", root.path)))?;
            let view = RootfsView::new(vec![dest]);
            let mut extracted = copy::select_rootfs(&view, &root.path, "", None)?;
            if let Some(mut tree) = extracted.pop() {
                tree.path = root.path.clone();
                tree.name = root.name.clone();
                *root = tree;
            }
        }
        Ok(selection)
    }
}
