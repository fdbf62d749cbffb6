//! The storage families, and [`Metered`]: the one place they are filled, a wrapper that
//! counts and times every call the registry makes on either store.

use std::future::Future;
use std::ops::Range;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rbuild_oci::{Digest, RepositoryName, Tag};

use super::http::latency_histogram;
use crate::storage::{
    AppendCheck, BlobInfo, BlobStore, ByteStream, LinkInfo, ManifestInfo, ManifestRecord, MetadataStore,
    Page, PageRequest, StorageError, StorageResult, TagInfo, UploadId, UploadSession,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    backend: &'static str,
    store: &'static str,
    operation: &'static str,
}

/// Storage calls, their failures and their latency, by backend, store and operation.
#[derive(Clone)]
pub struct StorageMetrics {
    operations: Family<OperationLabels, Counter>,
    errors: Family<OperationLabels, Counter>,
    duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl Default for StorageMetrics {
    fn default() -> StorageMetrics {
        StorageMetrics {
            operations: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl StorageMetrics {
    /// Adds the families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "storage_operations",
            "Calls on the blob and metadata stores, by backend, store and operation",
            self.operations.clone(),
        );
        registry.register(
            "storage_errors",
            "Storage calls that failed in the backend (I/O), by backend, store and operation",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Time a storage call took (for reads: until the stream is open)",
            Unit::Seconds,
            self.duration.clone(),
        );
    }
}

/// A store whose every call is counted, timed and, if the backend fails, counted as an error.
/// Answers about content (unknown blob, digest mismatch, a client's body ending early) are
/// not errors of the backend and are not counted as such. A clone counts into the same
/// families.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: StorageMetrics,
}

impl<S> Metered<S> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: S, metrics: &StorageMetrics) -> Metered<S> {
        Metered {
            inner,
            metrics: metrics.clone(),
        }
    }

    /// Runs one call of `store` and records it.
    async fn observe<T>(
        &self,
        (backend, store): (&'static str, &'static str),
        operation: &'static str,
        call: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let labels = OperationLabels {
            backend,
            store,
            operation,
        };
        let started = Instant::now();
        let result = call.await;
        let m = &self.metrics;
        m.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        m.operations.get_or_create(&labels).inc();
        if let Err(StorageError::Io { .. } | StorageError::Unavailable { .. }) = &result {
            m.errors.get_or_create(&labels).inc();
        }
        result
    }
}

impl<S: BlobStore> Metered<S> {
    /// The `backend` and `store` labels of a blob store's calls.
    fn blob_labels(&self) -> (&'static str, &'static str) {
        (self.inner.backend(), "blobs")
    }
}

impl<S: MetadataStore> Metered<S> {
    /// The `backend` and `store` labels of a metadata store's calls.
    fn metadata_labels(&self) -> (&'static str, &'static str) {
        (self.inner.backend(), "metadata")
    }
}

