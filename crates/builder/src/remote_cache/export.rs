//! `--cache-to`: the build's step records, as [`format`](super::format) describes, written
//! beside the layers they name — pushed to a registry (blobs the registry has are not sent
//! again) or written into an OCI layout directory. A cache is made in the local store first
//! ([`write`]: the CPU work, recompressing layers) and sent after ([`WrittenCache::send`]), so
//! that sending it goes alongside the image's own push.

use std::collections::HashMap;

use rbuild_client::Client;
use rbuild_layer::LayerOptions;
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{Descriptor, Digest, media_type};

use super::format::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, CacheConfig, InlineCache};
use super::{CacheLocation, CacheTarget, Mode, RemoteCaches};
use crate::cache::{CacheRecord, CachedLayer};
use crate::error::{BuildError, Result};
use crate::export::archive::write_oci_dir;
use crate::export::{Image, recompressed};
use crate::remote::Remote;
use crate::store::LocalStore;

/// One step a build solved, as a cache export sees it.
#[derive(Clone, Debug)]
pub struct StepRecord {
    /// Its cache key.
    pub key: Digest,
    /// Its result.
    pub record: CacheRecord,
    /// Whether its result is part of the image built (what `mode=min` exports).
    pub in_image: bool,
}

/// A cache written.
#[derive(Clone, Debug)]
pub struct ExportedCache {
    /// Where.
    pub location: CacheLocation,
    /// Its manifest.
    pub manifest: Descriptor,
    /// How many step records it holds.
    pub records: usize,
}

/// The image with the records of its own steps (`mode=min`) in its config: `--cache-to
/// type=inline`. A later build names the image in `--cache-from` to read them.
pub fn inline(image: &Image, steps: &[StepRecord], store: &LocalStore) -> Result<Image> {
    let content = &store.content;
    let unreadable = |document| {
        move |source| BuildError::Document {
            image: image.manifest.digest.to_string(),
            document,
            source,
        }
    };
    let mut manifest: ImageManifest = rbuild_oci::json::from_slice(&content.read(&image.manifest.digest)?)
        .map_err(unreadable("manifest"))?;
    let mut config: ImageConfig = rbuild_oci::json::from_slice(&content.read(&manifest.config.digest)?)
        .map_err(unreadable("config"))?;
    let records: Vec<(Digest, CacheRecord)> = steps
        .iter()
        .filter(|s| s.in_image)
        .map(|s| (s.key.clone(), s.record.clone()))
        .collect();
    let cache = InlineCache::of(&records, &manifest.layers);
    config.inline_cache = Some(serde_json::to_value(&cache).map_err(unreadable("inline cache"))?);
    manifest.config = content.put_json(&manifest.config.media_type, &config)?;
    let mut descriptor = content.put_json(&image.manifest.media_type, &manifest)?;
    descriptor.platform = image.manifest.platform.clone();
    Ok(Image {
        manifest: descriptor,
        config: manifest.config.digest.clone(),
        layers: manifest.layers,
    })
}

/// A cache made in the local store, ready to [`send`](WrittenCache::send).
#[derive(Clone, Debug)]
pub struct WrittenCache {
    target: CacheTarget,
    manifest: Descriptor,
    config: Digest,
    layers: Vec<Descriptor>,
    records: usize,
}

/// Makes the cache of `steps` that `target` asks for in the local store: its records, its
/// config and its manifest. Layers that are the image's own (`image`, as it leaves the store)
/// are named by the image's blobs, so that they are shared by digest; the others are
/// compressed as `target` says when the store has their bytes (layers a remote cache gave and
/// nothing needed stay as they are, where they are).
pub fn write(
    target: &CacheTarget,
    steps: &[StepRecord],
    image: &Descriptor,
    store: &LocalStore,
) -> Result<WrittenCache> {
    let shared = image_layers(image, store)?;
    let records = steps
        .iter()
        .filter(|s| target.mode == Mode::Max || s.in_image)
        .map(|s| {
            let mut record = s.record.clone();
            if let Some(layer) = &mut record.layer {
                layer.descriptor = stored_as(layer, &shared, target, store)?;
            }
            Ok((s.key.clone(), record))
        })
        .collect::<Result<Vec<(Digest, CacheRecord)>>>()?;
    let config = CacheConfig::of(&records);
    let config_descriptor = store.content.put_json(CONFIG_MEDIA_TYPE, &config)?;
    let layers: Vec<Descriptor> = config
        .layers
        .iter()
        .map(|l| Descriptor::new(l.media_type.clone(), l.digest.clone(), l.size))
        .collect();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: config_descriptor.clone(),
        layers: layers.clone(),
        subject: None,
        annotations: Default::default(),
    };
    Ok(WrittenCache {
        target: target.clone(),
        manifest: store.content.put_json(media_type::OCI_MANIFEST, &manifest)?,
        config: config_descriptor.digest,
        layers,
        records: records.len(),
    })
}

/// The image's layer blobs by the digest of their uncompressed tar.
fn image_layers(image: &Descriptor, store: &LocalStore) -> Result<HashMap<Digest, Descriptor>> {
    if !media_type::is_image_manifest(&image.media_type) {
        return Ok(HashMap::new());
    }
    let unreadable = |document| {
        move |source| BuildError::Document {
            image: image.digest.to_string(),
            document,
            source,
        }
    };
    let manifest: ImageManifest =
        rbuild_oci::json::from_slice(&store.content.read(&image.digest)?).map_err(unreadable("manifest"))?;
    let config: ImageConfig = rbuild_oci::json::from_slice(&store.content.read(&manifest.config.digest)?)
        .map_err(unreadable("config"))?;
    Ok(config.rootfs.diff_ids.into_iter().zip(manifest.layers).collect())
}

/// The blob a cached layer is stored as in the cache `target`.
fn stored_as(
    layer: &CachedLayer,
    shared: &HashMap<Digest, Descriptor>,
    target: &CacheTarget,
    store: &LocalStore,
) -> Result<Descriptor> {
    if let Some(image_blob) = shared.get(&layer.diff_id) {
        return Ok(image_blob.clone());
    }
    match target.compression {
        Some(compression) if store.content.contains(&layer.descriptor.digest) => {
            let options = LayerOptions {
                compression,
                ..LayerOptions::default()
            };
            recompressed(store, &layer.descriptor, &layer.diff_id, &options)
        }
        _ => Ok(layer.descriptor.clone()),
    }
}

impl WrittenCache {
    /// Pushes the cache to its registry (blobs the registry has, or that another push to it
    /// is sending, are not sent again) or writes it into its OCI layout directory, fetching
    /// for that the layers the local store lacks.
    pub async fn send(
        &self,
        store: &LocalStore,
        client: &Client,
        caches: &RemoteCaches,
    ) -> Result<ExportedCache> {
        match &self.target.location {
            CacheLocation::Registry(reference) => {
                client
                    .push(&self.manifest, &store.content, reference, None)
                    .await
                    .map_err(|e| BuildError::Push {
                        reference: reference.to_string(),
                        source: Box::new(e),
                    })?;
            }
            CacheLocation::Local { dir, tag } => {
                caches
                    .fetch_missing(&self.layers, store, client as &dyn Remote)
                    .await?;
                let image = Image {
                    manifest: self.manifest.clone(),
                    config: self.config.clone(),
                    layers: self.layers.clone(),
                };
                write_oci_dir(&store.content, &image, std::slice::from_ref(tag), dir)?;
            }
        }
        Ok(ExportedCache {
            location: self.target.location.clone(),
            manifest: self.manifest.clone(),
            records: self.records,
        })
    }
}
