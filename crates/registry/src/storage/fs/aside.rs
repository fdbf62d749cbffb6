//! Touching files, and deleting them only while idle, with no lock shared between `rbuild
//! serve` and `rbuild registry gc` (which may be different processes).
//!
//! A file's modification time is its "touched" time. A writer about to refer to a file sets it
//! to now ([`touch`]) and then checks that the file still exists. A deletion ([`remove_if_idle`])
//! first renames the file aside (after which the writer's existence check fails), then reads the
//! modification time *of the renamed file*: a touch that came before the rename is seen there,
//! and the file is put back. So either the touch precedes the rename and the file survives, or
//! it follows it and the writer sees the file missing; never a reference to a deleted file.
//!
//! A collector that dies between the rename and the decision leaves the file aside; listings
//! call [`recover`], which puts back anything left aside for over a minute (putting back is
//! always safe: at worst a file is not freed).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rbuild_oci::atomic::TEMPORARY_PREFIX;

use super::remove_optional;
use crate::storage::{StorageError, StorageResult};

/// How long a file may stay aside before a listing decides its collector is gone.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// What became of a file [`remove_if_idle`] was asked to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Deleted; it held this many bytes.
    Removed(u64),
    /// Touched at or after the cutoff, so kept.
    Busy,
    /// Not there (deleted or set aside by someone else).
    Missing,
}

/// The prefix of a set-aside file's name; a temporary name, so listings skip it.
fn aside_prefix() -> String {
    format!("{TEMPORARY_PREFIX}gc-")
}

/// `<dir>/.tmp-gc-<name>.<random>`: unique, so two collectors never rename onto each other.
fn aside_path(path: &Path) -> StorageResult<PathBuf> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        StorageError::io(
            format!("deleting {}", path.display()),
            io::Error::other("no file name"),
        )
    })?;
    Ok(path.with_file_name(format!(
        "{}{name}.{}",
        aside_prefix(),
        uuid::Uuid::new_v4().simple()
    )))
}

fn io_error(what: &str, path: &Path, e: io::Error) -> StorageError {
    StorageError::io(format!("{what} {}", path.display()), e)
}

/// The modification time of `path`, or `None` if it does not exist.
fn modified(path: &Path) -> StorageResult<Option<(SystemTime, u64)>> {
    match fs::metadata(path) {
        Ok(meta) => {
            let time = meta.modified().map_err(|e| io_error("reading", path, e))?;
            Ok(Some((time, meta.len())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", path, e)),
    }
}

/// Sets the modification time of `path` to now; `false` if it does not exist (never creates it).
pub(crate) fn touch(path: &Path) -> StorageResult<bool> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error("opening", path, e)),
    };
    file.set_modified(SystemTime::now())
        .map_err(|e| io_error("touching", path, e))?;
    Ok(true)
}

/// Deletes `path` unless it was modified or touched at or after `cutoff` (see the module docs
/// for why this is safe against a concurrent [`touch`]).
pub(crate) fn remove_if_idle(path: &Path, cutoff: SystemTime) -> StorageResult<Removal> {
    match modified(path)? {
        None => return Ok(Removal::Missing),
        Some((time, _)) if time >= cutoff => return Ok(Removal::Busy),
        Some(_) => {}
    }
    let Some(aside) = set_aside(path)? else {
        return Ok(Removal::Missing);
    };
    match modified(&aside)? {
        None => Ok(Removal::Missing),
        Some((time, _)) if time >= cutoff => {
            restore(&aside, path)?;
            Ok(Removal::Busy)
        }
        Some((_, size)) => Ok(if remove_optional(&aside)? {
            Removal::Removed(size)
        } else {
            Removal::Missing
        }),
    }
}

/// Renames `path` to a unique aside name in its directory; `None` if it does not exist.
pub(crate) fn set_aside(path: &Path) -> StorageResult<Option<PathBuf>> {
    let aside = aside_path(path)?;
    match fs::rename(path, &aside) {
        Ok(()) => Ok(Some(aside)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("setting aside", path, e)),
    }
}

/// Puts a set-aside file back under its name, unless a newer file took the name meanwhile.
pub(crate) fn restore(aside: &Path, original: &Path) -> StorageResult<()> {
    match fs::hard_link(aside, original) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("restoring", original, e)),
    }
    remove_optional(aside).map(drop)
}

