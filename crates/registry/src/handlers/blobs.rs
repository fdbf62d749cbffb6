//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LOCATION, RANGE};
use http::{Response, StatusCode};
use rbuild_oci::{Digest, RepositoryName};

use crate::Registry;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::http::{Body, DOCKER_CONTENT_DIGEST, empty, header, parse_range, response, stream};
use crate::storage::{BlobStore, MetadataStore};

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not in this repository"),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// The size of a blob the repository may read, or BLOB_UNKNOWN.
    pub(super) async fn linked_blob_size(&self, name: &RepositoryName, digest: &Digest) -> Result<u64> {
        if !self.metadata.blob_linked(name, digest).await? {
            return Err(blob_unknown(digest));
        }
        self.blobs.stat(digest).await?.ok_or_else(|| blob_unknown(digest))
    }

    pub(super) async fn get_blob(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        parts: &http::request::Parts,
    ) -> Result<Response<Body>> {
        if let Some(response) = self.proxy_blob(name, digest, parts).await? {
            return Ok(response);
        }
        let size = self.linked_blob_size(name, digest).await?;
        if parts.method == http::Method::GET
            && let Some(url) = self.blobs.redirect(digest).await?
        {
            let headers = [(LOCATION, url), (DOCKER_CONTENT_DIGEST, digest.to_string())];
            return Ok(response(StatusCode::TEMPORARY_REDIRECT, headers, empty()));
        }
        let range = match header(&parts.headers, &RANGE) {
            Some(value) => Some(parse_range(value, size).ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("range {value:?} cannot be satisfied by a blob of {size} bytes"),
                )
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            })?),
            None => None,
        };
        let mut headers = vec![
            (CONTENT_TYPE, "application/octet-stream".to_owned()),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (ETAG, format!("\"{digest}\"")),
            (ACCEPT_RANGES, "bytes".to_owned()),
        ];
        let (status, span) = match range {
            Some(r) => {
                headers.push((CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1)));
                (StatusCode::PARTIAL_CONTENT, r)
            }
            None => (StatusCode::OK, 0..size),
        };
        headers.push((CONTENT_LENGTH, (span.end - span.start).to_string()));
        let body = if parts.method == http::Method::HEAD {
            empty()
        } else {
            stream(self.blobs.read(digest, span).await?)
        };
        Ok(response(status, headers, body))
    }

    pub(super) async fn delete_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<Response<Body>> {
        self.check_delete_enabled()?;
        if !self.metadata.unlink_blob(name, digest).await? {
            return Err(blob_unknown(digest));
        }
        Ok(response(
            StatusCode::ACCEPTED,
            [(CONTENT_LENGTH, "0".to_owned())],
            empty(),
        ))
    }
}
