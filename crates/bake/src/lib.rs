//! `rbuild bake`'s file reading: compose files, `docker-bake.json` and `docker-bake.hcl`
//! turned into resolved, ordered build targets, with the semantics of `docker buildx bake`
//! (buildx's `bake/bake.go`, `bake/compose.go` and `docs/bake-reference.md`): the same default
//! files merged in the same order, groups, `inherits`, variables from the environment, `--set`
//! overrides, and compose services mapped to targets as buildx maps them. Compose strings are
//! interpolated as compose does (`${VAR:-default}`); HCL and JSON are evaluated with the
//! `hcl-rs` crate, without bake's function library.
//!
//! Building the targets is the caller's: this crate only says what to build, in an order
//! where a target comes after every target it reads through a `target:` context.
//!
//! ```no_run
//! let bake = rbuild_bake::load(&rbuild_bake::Options {
//!     dir: std::env::current_dir()?,
//!     env: std::env::vars().collect(),
//!     ..rbuild_bake::Options::default()
//! })?;
//! for target in &bake.targets {
//!     println!("{} from {}", target.name, target.context.display());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod bakefile;
mod compose;
mod config;
mod error;
mod eval;
mod interpolate;
mod print;
mod raw;
mod resolve;
mod set;
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::BakeError;
pub use target::{NamedSource, Secret, SecretSource, Target};

/// The files read when none is named, in merge order; of the compose files only the first
/// found is read, as buildx does.
const COMPOSE_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
const BAKE_FILES: &[&str] = &[
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// What to read and resolve.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Files to read, in merge order (`-f`, repeatable); empty: the default files in `dir`.
    pub files: Vec<PathBuf>,
    /// The directory rbuild runs in: where default files are looked for, and what relative
    /// paths in `--set` values are taken from.
    pub dir: PathBuf,
    /// The environment variables and compose interpolation read.
    pub env: BTreeMap<String, String>,
    /// `--set` values, in order.
    pub overrides: Vec<String>,
    /// Targets or groups to resolve; empty: group `default`.
    pub targets: Vec<String>,
}

/// The resolved build: groups as named, and every target to build, dependencies first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bake {
    /// Every group used, with its members as declared (targets or groups), and `default`
    /// listing (sorted) the names asked for other than `default` itself, as buildx prints
    /// them.
    pub groups: BTreeMap<String, Vec<String>>,
    /// The targets, each after the targets its `target:` contexts name; one only read by
    /// others, not asked for, has output `type=cacheonly`.
    pub targets: Vec<Target>,
}

/// Reads the files `options` names (or the default ones), and resolves its targets.
pub fn load(options: &Options) -> Result<Bake, BakeError> {
    let files = if options.files.is_empty() {
        default_files(&options.dir)
    } else {
        options.files.iter().map(|f| options.dir.join(f)).collect()
    };
    if files.is_empty() {
        return Err(BakeError::NoFiles {
            dir: options.dir.clone(),
        });
    }
    let overrides = options
        .overrides
        .iter()
        .map(|o| set::Override::parse(o, &options.env))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = config::Config::default();
    let mut bake_files = Vec::new();
    let mut compose_env = None;
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|source| BakeError::Read {
            path: path.clone(),
            source,
        })?;
        match Format::of(path, &text) {
            Format::Compose => {
                let env = match &compose_env {
                    Some(env) => env,
                    None => compose_env.insert(compose::environment(&options.env, &options.dir)?),
                };
                compose::read(path, &text, env, &mut config)?;
            }
            Format::Json => bake_files.push(bakefile::parse_json(path, &text)?),
            Format::Hcl => bake_files.push(bakefile::parse_hcl(path, &text)?),
        }
        config.files.push(path.clone());
    }
    eval::read(&bake_files, &options.env, &mut config)?;
    resolve::resolve(&config, &options.targets, &overrides, &options.dir)
}

/// The default files that exist in `dir`, in merge order.
pub fn default_files(dir: &Path) -> Vec<PathBuf> {
    let compose = COMPOSE_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let bake = BAKE_FILES.iter().map(|f| dir.join(f)).filter(|p| p.is_file());
    compose.into_iter().chain(bake).collect()
}

/// How a file is read.
enum Format {
    Compose,
    Json,
    Hcl,
}

impl Format {
    /// By extension; a file named otherwise is JSON if it starts with `{`, HCL if it has a
    /// block or attribute first, else compose.
    fn of(path: &Path, text: &str) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => Format::Compose,
            Some("json") => Format::Json,
            Some("hcl") => Format::Hcl,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ if hcl::parse(text).is_ok_and(|body| body.iter().next().is_some()) => Format::Hcl,
            _ => Format::Compose,
        }
    }
}
