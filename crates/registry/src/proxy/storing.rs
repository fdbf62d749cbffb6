//! Manifests answered from the upstream's verified bytes while they are stored beside the
//! answer: a request for one of them meanwhile waits for its store to end, so it neither
//! fetches it from the upstream again nor finds it missing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rbuild_oci::{Digest, RepositoryName, Tag};
use tokio::sync::watch;

use crate::route::ManifestRef;

/// The stores under way, by `repository@digest` and `repository:tag`.
#[derive(Default)]
pub(crate) struct Storing {
    pending: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// A store under way; dropping it (once the store succeeded or failed) lets waiting requests
/// look in storage.
pub(crate) struct Pending {
    storing: Arc<Storing>,
    keys: Vec<String>,
    _done: watch::Sender<()>,
}

fn digest_key(name: &RepositoryName, digest: &Digest) -> String {
    format!("{name}@{digest}")
}

fn tag_key(name: &RepositoryName, tag: &Tag) -> String {
    format!("{name}:{tag}")
}

impl Storing {
    /// Marks the manifest `digest` (and `tag`, which is to name it) of `name` as being stored.
    pub(crate) fn begin(
        self: &Arc<Self>,
        name: &RepositoryName,
        digest: &Digest,
        tag: Option<&Tag>,
    ) -> Pending {
        let (done, waiting) = watch::channel(());
        let keys: Vec<String> = std::iter::once(digest_key(name, digest))
            .chain(tag.map(|tag| tag_key(name, tag)))
            .collect();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for key in &keys {
            pending.insert(key.clone(), waiting.clone());
        }
        Pending {
            storing: self.clone(),
            keys,
            _done: done,
        }
    }

    /// Waits until no store of what `reference` names in `name` is under way.
    pub(crate) async fn settle(&self, name: &RepositoryName, reference: &ManifestRef) {
        let key = match reference {
            ManifestRef::Digest(digest) => digest_key(name, digest),
            ManifestRef::Tag(tag) => tag_key(name, tag),
            ManifestRef::Invalid { .. } => return,
        };
        let waiting = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.get(&key).cloned()
        };
        if let Some(mut waiting) = waiting {
            // Ends with an error when the store's `Pending` is dropped: all there is to learn.
            let _ = waiting.changed().await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.storing.pending.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            pending.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn requests_wait_for_a_store_by_digest_and_by_tag_and_no_longer() {
        let storing = Arc::new(Storing::default());
        let name: RepositoryName = "lib/app".parse().unwrap();
        let digest = Digest::sha256_of(b"manifest");
        let tag: Tag = "1".parse().unwrap();
        let pending = storing.begin(&name, &digest, Some(&tag));
        for reference in [ManifestRef::Digest(digest.clone()), ManifestRef::Tag(tag.clone())] {
            let waiting = tokio::time::timeout(Duration::from_millis(50), storing.settle(&name, &reference));
            assert!(waiting.await.is_err(), "{reference:?} waits while it is stored");
        }
        let other: Tag = "2".parse().unwrap();
        storing.settle(&name, &ManifestRef::Tag(other)).await;
        let waiter = {
            let (storing, name) = (storing.clone(), name.clone());
            tokio::spawn(async move { storing.settle(&name, &ManifestRef::Tag(tag)).await })
        };
        drop(pending);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the store's end wakes its waiters")
            .unwrap();
        storing.settle(&name, &ManifestRef::Digest(digest)).await;
    }
}
