//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rbuild_oci::manifest::ImageIndex;
use rbuild_oci::{Algorithm, Digest, ManifestSummary, RepositoryName, Tag, media_type};

use crate::Registry;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{
    Body, DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG, RequestBody, empty, full, header, query_pairs,
    response, stream,
};
use crate::route::ManifestRef;
use crate::storage::{BlobStore, ManifestRecord, MetadataStore};

fn manifest_unknown(reference: &impl std::fmt::Display) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not in this repository"),
    )
    .with_detail(serde_json::json!({ "reference": reference.to_string() }))
}

/// The media types a request's `Accept` headers list; empty when any type will do.
fn accepted_types(parts: &http::request::Parts) -> Vec<String> {
    let types: Vec<String> = parts
        .headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if types.iter().any(|t| t == "*/*") {
        Vec::new()
    } else {
        types
    }
}

/// Whether a request that accepts `accepted` (empty: anything) can be served `media_type`.
pub(crate) fn acceptable(accepted: &[String], media_type: &str) -> bool {
    accepted.is_empty() || accepted.iter().any(|t| t == media_type)
}

/// The record of a manifest of `size` bytes with digest `digest`, as `summary` describes it.
pub(crate) fn manifest_record(digest: &Digest, size: usize, summary: ManifestSummary) -> ManifestRecord {
    ManifestRecord {
        digest: digest.clone(),
        media_type: summary.media_type,
        size: size as u64,
        subject: summary.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: summary.artifact_type,
        annotations: summary.annotations,
    }
}

