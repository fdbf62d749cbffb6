//! Resolving a reference to a platform's manifest and config, and pulling an image into the
//! local content store.
//!
//! Why one long file: it is one path — manifest fetched and verified, platform chosen, config,
//! layers streamed a few at once with verification, retries and cancellation — each step the
//! next one's input; split, a reader would follow one pull across files.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use rbuild_oci::config::ImageConfig;
use rbuild_oci::manifest::{ImageIndex, ImageManifest, Platform};
use rbuild_oci::{
    Algorithm, ContentStore, Descriptor, Digest, Reference, RepositoryName, StoreError, media_type,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName};
use reqwest::{Method, Response};

use crate::auth::{Scopes, repository_scope};
use crate::body::{ReadError, read_limited};
use crate::error::{Action, ClientError, chain};
use crate::platform;
use crate::progress::{BlobOutcome, Direction, Progress};
use crate::transport::{Body, Endpoint, Request, Target};

/// The largest manifest rbuild reads (containerd's limit is about the same; distribution and
/// zot refuse to store more than 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The largest image config rbuild reads into memory.
pub const MAX_CONFIG_BYTES: u64 = 32 * 1024 * 1024;

/// How many layers are downloaded at once (docker's default is 3).
pub const CONCURRENT_DOWNLOADS: usize = 3;

/// How many times a layer download is tried before its error is returned.
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// What `Accept` lists for manifests: both index kinds and both image manifest kinds.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// `Docker-Content-Digest`.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// An image resolved for one platform: what a build's `FROM` needs.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The index (manifest list) the reference named, if it named one.
    pub index_digest: Option<Digest>,
    /// The platform's image manifest.
    pub manifest: ImageManifest,
    /// The descriptor of that manifest (media type, digest, size; platform when from an index).
    pub manifest_descriptor: Descriptor,
    /// The manifest exactly as the registry sent it (its digest is the descriptor's).
    pub manifest_bytes: Vec<u8>,
    /// The image configuration.
    pub config: ImageConfig,
    /// The configuration exactly as stored (its digest is `manifest.config.digest`).
    pub config_bytes: Vec<u8>,
}

impl ResolvedImage {
    /// The manifest's digest: what a build pins `FROM` to, and its cache key.
    pub fn digest(&self) -> &Digest {
        &self.manifest_descriptor.digest
    }
}

/// A manifest as fetched: bytes verified against the digest asked for (or announced).
pub(crate) struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// Which kind of document a manifest is.
enum Kind {
    Index,
    Image,
}

fn kind(reference: &Reference, media_type: &str, bytes: &[u8]) -> Result<(Kind, String), ClientError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let probe: Probe = rbuild_oci::json::from_slice(bytes).map_err(|e| ClientError::Invalid {
        reference: reference.to_string(),
        what: "manifest".to_owned(),
        reason: format!("not a JSON manifest: {e}"),
    })?;
    let header = media_type.split(';').next().unwrap_or_default().trim();
    if probe.schema_version == Some(1) || header == DOCKER_SCHEMA1 || header == DOCKER_SCHEMA1_SIGNED {
        return Err(ClientError::Schema1 {
            reference: reference.to_string(),
        });
    }
    // The document's own mediaType wins; the header decides when the document has none; the
    // shape decides when neither says (old OCI manifests may omit both).
    let declared = probe.media_type.filter(|m| !m.is_empty()).or_else(|| {
        (media_type::is_index(header) || media_type::is_image_manifest(header)).then(|| header.to_owned())
    });
    let media = match declared {
        Some(m) => m,
        None if probe.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
        None if probe.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
        None => header.to_owned(),
    };
    if media_type::is_index(&media) {
        Ok((Kind::Index, media))
    } else if media_type::is_image_manifest(&media) {
        Ok((Kind::Image, media))
    } else {
        Err(ClientError::UnsupportedMediaType {
            reference: reference.to_string(),
            media_type: media,
        })
    }
}

