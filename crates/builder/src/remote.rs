//! How a build reaches the network: base images from registries, `ADD <url>` files and remote
//! build caches, through the registry client (with `docker login`'s credentials, token auth and
//! TLS settings).

use std::path::Path;

use futures_util::future::{BoxFuture, FutureExt};
use rbuild_client::{Artifact, Client};
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageManifest, Platform};
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference};

use crate::error::{BuildError, Result};

/// What a build fetches over the network — base images and `ADD <url>` files. The registry
/// [`Client`] is the one a build uses; the trait lets a program that embeds the builder
/// fetch some other way (a mirror, an air-gapped copy).
pub trait Remote: Send + Sync {
    /// Puts the image's manifest, config and layers into `store`; returns its manifest.
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        platform: &'a Platform,
        store: &'a ContentStore,
    ) -> BoxFuture<'a, Result<(Descriptor, ImageManifest, ImageConfig)>>;

    /// Downloads `url` into the file `to`; returns its digest and `Last-Modified` time.
    fn download<'a>(&'a self, url: &'a str, to: &'a Path) -> BoxFuture<'a, Result<(Digest, Option<i64>)>>;

    /// The artifact `reference` names (a build cache): its manifest and config, no layers.
    fn fetch_artifact<'a>(&'a self, reference: &'a Reference) -> BoxFuture<'a, Result<Artifact>>;

    /// Puts the `blobs` of `reference`'s repository that `store` lacks into it.
    fn fetch_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        blobs: &'a [Descriptor],
        store: &'a ContentStore,
    ) -> BoxFuture<'a, Result<()>>;

    /// The `blobs` that `reference`'s repository does not have as described.
    fn missing_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        blobs: &'a [Descriptor],
    ) -> BoxFuture<'a, Result<Vec<Descriptor>>>;
}

impl Remote for Client {
    fn pull<'a>(
        &'a self,
        reference: &'a Reference,
        platform: &'a Platform,
        store: &'a ContentStore,
    ) -> BoxFuture<'a, Result<(Descriptor, ImageManifest, ImageConfig)>> {
        async move {
            let image = Client::pull(self, reference, platform, store)
                .await
                .map_err(|e| pull_error(reference, e))?;
            Ok((image.manifest_descriptor, image.manifest, image.config))
        }
        .boxed()
    }

    fn download<'a>(&'a self, url: &'a str, to: &'a Path) -> BoxFuture<'a, Result<(Digest, Option<i64>)>> {
        async move {
            let download = Client::download(self, url, to)
                .await
                .map_err(|e| BuildError::Download {
                    url: url.to_owned(),
                    source: Box::new(e),
                })?;
            let modified = download
                .last_modified
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok());
            Ok((download.digest, modified))
        }
        .boxed()
    }

    fn fetch_artifact<'a>(&'a self, reference: &'a Reference) -> BoxFuture<'a, Result<Artifact>> {
        async move {
            Client::fetch_artifact(self, reference)
                .await
                .map_err(|e| pull_error(reference, e))
        }
        .boxed()
    }

    fn fetch_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        blobs: &'a [Descriptor],
        store: &'a ContentStore,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            Client::fetch_blobs(self, reference, blobs, store)
                .await
                .map_err(|e| pull_error(reference, e))
        }
        .boxed()
    }

    fn missing_blobs<'a>(
        &'a self,
        reference: &'a Reference,
        blobs: &'a [Descriptor],
    ) -> BoxFuture<'a, Result<Vec<Descriptor>>> {
        async move {
            Client::missing_blobs(self, reference, blobs)
                .await
                .map_err(|e| pull_error(reference, e))
        }
        .boxed()
    }
}

fn pull_error(reference: &Reference, error: rbuild_client::ClientError) -> BuildError {
    BuildError::Pull {
        reference: reference.to_string(),
        source: Box::new(error),
    }
}
