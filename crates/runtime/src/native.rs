//! The copy-based ("native") snapshotter, for hosts where overlayfs cannot be mounted: inside
//! a container whose own root is an overlay, under some security policies, or with more
//! layers than one mount's options can name.
//!
//! [`copy_layers`] copies the layer snapshots into a plain directory, base first, applying
//! their whiteouts and opaque directories as overlayfs would show them. [`Baseline::record`]
//! then remembers every path's inode and change time, and after the command [`write_upper`]
//! compares the directory with that record and writes the differences as an overlayfs upper
//! directory — the same files, whiteouts and opaque markers an overlay would have collected —
//! so everything after the run cannot tell which snapshotter made it.
//!
//! Comparing against the record rather than against a second copy (as containerd's native
//! differ does, with stat and content) needs no content reads: the kernel sets a file's change
//! time on every write, chmod, chown, xattr or link change, and no system call can set it back,
//! so a path with its inode (number and birth time) and change time unchanged is unchanged.
//! runc's start-up alone outlasts the clock's granularity between the copy and the command's
//! first write.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use crate::RunError;

/// overlayfs's private attributes: markers in the snapshots, never copied into a root.
const OVERLAY_XATTRS: [&str; 2] = ["trusted.overlay.", "user.overlay."];

fn io_error(what: &str, path: &Path, e: impl Into<std::io::Error>) -> RunError {
    RunError::io(format!("{what} {}", path.display()), e.into())
}

fn lstat(path: &Path) -> Result<Metadata, RunError> {
    fs::symlink_metadata(path).map_err(|e| io_error("reading", path, e))
}

fn read_dir(path: &Path) -> Result<Vec<(OsString, Metadata)>, RunError> {
    fs::read_dir(path)
        .and_then(|entries| {
            entries
                .map(|entry| entry.and_then(|e| Ok((e.file_name(), e.metadata()?))))
                .collect()
        })
        .map_err(|e| io_error("listing", path, e))
}

/// A 0/0 character device: overlayfs's mark for a path deleted from the layers below.
fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|key| matches!(xattr::get(dir, key), Ok(Some(v)) if v == b"y"))
}

fn remove(path: &Path, meta: &Metadata) -> Result<(), RunError> {
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| io_error("removing", path, e))
}

/// Copies owner, mode, extended attributes and times of `src` (described by `meta`) to `dst`,
/// in the order that keeps them: chown clears set-id bits and capabilities, so it goes first.
fn copy_metadata(src: &Path, meta: &Metadata, dst: &Path) -> Result<(), RunError> {
    rustix::fs::chownat(
        CWD,
        dst,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_error("changing the owner of", dst, e))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| io_error("changing the mode of", dst, e))?;
    }
    for name in xattr::list(src).map_err(|e| io_error("listing attributes of", src, e))? {
        let key = name.to_string_lossy();
        if OVERLAY_XATTRS.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        if let Some(value) = xattr::get(src, &name).map_err(|e| io_error("reading attributes of", src, e))? {
            xattr::set(dst, &name, &value).map_err(|e| io_error("setting attributes of", dst, e))?;
        }
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec() as _,
        },
    };
    rustix::fs::utimensat(CWD, dst, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_error("setting the times of", dst, e))
}

/// Copies one non-directory (content, link target or device number, and metadata) to `dst`,
/// which must not exist. Sockets are skipped: nothing can be bound through a copy.
fn copy_node(src: &Path, meta: &Metadata, dst: &Path) -> Result<(), RunError> {
    let kind = meta.file_type();
    if kind.is_file() {
        fs::copy(src, dst).map(drop)
    } else if kind.is_symlink() {
        fs::read_link(src).and_then(|target| std::os::unix::fs::symlink(target, dst))
    } else if kind.is_socket() {
        return Ok(());
    } else {
        let file_type = if kind.is_fifo() {
            FileType::Fifo
        } else if kind.is_char_device() {
            FileType::CharacterDevice
        } else {
            FileType::BlockDevice
        };
        rustix::fs::mknodat(CWD, dst, file_type, Mode::empty(), meta.rdev()).map_err(Into::into)
    }
    .map_err(|e| io_error("copying", src, e))?;
    copy_metadata(src, meta, dst)
}

/// Copies `layers` (snapshot directories in overlayfs lower format, base first) into `root`,
/// as an overlay of them would show.
pub fn copy_layers(layers: &[PathBuf], root: &Path) -> Result<(), RunError> {
    layers
        .iter()
        .try_for_each(|layer| apply_layer(layer, root, Path::new("")))
}

/// Applies the directory `rel` of one layer onto `root`. Nothing already in `root` is
/// followed: whatever stands where the layer has something else is removed first, so a
/// symlink in a lower layer cannot redirect a copy outside `root`.
fn apply_layer(layer: &Path, root: &Path, rel: &Path) -> Result<(), RunError> {
    for (name, meta) in read_dir(&layer.join(rel))? {
        let child = rel.join(&name);
        let (src, dst) = (layer.join(&child), root.join(&child));
        let existing = fs::symlink_metadata(&dst).ok();
        if is_whiteout(&meta) {
            if let Some(existing) = existing {
                remove(&dst, &existing)?;
            }
        } else if meta.is_dir() {
            match existing {
                Some(existing) if existing.is_dir() => {
                    if is_opaque(&src) {
                        remove(&dst, &existing)?;
                        fs::create_dir(&dst).map_err(|e| io_error("creating", &dst, e))?;
                    }
                }
                existing => {
                    if let Some(existing) = existing {
                        remove(&dst, &existing)?;
                    }
                    fs::create_dir(&dst).map_err(|e| io_error("creating", &dst, e))?;
                }
            }
            apply_layer(layer, root, &child)?;
            copy_metadata(&src, &meta, &dst)?;
        } else {
            if let Some(existing) = existing {
                remove(&dst, &existing)?;
            }
            copy_node(&src, &meta, &dst)?;
        }
    }
    Ok(())
}

