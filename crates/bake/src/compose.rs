//! Compose files: every service with a `build:` section becomes a target in group `default`,
//! as buildx's `ParseCompose` maps it. Strings are interpolated from the environment first,
//! as compose does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::BakeError;
use crate::config::{Config, check_name};
use crate::interpolate::{InterpolationError, interpolate};
use crate::raw::{RawTarget, add_new};
use crate::target::{NamedSource, Secret, SecretSource, cache_entry, resolve_path};

/// Build keys compose defines that buildx honours and rbuild cannot do yet.
const UNSUPPORTED: &[&str] = &["extra_hosts", "shm_size", "ulimits", "sbom", "provenance"];
/// Build keys buildx ignores, and so does rbuild.
const IGNORED: &[&str] = &["isolation", "privileged", "entitlements"];

/// The environment compose files see: rbuild's, plus what the `.env` file of `dir` (the
/// directory rbuild runs in) sets that rbuild's does not, as buildx reads it.
pub(crate) fn environment(
    env: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<BTreeMap<String, String>, BakeError> {
    let path = dir.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(env.clone()),
        Err(source) => return Err(BakeError::Read { path, source }),
    };
    let mut out = env.clone();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(BakeError::Type {
                path,
                at: format!("line {}", number + 1),
                expected: "KEY=VALUE",
            });
        };
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) if value.len() > 1 && value.ends_with(q) => &value[1..value.len() - 1],
            _ => value.split(" #").next().unwrap_or(value).trim_end(),
        };
        out.entry(name.trim().to_owned())
            .or_insert_with(|| value.to_owned());
    }
    Ok(out)
}

/// Reads the compose file at `path` (text `text`) into `config`.
pub(crate) fn read(
    path: &Path,
    text: &str,
    env: &BTreeMap<String, String>,
    config: &mut Config,
) -> Result<(), BakeError> {
    let docs = YamlLoader::load_from_str(text).map_err(|source| BakeError::Yaml {
        path: path.to_owned(),
        source,
    })?;
    let file = ComposeFile {
        path,
        dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
        env,
    };
    let Some(root) = docs.first() else {
        return Ok(());
    };
    let root = file.hash(root, "the file")?;
    if root.contains_key(&key("include")) {
        return Err(file.unsupported("the file", "include"));
    }
    let secrets = match root.get(&key("secrets")) {
        Some(secrets) => file.hash(secrets, "secrets")?.clone(),
        None => Default::default(),
    };
    let Some(services) = root.get(&key("services")) else {
        return Ok(());
    };
    for (name, service) in file.hash(services, "services")? {
        let name = file.text(name, "services")?;
        let at = format!("services.{name}");
        let service = file.hash(service, &at)?;
        let Some(build) = service.get(&key("build")) else {
            continue;
        };
        let target_name = name.replace('.', "_");
        check_name(path, &target_name)?;
        // A build argument without a value is looked up in the service's environment first.
        let mut service_env = BTreeMap::new();
        if let Some(environment) = service.get(&key("environment")) {
            for (name, value) in file.mapping(environment, &format!("{at}.environment"))? {
                if let Some(value) = value {
                    service_env.insert(name, value);
                }
            }
        }
        let mut target = file.build(build, &format!("{at}.build"), &secrets, &service_env)?;
        if target.tags.is_none()
            && let Some(image) = service.get(&key("image"))
        {
            target.tags = Some(vec![file.text(image, &format!("{at}.image"))?]);
        }
        config.add_target(target_name.clone(), target);
        config.add_group("default".to_owned(), vec![target_name]);
    }
    Ok(())
}

fn key(s: &str) -> Yaml {
    Yaml::String(s.to_owned())
}

/// One compose file being read: where errors point, and what interpolation reads.
struct ComposeFile<'a> {
    path: &'a Path,
    dir: PathBuf,
    env: &'a BTreeMap<String, String>,
}

