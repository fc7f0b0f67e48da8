//! The tables, their versioned migrations, and every SQL statement the backend runs,
//! with the configured schema name filled in once.
//!
//! All tables live in one schema (default `annals`) and hold the rows of every store in
//! the database, keyed by the store's number (`stores.id`). Migrations are numbered;
//! `schema_migrations` records the applied ones. A process migrates under an advisory
//! lock, so several processes starting at once apply each migration exactly once, and a
//! process refuses a schema migrated by a newer Annals than itself.

use annals_core::{Error, Result};
use sqlx::{Connection, PgConnection, Row};

use crate::error::db_error;

/// One numbered schema change. `{s}` in the SQL stands for the quoted schema name.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// Every migration, oldest first. Never edit a released one: add the next.
const MIGRATIONS: &[Migration] = &[
    Migration {
    version: 1,
    description: "stores, events, streams, snapshots, secrets",
    sql: r#"
CREATE TABLE {s}.stores (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                 text COLLATE "C" NOT NULL UNIQUE,
    head                 bigint  NOT NULL DEFAULT 0,
    last_timestamp       bigint,
    frozen               boolean NOT NULL DEFAULT false,
    stream_count         bigint  NOT NULL DEFAULT 0,
    secret_count         bigint  NOT NULL DEFAULT 0,
    deleted_secret_count bigint  NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.events (
    store_id        integer NOT NULL,
    position        bigint  NOT NULL,
    stream_no       bigint  NOT NULL,
    version         bigint  NOT NULL,
    timestamp_ms    bigint  NOT NULL,
    commit_sequence integer NOT NULL,
    generated_id    boolean NOT NULL,
    dispatched      boolean NOT NULL DEFAULT false,
    event_id        text COLLATE "C" NOT NULL,
    context         text COLLATE "C" NOT NULL,
    aggregate       text COLLATE "C" NOT NULL,
    stream_id       text COLLATE "C" NOT NULL,
    event_type      text COLLATE "C" NOT NULL,
    commit_id       text COLLATE "C" NOT NULL,
    payload         bytea   NOT NULL,
    metadata        bytea   NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (store_id, position),
    CONSTRAINT events_stream_version_key UNIQUE (store_id, stream_no, version)
);
-- Ids the store generated carry their position; only caller-supplied ids need an entry.
CREATE UNIQUE INDEX events_event_id_key ON {s}.events (store_id, event_id) WHERE NOT generated_id;
CREATE TABLE {s}.streams (
    store_id        integer NOT NULL,
    context         text COLLATE "C" NOT NULL,
    aggregate       text COLLATE "C" NOT NULL,
    stream_id       text COLLATE "C" NOT NULL,
    stream_no       bigint  NOT NULL,
    first_timestamp bigint  NOT NULL,
    first_position  bigint  NOT NULL,
    CONSTRAINT streams_pkey PRIMARY KEY (store_id, context, aggregate, stream_id),
    CONSTRAINT streams_stream_no_key UNIQUE (store_id, stream_no)
);
CREATE INDEX streams_by_first_event ON {s}.streams (store_id, first_timestamp, first_position);
CREATE TABLE {s}.keyed_snapshots (
    store_id     integer NOT NULL,
    key          text COLLATE "C" NOT NULL,
    content      bytea   NOT NULL,
    timestamp_ms bigint  NOT NULL,
    PRIMARY KEY (store_id, key)
);
CREATE TABLE {s}.stream_snapshots (
    store_id       integer NOT NULL,
    context        text COLLATE "C" NOT NULL,
    aggregate      text COLLATE "C" NOT NULL,
    stream_id      text COLLATE "C" NOT NULL,
    stream_version bigint  NOT NULL,
    seq            bigint  GENERATED ALWAYS AS IDENTITY,
    snapshot_id    text COLLATE "C" NOT NULL,
    schema_version bigint  NOT NULL,
    data           bytea   NOT NULL,
    timestamp_ms   bigint  NOT NULL,
    PRIMARY KEY (store_id, context, aggregate, stream_id, stream_version, seq)
);
CREATE TABLE {s}.secrets (
    store_id  integer NOT NULL,
    idx       bigint  NOT NULL,
    secret_id text COLLATE "C" NOT NULL,
    secret    bytea,
    PRIMARY KEY (store_id, idx),
    UNIQUE (store_id, secret_id)
);
"#,
    },
    Migration {
        version: 2,
        description: "events keep index and filter columns plus one packed record; listener pids on the head row",
        sql: r#"
ALTER TABLE {s}.events RENAME TO events_v1;
ALTER TABLE {s}.events_v1 RENAME CONSTRAINT events_pkey TO events_v1_pkey;
ALTER TABLE {s}.events_v1 RENAME CONSTRAINT events_stream_version_key TO events_v1_stream_version_key;
ALTER INDEX {s}.events_event_id_key RENAME TO events_v1_event_id_key;
CREATE TABLE {s}.events (
    position     bigint  NOT NULL,
    stream_no    bigint  NOT NULL,
    version      bigint  NOT NULL,
    timestamp_ms bigint  NOT NULL,
    store_id     integer NOT NULL,
    dispatched   boolean NOT NULL DEFAULT false,
    event_type   text COLLATE "C" NOT NULL,
    event_id     text COLLATE "C",
    record       bytea   NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (store_id, position),
    CONSTRAINT events_stream_version_key UNIQUE (store_id, stream_no, version)
);
INSERT INTO {s}.events (position, stream_no, version, timestamp_ms, store_id, dispatched,
    event_type, event_id, record)
SELECT position, stream_no, version, timestamp_ms, store_id, dispatched, event_type,
    CASE WHEN generated_id THEN NULL ELSE event_id END, {pack_v1_row}
FROM {s}.events_v1;
-- Ids the store generated carry their position (and are inside the record); only
-- caller-supplied ids have the column set and an index entry.
CREATE UNIQUE INDEX events_event_id_key ON {s}.events (store_id, event_id)
    WHERE event_id IS NOT NULL;
DROP TABLE {s}.events_v1;
ALTER TABLE {s}.stores ADD COLUMN listener_pids integer[] NOT NULL DEFAULT '{}';
ALTER TABLE {s}.stores ADD COLUMN generation bigint NOT NULL DEFAULT 0;
"#,
    },
];

/// The newest schema version this build knows.
pub(crate) fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Checks a schema name: lower-case ASCII letters, digits and `_`, starting with a
/// letter or `_`, at most 40 bytes (so channel names derived from it stay under
/// PostgreSQL's 63-byte identifier limit).
///
/// ```
/// use annals_postgres::check_schema_name;
/// assert!(check_schema_name("annals").is_ok());
/// assert!(check_schema_name("Annals").is_err());
/// assert!(check_schema_name("a; DROP TABLE x").is_err());
/// ```
pub fn check_schema_name(schema: &str) -> Result<()> {
    let ok_start = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok_start || !ok_rest || schema.len() > 40 {
        return Err(Error::invalid(
            "schema",
            format!(
                "{schema:?} is not a schema name Annals accepts: 1 to 40 of a-z, 0-9 and _, not starting with a digit"
            ),
        ));
    }
    Ok(())
}

/// Creates the schema if needed and applies every migration it lacks, under an
/// advisory lock held for the transaction. Returns the schema version.
pub(crate) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<i32> {
    let s = quoted(schema);
    let mut tx = conn.begin().await.map_err(db_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("annals-migrations:{schema}"))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    );
    sqlx::raw_sql(&setup)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let current: i32 = sqlx::query(&format!(
        "SELECT coalesce(max(version), 0) FROM {s}.schema_migrations"
    ))
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get(0))
    .map_err(db_error)?;
    if current > latest_version() {
        return Err(Error::backend(
            "postgres",
            std::io::Error::other(format!(
                "schema {schema} is at version {current}, migrated by a newer Annals; this build knows versions up to {}",
                latest_version()
            )),
        ));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = m
            .sql
            .replace("{pack_v1_row}", crate::record::PACK_V1_ROW)
            .replace("{s}", &s);
        sqlx::raw_sql(&sql)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(&format!(
            "INSERT INTO {s}.schema_migrations (version, description) VALUES ($1, $2)"
        ))
        .bind(m.version)
        .bind(m.description)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(latest_version())
}

