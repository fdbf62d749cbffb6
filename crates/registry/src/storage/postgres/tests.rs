//! The PostgreSQL store against a real server: the conformance suite, several replicas (each
//! its own pool) writing at once, pagination under concurrent pushes, and an outage.

use std::collections::BTreeSet;
use std::time::Duration;

use rbuild_oci::{Digest, RepositoryName, Tag};

use super::testdb::{PrivateServer, TestDb};
use super::{PgMetadataStore, PostgresConfig};
use http_body_util::BodyExt;

use crate::Registry;
use crate::config::Config;
use crate::http::Body;
use crate::storage::fs::FsBlobStore;
use crate::storage::{ManifestRecord, MetadataStore, PageRequest, StorageError, conformance, select};

fn name(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

fn manifest(content: &str, subject: Option<&Digest>) -> ManifestRecord {
    ManifestRecord {
        digest: Digest::sha256_of(content.as_bytes()),
        media_type: rbuild_oci::media_type::OCI_MANIFEST.to_owned(),
        size: content.len() as u64,
        subject: subject.cloned(),
        artifact_type: Some("application/x-test".to_owned()),
        annotations: [("org.example.content".to_owned(), content.to_owned())].into(),
    }
}

fn all() -> PageRequest {
    PageRequest {
        after: None,
        limit: 10_000,
    }
}

#[tokio::test]
async fn postgres_store_passes_the_suite() {
    let Some(db) = TestDb::create().await else { return };
    conformance::metadata_store(&db.store().await).await;
}

/// The config keys operators write open the store through the factory (the URL read from a
/// file, as from a mounted Secret), and `rbuild registry migrate` finds nothing left to do.
#[tokio::test]
async fn the_config_file_selects_postgres() {
    let Some(db) = TestDb::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, format!("{}\n", db.url)).unwrap();
    let text = format!(
        "[metadata]\ndriver = \"postgres\"\n[metadata.postgres]\nurl_file = {:?}\npool_size = 4\n",
        url_file.display().to_string()
    );
    let config: Config = toml::from_str(&text).unwrap();
    assert!(
        !format!("{config:?}").contains(&db.url),
        "the URL is never printed"
    );
    let (_, metadata) = select::open(&config, dir.path()).await.unwrap();
    assert_eq!(metadata.backend(), "postgres");
    conformance::metadata_store(&metadata).await;
    let migrated = select::migrate(&config).await.unwrap().unwrap();
    assert!(migrated.applied.is_empty());
    assert_eq!(migrated.version, 1);
}

/// Names sort in byte order whatever the database's locale: punctuation by its code, upper
/// case before `_` before lower case (a linguistic collation would ignore the punctuation).
#[tokio::test]
async fn names_sort_in_byte_order() {
    let Some(db) = TestDb::create_linguistic().await else {
        return;
    };
    let store = db.store().await;
    let image = manifest("image", None);
    for repo in ["a_b", "a/b", "ab", "a0", "a.b", "a-b"] {
        store.put_manifest(&name(repo), &image).await.unwrap();
    }
    let repo = name("ab");
    for t in ["a", "B", "_x", "Z9", "A", "a.b", "a-b"] {
        store.set_tag(&repo, &tag(t), &image.digest).await.unwrap();
    }
    let tags = store.tags(&repo, &all()).await.unwrap().unwrap();
    let tags: Vec<&str> = tags.items.iter().map(Tag::as_str).collect();
    assert_eq!(tags, ["A", "B", "Z9", "_x", "a", "a-b", "a.b"]);
    let repos = store.repositories(&all()).await.unwrap();
    let repos: Vec<&str> = repos.items.iter().map(RepositoryName::as_str).collect();
    assert_eq!(repos, ["a-b", "a.b", "a/b", "a0", "a_b", "ab"]);
}

