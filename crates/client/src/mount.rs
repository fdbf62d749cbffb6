//! Where to mount a blob from: the repositories of the same registry the local store knows it
//! to be in (recorded by every pull and push, as docker's distribution metadata), so a push of an
//! image built on a pulled base sends only the new layers.

use rbuild_oci::{BlobOrigin, ContentStore, Digest, RepositoryName};

/// How many repositories a push asks to mount one blob from before it uploads it (docker's
/// `maxMountAttempts`).
pub(crate) const MOUNT_ATTEMPTS: usize = 3;

/// Records that `digests` are in `repository` of `registry`. A failure costs later pushes a
/// mount, never the pull or push that recorded it, so it is only logged.
pub(crate) fn record<'a>(
    store: &ContentStore,
    registry: &str,
    repository: &RepositoryName,
    digests: impl IntoIterator<Item = &'a Digest>,
) {
    let origin = BlobOrigin {
        registry: registry.to_owned(),
        repository: repository.clone(),
    };
    if let Err(e) = store.add_origin(digests, &origin) {
        tracing::warn!("recording where blobs of {registry}/{repository} came from: {e}");
    }
}

/// The repositories to try mounting `digest` from when pushing it to `target` on `registry`:
/// the one the caller named, then the newest recorded ones on the same registry.
pub(crate) fn candidates(
    store: &ContentStore,
    registry: &str,
    target: &RepositoryName,
    named: Option<&RepositoryName>,
    digest: &Digest,
) -> Vec<RepositoryName> {
    let recorded = store
        .origins(digest)
        .into_iter()
        .filter(|origin| origin.registry == registry)
        .map(|origin| origin.repository);
    let mut candidates: Vec<RepositoryName> = Vec::new();
    for repository in named.cloned().into_iter().chain(recorded) {
        if &repository != target && !candidates.contains(&repository) {
            candidates.push(repository);
        }
    }
    candidates.truncate(MOUNT_ATTEMPTS);
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_on_the_same_registry_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::sha256_of(b"layer");
        let name = |s: &str| -> RepositoryName { s.parse().unwrap() };
        for (registry, repository) in [
            ("r:5000", "debian"),
            ("other:5000", "elsewhere"),
            ("r:5000", "app"),
            ("r:5000", "tools"),
        ] {
            record(&store, registry, &name(repository), [&digest]);
        }
        let target = name("app");
        assert_eq!(
            candidates(&store, "r:5000", &target, None, &digest),
            [name("tools"), name("debian")]
        );
        assert_eq!(
            candidates(&store, "r:5000", &target, Some(&name("base")), &digest),
            [name("base"), name("tools"), name("debian")]
        );
        assert_eq!(
            candidates(&store, "r:5000", &target, Some(&name("debian")), &digest),
            [name("debian"), name("tools")]
        );
        assert!(candidates(&store, "r:5001", &target, None, &digest).is_empty());
    }
}
