//! The remote cache's format, version 1: an OCI image manifest any registry stores, whose
//! layers are the cached layer blobs — the very blobs of the images built, so nothing is
//! uploaded twice — and whose config (media type [`CONFIG_MEDIA_TYPE`]) maps cache keys to
//! step results:
//!
//! ```json
//! {
//!   "version": 1,
//!   "keyVersion": 2,
//!   "layers": [{"mediaType": "…tar+gzip", "digest": "sha256:…", "size": 123, "diffId": "sha256:…"}],
//!   "records": [{"key": "sha256:…", "layer": 0, "created": "2026-12-06T10:00:00Z"},
//!               {"key": "sha256:…", "created": "…"}]
//! }
//! ```
//!
//! A record is one step: its key (see [`keys`](crate::keys)), the index of the layer it made
//! (absent for a step that changed no file) and when it was built. `keyVersion` is the key
//! encoding the records were made with: a cache of another encoding cannot hit and is skipped.
//!
//! The inline form ([`InlineCache`], `--cache-to type=inline`) is the same records in the
//! image's own config, under `rbuild.cache.v1`, with `layer` an index into the image's layers.

use std::collections::{HashMap, HashSet};

use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheRecord, CachedLayer};
use crate::keys::KEY_VERSION;

/// The media type of the cache config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
/// The artifact type of the cache manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";
/// The format version this module reads and writes.
pub const VERSION: u32 = 1;

/// The cache config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    /// The format version.
    pub version: u32,
    /// The key encoding of the records.
    pub key_version: u32,
    /// The layers records refer to, by index.
    pub layers: Vec<CacheLayer>,
    /// One record per step.
    pub records: Vec<CacheEntry>,
}

/// A layer of the cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheLayer {
    /// Its media type.
    pub media_type: String,
    /// Its digest as stored.
    pub digest: Digest,
    /// Its size as stored.
    pub size: u64,
    /// The digest of its uncompressed tar (the image config's diff ID).
    pub diff_id: Digest,
}

/// A step's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The step's cache key.
    pub key: Digest,
    /// The layer it made, as an index into [`CacheConfig::layers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// When it was built (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// For a second key of a step (see [`CacheRecord::same_as`]): the step's own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<Digest>,
}

pub use crate::error::CacheFormatError as FormatError;

impl CacheConfig {
    /// Reads a config and checks it against its manifest: every layer a record uses is one of
    /// the manifest's (whose blobs the registry keeps with the manifest).
    pub fn read(bytes: &[u8], manifest: &ImageManifest) -> Result<HashMap<Digest, CacheRecord>, FormatError> {
        let config: CacheConfig = rbuild_oci::json::from_slice(bytes).map_err(FormatError::Parse)?;
        if config.version != VERSION {
            return Err(FormatError::Version {
                found: config.version,
                supported: VERSION,
            });
        }
        if config.key_version != KEY_VERSION {
            return Err(FormatError::KeyVersion {
                found: config.key_version,
                supported: KEY_VERSION,
            });
        }
        let in_manifest: HashSet<&Digest> = manifest.layers.iter().map(|l| &l.digest).collect();
        if let Some(missing) = config.layers.iter().find(|l| !in_manifest.contains(&l.digest)) {
            return Err(FormatError::NotInManifest(missing.digest.clone()));
        }
        let mut hits = HashMap::new();
        for (index, record) in config.records.iter().enumerate() {
            let layer = match record.layer {
                None => None,
                Some(i) => {
                    let layer = config.layers.get(i).ok_or(FormatError::LayerIndex {
                        record: index,
                        layer: i,
                        layers: config.layers.len(),
                    })?;
                    Some(CachedLayer {
                        descriptor: Descriptor::new(
                            layer.media_type.clone(),
                            layer.digest.clone(),
                            layer.size,
                        ),
                        diff_id: layer.diff_id.clone(),
                    })
                }
            };
            hits.insert(
                record.key.clone(),
                CacheRecord {
                    layer,
                    created: record.created.clone(),
                    same_as: record.same_as.clone(),
                },
            );
        }
        Ok(hits)
    }

