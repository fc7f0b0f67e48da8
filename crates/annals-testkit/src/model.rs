//! The model-based property test: random operation sequences run against a backend
//! and against [`MemoryStore`], the reference, with every answer compared.
//!
//! Every generated input is deterministic (explicit event ids drawn from a small pool,
//! explicit commit ids, timestamps, snapshot ids), so two correct stores give equal
//! answers: `Ok` values equal, errors of equal [`annals_core::ErrorKind`] and equal
//! text. The one exception is the timestamp of keyed snapshots, which the trait
//! always assigns; it is left out of the comparison (as is `bytes_on_disk`).
//!
//! Every event's content is a function of its id (plus a "variant" flag), and some
//! requests draw their ids from a few small ones, so together with re-sent appends,
//! sequences hit idempotent retries, duplicate ids, expectation failures, version
//! conflicts and bad payloads often; failing sequences shrink to a few operations.

use std::fmt::Debug;
use std::future::Future;

use annals_core::{
    AppendRequest, Cursor, EventFilter, EventStore, ExpectedVersion, ImportBatch, Json,
    KeyedSnapshot, ListStreams, MemoryStore, NewStreamSnapshot, OnConflict, Position,
    ProposedEvent, ReadAll, ReadAllPage, ReadFrom, RecordedEvent, Result, SecretChange,
    SecretImport, SecretQuery, SnapshotKeyQuery, StoreDescription, StreamId, StreamPage,
    StreamPageToken, StreamRead, StreamWrite, Timestamp,
};
use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::TestStore;

/// The streams operations pick from: the same ids in several contexts and aggregates.
const STREAMS: [(&str, &str, &str); 6] = [
    ("", "", "s-1"),
    ("sales", "order", "o-1"),
    ("sales", "order", "o-2"),
    ("billing", "order", "o-1"),
    ("sales", "customer", "o-1"),
    ("billing", "", "s-1"),
];
const CONTEXTS: &[&str] = &["", "sales", "billing"];
const AGGREGATES: &[&str] = &["", "order", "customer"];
const STREAM_IDS: &[&str] = &["s-1", "o-1", "o-2"];
const EVENT_TYPES: &[&str] = &["Opened", "Deposited", "Withdrawn", ""];
/// Requests usually take consecutive event ids from a wide range (so they rarely
/// collide); some take them from the first few ids (so they do: retries, duplicates).
const WIDE_IDS: usize = 1000;
const NARROW_IDS: usize = 12;
/// How many distinct event timestamps there are.
const TIMESTAMPS: usize = 24;
const SNAPSHOT_KEYS: &[&str] = &["k0", "k1", "k2"];
const SNAPSHOT_CONTENTS: &[&str] = &["", "a", "{ x }", "é\n"];
const SNAPSHOT_DATA: &[&str] = &["null", "{ \"b\" : 1 }", "[1]", "{oops"];
const SECRET_IDS: &[&str] = &["u0", "u1", "u2", "u3", "u4"];
const SECRET_VALUES: &[&str] = &["key-a", "key-b", ""];
const T0: i64 = 1_700_000_000_000;

fn at(k: i64) -> Timestamp {
    Timestamp::from_millis(T0 + k * 1000)
}

fn stream(i: usize) -> StreamId {
    let (context, aggregate, id) = STREAMS[i];
    StreamId::new(id)
        .with_aggregate(aggregate)
        .with_context(context)
}

/// How an event's content derives from its id.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// The id's usual content.
    Plain,
    /// Other content under the same id (a duplicate id unless never stored).
    Variant,
    /// A payload that is not JSON.
    NotJson,
}

