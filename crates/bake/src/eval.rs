//! Bake blocks evaluated: variables (defaults, overridden by same-named environment
//! variables) declared into one HCL context shared by every file, then each group and target
//! attribute evaluated in it and converted to its typed form.

use std::collections::BTreeMap;
use std::path::Path;

use hcl::Value;
use hcl::eval::{Context, ErrorKind, Evaluate};
use hcl::expr::Expression;

use crate::BakeError;
use crate::bakefile::{BakeFile, Block, Kind};
use crate::config::{Config, check_name};
use crate::raw::RawTarget;
use crate::target::{NamedSource, Secret, cache_entry, resolve_path};

/// Target attributes buildx defines that rbuild cannot do yet.
const UNSUPPORTED: &[&str] = &[
    "annotations",
    "attest",
    "call",
    "entitlements",
    "extra-hosts",
    "matrix",
    "name",
    "policy",
    "resources",
    "shm-size",
    "ulimits",
];

/// Reads every bake file's groups and targets into `config`, variables from all of them.
pub(crate) fn read(
    files: &[BakeFile],
    env: &BTreeMap<String, String>,
    config: &mut Config,
) -> Result<(), BakeError> {
    let ctx = variables(files, env)?;
    for file in files {
        let dir = file.path.parent().unwrap_or(Path::new("."));
        for block in &file.blocks {
            match block.kind {
                Kind::Variable => {}
                Kind::Group => {
                    check_name(&file.path, &block.name)?;
                    let mut members = Vec::new();
                    for (key, expr) in &block.attrs {
                        let at = file.at(block, key);
                        match key.as_str() {
                            "targets" => {
                                members = Attr::new(file, &at).list(&evaluate(file, &at, expr, &ctx)?)?
                            }
                            "description" => {}
                            _ => return Err(unknown(file, block, key)),
                        }
                    }
                    config.add_group(block.name.clone(), members);
                }
                Kind::Target => {
                    check_name(&file.path, &block.name)?;
                    let mut target = RawTarget::new(dir.to_owned());
                    for (key, expr) in &block.attrs {
                        let at = file.at(block, key);
                        let value = evaluate(file, &at, expr, &ctx)?;
                        if value != Value::Null {
                            set(&mut target, block, key, &value, Attr::new(file, &at), dir)?;
                        }
                    }
                    config.add_target(block.name.clone(), target);
                }
            }
        }
    }
    Ok(())
}

/// The context every expression is evaluated in: bake's built-ins and each variable (a later
/// file's declaration replaces an earlier one). Variables may use each other in any order.
fn variables<'f>(
    files: &'f [BakeFile],
    env: &BTreeMap<String, String>,
) -> Result<Context<'static>, BakeError> {
    let mut ctx = Context::new();
    ctx.declare_var("BAKE_CMD_CONTEXT", "cwd");
    ctx.declare_var("BAKE_LOCAL_PLATFORM", format!("linux/{}", local_arch()));
    let env_lookup = env
        .get("BUILDX_BAKE_DISABLE_VARS_ENV_LOOKUP")
        .is_none_or(|v| v != "1" && v != "true");
    let mut declared: BTreeMap<&str, (&'f BakeFile, &'f Block)> = BTreeMap::new();
    for file in files {
        for block in file.blocks.iter().filter(|b| b.kind == Kind::Variable) {
            declared.insert(&block.name, (file, block));
        }
    }
    let mut pending = Vec::new();
    for (name, (file, block)) in declared {
        let mut default = None;
        for (key, expr) in &block.attrs {
            match key.as_str() {
                "default" => default = Some(expr),
                "description" => {}
                "type" => {
                    return Err(BakeError::Unsupported {
                        path: file.path.clone(),
                        at: file.at(block, ""),
                        key: key.clone(),
                    });
                }
                _ => return Err(unknown(file, block, key)),
            }
        }
        match (env.get(name).filter(|_| env_lookup), default) {
            (Some(value), default) => ctx.declare_var(name, typed_like(value, default)),
            (None, None) => ctx.declare_var(name, ""),
            (None, Some(expr)) => pending.push((name, file, block, expr)),
        }
    }
    // Each pass declares the variables whose defaults now evaluate; one that makes no
    // progress leaves only undefined names or cycles, reported for the first variable.
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        let mut first_error = None;
        for (name, file, block, expr) in pending {
            match expr.evaluate(&ctx) {
                Ok(value) => ctx.declare_var(name, value),
                Err(e) => {
                    first_error.get_or_insert_with(|| eval_error(file, &file.at(block, "default"), e));
                    still.push((name, file, block, expr));
                }
            }
        }
        if let Some(error) = first_error.filter(|_| still.len() == before) {
            return Err(error);
        }
        pending = still;
    }
    Ok(ctx)
}

/// An environment value typed like the default it overrides: a bool or number default makes
/// `true`/`3` a bool or number, as buildx parses them.
fn typed_like(value: &str, default: Option<&Expression>) -> Value {
    match default {
        Some(Expression::Bool(_)) if value.parse::<bool>().is_ok() => Value::Bool(value == "true"),
        Some(Expression::Number(_)) => match value.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => Value::from(value),
        },
        _ => Value::from(value),
    }
}

/// Docker's name for this machine's architecture.
fn local_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn evaluate(file: &BakeFile, at: &str, expr: &Expression, ctx: &Context) -> Result<Value, BakeError> {
    expr.evaluate(ctx).map_err(|e| eval_error(file, at, e))
}

