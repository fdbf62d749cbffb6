//! The [`MetadataStore`] methods, one SQL statement each (see the module docs of
//! [`super`] for why that is what makes them atomic across replicas).

use std::fmt::Display;
use std::io;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Client;
use rbuild_oci::{Digest, RepositoryName, Tag};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{Row, Statement};

use super::{BACKEND, PgMetadataStore, query_error};
use crate::storage::{
    LinkInfo, ManifestInfo, ManifestRecord, MetadataStore, Page, PageRequest, StorageError, StorageResult,
    TagInfo, UploadId, UploadSession,
};

/// The columns [`record`] reads, in its order, then `touched`.
macro_rules! manifest_columns {
    () => {
        "digest, media_type, size, subject, artifact_type, annotations, touched"
    };
}

/// Inserts the repository in the same statement as what follows (a data-modifying CTE), so the
/// first push to a repository is still a single statement.
macro_rules! with_repository {
    ($rest:literal) => {
        concat!(
            "WITH repository AS (INSERT INTO repositories (name) VALUES ($1) ON CONFLICT DO NOTHING) ",
            $rest
        )
    };
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

impl PgMetadataStore {
    /// A pooled connection and `sql` prepared on it (once per connection, then cached).
    async fn prepare(&self, context: &str, sql: &str) -> StorageResult<(Client, Statement)> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| query_error(context, e))?;
        Ok((client, statement))
    }

    /// Runs one statement and returns its rows.
    async fn query(&self, context: &str, sql: &str, params: &Params<'_>) -> StorageResult<Vec<Row>> {
        let (client, statement) = self.prepare(context, sql).await?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| query_error(context, e))
    }

    /// Runs one statement and reads each row it returns with `read`.
    async fn query_map<T>(
        &self,
        context: &str,
        sql: &str,
        params: &Params<'_>,
        read: impl Fn(&Row) -> StorageResult<T>,
    ) -> StorageResult<Vec<T>> {
        self.query(context, sql, params).await?.iter().map(read).collect()
    }

    /// Runs one statement and returns how many rows it changed.
    async fn execute(&self, context: &str, sql: &str, params: &Params<'_>) -> StorageResult<u64> {
        let (client, statement) = self.prepare(context, sql).await?;
        client
            .execute(&statement, params)
            .await
            .map_err(|e| query_error(context, e))
    }
}

/// Parses a name or digest the database holds.
fn parse<T: FromStr>(what: &str, text: &str) -> StorageResult<T>
where
    T::Err: Display,
{
    text.parse().map_err(|e: T::Err| {
        StorageError::io(
            format!("reading {what} {text:?} from the database"),
            io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        )
    })
}

/// A manifest row ([`manifest_columns!`]) as its record.
fn record(row: &Row) -> StorageResult<ManifestRecord> {
    let size: i64 = row.get(2);
    Ok(ManifestRecord {
        digest: parse("manifest digest", row.get(0))?,
        media_type: row.get(1),
        size: u64::try_from(size).unwrap_or_default(),
        subject: row
            .get::<_, Option<&str>>(3)
            .map(|s| parse("subject digest", s))
            .transpose()?,
        artifact_type: row.get(4),
        annotations: row.get::<_, Json<_>>(5).0,
    })
}

/// An upload's start time from its `started_ns`.
fn started(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or_default())
}