    /// The config of `records` (in order; each layer listed once).
    pub fn of(records: &[(Digest, CacheRecord)]) -> CacheConfig {
        let mut layers: Vec<CacheLayer> = Vec::new();
        let mut entries = Vec::new();
        for (key, hit) in records {
            let layer = hit.layer.as_ref().map(|layer| {
                let digest = &layer.descriptor.digest;
                match layers.iter().position(|l| &l.digest == digest) {
                    Some(i) => i,
                    None => {
                        layers.push(CacheLayer {
                            media_type: layer.descriptor.media_type.clone(),
                            digest: digest.clone(),
                            size: layer.descriptor.size,
                            diff_id: layer.diff_id.clone(),
                        });
                        layers.len() - 1
                    }
                }
            });
            entries.push(CacheEntry {
                key: key.clone(),
                layer,
                created: hit.created.clone(),
                same_as: hit.same_as.clone(),
            });
        }
        CacheConfig {
            version: VERSION,
            key_version: KEY_VERSION,
            layers,
            records: entries,
        }
    }
}

/// A cache inside an image's config: records whose layers are the image's own, by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InlineCache {
    /// The format version.
    pub version: u32,
    /// The key encoding of the records.
    pub key_version: u32,
    /// One record per step whose result is in the image.
    pub records: Vec<CacheEntry>,
}

impl InlineCache {
    /// The inline cache of `records`, whose layers must be among `layers` (the image's).
    pub fn of(records: &[(Digest, CacheRecord)], layers: &[Descriptor]) -> InlineCache {
        let records = records
            .iter()
            .filter_map(|(key, record)| {
                let layer = match &record.layer {
                    None => None,
                    Some(layer) => Some(layers.iter().position(|l| l.digest == layer.descriptor.digest)?),
                };
                Some(CacheEntry {
                    key: key.clone(),
                    layer,
                    created: record.created.clone(),
                    same_as: record.same_as.clone(),
                })
            })
            .collect();
        InlineCache {
            version: VERSION,
            key_version: KEY_VERSION,
            records,
        }
    }

    /// Reads the inline cache of an image (its config and manifest); `None` when it has none.
    pub fn read(
        config: &ImageConfig,
        manifest: &ImageManifest,
    ) -> Option<Result<HashMap<Digest, CacheRecord>, FormatError>> {
        let value = config.inline_cache.clone()?;
        Some(Self::records(value, config, manifest))
    }

