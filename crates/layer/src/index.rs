//! What an unpacked layer holds, entry by entry, and what must be unpacked over an earlier
//! layer's snapshot to show a new one.
//!
//! Rebuilding after a one-file change writes a layer that repeats thousands of entries of
//! the layer the same step made before. Unpacking it whole costs a directory entry per file
//! even when every file is hard-linked from a pool; overlaying only the difference on the
//! earlier snapshot costs nothing per unchanged file. [`EntryIndex`] names each entry by a
//! fingerprint of everything its unpacked form depends on (path, type, mode, owner, clamped
//! mtime, extended attributes, link target or device, content digest), computed from the
//! entries alone — without reading a file — when their content digests are known.
//! [`delta`] then lists what a snapshot stacked on the earlier one must hold so that the
//! two, merged the way overlayfs merges layers, show exactly the new layer: the changed and
//! new entries, the directories above them, and whiteouts for what is gone.

use std::collections::{HashMap, HashSet};

use sha2::{Digest as _, Sha256};

use crate::dir::marker;
use crate::entry::{Entry, EntryKind, FileSource};

/// A fingerprint: SHA-256 of one entry's unpacked form.
type Fingerprint = [u8; 32];

/// The entries of a layer by path, each with its fingerprint, in path byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryIndex {
    entries: Vec<(String, Fingerprint)>,
}

impl EntryIndex {
    /// The index of a layer made of `entries` with mtimes clamped to `epoch`, or `None`
    /// when it cannot be told from the entries: a file whose content digest is unknown, a
    /// hard link (its unpacked form depends on another entry), or a directory not listed
    /// whose entries are (a delta could not give it the layer's metadata). Layers with
    /// whiteouts have none either: a delta could not remove a whiteout.
    pub fn of(entries: &[Entry], epoch: Option<i64>) -> Option<EntryIndex> {
        if entries
            .iter()
            .any(|e| e.path.split('/').any(|c| c.starts_with(".wh.")))
        {
            return None;
        }
        let mut indexed = entries
            .iter()
            .map(|entry| Some((entry.path.clone(), fingerprint(entry, epoch)?)))
            .collect::<Option<Vec<_>>>()?;
        indexed.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let dirs: HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Dir)
            .map(|e| e.path.as_str())
            .collect();
        let parents_listed = entries
            .iter()
            .all(|e| parent(&e.path).is_none_or(|p| dirs.contains(p)));
        parents_listed.then_some(EntryIndex { entries: indexed })
    }

    /// How many entries it lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it lists none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A compact form: per entry the path's length (u32, little-endian), the path and the
    /// fingerprint.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, fingerprint) in &self.entries {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(fingerprint);
        }
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes)' form; `None` when it is not that.
    pub fn from_bytes(mut bytes: &[u8]) -> Option<EntryIndex> {
        let mut entries = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let (path, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
            let (fingerprint, rest) = rest.split_first_chunk::<32>()?;
            entries.push((String::from_utf8(path.to_vec()).ok()?, *fingerprint));
            bytes = rest;
        }
        Some(EntryIndex { entries })
    }
}

