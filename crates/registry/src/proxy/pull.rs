//! The hooks the manifest and blob handlers call before serving from storage: they bring
//! what a proxied repository lacks (or a tag whose TTL ran out) from the upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use http::{Method, Response, StatusCode};
use rbuild_client::ClientError;
use rbuild_client::upstream::UpstreamManifest;
use rbuild_oci::{Digest, ManifestSummary, RepositoryName, Tag};

use super::Proxy;
use super::flight::{self, Download, Role};
use crate::Registry;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::handlers::manifests::{acceptable, manifest_record, store_manifest};
use crate::http::{Body, DOCKER_CONTENT_DIGEST, response, stream};
use crate::route::ManifestRef;
use crate::storage::{BlobStore, ManifestRecord, MetadataStore};

/// Whether the upstream answered that it does not have what was asked for.
fn is_not_found(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ManifestUnknown { .. }
            | ClientError::BlobUnknown { .. }
            | ClientError::RepositoryUnknown { .. }
    )
}

/// The error a client sees when the upstream could not give what the cache lacks: the
/// upstream's 404 as this registry's `code`, its 429 as 429, anything else as 502.
fn upstream_error(proxy: &Proxy, code: ErrorCode, what: &str, e: &ClientError) -> RegistryError {
    let message = format!(
        "{what} is not cached and the upstream {} could not give it: {e}",
        proxy.config.url
    );
    match e {
        _ if is_not_found(e) => RegistryError::new(code, message),
        ClientError::TooManyRequests { .. } => RegistryError::new(ErrorCode::TooManyRequests, message),
        _ => RegistryError::new(code, message).with_status(StatusCode::BAD_GATEWAY),
    }
}

/// A manifest just fetched from the upstream and checked against its digest: the request
/// that fetched it is answered from these bytes while they are stored.
pub(crate) struct Fetched {
    /// Its record, as it is being stored.
    pub(crate) record: ManifestRecord,
    /// Its bytes.
    pub(crate) bytes: Bytes,
}

/// Fetched content outlives the request that fetched it: the owned pieces of a manifest store.
struct Store<B, M> {
    blobs: B,
    metadata: M,
    proxy: Arc<Proxy>,
    name: RepositoryName,
    record: ManifestRecord,
    bytes: Bytes,
    tag: Option<Tag>,
}

