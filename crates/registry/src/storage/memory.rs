//! [`MemoryBlobStore`] and [`MemoryMetadataStore`]: everything in this process's memory
//! (`driver = "memory"`).
//!
//! For tests and benchmarks: handler and collection tests run without a disk, and a benchmark
//! can measure the registry apart from its storage. Nothing survives the process. A clone is
//! another handle on the same store, so registries built on clones behave as replicas sharing
//! one storage. Each store is one map behind one lock, which makes every call atomic, the
//! `*_if_idle` deletions with respect to the touches included; a request body is read before
//! the lock is taken, so an append is all or nothing.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use rbuild_oci::{Digest, Hasher, RepositoryName, Tag};

use super::{
    AppendCheck, BlobInfo, BlobStore, ByteStream, LinkInfo, ManifestInfo, ManifestRecord, MetadataStore,
    Page, PageRequest, StorageError, StorageResult, TagInfo, UploadId, UploadSession, check_digest,
};

/// The most bytes one item of a read stream holds, as the filesystem store reads them.
const READ_CHUNK: usize = 256 * 1024;

/// Locks a store's state; a panic elsewhere while it was held leaves nothing half-done (every
/// change is one map operation), so a poisoned lock is used as it is.
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The values of a map keyed by their listing text that sort after `page.after`, in order.
fn after<'a, V>(map: &'a BTreeMap<String, V>, page: &PageRequest) -> impl Iterator<Item = &'a V> {
    let start = match &page.after {
        Some(after) => Bound::Excluded(after.as_str()),
        None => Bound::Unbounded,
    };
    map.range::<str, _>((start, Bound::Unbounded))
        .map(|(_, value)| value)
}

/// Blobs and staged uploads in memory.
#[derive(Clone, Default)]
pub struct MemoryBlobStore {
    state: Arc<Mutex<BlobState>>,
}

#[derive(Default)]
struct BlobState {
    /// Blobs by digest text, the order listings promise.
    blobs: BTreeMap<String, StoredBlob>,
    uploads: HashMap<UploadId, StagedUpload>,
}

struct StoredBlob {
    digest: Digest,
    bytes: Bytes,
    touched: SystemTime,
}

impl StoredBlob {
    fn info(&self) -> BlobInfo {
        BlobInfo {
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            touched: self.touched,
        }
    }
}

/// An upload's chunks as they came, so that an append copies nothing and a commit hashes a
/// snapshot without holding the lock.
#[derive(Clone)]
struct StagedUpload {
    chunks: Vec<Bytes>,
    size: u64,
    /// When it was created or last grew.
    touched: SystemTime,
}

impl MemoryBlobStore {
    /// A new, empty store.
    pub fn new() -> MemoryBlobStore {
        MemoryBlobStore::default()
    }

    fn state(&self) -> MutexGuard<'_, BlobState> {
        lock(&self.state)
    }

    /// Stores verified bytes as the blob `digest`, touched now (a blob stored again is new).
    fn install(&self, digest: &Digest, bytes: Bytes) {
        let blob = StoredBlob {
            digest: digest.clone(),
            bytes,
            touched: SystemTime::now(),
        };
        self.state().blobs.insert(digest.to_string(), blob);
    }

    /// Replaces a stored blob's bytes without checking them: how tests break a store.
    #[cfg(test)]
    pub(crate) fn corrupt(&self, digest: &Digest, bytes: Bytes) {
        if let Some(blob) = self.state().blobs.get_mut(&digest.to_string()) {
            blob.bytes = bytes;
        }
    }

    fn staged(&self, id: &UploadId) -> StorageResult<StagedUpload> {
        self.state()
            .uploads
            .get(id)
            .cloned()
            .ok_or(StorageError::UploadUnknown)
    }
}

