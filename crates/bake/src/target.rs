//! The resolved build targets bake files describe, and the value grammars they share: named
//! contexts, secrets, cache entries (buildx's CSV form).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One image to build, every attribute resolved: inherits applied, variables substituted,
/// `--set` overrides applied, paths made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The target's name (a compose service's, with `.` turned into `_`).
    pub name: String,
    /// The build context directory, resolved against the directory of the file that set it.
    pub context: PathBuf,
    /// The Dockerfile, resolved against the context (default `Dockerfile`).
    pub dockerfile: PathBuf,
    /// A Dockerfile given inline; when set, [`Target::dockerfile`] is not read.
    pub dockerfile_inline: Option<String>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// The stage to build (`--target`).
    pub target: Option<String>,
    /// Image names to tag.
    pub tags: Vec<String>,
    /// Labels added to the image.
    pub labels: BTreeMap<String, String>,
    /// Caches to import, in buildx's CSV form (`type=registry,ref=…`).
    pub cache_from: Vec<String>,
    /// Caches to export, in buildx's CSV form.
    pub cache_to: Vec<String>,
    /// Named build contexts (`--build-context`).
    pub contexts: BTreeMap<String, NamedSource>,
    /// Secrets RUN steps may mount.
    pub secrets: Vec<Secret>,
    /// SSH agent sockets or keys RUN steps may use (`default`, `id=path`).
    pub ssh: Vec<String>,
    /// Build without the cache.
    pub no_cache: bool,
    /// Stages built without the cache.
    pub no_cache_filter: Vec<String>,
    /// Ask the registry for base images every time.
    pub pull: bool,
    /// Platforms to build for.
    pub platforms: Vec<String>,
    /// Where the image goes, in buildx's CSV form (`type=registry`, `type=docker,dest=…`).
    pub outputs: Vec<String>,
    /// The network RUN steps get (`default`, `none`).
    pub network: Option<String>,
}

impl Target {
    /// The targets this one reads through `target:` contexts, which must be built first.
    pub fn dependencies(&self) -> impl Iterator<Item = &str> {
        self.contexts.values().filter_map(|source| match source {
            NamedSource::Target(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

/// What a named build context (`contexts`, compose's `additional_contexts`) points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedSource {
    /// A local directory, resolved against the directory of the file that named it.
    Dir(PathBuf),
    /// An image (`docker-image://REF`).
    Image(String),
    /// Another target's result (`target:NAME`; compose's `service:NAME`).
    Target(String),
    /// Any other URL (git, https, `oci-layout://`), kept as written for the builder to judge.
    Url(String),
}

impl NamedSource {
    /// Reads a context value; relative directories are taken from `dir`.
    pub(crate) fn parse(value: &str, dir: &Path) -> NamedSource {
        if let Some(name) = value.strip_prefix("target:") {
            NamedSource::Target(name.to_owned())
        } else if let Some(image) = value.strip_prefix("docker-image://") {
            NamedSource::Image(image.to_owned())
        } else if value.contains("://") || value.starts_with("git@") {
            NamedSource::Url(value.to_owned())
        } else {
            NamedSource::Dir(resolve_path(dir, value))
        }
    }
}

impl fmt::Display for NamedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamedSource::Dir(path) => write!(f, "{}", path.display()),
            NamedSource::Image(image) => write!(f, "docker-image://{image}"),
            NamedSource::Target(name) => write!(f, "target:{name}"),
            NamedSource::Url(url) => f.write_str(url),
        }
    }
}

/// A build secret: an id RUN mounts it by, and where its value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Secret {
    /// The id (`RUN --mount=type=secret,id=…`).
    pub id: String,
    /// Where the value is read.
    pub source: SecretSource,
}

/// Where a secret's value is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, resolved against the directory of the file that named it.
    File(PathBuf),
    /// An environment variable of rbuild's.
    Env(String),
}

impl Secret {
    /// Reads buildx's `id=ID,src=FILE` / `id=ID,env=VAR` form (`type=file|env` optional,
    /// `source` a synonym of `src`). `None` when there is no id or no source.
    pub(crate) fn parse(value: &str, dir: &Path) -> Option<Secret> {
        let (mut id, mut file, mut env) = (None, None, None);
        for field in value.split(',') {
            match field.split_once('=')? {
                ("id", v) => id = Some(v),
                ("src" | "source", v) => file = Some(v),
                ("env", v) => env = Some(v),
                ("type", "file" | "env") => {}
                _ => return None,
            }
        }
        let source = match (file, env) {
            (Some(file), None) => SecretSource::File(resolve_path(dir, file)),
            (None, Some(env)) => SecretSource::Env(env.to_owned()),
            _ => return None,
        };
        Some(Secret {
            id: id?.to_owned(),
            source,
        })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            SecretSource::File(path) => write!(f, "id={},src={}", self.id, path.display()),
            SecretSource::Env(var) => write!(f, "id={},env={}", self.id, var),
        }
    }
}

/// A cache entry in buildx's CSV form: a plain image reference means its registry cache
/// (`type=registry,ref=REF`), as buildx reads it.
pub(crate) fn cache_entry(value: &str) -> String {
    if value.contains('=') {
        value.to_owned()
    } else {
        format!("type=registry,ref={value}")
    }
}

/// `value` taken relative to `dir` unless absolute, made absolute without resolving symlinks.
pub(crate) fn resolve_path(dir: &Path, value: &str) -> PathBuf {
    let joined = dir.join(value);
    std::path::absolute(&joined).unwrap_or(joined)
}
