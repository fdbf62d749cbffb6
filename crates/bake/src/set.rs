//! `--set pattern.key[.sub]=value` and `+=`: overrides laid on every target whose name the
//! pattern (Go's `path.Match`) matches, after `inherits`, as buildx applies them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rbuild_glob::{Pattern, Syntax};

use crate::BakeError;
use crate::raw::RawTarget;
use crate::target::{NamedSource, Secret, cache_entry, resolve_path};

/// One `--set` flag, parsed.
pub(crate) struct Override {
    /// The flag's value as given, for messages.
    pub flag: String,
    pub pattern: String,
    /// The pattern, as Go's `path.Match` reads it (target names have no `/`).
    compiled: Pattern,
    key: String,
    sub: Option<String>,
    append: bool,
    /// `None`: `args.NAME` without a value and NAME not in the environment; nothing to set.
    value: Option<String>,
}

impl Override {
    /// Parses `pattern.key[.sub]=value` (or `+=`); `pattern.args.NAME` alone takes NAME's
    /// value from `env`, as buildx does.
    pub fn parse(flag: &str, env: &BTreeMap<String, String>) -> Result<Override, BakeError> {
        let bad = |reason| BakeError::Set {
            value: flag.to_owned(),
            reason,
        };
        let (lhs, value) = match flag.split_once('=') {
            Some((lhs, value)) => (lhs, Some(value)),
            None => (flag, None),
        };
        let (lhs, append) = match lhs.strip_suffix('+') {
            Some(lhs) => (lhs, true),
            None => (lhs, false),
        };
        let mut parts = lhs.splitn(3, '.');
        let (Some(pattern), Some(key)) = (parts.next(), parts.next()) else {
            return Err(bad("expected pattern.key=value"));
        };
        let sub = parts.next();
        let value = match (value, key, sub) {
            (Some(value), _, _) => Some(value.to_owned()),
            (None, "args", Some(name)) => env.get(name).cloned(),
            (None, _, _) => return Err(bad("expected pattern.key=value")),
        };
        if value
            .as_deref()
            .is_some_and(|v| v.starts_with('[') && v.ends_with(']'))
        {
            return Err(bad("list values are not accepted: repeat the flag"));
        }
        let compiled = Pattern::new(pattern, Syntax::PatternMatcher).map_err(|_| bad("malformed pattern"))?;
        Ok(Override {
            flag: flag.to_owned(),
            pattern: pattern.to_owned(),
            compiled,
            key: key.to_owned(),
            sub: sub.map(str::to_owned),
            append,
            value,
        })
    }

    /// Whether the override is for target `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.compiled.matches(name)
    }
}

/// Applies the overrides matching `name` to `target`, in order. For list attributes the
/// first `=` of a key replaces the file's list and later ones add to it; `+=` always adds.
/// Relative paths are taken from `cwd`.
pub(crate) fn apply(
    overrides: &[Override],
    name: &str,
    target: &mut RawTarget,
    cwd: &Path,
) -> Result<(), BakeError> {
    let mut replaced = BTreeSet::new();
    for o in overrides.iter().filter(|o| o.matches(name)) {
        let bad = |reason| BakeError::Set {
            value: o.flag.clone(),
            reason,
        };
        let Some(value) = o.value.clone() else {
            continue;
        };
        let fresh = !o.append && replaced.insert(o.key.as_str());
        let list = |field: &mut Option<Vec<String>>, values: Vec<String>| {
            let field = field.get_or_insert_with(Vec::new);
            if fresh {
                field.clear();
            }
            field.extend(values);
        };
        match (o.key.as_str(), o.sub.as_deref()) {
            ("args", Some(k)) => _ = target.args.insert(k.to_owned(), value),
            ("labels", Some(k)) => _ = target.labels.insert(k.to_owned(), value),
            ("contexts", Some(k)) => {
                _ = target
                    .contexts
                    .insert(k.to_owned(), NamedSource::parse(&value, cwd))
            }
            ("context", None) => target.context = Some(resolve_path(cwd, &value)),
            ("dockerfile", None) => target.dockerfile = Some(value),
            ("dockerfile-inline", None) => target.dockerfile_inline = Some(value),
            ("target", None) => target.target = Some(value),
            ("network", None) => target.network = Some(value),
            ("tags", None) => list(&mut target.tags, vec![value]),
            ("cache-from", None) => list(&mut target.cache_from, vec![cache_entry(&value)]),
            ("cache-to", None) => list(&mut target.cache_to, vec![cache_entry(&value)]),
            ("output", None) => list(&mut target.outputs, vec![value]),
            ("ssh", None) => list(&mut target.ssh, vec![value]),
            ("no-cache-filter", None) => list(&mut target.no_cache_filter, vec![value]),
            ("platform" | "platforms", None) => list(
                &mut target.platforms,
                value.split(',').map(str::to_owned).collect(),
            ),
            ("secrets" | "secret", None) => {
                let secret = Secret::parse(&value, cwd)
                    .ok_or_else(|| bad("expected id=ID,src=FILE or id=ID,env=VAR"))?;
                let secrets = target.secrets.get_or_insert_with(Vec::new);
                if fresh {
                    secrets.clear();
                }
                secrets.push(secret);
            }
            ("no-cache", None) => {
                target.no_cache = Some(boolean(&value).ok_or_else(|| bad("expected true or false"))?)
            }
            ("pull", None) => {
                target.pull = Some(boolean(&value).ok_or_else(|| bad("expected true or false"))?)
            }
            _ => return Err(bad("unknown or unsupported key")),
        }
    }
    Ok(())
}

fn boolean(value: &str) -> Option<bool> {
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_match_cases() {
        let cases = [
            ("*", "app", true),
            ("a*", "app", true),
            ("a*", "web", false),
            ("*-test", "app-test", true),
            ("a?p", "app", true),
            ("a?p", "ap", false),
            ("[a-c]pp", "bpp", true),
            ("[^a-c]pp", "bpp", false),
            ("[^a-c]pp", "xpp", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*", "a/b", false),
            ("app", "app", true),
        ];
        let compile = |pattern| Pattern::new(pattern, Syntax::PatternMatcher);
        for (pattern, name, want) in cases {
            assert_eq!(
                compile(pattern).map(|p| p.matches(name)).ok(),
                Some(want),
                "{pattern} {name}"
            );
        }
        for bad in ["[", "[a", "a\\", "[]a]", "[a-]"] {
            assert!(compile(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_or_say_why_not() {
        let env = BTreeMap::from([("FROM_ENV".to_owned(), "3".to_owned())]);
        let o = Override::parse("*.args.VERSION+=2", &env).unwrap();
        assert_eq!(
            (o.pattern.as_str(), o.key.as_str(), o.sub.as_deref()),
            ("*", "args", Some("VERSION"))
        );
        assert!(o.append);
        assert_eq!(
            Override::parse("app.args.FROM_ENV", &env)
                .unwrap()
                .value
                .as_deref(),
            Some("3")
        );
        assert_eq!(Override::parse("app.args.UNSET", &env).unwrap().value, None);
        for bad in ["app", "app=1", "app.tags", "app.tags=[a,b]", "[.tags=x"] {
            assert!(Override::parse(bad, &env).is_err(), "{bad}");
        }
    }
}
