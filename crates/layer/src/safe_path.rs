//! Filesystem operations confined to a destination directory.
//!
//! How unpacking stays inside `dest`, whatever the archive says:
//!
//! 1. **Names are cleaned lexically first** ([`clean`]): no `..` can climb out, and empty and
//!    `.` components go away.
//! 2. **Parents are walked one component at a time from an open descriptor of `dest`**, each
//!    with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`. A symbolic link where a directory is
//!    expected is refused, never followed, so no entry is ever written through a link — not
//!    even one that would stay inside `dest`, as no layer made by diffing a filesystem needs
//!    that. This works on every kernel, unlike `openat2(RESOLVE_BENEATH)` (Linux 5.6, and
//!    often blocked by seccomp profiles), and needs no `/proc`.
//! 3. **The final component is only ever used relative to its parent's descriptor** with
//!    `*at` calls that do not follow links (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW | O_EXCL`), and
//!    anything already there is removed before an entry is created, so a planted link is
//!    replaced, not written through.
//!
//! The unpacker is the only writer of `dest` while it runs; a concurrent process that swaps
//! directories for links could not redirect a write anyway, since every step is relative to
//! a descriptor opened without following links.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// The longest entry path accepted: Linux's `PATH_MAX`.
pub(crate) const MAX_PATH: usize = 4096;

/// How absolute names and `..` are treated by [`clean`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Names {
    /// Image layers: any `..` component and any absolute name is refused. Layers made by
    /// diffing a filesystem never have them.
    Strict,
    /// `ADD` archives, as docker's `Untar` treats them: a leading `/` means the root, and
    /// `..` is resolved lexically; only a name that would climb above the root is refused.
    Lenient,
}

/// Splits an entry name into clean components, or says why it is refused.
pub(crate) fn clean(raw: &[u8], names: Names) -> Result<Vec<&[u8]>, &'static str> {
    if raw.len() > MAX_PATH {
        return Err("the name is longer than PATH_MAX (4096 bytes)");
    }
    if raw.first() == Some(&b'/') && names == Names::Strict {
        return Err("absolute names are not allowed in a layer");
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if names == Names::Strict => return Err("'..' components are not allowed in a layer"),
            b".." => {
                if parts.pop().is_none() {
                    return Err("the name climbs above the destination with '..'");
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts)
}

/// Why a directory inside the root could not be opened.
#[derive(Debug)]
pub(crate) enum DirError {
    /// This many leading components lead to a symbolic link.
    Symlink(usize),
    /// This many leading components lead to something that is not a directory.
    NotDir(usize),
    /// Any other failure.
    Io(io::Error),
}

impl DirError {
    /// A message naming the offending prefix of `components`.
    pub(crate) fn describe(&self, components: &[&[u8]]) -> String {
        let prefix = |n: usize| String::from_utf8_lossy(&components[..n].join(&b'/')).into_owned();
        match self {
            DirError::Symlink(n) => format!(
                "its parent {:?} is a symbolic link, and nothing is unpacked through a link",
                prefix(*n)
            ),
            DirError::NotDir(n) => format!("its parent {:?} exists and is not a directory", prefix(*n)),
            DirError::Io(e) => format!("opening its parent directory failed: {e}"),
        }
    }
}

/// An open destination directory and the last parent directory resolved in it.
pub(crate) struct Root {
    fd: Rc<OwnedFd>,
    path: PathBuf,
    /// The last directory resolved, by its components: entries of one directory come
    /// together, so most lookups are one comparison. Dropped whenever a directory is removed.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Root {
    /// Opens `path`, which must be a directory.
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd: Rc::new(fd),
            path: path.to_owned(),
            cache: None,
        })
    }

    /// The destination's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets resolved directories; call after removing or replacing any directory.
    pub(crate) fn forget(&mut self) {
        self.cache = None;
    }

    /// The directory at `components` below the root, walked without following links.
    /// Missing directories are created (mode 0755) when `create`, or give `None`.
    pub(crate) fn dir(
        &mut self,
        components: &[&[u8]],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, DirError> {
        if components.is_empty() {
            return Ok(Some(Rc::clone(&self.fd)));
        }
        let key = components.join(&b'/');
        if let Some((cached, fd)) = &self.cache
            && *cached == key
        {
            return Ok(Some(Rc::clone(fd)));
        }
        let mut current = Rc::clone(&self.fd);
        for (i, component) in components.iter().enumerate() {
            let name = OsStr::from_bytes(component);
            let next = match open_dir(current.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(current.as_fd(), name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            // Exactly 0755, whatever the umask.
                            rustix::fs::chmodat(
                                current.as_fd(),
                                name,
                                Mode::from_raw_mode(0o755),
                                AtFlags::empty(),
                            )
                            .map_err(|e| DirError::Io(e.into()))?;
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(DirError::Io(e.into())),
                    }
                    open_dir(current.as_fd(), name).map_err(|e| classify(current.as_fd(), name, e, i + 1))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(e) => return Err(classify(current.as_fd(), name, e, i + 1)),
            };
            current = Rc::new(next);
        }
        self.cache = Some((key, Rc::clone(&current)));
        Ok(Some(current))
    }
}

fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Turns a failure to open a directory into the reason: a link, a non-directory, or other.
fn classify(parent: BorrowedFd<'_>, name: &OsStr, error: Errno, depth: usize) -> DirError {
    if error == Errno::LOOP || error == Errno::NOTDIR {
        return match lstat_type(parent, name) {
            Ok(Some(FileType::Symlink)) => DirError::Symlink(depth),
            Ok(_) => DirError::NotDir(depth),
            Err(e) => DirError::Io(e),
        };
    }
    DirError::Io(error.into())
}

/// The type of `name` in `parent`, not following links; `None` when it does not exist.
pub(crate) fn lstat_type(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `parent` and, for a directory, everything below it, never following
/// links. Returns whether a directory was removed (so resolved paths may be stale).
pub(crate) fn remove_all(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) => return Ok(false),
        Err(Errno::NOENT) => return Ok(false),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if lstat_type(parent, name)? != Some(FileType::Directory) {
        // EPERM on something that is not a directory is a real permission problem.
        return rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map(|()| false)
            .map_err(Into::into);
    }
    // Depth-first without recursion: a stack of (directory, its name in the one below).
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = vec![(open_listable(parent, name)?, name.as_bytes().to_vec())];
    while let Some((dir, _)) = stack.last() {
        let mut subdir = None;
        for entry in rustix::fs::Dir::read_from(dir)? {
            let entry = entry?;
            let child = entry.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            let child_name = OsStr::from_bytes(child);
            let is_dir = match entry.file_type() {
                FileType::Directory => true,
                FileType::Unknown => lstat_type(dir.as_fd(), child_name)? == Some(FileType::Directory),
                _ => false,
            };
            if is_dir {
                subdir = Some(child.to_vec());
                break;
            }
            match rustix::fs::unlinkat(dir, child_name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match subdir {
            Some(child) => {
                let fd = open_listable(dir.as_fd(), OsStr::from_bytes(&child))?;
                stack.push((fd, child));
            }
            None => {
                let Some((_, done)) = stack.pop() else { break };
                let holder = stack.last().map_or(parent, |(fd, _)| fd.as_fd());
                rustix::fs::unlinkat(holder, OsStr::from_bytes(&done), AtFlags::REMOVEDIR)?;
            }
        }
    }
    Ok(true)
}

/// Opens a directory for listing, making it readable and writable first if its mode forbids
/// that (an unprivileged user removing a read-only tree).
fn open_listable(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            Ok(rustix::fs::openat(parent, name, flags, Mode::empty())?)
        }
        Err(e) => Err(e.into()),
        Ok(fd) => {
            // Children can only be unlinked from a writable directory.
            if let Ok(stat) = rustix::fs::fstat(&fd)
                && stat.st_mode & 0o300 != 0o300
                && !rustix::process::geteuid().is_root()
            {
                rustix::fs::fchmod(&fd, Mode::from_raw_mode((stat.st_mode & 0o7777) | 0o700))?;
            }
            Ok(fd)
        }
    }
}

/// A path that reaches `name` in the directory open as `parent` through `/proc`, for the
/// few calls that have no descriptor-relative, no-follow form (extended attributes of links
/// and special files). The final component is still not followed by `l*` calls.
pub(crate) fn proc_path(parent: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
    path.push(name);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        let strict = |s: &str| clean(s.as_bytes(), Names::Strict).map(|v| v.join(&b'/'));
        let lenient = |s: &str| clean(s.as_bytes(), Names::Lenient).map(|v| v.join(&b'/'));
        assert_eq!(strict("./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(strict("./").unwrap(), b"");
        assert!(strict("/etc/passwd").is_err());
        assert!(strict("a/../b").is_err());
        assert!(strict("../x").is_err());
        assert_eq!(lenient("/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(lenient("a/../b").unwrap(), b"b");
        assert!(lenient("a/../../b").is_err());
        assert!(strict(&"a/".repeat(3000)).is_err());
    }

    #[test]
    fn walks_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir_all(dest.join("real")).unwrap();
        std::os::unix::fs::symlink("/", dest.join("link")).unwrap();
        std::os::unix::fs::symlink("real", dest.join("inner")).unwrap();
        std::fs::write(dest.join("file"), b"").unwrap();
        let mut root = Root::open(&dest).unwrap();
        assert!(root.dir(&[b"real"], false).unwrap().is_some());
        assert!(root.dir(&[b"missing"], false).unwrap().is_none());
        assert!(matches!(
            root.dir(&[b"link", b"etc"], true),
            Err(DirError::Symlink(1))
        ));
        assert!(matches!(root.dir(&[b"inner"], true), Err(DirError::Symlink(1))));
        assert!(matches!(
            root.dir(&[b"file", b"x"], true),
            Err(DirError::NotDir(1))
        ));
        root.dir(&[b"new", b"deeper"], true).unwrap().unwrap();
        assert!(dest.join("new/deeper").is_dir());
        assert!(!tmp.path().join("etc").exists());
    }

    #[test]
    fn removes_trees_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"x").unwrap();
        let dest = tmp.path().join("dest");
        let tree = dest.join("t/a/b/c");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("t/a/out")).unwrap();
        let root = Root::open(&dest).unwrap();
        assert!(remove_all(root.fd.as_fd(), OsStr::new("t")).unwrap());
        assert!(!dest.join("t").exists());
        assert!(outside.join("keep").exists());
        assert!(!remove_all(root.fd.as_fd(), OsStr::new("t")).unwrap());
    }
}
