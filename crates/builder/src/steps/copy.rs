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
    let source = copy.from.as_ref().map(|from| cx.read_from(from)).transpose()?;
    // Where the sources come from, named for the key.
    let origin_key = match &source {
        None => "context".to_owned(),
        Some(FromSource::Context(_, name)) => format!("context {name}"),
        Some(FromSource::Stage(stage)) => format!("stage {}", stage.fs_key),
        Some(FromSource::Image(image, _)) => format!("image {}", image.digest),
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
        let view = cx.view_layers(&below_layers)?;
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

    // A copy from a stage or an image has a second key, by where it copies from (the stage's
    // key, the image's digest) rather than by the files: a hit by it reads none of them, so a
    // stage a remote cache gave is not fetched only to copy from it.
    let alias = match &source {
        Some(FromSource::Stage(_) | FromSource::Image(..)) if !has_urls(copy) => {
            let mut by_origin = inputs.clone();
            by_origin.set("files", "as the origin named");
            Some(by_origin.key())
        }
        _ => None,
    };
    if let Some(alias) = &alias
        && let Some(outcome) = cx.alias_hit(alias, state)?
    {
        return Ok(outcome);
    }

    let origin_view;
    let origin = match &source {
        None => Origin::Context(cx.context()?),
        Some(FromSource::Context(context, _)) => Origin::Context(context),
        Some(FromSource::Stage(stage)) => {
            origin_view = cx.view(&stage.image)?;
            Origin::Rootfs {
                view: &origin_view,
                name: "the source stage",
            }
        }
        Some(FromSource::Image(image, reference)) => {
            origin_view = cx.view_layers(&image.layers)?;
            Origin::Rootfs {
                view: &origin_view,
                name: reference,
            }
        }
    };
    let mut selection = copy::select(copy, &origin)?;
    selection.roots.extend(add::download_urls(cx, copy)?);
    metrics.bytes_hashed = match copy.from {
        None => 0,
        Some(_) => selection.bytes()?,
    };
    inputs.set("files", selection.digest()?.to_string());
    let details = |inputs: &mut Inputs| {
        if let Ok(listing) = selection.listing() {
            inputs.set_details("files", listing);
        }
    };
    let now = solver.now;
    cx.cached_layer(inputs, alias.as_ref(), details, state, || {
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

/// Whether an ADD names URLs (whose content, downloaded each build, decides the key).
fn has_urls(copy: &CopyStep) -> bool {
    copy.sources
        .iter()
        .any(|s| matches!(s, rbuild_dockerfile::plan::Source::Url { .. }))
}

#[cfg(test)]
mod tests {
    use crate::test_build::{TestBuild, located, step};

    #[test]
    fn a_copy_from_a_cached_stage_hits_by_the_stages_key_without_reading_its_files() {
        let t = TestBuild::new();
        t.file("big.bin", &"x".repeat(100_000));
        let text =
            "FROM scratch AS data\nCOPY big.bin /big.bin\nFROM scratch\nCOPY --from=data /big.bin /copied\n";
        let first = t.build(text);
        let copy = step(&first, "COPY --from=data");
        assert_eq!((copy.cache.as_str(), copy.bytes_hashed), ("miss", 100_000));
        let second = t.build(text);
        let copy = step(&second, "COPY --from=data");
        assert_eq!(
            (copy.cache.as_str(), copy.bytes_hashed),
            ("hit", 0),
            "no file of the stage was read"
        );
        assert_eq!(second.image.manifest.digest, first.image.manifest.digest);
    }

    #[test]
    fn a_missing_source_is_an_error_naming_it() {
        let t = TestBuild::new();
        let error = t
            .build_with("FROM scratch\nCOPY nope /\n", |_| {})
            .err()
            .expect("fails");
        let (line, cause) = located(&error);
        assert_eq!(line, 2);
        assert!(
            matches!(cause, crate::BuildError::SourceNotFound(p) if p == "nope"),
            "{cause}"
        );
    }
}