fn eval_error(file: &BakeFile, at: &str, error: hcl::eval::Error) -> BakeError {
    match error.kind() {
        ErrorKind::UndefinedFunc(name) => BakeError::UnsupportedFunction {
            path: file.path.clone(),
            at: at.to_owned(),
            function: name.to_string(),
        },
        _ => BakeError::Eval {
            path: file.path.clone(),
            at: at.to_owned(),
            source: error,
        },
    }
}

fn unknown(file: &BakeFile, block: &Block, key: &str) -> BakeError {
    BakeError::UnknownKey {
        path: file.path.clone(),
        at: file.at(block, ""),
        key: key.to_owned(),
    }
}

/// Sets target attribute `key` from its evaluated value.
fn set(
    target: &mut RawTarget,
    block: &Block,
    key: &str,
    value: &Value,
    attr: Attr,
    dir: &Path,
) -> Result<(), BakeError> {
    match key {
        "inherits" => target.inherits = attr.list(value)?,
        "context" => target.context = Some(resolve_path(dir, &attr.string(value)?)),
        "dockerfile" => target.dockerfile = Some(attr.string(value)?),
        "dockerfile-inline" => target.dockerfile_inline = Some(attr.string(value)?),
        "args" => target.args = attr.map(value)?,
        "labels" => target.labels = attr.map(value)?,
        "contexts" => {
            let contexts = attr.map(value)?;
            target.contexts = contexts
                .iter()
                .map(|(k, v)| (k.clone(), NamedSource::parse(v, dir)))
                .collect();
        }
        "tags" => target.tags = Some(attr.list(value)?),
        "target" => target.target = Some(attr.string(value)?),
        "cache-from" => {
            target.cache_from = Some(attr.csv_list(value)?.iter().map(|c| cache_entry(c)).collect())
        }
        "cache-to" => target.cache_to = Some(attr.csv_list(value)?.iter().map(|c| cache_entry(c)).collect()),
        "secret" => {
            let secrets = attr.csv_list(value)?.into_iter().map(|s| {
                Secret::parse(&s, dir).ok_or_else(|| BakeError::Value {
                    at: format!("{}: {}", attr.file.path.display(), attr.at),
                    what: "secret",
                    value: s,
                })
            });
            target.secrets = Some(secrets.collect::<Result<_, _>>()?);
        }
        "ssh" => target.ssh = Some(attr.list(value)?),
        "no-cache" => target.no_cache = Some(attr.boolean(value)?),
        "no-cache-filter" => target.no_cache_filter = Some(attr.list(value)?),
        "pull" => target.pull = Some(attr.boolean(value)?),
        "platforms" => target.platforms = Some(attr.list(value)?),
        "output" => target.outputs = Some(attr.csv_list(value)?),
        "network" => target.network = Some(attr.string(value)?),
        "description" => {}
        key if UNSUPPORTED.contains(&key) => {
            return Err(BakeError::Unsupported {
                path: attr.file.path.clone(),
                at: attr.file.at(block, ""),
                key: key.to_owned(),
            });
        }
        _ => return Err(unknown(attr.file, block, key)),
    }
    Ok(())
}

/// One attribute's evaluated value being converted: where it is, for errors.
struct Attr<'a> {
    file: &'a BakeFile,
    at: &'a str,
}

impl<'a> Attr<'a> {
    fn new(file: &'a BakeFile, at: &'a str) -> Attr<'a> {
        Attr { file, at }
    }

    fn expected(&self, expected: &'static str) -> BakeError {
        BakeError::Type {
            path: self.file.path.clone(),
            at: self.at.to_owned(),
            expected,
        }
    }

    fn string(&self, value: &Value) -> Result<String, BakeError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.expected("a string")),
        }
    }

    fn boolean(&self, value: &Value) -> Result<bool, BakeError> {
        match value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            _ => Err(self.expected("true or false")),
        }
    }

    fn list(&self, value: &Value) -> Result<Vec<String>, BakeError> {
        match value {
            Value::Array(items) => items.iter().map(|item| self.string(item)).collect(),
            _ => Err(self.expected("a list of strings")),
        }
    }

    /// A map of strings; `null` values are dropped (a build argument left to the
    /// Dockerfile's default).
    fn map(&self, value: &Value) -> Result<BTreeMap<String, String>, BakeError> {
        let Value::Object(map) = value else {
            return Err(self.expected("a map of strings"));
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            if *v != Value::Null {
                out.insert(k.clone(), self.string(v)?);
            }
        }
        Ok(out)
    }

    /// A list of buildx CSV entries, each a string or an object (`{type = "registry", ref =
    /// "…"}`) written as CSV with `type` first and the other keys sorted, so that JSON (whose
    /// objects arrive sorted) and HCL give the same string.
    fn csv_list(&self, value: &Value) -> Result<Vec<String>, BakeError> {
        let Value::Array(items) = value else {
            return Err(self.expected("a list"));
        };
        items
            .iter()
            .map(|item| match item {
                Value::Object(fields) => {
                    let mut parts = Vec::new();
                    if let Some(kind) = fields.get("type") {
                        parts.push(format!("type={}", self.string(kind)?));
                    }
                    let mut rest: Vec<_> = fields.iter().filter(|(k, _)| *k != "type").collect();
                    rest.sort_by_key(|(k, _)| *k);
                    for (k, v) in rest {
                        parts.push(format!("{k}={}", self.string(v)?));
                    }
                    Ok(parts.join(","))
                }
                other => self.string(other),
            })
            .collect()
    }
}
