//! Where the registry keeps what it is given, behind two traits.
//!
//! [`BlobStore`] holds content by digest (blobs and manifest bytes alike) and stages uploads;
//! it knows nothing of repositories. [`MetadataStore`] holds everything that has a name:
//! which blobs each repository may read, manifests and their media types, tags, the referrers
//! index and upload sessions. The split follows how a deployment grows: blobs move to object
//! storage, metadata to a shared database, and the handlers do not change.
//!
//! The filesystem implementations in [`fs`] are the embedded default; [`memory`] keeps
//! everything in the process, for tests and benchmarks. Both traits are tested by
//! one shared suite, [`conformance`], that every implementation must pass.

pub mod check;
pub mod conformance;
pub mod fs;
mod listing;
pub mod memory;
pub mod postgres;
pub mod s3;
pub mod select;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use rbuild_oci::{Digest, RepositoryName, Tag};
use serde::{Deserialize, Serialize};

pub use listing::{BlobInfo, LinkInfo, ManifestInfo, TagInfo};

/// A stream of bytes: a request body going in, or blob content coming out.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The id of an upload session: a random UUID, so it cannot be guessed or forged into a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    /// A fresh random id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }

    /// Parses an id from a URL or file name; `None` unless it is a UUID.
    pub fn parse(s: &str) -> Option<UploadId> {
        uuid::Uuid::try_parse(s).ok().map(UploadId)
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The blob is not stored.
    #[error("blob unknown")]
    BlobUnknown,
    /// The upload session's staging data does not exist.
    #[error("upload unknown")]
    UploadUnknown,
    /// A chunk did not start where the upload ends.
    #[error("chunk starts at {requested} but the upload holds {current} bytes")]
    OffsetMismatch {
        /// Where the client said the chunk starts.
        requested: u64,
        /// How many bytes the upload holds.
        current: u64,
    },
    /// The content does not hash to the digest the client gave.
    #[error("content digest is {actual}, not {expected}")]
    DigestMismatch {
        /// The digest the client claimed.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
    },
    /// A chunk's body was not as long as its declared range.
    #[error("expected {expected} bytes, received {received}")]
    SizeMismatch {
        /// The declared length.
        expected: u64,
        /// What arrived.
        received: u64,
    },
    /// The client's body failed mid-stream (disconnect, framing error).
    #[error("request body ended early: {0}")]
    Body(io::Error),
    /// A backend the registry depends on (the database, the object store) cannot be reached
    /// now; the request may succeed when retried, and nothing of it was stored.
    #[error("{backend} unavailable: {reason}")]
    Unavailable {
        /// Which backend (`postgres`, `s3`).
        backend: &'static str,
        /// What failed, for the log and the client.
        reason: String,
    },
    /// The storage medium failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        source: io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> StorageError {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for storage results.
pub type StorageResult<T> = Result<T, StorageError>;

/// `Ok` if content hashed to `actual` may be stored as `expected`; else the mismatch a store
/// reports (and stores nothing).
pub fn check_digest(expected: &Digest, actual: Digest) -> StorageResult<()> {
    if &actual == expected {
        Ok(())
    } else {
        Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// What an append must satisfy, taken from the chunk's `Content-Range` and `Content-Length`.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendCheck {
    /// The offset the chunk must start at.
    pub offset: Option<u64>,
    /// The exact number of bytes the chunk must carry.
    pub length: Option<u64>,
}

/// A manifest as a repository records it; its bytes live in the [`BlobStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    /// The manifest's digest.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The manifest it refers to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// Its artifact type, for referrers responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations, for referrers responses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An upload session as a repository records it; its data lives in the [`BlobStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadSession {
    /// The session id.
    pub id: UploadId,
    /// When the session started, for purging stale ones.
    pub started: SystemTime,
}

/// Which part of a sorted listing to return.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    /// Return only entries sorting after this one.
    pub after: Option<String>,
    /// Return at most this many entries.
    pub limit: usize,
}

/// A walk through a paged listing from its start: [`next`](Pages::next) asks for the page
/// after the last entry [`advance`](Pages::advance) saw, until a page says none follow.
pub(crate) struct Pages {
    request: PageRequest,
    done: bool,
}

impl Pages {
    /// A walk that asks for `limit` entries at a time.
    pub fn new(limit: usize) -> Pages {
        Pages {
            request: PageRequest { after: None, limit },
            done: false,
        }
    }

    /// The request for the next page, or `None` once the listing is exhausted.
    pub fn next(&self) -> Option<&PageRequest> {
        (!self.done).then_some(&self.request)
    }

    /// Moves past `page`, whose entries sort by `key`.
    pub fn advance<T>(&mut self, page: &Page<T>, key: impl Fn(&T) -> String) {
        match page.items.last() {
            Some(last) if page.more => self.request.after = Some(key(last)),
            _ => self.done = true,
        }
    }
}

