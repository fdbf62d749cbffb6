//! Turning a built stage into an image, and writing images out: the local store, an OCI
//! image layout (directory or tar), and a docker-archive tar that `docker load` accepts.
//!
//! A build whose image stays in the local store keeps its layers uncompressed, as docker's
//! image store does: nothing reads them compressed there, and compressing is most of what a
//! cold build costs. An image leaving the store (a push, an `--output`) is first made
//! [`compressed`]; each layer is compressed once and remembered.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use rbuild_layer::{LayerOptions, compress_layer};
use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use rbuild_oci::store::REF_NAME;
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference, media_type};

use crate::error::{BuildError, Result};
use crate::image::ImageState;
use crate::solver::LocalStore;

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
        .map_err(|e| BuildError::Context(format!("reading manifest {}: {e}", manifest.digest)))?;
    let plain = |layer: &Descriptor| layer.media_type == media_type::OCI_LAYER_TAR;
    if options.compression.media_type() == media_type::OCI_LAYER_TAR || !parsed.layers.iter().any(plain) {
        return Ok(image_of(manifest.clone(), parsed));
    }
    for layer in parsed.layers.iter_mut().filter(|l| plain(l)) {
        *layer = match local.cache.compressed(&layer.digest, options.compression) {
            Some(known) if content.contains(&known.digest) => known,
            _ => compress_stored(local, layer, options)?,
        };
    }
    let mut descriptor = content.put_json(media_type::OCI_MANIFEST, &parsed)?;
    descriptor.platform = manifest.platform.clone();
    Ok(image_of(descriptor, parsed))
}

fn image_of(manifest: Descriptor, parsed: ImageManifest) -> Image {
    Image {
        manifest,
        config: parsed.config.digest,
        layers: parsed.layers,
    }
}

/// Compresses the uncompressed layer blob `layer` into the store and remembers the result.
fn compress_stored(local: &LocalStore, layer: &Descriptor, options: &LayerOptions) -> Result<Descriptor> {
    let failed =
        |e: rbuild_layer::LayerError| BuildError::Context(format!("compressing layer {}: {e}", layer.digest));
    let blob = local.content.open_blob(&layer.digest)?;
    let mut writer = local.content.writer()?;
    let info = compress_layer(io::BufReader::new(blob), options, &mut writer).map_err(failed)?;
    if info.diff_id != layer.digest {
        return Err(BuildError::Context(format!(
            "layer {} in the local store reads back as {}: the store is damaged; `rbuild cache prune` and build again",
            layer.digest, info.diff_id
        )));
    }
    let (digest, size) = writer.commit(Some(&info.digest))?;
    let compressed = Descriptor::new(info.media_type, digest, size);
    local
        .cache
        .store_compressed(&layer.digest, options.compression, &compressed)?;
    Ok(compressed)
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

/// The blobs an image consists of (manifest, config, layers), each once.
fn image_blobs(image: &Image) -> Vec<Digest> {
    let mut blobs = vec![image.manifest.digest.clone(), image.config.clone()];
    for layer in &image.layers {
        if !blobs.contains(&layer.digest) {
            blobs.push(layer.digest.clone());
        }
    }
    blobs
}

/// Writes an OCI image layout directory holding the image, named by `tags`.
pub fn write_oci_dir(store: &ContentStore, image: &Image, tags: &[String], dest: &Path) -> Result<()> {
    let out = ContentStore::open(dest)?;
    for digest in image_blobs(image) {
        let target = out.blob_path(&digest);
        if target.exists() {
            continue;
        }
        let source = store.blob_path(&digest);
        fs::hard_link(&source, &target)
            .or_else(|_| fs::copy(&source, &target).map(drop))
            .map_err(|e| BuildError::io(format!("writing {}", target.display()), e))?;
    }
    if tags.is_empty() {
        out.set_ref("latest", &image.manifest)?;
    }
    for tag in tags {
        out.set_ref(tag, &image.manifest)?;
    }
    Ok(())
}

fn append_bytes(builder: &mut tar::Builder<impl Write>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, bytes)
}

fn append_blob(
    builder: &mut tar::Builder<impl Write>,
    store: &ContentStore,
    digest: &Digest,
) -> io::Result<()> {
    let source = store.blob_path(digest);
    let mut file = File::open(&source)?;
    let mut header = tar::Header::new_ustar();
    header.set_size(file.metadata()?.len());
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, format!("blobs/sha256/{}", digest.hex()), &mut file)
}

fn layout_index(image: &Image, tags: &[String]) -> ImageIndex {
    let names: Vec<String> = if tags.is_empty() {
        vec!["latest".to_owned()]
    } else {
        tags.to_vec()
    };
    ImageIndex {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        artifact_type: None,
        manifests: names
            .into_iter()
            .map(|name| {
                let mut d = image.manifest.clone();
                d.annotations.insert(REF_NAME.to_owned(), name);
                d
            })
            .collect(),
        subject: None,
        annotations: Default::default(),
    }
}

fn json(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// Writes the image as a tar. `docker` adds docker's `manifest.json` (what `docker load`
/// reads) beside the OCI layout, so the same file also works as an OCI archive.
pub fn write_tar(
    store: &ContentStore,
    image: &Image,
    tags: &[String],
    docker: bool,
    out: impl Write,
) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    let context = "writing image archive";
    let result = (|| -> io::Result<()> {
        append_bytes(&mut builder, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut builder, "index.json", &json(&layout_index(image, tags))?)?;
        if docker {
            let manifest = serde_json::json!([{
                "Config": format!("blobs/sha256/{}", image.config.hex()),
                "RepoTags": tags,
                "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
            }]);
            append_bytes(&mut builder, "manifest.json", &json(&manifest)?)?;
        }
        for digest in image_blobs(image) {
            append_blob(&mut builder, store, &digest)?;
        }
        builder.finish()
    })();
    result.map_err(|e| BuildError::io(context, e))
}