impl<B: BlobStore, M: MetadataStore> Store<B, M> {
    /// Stores the manifest (and its tag, which the upstream then counts as confirmed).
    async fn run(self) -> Result<()> {
        let tags: Vec<&Tag> = self.tag.iter().collect();
        store_manifest(
            &self.blobs,
            &self.metadata,
            &self.name,
            &self.record,
            self.bytes,
            &tags,
        )
        .await?;
        if let Some(tag) = &self.tag {
            self.proxy.confirm(&self.name, tag);
        }
        Ok(())
    }
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Makes sure a proxied repository holds the manifest `reference` names, fetching it (or,
    /// for a tag past its TTL, checking it) upstream. Not proxied: nothing to do.
    ///
    /// With `early` (the media types the request accepts), a manifest fetched now that the
    /// request accepts is returned rather than stored first, and stored in a task of its own:
    /// the client is not kept waiting for the fsyncs. It was checked against its digest, so
    /// nothing wrong is served; requests for it meanwhile wait for the store; a failed store
    /// is logged, leaves no tag or record pointing at missing bytes, and the next pull
    /// fetches it again. Without `early` it is stored before this returns.
    pub(crate) async fn proxy_manifest(
        &self,
        name: &RepositoryName,
        reference: &ManifestRef,
        early: Option<&[String]>,
    ) -> Result<Option<Fetched>> {
        let Some((proxy, remote)) = self.proxies.route(name) else {
            return Ok(None);
        };
        self.proxies.storing.settle(name, reference).await;
        match reference {
            ManifestRef::Digest(digest) => {
                if self.metadata.manifest(name, digest).await?.is_some() {
                    self.proxies.metrics.hits.inc();
                    return Ok(None);
                }
                let fetched = self.fetch_manifest(proxy, &remote, &digest.to_string()).await?;
                self.keep_fetched(proxy, name, fetched, None, early).await
            }
            ManifestRef::Tag(tag) => self.proxy_tag(proxy, name, &remote, tag, early).await,
            ManifestRef::Invalid { .. } => Ok(None),
        }
    }

    async fn proxy_tag(
        &self,
        proxy: &Arc<Proxy>,
        name: &RepositoryName,
        remote: &RepositoryName,
        tag: &Tag,
        early: Option<&[String]>,
    ) -> Result<Option<Fetched>> {
        let metrics = &self.proxies.metrics;
        let Some(cached) = self.metadata.resolve_tag(name, tag).await? else {
            let fetched = self.fetch_manifest(proxy, remote, tag.as_str()).await?;
            return self.keep_fetched(proxy, name, fetched, Some(tag), early).await;
        };
        if proxy.is_fresh(name, tag) {
            metrics.hits.inc();
            return Ok(None);
        }
        let stale = |e: &ClientError| {
            metrics.upstream_errors.inc();
            metrics.stale_served.inc();
            tracing::warn!(
                "serving {name}:{tag} from the cache unchecked (its TTL ran out): the upstream {} could not confirm it: {e}",
                proxy.config.url
            );
        };
        match proxy.upstream.manifest_digest(remote, tag.as_str()).await {
            Ok(Some(digest)) if digest == cached => {
                proxy.confirm(name, tag);
                metrics.hits.inc();
                return Ok(None);
            }
            // Moved (or the upstream sent no digest): fetch it below.
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                // Gone upstream: so gone here, as the upstream would answer.
                self.metadata.delete_tag(name, tag).await?;
                return Ok(None);
            }
            Err(e) => {
                stale(&e);
                return Ok(None);
            }
        }
        match proxy.upstream.manifest(remote, tag.as_str()).await {
            Ok(fetched) => self.keep_fetched(proxy, name, fetched, Some(tag), early).await,
            Err(e) if !is_not_found(&e) => {
                stale(&e);
                Ok(None)
            }
            Err(e) => Err(upstream_error(
                proxy,
                ErrorCode::ManifestUnknown,
                &format!("{name}:{tag}"),
                &e,
            )),
        }
    }

    async fn fetch_manifest(
        &self,
        proxy: &Proxy,
        remote: &RepositoryName,
        reference: &str,
    ) -> Result<UpstreamManifest> {
        proxy.upstream.manifest(remote, reference).await.map_err(|e| {
            if !is_not_found(&e) {
                self.proxies.metrics.upstream_errors.inc();
            }
            upstream_error(
                proxy,
                ErrorCode::ManifestUnknown,
                &format!("manifest {reference}"),
                &e,
            )
        })
    }

