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

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rbuild_dockerfile::plan::Plan;
use rbuild_oci::Descriptor;
use rbuild_runtime::Stop;

use crate::context::Contexts;
use crate::error::Result;
use crate::export;
use crate::metrics::BuildMetrics;
use crate::prepare::{self, Sources};
use crate::progress::Progress;
use crate::remote::Remote;
use crate::request::{BuildOutput, BuildRequest};
use crate::schedule;
use crate::solve::{Shared, Solver, StageState};
use crate::store::LocalStore;

/// Builds images. The builds one builder runs at the same time (`rbuild bake`'s targets)
/// share its store and cache, the steps in flight — a step two of them reach at once is built
/// by one while the other waits for its result — and, if asked, the contexts they walked.
pub struct Builder {
    shared: Shared,
    contexts: Contexts,
    /// The parent of every build's [`Stop`].
    stop: Stop,
}

impl Builder {
    /// A builder over a local store, fetching base images and downloads from `remote`.
    pub fn new(store: LocalStore, remote: Arc<dyn Remote>) -> Builder {
        Builder {
            shared: Shared {
                store: Arc::new(store),
                remote,
                flights: Arc::default(),
            },
            contexts: Contexts::default(),
            stop: Stop::new(),
        }
    }

    /// This builder with its builds sharing contexts (see [`Contexts::shared`]): for a batch of
    /// builds over directories that do not change while it runs.
    pub fn sharing_contexts(self) -> Builder {
        Builder {
            contexts: Contexts::shared(),
            ..self
        }
    }

    /// Stops every build this builder runs, now and later: their running commands are killed
    /// and no further step starts (they fail with
    /// [`BuildError::Canceled`](crate::error::BuildError::Canceled)). What `rbuild
    /// bake` does once one target failed, as BuildKit cancels the others.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The local store.
    pub fn store(&self) -> &LocalStore {
        &self.shared.store
    }

    /// Builds `request`, reporting to `progress`.
    pub async fn build(&self, request: BuildRequest, progress: Arc<dyn Progress>) -> Result<BuildOutput> {
        let started = Instant::now();
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let prepared = prepare::prepare(
            &request,
            &self.shared.store,
            self.shared.remote.as_ref(),
            progress.as_ref(),
            &self.contexts,
        )
        .await?;
        let plan = prepared.plan;
        let mut metrics = BuildMetrics {
            started_ms,
            context_bytes_hashed: prepared.context_bytes_hashed,
            context_files: prepared.context_files,
            ..BuildMetrics::default()
        };
        let mut warnings = prepared.warnings;
        let (solver, target) = self
            .solve(&request, &prepared.inputs, &plan, progress, &mut warnings)
            .await?;
        let target_index = plan.target_stage().map_or(0, |s| s.index);

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
        let image = export::write_image(&state, Some(&created), &self.shared.store.content)?;

        metrics.steps = solver.step_metrics();
        metrics.cache_hits = metrics.steps.iter().filter(|s| s.cache == "hit").count();
        metrics.cache_misses = metrics.steps.iter().filter(|s| s.cache == "miss").count();
        metrics.cache_bytes_fetched = metrics.steps.iter().map(|s| s.bytes_fetched).sum();
        metrics.image = image.manifest.digest.to_string();
        metrics.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !plan.unused_build_args.is_empty() {
            warnings.push(format!(
                "one or more build args were not consumed: [{}]",
                plan.unused_build_args.join(" ")
            ));
        }
        Ok(BuildOutput {
            image,
            metrics,
            warnings,
            steps: solver.step_records(&plan.stages, target_index),
            caches: solver.sources.caches.clone(),
        })
    }

    /// Runs the stages of `plan` to the target's state (with every layer in the store when
    /// the request asks for the image whole). A layer a remote cache gave that turns out
    /// unusable when a step or the image needs its files is a warning, and the stages run
    /// again: the steps it came from now miss, those built meanwhile hit the store, so a
    /// broken cache never fails a build. Each round loses at least one more of the caches'
    /// layers, so this ends.
    async fn solve(
        &self,
        request: &BuildRequest,
        inputs: &Sources,
        plan: &Plan,
        progress: Arc<dyn Progress>,
        warnings: &mut Vec<String>,
    ) -> Result<(Arc<Solver>, Arc<StageState>)> {
        loop {
            // Each attempt stops on its own: the stages of one that lost a cached layer are
            // stopped, and the next attempt runs.
            let solver = Arc::new(Solver::new(
                &self.shared,
                request.clone(),
                inputs.clone(),
                &plan.stages,
                progress.clone(),
                self.stop.child(),
            ));
            let caches = &solver.sources.caches;
            let lost = caches.lost().len();
            let solved = match schedule::run(&solver, plan).await {
                Ok(target) if request.complete_image => {
                    let layers: Vec<Descriptor> =
                        target.image.layers.iter().map(|l| l.descriptor.clone()).collect();
                    let fetch =
                        caches.fetch_missing(&layers, &self.shared.store, self.shared.remote.as_ref());
                    fetch.await.map(|_| target)
                }
                solved => solved,
            };
            match solved {
                Ok(target) => return Ok((solver, target)),
                Err(_) if caches.lost().len() > lost => {
                    for layer in &caches.lost()[lost..] {
                        warnings.push(format!("{layer}; building the steps it came from"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