/// Puts back every file of `dir` that a collector set aside over a minute ago and never
/// decided on (it stopped midway).
pub(crate) fn recover(dir: &Path) -> StorageResult<()> {
    recover_older_than(dir, ABANDONED_AFTER)
}

/// The files of `dir` set aside and not yet decided on, with the names they were set aside
/// from; empty if `dir` does not exist.
fn aside_entries(dir: &Path) -> StorageResult<Vec<(fs::DirEntry, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", dir, e)),
    };
    let prefix = aside_prefix();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing", dir, e))?;
        let original = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.rsplit_once('.'))
            .map(|(original, _)| original.to_owned());
        if let Some(original) = original {
            found.push((entry, original));
        }
    }
    Ok(found)
}

/// The files of `dir` a collector set aside (for fsck to report).
pub(crate) fn set_aside_files(dir: &Path) -> StorageResult<Vec<PathBuf>> {
    Ok(aside_entries(dir)?.into_iter().map(|(e, _)| e.path()).collect())
}

/// Puts back every file of `dir` set aside at least `age` ago.
fn recover_older_than(dir: &Path, age: Duration) -> StorageResult<()> {
    use std::os::unix::fs::MetadataExt;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    for (entry, original) in aside_entries(dir)? {
        // A rename sets the change time, so it says when the file was set aside.
        let set_aside = entry.metadata().map(|m| m.ctime()).unwrap_or(i64::MAX);
        let aside_for = i64::try_from(now.as_secs()).unwrap_or(i64::MAX) - set_aside;
        if aside_for >= i64::try_from(age.as_secs()).unwrap_or(i64::MAX) {
            restore(&entry.path(), &dir.join(original))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, age: Duration) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, b"content").unwrap();
        File::open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        path
    }

    #[test]
    fn idle_files_go_and_touched_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let old = file(dir.path(), "old", Duration::from_secs(3600));
        let young = file(dir.path(), "young", Duration::from_secs(1));
        let touched = file(dir.path(), "touched", Duration::from_secs(3600));
        assert!(touch(&touched).unwrap());
        assert!(!touch(&dir.path().join("absent")).unwrap());
        assert!(!dir.path().join("absent").exists(), "touch never creates");

        assert_eq!(remove_if_idle(&old, cutoff).unwrap(), Removal::Removed(7));
        assert_eq!(remove_if_idle(&young, cutoff).unwrap(), Removal::Busy);
        assert_eq!(remove_if_idle(&touched, cutoff).unwrap(), Removal::Busy);
        assert_eq!(remove_if_idle(&old, cutoff).unwrap(), Removal::Missing);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["touched", "young"], "nothing is left aside");
    }

    #[test]
    fn a_touch_between_the_check_and_the_rename_keeps_the_file() {
        // The rename carries the inode, and so the touch, to the aside name, where the second
        // look sees it: the file goes back.
        let dir = tempfile::tempdir().unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(60);
        let path = file(dir.path(), "blob", Duration::from_secs(3600));
        let opened = File::open(&path).unwrap();
        let aside = aside_path(&path).unwrap();
        fs::rename(&path, &aside).unwrap();
        opened.set_modified(SystemTime::now()).unwrap();
        assert!(modified(&aside).unwrap().unwrap().0 >= cutoff);
        restore(&aside, &path).unwrap();
        assert!(path.is_file() && !aside.exists());
    }

    #[test]
    fn recovery_puts_back_abandoned_files_only_and_never_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(format!("{}fresh.0123", aside_prefix()));
        fs::write(&fresh, b"x").unwrap();
        recover(dir.path()).unwrap();
        assert!(
            fresh.exists(),
            "a file set aside just now belongs to a running collector"
        );
        recover_older_than(dir.path(), Duration::ZERO).unwrap();
        assert!(!fresh.exists(), "an abandoned one goes back under its name");
        assert_eq!(fs::read(dir.path().join("fresh")).unwrap(), b"x");

        let newer = dir.path().join("tag");
        fs::write(&newer, b"new").unwrap();
        let old_aside = dir.path().join(format!("{}tag.abcd", aside_prefix()));
        fs::write(&old_aside, b"old").unwrap();
        restore(&old_aside, &newer).unwrap();
        assert_eq!(fs::read(&newer).unwrap(), b"new");
        assert!(!old_aside.exists());
    }
}
