//! The layer cache: what each build step produced, by its key ([`keys`](crate::keys)), kept
//! in the local store so it survives restarts, plus the inputs behind each step's last key so
//! that a miss can say what changed, and the gzip block index of each layer built, so that the
//! step's next layer can copy the blocks that did not change. What goes into a key is decided
//! by the step kinds ([`steps`](crate::steps)); this module only stores and compares.

use std::fs;
use std::path::{Path, PathBuf};

use rbuild_layer::{BlockIndex, Compression};
use rbuild_oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, Result};
use crate::keys::{CacheKey, Inputs};

/// What a cached step produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer, for steps that produce one (`None`: the step changed nothing on disk).
    pub layer: Option<CachedLayer>,
    /// When the step was built (RFC 3339): its history entry's `created` whenever it is
    /// reused, so that a rebuild from the cache gives the same image, as with BuildKit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Set on a record kept under a second key of the same step (a `COPY --from` keyed by
    /// where it copies from rather than by the files): the step's own key, which the steps
    /// below build on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<Digest>,
}

/// A cached layer: its blob descriptor and its uncompressed digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The compressed blob in the content store.
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// The cache's directories: records by key, each step's last inputs, block indexes by blob,
/// compressed forms of uncompressed layers.
const SUBDIRS: [&str; 4] = ["keys", "inputs", "blocks", "compressed"];