/// Two replicas (two pools on one database) move tags, push and delete manifests at once; a
/// reader never sees a tag without its manifest or half a manifest, and in the end both
/// replicas see the same, consistent state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_at_once_end_consistent() {
    let Some(db) = TestDb::create().await else { return };
    let (a, b) = (db.store().await, db.store().await);
    let repo = name("team/app");
    let images: Vec<ManifestRecord> = (0..4).map(|i| manifest(&format!("image {i}"), None)).collect();
    for image in &images {
        a.put_manifest(&repo, image).await.unwrap();
    }
    let referrer = manifest("signature", Some(&images[0].digest));
    let churned = images[3].digest.clone();

    let mut tasks = tokio::task::JoinSet::new();
    for (worker, store) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (store, repo, images) = (store.clone(), repo.clone(), images.clone());
        tasks.spawn(async move {
            for i in 0..40 {
                let image = &images[(worker + i) % images.len()];
                store.put_manifest(&repo, image).await.unwrap();
                // The churning task may delete image 3 between the two calls: the tag is then
                // refused, never left pointing at nothing.
                for t in ["latest", &format!("w{worker}")] {
                    let moved = store.set_tag(&repo, &tag(t), &image.digest).await;
                    assert!(moved.is_ok() || image.digest == images[3].digest, "{moved:?}");
                }
            }
        });
    }
    {
        let (store, repo, churned, referrer) = (a.clone(), repo.clone(), churned.clone(), referrer.clone());
        tasks.spawn(async move {
            for _ in 0..40 {
                store.delete_manifest(&repo, &churned).await.unwrap();
                store.put_manifest(&repo, &referrer).await.unwrap();
                store.delete_manifest(&repo, &referrer.digest).await.unwrap();
            }
        });
    }
    {
        let (store, repo, referrer, subject) = (
            b.clone(),
            repo.clone(),
            referrer.clone(),
            images[0].digest.clone(),
        );
        tasks.spawn(async move {
            for _ in 0..80 {
                for info in store.list_tags(&repo).await.unwrap() {
                    if info.digest != churned {
                        assert!(store.manifest(&repo, &info.digest).await.unwrap().is_some());
                    }
                }
                let listed = store.referrers(&repo, &subject, None, &all()).await.unwrap();
                assert!(listed.items.iter().all(|r| r == &referrer), "whole records only");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let latest_a = a.resolve_tag(&repo, &tag("latest")).await.unwrap();
    assert_eq!(latest_a, b.resolve_tag(&repo, &tag("latest")).await.unwrap());
    let manifests: BTreeSet<Digest> = b
        .list_manifests(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.record.digest)
        .collect();
    let tags = b.list_tags(&repo).await.unwrap();
    let names: BTreeSet<&str> = tags.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(names.len(), tags.len(), "one row per tag");
    for info in &tags {
        assert!(
            manifests.contains(&info.digest),
            "{} points at a manifest",
            info.tag
        );
    }
    assert_eq!(a.list_tags(&repo).await.unwrap(), tags);
}

/// Pages of tags and of the catalog, walked while another replica pushes, list every entry
/// that existed before once, in order, and nothing that was never pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_is_stable_while_pushing() {
    let Some(db) = TestDb::create().await else { return };
    let (reader, writer) = (db.store().await, db.store().await);
    let repo = name("paged");
    let image = manifest("image", None);
    writer.put_manifest(&repo, &image).await.unwrap();
    let names = |parity: usize| -> Vec<String> {
        (0..300)
            .filter(|i| i % 2 == parity)
            .map(|i| format!("n{i:04}"))
            .collect()
    };
    let (before, during) = (names(0), names(1));
    for n in &before {
        writer.set_tag(&repo, &tag(n), &image.digest).await.unwrap();
        writer
            .link_blob(&name(&format!("r/{n}")), &image.digest)
            .await
            .unwrap();
    }

    let pushing = {
        let (writer, repo, image, during) = (writer.clone(), repo.clone(), image.clone(), during.clone());
        tokio::spawn(async move {
            for n in during.iter().rev() {
                writer.set_tag(&repo, &tag(n), &image.digest).await.unwrap();
                writer
                    .link_blob(&name(&format!("r/{n}")), &image.digest)
                    .await
                    .unwrap();
            }
        })
    };
    let mut tags = Vec::new();
    let mut repos = Vec::new();
    let mut request = PageRequest {
        after: None,
        limit: 7,
    };
    loop {
        let page = reader.tags(&repo, &request).await.unwrap().unwrap();
        assert!(page.items.len() <= 7);
        tags.extend(page.items.iter().map(|t| t.as_str().to_owned()));
        request.after = tags.last().cloned();
        if !page.more {
            break;
        }
    }
    let mut request = PageRequest {
        after: None,
        limit: 7,
    };
    loop {
        let page = reader.repositories(&request).await.unwrap();
        repos.extend(page.items.iter().map(|r| r.as_str().to_owned()));
        request.after = repos.last().cloned();
        if !page.more {
            break;
        }
    }
    pushing.await.unwrap();

    for (listed, prefix) in [(&tags, ""), (&repos, "r/")] {
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "in order, each once");
        let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        for n in &before {
            assert!(
                listed.contains(format!("{prefix}{n}").as_str()),
                "{prefix}{n} listed"
            );
        }
        let known: BTreeSet<String> = before
            .iter()
            .chain(&during)
            .map(|n| format!("{prefix}{n}"))
            .chain([repo.as_str().to_owned()])
            .collect();
        assert!(listed.iter().all(|l| known.contains(*l)), "nothing invented");
    }
}

/// Replicas starting at once on an empty database all migrate it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_once() {
    let Some(db) = TestDb::create().await else { return };
    let config = db.config();
    let opened = futures_util::future::join_all((0..4).map(|_| PgMetadataStore::open(&config))).await;
    let stores: Vec<PgMetadataStore> = opened.into_iter().map(Result::unwrap).collect();
    let migrated = stores[0].migrate().await.unwrap();
    assert!(migrated.applied.is_empty());
    assert_eq!(migrated.version, 1);
    conformance::metadata_store(&stores[1]).await;
}

