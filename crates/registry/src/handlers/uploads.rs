//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, single-POST monolithic, mount) and
//! `GET`/`PATCH`/`PUT`/`DELETE /v2/<name>/blobs/uploads/<id>`.

use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use http::{Response, StatusCode};
use hyper::body::Body as _;
use rbuild_oci::{Digest, RepositoryName};

use crate::Registry;
use crate::auth::{Permit, Resource};
use crate::config::Action;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{
    Body, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, RequestBody, body_stream, empty, header,
    parse_content_range, query_pairs, query_value, response, upload_range,
};
use crate::route::unknown_upload;
use crate::storage::{AppendCheck, BlobStore, MetadataStore, StorageError, UploadId, UploadSession};

fn digest_param(pairs: &[(String, String)], key: &str) -> Result<Option<Digest>> {
    query_value(pairs, key)
        .map(|d| {
            d.parse().map_err(|e: rbuild_oci::DigestError| {
                RegistryError::new(ErrorCode::DigestInvalid, format!("query parameter {key}: {e}"))
            })
        })
        .transpose()
}

/// What a chunk must satisfy, from its `Content-Range` and `Content-Length` headers.
fn append_check(parts: &http::request::Parts) -> Result<AppendCheck> {
    let content_length = header(&parts.headers, &CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    match header(&parts.headers, &CONTENT_RANGE) {
        None => Ok(AppendCheck {
            offset: None,
            length: content_length,
        }),
        Some(value) => {
            let (offset, length) = parse_content_range(value).ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("malformed Content-Range {value:?}: expected <start>-<end>, inclusive"),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            })?;
            if content_length.is_some_and(|l| l != length) {
                return Err(RegistryError::new(
                    ErrorCode::SizeInvalid,
                    format!(
                        "Content-Range {value:?} covers {length} bytes but Content-Length is {content_length:?}"
                    ),
                ));
            }
            Ok(AppendCheck {
                offset: Some(offset),
                length: Some(length),
            })
        }
    }
}