/// The cache index in the local store.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens the index kept under `dir`.
    pub fn open(dir: &Path) -> Result<Cache> {
        for sub in SUBDIRS {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| BuildError::io(format!("creating cache in {}", dir.display()), e))?;
        }
        Ok(Cache { dir: dir.to_owned() })
    }

    fn key_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join("keys").join(key.0.hex())
    }

    fn inputs_path(&self, step: &str) -> PathBuf {
        self.dir
            .join("inputs")
            .join(Digest::sha256_of(step.as_bytes()).hex())
    }

    /// The record cached under `key`, if there is one and `usable` accepts it.
    pub fn lookup(&self, key: &CacheKey, usable: impl Fn(&CacheRecord) -> bool) -> Option<CacheRecord> {
        fs::read(self.key_path(key))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheRecord>(&bytes).ok())
            .filter(|record| usable(record))
    }

    /// Why `step` (the step across builds: Dockerfile, stage and position) missed with
    /// `inputs`: what changed since it was last built.
    pub fn explain_miss(&self, step: &str, inputs: &Inputs) -> String {
        let previous = fs::read(self.inputs_path(step))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Inputs>(&bytes).ok());
        match previous {
            Some(previous) => inputs.explain_change(&previous),
            None => "not built before".to_owned(),
        }
    }

    /// The layer `step` produced the last time it was built, if it made one.
    pub fn previous_layer(&self, step: &str) -> Option<CachedLayer> {
        let inputs: Inputs = serde_json::from_slice(&fs::read(self.inputs_path(step)).ok()?).ok()?;
        let record: CacheRecord =
            serde_json::from_slice(&fs::read(self.key_path(&inputs.key())).ok()?).ok()?;
        record.layer
    }

    /// The gzip block index of the layer blob `digest`, if it was built here.
    pub fn blocks(&self, digest: &Digest) -> Option<BlockIndex> {
        BlockIndex::from_bytes(&fs::read(self.blocks_path(digest)).ok()?)
    }

    /// Keeps the gzip block index of the layer blob `digest`.
    pub fn store_blocks(&self, digest: &Digest, blocks: &BlockIndex) -> Result<()> {
        write_atomically(&self.blocks_path(digest), &blocks.to_bytes())
    }

    fn blocks_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blocks").join(digest.hex())
    }

    /// The blob made by compressing the uncompressed layer `diff_id` as `compression` says,
    /// if it was made before (see [`crate::export::compressed`]).
    pub fn compressed(&self, diff_id: &Digest, compression: Compression) -> Option<Descriptor> {
        serde_json::from_slice(&fs::read(self.compressed_path(diff_id, compression)).ok()?).ok()
    }

    /// Remembers `blob` as the uncompressed layer `diff_id` compressed as `compression` says.
    pub fn store_compressed(
        &self,
        diff_id: &Digest,
        compression: Compression,
        blob: &Descriptor,
    ) -> Result<()> {
        write_json(&self.compressed_path(diff_id, compression), blob)
    }

    fn compressed_path(&self, diff_id: &Digest, compression: Compression) -> PathBuf {
        let how = format!("{diff_id} {compression:?}");
        self.dir
            .join("compressed")
            .join(Digest::sha256_of(how.as_bytes()).hex())
    }

    /// Records a step's result under a second key of its, `alias` (see
    /// [`CacheRecord::same_as`]); the step's inputs stay those of its own key.
    pub fn store_alias(&self, alias: &CacheKey, record: &CacheRecord) -> Result<()> {
        write_json(&self.key_path(alias), record)
    }

    /// Records a step's result under its key, and its inputs for future explanations.
    pub fn store(&self, step: &str, inputs: &Inputs, record: &CacheRecord) -> Result<()> {
        write_json(&self.key_path(&inputs.key()), record)?;
        write_json(&self.inputs_path(step), inputs)
    }

    /// Every cached record, for `rbuild cache du|prune`.
    pub fn records(&self) -> Result<Vec<(PathBuf, CacheRecord)>> {
        let dir = self.dir.join("keys");
        let mut records = Vec::new();
        for entry in
            fs::read_dir(&dir).map_err(|e| BuildError::io(format!("listing {}", dir.display()), e))?
        {
            let path = entry
                .map_err(|e| BuildError::io(format!("listing {}", dir.display()), e))?
                .path();
            if let Some(record) = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                records.push((path, record));
            }
        }
        Ok(records)
    }

    /// Forgets everything.
    pub fn clear(&self) -> Result<()> {
        for sub in SUBDIRS {
            let dir = self.dir.join(sub);
            fs::remove_dir_all(&dir).map_err(|e| BuildError::io(format!("removing {}", dir.display()), e))?;
            fs::create_dir_all(&dir).map_err(|e| BuildError::io(format!("creating {}", dir.display()), e))?;
        }
        Ok(())
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| BuildError::io("encoding cache record", e.into()))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` atomically: stages running at once may store the same key.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    rbuild_oci::atomic::write_atomic(path, bytes)
        .map_err(|e| BuildError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> Inputs {
        pairs.iter().copied().collect()
    }

    #[test]
    fn hit_miss_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let v1 = inputs(&[("arg:V", "1")]);
        assert_eq!(cache.lookup(&v1.key(), |_| true), None);
        assert_eq!(cache.explain_miss("step", &v1), "not built before");
        cache
            .store(
                "step",
                &v1,
                &CacheRecord {
                    layer: None,
                    created: None,
                    same_as: None,
                },
            )
            .unwrap();
        assert_eq!(
            cache.lookup(&v1.key(), |_| true),
            Some(CacheRecord {
                layer: None,
                created: None,
                same_as: None,
            })
        );
        let v2 = inputs(&[("arg:V", "2")]);
        assert_eq!(cache.lookup(&v2.key(), |_| true), None);
        assert_eq!(cache.explain_miss("step", &v2), "V: 1 → 2");
        assert_eq!(cache.lookup(&v1.key(), |_| false), None);
    }

    #[test]
    fn remembers_each_steps_last_layer_and_block_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.previous_layer("step"), None);
        let layer = CachedLayer {
            descriptor: Descriptor::new(
                rbuild_oci::media_type::OCI_LAYER_GZIP,
                Digest::sha256_of(b"blob"),
                4,
            ),
            diff_id: Digest::sha256_of(b"tar"),
        };
        let record = CacheRecord {
            layer: Some(layer.clone()),
            created: None,
            same_as: None,
        };
        cache.store("step", &inputs(&[("arg:V", "1")]), &record).unwrap();
        assert_eq!(cache.previous_layer("step"), Some(layer.clone()));
        // A step that left no layer has none to offer.
        cache
            .store(
                "step",
                &inputs(&[("arg:V", "2")]),
                &CacheRecord {
                    layer: None,
                    created: None,
                    same_as: None,
                },
            )
            .unwrap();
        assert_eq!(cache.previous_layer("step"), None);

        let digest = &layer.descriptor.digest;
        assert_eq!(cache.blocks(digest), None);
        let index = BlockIndex {
            blocks: vec![rbuild_layer::BlockRecord {
                key: [7; 32],
                offset: 10,
                size: 100,
                uncompressed: 300,
                crc: 42,
            }],
        };
        cache.store_blocks(digest, &index).unwrap();
        assert_eq!(cache.blocks(digest), Some(index));
        cache.clear().unwrap();
        assert_eq!(cache.blocks(digest), None);
    }
}
