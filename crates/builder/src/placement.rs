//! Where on disk a snapshot is unpacked, so that a cold build does not pay for the deletes
//! that came before it.
//!
//! On ext4 without a journal (this machine's root filesystem, and a common choice for build
//! machines' scratch disks) allocating an inode steps over every free inode of the block
//! group that was freed in the last minute (six, while its inode table block is still
//! dirty; not in the current second) — `recently_deleted` in `fs/ext4/ialloc.c` — re-checking
//! each one on every allocation. ext4 puts a new directory's inodes in the flex group of its parent, so the
//! snapshots of a store made again after `rm -rf` of the last one (or a builder's prune) all
//! went where the deleted files had been: the bench context's 19,000-file snapshot took a
//! scan of thousands of freed inodes per file, and a cold build ~3× as long as on a fresh
//! filesystem.
//!
//! So the snapshot directory is marked as the top of directory hierarchies (`chattr +T`):
//! ext4 places each directory made in it (each snapshot is unpacked into one) like a
//! directory at the filesystem's root, in a flex group with the fewest directories, from a
//! start that the name decides. A flex group just emptied by a delete has none, and is then
//! as likely as any other empty one, so a placement is kept only when the snapshot's
//! directory got the first inode of its block group: ext4 gives the lowest free inode that
//! was not freed recently, so there nothing was freed recently, at least before it. Otherwise
//! another name is tried, with the rejected directories kept until then (a flex group that
//! holds one is no longer among the emptiest).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{IFlags, Mode, OFlags};
use tempfile::TempDir;

/// How many names a directory is tried under before the last placement is kept as it is.
const TRIES: usize = 4;

/// A multiple of every ext4 block group's inode count with 4 KiB blocks and mke2fs' inode
/// ratios (8,192 by default, 2,048 at the largest ratio).
const GROUP_INODES: u64 = 2048;

/// Marks `dir` so that ext4 spreads the directories made in it over its flex groups;
/// false where the filesystem has no such flag (anything but ext2/3/4).
pub(crate) fn spread_subdirectories(dir: &Path) -> bool {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::open(dir, flags, Mode::empty()) else {
        return false;
    };
    match rustix::fs::ioctl_getflags(&fd) {
        Ok(current) if current.contains(IFlags::TOPDIR) => true,
        Ok(current) => rustix::fs::ioctl_setflags(&fd, current | IFlags::TOPDIR).is_ok(),
        Err(_) => false,
    }
}

/// Makes a directory named `prefix` and a random suffix in `dir`; where `dir` spreads its
/// directories, in a block group that no recent delete left free inodes in, if one of a few
/// tries finds one.
pub(crate) fn temp_dir(dir: &Path, prefix: &str, spread: bool) -> io::Result<PathBuf> {
    let mut rejected = Vec::new();
    loop {
        let made = tempfile::Builder::new().prefix(prefix).tempdir_in(dir)?;
        if !spread || rejected.len() + 1 >= TRIES || starts_group(&made)? {
            return Ok(made.keep());
        }
        rejected.push(made);
    }
}

/// Whether the directory holds the first inode of its block group.
fn starts_group(made: &TempDir) -> io::Result<bool> {
    let inode = made.path().metadata()?.ino();
    Ok(inode.wrapping_sub(1) % GROUP_INODES == 0)
}
