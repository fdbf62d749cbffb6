//! `rbuild registry fsck` on any backend: the content of the two stores checked through their
//! traits, so it runs the same on the filesystem, in memory, on S3 or PostgreSQL.
//!
//! Every blob is re-hashed from a streaming read (several at once). Every link must name a
//! stored blob; every manifest must be found under its digest, have its bytes stored, parse,
//! and name only blobs its repository links and the store holds, at the sizes it says; every
//! tag must point at a manifest its repository holds. Upload sessions and staged data are
//! matched up.
//!
//! The check runs beside a live registry, garbage collection included: what it lists may be
//! deleted before it is looked at. A finding about a link, manifest or tag is reported only if
//! that link, manifest or tag is still there once the finding is made (a collection removes a
//! manifest before the links and blobs it names, so a manifest still held cannot have lost them
//! to one).
//!
//! Findings come in two kinds. Errors mean data is wrong or unreachable (a blob whose bytes do
//! not match its digest, a tag pointing at a missing manifest); the crash, fault and garbage
//! collection tests require none. Warnings are leftovers a crash may legitimately leave and the
//! purge removes (staged data without a session). A filesystem store adds what only its files
//! show ([`super::fs::fsck`]); [`fsck`] runs both for the configured stores.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use rbuild_oci::{Digest, Hasher, ManifestSummary, RepositoryName};
use tokio::task::JoinSet;

use super::select::{self, SelectError};
use super::{
    BlobInfo, BlobStore, ByteStream, ManifestRecord, MetadataStore, Pages, StorageError, StorageResult,
    TagInfo,
};
use crate::Config;

/// How many entries one listing call asks for.
const PAGE: usize = 1000;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Data is wrong or unreachable.
    Error,
    /// A harmless leftover.
    Warning,
}

/// One thing fsck found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// What it concerns: `blob <digest>`, `<repo>@<digest>`, `<repo>:<tag>`, or a file.
    pub subject: String,
    /// What is wrong.
    pub message: String,
}

impl Finding {
    /// An error about `subject`.
    pub fn error(subject: impl fmt::Display, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            subject: subject.to_string(),
            message: message.into(),
        }
    }

    /// A warning about `subject`.
    pub fn warning(subject: impl fmt::Display, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            subject: subject.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.subject, self.message)
    }
}

/// What fsck checked and found.
#[derive(Debug, Default)]
pub struct Report {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Repositories walked.
    pub repositories: usize,
    /// Blob links checked.
    pub links: usize,
    /// Manifests checked.
    pub manifests: usize,
    /// Tags checked.
    pub tags: usize,
    /// Staged uploads seen.
    pub uploads: usize,
    /// What is wrong.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn error(&mut self, subject: impl fmt::Display, message: impl Into<String>) {
        self.findings.push(Finding::error(subject, message));
    }

    fn warning(&mut self, subject: impl fmt::Display, message: impl Into<String>) {
        self.findings.push(Finding::warning(subject, message));
    }
}

impl fmt::Display for Report {
    /// The summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} blobs ({} bytes), {} repositories, {} links, {} manifests, {} tags, {} uploads: {}",
            self.blobs,
            self.bytes,
            self.repositories,
            self.links,
            self.manifests,
            self.tags,
            self.uploads,
            if self.has_errors() { "ERRORS FOUND" } else { "ok" }
        )
    }
}