/// The `LIMIT` that tells whether more entries follow a page.
fn limit(request: &PageRequest) -> i64 {
    i64::try_from(request.limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// The key a page starts after; every name sorts after the empty string.
fn after(request: &PageRequest) -> &str {
    request.after.as_deref().unwrap_or("")
}

impl MetadataStore for PgMetadataStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn health(&self) -> StorageResult<()> {
        self.query("checking the database", "SELECT 1", &[])
            .await
            .map(drop)
    }

    async fn link_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<()> {
        let sql = with_repository!(
            "INSERT INTO blob_links (repository, digest, touched) VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (repository, digest) DO UPDATE SET touched = excluded.touched"
        );
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        self.execute("linking a blob", sql, params).await.map(drop)
    }

    async fn blob_linked(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let sql = "SELECT 1 FROM blob_links WHERE repository = $1 AND digest = $2";
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        Ok(!self
            .query("looking up a blob link", sql, params)
            .await?
            .is_empty())
    }

    async fn unlink_blob(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let sql = "DELETE FROM blob_links WHERE repository = $1 AND digest = $2";
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        Ok(self.execute("unlinking a blob", sql, params).await? > 0)
    }

    async fn put_manifest(&self, repo: &RepositoryName, record: &ManifestRecord) -> StorageResult<()> {
        let sql = with_repository!(
            "INSERT INTO manifests (repository, digest, media_type, size, subject, artifact_type,
                                    annotations, touched)
             VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp())
             ON CONFLICT (repository, digest) DO UPDATE SET
                 media_type = excluded.media_type, size = excluded.size,
                 subject = excluded.subject, artifact_type = excluded.artifact_type,
                 annotations = excluded.annotations, touched = excluded.touched"
        );
        let size = i64::try_from(record.size).map_err(|_| {
            StorageError::io(
                "recording a manifest",
                io::Error::new(io::ErrorKind::InvalidInput, "manifest size out of range"),
            )
        })?;
        let subject = record.subject.as_ref().map(Digest::to_string);
        let params: &Params = &[
            &repo.as_str(),
            &record.digest.to_string(),
            &record.media_type,
            &size,
            &subject,
            &record.artifact_type,
            &Json(&record.annotations),
        ];
        self.execute("recording a manifest", sql, params).await.map(drop)
    }

    async fn manifest(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
    ) -> StorageResult<Option<ManifestRecord>> {
        let sql = concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests WHERE repository = $1 AND digest = $2"
        );
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        let rows = self.query("reading a manifest", sql, params).await?;
        rows.first().map(record).transpose()
    }

    async fn delete_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        // The tags go with it (ON DELETE CASCADE), and the row is its referrers-index entry.
        let sql = "DELETE FROM manifests WHERE repository = $1 AND digest = $2";
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        Ok(self.execute("deleting a manifest", sql, params).await? > 0)
    }

    async fn set_tag(&self, repo: &RepositoryName, tag: &Tag, digest: &Digest) -> StorageResult<()> {
        let sql =
            "INSERT INTO tags (repository, name, digest, touched) VALUES ($1, $2, $3, clock_timestamp())
                   ON CONFLICT (repository, name) DO UPDATE SET
                       digest = excluded.digest, touched = excluded.touched";
        let params: &Params = &[&repo.as_str(), &tag.as_str(), &digest.to_string()];
        self.execute("setting a tag", sql, params).await.map(drop)
    }

    async fn resolve_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<Option<Digest>> {
        let sql = "SELECT digest FROM tags WHERE repository = $1 AND name = $2";
        let params: &Params = &[&repo.as_str(), &tag.as_str()];
        let rows = self.query("resolving a tag", sql, params).await?;
        rows.first()
            .map(|row| parse("tag target", row.get(0)))
            .transpose()
    }

    async fn delete_tag(&self, repo: &RepositoryName, tag: &Tag) -> StorageResult<bool> {
        let sql = "DELETE FROM tags WHERE repository = $1 AND name = $2";
        let params: &Params = &[&repo.as_str(), &tag.as_str()];
        Ok(self.execute("deleting a tag", sql, params).await? > 0)
    }

    async fn tags(&self, repo: &RepositoryName, request: &PageRequest) -> StorageResult<Option<Page<Tag>>> {
        // No row: no such repository; one row with a NULL tag: a repository without tags.
        let sql = "SELECT t.name FROM repositories r
                   LEFT JOIN LATERAL (SELECT name FROM tags WHERE repository = r.name AND name > $2
                                      ORDER BY name LIMIT $3) t ON true
                   WHERE r.name = $1";
        let params: &Params = &[&repo.as_str(), &after(request), &limit(request)];
        let rows = self.query("listing tags", sql, params).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let tags = rows
            .iter()
            .filter_map(|row| row.get::<_, Option<&str>>(0))
            .map(|name| parse("tag", name))
            .collect::<StorageResult<Vec<Tag>>>()?;
        Ok(Some(Page::first(tags, request.limit)))
    }

    async fn referrers(
        &self,
        repo: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
        request: &PageRequest,
    ) -> StorageResult<Page<ManifestRecord>> {
        let sql = concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests
              WHERE repository = $1 AND subject = $2 AND ($3::text IS NULL OR artifact_type = $3)
                AND digest > $4
              ORDER BY digest LIMIT $5"
        );
        let params: &Params = &[
            &repo.as_str(),
            &subject.to_string(),
            &artifact_type,
            &after(request),
            &limit(request),
        ];
        let records = self.query_map("listing referrers", sql, params, record).await?;
        Ok(Page::first(records, request.limit))
    }

    async fn repositories(&self, request: &PageRequest) -> StorageResult<Page<RepositoryName>> {
        let sql = "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2";
        let params: &Params = &[&after(request), &limit(request)];
        let read = |row: &Row| parse("repository name", row.get(0));
        let names = self.query_map("listing repositories", sql, params, read).await?;
        Ok(Page::first(names, request.limit))
    }

    async fn create_upload(&self, repo: &RepositoryName, session: &UploadSession) -> StorageResult<()> {
        let sql = "INSERT INTO uploads (id, repository, started_ns) VALUES ($1, $2, $3)
                   ON CONFLICT (id) DO UPDATE SET repository = excluded.repository,
                                                  started_ns = excluded.started_ns";
        let started = session
            .started
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|since| i64::try_from(since.as_nanos()).ok())
            .ok_or_else(|| {
                StorageError::io(
                    "recording an upload",
                    io::Error::new(io::ErrorKind::InvalidInput, "start time out of range"),
                )
            })?;
        let params: &Params = &[&session.id.0, &repo.as_str(), &started];
        self.execute("recording an upload", sql, params).await.map(drop)
    }

    async fn upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<Option<UploadSession>> {
        let sql = "SELECT started_ns FROM uploads WHERE id = $1 AND repository = $2";
        let params: &Params = &[&id.0, &repo.as_str()];
        let rows = self.query("reading an upload", sql, params).await?;
        Ok(rows.first().map(|row| UploadSession {
            id: id.clone(),
            started: started(row.get(0)),
        }))
    }

    async fn delete_upload(&self, repo: &RepositoryName, id: &UploadId) -> StorageResult<()> {
        let sql = "DELETE FROM uploads WHERE id = $1 AND repository = $2";
        let params: &Params = &[&id.0, &repo.as_str()];
        self.execute("forgetting an upload", sql, params).await.map(drop)
    }

    async fn uploads(&self) -> StorageResult<Vec<(RepositoryName, UploadSession)>> {
        let sql = "SELECT repository, id, started_ns FROM uploads ORDER BY started_ns";
        self.query_map("listing uploads", sql, &[], |row| {
            let session = UploadSession {
                id: UploadId(row.get(1)),
                started: started(row.get(2)),
            };
            Ok((parse("repository name", row.get(0))?, session))
        })
        .await
    }

    async fn list_links(&self, repo: &RepositoryName) -> StorageResult<Vec<LinkInfo>> {
        let sql = "SELECT digest, touched FROM blob_links WHERE repository = $1 ORDER BY digest";
        self.query_map("listing blob links", sql, &[&repo.as_str()], |row| {
            Ok(LinkInfo {
                digest: parse("blob digest", row.get(0))?,
                touched: row.get(1),
            })
        })
        .await
    }

    async fn list_manifests(&self, repo: &RepositoryName) -> StorageResult<Vec<ManifestInfo>> {
        let sql = concat!(
            "SELECT ",
            manifest_columns!(),
            " FROM manifests WHERE repository = $1 ORDER BY digest"
        );
        self.query_map("listing manifests", sql, &[&repo.as_str()], |row| {
            Ok(ManifestInfo {
                record: record(row)?,
                touched: row.get(6),
            })
        })
        .await
    }

    async fn list_tags(&self, repo: &RepositoryName) -> StorageResult<Vec<TagInfo>> {
        let sql = "SELECT name, digest, touched FROM tags WHERE repository = $1 ORDER BY name";
        self.query_map("listing tags", sql, &[&repo.as_str()], |row| {
            Ok(TagInfo {
                tag: parse("tag", row.get(0))?,
                digest: parse("tag target", row.get(1))?,
                touched: row.get(2),
            })
        })
        .await
    }

    async fn touch_link(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let sql = "UPDATE blob_links SET touched = clock_timestamp() WHERE repository = $1 AND digest = $2";
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        Ok(self.execute("touching a blob link", sql, params).await? > 0)
    }

    async fn touch_manifest(&self, repo: &RepositoryName, digest: &Digest) -> StorageResult<bool> {
        let sql = "UPDATE manifests SET touched = clock_timestamp() WHERE repository = $1 AND digest = $2";
        let params: &Params = &[&repo.as_str(), &digest.to_string()];
        Ok(self.execute("touching a manifest", sql, params).await? > 0)
    }

    async fn unlink_blob_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let sql = "DELETE FROM blob_links WHERE repository = $1 AND digest = $2 AND touched < $3";
        let params: &Params = &[&repo.as_str(), &digest.to_string(), &cutoff];
        Ok(self.execute("unlinking an idle blob", sql, params).await? > 0)
    }

    async fn delete_manifest_if_idle(
        &self,
        repo: &RepositoryName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        // A manifest a tag still points at stays: deleting it would take the tag along.
        let sql = "DELETE FROM manifests m WHERE repository = $1 AND digest = $2 AND touched < $3
                   AND NOT EXISTS (SELECT 1 FROM tags t
                                   WHERE t.repository = m.repository AND t.digest = m.digest)";
        let params: &Params = &[&repo.as_str(), &digest.to_string(), &cutoff];
        Ok(self.execute("deleting an idle manifest", sql, params).await? > 0)
    }

    async fn delete_tag_if_idle(
        &self,
        repo: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> StorageResult<bool> {
        let sql = "DELETE FROM tags WHERE repository = $1 AND name = $2 AND digest = $3 AND touched < $4";
        let params: &Params = &[&repo.as_str(), &tag.as_str(), &digest.to_string(), &cutoff];
        Ok(self.execute("deleting an idle tag", sql, params).await? > 0)
    }
}
