//! Images as files: an OCI image layout directory, and a tar of one — which, with docker's
//! `manifest.json` beside the layout, is also what `docker load` reads.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use rbuild_layer::{LayerError, TarWriter};
use rbuild_oci::manifest::ImageIndex;
use rbuild_oci::store::REF_NAME;
use rbuild_oci::{ContentStore, Digest, media_type};

use super::Image;
use crate::error::{BuildError, Result};

/// What an image tar holds besides the OCI layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The OCI layout alone.
    Oci,
    /// The OCI layout and docker's `manifest.json`.
    Docker,
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

/// Permission bits of every file in an image archive.
const MODE: u32 = 0o644;

fn append_blob(tar: &mut TarWriter<impl Write>, store: &ContentStore, digest: &Digest) -> Result<()> {
    let source = store.blob_path(digest);
    let reading = |e| BuildError::io(format!("reading {}", source.display()), e);
    let file = File::open(&source).map_err(reading)?;
    let size = file.metadata().map_err(reading)?.len();
    tar.append_file(&format!("blobs/sha256/{}", digest.hex()), MODE, size, file)
        .map_err(archive_error)
}

/// An error of the tar stream, as a build error.
fn archive_error(e: LayerError) -> BuildError {
    BuildError::io("writing image archive", io::Error::other(e))
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

fn json(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| BuildError::io("writing image archive", io::Error::other(e)))
}

/// Writes the image as a tar file at `dest`.
pub fn write_tar_file(
    store: &ContentStore,
    image: &Image,
    tags: &[String],
    format: Format,
    dest: &Path,
) -> Result<()> {
    let writing = |e| BuildError::io(format!("writing {}", dest.display()), e);
    let mut out = io::BufWriter::new(File::create(dest).map_err(writing)?);
    write_tar(store, image, tags, format, &mut out)?;
    out.flush().map_err(writing)
}

/// Writes the image as a tar to `out`, in `format`.
pub fn write_tar(
    store: &ContentStore,
    image: &Image,
    tags: &[String],
    format: Format,
    out: impl Write,
) -> Result<()> {
    let mut tar = TarWriter::new(out);
    let mut append = |path: &str, bytes: &[u8]| tar.append_bytes(path, MODE, bytes).map_err(archive_error);
    append("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append("index.json", &json(&layout_index(image, tags))?)?;
    if format == Format::Docker {
        let manifest = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", image.config.hex()),
            "RepoTags": tags,
            "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }]);
        append("manifest.json", &json(&manifest)?)?;
    }
    for digest in image_blobs(image) {
        append_blob(&mut tar, store, &digest)?;
    }
    tar.finish().map(drop).map_err(archive_error)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read;

    use rbuild_oci::Descriptor;
    use rbuild_oci::media_type::{OCI_LAYER_TAR, OCI_MANIFEST};

    use super::*;

    /// An image of two layers, the second repeating the first (its blob goes once).
    fn stored_image(dir: &Path) -> (ContentStore, Image) {
        let store = ContentStore::open(dir).unwrap();
        let layer = store.put(b"layer bytes").unwrap();
        let config = store.put(b"{}").unwrap();
        let manifest = store.put(b"manifest bytes").unwrap();
        let image = Image {
            manifest: Descriptor::new(OCI_MANIFEST, manifest, 14),
            config,
            layers: vec![
                Descriptor::new(OCI_LAYER_TAR, layer.clone(), 11),
                Descriptor::new(OCI_LAYER_TAR, layer, 11),
            ],
        };
        (store, image)
    }

    /// The entries of a tar, by path.
    fn entries(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut content = Vec::new();
                entry.read_to_end(&mut content).unwrap();
                (path, content)
            })
            .collect()
    }

    #[test]
    fn a_docker_archive_is_an_oci_layout_with_dockers_manifest_and_each_blob_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = stored_image(dir.path());
        let mut bytes = Vec::new();
        write_tar(&store, &image, &["app:1".to_owned()], Format::Docker, &mut bytes).unwrap();
        let files = entries(&bytes);
        let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let mut expected = vec![
            "oci-layout".to_owned(),
            "index.json".to_owned(),
            "manifest.json".to_owned(),
            blob(&image.manifest.digest),
            blob(&image.config),
            blob(&image.layers[0].digest),
        ];
        expected.sort();
        assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected);
        assert_eq!(files[&blob(&image.layers[0].digest)], b"layer bytes");

        let docker: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(docker[0]["RepoTags"], serde_json::json!(["app:1"]));
        assert_eq!(docker[0]["Config"], blob(&image.config));
        assert_eq!(docker[0]["Layers"].as_array().unwrap().len(), 2);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "app:1");
    }

    #[test]
    fn an_oci_archive_has_no_docker_manifest_and_an_untagged_image_is_latest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = stored_image(dir.path());
        let mut bytes = Vec::new();
        write_tar(&store, &image, &[], Format::Oci, &mut bytes).unwrap();
        let files = entries(&bytes);
        assert!(!files.contains_key("manifest.json"));
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "latest");
    }

    #[test]
    fn a_layout_directory_names_every_tag_and_holds_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let (store, image) = stored_image(&dir.path().join("store"));
        let dest = dir.path().join("out");
        let tags = ["app:1".to_owned(), "app:latest".to_owned()];
        write_oci_dir(&store, &image, &tags, &dest).unwrap();
        let out = ContentStore::open(&dest).unwrap();
        for tag in &tags {
            assert_eq!(
                out.resolve_ref(tag).unwrap().unwrap().digest,
                image.manifest.digest
            );
        }
        for digest in [&image.manifest.digest, &image.config, &image.layers[0].digest] {
            assert_eq!(out.read(digest).unwrap(), store.read(digest).unwrap());
        }
    }
}
