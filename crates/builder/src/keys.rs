//! Cache keys: a step's named inputs, and the key they make — the SHA-256 of a canonical
//! JSON encoding of the inputs, prefixed by [`KEY_VERSION`], so that bumping the version
//! changes every key. An input standing for thousands of files is one digest, so that keying a
//! hit stays cheap; the files behind it are kept only with the inputs stored on a miss, to name
//! what changed next time.

use std::collections::BTreeMap;

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};

/// The version of the key encoding. Bump it whenever what a key covers, or how a step's
/// result is produced from the same inputs, changes.
pub const KEY_VERSION: u32 = 2;

/// A cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey(pub Digest);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The named inputs of one step, in a canonical order. The key is derived from them; the
/// same inputs, kept from the previous build, explain a miss.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    values: BTreeMap<String, String>,
    /// For values that are digests of many entries (a COPY's files), the entries: not part of
    /// the key, only there so that a miss names the entry that changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inputs {
    /// Adds an input. Names are `kind:detail` (`parent`, `base`, `arg:VERSION`,
    /// `file:src/main.rs`, `flag:chown`, …); the kind orders explanations.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Inputs {
        self.values.insert(name.into(), value.into());
        self
    }

    /// Says what the input `name` (a digest) stands for, entry by entry, named like inputs.
    /// Only a miss needs this, so steps add it after a lookup failed.
    pub fn set_details(&mut self, name: impl Into<String>, entries: BTreeMap<String, String>) {
        self.details.insert(name.into(), entries);
    }

    /// The key these inputs produce.
    pub fn key(&self) -> CacheKey {
        #[derive(Serialize)]
        struct Encoded<'a> {
            version: u32,
            inputs: &'a BTreeMap<String, String>,
        }
        let bytes = serde_json::to_vec(&Encoded {
            version: KEY_VERSION,
            inputs: &self.values,
        })
        .unwrap_or_default();
        CacheKey(Digest::sha256_of(&bytes))
    }

    /// The inputs with every digest that has details replaced by them.
    fn explained(&self) -> BTreeMap<&str, &str> {
        let mut all = BTreeMap::new();
        for (name, value) in &self.values {
            match self.details.get(name) {
                Some(entries) => all.extend(entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
                None => {
                    all.insert(name.as_str(), value.as_str());
                }
            }
        }
        all
    }

    /// What changed from `previous` to `self`, most telling first: the base image, the
    /// instruction, argument values, flags, files, then the parent step.
    pub fn explain_change(&self, previous: &Inputs) -> String {
        const ORDER: [&str; 7] = ["base", "instruction", "arg", "env", "flag", "file", "parent"];
        let kind = |name: &str| {
            let prefix = name.split(':').next().unwrap_or(name);
            ORDER.iter().position(|k| *k == prefix).unwrap_or(ORDER.len())
        };
        let (now, before) = (self.explained(), previous.explained());
        let mut names: Vec<&str> = now.keys().chain(before.keys()).copied().collect();
        names.sort_by_key(|n| (kind(n), *n));
        names.dedup();
        let mut changes = Vec::new();
        for name in names {
            let (now, before) = (now.get(name), before.get(name));
            if now == before {
                continue;
            }
            let detail = name.split_once(':').map_or(name, |(_, d)| d);
            let change = match (name.split(':').next().unwrap_or(""), before, now) {
                ("file", None, Some(_)) => format!("{detail}: added"),
                ("file", Some(_), None) => format!("{detail}: removed"),
                ("file", _, _) => format!("{detail}: content changed"),
                ("parent", _, _) => "an earlier step changed".to_owned(),
                ("base", Some(b), Some(n)) => format!("base image changed: {} → {}", short(b), short(n)),
                (_, Some(b), Some(n)) => format!("{detail}: {b} → {n}"),
                (_, None, Some(n)) => format!("{detail}: set to {n}"),
                (_, Some(b), None) => format!("{detail}: {b} removed"),
                (_, None, None) => continue,
            };
            changes.push(change);
        }
        match changes.len() {
            0 => "inputs unchanged (the cached result was removed)".to_owned(),
            1..=3 => changes.join("; "),
            n => format!("{}; and {} more", changes[..3].join("; "), n - 3),
        }
    }
}

fn short(value: &str) -> &str {
    value.get(..19).unwrap_or(value)
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Inputs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Inputs {
        let mut inputs = Inputs::default();
        for (name, value) in pairs {
            inputs.set(name, value);
        }
        inputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Inputs {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_encoding_is_pinned() {
        // Changing this digest changes every key users have: bump KEY_VERSION with it.
        let key = inputs(&[("instruction", "COPY a /a"), ("parent", "scratch")]).key();
        assert_eq!(
            key.to_string(),
            "sha256:a3785b56c4906a944329458310e879ccada59b78ae2f644cb7be9a1e18299e37"
        );
    }

    #[test]
    fn keys_are_canonical() {
        let a = inputs(&[("instruction", "COPY a b"), ("file:a", "x")]);
        let b = inputs(&[("file:a", "x"), ("instruction", "COPY a b")]);
        assert_eq!(a.key(), b.key());
        assert_ne!(
            a.key(),
            inputs(&[("instruction", "COPY a b"), ("file:a", "y")]).key()
        );
    }

    #[test]
    fn explains_what_changed() {
        let before = inputs(&[
            ("arg:VERSION", "1.2"),
            ("file:src/main.rs", "d1"),
            ("file:old", "d"),
        ]);
        let now = inputs(&[
            ("arg:VERSION", "1.3"),
            ("file:src/main.rs", "d2"),
            ("file:new", "d"),
        ]);
        assert_eq!(
            now.explain_change(&before),
            "VERSION: 1.2 → 1.3; new: added; old: removed; and 1 more"
        );
        let now = inputs(&[
            ("arg:VERSION", "1.2"),
            ("file:src/main.rs", "d2"),
            ("file:old", "d"),
        ]);
        assert_eq!(now.explain_change(&before), "src/main.rs: content changed");
    }

    #[test]
    fn details_name_the_entry_behind_a_digest_and_stay_out_of_the_key() {
        let listing = |value: &str| {
            BTreeMap::from([
                ("file:src/a".to_owned(), "file 644 d1".to_owned()),
                ("file:src/b".to_owned(), value.to_owned()),
            ])
        };
        let mut before = inputs(&[("instruction", "COPY src /"), ("files", "digest 1")]);
        let key = before.key();
        before.set_details("files", listing("file 644 d2"));
        assert_eq!(before.key(), key);
        let mut now = inputs(&[("instruction", "COPY src /"), ("files", "digest 2")]);
        now.set_details("files", listing("file 644 d3"));
        assert_eq!(now.explain_change(&before), "src/b: content changed");
    }
}
