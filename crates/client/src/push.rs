//! Pushing an image (or an index and its images) from the local content store.
//!
//! For each blob: `HEAD` it and skip it when the registry has it; then try a cross-repository
//! mount (`POST ?mount=&from=`) from the repositories of the same registry it is known to be in
//! (see [`mount`](crate::mount)), asking for `pull` on each; otherwise (no candidate, or every
//! mount refused) send the file to an upload session: one `PUT ?digest=` with the body for
//! small blobs, a streamed `PATCH` then `PUT ?digest=` for the rest. A blob another push
//! through the same client is sending to the registry is waited for, then mounted from where
//! it went ([`inflight`](crate::inflight)). Layers go concurrently,
//! then the config, then the manifest with its media type. An index's manifests are pushed by
//! digest before the index itself. Once the push is done, the store records that its blobs are
//! in the target repository, so a later push elsewhere on the registry mounts them.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::manifest::{ImageIndex, ImageManifest};
use rbuild_oci::{ContentStore, Descriptor, Digest, Reference, RepositoryName, media_type};
use reqwest::header::{CONTENT_TYPE, HeaderName};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::{Scopes, repository_scope};
use crate::error::{Action, ClientError};
use crate::mount;
use crate::progress::{BlobOutcome, Direction, Progress};
use crate::pull::MANIFEST_ACCEPT;
use crate::transport::{Body, Endpoint, Request, Target};

/// Blobs up to this size are uploaded with a single `PUT`; larger ones with `PATCH` + `PUT`.
pub const MONOLITHIC_UPLOAD_MAX: u64 = 1024 * 1024;

/// How many blobs are uploaded at once (docker's default is 5).
pub const CONCURRENT_UPLOADS: usize = 4;

/// How many times a blob push is tried when it fails for a transient reason.
const PUSH_ATTEMPTS: u32 = 3;

/// One blob of a push and what happened to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedBlob {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Uploaded, mounted, or already there.
    pub outcome: BlobOutcome,
}

/// What a push sent, skipped and mounted.
#[derive(Clone, Debug)]
pub struct PushReport {
    /// Where the image now is, pinned to its digest.
    pub reference: Reference,
    /// The digest of the manifest (or index) pushed to the reference.
    pub digest: Digest,
    /// Every blob, in the order they were settled.
    pub blobs: Vec<PushedBlob>,
    /// Every manifest put, children of an index first, the top one last.
    pub manifests: Vec<Digest>,
}

impl PushReport {
    /// The blobs with this outcome.
    pub fn with_outcome(&self, outcome: BlobOutcome) -> impl Iterator<Item = &PushedBlob> {
        self.blobs.iter().filter(move |b| b.outcome == outcome)
    }

    /// How many bytes were uploaded.
    pub fn bytes_uploaded(&self) -> u64 {
        self.with_outcome(BlobOutcome::Uploaded).map(|b| b.size).sum()
    }
}

/// One push in progress.
pub(crate) struct Push<'a> {
    endpoint: &'a Endpoint,
    store: &'a ContentStore,
    reference: &'a Reference,
    repository: &'a RepositoryName,
    mount_from: Option<&'a RepositoryName>,
    scopes: Scopes,
    progress: Arc<dyn Progress>,
    settled: Mutex<HashMap<Digest, BlobOutcome>>,
    blobs: Mutex<Vec<PushedBlob>>,
    manifests: Mutex<Vec<Digest>>,
}

