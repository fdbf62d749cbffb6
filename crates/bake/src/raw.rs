//! A target as one block of one file declares it: every attribute optional, so that blocks of
//! several files, `inherits` and `--set` can be laid over each other with buildx's rules.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::target::{NamedSource, Secret, Target, resolve_path};

/// One declaration of a target; `None` (or an empty map) means "not set here".
#[derive(Clone, Debug, Default)]
pub(crate) struct RawTarget {
    /// The directory of the file that declared the target first: the default context.
    pub dir: PathBuf,
    pub inherits: Vec<String>,
    pub context: Option<PathBuf>,
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub tags: Option<Vec<String>>,
    pub target: Option<String>,
    pub cache_from: Option<Vec<String>>,
    pub cache_to: Option<Vec<String>>,
    pub contexts: BTreeMap<String, NamedSource>,
    pub secrets: Option<Vec<Secret>>,
    pub ssh: Option<Vec<String>>,
    pub no_cache: Option<bool>,
    pub no_cache_filter: Option<Vec<String>>,
    pub pull: Option<bool>,
    pub platforms: Option<Vec<String>>,
    pub outputs: Option<Vec<String>>,
    pub network: Option<String>,
}

impl RawTarget {
    /// A declaration in a file in `dir`.
    pub fn new(dir: PathBuf) -> RawTarget {
        RawTarget {
            dir,
            ..RawTarget::default()
        }
    }

    /// Lays `over` on top, as buildx's `Target.Merge` does: maps merge by key; cache-from,
    /// secrets, ssh and no-cache-filter append what is new; every other attribute `over`
    /// sets replaces ours.
    pub fn merge(&mut self, over: &RawTarget) {
        fn replace<T: Clone>(ours: &mut Option<T>, theirs: &Option<T>) {
            if theirs.is_some() {
                ours.clone_from(theirs);
            }
        }
        fn append<T: Clone + PartialEq>(ours: &mut Option<Vec<T>>, theirs: &Option<Vec<T>>) {
            if let Some(theirs) = theirs {
                add_new(ours, theirs.iter().cloned());
            }
        }
        for parent in &over.inherits {
            if !self.inherits.contains(parent) {
                self.inherits.push(parent.clone());
            }
        }
        replace(&mut self.context, &over.context);
        replace(&mut self.dockerfile, &over.dockerfile);
        replace(&mut self.dockerfile_inline, &over.dockerfile_inline);
        self.args
            .extend(over.args.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.labels
            .extend(over.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.contexts
            .extend(over.contexts.iter().map(|(k, v)| (k.clone(), v.clone())));
        replace(&mut self.tags, &over.tags);
        replace(&mut self.target, &over.target);
        append(&mut self.cache_from, &over.cache_from);
        replace(&mut self.cache_to, &over.cache_to);
        append(&mut self.secrets, &over.secrets);
        append(&mut self.ssh, &over.ssh);
        replace(&mut self.no_cache, &over.no_cache);
        append(&mut self.no_cache_filter, &over.no_cache_filter);
        replace(&mut self.pull, &over.pull);
        replace(&mut self.platforms, &over.platforms);
        replace(&mut self.outputs, &over.outputs);
        replace(&mut self.network, &over.network);
    }

    /// The finished target: defaults filled in (context `.` of the declaring file's
    /// directory, `Dockerfile` in the context).
    pub fn finish(self, name: String) -> Target {
        let context = self.context.unwrap_or_else(|| resolve_path(&self.dir, "."));
        let dockerfile = resolve_path(&context, self.dockerfile.as_deref().unwrap_or("Dockerfile"));
        Target {
            name,
            context,
            dockerfile,
            dockerfile_inline: self.dockerfile_inline,
            args: self.args,
            target: self.target,
            tags: self.tags.unwrap_or_default(),
            labels: self.labels,
            cache_from: self.cache_from.unwrap_or_default(),
            cache_to: self.cache_to.unwrap_or_default(),
            contexts: self.contexts,
            secrets: self.secrets.unwrap_or_default(),
            ssh: self.ssh.unwrap_or_default(),
            no_cache: self.no_cache.unwrap_or(false),
            no_cache_filter: self.no_cache_filter.unwrap_or_default(),
            pull: self.pull.unwrap_or(false),
            platforms: self.platforms.unwrap_or_default(),
            outputs: self.outputs.unwrap_or_default(),
            network: self.network,
        }
    }
}

/// Adds to a list attribute (setting it if unset) the items it does not hold yet.
pub(crate) fn add_new<T: PartialEq>(list: &mut Option<Vec<T>>, items: impl IntoIterator<Item = T>) {
    let list = list.get_or_insert_with(Vec::new);
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}