/// One page of a sorted listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries, in order.
    pub items: Vec<T>,
    /// Whether entries remain after the last one.
    pub more: bool,
}

impl<T> Page<T> {
    /// The first `limit` of `items`, and whether any follow: backends ask for one entry more
    /// than the page holds (`LIMIT n + 1`) to know.
    pub fn first(items: impl IntoIterator<Item = T>, limit: usize) -> Page<T> {
        let mut items: Vec<T> = items.into_iter().take(limit.saturating_add(1)).collect();
        let more = items.len() > limit;
        items.truncate(limit);
        Page { items, more }
    }

    /// Cuts a sorted list down to the requested page; `key` gives each entry's sort key.
    pub fn from_sorted(items: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> &str) -> Page<T> {
        let start = match &request.after {
            Some(after) => items.partition_point(|item| key(item) <= after.as_str()),
            None => 0,
        };
        Page::first(items.into_iter().skip(start), request.limit)
    }
}

/// Content-addressed bytes, and the staging area where uploads become blobs.
///
/// A blob is only ever visible whole and verified: staged data becomes a blob by
/// [`upload_commit`](BlobStore::upload_commit), which checks the digest first.
///
/// A clone is another handle to the same store (work that outlives a request, such as a
/// pull-through download, holds one).
pub trait BlobStore: Clone + Send + Sync + 'static {
    /// The backend's name in metrics (`backend="filesystem"`).
    fn backend(&self) -> &'static str;

    /// Whether the store can serve and accept data now (the readiness probe).
    fn health(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// The size of a stored blob, or `None`.
    fn stat(&self, digest: &Digest) -> impl Future<Output = StorageResult<Option<u64>>> + Send;

    /// Streams the bytes of `range` of a blob.
    fn read(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> impl Future<Output = StorageResult<ByteStream>> + Send;

    /// Stores small content (a manifest) whole, after checking it hashes to `digest`.
    fn put(&self, digest: &Digest, bytes: Bytes) -> impl Future<Output = StorageResult<()>> + Send;

    /// Removes a blob; `false` if it was not stored.
    fn delete(&self, digest: &Digest) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Creates an empty staging area for an upload.
    fn upload_create(&self, id: &UploadId) -> impl Future<Output = StorageResult<()>> + Send;

    /// Appends a chunk to an upload and returns the upload's new size. The append is all or
    /// nothing: if the body fails or breaks `check`, the upload is left as it was.
    fn upload_append(
        &self,
        id: &UploadId,
        body: ByteStream,
        check: AppendCheck,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// How many bytes an upload holds.
    fn upload_size(&self, id: &UploadId) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Verifies an upload against `digest` and makes it the blob of that digest; returns its
    /// size. On a mismatch nothing is stored and the staged data is kept.
    fn upload_commit(
        &self,
        id: &UploadId,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Discards an upload's staged data.
    fn upload_cancel(&self, id: &UploadId) -> impl Future<Output = StorageResult<()>> + Send;

    /// Every staged upload with the time it last grew, for purging abandoned ones.
    fn staged_uploads(&self) -> impl Future<Output = StorageResult<Vec<(UploadId, SystemTime)>>> + Send;

    /// A page of the stored blobs, ordered by digest (as text), for garbage collection and
    /// fsck. A blob stored or deleted while the listing runs may or may not appear.
    fn blobs(&self, page: &PageRequest) -> impl Future<Output = StorageResult<Page<BlobInfo>>> + Send;

    /// A stored blob's size and last-touched time, or `None`.
    fn blob_info(&self, digest: &Digest) -> impl Future<Output = StorageResult<Option<BlobInfo>>> + Send;

    /// Marks a blob as in use now, so that [`delete_if_idle`](BlobStore::delete_if_idle) with
    /// an earlier cutoff refuses it; `false` if it is not stored. Never creates a blob. A
    /// caller about to refer to a blob touches it first and checks that it exists after.
    fn touch(&self, digest: &Digest) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Deletes a blob unless it was stored or touched at or after `cutoff`; returns the bytes
    /// freed, or `None` if it was kept (or not there). Atomic with respect to
    /// [`touch`](BlobStore::touch) and to storing the blob: either the touch comes first and
    /// the blob stays, or the deletion comes first and a later existence check fails.
    fn delete_if_idle(
        &self,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> impl Future<Output = StorageResult<Option<u64>>> + Send;

    /// A URL the client may fetch a stored blob from directly, instead of through the
    /// registry (distribution's `redirect`): a blob GET then answers 307 and the replica
    /// serves no blob bytes. `None` (the default) serves them.
    fn redirect(&self, digest: &Digest) -> impl Future<Output = StorageResult<Option<String>>> + Send {
        let _ = digest;
        std::future::ready(Ok(None))
    }
}

/// Named state: repository links, manifests, tags, referrers, and upload sessions.
///
/// A clone is another handle to the same store, as for [`BlobStore`].
pub trait MetadataStore: Clone + Send + Sync + 'static {
    /// The backend's name in metrics (`backend="filesystem"`).
    fn backend(&self) -> &'static str;

    /// Whether the store can serve and accept changes now (the readiness probe).
    fn health(&self) -> impl Future<Output = StorageResult<()>> + Send;

    /// Lets `repo` read the blob `digest`.
    fn link_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Whether `repo` may read the blob `digest`.
    fn blob_linked(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Withdraws `repo`'s link to a blob; `false` if there was none.
    fn unlink_blob(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Records a manifest (whose bytes are already in the blob store) and indexes its subject.
    fn put_manifest(
        &self,
        repo: &RepositoryName,
        record: &ManifestRecord,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// A manifest's record, if `repo` holds it.
    fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<Option<ManifestRecord>>> + Send;

    /// Removes a manifest, the tags that point at it and its referrers-index entry, in that
    /// order, so no tag ever points at a missing manifest. `false` if it was not there.
    fn delete_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Points `tag` at a manifest the repository holds.
    fn set_tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// The digest a tag points at.
    fn resolve_tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> impl Future<Output = StorageResult<Option<Digest>>> + Send;

    /// Removes a tag; `false` if there was none.
    fn delete_tag(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// A page of the repository's tags in lexical order; `None` if the repository is unknown.
    fn tags(
        &self,
        repo: &RepositoryName,
        page: &PageRequest,
    ) -> impl Future<Output = StorageResult<Option<Page<Tag>>>> + Send;

    /// A page of the manifests whose subject is `subject`, ordered by digest, keeping only
    /// those of `artifact_type` when one is given.
    fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &PageRequest,
    ) -> impl Future<Output = StorageResult<Page<ManifestRecord>>> + Send;

    /// A page of the repository names, in lexical order.
    fn repositories(
        &self,
        page: &PageRequest,
    ) -> impl Future<Output = StorageResult<Page<RepositoryName>>> + Send;

    /// Records a new upload session.
    fn create_upload(
        &self,
        repo: &RepositoryName,
        session: &UploadSession,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// An upload session of `repo`.
    fn upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> impl Future<Output = StorageResult<Option<UploadSession>>> + Send;

    /// Forgets an upload session.
    fn delete_upload(
        &self,
        repo: &RepositoryName,
        id: &UploadId,
    ) -> impl Future<Output = StorageResult<()>> + Send;

    /// Every upload session, for purging stale ones.
    fn uploads(&self) -> impl Future<Output = StorageResult<Vec<(RepositoryName, UploadSession)>>> + Send;

    /// Every blob link of a repository, for garbage collection.
    fn list_links(&self, repo: &RepositoryName) -> impl Future<Output = StorageResult<Vec<LinkInfo>>> + Send;

    /// Every manifest a repository holds, for garbage collection.
    fn list_manifests(
        &self,
        repo: &RepositoryName,
    ) -> impl Future<Output = StorageResult<Vec<ManifestInfo>>> + Send;

    /// Every tag of a repository with its target, for garbage collection and retention.
    fn list_tags(&self, repo: &RepositoryName) -> impl Future<Output = StorageResult<Vec<TagInfo>>> + Send;

    /// Marks a repository's link to a blob as in use now; `false` if there is none (never
    /// creates one). See [`BlobStore::touch`].
    fn touch_link(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Marks a manifest of a repository as in use now; `false` if the repository does not
    /// hold it. [`put_manifest`](MetadataStore::put_manifest) touches too.
    fn touch_manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Removes a link unless it was made or touched at or after `cutoff`; atomic with respect
    /// to [`touch_link`](MetadataStore::touch_link) and [`link_blob`](MetadataStore::link_blob)
    /// as [`BlobStore::delete_if_idle`] is to its touch.
    fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Removes an untagged manifest (and its referrers-index entry) unless it was pushed or
    /// touched at or after `cutoff`; atomic with respect to
    /// [`touch_manifest`](MetadataStore::touch_manifest) and
    /// [`put_manifest`](MetadataStore::put_manifest). Tags are left alone: a push that tags
    /// the manifest stores it again first, which makes it busy.
    fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Removes a tag if it still points at `digest` and was last set before `cutoff`; a tag
    /// moved or pushed again meanwhile stays. Atomic with respect to
    /// [`set_tag`](MetadataStore::set_tag).
    fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> impl Future<Output = StorageResult<bool>> + Send;
}

#[cfg(test)]
pub(crate) mod tests;
