//! Artifacts: OCI manifests whose config is not an image's — a build cache is one — fetched
//! as documents, their blobs checked for (a registry may have lost one since the manifest was
//! written) and fetched on demand.

use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::manifest::ImageManifest;
use rbuild_oci::{ContentStore, Descriptor, Reference, RepositoryName, media_type};
use reqwest::header::CONTENT_LENGTH;
use reqwest::{Method, StatusCode};

use crate::auth::{Scopes, repository_scope};
use crate::error::{Action, ClientError};
use crate::progress::Progress;
use crate::pull::{Downloads, fetch_manifest, fetch_small_blob};
use crate::transport::{Body, Endpoint, Request, Target};

/// How many blobs are asked about at once.
const CONCURRENT_CHECKS: usize = 8;

/// An artifact's manifest and config, each verified against its digest.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config blob, exactly as stored.
    pub config: Vec<u8>,
}

/// Fetches the manifest `reference` names, which must be an OCI image manifest (of any config
/// media type), and its config.
pub(crate) async fn fetch(endpoint: &Endpoint, reference: &Reference) -> Result<Artifact, ClientError> {
    let repository = reference.repository();
    let scopes: Scopes = [repository_scope(repository, false)].into();
    let fetched = fetch_manifest(endpoint, repository, &reference.manifest_reference(), &scopes).await?;
    if !media_type::is_image_manifest(&fetched.media_type) {
        return Err(ClientError::UnsupportedMediaType {
            reference: reference.to_string(),
            media_type: fetched.media_type,
        });
    }
    let manifest: ImageManifest =
        rbuild_oci::json::from_slice(&fetched.bytes).map_err(|e| ClientError::Invalid {
            reference: reference.to_string(),
            what: "artifact manifest".to_owned(),
            reason: e.to_string(),
        })?;
    let config = fetch_small_blob(endpoint, repository, &manifest.config, &scopes, "artifact config").await?;
    let descriptor = Descriptor::new(fetched.media_type, fetched.digest, fetched.bytes.len() as u64);
    Ok(Artifact {
        descriptor,
        manifest,
        config,
    })
}

/// Stores `blobs` of `reference`'s repository in `store` (those it lacks), each verified while
/// it streams, and records where they came from so a push can mount them.
pub(crate) async fn store_blobs(
    endpoint: &Endpoint,
    reference: &Reference,
    blobs: &[Descriptor],
    store: &ContentStore,
    progress: Arc<dyn Progress>,
) -> Result<(), ClientError> {
    let repository = reference.repository();
    let scopes: Scopes = [repository_scope(repository, false)].into();
    Downloads::new(endpoint, repository, store, &scopes, progress)
        .all(blobs.iter().collect())
        .await?;
    crate::mount::record(
        store,
        endpoint.registry(),
        repository,
        blobs.iter().map(|b| &b.digest),
    );
    Ok(())
}

/// The `blobs` that `reference`'s repository cannot serve as described: those a `HEAD` finds
/// absent, or of another size than the descriptor's.
pub(crate) async fn missing_blobs(
    endpoint: &Endpoint,
    reference: &Reference,
    blobs: &[Descriptor],
) -> Result<Vec<Descriptor>, ClientError> {
    let repository = reference.repository();
    let scopes: Scopes = [repository_scope(repository, false)].into();
    let checks: Vec<_> = blobs
        .iter()
        .map(|blob| missing(endpoint, repository, &scopes, blob))
        .collect();
    let found: Vec<Option<Descriptor>> = futures_util::stream::iter(checks)
        .buffer_unordered(CONCURRENT_CHECKS)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// `blob` when the repository lacks it or has it at another size.
async fn missing(
    endpoint: &Endpoint,
    repository: &RepositoryName,
    scopes: &Scopes,
    blob: &Descriptor,
) -> Result<Option<Descriptor>, ClientError> {
    let request = Request {
        method: Method::HEAD,
        url: endpoint
            .url(&format!("/v2/{repository}/blobs/{}", blob.digest))
            .await?,
        headers: Vec::new(),
        body: Body::Empty,
        scopes,
    };
    let response = endpoint.send(&request).await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(Some(blob.clone()));
    }
    let target = Target::Blob(&blob.digest);
    let response = endpoint
        .check(response, &request.describe(), repository, Action::Pull, target)
        .await?;
    let size = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok(size.filter(|&size| size != blob.size).map(|_| blob.clone()))
}