/// Why fsck could not run (what it finds wrong is in its [`Report`] instead).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// The configured stores could not be opened.
    #[error(transparent)]
    Open(#[from] SelectError),
    /// A store failed in a way that stops the check (unreachable, or a listing failed).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks the stores `config` names (`root` holds the filesystem ones): [`check`], and what
/// only the files of a filesystem store show.
pub async fn fsck(config: &Config, root: &Path) -> Result<Report, FsckError> {
    let (blobs, metadata) = select::open(config, root).await?;
    let stale_after = Duration::from_secs(config.uploads.purge_after_secs);
    let mut report = check(&blobs, &metadata, stale_after).await?;
    report.findings.extend(select::file_findings(config, root).await?);
    Ok(report)
}

/// Checks the content of `blobs` and `metadata` against each other; uploads idle for longer
/// than `stale_after` (`[uploads] purge_after_secs`) are reported as stale.
pub async fn check<B: BlobStore, M: MetadataStore>(
    blobs: &B,
    metadata: &M,
    stale_after: Duration,
) -> StorageResult<Report> {
    let mut report = Report::default();
    let stored = rehash_blobs(blobs, &mut report).await?;
    let mut pages = Pages::new(PAGE);
    while let Some(request) = pages.next() {
        let repositories = metadata.repositories(request).await?;
        pages.advance(&repositories, RepositoryName::to_string);
        for repo in &repositories.items {
            report.repositories += 1;
            let mut check = RepositoryCheck {
                blobs,
                metadata,
                repo,
                stored: &stored,
                report: &mut report,
            };
            check.run().await?;
        }
    }
    check_uploads(blobs, metadata, stale_after, &mut report).await?;
    Ok(report)
}

/// Re-hashes every listed blob, as many at once as there are cores; returns the sizes of the
/// blobs listed.
async fn rehash_blobs<B: BlobStore>(blobs: &B, report: &mut Report) -> StorageResult<HashMap<Digest, u64>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut stored = HashMap::new();
    let mut hashing = JoinSet::new();
    let mut pages = Pages::new(PAGE);
    while let Some(request) = pages.next() {
        let listed = blobs.blobs(request).await?;
        pages.advance(&listed, |b| b.digest.to_string());
        for info in listed.items {
            stored.insert(info.digest.clone(), info.size);
            if hashing.len() >= workers {
                record_rehash(hashing.join_next().await, &mut stored, report)?;
            }
            let blobs = blobs.clone();
            hashing.spawn(async move {
                let outcome = rehash(&blobs, &info).await;
                (info, outcome)
            });
        }
    }
    while !hashing.is_empty() {
        record_rehash(hashing.join_next().await, &mut stored, report)?;
    }
    Ok(stored)
}

/// What re-hashing one blob found: its size, `None` if it was deleted since it was listed, or
/// what is wrong with it.
type Rehashed = (BlobInfo, StorageResult<Result<Option<u64>, String>>);

fn record_rehash(
    joined: Option<Result<Rehashed, tokio::task::JoinError>>,
    stored: &mut HashMap<Digest, u64>,
    report: &mut Report,
) -> StorageResult<()> {
    let Some(joined) = joined else {
        return Ok(());
    };
    let (info, outcome) =
        joined.map_err(|e| StorageError::io("re-hashing a blob", std::io::Error::other(e)))?;
    match outcome? {
        Ok(Some(bytes)) => {
            report.blobs += 1;
            report.bytes += bytes;
        }
        Ok(None) => {
            stored.remove(&info.digest);
        }
        Err(message) => {
            report.blobs += 1;
            report.error(format!("blob {}", info.digest), message);
        }
    }
    Ok(())
}

/// Reads a blob back and hashes it; an unreachable backend stops the check instead of
/// failing every blob.
async fn rehash<B: BlobStore>(blobs: &B, info: &BlobInfo) -> StorageResult<Result<Option<u64>, String>> {
    let stream = match blobs.read(&info.digest, 0..info.size).await {
        Ok(stream) => stream,
        Err(StorageError::BlobUnknown) => return Ok(Ok(None)),
        Err(e @ StorageError::Unavailable { .. }) => return Err(e),
        Err(e) => return Ok(Err(format!("cannot read: {e}"))),
    };
    Ok(hash_stream(stream, info).await)
}

async fn hash_stream(mut stream: ByteStream, info: &BlobInfo) -> Result<Option<u64>, String> {
    let mut hasher = Hasher::new(info.digest.algorithm());
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("cannot read: {e}"))?;
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if bytes != info.size {
        return Err(format!("read {bytes} bytes of the {} listed", info.size));
    }
    let actual = hasher.finalize();
    if actual == info.digest {
        Ok(Some(bytes))
    } else {
        Err(format!("corrupt blob: content hashes to {actual}"))
    }
}

/// The checks of one repository.
struct RepositoryCheck<'a, B, M> {
    blobs: &'a B,
    metadata: &'a M,
    repo: &'a RepositoryName,
    stored: &'a HashMap<Digest, u64>,
    report: &'a mut Report,
}