/// A schema name in double quotes (it is validated to need no escaping).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The columns of an event row, in the order [`crate::read::event_from_row`] decodes.
pub(crate) const EVENT_COLUMNS: &str =
    "position, version, timestamp_ms, dispatched, event_type, record";

/// [`EVENT_COLUMNS`] qualified by a table alias.
pub(crate) fn event_columns(alias: &str) -> String {
    EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The newest event of the stream of the `streams` row `s` (a lateral subquery).
pub(crate) fn last_event(schema: &str) -> String {
    format!(
        "SELECT version, position FROM {schema}.events e
         WHERE e.store_id = s.store_id AND e.stream_no = s.stream_no
         ORDER BY version DESC LIMIT 1"
    )
}

/// Every statement with a fixed text, built once per schema.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The quoted schema name, for statements built per call (filtered reads).
    pub schema: String,
    pub create_store: String,
    pub create_store_returning: String,
    pub list_stores: String,
    pub store_id: String,
    pub head: String,
    pub describe: String,
    /// Locks the head row; `{id}` is replaced by the store number (an integer).
    pub begin_and_lock: String,
    pub stream_versions: String,
    pub events_by_id: String,
    pub events_at_versions: String,
    pub secrets_by_id: String,
    pub apply_changes: String,
    pub write_batch: String,
    pub read_stream_forward: String,
    pub read_stream_backward: String,
    pub stream_info: String,
    pub freeze: String,
    pub unfreeze: String,
    pub lock_store: String,
    pub save_snapshot: String,
    pub load_snapshot: String,
    pub drop_snapshot: String,
    pub list_snapshots: String,
    pub import_snapshots: String,
    pub save_stream_snapshot: String,
    pub latest_stream_snapshot: String,
    pub prune_stream_snapshots: String,
    pub list_stream_snapshots: String,
    pub secret_exists: String,
    pub insert_secret: String,
    pub get_secret: String,
    pub erase_secret: String,
    pub count_deleted_secret: String,
    pub list_secrets: String,
    pub mark_dispatched: String,
    pub lock_head: String,
    pub stored_versions: String,
    pub clear_events: Vec<String>,
    pub clear_secrets: Vec<String>,
    pub lock_secrets: String,
    pub stored_secrets: String,
    pub import_secrets: String,
    pub mark_dispatched_at: String,
    pub mark_dispatched_positions: String,
    pub register_listener: String,
    pub unregister_listener: String,
    pub drop_store: Vec<String>,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quoted(schema);
        let stream_key = "context = $2 AND aggregate = $3 AND stream_id = $4";
        // The number of the stream named by $2, $3, $4.
        let stream_no = format!(
            "(SELECT stream_no FROM {s}.streams
              WHERE store_id = $1 AND context = $2 AND aggregate = $3 AND stream_id = $4)"
        );
        Sql {
            create_store: format!(
                "INSERT INTO {s}.stores (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
            ),
            create_store_returning: format!(
                "INSERT INTO {s}.stores (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id"
            ),
            list_stores: format!("SELECT name FROM {s}.stores ORDER BY name"),
            store_id: format!("SELECT id FROM {s}.stores WHERE name = $1"),
            head: format!("SELECT head FROM {s}.stores WHERE id = $1"),
            // Secrets are counted (imports may leave idx gaps, so the next idx is no count).
            describe: format!(
                "SELECT h.head, h.last_timestamp, h.frozen, h.stream_count, c.total, c.deleted
                 FROM {s}.stores h CROSS JOIN (
                     SELECT count(*) AS total, count(*) FILTER (WHERE secret IS NULL) AS deleted
                     FROM {s}.secrets WHERE store_id = $1) c
                 WHERE h.id = $1"
            ),
            lock_head: format!(
                "SELECT head, last_timestamp, frozen, stream_count, generation, secret_count
                 FROM {s}.stores
                 WHERE id = $1 FOR NO KEY UPDATE"
            ),
            stored_versions: format!(
                "SELECT stream_no, version FROM {s}.events
                 WHERE store_id = $1 AND (stream_no, version) IN (
                     SELECT * FROM unnest($2::bigint[], $3::bigint[]))"
            ),
            clear_events: vec![
                format!("DELETE FROM {s}.events WHERE store_id = $1"),
                format!("DELETE FROM {s}.streams WHERE store_id = $1"),
                format!("DELETE FROM {s}.stream_snapshots WHERE store_id = $1"),
                format!(
                    "UPDATE {s}.stores SET head = 0, last_timestamp = NULL, stream_count = 0,
                         generation = generation + 1
                     WHERE id = $1"
                ),
            ],
            clear_secrets: vec![
                format!("DELETE FROM {s}.secrets WHERE store_id = $1"),
                format!(
                    "UPDATE {s}.stores SET secret_count = 0, deleted_secret_count = 0 WHERE id = $1"
                ),
            ],
            // `secret_count` is the next idx.
            lock_secrets: format!(
                "SELECT head, secret_count FROM {s}.stores WHERE id = $1 FOR NO KEY UPDATE"
            ),
            stored_secrets: format!(
                "SELECT idx, secret_id FROM {s}.secrets
                 WHERE store_id = $1 AND (secret_id = ANY($2) OR idx = ANY($3))"
            ),
            import_secrets: format!(
                "WITH s AS (INSERT INTO {s}.secrets (store_id, idx, secret_id, secret)
                     SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::bytea[]))
                 UPDATE {s}.stores SET secret_count = greatest(secret_count, $5),
                     deleted_secret_count = deleted_secret_count + $6
                 WHERE id = $1"
            ),
            begin_and_lock: format!(
                "BEGIN; SELECT head, last_timestamp, frozen, stream_count, generation, secret_count
                 FROM {s}.stores WHERE id = {{id}} FOR NO KEY UPDATE"
            ),
            // A stream's number, and its version: its newest event's, at the end of its
            // index. Streams without events have no row.
            stream_versions: format!(
                "SELECT k.context, k.aggregate, k.stream_id, st.stream_no,
                        (SELECT version FROM {s}.events e
                         WHERE e.store_id = $1 AND e.stream_no = st.stream_no
                         ORDER BY version DESC LIMIT 1)
                 FROM unnest($2::text[], $3::text[], $4::text[]) AS k(context, aggregate, stream_id)
                 JOIN {s}.streams st ON st.store_id = $1 AND st.context = k.context
                     AND st.aggregate = k.aggregate AND st.stream_id = k.stream_id"
            ),
            // Candidates for events by id ($2): caller-supplied ids through their index,
            // generated ids through the positions they carry ($3). The caller keeps the
            // rows whose record holds one of the ids.
            events_by_id: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE store_id = $1 AND position IN (
                     SELECT position FROM {s}.events
                     WHERE store_id = $1 AND event_id = ANY($2)
                     UNION ALL SELECT unnest($3::bigint[]))"
            ),
            // The stored events of streams ($2, $3, $4) at versions ($5).
            events_at_versions: format!(
                "SELECT {EVENT_COLUMNS_E}
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[])
                     AS k(context, aggregate, stream_id, version)
                 JOIN {s}.streams st ON st.store_id = $1 AND st.context = k.context
                     AND st.aggregate = k.aggregate AND st.stream_id = k.stream_id
                 JOIN {s}.events e ON e.store_id = $1 AND e.stream_no = st.stream_no
                     AND e.version = k.version",
                EVENT_COLUMNS_E = event_columns("e"),
            ),
            secrets_by_id: format!(
                "SELECT idx, secret_id, secret FROM {s}.secrets
                 WHERE store_id = $1 AND secret_id = ANY($2)"
            ),
            // What a group changes besides inserting events, in one statement under the
            // head row: replaced events in place (their dispatch flag kept), the first
            // timestamp of streams whose version 1 was replaced, new secrets, erased
            // secrets, and the head row (last timestamp when the head event was replaced,
            // generation, secret counters). Each sub-statement touches other rows.
            apply_changes: format!(
                "WITH replaced AS (
                    UPDATE {s}.events e
                       SET event_type = r.event_type, event_id = r.event_id,
                           timestamp_ms = r.timestamp_ms, record = r.record
                      FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[],
                          $6::bytea[]) AS r(position, event_type, event_id, timestamp_ms, record)
                     WHERE e.store_id = $1 AND e.position = r.position
                 ), firsts AS (
                    UPDATE {s}.streams st SET first_timestamp = f.ts
                      FROM unnest($7::text[], $8::text[], $9::text[], $10::bigint[])
                          AS f(context, aggregate, stream_id, ts)
                     WHERE st.store_id = $1 AND st.context = f.context
                       AND st.aggregate = f.aggregate AND st.stream_id = f.stream_id
                 ), new_secrets AS (
                    INSERT INTO {s}.secrets (store_id, idx, secret_id, secret)
                    SELECT $1, * FROM unnest($11::bigint[], $12::text[], $13::bytea[])
                 ), erased AS (
                    UPDATE {s}.secrets SET secret = NULL
                     WHERE store_id = $1 AND idx = ANY($14::bigint[])
                 )
                 UPDATE {s}.stores
                    SET last_timestamp = coalesce($15, last_timestamp),
                        generation = generation + $16,
                        secret_count = greatest(secret_count, $17),
                        deleted_secret_count = deleted_secret_count + $18
                  WHERE id = $1"
            ),
            // One statement writes a whole group: it takes the head row (waiting for any
            // other writer of the store), checks that the head is still the one the
            // group was planned against and that the store is not frozen, and only then
            // inserts the events, updates the streams and announces the new head — with
            // a NOTIFY only when some connection listens for the store (its pid is on
            // the head row; read from the row version this statement updates, so a
            // listener registered before the row was granted is never missed). When the
            // check fails it writes nothing and returns no row.
            write_batch: format!(
                "WITH head AS (
                    UPDATE {s}.stores
                       SET head = head + $2,
                           last_timestamp = coalesce($3, last_timestamp),
                           stream_count = stream_count + $4
                     WHERE id = $1 AND head = $5 AND generation = $21 AND (NOT frozen OR $22)
                 RETURNING head, name, cardinality(listener_pids) > 0 AS listened
                 ), inserted AS (
                    INSERT INTO {s}.events (store_id, position, stream_no, version,
                        timestamp_ms, dispatched, event_type, event_id, record)
                    SELECT $1, e.* FROM unnest($6::bigint[], $7::bigint[], $8::bigint[],
                        $9::bigint[], $10::boolean[], $11::text[], $12::text[],
                        $13::bytea[]) AS e
                     WHERE EXISTS (SELECT 1 FROM head)
                 ), streams AS (
                    INSERT INTO {s}.streams (store_id, context, aggregate, stream_id, stream_no,
                        first_timestamp, first_position)
                    SELECT $1, u.* FROM unnest($14::text[], $15::text[], $16::text[],
                        $17::bigint[], $18::bigint[], $19::bigint[]) AS u
                     WHERE EXISTS (SELECT 1 FROM head)
                 )
                 SELECT head, CASE WHEN $2 > 0 AND listened
                     THEN pg_notify($20, name || ':' || head) END
                 FROM head"
            ),
            read_stream_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE store_id = $1 AND stream_no = {stream_no} AND version >= $5 AND version <= $6
                 ORDER BY version LIMIT $7"
            ),
            read_stream_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE store_id = $1 AND stream_no = {stream_no} AND version >= $5 AND version <= $6
                 ORDER BY version DESC LIMIT $7"
            ),
            stream_info: format!(
                "SELECT l.version, s.first_timestamp, s.first_position, l.position
                 FROM {s}.streams s CROSS JOIN LATERAL ({LAST_EVENT}) l
                 WHERE s.store_id = $1 AND s.context = $2 AND s.aggregate = $3
                   AND s.stream_id = $4",
                LAST_EVENT = last_event(&s),
            ),
            freeze: format!(
                "UPDATE {s}.stores SET frozen = true WHERE id = $1 AND NOT frozen RETURNING id"
            ),
            unfreeze: format!(
                "UPDATE {s}.stores SET frozen = false WHERE id = $1 AND frozen RETURNING id"
            ),
            lock_store: format!(
                "SELECT frozen, secret_count FROM {s}.stores WHERE id = $1 FOR NO KEY UPDATE"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.keyed_snapshots (store_id, key, content, timestamp_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id, key) DO UPDATE
                 SET content = excluded.content, timestamp_ms = excluded.timestamp_ms"
            ),
            load_snapshot: format!(
                "SELECT content, timestamp_ms FROM {s}.keyed_snapshots WHERE store_id = $1 AND key = $2"
            ),
            drop_snapshot: format!(
                "DELETE FROM {s}.keyed_snapshots WHERE store_id = $1 AND key = $2"
            ),
            list_snapshots: format!(
                "SELECT key, content, timestamp_ms FROM {s}.keyed_snapshots
                 WHERE store_id = $1 AND ($2::text IS NULL OR key > $2)
                 ORDER BY key LIMIT $3"
            ),
            import_snapshots: format!(
                "INSERT INTO {s}.keyed_snapshots (store_id, key, content, timestamp_ms)
                 SELECT $1, * FROM unnest($2::text[], $3::bytea[], $4::bigint[])
                 ON CONFLICT (store_id, key) DO UPDATE
                 SET content = excluded.content, timestamp_ms = excluded.timestamp_ms"
            ),
            save_stream_snapshot: format!(
                "INSERT INTO {s}.stream_snapshots (store_id, context, aggregate, stream_id,
                     stream_version, snapshot_id, schema_version, data, timestamp_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            latest_stream_snapshot: format!(
                "SELECT snapshot_id, stream_version, schema_version, data, timestamp_ms
                 FROM {s}.stream_snapshots
                 WHERE store_id = $1 AND {stream_key} AND stream_version <= $5
                 ORDER BY stream_version DESC, seq DESC LIMIT 1"
            ),
            prune_stream_snapshots: format!(
                "DELETE FROM {s}.stream_snapshots
                 WHERE store_id = $1 AND {stream_key} AND seq NOT IN (
                     SELECT seq FROM {s}.stream_snapshots
                     WHERE store_id = $1 AND {stream_key}
                     ORDER BY seq DESC LIMIT $5)"
            ),
            list_stream_snapshots: format!(
                "SELECT snapshot_id, stream_version, schema_version, data, timestamp_ms
                 FROM {s}.stream_snapshots
                 WHERE store_id = $1 AND {stream_key}
                 ORDER BY seq"
            ),
            secret_exists: format!(
                "SELECT 1 FROM {s}.secrets WHERE store_id = $1 AND secret_id = $2"
            ),
            insert_secret: format!(
                "WITH s AS (INSERT INTO {s}.secrets (store_id, idx, secret_id, secret)
                     VALUES ($1, $2, $3, $4))
                 UPDATE {s}.stores SET secret_count = secret_count + 1 WHERE id = $1"
            ),
            get_secret: format!(
                "SELECT idx, secret FROM {s}.secrets WHERE store_id = $1 AND secret_id = $2"
            ),
            erase_secret: format!(
                "UPDATE {s}.secrets SET secret = NULL
                 WHERE store_id = $1 AND secret_id = $2 AND secret IS NOT NULL RETURNING idx"
            ),
            count_deleted_secret: format!(
                "UPDATE {s}.stores SET deleted_secret_count = deleted_secret_count + 1 WHERE id = $1"
            ),
            list_secrets: format!(
                "SELECT idx, secret_id, secret FROM {s}.secrets
                 WHERE store_id = $1 AND idx >= $2 AND ($3 OR secret IS NOT NULL)
                   AND (cardinality($4::text[]) = 0 OR secret_id = ANY($4))
                 ORDER BY idx OFFSET $5 LIMIT $6"
            ),
            mark_dispatched: format!(
                "UPDATE {s}.events SET dispatched = true
                 WHERE store_id = $1 AND event_id = $2 AND NOT dispatched"
            ),
            mark_dispatched_at: format!(
                "UPDATE {s}.events SET dispatched = true
                 WHERE store_id = $1 AND position = $2 AND NOT dispatched"
            ),
            // Marks the events at positions $2 when none is above the head ($3 is the
            // largest); returns the head either way. Positions are dense, so every
            // position up to the head holds an event.
            mark_dispatched_positions: format!(
                "WITH h AS (SELECT head FROM {s}.stores WHERE id = $1), u AS (
                    UPDATE {s}.events SET dispatched = true
                     WHERE store_id = $1 AND position = ANY($2) AND NOT dispatched
                       AND (SELECT head FROM h) >= $3
                 )
                 SELECT head FROM h"
            ),
            // The listening connection puts its pid on the head row (dropping pids of
            // connections that are gone), and takes it off when it stops.
            register_listener: format!(
                "UPDATE {s}.stores SET listener_pids = array_append(ARRAY(
                     SELECT p FROM unnest(listener_pids) p
                     WHERE p <> pg_backend_pid() AND p IN (SELECT pid FROM pg_stat_activity)),
                     pg_backend_pid())
                 WHERE id = $1"
            ),
            unregister_listener: format!(
                "UPDATE {s}.stores SET listener_pids = array_remove(listener_pids, pg_backend_pid())
                 WHERE id = $1"
            ),
            drop_store: ["events", "streams", "keyed_snapshots", "stream_snapshots", "secrets"]
                .iter()
                .map(|t| format!("DELETE FROM {s}.{t} WHERE store_id = $1"))
                .chain([format!("DELETE FROM {s}.stores WHERE id = $1")])
                .collect(),
            schema: s,
        }
    }
}
