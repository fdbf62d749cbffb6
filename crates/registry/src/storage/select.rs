//! The one place that names a backend: the stores a configuration asks for, opened at
//! start-up, behind one type per trait so the rest of the registry is built once.
//!
//! [`Blobs`] and [`Metadata`] hold whichever backend `[storage] driver` and
//! `[metadata] driver` name and pass every call to it. An enum rather than a generic
//! parameter chosen at start-up keeps one copy of the handlers in the binary whatever the
//! deployment, and a new backend is a variant here and a line in each dispatch macro.

use std::ops::Range;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use rbuild_oci::{Digest, RepositoryName, Tag};

use super::fs::{FsBlobStore, FsMetadataStore};
use super::postgres::{Migrated, PgMetadataStore, PostgresError};
use super::s3::S3BlobStore;
use super::{
    AppendCheck, BlobInfo, BlobStore, ByteStream, LinkInfo, ManifestInfo, ManifestRecord, MetadataStore,
    Page, PageRequest, StorageResult, TagInfo, UploadId, UploadSession,
};
use crate::config::{BlobDriver, Config, MetadataDriver};

/// Why the configured stores could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The filesystem root is not usable.
    #[error("opening the storage root {root}: {source}")]
    Filesystem {
        /// The root.
        root: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The PostgreSQL metadata store could not be opened.
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// `[storage.s3]` is missing or unusable.
    #[error("[storage.s3]: {0}")]
    S3(String),
}

/// The blob store the configuration names.
#[derive(Clone)]
pub enum Blobs {
    /// Files under the storage root.
    Filesystem(FsBlobStore),
    /// An S3-compatible bucket.
    S3(S3BlobStore),
}

/// The metadata store the configuration names.
#[derive(Clone)]
pub enum Metadata {
    /// Files under the storage root.
    Filesystem(FsMetadataStore),
    /// Tables in a PostgreSQL database.
    Postgres(PgMetadataStore),
}

/// Opens the stores `config` names; `root` is where the filesystem ones keep their files.
pub async fn open(config: &Config, root: &Path) -> Result<(Blobs, Metadata), SelectError> {
    let fsync = config.storage.fsync;
    let filesystem = |source| SelectError::Filesystem {
        root: root.to_owned(),
        source,
    };
    let blobs = match config.storage.driver {
        BlobDriver::Filesystem => Blobs::Filesystem(FsBlobStore::open(root, fsync).map_err(filesystem)?),
        BlobDriver::S3 => {
            let s3 = config
                .storage
                .s3
                .as_ref()
                .ok_or_else(|| SelectError::S3("missing".to_owned()))?;
            Blobs::S3(S3BlobStore::open(s3).map_err(SelectError::S3)?)
        }
    };
    let metadata = match config.metadata.driver {
        MetadataDriver::Filesystem => {
            Metadata::Filesystem(FsMetadataStore::open(root, fsync).map_err(filesystem)?)
        }
        MetadataDriver::Postgres => {
            Metadata::Postgres(PgMetadataStore::open(&config.metadata.postgres).await?)
        }
    };
    Ok((blobs, metadata))
}

/// Brings the configured metadata store's schema up to date (`rbuild registry migrate`);
/// `None` when the backend has no schema to migrate.
pub async fn migrate(config: &Config) -> Result<Option<Migrated>, SelectError> {
    match config.metadata.driver {
        MetadataDriver::Filesystem => Ok(None),
        MetadataDriver::Postgres => {
            let store = PgMetadataStore::connect(&config.metadata.postgres)?;
            let migrated = store.migrate().await.map_err(PostgresError::Migrate)?;
            Ok(Some(migrated))
        }
    }
}

/// Runs `$call` on the backend inside a [`Blobs`], bound to `$store`.
macro_rules! blobs {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            Blobs::Filesystem($store) => $call,
            Blobs::S3($store) => $call,
        }
    };
}

/// Runs `$call` on the backend inside a [`Metadata`], bound to `$store`.
macro_rules! metadata {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            Metadata::Filesystem($store) => $call,
            Metadata::Postgres($store) => $call,
        }
    };
}