impl<'a> Push<'a> {
    pub fn new(
        endpoint: &'a Endpoint,
        store: &'a ContentStore,
        reference: &'a Reference,
        mount_from: Option<&'a RepositoryName>,
        progress: Arc<dyn Progress>,
    ) -> Push<'a> {
        let repository = reference.repository();
        let scopes: Scopes = BTreeSet::from([repository_scope(repository, true)]);
        Push {
            endpoint,
            store,
            reference,
            repository,
            mount_from,
            scopes,
            progress,
            settled: Mutex::new(HashMap::new()),
            blobs: Mutex::new(Vec::new()),
            manifests: Mutex::new(Vec::new()),
        }
    }

    /// Pushes `manifest` (an image manifest or an index) to the reference.
    pub async fn run(self, manifest: &Descriptor) -> Result<PushReport, ClientError> {
        if let Some(pinned) = self.reference.digest()
            && pinned != &manifest.digest
        {
            return Err(ClientError::ReferenceDigest {
                reference: self.reference.to_string(),
                expected: pinned.clone(),
                actual: manifest.digest.clone(),
            });
        }
        let target = match self.reference.tag() {
            Some(tag) => tag.to_string(),
            None => manifest.digest.to_string(),
        };
        self.push_manifest(manifest, target).await?;
        let blobs = take(&self.blobs);
        mount::record(
            self.store,
            self.endpoint.registry(),
            self.repository,
            blobs.iter().map(|b| &b.digest),
        );
        Ok(PushReport {
            reference: self.reference.with_digest(manifest.digest.clone()),
            digest: manifest.digest.clone(),
            blobs,
            manifests: take(&self.manifests),
        })
    }

    fn push_manifest<'b>(
        &'b self,
        descriptor: &'b Descriptor,
        target: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'b>> {
        Box::pin(async move {
            let bytes = self.read_manifest(descriptor)?;
            let media = descriptor.media_type.as_str();
            if media_type::is_index(media) {
                let index: ImageIndex =
                    rbuild_oci::json::from_slice(&bytes).map_err(|e| self.invalid("image index", e))?;
                for child in &index.manifests {
                    if self.store.contains(&child.digest) {
                        self.push_manifest(child, child.digest.to_string()).await?;
                    } else if !self.registry_has_manifest(child).await? {
                        return Err(ClientError::MissingContent {
                            what: "manifest listed in the index".to_owned(),
                            digest: child.digest.clone(),
                            store: self.store.root().to_owned(),
                        });
                    }
                }
            } else if media_type::is_image_manifest(media) {
                let manifest: ImageManifest =
                    rbuild_oci::json::from_slice(&bytes).map_err(|e| self.invalid("image manifest", e))?;
                let mut seen = BTreeSet::new();
                let layers: Vec<&Descriptor> = manifest
                    .layers
                    .iter()
                    .filter(|l| !media_type::is_foreign_layer(&l.media_type))
                    .filter(|l| l.digest != manifest.config.digest && seen.insert(l.digest.clone()))
                    .collect();
                let uploads: Vec<_> = layers.into_iter().map(|layer| self.push_blob(layer)).collect();
                futures_util::stream::iter(uploads)
                    .buffer_unordered(CONCURRENT_UPLOADS)
                    .try_collect::<()>()
                    .await?;
                self.push_blob(&manifest.config).await?;
            } else {
                return Err(ClientError::UnsupportedMediaType {
                    reference: self.reference.to_string(),
                    media_type: descriptor.media_type.clone(),
                });
            }
            self.put_manifest(descriptor, bytes, &target).await
        })
    }

    fn invalid(&self, what: &str, e: serde_json::Error) -> ClientError {
        ClientError::Invalid {
            reference: self.reference.to_string(),
            what: format!("local {what}"),
            reason: e.to_string(),
        }
    }

    fn missing(&self, what: &str, digest: &Digest) -> ClientError {
        ClientError::MissingContent {
            what: what.to_owned(),
            digest: digest.clone(),
            store: self.store.root().to_owned(),
        }
    }

    fn read_manifest(&self, descriptor: &Descriptor) -> Result<Bytes, ClientError> {
        if !self.store.contains(&descriptor.digest) {
            return Err(self.missing("manifest", &descriptor.digest));
        }
        let bytes = self
            .store
            .read(&descriptor.digest)
            .map_err(|source| ClientError::Store {
                context: format!("reading manifest {}", descriptor.digest),
                source,
            })?;
        let actual = Digest::of(descriptor.digest.algorithm(), &bytes);
        if actual != descriptor.digest {
            return Err(ClientError::Store {
                context: format!("reading manifest {}", descriptor.digest),
                source: rbuild_oci::StoreError::DigestMismatch {
                    expected: descriptor.digest.clone(),
                    actual,
                },
            });
        }
        Ok(Bytes::from(bytes))
    }

    async fn request(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(HeaderName, String)>,
        body: Body,
    ) -> Result<(Response, String), ClientError> {
        self.request_with(method, url, headers, body, &self.scopes).await
    }

    /// Sends a request that needs `scopes` rather than the push's own.
    async fn request_with(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(HeaderName, String)>,
        body: Body,
        scopes: &Scopes,
    ) -> Result<(Response, String), ClientError> {
        let request = Request {
            method,
            url,
            headers,
            body,
            scopes,
        };
        let response = self.endpoint.send(&request).await?;
        Ok((response, request.describe()))
    }

    /// Sends a request and turns an error status into the matching error.
    async fn send_checked(
        &self,
        method: Method,
        url: Url,
        headers: Vec<(HeaderName, String)>,
        body: Body,
        target: Target<'_>,
    ) -> Result<(Response, String), ClientError> {
        let (response, describe) = self.request(method, url, headers, body).await?;
        let response = self
            .endpoint
            .check(response, &describe, self.repository, Action::Push, target)
            .await?;
        Ok((response, describe))
    }

    async fn registry_has_manifest(&self, descriptor: &Descriptor) -> Result<bool, ClientError> {
        let url = self
            .endpoint
            .url(&format!(
                "/v2/{}/manifests/{}",
                self.repository, descriptor.digest
            ))
            .await?;
        let headers = vec![(reqwest::header::ACCEPT, MANIFEST_ACCEPT.to_owned())];
        let (response, _) = self.request(Method::HEAD, url, headers, Body::Empty).await?;
        Ok(response.status().is_success())
    }

    fn settle(&self, descriptor: &Descriptor, outcome: BlobOutcome) {
        if let Ok(mut settled) = self.settled.lock() {
            settled.insert(descriptor.digest.clone(), outcome);
        }
        if let Ok(mut blobs) = self.blobs.lock() {
            blobs.push(PushedBlob {
                digest: descriptor.digest.clone(),
                size: descriptor.size,
                outcome,
            });
        }
        self.progress.blob_finished(&descriptor.digest, outcome);
    }

    async fn push_blob(&self, descriptor: &Descriptor) -> Result<(), ClientError> {
        let already = self
            .settled
            .lock()
            .ok()
            .is_some_and(|s| s.contains_key(&descriptor.digest));
        if already {
            return Ok(());
        }
        // A blob the store lacks (a layer a build found in a remote cache and never needed the
        // bytes of) can still be pushed when the registry has it or can mount it.
        let local = match self.store.size(&descriptor.digest) {
            None => false,
            Some(size) if size != descriptor.size => {
                return Err(ClientError::Invalid {
                    reference: self.reference.to_string(),
                    what: format!("local blob {}", descriptor.digest),
                    reason: format!(
                        "it is {size} bytes in {}, but the manifest says {}",
                        self.store.root().display(),
                        descriptor.size
                    ),
                });
            }
            Some(_) => true,
        };
        let (turn, sent_to) = self.endpoint.in_flight().turn(&descriptor.digest).await;
        let mut attempt = 1;
        let outcome = loop {
            match self.send_blob(descriptor, local, sent_to.as_ref()).await {
                Ok(outcome) => break outcome,
                Err(e) if e.is_transient() && attempt < PUSH_ATTEMPTS => {
                    tracing::warn!(
                        "{}: blob {}: {e}; retrying",
                        self.endpoint.registry(),
                        descriptor.digest
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        turn.done(self.repository);
        self.settle(descriptor, outcome);
        Ok(())
    }

    /// Sends one blob: nothing if the repository has it, a mount if another repository of the
    /// registry does (first `sent_to`, where another push just put it), else an upload of the
    /// `local` copy (without one, the blob is missing).
    async fn send_blob(
        &self,
        descriptor: &Descriptor,
        local: bool,
        sent_to: Option<&RepositoryName>,
    ) -> Result<BlobOutcome, ClientError> {
        let blob_path = format!("/v2/{}/blobs/{}", self.repository, descriptor.digest);
        let (response, describe) = self
            .request(
                Method::HEAD,
                self.endpoint.url(&blob_path).await?,
                Vec::new(),
                Body::Empty,
            )
            .await?;
        match response.status() {
            status if status.is_success() => return Ok(BlobOutcome::Existed),
            StatusCode::NOT_FOUND => {}
            _ => {
                self.endpoint
                    .check(
                        response,
                        &describe,
                        self.repository,
                        Action::Push,
                        Target::Blob(&descriptor.digest),
                    )
                    .await?;
            }
        }

        let uploads = self
            .endpoint
            .url(&format!("/v2/{}/blobs/uploads/", self.repository))
            .await?;
        let candidates = mount::candidates(
            self.store,
            self.endpoint.registry(),
            self.repository,
            sent_to.or(self.mount_from),
            &descriptor.digest,
        );
        let mut session = None;
        for from in &candidates {
            match self.try_mount(&uploads, &descriptor.digest, from).await? {
                MountAttempt::Mounted => {
                    if let Some(opened) = session {
                        self.cancel(opened).await;
                    }
                    return Ok(BlobOutcome::Mounted);
                }
                MountAttempt::Refused(opened) => {
                    if let Some(previous) = session.replace(opened) {
                        self.cancel(previous).await;
                    }
                }
                MountAttempt::Denied => {}
            }
        }
        if !local {
            if let Some(opened) = session {
                self.cancel(opened).await;
            }
            return Err(self.missing("blob", &descriptor.digest));
        }
        let session = match session {
            Some(session) => session,
            None => {
                let (response, _) = self
                    .send_checked(
                        Method::POST,
                        uploads.clone(),
                        Vec::new(),
                        Body::Empty,
                        Target::Other,
                    )
                    .await?;
                self.endpoint.location(&uploads, &response)?
            }
        };
        self.progress
            .blob_started(&descriptor.digest, descriptor.size, Direction::Upload);
        self.upload(descriptor, session).await?;
        Ok(BlobOutcome::Uploaded)
    }

    /// Asks the registry to mount `digest` from `from`, with a token that may pull `from`.
    async fn try_mount(
        &self,
        uploads: &Url,
        digest: &Digest,
        from: &RepositoryName,
    ) -> Result<MountAttempt, ClientError> {
        let mut post = uploads.clone();
        post.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.as_str());
        let mut scopes = self.scopes.clone();
        scopes.insert(repository_scope(from, false));
        let sent = self
            .request_with(Method::POST, post.clone(), Vec::new(), Body::Empty, &scopes)
            .await;
        let (response, describe) = match sent {
            Ok(sent) => sent,
            Err(e @ (ClientError::AuthenticationFailed { .. } | ClientError::Token { .. })) => {
                tracing::debug!(
                    "{}: no mount of {digest} from {from}: {e}",
                    self.endpoint.registry()
                );
                return Ok(MountAttempt::Denied);
            }
            Err(e) => return Err(e),
        };
        match response.status() {
            StatusCode::CREATED => Ok(MountAttempt::Mounted),
            StatusCode::ACCEPTED => Ok(MountAttempt::Refused(self.endpoint.location(&post, &response)?)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(MountAttempt::Denied),
            _ => {
                self.endpoint
                    .check(response, &describe, self.repository, Action::Push, Target::Other)
                    .await?;
                Err(ClientError::Protocol {
                    registry: self.endpoint.registry().to_owned(),
                    request: describe,
                    reason: "a mount answered neither 201 Created nor 202 Accepted".to_owned(),
                })
            }
        }
    }

    /// Abandons an upload session the push will not use (the registry would purge it later).
    async fn cancel(&self, session: Url) {
        if let Err(e) = self
            .request(Method::DELETE, session, Vec::new(), Body::Empty)
            .await
        {
            tracing::debug!("{}: cancelling an unused upload: {e}", self.endpoint.registry());
        }
    }

    /// Sends the blob's bytes to an upload session and completes it.
    async fn upload(&self, descriptor: &Descriptor, session: Url) -> Result<(), ClientError> {
        let body = || Body::File {
            path: self.store.blob_path(&descriptor.digest),
            len: descriptor.size,
            progress: Some((self.progress.clone(), descriptor.digest.clone())),
        };
        let octet_stream = || vec![(CONTENT_TYPE, "application/octet-stream".to_owned())];
        let (session, final_body) = if descriptor.size <= MONOLITHIC_UPLOAD_MAX {
            (session, body())
        } else {
            let (response, _) = self
                .send_checked(
                    Method::PATCH,
                    session.clone(),
                    octet_stream(),
                    body(),
                    Target::Other,
                )
                .await?;
            (self.endpoint.location(&session, &response)?, Body::Empty)
        };
        let mut put = session;
        put.query_pairs_mut()
            .append_pair("digest", &descriptor.digest.to_string());
        let target = Target::Blob(&descriptor.digest);
        let (response, describe) = self
            .send_checked(Method::PUT, put, octet_stream(), final_body, target)
            .await?;
        self.check_announced_digest(&response, &descriptor.digest, &describe)
    }

    /// When the registry announces the digest it stored, it must be ours.
    fn check_announced_digest(
        &self,
        response: &Response,
        digest: &Digest,
        describe: &str,
    ) -> Result<(), ClientError> {
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<Digest>().ok());
        match announced {
            Some(announced) if announced.algorithm() == digest.algorithm() && &announced != digest => {
                Err(ClientError::Protocol {
                    registry: self.endpoint.registry().to_owned(),
                    request: describe.to_owned(),
                    reason: format!("the registry stored {announced}, but rbuild sent {digest}"),
                })
            }
            _ => Ok(()),
        }
    }

    async fn put_manifest(
        &self,
        descriptor: &Descriptor,
        bytes: Bytes,
        target: &str,
    ) -> Result<(), ClientError> {
        let url = self
            .endpoint
            .url(&format!("/v2/{}/manifests/{target}", self.repository))
            .await?;
        let headers = vec![(CONTENT_TYPE, descriptor.media_type.clone())];
        let target = Target::Manifest(format!("manifest {}", descriptor.digest));
        let (response, describe) = self
            .send_checked(Method::PUT, url, headers, Body::Bytes(bytes), target)
            .await?;
        self.check_announced_digest(&response, &descriptor.digest, &describe)?;
        if let Ok(mut manifests) = self.manifests.lock() {
            manifests.push(descriptor.digest.clone());
        }
        Ok(())
    }
}

/// What one mount request came to.
enum MountAttempt {
    /// The blob is in the repository now.
    Mounted,
    /// The registry did not mount it and opened this upload session instead.
    Refused(Url),
    /// The client may not read the source repository (or has no token for it).
    Denied,
}

fn take<T>(mutex: &Mutex<Vec<T>>) -> Vec<T> {
    mutex
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}