/// Stores a manifest whose digest and references are checked: bytes, then the record,
/// then tags, so a crash (or failure) between steps never leaves a tag that points at a
/// manifest the repository does not hold, nor a record whose bytes are missing.
pub(crate) async fn store_manifest(
    blobs: &impl BlobStore,
    metadata: &impl MetadataStore,
    name: &RepositoryName,
    record: &ManifestRecord,
    bytes: Bytes,
    tags: &[&Tag],
) -> Result<()> {
    blobs.put(&record.digest, bytes).await?;
    metadata.put_manifest(name, record).await?;
    for tag in tags {
        metadata.set_tag(name, tag, &record.digest).await?;
    }
    Ok(())
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// The digest a manifest reference names in `name`, or MANIFEST_UNKNOWN.
    async fn resolve(&self, name: &RepositoryName, reference: &ManifestRef) -> Result<Digest> {
        match reference {
            ManifestRef::Digest(d) => Ok(d.clone()),
            ManifestRef::Tag(tag) => self
                .metadata
                .resolve_tag(name, tag)
                .await?
                .ok_or_else(|| manifest_unknown(tag)),
            ManifestRef::Invalid { .. } => Err(manifest_unknown(reference)),
        }
    }

    async fn record(&self, name: &RepositoryName, digest: &Digest) -> Result<ManifestRecord> {
        self.metadata
            .manifest(name, digest)
            .await?
            .ok_or_else(|| manifest_unknown(digest))
    }

    /// Picks what to serve given the client's `Accept`: the stored manifest if acceptable;
    /// for a client that cannot read an index, asked by tag, the index's linux/amd64 manifest
    /// (as distribution does for old docker clients); otherwise MANIFEST_UNKNOWN.
    async fn negotiate(
        &self,
        name: &RepositoryName,
        record: ManifestRecord,
        reference: &ManifestRef,
        accepted: &[String],
    ) -> Result<ManifestRecord> {
        if acceptable(accepted, &record.media_type) {
            return Ok(record);
        }
        let not_acceptable = || {
            RegistryError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "manifest {reference} is {}, which the request's Accept header does not list",
                    record.media_type
                ),
            )
        };
        if !(media_type::is_index(&record.media_type) && matches!(reference, ManifestRef::Tag(_))) {
            return Err(not_acceptable());
        }
        let bytes = self.read_manifest_bytes(&record).await?;
        let index: ImageIndex = rbuild_oci::json::from_slice(&bytes).map_err(|_| not_acceptable())?;
        let child = index
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    && accepted.contains(&d.media_type)
            })
            .ok_or_else(not_acceptable)?;
        self.proxy_manifest(name, &ManifestRef::Digest(child.digest.clone()), None)
            .await?;
        self.record(name, &child.digest).await
    }

    pub(crate) async fn read_manifest_bytes(&self, record: &ManifestRecord) -> Result<Bytes> {
        let chunks: Vec<Bytes> = self
            .blobs
            .read(&record.digest, 0..record.size)
            .await?
            .try_collect()
            .await
            .map_err(|e| RegistryError::internal("reading manifest", e))?;
        Ok(chunks.concat().into())
    }

    pub(super) async fn get_manifest(
        &self,
        name: &RepositoryName,
        reference: &ManifestRef,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>> {
        let accepted = accepted_types(parts);
        // A manifest the cache just fetched is answered from the upstream's verified bytes
        // while it is stored.
        let (record, fetched) = match self.proxy_manifest(name, reference, Some(&accepted)).await? {
            Some(fetched) => (fetched.record, Some(fetched.bytes)),
            None => {
                let digest = self.resolve(name, reference).await?;
                let record = self.record(name, &digest).await?;
                (self.negotiate(name, record, reference, &accepted).await?, None)
            }
        };
        let etag = format!("\"{}\"", record.digest);
        let mut headers = vec![
            (DOCKER_CONTENT_DIGEST, record.digest.to_string()),
            (ETAG, etag.clone()),
        ];
        let digest_text = record.digest.to_string();
        if header(&parts.headers, &IF_NONE_MATCH).is_some_and(|v| v == etag || v == digest_text) {
            return Ok(response(StatusCode::NOT_MODIFIED, headers, empty()));
        }
        headers.push((CONTENT_TYPE, record.media_type.clone()));
        headers.push((CONTENT_LENGTH, record.size.to_string()));
        let body = match fetched {
            _ if parts.method == http::Method::HEAD => empty(),
            Some(bytes) => full(bytes),
            None => stream(self.blobs.read(&record.digest, 0..record.size).await?),
        };
        Ok(response(StatusCode::OK, headers, body))
    }

    /// Reads a manifest body, refusing more than the configured limit with 413.
    async fn read_manifest_body(&self, parts: &http::request::Parts, body: RequestBody) -> Result<Bytes> {
        let limit = self.config.limits.max_manifest_bytes;
        let too_big = |size: String| {
            RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("manifest is {size} bytes; this registry accepts at most {limit} (limits.max_manifest_bytes)"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        };
        if let Some(declared) = header(&parts.headers, &CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
            && declared > limit
        {
            return Err(too_big(declared.to_string()));
        }
        let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
        match Limited::new(body, limit_usize).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(too_big(format!("more than {limit}"))),
            Err(e) => Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest body failed before it ended: {e}"),
            )),
        }
    }

    /// Checks that everything a manifest references is in the repository. Each reference is
    /// touched before it is checked, so a garbage collection running meanwhile either sees it
    /// in use and keeps it, or has already removed it and the check fails (`crate::gc`).
    pub(crate) async fn check_references(
        &self,
        name: &RepositoryName,
        summary: &ManifestSummary,
    ) -> Result<()> {
        for blob in &summary.blobs {
            self.metadata.touch_link(name, &blob.digest).await?;
            self.blobs.touch(&blob.digest).await?;
            let unknown = || {
                RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "manifest references blob {} which is not in this repository; push it first",
                        blob.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": blob.digest }))
            };
            if !self.metadata.blob_linked(name, &blob.digest).await? {
                return Err(unknown());
            }
            match self.blobs.stat(&blob.digest).await? {
                None => return Err(unknown()),
                Some(size) if size != blob.size => {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestInvalid,
                        format!(
                            "manifest says blob {} has {} bytes, but it has {size}",
                            blob.digest, blob.size
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        for child in &summary.manifests {
            self.metadata.touch_manifest(name, &child.digest).await?;
            self.blobs.touch(&child.digest).await?;
            if self.metadata.manifest(name, &child.digest).await?.is_none()
                || self.blobs.stat(&child.digest).await?.is_none()
            {
                return Err(RegistryError::new(
                    ErrorCode::ManifestBlobUnknown,
                    format!(
                        "index references manifest {} which is not in this repository; push it first",
                        child.digest
                    ),
                )
                .with_detail(serde_json::json!({ "digest": child.digest })));
            }
        }
        Ok(())
    }

    pub(super) async fn put_manifest(
        &self,
        name: &RepositoryName,
        reference: &ManifestRef,
        parts: &http::request::Parts,
        body: RequestBody,
    ) -> Result<Response<Body>> {
        self.proxies.check_push(name)?;
        let algorithm = match reference {
            ManifestRef::Digest(d) => d.algorithm(),
            ManifestRef::Tag(_) => Algorithm::Sha256,
            ManifestRef::Invalid { reference, reason } => {
                return Err(RegistryError::new(
                    ErrorCode::TagInvalid,
                    format!("{reference:?} cannot be a tag: {reason}"),
                ));
            }
        };
        let query = query_pairs(parts.uri.query());
        let extra_tags = query
            .iter()
            .filter(|(k, _)| k == "tag")
            .map(|(_, v)| {
                v.parse::<Tag>()
                    .map_err(|e| RegistryError::new(ErrorCode::TagInvalid, e.to_string()))
            })
            .collect::<Result<Vec<Tag>>>()?;
        let bytes = self.read_manifest_body(parts, body).await?;
        let summary = ManifestSummary::parse(&bytes, header(&parts.headers, &CONTENT_TYPE))
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        let digest = Digest::of(algorithm, &bytes);
        if let ManifestRef::Digest(claimed) = reference
            && *claimed != digest
        {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("manifest body has digest {digest}, not {claimed}"),
            ));
        }
        self.check_references(name, &summary).await?;
        let mut tags: Vec<&Tag> = extra_tags.iter().collect();
        if let ManifestRef::Tag(tag) = reference {
            tags.push(tag);
        }
        let record = manifest_record(&digest, bytes.len(), summary);
        store_manifest(&self.blobs, &self.metadata, name, &record, bytes, &tags).await?;

        let mut headers = vec![
            (LOCATION, format!("/v2/{name}/manifests/{digest}")),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (CONTENT_LENGTH, "0".to_owned()),
        ];
        if let Some(subject) = &record.subject {
            headers.push((OCI_SUBJECT, subject.to_string()));
        }
        headers.extend(extra_tags.iter().map(|t| (OCI_TAG, t.to_string())));
        Ok(response(StatusCode::CREATED, headers, empty()))
    }

    pub(super) async fn delete_manifest(
        &self,
        name: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<Response<Body>> {
        self.check_delete_enabled()?;
        let deleted = match reference {
            ManifestRef::Tag(tag) => self.metadata.delete_tag(name, tag).await?,
            ManifestRef::Digest(digest) => self.metadata.delete_manifest(name, digest).await?,
            ManifestRef::Invalid { .. } => false,
        };
        if !deleted {
            return Err(manifest_unknown(reference));
        }
        Ok(response(
            StatusCode::ACCEPTED,
            [(CONTENT_LENGTH, "0".to_owned())],
            empty(),
        ))
    }
}
