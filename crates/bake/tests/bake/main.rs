//! rbuild-bake on the files of `fixtures/bake/`: each format, override files, `--set`,
//! interpolation, and the errors bad input gives.

mod compose;
mod errors;
mod files;
mod set;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rbuild_bake::{Bake, BakeError, Options, Target};

/// `fixtures/bake/<case>`, absolute.
pub fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/bake")
        .join(case)
        .canonicalize()
        .unwrap()
}

/// An environment of `pairs` only.
pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Loads from `dir` (its default files unless `files` are named).
pub fn load(
    dir: &Path,
    files: &[&str],
    targets: &[&str],
    set: &[&str],
    env: &[(&str, &str)],
) -> Result<Bake, BakeError> {
    rbuild_bake::load(&Options {
        files: files.iter().map(PathBuf::from).collect(),
        dir: dir.to_owned(),
        env: self::env(env),
        overrides: set.iter().map(|s| s.to_string()).collect(),
        targets: targets.iter().map(|s| s.to_string()).collect(),
    })
}

/// The target called `name`.
pub fn target<'a>(bake: &'a Bake, name: &str) -> &'a Target {
    bake.targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

/// The targets' names, in order.
pub fn names(bake: &Bake) -> Vec<&str> {
    bake.targets.iter().map(|t| t.name.as_str()).collect()
}

/// A map of string pairs.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    env(pairs)
}
