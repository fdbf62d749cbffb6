//! `rbuild build`: docker build's flags, a daemonless build, then tags, outputs and pushes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use rbuild_builder::exec::SecretSource;
use rbuild_builder::export::{self, Exported, Output, export};
use rbuild_builder::progress::Progress;
use rbuild_builder::remote_cache::{self, CacheLocation, CacheTarget, CacheTo, ExportedCache};
use rbuild_builder::{BuildError, BuildOutput, BuildRequest, Builder, NamedContext};
use rbuild_layer::{Compression, LayerOptions};

use crate::args::{CompressionArgs, parse_key_value};
use crate::display;
use crate::store::{StoreArgs, reference, remote, runtime};
use rbuild_client::Client;
use rbuild_oci::{Descriptor, Reference};

/// Arguments of `rbuild build`, named as docker build names them.
#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name the image (repeatable)
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Set a build argument: KEY=VALUE, or KEY to take it from the environment
    #[arg(long = "build-arg", value_parser = parse_build_arg)]
    build_args: Vec<(String, String)>,
    /// Build this stage
    #[arg(long)]
    target: Option<String>,
    /// Do not use the cache
    #[arg(long)]
    no_cache: bool,
    /// Look base images up in their registries even when the store has them
    #[arg(long)]
    pull: bool,
    /// Do not use the cache for this stage (repeatable)
    #[arg(long = "no-cache-filter")]
    no_cache_filter: Vec<String>,
    /// Add a label to the image: KEY=VALUE (repeatable)
    #[arg(long = "label", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Push the image to every tag's registry
    #[arg(long)]
    push: bool,
    /// Write the image out: type=registry | type=oci,dest=PATH | type=docker,dest=PATH
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Read build cache: type=registry,ref=REF | type=local,src=DIR | REF (repeatable, tried in
    /// order)
    #[arg(long = "cache-from")]
    cache_from: Vec<CacheLocation>,
    /// Write build cache: type=registry,ref=REF | type=local,dest=DIR, with mode=min|max,
    /// compression=gzip|zstd and ignore-error=true|false; or type=inline, in the image itself
    /// (repeatable)
    #[arg(long = "cache-to")]
    cache_to: Vec<CacheTo>,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    progress: display::Mode,
    /// Write per-step metrics (times, cache hits and miss reasons, bytes) as JSON
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// The platform to build for
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// A named context: NAME=DIR, NAME=docker-image://REF, NAME=oci-layout://DIR[:TAG]
    #[arg(long = "build-context", value_parser = parse_key_value)]
    build_contexts: Vec<(String, String)>,
    #[command(flatten)]
    compression: CompressionArgs,
    /// A secret RUN may mount: id=ID,src=FILE or id=ID,env=VAR (repeatable)
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// Forward the SSH agent ($SSH_AUTH_SOCK) to RUN --mount=type=ssh: `default`
    #[arg(long)]
    ssh: Option<String>,
    /// What RUN's default network is: default (the host's) or none
    #[arg(long, default_value = "default")]
    network: String,
    /// The OCI runtime for RUN [default: $RBUILD_RUNTIME, else runc]
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// How RUN's root filesystem is made: auto (overlay, else copies), overlay or native
    /// (copies) [default: $RBUILD_SNAPSHOTTER, else auto]
    #[arg(long)]
    snapshotter: Option<rbuild_builder::Snapshotter>,
    /// The build context directory
    context: PathBuf,
}

/// `KEY=VALUE`, or `KEY` alone taking the value from the environment (as docker does).
fn parse_build_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(_) => parse_key_value(s),
        None => std::env::var(s)
            .map(|v| (s.to_owned(), v))
            .map_err(|_| format!("--build-arg {s}: no value given and ${s} is not set")),
    }
}

pub fn parse_output(spec: &str) -> anyhow::Result<Output> {
    let fields: BTreeMap<&str, &str> = spec.split(',').filter_map(|kv| kv.split_once('=')).collect();
    let dest = || -> anyhow::Result<PathBuf> {
        fields
            .get("dest")
            .map(PathBuf::from)
            .with_context(|| format!("--output {spec}: needs dest=PATH"))
    };
    match fields.get("type").copied() {
        Some("registry") | Some("image") => Ok(Output::Registry),
        Some("oci") => {
            let dest = dest()?;
            Ok(match dest.extension().is_some_and(|e| e == "tar") {
                true => Output::OciTar(dest),
                false => Output::OciDir(dest),
            })
        }
        Some("docker") | Some("tar") => Ok(Output::DockerArchive(dest()?)),
        other => bail!("--output {spec}: unknown type {other:?}; use registry, oci or docker"),
    }
}

