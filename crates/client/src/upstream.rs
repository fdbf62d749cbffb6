//! Reads from one registry on behalf of a pull-through cache (`rbuild serve`'s `[[proxy]]`):
//! the same scheme choice, TLS, Basic and Bearer token handling as every other request of a
//! [`Client`], with credentials given by the cache's configuration rather than the docker
//! config, and answers handed back raw enough to be passed on (a blob is a stream).

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use rbuild_oci::{Digest, RepositoryName};
use reqwest::Method;
use reqwest::header::ACCEPT;

use crate::Client;
use crate::auth::{Scopes, repository_scope};
use crate::credentials::{Credential, CredentialOrigin};
use crate::error::{Action, ClientError};
use crate::pull::{MANIFEST_ACCEPT, fetch_manifest, get_blob, header_digest};
use crate::transport::{Body, Endpoint, Request, Target};

/// One upstream registry, with the credentials to read it. Cheap to clone; clones share
/// connections and tokens.
#[derive(Clone)]
pub struct Upstream {
    endpoint: Arc<Endpoint>,
}

/// A manifest fetched from an upstream, verified against the digest asked for (or the one the
/// upstream announced).
#[derive(Clone, Debug)]
pub struct UpstreamManifest {
    /// The manifest exactly as sent.
    pub bytes: Vec<u8>,
    /// The `Content-Type` it was sent with.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// A blob's body as the upstream sends it: unverified, to be checked by whoever stores it.
pub struct UpstreamBlob {
    /// The `Content-Length` the upstream announced, if any.
    pub length: Option<u64>,
    /// The bytes as they arrive; an error if the transfer breaks off.
    pub body: Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>,
}

impl Client {
    /// An [`Upstream`] for `registry` (`host[:port]`) that authenticates with `credential`, or
    /// anonymously when it is `None` (the docker config is not read); errors name `origin`
    /// as where the credential comes from.
    pub fn upstream(
        &self,
        registry: &str,
        credential: Option<Credential>,
        origin: CredentialOrigin,
    ) -> Result<Upstream, ClientError> {
        let endpoint = self.make_endpoint_with(registry, Some((credential, origin)))?;
        Ok(Upstream {
            endpoint: Arc::new(endpoint),
        })
    }
}

impl Upstream {
    fn scopes(repository: &RepositoryName) -> Scopes {
        [repository_scope(repository, false)].into()
    }

    /// `HEAD /v2/<repository>/<path>`, authenticated: the successful response, or the error
    /// its status means for `target`.
    async fn head(
        &self,
        repository: &RepositoryName,
        path: &str,
        headers: Vec<(reqwest::header::HeaderName, String)>,
        target: Target<'_>,
    ) -> Result<reqwest::Response, ClientError> {
        let scopes = Upstream::scopes(repository);
        let url = self.endpoint.url(&format!("/v2/{repository}/{path}")).await?;
        let request = Request {
            method: Method::HEAD,
            url,
            headers,
            body: Body::Empty,
            scopes: &scopes,
        };
        let response = self.endpoint.send(&request).await?;
        self.endpoint
            .check(response, &request.describe(), repository, Action::Pull, target)
            .await
    }

    /// `HEAD /v2/<repository>/manifests/<reference>`: the digest the upstream announces for
    /// it (`None` when it sends no `Docker-Content-Digest`).
    pub async fn manifest_digest(
        &self,
        repository: &RepositoryName,
        reference: &str,
    ) -> Result<Option<Digest>, ClientError> {
        let accept = vec![(ACCEPT, MANIFEST_ACCEPT.to_owned())];
        let target = Target::Manifest(reference.to_owned());
        let response = self
            .head(repository, &format!("manifests/{reference}"), accept, target)
            .await?;
        Ok(header_digest(&response))
    }

    /// `GET /v2/<repository>/manifests/<reference>`, accepting every manifest and index type,
    /// read whole (up to [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES)) and verified.
    pub async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &str,
    ) -> Result<UpstreamManifest, ClientError> {
        let fetched = fetch_manifest(
            &self.endpoint,
            repository,
            reference,
            &Upstream::scopes(repository),
        )
        .await?;
        Ok(UpstreamManifest {
            bytes: fetched.bytes,
            media_type: fetched.media_type,
            digest: fetched.digest,
        })
    }

    /// `HEAD /v2/<repository>/blobs/<digest>`: whether the upstream's repository holds the blob.
    pub async fn has_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool, ClientError> {
        let checked = self
            .head(
                repository,
                &format!("blobs/{digest}"),
                Vec::new(),
                Target::Blob(digest),
            )
            .await;
        match checked {
            Ok(_) => Ok(true),
            Err(ClientError::BlobUnknown { .. } | ClientError::RepositoryUnknown { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2/<repository>/blobs/<digest>`, redirects followed: the body, which the caller
    /// streams and must verify.
    pub async fn blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<UpstreamBlob, ClientError> {
        let (response, _) =
            get_blob(&self.endpoint, repository, digest, &Upstream::scopes(repository)).await?;
        Ok(UpstreamBlob {
            length: response.content_length(),
            body: Box::pin(response.bytes_stream().map_err(std::io::Error::other)),
        })
    }
}
