//! A schema at version 1 (the layout released first, with its data) is upgraded in place
//! by the current code: every event, stream and secret is still there, byte for byte,
//! and the store keeps working (appends, dispatch marks by both kinds of id, reads).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_core::append::generated_event_id;
use annals_core::{
    EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId, StreamRead, Timestamp,
};
use sqlx::Connection;

/// Migration 1 as released (a fixture: the backend's own copy must never change).
const V1: &str = r#"
CREATE TABLE {s}.schema_migrations (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
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
INSERT INTO {s}.schema_migrations (version, description)
VALUES (1, 'stores, events, streams, snapshots, secrets');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_with_data_is_upgraded_in_place() {
    if !support::available() {
        return;
    }
    let _schema = support::SchemaUse::new(None);
    let s = format!("\"{}\"", support::schema());
    let mut conn = sqlx::PgConnection::connect(&support::url()).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {s};{}", V1.replace("{s}", &s)))
        .execute(&mut conn)
        .await
        .unwrap();

    // Store "old": two streams, three events (one with a generated id, one dispatched,
    // unusual bytes in names and bodies), a secret and a tombstone.
    let t0 = 1_700_000_000_000i64;
    let generated = generated_event_id(2, Timestamp::from_millis(t0));
    sqlx::raw_sql(&format!(
        "INSERT INTO {s}.stores (name, head, last_timestamp, stream_count, secret_count,
             deleted_secret_count) VALUES ('old', 3, {t3}, 2, 2, 1);
         INSERT INTO {s}.streams VALUES
             (1, 'ctx', 'order', 'o-1', 0, {t0}, 1),
             (1, '', '', 'ünï', 1, {t3}, 3);
         INSERT INTO {s}.events VALUES
             (1, 1, 0, 1, {t0}, 0, false, true, 'caller-1', 'ctx', 'order', 'o-1', 'Placed',
              'commit-1', convert_to('{{ \"total\" : 5 }}', 'UTF8'), convert_to('null', 'UTF8')),
             (1, 2, 0, 2, {t0}, 1, true, false, '{generated}', 'ctx', 'order', 'o-1', 'Paid',
              'commit-1', convert_to('[1,2]', 'UTF8'), convert_to('{{\"by\":\"x\"}}', 'UTF8')),
             (1, 3, 1, 1, {t3}, 0, false, false, 'caller-3', '', '', 'ünï', 'Ünïcode',
              'commit-2', convert_to('\"é\"', 'UTF8'), convert_to('{{}}', 'UTF8'));
         INSERT INTO {s}.secrets VALUES (1, 0, 'k-0', NULL), (1, 1, 'k-1', convert_to('key', 'UTF8'));",
        t3 = t0 + 5,
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let db = support::database().await;
    let version: i32 =
        sqlx::query_scalar(&format!("SELECT max(version) FROM {s}.schema_migrations"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(version >= 2, "migrated to version {version}");
    let store = db.open_store("old").await.unwrap();
    let all = store.read_all(ReadAll::forward()).await.unwrap();
    assert_eq!(all.head_position, 3);
    let e = &all.events;
    assert_eq!(e.len(), 3);
    let o1 = StreamId::new("o-1")
        .with_context("ctx")
        .with_aggregate("order");
    assert_eq!(
        (
            e[0].id.as_str(),
            &e[0].stream,
            e[0].version,
            e[0].event_type.as_str()
        ),
        ("caller-1", &o1, 1, "Placed")
    );
    assert_eq!(e[0].payload.as_bytes(), br#"{ "total" : 5 }"#);
    assert_eq!(e[0].metadata.as_bytes(), b"null");
    assert_eq!(
        (
            e[0].commit_id.as_str(),
            e[0].commit_sequence,
            e[0].dispatched
        ),
        ("commit-1", 0, true)
    );
    assert_eq!(e[0].timestamp.as_millis(), t0);
    assert_eq!(
        (e[1].id.as_str(), e[1].commit_sequence),
        (generated.as_str(), 1)
    );
    assert_eq!(e[1].payload.as_bytes(), b"[1,2]");
    assert_eq!(e[1].metadata.as_bytes(), br#"{"by":"x"}"#);
    assert_eq!(e[2].stream, StreamId::new("ünï"));
    assert_eq!(e[2].event_type.as_str(), "Ünïcode");
    assert_eq!(e[2].payload.as_bytes(), "\"é\"".as_bytes());

    // Filters by name still find streams; ids of both kinds are still known.
    let by_context = store
        .read_all(ReadAll::forward().filter(annals_core::EventFilter::default().context("ctx")))
        .await
        .unwrap();
    assert_eq!(by_context.events.len(), 2);
    store.mark_dispatched(&generated).await.unwrap();
    store.mark_dispatched("caller-3").await.unwrap();
    let info = store.stream_info(&o1).await.unwrap().unwrap();
    assert_eq!(
        (info.version, info.first_position, info.last_position),
        (2, 1, 2)
    );
    let retry = store
        .append_to_stream(
            &StreamId::new("ünï"),
            ExpectedVersion::Exact(1),
            vec![ProposedEvent::new("Later", Json::null()).with_id("caller-1")],
        )
        .await;
    assert!(retry.is_err(), "a v1 caller id is still unique: {retry:?}");
    let next = store
        .append_to_stream(
            &o1,
            ExpectedVersion::Exact(2),
            vec![ProposedEvent::new("Shipped", Json::null())],
        )
        .await
        .unwrap();
    assert_eq!(next.events[0].position, 4);
    assert_eq!(next.events[0].version, 3);
    let o1_events = store.read_stream(&o1, StreamRead::all()).await.unwrap();
    assert!(o1_events.iter().all(|e| e.dispatched || e.version == 3));
    let d = store.describe().await.unwrap();
    assert_eq!(
        (d.stream_count, d.secret_count, d.deleted_secret_count),
        (2, 2, 1)
    );
    assert_eq!(
        store
            .get_secret("k-1")
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_deref(),
        Some("key")
    );
    store.close().await.unwrap();
    // A second process start finds the schema current and migrates nothing.
    let again = support::database().await;
    let store = again.open_store("old").await.unwrap();
    assert_eq!(store.describe().await.unwrap().head_position, 4);
    store.close().await.unwrap();
    let _ = conn.close().await;
}
