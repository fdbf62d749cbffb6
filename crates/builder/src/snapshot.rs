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
//!
//! Cheaper still is not to repeat them at all: a layer whose entries are known (a COPY) can
//! be installed as a *delta* over the snapshot of the layer its step made last time — only
//! what changed, plus whiteouts for what is gone ([`rbuild_layer::delta`]) — and is then
//! seen as that snapshot's directories with the delta on top. On disk:
//!
//! - `<diff ID hex>/`: a whole snapshot;
//! - `<diff ID hex>.delta/root/` and `.delta/base`: a delta and the diff ID it lies on (the
//!   pair is renamed into place together, so neither is ever seen without the other);
//! - `<diff ID hex>.index`: the layer's [`EntryIndex`], for a later layer to be a delta over.
//!
//! A chain of deltas is at most [`MAX_DELTA_DEPTH`] long; the next layer is unpacked whole.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbuild_layer::{
    Compression, Entry, EntryIndex, FilePool, HashingWriter, LayerOptions, UnpackOptions, WhiteoutMode,
};
use rbuild_oci::{ContentStore, Digest};

use crate::cache::CachedLayer;
use crate::error::{BuildError, Result};
use crate::placement;
use crate::rootfs::RootfsView;

/// The most deltas stacked on one whole snapshot: each is one more overlay lower directory.
pub const MAX_DELTA_DEPTH: usize = 8;

/// The snapshot directory of the local store.
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    pool: FilePool,
    /// Whether the filesystem spreads the snapshots' directories (see [`placement`]).
    spread: bool,
    /// One lock per layer being unpacked, so concurrent stages of a build wait for one unpack
    /// instead of doing it twice (other processes race benignly: the first rename wins).
    unpacking: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl Snapshots {
    /// Opens the snapshots under `dir`, clearing temporary directories a crash left behind.
    pub fn open(dir: &Path) -> Result<Snapshots> {
        fs::create_dir_all(dir).map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        let spread = placement::spread_subdirectories(dir);
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
            spread,
            unpacking: Mutex::new(HashMap::new()),
        })
    }

    /// The directories that show `layer` when stacked in order (one, unless it is a delta),
    /// unpacking it from `store` on first use.
    pub fn ensure(&self, layer: &CachedLayer, store: &ContentStore) -> Result<Vec<PathBuf>> {
        if let Some(dirs) = self.installed(&layer.diff_id) {
            return Ok(dirs);
        }
        let lock = {
            let mut unpacking = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
            unpacking.entry(layer.diff_id.clone()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dirs) = self.installed(&layer.diff_id) {
            return Ok(dirs);
        }
        let digest = &layer.descriptor.digest;
        let blob = store.open_blob(digest)?;
        let failed = |source| BuildError::Unpack {
            layer: digest.clone(),
            source,
        };
        let reader = rbuild_layer::decompressed(blob).map_err(failed)?;
        let pending = self.begin()?;
        pending.unpack(reader).map_err(failed)?;
        Ok(vec![pending.install(&layer.diff_id)?])
    }

    /// The directories of the installed snapshot of `diff_id`, if there is one (a delta
    /// whose base is gone is not).
    fn installed(&self, diff_id: &Digest) -> Option<Vec<PathBuf>> {
        self.chain(diff_id.hex(), MAX_DELTA_DEPTH + 1)
    }

    fn chain(&self, hex: &str, depth_left: usize) -> Option<Vec<PathBuf>> {
        let whole = self.dir.join(hex);
        if whole.is_dir() {
            return Some(vec![whole]);
        }
        let delta = self.dir.join(format!("{hex}.delta"));
        let base = fs::read_to_string(delta.join("base")).ok()?;
        let mut dirs = self.chain(base.trim(), depth_left.checked_sub(1)?)?;
        dirs.push(delta.join("root"));
        Some(dirs)
    }

    /// How many deltas the snapshot of `diff_id` is made of (0 for a whole one).
    fn depth(&self, diff_id: &Digest) -> Option<usize> {
        self.installed(diff_id).map(|dirs| dirs.len() - 1)
    }

    /// The entry index kept for the layer `diff_id`, if its snapshot can be a delta's base.
    pub fn base_index(&self, diff_id: &Digest) -> Option<EntryIndex> {
        if self.depth(diff_id)? >= MAX_DELTA_DEPTH {
            return None;
        }
        EntryIndex::from_bytes(&fs::read(self.index_path(diff_id)).ok()?)
    }

    /// Keeps the entry index of the layer `diff_id` (best effort: it only enables deltas).
    pub fn keep_index(&self, diff_id: &Digest, index: &EntryIndex) {
        let _ = rbuild_oci::atomic::write_atomic(&self.index_path(diff_id), &index.to_bytes());
    }

    fn index_path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.index", diff_id.hex()))
    }

    /// A snapshot to unpack a layer into before its diff ID is known: while the layer is
    /// being written.
    pub fn begin(&self) -> Result<PendingSnapshot<'_>> {
        let prefix = format!("tmp-{}-", std::process::id());
        let tmp = placement::temp_dir(&self.dir, &prefix, self.spread)
            .map_err(|e| BuildError::io(format!("creating a directory in {}", self.dir.display()), e))?;
        Ok(PendingSnapshot {
            snapshots: self,
            tmp,
            base: None,
            installed: false,
        })
    }

    /// How to snapshot the layer `entries` are about to make (mtimes clamped to `epoch`),
    /// which its step made as `previous` last time: a delta over `previous`' snapshot when
    /// that has an index and is not too deep, and the delta is less than half the layer;
    /// otherwise unpacked whole from the layer as it is written.
    pub fn plan(
        &self,
        entries: &[Entry],
        epoch: Option<i64>,
        previous: Option<&Digest>,
    ) -> Result<Planned<'_>> {
        let pending = self.begin()?;
        let index = EntryIndex::of(entries, epoch);
        let delta = index.as_ref().zip(previous).and_then(|(index, previous)| {
            let base = self.base_index(previous)?;
            let delta = rbuild_layer::delta(entries, index, &base);
            (delta.len() * 2 <= entries.len()).then_some((previous, delta))
        });
        Ok(match delta {
            Some((base, delta)) => Planned {
                pending: pending.over(base)?,
                delta: Some(delta),
                epoch,
                index,
            },
            None => Planned {
                pending,
                delta: None,
                epoch,
                index,
            },
        })
    }

    /// A view of the filesystem made by `layers`, unpacking what is missing.
    pub fn view(&self, layers: &[CachedLayer], store: &ContentStore) -> Result<RootfsView> {
        let mut dirs = Vec::with_capacity(layers.len());
        for layer in layers {
            dirs.extend(self.ensure(layer, store)?);
        }
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

/// The snapshot of a layer being written, as [`Snapshots::plan`] decided to make it.
#[derive(Debug)]
pub struct Planned<'s> {
    pending: PendingSnapshot<'s>,
    /// For a delta, what goes into it; the layer itself is then not unpacked.
    delta: Option<Vec<Entry>>,
    epoch: Option<i64>,
    index: Option<EntryIndex>,
}