    fn records(
        value: serde_json::Value,
        config: &ImageConfig,
        manifest: &ImageManifest,
    ) -> Result<HashMap<Digest, CacheRecord>, FormatError> {
        let inline: InlineCache = serde_json::from_value(value).map_err(FormatError::Parse)?;
        if inline.version != VERSION {
            return Err(FormatError::Version {
                found: inline.version,
                supported: VERSION,
            });
        }
        if inline.key_version != KEY_VERSION {
            return Err(FormatError::KeyVersion {
                found: inline.key_version,
                supported: KEY_VERSION,
            });
        }
        let layers = manifest.layers.len().min(config.rootfs.diff_ids.len());
        let mut hits = HashMap::new();
        for (index, record) in inline.records.into_iter().enumerate() {
            let layer = match record.layer {
                None => None,
                Some(i) if i < layers => Some(CachedLayer {
                    descriptor: manifest.layers[i].clone(),
                    diff_id: config.rootfs.diff_ids[i].clone(),
                }),
                Some(i) => {
                    return Err(FormatError::LayerIndex {
                        record: index,
                        layer: i,
                        layers,
                    });
                }
            };
            hits.insert(
                record.key,
                CacheRecord {
                    layer,
                    created: record.created,
                    same_as: record.same_as,
                },
            );
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use rbuild_oci::media_type;

    use super::*;

    fn layer(n: u8) -> CachedLayer {
        CachedLayer {
            descriptor: Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                Digest::sha256_of(&[n]),
                10 + u64::from(n),
            ),
            diff_id: Digest::sha256_of(&[n, n]),
        }
    }

    fn manifest_of(config: &CacheConfig) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            artifact_type: Some(ARTIFACT_TYPE.to_owned()),
            config: Descriptor::new(CONFIG_MEDIA_TYPE, Digest::sha256_of(b"config"), 6),
            layers: config
                .layers
                .iter()
                .map(|l| Descriptor::new(l.media_type.clone(), l.digest.clone(), l.size))
                .collect(),
            subject: None,
            annotations: Default::default(),
        }
    }

    #[test]
    fn records_round_trip_with_each_layer_once() {
        let hit = |layer: Option<CachedLayer>| CacheRecord {
            layer,
            created: Some("2026-12-06T10:00:00Z".to_owned()),
            same_as: None,
        };
        let records = vec![
            (Digest::sha256_of(b"a"), hit(Some(layer(1)))),
            (Digest::sha256_of(b"b"), hit(None)),
            (Digest::sha256_of(b"c"), hit(Some(layer(1)))),
            (Digest::sha256_of(b"d"), hit(Some(layer(2)))),
        ];
        let config = CacheConfig::of(&records);
        assert_eq!(config.layers.len(), 2);
        let bytes = serde_json::to_vec(&config).unwrap();
        let read = CacheConfig::read(&bytes, &manifest_of(&config)).unwrap();
        assert_eq!(read.len(), 4);
        for (key, hit) in &records {
            assert_eq!(&read[key], hit);
        }
    }

    #[test]
    fn a_broken_cache_says_why() {
        let config = CacheConfig::of(&[(
            Digest::sha256_of(b"a"),
            CacheRecord {
                layer: Some(layer(1)),
                created: None,
                same_as: None,
            },
        )]);
        let manifest = manifest_of(&config);
        let read = |config: &CacheConfig, manifest: &ImageManifest| {
            CacheConfig::read(&serde_json::to_vec(config).unwrap(), manifest)
                .map(|_| ())
                .unwrap_err()
        };
        let future = CacheConfig {
            version: 2,
            ..config.clone()
        };
        assert!(matches!(
            read(&future, &manifest),
            FormatError::Version { found: 2, .. }
        ));
        let other_keys = CacheConfig {
            key_version: KEY_VERSION + 1,
            ..config.clone()
        };
        assert!(matches!(
            read(&other_keys, &manifest),
            FormatError::KeyVersion { .. }
        ));
        let mut bad_index = config.clone();
        bad_index.records[0].layer = Some(5);
        assert!(matches!(
            read(&bad_index, &manifest),
            FormatError::LayerIndex { layer: 5, .. }
        ));
        let empty_manifest = ImageManifest {
            layers: Vec::new(),
            ..manifest.clone()
        };
        assert!(matches!(
            read(&config, &empty_manifest),
            FormatError::NotInManifest(_)
        ));
        assert!(matches!(
            CacheConfig::read(b"{\"version\": 1", &manifest),
            Err(FormatError::Parse(_))
        ));
    }

    #[test]
    fn an_inline_cache_names_the_images_own_layers() {
        let (one, two) = (layer(1), layer(2));
        let records = vec![
            (
                Digest::sha256_of(b"a"),
                CacheRecord {
                    layer: Some(two.clone()),
                    created: None,
                    same_as: None,
                },
            ),
            (
                Digest::sha256_of(b"b"),
                CacheRecord {
                    layer: None,
                    created: Some("2026-12-06T10:00:00Z".to_owned()),
                    same_as: None,
                },
            ),
            (
                Digest::sha256_of(b"not in the image"),
                CacheRecord {
                    layer: Some(layer(3)),
                    created: None,
                    same_as: None,
                },
            ),
        ];
        let layers = [one.descriptor.clone(), two.descriptor.clone()];
        let inline = InlineCache::of(&records, &layers);
        assert_eq!(inline.records.len(), 2);
        assert_eq!(inline.records[0].layer, Some(1));
        let mut config = ImageConfig::default();
        config.rootfs.diff_ids = vec![one.diff_id.clone(), two.diff_id.clone()];
        config.inline_cache = Some(serde_json::to_value(&inline).unwrap());
        let mut manifest = manifest_of(&CacheConfig::of(&[]));
        manifest.layers = layers.to_vec();
        let read = InlineCache::read(&config, &manifest).unwrap().unwrap();
        assert_eq!(read[&records[0].0], records[0].1);
        assert_eq!(read[&records[1].0], records[1].1);
        config.inline_cache = None;
        assert!(InlineCache::read(&config, &manifest).is_none());
    }
}
