//! `--cache-to`: the build's step records, as [`format`](super::format) describes, written
//! beside the layers they name — pushed to a registry (blobs the registry has are not sent
//! again) or written into an OCI layout directory.

use rbuild_client::Client;
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{Descriptor, Digest, media_type};

use super::format::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, CacheConfig, InlineCache};
use super::{CacheLocation, CacheTarget, Mode, RemoteCaches};
use crate::cache::CacheRecord;
use crate::error::{BuildError, Result};
use crate::export::Image;
use crate::export::archive::write_oci_dir;
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

/// Writes the cache of `steps` where `target` says. Layers the local store lacks (found in a
/// remote cache and never needed) are fetched for a directory, and left to the registry's
/// mounts for a push.
pub async fn export(
    target: &CacheTarget,
    steps: &[StepRecord],
    store: &LocalStore,
    client: &Client,
    caches: &RemoteCaches,
) -> Result<ExportedCache> {
    let records: Vec<(Digest, CacheRecord)> = steps
        .iter()
        .filter(|s| target.mode == Mode::Max || s.in_image)
        .map(|s| (s.key.clone(), s.record.clone()))
        .collect();
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
    let descriptor = store.content.put_json(media_type::OCI_MANIFEST, &manifest)?;
    match &target.location {
        CacheLocation::Registry(reference) => {
            client
                .push(&descriptor, &store.content, reference, None)
                .await
                .map_err(|e| BuildError::Push {
                    reference: reference.to_string(),
                    source: Box::new(e),
                })?;
        }
        CacheLocation::Local { dir, tag } => {
            caches
                .fetch_missing(&layers, store, client as &dyn Remote)
                .await?;
            let image = Image {
                manifest: descriptor.clone(),
                config: config_descriptor.digest.clone(),
                layers,
            };
            write_oci_dir(&store.content, &image, std::slice::from_ref(tag), dir)?;
        }
    }
    Ok(ExportedCache {
        location: target.location.clone(),
        manifest: descriptor,
        records: records.len(),
    })
}
