//! A selection laid out at its destination as layer entries, on a cache miss: with the
//! stage's filesystem below (does the destination exist as a directory? which parents exist,
//! with what owner and mode?), `--chown`, `--chmod` and `--parents` applied.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use rbuild_dockerfile::paths::clean_under_root;
use rbuild_dockerfile::plan::{Chmod, CopyStep, Mode};
use rbuild_layer::{Entry, EntryKind, FileSource};

use crate::chmod::apply_symbolic;
use crate::error::{BuildError, Result};
use crate::owner::Owner;
use crate::rootfs::RootfsView;

use super::select::{NodeKind, Selected, Selection};

/// How to lay a selection out.
pub struct Layout<'a> {
    /// The step.
    pub step: &'a CopyStep,
    /// `--chown`: who owns what is written; `None` keeps each node's own owner (or root's).
    pub owner: Option<Owner>,
    /// The stage's filesystem before the step (`None` for `--link`, which must not look).
    pub below: Option<&'a RootfsView>,
    /// The mtime of files made from heredocs and of directories the copy creates.
    pub now: i64,
}

fn final_mode(chmod: Option<&Chmod>, mode: u32, is_dir: bool) -> Result<u32> {
    match chmod.map(|c| (&c.mode, &c.text)) {
        None => Ok(mode),
        Some((Mode::Octal(m), _)) => Ok(*m),
        Some((Mode::Symbolic(s), text)) => {
            apply_symbolic(s, mode, is_dir).ok_or_else(|| BuildError::InvalidChmod(text.clone()))
        }
    }
}

/// Lays a selection out at the step's destination as layer entries.
pub fn entries(selection: &Selection, layout: &Layout<'_>) -> Result<Vec<Entry>> {
    let step = layout.step;
    let chmod = step.chmod.as_ref();
    let dest = &step.dest_path;
    let dest_clean = clean_under_root(dest);
    let sources = step.sources.len() + step.inline.len();
    if sources > 1 && !dest.ends_with('/') {
        return Err(BuildError::DestinationNotDirectory(step.dest.clone()));
    }
    let existing_dir = layout
        .below
        .and_then(|view| view.resolve(&dest_clean, true).ok().flatten())
        .filter(|found| found.is_dir());
    let dest_is_dir = dest.ends_with('/')
        || selection.roots.len() + selection.inline.len() > 1
        || existing_dir.is_some()
        || selection.roots.iter().any(Selected::root_is_dir);
    // A destination that is a link to a directory receives the files where the link points.
    let dest_dir = existing_dir.map_or(dest_clean.clone(), |found| found.path);

    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let entry = |path: String, kind: EntryKind, mode: u32, mtime: i64, node_owner: Option<Owner>| {
        let owner = layout.owner.or(node_owner).unwrap_or(Owner::ROOT);
        Entry {
            path,
            kind,
            mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime,
            xattrs: BTreeMap::new(),
            content_digest: None,
        }
    };
    let join = |dir: &str, name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };

    for root in &selection.roots {
        let root_is_dir = root.root_is_dir();
        let base = if step.parents {
            let kept = root.path.splitn(root.pivot + 1, '/').last().unwrap_or_default();
            let parent = if root_is_dir {
                kept
            } else {
                kept.rsplit_once('/').map_or("", |(p, _)| p)
            };
            let base = join(&dest_dir, parent);
            if root_is_dir {
                base
            } else {
                join(&base, &root.name)
            }
        } else if root_is_dir {
            dest_dir.clone()
        } else if dest_is_dir {
            join(&dest_dir, &root.name)
        } else {
            dest_clean.clone()
        };
        for node in root.nodes()?.iter() {
            let path = if node.relative.is_empty() {
                base.clone()
            } else {
                join(&base, &node.relative)
            };
            if path.is_empty() {
                continue;
            }
            let existing_root_dir = node.relative.is_empty()
                && matches!(node.kind, NodeKind::Dir)
                && layout
                    .below
                    .and_then(|view| view.lookup(&path))
                    .is_some_and(|f| f.is_dir());
            if existing_root_dir {
                // Copying a directory's contents into one that exists leaves it as it is.
                continue;
            }
            if node.relative.is_empty() && matches!(node.kind, NodeKind::Dir) {
                // Only the contents are copied: a new destination directory is made the way
                // missing parents are (0755, the `--chown` user), not with the source's mode
                // and owner — BuildKit's rule, whatever `cp -a` would do.
                out.insert(path.clone(), entry(path, EntryKind::Dir, 0o755, layout.now, None));
                continue;
            }
            let (kind, mode, digest) = match &node.kind {
                NodeKind::File { disk, digest } => (
                    EntryKind::File(FileSource::Path(disk.clone())),
                    final_mode(chmod, node.mode, false)?,
                    Some(digest.clone()),
                ),
                NodeKind::Dir => (EntryKind::Dir, final_mode(chmod, node.mode, true)?, None),
                NodeKind::Symlink(target) => (EntryKind::Symlink(target.clone()), 0o777, None),
            };
            let entry = Entry {
                content_digest: digest,
                ..entry(path.clone(), kind, mode, node.mtime, node.owner)
            };
            out.insert(path, entry);
        }
    }
    for (name, content) in &selection.inline {
        let path = if dest_is_dir {
            join(&dest_dir, name)
        } else {
            dest_clean.clone()
        };
        let mode = final_mode(chmod, 0o644, false)?;
        out.insert(
            path.clone(),
            entry(
                path,
                EntryKind::File(FileSource::Bytes(content.clone().into_bytes())),
                mode,
                layout.now,
                None,
            ),
        );
    }

    add_parents(
        &mut out,
        layout.below,
        layout.owner.unwrap_or(Owner::ROOT),
        layout.now,
    );
    Ok(out.into_values().collect())
}

/// Adds every missing parent directory of the entries in `out`: with the owner, mode and
/// mtime it already has in `below` (so writing into `/tmp` keeps it 1777), or as a new 0755
/// directory belonging to `owner` (BuildKit creates destination directories as the
/// `--chown` user).
pub fn add_parents(out: &mut BTreeMap<String, Entry>, below: Option<&RootfsView>, owner: Owner, now: i64) {
    let mut parents: Vec<String> = Vec::new();
    for path in out.keys() {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !out.contains_key(parent) {
                parents.push(parent.to_owned());
            }
            at = parent;
        }
    }
    parents.sort();
    parents.dedup();
    for parent in parents {
        let existing = below.and_then(|view| view.lookup(&parent)).filter(|f| f.is_dir());
        let (mode, uid, gid, mtime) = match existing {
            Some(found) => (
                found.meta.mode() & 0o7777,
                found.meta.uid(),
                found.meta.gid(),
                found.meta.mtime(),
            ),
            None => (0o755, owner.uid, owner.gid, now),
        };
        out.insert(
            parent.clone(),
            Entry {
                path: parent,
                kind: EntryKind::Dir,
                mode,
                uid,
                gid,
                mtime,
                xattrs: BTreeMap::new(),
                content_digest: None,
            },
        );
    }
}
