//! WORKDIR: the directory made when the stage does not have it, owned by the stage's USER, as
//! BuildKit makes it; a layer of its own only then.

use std::collections::BTreeMap;

use rbuild_dockerfile::paths::clean_under_root;

use crate::copy;
use crate::error::Result;
use crate::keys::Inputs;
use crate::owner::{self, Owner};
use crate::solve::{Made, Outcome, StageState, StepContext};

/// Solves `WORKDIR path`.
pub(super) fn workdir(cx: &StepContext<'_>, path: &str, state: &mut StageState) -> Result<Outcome> {
    let view = cx.view(&state.image)?;
    let exists = view.resolve(path, true)?.is_some_and(|f| f.is_dir());
    if path == "/" || exists {
        return Ok(cx.config_only(state));
    }
    let user = &state.image.config.config.user;
    let owner = match user.is_empty() {
        true => None,
        false => Some(owner::resolve(user, &view)?),
    };
    let mut inputs = Inputs::default();
    inputs
        .set("instruction", cx.step.instruction.clone())
        .set("flag:path", path)
        .set(
            "flag:owner",
            owner.map_or("0:0".to_owned(), |o| format!("{}:{}", o.uid, o.gid)),
        )
        .set("parent", state.fs_key.clone());
    let now = cx.solver.now;
    cx.cached_layer(
        inputs,
        None,
        |_| {},
        state,
        || {
            let owner = owner.unwrap_or(Owner::ROOT);
            let path = clean_under_root(path);
            let mut entries = BTreeMap::new();
            entries.insert(
                path.clone(),
                rbuild_layer::Entry {
                    path,
                    kind: rbuild_layer::EntryKind::Dir,
                    mode: 0o755,
                    uid: owner.uid,
                    gid: owner.gid,
                    mtime: now,
                    xattrs: BTreeMap::new(),
                    content_digest: None,
                },
            );
            copy::add_parents(&mut entries, Some(&view), owner, now);
            Ok(Made::entries(entries.into_values().collect()))
        },
    )
}

#[cfg(test)]
mod tests {
    use crate::test_build::{TestBuild, step};

    #[test]
    fn workdir_makes_a_layer_only_for_a_missing_directory() {
        let t = TestBuild::new();
        let output = t.build("FROM scratch AS base\nWORKDIR /app\nFROM base\nWORKDIR /app\nWORKDIR /\n");
        let steps = &output.metrics.steps;
        assert_eq!(
            steps[0].cache, "miss",
            "the first WORKDIR /app makes the directory"
        );
        assert!(steps[0].layer.is_some());
        assert_eq!(steps[1].cache, "none", "the second finds it");
        assert_eq!(steps[2].cache, "none", "/ always exists");
        assert_eq!(output.image.layers.len(), 1);
        assert_eq!(step(&output, "WORKDIR /app").line, 2);
    }
}