fn assert_unavailable<T: std::fmt::Debug>(result: crate::storage::StorageResult<T>) {
    match result {
        Err(StorageError::Unavailable { backend, reason }) => {
            assert_eq!(backend, "postgres");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// A GET through the registry's handlers.
async fn get(registry: &Registry<FsBlobStore, PgMetadataStore>, path: &str) -> http::Response<Body> {
    let body = http_body_util::Empty::<bytes::Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = http::Request::get(path).body(body).unwrap();
    registry.handle(request).await
}

/// With the server stopped, calls and the health check fail as Unavailable within the connect
/// timeout, and the handlers answer 503 with Retry-After (the readiness probe 503); started
/// again, the same store serves without being reopened.
#[tokio::test]
async fn an_outage_is_unavailable_and_recovers() {
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let config = PostgresConfig {
        url: Some(server.url()),
        connect_timeout_secs: 2,
        ..PostgresConfig::default()
    };
    let store = PgMetadataStore::open(&config).await.unwrap();
    let repo = name("outage");
    let image = manifest("image", None);
    store.put_manifest(&repo, &image).await.unwrap();
    store.set_tag(&repo, &tag("v1"), &image.digest).await.unwrap();
    store.health().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsBlobStore::open(dir.path(), false).unwrap();
    let registry = Registry::new(blobs, store.clone(), Config::default()).unwrap();

    server.stop();
    let ready = get(&registry, "/readyz").await;
    assert_eq!(ready.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    for path in ["/v2/outage/manifests/v1", "/v2/outage/tags/list", "/v2/_catalog"] {
        let response = get(&registry, path).await;
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let retry = response.headers().get(http::header::RETRY_AFTER);
        assert!(retry.is_some(), "{path}: Retry-After");
    }
    assert_unavailable(store.health().await);
    assert_unavailable(store.resolve_tag(&repo, &tag("v1")).await);
    assert_unavailable(store.set_tag(&repo, &tag("v2"), &image.digest).await);
    let started = std::time::Instant::now();
    assert_unavailable(store.manifest(&repo, &image.digest).await);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails fast, does not hang"
    );

    server.resume();
    store.health().await.unwrap();
    assert_eq!(
        store.resolve_tag(&repo, &tag("v1")).await.unwrap(),
        Some(image.digest.clone())
    );
    store.set_tag(&repo, &tag("v2"), &image.digest).await.unwrap();
    assert_eq!(store.list_tags(&repo).await.unwrap().len(), 2);
    for path in ["/readyz", "/v2/outage/tags/list", "/v2/_catalog"] {
        assert_eq!(
            get(&registry, path).await.status(),
            http::StatusCode::OK,
            "{path}"
        );
    }
}
