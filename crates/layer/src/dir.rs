//! Directories to layer entries: for `COPY` of a directory, an `ADD` archive extracted to a
//! temporary directory, and the upper directory of an overlay after a `RUN`.
//!
//! With [`DirOptions::overlay_whiteouts`], overlayfs's own markers become OCI whiteouts the way
//! containerd's and BuildKit's overlay differs write them: a 0/0 character device `x` becomes
//! an empty regular file `.wh.x` (mode 0, owner 0:0, mtime 0, as containerd 2 writes
//! whiteouts), and a directory with `trusted.overlay.opaque=y` (or `user.overlay.opaque=y`,
//! rootless) gets an opaque marker `.wh..wh..opq` inside it (same metadata). Directories that
//! overlayfs renamed (`redirect_dir`) or files whose data stayed in a lower layer (`metacopy`)
//! cannot be described by a diff of the upper directory alone, so they are errors, as in
//! BuildKit. overlayfs's private attributes are never copied into the layer.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::entry::{Entry, EntryKind, FileSource};
use crate::error::LayerError;

/// Which extended attributes [`entries_from_dir`] records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XattrPolicy {
    /// Only `security.capability` (file capabilities, as for `ping`), like docker and
    /// containerd.
    #[default]
    Capabilities,
    /// All of them, except `security.selinux` (a property of the host, relabelled on the
    /// target) and overlayfs's private `trusted.overlay.*` / `user.overlay.*`.
    All,
    /// None.
    None,
}

/// How to read a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// The directory is an overlayfs upper directory: turn its whiteouts and opaque
    /// directories into OCI ones (see the module documentation).
    pub overlay_whiteouts: bool,
}

/// The entries for everything below `root` (not `root` itself), with paths relative to it,
/// sorted by path. Metadata is read without following links; file contents are not read now
/// but by [`write_layer`](crate::write_layer) (as [`FileSource::Path`]). Files with several
/// links inside `root` become one file and hard links to it; sockets are skipped.
///
/// Names must be UTF-8 (entry paths are text): a name that is not is an error naming it.
///
/// Only the `security.capability` extended attribute is recorded, as docker and containerd
/// do; see [`entries_from_dir_with`] for the others.
pub fn entries_from_dir(root: &Path, options: &DirOptions) -> Result<Vec<Entry>, LayerError> {
    entries_from_dir_with(root, options, XattrPolicy::Capabilities)
}

/// [`entries_from_dir`], recording the extended attributes `xattrs` selects.
pub fn entries_from_dir_with(
    root: &Path,
    options: &DirOptions,
    xattrs: XattrPolicy,
) -> Result<Vec<Entry>, LayerError> {
    let meta = fs::symlink_metadata(root).map_err(|e| LayerError::io("reading", root, e))?;
    if !meta.is_dir() {
        return Err(LayerError::Directory {
            path: root.to_owned(),
            reason: "is not a directory".to_owned(),
        });
    }
    let mut entries = Vec::new();
    // (dev, inode) → index of the first entry seen with it.
    let mut inodes: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_owned(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let listing = fs::read_dir(&dir).map_err(|e| LayerError::io("listing", &dir, e))?;
        for child in listing {
            let child = child.map_err(|e| LayerError::io("listing", &dir, e))?;
            let disk = child.path();
            let name = child.file_name();
            let name = name.to_str().ok_or_else(|| LayerError::Directory {
                path: disk.clone(),
                reason: "the name is not UTF-8; layer paths are text, so rename it".to_owned(),
            })?;
            let path = if relative.is_empty() {
                name.to_owned()
            } else {
                format!("{relative}/{name}")
            };
            let meta = fs::symlink_metadata(&disk)
                .map_err(|e| LayerError::io("reading the metadata of", &disk, e))?;
            let file_type = meta.file_type();
            if file_type.is_socket() {
                continue;
            }
            if options.overlay_whiteouts && file_type.is_char_device() && meta.rdev() == 0 {
                entries.push(marker(whiteout_path(&relative, name)));
                continue;
            }
            let kind = if file_type.is_dir() {
                if options.overlay_whiteouts {
                    check_overlay_dir(&disk)?;
                    if is_opaque(&disk)? {
                        entries.push(marker(format!("{path}/.wh..wh..opq")));
                    }
                }
                pending.push((disk.clone(), path.clone()));
                EntryKind::Dir
            } else if file_type.is_symlink() {
                let target =
                    fs::read_link(&disk).map_err(|e| LayerError::io("reading the link", &disk, e))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| LayerError::Directory {
                        path: disk.clone(),
                        reason: "the link target is not UTF-8; layer link targets are text".to_owned(),
                    })?;
                EntryKind::Symlink(target)
            } else if file_type.is_file() {
                if options.overlay_whiteouts && get_xattr(&disk, "trusted.overlay.metacopy")?.is_some() {
                    return Err(LayerError::Directory {
                        path: disk,
                        reason: "overlayfs metacopy is on (the data is in a lower layer): mount the overlay with metacopy=off".to_owned(),
                    });
                }
                EntryKind::File(FileSource::Path(disk.clone()))
            } else if file_type.is_char_device() || file_type.is_block_device() {
                let (major, minor) = (rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev()));
                if file_type.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            } else if file_type.is_fifo() {
                EntryKind::Fifo
            } else {
                continue;
            };
            if !file_type.is_dir() && meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(entries.len());
            }
            entries.push(Entry {
                path,
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                xattrs: read_xattrs(&disk, xattrs)?,
                content_digest: None,
            });
        }
    }
    // Hard links: the first path in byte order keeps the content, the others link to it.
    for members in inodes.values().filter(|m| m.len() > 1) {
        let leader = members
            .iter()
            .copied()
            .min_by(|&a, &b| entries[a].path.as_bytes().cmp(entries[b].path.as_bytes()))
            .unwrap_or(members[0]);
        let target = entries[leader].path.clone();
        for &member in members.iter().filter(|&&m| m != leader) {
            entries[member].kind = EntryKind::Hardlink(target.clone());
        }
    }
    entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(entries)
}