impl<B: BlobStore, M: MetadataStore> RepositoryCheck<'_, B, M> {
    async fn run(&mut self) -> StorageResult<()> {
        let repo = self.repo;
        let links = self.listed(self.metadata.list_links(repo).await, "blob links")?;
        let mut linked = HashSet::new();
        for link in links {
            self.report.links += 1;
            self.check_link(&link.digest).await?;
            linked.insert(link.digest);
        }
        let manifests = self.listed(self.metadata.list_manifests(repo).await, "manifests")?;
        let held: HashSet<Digest> = manifests.iter().map(|m| m.record.digest.clone()).collect();
        for manifest in &manifests {
            self.report.manifests += 1;
            self.check_manifest(&manifest.record, &linked, &held).await?;
        }
        for tag in self.listed(self.metadata.list_tags(repo).await, "tags")? {
            self.report.tags += 1;
            self.check_tag(&tag, &held).await?;
        }
        Ok(())
    }

    /// A listed link must name a stored blob, if it is still there.
    async fn check_link(&mut self, digest: &Digest) -> StorageResult<()> {
        if self.stored_size(digest).await?.is_none() && self.metadata.blob_linked(self.repo, digest).await? {
            self.report.error(
                format!("{} link {digest}", self.repo),
                "link to a blob that is not stored",
            );
        }
        Ok(())
    }

    /// A listed tag must point at a manifest the repository holds, if it still points there.
    async fn check_tag(&mut self, tag: &TagInfo, held: &HashSet<Digest>) -> StorageResult<()> {
        let repo = self.repo;
        if !self.holds(held, &tag.digest).await?
            && self.metadata.resolve_tag(repo, &tag.tag).await?.as_ref() == Some(&tag.digest)
        {
            self.report.error(
                format!("{repo}:{}", tag.tag),
                format!("tag points at manifest {}, which is not stored", tag.digest),
            );
        }
        Ok(())
    }

    /// A listing of the repository, or nothing and an error finding if it cannot be read
    /// (a record that does not parse); an unreachable backend stops the check.
    fn listed<T>(&mut self, result: StorageResult<Vec<T>>, what: &str) -> StorageResult<Vec<T>> {
        match result {
            Ok(items) => Ok(items),
            Err(e @ StorageError::Unavailable { .. }) => Err(e),
            Err(e) => {
                self.report
                    .error(self.repo, format!("cannot list its {what}: {e}"));
                Ok(Vec::new())
            }
        }
    }

    /// A blob's size, from the listing or, for one stored since, from the store.
    async fn stored_size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        match self.stored.get(digest) {
            Some(&size) => Ok(Some(size)),
            None => self.blobs.stat(digest).await,
        }
    }

    /// Whether the repository holds a manifest (listed, or stored since).
    async fn holds(&self, held: &HashSet<Digest>, digest: &Digest) -> StorageResult<bool> {
        Ok(held.contains(digest) || self.metadata.manifest(self.repo, digest).await?.is_some())
    }

    /// Checks one listed manifest; its errors are reported if it is still held after they
    /// were found (see the module docs).
    async fn check_manifest(
        &mut self,
        record: &ManifestRecord,
        linked: &HashSet<Digest>,
        held: &HashSet<Digest>,
    ) -> StorageResult<()> {
        let digest = &record.digest;
        let subject = format!("{}@{digest}", self.repo);
        let errors = match self.metadata.manifest(self.repo, digest).await? {
            None => return Ok(()),
            Some(found) if found != *record => {
                vec!["the record listed is not the one its digest looks up".to_owned()]
            }
            Some(_) => self.manifest_errors(record, linked, held, &subject).await?,
        };
        if !errors.is_empty() && self.metadata.manifest(self.repo, digest).await?.is_some() {
            for error in errors {
                self.report.error(&subject, error);
            }
        }
        Ok(())
    }

    /// What is wrong with a manifest's bytes and the blobs they name; its warnings (children
    /// deleted from an index) are reported at once.
    async fn manifest_errors(
        &mut self,
        record: &ManifestRecord,
        linked: &HashSet<Digest>,
        held: &HashSet<Digest>,
        subject: &str,
    ) -> StorageResult<Vec<String>> {
        let mut errors = Vec::new();
        let Some(content) = self.manifest_bytes(&record.digest).await? else {
            errors.push("manifest has no stored bytes".to_owned());
            return Ok(errors);
        };
        if content.len() as u64 != record.size {
            errors.push(format!(
                "the record says {} bytes, the stored manifest has {}",
                record.size,
                content.len()
            ));
        }
        let summary = match ManifestSummary::parse(&content, Some(&record.media_type)) {
            Ok(summary) => summary,
            Err(e) => {
                errors.push(format!("stored manifest does not parse: {e}"));
                return Ok(errors);
            }
        };
        for blob in &summary.blobs {
            let problem = if !linked.contains(&blob.digest)
                && !self.metadata.blob_linked(self.repo, &blob.digest).await?
            {
                Some("which the repository does not hold".to_owned())
            } else {
                match self.stored_size(&blob.digest).await? {
                    None => Some("which is not stored".to_owned()),
                    Some(size) if size != blob.size => {
                        Some(format!("of {} bytes, which has {size}", blob.size))
                    }
                    Some(_) => None,
                }
            };
            if let Some(problem) = problem {
                errors.push(format!("manifest references blob {} {problem}", blob.digest));
            }
        }
        for child in &summary.manifests {
            if !self.holds(held, &child.digest).await? {
                self.report.warning(
                    subject,
                    format!(
                        "index refers to manifest {}, which the repository no longer holds (deleted)",
                        child.digest
                    ),
                );
            }
        }
        Ok(errors)
    }

    /// A manifest's bytes, read whole (manifests are small); `None` if they are not stored.
    async fn manifest_bytes(&self, digest: &Digest) -> StorageResult<Option<Vec<u8>>> {
        let Some(size) = self.stored_size(digest).await? else {
            return Ok(None);
        };
        let mut stream = match self.blobs.read(digest, 0..size).await {
            Ok(stream) => stream,
            Err(StorageError::BlobUnknown) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut content = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StorageError::io(format!("reading manifest {digest}"), e))?;
            content.extend_from_slice(&chunk);
        }
        Ok(Some(content))
    }
}