/// What a path looked like before the command ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    /// Birth time, where the filesystem keeps one: a deleted file's inode number is soon
    /// reused, and only this tells `rm -r d && mkdir d` (an opaque directory) from a change.
    born: Option<std::time::SystemTime>,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            born: meta.created().ok(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn same_inode(&self, meta: &Metadata) -> bool {
        self.ino == meta.ino() && self.born == meta.created().ok()
    }
}

/// Every path of a root before the command ran, by directory.
#[derive(Debug, Default)]
pub struct Baseline {
    dirs: HashMap<PathBuf, HashMap<OsString, Stamp>>,
}

impl Baseline {
    /// Records everything below `root`.
    pub fn record(root: &Path) -> Result<Baseline, RunError> {
        let mut baseline = Baseline::default();
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let mut entries = HashMap::new();
            for (name, meta) in read_dir(&root.join(&rel))? {
                if meta.is_dir() {
                    pending.push(rel.join(&name));
                }
                entries.insert(name, Stamp::of(&meta));
            }
            baseline.dirs.insert(rel, entries);
        }
        Ok(baseline)
    }
}

/// Writes what changed in `root` since `baseline` into `upper` (an empty directory) in
/// overlayfs upper format: changed and new paths (with their parent directories), a 0/0
/// character device for each deleted one, and the opaque attribute on a directory that
/// replaced another.
pub fn write_upper(root: &Path, baseline: &Baseline, upper: &Path) -> Result<(), RunError> {
    let mut differ = Differ {
        root,
        upper,
        baseline,
        made: HashSet::new(),
        dirs: Vec::new(),
    };
    differ.walk(Path::new(""), false)?;
    // Children first, so creating them does not change a parent's restored times.
    for rel in differ.dirs.iter().rev() {
        let src = root.join(rel);
        copy_metadata(&src, &lstat(&src)?, &upper.join(rel))?;
    }
    Ok(())
}

struct Differ<'a> {
    root: &'a Path,
    upper: &'a Path,
    baseline: &'a Baseline,
    /// Directories created in `upper`.
    made: HashSet<PathBuf>,
    /// The same, in creation order, for their metadata at the end.
    dirs: Vec<PathBuf>,
}

impl Differ<'_> {
    /// Compares the directory `rel` with the baseline; with `all_new`, everything in it is new
    /// (the directory itself is).
    fn walk(&mut self, rel: &Path, all_new: bool) -> Result<(), RunError> {
        let before = if all_new {
            None
        } else {
            self.baseline.dirs.get(rel)
        };
        let mut present = HashSet::new();
        for (name, meta) in read_dir(&self.root.join(rel))? {
            let child = rel.join(&name);
            let old = before.and_then(|b| b.get(&name));
            present.insert(name);
            match old {
                Some(old) if *old == Stamp::of(&meta) => {}
                Some(old) if old.same_inode(&meta) => self.write(&child, &meta)?,
                old => {
                    self.write(&child, &meta)?;
                    if meta.is_dir() {
                        if old.is_some() {
                            self.opaque(&child)?;
                        }
                        self.walk(&child, true)?;
                    }
                    continue;
                }
            }
            if meta.is_dir() {
                self.walk(&child, false)?;
            }
        }
        for name in before.into_iter().flat_map(HashMap::keys) {
            if !present.contains(name) {
                self.whiteout(&rel.join(name))?;
            }
        }
        Ok(())
    }

    /// Creates the directories of `upper` down to `rel` (exclusive).
    fn parents(&mut self, rel: &Path) -> Result<(), RunError> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        if !self.made.contains(parent) {
            self.parents(parent)?;
            self.dir(parent)?;
        }
        Ok(())
    }

    fn dir(&mut self, rel: &Path) -> Result<(), RunError> {
        let path = self.upper.join(rel);
        fs::create_dir(&path).map_err(|e| io_error("creating", &path, e))?;
        self.made.insert(rel.to_owned());
        self.dirs.push(rel.to_owned());
        Ok(())
    }

    /// Puts the changed or new path `rel` into `upper`: a directory is made (its metadata comes
    /// at the end), anything else is hard-linked, or copied where a link cannot be made.
    fn write(&mut self, rel: &Path, meta: &Metadata) -> Result<(), RunError> {
        self.parents(rel)?;
        if meta.is_dir() {
            return self.dir(rel);
        }
        let (src, dst) = (self.root.join(rel), self.upper.join(rel));
        if fs::hard_link(&src, &dst).is_err() {
            copy_node(&src, meta, &dst)?;
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<(), RunError> {
        self.parents(rel)?;
        let path = self.upper.join(rel);
        rustix::fs::mknodat(CWD, &path, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(|e| io_error("marking the deletion of", &path, e))
    }

    fn opaque(&self, rel: &Path) -> Result<(), RunError> {
        let path = self.upper.join(rel);
        xattr::set(&path, "trusted.overlay.opaque", b"y")
            .or_else(|_| xattr::set(&path, "user.overlay.opaque", b"y"))
            .map_err(|e| io_error("marking opaque", &path, e))
    }
}