/// An event whose content is a function of `(id, body)`, so that re-sending an id
/// with the same body is an idempotent retry.
fn proposed(id: usize, body: Body, version: Option<u64>) -> ProposedEvent {
    let id = id % WIDE_IDS;
    let payload = match body {
        Body::Plain => format!(r#"{{ "n" : {id} }}"#),
        Body::Variant => format!(r#"{{"n":{id},"v":2}}"#),
        Body::NotJson => "{oops".to_owned(),
    };
    let metadata = if id % 3 == 0 {
        Json::null()
    } else {
        Json::from_raw(format!(r#"{{"k":{id}}}"#))
    };
    ProposedEvent {
        id: Some(format!("e{id}")),
        event_type: EVENT_TYPES[id % EVENT_TYPES.len()].to_owned(),
        payload: Json::from_raw(payload),
        metadata,
        // Timestamps do not follow positions, and several events share one.
        timestamp: Some(at(((id * 7) % TIMESTAMPS) as i64)),
        version,
    }
}

/// One operation of a generated sequence.
#[derive(Debug, Clone)]
enum Op {
    Append(AppendRequest),
    /// Re-sends an earlier append of the sequence (a retry, or a stale one).
    RepeatAppend(Index),
    ReadStream(StreamId, StreamRead),
    ReadAll(ReadAll),
    /// A read chained through `next_cursor` until `end`.
    ReadAllPaged(ReadAll),
    StreamInfo(StreamId),
    LatestEvent(EventFilter),
    Undispatched(EventFilter, Option<u64>),
    ListStreams(ListStreams),
    /// A listing chained through `next_page_token` until exhausted.
    ListStreamsPaged(ListStreams),
    Freeze,
    Unfreeze,
    SaveSnapshot(&'static str, &'static str),
    LoadSnapshot(&'static str),
    DropSnapshot(&'static str),
    SaveStreamSnapshot(NewStreamSnapshot),
    LatestStreamSnapshot(StreamId, Option<u64>),
    PruneStreamSnapshots(StreamId, usize),
    SetSecret(&'static str, &'static str),
    GetSecret(&'static str),
    DeleteSecret(&'static str),
    ListSecrets(SecretQuery),
    MarkDispatched(String),
    /// Marks one of the stored events dispatched (when there is one).
    MarkStoredDispatched(Index),
    MarkDispatchedAt(Vec<Position>),
    ListSnapshots(SnapshotKeyQuery),
    ImportSnapshots(Vec<KeyedSnapshot>),
    ListStreamSnapshots(StreamId),
    Describe,
    Import(ImportBatch),
    ClearEvents,
    ImportSecrets(Vec<SecretImport>, OnConflict),
    ClearSecrets,
}

fn on_conflict() -> impl Strategy<Value = OnConflict> {
    prop_oneof![Just(OnConflict::Error), Just(OnConflict::Skip)]
}

/// Events as another store recorded them: ids from the narrow pool (so they meet stored
/// ids), small versions (so they meet stored versions and back-fills), content a
/// function of the id (as in appends).
fn import_batch() -> impl Strategy<Value = ImportBatch> {
    let event = (
        prop_oneof![2 => 0..NARROW_IDS * 2, 1 => 0..WIDE_IDS],
        0..STREAMS.len(),
        1u64..10,
        any::<bool>(),
        prop_oneof![30 => Just(Body::Plain), 1 => Just(Body::NotJson)],
    );
    (
        vec(event, 0..=5),
        on_conflict(),
        weighted(0.2, 0u64..15),
        0u32..100,
    )
        .prop_map(|(events, on_conflict, expected_head, commit)| ImportBatch {
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, (id, s, version, dispatched, body))| {
                    let p = proposed(id, body, Some(version));
                    RecordedEvent {
                        position: 0,
                        id: p.id.unwrap_or_default().into(),
                        stream: stream(s),
                        version,
                        event_type: p.event_type.into(),
                        timestamp: p.timestamp.unwrap_or(at(0)),
                        payload: p.payload,
                        metadata: p.metadata,
                        commit_id: format!("i-{commit}").into(),
                        commit_sequence: i as u32,
                        dispatched,
                    }
                })
                .collect(),
            on_conflict,
            expected_head,
        })
}

fn secret_imports() -> impl Strategy<Value = Vec<SecretImport>> {
    let secret = (
        weighted(0.6, 0u64..8),
        select(SECRET_IDS),
        weighted(0.7, select(SECRET_VALUES)),
    )
        .prop_map(|(idx, id, secret)| SecretImport {
            idx,
            id: id.to_owned(),
            secret: secret.map(str::to_owned),
        });
    vec(secret, 0..=3)
}

fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        8 => Just(ExpectedVersion::Any),
        1 => Just(ExpectedVersion::NoStream),
        1 => Just(ExpectedVersion::StreamExists),
        2 => (0u64..5).prop_map(ExpectedVersion::Exact),
    ]
}

/// An event before its id is known: (id offset, body, explicit version).
type EventSpec = (usize, Body, Option<u64>);

fn event_spec() -> impl Strategy<Value = EventSpec> {
    let body = prop_oneof![
        50 => Just(Body::Plain),
        6 => Just(Body::Variant),
        1 => Just(Body::NotJson),
    ];
    // The offset is 0 (the next consecutive id) except now and then (maybe a repeat
    // inside the request).
    let offset = prop_oneof![30 => Just(0usize), 1 => 1usize..4];
    (offset, body, weighted(0.1, 1u64..12))
}

fn secret_change() -> impl Strategy<Value = SecretChange> {
    prop_oneof![
        2 => (select(SECRET_IDS), select(SECRET_VALUES)).prop_map(|(id, secret)| {
            SecretChange::Set {
                id: id.to_owned(),
                secret: secret.to_owned(),
            }
        }),
        1 => select(SECRET_IDS).prop_map(|id| SecretChange::Delete { id: id.to_owned() }),
    ]
}

/// An overwrite request to one stream: mostly explicit small versions (so they meet
/// stored ones, gaps and non-increasing runs), ids from the narrow pool (so they meet
/// the replaced event's own id, another stored id, or none), other content under the
/// same id (the replacement), now and then a secret change.
fn overwrite_request() -> impl Strategy<Value = AppendRequest> {
    let event = (
        prop_oneof![3 => 0..NARROW_IDS, 1 => NARROW_IDS..WIDE_IDS],
        prop_oneof![1 => Just(Body::Plain), 2 => Just(Body::Variant)],
        weighted(0.85, 1u64..6),
    );
    (
        0u32..1000,
        0..STREAMS.len(),
        expected_version(),
        vec(event, 1..=3),
        weighted(0.15, secret_change()),
    )
        .prop_map(|(commit, s, expected, events, secret)| AppendRequest {
            commit_id: Some(format!("o-{commit}")),
            writes: vec![StreamWrite {
                stream: stream(s),
                expected,
                events: events
                    .into_iter()
                    .map(|(id, body, version)| proposed(id, body, version))
                    .collect(),
            }],
            overwrite: true,
            secret,
        })
}

fn append_request() -> impl Strategy<Value = AppendRequest> {
    let write = || {
        (
            0..STREAMS.len(),
            expected_version(),
            // Mostly short writes; now and then a long one (a backend may store long
            // runs of one stream differently).
            prop_oneof![6 => vec(event_spec(), 1..=4), 1 => vec(event_spec(), 8..=12)],
        )
    };
    let writes = prop_oneof![
        5 => vec(write(), 1..=1),
        1 => vec(write(), 2..=3),
    ];
    let first_id = prop_oneof![3 => 0..WIDE_IDS, 1 => 0..NARROW_IDS];
    let secret = weighted(0.1, secret_change());
    (0u32..1000, first_id, writes, secret).prop_map(|(commit, first_id, writes, secret)| {
        let mut next = first_id;
        let writes = writes
            .into_iter()
            .map(|(s, expected, specs)| StreamWrite {
                stream: stream(s),
                expected,
                events: specs
                    .into_iter()
                    .map(|(offset, body, version)| {
                        // A non-zero offset reuses an earlier id of the request.
                        let id = next.saturating_sub(offset);
                        next += 1;
                        proposed(id, body, version)
                    })
                    .collect(),
            })
            .collect();
        AppendRequest {
            commit_id: Some(format!("c-{commit}")),
            writes,
            overwrite: false,
            secret,
        }
    })
}

fn time() -> impl Strategy<Value = Timestamp> {
    // Whole seconds hit event timestamps exactly (inclusive bounds); half seconds miss.
    (0i64..25, any::<bool>()).prop_map(|(k, half)| {
        Timestamp::from_millis(at(k).as_millis() + if half { 500 } else { 0 })
    })
}

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    subsequence(pool, 1..=2).prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn event_filter() -> impl Strategy<Value = EventFilter> {
    (
        weighted(0.15, select(CONTEXTS)),
        weighted(0.15, select(AGGREGATES)),
        weighted(0.15, names(STREAM_IDS)),
        weighted(0.1, names(EVENT_TYPES)),
        weighted(0.1, time()),
        weighted(0.1, time()),
        weighted(0.08, 1u64..5),
        weighted(0.08, 1u64..5),
        weighted(0.1, any::<bool>()),
    )
        .prop_map(
            |(context, aggregate, ids, types, from, to, min, max, dispatched)| EventFilter {
                context: context.map(str::to_owned),
                aggregate: aggregate.map(str::to_owned),
                aggregate_ids: ids.unwrap_or_default(),
                event_types: types.unwrap_or_default(),
                from_time: from,
                to_time: to,
                min_version: min,
                max_version: max,
                dispatched,
            },
        )
}

fn read_from() -> impl Strategy<Value = ReadFrom> {
    prop_oneof![
        3 => Just(ReadFrom::Start),
        2 => (0u64..25).prop_map(ReadFrom::Position),
        1 => (0u64..25, any::<bool>()).prop_map(|(p, forward)| ReadFrom::Cursor(if forward {
            Cursor::forward_after(p)
        } else {
            Cursor::backward_before(p)
        })),
    ]
}

fn direction() -> impl Strategy<Value = annals_core::Direction> {
    prop_oneof![
        Just(annals_core::Direction::Forward),
        Just(annals_core::Direction::Backward),
    ]
}

fn read_all() -> impl Strategy<Value = ReadAll> {
    (
        read_from(),
        direction(),
        event_filter(),
        prop_oneof![3 => Just(0u64), 1 => 1u64..4],
        weighted(0.5, 0u64..6),
    )
        .prop_map(|(from, direction, filter, skip, limit)| ReadAll {
            from,
            direction,
            filter,
            skip,
            limit,
        })
}

fn read_all_paged() -> impl Strategy<Value = ReadAll> {
    (direction(), event_filter(), 1u64..4).prop_map(|(direction, filter, page)| ReadAll {
        direction,
        filter,
        limit: Some(page),
        ..ReadAll::default()
    })
}

fn stream_read() -> impl Strategy<Value = StreamRead> {
    let from = prop_oneof![3 => Just(1u64), 1 => 0u64..6];
    (
        from,
        weighted(0.3, 0u64..10),
        direction(),
        weighted(0.3, 0u64..5),
    )
        .prop_map(|(from_version, to_version, direction, limit)| StreamRead {
            from_version,
            to_version,
            direction,
            limit,
        })
}

fn list_streams() -> impl Strategy<Value = ListStreams> {
    (
        weighted(0.25, select(CONTEXTS)),
        weighted(0.25, select(AGGREGATES)),
        weighted(0.15, time()),
        weighted(0.15, time()),
        any::<bool>(),
        weighted(0.4, 0u64..5),
        weighted(0.1, (0i64..25, 0u64..40)),
    )
        .prop_map(
            |(context, aggregate, after, before, reverse, limit, token)| ListStreams {
                context: context.map(str::to_owned),
                aggregate: aggregate.map(str::to_owned),
                created_after: after,
                created_before: before,
                reverse,
                limit,
                page_token: token.map(|(k, p)| StreamPageToken::new(at(k), p)),
            },
        )
}

fn list_streams_paged() -> impl Strategy<Value = ListStreams> {
    (
        weighted(0.25, select(CONTEXTS)),
        weighted(0.25, select(AGGREGATES)),
        any::<bool>(),
        1u64..4,
    )
        .prop_map(|(context, aggregate, reverse, page)| ListStreams {
            context: context.map(str::to_owned),
            aggregate: aggregate.map(str::to_owned),
            reverse,
            limit: Some(page),
            ..ListStreams::default()
        })
}

fn stream_snapshot() -> impl Strategy<Value = NewStreamSnapshot> {
    (
        0usize..6,
        0..STREAMS.len(),
        0u64..6,
        1u32..3,
        select(SNAPSHOT_DATA),
        0i64..25,
    )
        .prop_map(
            |(id, s, version, schema_version, data, k)| NewStreamSnapshot {
                id: Some(format!("snap-{id}")),
                stream: stream(s),
                stream_version: version,
                schema_version,
                data: Json::from_raw(data),
                timestamp: Some(at(k)),
            },
        )
}

fn secret_query() -> impl Strategy<Value = SecretQuery> {
    (
        0u64..6,
        prop_oneof![3 => Just(0u64), 1 => 1u64..3],
        weighted(0.4, 0u64..4),
        weighted(0.3, names(SECRET_IDS)),
        any::<bool>(),
    )
        .prop_map(
            |(from_idx, skip, limit, ids, include_deleted)| SecretQuery {
                from_idx,
                skip,
                limit,
                ids: ids.unwrap_or_default(),
                include_deleted,
            },
        )
}

fn op() -> BoxedStrategy<Op> {
    let stream_index = || (0..STREAMS.len()).prop_map(stream);
    let event_id = prop_oneof![
        4 => (0..NARROW_IDS).prop_map(|i| format!("e{i}")),
        1 => Just("unknown".to_owned()),
        1 => Just(String::new()),
    ];
    prop_oneof![
        16 => append_request().prop_map(Op::Append),
        4 => overwrite_request().prop_map(Op::Append),
        1 => (0u32..1000, secret_change()).prop_map(|(commit, change)| Op::Append(
            AppendRequest::default()
                .with_commit_id(format!("s-{commit}"))
                .with_secret(change)
        )),
        2 => vec(0u64..25, 0..=4).prop_map(Op::MarkDispatchedAt),
        1 => (weighted(0.5, select(&["a", "k0", "k1", "k10", "k2", "k3"][..])), weighted(0.5, 0u64..4))
            .prop_map(|(after, limit)| Op::ListSnapshots(SnapshotKeyQuery {
                start_after: after.map(str::to_owned),
                limit,
            })),
        1 => vec((select(SNAPSHOT_KEYS), select(SNAPSHOT_CONTENTS), 0i64..25), 0..=3)
            .prop_map(|v| Op::ImportSnapshots(v.into_iter().map(|(key, content, k)| KeyedSnapshot {
                key: key.to_owned(),
                content: content.to_owned(),
                timestamp: at(k),
            }).collect())),
        1 => stream_index().prop_map(Op::ListStreamSnapshots),
        4 => any::<Index>().prop_map(Op::RepeatAppend),
        2 => (stream_index(), stream_read()).prop_map(|(s, r)| Op::ReadStream(s, r)),
        3 => read_all().prop_map(Op::ReadAll),
        1 => read_all_paged().prop_map(Op::ReadAllPaged),
        1 => stream_index().prop_map(Op::StreamInfo),
        1 => event_filter().prop_map(Op::LatestEvent),
        1 => (event_filter(), weighted(0.5, 0u64..4)).prop_map(|(f, l)| Op::Undispatched(f, l)),
        2 => list_streams().prop_map(Op::ListStreams),
        1 => list_streams_paged().prop_map(Op::ListStreamsPaged),
        1 => Just(Op::Freeze),
        3 => Just(Op::Unfreeze),
        1 => (select(SNAPSHOT_KEYS), select(SNAPSHOT_CONTENTS)).prop_map(|(k, c)| Op::SaveSnapshot(k, c)),
        1 => select(SNAPSHOT_KEYS).prop_map(Op::LoadSnapshot),
        1 => select(SNAPSHOT_KEYS).prop_map(Op::DropSnapshot),
        3 => stream_snapshot().prop_map(Op::SaveStreamSnapshot),
        1 => (stream_index(), weighted(0.6, 0u64..7)).prop_map(|(s, m)| Op::LatestStreamSnapshot(s, m)),
        1 => (stream_index(), 0usize..3).prop_map(|(s, k)| Op::PruneStreamSnapshots(s, k)),
        2 => (select(SECRET_IDS), select(SECRET_VALUES)).prop_map(|(i, v)| Op::SetSecret(i, v)),
        1 => select(SECRET_IDS).prop_map(Op::GetSecret),
        1 => select(SECRET_IDS).prop_map(Op::DeleteSecret),
        1 => secret_query().prop_map(Op::ListSecrets),
        1 => event_id.prop_map(Op::MarkDispatched),
        3 => any::<Index>().prop_map(Op::MarkStoredDispatched),
        1 => Just(Op::Describe),
        3 => import_batch().prop_map(Op::Import),
        1 => Just(Op::ClearEvents),
        1 => (secret_imports(), on_conflict()).prop_map(|(s, c)| Op::ImportSecrets(s, c)),
        1 => Just(Op::ClearSecrets),
    ]
    .boxed()
}

/// Equal answers: equal `Ok` values, or errors of equal kind and text.
fn same<T: PartialEq + Debug>(backend: Result<T>, reference: Result<T>) -> Result<(), String> {
    let equal = match (&backend, &reference) {
        (Ok(b), Ok(r)) => b == r,
        (Err(b), Err(r)) => b.kind() == r.kind() && b.to_string() == r.to_string(),
        _ => false,
    };
    if equal {
        Ok(())
    } else {
        Err(format!(
            "the backend answered\n  {backend:?}\nthe reference answered\n  {reference:?}"
        ))
    }
}

/// Runs `$call` (an expression over `$s` that ends in `.await` and gives a `Result`) on
/// both stores and compares the answers.
macro_rules! compare {
    ($backend:expr, $reference:expr, |$s:ident| $call:expr) => {{
        let backend = {
            let $s = $backend;
            $call
        };
        let reference = {
            let $s = $reference;
            $call
        };
        same(backend, reference)
    }};
}

fn keyed(s: Option<KeyedSnapshot>) -> Option<(String, String)> {
    s.map(|s| (s.key, s.content))
}

/// Keyed snapshots without their timestamps (`save_snapshot` assigns them).
fn keyed_list(list: Vec<KeyedSnapshot>) -> Vec<(String, String)> {
    list.into_iter().map(|s| (s.key, s.content)).collect()
}

fn described(mut d: StoreDescription) -> StoreDescription {
    d.bytes_on_disk = None;
    d
}

async fn read_pages(store: &dyn EventStore, first: ReadAll) -> Result<Vec<ReadAllPage>> {
    let mut pages = Vec::new();
    let mut read = first;
    while pages.len() < 100 {
        let page = store.read_all(read.clone()).await?;
        let (end, cursor) = (page.end, page.next_cursor);
        pages.push(page);
        if end {
            break;
        }
        read.from = ReadFrom::Cursor(cursor);
    }
    Ok(pages)
}

async fn list_pages(store: &dyn EventStore, first: ListStreams) -> Result<Vec<StreamPage>> {
    let mut pages = Vec::new();
    let mut query = first;
    while pages.len() < 100 {
        let page = store.list_streams(query.clone()).await?;
        let token = page.next_page_token;
        pages.push(page);
        match token {
            Some(t) => query.page_token = Some(t),
            None => break,
        }
    }
    Ok(pages)
}

async fn apply(b: &dyn EventStore, r: &dyn EventStore, op: &Op) -> Result<(), String> {
    match op {
        Op::Append(req) => compare!(b, r, |s| s.append(req.clone()).await),
        Op::RepeatAppend(_) | Op::MarkStoredDispatched(_) => Ok(()),
        Op::ReadStream(stream, read) => compare!(b, r, |s| s.read_stream(stream, *read).await),
        Op::ReadAll(read) => compare!(b, r, |s| s.read_all(read.clone()).await),
        Op::ReadAllPaged(read) => compare!(b, r, |s| read_pages(s, read.clone()).await),
        Op::StreamInfo(stream) => {
            compare!(b, r, |s| s.stream_info(stream).await)?;
            compare!(b, r, |s| s.stream_version(stream).await)
        }
        Op::LatestEvent(f) => compare!(b, r, |s| s.latest_event(f.clone()).await),
        Op::Undispatched(f, limit) => {
            compare!(b, r, |s| s.undispatched(f.clone(), *limit).await)
        }
        Op::ListStreams(q) => compare!(b, r, |s| s.list_streams(q.clone()).await),
        Op::ListStreamsPaged(q) => compare!(b, r, |s| list_pages(s, q.clone()).await),
        Op::Freeze => compare!(b, r, |s| s.freeze().await),
        Op::Unfreeze => compare!(b, r, |s| s.unfreeze().await),
        Op::SaveSnapshot(k, c) => compare!(b, r, |s| s.save_snapshot(k, c).await),
        Op::LoadSnapshot(k) => compare!(b, r, |s| s.load_snapshot(k).await.map(keyed)),
        Op::DropSnapshot(k) => compare!(b, r, |s| s.drop_snapshot(k).await),
        Op::SaveStreamSnapshot(snap) => {
            compare!(b, r, |s| s.save_stream_snapshot(snap.clone()).await)
        }
        Op::LatestStreamSnapshot(stream, max) => {
            compare!(b, r, |s| s.latest_stream_snapshot(stream, *max).await)
        }
        Op::PruneStreamSnapshots(stream, keep) => {
            compare!(b, r, |s| s.prune_stream_snapshots(stream, *keep).await)
        }
        Op::SetSecret(id, value) => compare!(b, r, |s| s.set_secret(id, value).await),
        Op::GetSecret(id) => compare!(b, r, |s| s.get_secret(id).await),
        Op::DeleteSecret(id) => compare!(b, r, |s| s.delete_secret(id).await),
        Op::ListSecrets(q) => compare!(b, r, |s| s.list_secrets(q.clone()).await),
        Op::MarkDispatched(id) => compare!(b, r, |s| s.mark_dispatched(id).await),
        Op::MarkDispatchedAt(positions) => {
            compare!(b, r, |s| s.mark_dispatched_at(positions).await)
        }
        Op::ListSnapshots(q) => {
            compare!(b, r, |s| s.list_snapshots(q.clone()).await.map(keyed_list))
        }
        Op::ImportSnapshots(list) => compare!(b, r, |s| s.import_snapshots(list.clone()).await),
        Op::ListStreamSnapshots(stream) => {
            compare!(b, r, |s| s.list_stream_snapshots(stream).await)
        }
        Op::Describe => compare!(b, r, |s| s.describe().await.map(described)),
        Op::Import(batch) => compare!(b, r, |s| s.import_events(batch.clone()).await),
        Op::ClearEvents => compare!(b, r, |s| s.clear_events().await),
        Op::ImportSecrets(secrets, c) => {
            compare!(b, r, |s| s.import_secrets(secrets.clone(), *c).await)
        }
        Op::ClearSecrets => compare!(b, r, |s| s.clear_secrets().await),
    }
}

/// Compares everything both stores hold after a sequence.
async fn compare_state(b: &dyn EventStore, r: &dyn EventStore) -> Result<(), String> {
    let all = ReadAll::forward();
    compare!(b, r, |s| s.read_all(all.clone()).await).map_err(|e| format!("read_all: {e}"))?;
    compare!(b, r, |s| s.describe().await.map(described)).map_err(|e| format!("describe: {e}"))?;
    let lists = ListStreams::default();
    compare!(b, r, |s| s.list_streams(lists.clone()).await)
        .map_err(|e| format!("list_streams: {e}"))?;
    let secrets = SecretQuery {
        include_deleted: true,
        ..SecretQuery::default()
    };
    compare!(b, r, |s| s.list_secrets(secrets.clone()).await)
        .map_err(|e| format!("list_secrets: {e}"))?;
    for i in 0..STREAMS.len() {
        let st = stream(i);
        compare!(b, r, |s| s.read_stream(&st, StreamRead::all()).await)
            .map_err(|e| format!("read_stream {st}: {e}"))?;
        compare!(b, r, |s| s.stream_info(&st).await)
            .map_err(|e| format!("stream_info {st}: {e}"))?;
        compare!(b, r, |s| s.latest_stream_snapshot(&st, None).await)
            .map_err(|e| format!("latest_stream_snapshot {st}: {e}"))?;
        compare!(b, r, |s| s.list_stream_snapshots(&st).await)
            .map_err(|e| format!("list_stream_snapshots {st}: {e}"))?;
    }
    let keys = SnapshotKeyQuery::default();
    compare!(b, r, |s| s
        .list_snapshots(keys.clone())
        .await
        .map(keyed_list))
    .map_err(|e| format!("list_snapshots: {e}"))?;
    for k in SNAPSHOT_KEYS {
        compare!(b, r, |s| s.load_snapshot(k).await.map(keyed))
            .map_err(|e| format!("load_snapshot {k}: {e}"))?;
    }
    Ok(())
}

async fn run_sequence(backend: &dyn EventStore, ops: &[Op]) -> Result<(), String> {
    let reference = MemoryStore::new();
    let mut sent: Vec<AppendRequest> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let op = match op {
            Op::RepeatAppend(i) if !sent.is_empty() => Op::Append(i.get(&sent).clone()),
            Op::MarkStoredDispatched(i) => {
                let stored = reference
                    .read_all(ReadAll::forward())
                    .await
                    .map_err(|e| format!("step {step}: the reference failed: {e}"))?
                    .events;
                match stored.is_empty() {
                    true => op.clone(),
                    false => Op::MarkDispatched(i.get(&stored).id.to_string()),
                }
            }
            other => other.clone(),
        };
        if let Op::Append(request) = &op {
            sent.push(request.clone());
        }
        apply(backend, &reference, &op)
            .await
            .map_err(|e| format!("step {step}, {op:?}:\n{e}"))?;
    }
    compare_state(backend, &reference)
        .await
        .map_err(|e| format!("after the last step, {e}"))
}

/// Runs `cases` random operation sequences (1 to 40 operations each) against a fresh
/// backend from `factory` and against a fresh [`MemoryStore`], and panics with the
/// smallest differing sequence proptest can find.
///
/// Creates its own tokio runtime: call it from a plain `#[test]`, not from inside an
/// async runtime.
///
/// ```no_run
/// annals_testkit::model::check_against_reference(64, || async {
///     annals_testkit::TestStore::new(std::sync::Arc::new(annals_core::MemoryStore::new()))
/// });
/// ```
pub fn check_against_reference<F, Fut>(cases: u32, factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TestStore>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the model test");
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec(op(), 1..40), |ops| {
        runtime.block_on(async {
            let test_store = factory().await;
            let outcome = run_sequence(&*test_store.store, &ops).await;
            drop(test_store);
            outcome.map_err(TestCaseError::fail)
        })
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "the backend differs from the reference: {reason}\nminimal failing sequence ({} operations):\n{ops:#?}",
            ops.len()
        ),
        Err(TestError::Abort(reason)) => panic!("the model test was aborted: {reason}"),
    }
}
