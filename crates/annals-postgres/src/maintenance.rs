//! The maintenance path: importing events and secrets recorded elsewhere, and clearing
//! them (allowed while the store is frozen).
//!
//! Each call is one transaction that takes the store's head row first, exactly like an
//! append: an imported batch gets positions `head + 1 …` under that lock, so appends of
//! any process before and after it stay dense and in commit order, and `expected_head`
//! is compared with the head read under the lock. The state the planner
//! ([`annals_core::import`]) needs — stream versions, which `(stream, version)` pairs and
//! which ids are stored — is read inside the transaction, after the lock was granted.
//! The events are written by the appender's one multi-row statement, so an imported
//! event is stored exactly like an appended one.

use std::collections::{HashMap, HashSet};

use annals_core::append::{position_of_generated_id, AppendPlan};
use annals_core::import::{
    plan_events, plan_secrets, validate_events, validate_secrets, ImportState, SecretImportState,
};
use annals_core::{
    Error, ImportBatch, ImportOutcome, OnConflict, Result, SecretImport, StreamId, Text, Version,
};
use sqlx::{PgConnection, Row};

use crate::appender::{stored_streams, write, Group, HeadRow, Known};
use crate::error::db_error;
use crate::read::{event_from_row, to_sql};
use crate::Shared;

/// What an import batch is planned against.
struct Stored {
    known: HashMap<StreamId, Known>,
    /// Stored `(stream number, version)` pairs among those the batch names.
    versions: HashSet<(i64, Version)>,
    /// Stored ids among those the batch names.
    ids: HashSet<Text>,
}

impl ImportState for Stored {
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        Ok(self.known.get(stream).map_or(0, |k| k.version))
    }

    fn has_version(&mut self, stream: &StreamId, version: Version) -> Result<bool> {
        let number = self.known.get(stream).and_then(|k| k.number);
        Ok(number.is_some_and(|n| self.versions.contains(&(n, version))))
    }

    fn has_id(&mut self, id: &str) -> Result<bool> {
        Ok(self.ids.contains(id))
    }
}

/// Takes the head row of the store for the open transaction on `conn`.
async fn lock_head(conn: &mut PgConnection, shared: &Shared) -> Result<HeadRow> {
    let row = sqlx::query(&shared.sql.lock_head)
        .bind(shared.store_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| crate::store_gone_named(&shared.name))?;
    HeadRow::from_row(&row).map_err(db_error)
}

/// Reads what the batch's events need to be planned, under the head row lock.
async fn read_stored(
    conn: &mut PgConnection,
    shared: &Shared,
    batch: &ImportBatch,
) -> Result<Stored> {
    let store = shared.store_id;
    let mut streams: Vec<&StreamId> = Vec::new();
    let mut seen = HashSet::new();
    for e in &batch.events {
        if seen.insert(&e.stream) {
            streams.push(&e.stream);
        }
    }
    let known = stored_streams(&mut *conn, shared, &streams).await?;
    // Only versions at or below a stream's stored version can be stored.
    let (mut numbers, mut versions) = (Vec::new(), Vec::new());
    for e in &batch.events {
        if let Some(Known {
            number: Some(n),
            version,
        }) = known.get(&e.stream)
        {
            if e.version <= *version {
                numbers.push(*n);
                versions.push(to_sql(e.version));
            }
        }
    }
    let mut stored_versions = HashSet::new();
    if !numbers.is_empty() {
        let rows = sqlx::query(&shared.sql.stored_versions)
            .bind(store)
            .bind(numbers)
            .bind(versions)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        for row in rows {
            let n: i64 = row.try_get(0).map_err(db_error)?;
            let v: i64 = row.try_get(1).map_err(db_error)?;
            stored_versions.insert((n, v.max(0) as Version));
        }
    }
    let ids: Vec<&str> = batch.events.iter().map(|e| e.id.as_str()).collect();
    let positions: Vec<i64> = ids
        .iter()
        .filter_map(|id| position_of_generated_id(id))
        .map(to_sql)
        .collect();
    let wanted: HashSet<&str> = ids.iter().copied().collect();
    let mut stored_ids = HashSet::new();
    if !ids.is_empty() {
        let rows = sqlx::query(&shared.sql.events_by_id)
            .bind(store)
            .bind(&ids)
            .bind(positions)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?;
        for row in &rows {
            let e = event_from_row(row, 0)?;
            if wanted.contains(e.id.as_str()) {
                stored_ids.insert(e.id);
            }
        }
    }
    Ok(Stored {
        known,
        versions: stored_versions,
        ids: stored_ids,
    })
}

