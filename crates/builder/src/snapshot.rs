//! Layer snapshots: each layer unpacked once, in overlayfs' lower-layer format, and shared by
//! every build that uses it — by `COPY --from` and name lookups through [`RootfsView`], and
//! by RUN as overlay lower directories.
//!
//! A snapshot is keyed by the layer's diff ID (the digest of its uncompressed tar): an
//! unpacked diff does not depend on the layers below it (a deletion is a whiteout file, not
//! an effect), so one snapshot serves every chain that contains the layer. It is unpacked
//! into a temporary directory and renamed into place, so a crash or `kill -9` mid-unpack
//! leaves no half-made snapshot under the real name.
//!
//! Regular files are shared between snapshots through a [`FilePool`] in `pool/`: the layer
//! a rebuild makes after a one-file change repeats every other file of the layer before,
//! and linking them is ten times cheaper than writing them again. Snapshots are only ever
//! read (as overlay lower directories, or by `COPY --from`), which is what makes sharing safe.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbuild_layer::{FilePool, UnpackOptions, WhiteoutMode};
use rbuild_oci::{ContentStore, Digest};

use crate::cache::CachedLayer;
use crate::error::{BuildError, Result};
use crate::rootfs::RootfsView;

/// The snapshot directory of the local store.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    pool: FilePool,
    /// One lock per layer being unpacked, so concurrent stages of a build wait for one unpack
    /// instead of doing it twice (other processes race benignly: the first rename wins).
    unpacking: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl Snapshots {
    /// Opens the snapshots under `dir`, clearing temporary directories a crash left behind.
    pub fn open(dir: &Path) -> Result<Snapshots> {
        fs::create_dir_all(dir).map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name.to_str().is_some_and(|n| n.starts_with("tmp-"))
                    && !is_ours_and_live(name.to_str().unwrap_or_default());
                if stale {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(Snapshots {
            dir: dir.to_owned(),
            pool: open_pool(dir)?,
            unpacking: Mutex::new(HashMap::new()),
        })
    }

    /// The unpacked directory of `layer`, unpacking it from `store` on first use.
    pub fn ensure(&self, layer: &CachedLayer, store: &ContentStore) -> Result<PathBuf> {
        let target = self.dir.join(layer.diff_id.hex());
        if target.is_dir() {
            return Ok(target);
        }
        let lock = {
            let mut unpacking = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
            unpacking.entry(layer.diff_id.clone()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if target.is_dir() {
            return Ok(target);
        }
        let digest = &layer.descriptor.digest;
        let blob = store.open_blob(digest)?;
        let reader = rbuild_layer::decompressed(blob)
            .map_err(|e| BuildError::Fetch(format!("layer {digest}: {e}")))?;
        let pending = self.begin()?;
        pending
            .unpack(reader)
            .map_err(|e| BuildError::Fetch(format!("unpacking layer {digest}: {e}")))?;
        pending.install(&layer.diff_id)
    }

    /// A snapshot to unpack a layer into before its diff ID is known: while the layer is
    /// being written.
    pub fn begin(&self) -> Result<PendingSnapshot<'_>> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("tmp-{}-", std::process::id()))
            .tempdir_in(&self.dir)
            .map_err(|e| BuildError::io(format!("creating a directory in {}", self.dir.display()), e))?
            .keep();
        Ok(PendingSnapshot {
            snapshots: self,
            tmp,
            installed: false,
        })
    }

    /// A view of the filesystem made by `layers`, unpacking what is missing.
    pub fn view(&self, layers: &[CachedLayer], store: &ContentStore) -> Result<RootfsView> {
        let dirs = layers
            .iter()
            .map(|layer| self.ensure(layer, store))
            .collect::<Result<Vec<_>>>()?;
        Ok(RootfsView::new(dirs))
    }

    /// Removes every snapshot and the file pool (they are rebuilt from the store on demand).
    pub fn clear(&mut self) -> Result<()> {
        fs::remove_dir_all(&self.dir)
            .map_err(|e| BuildError::io(format!("removing {}", self.dir.display()), e))?;
        fs::create_dir_all(&self.dir)
            .map_err(|e| BuildError::io(format!("creating {}", self.dir.display()), e))?;
        self.pool = open_pool(&self.dir)?;
        Ok(())
    }

    /// The directory holding the snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A snapshot being unpacked into a temporary directory; removed unless installed.
#[derive(Debug)]
pub struct PendingSnapshot<'s> {
    snapshots: &'s Snapshots,
    tmp: PathBuf,
    installed: bool,
}

impl PendingSnapshot<'_> {
    /// Unpacks the uncompressed layer tar `reader`, sharing files through the pool.
    pub fn unpack(&self, reader: impl Read) -> std::result::Result<(), rbuild_layer::LayerError> {
        let options = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            same_owner: is_root(),
        };
        rbuild_layer::unpack_pooled(reader, &self.tmp, &options, &self.snapshots.pool).map(|_| ())
    }

    /// Puts the unpacked layer in place as the snapshot of `diff_id`.
    pub fn install(mut self, diff_id: &Digest) -> Result<PathBuf> {
        let target = self.snapshots.dir.join(diff_id.hex());
        match fs::rename(&self.tmp, &target) {
            Ok(()) => {
                self.installed = true;
                Ok(target)
            }
            // Another build unpacked the same layer first: use theirs (ours goes on drop).
            Err(_) if target.is_dir() => Ok(target),
            Err(e) => Err(BuildError::io(
                format!("installing snapshot {}", target.display()),
                e,
            )),
        }
    }
}

impl Drop for PendingSnapshot<'_> {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// The file pool of the snapshots in `dir`.
fn open_pool(dir: &Path) -> Result<FilePool> {
    let path = dir.join("pool");
    FilePool::open(&path).map_err(|e| BuildError::io(format!("creating {}", path.display()), e))
}

/// Whether a `tmp-<pid>-…` directory belongs to a process that is still running.
fn is_ours_and_live(name: &str) -> bool {
    name.split('-')
        .nth(1)
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Whether this process may set file owners (and so restore them when unpacking).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
