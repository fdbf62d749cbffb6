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
        let mut members = Vec::new();
        expand(config, name, &mut Vec::new(), &mut members)?;
        if config.groups.contains_key(name) {
            groups.insert(name.clone(), members.clone());
        }
        for member in members {
            if !requested.contains(&member) {
                requested.push(member);
            }
        }
    }
    if groups.is_empty() {
        groups.insert("default".to_owned(), requested.clone());
    }
    let mut resolver = Resolver {
        config,
        overrides,
        cwd,
        inherited: BTreeMap::new(),
        done: BTreeSet::new(),
        targets: Vec::new(),
    };
    for name in &requested {
        resolver.visit(name, &mut Vec::new())?;
    }
    for o in overrides {
        if !resolver.targets.iter().any(|t| o.matches(&t.name)) {
            return Err(BakeError::SetNoMatch {
                value: o.flag.clone(),
                pattern: o.pattern.clone(),
            });
        }
    }
    Ok(Bake {
        groups,
        targets: resolver.targets,
    })
}

/// Appends the targets `name` stands for to `out`: a group's members (groups nest; a group
/// beats a same-named target), or the target itself.
fn expand(
    config: &Config,
    name: &str,
    stack: &mut Vec<String>,
    out: &mut Vec<String>,
) -> Result<(), BakeError> {
    if let Some(members) = config.groups.get(name) {
        if stack.iter().any(|s| s == name) {
            return Err(cycle("group", stack, name));
        }
        stack.push(name.to_owned());
        for member in members {
            expand(config, member, stack, out)?;
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

fn cycle(kind: &'static str, stack: &[String], name: &str) -> BakeError {
    let start = stack.iter().position(|s| s == name).unwrap_or(0);
    let mut chain = stack[start..].to_vec();
    chain.push(name.to_owned());
    BakeError::Cycle { kind, chain }
}

struct Resolver<'a> {
    config: &'a Config,
    overrides: &'a [Override],
    cwd: &'a Path,
    /// Targets with their parents applied, by name.
    inherited: BTreeMap<String, RawTarget>,
    /// Targets already in `targets`.
    done: BTreeSet<String>,
    /// The result, dependencies first.
    targets: Vec<Target>,
}

impl Resolver<'_> {
    /// Adds target `name` after the targets its `target:` contexts name.
    fn visit(&mut self, name: &str, stack: &mut Vec<String>) -> Result<(), BakeError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(cycle("context", stack, name));
        }
        if !self.config.targets.contains_key(name) {
            return Err(BakeError::UnknownTarget {
                name: name.to_owned(),
                files: self.config.file_list(),
            });
        }
        let mut raw = self.inherit(name, &mut Vec::new())?;
        apply(self.overrides, name, &mut raw, self.cwd)?;
        let target = raw.finish(name.to_owned());
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
    /// attributes last), as buildx's `inherits`.
    fn inherit(&mut self, name: &str, stack: &mut Vec<String>) -> Result<RawTarget, BakeError> {
        if let Some(done) = self.inherited.get(name) {
            return Ok(done.clone());
        }
        if stack.iter().any(|s| s == name) {
            return Err(cycle("inherits", stack, name));
        }
        let config = self.config;
        let own = config.targets.get(name).ok_or_else(|| BakeError::UnknownParent {
            target: stack.last().cloned().unwrap_or_default(),
            parent: name.to_owned(),
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
        self.inherited.insert(name.to_owned(), merged.clone());
        Ok(merged)
    }
}