pub(crate) fn header_digest(response: &Response) -> Option<Digest> {
    response
        .headers()
        .get(HeaderName::from_static(DOCKER_CONTENT_DIGEST))?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `GET /v2/<name>/manifests/<reference>`, verified: against the digest when `wanted` is one,
/// else against `Docker-Content-Digest` when the registry sends it.
pub(crate) async fn fetch_manifest(
    endpoint: &Endpoint,
    repository: &RepositoryName,
    wanted: &str,
    scopes: &Scopes,
) -> Result<FetchedManifest, ClientError> {
    let pinned: Option<Digest> = wanted.parse().ok();
    let url = endpoint
        .url(&format!("/v2/{repository}/manifests/{wanted}"))
        .await?;
    let request = Request {
        method: Method::GET,
        url,
        headers: vec![(ACCEPT, MANIFEST_ACCEPT.to_owned())],
        body: Body::Empty,
        scopes,
    };
    let what = match &pinned {
        Some(d) => format!("digest {d}"),
        None => format!("tag {wanted}"),
    };
    let response = endpoint.send(&request).await?;
    let response = endpoint
        .check(
            response,
            &request.describe(),
            repository,
            Action::Pull,
            Target::Manifest(what.clone()),
        )
        .await?;
    let announced = header_digest(&response);
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = read_limited(response, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => ClientError::TooLarge {
                registry: endpoint.registry().to_owned(),
                repository: repository.to_string(),
                what: format!("manifest for {what}"),
                limit: MAX_MANIFEST_BYTES,
            },
            ReadError::Transfer(reason) => ClientError::Http {
                registry: endpoint.registry().to_owned(),
                request: request.describe(),
                reason,
            },
        })?;
    let expected = pinned.or(announced);
    let algorithm = expected.as_ref().map_or(Algorithm::Sha256, Digest::algorithm);
    let actual = Digest::of(algorithm, &bytes);
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(ClientError::DigestMismatch {
            from: format!("{}/{repository}", endpoint.registry()),
            what: format!("manifest for {what}"),
            expected,
            actual,
        });
    }
    Ok(FetchedManifest {
        bytes,
        media_type,
        digest: actual,
    })
}

/// Resolves `reference` to the manifest for `wanted` and its config.
pub(crate) async fn resolve(
    endpoint: &Endpoint,
    reference: &Reference,
    wanted: &Platform,
) -> Result<ResolvedImage, ClientError> {
    let repository = reference.repository();
    let scopes: Scopes = [repository_scope(repository, false)].into();
    let first = fetch_manifest(endpoint, repository, &reference.manifest_reference(), &scopes).await?;
    let invalid = |what: &str, e: serde_json::Error| ClientError::Invalid {
        reference: reference.to_string(),
        what: what.to_owned(),
        reason: e.to_string(),
    };
    let (index_digest, manifest_bytes, descriptor) = match kind(reference, &first.media_type, &first.bytes)? {
        (Kind::Image, media) => {
            let size = first.bytes.len() as u64;
            (None, first.bytes, Descriptor::new(media, first.digest, size))
        }
        (Kind::Index, _) => {
            let index: ImageIndex =
                rbuild_oci::json::from_slice(&first.bytes).map_err(|e| invalid("image index", e))?;
            let chosen = platform::select(wanted, &index.manifests).ok_or_else(|| {
                ClientError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: platform::display(wanted),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .filter(|p| p.os != "unknown")
                        .map(platform::display)
                        .collect(),
                }
            })?;
            let chosen = chosen.clone();
            let child = fetch_manifest(endpoint, repository, &chosen.digest.to_string(), &scopes).await?;
            if child.bytes.len() as u64 != chosen.size {
                return Err(ClientError::SizeMismatch {
                    registry: endpoint.registry().to_owned(),
                    repository: repository.to_string(),
                    what: "manifest".to_owned(),
                    digest: chosen.digest.clone(),
                    expected: chosen.size,
                    actual: child.bytes.len() as u64,
                });
            }
            match kind(reference, &child.media_type, &child.bytes)? {
                (Kind::Image, _) => {}
                (Kind::Index, media) => {
                    return Err(ClientError::UnsupportedMediaType {
                        reference: format!("{reference} ({})", platform::display(wanted)),
                        media_type: format!("{media} nested in an index"),
                    });
                }
            }
            (Some(first.digest), child.bytes, chosen)
        }
    };
    let manifest: ImageManifest =
        rbuild_oci::json::from_slice(&manifest_bytes).map_err(|e| invalid("image manifest", e))?;
    let config_bytes =
        fetch_small_blob(endpoint, repository, &manifest.config, &scopes, "image config").await?;
    let config: ImageConfig =
        rbuild_oci::json::from_slice(&config_bytes).map_err(|e| invalid("image config", e))?;
    Ok(ResolvedImage {
        index_digest,
        manifest,
        manifest_descriptor: descriptor,
        manifest_bytes,
        config,
        config_bytes,
    })
}

