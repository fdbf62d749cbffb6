//! What a layer holds: entries with their metadata, and the canonical order the writer puts
//! them in.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rbuild_oci::Digest;

use crate::error::LayerError;

/// Where a regular file's bytes come from when the layer is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// Read from this file on disk at write time, streamed (never whole into memory). The
    /// file must keep its size while it is read.
    Path(PathBuf),
    /// These bytes (heredocs, generated files, whiteout markers).
    Bytes(Vec<u8>),
}

/// What kind of file an [`Entry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File(FileSource),
    /// A directory.
    Dir,
    /// A symbolic link holding this target. Targets are stored as given: absolute ones are
    /// resolved inside the container, never on the host.
    Symlink(String),
    /// A hard link to another entry of the same layer, named by its path. The writer stores
    /// the whole group of links to one file with the content on the first path in byte order
    /// and every other path linking to it, whichever the caller named as the original.
    Hardlink(String),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One file of a layer and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, relative: no leading `/`, no `.` or `..` components, no empty
    /// components, and no trailing `/` on directories.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits with the setuid, setgid and sticky bits (`mode & 0o7777`; any file type
    /// bits are ignored).
    pub mode: u32,
    /// Owner, numeric.
    pub uid: u32,
    /// Group, numeric.
    pub gid: u32,
    /// Modification time in whole seconds since the Unix epoch.
    pub mtime: i64,
    /// Extended attributes, written as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a regular file, the SHA-256 of its content when the caller already knows it (a
    /// COPY from a hashed context): it lets an [`EntryIndex`](crate::EntryIndex) describe
    /// the layer without reading the file. Never checked against the bytes written.
    pub content_digest: Option<Digest>,
}

impl Entry {
    /// An entry owned by root with mtime 0, no xattrs, and mode 0755 for directories, 0777
    /// for symlinks and 0644 for everything else; set the fields to change them.
    pub fn new(path: impl Into<String>, kind: EntryKind) -> Entry {
        let mode = match kind {
            EntryKind::Dir => 0o755,
            EntryKind::Symlink(_) => 0o777,
            _ => 0o644,
        };
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
            content_digest: None,
        }
    }
}

/// Checks that `path` has the shape [`Entry::path`] asks for.
pub(crate) fn check_path(path: &str) -> Result<(), LayerError> {
    let reason = if path.is_empty() {
        "the path is empty; the layer root has no entry of its own"
    } else if path.starts_with('/') {
        "the path must be relative to the layer root: drop the leading '/'"
    } else if path.contains('\0') {
        "the path contains a NUL byte"
    } else if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        "the path has an empty, '.' or '..' component (or a trailing '/'): give it in clean form"
    } else {
        return Ok(());
    };
    Err(LayerError::invalid(path, reason))
}

/// Puts `entries` in the order and shape the tar writer needs, so that the layer depends only
/// on the set of entries: sorted by path in byte order (parents before children), checked, no
/// duplicates, and every group of hard links rewritten so that the content sits on the group's
/// first path and every other member links straight to it.
pub(crate) fn canonical(mut entries: Vec<Entry>) -> Result<Vec<Entry>, LayerError> {
    for entry in &entries {
        check_path(&entry.path)?;
    }
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(LayerError::DuplicateEntry {
            path: pair[0].path.clone(),
        });
    }
    if entries.iter().any(|e| matches!(e.kind, EntryKind::Hardlink(_))) {
        regroup_hardlinks(&mut entries)?;
    }
    Ok(entries)
}

