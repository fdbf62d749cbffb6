//! `rbuild registry fsck` through the storage traits, so it checks whichever stores the
//! configuration names (an S3 bucket and a PostgreSQL database as well as files).
//!
//! It asks the questions the filesystem check asks of its files, of the traits instead: does
//! every blob hash to its digest, does every link, manifest and tag name something stored, and
//! does every manifest's repository hold the blobs it references. Errors mean data is wrong or
//! unreachable; warnings are leftovers the upload purge removes. The filesystem pair keeps its
//! own check ([`crate::storage::fs::fsck`]), which also sees files the traits never list.

use std::collections::HashSet;
use std::path::PathBuf;

use futures_util::TryStreamExt;
use rbuild_oci::{Digest, ManifestSummary, RepositoryName};

use crate::Registry;
use crate::storage::fs::fsck::{Finding, Report, Severity};
use crate::storage::{BlobStore, MetadataStore, PageRequest, StorageResult, all_repositories};

/// How many entries one listing request asks for.
const PAGE: usize = 1000;

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// Re-hashes every blob and checks every repository's links, manifests and tags.
    pub async fn fsck(&self) -> StorageResult<Report> {
        let mut report = Report::default();
        let stored = self.check_blobs(&mut report).await?;
        for repo in &all_repositories(&self.metadata).await? {
            report.repositories += 1;
            self.check_repository(repo, &stored, &mut report).await?;
        }
        let sessions: HashSet<String> = self
            .metadata
            .uploads()
            .await?
            .into_iter()
            .map(|(_, session)| session.id.to_string())
            .collect();
        report.uploads = sessions.len();
        for (id, _) in self.blobs.staged_uploads().await? {
            if !sessions.contains(&id.to_string()) {
                finding(
                    &mut report,
                    Severity::Warning,
                    format!("uploads/{id}"),
                    "staged upload data with no session (a monolithic upload in flight, or left by a crash; purged when stale)",
                );
            }
        }
        Ok(report)
    }

    /// Hashes every stored blob; returns the digests listed.
    async fn check_blobs(&self, report: &mut Report) -> StorageResult<HashSet<Digest>> {
        let mut stored = HashSet::new();
        let mut page = PageRequest {
            after: None,
            limit: PAGE,
        };
        loop {
            let blobs = self.blobs.blobs(&page).await?;
            page.after = blobs.items.last().map(|b| b.digest.to_string());
            for blob in blobs.items {
                report.blobs += 1;
                match self.rehash(&blob.digest, blob.size).await {
                    Ok(bytes) => report.bytes += bytes,
                    Err(message) => error(report, format!("blobs/{}", blob.digest), message),
                }
                stored.insert(blob.digest);
            }
            if !blobs.more || page.after.is_none() {
                return Ok(stored);
            }
        }
    }

    /// Reads a blob whole, hashing as it goes; the bytes read, or what is wrong.
    async fn rehash(&self, digest: &Digest, size: u64) -> Result<u64, String> {
        let mut hasher = digest.algorithm().hasher();
        let mut stream = self
            .blobs
            .read(digest, 0..size)
            .await
            .map_err(|e| format!("cannot read: {e}"))?;
        let mut bytes = 0;
        while let Some(chunk) = stream.try_next().await.map_err(|e| format!("cannot read: {e}"))? {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
        }
        let actual = hasher.finalize();
        if &actual == digest {
            Ok(bytes)
        } else {
            Err(format!("corrupt blob: content hashes to {actual}"))
        }
    }

    async fn check_repository(
        &self,
        repo: &RepositoryName,
        stored: &HashSet<Digest>,
        report: &mut Report,
    ) -> StorageResult<()> {
        let mut linked = HashSet::new();
        for link in self.metadata.list_links(repo).await? {
            report.links += 1;
            if !stored.contains(&link.digest) && self.blobs.stat(&link.digest).await?.is_none() {
                let message = format!("link to blob {}, which is not stored", link.digest);
                error(report, format!("{repo}/links/{}", link.digest), message);
            }
            linked.insert(link.digest);
        }
        let manifests = self.metadata.list_manifests(repo).await?;
        let held: HashSet<&Digest> = manifests.iter().map(|m| &m.record.digest).collect();
        for manifest in &manifests {
            report.manifests += 1;
            let digest = &manifest.record.digest;
            let at = format!("{repo}/manifests/{digest}");
            let bytes = match self.read_manifest_bytes(&manifest.record).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    let message = format!("manifest {digest} has no stored bytes");
                    error(report, at, message);
                    continue;
                }
            };
            let summary = match ManifestSummary::parse(&bytes, Some(&manifest.record.media_type)) {
                Ok(summary) => summary,
                Err(e) => {
                    let message = format!("stored manifest {digest} does not parse: {e}");
                    error(report, at, message);
                    continue;
                }
            };
            for blob in &summary.blobs {
                if !linked.contains(&blob.digest) {
                    let message = format!(
                        "manifest {digest} references blob {} the repository does not hold",
                        blob.digest
                    );
                    error(report, at.clone(), message);
                }
            }
            for child in &summary.manifests {
                // A child of an index may be a plain blob (BuildKit's index-form cache).
                if !held.contains(&child.digest) && !linked.contains(&child.digest) {
                    let message = format!(
                        "index {digest} names {}, which the repository does not hold",
                        child.digest
                    );
                    error(report, at.clone(), message);
                }
            }
        }
        for tag in self.metadata.list_tags(repo).await? {
            report.tags += 1;
            if !held.contains(&tag.digest) {
                let message = format!("tag points at manifest {}, which is not stored", tag.digest);
                error(report, format!("{repo}/tags/{}", tag.tag), message);
            }
        }
        Ok(())
    }
}

