//! The mark phase: from every repository's tags (after retention) and recent manifests, what
//! is kept, and so which tags, manifests, links and blobs are candidates for the sweep.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use rbuild_oci::{Digest, ManifestSummary, RepositoryName};

use super::GcError;
use super::retention::{self, Policy};
use crate::Registry;
use crate::storage::{BlobInfo, BlobStore, ManifestInfo, ManifestRecord, MetadataStore, Pages, TagInfo};

/// How many entries one listing request asks for.
const PAGE: usize = 1000;

/// What a manifest refers to.
#[derive(Clone, Debug, Default)]
pub(crate) struct References {
    /// Config, layers, and (of an index) children that are plain blobs.
    pub(crate) blobs: Vec<Digest>,
    /// Children of an index.
    pub(crate) children: Vec<Digest>,
}

/// A manifest the sweep may delete, with what it would keep if it turned out to be in use.
#[derive(Debug)]
pub(crate) struct ManifestCandidate {
    pub(crate) repo: RepositoryName,
    pub(crate) digest: Digest,
    /// The blobs (and child manifests' blobs) it references, kept if it is.
    pub(crate) references: Vec<Digest>,
    /// Whether it is an index, swept before the manifests it may hold.
    pub(crate) is_index: bool,
}

/// Everything the mark phase found deletable; the sweep re-checks each at deletion time.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) tags: Vec<(RepositoryName, TagInfo)>,
    pub(crate) manifests: Vec<ManifestCandidate>,
    pub(crate) links: Vec<(RepositoryName, Digest)>,
    pub(crate) blobs: Vec<BlobInfo>,
}

/// The untagged-manifest cutoff of a repository: `None` keeps untagged manifests.
fn untagged_cutoff(
    policy: Option<&Policy>,
    delete_untagged: bool,
    now: SystemTime,
    cutoff: SystemTime,
) -> Option<SystemTime> {
    match policy.and_then(|p| p.untagged_after) {
        Some(age) => Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH).min(cutoff)),
        None => delete_untagged.then_some(cutoff),
    }
}

/// The manifests kept by `roots`: their index children, and referrers of anything kept,
/// until nothing changes.
fn closure(
    manifests: &[ManifestInfo],
    references: &HashMap<Digest, References>,
    roots: HashSet<Digest>,
) -> HashSet<Digest> {
    let held: HashSet<&Digest> = manifests.iter().map(|m| &m.record.digest).collect();
    let mut kept = roots;
    let mut queue: Vec<Digest> = kept.iter().cloned().collect();
    loop {
        while let Some(digest) = queue.pop() {
            for child in references.get(&digest).map_or(&[][..], |r| &r.children) {
                if held.contains(child) && kept.insert(child.clone()) {
                    queue.push(child.clone());
                }
            }
        }
        for m in manifests {
            let subject_kept = m.record.subject.as_ref().is_some_and(|s| kept.contains(s));
            if subject_kept && kept.insert(m.record.digest.clone()) {
                queue.push(m.record.digest.clone());
            }
        }
        if queue.is_empty() {
            return kept;
        }
    }
}

impl<B: BlobStore, M: MetadataStore> Registry<B, M> {
    /// What a stored manifest references; `None` if its bytes cannot be read or parsed.
    async fn references(&self, record: &ManifestRecord) -> Option<References> {
        let bytes = self.read_manifest_bytes(record).await.ok()?;
        let summary = ManifestSummary::parse(&bytes, Some(&record.media_type)).ok()?;
        let children: Vec<Digest> = summary.manifests.into_iter().map(|d| d.digest).collect();
        // A child of an index may be a plain blob (BuildKit's index-form cache): its bytes
        // are kept like any blob's.
        let blobs = summary
            .blobs
            .into_iter()
            .map(|d| d.digest)
            .chain(children.iter().cloned())
            .collect();
        Some(References { blobs, children })
    }

