//! [`FsMetadataStore`]: repositories as directory trees of small files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rbuild_oci::{Algorithm, Digest, RepositoryName, Tag};

use super::aside::{self, Removal};
use super::{
    REPOSITORIES_DIR, blocking, digest_path, list_names, read_optional, remove_optional, write_atomic,
};
use crate::storage::{
    LinkInfo, ManifestInfo, ManifestRecord, MetadataStore, Page, PageRequest, StorageError, StorageResult,
    TagInfo, UploadId, UploadSession,
};

/// Repository metadata on a local filesystem.
#[derive(Clone)]
pub struct FsMetadataStore {
    inner: Arc<Inner>,
}

struct Inner {
    repositories: PathBuf,
    fsync: bool,
}

/// The paths of one repository.
struct Repo(PathBuf);

impl Repo {
    fn layer(&self, digest: &Digest) -> PathBuf {
        digest_path(&self.layers(), digest)
    }
    fn revision(&self, digest: &Digest) -> PathBuf {
        digest_path(&self.revisions(), digest)
    }
    fn layers(&self) -> PathBuf {
        self.0.join("_layers")
    }
    fn revisions(&self) -> PathBuf {
        self.0.join("_manifests").join("revisions")
    }
    fn tags(&self) -> PathBuf {
        self.0.join("_manifests").join("tags")
    }
    fn referrers(&self, subject: &Digest) -> PathBuf {
        digest_path(&self.0.join("_referrers"), subject)
    }
    fn referrer_marker(&self, subject: &Digest, referrer: &Digest) -> PathBuf {
        self.referrers(subject)
            .join(format!("{}-{}", referrer.algorithm(), referrer.hex()))
    }
    fn uploads(&self) -> PathBuf {
        self.0.join("_uploads")
    }
}

/// Parses a referrer marker's file name (`<alg>-<hex>`) back into a digest.
fn marker_digest(name: &str) -> Option<Digest> {
    let (algorithm, hex) = name.split_once('-')?;
    Digest::from_parts(rbuild_oci::Algorithm::from_name(algorithm)?, hex).ok()
}

/// The files of `<base>/<alg>/<hex>` with their digests and modification times, after putting
/// back anything a stopped collector left aside there.
fn digest_files(base: &Path) -> StorageResult<Vec<(PathBuf, Digest, SystemTime)>> {
    let mut found = Vec::new();
    for algorithm_name in list_names(base)? {
        let Some(algorithm) = Algorithm::from_name(&algorithm_name) else {
            continue;
        };
        let dir = base.join(&algorithm_name);
        aside::recover(&dir)?;
        for name in list_names(&dir)? {
            let Ok(digest) = Digest::from_parts(algorithm, &name) else {
                continue;
            };
            let path = dir.join(&name);
            if let Some(touched) = modified_optional(&path)? {
                found.push((path, digest, touched));
            }
        }
    }
    Ok(found)
}

