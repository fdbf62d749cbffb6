//! The build as a graph of stages. Every stage runs as a task of its own that waits only for
//! the stages it reads from — its base, `COPY --from`, `RUN --mount=from=` — so independent
//! stages build at the same time, and a stage several others read is built once. When a stage
//! fails, the others are stopped (the solver's [`Stop`](rbuild_runtime::Stop)), and the build
//! ends with the first failure, not with a stage that was stopped because of it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use rbuild_dockerfile::plan::{Base, CopyFrom, Plan, Stage, StepKind};

use crate::error::{BuildError, Result};
use crate::solve::{Solver, StageState};

type StageFuture = Shared<BoxFuture<'static, std::result::Result<Arc<StageState>, Arc<BuildError>>>>;

/// Runs the plan's stages and returns the target's, once every stage has ended.
pub(crate) async fn run(solver: &Arc<Solver>, plan: &Plan) -> Result<Arc<StageState>> {
    let mut futures: HashMap<usize, StageFuture> = HashMap::new();
    let first_failure: Arc<Mutex<Option<Arc<BuildError>>>> = Arc::default();
    // The plan lists a stage after every stage it reads from.
    for stage in &plan.stages {
        let deps: Vec<(usize, StageFuture)> = dependencies(stage)
            .into_iter()
            .filter_map(|i| futures.get(&i).map(|f| (i, f.clone())))
            .collect();
        let (solver, first_failure) = (solver.clone(), first_failure.clone());
        let index = stage.index;
        let stage = stage.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Handle::current();
            let mut done = HashMap::new();
            for (index, dep) in deps {
                done.insert(index, runtime.block_on(dep)?);
            }
            crate::stage::run(&solver, &stage, &done)
                .map(Arc::new)
                .map_err(|e| {
                    let e = Arc::new(e);
                    if !e.is_canceled() {
                        first_failure
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .get_or_insert_with(|| e.clone());
                        solver.stop.stop();
                    }
                    e
                })
        });
        let future = async move { handle.await.map_err(|e| Arc::new(BuildError::TaskFailed(e)))? }
            .boxed()
            .shared();
        futures.insert(index, future);
    }
    let target = plan.target_stage().ok_or(BuildError::NoStages)?;
    let target = futures
        .get(&target.index)
        .cloned()
        .ok_or(BuildError::StageMissing(target.index))?;
    // Stopped stages end quickly; waiting for them leaves no command running and no mount
    // behind when the build returns.
    futures_util::future::join_all(futures.into_values()).await;
    let first_failure = first_failure
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    target.await.map_err(|e| {
        let e = match first_failure {
            Some(first) if e.is_canceled() => first,
            _ => e,
        };
        Arc::try_unwrap(e).unwrap_or_else(BuildError::Shared)
    })
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

#[cfg(test)]
mod tests {
    use rbuild_dockerfile::{NoResolver, PlanOptions};

    use super::*;

    #[test]
    fn a_stage_depends_on_its_base_its_copies_and_its_mounts() {
        let text = "\
FROM scratch AS base
FROM scratch AS tools
FROM scratch AS assets
FROM base AS app
COPY --from=tools /t /t
RUN --mount=type=bind,from=assets,target=/a true
COPY --from=img:1 /i /i
";
        let parsed = rbuild_dockerfile::parse(text).expect("parses");
        let options = PlanOptions {
            target: Some("app".to_owned()),
            ..PlanOptions::default()
        };
        let plan = rbuild_dockerfile::plan(&parsed, &options, &NoResolver).expect("plans");
        let app = plan.target_stage().expect("target");
        assert_eq!(dependencies(app), HashSet::from([0, 1, 2]));
        for stage in plan.stages.iter().filter(|s| s.index != app.index) {
            assert!(dependencies(stage).is_empty(), "stage {}", stage.index);
        }
    }
}
