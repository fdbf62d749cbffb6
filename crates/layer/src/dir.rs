//! A directory as layer entries: for a COPY of an extracted archive, and for the upper
//! directory of an overlay after a RUN, where overlayfs' own whiteout format is turned into
//! the OCI one (a 0/0 character device → `.wh.<name>`, an opaque directory →
//! `.wh..wh..opq`), as containerd's differ does.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::entry::{Entry, EntryKind, FileSource};
use crate::error::LayerError;

/// How to read a directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirOptions {
    /// Convert overlayfs whiteouts and opaque directories to OCI whiteout entries.
    pub overlay_whiteouts: bool,
}

const OPAQUE: &str = "trusted.overlay.opaque";

fn whiteout(path: String) -> Entry {
    Entry {
        path,
        kind: EntryKind::File(FileSource::Bytes(Vec::new())),
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    }
}

fn read_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            // Overlay bookkeeping is not file content.
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            if let Ok(Some(value)) = xattr::get(path, &name) {
                xattrs.insert(name, value);
            }
        }
    }
    xattrs
}

/// The kernel's split of a device number into major and minor.
fn split_device(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (
        u32::try_from(major).unwrap_or(u32::MAX),
        u32::try_from(minor).unwrap_or(u32::MAX),
    )
}

/// Every entry below `root` (not `root` itself), in path order. Files sharing an inode become
/// one file and hard links to it.
pub fn entries_from_dir(root: &Path, options: &DirOptions) -> Result<Vec<Entry>, LayerError> {
    let mut entries = Vec::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    walk(root, "", options, &mut entries, &mut inodes)?;
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(entries)
}

fn walk(
    dir: &Path,
    prefix: &str,
    options: &DirOptions,
    entries: &mut Vec<Entry>,
    inodes: &mut HashMap<(u64, u64), String>,
) -> Result<(), LayerError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| LayerError::io("reading directory", dir, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    names.sort();
    for name in names {
        let full = dir.join(&name);
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&full).map_err(|e| LayerError::io("reading", &full, e))?;
        let file_type = meta.file_type();
        if options.overlay_whiteouts && file_type.is_char_device() && meta.rdev() == 0 {
            let parent = prefix.to_owned();
            let wh = if parent.is_empty() {
                format!(".wh.{name}")
            } else {
                format!("{parent}/.wh.{name}")
            };
            entries.push(whiteout(wh));
            continue;
        }
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| LayerError::io("reading", &full, e))?;
            EntryKind::Symlink(target.to_string_lossy().into_owned())
        } else if file_type.is_file() {
            let key = (meta.dev(), meta.ino());
            match inodes.get(&key) {
                Some(first) if meta.nlink() > 1 => EntryKind::Hardlink(first.clone()),
                _ => {
                    if meta.nlink() > 1 {
                        inodes.insert(key, path.clone());
                    }
                    EntryKind::File(FileSource::Path(full.clone()))
                }
            }
        } else if file_type.is_char_device() || file_type.is_block_device() {
            let (major, minor) = split_device(meta.rdev());
            if file_type.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else {
            // Sockets belong to a running process, not to an image.
            continue;
        };
        let is_dir = matches!(kind, EntryKind::Dir);
        entries.push(Entry {
            path: path.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            xattrs: read_xattrs(&full),
        });
        if is_dir {
            if options.overlay_whiteouts && matches!(xattr::get(&full, OPAQUE), Ok(Some(v)) if v == b"y") {
                entries.push(whiteout(format!("{path}/.wh..wh..opq")));
            }
            walk(&full, &path, options, entries, inodes)?;
        }
    }
    Ok(())
}
