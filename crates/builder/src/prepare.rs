//! From a request to what the solver reads: the Dockerfile parsed and planned, the images it
//! names resolved, the context walked once and only the files COPY/ADD select hashed.
//!
//! The Dockerfile is planned twice: once to learn which base images it names, and, once they
//! are resolved, again with their configs — so that `ENV PATH=$PATH:/x` sees the base's
//! `PATH` and the base's ONBUILD triggers run. Images only `COPY --from` names are resolved
//! after the second plan, which is the one that expands their names. The context is walked and
//! hashed meanwhile, on other threads, for the files the first plan reads; the second plan's
//! roots are hashed after (those are the same but for what a base image's ONBUILD or ENV adds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rbuild_dockerfile::plan::{Base, CopyFrom, Plan, Stage, StepKind};
use rbuild_dockerfile::run_flags::MountType;
use rbuild_dockerfile::{BaseImageInfo, Dockerfile, ImageResolver, PlanOptions};

use crate::context::{self, Context, Contexts};
use crate::copy;
use crate::error::{BuildError, Result};
use crate::progress::Progress;
use crate::remote::Remote;
use crate::remote_cache::RemoteCaches;
use crate::request::{BuildRequest, NamedContext};
use crate::resolve::{BaseImage, Resolver};
use crate::store::LocalStore;

/// What a build reads besides its steps: the contexts and the images, resolved.
#[derive(Clone)]
pub(crate) struct Sources {
    /// The main context, when a step reads from it.
    pub context: Option<Arc<Context>>,
    /// `--build-context` directories, by name.
    pub named: HashMap<String, Arc<Context>>,
    /// Every image the plan names, by the reference as written.
    pub images: HashMap<String, BaseImage>,
    /// The remote caches read (`--cache-from`).
    pub caches: Arc<RemoteCaches>,
}

/// A prepared build.
pub(crate) struct Prepared {
    /// The plan, made with the base images' configs.
    pub plan: Plan,
    /// What its steps read.
    pub inputs: Sources,
    /// Bytes read to hash the context.
    pub context_bytes_hashed: u64,
    /// Files in the context after `.dockerignore`.
    pub context_files: usize,
    /// Caches that could not be read.
    pub warnings: Vec<String>,
}