/// Rewrites hard link groups (see [`canonical`]). `entries` is sorted and free of duplicates.
fn regroup_hardlinks(entries: &mut [Entry]) -> Result<(), LayerError> {
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    // The entry holding the data for each hard link: follow chains to a non-link.
    let mut root_of: Vec<Option<usize>> = vec![None; entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        let EntryKind::Hardlink(_) = entry.kind else {
            continue;
        };
        let mut at = i;
        let mut steps = 0;
        while let EntryKind::Hardlink(target) = &entries[at].kind {
            let Some(&next) = index.get(target.as_str()) else {
                return Err(LayerError::invalid(
                    &entry.path,
                    format!(
                        "hard link target {target:?} is not an entry of this layer; add it, or copy the file instead"
                    ),
                ));
            };
            steps += 1;
            if steps > entries.len() {
                return Err(LayerError::invalid(&entry.path, "hard links form a cycle"));
            }
            at = next;
        }
        if matches!(entries[at].kind, EntryKind::Dir) {
            return Err(LayerError::invalid(
                &entry.path,
                format!(
                    "hard link target {:?} is a directory; directories cannot be hard linked",
                    entries[at].path
                ),
            ));
        }
        root_of[i] = Some(at);
    }
    // Members of each group, in path order (entries are sorted, so indices are in order).
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, root) in root_of.iter().enumerate() {
        if let Some(root) = *root {
            groups.entry(root).or_insert_with(|| vec![root]).push(i);
        }
    }
    for (root, mut members) in groups {
        members.sort_unstable();
        let leader = members[0];
        if leader != root {
            // The first path takes the content and metadata; the old holder becomes a link.
            let (low, high) = entries.split_at_mut(root);
            let (a, b) = (&mut low[leader], &mut high[0]);
            std::mem::swap(&mut a.kind, &mut b.kind);
            std::mem::swap(&mut a.mode, &mut b.mode);
            std::mem::swap(&mut a.uid, &mut b.uid);
            std::mem::swap(&mut a.gid, &mut b.gid);
            std::mem::swap(&mut a.mtime, &mut b.mtime);
            std::mem::swap(&mut a.xattrs, &mut b.xattrs);
        }
        let leader_path = entries[leader].path.clone();
        for &member in &members[1..] {
            entries[member].kind = EntryKind::Hardlink(leader_path.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> Entry {
        Entry::new(path, EntryKind::File(FileSource::Bytes(b"x".to_vec())))
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry::new(path, EntryKind::Hardlink(target.to_owned()))
    }

    #[test]
    fn rejects_unclean_paths() {
        for bad in ["", "/a", "a/", "a//b", "./a", "a/./b", "a/../b", "..", "a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", ".wh.a", "a/.wh..wh..opq", "...", "a b/ü"] {
            check_path(good).unwrap();
        }
    }

    #[test]
    fn sorts_in_byte_order_with_parents_first() {
        let entries = vec![
            file("a/b"),
            file("a-b"),
            Entry::new("a", EntryKind::Dir),
            file("B"),
        ];
        let paths: Vec<_> = canonical(entries).unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["B", "a", "a-b", "a/b"]);
    }

    #[test]
    fn refuses_duplicates() {
        let err = canonical(vec![file("a"), file("b"), file("a")]).unwrap_err();
        assert!(matches!(err, LayerError::DuplicateEntry { path } if path == "a"));
    }

    #[test]
    fn moves_hardlink_content_to_the_first_path() {
        let mut original = file("z");
        original.mode = 0o4755;
        let entries = canonical(vec![original, link("m", "z"), link("a", "m")]).unwrap();
        assert_eq!(entries[0].path, "a");
        assert_eq!(entries[0].kind, EntryKind::File(FileSource::Bytes(b"x".to_vec())));
        assert_eq!(entries[0].mode, 0o4755);
        assert_eq!(entries[1].kind, EntryKind::Hardlink("a".to_owned()));
        assert_eq!(entries[2].kind, EntryKind::Hardlink("a".to_owned()));
    }

    #[test]
    fn refuses_bad_hardlinks() {
        assert!(canonical(vec![link("a", "missing")]).is_err());
        assert!(canonical(vec![link("a", "b"), link("b", "a")]).is_err());
        assert!(canonical(vec![Entry::new("d", EntryKind::Dir), link("l", "d")]).is_err());
    }
}