/// Imports one batch of events in one transaction (see the module documentation).
pub(crate) async fn import_events(shared: &Shared, batch: ImportBatch) -> Result<ImportOutcome> {
    validate_events(&batch)?;
    for (i, e) in batch.events.iter().enumerate() {
        if e.version > i64::MAX as u64 {
            return Err(Error::invalid(
                format!("events[{i}].version"),
                format!("must be at most {} on PostgreSQL", i64::MAX),
            ));
        }
    }
    let mut tx = shared.pool.begin().await.map_err(db_error)?;
    let at = lock_head(&mut tx, shared).await?;
    let mut stored = read_stored(&mut tx, shared, &batch).await?;
    let plan = plan_events(&mut stored, at.head, batch)?;
    let imported = plan.events.len() as u64;
    if plan.events.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(ImportOutcome {
            imported,
            skipped: plan.skipped,
            head_position: at.head,
        });
    }
    let mut group = Group::new(at.head, at.generation, at.last_timestamp, at.stream_count);
    group.apply(
        AppendPlan::Write {
            commit_id: Text::default(),
            events: plan.events,
            replaced: Vec::new(),
            secret: None,
        },
        &stored.known,
    );
    let head = write(&mut tx, shared, &group, true)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            crate::error::corrupted(
                format!("postgres table stores, store {}", shared.name),
                "the head row changed while an import held its lock",
            )
        })?;
    tx.commit().await.map_err(db_error)?;
    shared.publish(head);
    Ok(ImportOutcome {
        imported,
        skipped: plan.skipped,
        head_position: head,
    })
}

/// Deletes every event, stream, stream snapshot and dispatch mark of the store; the
/// head goes back to 0 and the head row's generation moves on (appenders that remember
/// the old head re-read).
pub(crate) async fn clear_events(shared: &Shared) -> Result<()> {
    let mut tx = shared.pool.begin().await.map_err(db_error)?;
    lock_head(&mut tx, shared).await?;
    for statement in &shared.sql.clear_events {
        sqlx::query(statement)
            .bind(shared.store_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    shared.restart_head();
    Ok(())
}

/// Deletes every secret and tombstone; the next idx is 0 again.
pub(crate) async fn clear_secrets(shared: &Shared) -> Result<()> {
    let mut tx = shared.pool.begin().await.map_err(db_error)?;
    lock_head(&mut tx, shared).await?;
    for statement in &shared.sql.clear_secrets {
        sqlx::query(statement)
            .bind(shared.store_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)
}

/// Stored secret ids and idx among those an import names.
struct StoredSecrets {
    ids: HashSet<String>,
    idx: HashSet<u64>,
}

impl SecretImportState for StoredSecrets {
    fn has_secret_id(&mut self, id: &str) -> Result<bool> {
        Ok(self.ids.contains(id))
    }

    fn has_secret_idx(&mut self, idx: u64) -> Result<bool> {
        Ok(self.idx.contains(&idx))
    }
}

/// Imports secrets in one transaction under the head row lock.
pub(crate) async fn import_secrets(
    shared: &Shared,
    secrets: Vec<SecretImport>,
    on_conflict: OnConflict,
) -> Result<ImportOutcome> {
    validate_secrets(&secrets)?;
    for (i, s) in secrets.iter().enumerate() {
        if s.idx.is_some_and(|idx| idx >= i64::MAX as u64) {
            return Err(Error::invalid(
                format!("secrets[{i}].idx"),
                format!("must be below {} on PostgreSQL", i64::MAX),
            ));
        }
    }
    let store = shared.store_id;
    let mut tx = shared.pool.begin().await.map_err(db_error)?;
    let row = sqlx::query(&shared.sql.lock_secrets)
        .bind(store)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or_else(|| crate::store_gone_named(&shared.name))?;
    let head: i64 = row.try_get(0).map_err(db_error)?;
    let next_idx: i64 = row.try_get(1).map_err(db_error)?;
    let ids: Vec<&str> = secrets.iter().map(|s| s.id.as_str()).collect();
    let idx: Vec<i64> = secrets.iter().filter_map(|s| s.idx).map(to_sql).collect();
    let rows = sqlx::query(&shared.sql.stored_secrets)
        .bind(store)
        .bind(&ids)
        .bind(&idx)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
    let mut state = StoredSecrets {
        ids: HashSet::new(),
        idx: HashSet::new(),
    };
    for row in rows {
        let i: i64 = row.try_get(0).map_err(db_error)?;
        state.idx.insert(i.max(0) as u64);
        state.ids.insert(row.try_get(1).map_err(db_error)?);
    }
    let plan = plan_secrets(&mut state, next_idx.max(0) as u64, secrets, on_conflict)?;
    let imported = plan.secrets.len() as u64;
    if imported > 0 {
        let idx: Vec<i64> = plan.secrets.iter().map(|s| to_sql(s.idx)).collect();
        let ids: Vec<&str> = plan.secrets.iter().map(|s| s.id.as_str()).collect();
        let values: Vec<Option<&[u8]>> = plan
            .secrets
            .iter()
            .map(|s| s.secret.as_deref().map(str::as_bytes))
            .collect();
        let tombstones = values.iter().filter(|v| v.is_none()).count() as i64;
        sqlx::query(&shared.sql.import_secrets)
            .bind(store)
            .bind(idx)
            .bind(ids)
            .bind(values)
            .bind(to_sql(plan.next_idx))
            .bind(tombstones)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(ImportOutcome {
        imported,
        skipped: plan.skipped,
        head_position: head.max(0) as u64,
    })
}