impl BlobStore for Blobs {
    fn backend(&self) -> &'static str {
        blobs!(self, s => s.backend())
    }

    async fn health(&self) -> StorageResult<()> {
        blobs!(self, s => s.health().await)
    }

    async fn stat(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        blobs!(self, s => s.stat(digest).await)
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StorageResult<ByteStream> {
        blobs!(self, s => s.read(digest, range).await)
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> StorageResult<()> {
        blobs!(self, s => s.put(digest, bytes).await)
    }

    async fn delete(&self, digest: &Digest) -> StorageResult<bool> {
        blobs!(self, s => s.delete(digest).await)
    }

    async fn upload_create(&self, id: &UploadId) -> StorageResult<()> {
        blobs!(self, s => s.upload_create(id).await)
    }

    async fn upload_append(&self, id: &UploadId, body: ByteStream, check: AppendCheck) -> StorageResult<u64> {
        blobs!(self, s => s.upload_append(id, body, check).await)
    }

    async fn upload_size(&self, id: &UploadId) -> StorageResult<u64> {
        blobs!(self, s => s.upload_size(id).await)
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> StorageResult<u64> {
        blobs!(self, s => s.upload_commit(id, digest).await)
    }

    async fn upload_cancel(&self, id: &UploadId) -> StorageResult<()> {
        blobs!(self, s => s.upload_cancel(id).await)
    }

    async fn staged_uploads(&self) -> StorageResult<Vec<(UploadId, SystemTime)>> {
        blobs!(self, s => s.staged_uploads().await)
    }

    async fn blobs(&self, page: &PageRequest) -> StorageResult<Page<BlobInfo>> {
        blobs!(self, s => s.blobs(page).await)
    }

    async fn blob_info(&self, digest: &Digest) -> StorageResult<Option<BlobInfo>> {
        blobs!(self, s => s.blob_info(digest).await)
    }

    async fn touch(&self, digest: &Digest) -> StorageResult<bool> {
        blobs!(self, s => s.touch(digest).await)
    }

    async fn delete_if_idle(&self, digest: &Digest, cutoff: SystemTime) -> StorageResult<Option<u64>> {
        blobs!(self, s => s.delete_if_idle(digest, cutoff).await)
    }

    async fn redirect(&self, digest: &Digest) -> StorageResult<Option<String>> {
        blobs!(self, s => s.redirect(digest).await)
    }
}

impl MetadataStore for Metadata {
    fn backend(&self) -> &'static str {
        metadata!(self, s => s.backend())
    }

    async fn health(&self) -> StorageResult<()> {
        metadata!(self, s => s.health().await)
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<()> {
        metadata!(self, s => s.link_blob(repo, digest).await)
    }

    async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        metadata!(self, s => s.blob_linked(repo, digest).await)
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        metadata!(self, s => s.unlink_blob(repo, digest).await)
    }

    async fn put_manifest(&self, repo: &RepositoryName, record: &ManifestRecord) -> StorageResult<()> {
        metadata!(self, s => s.put_manifest(repo, record).await)
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        metadata!(self, s => s.manifest(repo, digest).await)
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        metadata!(self, s => s.delete_manifest(repo, digest).await)
    }

    async fn set_tag(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        metadata!(self, s => s.set_tag(repo, tag, digest).await)
    }

    async fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<Option<Digest>> {
        metadata!(self, s => s.resolve_tag(repo, tag).await)
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        metadata!(self, s => s.delete_tag(repo, tag).await)
    }

    async fn tags(&self, repo: &RepositoryName, page: &PageRequest) -> StorageResult<Option<Page<Tag>>> {
        metadata!(self, s => s.tags(repo, page).await)
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &PageRequest,
    ) -> StorageResult<Page<ManifestRecord>> {
        metadata!(self, s => s.referrers(repo, subject, artifact_type, page).await)
    }

    async fn repositories(&self, page: &PageRequest) -> StorageResult<Page<RepositoryName>> {
        metadata!(self, s => s.repositories(page).await)
    }

    async fn create_upload(&self, repo: &RepositoryName, session: &UploadSession) -> StorageResult<()> {
        metadata!(self, s => s.create_upload(repo, session).await)
    }

    async fn upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<Option<UploadSession>> {
        metadata!(self, s => s.upload(repo, id).await)
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<()> {
        metadata!(self, s => s.delete_upload(repo, id).await)
    }

    async fn uploads(&self) -> StorageResult<Vec<(RepositoryName, UploadSession)>> {
        metadata!(self, s => s.uploads().await)
    }

    async fn list_links(&self, repo: &RepositoryName) -> StorageResult<Vec<LinkInfo>> {
        metadata!(self, s => s.list_links(repo).await)
    }

    async fn list_manifests(&self, repo: &RepositoryName) -> StorageResult<Vec<ManifestInfo>> {
        metadata!(self, s => s.list_manifests(repo).await)
    }

    async fn list_tags(&self, repo: &RepositoryName) -> StorageResult<Vec<TagInfo>> {
        metadata!(self, s => s.list_tags(repo).await)
    }

    async fn touch_link(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        metadata!(self, s => s.touch_link(repo, digest).await)
    }

    async fn touch_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        metadata!(self, s => s.touch_manifest(repo, digest).await)
    }

    async fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        metadata!(self, s => s.unlink_blob_if_idle(repo, digest, cutoff).await)
    }

    async fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        metadata!(self, s => s.delete_manifest_if_idle(repo, digest, cutoff).await)
    }

    async fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        metadata!(self, s => s.delete_tag_if_idle(repo, tag, digest, cutoff).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    /// The dispatch passes every call through: the default configuration's stores pass the
    /// suite as the filesystem ones do.
    #[tokio::test]
    async fn the_default_stores_pass_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let (blobs, metadata) = open(&Config::default(), dir.path()).await.unwrap();
        assert_eq!(blobs.backend(), "filesystem");
        assert_eq!(metadata.backend(), "filesystem");
        conformance::blob_store(&blobs).await;
        conformance::metadata_store(&metadata).await;
    }
}