    /// What a kept manifest whose bytes could not be read at listing time references now.
    /// Another replica's collection may have deleted it meanwhile, once its tag moved on
    /// (`None`: it keeps nothing), or it may have been pushed again; still held and still
    /// unreadable, it is damage.
    pub(crate) async fn reread(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<References>, GcError> {
        let Some(record) = self.metadata.manifest(repo, digest).await? else {
            return Ok(None);
        };
        match self.references(&record).await {
            Some(refs) => Ok(Some(refs)),
            None => Err(GcError::Unreadable {
                repo: repo.clone(),
                digest: digest.clone(),
            }),
        }
    }

    /// Marks every repository and lists the candidates, as of `now` with `cutoff` =
    /// `now` minus the grace period.
    pub(crate) async fn mark(&self, now: SystemTime, cutoff: SystemTime) -> Result<Plan, GcError> {
        let gc = &self.config.gc;
        let policies = retention::policies(gc)?;
        let mut plan = Plan::default();
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut pages = Pages::new(PAGE);
        while let Some(request) = pages.next() {
            let repos = self.metadata.repositories(request).await?;
            pages.advance(&repos, RepositoryName::to_string);
            for repo in &repos.items {
                let policy = retention::policy_for(&policies, repo);
                let untagged = untagged_cutoff(policy, gc.delete_untagged, now, cutoff);
                self.mark_repository(repo, policy, untagged, cutoff, &mut marked, &mut plan)
                    .await?;
            }
        }
        let mut pages = Pages::new(PAGE);
        while let Some(request) = pages.next() {
            let blobs = self.blobs.blobs(request).await?;
            pages.advance(&blobs, |b| b.digest.to_string());
            plan.blobs.extend(
                blobs
                    .items
                    .into_iter()
                    .filter(|b| b.touched < cutoff && !marked.contains(&b.digest)),
            );
        }
        Ok(plan)
    }

    async fn mark_repository(
        &self,
        repo: &RepositoryName,
        policy: Option<&Policy>,
        untagged_cutoff: Option<SystemTime>,
        cutoff: SystemTime,
        marked: &mut HashSet<Digest>,
        plan: &mut Plan,
    ) -> Result<(), GcError> {
        let tags = self.metadata.list_tags(repo).await?;
        let mut expired = policy.map(|p| p.expired_tags(&tags)).unwrap_or_default();
        expired.retain(|t| t.touched < cutoff);
        let tagged: HashSet<&Digest> = tags
            .iter()
            .filter(|t| !expired.iter().any(|e| e.tag == t.tag))
            .map(|t| &t.digest)
            .collect();
        let manifests = self.metadata.list_manifests(repo).await?;
        let mut references = HashMap::new();
        for manifest in &manifests {
            if let Some(refs) = self.references(&manifest.record).await {
                references.insert(manifest.record.digest.clone(), refs);
            }
        }
        let roots = manifests
            .iter()
            .filter(|m| tagged.contains(&m.record.digest) || untagged_cutoff.is_none_or(|c| m.touched >= c))
            .map(|m| m.record.digest.clone())
            .collect();
        let kept = closure(&manifests, &references, roots);

        let mut used: HashSet<Digest> = HashSet::new();
        for digest in &kept {
            let refs = match references.get(digest) {
                Some(refs) => refs.clone(),
                None => match self.reread(repo, digest).await? {
                    Some(refs) => refs,
                    None => continue,
                },
            };
            used.extend(refs.blobs);
            marked.insert(digest.clone());
        }
        for manifest in manifests.iter().filter(|m| !kept.contains(&m.record.digest)) {
            let refs = references
                .get(&manifest.record.digest)
                .cloned()
                .unwrap_or_default();
            plan.manifests.push(ManifestCandidate {
                repo: repo.clone(),
                digest: manifest.record.digest.clone(),
                is_index: !refs.children.is_empty(),
                references: refs.blobs,
            });
        }
        for link in self.metadata.list_links(repo).await? {
            if used.contains(&link.digest) || link.touched >= cutoff {
                marked.insert(link.digest);
            } else {
                plan.links.push((repo.clone(), link.digest));
            }
        }
        marked.extend(used);
        plan.tags
            .extend(expired.into_iter().map(|tag| (repo.clone(), tag)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::ManifestRecord;

    fn digest(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    fn manifest(name: &str, subject: Option<&str>) -> ManifestInfo {
        ManifestInfo {
            record: ManifestRecord {
                digest: digest(name),
                media_type: rbuild_oci::media_type::OCI_MANIFEST.to_owned(),
                size: 1,
                subject: subject.map(digest),
                artifact_type: None,
                annotations: Default::default(),
            },
            touched: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_index_keeps_its_children_and_a_kept_manifest_its_referrers() {
        let manifests = [
            manifest("index", None),
            manifest("amd64", None),
            manifest("arm64", None),
            manifest("signature", Some("index")),
            manifest("sbom-of-signature", Some("signature")),
            manifest("orphan", None),
            manifest("orphan-signature", Some("orphan")),
        ];
        let references = HashMap::from([(
            digest("index"),
            References {
                blobs: vec![digest("amd64"), digest("arm64"), digest("not-a-manifest")],
                children: vec![digest("amd64"), digest("arm64"), digest("not-a-manifest")],
            },
        )]);
        let kept = closure(&manifests, &references, HashSet::from([digest("index")]));
        let expected: HashSet<Digest> = ["index", "amd64", "arm64", "signature", "sbom-of-signature"]
            .into_iter()
            .map(digest)
            .collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn untagged_manifests_go_after_the_grace_or_the_policy_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cutoff = now - Duration::from_secs(3600);
        assert_eq!(untagged_cutoff(None, true, now, cutoff), Some(cutoff));
        assert_eq!(untagged_cutoff(None, false, now, cutoff), None);
        let config = crate::gc::GcConfig {
            retention: vec![crate::gc::RetentionPolicy {
                repositories: "**".to_owned(),
                tag_pattern: None,
                keep_last_tags: None,
                delete_untagged_after_secs: Some(86400),
            }],
            ..Default::default()
        };
        let policies = retention::policies(&config).unwrap();
        assert_eq!(
            untagged_cutoff(policies.first(), false, now, cutoff),
            Some(now - Duration::from_secs(86400))
        );
    }
}
