//! A pool of unpacked files that snapshots share through hard links.
//!
//! Rebuilding after a one-file change makes a new layer that repeats thousands of files of
//! the previous one, and unpacking it for the next RUN used to create every one of them
//! again. Creating a file costs an inode allocation, which ext4 makes slow after many
//! deletions; a hard link costs a directory entry (on this machine 19,000 links take 0.2 s,
//! 19,000 copies 1.9 s). So [`unpack_pooled`](crate::unpack_pooled) links a file from the
//! pool when the pool holds one with the same key, and gives every file it does write to
//! the pool for next time.
//!
//! The key is the SHA-256 of the file's path in the layer, its metadata (mode, owner, mtime,
//! extended attributes) and its content. Metadata is in the key because a hard link shares
//! it; the path is, so that no two paths of one tree ever share an inode: a container never
//! sees two of its files as hard links of each other when the layers did not say so (tar,
//! `cp -a` and `du` inside a RUN would tell). Only `st_nlink` shows the sharing.
//!
//! Pooled files must never be written to: the pool only serves unpacks whose trees are
//! read-only afterwards (overlay lower directories). A file the pool cannot link (a full
//! link count, any error) is simply written; the pool never fails an unpack.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rbuild_oci::{Algorithm, Hasher};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Files larger than this are written, not pooled: deciding needs the whole content in
/// memory before the file is created, and large files are few.
pub const POOLED_MAX: u64 = 4 << 20;

/// A directory of pooled files, `<2 hex digits>/<62 hex digits>` by key.
#[derive(Debug)]
pub struct FilePool {
    dir: OwnedFd,
    path: PathBuf,
}

/// What the key of a pooled file covers besides its content.
pub(crate) struct PoolKey<'a> {
    /// The file's path in the layer, components joined by `/`.
    pub path: &'a [u8],
    pub mode: u32,
    /// The owner the file gets, `None` when unpacking without restoring owners.
    pub owner: Option<(u32, u32)>,
    pub mtime: i64,
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl FilePool {
    /// Opens the pool in `dir` (on the same filesystem as the trees it serves), creating it.
    /// Its fan-out directories are made as their first files are adopted:
    /// a store that never unpacks a layer — a build wholly from a remote cache, on a fresh CI
    /// runner — makes none of the 256.
    pub fn open(dir: &Path) -> io::Result<FilePool> {
        std::fs::create_dir_all(dir)?;
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(FilePool {
            dir: fd,
            path: dir.to_owned(),
        })
    }

    /// The pool's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name in the pool of a file with `key` and `content`.
    pub(crate) fn name(key: &PoolKey<'_>, content: &[u8]) -> String {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut field = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(b"rbuild file pool 1");
        field(key.path);
        field(&key.mode.to_le_bytes());
        match key.owner {
            Some((uid, gid)) => field(&[uid.to_le_bytes(), gid.to_le_bytes()].concat()),
            None => field(b"unpacking user"),
        }
        field(&key.mtime.to_le_bytes());
        for (name, value) in key.xattrs {
            field(name);
            field(value);
        }
        field(content);
        let hex = hasher.finalize().hex().to_owned();
        format!("{}/{}", &hex[..2], &hex[2..])
    }

    /// Links the pooled file `name` as `entry` in `parent`; false when the pool has none
    /// (or cannot lend it).
    pub(crate) fn lend(&self, name: &str, parent: BorrowedFd<'_>, entry: &OsStr) -> bool {
        rustix::fs::linkat(self.dir.as_fd(), name, parent, entry, AtFlags::empty()).is_ok()
    }

    /// Adds the finished file `entry` in `parent` to the pool as `name`. Another unpack may
    /// have added it first, which is as good.
    pub(crate) fn adopt(&self, name: &str, parent: BorrowedFd<'_>, entry: &OsStr) {
        let link = || rustix::fs::linkat(parent, entry, self.dir.as_fd(), name, AtFlags::empty());
        if link() == Err(Errno::NOENT)
            && let Some((fan, _)) = name.split_once('/')
        {
            // The first file of its fan-out directory: make the directory (or another unpack
            // just did) and try again.
            let _ = rustix::fs::mkdirat(self.dir.as_fd(), fan, Mode::from_raw_mode(0o777));
            let _ = link();
        }
    }
}
