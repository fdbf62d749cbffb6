//! Unpacking layers into a directory, safely: see [`safe_path`](crate::safe_path) for how no
//! entry of a hostile layer can write outside the destination.
//!
//! Whiteouts follow the OCI image spec (`.wh.<name>` deletes `<name>`, `.wh..wh..opq` hides
//! everything below its directory from lower layers). Other `.wh..wh.` names are AUFS
//! metadata and are skipped.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::LayerError;
use crate::header::flag;
use crate::pool::{FilePool, POOLED_MAX, PoolKey};
use crate::reader::{RawEntry, TarReader};
use crate::safe_path::{self, DirError, Names, Root};

/// What to do with whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Store them the way overlayfs does, for a snapshot used as an overlay lower directory:
    /// `.wh.<name>` becomes a 0/0 character device `<name>`, and `.wh..wh..opq` sets
    /// `trusted.overlay.opaque=y` on its directory (`user.overlay.opaque=y` when not root,
    /// for overlays mounted with `userxattr`).
    Overlay,
    /// Apply them to the destination, which holds the layers below: delete the whited-out
    /// path; empty an opaque directory of everything this layer did not put there.
    Apply,
}

/// How to unpack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// Give entries the owner recorded in the layer (`lchown`); needs root. Otherwise they
    /// belong to the user unpacking.
    pub same_owner: bool,
}

/// What an unpack did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries read from the archive, of every kind.
    pub entries: u64,
    /// Regular files written or linked from a [`FilePool`].
    pub files: u64,
    /// Of those, the files linked from the pool.
    pub pooled: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Devices and fifos created.
    pub specials: u64,
    /// Whiteouts and opaque markers applied or stored.
    pub whiteouts: u64,
    /// Entries skipped: PAX global headers, AUFS metadata, the root directory's own entry.
    pub skipped: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Unpacks the (already decompressed, see [`decompressed`](crate::decompressed)) layer tar
/// `layer` into `dest`, which must exist.
///
/// Refused, with an error and nothing written for the entry: absolute names, names with a
/// `..` component, any entry whose parent is a symbolic link (whether it points inside `dest`
/// or not), hard links whose target is outside `dest` or missing, device files unless running
/// as root, and names longer than 4096 bytes. Symbolic links themselves may hold any target.
///
/// How: every parent directory is opened one component at a time from a descriptor of
/// `dest` with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`, and the entry itself is created
/// relative to its parent's descriptor with calls that never follow a final symbolic link;
/// whatever is in the way is removed first. No path is ever resolved from `/`, so neither a
/// link planted by an earlier entry nor one already in `dest` can redirect a write. This
/// needs no `openat2` (Linux 5.6, often filtered by seccomp) and no `/proc` (used only to set
/// extended attributes on links and special files).
///
/// Restored: mode (with setuid, setgid and sticky bits), owner when
/// [`UnpackOptions::same_owner`], whole-second mtime (without following links; directories
/// last, so their children do not touch them), extended attributes (those in `security.` and
/// `trusted.` are skipped when not root; unsupported ones are skipped), hard links, symbolic
/// links, directories, fifos and devices.
///
/// The rest of the stream after the end of the archive is read, so a compressed stream's own
/// check (gzip CRC, zstd checksum) is verified.
pub fn unpack(layer: impl Read, dest: &Path, options: &UnpackOptions) -> Result<UnpackStats, LayerError> {
    Unpacker::new(dest, options, Flavor::Layer)?.run(layer)
}

/// [`unpack`], sharing regular files with other trees through `pool` (see
/// [`FilePool`] for what is shared and why). Only for trees nothing writes to afterwards.
pub fn unpack_pooled(
    layer: impl Read,
    dest: &Path,
    options: &UnpackOptions,
    pool: &FilePool,
) -> Result<UnpackStats, LayerError> {
    let mut unpacker = Unpacker::new(dest, options, Flavor::Layer)?;
    unpacker.pool = Some(pool);
    unpacker.run(layer)
}

/// Which rules an unpack follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// An image layer: strict names, whiteouts as the options say, xattr errors reported.
    Layer,
    /// An `ADD` archive, as docker's `Untar` extracts it: absolute names mean the root, `..`
    /// is resolved lexically, `.wh.` names are ordinary files, xattrs are best effort.
    Archive,
}

const WHITEOUT: &[u8] = b".wh.";
const WHITEOUT_META: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Copy buffer for file contents.
const BUFFER: usize = 256 * 1024;

