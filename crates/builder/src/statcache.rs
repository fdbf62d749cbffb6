//! The persistent stat cache: a file's content digest, remembered against what `stat` says of
//! it, so an unchanged context costs one `stat` per file and no reads.
//!
//! An entry is trusted only while device, inode, size, mtime and ctime all match; ctime
//! changes on any write, chmod or rename, so a file rewritten with its old mtime is caught.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rbuild_oci::Digest;
use serde::{Deserialize, Serialize};

/// What `stat` says of a file, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl StatKey {
    /// The key for a file's metadata (from `symlink_metadata`).
    pub fn of(meta: &fs::Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    stat: StatKey,
    digest: Digest,
}

/// Digests by absolute path, loaded from and saved to one file.
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<HashMap<PathBuf, Entry>>,
    changed: Mutex<bool>,
}

impl StatCache {
    /// Loads the cache kept at `path` (an unreadable or missing file is an empty cache: it is
    /// only an optimisation).
    pub fn load(path: &Path) -> StatCache {
        let entries = fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<(PathBuf, Entry)>>(&bytes).ok())
            .map(|list| list.into_iter().collect())
            .unwrap_or_default();
        StatCache {
            path: path.to_owned(),
            entries: Mutex::new(entries),
            changed: Mutex::new(false),
        }
    }

    /// The remembered digest of `file`, if its metadata still matches.
    pub fn get(&self, file: &Path, stat: &StatKey) -> Option<Digest> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(file)
            .filter(|e| e.stat == *stat)
            .map(|e| e.digest.clone())
    }

    /// Remembers a digest.
    pub fn insert(&self, file: PathBuf, stat: StatKey, digest: Digest) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(file, Entry { stat, digest });
        *self.changed.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Writes the cache back if anything was added (atomically: temporary file, rename).
    pub fn save(&self) -> std::io::Result<()> {
        if !*self.changed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(());
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<(&PathBuf, &Entry)> = entries.iter().collect();
        let bytes = serde_json::to_vec(&list).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension(format!("tmp-{}", std::process::id()));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "one").unwrap();
        let cache = StatCache::load(&dir.path().join("cache.json"));
        let stat = StatKey::of(&fs::symlink_metadata(&file).unwrap());
        cache.insert(file.clone(), stat, Digest::sha256_of(b"one"));
        cache.save().unwrap();

        let reloaded = StatCache::load(&dir.path().join("cache.json"));
        assert_eq!(reloaded.get(&file, &stat), Some(Digest::sha256_of(b"one")));
        fs::write(&file, "two").unwrap();
        let changed = StatKey::of(&fs::symlink_metadata(&file).unwrap());
        assert_eq!(reloaded.get(&file, &changed), None);
    }
}