/// What a snapshot stacked on `base`'s must hold to show the layer of `entries` (whose index
/// is `now`): every entry that is new or changed, every directory above one (with the
/// layer's metadata, which the merged view shows), and a whiteout for each path of `base`
/// that is gone, at the highest such path only.
pub fn delta<'a>(entries: &'a [Entry], now: &EntryIndex, base: &EntryIndex) -> Vec<Entry> {
    let before: HashMap<&str, &Fingerprint> = base.entries.iter().map(|(p, f)| (p.as_str(), f)).collect();
    let by_path: HashMap<&str, &'a Entry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut wanted: HashSet<&'a str> = HashSet::new();
    let want_with_parents = |path: &str, wanted: &mut HashSet<&'a str>| {
        let mut next = Some(path);
        while let Some(path) = next {
            let Some(entry) = by_path.get(path) else { break };
            if !wanted.insert(entry.path.as_str()) {
                break;
            }
            next = parent(path);
        }
    };
    for (path, fingerprint) in &now.entries {
        if before.get(path.as_str()) != Some(&fingerprint) {
            want_with_parents(path, &mut wanted);
        }
    }
    let mut whiteouts = Vec::new();
    for (path, _) in &base.entries {
        if by_path.contains_key(path.as_str()) {
            continue;
        }
        // Below a directory that is gone too, or that became a file or a link, the
        // higher change hides it already.
        let parent_stays = match parent(path) {
            None => true,
            Some(dir) => by_path.get(dir).is_some_and(|e| e.kind == EntryKind::Dir),
        };
        if parent_stays {
            if let Some(dir) = parent(path) {
                want_with_parents(dir, &mut wanted);
            }
            let name = path.rsplit('/').next().unwrap_or(path);
            whiteouts.push(marker(match parent(path) {
                Some(dir) => format!("{dir}/.wh.{name}"),
                None => format!(".wh.{name}"),
            }));
        }
    }
    entries
        .iter()
        .filter(|e| wanted.contains(e.path.as_str()))
        .cloned()
        .chain(whiteouts)
        .collect()
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// The fingerprint of `entry` as it unpacks with mtimes clamped to `epoch`.
fn fingerprint(entry: &Entry, epoch: Option<i64>) -> Option<Fingerprint> {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(entry.path.as_bytes());
    match &entry.kind {
        EntryKind::File(FileSource::Bytes(bytes)) => {
            field(b"file");
            field(&Sha256::digest(bytes));
        }
        EntryKind::File(FileSource::Path(_)) => {
            let digest = entry.content_digest.as_ref()?;
            field(b"file");
            field(digest.to_string().as_bytes());
        }
        EntryKind::Dir => field(b"dir"),
        EntryKind::Symlink(target) => {
            field(b"symlink");
            field(target.as_bytes());
        }
        EntryKind::Hardlink(_) => return None,
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            field(if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                b"char"
            } else {
                b"block"
            });
            field(&major.to_le_bytes());
            field(&minor.to_le_bytes());
        }
        EntryKind::Fifo => field(b"fifo"),
    }
    field(&entry.mode.to_le_bytes());
    field(&entry.uid.to_le_bytes());
    field(&entry.gid.to_le_bytes());
    let mtime = epoch.map_or(entry.mtime, |epoch| entry.mtime.min(epoch));
    field(&mtime.to_le_bytes());
    for (name, value) in &entry.xattrs {
        field(name.as_bytes());
        field(value);
    }
    Some(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use rbuild_oci::Digest;

    use super::*;

    fn dir(path: &str) -> Entry {
        Entry::new(path, EntryKind::Dir)
    }

    fn file(path: &str, content: &[u8]) -> Entry {
        Entry {
            content_digest: Some(Digest::sha256_of(content)),
            ..Entry::new(
                path,
                EntryKind::File(FileSource::Path(format!("/src/{path}").into())),
            )
        }
    }

    /// Entries from `dir/` and `file=content` words.
    fn tree(spec: &str) -> Vec<Entry> {
        spec.split_whitespace()
            .map(|word| match word.split_once('=') {
                Some((path, content)) => file(path, content.as_bytes()),
                None => dir(word.trim_end_matches('/')),
            })
            .collect()
    }

    fn paths(entries: &[Entry]) -> Vec<&str> {
        let mut paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        paths
    }

    #[test]
    fn a_delta_holds_what_changed_the_directories_above_it_and_whiteouts() {
        let kept = "app/ app/a/ app/a/same=1 app/b/ app/b/same=2";
        let before = tree(&format!(
            "{kept} app/a/edited=old app/gone/ app/gone/x=x app/removed=r app/was-dir/ app/was-dir/y=y"
        ));
        let after = tree(&format!("{kept} app/a/edited=new app/b/added=+ app/was-dir=file"));
        let base = EntryIndex::of(&before, None).unwrap();
        let now = EntryIndex::of(&after, None).unwrap();
        let delta = delta(&after, &now, &base);
        assert_eq!(
            paths(&delta),
            [
                "app",
                "app/.wh.gone",
                "app/.wh.removed",
                "app/a",
                "app/a/edited",
                "app/b",
                "app/b/added",
                "app/was-dir",
            ]
        );
        let marker = delta.iter().find(|e| e.path == "app/.wh.gone").unwrap();
        assert_eq!(marker.mode, 0);
    }

    #[test]
    fn metadata_counts_and_an_unchanged_layer_needs_nothing() {
        let before = vec![dir("d"), file("d/f", b"x")];
        let base = EntryIndex::of(&before, None).unwrap();
        assert!(delta(&before, &base, &base).is_empty());

        let mut chmodded = before.clone();
        chmodded[1].mode = 0o600;
        let now = EntryIndex::of(&chmodded, None).unwrap();
        assert_eq!(paths(&delta(&chmodded, &now, &base)), ["d", "d/f"]);

        // Clamping to SOURCE_DATE_EPOCH hides a change between two later mtimes.
        let (mut early, mut late) = (before.clone(), before.clone());
        early[1].mtime = 1_500;
        late[1].mtime = 2_000;
        let clamped = |entries: &[Entry]| EntryIndex::of(entries, Some(1_000)).unwrap();
        assert!(delta(&late, &clamped(&late), &clamped(&early)).is_empty());
    }

    #[test]
    fn no_index_without_content_digests_listed_parents_or_with_hard_links() {
        let unknown = Entry::new("f", EntryKind::File(FileSource::Path("/src/f".into())));
        assert_eq!(EntryIndex::of(&[unknown], None), None);
        assert_eq!(EntryIndex::of(&[file("d/f", b"x")], None), None);
        let link = Entry::new("b", EntryKind::Hardlink("a".into()));
        assert_eq!(EntryIndex::of(&[file("a", b"x"), link], None), None);
    }

    #[test]
    fn round_trips_through_bytes() {
        let index = EntryIndex::of(&[dir("d"), file("d/f", b"x")], None).unwrap();
        assert_eq!(EntryIndex::from_bytes(&index.to_bytes()), Some(index));
        assert_eq!(EntryIndex::from_bytes(&[1, 0, 0]), None);
    }
}