    /// Keeps a manifest the upstream sent (verified by the client against its digest), with
    /// `tag` naming it: stored now, or (with `early`, and acceptable to the request) returned
    /// for the answer and stored beside it.
    async fn keep_fetched(
        &self,
        proxy: &Arc<Proxy>,
        name: &RepositoryName,
        fetched: UpstreamManifest,
        tag: Option<&Tag>,
        early: Option<&[String]>,
    ) -> Result<Option<Fetched>> {
        let summary = ManifestSummary::parse(&fetched.bytes, Some(&fetched.media_type)).map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("the upstream's manifest: {e}"),
            )
        })?;
        let metrics = &self.proxies.metrics;
        metrics.misses.inc();
        metrics.fetched_bytes.inc_by(fetched.bytes.len() as u64);
        let bytes = Bytes::from(fetched.bytes);
        let record = manifest_record(&fetched.digest, bytes.len(), summary);
        let store = Store {
            blobs: self.blobs.clone(),
            metadata: self.metadata.clone(),
            proxy: proxy.clone(),
            name: name.clone(),
            record: record.clone(),
            bytes: bytes.clone(),
            tag: tag.cloned(),
        };
        if !early.is_some_and(|accepted| acceptable(accepted, &record.media_type)) {
            store.run().await?;
            return Ok(None);
        }
        let pending = self.proxies.storing.begin(name, &record.digest, tag);
        tokio::spawn(async move {
            let what = format!("{}@{}", store.name, store.record.digest);
            if let Err(e) = store.run().await {
                tracing::warn!(
                    "pull-through of manifest {what}: answered from the upstream's verified bytes, but storing it failed ({e}); the next pull fetches it again"
                );
            }
            drop(pending);
        });
        Ok(Some(Fetched { record, bytes }))
    }

    /// For a blob a proxied repository lacks: fetches it, once however many ask through
    /// however many repositories. The request that starts the download gets the upstream's
    /// bytes as they arrive (the response, returned); the others wait and are served from
    /// storage (`None`), as is everyone when the blob is already here. A blob stored for
    /// another repository (a shared base layer, or a download another repository just made)
    /// is linked once a `HEAD` upstream confirms this repository has it, without downloading
    /// it again: no repository is given a blob its upstream does not.
    pub(crate) async fn proxy_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        parts: &http::request::Parts,
    ) -> Result<Option<Response<Body>>> {
        let Some((proxy, remote)) = self.proxies.route(name) else {
            return Ok(None);
        };
        let metrics = &self.proxies.metrics;
        loop {
            if self.metadata.blob_linked(name, digest).await? && self.blobs.stat(digest).await?.is_some() {
                metrics.hits.inc();
                return Ok(None);
            }
            let landing = match self.proxies.flights.join(name, digest) {
                Role::Follower { leader, waiting } => match flight::wait(waiting).await {
                    // This repository's own download failed: the same answer.
                    Some(Err(e)) if leader == *name => return Err(e),
                    // Stored (look again: linked here, or stored for another repository and
                    // confirmed below), failed for another repository (its upstream may lack
                    // what this one's has), or abandoned: try again.
                    _ => continue,
                },
                Role::Leader(landing) => landing,
            };
            // Leading now: a download that just ended may have linked it; and a blob stored
            // for another repository only needs the upstream to confirm this repository has
            // it too (its answer is final: what the upstream says it lacks is not asked for
            // again, and an upstream that cannot answer is not asked for the bytes either).
            if self.blobs.stat(digest).await?.is_some() {
                let confirmed = match self.metadata.blob_linked(name, digest).await? {
                    true => Ok(true),
                    false => proxy.upstream.has_blob(&remote, digest).await,
                };
                let answer = match confirmed {
                    Ok(true) => {
                        self.metadata.link_blob(name, digest).await?;
                        metrics.hits.inc();
                        Ok(None)
                    }
                    Ok(false) => Err(RegistryError::new(
                        ErrorCode::BlobUnknown,
                        format!(
                            "blob {digest} is not cached for {name} and the upstream {} does not have it there",
                            proxy.config.url
                        ),
                    )),
                    Err(e) => {
                        metrics.upstream_errors.inc();
                        Err(upstream_error(
                            proxy,
                            ErrorCode::BlobUnknown,
                            &format!("blob {digest}"),
                            &e,
                        ))
                    }
                };
                landing.finish(answer.as_ref().map(|_| ()).map_err(Clone::clone));
                return answer;
            }
            let blob = match proxy.upstream.blob(&remote, digest).await {
                Ok(blob) => blob,
                Err(e) => {
                    if !is_not_found(&e) {
                        metrics.upstream_errors.inc();
                    }
                    let error = upstream_error(proxy, ErrorCode::BlobUnknown, &format!("blob {digest}"), &e);
                    landing.finish(Err(error.clone()));
                    return Err(error);
                }
            };
            metrics.misses.inc();
            let length = blob.length;
            let download = Download {
                blobs: self.blobs.clone(),
                metadata: self.metadata.clone(),
                name: name.clone(),
                digest: digest.clone(),
                upstream: proxy.config.url.clone(),
                metrics: metrics.clone(),
            };
            // A plain GET streams; HEAD and ranges wait for the stored blob.
            if parts.method == Method::GET && !parts.headers.contains_key(RANGE) {
                let body = download.spawn(landing, blob, true);
                let mut headers = vec![
                    (CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (DOCKER_CONTENT_DIGEST, digest.to_string()),
                ];
                headers.extend(length.map(|l| (CONTENT_LENGTH, l.to_string())));
                return Ok(body.map(|body| response(StatusCode::OK, headers, stream(body))));
            }
            let waiting = landing.subscribe();
            download.spawn(landing, blob, false);
            match flight::wait(waiting).await {
                Some(Ok(())) => return Ok(None),
                Some(Err(e)) => return Err(e),
                None => continue,
            }
        }
    }
}
