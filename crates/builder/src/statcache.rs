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
const MAGIC: &[u8] = b"rbuild statcache 3\n";

/// Bytes per record: device, inode, size, mtime seconds (8 each), mtime nanoseconds (4),
/// ctime seconds (8) and nanoseconds (4), SHA-256 (32), all little-endian.
const RECORD: usize = 8 + 8 + 8 + 8 + 4 + 8 + 4 + 32;

/// What a build learned, by device and inode. Fx hashing: the keys are not attacker-chosen.
type Learned = FxHashMap<(u64, u64), (StatKey, [u8; 32])>;

/// The cache file as read, searched where it lies: after [`MAGIC`], the number of slots (a
/// power of two, u32), the slots (u32 each: a record's number plus one, or 0 for none; a
/// file's slot is found by hashing its device and inode and probing onwards), then the
/// records. Loading is one read, with nothing decoded or inserted up front: a warm build
/// looks up 20,000 files, and building a map of them first cost more than the lookups.
#[derive(Default)]
struct Table {
    bytes: Vec<u8>,
    slots: usize,
}

impl Table {
    /// Bytes before the first slot.
    const HEADER: usize = MAGIC.len() + 4;

    fn parse(bytes: Vec<u8>) -> Option<Table> {
        let count = bytes.strip_prefix(MAGIC)?.get(..4)?;
        let slots = u32::from_le_bytes(count.try_into().ok()?) as usize;
        let records = bytes.len().checked_sub(Self::HEADER + 4 * slots)?;
        (slots.is_power_of_two() && records.is_multiple_of(RECORD)).then_some(Table { bytes, slots })
    }

    /// Writes `entries` as a table with at most three slots in four taken.
    fn encode(entries: &[&(StatKey, [u8; 32])]) -> Vec<u8> {
        let slots = (entries.len() * 4 / 3 + 1).next_power_of_two();
        let mut index = vec![0u32; slots];
        for (n, (key, _)) in entries.iter().enumerate() {
            let mut slot = home(key.file(), slots);
            while index[slot] != 0 {
                slot = (slot + 1) & (slots - 1);
            }
            index[slot] = n as u32 + 1;
        }
        let mut out = Vec::with_capacity(Self::HEADER + 4 * slots + RECORD * entries.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(slots as u32).to_le_bytes());
        for record in index {
            out.extend_from_slice(&record.to_le_bytes());
        }
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

    fn records(&self) -> &[u8] {
        self.bytes
            .get(Self::HEADER + 4 * self.slots..)
            .unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.records().len() / RECORD
    }

    /// The record of the file `(dev, ino)`, if the table has one.
    fn get(&self, file: (u64, u64)) -> Option<(StatKey, [u8; 32])> {
        if self.slots == 0 {
            return None;
        }
        let mut slot = home(file, self.slots);
        // A table holds fewer records than slots, so a probe meets an empty slot; the bound
        // only guards against a corrupt file.
        for _ in 0..self.slots {
            let at = Self::HEADER + 4 * slot;
            let number = u32::from_le_bytes(self.bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let record = self.record(number.checked_sub(1)?)?;
            if record.0.file() == file {
                return Some(record);
            }
            slot = (slot + 1) & (self.slots - 1);
        }
        None
    }

    fn record(&self, n: usize) -> Option<(StatKey, [u8; 32])> {
        let record = self.records().get(n * RECORD..(n + 1) * RECORD)?;
        let u64_at = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().unwrap_or_default());
        let key = StatKey {
            dev: u64_at(0),
            ino: u64_at(8),
            size: u64_at(16),
            mtime: (u64_at(24) as i64, u32_at(32)),
            ctime: (u64_at(36) as i64, u32_at(44)),
        };
        Some((key, record[48..80].try_into().ok()?))
    }

    fn iter(&self) -> impl Iterator<Item = (StatKey, [u8; 32])> + '_ {
        (0..self.len()).filter_map(|n| self.record(n))
    }
}

/// The first slot to look in for a file.
fn home((dev, ino): (u64, u64), slots: usize) -> usize {
    let mixed = (dev.rotate_left(32) ^ ino).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as usize & (slots - 1)
}

/// SHA-256 digests of files by device and inode, loaded from and saved to one file.
pub struct StatCache {
    path: PathBuf,
    /// What the file held when loaded; read without locking by all hashing threads.
    loaded: Table,
    /// What this build hashed.
    learned: Mutex<Learned>,
}

impl StatCache {
    /// Loads the cache kept at `path` (an unreadable, missing or foreign file is an empty
    /// cache: it is only an optimisation).
    pub fn load(path: &Path) -> StatCache {
        let loaded = fs::read(path).ok().and_then(Table::parse).unwrap_or_default();
        StatCache {
            path: path.to_owned(),
            loaded,
            learned: Mutex::new(FxHashMap::default()),
        }
    }

    /// The remembered SHA-256 of the file `stat` describes, if its metadata still matches.
    pub fn get(&self, stat: &StatKey) -> Option<Digest> {
        let raw = match self.loaded.get(stat.file()) {
            Some((key, digest)) if key == *stat => digest,
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
        let kept: Vec<(StatKey, [u8; 32])> = self
            .loaded
            .iter()
            .filter(|(key, _)| !learned.contains_key(&key.file()))
            .collect();
        let entries: Vec<&(StatKey, [u8; 32])> = kept.iter().chain(learned.values()).collect();
        let bytes = Table::encode(&entries);
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        rbuild_oci::atomic::write_atomic(&self.path, &bytes)
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
    fn thousands_of_files_are_found_after_a_save_and_strangers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let key = |ino: u64| StatKey {
            dev: 2049,
            ino,
            size: ino * 3,
            mtime: (1_700_000_000 + ino as i64, 7),
            ctime: (1_700_000_000 + ino as i64, 9),
        };
        let digest = |ino: u64| Digest::sha256_of(&ino.to_le_bytes());
        let cache = StatCache::load(&path);
        for ino in 1..=5000 {
            cache.insert(key(ino), &digest(ino));
        }
        cache.save().unwrap();
        let reloaded = StatCache::load(&path);
        assert_eq!(reloaded.loaded.len(), 5000);
        assert!(reloaded.loaded.slots.is_power_of_two() && reloaded.loaded.slots > 5000);
        for ino in 1..=5000 {
            assert_eq!(reloaded.get(&key(ino)), Some(digest(ino)), "inode {ino}");
        }
        assert_eq!(reloaded.get(&key(5001)), None);
        let changed = StatKey { size: 1, ..key(17) };
        assert_eq!(reloaded.get(&changed), None);
    }

    #[test]
    fn a_foreign_or_torn_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        fs::write(&path, b"rbuild statcache 1\nwhatever").unwrap();
        assert_eq!(StatCache::load(&path).loaded.len(), 0);
        let mut torn = MAGIC.to_vec();
        torn.extend_from_slice(&1u32.to_le_bytes());
        torn.extend_from_slice(&[0; 4 + RECORD - 1]);
        fs::write(&path, torn).unwrap();
        assert_eq!(StatCache::load(&path).loaded.len(), 0);
    }
}