/// `--secret id=ID,src=FILE` or `--secret id=ID,env=VAR` (docker's syntax; `type=` ignored).
fn parse_secret(spec: &str) -> anyhow::Result<(String, SecretSource)> {
    let fields: BTreeMap<&str, &str> = spec.split(',').filter_map(|kv| kv.split_once('=')).collect();
    let id = fields
        .get("id")
        .with_context(|| format!("--secret {spec}: needs id=ID"))?;
    let source = match (
        fields.get("src").or_else(|| fields.get("source")),
        fields.get("env"),
    ) {
        (Some(file), _) => SecretSource::File(PathBuf::from(file)),
        (None, Some(var)) => SecretSource::Env((*var).to_owned()),
        (None, None) => SecretSource::Env((*id).to_owned()),
    };
    Ok(((*id).to_owned(), source))
}

/// `SOURCE_DATE_EPOCH`, from the build argument of that name (`from_arg`), else the environment.
pub fn source_date_epoch(from_arg: Option<&str>) -> anyhow::Result<Option<i64>> {
    match from_arg
        .map(str::to_owned)
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
    {
        Some(value) => Ok(Some(value.trim().parse().with_context(|| {
            format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")
        })?)),
        None => Ok(None),
    }
}

/// One image to build and where it goes: what `rbuild build`'s flags say, and what `rbuild
/// bake` makes of each target.
pub struct Job {
    /// What to build.
    pub request: BuildRequest,
    /// `-t`: the names the image gets (and is pushed to).
    pub tags: Vec<Reference>,
    /// `--output` and `--push`.
    pub outputs: Vec<Output>,
    /// `--cache-to`.
    pub cache_to: Vec<CacheTo>,
    /// How layers leaving the store are compressed.
    pub shipped: Compression,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// The image must be whole in the store (later builds read it), even when its layers a
    /// remote cache gave could stay in the registry it is pushed to.
    pub keep_whole: bool,
}

impl Job {
    /// How the build writes layers: as they will leave the store; an image that only lands in
    /// it keeps them uncompressed, as docker does, unless a compression was asked for.
    pub fn layer_compression(&self, given: bool) -> Compression {
        match given {
            false if self.outputs.is_empty() && self.cache_to.is_empty() => Compression::None,
            _ => self.shipped,
        }
    }

    /// Checks that every output has what it needs.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.outputs.iter().any(|o| matches!(o, Output::Registry)) && self.tags.is_empty() {
            bail!("--push needs at least one -t NAME to push to");
        }
        Ok(())
    }
}