/// Fetches a small blob (a config) into memory, verifying size and digest.
pub(crate) async fn fetch_small_blob(
    endpoint: &Endpoint,
    repository: &RepositoryName,
    descriptor: &Descriptor,
    scopes: &Scopes,
    what: &str,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::TooLarge {
        registry: endpoint.registry().to_owned(),
        repository: repository.to_string(),
        what: format!("{what} {}", descriptor.digest),
        limit: MAX_CONFIG_BYTES,
    };
    if descriptor.size > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let (response, request) = get_blob(endpoint, repository, &descriptor.digest, scopes).await?;
    let bytes = read_limited(response, descriptor.size)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => size_mismatch(endpoint, repository, what, descriptor, descriptor.size + 1),
            ReadError::Transfer(reason) => ClientError::Http {
                registry: endpoint.registry().to_owned(),
                request,
                reason,
            },
        })?;
    if bytes.len() as u64 != descriptor.size {
        return Err(size_mismatch(
            endpoint,
            repository,
            what,
            descriptor,
            bytes.len() as u64,
        ));
    }
    let actual = Digest::of(descriptor.digest.algorithm(), &bytes);
    if actual != descriptor.digest {
        return Err(ClientError::DigestMismatch {
            from: format!("{}/{repository}", endpoint.registry()),
            what: what.to_owned(),
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

fn size_mismatch(
    endpoint: &Endpoint,
    repository: &RepositoryName,
    what: &str,
    descriptor: &Descriptor,
    actual: u64,
) -> ClientError {
    ClientError::SizeMismatch {
        registry: endpoint.registry().to_owned(),
        repository: repository.to_string(),
        what: what.to_owned(),
        digest: descriptor.digest.clone(),
        expected: descriptor.size,
        actual,
    }
}

/// `GET /v2/<name>/blobs/<digest>`, redirects followed; returns the successful response and the
/// request's description.
pub(crate) async fn get_blob(
    endpoint: &Endpoint,
    repository: &RepositoryName,
    digest: &Digest,
    scopes: &Scopes,
) -> Result<(Response, String), ClientError> {
    let url = endpoint.url(&format!("/v2/{repository}/blobs/{digest}")).await?;
    let request = Request {
        method: Method::GET,
        url,
        headers: Vec::new(),
        body: Body::Empty,
        scopes,
    };
    let response = endpoint.send(&request).await?;
    let describe = request.describe();
    let response = endpoint
        .check(
            response,
            &describe,
            repository,
            Action::Pull,
            Target::Blob(digest),
        )
        .await?;
    Ok((response, describe))
}

fn store_error(context: String) -> impl FnOnce(StoreError) -> ClientError {
    move |source| ClientError::Store { context, source }
}

/// Resolves and stores manifest, config and layers in `store`.
/// Stores the layers, config and manifest of an image already resolved from `reference`.
pub(crate) async fn store_image(
    endpoint: &Endpoint,
    reference: &Reference,
    resolved: &ResolvedImage,
    store: &ContentStore,
    progress: Arc<dyn Progress>,
) -> Result<(), ClientError> {
    let repository = reference.repository();
    let scopes: Scopes = [repository_scope(repository, false)].into();

    let layers: Vec<&Descriptor> = {
        let mut seen = std::collections::HashSet::new();
        resolved
            .manifest
            .layers
            .iter()
            .filter(|l| !media_type::is_foreign_layer(&l.media_type))
            .filter(|l| seen.insert(l.digest.clone()))
            .collect()
    };
    for layer in &resolved.manifest.layers {
        if media_type::is_foreign_layer(&layer.media_type) {
            tracing::warn!(
                "{reference}: not pulling foreign layer {} (it lives outside the registry)",
                layer.digest
            );
        }
    }
    Downloads::new(endpoint, repository, store, &scopes, progress)
        .all(layers)
        .await?;

    // Config and manifest last, so that a stored manifest means a complete image.
    put_verified(
        store,
        &resolved.config_bytes,
        &resolved.manifest.config.digest,
        "image config",
    )?;
    put_verified(
        store,
        &resolved.manifest_bytes,
        &resolved.manifest_descriptor.digest,
        "manifest",
    )?;
    let layers = resolved.manifest.layers.iter();
    let blobs = layers.filter(|l| !media_type::is_foreign_layer(&l.media_type));
    crate::mount::record(
        store,
        endpoint.registry(),
        repository,
        blobs.map(|l| &l.digest).chain([&resolved.manifest.config.digest]),
    );
    Ok(())
}

/// Stores bytes already verified against `digest` (only sha256 fits the local store).
fn put_verified(store: &ContentStore, bytes: &[u8], digest: &Digest, what: &str) -> Result<(), ClientError> {
    if store.contains(digest) {
        return Ok(());
    }
    let mut writer = store
        .writer()
        .map_err(store_error(format!("storing {what} {digest}")))?;
    writer.write_all(bytes).map_err(|e| ClientError::Store {
        context: format!("storing {what} {digest}"),
        source: StoreError::Io {
            context: "writing".to_owned(),
            source: e,
        },
    })?;
    writer
        .commit(Some(digest))
        .map_err(store_error(format!("storing {what} {digest}")))?;
    Ok(())
}

/// The layer downloads of one pull. When one fails the others are told to stop, and the pull
/// waits for all of them, so that no temporary file outlives it.
pub(crate) struct Downloads<'a> {
    endpoint: &'a Endpoint,
    repository: &'a RepositoryName,
    store: &'a ContentStore,
    scopes: &'a Scopes,
    progress: Arc<dyn Progress>,
    cancel: tokio::sync::watch::Sender<bool>,
}

/// Completes once `cancel` turns true.
async fn cancelled(mut cancel: tokio::sync::watch::Receiver<bool>) {
    if cancel.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl<'a> Downloads<'a> {
    /// Downloads into `store` from `repository`, reporting to `progress`.
    pub(crate) fn new(
        endpoint: &'a Endpoint,
        repository: &'a RepositoryName,
        store: &'a ContentStore,
        scopes: &'a Scopes,
        progress: Arc<dyn Progress>,
    ) -> Downloads<'a> {
        Downloads {
            endpoint,
            repository,
            store,
            scopes,
            progress,
            cancel: tokio::sync::watch::channel(false).0,
        }
    }

    /// Downloads `layers`, a few at once; returns the first failure.
    pub(crate) async fn all(&self, layers: Vec<&Descriptor>) -> Result<(), ClientError> {
        let downloads: Vec<_> = layers.into_iter().map(|layer| self.with_retries(layer)).collect();
        let results: Vec<Result<(), ClientError>> = futures_util::stream::iter(downloads)
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .collect()
            .await;
        // Completion order: the first error is the one that stopped the others.
        results.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    async fn with_retries(&self, layer: &Descriptor) -> Result<(), ClientError> {
        let result = self.with_retries_inner(layer).await;
        if result.is_err() {
            self.cancel.send_replace(true);
        }
        result
    }

    async fn with_retries_inner(&self, layer: &Descriptor) -> Result<(), ClientError> {
        if self.store.size(&layer.digest) == Some(layer.size) {
            self.progress.blob_finished(&layer.digest, BlobOutcome::Existed);
            return Ok(());
        }
        if layer.digest.algorithm() != Algorithm::Sha256 {
            return Err(ClientError::Invalid {
                reference: format!("{}/{}", self.endpoint.registry(), self.repository),
                what: "layer".to_owned(),
                reason: format!("{}: the local store keeps sha256 blobs only", layer.digest),
            });
        }
        if self.is_cancelled() {
            return Ok(());
        }
        self.progress
            .blob_started(&layer.digest, layer.size, Direction::Download);
        let mut attempt = 1;
        loop {
            match self.download(layer).await {
                Ok(true) => {
                    self.progress
                        .blob_finished(&layer.digest, BlobOutcome::Downloaded);
                    return Ok(());
                }
                // Stopped because another layer failed; that failure is what the pull reports.
                Ok(false) => return Ok(()),
                Err(e) if e.is_transient() && attempt < DOWNLOAD_ATTEMPTS && !self.is_cancelled() => {
                    tracing::warn!(
                        "{}: layer {}: {e}; retrying",
                        self.endpoint.registry(),
                        layer.digest
                    );
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Streams one layer into the store: this task reads chunks, a blocking thread writes and
    /// hashes them; the blob is installed only if its digest matches. `Ok(false)` when stopped
    /// by cancellation (nothing stored, the temporary file removed).
    async fn download(&self, layer: &Descriptor) -> Result<bool, ClientError> {
        let (endpoint, repository) = (self.endpoint, self.repository);
        let (mut response, request) = get_blob(endpoint, repository, &layer.digest, self.scopes).await?;
        let context = format!("storing layer {}", layer.digest);
        let writer = self.store.writer().map_err(store_error(context.clone()))?;
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Write>(16);
        let expected = layer.digest.clone();
        let writing = tokio::task::spawn_blocking(move || -> Result<Option<(Digest, u64)>, StoreError> {
            let mut writer = writer;
            while let Some(message) = receiver.blocking_recv() {
                match message {
                    Write::Data(chunk) => writer.write_all(&chunk).map_err(|e| StoreError::Io {
                        context: "writing".to_owned(),
                        source: e,
                    })?,
                    Write::Commit => return writer.commit(Some(&expected)).map(Some),
                }
            }
            // The download was abandoned: dropping the writer removes its temporary file.
            Ok(None)
        });
        let stop = cancelled(self.cancel.subscribe());
        tokio::pin!(stop);
        let mut received: u64 = 0;
        let streamed: Result<bool, ClientError> = async {
            loop {
                let next = tokio::select! {
                    next = response.chunk() => next.map_err(|e| ClientError::Http {
                        registry: endpoint.registry().to_owned(),
                        request: request.clone(),
                        reason: chain(&e),
                    })?,
                    () = &mut stop => return Ok(false),
                };
                let Some(chunk) = next else { break };
                received += chunk.len() as u64;
                if received > layer.size {
                    return Err(size_mismatch(endpoint, repository, "layer", layer, received));
                }
                if sender.send(Write::Data(chunk)).await.is_err() {
                    // The writer failed; its error is reported below.
                    return Ok(true);
                }
                self.progress.blob_bytes(&layer.digest, received);
            }
            if received != layer.size {
                return Err(size_mismatch(endpoint, repository, "layer", layer, received));
            }
            let _ = sender.send(Write::Commit).await;
            Ok(true)
        }
        .await;
        drop(sender);
        let written = writing.await.map_err(|e| ClientError::Store {
            context: context.clone(),
            source: StoreError::Io {
                context: "writer thread".to_owned(),
                source: std::io::Error::other(e.to_string()),
            },
        })?;
        if !streamed? {
            return Ok(false);
        }
        match written {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Err(ClientError::Store {
                context,
                source: StoreError::Io {
                    context: "writer".to_owned(),
                    source: std::io::Error::other("the blob writer stopped early"),
                },
            }),
            Err(StoreError::DigestMismatch { expected, actual }) => Err(ClientError::DigestMismatch {
                from: format!("{}/{repository}", endpoint.registry()),
                what: "layer".to_owned(),
                expected,
                actual,
            }),
            Err(source) => Err(ClientError::Store { context, source }),
        }
    }
}

/// A message to the thread writing a blob: data, or the order to commit.
enum Write {
    Data(Bytes),
    Commit,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "ghcr.io/o/r:v1".parse().unwrap()
    }

    fn classify(header: &str, body: &str) -> Result<(bool, String), ClientError> {
        kind(&reference(), header, body.as_bytes()).map(|(k, m)| (matches!(k, Kind::Index), m))
    }

    #[test]
    fn classifies_manifests() {
        let image = r#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            classify(media_type::DOCKER_MANIFEST, image).unwrap(),
            (false, media_type::DOCKER_MANIFEST.to_owned())
        );
        assert_eq!(
            classify("application/json", index).unwrap(),
            (true, media_type::OCI_INDEX.to_owned())
        );
        assert_eq!(
            classify("", image).unwrap(),
            (false, media_type::OCI_MANIFEST.to_owned())
        );
        // The document's own mediaType wins over a sloppy header.
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media_type::DOCKER_MANIFEST_LIST
        );
        assert_eq!(
            classify("application/octet-stream", &list).unwrap(),
            (true, media_type::DOCKER_MANIFEST_LIST.to_owned())
        );
    }

    #[test]
    fn rejects_schema1_and_unknown_types() {
        let schema1 = r#"{"schemaVersion":1,"name":"o/r","tag":"v1","fsLayers":[]}"#;
        for header in [DOCKER_SCHEMA1_SIGNED, "application/json", ""] {
            let err = classify(header, schema1).unwrap_err();
            assert!(matches!(err, ClientError::Schema1 { .. }), "{err}");
            assert!(err.to_string().contains("schema 1"), "{err}");
        }
        let err = classify("application/vnd.example+json", r#"{"schemaVersion":2}"#).unwrap_err();
        assert!(matches!(err, ClientError::UnsupportedMediaType { .. }), "{err}");
        let err = classify(media_type::OCI_MANIFEST, "not json").unwrap_err();
        assert!(matches!(err, ClientError::Invalid { .. }), "{err}");
    }
}
