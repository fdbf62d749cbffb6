//! COPY and ADD: the sources selected from where `--from` points (the context by default),
//! keyed by the digest of what was selected, and laid out at the destination. What only ADD
//! does — URLs, archives, refusing git — is in [`add`](super::add).

use rbuild_dockerfile::plan::{CopyStep, StepKind};

use super::{FromSource, add};
use crate::copy::{self, Layout, Origin};
use crate::error::Result;
use crate::keys::Inputs;
use crate::metrics::StepMetrics;
use crate::owner;
use crate::rootfs::RootfsView;
use crate::solve::{Made, Outcome, StageState, StepContext};

/// Solves a COPY or an ADD.
pub(super) fn copy(
    cx: &StepContext<'_>,
    copy: &CopyStep,
    state: &mut StageState,
    metrics: &mut StepMetrics,
) -> Result<Outcome> {
    let is_add = matches!(cx.step.kind, StepKind::Add(_));
    add::refuse_git(copy)?;
    let solver = cx.solver;
    // Where the sources come from, and the key of that origin.
    let origin_view;
    let (origin, origin_key) = match &copy.from {
        None => (Origin::Context(cx.context()?), "context".to_owned()),
        Some(from) => match cx.read_from(from)? {
            FromSource::Context(context, name) => (Origin::Context(context), format!("context {name}")),
            FromSource::Stage(stage) => {
                origin_view = solver.view(&stage.image)?;
                let origin = Origin::Rootfs {
                    view: &origin_view,
                    name: "the source stage",
                };
                (origin, format!("stage {}", stage.fs_key))
            }
            FromSource::Image(image, reference) => {
                origin_view = solver
                    .store
                    .snapshots
                    .view(&image.layers, &solver.store.content)?;
                let origin = Origin::Rootfs {
                    view: &origin_view,
                    name: reference,
                };
                (origin, format!("image {}", image.digest))
            }
        },
    };
    let mut selection = copy::select(copy, &origin)?;
    selection.roots.extend(add::download_urls(cx, copy)?);
    metrics.bytes_hashed = match copy.from {
        None => 0,
        Some(_) => selection.bytes()?,
    };

    // The stage's filesystem is needed for --chown names and to place the files, except
    // with --link, whose layer must not depend on what is below it.
    let below = if copy.link || state.image.layers.is_empty() {
        None
    } else {
        Some(solver.view(&state.image)?)
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
        .set("instruction", cx.step.instruction.clone())
        .set("flag:dest", copy.dest_path.clone())
        .set(
            "flag:owner",
            owner.map_or("-".to_owned(), |o| format!("{}:{}", o.uid, o.gid)),
        )
        .set("flag:from", origin_key);
    if !copy.link {
        inputs.set("parent", state.fs_key.clone());
    }
    inputs.set("files", selection.digest()?.to_string());
    let details = |inputs: &mut Inputs| {
        if let Ok(listing) = selection.listing() {
            inputs.set_details("files", listing);
        }
    };
    let now = solver.now;
    cx.cached_layer(inputs, details, state, || {
        let unpacked;
        let selection = if is_add {
            unpacked = add::unpack_archives(cx, selection.clone(), copy.unpack)?;
            &unpacked
        } else {
            &selection
        };
        let layout = Layout {
            step: copy,
            owner,
            below: below.as_ref(),
            now,
        };
        Ok(Made::entries(copy::entries(selection, &layout)?))
    })
}