/// Upload sessions without staged data, staged data without a session, and uploads idle past
/// `stale_after`: leftovers the purge removes.
async fn check_uploads<B: BlobStore, M: MetadataStore>(
    blobs: &B,
    metadata: &M,
    stale_after: Duration,
    report: &mut Report,
) -> StorageResult<()> {
    let cutoff = SystemTime::now()
        .checked_sub(stale_after)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let sessions = metadata.uploads().await?;
    let staged = blobs.staged_uploads().await?;
    report.uploads = staged.len();
    let staged_ids: HashSet<_> = staged.iter().map(|(id, _)| id.clone()).collect();
    for (id, modified) in &staged {
        match sessions.iter().find(|(_, s)| &s.id == id) {
            None => report.warning(
                format!("upload {id}"),
                "staged upload data with no session (a monolithic upload in flight, or left by a crash; purged when stale)",
            ),
            Some((repo, session)) if *modified < cutoff && session.started < cutoff => report.warning(
                format!("{repo} upload {id}"),
                format!(
                    "stale upload, idle for over {} s ([uploads] purge_after_secs); the purge removes it",
                    stale_after.as_secs()
                ),
            ),
            Some(_) => {}
        }
    }
    for (repo, session) in &sessions {
        if !staged_ids.contains(&session.id) {
            report.warning(
                format!("{repo} upload {}", session.id),
                "upload session whose staged data is gone (purged when stale)",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rbuild_oci::{Tag, media_type};

    use super::*;
    use crate::storage::fs::{FsBlobStore, FsMetadataStore};
    use crate::storage::memory::{MemoryBlobStore, MemoryMetadataStore};
    use crate::storage::{UploadId, UploadSession};

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    /// Stores a blob and links it to `repo`.
    async fn blob<B: BlobStore, M: MetadataStore>(
        blobs: &B,
        meta: &M,
        repo: &RepositoryName,
        bytes: &[u8],
    ) -> Digest {
        let digest = Digest::sha256_of(bytes);
        blobs.put(&digest, Bytes::copy_from_slice(bytes)).await.unwrap();
        meta.link_blob(repo, &digest).await.unwrap();
        digest
    }

    /// Stores an image of `config` and `layer` in `repo` as a push does; returns its manifest's
    /// record and bytes.
    async fn push_image<B: BlobStore, M: MetadataStore>(
        blobs: &B,
        meta: &M,
        repo: &RepositoryName,
        config: &[u8],
        layer: &[u8],
    ) -> (ManifestRecord, Vec<u8>) {
        let config_digest = blob(blobs, meta, repo, config).await;
        let layer_digest = blob(blobs, meta, repo, layer).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let digest = Digest::sha256_of(&manifest);
        blobs.put(&digest, Bytes::from(manifest.clone())).await.unwrap();
        let record = ManifestRecord {
            digest,
            media_type: media_type::OCI_MANIFEST.to_owned(),
            size: manifest.len() as u64,
            subject: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        meta.put_manifest(repo, &record).await.unwrap();
        (record, manifest)
    }

    /// What the check of a store found about `subject`, errors only.
    fn errors<'a>(report: &'a Report, subject: &str) -> Vec<&'a str> {
        let about = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error && f.subject == subject);
        about.map(|f| f.message.as_str()).collect()
    }

    /// An image pushed whole checks clean; then a blob's bytes corrupted, a tag pointing at a
    /// missing manifest and a manifest's layer deleted are each reported as errors.
    async fn broken_store_is_reported<B: BlobStore, M: MetadataStore>(
        blobs: &B,
        meta: &M,
        corrupt: impl FnOnce(&Digest, Bytes),
    ) {
        let repo = name("broken/app");
        let (config, layer) = (b"{\"os\":\"linux\"}".as_slice(), b"layer bytes".as_slice());
        let (config_digest, layer_digest) = (Digest::sha256_of(config), Digest::sha256_of(layer));
        let (record, manifest) = push_image(blobs, meta, &repo, config, layer).await;
        let manifest_digest = record.digest;
        meta.set_tag(&repo, &tag("v1"), &manifest_digest).await.unwrap();

        let clean = check(blobs, meta, Duration::MAX).await.unwrap();
        assert!(!clean.has_errors(), "{:#?}", clean.findings);
        let counts = (
            clean.blobs,
            clean.repositories,
            clean.links,
            clean.manifests,
            clean.tags,
        );
        assert_eq!(counts, (3, 1, 2, 1, 1));
        assert_eq!(clean.bytes, (config.len() + layer.len() + manifest.len()) as u64);

        corrupt(&config_digest, Bytes::from_static(b"{\"os\":\"plan9\"}"));
        let missing = Digest::sha256_of(b"never pushed");
        meta.set_tag(&repo, &tag("dangling"), &missing).await.unwrap();
        assert!(blobs.delete(&layer_digest).await.unwrap());

        let broken = check(blobs, meta, Duration::MAX).await.unwrap();
        assert!(broken.has_errors());
        let corrupted = errors(&broken, &format!("blob {config_digest}"));
        assert!(
            corrupted.iter().any(|m| m.starts_with("corrupt blob")),
            "{:#?}",
            broken.findings
        );
        let dangling = errors(&broken, "broken/app:dangling");
        assert_eq!(
            dangling,
            [format!("tag points at manifest {missing}, which is not stored")]
        );
        let manifest = errors(&broken, &format!("broken/app@{manifest_digest}"));
        assert_eq!(
            manifest,
            [format!(
                "manifest references blob {layer_digest} which is not stored"
            )]
        );
        let link = errors(&broken, &format!("broken/app link {layer_digest}"));
        assert_eq!(link, ["link to a blob that is not stored"]);
        assert!(
            errors(&broken, "broken/app:v1").is_empty(),
            "the good tag is fine"
        );
    }

    #[tokio::test]
    async fn a_broken_filesystem_store_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobStore::open(dir.path(), false).unwrap();
        let meta = FsMetadataStore::open(dir.path(), false).unwrap();
        let root = dir.path().to_owned();
        broken_store_is_reported(&blobs, &meta, |digest, bytes| {
            let path = root
                .join("blobs/sha256")
                .join(&digest.hex()[..2])
                .join(digest.hex());
            std::fs::write(path, bytes).unwrap();
        })
        .await;
    }

    /// The check runs beside collections: a manifest, its links and blobs deleted between the
    /// listings and the look at them (its tag first) are no damage.
    #[tokio::test]
    async fn what_a_collection_deletes_meanwhile_is_no_damage() {
        let (blobs, meta) = (MemoryBlobStore::new(), MemoryMetadataStore::new());
        let repo = name("live/app");
        let (record, _) = push_image(&blobs, &meta, &repo, b"config", b"layer").await;
        meta.set_tag(&repo, &tag("v1"), &record.digest).await.unwrap();
        let links = meta.list_links(&repo).await.unwrap();
        let tags = meta.list_tags(&repo).await.unwrap();
        let linked = links.iter().map(|l| l.digest.clone()).collect();

        assert!(meta.delete_tag(&repo, &tag("v1")).await.unwrap());
        assert!(meta.delete_manifest(&repo, &record.digest).await.unwrap());
        for link in &links {
            assert!(meta.unlink_blob(&repo, &link.digest).await.unwrap());
            assert!(blobs.delete(&link.digest).await.unwrap());
        }
        assert!(blobs.delete(&record.digest).await.unwrap());

        let (stored, mut report) = (HashMap::new(), Report::default());
        let mut check = RepositoryCheck {
            blobs: &blobs,
            metadata: &meta,
            repo: &repo,
            stored: &stored,
            report: &mut report,
        };
        for link in &links {
            check.check_link(&link.digest).await.unwrap();
        }
        check
            .check_manifest(&record, &linked, &HashSet::new())
            .await
            .unwrap();
        for tag in &tags {
            check.check_tag(tag, &HashSet::new()).await.unwrap();
        }
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
    }

    #[tokio::test]
    async fn a_broken_memory_store_is_reported() {
        let (blobs, meta) = (MemoryBlobStore::new(), MemoryMetadataStore::new());
        broken_store_is_reported(&blobs, &meta, |digest, bytes| blobs.corrupt(digest, bytes)).await;
    }

    #[tokio::test]
    async fn upload_leftovers_and_stale_uploads_are_warnings() {
        let (blobs, meta) = (MemoryBlobStore::new(), MemoryMetadataStore::new());
        let repo = name("uploads/app");
        let (live, orphan, lost) = (UploadId::new(), UploadId::new(), UploadId::new());
        for id in [&live, &orphan] {
            blobs.upload_create(id).await.unwrap();
        }
        for id in [&live, &lost] {
            let session = UploadSession {
                id: id.clone(),
                started: SystemTime::now(),
            };
            meta.create_upload(&repo, &session).await.unwrap();
        }
        let warnings = |report: &Report| -> Vec<String> {
            assert!(!report.has_errors(), "{:#?}", report.findings);
            let mut subjects: Vec<String> = report.findings.iter().map(|f| f.subject.clone()).collect();
            subjects.sort();
            subjects
        };
        let mut expected = vec![format!("upload {orphan}"), format!("uploads/app upload {lost}")];
        expected.sort();
        let report = check(&blobs, &meta, Duration::MAX).await.unwrap();
        assert_eq!(warnings(&report), expected);
        expected.push(format!("uploads/app upload {live}"));
        expected.sort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let report = check(&blobs, &meta, Duration::ZERO).await.unwrap();
        assert_eq!(
            warnings(&report),
            expected,
            "idle past the purge age, the live one is stale"
        );
    }

    #[tokio::test]
    async fn fsck_walks_the_files_of_a_filesystem_store_only() {
        let dir = tempfile::tempdir().unwrap();
        let stray = dir.path().join("blobs/sha256/ab/not-a-digest");
        std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
        std::fs::write(&stray, b"x").unwrap();
        let report = fsck(&Config::default(), dir.path()).await.unwrap();
        assert_eq!(
            errors(&report, &stray.display().to_string()).len(),
            1,
            "{:#?}",
            report.findings
        );

        let memory: Config =
            toml::from_str("[storage]\ndriver = \"memory\"\n[metadata]\ndriver = \"memory\"\n").unwrap();
        let report = fsck(&memory, dir.path()).await.unwrap();
        assert!(report.findings.is_empty(), "{:#?}", report.findings);
    }
}