/// Prepares `request`: see the module documentation. Its directories are walked through
/// `contexts`, once for all the builds that share it.
pub(crate) async fn prepare(
    request: &BuildRequest,
    store: &LocalStore,
    remote: &dyn Remote,
    progress: &dyn Progress,
    contexts: &Contexts,
) -> Result<Prepared> {
    let dockerfile_name = request.dockerfile.display().to_string();
    let parsed = rbuild_dockerfile::parse(&request.dockerfile_text).map_err(|error| BuildError::Parse {
        file: dockerfile_name.clone(),
        error: Box::new(error),
    })?;
    let ignore_file = context::dockerignore_file(&request.dockerfile, &request.context);
    let ignore = context::read_dockerignore(&request.dockerfile, &request.context)?;
    let platform = request.target_platform();
    let resolver = Resolver {
        store,
        remote,
        platform: &platform,
        pull: request.pull,
        progress,
    };
    let mut options = PlanOptions {
        build_args: request.build_args.clone(),
        target: request.target.clone(),
        target_platform: request.platform.clone(),
        build_platform: request.platform.clone(),
        named_contexts: request.named_contexts.keys().cloned().collect(),
        ..PlanOptions::default()
    };
    let (first, wanted) = first_plan(&parsed, &options, &dockerfile_name)?;

    // The context is walked and the files the first plan's steps read are hashed on other
    // threads while the images resolve and the caches load: on a runner with an empty store
    // the hashing is most of the work, and the rest mostly waits on the network.
    let hashing = uses_context(&first).then(|| {
        let (dir, plan, contexts) = (request.context.clone(), first.clone(), contexts.clone());
        let (ignore_file, ignore) = (ignore_file.clone(), ignore.clone());
        let (stat_cache, name) = (store.stat_cache.clone(), dockerfile_name.clone());
        tokio::task::spawn_blocking(move || -> Result<(Arc<Context>, u64)> {
            let context = contexts.walk(&dir, ignore_file, ignore)?;
            // The final plan says which roots count; a guess it cannot make costs nothing.
            let roots = context_roots(&plan, &context, &name).unwrap_or_default();
            let hashed = context.hash(&roots, &stat_cache)?;
            Ok((context, hashed))
        })
    });
    let resolving = async {
        // Base images and image build contexts, fetched concurrently. One that cannot be
        // fetched is reported at its FROM line.
        let wanted = wanted
            .into_iter()
            .chain(request.named_contexts.values().filter_map(|named| match named {
                NamedContext::Image(reference) => Some(reference.clone()),
                NamedContext::Dir(_) => None,
            }));
        let mut images = resolver.all(wanted.collect()).await.map_err(|(reference, e)| {
            match from_line(&first, &request.dockerfile_text, &reference) {
                Some((line, text)) => e.at(&dockerfile_name, line, &text),
                None => e,
            }
        })?;
        options.dockerignore = ignore.clone();
        let plan = rbuild_dockerfile::plan(&parsed, &options, &Known(&images)).map_err(|error| {
            BuildError::Plan {
                file: dockerfile_name.clone(),
                error: Box::new(error),
            }
        })?;
        images.extend(
            resolver
                .all(copied_images(&plan.stages))
                .await
                .map_err(|(_, e)| e)?,
        );
        Ok::<_, BuildError>((plan, images))
    };
    let caches = RemoteCaches::load(&request.cache_from, remote, store);
    let (resolved, (caches, warnings)) = futures_util::future::join(resolving, caches).await;
    let (plan, images) = resolved?;

    let (context, context_bytes_hashed, context_files) = if uses_context(&plan) {
        let (context, guessed) = match hashing {
            Some(hashing) => hashing
                .await
                .map_err(|e| BuildError::io("hashing the context", std::io::Error::other(e.to_string())))??,
            None => (contexts.walk(&request.context, ignore_file, ignore)?, 0),
        };
        let roots = context_roots(&plan, &context, &dockerfile_name)?;
        let hashed = guessed + context.hash(&roots, &store.stat_cache)?;
        let files = context.descendants("").len();
        if let Err(e) = store.stat_cache.save() {
            tracing::warn!("could not save the stat cache: {e}");
        }
        (Some(context), hashed, files)
    } else {
        (None, 0, 0)
    };
    let mut named = HashMap::new();
    for (name, source) in &request.named_contexts {
        if let NamedContext::Dir(dir) = source {
            let context = contexts.walk(dir, None, None)?;
            context.hash(&[String::new()], &store.stat_cache)?;
            named.insert(name.clone(), context);
        }
    }
    Ok(Prepared {
        plan,
        inputs: Sources {
            context,
            named,
            images,
            caches: Arc::new(caches),
        },
        context_bytes_hashed,
        context_files,
        warnings,
    })
}

/// Plans without images, to learn which images the Dockerfile names (references as planned,
/// build arguments expanded).
fn first_plan(
    parsed: &Dockerfile,
    options: &PlanOptions,
    dockerfile_name: &str,
) -> Result<(Plan, Vec<String>)> {
    let recorder = Recorder::default();
    let plan = rbuild_dockerfile::plan(parsed, options, &recorder).map_err(|error| BuildError::Plan {
        file: dockerfile_name.to_owned(),
        error: Box::new(error),
    })?;
    let wanted = recorder.0.into_inner().unwrap_or_default();
    Ok((plan, wanted))
}

