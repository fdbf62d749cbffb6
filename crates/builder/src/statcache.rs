//! The persistent stat cache: a file's content digest, remembered against what `stat` says of
//! it, so an unchanged context costs one `stat` per file and no reads.
//!
//! Entries are found by device and inode, and trusted only while size, mtime and ctime match
//! too. ctime changes on any write, chmod, link or rename, so a file rewritten with its old
//! mtime is caught, and an inode number reused by a new file comes with a new ctime. The path
//! is not part of it: the same file reached through another path (a moved context, a hard
//! link) has the same content, and a warm lookup costs no path building or hashing.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rbuild_oci::{Algorithm, Digest};
use rustc_hash::FxHashMap;

/// What `stat` says of a file, as far as the cache cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl StatKey {
    /// The key for a file's metadata (from `symlink_metadata`).
    pub fn of(meta: &fs::Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec() as u32),
            ctime: (meta.ctime(), meta.ctime_nsec() as u32),
        }
    }

    fn file(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// The file's first bytes; a file that does not start with them is ignored (an old format, or
/// a torn write from a crash — it is only a cache).
const MAGIC: &[u8] = b"rbuild statcache 2\n";

/// Bytes per record: device, inode, size, mtime seconds (8 each), mtime nanoseconds (4),
/// ctime seconds (8) and nanoseconds (4), SHA-256 (32), all little-endian.
const RECORD: usize = 8 + 8 + 8 + 8 + 4 + 8 + 4 + 32;

/// By device and inode. Fx hashing: the keys are not attacker-chosen, and SipHash was a
/// visible part of a warm build's 20,000 lookups.
type Entries = FxHashMap<(u64, u64), (StatKey, [u8; 32])>;

/// SHA-256 digests of files by device and inode, loaded from and saved to one file of
/// fixed-size records (20,000 files load in about a millisecond).
pub struct StatCache {
    path: PathBuf,
    /// What the file held when loaded; read without locking by all hashing threads.
    loaded: Entries,
    /// What this build hashed.
    learned: Mutex<Entries>,
}

fn decode(bytes: &[u8]) -> Option<Entries> {
    let records = bytes.strip_prefix(MAGIC)?;
    if !records.len().is_multiple_of(RECORD) {
        return None;
    }
    let mut entries = FxHashMap::with_capacity_and_hasher(records.len() / RECORD, Default::default());
    for record in records.chunks_exact(RECORD) {
        let mut at = 0;
        let mut take = |n: usize| {
            let field = &record[at..at + n];
            at += n;
            field
        };
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let i64_at = |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let key = StatKey {
            dev: u64_at(take(8)),
            ino: u64_at(take(8)),
            size: u64_at(take(8)),
            mtime: (i64_at(take(8)), u32_at(take(4))),
            ctime: (i64_at(take(8)), u32_at(take(4))),
        };
        let digest: [u8; 32] = take(32).try_into().ok()?;
        entries.insert(key.file(), (key, digest));
    }
    Some(entries)
}

fn encode<'a>(entries: impl Iterator<Item = &'a (StatKey, [u8; 32])>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (key, digest) in entries {
        out.extend_from_slice(&key.dev.to_le_bytes());
        out.extend_from_slice(&key.ino.to_le_bytes());
        out.extend_from_slice(&key.size.to_le_bytes());
        out.extend_from_slice(&key.mtime.0.to_le_bytes());
        out.extend_from_slice(&key.mtime.1.to_le_bytes());
        out.extend_from_slice(&key.ctime.0.to_le_bytes());
        out.extend_from_slice(&key.ctime.1.to_le_bytes());
        out.extend_from_slice(digest);
    }
    out
}

impl StatCache {
    /// Loads the cache kept at `path` (an unreadable, missing or foreign file is an empty
    /// cache: it is only an optimisation).
    pub fn load(path: &Path) -> StatCache {
        let loaded = fs::read(path)
            .ok()
            .and_then(|bytes| decode(&bytes))
            .unwrap_or_default();
        StatCache {
            path: path.to_owned(),
            loaded,
            learned: Mutex::new(FxHashMap::default()),
        }
    }

    /// The remembered SHA-256 of the file `stat` describes, if its metadata still matches.
    pub fn get(&self, stat: &StatKey) -> Option<Digest> {
        let raw = match self.loaded.get(&stat.file()) {
            Some((key, digest)) if key == stat => *digest,
            _ => {
                let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
                let (key, digest) = learned.get(&stat.file())?;
                if key != stat {
                    return None;
                }
                *digest
            }
        };
        Some(Digest::sha256_from_raw(&raw))
    }

    /// Remembers a digest (only SHA-256 ones are kept).
    pub fn insert(&self, stat: StatKey, digest: &Digest) {
        let mut raw = [0u8; 32];
        if digest.algorithm() != Algorithm::Sha256 || hex::decode_to_slice(digest.hex(), &mut raw).is_err() {
            return;
        }
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stat.file(), (stat, raw));
    }

    /// Writes the cache back if this build learned anything (atomically: temporary file,
    /// rename), what it learned replacing what was loaded for the same files.
    pub fn save(&self) -> std::io::Result<()> {
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if learned.is_empty() {
            return Ok(());
        }
        let kept = self
            .loaded
            .iter()
            .filter(|(file, _)| !learned.contains_key(*file));
        let bytes = encode(kept.chain(learned.iter()).map(|(_, entry)| entry));
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

    fn stat(path: &Path) -> StatKey {
        StatKey::of(&fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn remembers_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "one").unwrap();
        let cache = StatCache::load(&dir.path().join("cache"));
        cache.insert(stat(&file), &Digest::sha256_of(b"one"));
        assert_eq!(cache.get(&stat(&file)), Some(Digest::sha256_of(b"one")));
        cache.save().unwrap();

        let reloaded = StatCache::load(&dir.path().join("cache"));
        assert_eq!(reloaded.get(&stat(&file)), Some(Digest::sha256_of(b"one")));
        fs::write(&file, "two").unwrap();
        assert_eq!(reloaded.get(&stat(&file)), None);
    }

    #[test]
    fn a_rename_or_chmod_is_a_miss_and_other_files_survive_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let cache = StatCache::load(&dir.path().join("cache"));
        cache.insert(stat(&a), &Digest::sha256_of(b"a"));
        cache.insert(stat(&b), &Digest::sha256_of(b"b"));
        cache.save().unwrap();

        // Moved and chmodded a little later: the ctime moves on (it has nanoseconds).
        std::thread::sleep(std::time::Duration::from_millis(5));
        let moved = dir.path().join("moved");
        fs::rename(&a, &moved).unwrap();
        let reloaded = StatCache::load(&dir.path().join("cache"));
        assert_eq!(reloaded.get(&stat(&moved)), None);
        reloaded.insert(stat(&moved), &Digest::sha256_of(b"a"));
        reloaded.save().unwrap();

        let again = StatCache::load(&dir.path().join("cache"));
        assert_eq!(again.get(&stat(&moved)), Some(Digest::sha256_of(b"a")));
        assert_eq!(again.get(&stat(&b)), Some(Digest::sha256_of(b"b")));
    }

    #[test]
    fn a_foreign_or_torn_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        fs::write(&path, b"rbuild statcache 1\nwhatever").unwrap();
        assert!(StatCache::load(&path).loaded.is_empty());
        let mut torn = MAGIC.to_vec();
        torn.extend_from_slice(&[0; RECORD - 1]);
        fs::write(&path, torn).unwrap();
        assert!(StatCache::load(&path).loaded.is_empty());
    }
}
