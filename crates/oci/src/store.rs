//! The local content store: an OCI image layout directory (so skopeo's `oci:` transport and
//! umoci can read it) holding blobs by digest, plus named references in `index.json`.
//!
//! Blobs are written through a [`BlobWriter`], which hashes while writing to a temporary file
//! and only renames it into `blobs/` once the digest is known (and, if one was expected,
//! checked). A crash leaves at most a temporary file in `ingest/`, never a wrong blob.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::atomic::{unique_suffix, write_atomic};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::manifest::{Descriptor, ImageIndex};
use crate::media_type;

/// The annotation that names an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The content did not hash to the digest it was expected to have.
    #[error("content has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// What was expected.
        expected: Digest,
        /// What the content hashed to.
        actual: Digest,
    },
    /// The filesystem failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// An OCI image layout used as a content store.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens the layout at `root`, creating it if needed.
    pub fn open(root: &Path) -> Result<ContentStore, StoreError> {
        let context = || format!("creating content store in {}", root.display());
        fs::create_dir_all(root.join("blobs").join("sha256")).map_err(io_error(context()))?;
        fs::create_dir_all(root.join("ingest")).map_err(io_error(context()))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_error(context()))?;
        }
        let store = ContentStore {
            root: root.to_owned(),
        };
        if !root.join("index.json").exists() {
            store.write_index(&empty_index())?;
        }
        Ok(store)
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob of `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        File::open(self.blob_path(digest)).map_err(io_error(format!("opening blob {digest}")))
    }

    /// Reads a whole (small) blob: a manifest or config.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        fs::read(self.blob_path(digest)).map_err(io_error(format!("reading blob {digest}")))
    }

    /// Starts writing a blob.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let path = self.root.join("ingest").join(unique_suffix());
        let file = File::create(&path).map_err(io_error(format!("creating {}", path.display())))?;
        Ok(BlobWriter {
            store: self.clone(),
            path,
            file: io::BufWriter::with_capacity(1 << 20, file),
            hasher: Hasher::new(Algorithm::Sha256),
            size: 0,
        })
    }

    /// Stores the file at `source` as the blob `digest` (unless the store has it), checked
    /// against that digest as it is copied: a blob of another layout, or a download.
    pub fn import_file(&self, source: &Path, digest: &Digest) -> Result<(), StoreError> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut file = File::open(source).map_err(io_error(format!("opening {}", source.display())))?;
        let mut writer = self.writer()?;
        io::copy(&mut file, &mut writer).map_err(io_error(format!("copying {}", source.display())))?;
        writer.commit(Some(digest))?;
        Ok(())
    }

    /// Stores bytes held in memory and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::sha256_of(bytes);
        if !self.contains(&digest) {
            let mut writer = self.writer()?;
            writer.write_all(bytes).map_err(io_error("writing blob"))?;
            writer.commit(Some(&digest))?;
        }
        Ok(digest)
    }

    /// Stores a JSON document (manifest, config) and returns its descriptor.
    pub fn put_json(
        &self,
        media_type: &str,
        value: &impl serde::Serialize,
    ) -> Result<Descriptor, StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Io {
            context: "encoding JSON".to_owned(),
            source: io::Error::other(e),
        })?;
        let digest = self.put(&bytes)?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_error(format!("reading {}", path.display())))?;
        crate::json::from_slice(&bytes).map_err(|e| StoreError::Io {
            context: format!("parsing {}", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// Names an image: adds (or replaces) the `index.json` entry whose ref name is `name`.
    /// Naming it again as it is writes nothing (a cached rebuild touches no file).
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<(), StoreError> {
        let mut entry = descriptor.clone();
        entry.annotations.insert(REF_NAME.to_owned(), name.to_owned());
        if self.resolve_ref(name)?.as_ref() == Some(&entry) {
            return Ok(());
        }
        self.update_index(|index| {
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
            index.manifests.push(entry);
        })
    }

    /// Removes a name; returns whether it existed.
    pub fn remove_ref(&self, name: &str) -> Result<bool, StoreError> {
        let mut removed = false;
        self.update_index(|index| {
            let before = index.manifests.len();
            index
                .manifests
                .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
            removed = index.manifests.len() != before;
        })?;
        Ok(removed)
    }

    /// The descriptor a name points at.
    pub fn resolve_ref(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(name)))
    }

    /// Every stored blob's digest (sha256 only; the store writes nothing else).
    pub fn blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join("blobs").join("sha256");
        let mut digests = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(format!("listing {}", dir.display())))? {
            let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(digest) = Digest::from_parts(Algorithm::Sha256, name)
            {
                digests.push(digest);
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Removes a blob (and the record of where it came from); returns whether it existed.
    pub fn remove_blob(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.remove_origins(digest)
            .map_err(io_error(format!("removing the origins of blob {digest}")))?;
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(format!("removing blob {digest}"))(e)),
        }
    }

    /// Read-modify-write of `index.json` under an exclusive lock, so concurrent rbuild
    /// processes never lose each other's names.
    fn update_index(&self, change: impl FnOnce(&mut ImageIndex)) -> Result<(), StoreError> {
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(io_error(format!("creating {}", lock_path.display())))?;
        lock.lock()
            .map_err(io_error(format!("locking {}", lock_path.display())))?;
        let mut index = self.index()?;
        change(&mut index);
        self.write_index(&index)
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let path = self.root.join("index.json");
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Io {
            context: "encoding index.json".to_owned(),
            source: io::Error::other(e),
        })?;
        write_atomic(&path, &bytes).map_err(io_error(format!("writing {}", path.display())))
    }
}

fn empty_index() -> ImageIndex {
    ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        artifact_type: None,
        manifests: Vec::new(),
        subject: None,
        annotations: Default::default(),
    }
}

/// A blob being written: hashed as it goes, installed by [`commit`](BlobWriter::commit).
pub struct BlobWriter {
    store: ContentStore,
    path: PathBuf,
    file: io::BufWriter<File>,
    hasher: Hasher,
    size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finalize()
    }

    /// Finishes the blob: checks it against `expected` (if given) and moves it into place.
    /// Returns its digest and size. On a mismatch nothing is stored.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64), StoreError> {
        self.file.flush().map_err(io_error("flushing blob"))?;
        let digest = self.hasher.clone().finalize();
        if let Some(expected) = expected
            && expected != &digest
        {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        let target = self.store.blob_path(&digest);
        fs::rename(&self.path, &target).map_err(io_error(format!("storing blob {digest}")))?;
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Abandoned (not committed): remove the temporary file. After a commit it is gone.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_file_is_checked_against_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("store")).unwrap();
        let source = dir.path().join("blob");
        fs::write(&source, b"layer").unwrap();
        let wrong = Digest::sha256_of(b"other");
        assert!(store.import_file(&source, &wrong).is_err());
        assert!(!store.contains(&wrong));
        let right = Digest::sha256_of(b"layer");
        store.import_file(&source, &right).unwrap();
        assert_eq!(store.read(&right).unwrap(), b"layer");
    }

    #[test]
    fn stores_blobs_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        assert!(dir.path().join("oci-layout").is_file());
        let digest = store.put(b"hello").unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.size(&digest), Some(5));

        let descriptor = Descriptor::new(media_type::OCI_MANIFEST, digest.clone(), 5);
        store.set_ref("app:1", &descriptor).unwrap();
        store.set_ref("app:1", &descriptor).unwrap();
        store.set_ref("app:2", &descriptor).unwrap();
        assert_eq!(store.index().unwrap().manifests.len(), 2);
        assert_eq!(store.resolve_ref("app:1").unwrap().unwrap().digest, digest);
        assert!(store.remove_ref("app:1").unwrap());
        assert!(store.resolve_ref("app:1").unwrap().is_none());
        assert_eq!(store.blobs().unwrap(), [digest]);
    }

    #[test]
    fn a_wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut writer = store.writer().unwrap();
        writer.write_all(b"actual").unwrap();
        let expected = Digest::sha256_of(b"expected");
        assert!(matches!(
            writer.commit(Some(&expected)),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(store.blobs().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }
}
