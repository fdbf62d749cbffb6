//! Turning a built stage into an image, and sending images where they go: [`export`] takes
//! an [`Output`] list — a registry, an OCI image layout (directory or tar), a docker-archive
//! tar that `docker load` accepts ([`archive`]) — and the local store keeps every image.
//!
//! A build whose image stays in the local store keeps its layers uncompressed, as docker's
//! image store does: nothing reads them compressed there, and compressing is most of what a
//! cold build costs. An image leaving the store (a push, an `--output`) is first made
//! [`compressed`]; each layer is compressed once and remembered.

pub mod archive;

use std::io;
use std::path::PathBuf;

use rbuild_client::{Client, PushReport};
use rbuild_layer::{LayerOptions, compress_layer};
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference, media_type};

use crate::error::{BuildError, Result};
use crate::image::ImageState;
use crate::store::LocalStore;

/// A written image: its manifest and config in the content store.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest's descriptor.
    pub manifest: Descriptor,
    /// The config's digest (docker's image ID).
    pub config: Digest,
    /// The layers' descriptors, base first.
    pub layers: Vec<Descriptor>,
}

/// Writes the config and the OCI manifest of `state` into `store`.
pub fn write_image(state: &ImageState, created: Option<&str>, store: &ContentStore) -> Result<Image> {
    let mut config = state.config.clone();
    config.created = created.map(str::to_owned);
    // Entries made before the first that has a time (config-only steps opening a `FROM
    // scratch` image) take the time of the next one, or the image's.
    let mut next = config.created.clone();
    for entry in config.history.iter_mut().rev() {
        match &entry.created {
            Some(time) => next = Some(time.clone()),
            None => entry.created = next.clone(),
        }
    }
    let config_descriptor = store.put_json(media_type::OCI_CONFIG, &config)?;
    let layers: Vec<Descriptor> = state.layers.iter().map(|l| l.descriptor.clone()).collect();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        artifact_type: None,
        config: config_descriptor.clone(),
        layers: layers.clone(),
        subject: None,
        annotations: Default::default(),
    };
    let mut descriptor = store.put_json(media_type::OCI_MANIFEST, &manifest)?;
    descriptor.platform = Some(rbuild_oci::manifest::Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        os_version: None,
        os_features: Vec::new(),
        variant: config.variant.clone(),
    });
    Ok(Image {
        manifest: descriptor,
        config: config_descriptor.digest,
        layers,
    })
}

/// The image the image manifest `manifest` names, with every layer the local store keeps
/// uncompressed compressed as `options` say (other layers are left as they are), written into
/// the store. The same image when there is nothing to compress.
pub fn compressed(local: &LocalStore, manifest: &Descriptor, options: &LayerOptions) -> Result<Image> {
    let content = &local.content;
    let mut parsed: ImageManifest = rbuild_oci::json::from_slice(&content.read(&manifest.digest)?)
        .map_err(|source| manifest_error(manifest, source))?;
    let plain = |layer: &Descriptor| layer.media_type == media_type::OCI_LAYER_TAR;
    if options.compression.media_type() == media_type::OCI_LAYER_TAR || !parsed.layers.iter().any(plain) {
        return Ok(image_of(manifest.clone(), parsed));
    }
    for layer in parsed.layers.iter_mut().filter(|l| plain(l)) {
        let diff_id = layer.digest.clone();
        *layer = recompressed(local, layer, &diff_id, options)?;
    }
    let mut descriptor = content.put_json(media_type::OCI_MANIFEST, &parsed)?;
    descriptor.platform = manifest.platform.clone();
    Ok(image_of(descriptor, parsed))
}

/// The layer blob `layer` (whose uncompressed tar is `diff_id`) compressed as `options` say:
/// itself when it already is, else the form compressed before, else compressed now from its
/// decompressed bytes (which the store must have) and remembered.
pub fn recompressed(
    local: &LocalStore,
    layer: &Descriptor,
    diff_id: &Digest,
    options: &LayerOptions,
) -> Result<Descriptor> {
    if layer.media_type == options.compression.media_type() {
        return Ok(layer.clone());
    }
    if let Some(known) = local.cache.compressed(diff_id, options.compression)
        && local.content.contains(&known.digest)
    {
        return Ok(known);
    }
    let failed = |source| BuildError::Compress {
        layer: layer.digest.clone(),
        source,
    };
    let blob = local.content.open_blob(&layer.digest)?;
    let tar = rbuild_layer::decompressed(io::BufReader::new(blob)).map_err(failed)?;
    let mut writer = local.content.writer()?;
    let info = compress_layer(tar, options, &mut writer).map_err(failed)?;
    if &info.diff_id != diff_id {
        return Err(BuildError::DamagedLayer {
            layer: layer.digest.clone(),
            actual: info.diff_id,
        });
    }
    let (digest, size) = writer.commit(Some(&info.digest))?;
    let compressed = Descriptor::new(info.media_type, digest, size);
    local
        .cache
        .store_compressed(diff_id, options.compression, &compressed)?;
    Ok(compressed)
}

