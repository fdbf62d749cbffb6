//! Replacing a file whole: the one way every crate of the workspace writes a file that others
//! read while it changes (store indexes, cache records, registry metadata, credentials,
//! htpasswd files).
//!
//! The bytes go to a temporary file beside the target, whose name is unique to the call, and a
//! rename puts it in place, so a reader — or a process that crashed halfway — sees the old
//! content or the new, never part of either, and two writers of the same file each rename a
//! whole file of their own.
//!
//! The fsync policy is the caller's, named by [`Durability`]: what a later run can rebuild is
//! only renamed ([`Durability::Renamed`]); what was acknowledged to someone (a registry's
//! manifests and tags, a login) is flushed before the rename and its directory after
//! ([`Durability::Flushed`]), so it survives a power cut too.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the name of every temporary file starts with, so that a directory listing (a
/// registry's tags, say) can leave out writes under way or interrupted.
pub const TEMPORARY_PREFIX: &str = ".tmp-";

/// Whether `name` (a file name) is one of this module's temporary files.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TEMPORARY_PREFIX)
}

/// How far a write must have reached before [`write_atomic_with`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Renamed into place: atomic for readers and across a process crash; after a power cut the
    /// file may be empty or old. For caches and indexes a later run can rebuild.
    Renamed,
    /// The file flushed before the rename and its directory after: what returns has reached
    /// the disk. For anything acknowledged to a client or a user.
    Flushed,
}

/// How [`write_atomic_with`] writes.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// How far the write must have reached.
    pub durability: Durability,
    /// The new file's permission bits (before the umask); 0o666 when `None`, as `fs::write`.
    pub mode: Option<u32>,
    /// Whether to create the parent directory when it is missing.
    pub create_dir: bool,
}

impl WriteOptions {
    /// Renamed into place, default permissions, the directory must exist.
    pub const RENAMED: WriteOptions = WriteOptions {
        durability: Durability::Renamed,
        mode: None,
        create_dir: false,
    };

    /// Flushed to disk, default permissions, the directory must exist.
    pub const FLUSHED: WriteOptions = WriteOptions {
        durability: Durability::Flushed,
        ..WriteOptions::RENAMED
    };
}

/// A suffix no other call of this process (or, with the pid, of another) uses.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Replaces `path` with `bytes`, renamed into place ([`WriteOptions::RENAMED`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, WriteOptions::RENAMED)
}

/// Replaces `path` with `bytes` as `options` say. On failure the temporary file is removed
/// and `path` is as it was.
pub fn write_atomic_with(path: &Path, bytes: &[u8], options: WriteOptions) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ));
    }
    if options.create_dir {
        fs::create_dir_all(dir)?;
    }
    let tmp = dir.join(format!("{TEMPORARY_PREFIX}{}", unique_suffix()));
    let flushed = options.durability == Durability::Flushed;
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = options.mode {
            open.mode(mode);
        }
        let mut file = open.open(&tmp)?;
        file.write_all(bytes)?;
        if flushed {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if flushed {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"a much longer first version").unwrap();
        write_atomic(&path, b"short").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_told_apart_by_name() {
        assert!(is_temporary(&format!("{TEMPORARY_PREFIX}{}", unique_suffix())));
        assert!(!is_temporary("latest"));
    }

    #[test]
    fn flushed_writes_take_the_mode_and_can_create_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/htpasswd");
        let options = WriteOptions {
            mode: Some(0o600),
            create_dir: true,
            ..WriteOptions::FLUSHED
        };
        write_atomic_with(&path, b"user:hash\n", options).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/file");
        assert!(write_atomic(&path, b"x").is_err());
        assert!(!dir.path().join("missing").exists());
        let target = dir.path().join("a-directory");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"kept").unwrap();
        assert!(
            write_atomic(&target, b"x").is_err(),
            "a non-empty directory cannot be replaced"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_writers_each_rename_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record");
        std::thread::scope(|scope| {
            for i in 0..8u8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, &[i; 4096]).unwrap();
                    }
                });
            }
        });
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|b| *b == bytes[0]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