impl Planned<'_> {
    /// Where to unpack the layer while it is written, unless the snapshot is a delta.
    pub fn tap(&self) -> Option<&PendingSnapshot<'_>> {
        self.delta.is_none().then_some(&self.pending)
    }

    /// Installs the snapshot as that of `diff_id`, unpacking the delta first, and keeps the
    /// layer's index. `tapped` says whether unpacking the written layer succeeded; when it
    /// (or the delta) did not, nothing is installed, and the layer is unpacked from the
    /// store when next needed.
    pub fn finish(self, diff_id: &Digest, tapped: bool) -> Result<()> {
        let unpacked = match &self.delta {
            None => tapped,
            Some(delta) => self.unpack_delta(delta.clone()),
        };
        if !unpacked {
            return Ok(());
        }
        let snapshots = self.pending.snapshots;
        self.pending.install(diff_id)?;
        if let Some(index) = &self.index {
            snapshots.keep_index(diff_id, index);
        }
        Ok(())
    }

    /// Writes the delta's entries as a plain tar and unpacks it, the way the whole layer
    /// would have been: the same code makes both.
    fn unpack_delta(&self, delta: Vec<Entry>) -> bool {
        let Ok((reader, mut writer)) = std::io::pipe() else {
            return false;
        };
        let options = LayerOptions {
            compression: Compression::None,
            source_date_epoch: self.epoch,
            threads: 1,
        };
        std::thread::scope(|scope| {
            let unpacker = scope.spawn(move || self.pending.unpack(reader));
            let mut tar = HashingWriter::new(&mut writer);
            let written = rbuild_layer::write_layer(delta, &options, &mut tar).is_ok();
            drop(writer);
            let unpacked = matches!(unpacker.join(), Ok(Ok(())));
            written && unpacked
        })
    }
}

/// A snapshot being unpacked into a temporary directory; removed unless installed.
#[derive(Debug)]
pub struct PendingSnapshot<'s> {
    snapshots: &'s Snapshots,
    tmp: PathBuf,
    /// For a delta, the diff ID of the snapshot below it.
    base: Option<Digest>,
    installed: bool,
}

