//! `oci-layout://DIR[:TAG]`: an image copied out of an OCI image layout directory into the
//! local store, as BuildKit reads named contexts and bases of that scheme.

use std::path::{Path, PathBuf};

use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use rbuild_oci::{Descriptor, Digest};

use crate::error::{BuildError, Result};
use crate::store::LocalStore;

/// Copies the image `spec` (`DIR` or `DIR:TAG`) names into `store`.
pub(super) fn import(store: &LocalStore, spec: &str) -> Result<(Descriptor, ImageManifest, ImageConfig)> {
    let (dir, tag) = split(spec);
    let unreadable = |document| {
        move |source| BuildError::Document {
            image: format!("oci-layout://{spec}"),
            document,
            source,
        }
    };
    let index_path = dir.join("index.json");
    let index: ImageIndex = rbuild_oci::json::from_slice(
        &std::fs::read(&index_path)
            .map_err(|e| BuildError::io(format!("reading {}", index_path.display()), e))?,
    )
    .map_err(unreadable("index.json"))?;
    let descriptor = index
        .manifests
        .into_iter()
        .find(|d| {
            tag.is_none_or(|t| d.annotations.get(rbuild_oci::store::REF_NAME).map(String::as_str) == Some(t))
        })
        .ok_or_else(|| BuildError::LayoutTagNotFound {
            layout: dir.display().to_string(),
            tag: tag.map(str::to_owned),
        })?;
    let content = &store.content;
    let import = |digest: &Digest| content.import_file(&blob_path(dir, digest), digest);
    import(&descriptor.digest)?;
    let manifest: ImageManifest = rbuild_oci::json::from_slice(&content.read(&descriptor.digest)?)
        .map_err(unreadable("the tagged image manifest"))?;
    import(&manifest.config.digest)?;
    for layer in &manifest.layers {
        import(&layer.digest)?;
    }
    let config: ImageConfig = rbuild_oci::json::from_slice(&content.read(&manifest.config.digest)?)
        .map_err(unreadable("config"))?;
    Ok((descriptor, manifest, config))
}

/// `DIR:TAG`, where the tag may itself hold ':' (`app:1`): the directory is the longest
/// prefix that is an OCI layout; without one, the whole spec is the directory.
fn split(spec: &str) -> (&Path, Option<&str>) {
    spec.rmatch_indices(':')
        .map(|(i, _)| (Path::new(&spec[..i]), Some(&spec[i + 1..])))
        .find(|(dir, _)| dir.join("index.json").is_file())
        .unwrap_or((Path::new(spec), None))
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs")
        .join(digest.algorithm().name())
        .join(digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_the_longest_prefix_that_is_a_layout() {
        let root = tempfile::tempdir().expect("tempdir");
        let layout = root.path().join("a:b");
        std::fs::create_dir(&layout).expect("mkdir");
        std::fs::write(layout.join("index.json"), "{}").expect("write");
        let path = layout.display().to_string();
        assert_eq!(split(&path), (layout.as_path(), None));
        let tagged = format!("{path}:app:1");
        assert_eq!(split(&tagged), (layout.as_path(), Some("app:1")));
        let missing = root.path().join("none:tag").display().to_string();
        assert_eq!(split(&missing), (Path::new(&missing), None));
    }
}