fn blob_created(name: &RepositoryName, digest: &Digest) -> Response<Body> {
    response(
        StatusCode::CREATED,
        [
            (LOCATION, format!("/v2/{name}/blobs/{digest}")),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
        empty(),
    )
}

fn upload_progress(status: StatusCode, name: &RepositoryName, id: &UploadId, size: u64) -> Response<Body> {
    response(
        status,
        [
            (LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
            (RANGE, upload_range(size)),
            (DOCKER_UPLOAD_UUID, id.to_string()),
            (CONTENT_LENGTH, "0".to_owned()),
        ],
        empty(),
    )
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    pub(super) async fn start_upload(
        &self,
        name: &RepositoryName,
        parts: &http::request::Parts,
        body: RequestBody,
        permit: &Permit,
    ) -> Result<Response<Body>> {
        self.proxies.check_push(name)?;
        let query = query_pairs(parts.uri.query());
        if let Some(digest) = digest_param(&query, "mount")? {
            if self
                .try_mount(name, &digest, query_value(&query, "from"), permit)
                .await?
            {
                return Ok(blob_created(name, &digest));
            }
        } else if let Some(digest) = digest_param(&query, "digest")? {
            self.monolithic_upload(name, &digest, parts, body).await?;
            return Ok(blob_created(name, &digest));
        }
        let id = UploadId::new();
        self.blobs.upload_create(&id).await?;
        let session = UploadSession {
            id: id.clone(),
            started: SystemTime::now(),
        };
        self.metadata.create_upload(name, &session).await?;
        Ok(upload_progress(StatusCode::ACCEPTED, name, &id, 0))
    }

    /// Links a blob into `name` from `from` (or, with auto-mount, from anywhere in the
    /// registry). `false` means the caller should start an ordinary upload instead.
    ///
    /// Mounting reads `from`, so the client must be allowed to pull it; mounting from anywhere
    /// would read repositories the client may not see, so it happens only without auth.
    async fn try_mount(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        from: Option<&str>,
        permit: &Permit,
    ) -> Result<bool> {
        let allowed = match from.filter(|f| !f.is_empty()) {
            Some(from) => {
                let from: RepositoryName = from.parse().map_err(|e: rbuild_oci::NameError| {
                    RegistryError::new(ErrorCode::NameInvalid, format!("query parameter from: {e}"))
                })?;
                permit.allows(&Resource::Repository(from.to_string()), Action::Pull)
                    && self.metadata.blob_linked(&from, digest).await?
            }
            None => self.config.uploads.auto_mount && permit.is_everything(),
        };
        // Touched before the check, as a manifest's references are (`crate::gc`).
        if !allowed || !self.blobs.touch(digest).await? || self.blobs.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.metadata.link_blob(name, digest).await?;
        Ok(true)
    }

    /// A whole blob in one POST: staged, verified and linked, with no session left behind.
    async fn monolithic_upload(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        parts: &http::request::Parts,
        body: RequestBody,
    ) -> Result<()> {
        let id = UploadId::new();
        self.blobs.upload_create(&id).await?;
        let stored = async {
            self.blobs
                .upload_append(&id, body_stream(body), append_check(parts)?)
                .await?;
            self.blobs.upload_commit(&id, digest).await?;
            Ok::<_, RegistryError>(())
        }
        .await;
        if let Err(e) = stored {
            self.blobs.upload_cancel(&id).await?;
            return Err(e);
        }
        self.metadata.link_blob(name, digest).await?;
        Ok(())
    }

    /// The session `id` of repository `name`, or BLOB_UPLOAD_UNKNOWN.
    async fn session(&self, name: &RepositoryName, id: &UploadId) -> Result<UploadSession> {
        self.metadata.upload(name, id).await?.ok_or_else(unknown_upload)
    }

    pub(super) async fn upload_status(&self, name: &RepositoryName, id: &UploadId) -> Result<Response<Body>> {
        self.session(name, id).await?;
        let size = self.blobs.upload_size(id).await?;
        Ok(upload_progress(StatusCode::NO_CONTENT, name, id, size))
    }

    pub(super) async fn patch_upload(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        parts: &http::request::Parts,
        body: RequestBody,
    ) -> Result<Response<Body>> {
        self.session(name, id).await?;
        let size = self
            .blobs
            .upload_append(id, body_stream(body), append_check(parts)?)
            .await?;
        Ok(upload_progress(StatusCode::ACCEPTED, name, id, size))
    }

    pub(super) async fn finish_upload(
        &self,
        name: &RepositoryName,
        id: &UploadId,
        parts: &http::request::Parts,
        body: RequestBody,
    ) -> Result<Response<Body>> {
        self.session(name, id).await?;
        let query = query_pairs(parts.uri.query());
        let digest = digest_param(&query, "digest")?.ok_or_else(|| {
            RegistryError::new(
                ErrorCode::DigestInvalid,
                "the final PUT of an upload needs ?digest=<digest>",
            )
        })?;
        if !body.is_end_stream() {
            self.blobs
                .upload_append(id, body_stream(body), append_check(parts)?)
                .await?;
        }
        match self.blobs.upload_commit(id, &digest).await {
            Ok(_) => {}
            Err(e @ StorageError::DigestMismatch { .. }) => {
                // The data can never become this blob: drop the session rather than keep it.
                self.blobs.upload_cancel(id).await?;
                self.metadata.delete_upload(name, id).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.metadata.link_blob(name, &digest).await?;
        self.metadata.delete_upload(name, id).await?;
        Ok(blob_created(name, &digest))
    }

    pub(super) async fn cancel_upload(&self, name: &RepositoryName, id: &UploadId) -> Result<Response<Body>> {
        self.session(name, id).await?;
        self.blobs.upload_cancel(id).await?;
        self.metadata.delete_upload(name, id).await?;
        Ok(response(
            StatusCode::NO_CONTENT,
            [(CONTENT_LENGTH, "0".to_owned())],
            empty(),
        ))
    }
}