/// What the jobs of one command share: the local store (and its cache), the registry client
/// and the async runtime.
pub struct Session {
    builder: Builder,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl Session {
    /// Opens the store and makes the client `store` describes.
    pub fn open(store: &StoreArgs) -> anyhow::Result<Session> {
        Ok(Session {
            builder: Builder::new(store.open()?, remote(store)?),
            client: store.client()?,
            runtime: runtime()?,
        })
    }

    /// This session with its builds sharing the contexts they walk (see
    /// [`Builder::sharing_contexts`]).
    pub fn sharing_contexts(self) -> Session {
        Session {
            builder: self.builder.sharing_contexts(),
            ..self
        }
    }

    /// The progress display for `mode`, started.
    pub fn display(&self, mode: display::Mode) -> display::Display {
        display::Display::start(mode, self.runtime.handle())
    }

    /// The local store.
    pub fn store(&self) -> &rbuild_builder::store::LocalStore {
        self.builder.store()
    }

    /// Stops every build of this session, running or to come (see [`Builder::stop`]).
    pub fn stop(&self) {
        self.builder.stop();
    }

    /// Builds `job`, sends the image and the caches where it says, and reports; returns the
    /// image's manifest.
    pub fn run(&self, job: Job, progress: display::Mode) -> anyhow::Result<Descriptor> {
        let display = self.display(progress);
        self.run_reporting(job, display.progress(), &display)
    }

    /// [`run`](Session::run), the build reporting to `progress`, and what the command says
    /// (pushed, cache written, warnings, built) said on `display`. Several may run at once, on
    /// threads of their own: they share the session's store, cache and steps in flight.
    pub fn run_reporting(
        &self,
        job: Job,
        progress: Arc<dyn Progress>,
        display: &display::Display,
    ) -> anyhow::Result<Descriptor> {
        let complete = job.keep_whole || needs_layer_bytes(&job.outputs, &job.tags, &job.request.cache_from);
        // A build only pushed leaves the layers its cache hits name in the cache's registry, to
        // be mounted from there; one deleted after the build read the cache is only found
        // missing by the push. Then the build is made again with every layer fetched: the
        // lost one is warned about and its step built.
        let Sent {
            mut output,
            exported,
            caches,
        } = match self.build_and_send(&job, complete, progress.clone()) {
            Err(e) if !complete && a_layer_was_gone(&e) => {
                display.say(format!(
                    "warning: {:#}; building again with every layer fetched",
                    anyhow::Error::from(e)
                ));
                self.build_and_send(&job, true, progress)?
            }
            sent => sent?,
        };
        let store = self.builder.store();
        output.metrics.image = exported.manifest.digest.to_string();
        for tag in &job.tags {
            store.content.set_ref(&tag.to_string(), &exported.manifest)?;
        }
        for report in &exported.pushed {
            display.say(format!(
                "pushed {} ({} bytes uploaded, {} blobs already there)",
                report.reference,
                report.bytes_uploaded(),
                report.with_outcome(rbuild_client::BlobOutcome::Existed).count()
            ));
        }
        for (target, result) in caches {
            match result {
                Ok(cache) => display.say(format!(
                    "cache written to {} ({} steps, {})",
                    cache.location, cache.records, cache.manifest.digest
                )),
                Err(e) if target.ignore_error => output.warnings.push(format!(
                    "cache export to {} failed: {:#}",
                    target.location,
                    anyhow::Error::from(e)
                )),
                Err(e) => {
                    return Err(e).with_context(|| format!("exporting the cache to {}", target.location));
                }
            }
        }
        if let Some(path) = &job.metrics_file {
            let json = serde_json::to_vec_pretty(&output.metrics)?;
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        for warning in &output.warnings {
            display.say(format!("warning: {warning}"));
        }
        let m = &output.metrics;
        let tag_names: Vec<String> = job.tags.iter().map(export::familiar_name).collect();
        display.say(format!(
            "built {} in {:.2}s: {} cached, {} built{}",
            exported.manifest.digest,
            m.duration_ms / 1000.0,
            m.cache_hits,
            m.cache_misses,
            if tag_names.is_empty() {
                String::new()
            } else {
                format!(" ({})", tag_names.join(", "))
            }
        ));
        Ok(exported.manifest)
    }

    /// Builds `job` — its image complete in the store when `complete` — and sends the image
    /// and the caches where it says.
    fn build_and_send<'a>(
        &self,
        job: &'a Job,
        complete: bool,
        progress: Arc<dyn Progress>,
    ) -> rbuild_builder::Result<Sent<'a>> {
        let Session {
            builder,
            client,
            runtime,
        } = self;
        let request = BuildRequest {
            complete_image: complete,
            ..job.request.clone()
        };
        let mut output = runtime.block_on(builder.build(request, progress))?;
        if job.cache_to.contains(&CacheTo::Inline) {
            output.image = remote_cache::inline(&output.image, &output.steps, builder.store())?;
        }
        // Cache hits may bring layers an earlier build kept uncompressed: export compresses them.
        let layers = LayerOptions {
            compression: job.shipped,
            ..LayerOptions::default()
        };
        let store = builder.store();
        let manifest = export::shipped(store, &output.image.manifest, &job.outputs, &layers)?;
        let written: Vec<_> = cache_targets(&job.cache_to)
            .map(|target| {
                (
                    target,
                    remote_cache::write(target, &output.steps, &manifest, store),
                )
            })
            .collect();
        // The image and the caches go at once; the client sends a blob both need once.
        let remote_caches = &output.caches;
        let (exported, caches) = runtime.block_on(futures_util::future::join(
            export(store, client, &manifest, &job.tags, &job.outputs),
            futures_util::future::join_all(written.into_iter().map(|(target, written)| async move {
                let sent = match written {
                    Ok(cache) => cache.send(store, client, remote_caches).await,
                    Err(e) => Err(e),
                };
                (target, sent)
            })),
        ));
        Ok(Sent {
            exported: exported?,
            output,
            caches,
        })
    }
}

