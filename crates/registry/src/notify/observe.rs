//! What a finished request tells the endpoints: the events its successful response stands
//! for, as distribution emits them.
//!
//! - a manifest `GET`, or `HEAD` by tag (not a `304`): `pull`, with the tag when asked by tag.
//!   docker and containerd pull by `HEAD` by tag, then `GET` by digest, or no `GET` at all
//!   when they hold the image already; the `HEAD` is the pull event, and the `GET` by digest
//!   that follows from the same client is not reported again (`resolved`), so one pull is
//!   one event with its tag;
//! - a blob `GET` (whole or ranged): `pull`, media type `application/octet-stream`;
//! - a manifest `PUT`: `push`, one event per tag it set (the reference and each `?tag=`);
//! - a completed upload (the final `PUT`, or a monolithic `POST`): `push` of the blob;
//! - a cross-repository mount: `mount`, with `fromRepository`;
//! - a `DELETE`: `delete`, with the digest, or the tag when a tag was deleted.
//!
//! Events are read from the response the client got (its status and headers), so they
//! describe exactly what was served or stored, however a handler produced it.

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HOST, USER_AGENT};
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use rbuild_oci::{Digest, RepositoryName};

use super::event::{Actor, BLOB_MEDIA_TYPE, Event, EventAction, RequestRecord, Target};
use crate::Registry;
use crate::auth::{Peer, Permit};
use crate::http::{DOCKER_CONTENT_DIGEST, OCI_TAG, header, query_pairs, query_value};
use crate::route::{ManifestRef, Route};
use crate::storage::{BlobStore, MetadataStore};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Publishes the events a request caused (its response's `status` and `headers` tell
    /// which), if any endpoint is configured.
    pub(crate) async fn notify(
        &self,
        route: &Route,
        parts: &Parts,
        peer: &Peer,
        permit: &Permit,
        status: StatusCode,
        headers: &HeaderMap,
    ) {
        if self.notifier.is_empty() || !status.is_success() {
            return;
        }
        let source = self.notifier.source();
        let request = request_record(parts, peer);
        let scheme = if peer.tls { "https" } else { "http" };
        let host = if request.host.is_empty() {
            &source.addr
        } else {
            &request.host
        };
        let base = format!("{scheme}://{host}");
        let targets = self.targets(route, parts, status, headers, &request, &base).await;
        if targets.is_empty() {
            return;
        }
        let actor = Actor {
            name: permit.user().unwrap_or_default().to_owned(),
        };
        let timestamp = rbuild_oci::time::rfc3339(rbuild_oci::time::now());
        for (action, target) in targets {
            self.notifier.publish(&Event {
                id: uuid::Uuid::new_v4().to_string(),
                timestamp: timestamp.clone(),
                action,
                target,
                request: request.clone(),
                actor: actor.clone(),
                source: source.clone(),
            });
        }
    }

    /// The event targets of a successful response (none for requests that change and serve
    /// nothing, like a blob `HEAD` or a tag list); `base` is `scheme://host` for their URLs.
    async fn targets(
        &self,
        route: &Route,
        parts: &Parts,
        status: StatusCode,
        headers: &HeaderMap,
        request: &RequestRecord,
        base: &str,
    ) -> Vec<(EventAction, Target)> {
        let served_digest = header(headers, &DOCKER_CONTENT_DIGEST).and_then(|d| d.parse::<Digest>().ok());
        match (route, &parts.method) {
            (Route::Manifest(name, reference), method @ (&Method::GET | &Method::HEAD))
                if status == StatusCode::OK =>
            {
                let Some(digest) = served_digest else {
                    return Vec::new();
                };
                let (client, digest_text) = (client_of(request), digest.to_string());
                let tag = tag_of(reference);
                let reported = match (method, &tag) {
                    (&Method::HEAD, Some(_)) => {
                        self.notifier
                            .recent
                            .remember(&client, name.as_str(), &digest_text);
                        true
                    }
                    (&Method::GET, Some(_)) => true,
                    (&Method::GET, None) => !self.notifier.recent.take(&client, name.as_str(), &digest_text),
                    _ => false,
                };
                if !reported {
                    return Vec::new();
                }
                let mut target = described(
                    name,
                    &digest,
                    header(headers, &CONTENT_TYPE).map(str::to_owned),
                    header(headers, &CONTENT_LENGTH).and_then(|l| l.parse().ok()),
                    manifest_url(base, name, &digest),
                );
                target.tag = tag;
                vec![(EventAction::Pull, target)]
            }
            (Route::Manifest(name, reference), &Method::PUT) => {
                let Some(digest) = served_digest else {
                    return Vec::new();
                };
                let Ok(Some(record)) = self.metadata.manifest(name, &digest).await else {
                    return Vec::new();
                };
                let target = described(
                    name,
                    &digest,
                    Some(record.media_type),
                    Some(record.size),
                    manifest_url(base, name, &digest),
                );
                let tags: Vec<String> = tag_of(reference)
                    .into_iter()
                    .chain(
                        headers
                            .get_all(OCI_TAG)
                            .iter()
                            .filter_map(|t| t.to_str().ok())
                            .map(str::to_owned),
                    )
                    .collect();
                if tags.is_empty() {
                    return vec![(EventAction::Push, target)];
                }
                tags.into_iter()
                    .map(|tag| {
                        let target = Target {
                            tag: Some(tag),
                            ..target.clone()
                        };
                        (EventAction::Push, target)
                    })
                    .collect()
            }
            (Route::Manifest(name, reference), &Method::DELETE) => {
                let mut target = bare(name);
                match reference {
                    ManifestRef::Digest(digest) => target.digest = Some(digest.to_string()),
                    _ => target.tag = tag_of(reference),
                }
                vec![(EventAction::Delete, target)]
            }
            (Route::Blob(name, digest), &Method::GET) => {
                let size = match status {
                    StatusCode::PARTIAL_CONTENT => header(headers, &CONTENT_RANGE)
                        .and_then(|r| r.rsplit('/').next())
                        .and_then(|total| total.parse().ok()),
                    _ => header(headers, &CONTENT_LENGTH).and_then(|l| l.parse().ok()),
                };
                let url = blob_url(base, name, digest);
                vec![(
                    EventAction::Pull,
                    described(name, digest, Some(BLOB_MEDIA_TYPE.to_owned()), size, url),
                )]
            }
            (Route::Blob(name, digest), &Method::DELETE) => {
                let target = Target {
                    digest: Some(digest.to_string()),
                    ..bare(name)
                };
                vec![(EventAction::Delete, target)]
            }
            (Route::Upload(name, _), &Method::PUT) | (Route::UploadStart(name), &Method::POST)
                if status == StatusCode::CREATED =>
            {
                let Some(digest) = served_digest else {
                    return Vec::new();
                };
                let size = self.blobs.stat(&digest).await.ok().flatten();
                let url = blob_url(base, name, &digest);
                let mut target = described(name, &digest, Some(BLOB_MEDIA_TYPE.to_owned()), size, url);
                let query = query_pairs(parts.uri.query());
                if query_value(&query, "mount").is_some() {
                    target.from_repository = query_value(&query, "from")
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned);
                    vec![(EventAction::Mount, target)]
                } else {
                    vec![(EventAction::Push, target)]
                }
            }
            _ => Vec::new(),
        }
    }
}

