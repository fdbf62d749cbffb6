//! The filesystem storage, rbuild's embedded default.
//!
//! ```text
//! <root>/blobs/<alg>/<hex[..2]>/<hex>                       verified blob bytes (immutable)
//! <root>/blobs/_uploads/<uuid>                              staged upload data
//! <root>/repositories/<name>/_layers/<alg>/<hex>            link: the repository may read a blob
//! <root>/repositories/<name>/_manifests/revisions/<alg>/<hex>   manifest record (JSON)
//! <root>/repositories/<name>/_manifests/tags/<tag>          the digest a tag points at
//! <root>/repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  marker: a referrer of a subject
//! <root>/repositories/<name>/_uploads/<uuid>                upload session (JSON)
//! ```
//!
//! Repository name components never start with `_` (the spec's grammar), so the `_` entries
//! cannot collide with a nested repository. Every file that is replaced is written to a
//! temporary name, fsynced and renamed into place, so a crash at any instant leaves either the
//! old file or the new one. Blob bytes are only renamed into `blobs/` after their digest has
//! been verified.

mod aside;
mod blobs;
pub mod fsck;
mod metadata;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use rbuild_oci::Digest;
use rbuild_oci::atomic::{Durability, TEMPORARY_PREFIX, WriteOptions, is_temporary, write_atomic_with};

pub use blobs::FsBlobStore;
pub use metadata::FsMetadataStore;

use super::{StorageError, StorageResult};

/// Where blobs live under the root.
pub(crate) const BLOBS_DIR: &str = "blobs";
/// Where staged uploads live under the blobs directory.
pub(crate) const UPLOADS_DIR: &str = "_uploads";
/// Where repositories live under the root.
pub(crate) const REPOSITORIES_DIR: &str = "repositories";

/// `<base>/<alg>/<hex[..2]>/<hex>`: fans blobs out over 256 directories per algorithm.
pub(crate) fn blob_path(blobs: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    blobs.join(digest.algorithm().name()).join(&hex[..2]).join(hex)
}

/// `<base>/<alg>/<hex>`: a per-repository link or record named by digest.
pub(crate) fn digest_path(base: &Path, digest: &Digest) -> PathBuf {
    base.join(digest.algorithm().name()).join(digest.hex())
}

/// Runs blocking filesystem work off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> StorageResult<T>
where
    F: FnOnce() -> StorageResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::io("storage task", io::Error::other(e)))?
}

/// Makes a directory's entries durable (a rename is only durable once its directory is).
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically, creating its directory; flushed to disk when the
/// registry is configured to `fsync`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> StorageResult<()> {
    let options = WriteOptions {
        durability: if fsync {
            Durability::Flushed
        } else {
            Durability::Renamed
        },
        mode: None,
        create_dir: true,
    };
    write_atomic_with(path, bytes, options)
        .map_err(|e| StorageError::io(format!("writing {}", path.display()), e))
}

/// Checks that `dir` is a directory this process can create files in.
pub(crate) async fn check_writable(dir: PathBuf) -> StorageResult<()> {
    blocking(move || {
        let probe = dir.join(format!(
            "{TEMPORARY_PREFIX}health-{}",
            uuid::Uuid::new_v4().simple()
        ));
        File::create(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| StorageError::io(format!("writing to {}", dir.display()), e))
    })
    .await
}

/// Reads a small file; `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> StorageResult<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// Removes a file; `false` if it did not exist.
pub(crate) fn remove_optional(path: &Path) -> StorageResult<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
    }
}

/// The names in a directory, skipping temporary files; empty if it does not exist.
pub(crate) fn list_names(dir: &Path) -> StorageResult<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(format!("listing {}", dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str().filter(|n| !is_temporary(n)) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
