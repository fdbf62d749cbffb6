//! The images a build reads — base images (`FROM`), images `COPY --from` names, image build
//! contexts — each resolved to its manifest, config and layers in the local store: from the
//! store when it has the image under that name (unless `--pull`), else from its registry
//! through [`Remote`] and then named in the store, so that later builds need no network to
//! start; or copied out of an OCI image layout on disk ([`layout`]).

mod layout;

use std::collections::HashMap;

use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageManifest, Platform};
use rbuild_oci::{Descriptor, Reference};

use crate::cache::CachedLayer;
use crate::error::{BuildError, Result};
use crate::progress::{Event, Progress};
use crate::remote::Remote;
use crate::store::LocalStore;

/// A base image, resolved: its config, layers and manifest digest.
#[derive(Clone, Debug)]
pub struct BaseImage {
    /// The manifest digest (what keys steps built on it).
    pub digest: String,
    /// The config.
    pub config: ImageConfig,
    /// The layers.
    pub layers: Vec<CachedLayer>,
}

impl BaseImage {
    fn new(descriptor: &Descriptor, manifest: &ImageManifest, config: ImageConfig) -> BaseImage {
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(descriptor, diff_id)| CachedLayer {
                descriptor: descriptor.clone(),
                diff_id: diff_id.clone(),
            })
            .collect();
        BaseImage {
            digest: descriptor.digest.to_string(),
            config,
            layers,
        }
    }
}

/// Resolves the images of one build.
pub(crate) struct Resolver<'a> {
    /// Where images are kept.
    pub store: &'a LocalStore,
    /// Where missing images come from.
    pub remote: &'a dyn Remote,
    /// The platform images are chosen for.
    pub platform: &'a Platform,
    /// `--pull`: ask the registry even when the store has the name.
    pub pull: bool,
    /// Told when an image is looked up remotely and when it is resolved.
    pub progress: &'a dyn Progress,
}

impl Resolver<'_> {
    /// Resolves every reference at once (each once). On failure, the reference that failed.
    pub async fn all(
        &self,
        references: Vec<String>,
    ) -> Result<HashMap<String, BaseImage>, (String, BuildError)> {
        let mut unique = references;
        unique.sort();
        unique.dedup();
        let resolved =
            futures_util::future::join_all(unique.iter().map(|reference| self.image(reference))).await;
        let mut images = HashMap::new();
        for (reference, image) in unique.into_iter().zip(resolved) {
            match image {
                Ok(image) => images.insert(reference, image),
                Err(e) => return Err((reference, e)),
            };
        }
        Ok(images)
    }

    /// The image `reference` names (see the module documentation).
    async fn image(&self, reference: &str) -> Result<BaseImage> {
        if let Some(spec) = reference.strip_prefix("oci-layout://") {
            let (descriptor, manifest, config) = layout::import(self.store, spec)?;
            return Ok(BaseImage::new(&descriptor, &manifest, config));
        }
        let parsed: Reference = reference.parse().map_err(|source| BuildError::InvalidReference {
            reference: reference.to_owned(),
            source,
        })?;
        let content = &self.store.content;
        let name = parsed.to_string();
        let local = match self.pull {
            true => None,
            false => self.local(&name)?,
        };
        let (descriptor, manifest, config) = match local {
            Some(image) => image,
            None => {
                self.progress.event(Event::Resolving {
                    reference: name.clone(),
                });
                let image = self.remote.pull(&parsed, self.platform, content).await?;
                content.set_ref(&name, &image.0)?;
                image
            }
        };
        self.progress.event(Event::Resolved {
            reference: name,
            digest: descriptor.digest.to_string(),
        });
        Ok(BaseImage::new(&descriptor, &manifest, config))
    }

    /// The image the store has under `name`, if it is one for the platform and whole: an image
    /// pushed with layers a remote cache gave (never downloaded) is pulled from its registry.
    fn local(&self, name: &str) -> Result<Option<(Descriptor, ImageManifest, ImageConfig)>> {
        let content = &self.store.content;
        let Some(descriptor) = content.resolve_ref(name)? else {
            return Ok(None);
        };
        let unreadable = |document| {
            move |source| BuildError::Document {
                image: format!("local image {name}"),
                document,
                source,
            }
        };
        let manifest: ImageManifest = rbuild_oci::json::from_slice(&content.read(&descriptor.digest)?)
            .map_err(unreadable("manifest"))?;
        let config: ImageConfig = rbuild_oci::json::from_slice(&content.read(&manifest.config.digest)?)
            .map_err(unreadable("config"))?;
        let matches = config.os == self.platform.os && config.architecture == self.platform.architecture;
        let whole = manifest.layers.iter().all(|l| content.contains(&l.digest));
        Ok((matches && whole).then_some((descriptor, manifest, config)))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_build::TestBuild;

    #[test]
    fn an_image_in_the_store_is_a_base_without_the_network_while_it_is_whole() {
        let t = TestBuild::new();
        t.file("a.txt", "a");
        let base = t.build("FROM scratch\nCOPY a.txt /a\n");
        t.store()
            .content
            .set_ref("registry.test/base:1", &base.image.manifest)
            .unwrap();
        let child = t.build("FROM registry.test/base:1\nCOPY a.txt /b\n");
        assert_eq!(child.image.layers[0], base.image.layers[0]);
        // Without its layer, the store's copy is not used: the registry would be asked.
        let blob = t.store().content.blob_path(&base.image.layers[0].digest);
        std::fs::remove_file(blob).unwrap();
        let error = t
            .build_with("FROM registry.test/base:1\nCOPY a.txt /c\n", |_| {})
            .err()
            .expect("needs the network");
        assert!(
            error.to_string().contains("unit tests have no network"),
            "{error}"
        );
    }
}
