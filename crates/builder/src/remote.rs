//! How a build reaches the network: base images from registries and `ADD <url>` files, through
//! the registry client (with `docker login`'s credentials, token auth and TLS settings).

use std::path::Path;

use futures_util::future::{BoxFuture, FutureExt};
use rbuild_client::Client;
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
                .map_err(|e| BuildError::Pull {
                    reference: reference.to_string(),
                    source: Box::new(e),
                })?;
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
}
