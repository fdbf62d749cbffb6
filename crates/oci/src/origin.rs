//! Where the blobs of the local store are known to be: for each blob, the registry repositories
//! it was pulled from or pushed to, newest first — docker's "distribution metadata".
//!
//! A push uses them to mount a blob from a repository of the same registry instead of
//! uploading it again (an image built on a base pulled from `registry/debian` and pushed to
//! `registry/app` sends only its own layers). They are hints: a record may be stale (the blob
//! deleted from that repository since, or the user not allowed to read it), and the push falls
//! back to an upload then.
//!
//! Each blob has a small JSON file, `origins/<algorithm>/<hex>`, beside the layout's `blobs/`.
//! Updates are read-modify-write under one lock file (so concurrent rbuild processes and threads
//! never lose each other's records) and replace the file atomically (so a reader never sees
//! half of one). A file that cannot be read as records counts as none.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::digest::Digest;
use crate::name::RepositoryName;
use crate::store::{ContentStore, StoreError};

/// How many repositories are remembered per blob: the newest, since a push tries only a couple.
pub const MAX_ORIGINS: usize = 4;

/// A repository a blob is known to be in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobOrigin {
    /// The registry, as image references name it (`ghcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository on that registry.
    pub repository: RepositoryName,
}

impl ContentStore {
    fn origin_path(&self, digest: &Digest) -> PathBuf {
        self.root()
            .join("origins")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// The repositories `digest` is known to be in, newest first. Unreadable records are
    /// skipped: they only ever save an upload.
    pub fn origins(&self, digest: &Digest) -> Vec<BlobOrigin> {
        let Ok(bytes) = fs::read(self.origin_path(digest)) else {
            return Vec::new();
        };
        let Ok(entries) = serde_json::from_slice::<Vec<serde_json::Value>>(&bytes) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::new();
        entries
            .into_iter()
            .filter_map(|entry| serde_json::from_value::<BlobOrigin>(entry).ok())
            .filter(|origin| !origin.registry.is_empty() && seen.insert(origin.clone()))
            .take(MAX_ORIGINS)
            .collect()
    }

    /// Records that every blob of `digests` is in `origin`, as the newest record of each,
    /// keeping at most [`MAX_ORIGINS`] per blob.
    pub fn add_origin<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Digest>,
        origin: &BlobOrigin,
    ) -> Result<(), StoreError> {
        let io_error = |context: String| move |source| StoreError::Io { context, source };
        let lock_path = self.root().join("origins.lock");
        let lock = File::create(&lock_path).map_err(io_error(format!("creating {}", lock_path.display())))?;
        lock.lock()
            .map_err(io_error(format!("locking {}", lock_path.display())))?;
        for digest in digests {
            let mut origins = self.origins(digest);
            if origins.first() == Some(origin) {
                continue;
            }
            origins.retain(|o| o != origin);
            origins.insert(0, origin.clone());
            origins.truncate(MAX_ORIGINS);
            let path = self.origin_path(digest);
            let write = |path: &std::path::Path| -> io::Result<()> {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                let bytes = serde_json::to_vec(&origins).map_err(io::Error::other)?;
                write_atomic(path, &bytes)
            };
            write(&path).map_err(io_error(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    /// Forgets where `digest` was (its blob is being removed).
    pub(crate) fn remove_origins(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.origin_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(registry: &str, repository: &str) -> BlobOrigin {
        BlobOrigin {
            registry: registry.to_owned(),
            repository: repository.parse().unwrap(),
        }
    }

    #[test]
    fn newest_first_without_repeats_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let a = Digest::sha256_of(b"a");
        let b = Digest::sha256_of(b"b");
        assert!(store.origins(&a).is_empty());

        store.add_origin([&a, &b], &origin("r:5000", "debian")).unwrap();
        store.add_origin([&a], &origin("r:5000", "app")).unwrap();
        assert_eq!(
            store.origins(&a),
            [origin("r:5000", "app"), origin("r:5000", "debian")]
        );
        assert_eq!(store.origins(&b), [origin("r:5000", "debian")]);

        // Seen again: moved to the front, not repeated.
        store.add_origin([&a], &origin("r:5000", "debian")).unwrap();
        assert_eq!(
            store.origins(&a),
            [origin("r:5000", "debian"), origin("r:5000", "app")]
        );

        for i in 0..10 {
            store
                .add_origin([&a], &origin("ghcr.io", &format!("o/r{i}")))
                .unwrap();
        }
        let kept = store.origins(&a);
        assert_eq!(kept.len(), MAX_ORIGINS);
        assert_eq!(kept[0], origin("ghcr.io", "o/r9"));
        assert_eq!(kept[MAX_ORIGINS - 1], origin("ghcr.io", "o/r6"));

        // Removing the blob forgets its records.
        std::fs::write(store.blob_path(&a), b"a").unwrap();
        assert!(store.remove_blob(&a).unwrap());
        assert!(store.origins(&a).is_empty());
        assert_eq!(store.origins(&b).len(), 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digests: Vec<Digest> = (0..200u8).map(|i| Digest::sha256_of(&[i])).collect();
        let writers: Vec<BlobOrigin> = (0..MAX_ORIGINS)
            .map(|w| origin("r:1", &format!("w{w}")))
            .collect();
        std::thread::scope(|scope| {
            for writer in &writers {
                let (store, digests) = (&store, &digests);
                // One blob at a time, so the writers' read-modify-writes interleave.
                scope.spawn(move || {
                    for digest in digests {
                        store.add_origin([digest], writer).unwrap();
                    }
                });
            }
        });
        let all: BTreeSet<&BlobOrigin> = writers.iter().collect();
        for digest in &digests {
            let origins = store.origins(digest);
            assert_eq!(origins.iter().collect::<BTreeSet<_>>(), all, "{digest}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("origins/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn bad_records_count_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::sha256_of(b"x");
        let path = store.origin_path(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for garbage in [
            &b"not json"[..],
            b"{\"registry\":\"r\"}",
            b"",
            b"\xff\xfe",
            b"[{\"registry\":\"r:1\",\"repository\":\"../etc\"},{\"registry\":\"\",\"repository\":\"a\"}]",
        ] {
            std::fs::write(&path, garbage).unwrap();
            assert!(store.origins(&digest).is_empty(), "{garbage:?}");
        }
        // Good entries among bad ones are kept; a new record replaces the file whole.
        std::fs::write(
            &path,
            br#"[7, {"registry":"r:1","repository":"ok"}, {"registry":"r:1"}]"#,
        )
        .unwrap();
        assert_eq!(store.origins(&digest), [origin("r:1", "ok")]);
        store.add_origin([&digest], &origin("r:1", "new")).unwrap();
        assert_eq!(
            store.origins(&digest),
            [origin("r:1", "new"), origin("r:1", "ok")]
        );
    }
}
