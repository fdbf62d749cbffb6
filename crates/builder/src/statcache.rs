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

use rbuild_oci::{Algorithm, Digest};

/// What `stat` says of a file, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
struct Entry {
    stat: StatKey,
    digest: Digest,
}

/// The file's first bytes; a file that does not start with them is ignored (an old format, or
/// a torn write from a crash — it is only a cache).
const MAGIC: &[u8] = b"rbuild statcache 1\n";

/// Digests by absolute path, loaded from and saved to one file.
///
/// The file is a compact binary list (an unchanged 20,000-file context loads in a few
/// milliseconds, where JSON took fifty): per entry the path's length and bytes, then device,
/// inode and size (u64), mtime and ctime in nanoseconds (i128), and the SHA-256 (32 bytes).
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<HashMap<PathBuf, Entry>>,
    changed: Mutex<bool>,
}

/// Reads fixed-size fields off the front of a byte slice.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}

fn decode(bytes: &[u8]) -> Option<HashMap<PathBuf, Entry>> {
    use std::os::unix::ffi::OsStrExt;
    let mut cursor = Cursor(bytes.strip_prefix(MAGIC)?);
    let mut entries = HashMap::new();
    while !cursor.0.is_empty() {
        let len = u32::from_le_bytes(cursor.take()?) as usize;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(cursor.bytes(len)?));
        let stat = StatKey {
            dev: u64::from_le_bytes(cursor.take()?),
            ino: u64::from_le_bytes(cursor.take()?),
            size: u64::from_le_bytes(cursor.take()?),
            mtime_ns: i128::from_le_bytes(cursor.take()?),
            ctime_ns: i128::from_le_bytes(cursor.take()?),
        };
        let raw: [u8; 32] = cursor.take()?;
        let digest = Digest::from_parts(Algorithm::Sha256, &hex::encode(raw)).ok()?;
        entries.insert(path, Entry { stat, digest });
    }
    Some(entries)
}

fn encode(entries: &HashMap<PathBuf, Entry>) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = MAGIC.to_vec();
    for (path, entry) in entries {
        let Ok(raw) = hex::decode(entry.digest.hex()) else {
            continue;
        };
        let path = path.as_os_str().as_bytes();
        let Ok(len) = u32::try_from(path.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(path);
        out.extend_from_slice(&entry.stat.dev.to_le_bytes());
        out.extend_from_slice(&entry.stat.ino.to_le_bytes());
        out.extend_from_slice(&entry.stat.size.to_le_bytes());
        out.extend_from_slice(&entry.stat.mtime_ns.to_le_bytes());
        out.extend_from_slice(&entry.stat.ctime_ns.to_le_bytes());
        out.extend_from_slice(&raw);
    }
    out
}

impl StatCache {
    /// Loads the cache kept at `path` (an unreadable, missing or foreign file is an empty
    /// cache: it is only an optimisation).
    pub fn load(path: &Path) -> StatCache {
        let entries = fs::read(path)
            .ok()
            .and_then(|bytes| decode(&bytes))
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
        let bytes = encode(&self.entries.lock().unwrap_or_else(|e| e.into_inner()));
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