fn image_of(manifest: Descriptor, parsed: ImageManifest) -> Image {
    Image {
        manifest,
        config: parsed.config.digest,
        layers: parsed.layers,
    }
}

/// The name docker shows for a reference (`app:1`, not `docker.io/library/app:1`).
pub fn familiar_name(reference: &Reference) -> String {
    let full = reference.to_string();
    let without_hub = full.strip_prefix("docker.io/").unwrap_or(&full);
    without_hub
        .strip_prefix("library/")
        .unwrap_or(without_hub)
        .to_owned()
}

/// Where an image goes besides the local store (`--push`, `--output`). No output at all means
/// the local store only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Pushed to the registry of each tag.
    Registry,
    /// An OCI image layout directory.
    OciDir(PathBuf),
    /// An OCI image layout as one tar file.
    OciTar(PathBuf),
    /// A tar that `docker load` reads (and, being an OCI layout too, skopeo's `oci-archive:`).
    DockerArchive(PathBuf),
}

/// What [`export`] did.
#[derive(Debug)]
pub struct Exported {
    /// The manifest that left the store: with its layers compressed when any output took it.
    pub manifest: Descriptor,
    /// One report per tag pushed, in the order of the tags.
    pub pushed: Vec<PushReport>,
}

/// The image or index `manifest` names as it leaves the store for `outputs`: an image going
/// anywhere is [`compressed`] as `layers` says; an index, or an image staying, is as it is.
pub fn shipped(
    store: &LocalStore,
    manifest: &Descriptor,
    outputs: &[Output],
    layers: &LayerOptions,
) -> Result<Descriptor> {
    match outputs.is_empty() || manifest.media_type != media_type::OCI_MANIFEST {
        true => Ok(manifest.clone()),
        false => Ok(compressed(store, manifest, layers)?.manifest),
    }
}

/// Sends the image or index `manifest` names — as [`shipped`] gives it — to every output,
/// named by `tags`; archives hold images, not indexes.
pub async fn export(
    store: &LocalStore,
    client: &Client,
    manifest: &Descriptor,
    tags: &[Reference],
    outputs: &[Output],
) -> Result<Exported> {
    let manifest = manifest.clone();
    let names: Vec<String> = tags.iter().map(familiar_name).collect();
    let content = &store.content;
    let mut pushed = Vec::new();
    for output in outputs {
        match output {
            Output::Registry => {
                for tag in tags {
                    let report = client
                        .push(&manifest, content, tag, None)
                        .await
                        .map_err(|source| BuildError::Push {
                            reference: tag.to_string(),
                            source: Box::new(source),
                        })?;
                    pushed.push(report);
                }
            }
            Output::OciDir(dest) => {
                archive::write_oci_dir(content, &stored_image(content, &manifest)?, &names, dest)?
            }
            Output::OciTar(dest) | Output::DockerArchive(dest) => {
                let format = match output {
                    Output::DockerArchive(_) => archive::Format::Docker,
                    _ => archive::Format::Oci,
                };
                let image = stored_image(content, &manifest)?;
                archive::write_tar_file(content, &image, &names, format, dest)?
            }
        }
    }
    Ok(Exported { manifest, pushed })
}

/// The image a stored image manifest describes.
fn stored_image(content: &ContentStore, manifest: &Descriptor) -> Result<Image> {
    if !media_type::is_image_manifest(&manifest.media_type) {
        return Err(BuildError::NotAnImage {
            digest: manifest.digest.clone(),
            media_type: manifest.media_type.clone(),
        });
    }
    let parsed: ImageManifest = rbuild_oci::json::from_slice(&content.read(&manifest.digest)?)
        .map_err(|source| manifest_error(manifest, source))?;
    Ok(image_of(manifest.clone(), parsed))
}

/// A stored image manifest that does not read.
fn manifest_error(manifest: &Descriptor, source: serde_json::Error) -> BuildError {
    BuildError::Document {
        image: manifest.digest.to_string(),
        document: "manifest",
        source,
    }
}