/// The line and text of the FROM that names `reference`.
fn from_line(plan: &Plan, dockerfile_text: &str, reference: &str) -> Option<(usize, String)> {
    let stage = plan
        .stages
        .iter()
        .find(|stage| matches!(&stage.base, Base::Image { reference: r, .. } if r == reference))?;
    let line = stage.span.start_line;
    let text = dockerfile_text
        .lines()
        .nth(line.checked_sub(1)?)?
        .trim()
        .to_owned();
    Some((line, text))
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

/// Whether a step reads the main context (COPY/ADD without `--from`, a bind mount of it).
fn uses_context(plan: &Plan) -> bool {
    plan.stages
        .iter()
        .flat_map(|s| &s.steps)
        .any(|step| match &step.kind {
            StepKind::Copy(c) | StepKind::Add(c) => c.from.is_none(),
            StepKind::Run(run) => run
                .mounts
                .iter()
                .any(|m| m.from.is_none() && m.kind == MountType::Bind),
            _ => false,
        })
}

/// The context paths the plan's steps read, so that only they are hashed.
fn context_roots(plan: &Plan, context: &Context, dockerfile_name: &str) -> Result<Vec<String>> {
    let mut roots = Vec::new();
    for step in plan.stages.iter().flat_map(|s| &s.steps) {
        match &step.kind {
            StepKind::Copy(c) | StepKind::Add(c) if c.from.is_none() => {
                let located = |e: BuildError| e.at(dockerfile_name, step.span.start_line, &step.instruction);
                roots.extend(copy::context_roots(c, context).map_err(located)?);
            }
            StepKind::Run(run) => {
                for mount in run
                    .mounts
                    .iter()
                    .filter(|m| m.from.is_none() && m.kind == MountType::Bind)
                {
                    roots.push(context::clean_source(mount.source.as_deref().unwrap_or("/"))?);
                }
            }
            _ => {}
        }
    }
    Ok(roots)
}

/// A plan-time resolver that only remembers which images were asked for.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl ImageResolver for Recorder {
    fn image_config(&self, reference: &str, _platform: &str) -> Option<BaseImageInfo> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push(reference.to_owned());
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

#[cfg(test)]
mod tests {
    use rbuild_dockerfile::NoResolver;

    use super::*;

    fn plan(text: &str) -> Plan {
        let parsed = rbuild_dockerfile::parse(text).expect("parses");
        rbuild_dockerfile::plan(&parsed, &PlanOptions::default(), &NoResolver).expect("plans")
    }

    #[test]
    fn the_first_plan_asks_for_the_bases_the_target_needs_with_arguments_expanded() {
        let text = "ARG V=1\nFROM alpine:$V AS a\nFROM unused:2 AS b\nFROM a\nCOPY --from=img:3 / /\n";
        let parsed = rbuild_dockerfile::parse(text).expect("parses");
        let (_, mut wanted) = first_plan(&parsed, &PlanOptions::default(), "Dockerfile").expect("plans");
        // The planner may ask more than once; the resolver fetches each image once.
        wanted.dedup();
        assert_eq!(wanted, ["alpine:1"]);
    }

    #[test]
    fn copied_images_are_the_from_references_that_are_not_stages() {
        let plan = plan(
            "FROM scratch AS a\nCOPY x /x\nFROM scratch\nCOPY --from=a /x /y\nCOPY --from=img:1 /z /z\n",
        );
        assert_eq!(copied_images(&plan.stages), ["img:1"]);
    }

    #[test]
    fn the_context_is_read_by_plain_copies_and_context_binds_only() {
        assert!(uses_context(&plan("FROM scratch\nCOPY a /a\n")));
        assert!(uses_context(&plan(
            "FROM scratch\nRUN --mount=type=bind,target=/src true\n"
        )));
        assert!(!uses_context(&plan(
            "FROM scratch AS a\nFROM scratch\nCOPY --from=a / /\n"
        )));
        assert!(!uses_context(&plan(
            "FROM scratch\nRUN --mount=type=cache,target=/c true\n"
        )));
    }

    #[test]
    fn a_failing_base_is_found_at_its_from_line() {
        let text = "FROM scratch\n\n  FROM busybox:1 AS b  \n";
        let plan = plan(text);
        assert_eq!(
            from_line(&plan, text, "busybox:1"),
            Some((3, "FROM busybox:1 AS b".to_owned()))
        );
        assert_eq!(from_line(&plan, text, "other"), None);
    }
}
