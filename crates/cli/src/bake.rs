//! `rbuild bake`: compose and bake files read into build targets (rbuild-bake), printed as
//! `docker buildx bake --print` does, or built — in one process, one store and one cache, each
//! target a [`Job`] as `rbuild build` makes one, all at once but each after the targets it
//! reads ([`targets`]).

mod targets;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::{Context as _, bail};
use clap::Args;
use rbuild_bake::{NamedSource, Target};
use rbuild_builder::exec::SecretSource;
use rbuild_builder::export::Output;
use rbuild_builder::{BuildError, BuildRequest, NamedContext};
use rbuild_layer::{Compression, LayerOptions};
use rbuild_oci::Descriptor;
use targets::{Finished, TargetProgress};

use crate::build::{Job, Session, parse_output, source_date_epoch};
use crate::display;
use crate::store::{StoreArgs, reference};

/// Arguments of `rbuild bake`.
#[derive(Args)]
pub struct BakeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A compose or bake file, repeatable, merged in order [default: compose.yaml (or
    /// compose.yml, docker-compose.yml, docker-compose.yaml), docker-bake.json,
    /// docker-bake.hcl, docker-bake.override.json, docker-bake.override.hcl, those found]
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// Override a target attribute: PATTERN.KEY[.SUB]=VALUE, or += to append (repeatable)
    #[arg(long = "set")]
    set: Vec<String>,
    /// Print the resolved targets as JSON and build nothing
    #[arg(long)]
    print: bool,
    /// Push every target's image to its tags' registries
    #[arg(long)]
    push: bool,
    /// How to show progress
    #[arg(long, value_enum, default_value = "auto")]
    progress: display::Mode,
    /// Write each target's per-step metrics as DIR/<target>.json
    #[arg(long)]
    metrics_dir: Option<PathBuf>,
    /// Targets or groups [default: group default]
    targets: Vec<String>,
}

/// The local name a target's image gets, for the targets that read it (`target:NAME`).
fn local_name(target: &str) -> String {
    format!("bake.localhost/{}:latest", target.to_ascii_lowercase())
}

pub fn run(args: BakeArgs) -> anyhow::Result<ExitCode> {
    let options = rbuild_bake::Options {
        files: args.files.clone(),
        dir: std::env::current_dir().context("reading the current directory")?,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        overrides: args.set.clone(),
        targets: args.targets.clone(),
    };
    let bake = rbuild_bake::load(&options)?;
    if args.print {
        println!("{}", serde_json::to_string_pretty(&bake.to_json())?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.metrics_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Every target's job first: a target that cannot be built stops the bake before any starts.
    let jobs = bake
        .targets
        .iter()
        .map(|target| {
            let read_by_others = bake
                .targets
                .iter()
                .any(|t| t.dependencies().any(|d| d == target.name));
            job(target, read_by_others, &args).with_context(|| format!("target {}", target.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let session = Session::open(&args.store)?.sharing_contexts();
    let display = session.display(args.progress);
    let finished = Finished::default();
    let numbers = Arc::new(AtomicUsize::new(1));
    let built: Vec<anyhow::Result<Descriptor>> = std::thread::scope(|scope| {
        let threads: Vec<_> = bake
            .targets
            .iter()
            .zip(jobs)
            .map(|(target, job)| {
                let progress = Arc::new(TargetProgress::new(
                    &target.name,
                    numbers.clone(),
                    display.progress(),
                ));
                let (session, finished, display) = (&session, &finished, &display);
                scope.spawn(move || {
                    // A panic too must reach the targets waiting for this one.
                    let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        build_target(session, display, finished, target, job, progress)
                    }))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("its build panicked")));
                    // One target failing stops the others, as buildx bake cancels them.
                    if built.is_err() {
                        session.stop();
                    }
                    finished.finish(&target.name, built.is_ok());
                    built.with_context(|| format!("target {}", target.name))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a target's thread panicked")))
            })
            .collect()
    });
    display.finish();
    let mut failed = Vec::new();
    let mut canceled = Vec::new();
    for (target, built) in bake.targets.iter().zip(built) {
        match built {
            Ok(manifest) => println!("{} {}", target.name, manifest.digest),
            Err(e) if was_canceled(&e) => canceled.push(target.name.as_str()),
            Err(e) => failed.push(e),
        }
    }
    if !canceled.is_empty() {
        if failed.is_empty() {
            bail!("canceled: {}", canceled.join(", "));
        }
        eprintln!("canceled, as another target failed: {}", canceled.join(", "));
    }
    match failed.len() {
        0 => Ok(ExitCode::SUCCESS),
        1 => Err(failed.remove(0)),
        n => {
            for e in &failed[1..] {
                eprintln!("error: {e:#}");
            }
            Err(failed.remove(0).context(format!("{n} targets failed")))
        }
    }
}

/// Whether a target's build only ended because another target's failure stopped it.
fn was_canceled(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<BuildError>()
            .is_some_and(BuildError::is_canceled)
    })
}

/// Builds one target once the targets it reads are built, and names its image for the targets
/// that read it.
fn build_target(
    session: &Session,
    display: &display::Display,
    finished: &Finished,
    target: &Target,
    job: Job,
    progress: Arc<TargetProgress>,
) -> anyhow::Result<Descriptor> {
    for dependency in target.dependencies() {
        if !finished.wait(dependency) {
            bail!("target {dependency}, which it reads, failed");
        }
    }
    display.say(format!("building target {}", target.name));
    let manifest = session.run_reporting(job, progress, display)?;
    session
        .store()
        .content
        .set_ref(&local_name(&target.name), &manifest)?;
    Ok(manifest)
}

/// The build a target describes.
fn job(target: &Target, read_by_others: bool, args: &BakeArgs) -> anyhow::Result<Job> {
    let dockerfile_text = match &target.dockerfile_inline {
        Some(text) => text.clone(),
        None => std::fs::read_to_string(&target.dockerfile)
            .with_context(|| format!("reading {}", target.dockerfile.display()))?,
    };
    let platform = match target.platforms.as_slice() {
        [] => "linux/amd64".to_owned(),
        [one] => one.clone(),
        more => bail!("{} platforms: rbuild builds one platform per target", more.len()),
    };
    let mut outputs = Vec::new();
    for spec in &target.outputs {
        // What only other targets read is built and kept in the store.
        if spec != "type=cacheonly" {
            outputs.push(parse_output(spec)?);
        }
    }
    if args.push && !outputs.contains(&Output::Registry) {
        outputs.push(Output::Registry);
    }
    let named_contexts = target
        .contexts
        .iter()
        .map(|(name, source)| {
            let context = match source {
                NamedSource::Dir(dir) => NamedContext::Dir(dir.clone()),
                NamedSource::Image(image) => NamedContext::Image(image.clone()),
                NamedSource::Target(other) => NamedContext::Image(local_name(other)),
                NamedSource::Url(url) if url.starts_with("oci-layout://") => NamedContext::Image(url.clone()),
                NamedSource::Url(url) => {
                    bail!("context {name}={url}: only directories and images are supported")
                }
            };
            Ok((name.clone(), context))
        })
        .collect::<anyhow::Result<_>>()?;
    let secrets: BTreeMap<String, SecretSource> = target
        .secrets
        .iter()
        .map(|secret| {
            let source = match &secret.source {
                rbuild_bake::SecretSource::File(path) => SecretSource::File(path.clone()),
                rbuild_bake::SecretSource::Env(var) => SecretSource::Env(var.clone()),
            };
            (secret.id.clone(), source)
        })
        .collect();
    let ssh = match target.ssh.is_empty() {
        true => None,
        false => Some(PathBuf::from(
            std::env::var_os("SSH_AUTH_SOCK").context("ssh needs an SSH agent: SSH_AUTH_SOCK is not set")?,
        )),
    };
    let mut job = Job {
        request: BuildRequest {
            dockerfile: target.dockerfile.clone(),
            dockerfile_text,
            context: target.context.clone(),
            build_args: target.args.clone(),
            target: target.target.clone(),
            no_cache: target.no_cache,
            pull: target.pull,
            no_cache_filter: target.no_cache_filter.clone(),
            labels: target.labels.clone(),
            platform,
            named_contexts,
            layer_options: LayerOptions {
                compression: Compression::None,
                source_date_epoch: source_date_epoch(
                    target.args.get("SOURCE_DATE_EPOCH").map(String::as_str),
                )?,
                threads: 0,
            },
            secrets,
            ssh,
            network: target.network.clone().unwrap_or_else(|| "default".to_owned()),
            runtime: None,
            snapshotter: None,
            cache_from: parse_all(&target.cache_from)?,
            complete_image: false,
        },
        tags: target
            .tags
            .iter()
            .map(|t| reference(t))
            .collect::<anyhow::Result<_>>()?,
        outputs,
        cache_to: parse_all(&target.cache_to)?,
        shipped: Compression::default(),
        metrics_file: args
            .metrics_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.json", target.name))),
        keep_whole: read_by_others,
    };
    job.request.layer_options.compression = job.layer_compression(false);
    job.check()?;
    Ok(job)
}

fn parse_all<T: std::str::FromStr<Err = String>>(specs: &[String]) -> anyhow::Result<Vec<T>> {
    specs
        .iter()
        .map(|spec| spec.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect()
}
