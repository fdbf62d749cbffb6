//! The local store under `$RBUILD_ROOT`: content (an OCI image layout of blobs and named
//! images), the cache index, unpacked snapshots, the context stat cache — and what keeps it
//! from growing without end: [`LocalStore::usage`] and [`LocalStore::prune`].

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use rbuild_oci::{ContentStore, Descriptor, Digest, media_type};

use crate::cache::Cache;
use crate::error::{BuildError, Result};
use crate::snapshot::Snapshots;
use crate::statcache::StatCache;

/// The local store: content (an OCI layout), the cache index, snapshots, the stat cache.
pub struct LocalStore {
    /// Blobs and named images.
    pub content: ContentStore,
    /// The layer cache.
    pub cache: Cache,
    /// Unpacked layers.
    pub snapshots: Snapshots,
    /// Context file digests by stat (shared with the thread that hashes the context while
    /// the build resolves its images).
    pub stat_cache: Arc<StatCache>,
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating) the store under `root`.
    ///
    /// A relative `root` is made absolute first: the runtime is handed paths inside the store
    /// from another working directory (runc resolves a bundle's rootfs against the bundle).
    pub fn open(root: &Path) -> Result<LocalStore> {
        let root = &std::path::absolute(root)
            .map_err(|e| BuildError::io(format!("resolving {}", root.display()), e))?;
        Ok(LocalStore {
            content: ContentStore::open(&root.join("oci"))?,
            cache: Cache::open(&root.join("cache"))?,
            snapshots: Snapshots::open(&root.join("snapshots"))?,
            stat_cache: Arc::new(StatCache::load(&root.join("statcache"))),
            root: root.to_owned(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A scratch directory for one build's temporary files.
    pub(crate) fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        let dir = self.root.join("tmp");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        tempfile::tempdir_in(&dir)
            .map_err(|e| BuildError::io(format!("creating a directory in {}", dir.display()), e))
    }

    /// What the store takes on disk, by part.
    pub fn usage(&self) -> Result<Usage> {
        Ok(Usage {
            blobs: dir_size(&self.root.join("oci")),
            snapshots: dir_size(self.snapshots.dir()),
            cache_index: dir_size(&self.root.join("cache")),
            cached_steps: self.cache.records()?.len(),
            total: dir_size(&self.root),
        })
    }

    /// Garbage collection: forgets the cache and the snapshots (rebuilt on demand) and removes
    /// every blob no named image reaches. Returns the bytes of blobs removed.
    pub fn prune(&mut self) -> Result<u64> {
        let live = self.live_blobs()?;
        self.cache.clear()?;
        self.snapshots.clear()?;
        let mut freed = 0;
        for digest in self.content.blobs()? {
            if !live.contains(&digest) {
                freed += self.content.size(&digest).unwrap_or(0);
                self.content.remove_blob(&digest)?;
            }
        }
        Ok(freed)
    }

    /// The blobs named images reach: each name's manifest or index, an index's manifests,
    /// and every manifest's config and layers. A blob that is missing or does not parse
    /// reaches nothing further (and keeps nothing alive by mistake).
    fn live_blobs(&self) -> Result<HashSet<Digest>> {
        let mut live = HashSet::new();
        let mut pending: Vec<Descriptor> = self.content.index()?.manifests;
        while let Some(descriptor) = pending.pop() {
            if !live.insert(descriptor.digest.clone()) {
                continue;
            }
            let Ok(bytes) = self.content.read(&descriptor.digest) else {
                continue;
            };
            if media_type::is_index(&descriptor.media_type) {
                if let Ok(index) = rbuild_oci::json::from_slice::<ImageIndex>(&bytes) {
                    pending.extend(index.manifests);
                }
            } else if let Ok(manifest) = rbuild_oci::json::from_slice::<ImageManifest>(&bytes) {
                live.insert(manifest.config.digest);
                live.extend(manifest.layers.into_iter().map(|l| l.digest));
            }
        }
        Ok(live)
    }
}

/// What [`LocalStore::usage`] reports, in bytes (a file hard-linked into several snapshots
/// counts once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The OCI layout: blobs and the index of names.
    pub blobs: u64,
    /// Unpacked layers and their file pool.
    pub snapshots: u64,
    /// Cache records and block indexes.
    pub cache_index: u64,
    /// How many build steps the cache remembers.
    pub cached_steps: usize,
    /// The whole store.
    pub total: u64,
}

/// The bytes under `path`, each file counted once however many links it has.
fn dir_size(path: &Path) -> u64 {
    size_of_inodes(path, &mut HashSet::new())
}

/// The bytes of the files under `path` whose inodes are not in `seen` yet: snapshots share
/// files through hard links, which take their space once.
fn size_of_inodes(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_of_inodes(&e.path(), seen),
            Ok(m) if seen.insert((m.dev(), m.ino())) => m.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use rbuild_oci::media_type::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST};

    use super::*;

    /// Stores an image of one layer with `seed` in it and returns its manifest's descriptor.
    fn image(store: &LocalStore, seed: &str) -> (Descriptor, Vec<Digest>) {
        let content = &store.content;
        let layer = content.put(format!("layer {seed}").as_bytes()).unwrap();
        let config = content.put(format!("config {seed}").as_bytes()).unwrap();
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: Descriptor::new(OCI_CONFIG, config.clone(), 1),
            layers: vec![Descriptor::new(OCI_LAYER_TAR, layer.clone(), 1)],
            subject: None,
            annotations: Default::default(),
        };
        let descriptor = content.put_json(OCI_MANIFEST, &manifest).unwrap();
        let digests = vec![descriptor.digest.clone(), config, layer];
        (descriptor, digests)
    }

    #[test]
    fn prune_keeps_what_names_reach_through_indexes_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalStore::open(dir.path()).unwrap();
        let (tagged, tagged_blobs) = image(&store, "tagged");
        store.content.set_ref("app:1", &tagged).unwrap();
        let (child, child_blobs) = image(&store, "in an index");
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests: vec![child],
            subject: None,
            annotations: Default::default(),
        };
        let index = store.content.put_json(OCI_INDEX, &index).unwrap();
        store.content.set_ref("multi:1", &index).unwrap();
        let (_, orphan_blobs) = image(&store, "untagged");

        let freed = store.prune().unwrap();

        for digest in tagged_blobs.iter().chain(&child_blobs).chain([&index.digest]) {
            assert!(store.content.contains(digest), "{digest} was removed");
        }
        for digest in &orphan_blobs {
            assert!(!store.content.contains(digest), "{digest} was kept");
        }
        assert!(freed > 0);
        assert_eq!(store.prune().unwrap(), 0, "a second prune finds nothing");
    }

    #[test]
    fn usage_counts_a_hard_linked_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let before = store.usage().unwrap();
        let snapshots = store.snapshots.dir();
        std::fs::create_dir_all(snapshots.join("a")).unwrap();
        std::fs::write(snapshots.join("a/file"), vec![0u8; 10_000]).unwrap();
        std::fs::hard_link(snapshots.join("a/file"), snapshots.join("linked")).unwrap();
        let after = store.usage().unwrap();
        assert_eq!(after.snapshots - before.snapshots, 10_000);
        assert_eq!(after.total - before.total, 10_000);
        assert_eq!(after.cached_steps, 0);
    }
}