/// The empty file that stands for a whiteout or an opaque marker.
pub(crate) fn marker(path: String) -> Entry {
    Entry {
        mode: 0,
        ..Entry::new(path, EntryKind::File(FileSource::Bytes(Vec::new())))
    }
}

fn whiteout_path(relative: &str, name: &str) -> String {
    if relative.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{relative}/.wh.{name}")
    }
}

fn check_overlay_dir(disk: &Path) -> Result<(), LayerError> {
    if get_xattr(disk, "trusted.overlay.redirect")?.is_some()
        || get_xattr(disk, "user.overlay.redirect")?.is_some()
    {
        return Err(LayerError::Directory {
            path: disk.to_owned(),
            reason: "overlayfs redirect_dir is on (a directory was renamed): mount the overlay with redirect_dir=off".to_owned(),
        });
    }
    Ok(())
}

fn is_opaque(disk: &Path) -> Result<bool, LayerError> {
    for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if get_xattr(disk, key)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An attribute's value, `None` when it is not set or the filesystem has none.
fn get_xattr(disk: &Path, name: &str) -> Result<Option<Vec<u8>>, LayerError> {
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(disk, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(rustix::io::Errno::RANGE) if value.len() < 1 << 20 => {
                let len = value.len() * 4;
                value.resize(len, 0);
            }
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            // Unprivileged users may not read trusted.*: then it cannot be set either.
            Err(rustix::io::Errno::PERM) if name.starts_with("trusted.") => return Ok(None),
            Err(e) => return Err(LayerError::io("reading extended attributes of", disk, e.into())),
        }
    }
}

fn read_xattrs(disk: &Path, policy: XattrPolicy) -> Result<BTreeMap<String, Vec<u8>>, LayerError> {
    let mut out = BTreeMap::new();
    match policy {
        XattrPolicy::None => {}
        XattrPolicy::Capabilities => {
            if let Some(value) = get_xattr(disk, "security.capability")? {
                out.insert("security.capability".to_owned(), value);
            }
        }
        XattrPolicy::All => {
            for name in list_xattrs(disk)? {
                let private = name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
                if name == "security.selinux" || private {
                    continue;
                }
                if let Some(value) = get_xattr(disk, &name)? {
                    out.insert(name, value);
                }
            }
        }
    }
    Ok(out)
}

fn list_xattrs(disk: &Path) -> Result<Vec<String>, LayerError> {
    let mut names = vec![0u8; 256];
    let n = loop {
        match rustix::fs::llistxattr(disk, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => {
                let len = names.len() * 4;
                names.resize(len, 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(LayerError::io("listing extended attributes of", disk, e.into())),
        }
    };
    names[..n]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            std::str::from_utf8(name)
                .map(str::to_owned)
                .map_err(|_| LayerError::Directory {
                    path: disk.to_owned(),
                    reason: format!(
                        "extended attribute name {:?} is not UTF-8",
                        OsStr::from_bytes(name)
                    ),
                })
        })
        .collect()
}
