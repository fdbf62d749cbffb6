//! Steps planned from Dockerfile text by the real parser and planner, for the unit tests of
//! what carries them out: a test then sees the step exactly as a build would.

use rbuild_dockerfile::plan::{CopyStep, RunStep};
use rbuild_dockerfile::{NoResolver, PlanOptions, StepKind};

/// The step `instruction` (one line, or a heredoc) becomes in a stage `FROM scratch`.
fn step(instruction: &str) -> StepKind {
    let text = format!("FROM scratch\n{instruction}\n");
    let parsed = rbuild_dockerfile::parse(&text).expect("the test's Dockerfile parses");
    let plan = rbuild_dockerfile::plan(&parsed, &PlanOptions::default(), &NoResolver)
        .expect("the test's Dockerfile plans");
    let mut stages = plan.stages;
    let mut steps = stages.pop().expect("one stage").steps;
    steps.pop().expect("one step").kind
}

/// The COPY or ADD step `instruction` plans to.
pub(crate) fn copy_step(instruction: &str) -> CopyStep {
    match step(instruction) {
        StepKind::Copy(copy) | StepKind::Add(copy) => copy,
        other => panic!("{instruction} planned to {other:?}"),
    }
}

/// The RUN step `instruction` plans to.
pub(crate) fn run_step(instruction: &str) -> RunStep {
    match step(instruction) {
        StepKind::Run(run) => run,
        other => panic!("{instruction} planned to {other:?}"),
    }
}
