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
                origin_view = solver.view_layers(&image.layers)?;
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
    // with --link, whose layer must not depend on what is below it. It is made only when
    // needed: a hit with numeric (or no) --chown reads none of it, so layers a remote cache
    // gave stay remote.
    let below_layers = match copy.link {
        true => Vec::new(),
        false => state.image.layers.clone(),
    };
    let below_view = std::cell::OnceCell::new();
    let below = || -> Result<Option<&RootfsView>> {
        if below_layers.is_empty() {
            return Ok(None);
        }
        if let Some(view) = below_view.get() {
            return Ok(Some(view));
        }
        let view = solver.view_layers(&below_layers)?;
        Ok(Some(below_view.get_or_init(|| view)))
    };
    let owner = match &copy.chown {
        Some(spec) if owner::is_numeric(spec) => Some(owner::resolve(spec, &RootfsView::default())?),
        Some(spec) => Some(owner::resolve(spec, below()?.unwrap_or(&RootfsView::default()))?),
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
            below: below()?,
            now,
        };
        Ok(Made::entries(copy::entries(selection, &layout)?))
    })
}
