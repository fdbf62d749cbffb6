//! Every file's groups and targets merged in file order, before selection and `inherits`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::BakeError;
use crate::raw::RawTarget;

/// The merged declarations of all files read.
#[derive(Default)]
pub(crate) struct Config {
    /// The files read, in order (for errors).
    pub files: Vec<PathBuf>,
    /// Groups: their members in declaration order, same-named groups appended.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Targets, same-named declarations merged (later files win).
    pub targets: BTreeMap<String, RawTarget>,
}

impl Config {
    /// Adds (or lays over an earlier) declaration of target `name`.
    pub fn add_target(&mut self, name: String, target: RawTarget) {
        match self.targets.get_mut(&name) {
            Some(earlier) => earlier.merge(&target),
            None => {
                self.targets.insert(name, target);
            }
        }
    }

    /// Adds members to group `name`, skipping ones it already has.
    pub fn add_group(&mut self, name: String, members: Vec<String>) {
        let group = self.groups.entry(name).or_default();
        for member in members {
            if !group.contains(&member) {
                group.push(member);
            }
        }
    }

    /// The files read, for messages.
    pub fn file_list(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        names.join(", ")
    }
}

/// Refuses a group or target name outside buildx's `[a-zA-Z0-9_-]+`.
pub(crate) fn check_name(path: &Path, name: &str) -> Result<(), BakeError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(BakeError::InvalidName {
            path: path.to_owned(),
            name: name.to_owned(),
        })
    }
}