impl BlobStore for MemoryBlobStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn health(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        Ok(self
            .state()
            .blobs
            .get(&digest.to_string())
            .map(|b| b.bytes.len() as u64))
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StorageResult<ByteStream> {
        let bytes = self
            .state()
            .blobs
            .get(&digest.to_string())
            .map(|b| b.bytes.clone())
            .ok_or(StorageError::BlobUnknown)?;
        let (start, end) = (
            usize::try_from(range.start).unwrap_or(usize::MAX),
            usize::try_from(range.end).unwrap_or(usize::MAX),
        );
        if start > end || end > bytes.len() {
            return Err(StorageError::io(
                format!("reading blob {digest}"),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("range {start}..{end} of {} bytes", bytes.len()),
                ),
            ));
        }
        let rest = bytes.slice(start..end);
        Ok(Box::pin(futures_util::stream::unfold(
            rest,
            |mut rest| async move {
                if rest.is_empty() {
                    return None;
                }
                let chunk = rest.split_to(rest.len().min(READ_CHUNK));
                Some((Ok(chunk), rest))
            },
        )))
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StorageResult<()> {
        check_digest(digest, Digest::of(digest.algorithm(), &bytes))?;
        self.install(digest, bytes);
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<bool> {
        Ok(self.state().blobs.remove(&digest.to_string()).is_some())
    }

    async fn upload_create(&self, id: &UploadId) -> StorageResult<()> {
        let staged = StagedUpload {
            chunks: Vec::new(),
            size: 0,
            touched: SystemTime::now(),
        };
        match self.state().uploads.insert(id.clone(), staged) {
            None => Ok(()),
            Some(_) => Err(StorageError::io(
                format!("creating upload {id}"),
                io::ErrorKind::AlreadyExists.into(),
            )),
        }
    }

    async fn upload_append(
        &self,
        id: &UploadId,
        mut body: ByteStream,
        check: AppendCheck,
    ) -> StorageResult<u64> {
        let start = self.staged(id)?.size;
        let offset_mismatch = |current: u64| {
            check
                .offset
                .filter(|&requested| requested != current)
                .map(|requested| StorageError::OffsetMismatch { requested, current })
        };
        if let Some(mismatch) = offset_mismatch(start) {
            return Err(mismatch);
        }
        let mut chunks = Vec::new();
        let mut received = 0u64;
        while let Some(item) = body.next().await {
            let chunk = item.map_err(StorageError::Body)?;
            received += chunk.len() as u64;
            if check.length.is_some_and(|limit| received > limit) {
                break;
            }
            chunks.push(chunk);
        }
        if let Some(expected) = check.length.filter(|&expected| expected != received) {
            return Err(StorageError::SizeMismatch { expected, received });
        }
        let mut state = self.state();
        let staged = state.uploads.get_mut(id).ok_or(StorageError::UploadUnknown)?;
        // Another append may have landed while this body arrived: the offset is checked again
        // against where the upload ends now.
        if let Some(mismatch) = offset_mismatch(staged.size) {
            return Err(mismatch);
        }
        staged.chunks.extend(chunks);
        staged.size += received;
        staged.touched = SystemTime::now();
        Ok(staged.size)
    }

    async fn upload_size(&self, id: &UploadId) -> StorageResult<u64> {
        Ok(self.staged(id)?.size)
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> StorageResult<u64> {
        let snapshot = self.staged(id)?;
        let mut hasher = Hasher::new(digest.algorithm());
        for chunk in &snapshot.chunks {
            hasher.update(chunk);
        }
        check_digest(digest, hasher.finalize())?;
        {
            let mut state = self.state();
            match state.uploads.get(id) {
                Some(staged) if staged.size == snapshot.size => {
                    state.uploads.remove(id);
                }
                Some(staged) => {
                    return Err(StorageError::OffsetMismatch {
                        requested: snapshot.size,
                        current: staged.size,
                    });
                }
                None => return Err(StorageError::UploadUnknown),
            }
        }
        let mut bytes = BytesMut::with_capacity(usize::try_from(snapshot.size).unwrap_or(0));
        for chunk in &snapshot.chunks {
            bytes.extend_from_slice(chunk);
        }
        self.install(digest, bytes.freeze());
        Ok(snapshot.size)
    }

    async fn upload_cancel(&self, id: &UploadId) -> StorageResult<()> {
        self.state().uploads.remove(id);
        Ok(())
    }

    async fn staged_uploads(&self) -> StorageResult<Vec<(UploadId, SystemTime)>> {
        Ok(self
            .state()
            .uploads
            .iter()
            .map(|(id, staged)| (id.clone(), staged.touched))
            .collect())
    }

    async fn blobs(&self, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
        Ok(Page::first(
            after(&self.state().blobs, page).map(StoredBlob::info),
            page.limit,
        ))
    }

    async fn blob_info(&self, digest: &Digest) -> StorageResult<Option<BlobInfo>> {
        Ok(self.state().blobs.get(&digest.to_string()).map(StoredBlob::info))
    }

    async fn touch(&self, digest: &Digest) -> StorageResult<bool> {
        Ok(match self.state().blobs.get_mut(&digest.to_string()) {
            Some(blob) => {
                blob.touched = SystemTime::now();
                true
            }
            None => false,
        })
    }

    async fn delete_if_idle(&self, digest: &Digest, cutoff: SystemTime) -> StorageResult<Option<u64>> {
        let mut state = self.state();
        let key = digest.to_string();
        if state.blobs.get(&key).is_none_or(|blob| blob.touched >= cutoff) {
            return Ok(None);
        }
        Ok(state.blobs.remove(&key).map(|blob| blob.bytes.len() as u64))
    }
}

/// Repository metadata in memory.
#[derive(Clone, Default)]
pub struct MemoryMetadataStore {
    state: Arc<Mutex<MetadataState>>,
}

#[derive(Default)]
struct MetadataState {
    /// Repositories by name: one exists once anything (an upload session included) was
    /// recorded in it, as a directory does in the filesystem store.
    repositories: BTreeMap<String, Repository>,
}

struct Repository {
    name: RepositoryName,
    links: HashMap<Digest, SystemTime>,
    manifests: HashMap<Digest, (ManifestRecord, SystemTime)>,
    /// Tags by name, the order listings promise.
    tags: BTreeMap<String, TagInfo>,
    uploads: HashMap<UploadId, UploadSession>,
}

impl Repository {
    /// Whether the catalog lists it: it holds a link, a manifest or a tag.
    fn listed(&self) -> bool {
        !(self.links.is_empty() && self.manifests.is_empty() && self.tags.is_empty())
    }
}

impl MemoryMetadataStore {
    /// A new, empty store.
    pub fn new() -> MemoryMetadataStore {
        MemoryMetadataStore::default()
    }

    /// Runs `f` on a repository, if it exists.
    fn read<T>(&self, repo: &RepositoryName, f: impl FnOnce(&Repository) -> T) -> Option<T> {
        lock(&self.state).repositories.get(repo.as_str()).map(f)
    }

    /// What `f` lists of a repository; nothing if it does not exist.
    fn list<T>(&self, repo: &RepositoryName, f: impl FnOnce(&Repository) -> Vec<T>) -> Vec<T> {
        self.read(repo, f).unwrap_or_default()
    }

    /// Runs `f` on a repository, if it exists, and lets it change it.
    fn change<T>(&self, repo: &RepositoryName, f: impl FnOnce(&mut Repository) -> T) -> Option<T> {
        lock(&self.state).repositories.get_mut(repo.as_str()).map(f)
    }

    /// Runs `f` on a repository, creating it if needed.
    fn write<T>(&self, repo: &RepositoryName, f: impl FnOnce(&mut Repository) -> T) -> T {
        let mut state = lock(&self.state);
        let entry = state
            .repositories
            .entry(repo.as_str().to_owned())
            .or_insert_with(|| Repository {
                name: repo.clone(),
                links: HashMap::new(),
                manifests: HashMap::new(),
                tags: BTreeMap::new(),
                uploads: HashMap::new(),
            });
        f(entry)
    }
}

/// Moves an entry's touched time to now; `false` if there is no entry (a touch never creates
/// one).
fn touch(touched: Option<&mut SystemTime>) -> bool {
    touched.map(|t| *t = SystemTime::now()).is_some()
}

impl MetadataStore for MemoryMetadataStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn health(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<()> {
        self.write(repo, |r| r.links.insert(digest.clone(), SystemTime::now()));
        Ok(())
    }

    async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        Ok(self.read(repo, |r| r.links.contains_key(digest)).unwrap_or(false))
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| r.links.remove(digest).is_some())
            .unwrap_or(false))
    }

    async fn put_manifest(&self, repo: &RepositoryName, record: &ManifestRecord) -> StorageResult<()> {
        self.write(repo, |r| {
            r.manifests
                .insert(record.digest.clone(), (record.clone(), SystemTime::now()))
        });
        Ok(())
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        Ok(self
            .read(repo, |r| {
                r.manifests.get(digest).map(|(record, _)| record.clone())
            })
            .flatten())
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| {
                r.tags.retain(|_, tag| &tag.digest != digest);
                r.manifests.remove(digest).is_some()
            })
            .unwrap_or(false))
    }

    async fn set_tag(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        let info = TagInfo {
            tag: tag.clone(),
            digest: digest.clone(),
            touched: SystemTime::now(),
        };
        self.write(repo, |r| r.tags.insert(tag.as_str().to_owned(), info));
        Ok(())
    }

    async fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<Option<Digest>> {
        Ok(self
            .read(repo, |r| r.tags.get(tag.as_str()).map(|t| t.digest.clone()))
            .flatten())
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| r.tags.remove(tag.as_str()).is_some())
            .unwrap_or(false))
    }

    async fn tags(&self, repo: &RepositoryName, page: &PageRequest) -> StorageResult<Option<Page<Tag>>> {
        Ok(self.read(repo, |r| {
            Page::first(after(&r.tags, page).map(|t| t.tag.clone()), page.limit)
        }))
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &PageRequest,
    ) -> StorageResult<Page<ManifestRecord>> {
        let referrers: BTreeMap<String, ManifestRecord> = self
            .read(repo, |r| {
                r.manifests
                    .values()
                    .map(|(record, _)| record)
                    .filter(|record| record.subject.as_ref() == Some(subject))
                    .filter(|record| {
                        artifact_type.is_none() || record.artifact_type.as_deref() == artifact_type
                    })
                    .map(|record| (record.digest.to_string(), record.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Page::first(after(&referrers, page).cloned(), page.limit))
    }

    async fn repositories(&self, page: &PageRequest) -> StorageResult<Page<RepositoryName>> {
        let state = lock(&self.state);
        let listed = after(&state.repositories, page).filter(|r| r.listed());
        Ok(Page::first(listed.map(|r| r.name.clone()), page.limit))
    }

    async fn create_upload(&self, repo: &RepositoryName, session: &UploadSession) -> StorageResult<()> {
        self.write(repo, |r| r.uploads.insert(session.id.clone(), session.clone()));
        Ok(())
    }

    async fn upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<Option<UploadSession>> {
        Ok(self.read(repo, |r| r.uploads.get(id).cloned()).flatten())
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<()> {
        self.change(repo, |r| r.uploads.remove(id));
        Ok(())
    }

    async fn uploads(&self) -> StorageResult<Vec<(RepositoryName, UploadSession)>> {
        let state = lock(&self.state);
        Ok(state
            .repositories
            .values()
            .flat_map(|r| r.uploads.values().map(|s| (r.name.clone(), s.clone())))
            .collect())
    }

    async fn list_links(&self, repo: &RepositoryName) -> StorageResult<Vec<LinkInfo>> {
        Ok(self.list(repo, |r| {
            let links = r.links.iter();
            links
                .map(|(digest, &touched)| LinkInfo {
                    digest: digest.clone(),
                    touched,
                })
                .collect()
        }))
    }

    async fn list_manifests(&self, repo: &RepositoryName) -> StorageResult<Vec<ManifestInfo>> {
        Ok(self.list(repo, |r| {
            let manifests = r.manifests.values();
            manifests
                .map(|(record, touched)| ManifestInfo {
                    record: record.clone(),
                    touched: *touched,
                })
                .collect()
        }))
    }

    async fn list_tags(&self, repo: &RepositoryName) -> StorageResult<Vec<TagInfo>> {
        Ok(self.list(repo, |r| r.tags.values().cloned().collect()))
    }

    async fn touch_link(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| touch(r.links.get_mut(digest)))
            .unwrap_or(false))
    }

    async fn touch_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| touch(r.manifests.get_mut(digest).map(|(_, t)| t)))
            .unwrap_or(false))
    }

    async fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| {
                let idle = r.links.get(digest).is_some_and(|&touched| touched < cutoff);
                idle && r.links.remove(digest).is_some()
            })
            .unwrap_or(false))
    }

    async fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| {
                let idle = r
                    .manifests
                    .get(digest)
                    .is_some_and(|(_, touched)| *touched < cutoff);
                idle && r.manifests.remove(digest).is_some()
            })
            .unwrap_or(false))
    }

    async fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        Ok(self
            .change(repo, |r| {
                let idle = r
                    .tags
                    .get(tag.as_str())
                    .is_some_and(|t| &t.digest == digest && t.touched < cutoff);
                idle && r.tags.remove(tag.as_str()).is_some()
            })
            .unwrap_or(false))
    }
}