impl ComposeFile<'_> {
    /// A service's `build:`, the short form (a context path) or the long one.
    fn build(
        &self,
        build: &Yaml,
        at: &str,
        secrets: &yaml_rust2::yaml::Hash,
        service_env: &BTreeMap<String, String>,
    ) -> Result<RawTarget, BakeError> {
        let mut target = RawTarget::new(self.dir.clone());
        if let Yaml::String(_) = build {
            target.context = Some(resolve_path(&self.dir, &self.text(build, at)?));
            return Ok(target);
        }
        let mut x_bake = None;
        for (k, value) in self.hash(build, at)? {
            let k = self.text(k, at)?;
            let at = format!("{at}.{k}");
            match k.as_str() {
                "context" => target.context = Some(resolve_path(&self.dir, &self.text(value, &at)?)),
                "dockerfile" => target.dockerfile = Some(self.text(value, &at)?),
                "dockerfile_inline" => target.dockerfile_inline = Some(self.text(value, &at)?),
                "args" => {
                    for (name, value) in self.mapping(value, &at)? {
                        // `KEY` with no value is taken from the service's environment, then
                        // rbuild's; dropped if unset in both.
                        let inherited = || service_env.get(&name).or_else(|| self.env.get(&name)).cloned();
                        if let Some(value) = value.or_else(inherited) {
                            target.args.insert(name, value);
                        }
                    }
                }
                "labels" => {
                    for (name, value) in self.mapping(value, &at)? {
                        target.labels.insert(name, value.unwrap_or_default());
                    }
                }
                "additional_contexts" => {
                    for (name, value) in self.mapping(value, &at)? {
                        let value = value.unwrap_or_default();
                        let source = match value.strip_prefix("service:") {
                            Some(service) => NamedSource::Target(service.replace('.', "_")),
                            None => NamedSource::parse(&value, &self.dir),
                        };
                        target.contexts.insert(name, source);
                    }
                }
                "target" => target.target = Some(self.text(value, &at)?),
                "tags" => target.tags = Some(self.list(value, &at)?),
                "platforms" => target.platforms = Some(self.list(value, &at)?),
                "cache_from" => {
                    target.cache_from = Some(self.list(value, &at)?.iter().map(|c| cache_entry(c)).collect());
                }
                "cache_to" => {
                    target.cache_to = Some(self.list(value, &at)?.iter().map(|c| cache_entry(c)).collect());
                }
                "no_cache" => target.no_cache = Some(self.boolean(value, &at)?),
                "pull" => target.pull = Some(self.boolean(value, &at)?),
                "network" => target.network = Some(self.text(value, &at)?),
                "ssh" => {
                    let ssh = self
                        .mapping(value, &at)?
                        .into_iter()
                        .map(|(id, path)| match path {
                            Some(path) => format!("{id}={path}"),
                            None => id,
                        });
                    target.ssh = Some(ssh.collect());
                }
                "secrets" => target.secrets = Some(self.secrets(value, &at, secrets)?),
                "x-bake" => x_bake = Some((value, at)),
                k if UNSUPPORTED.contains(&k) => return Err(self.unsupported(&at, k)),
                k if IGNORED.contains(&k) || k.starts_with("x-") => {}
                k => {
                    return Err(BakeError::UnknownKey {
                        path: self.path.to_owned(),
                        at,
                        key: k.to_owned(),
                    });
                }
            }
        }
        if let Some((value, at)) = x_bake {
            self.x_bake(value, &at, &mut target)?;
        }
        Ok(target)
    }

    /// buildx's `x-bake` extension, laid on the build's own keys as buildx does: lists are
    /// added to (a single string is split at spaces), pull and no-cache replace, contexts the
    /// build already names keep their value.
    fn x_bake(&self, value: &Yaml, at: &str, target: &mut RawTarget) -> Result<(), BakeError> {
        for (k, value) in self.hash(value, at)? {
            let k = self.text(k, at)?;
            let at = format!("{at}.{k}");
            let items = || match value {
                Yaml::Array(_) => self.list(value, &at),
                _ => Ok(self
                    .text(value, &at)?
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()),
            };
            match k.as_str() {
                "tags" => add_new(&mut target.tags, items()?),
                "cache-from" => add_new(&mut target.cache_from, items()?.iter().map(|c| cache_entry(c))),
                "cache-to" => add_new(&mut target.cache_to, items()?.iter().map(|c| cache_entry(c))),
                "ssh" => add_new(&mut target.ssh, items()?),
                "platforms" => add_new(&mut target.platforms, items()?),
                "output" => add_new(&mut target.outputs, items()?),
                "no-cache-filter" => add_new(&mut target.no_cache_filter, items()?),
                "pull" => target.pull = Some(self.boolean(value, &at)?),
                "no-cache" => target.no_cache = Some(self.boolean(value, &at)?),
                "secret" => {
                    let secrets = items()?.into_iter().map(|spec| {
                        Secret::parse(&spec, &self.dir).ok_or_else(|| BakeError::Value {
                            at: format!("{}: {at}", self.path.display()),
                            what: "secret",
                            value: spec,
                        })
                    });
                    add_new(&mut target.secrets, secrets.collect::<Result<Vec<_>, _>>()?);
                }
                "contexts" => {
                    for (name, source) in self.mapping(value, &at)? {
                        let source = NamedSource::parse(&source.unwrap_or_default(), &self.dir);
                        target.contexts.entry(name).or_insert(source);
                    }
                }
                other => {
                    return Err(BakeError::UnknownKey {
                        path: self.path.to_owned(),
                        at,
                        key: other.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// `secrets:` of a build: names of top-level secrets (short form) or `{source, …}`. The
    /// id RUN mounts is the source's name, as buildx gives it (a long form's `target` is
    /// not used).
    fn secrets(
        &self,
        value: &Yaml,
        at: &str,
        declared: &yaml_rust2::yaml::Hash,
    ) -> Result<Vec<Secret>, BakeError> {
        let Yaml::Array(items) = value else {
            return Err(self.expected(at, "a list"));
        };
        let mut out = Vec::new();
        for item in items {
            let name = match item {
                Yaml::Hash(long) => {
                    let source = long
                        .get(&key("source"))
                        .ok_or_else(|| self.expected(at, "a source"))?;
                    self.text(source, at)?
                }
                short => self.text(short, at)?,
            };
            let refused = || BakeError::Secret {
                path: self.path.to_owned(),
                at: at.to_owned(),
                name: name.clone(),
            };
            let decl = declared
                .get(&key(&name))
                .and_then(Yaml::as_hash)
                .ok_or_else(refused)?;
            let source = if let Some(file) = decl.get(&key("file")) {
                SecretSource::File(resolve_path(&self.dir, &self.text(file, at)?))
            } else if let Some(var) = decl.get(&key("environment")) {
                SecretSource::Env(self.text(var, at)?)
            } else {
                return Err(refused());
            };
            out.push(Secret { id: name, source });
        }
        Ok(out)
    }

    fn hash<'y>(&self, value: &'y Yaml, at: &str) -> Result<&'y yaml_rust2::yaml::Hash, BakeError> {
        value.as_hash().ok_or_else(|| self.expected(at, "a mapping"))
    }

    /// A scalar as a string, interpolated.
    fn text(&self, value: &Yaml, at: &str) -> Result<String, BakeError> {
        let raw = match value {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Real(r) => r.clone(),
            Yaml::Boolean(b) => b.to_string(),
            _ => return Err(self.expected(at, "a string")),
        };
        interpolate(&raw, self.env).map_err(|e| match e {
            InterpolationError::Invalid => BakeError::Interpolation {
                path: self.path.to_owned(),
                at: at.to_owned(),
                value: raw,
            },
            InterpolationError::Required { var, message } => BakeError::RequiredVariable {
                path: self.path.to_owned(),
                at: at.to_owned(),
                var,
                message,
            },
        })
    }

    fn boolean(&self, value: &Yaml, at: &str) -> Result<bool, BakeError> {
        match value {
            Yaml::Boolean(b) => Ok(*b),
            other => match self.text(other, at)?.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.expected(at, "true or false")),
            },
        }
    }

    fn list(&self, value: &Yaml, at: &str) -> Result<Vec<String>, BakeError> {
        match value {
            Yaml::Array(items) => items.iter().map(|item| self.text(item, at)).collect(),
            _ => Err(self.expected(at, "a list")),
        }
    }

    /// Compose's two spellings of a mapping: `{KEY: value}` or `[KEY=value]`; a key without a
    /// value (`KEY:` or `- KEY`) gives `None`.
    fn mapping(&self, value: &Yaml, at: &str) -> Result<Vec<(String, Option<String>)>, BakeError> {
        match value {
            Yaml::Hash(hash) => hash
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::Null => None,
                        v => Some(self.text(v, at)?),
                    };
                    Ok((self.text(k, at)?, value))
                })
                .collect(),
            Yaml::Array(items) => items
                .iter()
                .map(|item| {
                    let item = self.text(item, at)?;
                    Ok(match item.split_once('=') {
                        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                        None => (item, None),
                    })
                })
                .collect(),
            _ => Err(self.expected(at, "a mapping or a list of KEY=VALUE")),
        }
    }

    fn expected(&self, at: &str, expected: &'static str) -> BakeError {
        BakeError::Type {
            path: self.path.to_owned(),
            at: at.to_owned(),
            expected,
        }
    }

    fn unsupported(&self, at: &str, key: &str) -> BakeError {
        BakeError::Unsupported {
            path: self.path.to_owned(),
            at: at.to_owned(),
            key: key.to_owned(),
        }
    }
}
