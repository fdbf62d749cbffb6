//! What the enumeration methods of the storage traits return: every stored thing with the time
//! it was last *touched*, which is what garbage collection's grace period is measured against.
//!
//! "Touched" is the last time anything wrote or referred to the entry: stored, re-stored,
//! linked, or named by a manifest being pushed. A backend must move it forward on every
//! `touch_*` call and on every write, so that `*_if_idle` deletions can refuse entries in use.

use std::time::SystemTime;

use rbuild_oci::{Digest, RepositoryName, Tag};

use super::{ManifestRecord, MetadataStore, PageRequest, StorageResult};

/// How many entries one listing request asks for.
const PAGE: usize = 1000;

/// Every repository, read a page at a time; for the walks of garbage collection and fsck.
pub(crate) async fn all_repositories(metadata: &impl MetadataStore) -> StorageResult<Vec<RepositoryName>> {
    let mut all = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: PAGE,
    };
    loop {
        let repos = metadata.repositories(&page).await?;
        let more = repos.more;
        all.extend(repos.items);
        match all.last() {
            Some(last) if more => page.after = Some(last.to_string()),
            _ => return Ok(all),
        }
    }
}

/// A stored blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last stored or touched.
    pub touched: SystemTime,
}

/// A repository's link to a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The blob.
    pub digest: Digest,
    /// When the link was last made or touched.
    pub touched: SystemTime,
}

/// A manifest a repository holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Its record.
    pub record: ManifestRecord,
    /// When it was last pushed or touched.
    pub touched: SystemTime,
}

/// A tag of a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagInfo {
    /// The tag.
    pub tag: Tag,
    /// The manifest it points at.
    pub digest: Digest,
    /// When it was last set.
    pub touched: SystemTime,
}
