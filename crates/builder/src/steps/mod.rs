//! One module per kind of step that changes the filesystem. Each says what keys the step (its
//! [`Inputs`](crate::keys::Inputs)) and how its files are made, and hands both to
//! [`StepContext::cached_layer`]; the mechanics live below them ([`copy`](crate::copy) selects
//! and lays out files, [`exec`](crate::exec) prepares a RUN's sandbox). Steps that only change
//! the config are applied to the image state here.

mod add;
mod copy;
mod run;
mod workdir;

use std::path::PathBuf;
use std::sync::Arc;

use rbuild_dockerfile::plan::{CopyFrom, StepKind};

use crate::context::Context;
use crate::error::{BuildError, Result};
use crate::metrics::StepMetrics;
use crate::request::NamedContext;
use crate::resolve::BaseImage;
use crate::solve::{Outcome, StageState, StepContext};

/// Solves the step `cx` names.
pub(crate) fn run(
    cx: &StepContext<'_>,
    state: &mut StageState,
    metrics: &mut StepMetrics,
) -> Result<Outcome> {
    match &cx.step.kind {
        StepKind::Workdir { path } => {
            state.image.apply_metadata(&cx.step.kind);
            workdir::workdir(cx, path, state)
        }
        StepKind::Copy(copy) | StepKind::Add(copy) => copy::copy(cx, copy, state, metrics),
        StepKind::Run(run) => run::run(cx, run, state),
        other => {
            state.image.apply_metadata(other);
            Ok(cx.config_only(state))
        }
    }
}

/// What a `--from` (of COPY, ADD or a RUN mount) reads.
enum FromSource<'a> {
    /// A directory build context, and its name.
    Context(&'a Arc<Context>, &'a str),
    /// A finished stage of this build.
    Stage(&'a StageState),
    /// An image, by the reference written.
    Image(&'a BaseImage, &'a str),
}

impl StepContext<'_> {
    /// What `from` names.
    fn read_from<'a>(&'a self, from: &'a CopyFrom) -> Result<FromSource<'a>> {
        let image = |reference: &'a str| {
            let image = self
                .solver
                .sources
                .images
                .get(reference)
                .ok_or_else(|| BuildError::Unresolved(reference.to_owned()))?;
            Ok(FromSource::Image(image, reference))
        };
        match from {
            CopyFrom::Stage { index } => self
                .done
                .get(index)
                .map(|stage| FromSource::Stage(stage))
                .ok_or(BuildError::StageMissing(*index)),
            CopyFrom::Image { reference } => image(reference),
            CopyFrom::Context { name } => match (
                self.solver.sources.named.get(name),
                self.solver.request.named_contexts.get(name),
            ) {
                (Some(context), _) => Ok(FromSource::Context(context, name)),
                (None, Some(NamedContext::Image(reference))) => image(reference),
                _ => Err(BuildError::UnknownContext(name.clone())),
            },
        }
    }

    /// The layer directories (or the directory) `from` names, for RUN mounts.
    fn layers_of(&self, from: &CopyFrom) -> Result<Vec<PathBuf>> {
        Ok(match self.read_from(from)? {
            FromSource::Context(context, _) => vec![context.root().to_owned()],
            FromSource::Stage(stage) => self.view(&stage.image)?.layers().to_vec(),
            FromSource::Image(image, _) => self.view_layers(&image.layers)?.layers().to_vec(),
        })
    }

    /// The main context, for steps that read it.
    fn context(&self) -> Result<&Arc<Context>> {
        self.solver
            .sources
            .context
            .as_ref()
            .ok_or(BuildError::NoContext("COPY"))
    }
}