impl PendingSnapshot<'_> {
    /// A pending delta over the snapshot of `base`: what is unpacked into it goes on top.
    pub fn over(mut self, base: &Digest) -> Result<Self> {
        let root = self.tmp.join("root");
        fs::create_dir(&root)
            .and_then(|()| fs::write(self.tmp.join("base"), base.hex()))
            .map_err(|e| BuildError::io(format!("preparing {}", self.tmp.display()), e))?;
        self.base = Some(base.clone());
        Ok(self)
    }

    /// Unpacks the uncompressed layer tar `reader`, sharing files through the pool.
    pub fn unpack(&self, reader: impl Read) -> std::result::Result<(), rbuild_layer::LayerError> {
        let options = UnpackOptions {
            whiteouts: WhiteoutMode::Overlay,
            same_owner: is_root(),
        };
        let root = match self.base {
            Some(_) => self.tmp.join("root"),
            None => self.tmp.clone(),
        };
        rbuild_layer::unpack_pooled(reader, &root, &options, &self.snapshots.pool).map(|_| ())
    }

    /// Puts the unpacked layer in place as the snapshot of `diff_id`.
    pub fn install(mut self, diff_id: &Digest) -> Result<PathBuf> {
        let target = match self.base {
            Some(_) => self.snapshots.dir.join(format!("{}.delta", diff_id.hex())),
            None => self.snapshots.dir.join(diff_id.hex()),
        };
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

#[cfg(test)]
mod tests {
    use rbuild_layer::{EntryKind, FileSource};
    use rbuild_oci::Descriptor;

    use super::*;

    /// A file entry holding `content`.
    fn file(path: &str, content: &str) -> Entry {
        Entry::new(
            path,
            EntryKind::File(FileSource::Bytes(content.as_bytes().to_vec())),
        )
    }

    /// `count` files `f<n>` holding `v1`, as a step's layer might.
    fn files(count: usize) -> Vec<Entry> {
        (0..count).map(|n| file(&format!("f{n:02}"), "v1")).collect()
    }

    /// The layer of `entries`: its uncompressed tar and diff ID.
    fn tar_of(entries: Vec<Entry>) -> (Vec<u8>, Digest) {
        let options = LayerOptions {
            compression: Compression::None,
            source_date_epoch: None,
            threads: 1,
        };
        let mut tar = Vec::new();
        let info = rbuild_layer::write_layer(entries, &options, &mut HashingWriter::new(&mut tar)).unwrap();
        (tar, info.diff_id)
    }

    /// Stores the layer of `entries`, gzipped, in `store`.
    fn stored(store: &ContentStore, entries: Vec<Entry>) -> CachedLayer {
        let options = LayerOptions {
            compression: Compression::Gzip { level: 1 },
            source_date_epoch: None,
            threads: 1,
        };
        let mut blob = Vec::new();
        let info = rbuild_layer::write_layer(entries, &options, &mut HashingWriter::new(&mut blob)).unwrap();
        let digest = store.put(&blob).unwrap();
        CachedLayer {
            descriptor: Descriptor::new(info.media_type, digest, blob.len() as u64),
            diff_id: info.diff_id,
        }
    }

    /// Snapshots the layer of `entries` the way a build does as it writes it, planned against
    /// the layer its step made before; returns its diff ID and whether it was made a delta.
    fn snapshot(snapshots: &Snapshots, entries: Vec<Entry>, previous: Option<&Digest>) -> (Digest, bool) {
        let planned = snapshots.plan(&entries, None, previous).unwrap();
        let (tar, diff_id) = tar_of(entries);
        let is_delta = planned.tap().is_none();
        let tapped = planned
            .tap()
            .is_none_or(|pending| pending.unpack(tar.as_slice()).is_ok());
        planned.finish(&diff_id, tapped).unwrap();
        (diff_id, is_delta)
    }

    /// Names in the snapshot directory that are temporary ones.
    fn temporaries(snapshots: &Snapshots) -> Vec<String> {
        fs::read_dir(snapshots.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tmp-"))
            .collect()
    }

    #[test]
    fn a_stored_layer_is_unpacked_once_under_its_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
        let layer = stored(
            &store,
            vec![Entry::new("etc", EntryKind::Dir), file("etc/hello", "hi\n")],
        );
        let dirs = snapshots.ensure(&layer, &store).unwrap();
        assert_eq!(dirs, [snapshots.dir().join(layer.diff_id.hex())]);
        assert_eq!(fs::read_to_string(dirs[0].join("etc/hello")).unwrap(), "hi\n");
        // A second use finds it: a file added since is still there, nothing was unpacked again.
        fs::write(dirs[0].join("marker"), "").unwrap();
        assert_eq!(snapshots.ensure(&layer, &store).unwrap(), dirs);
        assert!(dirs[0].join("marker").exists());
        assert!(temporaries(&snapshots).is_empty());
        let view = snapshots.view(std::slice::from_ref(&layer), &store).unwrap();
        assert_eq!(view.read("etc/hello").unwrap().unwrap(), b"hi\n");
    }

    #[test]
    fn a_layer_that_does_not_unpack_leaves_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
        let (tar, diff_id) = tar_of(vec![file("a", "a")]);
        let truncated = store.put(&tar[..600]).unwrap();
        let layer = CachedLayer {
            descriptor: Descriptor::new(rbuild_oci::media_type::OCI_LAYER_TAR, truncated, 600),
            diff_id: diff_id.clone(),
        };
        let err = snapshots.ensure(&layer, &store).unwrap_err();
        assert!(err.to_string().contains("unpacking layer"), "{err}");
        assert!(snapshots.installed(&diff_id).is_none());
        assert!(
            temporaries(&snapshots).is_empty(),
            "the half-unpacked directory is removed"
        );

        // A snapshot whose tap failed is not installed either.
        let planned = snapshots.plan(&[file("a", "a")], None, None).unwrap();
        planned.finish(&diff_id, false).unwrap();
        assert!(snapshots.installed(&diff_id).is_none());
        assert!(temporaries(&snapshots).is_empty());
    }

    #[test]
    fn opening_clears_temporaries_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!("tmp-{}-x", u32::MAX));
        let live = dir.path().join(format!("tmp-{}-y", std::process::id()));
        let other = dir.path().join("kept");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("inside")).unwrap();
        }
        Snapshots::open(dir.path()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn two_unpacks_of_one_layer_install_one_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::open(dir.path()).unwrap();
        let (tar, diff_id) = tar_of(vec![file("a", "a")]);
        let first = snapshots.begin().unwrap();
        let second = snapshots.begin().unwrap();
        first.unpack(tar.as_slice()).unwrap();
        second.unpack(tar.as_slice()).unwrap();
        let installed = first.install(&diff_id).unwrap();
        assert_eq!(
            second.install(&diff_id).unwrap(),
            installed,
            "the second uses the first's"
        );
        assert!(temporaries(&snapshots).is_empty());
        assert_eq!(fs::read_to_string(installed.join("a")).unwrap(), "a");
    }

    #[test]
    fn a_small_change_is_snapshotted_as_a_delta_over_the_previous_layer() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::open(dir.path()).unwrap();
        let (base, was_delta) = snapshot(&snapshots, files(10), None);
        assert!(!was_delta, "with nothing before it, a layer is unpacked whole");
        assert!(snapshots.base_index(&base).is_some(), "its index is kept");

        // One file changed and one removed: a delta of two entries over ten.
        let mut next = files(10);
        next[3] = file("f03", "v2");
        next.remove(7);
        let (changed, was_delta) = snapshot(&snapshots, next, Some(&base));
        assert!(was_delta);
        let dirs = snapshots.installed(&changed).unwrap();
        let delta = snapshots.dir().join(format!("{}.delta", changed.hex()));
        assert_eq!(dirs, [snapshots.dir().join(base.hex()), delta.join("root")]);
        assert_eq!(fs::read_to_string(delta.join("base")).unwrap(), base.hex());
        let view = RootfsView::new(dirs);
        assert_eq!(view.read("f03").unwrap().unwrap(), b"v2");
        assert!(view.lookup("f07").is_none(), "the removed file is whited out");
        assert_eq!(view.read("f09").unwrap().unwrap(), b"v1");

        // Most files changed: unpacked whole again.
        let rewritten = (0..10).map(|n| file(&format!("f{n:02}"), "v3")).collect();
        let (_, was_delta) = snapshot(&snapshots, rewritten, Some(&base));
        assert!(!was_delta);
    }

    #[test]
    fn deltas_stack_at_most_max_delta_depth_deep() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::open(dir.path()).unwrap();
        let (mut previous, _) = snapshot(&snapshots, files(10), None);
        for round in 1..=MAX_DELTA_DEPTH + 1 {
            let mut entries = files(10);
            entries[0] = file("f00", &format!("round {round}"));
            let (diff_id, was_delta) = snapshot(&snapshots, entries, Some(&previous));
            assert_eq!(was_delta, round <= MAX_DELTA_DEPTH, "round {round}");
            let view = RootfsView::new(snapshots.installed(&diff_id).unwrap());
            assert_eq!(
                view.read("f00").unwrap().unwrap(),
                format!("round {round}").as_bytes()
            );
            previous = diff_id;
        }
        assert_eq!(snapshots.depth(&previous), Some(0));
    }

    #[test]
    fn clearing_removes_every_snapshot_and_they_come_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(&dir.path().join("content")).unwrap();
        let mut snapshots = Snapshots::open(&dir.path().join("snapshots")).unwrap();
        let layer = stored(&store, vec![file("a", "a")]);
        let dirs = snapshots.ensure(&layer, &store).unwrap();
        snapshots.clear().unwrap();
        assert!(!dirs[0].exists());
        assert_eq!(snapshots.ensure(&layer, &store).unwrap(), dirs);
        assert_eq!(fs::read_to_string(dirs[0].join("a")).unwrap(), "a");
    }
}