/// Records an error about the entry `at` (`<repo>/manifests/<digest>`, `blobs/<digest>` …).
fn error(report: &mut Report, at: String, message: String) {
    finding(report, Severity::Error, at, message);
}

fn finding(report: &mut Report, severity: Severity, at: String, message: impl Into<String>) {
    report.findings.push(Finding {
        severity,
        path: PathBuf::from(at),
        message: message.into(),
    });
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rbuild_oci::media_type;

    use crate::storage::ManifestRecord;
    use crate::{Config, Registry};

    use super::*;

    /// A store with `app:v1`, an image of a config and a layer, through the traits.
    async fn pushed(registry: &Registry<impl BlobStore, impl MetadataStore>) -> (Digest, Digest) {
        let repo: RepositoryName = "app".parse().unwrap();
        let mut descriptors = Vec::new();
        for (media, bytes) in [
            (media_type::OCI_CONFIG, &b"{}"[..]),
            (media_type::OCI_LAYER_GZIP, b"layer"),
        ] {
            let digest = Digest::sha256_of(bytes);
            registry
                .blobs
                .put(&digest, Bytes::copy_from_slice(bytes))
                .await
                .unwrap();
            registry.metadata.link_blob(&repo, &digest).await.unwrap();
            descriptors.push(serde_json::json!({"mediaType": media, "digest": digest, "size": bytes.len()}));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": descriptors[0],
            "layers": [descriptors[1]],
        }))
        .unwrap();
        let digest = Digest::sha256_of(&manifest);
        registry
            .blobs
            .put(&digest, Bytes::from(manifest.clone()))
            .await
            .unwrap();
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: media_type::OCI_MANIFEST.to_owned(),
            size: manifest.len() as u64,
            subject: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        registry.metadata.put_manifest(&repo, &record).await.unwrap();
        registry
            .metadata
            .set_tag(&repo, &"v1".parse().unwrap(), &digest)
            .await
            .unwrap();
        (digest, Digest::sha256_of(b"layer"))
    }

    /// The check through the traits agrees with the file-by-file one: clean when nothing is
    /// wrong, and a layer gone from under its manifest is an error for both.
    #[tokio::test]
    async fn finds_what_the_file_check_finds() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_fs(dir.path(), Config::default()).unwrap();
        let (_, layer) = pushed(&registry).await;
        let report = registry.fsck().await.unwrap();
        assert!(!report.has_errors(), "{:#?}", report.findings);
        assert_eq!(
            (
                report.blobs,
                report.repositories,
                report.links,
                report.manifests,
                report.tags
            ),
            (3, 1, 2, 1, 1)
        );

        registry.blobs.delete(&layer).await.unwrap();
        let report = registry.fsck().await.unwrap();
        let on_files = crate::storage::fs::fsck::fsck(dir.path()).unwrap();
        assert!(on_files.has_errors(), "{:#?}", on_files.findings);
        assert!(report.has_errors(), "{:#?}", report.findings);
        let text = format!("{:?}", report.findings);
        assert!(
            text.contains(&format!("link to blob {layer}, which is not stored")),
            "{text}"
        );
    }
}