/// A file's modification time; `None` if it is gone.
fn modified_optional(path: &Path) -> StorageResult<Option<SystemTime>> {
    match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(time) => Ok(Some(time)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// The digest a tag file holds; `None` if it does not exist.
fn read_tag(path: &Path) -> StorageResult<Option<Digest>> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e: rbuild_oci::DigestError| {
            StorageError::io(
                format!("reading {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> StorageResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        StorageError::io(
            format!("reading {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

impl FsMetadataStore {
    /// Opens (creating if needed) the metadata store under `root`.
    pub fn open(root: &Path, fsync: bool) -> io::Result<FsMetadataStore> {
        let repositories = root.join(REPOSITORIES_DIR);
        fs::create_dir_all(&repositories)?;
        Ok(FsMetadataStore {
            inner: Arc::new(Inner { repositories, fsync }),
        })
    }

    fn repo(&self, name: &RepositoryName) -> Repo {
        let mut path = self.inner.repositories.clone();
        path.extend(name.components());
        Repo(path)
    }

    /// Runs `f` on a blocking thread with a clone of the store and the repository's paths.
    async fn with_repo<T, F>(&self, name: &RepositoryName, f: F) -> StorageResult<T>
    where
        F: FnOnce(&Inner, Repo) -> StorageResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        let repo = self.repo(name);
        blocking(move || f(&store.inner, repo)).await
    }

    fn read_record(repo: &Repo, digest: &Digest) -> StorageResult<Option<ManifestRecord>> {
        let path = repo.revision(digest);
        read_optional(&path)?
            .map(|bytes| parse_json(&path, &bytes))
            .transpose()
    }

    /// Walks the repository tree for directories holding any of `markers` (`_manifests`, …).
    fn find_repositories(&self, markers: &'static [&'static str]) -> StorageResult<Vec<RepositoryName>> {
        let mut names = Vec::new();
        Self::collect_repositories(&self.inner.repositories, "", markers, &mut names)?;
        let mut names: Vec<RepositoryName> = names.iter().filter_map(|n| n.parse().ok()).collect();
        names.sort();
        Ok(names)
    }

    fn collect_repositories(
        dir: &Path,
        prefix: &str,
        markers: &[&str],
        out: &mut Vec<String>,
    ) -> StorageResult<()> {
        let names = list_names(dir)?;
        if names.iter().any(|n| markers.contains(&n.as_str())) {
            out.push(prefix.to_owned());
        }
        for name in names.iter().filter(|n| !n.starts_with('_')) {
            let child = dir.join(name);
            if child.is_dir() {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                Self::collect_repositories(&child, &path, markers, out)?;
            }
        }
        Ok(())
    }
}

impl MetadataStore for FsMetadataStore {
    fn backend(&self) -> &'static str {
        "filesystem"
    }

    async fn health(&self) -> StorageResult<()> {
        super::check_writable(self.inner.repositories.clone()).await
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<()> {
        let digest = digest.clone();
        self.with_repo(repo, move |s, r| write_atomic(&r.layer(&digest), b"", s.fsync))
            .await
    }

    async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let path = self.repo(repo).layer(digest);
        Ok(tokio::fs::try_exists(&path).await.unwrap_or(false))
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| remove_optional(&r.layer(&digest)))
            .await
    }

    async fn put_manifest(&self, repo: &RepositoryName, record: &ManifestRecord) -> StorageResult<()> {
        let record = record.clone();
        self.with_repo(repo, move |s, r| {
            let json = serde_json::to_vec(&record)
                .map_err(|e| StorageError::io("encoding manifest record", e.into()))?;
            write_atomic(&r.revision(&record.digest), &json, s.fsync)?;
            if let Some(subject) = &record.subject {
                write_atomic(&r.referrer_marker(subject, &record.digest), b"", s.fsync)?;
            }
            Ok(())
        })
        .await
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| Self::read_record(&r, &digest))
            .await
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| {
            let Some(record) = Self::read_record(&r, &digest)? else {
                return Ok(false);
            };
            let target = digest.to_string();
            let tags = r.tags();
            for tag in list_names(&tags)? {
                let path = tags.join(&tag);
                if read_optional(&path)?.is_some_and(|d| d == target.as_bytes()) {
                    remove_optional(&path)?;
                }
            }
            if let Some(subject) = &record.subject {
                remove_optional(&r.referrer_marker(subject, &digest))?;
            }
            remove_optional(&r.revision(&digest))
        })
        .await
    }

    async fn set_tag(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        let (tag, digest) = (tag.clone(), digest.clone());
        self.with_repo(repo, move |s, r| {
            write_atomic(
                &r.tags().join(tag.as_str()),
                digest.to_string().as_bytes(),
                s.fsync,
            )
        })
        .await
    }

    async fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<Option<Digest>> {
        let tag = tag.clone();
        self.with_repo(repo, move |_, r| read_tag(&r.tags().join(tag.as_str())))
            .await
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        let tag = tag.clone();
        self.with_repo(repo, move |_, r| remove_optional(&r.tags().join(tag.as_str())))
            .await
    }

    async fn tags(&self, repo: &RepositoryName, page: &PageRequest) -> StorageResult<Option<Page<Tag>>> {
        let page = page.clone();
        self.with_repo(repo, move |_, r| {
            if !r.0.is_dir() {
                return Ok(None);
            }
            let mut tags: Vec<Tag> = list_names(&r.tags())?
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect();
            tags.sort();
            Ok(Some(Page::from_sorted(tags, &page, Tag::as_str)))
        })
        .await
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: &PageRequest,
    ) -> StorageResult<Page<ManifestRecord>> {
        let (subject, page) = (subject.clone(), page.clone());
        let artifact_type = artifact_type.map(str::to_owned);
        self.with_repo(repo, move |_, r| {
            let mut records = Vec::new();
            for digest in list_names(&r.referrers(&subject))?
                .iter()
                .filter_map(|n| marker_digest(n))
            {
                // A marker whose manifest is gone (a crash mid-delete) is simply not listed.
                if let Some(record) = Self::read_record(&r, &digest)?
                    && (artifact_type.is_none() || record.artifact_type == artifact_type)
                {
                    records.push((digest.to_string(), record));
                }
            }
            records.sort_by(|a, b| a.0.cmp(&b.0));
            let listed = Page::from_sorted(records, &page, |(key, _)| key.as_str());
            Ok(Page {
                items: listed.items.into_iter().map(|(_, record)| record).collect(),
                more: listed.more,
            })
        })
        .await
    }

    async fn repositories(&self, page: &PageRequest) -> StorageResult<Page<RepositoryName>> {
        let store = self.clone();
        let page = page.clone();
        blocking(move || {
            let names = store.find_repositories(&["_manifests", "_layers"])?;
            Ok(Page::from_sorted(names, &page, RepositoryName::as_str))
        })
        .await
    }

    async fn create_upload(&self, repo: &RepositoryName, session: &UploadSession) -> StorageResult<()> {
        let session = session.clone();
        self.with_repo(repo, move |s, r| {
            let json = serde_json::to_vec(&session)
                .map_err(|e| StorageError::io("encoding upload session", e.into()))?;
            write_atomic(&r.uploads().join(session.id.to_string()), &json, s.fsync)
        })
        .await
    }

    async fn upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<Option<UploadSession>> {
        let id = id.clone();
        self.with_repo(repo, move |_, r| {
            let path = r.uploads().join(id.to_string());
            read_optional(&path)?
                .map(|bytes| parse_json(&path, &bytes))
                .transpose()
        })
        .await
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<()> {
        let id = id.clone();
        self.with_repo(repo, move |_, r| {
            remove_optional(&r.uploads().join(id.to_string())).map(drop)
        })
        .await
    }

    async fn uploads(&self) -> StorageResult<Vec<(RepositoryName, UploadSession)>> {
        let store = self.clone();
        blocking(move || {
            let mut sessions = Vec::new();
            for name in store.find_repositories(&["_uploads"])? {
                let dir = store.repo(&name).uploads();
                for file in list_names(&dir)? {
                    let path = dir.join(&file);
                    if let Some(bytes) = read_optional(&path)? {
                        sessions.push((name.clone(), parse_json::<UploadSession>(&path, &bytes)?));
                    }
                }
            }
            Ok(sessions)
        })
        .await
    }

    async fn list_links(&self, repo: &RepositoryName) -> StorageResult<Vec<LinkInfo>> {
        self.with_repo(repo, |_, r| {
            let links = digest_files(&r.layers())?;
            Ok(links
                .into_iter()
                .map(|(_, digest, touched)| LinkInfo { digest, touched })
                .collect())
        })
        .await
    }

    async fn list_manifests(&self, repo: &RepositoryName) -> StorageResult<Vec<ManifestInfo>> {
        self.with_repo(repo, |_, r| {
            let mut manifests = Vec::new();
            for (path, _, touched) in digest_files(&r.revisions())? {
                // A record that cannot be read stops the listing: a collector that skipped it
                // would not mark what it references.
                if let Some(bytes) = read_optional(&path)? {
                    let record = parse_json(&path, &bytes)?;
                    manifests.push(ManifestInfo { record, touched });
                }
            }
            Ok(manifests)
        })
        .await
    }

    async fn list_tags(&self, repo: &RepositoryName) -> StorageResult<Vec<TagInfo>> {
        self.with_repo(repo, |_, r| {
            let dir = r.tags();
            aside::recover(&dir)?;
            let mut tags = Vec::new();
            for name in list_names(&dir)? {
                let Ok(tag) = name.parse::<Tag>() else {
                    continue;
                };
                let path = dir.join(&name);
                if let (Some(touched), Some(digest)) = (modified_optional(&path)?, read_tag(&path)?) {
                    tags.push(TagInfo { tag, digest, touched });
                }
            }
            Ok(tags)
        })
        .await
    }

    async fn touch_link(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| aside::touch(&r.layer(&digest)))
            .await
    }

    async fn touch_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| aside::touch(&r.revision(&digest)))
            .await
    }

    async fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |_, r| {
            Ok(matches!(
                aside::remove_if_idle(&r.layer(&digest), cutoff)?,
                Removal::Removed(_)
            ))
        })
        .await
    }

    async fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let digest = digest.clone();
        self.with_repo(repo, move |s, r| {
            let path = r.revision(&digest);
            let Some(record) = Self::read_record(&r, &digest)? else {
                return Ok(false);
            };
            if modified_optional(&path)?.is_none_or(|touched| touched >= cutoff) {
                return Ok(false);
            }
            // The referrers entry goes first and comes back if the manifest turns out busy: a
            // push of the manifest meanwhile writes the entry after its record, so it is never
            // lost to this deletion.
            let marker = record.subject.as_ref().map(|s| r.referrer_marker(s, &digest));
            if let Some(marker) = &marker {
                remove_optional(marker)?;
            }
            match aside::remove_if_idle(&path, cutoff)? {
                Removal::Removed(_) => Ok(true),
                Removal::Busy | Removal::Missing => {
                    if let Some(marker) = &marker
                        && path.is_file()
                    {
                        write_atomic(marker, b"", s.fsync)?;
                    }
                    Ok(false)
                }
            }
        })
        .await
    }

    async fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let (tag, digest) = (tag.clone(), digest.clone());
        self.with_repo(repo, move |_, r| {
            let path = r.tags().join(tag.as_str());
            let unchanged = |path: &Path| -> StorageResult<bool> {
                let idle = modified_optional(path)?.is_some_and(|touched| touched < cutoff);
                Ok(idle && read_tag(path)?.as_ref() == Some(&digest))
            };
            if !unchanged(&path)? {
                return Ok(false);
            }
            // Set aside, then look at what was set aside: a push of the tag before the rename
            // (a new file, so a new time) is seen and put back; one after it writes a new file
            // that is not touched here.
            let Some(aside) = aside::set_aside(&path)? else {
                return Ok(false);
            };
            if unchanged(&aside)? {
                remove_optional(&aside)
            } else {
                aside::restore(&aside, &path)?;
                Ok(false)
            }
        })
        .await
    }
}
