//! One stage, start to end: the state its base gives (scratch, an image, another stage), then
//! its steps in order, each reported to the progress display and measured for the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rbuild_dockerfile::plan::{Base, Stage};

use crate::error::{BuildError, Result};
use crate::image::ImageState;
use crate::metrics::StepMetrics;
use crate::progress::Event;
use crate::request::NamedContext;
use crate::solve::{Outcome, Solver, StageState, StepContext};
use crate::steps;

/// Runs `stage`'s steps, `done` holding the stages it reads from.
pub(crate) fn run(
    solver: &Solver,
    stage: &Stage,
    done: &HashMap<usize, Arc<StageState>>,
) -> Result<StageState> {
    let mut state = base_state(solver, stage, done)
        .map_err(|e| e.at(&solver.dockerfile_name, stage.span.start_line, "FROM"))?;
    // The base's ONBUILD triggers are this stage's first steps (the plan put them there).
    // Having run, they leave the image, as docker and BuildKit do: a child of this image
    // runs only the triggers this stage itself adds.
    state.image.config.config.on_build = None;
    for (position, step) in stage.steps.iter().enumerate() {
        if solver.stop.is_stopped() {
            return Err(BuildError::Canceled);
        }
        let cx = StepContext {
            solver,
            stage,
            step,
            position,
            id: format!("{}#{}#{}", solver.dockerfile_name, stage.index, position),
            label: solver.label(stage, position),
            done,
            fetched: Default::default(),
        };
        solver.record(run_step(&cx, &mut state)?);
    }
    Ok(state)
}

/// The state a stage starts from: its base's.
fn base_state(solver: &Solver, stage: &Stage, done: &HashMap<usize, Arc<StageState>>) -> Result<StageState> {
    let from_image = |reference: &str| {
        let image = solver
            .sources
            .images
            .get(reference)
            .ok_or_else(|| BuildError::Unresolved(reference.to_owned()))?;
        Ok(StageState {
            image: ImageState::from_base(image.config.clone(), image.layers.clone()),
            fs_key: format!("image {}", image.digest),
        })
    };
    match &stage.base {
        Base::Scratch => Ok(StageState {
            image: ImageState::scratch(&solver.platform.os, &solver.platform.architecture),
            fs_key: "scratch".to_owned(),
        }),
        Base::Image { reference, .. } => from_image(reference),
        Base::Stage { index } => done
            .get(index)
            .map(|parent| StageState::clone(parent))
            .ok_or(BuildError::StageMissing(*index)),
        Base::Context { name } => match solver.request.named_contexts.get(name) {
            Some(NamedContext::Image(reference)) => from_image(reference),
            _ => Err(BuildError::ContextAsBase(name.clone())),
        },
    }
}

/// Runs the step, reporting it; returns its numbers.
fn run_step(cx: &StepContext<'_>, state: &mut StageState) -> Result<StepMetrics> {
    let progress = &cx.solver.progress;
    progress.event(Event::Started(cx.label.clone()));
    let started = Instant::now();
    let mut metrics = StepMetrics {
        step: cx.label.number,
        stage: cx.label.stage.clone(),
        instruction: cx.step.instruction.clone(),
        line: cx.step.span.start_line,
        ..StepMetrics::default()
    };
    let outcome = steps::run(cx, state, &mut metrics)
        .inspect_err(|e| {
            let event = if e.is_canceled() {
                Event::Canceled
            } else {
                Event::Failed
            };
            progress.event(event(cx.label.clone(), started.elapsed()));
        })
        .map_err(|e| {
            e.at(
                &cx.solver.dockerfile_name,
                cx.step.span.start_line,
                &cx.step.instruction,
            )
        })?;
    match outcome {
        Outcome::Config => metrics.cache = "none".to_owned(),
        Outcome::Hit { from } => {
            metrics.cache = "hit".to_owned();
            progress.event(Event::Cached(cx.label.clone(), from.clone()));
            metrics.cache_from = from;
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
    if let Some(layer) = state.image.layers.last().filter(|_| metrics.cache != "none") {
        metrics.layer = Some(layer.descriptor.digest.to_string());
        metrics.layer_size = layer.descriptor.size;
    }
    let elapsed = started.elapsed();
    metrics.duration_ms = elapsed.as_secs_f64() * 1000.0;
    metrics.bytes_fetched = cx.fetched.load(std::sync::atomic::Ordering::Relaxed);
    progress.event(Event::Finished(cx.label.clone(), elapsed));
    Ok(metrics)
}