impl<S: BlobStore> BlobStore for Metered<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn health(&self) -> StorageResult<()> {
        self.observe(self.blob_labels(), "health", self.inner.health())
            .await
    }

    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        self.observe(self.blob_labels(), "stat", self.inner.stat(digest))
            .await
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StorageResult<ByteStream> {
        self.observe(self.blob_labels(), "read", self.inner.read(digest, range))
            .await
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StorageResult<()> {
        self.observe(self.blob_labels(), "put", self.inner.put(digest, bytes))
            .await
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<bool> {
        self.observe(self.blob_labels(), "delete", self.inner.delete(digest))
            .await
    }

    async fn upload_create(&self, id: &UploadId) -> StorageResult<()> {
        self.observe(self.blob_labels(), "upload_create", self.inner.upload_create(id))
            .await
    }

    async fn upload_append(&self, id: &UploadId, body: ByteStream, check: AppendCheck) -> StorageResult<u64> {
        self.observe(
            self.blob_labels(),
            "upload_append",
            self.inner.upload_append(id, body, check),
        )
        .await
    }

    async fn upload_size(&self, id: &UploadId) -> StorageResult<u64> {
        self.observe(self.blob_labels(), "upload_size", self.inner.upload_size(id))
            .await
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> StorageResult<u64> {
        self.observe(
            self.blob_labels(),
            "upload_commit",
            self.inner.upload_commit(id, digest),
        )
        .await
    }

    async fn upload_cancel(&self, id: &UploadId) -> StorageResult<()> {
        self.observe(self.blob_labels(), "upload_cancel", self.inner.upload_cancel(id))
            .await
    }

    async fn staged_uploads(&self) -> StorageResult<Vec<(UploadId, SystemTime)>> {
        self.observe(self.blob_labels(), "staged_uploads", self.inner.staged_uploads())
            .await
    }

    async fn blobs(&self, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
        self.observe(self.blob_labels(), "blobs", self.inner.blobs(page))
            .await
    }

    async fn blob_info(&self, digest: &Digest) -> StorageResult<Option<BlobInfo>> {
        self.observe(self.blob_labels(), "blob_info", self.inner.blob_info(digest))
            .await
    }

    async fn touch(&self, digest: &Digest) -> StorageResult<bool> {
        self.observe(self.blob_labels(), "touch", self.inner.touch(digest))
            .await
    }

    async fn delete_if_idle(&self, digest: &Digest, cutoff: SystemTime) -> StorageResult<Option<u64>> {
        self.observe(
            self.blob_labels(),
            "delete_if_idle",
            self.inner.delete_if_idle(digest, cutoff),
        )
        .await
    }

    async fn redirect(&self, digest: &Digest) -> StorageResult<Option<String>> {
        self.observe(self.blob_labels(), "redirect", self.inner.redirect(digest))
            .await
    }
}

impl<S: MetadataStore> MetadataStore for Metered<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn health(&self) -> StorageResult<()> {
        self.observe(self.metadata_labels(), "health", self.inner.health())
            .await
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<()> {
        self.observe(
            self.metadata_labels(),
            "link_blob",
            self.inner.link_blob(repo, digest),
        )
        .await
    }

    async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        self.observe(
            self.metadata_labels(),
            "blob_linked",
            self.inner.blob_linked(repo, digest),
        )
        .await
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        self.observe(
            self.metadata_labels(),
            "unlink_blob",
            self.inner.unlink_blob(repo, digest),
        )
        .await
    }

    async fn put_manifest(&self, repo: &RepositoryName, record: &ManifestRecord) -> StorageResult<()> {
        self.observe(
            self.metadata_labels(),
            "put_manifest",
            self.inner.put_manifest(repo, record),
        )
        .await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        self.observe(
            self.metadata_labels(),
            "manifest",
            self.inner.manifest(repo, digest),
        )
        .await
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        self.observe(
            self.metadata_labels(),
            "delete_manifest",
            self.inner.delete_manifest(repo, digest),
        )
        .await
    }

    async fn set_tag(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        self.observe(
            self.metadata_labels(),
            "set_tag",
            self.inner.set_tag(repo, tag, digest),
        )
        .await
    }

    async fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<Option<Digest>> {
        self.observe(
            self.metadata_labels(),
            "resolve_tag",
            self.inner.resolve_tag(repo, tag),
        )
        .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        self.observe(
            self.metadata_labels(),
            "delete_tag",
            self.inner.delete_tag(repo, tag),
        )
        .await
    }

    async fn tags(&self, repo: &RepositoryName, page: &PageRequest) -> StorageResult<Option<Page<Tag>>> {
        self.observe(self.metadata_labels(), "tags", self.inner.tags(repo, page))
            .await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &PageRequest,
    ) -> StorageResult<Page<ManifestRecord>> {
        let call = self.inner.referrers(repo, subject, artifact_type, page);
        self.observe(self.metadata_labels(), "referrers", call).await
    }

    async fn repositories(&self, page: &PageRequest) -> StorageResult<Page<RepositoryName>> {
        self.observe(
            self.metadata_labels(),
            "repositories",
            self.inner.repositories(page),
        )
        .await
    }

    async fn create_upload(&self, repo: &RepositoryName, session: &UploadSession) -> StorageResult<()> {
        self.observe(
            self.metadata_labels(),
            "create_upload",
            self.inner.create_upload(repo, session),
        )
        .await
    }

    async fn upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<Option<UploadSession>> {
        self.observe(self.metadata_labels(), "upload", self.inner.upload(repo, id))
            .await
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<()> {
        self.observe(
            self.metadata_labels(),
            "delete_upload",
            self.inner.delete_upload(repo, id),
        )
        .await
    }

    async fn uploads(&self) -> StorageResult<Vec<(RepositoryName, UploadSession)>> {
        self.observe(self.metadata_labels(), "uploads", self.inner.uploads())
            .await
    }

    async fn list_links(&self, repo: &RepositoryName) -> StorageResult<Vec<LinkInfo>> {
        self.observe(self.metadata_labels(), "list_links", self.inner.list_links(repo))
            .await
    }

    async fn list_manifests(&self, repo: &RepositoryName) -> StorageResult<Vec<ManifestInfo>> {
        self.observe(
            self.metadata_labels(),
            "list_manifests",
            self.inner.list_manifests(repo),
        )
        .await
    }

    async fn list_tags(&self, repo: &RepositoryName) -> StorageResult<Vec<TagInfo>> {
        self.observe(self.metadata_labels(), "list_tags", self.inner.list_tags(repo))
            .await
    }

    async fn touch_link(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        self.observe(
            self.metadata_labels(),
            "touch_link",
            self.inner.touch_link(repo, digest),
        )
        .await
    }

    async fn touch_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let call = self.inner.touch_manifest(repo, digest);
        self.observe(self.metadata_labels(), "touch_manifest", call).await
    }

    async fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let call = self.inner.unlink_blob_if_idle(repo, digest, cutoff);
        self.observe(self.metadata_labels(), "unlink_blob_if_idle", call)
            .await
    }

    async fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let call = self.inner.delete_manifest_if_idle(repo, digest, cutoff);
        self.observe(self.metadata_labels(), "delete_manifest_if_idle", call)
            .await
    }

    async fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let call = self.inner.delete_tag_if_idle(repo, tag, digest, cutoff);
        self.observe(self.metadata_labels(), "delete_tag_if_idle", call)
            .await
    }
}
