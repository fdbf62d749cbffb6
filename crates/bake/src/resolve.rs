//! From merged declarations to the targets to build: names expanded through groups,
//! `inherits` applied, `--set` overrides laid on, and `target:` contexts followed so that a
//! target comes after every target it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::Config;
use crate::raw::RawTarget;
use crate::set::{Override, apply};
use crate::target::Target;
use crate::{Bake, BakeError};

/// Resolves `names` (`default` if empty) in `config`.
pub(crate) fn resolve(
    config: &Config,
    names: &[String],
    overrides: &[Override],
    cwd: &Path,
) -> Result<Bake, BakeError> {
    let default = ["default".to_owned()];
    let names = if names.is_empty() { &default[..] } else { names };
    let mut groups = BTreeMap::new();
    let mut requested = Vec::new();
    for name in names {
        expand(config, name, &mut Vec::new(), &mut requested, &mut groups)?;
    }
    // As buildx prints it: every group used, as declared, and group default listing (sorted)
    // every name asked for but default itself.
    let has_default = groups.contains_key("default");
    let asked: Vec<&String> = names
        .iter()
        .filter(|n| !(has_default && *n == "default"))
        .collect();
    if !asked.is_empty() {
        let listed = groups.entry("default".to_owned()).or_insert_with(Vec::new);
        listed.extend(asked.into_iter().cloned());
        listed.sort();
        listed.dedup();
    }
    // A pattern must match some target of the files, asked for or not (buildx's check).
    for o in overrides {
        if !config.targets.keys().any(|name| o.matches(name)) {
            return Err(BakeError::SetNoMatch {
                value: o.flag.clone(),
                pattern: o.pattern.clone(),
            });
        }
    }
    let mut resolver = Resolver {
        config,
        overrides,
        cwd,
        requested: &requested,
        inherited: BTreeMap::new(),
        done: BTreeSet::new(),
        targets: Vec::new(),
    };
    for name in &requested {
        resolver.visit(name, &mut Vec::new())?;
    }
    Ok(Bake {
        groups,
        targets: resolver.targets,
    })
}

/// Appends the targets `name` stands for to `out`: a group's members (groups nest; a group
/// beats a same-named target), or the target itself. Groups met are put in `groups`.
fn expand(
    config: &Config,
    name: &str,
    stack: &mut Vec<String>,
    out: &mut Vec<String>,
    groups: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), BakeError> {
    if let Some(members) = config.groups.get(name) {
        if stack.iter().any(|s| s == name) {
            return Err(cycle(config, "group", stack, name));
        }
        groups.insert(name.to_owned(), members.clone());
        stack.push(name.to_owned());
        for member in members {
            expand(config, member, stack, out, groups)?;
        }
        stack.pop();
    } else if config.targets.contains_key(name) {
        if !out.iter().any(|t| t == name) {
            out.push(name.to_owned());
        }
    } else {
        return Err(BakeError::UnknownTarget {
            name: name.to_owned(),
            files: config.file_list(),
        });
    }
    Ok(())
}

fn cycle(config: &Config, kind: &'static str, stack: &[String], name: &str) -> BakeError {
    let start = stack.iter().position(|s| s == name).unwrap_or(0);
    let mut chain = stack[start..].to_vec();
    chain.push(name.to_owned());
    BakeError::Cycle {
        kind,
        chain,
        files: config.file_list(),
    }
}

struct Resolver<'a> {
    config: &'a Config,
    overrides: &'a [Override],
    cwd: &'a Path,
    /// The targets asked for (through groups or by name).
    requested: &'a [String],
    /// Targets with their parents and overrides applied, by name.
    inherited: BTreeMap<String, RawTarget>,
    /// Targets already in `targets`.
    done: BTreeSet<String>,
    /// The result, dependencies first.
    targets: Vec<Target>,
}

impl Resolver<'_> {
    /// Adds target `name` after the targets its `target:` contexts name. A target only read
    /// by others, not asked for, gets output `type=cacheonly`, as buildx gives it: built, not
    /// exported.
    fn visit(&mut self, name: &str, stack: &mut Vec<String>) -> Result<(), BakeError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(cycle(self.config, "context", stack, name));
        }
        if !self.config.targets.contains_key(name) {
            return Err(BakeError::UnknownTarget {
                name: name.to_owned(),
                files: self.config.file_list(),
            });
        }
        let mut target = self.inherit(name, &mut Vec::new())?.finish(name.to_owned());
        if !self.requested.iter().any(|r| r == name) {
            target.outputs = vec!["type=cacheonly".to_owned()];
        }
        stack.push(name.to_owned());
        for dependency in target.dependencies() {
            self.visit(dependency, stack)?;
        }
        stack.pop();
        self.done.insert(name.to_owned());
        self.targets.push(target);
        Ok(())
    }

    /// Target `name` with its parents laid under it in order (later parents win, its own
    /// attributes last), then the `--set` overrides for its name, as buildx's `inherits`: a
    /// parent's overrides reach every target inheriting from it.
    fn inherit(&mut self, name: &str, stack: &mut Vec<String>) -> Result<RawTarget, BakeError> {
        if let Some(done) = self.inherited.get(name) {
            return Ok(done.clone());
        }
        if stack.iter().any(|s| s == name) {
            return Err(cycle(self.config, "inherits", stack, name));
        }
        let config = self.config;
        let own = config.targets.get(name).ok_or_else(|| BakeError::UnknownParent {
            target: stack.last().cloned().unwrap_or_default(),
            parent: name.to_owned(),
            files: config.file_list(),
        })?;
        stack.push(name.to_owned());
        let mut merged = RawTarget::new(own.dir.clone());
        for parent in &own.inherits {
            let parent = self.inherit(parent, stack)?;
            merged.merge(&parent);
        }
        stack.pop();
        merged.merge(own);
        merged.inherits.clear();
        apply(self.overrides, name, &mut merged, self.cwd)?;
        self.inherited.insert(name.to_owned(), merged.clone());
        Ok(merged)
    }
}