pub(crate) struct Unpacker<'o> {
    root: Root,
    options: &'o UnpackOptions,
    flavor: Flavor,
    is_root: bool,
    /// Every path this layer created (and its parents), for opaque directories.
    unpacked: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set at the end: (path, mode, mtime).
    dirs: Vec<(Vec<u8>, u32, i64)>,
    stats: UnpackStats,
    buffer: Vec<u8>,
    /// Where regular files are shared from, if anywhere.
    pool: Option<&'o FilePool>,
}

/// What the archive says about one entry, beyond its name and type.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn of(entry: &RawEntry, shown: &str) -> Result<Meta, LayerError> {
        let id = |what: &str, value: u64| -> Result<u32, LayerError> {
            u32::try_from(value)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| LayerError::Unsupported {
                    path: shown.to_owned(),
                    reason: format!("{what} {value} is out of range"),
                })
        };
        Ok(Meta {
            mode: entry.mode & 0o7777,
            uid: id("uid", entry.uid)?,
            gid: id("gid", entry.gid)?,
            mtime: entry.mtime,
            xattrs: entry.xattrs.clone(),
        })
    }
}

impl<'o> Unpacker<'o> {
    pub(crate) fn new(
        dest: &Path,
        options: &'o UnpackOptions,
        flavor: Flavor,
    ) -> Result<Unpacker<'o>, LayerError> {
        let root = Root::open(dest).map_err(|e| LayerError::io("opening the destination", dest, e))?;
        Ok(Unpacker {
            root,
            options,
            flavor,
            is_root: rustix::process::geteuid().is_root(),
            unpacked: HashSet::new(),
            dirs: Vec::new(),
            stats: UnpackStats::default(),
            buffer: vec![0; BUFFER],
            pool: None,
        })
    }

    /// Behaves as if not running as root (to test what unprivileged users get).
    #[cfg(test)]
    pub(crate) fn unprivileged(mut self) -> Self {
        self.is_root = false;
        self
    }

    pub(crate) fn run(mut self, reader: impl Read) -> Result<UnpackStats, LayerError> {
        // Headers are read 512 bytes at a time: from a pipe or a decompressor, each would be
        // a system call or a decompressor call of its own.
        let mut archive = TarReader::new(io::BufReader::with_capacity(BUFFER, reader));
        while let Some(entry) = archive.next()? {
            self.stats.entries += 1;
            self.entry(&entry, &mut archive)?;
        }
        // Read the rest, so decompressors check their trailers.
        io::copy(&mut archive.into_inner(), &mut io::sink())
            .map_err(|e| LayerError::stream("reading the end of the layer", e))?;
        self.finish_dirs()?;
        Ok(self.stats)
    }

    fn entry<R: Read>(&mut self, entry: &RawEntry, archive: &mut TarReader<R>) -> Result<(), LayerError> {
        let shown = String::from_utf8_lossy(&entry.path).into_owned();
        let names = match self.flavor {
            Flavor::Layer => Names::Strict,
            Flavor::Archive => Names::Lenient,
        };
        let components = safe_path::clean(&entry.path, names)
            .map_err(|reason| LayerError::unsafe_entry(&shown, reason))?;
        let Some((name, parents)) = components.split_last() else {
            if entry.flag == flag::DIR {
                // The root's own entry ("./"): the destination keeps its metadata.
                self.stats.skipped += 1;
                return Ok(());
            }
            return Err(LayerError::unsafe_entry(
                &shown,
                "a non-directory entry names the destination itself",
            ));
        };
        let name = OsStr::from_bytes(name);

        if self.flavor == Flavor::Layer && name.as_bytes().starts_with(WHITEOUT) {
            return self.whiteout(&shown, parents, name.as_bytes());
        }

        let meta = Meta::of(entry, &shown)?;
        let parent = self
            .parent(&shown, parents, true)?
            .ok_or_else(|| LayerError::unsafe_entry(&shown, "its parent directory could not be created"))?;
        self.mark_unpacked(&components);

        match entry.flag {
            flag::DIR => self.dir(&shown, &components, &parent, name, &meta),
            flag::FILE => match self.pool {
                Some(pool) if entry.size <= POOLED_MAX => {
                    let content = read_content(&shown, entry.size, archive)?;
                    self.pooled_file(pool, &shown, &components, &parent, &meta, &content)
                }
                _ => self.file(&shown, &parent, name, &meta, entry.size, archive),
            },
            flag::SYMLINK => {
                self.replace(&shown, &parent, name, false)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&entry.link), parent.as_fd(), name)
                    .map_err(|e| self.io_err("creating symbolic link", &shown, e))?;
                self.stats.symlinks += 1;
                self.finish_node(&shown, &parent, name, &meta, FileType::Symlink)
            }
            flag::HARDLINK => self.hardlink(&shown, &parent, name, &entry.link, names),
            flag::CHAR | flag::BLOCK => {
                if !self.is_root {
                    return Err(LayerError::Unsupported {
                        path: shown,
                        reason: "device files can only be created by root; unpack as root (or leave the device out of the image)"
                            .to_owned(),
                    });
                }
                let device = rustix::fs::makedev(entry.device.0, entry.device.1);
                let file_type = if entry.flag == flag::CHAR {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                self.special(&shown, &parent, name, &meta, file_type, device)
            }
            flag::FIFO => self.special(&shown, &parent, name, &meta, FileType::Fifo, 0),
            other => Err(LayerError::Unsupported {
                path: shown,
                reason: format!("tar entry type {:?} is not supported", other as char),
            }),
        }
    }

    /// The directory holding an entry, refusing to go through links.
    fn parent(
        &mut self,
        shown: &str,
        parents: &[&[u8]],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>, LayerError> {
        self.root.dir(parents, create).map_err(|e| match e {
            DirError::Io(source) => LayerError::Io {
                action: "opening the parent directory of",
                path: self.root.path().join(OsStr::from_bytes(&parents.join(&b'/'))),
                source,
            },
            other => LayerError::unsafe_entry(shown, other.describe(parents)),
        })
    }

    fn mark_unpacked(&mut self, components: &[&[u8]]) {
        for end in (1..=components.len()).rev() {
            if !self.unpacked.insert(components[..end].join(&b'/')) {
                break;
            }
        }
    }

    fn io_err(&self, action: &'static str, shown: &str, e: impl Into<io::Error>) -> LayerError {
        LayerError::io(
            action,
            self.root.path().join(shown.trim_start_matches('/')),
            e.into(),
        )
    }

    /// Clears the way for a new entry: removes whatever is at `name`, except a directory when
    /// `keep_dir` (directories merge). Returns whether a directory was kept.
    fn replace(
        &mut self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, LayerError> {
        let existing =
            safe_path::lstat_type(parent.as_fd(), name).map_err(|e| self.io_err("inspecting", shown, e))?;
        match existing {
            None => Ok(false),
            Some(FileType::Directory) if keep_dir => Ok(true),
            Some(_) => {
                let was_dir = safe_path::remove_all(parent.as_fd(), name)
                    .map_err(|e| self.io_err("replacing", shown, e))?;
                if was_dir {
                    self.root.forget();
                }
                Ok(false)
            }
        }
    }

    fn dir(
        &mut self,
        shown: &str,
        components: &[&[u8]],
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), LayerError> {
        if !self.replace(shown, parent, name, true)? {
            rustix::fs::mkdirat(parent.as_fd(), name, Mode::from_raw_mode(0o700))
                .map_err(|e| self.io_err("creating directory", shown, e))?;
        }
        let fd = open_dir_rw(parent.as_fd(), name).map_err(|e| self.io_err("opening directory", shown, e))?;
        if self.options.same_owner {
            chown_fd(&fd, meta).map_err(|e| self.io_err("changing the owner of", shown, e))?;
        }
        self.set_xattrs(shown, Target::Fd(fd.as_fd()), FileType::Directory, &meta.xattrs)?;
        self.dirs.push((components.join(&b'/'), meta.mode, meta.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        expected: u64,
        archive: &mut TarReader<R>,
    ) -> Result<(), LayerError> {
        self.replace(shown, parent, name, false)?;
        let mut file = self.create_file(shown, parent, name)?;
        let mut written: u64 = 0;
        let mut content = archive.content();
        loop {
            let n = match content.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::stream("reading the layer", e)),
            };
            file.write_all(&self.buffer[..n])
                .map_err(|e| self.io_err("writing", shown, e))?;
            written += n as u64;
        }
        check_length(shown, written, expected)?;
        self.finish_file(shown, &file, meta, written)
    }

    /// A regular file of at most [`POOLED_MAX`] bytes, its `content` read: linked from
    /// `pool` when it holds the same, else written and given to it.
    fn pooled_file(
        &mut self,
        pool: &FilePool,
        shown: &str,
        components: &[&[u8]],
        parent: &OwnedFd,
        meta: &Meta,
        content: &[u8],
    ) -> Result<(), LayerError> {
        let path = components.join(&b'/');
        let name = OsStr::from_bytes(components.last().map_or(&b""[..], |n| n));
        let key = PoolKey {
            path: &path,
            mode: meta.mode,
            owner: self.options.same_owner.then_some((meta.uid, meta.gid)),
            mtime: meta.mtime,
            xattrs: &meta.xattrs,
        };
        let pooled = FilePool::name(&key, content);
        self.replace(shown, parent, name, false)?;
        if pool.lend(&pooled, parent.as_fd(), name) {
            self.stats.files += 1;
            self.stats.pooled += 1;
            self.stats.bytes += content.len() as u64;
            return Ok(());
        }
        let mut file = self.create_file(shown, parent, name)?;
        file.write_all(content)
            .map_err(|e| self.io_err("writing", shown, e))?;
        self.finish_file(shown, &file, meta, content.len() as u64)?;
        pool.adopt(&pooled, parent.as_fd(), name);
        Ok(())
    }

    /// Creates the regular file `name` in `parent`, where nothing is.
    fn create_file(&self, shown: &str, parent: &OwnedFd, name: &OsStr) -> Result<std::fs::File, LayerError> {
        let fd = rustix::fs::openat(
            parent.as_fd(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.io_err("creating", shown, e))?;
        Ok(std::fs::File::from(fd))
    }

    /// Owner, extended attributes, mode and mtime of a regular file whose `written` bytes
    /// are in.
    fn finish_file(
        &mut self,
        shown: &str,
        file: &std::fs::File,
        meta: &Meta,
        written: u64,
    ) -> Result<(), LayerError> {
        if self.options.same_owner {
            chown_fd(file, meta).map_err(|e| self.io_err("changing the owner of", shown, e))?;
        }
        self.set_xattrs(
            shown,
            Target::Fd(file.as_fd()),
            FileType::RegularFile,
            &meta.xattrs,
        )?;
        rustix::fs::fchmod(file, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.io_err("setting the mode of", shown, e))?;
        rustix::fs::futimens(file, &times(meta.mtime))
            .map_err(|e| self.io_err("setting the mtime of", shown, e))?;
        self.stats.files += 1;
        self.stats.bytes += written;
        Ok(())
    }

    fn hardlink(
        &mut self,
        shown: &str,
        parent: &Rc<OwnedFd>,
        name: &OsStr,
        raw: &[u8],
        names: Names,
    ) -> Result<(), LayerError> {
        let shown_target = String::from_utf8_lossy(raw).into_owned();
        let refuse = |reason: String| {
            LayerError::unsafe_entry(shown, format!("hard link target {shown_target:?}: {reason}"))
        };
        let target = safe_path::clean(raw, names).map_err(|r| refuse(r.to_owned()))?;
        let Some((target_name, target_parents)) = target.split_last() else {
            return Err(refuse("it is the destination itself".to_owned()));
        };
        let target_name = OsStr::from_bytes(target_name);
        let target_dir = match self.root.dir(target_parents, false) {
            Ok(Some(fd)) => fd,
            Ok(None) => return Err(refuse("it does not exist".to_owned())),
            Err(DirError::Io(e)) => return Err(self.io_err("opening the hard link target of", shown, e)),
            Err(e) => return Err(refuse(e.describe(target_parents))),
        };
        match safe_path::lstat_type(target_dir.as_fd(), target_name)
            .map_err(|e| self.io_err("inspecting", &shown_target, e))?
        {
            None => {
                return Err(refuse(
                    "it does not exist (it must come earlier in the archive)".to_owned(),
                ));
            }
            Some(FileType::Directory) => return Err(refuse("it is a directory".to_owned())),
            Some(_) => {}
        }
        if Rc::ptr_eq(&target_dir, parent) && target_name == name {
            return Err(refuse("it is the link itself".to_owned()));
        }
        self.replace(shown, parent, name, false)?;
        rustix::fs::linkat(
            target_dir.as_fd(),
            target_name,
            parent.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| self.io_err("creating hard link", shown, e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn special(
        &mut self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        file_type: FileType,
        device: u64,
    ) -> Result<(), LayerError> {
        self.replace(shown, parent, name, false)?;
        rustix::fs::mknodat(
            parent.as_fd(),
            name,
            file_type,
            Mode::from_raw_mode(0o600),
            device,
        )
        .map_err(|e| self.io_err("creating", shown, e))?;
        self.stats.specials += 1;
        self.finish_node(shown, parent, name, meta, file_type)
    }

    /// Owner, xattrs, mode and mtime of something that cannot be opened safely (a link, a
    /// device, a fifo): all set relative to the parent, without following links.
    fn finish_node(
        &self,
        shown: &str,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        file_type: FileType,
    ) -> Result<(), LayerError> {
        if self.options.same_owner {
            rustix::fs::chownat(
                parent.as_fd(),
                name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.io_err("changing the owner of", shown, e))?;
        }
        if !meta.xattrs.is_empty() {
            let path = safe_path::proc_path(parent.as_fd(), name);
            self.set_xattrs(shown, Target::Path(&path), file_type, &meta.xattrs)?;
        }
        if file_type != FileType::Symlink {
            // Not a link (we just created it), so following is harmless; Linux has no
            // no-follow chmod for these.
            rustix::fs::chmodat(
                parent.as_fd(),
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| self.io_err("setting the mode of", shown, e))?;
        }
        rustix::fs::utimensat(
            parent.as_fd(),
            name,
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io_err("setting the mtime of", shown, e))
    }

    fn set_xattrs(
        &self,
        shown: &str,
        target: Target<'_>,
        file_type: FileType,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), LayerError> {
        for (name, value) in xattrs {
            let key = OsStr::from_bytes(name);
            let result = match target {
                Target::Fd(fd) => rustix::fs::fsetxattr(fd, key, value, XattrFlags::empty()),
                Target::Path(path) => rustix::fs::lsetxattr(path, key, value, XattrFlags::empty()),
            };
            let Err(e) = result else { continue };
            let privileged = name.starts_with(b"security.") || name.starts_with(b"trusted.");
            let user_on_special = name.starts_with(b"user.")
                && !matches!(file_type, FileType::RegularFile | FileType::Directory);
            let ignorable = self.flavor == Flavor::Archive
                || e == Errno::NOTSUP
                || (e == Errno::PERM && ((privileged && !self.is_root) || user_on_special));
            if !ignorable {
                return Err(LayerError::Io {
                    action: "setting an extended attribute on",
                    path: self.root.path().join(shown.trim_start_matches('/')),
                    source: io::Error::new(
                        io::Error::from(e).kind(),
                        format!("{}: {e}", String::from_utf8_lossy(name)),
                    ),
                });
            }
        }
        Ok(())
    }

    /// A whiteout entry (`.wh.<name>` or `.wh..wh..opq`) in `parents`.
    fn whiteout(&mut self, shown: &str, parents: &[&[u8]], name: &[u8]) -> Result<(), LayerError> {
        if name == OPAQUE {
            return self.opaque(shown, parents);
        }
        if name.starts_with(WHITEOUT_META) {
            self.stats.skipped += 1;
            return Ok(());
        }
        let hidden = &name[WHITEOUT.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(LayerError::unsafe_entry(
                shown,
                "it is a whiteout of no valid name",
            ));
        }
        let hidden = OsStr::from_bytes(hidden);
        self.stats.whiteouts += 1;
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                let Some(parent) = self.parent(shown, parents, false)? else {
                    return Ok(()); // Nothing below to hide.
                };
                if safe_path::remove_all(parent.as_fd(), hidden)
                    .map_err(|e| self.io_err("applying whiteout", shown, e))?
                {
                    self.root.forget();
                }
                Ok(())
            }
            WhiteoutMode::Overlay => {
                let parent = self.parent(shown, parents, true)?.ok_or_else(|| {
                    LayerError::unsafe_entry(shown, "its parent directory could not be created")
                })?;
                self.replace(shown, &parent, hidden, false)?;
                rustix::fs::mknodat(parent.as_fd(), hidden, FileType::CharacterDevice, Mode::empty(), 0).map_err(|e| {
                    if e == Errno::PERM {
                        LayerError::Unsupported {
                            path: shown.to_owned(),
                            reason: "creating an overlay whiteout (a 0/0 character device) needs root, or Linux 5.8 or later"
                                .to_owned(),
                        }
                    } else {
                        self.io_err("creating whiteout for", shown, e)
                    }
                })
            }
        }
    }

    /// An opaque marker: the directory `parents` hides what lower layers have in it.
    fn opaque(&mut self, shown: &str, parents: &[&[u8]]) -> Result<(), LayerError> {
        self.stats.whiteouts += 1;
        match self.options.whiteouts {
            WhiteoutMode::Apply => {
                let Some(dir) = self.parent(shown, parents, false)? else {
                    return Ok(());
                };
                let listable =
                    reopen_dir(dir.as_fd()).map_err(|e| self.io_err("listing opaque directory", shown, e))?;
                let prefix = parents.join(&b'/');
                let mut doomed = Vec::new();
                for child in rustix::fs::Dir::new(listable)
                    .map_err(|e| self.io_err("listing opaque directory", shown, e))?
                {
                    let child = child.map_err(|e| self.io_err("listing opaque directory", shown, e))?;
                    let child = child.file_name().to_bytes();
                    if child == b"." || child == b".." {
                        continue;
                    }
                    let full = if prefix.is_empty() {
                        child.to_vec()
                    } else {
                        [prefix.as_slice(), b"/", child].concat()
                    };
                    if !self.unpacked.contains(&full) {
                        doomed.push(child.to_vec());
                    }
                }
                for child in doomed {
                    if safe_path::remove_all(dir.as_fd(), OsStr::from_bytes(&child))
                        .map_err(|e| self.io_err("emptying opaque directory", shown, e))?
                    {
                        self.root.forget();
                    }
                }
                Ok(())
            }
            WhiteoutMode::Overlay => {
                let dir = self
                    .parent(shown, parents, true)?
                    .ok_or_else(|| LayerError::unsafe_entry(shown, "its directory could not be created"))?;
                let fd =
                    reopen_dir(dir.as_fd()).map_err(|e| self.io_err("opening opaque directory", shown, e))?;
                let set = |key: &str| rustix::fs::fsetxattr(&fd, key, b"y", XattrFlags::empty());
                match set("trusted.overlay.opaque") {
                    Ok(()) => Ok(()),
                    Err(Errno::PERM) if !self.is_root => set("user.overlay.opaque")
                        .map_err(|e| self.io_err("marking opaque directory", shown, e)),
                    Err(e) => Err(self.io_err("marking opaque directory", shown, e)),
                }
            }
        }
    }

    /// Sets the mode and mtime of every directory, deepest first, now that nothing more
    /// will be created in them.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        dirs.dedup_by(|a, b| a.0 == b.0);
        for (path, mode, mtime) in dirs {
            let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let Some((name, parents)) = components.split_last() else {
                continue;
            };
            let shown = String::from_utf8_lossy(&path).into_owned();
            // A later entry may have removed or replaced the directory: then skip it.
            let parent = match self.root.dir(parents, false) {
                Ok(Some(parent)) => parent,
                Ok(None) | Err(DirError::Symlink(_)) | Err(DirError::NotDir(_)) => continue,
                Err(DirError::Io(e)) => return Err(self.io_err("opening", &shown, e)),
            };
            let fd = match open_dir_rw(parent.as_fd(), OsStr::from_bytes(name)) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => continue,
                Err(e) => return Err(self.io_err("opening", &shown, e)),
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .map_err(|e| self.io_err("setting the mode of", &shown, e))?;
            rustix::fs::futimens(&fd, &times(mtime))
                .map_err(|e| self.io_err("setting the mtime of", &shown, e))?;
        }
        Ok(())
    }
}

/// Where extended attributes are set.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

/// The whole content of the current entry, `expected` bytes long.
fn read_content<R: Read>(
    shown: &str,
    expected: u64,
    archive: &mut TarReader<R>,
) -> Result<Vec<u8>, LayerError> {
    let mut content = Vec::with_capacity(expected as usize);
    archive
        .content()
        .read_to_end(&mut content)
        .map_err(|e| LayerError::stream("reading the layer", e))?;
    check_length(shown, content.len() as u64, expected)?;
    Ok(content)
}

/// Refuses a file whose content ended before the size its header gave.
fn check_length(shown: &str, written: u64, expected: u64) -> Result<(), LayerError> {
    if written == expected {
        return Ok(());
    }
    Err(LayerError::Malformed {
        reason: format!("file {shown:?} is truncated: {written} of {expected} bytes"),
    })
}

fn chown_fd(fd: impl AsFd, meta: &Meta) -> rustix::io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
    )
}

/// Opens a directory (not a link to one) for reading, making it accessible first if its mode
/// forbids (an unprivileged user merging into a read-only directory).
fn open_dir_rw(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::ACCESS) => {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(0o700), AtFlags::empty())?;
            rustix::fs::openat(parent, name, flags, Mode::empty())
        }
        other => other,
    }
}

/// A readable descriptor of the directory open (as `O_PATH`) as `dir`.
fn reopen_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn times(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}