/// What one attempt at a job built and sent.
struct Sent<'a> {
    output: BuildOutput,
    exported: Exported,
    /// Each cache written, and how sending it went (reported after, as `ignore-error` says).
    caches: Vec<(&'a CacheTarget, rbuild_builder::Result<ExportedCache>)>,
}

/// Whether a push failed for a blob that is neither in the store nor where the push expected
/// to mount it from.
fn a_layer_was_gone(error: &BuildError) -> bool {
    matches!(error, BuildError::Push { source, .. }
        if matches!(**source, rbuild_client::ClientError::MissingContent { .. }))
}

/// The `--cache-to` targets that write a cache of their own (inline ones are in the image).
fn cache_targets(cache_to: &[CacheTo]) -> impl Iterator<Item = &CacheTarget> {
    cache_to.iter().filter_map(|to| match to {
        CacheTo::Export(target) => Some(target),
        CacheTo::Inline => None,
    })
}

/// The job `rbuild build`'s arguments describe.
fn job(args: &BuildArgs) -> anyhow::Result<Job> {
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let dockerfile_text =
        std::fs::read_to_string(&dockerfile).with_context(|| format!("reading {}", dockerfile.display()))?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|o| parse_output(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.push {
        outputs.push(Output::Registry);
    }
    let tags = args
        .tags
        .iter()
        .map(|t| reference(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let named_contexts = args
        .build_contexts
        .iter()
        .map(|(name, source)| (name.clone(), named_context(source)))
        .collect();
    let mut job = Job {
        request: BuildRequest {
            dockerfile: dockerfile.clone(),
            dockerfile_text,
            context: args.context.clone(),
            build_args: args.build_args.iter().cloned().collect(),
            target: args.target.clone(),
            no_cache: args.no_cache,
            pull: args.pull,
            no_cache_filter: args.no_cache_filter.clone(),
            labels: args.labels.iter().cloned().collect(),
            platform: args.platform.clone(),
            named_contexts,
            layer_options: LayerOptions {
                compression: Compression::None,
                source_date_epoch: source_date_epoch(
                    args.build_args
                        .iter()
                        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
                        .map(|(_, v)| v.as_str()),
                )?,
                threads: 0,
            },
            secrets: args
                .secrets
                .iter()
                .map(|s| parse_secret(s))
                .collect::<anyhow::Result<_>>()?,
            ssh: match args.ssh.as_deref() {
                None => None,
                Some(_) => Some(PathBuf::from(
                    std::env::var_os("SSH_AUTH_SOCK")
                        .context("--ssh needs an SSH agent: SSH_AUTH_SOCK is not set")?,
                )),
            },
            network: args.network.clone(),
            runtime: args.runtime.clone(),
            snapshotter: args.snapshotter,
            cache_from: args.cache_from.clone(),
            complete_image: false,
        },
        tags,
        outputs,
        cache_to: args.cache_to.clone(),
        shipped: args.compression.shipped(),
        metrics_file: args.metrics_file.clone(),
        keep_whole: false,
    };
    job.request.layer_options.compression = job.layer_compression(args.compression.given());
    job.check()?;
    Ok(job)
}

/// A `--build-context` value: `docker-image://REF`, `oci-layout://DIR[:TAG]`, or a directory.
fn named_context(source: &str) -> NamedContext {
    if let Some(image) = source.strip_prefix("docker-image://") {
        NamedContext::Image(image.to_owned())
    } else if source.starts_with("oci-layout://") {
        NamedContext::Image(source.to_owned())
    } else {
        NamedContext::Dir(PathBuf::from(source))
    }
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let job = job(&args)?;
    let manifest = Session::open(&args.store)?.run(job, args.progress)?;
    println!("{}", manifest.digest);
    Ok(ExitCode::SUCCESS)
}

/// Whether layers a remote cache gave must be brought into the store: they need not when every
/// output is a push to a registry that holds the cache (the layers are mounted there), and
/// must for an image kept in the store or written to a file.
fn needs_layer_bytes(outputs: &[Output], tags: &[rbuild_oci::Reference], caches: &[CacheLocation]) -> bool {
    let pushed_only = !outputs.is_empty() && outputs.iter().all(|o| matches!(o, Output::Registry));
    let mountable = tags.iter().all(|tag| {
        caches
            .iter()
            .any(|cache| cache.registry() == Some(tag.registry()))
    });
    !(pushed_only && mountable)
}