/// A target naming only its repository.
fn bare(name: &RepositoryName) -> Target {
    Target {
        repository: name.to_string(),
        ..Target::default()
    }
}

/// A target with its content descriptor (`length` repeats `size`, as distribution writes it).
fn described(
    name: &RepositoryName,
    digest: &Digest,
    media_type: Option<String>,
    size: Option<u64>,
    url: String,
) -> Target {
    Target {
        media_type,
        size,
        digest: Some(digest.to_string()),
        length: size,
        url: Some(url),
        ..bare(name)
    }
}

/// The client a request came from, without its port (a client's next request may come on
/// another connection).
fn client_of(request: &RequestRecord) -> String {
    request
        .addr
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| request.addr.clone(), |a| a.ip().to_string())
}

fn tag_of(reference: &ManifestRef) -> Option<String> {
    match reference {
        ManifestRef::Tag(tag) => Some(tag.to_string()),
        _ => None,
    }
}

fn manifest_url(base: &str, name: &RepositoryName, digest: &Digest) -> String {
    format!("{base}/v2/{name}/manifests/{digest}")
}

fn blob_url(base: &str, name: &RepositoryName, digest: &Digest) -> String {
    format!("{base}/v2/{name}/blobs/{digest}")
}

/// The request part of an event: `host` is the registry as the client addressed it. The client's address is the first `X-Forwarded-For` hop, or
/// `X-Real-IP`, or the connection's peer, as distribution reports it.
fn request_record(parts: &Parts, peer: &Peer) -> RequestRecord {
    let forwarded = header(&parts.headers, &X_FORWARDED_FOR)
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or_else(|| header(&parts.headers, &X_REAL_IP));
    RequestRecord {
        id: uuid::Uuid::new_v4().to_string(),
        addr: forwarded
            .map(str::to_owned)
            .or_else(|| peer.addr.map(|a| a.to_string()))
            .unwrap_or_default(),
        // HTTP/2 carries the host in the request's authority instead.
        host: header(&parts.headers, &HOST)
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default(),
        method: parts.method.to_string(),
        useragent: header(&parts.headers, &USER_AGENT).unwrap_or_default().to_owned(),
    }
}
