//! The schema, as numbered SQL files compiled into the binary and applied in order.
//!
//! `schema_migrations` records which versions a database has. Every replica runs the missing
//! ones at start-up (and `rbuild registry migrate` does so on demand) in one transaction that
//! first takes a transaction-scoped advisory lock: replicas starting at once queue on the lock,
//! and the first applies the migrations while the others then find nothing left to do. DDL is
//! transactional in PostgreSQL, so a migration that fails leaves the schema as it was.

use std::fmt;

use super::{PgMetadataStore, query_error};
use crate::storage::StorageResult;

/// One schema change.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in version order. A released one is never edited: a change is a new file.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: include_str!("migrations/0001_initial.sql"),
}];

/// The advisory-lock key the migrating transaction holds ("rbuild" and 1, as bytes).
const LOCK_KEY: i64 = 0x7262_7569_6c64_0001;

/// What a migration run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migrated {
    /// The versions applied now, with their names.
    pub applied: Vec<(i32, &'static str)>,
    /// The schema version the database is at afterwards.
    pub version: i32,
}

impl fmt::Display for Migrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (version, name) in &self.applied {
            writeln!(f, "applied {version:04}_{name}")?;
        }
        write!(f, "schema at version {}", self.version)
    }
}

impl PgMetadataStore {
    /// Applies the migrations the database lacks.
    pub async fn migrate(&self) -> StorageResult<Migrated> {
        let context = "migrating the schema";
        let error = |e| query_error(context, e);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(error)?;
        // `client_min_messages`: no "already exists, skipping" notice in every start-up's log.
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied timestamptz NOT NULL DEFAULT clock_timestamp()
            )",
        )
        .await
        .map_err(error)?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut applied = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            tx.batch_execute(migration.sql).await.map_err(error)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&migration.version, &migration.name],
            )
            .await
            .map_err(error)?;
            applied.push((migration.version, migration.name));
        }
        tx.commit().await.map_err(error)?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        let version = done.iter().copied().chain([known]).max().unwrap_or(known);
        if version > known {
            tracing::warn!(
                version,
                known,
                "the database schema is newer than this rbuild knows; a newer replica migrated it"
            );
        }
        Ok(Migrated { applied, version })
    }
}
