//! The conformance suite: one public async function per behaviour of
//! [`EventStore`], named after the behaviour.
//!
//! Each function takes a FRESH, EMPTY store (it checks that first) and panics with a
//! message naming what deviated. The concurrency functions take an
//! `Arc<dyn EventStore>` because they spawn tasks. [`crate::conformance_suite!`] runs
//! them all.
//!
//! Where the trait leaves a choice open, the suite pins what
//! [`annals_core::MemoryStore`], the reference backend, does. Behaviour that a backend
//! may opt out of through [`annals_core::Capabilities`] (dense positions, atomic
//! multi-stream appends) is only checked when the backend claims it.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use annals_core::limits::{MAX_NAME_BYTES, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS};
use annals_core::{
    AppendRequest, AppendResult, Cursor, Error, ErrorKind, EventFilter, EventStore, EventStream,
    ExpectedVersion, ImportBatch, ImportOutcome, Json, ListStreams, NewStreamSnapshot, OnConflict,
    Position, ProposedEvent, ReadAll, ReadFrom, RecordedEvent, Result, SecretImport, SecretQuery,
    StoreDescription, StreamId, StreamPageToken, StreamRead, Subscribe, Timestamp, Version,
};
use futures::StreamExt;

/// How long a step that waits on the store may take before the test fails instead of
/// hanging.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Milliseconds of the first explicit timestamp the suite uses.
const T0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

fn json(text: &str) -> Json {
    Json::from_raw(text.to_owned())
}

fn event(event_type: &str, payload: &str) -> ProposedEvent {
    ProposedEvent::new(event_type, json(payload))
}

/// The explicit timestamp number `k` (one second apart).
fn at(k: i64) -> Timestamp {
    Timestamp::from_millis(T0 + k * 1000)
}

async fn assert_fresh(store: &dyn EventStore) {
    let d = store
        .describe()
        .await
        .unwrap_or_else(|e| panic!("describe on a fresh store failed: {e}"));
    assert!(
        d.event_count == 0
            && d.stream_count == 0
            && d.head_position == 0
            && d.secret_count == 0
            && !d.frozen,
        "the conformance suite needs a fresh, empty, unfrozen store; got {d:?}"
    );
}

/// `describe()` without `bytes_on_disk`, which may change on reads or compaction.
async fn description(store: &dyn EventStore) -> StoreDescription {
    let mut d = store
        .describe()
        .await
        .unwrap_or_else(|e| panic!("describe failed: {e}"));
    d.bytes_on_disk = None;
    d
}

fn unwrap_err<T: Debug>(result: Result<T>, what: &str) -> Error {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

fn expect_kind<T: Debug>(result: Result<T>, kind: ErrorKind, what: &str) -> Error {
    let err = unwrap_err(result, what);
    assert_eq!(err.kind(), kind, "{what}: expected {kind:?}, got: {err}");
    err
}

fn expect_invalid<T: Debug>(result: Result<T>, field: &str, what: &str) {
    match expect_kind(result, ErrorKind::InvalidInput, what) {
        Error::InvalidInput { field: got, reason } => assert_eq!(
            got, field,
            "{what}: InvalidInput should name the field {field:?} (reason given: {reason})"
        ),
        other => panic!("{what}: kind InvalidInput but not Error::InvalidInput: {other:?}"),
    }
}

fn expect_wrong_version<T: Debug>(
    result: Result<T>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: Version,
    what: &str,
) {
    match expect_kind(result, ErrorKind::WrongExpectedVersion, what) {
        Error::WrongExpectedVersion {
            stream: s,
            expected: e,
            actual: a,
        } => assert_eq!(
            (s, e, a),
            (stream.clone(), expected, actual),
            "{what}: WrongExpectedVersion should carry (stream, expected, actual)"
        ),
        other => panic!("{what}: not Error::WrongExpectedVersion: {other:?}"),
    }
}

fn expect_duplicate_id<T: Debug>(result: Result<T>, id: &str, what: &str) {
    match expect_kind(result, ErrorKind::DuplicateEventId, what) {
        Error::DuplicateEventId { id: got } => {
            assert_eq!(got, id, "{what}: DuplicateEventId should name the id")
        }
        other => panic!("{what}: not Error::DuplicateEventId: {other:?}"),
    }
}

async fn append_ok(
    store: &dyn EventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> AppendResult {
    store
        .append_to_stream(stream, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream} ({expected}) failed: {e}"))
}

async fn request_ok(store: &dyn EventStore, request: AppendRequest) -> AppendResult {
    store
        .append(request)
        .await
        .unwrap_or_else(|e| panic!("append failed: {e}"))
}

async fn read(store: &dyn EventStore, read: ReadAll) -> Vec<RecordedEvent> {
    let what = format!("{read:?}");
    store
        .read_all(read)
        .await
        .unwrap_or_else(|e| panic!("read_all {what} failed: {e}"))
        .events
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    read(store, ReadAll::forward()).await
}

async fn read_ids(store: &dyn EventStore, r: ReadAll) -> Vec<String> {
    ids(&read(store, r).await)
}

async fn stream_events(
    store: &dyn EventStore,
    stream: &StreamId,
    r: StreamRead,
) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, r)
        .await
        .unwrap_or_else(|e| panic!("read_stream {stream} {r:?} failed: {e}"))
}

async fn stream_versions(store: &dyn EventStore, stream: &StreamId, r: StreamRead) -> Vec<Version> {
    versions(&stream_events(store, stream, r).await)
}

fn ids(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<Position> {
    events.iter().map(|e| e.position).collect()
}

fn versions(events: &[RecordedEvent]) -> Vec<Version> {
    events.iter().map(|e| e.version).collect()
}

fn filter() -> EventFilter {
    EventFilter::default()
}

/// The events of the shared fixture: (event id, context, aggregate, stream id, type).
/// Event `k` (0-based) gets the timestamp `at(k + 1)` and the payload `{"n":k}`.
const FIXTURE: [(&str, &str, &str, &str, &str); 8] = [
    ("p1", "sales", "order", "o-1", "Placed"),
    ("p2", "sales", "order", "o-2", "Placed"),
    ("p3", "billing", "order", "o-1", "Invoiced"),
    ("p4", "sales", "order", "o-1", "Shipped"),
    ("p5", "sales", "customer", "c-1", "Registered"),
    ("p6", "", "", "free", "Noted"),
    ("p7", "sales", "order", "o-2", "Shipped"),
    ("p8", "sales", "order", "o-1", "Delivered"),
];

fn fixture_stream(k: usize) -> StreamId {
    let (_, context, aggregate, id, _) = FIXTURE[k];
    StreamId::new(id)
        .with_aggregate(aggregate)
        .with_context(context)
}

/// Appends the fixture, one event per append, and returns the recorded events.
async fn seed_fixture(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for (k, (id, _, _, _, event_type)) in FIXTURE.iter().enumerate() {
        let e = event(event_type, &format!(r#"{{"n":{k}}}"#))
            .with_id(*id)
            .with_timestamp(at(k as i64 + 1));
        out.extend(
            append_ok(store, &fixture_stream(k), ExpectedVersion::Any, vec![e])
                .await
                .events,
        );
    }
    out
}

/// Appends `n` single-event appends to `stream` with ids `{prefix}{i}` (i from 1).
async fn seed_stream(
    store: &dyn EventStore,
    stream: &StreamId,
    prefix: &str,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for i in 1..=n {
        let e = event("Counted", &format!(r#"{{"i":{i}}}"#)).with_id(format!("{prefix}{i}"));
        out.extend(
            append_ok(store, stream, ExpectedVersion::Any, vec![e])
                .await
                .events,
        );
    }
    out
}

async fn next_within(live: &mut EventStream, what: &str) -> Option<Result<RecordedEvent>> {
    tokio::time::timeout(TIMEOUT, live.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: the subscription yielded nothing within {TIMEOUT:?}"))
}

async fn take_events(live: &mut EventStream, n: usize, what: &str) -> Vec<RecordedEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_within(live, what).await {
            Some(Ok(e)) => out.push(e),
            Some(Err(e)) => panic!(
                "{what}: the subscription failed after {} events: {e}",
                out.len()
            ),
            None => panic!("{what}: the subscription ended after {} events", out.len()),
        }
    }
    out
}

/// Checks that the subscription yields nothing more for a short while.
async fn assert_quiet(live: &mut EventStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), live.next()).await {
        panic!("{what}: expected no further event, got {item:?}");
    }
}

/// Checks that a subscription ends (after at most one `Err(Closed)`) without hanging.
async fn assert_ends_closed(live: &mut EventStream, what: &str) {
    match next_within(live, what).await {
        None => {}
        Some(Err(e)) => {
            assert_eq!(
                e.kind(),
                ErrorKind::Closed,
                "{what}: the subscription failed with {e}, not Closed"
            );
            assert!(
                next_within(live, what).await.is_none(),
                "{what}: after Err(Closed) the subscription must end"
            );
        }
        Some(Ok(e)) => panic!("{what}: expected the subscription to end, got event {e:?}"),
    }
}

// ---------------------------------------------------------------------------------
// Appends
// ---------------------------------------------------------------------------------

/// Versions count 1, 2, 3 … per stream and positions 1, 2, 3 … across the store; what
/// the append returns is what reads return.
pub async fn append_assigns_dense_positions_and_versions(store: &dyn EventStore) {
    assert_fresh(store).await;
    let a = StreamId::new("acc-1").with_aggregate("account");
    let b = StreamId::new("acc-2").with_aggregate("account");
    let r1 = append_ok(
        store,
        &a,
        ExpectedVersion::NoStream,
        vec![
            event("Opened", r#"{"owner":"ann"}"#),
            event("Deposited", r#"{"amount":5}"#),
            event("Deposited", r#"{"amount":7}"#),
        ],
    )
    .await;
    let r2 = append_ok(
        store,
        &b,
        ExpectedVersion::Any,
        vec![event("Opened", "{}"), event("Deposited", "{}")],
    )
    .await;
    let r3 = append_ok(
        store,
        &a,
        ExpectedVersion::Exact(3),
        vec![event("Closed", "{}")],
    )
    .await;
    assert_eq!(
        versions(&r1.events),
        [1, 2, 3],
        "versions of the first append to a new stream"
    );
    assert_eq!(
        versions(&r2.events),
        [1, 2],
        "versions of another new stream"
    );
    assert_eq!(
        versions(&r3.events),
        [4],
        "version of an event appended to an existing stream"
    );
    assert!(
        !r1.retried && !r2.retried && !r3.retried,
        "fresh appends are not retries"
    );
    assert!(r1.events.iter().all(|e| e.stream == a) && r2.events.iter().all(|e| e.stream == b));
    let all: Vec<RecordedEvent> = [r1.events, r2.events, r3.events].concat();
    let ps = positions(&all);
    assert!(
        ps.windows(2).all(|w| w[0] < w[1]),
        "positions must increase in commit order: {ps:?}"
    );
    if store.capabilities().dense_positions {
        assert_eq!(ps, [1, 2, 3, 4, 5, 6], "positions are dense from 1");
        assert_eq!(
            (r1.head_position, r2.head_position, r3.head_position),
            (3, 5, 6),
            "head_position after each append"
        );
    }
    assert_eq!(
        r3.head_position,
        *ps.last().unwrap(),
        "head_position is the last position"
    );
    assert_eq!(
        read_everything(store).await,
        all,
        "read_all returns what the appends returned"
    );
    let mut of_a: Vec<RecordedEvent> = all.iter().filter(|e| e.stream == a).cloned().collect();
    assert_eq!(
        stream_events(store, &a, StreamRead::all()).await,
        of_a,
        "read_stream returns the stream's events"
    );
    of_a.reverse();
    assert_eq!(stream_events(store, &a, StreamRead::backward()).await, of_a);
}

/// The events of one append share one commit id (given or generated) and are numbered
/// 0, 1, 2 … by `commit_sequence`; different appends get different commit ids.
pub async fn append_shares_commit_id_and_numbers_commit_sequence(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let r1 = append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        (0..4).map(|i| event("T", &i.to_string())).collect(),
    )
    .await;
    assert!(
        !r1.commit_id.is_empty(),
        "a generated commit id is not empty"
    );
    assert!(
        r1.events.iter().all(|e| e.commit_id == r1.commit_id),
        "every event carries the append's commit id: {:?}",
        r1.events
    );
    assert_eq!(
        r1.events
            .iter()
            .map(|e| e.commit_sequence)
            .collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let r2 = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "4")]).await;
    assert_ne!(r1.commit_id, r2.commit_id, "two appends get two commit ids");
    assert_eq!(r2.events[0].commit_sequence, 0);
    let r3 = request_ok(
        store,
        AppendRequest::to_stream(
            s.clone(),
            ExpectedVersion::Any,
            vec![event("T", "5"), event("T", "6")],
        )
        .with_commit_id("commit-7"),
    )
    .await;
    assert_eq!(r3.commit_id, "commit-7", "an explicit commit id is kept");
    assert!(r3.events.iter().all(|e| e.commit_id == "commit-7"));
    let stored = read_everything(store).await;
    assert_eq!(
        stored,
        [r1.events, r2.events, r3.events].concat(),
        "reads return the commit ids and sequences"
    );
}

/// Timestamps the store assigns never decrease along positions, are close to now, and
/// never go below an earlier (even explicit) timestamp.
pub async fn append_assigns_non_decreasing_timestamps(store: &dyn EventStore) {
    assert_fresh(store).await;
    let before = Timestamp::now();
    for i in 0..20 {
        let s = StreamId::new(format!("s-{}", i % 3));
        append_ok(
            store,
            &s,
            ExpectedVersion::Any,
            vec![event("T", "1"), event("T", "2"), event("T", "3")],
        )
        .await;
    }
    let after = Timestamp::now();
    let events = read_everything(store).await;
    assert_eq!(events.len(), 60);
    for w in events.windows(2) {
        assert!(
            w[0].timestamp <= w[1].timestamp,
            "timestamps must not decrease along positions: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    // Generous bounds: a remote backend's clock may differ a little from ours.
    let slack = 5 * 60 * 1000;
    for e in &events {
        let t = e.timestamp.as_millis();
        assert!(
            t >= before.as_millis() - slack && t <= after.as_millis() + slack,
            "an assigned timestamp should be about now ({before} .. {after}), got {}",
            e.timestamp
        );
    }
    let future = Timestamp::from_millis(after.as_millis() + 24 * 3600 * 1000);
    let s = StreamId::new("s-0");
    append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", "4").with_timestamp(future)],
    )
    .await;
    let r = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "5")]).await;
    assert!(
        r.events[0].timestamp >= future,
        "an assigned timestamp never goes below the previous event's ({future}), got {}",
        r.events[0].timestamp
    );
}

/// An explicit timestamp is stored as given (even one older than earlier events).
pub async fn append_keeps_explicit_timestamps(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("imported");
    let r = append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![
            event("T", "1").with_timestamp(at(5)),
            event("T", "2").with_timestamp(at(9)),
            event("T", "3").with_timestamp(Timestamp::from_millis(123)),
        ],
    )
    .await;
    let want = [at(5), at(9), Timestamp::from_millis(123)];
    assert_eq!(
        r.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        want,
        "append result keeps explicit timestamps"
    );
    let stored = stream_events(store, &s, StreamRead::all()).await;
    assert_eq!(
        stored.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        want,
        "reads keep explicit timestamps"
    );
}

/// Given timestamps lie in the years 0000 to 9999, what RFC 3339 can write: both ends
/// are stored and read back, one millisecond beyond either is `InvalidInput` naming the
/// field — on appends, imports and snapshots — and stores nothing.
pub async fn timestamps_outside_years_0_to_9999_are_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("edges");
    let (first, last) = (
        Timestamp::from_millis(MIN_TIMESTAMP_MS),
        Timestamp::from_millis(MAX_TIMESTAMP_MS),
    );
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![
            event("T", "1").with_timestamp(first),
            event("T", "2").with_timestamp(last),
        ],
    )
    .await;
    let stored = stream_events(store, &s, StreamRead::all()).await;
    assert_eq!(
        stored.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        [first, last],
        "the first and the last millisecond of years 0000 to 9999 are kept"
    );
    assert_eq!(last.to_rfc3339(), "9999-12-31T23:59:59.999Z");
    for beyond in [MIN_TIMESTAMP_MS - 1, MAX_TIMESTAMP_MS + 1] {
        let t = Timestamp::from_millis(beyond);
        expect_invalid(
            store
                .append_to_stream(
                    &s,
                    ExpectedVersion::Any,
                    vec![event("T", "3").with_timestamp(t)],
                )
                .await,
            "writes[0].events[0].timestamp",
            "an append with a timestamp beyond the years 0000 to 9999",
        );
        let mut e = recorded("beyond", &StreamId::new("imported"), 1, 0);
        e.timestamp = t;
        expect_invalid(
            store
                .import_events(import_batch(vec![e], OnConflict::Error))
                .await,
            "events[0].timestamp",
            "an import with a timestamp beyond the years 0000 to 9999",
        );
        expect_invalid(
            store
                .save_stream_snapshot(NewStreamSnapshot {
                    timestamp: Some(t),
                    ..NewStreamSnapshot::new(s.clone(), 1, json("{}"))
                })
                .await,
            "timestamp",
            "a stream snapshot with a timestamp beyond the years 0000 to 9999",
        );
        expect_invalid(
            store
                .import_snapshots(vec![annals_core::KeyedSnapshot {
                    key: "k".into(),
                    content: "c".into(),
                    timestamp: t,
                }])
                .await,
            "snapshots[0].timestamp",
            "a keyed snapshot with a timestamp beyond the years 0000 to 9999",
        );
    }
    let d = description(store).await;
    assert_eq!(d.event_count, 2, "refused writes store nothing");
    assert!(
        store.load_snapshot("k").await.unwrap_or(None).is_none(),
        "a refused snapshot import stores nothing"
    );
}

/// Payload and metadata come back byte-for-byte: whitespace, key order, number forms,
/// escapes and duplicate keys untouched.
pub async fn append_keeps_payload_and_metadata_byte_for_byte(store: &dyn EventStore) {
    assert_fresh(store).await;
    let bodies = [
        r#"{ "a" :1 }"#,
        "\t{\n  \"z\" : 1,\n  \"a\" : [ 1 , 2.50 , 1e3 ]\n}\n",
        r#"{"b":2,"a":1}"#,
        r#"{"dup":1,"dup":2}"#,
        r#""text with \u00e9, é, \"quotes\" and \\ slashes""#,
        " [ ] ",
        "-0.0",
        "null",
        "true",
        r#"{"deep":{"er":{"est":[{"x":null}]}}}"#,
    ];
    let metas = [
        r#"{ "correlationId" : "c-1" }"#,
        "null",
        r#"{"headers":{ "k":"v" }}"#,
    ];
    let s = StreamId::new("bodies");
    let proposed: Vec<ProposedEvent> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| event("Body", b).with_metadata(json(metas[i % metas.len()])))
        .collect();
    let r = append_ok(store, &s, ExpectedVersion::NoStream, proposed).await;
    let check = |events: &[RecordedEvent], what: &str| {
        assert_eq!(events.len(), bodies.len(), "{what}: event count");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.payload.as_bytes(),
                bodies[i].as_bytes(),
                "{what}: payload {i} must be byte-for-byte"
            );
            assert_eq!(
                e.metadata.as_bytes(),
                metas[i % metas.len()].as_bytes(),
                "{what}: metadata {i} must be byte-for-byte"
            );
        }
    };
    check(&r.events, "append result");
    check(
        &stream_events(store, &s, StreamRead::all()).await,
        "read_stream",
    );
    check(&read_everything(store).await, "read_all");
    let latest = store
        .latest_event(filter())
        .await
        .unwrap()
        .expect("a latest event");
    assert_eq!(
        latest.payload.as_bytes(),
        bodies[bodies.len() - 1].as_bytes(),
        "latest_event payload"
    );
    let no_meta = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "{}")]).await;
    assert_eq!(
        no_meta.events[0].metadata.as_bytes(),
        b"null",
        "metadata defaults to null"
    );
}

/// Events without an id get a generated one: non-empty, at most 256 bytes, unique;
/// explicit ids are kept.
pub async fn append_generates_unique_event_ids(store: &dyn EventStore) {
    assert_fresh(store).await;
    let mut seen = HashSet::new();
    for i in 0..3 {
        let s = StreamId::new(format!("s-{i}"));
        let r = append_ok(
            store,
            &s,
            ExpectedVersion::Any,
            (0..10).map(|_| event("T", "{}")).collect(),
        )
        .await;
        for e in r.events {
            assert!(
                !e.id.is_empty() && e.id.len() <= MAX_NAME_BYTES,
                "generated id {:?}",
                e.id
            );
            assert!(
                seen.insert(e.id.clone()),
                "generated id {:?} is not unique",
                e.id
            );
        }
    }
    let r = append_ok(
        store,
        &StreamId::new("s-0"),
        ExpectedVersion::Any,
        vec![event("T", "{}").with_id("evt-explicit")],
    )
    .await;
    assert_eq!(r.events[0].id, "evt-explicit", "an explicit id is kept");
    let stored = ids(&read_everything(store).await);
    assert_eq!(stored.len(), 31);
    assert_eq!(
        stored.iter().collect::<HashSet<_>>().len(),
        31,
        "every stored id is unique"
    );
}

// ---------------------------------------------------------------------------------
// Expected versions and explicit versions
// ---------------------------------------------------------------------------------

/// `ExpectedVersion::Any` appends to a missing stream and to an existing one.
pub async fn expected_version_any_accepts_every_version(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("any");
    let r = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "1")]).await;
    assert_eq!(versions(&r.events), [1]);
    let r = append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", "2"), event("T", "3")],
    )
    .await;
    assert_eq!(versions(&r.events), [2, 3]);
}

/// `ExpectedVersion::NoStream` succeeds only when the stream has no event.
pub async fn expected_version_no_stream_requires_a_missing_stream(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("new").with_aggregate("thing");
    append_ok(store, &s, ExpectedVersion::NoStream, vec![event("T", "1")]).await;
    let before = description(store).await;
    let r = store
        .append_to_stream(&s, ExpectedVersion::NoStream, vec![event("T", "2")])
        .await;
    expect_wrong_version(
        r,
        &s,
        ExpectedVersion::NoStream,
        1,
        "NoStream on an existing stream",
    );
    assert_eq!(
        description(store).await,
        before,
        "a refused append stores nothing"
    );
}

/// `ExpectedVersion::StreamExists` succeeds only when the stream has an event.
pub async fn expected_version_stream_exists_requires_an_existing_stream(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("maybe");
    let r = store
        .append_to_stream(&s, ExpectedVersion::StreamExists, vec![event("T", "1")])
        .await;
    expect_wrong_version(
        r,
        &s,
        ExpectedVersion::StreamExists,
        0,
        "StreamExists on a missing stream",
    );
    assert_eq!(
        description(store).await.event_count,
        0,
        "a refused append stores nothing"
    );
    append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "1")]).await;
    let r = append_ok(
        store,
        &s,
        ExpectedVersion::StreamExists,
        vec![event("T", "2")],
    )
    .await;
    assert_eq!(versions(&r.events), [2]);
}

/// `ExpectedVersion::Exact(n)` succeeds only at version `n` (0 = missing stream).
pub async fn expected_version_exact_requires_that_version(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("exact").with_context("ctx");
    append_ok(store, &s, ExpectedVersion::Exact(0), vec![event("T", "1")]).await;
    append_ok(store, &s, ExpectedVersion::Exact(1), vec![event("T", "2")]).await;
    let before = description(store).await;
    for stale in [0, 1, 3, 5] {
        let r = store
            .append_to_stream(
                &s,
                ExpectedVersion::Exact(stale),
                vec![event("T", r#""x""#)],
            )
            .await;
        expect_wrong_version(
            r,
            &s,
            ExpectedVersion::Exact(stale),
            2,
            &format!("Exact({stale}) on a stream at version 2"),
        );
    }
    assert_eq!(
        description(store).await,
        before,
        "refused appends store nothing"
    );
    let other = StreamId::new("missing");
    let r = store
        .append_to_stream(
            &other,
            ExpectedVersion::Exact(1),
            vec![event("T", r#""x""#)],
        )
        .await;
    expect_wrong_version(
        r,
        &other,
        ExpectedVersion::Exact(1),
        0,
        "Exact(1) on a missing stream",
    );
    let r = append_ok(store, &s, ExpectedVersion::Exact(2), vec![event("T", "3")]).await;
    assert_eq!(versions(&r.events), [3]);
}

/// An event may carry an explicit version above the current one; gaps are allowed and
/// the stream continues from the highest version.
pub async fn explicit_versions_may_leave_gaps(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("gappy");
    let r = append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![event("T", "1").with_version(3)],
    )
    .await;
    assert_eq!(
        versions(&r.events),
        [3],
        "a new stream may start above version 1"
    );
    let r = append_ok(store, &s, ExpectedVersion::Exact(3), vec![event("T", "2")]).await;
    assert_eq!(versions(&r.events), [4]);
    let r = append_ok(
        store,
        &s,
        ExpectedVersion::Exact(4),
        vec![
            event("T", "3").with_version(10),
            event("T", "4"),
            event("T", "5").with_version(12),
        ],
    )
    .await;
    assert_eq!(versions(&r.events), [10, 11, 12]);
    assert_eq!(store.stream_version(&s).await.unwrap(), 12);
    assert_eq!(
        stream_versions(store, &s, StreamRead::all()).await,
        [3, 4, 10, 11, 12]
    );
    assert_eq!(
        stream_versions(store, &s, StreamRead::all().from_version(5).to_version(11)).await,
        [10, 11]
    );
    let all = read_everything(store).await;
    if store.capabilities().dense_positions {
        assert_eq!(
            positions(&all),
            [1, 2, 3, 4, 5],
            "positions stay dense when versions have gaps"
        );
    }
    expect_wrong_version(
        store
            .append_to_stream(&s, ExpectedVersion::Exact(5), vec![event("T", r#""x""#)])
            .await,
        &s,
        ExpectedVersion::Exact(5),
        12,
        "the expectation compares with the highest version",
    );
}

/// An explicit version not above the stream's current one is `VersionConflict`, and
/// nothing of the append is stored.
pub async fn explicit_version_not_above_current_is_a_version_conflict(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("conflict");
    append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", "1"), event("T", "2"), event("T", "3")],
    )
    .await;
    let before = read_everything(store).await;
    let check = |result: Result<AppendResult>, version: Version, current: Version, what: &str| {
        match expect_kind(result, ErrorKind::VersionConflict, what) {
            Error::VersionConflict {
                stream,
                version: v,
                current: c,
            } => {
                assert_eq!(
                    (stream, v, c),
                    (s.clone(), version, current),
                    "{what}: (stream, version, current)"
                )
            }
            other => panic!("{what}: not Error::VersionConflict: {other:?}"),
        }
    };
    for v in [3, 2, 1] {
        let r = store
            .append_to_stream(
                &s,
                ExpectedVersion::Any,
                vec![event("T", r#""x""#).with_version(v)],
            )
            .await;
        check(r, v, 3, &format!("explicit version {v} on a stream at 3"));
    }
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![
                event("T", r#""a""#).with_version(5),
                event("T", r#""b""#).with_version(5),
            ],
        )
        .await;
    check(r, 5, 5, "a repeated explicit version inside one append");
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("T", r#""a""#), event("T", r#""b""#).with_version(4)],
        )
        .await;
    check(
        r,
        4,
        4,
        "an explicit version equal to the previous event's in the same append",
    );
    assert_eq!(
        read_everything(store).await,
        before,
        "a conflicting append stores nothing"
    );
}

/// An explicit version 0 is `InvalidInput` naming the event's `version`.
pub async fn explicit_version_zero_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert_append_refused(
        store,
        AppendRequest::to_stream(
            StreamId::new("s"),
            ExpectedVersion::Any,
            vec![event("T", "1"), event("T", "2").with_version(0)],
        ),
        "writes[0].events[1].version",
    )
    .await;
}

// ---------------------------------------------------------------------------------
// Multi-stream appends
// ---------------------------------------------------------------------------------

/// An append to several streams stores every event in one commit, in request order.
pub async fn multi_stream_append_is_one_commit(store: &dyn EventStore) {
    assert_fresh(store).await;
    if !store.capabilities().atomic_multi_stream {
        return;
    }
    let a = StreamId::new("a").with_aggregate("acc");
    let b = StreamId::new("b").with_aggregate("acc");
    append_ok(
        store,
        &b,
        ExpectedVersion::NoStream,
        vec![event("Opened", "{}")],
    )
    .await;
    let r = request_ok(
        store,
        AppendRequest::to_stream(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![event("Opened", "{}"), event("Debited", "1")],
        )
        .and_stream(
            b.clone(),
            ExpectedVersion::Exact(1),
            vec![event("Credited", "1")],
        )
        .with_commit_id("transfer-1"),
    )
    .await;
    assert_eq!(
        r.events
            .iter()
            .map(|e| (e.stream.clone(), e.version, e.commit_sequence))
            .collect::<Vec<_>>(),
        [(a.clone(), 1, 0), (a.clone(), 2, 1), (b.clone(), 2, 2)],
        "events in request order with per-stream versions and one commit sequence"
    );
    assert!(r.events.iter().all(|e| e.commit_id == "transfer-1"));
    if store.capabilities().dense_positions {
        assert_eq!(positions(&r.events), [2, 3, 4]);
    }
    assert_eq!(
        read_everything(store).await[1..],
        r.events[..],
        "reads return the commit"
    );
    assert_eq!(store.stream_version(&a).await.unwrap(), 2);
    assert_eq!(store.stream_version(&b).await.unwrap(), 2);
}

/// When one stream of a multi-stream append fails its expectation (or has a version
/// conflict), nothing is stored and positions are not consumed.
pub async fn multi_stream_append_stores_nothing_when_one_stream_fails(store: &dyn EventStore) {
    assert_fresh(store).await;
    if !store.capabilities().atomic_multi_stream {
        return;
    }
    let a = StreamId::new("a");
    let b = StreamId::new("b");
    let c = StreamId::new("c");
    append_ok(store, &a, ExpectedVersion::NoStream, vec![event("T", "1")]).await;
    let before = description(store).await;
    let events_before = read_everything(store).await;
    let r = store
        .append(
            AppendRequest::to_stream(
                b.clone(),
                ExpectedVersion::NoStream,
                vec![event("T", r#""b1""#), event("T", r#""b2""#)],
            )
            .and_stream(c.clone(), ExpectedVersion::Any, vec![event("T", r#""c1""#)])
            .and_stream(
                a.clone(),
                ExpectedVersion::NoStream,
                vec![event("T", r#""a2""#)],
            ),
        )
        .await;
    expect_wrong_version(
        r,
        &a,
        ExpectedVersion::NoStream,
        1,
        "the third stream's expectation fails",
    );
    let r = store
        .append(
            AppendRequest::to_stream(b.clone(), ExpectedVersion::Any, vec![event("T", r#""b1""#)])
                .and_stream(
                    a.clone(),
                    ExpectedVersion::Any,
                    vec![event("T", r#""a2""#).with_version(1)],
                ),
        )
        .await;
    expect_kind(
        r,
        ErrorKind::VersionConflict,
        "the second stream has a version conflict",
    );
    assert_eq!(
        description(store).await,
        before,
        "nothing of a failed multi-stream append is stored"
    );
    assert_eq!(read_everything(store).await, events_before);
    assert!(
        store.stream_info(&b).await.unwrap().is_none(),
        "stream b must not exist"
    );
    assert!(
        store.stream_info(&c).await.unwrap().is_none(),
        "stream c must not exist"
    );
    let r = append_ok(
        store,
        &b,
        ExpectedVersion::NoStream,
        vec![event("T", r#""b1""#)],
    )
    .await;
    assert_eq!(r.events[0].version, 1);
    if store.capabilities().dense_positions {
        assert_eq!(
            r.events[0].position, 2,
            "a failed append consumes no position"
        );
    }
}

/// The same stream twice in one request is `InvalidInput` naming the second write.
pub async fn same_stream_twice_in_one_append_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("twice").with_context("c");
    assert_append_refused(
        store,
        AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, vec![event("T", "1")])
            .and_stream(
                StreamId::new("other"),
                ExpectedVersion::Any,
                vec![event("T", "2")],
            )
            .and_stream(s, ExpectedVersion::Any, vec![event("T", "3")]),
        "writes[2].stream",
    )
    .await;
}

// ---------------------------------------------------------------------------------
// Idempotent retries and duplicate ids
// ---------------------------------------------------------------------------------

/// Re-sending an append whose ids are all stored with the same content returns the
/// original events (`retried`), stores nothing, and ignores the (now stale)
/// expectation.
pub async fn retry_with_same_ids_and_content_returns_the_original_result(store: &dyn EventStore) {
    assert_fresh(store).await;
    let a = StreamId::new("a").with_aggregate("acc");
    let b = StreamId::new("b").with_aggregate("acc");
    let request = AppendRequest::to_stream(
        a.clone(),
        ExpectedVersion::NoStream,
        vec![
            event("Opened", r#"{ "owner" : "ann" }"#)
                .with_id("e1")
                .with_metadata(json(r#"{"m":1}"#)),
            event("Deposited", "5").with_id("e2"),
        ],
    );
    let original = request_ok(store, request.clone()).await;
    append_ok(
        store,
        &b,
        ExpectedVersion::Any,
        vec![event("Other", "{}").with_id("e3")],
    )
    .await;
    let before = description(store).await;
    let retry = request_ok(store, request.clone()).await;
    assert!(retry.retried, "an identical re-send is a retry");
    assert_eq!(
        retry.events, original.events,
        "a retry returns the original events and positions"
    );
    assert_eq!(
        retry.commit_id, original.commit_id,
        "a retry returns the original commit id"
    );
    assert_eq!(
        retry.head_position, before.head_position,
        "a retry reports the current head"
    );
    let loose = AppendRequest::to_stream(
        a.clone(),
        ExpectedVersion::Any,
        request.writes[0].events.clone(),
    )
    .with_commit_id("another-commit");
    let retry = request_ok(store, loose).await;
    assert!(
        retry.retried && retry.events == original.events,
        "a retry with another expectation and commit id"
    );
    let with_versions = AppendRequest::to_stream(
        a.clone(),
        ExpectedVersion::Exact(7),
        vec![
            request.writes[0].events[0].clone().with_version(1),
            request.writes[0].events[1]
                .clone()
                .with_version(2)
                .with_timestamp(original.events[1].timestamp),
        ],
    );
    let retry = request_ok(store, with_versions).await;
    assert!(
        retry.retried && retry.events == original.events,
        "a retry that repeats the stored versions and timestamp"
    );
    assert_eq!(description(store).await, before, "retries store nothing");
    if store.capabilities().atomic_multi_stream {
        let multi = AppendRequest::to_stream(
            a.clone(),
            ExpectedVersion::Any,
            vec![event("X", "1").with_id("m1")],
        )
        .and_stream(
            b.clone(),
            ExpectedVersion::Any,
            vec![event("Y", "2").with_id("m2")],
        );
        let first = request_ok(store, multi.clone()).await;
        let again = request_ok(store, multi).await;
        assert!(
            again.retried && again.events == first.events,
            "a multi-stream retry"
        );
    }
}

/// A retry is answered while the store is frozen (it writes nothing); a new append is
/// refused with `Frozen`.
pub async fn retry_works_while_frozen(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let events = vec![event("T", "1").with_id("f1"), event("T", "2").with_id("f2")];
    let original = append_ok(store, &s, ExpectedVersion::NoStream, events.clone()).await;
    store.freeze().await.unwrap();
    let retry = store
        .append_to_stream(&s, ExpectedVersion::NoStream, events)
        .await
        .unwrap_or_else(|e| panic!("a retry while frozen must succeed: {e}"));
    assert!(
        retry.retried && retry.events == original.events,
        "a retry while frozen returns the original"
    );
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("T", "3").with_id("f3")],
        )
        .await;
    expect_kind(r, ErrorKind::Frozen, "a new append while frozen");
    store.unfreeze().await.unwrap();
}

/// A stored id reused for different content (payload, metadata, type, stream, version,
/// timestamp) is `DuplicateEventId`, and nothing is stored.
pub async fn known_event_id_with_different_content_is_duplicate_event_id(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s").with_aggregate("agg");
    let stored = event("T", r#"{"a":1}"#)
        .with_id("e1")
        .with_metadata(json(r#"{"m":1}"#))
        .with_timestamp(at(1));
    append_ok(store, &s, ExpectedVersion::NoStream, vec![stored.clone()]).await;
    let before = description(store).await;
    let variants: Vec<(&str, StreamId, ProposedEvent)> = vec![
        (
            "another payload",
            s.clone(),
            ProposedEvent {
                payload: json(r#"{"a":2}"#),
                ..stored.clone()
            },
        ),
        (
            "the same payload re-formatted",
            s.clone(),
            ProposedEvent {
                payload: json(r#"{ "a":1}"#),
                ..stored.clone()
            },
        ),
        (
            "other metadata",
            s.clone(),
            ProposedEvent {
                metadata: json("null"),
                ..stored.clone()
            },
        ),
        (
            "another type",
            s.clone(),
            ProposedEvent {
                event_type: "U".into(),
                ..stored.clone()
            },
        ),
        ("another version", s.clone(), stored.clone().with_version(2)),
        (
            "another timestamp",
            s.clone(),
            stored.clone().with_timestamp(at(2)),
        ),
        ("another stream", StreamId::new("s"), stored.clone()),
        (
            "another context",
            s.clone().with_context("ctx"),
            stored.clone(),
        ),
    ];
    for (what, stream, proposed) in variants {
        let r = store
            .append_to_stream(&stream, ExpectedVersion::Any, vec![proposed])
            .await;
        expect_duplicate_id(r, "e1", &format!("id e1 reused with {what}"));
    }
    assert_eq!(description(store).await, before, "nothing is stored");
}

/// A request mixing stored ids with new ones (or with events without an id) is
/// `DuplicateEventId` naming a stored id; nothing of it is stored.
pub async fn partially_known_event_ids_are_duplicate_event_id(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let e1 = event("T", "1").with_id("e1");
    let e2 = event("T", "2").with_id("e2");
    append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![e1.clone(), e2.clone()],
    )
    .await;
    let before = description(store).await;
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![e1.clone(), event("T", "3").with_id("e3")],
        )
        .await;
    expect_duplicate_id(r, "e1", "a stored id followed by a new one");
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("T", "3").with_id("e3"), e2.clone()],
        )
        .await;
    expect_duplicate_id(r, "e2", "a new id followed by a stored one");
    let r = store
        .append_to_stream(&s, ExpectedVersion::Any, vec![e1, event("T", r#""no id""#)])
        .await;
    expect_duplicate_id(r, "e1", "a stored id followed by an event without id");
    assert_eq!(description(store).await, before, "nothing is stored");
    expect_kind(
        store.mark_dispatched("e3").await,
        ErrorKind::NotFound,
        "e3 must not be stored",
    );
}

/// The same id twice in one request is `InvalidInput` naming the second occurrence.
pub async fn duplicate_event_id_inside_one_request_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert_append_refused(
        store,
        AppendRequest::to_stream(
            StreamId::new("s"),
            ExpectedVersion::Any,
            vec![event("T", "1").with_id("x"), event("T", "1").with_id("x")],
        ),
        "writes[0].events[1].id",
    )
    .await;
    assert_append_refused(
        store,
        AppendRequest::to_stream(
            StreamId::new("s"),
            ExpectedVersion::Any,
            vec![event("T", "1").with_id("y")],
        )
        .and_stream(
            StreamId::new("t"),
            ExpectedVersion::Any,
            vec![event("T", "2").with_id("y")],
        ),
        "writes[1].events[0].id",
    )
    .await;
}

/// An append without events succeeds, returns no events and stores nothing (not even
/// a stream); the expectations of its streams are still checked.
pub async fn empty_append_succeeds_without_events(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let r = append_ok(store, &s, ExpectedVersion::Any, vec![]).await;
    assert!(
        r.events.is_empty() && !r.retried && r.head_position == 0,
        "empty append on an empty store: {r:?}"
    );
    let r = request_ok(store, AppendRequest::default()).await;
    assert!(
        r.events.is_empty() && r.last_position() == 0,
        "an append without writes: {r:?}"
    );
    assert_eq!(
        description(store).await.stream_count,
        0,
        "an empty append creates no stream"
    );
    assert!(store.stream_info(&s).await.unwrap().is_none());
    let r1 = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "1")]).await;
    let before = description(store).await;
    let r = append_ok(store, &s, ExpectedVersion::Exact(1), vec![]).await;
    assert!(
        r.events.is_empty() && r.head_position == r1.head_position,
        "empty append reports the head: {r:?}"
    );
    expect_wrong_version(
        store
            .append_to_stream(&s, ExpectedVersion::NoStream, vec![])
            .await,
        &s,
        ExpectedVersion::NoStream,
        1,
        "an empty append still checks its expectation",
    );
    assert_eq!(
        description(store).await,
        before,
        "empty appends store nothing"
    );
}

// ---------------------------------------------------------------------------------
// read_stream
// ---------------------------------------------------------------------------------

/// `from_version` and `to_version` select an inclusive range of one stream.
pub async fn read_stream_selects_a_version_range(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s").with_aggregate("agg");
    let other = StreamId::new("s");
    for i in 1..=5 {
        append_ok(
            store,
            &s,
            ExpectedVersion::Exact(i - 1),
            vec![event("T", &i.to_string())],
        )
        .await;
        append_ok(
            store,
            &other,
            ExpectedVersion::Any,
            vec![event("Noise", "0")],
        )
        .await;
    }
    let cases: [(StreamRead, &[Version]); 7] = [
        (StreamRead::all(), &[1, 2, 3, 4, 5]),
        (StreamRead::all().from_version(2).to_version(4), &[2, 3, 4]),
        (StreamRead::all().from_version(4), &[4, 5]),
        (StreamRead::all().to_version(2), &[1, 2]),
        (StreamRead::all().from_version(3).to_version(3), &[3]),
        (StreamRead::all().from_version(6), &[]),
        (StreamRead::all().from_version(4).to_version(2), &[]),
    ];
    for (r, want) in cases {
        assert_eq!(
            stream_versions(store, &s, r).await,
            want,
            "read_stream {r:?}"
        );
    }
    let events = stream_events(store, &s, StreamRead::all()).await;
    assert!(
        events.iter().all(|e| e.stream == s),
        "read_stream returns only the stream's events"
    );
    assert_eq!(
        events
            .iter()
            .map(|e| e.payload.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
}

/// Backward reads return newest first; `limit` caps either direction.
pub async fn read_stream_backward_with_limit(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        (1..=5).map(|i| event("T", &i.to_string())).collect(),
    )
    .await;
    let cases: [(StreamRead, &[Version]); 7] = [
        (StreamRead::backward(), &[5, 4, 3, 2, 1]),
        (StreamRead::backward().limit(2), &[5, 4]),
        (
            StreamRead::backward().from_version(2).to_version(4),
            &[4, 3, 2],
        ),
        (StreamRead::backward().to_version(3).limit(2), &[3, 2]),
        (StreamRead::all().limit(2), &[1, 2]),
        (StreamRead::all().from_version(3).limit(10), &[3, 4, 5]),
        (StreamRead::all().limit(0), &[]),
    ];
    for (r, want) in cases {
        assert_eq!(
            stream_versions(store, &s, r).await,
            want,
            "read_stream {r:?}"
        );
    }
}

/// Reading a stream that has no event returns nothing, even when a stream with the
/// same id exists in another context.
pub async fn read_stream_of_unknown_stream_is_empty(store: &dyn EventStore) {
    assert_fresh(store).await;
    let missing = StreamId::new("nobody");
    assert!(stream_events(store, &missing, StreamRead::all())
        .await
        .is_empty());
    append_ok(
        store,
        &StreamId::new("nobody").with_context("ctx"),
        ExpectedVersion::Any,
        vec![event("T", "1")],
    )
    .await;
    assert!(
        stream_events(store, &missing, StreamRead::all())
            .await
            .is_empty(),
        "another context's stream is another stream"
    );
    assert!(stream_events(store, &missing, StreamRead::backward())
        .await
        .is_empty());
}

/// `from_version` 0 or `to_version` 0 (versions are 1-based) and an empty stream id
/// are `InvalidInput`.
pub async fn read_stream_from_version_zero_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "1")]).await;
    expect_invalid(
        store
            .read_stream(&s, StreamRead::all().from_version(0))
            .await,
        "from_version",
        "from_version 0",
    );
    expect_invalid(
        store.read_stream(&s, StreamRead::all().to_version(0)).await,
        "to_version",
        "to_version 0",
    );
    expect_invalid(
        store
            .read_stream(&StreamId::new(""), StreamRead::all())
            .await,
        "stream.id",
        "an empty stream id",
    );
    assert_eq!(
        stream_versions(store, &s, StreamRead::all()).await,
        [1],
        "the store stays usable"
    );
}

// ---------------------------------------------------------------------------------
// read_all
// ---------------------------------------------------------------------------------

/// A store-wide read returns every event in position order forward and in reverse
/// backward, with the head position and `end`.
pub async fn read_all_forward_and_backward(store: &dyn EventStore) {
    assert_fresh(store).await;
    let empty = store.read_all(ReadAll::forward()).await.unwrap();
    assert!(
        empty.events.is_empty() && empty.end && empty.head_position == 0,
        "reading an empty store: {empty:?}"
    );
    let empty = store.read_all(ReadAll::backward()).await.unwrap();
    assert!(
        empty.events.is_empty() && empty.end,
        "reading an empty store backward: {empty:?}"
    );
    let seeded = seed_fixture(store).await;
    let forward = store.read_all(ReadAll::forward()).await.unwrap();
    assert_eq!(
        forward.events, seeded,
        "forward read returns every event in position order"
    );
    assert!(forward.end, "a read without limit reaches the end");
    assert_eq!(forward.head_position, seeded.last().unwrap().position);
    let backward = store.read_all(ReadAll::backward()).await.unwrap();
    let mut reversed = seeded.clone();
    reversed.reverse();
    assert_eq!(
        backward.events, reversed,
        "backward read returns every event newest first"
    );
    assert!(backward.end);
    assert_eq!(backward.head_position, forward.head_position);
}

/// `after(p)` starts past position `p`: above it forward, below it backward.
pub async fn read_all_after_position(store: &dyn EventStore) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    let p = |k: usize| seeded[k].position;
    let head = p(7);
    assert_eq!(
        read_ids(store, ReadAll::forward().after(p(1))).await,
        ["p3", "p4", "p5", "p6", "p7", "p8"]
    );
    assert_eq!(read_ids(store, ReadAll::forward().after(0)).await.len(), 8);
    let at_head = store
        .read_all(ReadAll::forward().after(head))
        .await
        .unwrap();
    assert!(
        at_head.events.is_empty() && at_head.end,
        "nothing after the head: {at_head:?}"
    );
    assert_eq!(
        read_ids(store, ReadAll::backward().after(p(3))).await,
        ["p3", "p2", "p1"]
    );
    assert_eq!(
        read_ids(store, ReadAll::backward().after(head + 1))
            .await
            .len(),
        8
    );
    assert!(
        read_ids(store, ReadAll::backward().after(p(0)))
            .await
            .is_empty(),
        "nothing before the first event"
    );
}

/// `skip` passes over matching events, `limit` caps the page; `end` says whether the
/// page reached the end.
pub async fn read_all_skip_and_limit(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let page = store.read_all(ReadAll::forward().limit(2)).await.unwrap();
    assert_eq!(ids(&page.events), ["p1", "p2"]);
    assert!(!page.end, "a full page before the head is not the end");
    assert_eq!(
        read_ids(store, ReadAll::forward().skip(2).limit(2)).await,
        ["p3", "p4"]
    );
    assert_eq!(read_ids(store, ReadAll::forward().skip(7)).await, ["p8"]);
    let past = store.read_all(ReadAll::forward().skip(10)).await.unwrap();
    assert!(
        past.events.is_empty() && past.end,
        "skipping past everything: {past:?}"
    );
    assert!(
        read_ids(store, ReadAll::forward().limit(0))
            .await
            .is_empty(),
        "limit 0"
    );
    let last = store
        .read_all(ReadAll::forward().skip(6).limit(2))
        .await
        .unwrap();
    assert_eq!(ids(&last.events), ["p7", "p8"]);
    assert!(last.end, "a page that ends at the head is the end");
    assert_eq!(
        read_ids(store, ReadAll::backward().skip(1).limit(2)).await,
        ["p7", "p6"]
    );
    let sales = filter().context("sales");
    assert_eq!(
        read_ids(
            store,
            ReadAll::forward().filter(sales.clone()).skip(2).limit(2)
        )
        .await,
        ["p4", "p5"],
        "skip counts matching events only"
    );
    assert_eq!(
        read_ids(store, ReadAll::backward().filter(sales).skip(1).limit(3)).await,
        ["p7", "p5", "p4"]
    );
}

async fn chain_pages(store: &dyn EventStore, first: ReadAll, what: &str) -> Vec<RecordedEvent> {
    let page_size = first.limit.unwrap();
    let mut out = Vec::new();
    let mut request = first;
    for _ in 0..100 {
        let page = store
            .read_all(request.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: read_all {request:?} failed: {e}"));
        assert!(
            page.events.len() as u64 <= page_size,
            "{what}: page larger than the limit"
        );
        out.extend(page.events);
        if page.end {
            return out;
        }
        // The cursor travels as text between a client and a server.
        let cursor: Cursor = page.next_cursor.to_string().parse().unwrap_or_else(|e| {
            panic!(
                "{what}: next_cursor {} does not parse back: {e}",
                page.next_cursor
            )
        });
        assert_eq!(cursor, page.next_cursor);
        request = ReadAll {
            from: ReadFrom::Cursor(cursor),
            ..request
        };
    }
    panic!("{what}: 100 pages without reaching the end");
}

/// Forward pages of 3 chained through `next_cursor` until `end` return exactly what
/// one read returns, filtered or not.
pub async fn read_all_pages_chain_with_cursor(store: &dyn EventStore) {
    assert_fresh(store).await;
    for i in 0..10 {
        let s = StreamId::new(format!("s-{}", i % 3)).with_aggregate(if i % 2 == 0 {
            "even"
        } else {
            "odd"
        });
        append_ok(
            store,
            &s,
            ExpectedVersion::Any,
            vec![event("T", &i.to_string())],
        )
        .await;
    }
    let full = read_everything(store).await;
    let chained = chain_pages(store, ReadAll::forward().limit(3), "forward pages of 3").await;
    assert_eq!(chained, full, "pages of 3 concatenate to a full read");
    let odd = read(store, ReadAll::forward().filter(filter().aggregate("odd"))).await;
    let chained = chain_pages(
        store,
        ReadAll::forward()
            .filter(filter().aggregate("odd"))
            .limit(2),
        "filtered pages",
    )
    .await;
    assert_eq!(
        chained, odd,
        "filtered pages concatenate to a full filtered read"
    );
    let chained = chain_pages(store, ReadAll::forward().limit(1), "pages of 1").await;
    assert_eq!(chained, full);
}

/// Backward pages chained through `next_cursor` return a full backward read.
pub async fn read_all_backward_pages_chain_with_cursor(store: &dyn EventStore) {
    assert_fresh(store).await;
    for i in 0..10 {
        append_ok(
            store,
            &StreamId::new(format!("s-{}", i % 4)),
            ExpectedVersion::Any,
            vec![event("T", &i.to_string())],
        )
        .await;
    }
    let full = read(store, ReadAll::backward()).await;
    assert_eq!(full.len(), 10);
    let chained = chain_pages(store, ReadAll::backward().limit(3), "backward pages of 3").await;
    assert_eq!(
        chained, full,
        "backward pages of 3 concatenate to a full backward read"
    );
    let sparse = filter().aggregate_ids(["s-1"]);
    let want = read(store, ReadAll::backward().filter(sparse.clone())).await;
    let chained = chain_pages(
        store,
        ReadAll::backward().filter(sparse).limit(2),
        "filtered backward pages",
    )
    .await;
    assert_eq!(chained, want);
}

/// The cursor of the last page continues with exactly the events appended later.
pub async fn read_all_cursor_continues_after_new_appends(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    seed_stream(store, &s, "a", 4).await;
    let page = store.read_all(ReadAll::forward()).await.unwrap();
    assert!(page.end);
    let again = store
        .read_all(ReadAll::forward().cursor(page.next_cursor))
        .await
        .unwrap();
    assert!(
        again.events.is_empty() && again.end,
        "nothing new after the final cursor: {again:?}"
    );
    let new = seed_stream(store, &s, "b", 2).await;
    let next = store
        .read_all(ReadAll::forward().cursor(page.next_cursor))
        .await
        .unwrap();
    assert_eq!(
        next.events, new,
        "the final cursor continues with the new events"
    );
    let filtered = store
        .read_all(ReadAll::forward().filter(filter().event_types(["Nothing"])))
        .await
        .unwrap();
    assert!(filtered.events.is_empty() && filtered.end);
    let newer = seed_stream(store, &s, "c", 1).await;
    let next = store
        .read_all(ReadAll::forward().cursor(filtered.next_cursor))
        .await
        .unwrap();
    assert_eq!(
        next.events, newer,
        "a filtered read's cursor continues past the events it filtered out"
    );
}

/// Context and aggregate filters select exact values; `""` selects streams without one.
pub async fn read_all_filters_by_context_and_aggregate(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let cases: Vec<(EventFilter, &[&str])> = vec![
        (
            filter().context("sales"),
            &["p1", "p2", "p4", "p5", "p7", "p8"],
        ),
        (filter().context("billing"), &["p3"]),
        (filter().context(""), &["p6"]),
        (filter().context("nope"), &[]),
        (
            filter().aggregate("order"),
            &["p1", "p2", "p3", "p4", "p7", "p8"],
        ),
        (filter().aggregate(""), &["p6"]),
        (
            filter().context("sales").aggregate("order"),
            &["p1", "p2", "p4", "p7", "p8"],
        ),
        (filter().context("sales").aggregate("customer"), &["p5"]),
        (EventFilter::stream(&fixture_stream(0)), &["p1", "p4", "p8"]),
        (EventFilter::stream(&fixture_stream(5)), &["p6"]),
    ];
    for (f, want) in cases {
        assert_eq!(
            read_ids(store, ReadAll::forward().filter(f.clone())).await,
            want,
            "filter {f:?}"
        );
        let mut back: Vec<&str> = want.to_vec();
        back.reverse();
        assert_eq!(
            read_ids(store, ReadAll::backward().filter(f.clone())).await,
            back,
            "backward, filter {f:?}"
        );
    }
}

/// Aggregate ids and event types select any of the listed values.
pub async fn read_all_filters_by_aggregate_ids_and_event_types(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let cases: Vec<(EventFilter, &[&str])> = vec![
        (filter().aggregate_ids(["o-1"]), &["p1", "p3", "p4", "p8"]),
        (
            filter().aggregate_ids(["o-1", "c-1"]),
            &["p1", "p3", "p4", "p5", "p8"],
        ),
        (filter().aggregate_ids(["o-1"]).context("billing"), &["p3"]),
        (filter().aggregate_ids(["nobody"]), &[]),
        (filter().event_types(["Shipped"]), &["p4", "p7"]),
        (
            filter().event_types(["Placed", "Delivered"]),
            &["p1", "p2", "p8"],
        ),
        (
            filter().event_types(["Shipped"]).aggregate_ids(["o-2"]),
            &["p7"],
        ),
        (filter().event_types([""]), &[]),
    ];
    for (f, want) in cases {
        assert_eq!(
            read_ids(store, ReadAll::forward().filter(f.clone())).await,
            want,
            "filter {f:?}"
        );
    }
}

/// The time range is inclusive at both ends and uses the events' timestamps.
pub async fn read_all_filters_by_inclusive_time_range(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let ms = |t: Timestamp, d: i64| Timestamp::from_millis(t.as_millis() + d);
    let cases: Vec<(Option<Timestamp>, Option<Timestamp>, &[&str])> = vec![
        (Some(at(3)), Some(at(5)), &["p3", "p4", "p5"]),
        (Some(ms(at(3), 1)), Some(ms(at(5), -1)), &["p4"]),
        (Some(at(7)), None, &["p7", "p8"]),
        (None, Some(at(1)), &["p1"]),
        (None, Some(ms(at(1), -1)), &[]),
        (Some(at(4)), Some(at(4)), &["p4"]),
        (Some(at(5)), Some(at(4)), &[]),
    ];
    for (from, to, want) in cases {
        let f = filter().time_range(from, to);
        assert_eq!(
            read_ids(store, ReadAll::forward().filter(f.clone())).await,
            want,
            "time range {from:?}..={to:?}"
        );
    }
    let f = filter()
        .time_range(Some(at(2)), Some(at(7)))
        .context("sales");
    assert_eq!(
        read_ids(store, ReadAll::backward().filter(f).limit(3)).await,
        ["p7", "p5", "p4"]
    );
}

/// `min_version` and `max_version` select an inclusive range of stream versions.
pub async fn read_all_filters_by_version_range(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let cases: Vec<(Option<Version>, Option<Version>, &[&str])> = vec![
        (Some(2), None, &["p4", "p7", "p8"]),
        (None, Some(1), &["p1", "p2", "p3", "p5", "p6"]),
        (Some(2), Some(2), &["p4", "p7"]),
        (Some(3), Some(3), &["p8"]),
        (Some(4), None, &[]),
    ];
    for (min_version, max_version, want) in cases {
        let f = EventFilter {
            min_version,
            max_version,
            ..filter()
        };
        assert_eq!(
            read_ids(store, ReadAll::forward().filter(f.clone())).await,
            want,
            "versions {min_version:?}..={max_version:?}"
        );
    }
}

/// The dispatched filter selects by dispatch state.
pub async fn read_all_filters_by_dispatched(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    assert!(
        read_ids(store, ReadAll::forward().filter(filter().dispatched(true)))
            .await
            .is_empty()
    );
    assert_eq!(
        read_ids(store, ReadAll::forward().filter(filter().dispatched(false)))
            .await
            .len(),
        8
    );
    store.mark_dispatched("p2").await.unwrap();
    store.mark_dispatched("p5").await.unwrap();
    assert_eq!(
        read_ids(store, ReadAll::forward().filter(filter().dispatched(true))).await,
        ["p2", "p5"]
    );
    assert_eq!(
        read_ids(store, ReadAll::forward().filter(filter().dispatched(false))).await,
        ["p1", "p3", "p4", "p6", "p7", "p8"]
    );
    assert_eq!(
        read_ids(
            store,
            ReadAll::backward().filter(filter().dispatched(false).context("sales"))
        )
        .await,
        ["p8", "p7", "p4", "p1"]
    );
}

/// A cursor the store never issued is `InvalidInput` naming `cursor`: garbage, a
/// tampered or truncated string, or a well-formed cursor past the head.
pub async fn read_all_refuses_cursor_never_issued(store: &dyn EventStore) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    let head = seeded.last().unwrap().position;
    let r = store
        .read_all(ReadAll::forward().cursor(Cursor::forward_after(head + 100)))
        .await;
    expect_invalid(r, "cursor", "a forward cursor past the head");
    let r = store
        .read_all(ReadAll::backward().cursor(Cursor::backward_before(head + 100)))
        .await;
    expect_invalid(r, "cursor", "a backward cursor past the head");
    let issued = store
        .read_all(ReadAll::forward().limit(2))
        .await
        .unwrap()
        .next_cursor
        .to_string();
    let mut tampered = issued.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let bumped = issued.replacen('2', "3", 1);
    for text in [
        "",
        "garbage",
        "f",
        "f2",
        "f2.",
        "b-1.00000000",
        tampered.as_str(),
        bumped.as_str(),
        &issued[..issued.len() - 1],
    ] {
        expect_invalid(
            text.parse::<Cursor>(),
            "cursor",
            &format!("cursor text {text:?}"),
        );
    }
    // Cursors at the head (forward) and just past it (backward) were issued.
    let at_head = store
        .read_all(ReadAll::forward().cursor(Cursor::forward_after(head)))
        .await
        .unwrap();
    assert!(at_head.events.is_empty() && at_head.end);
    let from_top = store
        .read_all(ReadAll::backward().cursor(Cursor::backward_before(head + 1)))
        .await
        .unwrap();
    assert_eq!(from_top.events.len(), 8);
    assert_eq!(
        read_everything(store).await,
        seeded,
        "the store stays usable"
    );
}

/// A backward cursor on a forward read (or the reverse) is `InvalidInput` naming
/// `cursor`.
pub async fn read_all_refuses_cursor_of_the_other_direction(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let back = store
        .read_all(ReadAll::backward().limit(2))
        .await
        .unwrap()
        .next_cursor;
    let fwd = store
        .read_all(ReadAll::forward().limit(2))
        .await
        .unwrap()
        .next_cursor;
    expect_invalid(
        store.read_all(ReadAll::forward().cursor(back)).await,
        "cursor",
        "a backward cursor on a forward read",
    );
    expect_invalid(
        store.read_all(ReadAll::backward().cursor(fwd)).await,
        "cursor",
        "a forward cursor on a backward read",
    );
    assert_eq!(
        read_ids(store, ReadAll::backward().cursor(back)).await,
        ["p6", "p5", "p4", "p3", "p2", "p1"]
    );
    assert_eq!(
        read_ids(store, ReadAll::forward().cursor(fwd).limit(1)).await,
        ["p3"]
    );
}

// ---------------------------------------------------------------------------------
// Stream identity, latest event, stream info, stream listing
// ---------------------------------------------------------------------------------

/// `(context, aggregate, id)` identifies a stream: the same id in another context or
/// aggregate is another stream, with its own versions.
pub async fn streams_with_same_id_in_different_contexts_are_distinct(store: &dyn EventStore) {
    assert_fresh(store).await;
    let streams = [
        StreamId::new("x"),
        StreamId::new("x").with_context("c1"),
        StreamId::new("x").with_context("c2"),
        StreamId::new("x").with_aggregate("a1"),
        StreamId::new("x").with_aggregate("a1").with_context("c1"),
    ];
    for (i, s) in streams.iter().enumerate() {
        let r = append_ok(
            store,
            s,
            ExpectedVersion::NoStream,
            vec![event("T", &i.to_string())],
        )
        .await;
        assert_eq!(r.events[0].version, 1, "{s} is a new stream");
        assert_eq!(r.events[0].stream, *s);
    }
    append_ok(
        store,
        &streams[2],
        ExpectedVersion::Exact(1),
        vec![event("T", r#""again""#)],
    )
    .await;
    for (i, s) in streams.iter().enumerate() {
        let events = stream_events(store, s, StreamRead::all()).await;
        assert_eq!(
            events[0].payload.as_str(),
            Some(i.to_string().as_str()),
            "{s} holds its own events"
        );
        assert_eq!(events.len(), if i == 2 { 2 } else { 1 }, "{s}");
        assert_eq!(
            store.stream_version(s).await.unwrap(),
            events.len() as Version
        );
    }
    assert_eq!(description(store).await.stream_count, 5);
    expect_wrong_version(
        store
            .append_to_stream(
                &streams[4],
                ExpectedVersion::NoStream,
                vec![event("T", r#""x""#)],
            )
            .await,
        &streams[4],
        ExpectedVersion::NoStream,
        1,
        "the error names the full stream identity",
    );
}

/// `latest_event` returns the newest event selected by a filter, or `None`.
pub async fn latest_event_by_filter(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert!(
        store.latest_event(filter()).await.unwrap().is_none(),
        "no latest event in an empty store"
    );
    let seeded = seed_fixture(store).await;
    let latest = |f: EventFilter| async move { store.latest_event(f).await.unwrap().map(|e| e.id) };
    assert_eq!(latest(filter()).await.as_deref(), Some("p8"));
    assert_eq!(
        store.latest_event(filter()).await.unwrap().as_ref(),
        seeded.last()
    );
    assert_eq!(
        latest(filter().aggregate_ids(["o-2"])).await.as_deref(),
        Some("p7")
    );
    assert_eq!(
        latest(filter().event_types(["Placed"])).await.as_deref(),
        Some("p2")
    );
    assert_eq!(
        latest(filter().context("billing")).await.as_deref(),
        Some("p3")
    );
    assert_eq!(
        latest(filter().time_range(None, Some(at(5))))
            .await
            .as_deref(),
        Some("p5")
    );
    assert_eq!(latest(filter().context("nope")).await, None);
}

/// `stream_info` reports version, first and last position and first timestamp;
/// `stream_version` is 0 for a missing stream.
pub async fn stream_info_and_stream_version(store: &dyn EventStore) {
    assert_fresh(store).await;
    let o1 = fixture_stream(0);
    assert!(store.stream_info(&o1).await.unwrap().is_none());
    assert_eq!(store.stream_version(&o1).await.unwrap(), 0);
    let seeded = seed_fixture(store).await;
    let info = store
        .stream_info(&o1)
        .await
        .unwrap()
        .expect("stream info of sales/order/o-1");
    assert_eq!(info.stream, o1);
    assert_eq!(info.version, 3);
    assert_eq!(info.first_position, seeded[0].position);
    assert_eq!(info.last_position, seeded[7].position);
    assert_eq!(info.first_timestamp, at(1));
    assert_eq!(store.stream_version(&o1).await.unwrap(), 3);
    let billing = store
        .stream_info(&fixture_stream(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            billing.version,
            billing.first_position,
            billing.last_position
        ),
        (1, seeded[2].position, seeded[2].position)
    );
    assert_eq!(billing.first_timestamp, at(3));
    assert!(
        store
            .stream_info(&StreamId::new("o-1"))
            .await
            .unwrap()
            .is_none(),
        "o-1 without context is another stream"
    );
}

async fn list_ids(store: &dyn EventStore, query: ListStreams) -> Vec<String> {
    let what = format!("{query:?}");
    store
        .list_streams(query)
        .await
        .unwrap_or_else(|e| panic!("list_streams {what} failed: {e}"))
        .streams
        .iter()
        .map(|i| i.stream.to_string())
        .collect()
}

/// `list_streams` selects by exact context and aggregate (`""` = none).
pub async fn list_streams_filters_by_context_and_aggregate(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert!(store
        .list_streams(ListStreams::default())
        .await
        .unwrap()
        .streams
        .is_empty());
    seed_fixture(store).await;
    let page = store.list_streams(ListStreams::default()).await.unwrap();
    assert!(
        page.next_page_token.is_none(),
        "everything fits on one page without limit"
    );
    let all: Vec<String> = page.streams.iter().map(|i| i.stream.to_string()).collect();
    assert_eq!(
        all,
        [
            "sales/order/o-1",
            "sales/order/o-2",
            "billing/order/o-1",
            "sales/customer/c-1",
            "free"
        ]
    );
    assert_eq!(
        page.streams[0],
        store
            .stream_info(&fixture_stream(0))
            .await
            .unwrap()
            .unwrap(),
        "listed infos are stream infos"
    );
    let cases: Vec<(ListStreams, &[&str])> = vec![
        (
            ListStreams::default().context("sales"),
            &["sales/order/o-1", "sales/order/o-2", "sales/customer/c-1"],
        ),
        (
            ListStreams::default().aggregate("order"),
            &["sales/order/o-1", "sales/order/o-2", "billing/order/o-1"],
        ),
        (
            ListStreams::default().context("billing").aggregate("order"),
            &["billing/order/o-1"],
        ),
        (ListStreams::default().context(""), &["free"]),
        (ListStreams::default().aggregate(""), &["free"]),
        (ListStreams::default().context("nope"), &[]),
    ];
    for (q, want) in cases {
        assert_eq!(list_ids(store, q.clone()).await, want, "list_streams {q:?}");
    }
}

/// `created_after` and `created_before` bound the first event's timestamp, inclusive.
pub async fn list_streams_filters_by_creation_time(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    let q = |after: Option<Timestamp>, before: Option<Timestamp>| ListStreams {
        created_after: after,
        created_before: before,
        ..ListStreams::default()
    };
    let cases: Vec<(ListStreams, &[&str])> = vec![
        (
            q(Some(at(2)), None),
            &[
                "sales/order/o-2",
                "billing/order/o-1",
                "sales/customer/c-1",
                "free",
            ],
        ),
        (
            q(None, Some(at(3))),
            &["sales/order/o-1", "sales/order/o-2", "billing/order/o-1"],
        ),
        (
            q(Some(at(2)), Some(at(5))),
            &["sales/order/o-2", "billing/order/o-1", "sales/customer/c-1"],
        ),
        (q(Some(at(4)), Some(at(4))), &[]),
        (q(Some(at(7)), None), &[]),
    ];
    for (query, want) in cases {
        assert_eq!(
            list_ids(store, query.clone()).await,
            want,
            "list_streams {query:?}"
        );
    }
}

/// Streams are ordered by their first event (timestamp, then position); `reverse`
/// lists newest first.
pub async fn list_streams_orders_by_first_event_and_reverses(store: &dyn EventStore) {
    assert_fresh(store).await;
    let first = |ts: Timestamp| vec![event("T", "{}").with_timestamp(ts)];
    // Position order: late, early, tie-a, tie-b; timestamp order: early, tie-a, tie-b, late.
    append_ok(
        store,
        &StreamId::new("late"),
        ExpectedVersion::Any,
        first(at(9)),
    )
    .await;
    append_ok(
        store,
        &StreamId::new("early"),
        ExpectedVersion::Any,
        first(at(1)),
    )
    .await;
    append_ok(
        store,
        &StreamId::new("tie-a"),
        ExpectedVersion::Any,
        first(at(5)),
    )
    .await;
    append_ok(
        store,
        &StreamId::new("tie-b"),
        ExpectedVersion::Any,
        first(at(5)),
    )
    .await;
    append_ok(
        store,
        &StreamId::new("early"),
        ExpectedVersion::Any,
        first(at(20)),
    )
    .await;
    assert_eq!(
        list_ids(store, ListStreams::default()).await,
        ["early", "tie-a", "tie-b", "late"]
    );
    assert_eq!(
        list_ids(
            store,
            ListStreams {
                reverse: true,
                ..ListStreams::default()
            }
        )
        .await,
        ["late", "tie-b", "tie-a", "early"]
    );
    assert_eq!(
        list_ids(
            store,
            ListStreams {
                reverse: true,
                ..ListStreams::default()
            }
            .limit(2)
        )
        .await,
        ["late", "tie-b"]
    );
}

async fn list_all_pages(store: &dyn EventStore, query: ListStreams) -> Vec<String> {
    let mut out = Vec::new();
    let mut query = query;
    for _ in 0..100 {
        let page = store
            .list_streams(query.clone())
            .await
            .unwrap_or_else(|e| panic!("list_streams {query:?}: {e}"));
        assert!(
            page.streams.len() as u64 <= query.limit.unwrap_or(u64::MAX),
            "page larger than the limit"
        );
        out.extend(page.streams.iter().map(|i| i.stream.to_string()));
        match page.next_page_token {
            None => return out,
            Some(token) => {
                let parsed: StreamPageToken = token
                    .to_string()
                    .parse()
                    .unwrap_or_else(|e| panic!("page token {token} does not parse back: {e}"));
                assert_eq!(parsed, token);
                query.page_token = Some(parsed);
            }
        }
    }
    panic!("100 pages of streams without the end");
}

/// Paging with `next_page_token` until it is `None` lists every stream exactly once,
/// in order, forward and reverse, filtered or not.
pub async fn list_streams_pages_cover_every_stream_once(store: &dyn EventStore) {
    assert_fresh(store).await;
    for i in 0..11 {
        let s = StreamId::new(format!("s-{i:02}")).with_context(if i % 3 == 0 {
            "three"
        } else {
            "other"
        });
        append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "{}")]).await;
    }
    let full = list_ids(store, ListStreams::default()).await;
    assert_eq!(full.len(), 11);
    for size in [1, 3, 5, 11, 12] {
        assert_eq!(
            list_all_pages(store, ListStreams::default().limit(size)).await,
            full,
            "pages of {size}"
        );
    }
    let mut reversed = full.clone();
    reversed.reverse();
    let back = ListStreams {
        reverse: true,
        ..ListStreams::default()
    }
    .limit(3);
    assert_eq!(
        list_all_pages(store, back).await,
        reversed,
        "reverse pages of 3"
    );
    let three = list_ids(store, ListStreams::default().context("three")).await;
    assert_eq!(three.len(), 4);
    assert_eq!(
        list_all_pages(store, ListStreams::default().context("three").limit(3)).await,
        three,
        "filtered pages"
    );
    let exact = store
        .list_streams(ListStreams::default().limit(11))
        .await
        .unwrap();
    assert!(
        exact.next_page_token.is_none(),
        "a page that holds the rest has no next token"
    );
    let short = store
        .list_streams(ListStreams::default().limit(10))
        .await
        .unwrap();
    assert!(
        short.next_page_token.is_some(),
        "a page followed by more streams has a next token"
    );
}

// ---------------------------------------------------------------------------------
// Freeze
// ---------------------------------------------------------------------------------

/// A frozen store refuses appends and secret writes with `Frozen`, stores nothing,
/// keeps answering reads, and accepts writes again after `unfreeze`.
pub async fn freeze_refuses_writes_and_keeps_reads(store: &dyn EventStore) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    store.set_secret("u1", "key-1").await.unwrap();
    store.freeze().await.unwrap();
    let before = description(store).await;
    assert!(before.frozen, "describe reports frozen");
    let s = fixture_stream(0);
    expect_kind(
        store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event("T", "1")])
            .await,
        ErrorKind::Frozen,
        "append while frozen",
    );
    expect_kind(
        store
            .append(
                AppendRequest::to_stream(
                    StreamId::new("n1"),
                    ExpectedVersion::Any,
                    vec![event("T", "1")],
                )
                .and_stream(
                    StreamId::new("n2"),
                    ExpectedVersion::Any,
                    vec![event("T", "1")],
                ),
            )
            .await,
        ErrorKind::Frozen,
        "multi-stream append while frozen",
    );
    expect_kind(
        store.set_secret("u2", "key-2").await,
        ErrorKind::Frozen,
        "set_secret while frozen",
    );
    expect_kind(
        store.delete_secret("u1").await,
        ErrorKind::Frozen,
        "delete_secret while frozen",
    );
    assert_eq!(
        description(store).await,
        before,
        "nothing changes while frozen"
    );
    assert_eq!(
        read_everything(store).await,
        seeded,
        "read_all works while frozen"
    );
    assert_eq!(
        stream_events(store, &s, StreamRead::all()).await.len(),
        3,
        "read_stream works while frozen"
    );
    assert!(
        store.stream_info(&s).await.unwrap().is_some(),
        "stream_info works while frozen"
    );
    assert_eq!(
        store
            .list_streams(ListStreams::default())
            .await
            .unwrap()
            .streams
            .len(),
        5
    );
    assert!(store.latest_event(filter()).await.unwrap().is_some());
    assert_eq!(
        store
            .get_secret("u1")
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_deref(),
        Some("key-1"),
        "get_secret works while frozen"
    );
    assert_eq!(
        store
            .list_secrets(SecretQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
    store.unfreeze().await.unwrap();
    assert!(
        !description(store).await.frozen,
        "describe reports unfrozen"
    );
    append_ok(
        store,
        &s,
        ExpectedVersion::Exact(3),
        vec![event("T", r#""after""#)],
    )
    .await;
    store.set_secret("u2", "key-2").await.unwrap();
    store.delete_secret("u1").await.unwrap();
}

/// `freeze` on a frozen store is `AlreadyFrozen`; `unfreeze` on an unfrozen one is
/// `NotFrozen`.
pub async fn freeze_twice_is_already_frozen_and_unfreeze_twice_is_not_frozen(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    expect_kind(
        store.unfreeze().await,
        ErrorKind::NotFrozen,
        "unfreeze on a fresh store",
    );
    store.freeze().await.unwrap();
    expect_kind(
        store.freeze().await,
        ErrorKind::AlreadyFrozen,
        "freeze twice",
    );
    assert!(
        description(store).await.frozen,
        "still frozen after AlreadyFrozen"
    );
    store.unfreeze().await.unwrap();
    expect_kind(
        store.unfreeze().await,
        ErrorKind::NotFrozen,
        "unfreeze twice",
    );
    assert!(!description(store).await.frozen);
    store.freeze().await.unwrap();
    store.unfreeze().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------

/// Keyed snapshots are created, read, replaced and deleted by key; `drop_snapshot`
/// says whether there was one.
pub async fn keyed_snapshots_save_load_overwrite_drop(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert!(
        store.load_snapshot("k1").await.unwrap().is_none(),
        "no snapshot yet"
    );
    let before = Timestamp::now();
    store.save_snapshot("k1", "v1").await.unwrap();
    let s = store
        .load_snapshot("k1")
        .await
        .unwrap()
        .expect("the saved snapshot");
    assert_eq!((s.key.as_str(), s.content.as_str()), ("k1", "v1"));
    let slack = 5 * 60 * 1000;
    assert!(
        (s.timestamp.as_millis() - before.as_millis()).abs() < slack,
        "the snapshot timestamp is about now: {}",
        s.timestamp
    );
    let odd = "{ \"state\" : [1, 2] }\nline two\t é ∑ \u{1F600}";
    store.save_snapshot("k1", odd).await.unwrap();
    assert_eq!(
        store.load_snapshot("k1").await.unwrap().unwrap().content,
        odd,
        "save replaces, content kept exactly"
    );
    store.save_snapshot("k2", "").await.unwrap();
    assert_eq!(
        store.load_snapshot("k2").await.unwrap().unwrap().content,
        "",
        "empty content"
    );
    assert!(
        store.drop_snapshot("k1").await.unwrap(),
        "drop returns true when there was a snapshot"
    );
    assert!(
        store.load_snapshot("k1").await.unwrap().is_none(),
        "a dropped snapshot is gone"
    );
    assert!(
        !store.drop_snapshot("k1").await.unwrap(),
        "drop returns false when there is none"
    );
    assert!(!store.drop_snapshot("never").await.unwrap());
    assert!(
        store.load_snapshot("k2").await.unwrap().is_some(),
        "other keys are untouched"
    );
    assert_eq!(
        description(store).await.event_count,
        0,
        "snapshots are not events"
    );
}

fn stream_snapshot(
    id: &str,
    stream: &StreamId,
    version: Version,
    data: &str,
    k: i64,
) -> NewStreamSnapshot {
    NewStreamSnapshot {
        id: Some(id.into()),
        timestamp: Some(at(k)),
        schema_version: 2,
        ..NewStreamSnapshot::new(stream.clone(), version, json(data))
    }
}

/// `latest_stream_snapshot` returns the snapshot with the greatest version at or below
/// the bound; saving returns what was stored.
pub async fn stream_snapshot_latest_at_or_below_a_version(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("acc-1").with_aggregate("account");
    let other = StreamId::new("acc-1");
    assert!(store
        .latest_stream_snapshot(&s, None)
        .await
        .unwrap()
        .is_none());
    let saved = store
        .save_stream_snapshot(stream_snapshot("snap-5", &s, 5, r#"{ "balance" : 5 }"#, 1))
        .await
        .unwrap();
    assert_eq!(
        (
            saved.id.as_str(),
            &saved.stream,
            saved.stream_version,
            saved.schema_version,
            saved.data.as_bytes(),
            saved.timestamp
        ),
        (
            "snap-5",
            &s,
            5,
            2,
            br#"{ "balance" : 5 }"#.as_slice(),
            at(1)
        ),
        "save returns the snapshot as stored"
    );
    store
        .save_stream_snapshot(stream_snapshot("snap-9", &s, 9, "9", 2))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("snap-2", &s, 2, "2", 3))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("other-7", &other, 7, "7", 4))
        .await
        .unwrap();
    let latest = |max: Option<Version>| {
        let s = s.clone();
        async move {
            store
                .latest_stream_snapshot(&s, max)
                .await
                .unwrap()
                .map(|x| x.id)
        }
    };
    assert_eq!(latest(None).await.as_deref(), Some("snap-9"));
    assert_eq!(latest(Some(100)).await.as_deref(), Some("snap-9"));
    assert_eq!(latest(Some(9)).await.as_deref(), Some("snap-9"));
    assert_eq!(latest(Some(8)).await.as_deref(), Some("snap-5"));
    assert_eq!(latest(Some(5)).await.as_deref(), Some("snap-5"));
    assert_eq!(latest(Some(4)).await.as_deref(), Some("snap-2"));
    assert_eq!(latest(Some(1)).await, None);
    assert_eq!(
        store
            .latest_stream_snapshot(&s, None)
            .await
            .unwrap()
            .unwrap(),
        saved_with(&s, "snap-9", 9, "9", 2)
    );
    assert_eq!(
        store
            .latest_stream_snapshot(&other, None)
            .await
            .unwrap()
            .map(|x| x.id)
            .as_deref(),
        Some("other-7")
    );
    assert!(store
        .latest_stream_snapshot(&StreamId::new("nobody"), None)
        .await
        .unwrap()
        .is_none());
    let generated = store
        .save_stream_snapshot(NewStreamSnapshot::new(StreamId::new("g"), 1, json("null")))
        .await
        .unwrap();
    assert!(!generated.id.is_empty(), "a snapshot without id gets one");
    assert_eq!(generated.schema_version, 1);
}

fn saved_with(
    stream: &StreamId,
    id: &str,
    version: Version,
    data: &str,
    k: i64,
) -> annals_core::StreamSnapshot {
    annals_core::StreamSnapshot {
        id: id.into(),
        stream: stream.clone(),
        stream_version: version,
        schema_version: 2,
        data: json(data),
        timestamp: at(k),
    }
}

/// Among snapshots of the same version the most recently saved wins; a higher version
/// wins over a more recent save.
pub async fn stream_snapshot_ties_go_to_the_most_recently_saved(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    // Timestamps deliberately disagree with the save order: the save order decides.
    store
        .save_stream_snapshot(stream_snapshot("a", &s, 3, "1", 9))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("b", &s, 3, "2", 1))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("c", &s, 3, "3", 5))
        .await
        .unwrap();
    let latest = store
        .latest_stream_snapshot(&s, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, "c", "ties go to the most recently saved");
    store
        .save_stream_snapshot(stream_snapshot("d", &s, 5, "4", 6))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("e", &s, 4, "5", 7))
        .await
        .unwrap();
    assert_eq!(
        store
            .latest_stream_snapshot(&s, None)
            .await
            .unwrap()
            .unwrap()
            .id,
        "d",
        "a higher version beats a newer save"
    );
    assert_eq!(
        store
            .latest_stream_snapshot(&s, Some(3))
            .await
            .unwrap()
            .unwrap()
            .id,
        "c"
    );
}

/// `prune_stream_snapshots` keeps the `keep` most recently saved snapshots of one
/// stream and returns how many it deleted.
pub async fn stream_snapshot_prune_keeps_the_newest(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let t = StreamId::new("t");
    for (i, v) in [1, 4, 2, 5, 3].into_iter().enumerate() {
        store
            .save_stream_snapshot(stream_snapshot(&format!("s{v}"), &s, v, "{}", i as i64))
            .await
            .unwrap();
    }
    store
        .save_stream_snapshot(stream_snapshot("t1", &t, 1, "{}", 10))
        .await
        .unwrap();
    store
        .save_stream_snapshot(stream_snapshot("t2", &t, 2, "{}", 11))
        .await
        .unwrap();
    assert_eq!(
        store.prune_stream_snapshots(&s, 2).await.unwrap(),
        3,
        "five saved, two kept"
    );
    let latest = |max: Option<Version>| {
        let s = s.clone();
        async move {
            store
                .latest_stream_snapshot(&s, max)
                .await
                .unwrap()
                .map(|x| x.id)
        }
    };
    // The two most recent saves were versions 5 and 3.
    assert_eq!(latest(None).await.as_deref(), Some("s5"));
    assert_eq!(latest(Some(4)).await.as_deref(), Some("s3"));
    assert_eq!(latest(Some(2)).await, None, "older saves are gone");
    assert_eq!(
        store.prune_stream_snapshots(&s, 2).await.unwrap(),
        0,
        "nothing more to prune"
    );
    assert_eq!(store.prune_stream_snapshots(&s, 10).await.unwrap(), 0);
    assert_eq!(
        store
            .latest_stream_snapshot(&t, None)
            .await
            .unwrap()
            .unwrap()
            .id,
        "t2",
        "other streams untouched"
    );
    assert_eq!(
        store.prune_stream_snapshots(&s, 0).await.unwrap(),
        2,
        "keep 0 deletes all"
    );
    assert_eq!(latest(None).await, None);
    assert_eq!(
        store
            .prune_stream_snapshots(&StreamId::new("nobody"), 0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.prune_stream_snapshots(&t, 1).await.unwrap(), 1);
    assert_eq!(
        store
            .latest_stream_snapshot(&t, None)
            .await
            .unwrap()
            .unwrap()
            .id,
        "t2"
    );
}

/// A stream snapshot at version 0, for an empty stream id, or with data that is not
/// JSON is `InvalidInput`.
pub async fn stream_snapshot_version_zero_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    expect_invalid(
        store
            .save_stream_snapshot(stream_snapshot("x", &s, 0, "{}", 1))
            .await,
        "stream_version",
        "version 0",
    );
    expect_invalid(
        store
            .save_stream_snapshot(stream_snapshot("x", &StreamId::new(""), 1, "{}", 1))
            .await,
        "stream.id",
        "empty stream id",
    );
    expect_invalid(
        store
            .save_stream_snapshot(stream_snapshot("x", &s, 1, "{oops", 1))
            .await,
        "data",
        "data not JSON",
    );
    expect_invalid(
        store
            .save_stream_snapshot(stream_snapshot("", &s, 1, "{}", 1))
            .await,
        "id",
        "empty snapshot id",
    );
    expect_invalid(
        store.latest_stream_snapshot(&StreamId::new(""), None).await,
        "stream.id",
        "latest with an empty stream id",
    );
    expect_invalid(
        store.prune_stream_snapshots(&StreamId::new(""), 1).await,
        "stream.id",
        "prune with an empty stream id",
    );
    assert!(
        store
            .latest_stream_snapshot(&s, None)
            .await
            .unwrap()
            .is_none(),
        "nothing was saved"
    );
    store
        .save_stream_snapshot(stream_snapshot("x", &s, 1, "{}", 1))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------

/// Secrets get indexes 0, 1, 2 … in order of setting, and read back by id.
pub async fn secrets_get_indexes_in_order(store: &dyn EventStore) {
    assert_fresh(store).await;
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let s = store.set_secret(id, &format!("value-{id}")).await.unwrap();
        assert_eq!(
            (s.idx, s.id.as_str(), s.secret.as_deref()),
            (i as u64, id, Some(format!("value-{id}").as_str()))
        );
    }
    let b = store.get_secret("b").await.unwrap().expect("secret b");
    assert_eq!(
        (b.idx, b.id.as_str(), b.secret.as_deref()),
        (1, "b", Some("value-b"))
    );
    assert!(
        store.get_secret("nobody").await.unwrap().is_none(),
        "unknown secret id"
    );
}

/// Deleting a secret erases its value for good (a tombstone stays); the id can never
/// be set again.
pub async fn delete_secret_erases_the_value_and_the_id_is_never_reused(store: &dyn EventStore) {
    assert_fresh(store).await;
    store.set_secret("a", "key-a").await.unwrap();
    store.set_secret("b", "key-b").await.unwrap();
    store.delete_secret("a").await.unwrap();
    let a = store.get_secret("a").await.unwrap().expect("a tombstone");
    assert_eq!(
        (a.idx, a.id.as_str(), a.secret),
        (0, "a", None),
        "a deleted secret keeps its index and loses its value"
    );
    match expect_kind(
        store.set_secret("a", "again").await,
        ErrorKind::SecretAlreadyExists,
        "reusing a deleted id",
    ) {
        Error::SecretAlreadyExists { id } => assert_eq!(id, "a"),
        other => panic!("not SecretAlreadyExists: {other:?}"),
    }
    expect_kind(
        store.set_secret("b", "again").await,
        ErrorKind::SecretAlreadyExists,
        "reusing a live id",
    );
    assert_eq!(
        store
            .get_secret("b")
            .await
            .unwrap()
            .unwrap()
            .secret
            .as_deref(),
        Some("key-b"),
        "a refused set changes nothing"
    );
    assert_eq!(
        store.set_secret("c", "key-c").await.unwrap().idx,
        2,
        "refused sets consume no index"
    );
}

/// Deleting an unknown or already deleted secret is `NotFound`.
pub async fn delete_unknown_or_deleted_secret_is_not_found(store: &dyn EventStore) {
    assert_fresh(store).await;
    match expect_kind(
        store.delete_secret("nobody").await,
        ErrorKind::NotFound,
        "deleting an unknown secret",
    ) {
        Error::NotFound { what, id } => assert_eq!((what, id.as_str()), ("secret", "nobody")),
        other => panic!("not NotFound: {other:?}"),
    }
    store.set_secret("a", "key").await.unwrap();
    store.delete_secret("a").await.unwrap();
    expect_kind(
        store.delete_secret("a").await,
        ErrorKind::NotFound,
        "deleting twice",
    );
}

/// `list_secrets` lists by index from `from_idx`, then applies the id list, the
/// tombstone flag, `skip` and `limit`.
pub async fn list_secrets_by_index_skip_limit_ids_and_tombstones(store: &dyn EventStore) {
    assert_fresh(store).await;
    for i in 0..6 {
        store
            .set_secret(&format!("s{i}"), &format!("v{i}"))
            .await
            .unwrap();
    }
    store.delete_secret("s1").await.unwrap();
    store.delete_secret("s4").await.unwrap();
    let list = |q: SecretQuery| async move {
        let what = format!("{q:?}");
        store
            .list_secrets(q)
            .await
            .unwrap_or_else(|e| panic!("list_secrets {what}: {e}"))
            .into_iter()
            .map(|s| {
                format!(
                    "{}:{}:{}",
                    s.idx,
                    s.id,
                    s.secret.unwrap_or_else(|| "-".into())
                )
            })
            .collect::<Vec<_>>()
    };
    let q = SecretQuery::default;
    assert_eq!(
        list(q()).await,
        ["0:s0:v0", "2:s2:v2", "3:s3:v3", "5:s5:v5"]
    );
    assert_eq!(
        list(SecretQuery {
            include_deleted: true,
            ..q()
        })
        .await,
        ["0:s0:v0", "1:s1:-", "2:s2:v2", "3:s3:v3", "4:s4:-", "5:s5:v5"]
    );
    assert_eq!(
        list(SecretQuery { from_idx: 2, ..q() }).await,
        ["2:s2:v2", "3:s3:v3", "5:s5:v5"]
    );
    assert_eq!(
        list(SecretQuery {
            from_idx: 2,
            skip: 1,
            ..q()
        })
        .await,
        ["3:s3:v3", "5:s5:v5"]
    );
    assert_eq!(
        list(SecretQuery {
            limit: Some(2),
            ..q()
        })
        .await,
        ["0:s0:v0", "2:s2:v2"]
    );
    assert_eq!(
        list(SecretQuery {
            skip: 1,
            limit: Some(2),
            include_deleted: true,
            ..q()
        })
        .await,
        ["1:s1:-", "2:s2:v2"]
    );
    assert_eq!(
        list(SecretQuery {
            ids: vec!["s1".into(), "s3".into()],
            ..q()
        })
        .await,
        ["3:s3:v3"]
    );
    assert_eq!(
        list(SecretQuery {
            ids: vec!["s3".into(), "s1".into()],
            include_deleted: true,
            ..q()
        })
        .await,
        ["1:s1:-", "3:s3:v3"]
    );
    assert!(list(SecretQuery {
        from_idx: 10,
        ..q()
    })
    .await
    .is_empty());
    assert!(list(SecretQuery {
        limit: Some(0),
        ..q()
    })
    .await
    .is_empty());
}

/// `describe` counts secrets ever set, secrets holding a value, and tombstones.
pub async fn describe_counts_secrets(store: &dyn EventStore) {
    assert_fresh(store).await;
    let counts = |d: StoreDescription| (d.secret_count, d.set_secret_count, d.deleted_secret_count);
    assert_eq!(counts(description(store).await), (0, 0, 0));
    for id in ["a", "b", "c"] {
        store.set_secret(id, "v").await.unwrap();
    }
    assert_eq!(counts(description(store).await), (3, 3, 0));
    store.delete_secret("b").await.unwrap();
    assert_eq!(counts(description(store).await), (3, 2, 1));
    let _ = store.set_secret("b", "again").await;
    let _ = store.delete_secret("b").await;
    assert_eq!(
        counts(description(store).await),
        (3, 2, 1),
        "refused calls change no count"
    );
    store.delete_secret("a").await.unwrap();
    store.set_secret("d", "v").await.unwrap();
    assert_eq!(counts(description(store).await), (4, 2, 2));
}

// ---------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------

/// Every event starts undispatched; `undispatched` lists them oldest first, filtered
/// and limited, and drops them once marked.
pub async fn events_start_undispatched_and_undispatched_lists_them_in_order(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    assert!(
        seeded.iter().all(|e| !e.dispatched),
        "append returns undispatched events"
    );
    assert!(
        read_everything(store).await.iter().all(|e| !e.dispatched),
        "stored events start undispatched"
    );
    let undispatched = |f: EventFilter, limit: Option<u64>| async move {
        ids(&store.undispatched(f, limit).await.unwrap())
    };
    assert_eq!(
        undispatched(filter(), None).await,
        ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]
    );
    assert_eq!(undispatched(filter(), Some(3)).await, ["p1", "p2", "p3"]);
    assert_eq!(
        undispatched(filter().aggregate_ids(["o-2"]), None).await,
        ["p2", "p7"]
    );
    store.mark_dispatched("p1").await.unwrap();
    store.mark_dispatched("p3").await.unwrap();
    assert_eq!(undispatched(filter(), Some(3)).await, ["p2", "p4", "p5"]);
    assert_eq!(
        undispatched(filter().dispatched(true), None).await.len(),
        6,
        "undispatched ignores a dispatched filter"
    );
    let o1 = stream_events(store, &fixture_stream(0), StreamRead::all()).await;
    assert_eq!(
        o1.iter().map(|e| e.dispatched).collect::<Vec<_>>(),
        [true, false, false],
        "read_stream shows the flag"
    );
    let all = read_everything(store).await;
    assert_eq!(
        all.iter()
            .filter(|e| e.dispatched)
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["p1", "p3"]
    );
}

/// Marking an event dispatched twice is fine and changes nothing else.
pub async fn mark_dispatched_is_idempotent(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    store.mark_dispatched("p4").await.unwrap();
    let once = read_everything(store).await;
    let before = description(store).await;
    store.mark_dispatched("p4").await.unwrap();
    assert_eq!(
        read_everything(store).await,
        once,
        "marking twice changes nothing"
    );
    assert_eq!(description(store).await, before);
    let dispatched: Vec<&str> = once
        .iter()
        .filter(|e| e.dispatched)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(dispatched, ["p4"], "only the marked event is dispatched");
}

/// Marking an unknown event id is `NotFound` (what: `event`).
pub async fn mark_dispatched_of_unknown_event_is_not_found(store: &dyn EventStore) {
    assert_fresh(store).await;
    match expect_kind(
        store.mark_dispatched("nobody").await,
        ErrorKind::NotFound,
        "mark an unknown event",
    ) {
        Error::NotFound { what, id } => assert_eq!((what, id.as_str()), ("event", "nobody")),
        other => panic!("not NotFound: {other:?}"),
    }
    seed_fixture(store).await;
    expect_kind(
        store.mark_dispatched("p9").await,
        ErrorKind::NotFound,
        "mark an unknown event in a seeded store",
    );
    assert!(read_everything(store).await.iter().all(|e| !e.dispatched));
}

/// `describe` reports the event and stream counts, the head position and the newest
/// event's timestamp.
pub async fn describe_reports_counts_head_and_last_timestamp(store: &dyn EventStore) {
    assert_fresh(store).await;
    let d = description(store).await;
    assert_eq!(
        d,
        StoreDescription::default(),
        "a fresh store describes as empty"
    );
    let seeded = seed_fixture(store).await;
    let d = description(store).await;
    assert_eq!((d.event_count, d.stream_count), (8, 5));
    assert_eq!(d.head_position, seeded.last().unwrap().position);
    assert_eq!(d.last_event_timestamp, Some(at(8)));
    assert!(!d.frozen);
    append_ok(
        store,
        &StreamId::new("late"),
        ExpectedVersion::Any,
        vec![event("T", "1").with_timestamp(at(2))],
    )
    .await;
    let d = description(store).await;
    assert_eq!((d.event_count, d.stream_count), (9, 6));
    assert_eq!(
        d.last_event_timestamp,
        Some(at(2)),
        "the newest event's timestamp, by position"
    );
}

// ---------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------

/// Checks that `request` is refused with `InvalidInput` naming `field`, that nothing
/// is stored, and that a valid append afterwards succeeds.
async fn assert_append_refused(store: &dyn EventStore, request: AppendRequest, field: &str) {
    let before = description(store).await;
    let events_before = read_everything(store).await;
    let result = store.append(request).await;
    expect_invalid(result, field, &format!("an append with a bad {field}"));
    assert_eq!(
        description(store).await,
        before,
        "an append refused for its {field} must store nothing"
    );
    assert_eq!(
        read_everything(store).await,
        events_before,
        "an append refused for its {field} must store nothing"
    );
    let usable = store
        .append_to_stream(
            &StreamId::new("still-usable"),
            ExpectedVersion::Any,
            vec![event("Checked", "{}")],
        )
        .await;
    assert!(
        usable.is_ok(),
        "after refusing a bad {field}, a valid append must succeed: {usable:?}"
    );
}

fn one_event(stream: StreamId, e: ProposedEvent) -> AppendRequest {
    AppendRequest::to_stream(stream, ExpectedVersion::Any, vec![e])
}

/// Every bad name field of an append, given a bad value.
fn bad_name_requests(bad: &str) -> Vec<(AppendRequest, &'static str)> {
    let ok = || event("T", "{}");
    vec![
        (one_event(StreamId::new(bad), ok()), "writes[0].stream.id"),
        (
            one_event(StreamId::new("s").with_aggregate(bad), ok()),
            "writes[0].stream.aggregate",
        ),
        (
            one_event(StreamId::new("s").with_context(bad), ok()),
            "writes[0].stream.context",
        ),
        (
            one_event(StreamId::new("s"), ok().with_id(bad)),
            "writes[0].events[0].id",
        ),
        (
            one_event(StreamId::new("s"), event(bad, "{}")),
            "writes[0].events[0].type",
        ),
        (
            one_event(StreamId::new("s"), ok()).with_commit_id(bad),
            "commit_id",
        ),
        (
            AppendRequest::to_stream(StreamId::new("s"), ExpectedVersion::Any, vec![ok()])
                .and_stream(
                    StreamId::new("t"),
                    ExpectedVersion::Any,
                    vec![ok(), event(bad, "{}")],
                ),
            "writes[1].events[1].type",
        ),
    ]
}

/// An empty stream id is `InvalidInput` naming the stream's `id`.
pub async fn empty_stream_id_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert_append_refused(
        store,
        one_event(StreamId::new(""), event("T", "{}")),
        "writes[0].stream.id",
    )
    .await;
    assert_append_refused(
        store,
        one_event(
            StreamId::new("").with_aggregate("a").with_context("c"),
            event("T", "{}"),
        ),
        "writes[0].stream.id",
    )
    .await;
    assert_append_refused(
        store,
        one_event(StreamId::new("s"), event("T", "{}").with_id("")),
        "writes[0].events[0].id",
    )
    .await;
    assert_append_refused(
        store,
        one_event(StreamId::new("s"), event("T", "{}")).with_commit_id(""),
        "commit_id",
    )
    .await;
}

/// Stream ids, aggregates, contexts, event ids, event types and commit ids longer than
/// 256 bytes (UTF-8) are `InvalidInput`; exactly 256 bytes is fine.
pub async fn names_longer_than_256_bytes_are_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    // 129 characters, 258 bytes: the limit counts bytes.
    let wide = "é".repeat(MAX_NAME_BYTES / 2 + 1);
    for bad in [long.as_str(), wide.as_str()] {
        for (request, field) in bad_name_requests(bad) {
            assert_append_refused(store, request, field).await;
        }
    }
    let max = "y".repeat(MAX_NAME_BYTES);
    let s = StreamId::new(max.clone())
        .with_aggregate(max.clone())
        .with_context(max.clone());
    let r = request_ok(
        store,
        AppendRequest::to_stream(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![event(&max, "{}").with_id(max.clone())],
        )
        .with_commit_id(max.clone()),
    )
    .await;
    assert_eq!(
        stream_events(store, &s, StreamRead::all()).await,
        r.events,
        "256-byte names are stored and read back"
    );
}

/// Names containing a NUL character are `InvalidInput`.
pub async fn names_with_nul_are_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    for (request, field) in bad_name_requests("a\0b") {
        assert_append_refused(store, request, field).await;
    }
}

/// A payload that is not one JSON value is `InvalidInput` naming the event's
/// `payload`.
pub async fn payload_that_is_not_json_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    for bad in [
        "{oops",
        "",
        "   ",
        "{} {}",
        "[1,]",
        "undefined",
        "{'a':1}",
        "NaN",
        "\"unterminated",
        "{\"a\":1}}",
    ] {
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), event("T", bad)),
            "writes[0].events[0].payload",
        )
        .await;
    }
    assert_append_refused(
        store,
        AppendRequest::to_stream(
            StreamId::new("s"),
            ExpectedVersion::Any,
            vec![event("T", "{}")],
        )
        .and_stream(
            StreamId::new("t"),
            ExpectedVersion::Any,
            vec![event("T", "1"), event("T", "{oops")],
        ),
        "writes[1].events[1].payload",
    )
    .await;
}

/// A payload with bytes that are not UTF-8 is `InvalidInput`, even inside a string.
pub async fn payload_with_invalid_utf8_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let bads: [&[u8]; 4] = [
        b"\xff",
        b"\"\xff\"",
        b"{\"k\xc3\":1}",
        b"[\"ok\", \"\xed\xa0\x80\"]",
    ];
    for bad in bads {
        let e = ProposedEvent::new("T", Json::from_raw(bad.to_vec()));
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), e),
            "writes[0].events[0].payload",
        )
        .await;
        let m = event("T", "{}").with_metadata(Json::from_raw(bad.to_vec()));
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), m),
            "writes[0].events[0].metadata",
        )
        .await;
    }
}

/// Metadata that is not one JSON value is `InvalidInput` naming the event's
/// `metadata`.
pub async fn metadata_that_is_not_json_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    for bad in ["{oops", "", "{} {}", "{\"a\":}"] {
        let e = event("T", "{}").with_metadata(json(bad));
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), e),
            "writes[0].events[0].metadata",
        )
        .await;
    }
}

/// Arrays and objects nested deeper than 128 levels are `InvalidInput`; 128 levels
/// are stored byte-for-byte.
pub async fn json_nested_deeper_than_128_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let mixed = |n: usize| {
        format!(
            "{}{}",
            "[{\"k\":".repeat(n / 2) + "[",
            "]".to_owned() + &"}]".repeat(n / 2)
        )
    };
    for too_deep in [arrays(129), objects(129), mixed(129), arrays(1000)] {
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), event("T", &too_deep)),
            "writes[0].events[0].payload",
        )
        .await;
        let m = event("T", "{}").with_metadata(json(&too_deep));
        assert_append_refused(
            store,
            one_event(StreamId::new("s"), m),
            "writes[0].events[0].metadata",
        )
        .await;
    }
    let s = StreamId::new("deep");
    for ok in [
        arrays(128),
        objects(128),
        format!("[\"{}\"]", "[".repeat(500)),
    ] {
        let r = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", &ok)]).await;
        assert_eq!(r.events[0].payload.as_bytes(), ok.as_bytes());
    }
    assert_eq!(stream_events(store, &s, StreamRead::all()).await.len(), 3);
}

/// Bad ids and keys outside appends are `InvalidInput` naming the argument: secret
/// ids, snapshot keys, event ids to mark dispatched.
pub async fn invalid_names_outside_appends_are_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let long = "k".repeat(MAX_NAME_BYTES + 1);
    for bad in ["", long.as_str(), "a\0b"] {
        expect_invalid(
            store.set_secret(bad, "v").await,
            "id",
            "set_secret with a bad id",
        );
        expect_invalid(
            store.get_secret(bad).await,
            "id",
            "get_secret with a bad id",
        );
        expect_invalid(
            store.delete_secret(bad).await,
            "id",
            "delete_secret with a bad id",
        );
        expect_invalid(
            store.save_snapshot(bad, "v").await,
            "key",
            "save_snapshot with a bad key",
        );
        expect_invalid(
            store.load_snapshot(bad).await,
            "key",
            "load_snapshot with a bad key",
        );
        expect_invalid(
            store.drop_snapshot(bad).await,
            "key",
            "drop_snapshot with a bad key",
        );
        expect_invalid(
            store.mark_dispatched(bad).await,
            "event_id",
            "mark_dispatched with a bad id",
        );
    }
    let d = description(store).await;
    assert_eq!(
        (d.secret_count, d.event_count),
        (0, 0),
        "nothing was stored"
    );
    store.set_secret("ok", "v").await.unwrap();
    store.save_snapshot("ok", "v").await.unwrap();
}

// ---------------------------------------------------------------------------------
// Concurrency and subscriptions
// ---------------------------------------------------------------------------------

/// 16 tasks appending to one stream with the same `Exact(v)`: exactly one wins, every
/// other gets `WrongExpectedVersion` with `actual = v + 1`. Repeated for 20 rounds.
pub async fn concurrent_appends_with_same_expectation_have_one_winner(store: Arc<dyn EventStore>) {
    assert_fresh(&*store).await;
    const TASKS: usize = 16;
    const ROUNDS: u64 = 20;
    let s = StreamId::new("contended").with_aggregate("race");
    seed_stream(&*store, &s, "seed-", 3).await;
    for round in 0..ROUNDS {
        let v = 3 + round;
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let e = event("Raced", &format!(r#"{{"round":{round},"task":{t}}}"#))
                        .with_id(format!("r{round}-t{t}"));
                    store
                        .append_to_stream(&s, ExpectedVersion::Exact(v), vec![e])
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let result = tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("an append hung")
                .expect("an append task panicked");
            match result {
                Ok(r) => winners.push(r),
                Err(e) => expect_wrong_version::<()>(
                    Err(e),
                    &s,
                    ExpectedVersion::Exact(v),
                    v + 1,
                    &format!("round {round}: a losing append"),
                ),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one of {TASKS} appends expecting version {v} wins"
        );
        assert_eq!(winners[0].events[0].version, v + 1);
    }
    let events = stream_events(&*store, &s, StreamRead::all()).await;
    assert_eq!(
        versions(&events),
        (1..=3 + ROUNDS).collect::<Vec<_>>(),
        "no two events share a version"
    );
    let d = description(&*store).await;
    assert_eq!(d.event_count, 3 + ROUNDS, "losers stored nothing");
    if store.capabilities().dense_positions {
        assert_eq!(
            positions(&read_everything(&*store).await),
            (1..=3 + ROUNDS).collect::<Vec<_>>()
        );
    }
}

/// A subscriber started before 8 writer tasks append 1,000 single-event appends each
/// (concurrently, one stream per writer) sees every event exactly once, in position
/// order, as appended.
pub async fn live_subscription_sees_every_event_once_in_order_under_concurrent_writers(
    store: Arc<dyn EventStore>,
) {
    assert_fresh(&*store).await;
    const WRITERS: usize = 8;
    const APPENDS: u64 = 1_000;
    let total = WRITERS as u64 * APPENDS;
    let mut live = store.subscribe(Subscribe::from_start());
    let subscriber = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(total as usize);
        while (seen.len() as u64) < total {
            match live.next().await {
                Some(Ok(e)) => seen.push(e),
                Some(Err(e)) => panic!("the subscription failed after {} events: {e}", seen.len()),
                None => panic!("the subscription ended after {} events", seen.len()),
            }
        }
        (seen, live)
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let s = StreamId::new(format!("writer-{w}")).with_aggregate("load");
                let mut appended = Vec::with_capacity(APPENDS as usize);
                for i in 0..APPENDS {
                    let e = event("Written", &format!(r#"{{"writer":{w},"seq":{i}}}"#))
                        .with_id(format!("w{w}-{i}"));
                    let r = store
                        .append_to_stream(&s, ExpectedVersion::Exact(i), vec![e])
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, append {i}: {e}"));
                    appended.extend(r.events);
                }
                appended
            })
        })
        .collect();
    let mut by_position = HashMap::new();
    for writer in writers {
        let appended = tokio::time::timeout(TIMEOUT, writer)
            .await
            .expect("a writer hung")
            .expect("a writer panicked");
        for e in appended {
            assert!(
                by_position.insert(e.position, e).is_none(),
                "two appends got the same position"
            );
        }
    }
    let (seen, mut live) = tokio::time::timeout(TIMEOUT, subscriber)
        .await
        .unwrap_or_else(|_| panic!("the subscriber did not see {total} events within {TIMEOUT:?}"))
        .expect("the subscriber panicked");
    let ps = positions(&seen);
    assert!(
        ps.windows(2).all(|w| w[0] < w[1]),
        "the subscription must deliver in position order without duplicates"
    );
    if store.capabilities().dense_positions {
        assert_eq!(
            ps,
            (1..=total).collect::<Vec<_>>(),
            "the subscription sees positions 1..={total}"
        );
    }
    for e in &seen {
        let appended = by_position
            .get(&e.position)
            .unwrap_or_else(|| panic!("the subscription delivered an unknown event {e:?}"));
        assert_eq!(
            e, appended,
            "the subscription delivers the event as appended"
        );
    }
    assert_eq!(seen.len(), by_position.len());
    assert_quiet(&mut live, "after every event was delivered").await;
}

/// A caught-up subscriber is woken for the last of several concurrent appends, with no
/// later append to rescue it: 200 rounds of 4 racing single-event appends, each round
/// fully delivered before the next starts.
pub async fn live_subscription_wakes_for_the_last_of_concurrent_appends(
    store: Arc<dyn EventStore>,
) {
    assert_fresh(&*store).await;
    const ROUNDS: usize = 200;
    const TASKS: usize = 4;
    // A lost wake-up leaves the subscriber waiting forever; fail well before TIMEOUT.
    let round_timeout = Duration::from_secs(10);
    let mut live = store.subscribe(Subscribe::from_start());
    let mut delivered = 0usize;
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    let s = StreamId::new(format!("racer-{t}"));
                    store
                        .append_to_stream(
                            &s,
                            ExpectedVersion::Any,
                            vec![event("T", &round.to_string())],
                        )
                        .await
                })
            })
            .collect();
        let reader = async {
            let mut got = Vec::with_capacity(TASKS);
            while got.len() < TASKS {
                match live.next().await {
                    Some(Ok(e)) => got.push(e),
                    other => panic!("round {round}: the subscription yielded {other:?}"),
                }
            }
            got
        };
        let got = tokio::time::timeout(round_timeout, reader)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the subscriber missed the wake-up for a committed append \
                 (it saw {delivered} events before this round and waited {round_timeout:?})"
                )
            });
        for task in tasks {
            task.await
                .expect("an append task panicked")
                .unwrap_or_else(|e| panic!("round {round}: append failed: {e}"));
        }
        assert!(
            got.iter()
                .all(|e| e.payload.as_str() == Some(round.to_string().as_str())),
            "round {round}: events of another round"
        );
        delivered += got.len();
    }
    assert_eq!(delivered, ROUNDS * TASKS);
}

/// A subscription from the middle delivers the events after that position (more than
/// a page of them), then follows new appends live.
pub async fn subscription_from_the_middle_catches_up_then_follows_live(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let mut seeded = Vec::new();
    for batch in 0..12 {
        let events = (0..100)
            .map(|i| event("T", &format!("{}", batch * 100 + i)))
            .collect();
        seeded.extend(
            append_ok(store, &s, ExpectedVersion::Any, events)
                .await
                .events,
        );
    }
    let from = seeded[99].position;
    let mut live = store.subscribe(Subscribe::after(from));
    let caught_up = take_events(&mut live, 1100, "catching up from the middle").await;
    assert_eq!(
        caught_up,
        seeded[100..],
        "catch-up delivers every event after the start, in order"
    );
    let new = append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", r#""live-1""#), event("T", r#""live-2""#)],
    )
    .await;
    assert_eq!(
        take_events(&mut live, 2, "following live").await,
        new.events
    );
    let more = append_ok(
        store,
        &StreamId::new("t"),
        ExpectedVersion::Any,
        vec![event("T", r#""live-3""#)],
    )
    .await;
    assert_eq!(
        take_events(&mut live, 1, "following live").await,
        more.events
    );
    assert_quiet(&mut live, "after the live events").await;
    let head = more.head_position;
    let mut tail = store.subscribe(Subscribe::after(head));
    assert_quiet(&mut tail, "a subscription from the head").await;
    let last = append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", r#""live-4""#)],
    )
    .await;
    assert_eq!(
        take_events(&mut tail, 1, "a subscription from the head").await,
        last.events
    );
}

/// A filtered subscription delivers only matching events, in order, during catch-up
/// and live.
pub async fn subscription_with_filter_delivers_only_matching_events(store: &dyn EventStore) {
    assert_fresh(store).await;
    let order = |i: usize| StreamId::new(format!("o-{}", i % 3)).with_aggregate("order");
    let customer = |i: usize| StreamId::new(format!("c-{}", i % 2)).with_aggregate("customer");
    let mut orders = Vec::new();
    for i in 0..30 {
        if i % 2 == 0 {
            orders.extend(
                append_ok(
                    store,
                    &order(i),
                    ExpectedVersion::Any,
                    vec![event("Placed", &i.to_string())],
                )
                .await
                .events,
            );
        } else {
            append_ok(
                store,
                &customer(i),
                ExpectedVersion::Any,
                vec![event("Registered", &i.to_string())],
            )
            .await;
        }
    }
    let mut live = store.subscribe(Subscribe::from_start().filter(filter().aggregate("order")));
    assert_eq!(
        take_events(&mut live, 15, "filtered catch-up").await,
        orders
    );
    let mut types =
        store.subscribe(Subscribe::from_start().filter(filter().event_types(["Shipped"])));
    for i in 30..40 {
        append_ok(
            store,
            &customer(i),
            ExpectedVersion::Any,
            vec![event("Registered", &i.to_string())],
        )
        .await;
    }
    let shipped = append_ok(
        store,
        &order(1),
        ExpectedVersion::Any,
        vec![event("Placed", r#""p""#), event("Shipped", r#""s""#)],
    )
    .await;
    let got = take_events(&mut live, 2, "filtered live").await;
    assert_eq!(
        got, shipped.events,
        "live events of the aggregate, skipping others"
    );
    assert_eq!(
        take_events(&mut types, 1, "event type filter").await,
        shipped.events[1..]
    );
    assert_quiet(&mut live, "no event of another aggregate").await;
    assert_quiet(&mut types, "no event of another type").await;
}

/// A subscription from a cursor continues exactly where the read that issued it
/// stopped; a cursor never issued (or of the other direction) fails the subscription
/// with `InvalidInput`.
pub async fn subscription_from_a_cursor(store: &dyn EventStore) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    let page = store.read_all(ReadAll::forward().limit(4)).await.unwrap();
    let mut live = store.subscribe(Subscribe {
        from: ReadFrom::Cursor(page.next_cursor),
        filter: filter(),
    });
    assert_eq!(
        take_events(&mut live, 4, "from a cursor").await,
        seeded[4..]
    );
    let new = append_ok(
        store,
        &StreamId::new("s"),
        ExpectedVersion::Any,
        vec![event("T", "1")],
    )
    .await;
    assert_eq!(
        take_events(&mut live, 1, "from a cursor, live").await,
        new.events
    );
    let head = new.head_position;
    for (cursor, what) in [
        (Cursor::forward_after(head + 100), "a cursor past the head"),
        (Cursor::backward_before(2), "a backward cursor"),
    ] {
        let mut bad = store.subscribe(Subscribe {
            from: ReadFrom::Cursor(cursor),
            filter: filter(),
        });
        match next_within(&mut bad, what).await {
            Some(Err(e)) => expect_invalid::<()>(Err(e), "cursor", what),
            other => {
                panic!("{what}: the subscription should fail with InvalidInput, got {other:?}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Close and drop
// ---------------------------------------------------------------------------------

/// After `close`, every call returns `Closed` (a second close too) and a new
/// subscription ends.
pub async fn close_refuses_further_calls(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    store.set_secret("u", "v").await.unwrap();
    store.close().await.unwrap();
    let s = fixture_stream(0);
    let closed = ErrorKind::Closed;
    expect_kind(store.describe().await, closed, "describe after close");
    expect_kind(
        store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event("T", "1")])
            .await,
        closed,
        "append after close",
    );
    expect_kind(
        store.read_stream(&s, StreamRead::all()).await,
        closed,
        "read_stream after close",
    );
    expect_kind(
        store.read_all(ReadAll::forward()).await,
        closed,
        "read_all after close",
    );
    expect_kind(
        store.stream_info(&s).await,
        closed,
        "stream_info after close",
    );
    expect_kind(
        store.stream_version(&s).await,
        closed,
        "stream_version after close",
    );
    expect_kind(
        store.list_streams(ListStreams::default()).await,
        closed,
        "list_streams after close",
    );
    expect_kind(
        store.latest_event(filter()).await,
        closed,
        "latest_event after close",
    );
    expect_kind(
        store.undispatched(filter(), None).await,
        closed,
        "undispatched after close",
    );
    expect_kind(store.freeze().await, closed, "freeze after close");
    expect_kind(store.unfreeze().await, closed, "unfreeze after close");
    expect_kind(
        store.save_snapshot("k", "v").await,
        closed,
        "save_snapshot after close",
    );
    expect_kind(
        store.load_snapshot("k").await,
        closed,
        "load_snapshot after close",
    );
    expect_kind(
        store.drop_snapshot("k").await,
        closed,
        "drop_snapshot after close",
    );
    expect_kind(
        store
            .save_stream_snapshot(stream_snapshot("x", &s, 1, "{}", 1))
            .await,
        closed,
        "save_stream_snapshot after close",
    );
    expect_kind(
        store.latest_stream_snapshot(&s, None).await,
        closed,
        "latest_stream_snapshot after close",
    );
    expect_kind(
        store.prune_stream_snapshots(&s, 0).await,
        closed,
        "prune_stream_snapshots after close",
    );
    expect_kind(
        store.set_secret("w", "v").await,
        closed,
        "set_secret after close",
    );
    expect_kind(
        store.get_secret("u").await,
        closed,
        "get_secret after close",
    );
    expect_kind(
        store.delete_secret("u").await,
        closed,
        "delete_secret after close",
    );
    expect_kind(
        store.list_secrets(SecretQuery::default()).await,
        closed,
        "list_secrets after close",
    );
    expect_kind(
        store.mark_dispatched("p1").await,
        closed,
        "mark_dispatched after close",
    );
    expect_kind(store.close().await, closed, "close twice");
    expect_kind(store.drop_store().await, closed, "drop_store after close");
    let mut live = store.subscribe(Subscribe::from_start());
    assert_ends_closed(&mut live, "a subscription started after close").await;
}

/// A live subscription waiting for events ends (after at most one `Err(Closed)`) when
/// the store is closed, instead of hanging.
pub async fn close_ends_live_subscription(store: &dyn EventStore) {
    assert_fresh(store).await;
    let mut live = store.subscribe(Subscribe::from_start());
    let mut filtered = store.subscribe(Subscribe::from_start().filter(filter().context("never")));
    let r = append_ok(
        store,
        &StreamId::new("s"),
        ExpectedVersion::Any,
        vec![event("T", "1"), event("T", "2")],
    )
    .await;
    assert_eq!(take_events(&mut live, 2, "before close").await, r.events);
    let waiting = tokio::spawn(async move {
        assert_ends_closed(&mut live, "a caught-up subscription when the store closes").await;
    });
    let waiting_filtered = tokio::spawn(async move {
        assert_ends_closed(
            &mut filtered,
            "a filtered subscription when the store closes",
        )
        .await;
    });
    // Let both subscribers reach their wait for new events.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.close().await.unwrap();
    tokio::time::timeout(TIMEOUT, waiting)
        .await
        .expect("the subscription hung after close")
        .unwrap();
    tokio::time::timeout(TIMEOUT, waiting_filtered)
        .await
        .expect("the filtered subscription hung after close")
        .unwrap();
}

/// Appends racing with `close` either succeed or fail with `Closed`; every append
/// after `close` returned fails with `Closed`.
pub async fn close_during_appends_fails_them_cleanly(store: Arc<dyn EventStore>) {
    assert_fresh(&*store).await;
    let appenders: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let s = StreamId::new(format!("w-{w}"));
                let mut ok = 0u64;
                for i in 0..10_000u64 {
                    match store
                        .append_to_stream(
                            &s,
                            ExpectedVersion::Exact(ok),
                            vec![event("T", &i.to_string())],
                        )
                        .await
                    {
                        Ok(_) => ok += 1,
                        Err(e) if e.kind() == ErrorKind::Closed => return ok,
                        Err(e) => panic!("an append racing with close failed with {e}, not Closed"),
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ok
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.close().await.unwrap();
    for a in appenders {
        tokio::time::timeout(TIMEOUT, a)
            .await
            .expect("an append hung across close")
            .unwrap();
    }
    expect_kind(
        store
            .append_to_stream(
                &StreamId::new("late"),
                ExpectedVersion::Any,
                vec![event("T", "1")],
            )
            .await,
        ErrorKind::Closed,
        "an append after close",
    );
}

/// `drop_store` deletes everything and closes the store: every call then returns
/// `Closed` and live subscriptions end.
pub async fn drop_store_erases_data_and_closes(store: &dyn EventStore) {
    assert_fresh(store).await;
    seed_fixture(store).await;
    store.set_secret("u", "v").await.unwrap();
    store.save_snapshot("k", "v").await.unwrap();
    store
        .save_stream_snapshot(stream_snapshot("x", &fixture_stream(0), 1, "{}", 1))
        .await
        .unwrap();
    store.freeze().await.unwrap();
    let mut live = store.subscribe(Subscribe::from_start());
    assert_eq!(take_events(&mut live, 8, "before drop").await.len(), 8);
    store
        .drop_store()
        .await
        .unwrap_or_else(|e| panic!("drop_store on a frozen store failed: {e}"));
    expect_kind(
        store.describe().await,
        ErrorKind::Closed,
        "describe after drop_store",
    );
    expect_kind(
        store.read_all(ReadAll::forward()).await,
        ErrorKind::Closed,
        "read_all after drop_store",
    );
    expect_kind(
        store.get_secret("u").await,
        ErrorKind::Closed,
        "get_secret after drop_store",
    );
    expect_kind(
        store.load_snapshot("k").await,
        ErrorKind::Closed,
        "load_snapshot after drop_store",
    );
    expect_kind(
        store
            .append_to_stream(
                &StreamId::new("s"),
                ExpectedVersion::Any,
                vec![event("T", "1")],
            )
            .await,
        ErrorKind::Closed,
        "append after drop_store",
    );
    expect_kind(
        store.drop_store().await,
        ErrorKind::Closed,
        "drop_store twice",
    );
    assert_ends_closed(&mut live, "a live subscription when the store is dropped").await;
}

// ---------------------------------------------------------------------------------
// Data maintenance: import, clear (issue #6)
// ---------------------------------------------------------------------------------

/// An event as another store recorded it, ready to import (`position` is ignored).
fn recorded(id: &str, stream: &StreamId, version: Version, k: i64) -> RecordedEvent {
    RecordedEvent {
        position: 999,
        id: id.into(),
        stream: stream.clone(),
        version,
        event_type: "Imported".into(),
        timestamp: at(k),
        payload: json(&format!(r#"{{"k": {k}}}"#)),
        metadata: json(r#" {"source":"a"} "#),
        commit_id: format!("commit-{k}").into(),
        commit_sequence: k as u32,
        dispatched: false,
    }
}

fn import_batch(events: Vec<RecordedEvent>, on_conflict: OnConflict) -> ImportBatch {
    ImportBatch {
        events,
        on_conflict,
        expected_head: None,
    }
}

async fn import_ok(store: &dyn EventStore, batch: ImportBatch) -> ImportOutcome {
    let what = format!("import of {} events", batch.events.len());
    store
        .import_events(batch)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// `event` as it must read back after being imported at `position`.
fn at_position(event: &RecordedEvent, position: Position) -> RecordedEvent {
    RecordedEvent {
        position,
        ..event.clone()
    }
}

fn secret_import(idx: Option<u64>, id: &str, secret: Option<&str>) -> SecretImport {
    SecretImport {
        idx,
        id: id.to_owned(),
        secret: secret.map(str::to_owned),
    }
}

/// Import keeps every field (id, stream, version, type, timestamp, payload and
/// metadata byte-for-byte, commit id and sequence, dispatched) and assigns positions
/// after the head, in batch order; `position` in the input is ignored.
pub async fn import_keeps_every_field_and_assigns_positions_after_the_head(store: &dyn EventStore) {
    assert_fresh(store).await;
    let local = StreamId::new("local");
    append_ok(
        store,
        &local,
        ExpectedVersion::NoStream,
        vec![event("T", "1")],
    )
    .await;
    let a = StreamId::new("a-1")
        .with_aggregate("acc")
        .with_context("bank");
    let b = StreamId::new("b-1");
    let mut e1 = recorded("i-1", &a, 3, 5);
    e1.dispatched = true;
    let e2 = recorded("i-2", &b, 1, 2);
    let e3 = recorded("i-3", &a, 7, 9);
    let outcome = import_ok(
        store,
        import_batch(vec![e1.clone(), e2.clone(), e3.clone()], OnConflict::Error),
    )
    .await;
    assert_eq!(
        outcome,
        ImportOutcome {
            imported: 3,
            skipped: 0,
            head_position: 4
        },
        "import outcome"
    );
    let all = read_everything(store).await;
    assert_eq!(
        all[1..].to_vec(),
        vec![
            at_position(&e1, 2),
            at_position(&e2, 3),
            at_position(&e3, 4)
        ],
        "imported events read back with every field kept and positions 2..=4"
    );
    assert_eq!(
        stream_versions(store, &a, StreamRead::all()).await,
        vec![3, 7],
        "versions of an imported stream, gaps kept"
    );
    let info = store
        .stream_info(&a)
        .await
        .unwrap()
        .expect("imported stream");
    assert_eq!(
        (
            info.version,
            info.first_position,
            info.last_position,
            info.first_timestamp
        ),
        (7, 2, 4, at(5)),
        "stream info of an imported stream"
    );
    let d = description(store).await;
    assert_eq!(
        (d.event_count, d.stream_count, d.head_position),
        (4, 3, 4),
        "describe after an import"
    );
    assert_eq!(
        store
            .undispatched(filter(), None)
            .await
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![1, 3, 4],
        "the imported dispatched flag is kept"
    );
    // The store continues after the imported events.
    let next = append_ok(store, &a, ExpectedVersion::Exact(7), vec![event("T", "2")]).await;
    assert_eq!(
        (next.events[0].position, next.events[0].version),
        (5, 8),
        "an append after an import"
    );
    let empty = import_ok(store, import_batch(vec![], OnConflict::Error)).await;
    assert_eq!(
        (empty.imported, empty.skipped, empty.head_position),
        (0, 0, 5),
        "an empty import"
    );
}

/// Importing every event of store A, in position order, into an empty store B
/// reproduces A: positions, ids (generated ones too), versions, timestamps, payloads,
/// commits, dispatch marks, stream infos and listings; B then works on its own (reads by
/// stream, lookups by id, appends).
pub async fn import_of_an_export_into_an_empty_store_reproduces_it(store: &dyn EventStore) {
    assert_fresh(store).await;
    let source = annals_core::MemoryStore::new();
    let fixture = seed_fixture(&source).await;
    let s = StreamId::new("gen").with_aggregate("acc");
    // Events without ids get generated ids; several per commit.
    source
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("A", "1"), event("B", "[2]"), event("C", "{}")],
        )
        .await
        .unwrap();
    source
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("D", "4").with_version(10)],
        )
        .await
        .unwrap();
    source.mark_dispatched(&fixture[1].id).await.unwrap();
    source.mark_dispatched(&fixture[0].id).await.unwrap();
    source.mark_dispatched(&fixture[5].id).await.unwrap();
    let export = read_everything(&source).await;
    assert_eq!(export.len(), 12);

    let outcome = import_ok(store, import_batch(export.clone(), OnConflict::Error)).await;
    assert_eq!(
        (outcome.imported, outcome.skipped, outcome.head_position),
        (12, 0, 12)
    );
    assert_eq!(
        read_everything(store).await,
        export,
        "the import reproduces the export"
    );
    assert_eq!(
        store
            .list_streams(ListStreams::default())
            .await
            .unwrap()
            .streams,
        source
            .list_streams(ListStreams::default())
            .await
            .unwrap()
            .streams,
        "stream listing after the import"
    );
    for k in [0, 2, 5] {
        let stream = fixture_stream(k);
        assert_eq!(
            store.stream_info(&stream).await.unwrap(),
            source.stream_info(&stream).await.unwrap(),
            "stream info of {stream}"
        );
    }
    assert_eq!(
        stream_events(store, &s, StreamRead::all()).await,
        stream_events(&source, &s, StreamRead::all()).await,
        "read_stream of an imported stream"
    );
    let mut d_store = description(store).await;
    let mut d_source = description(&source).await;
    d_store.bytes_on_disk = None;
    d_source.bytes_on_disk = None;
    assert_eq!(d_store, d_source, "describe after the import");

    // Ids of imported events (generated by A) are found in B.
    let generated = &export[9];
    store.mark_dispatched(&generated.id).await.unwrap();
    let again = read(store, ReadAll::forward().after(9).limit(1)).await;
    assert!(again[0].dispatched, "mark_dispatched of an imported event");
    let retry = store
        .append_to_stream(
            &s,
            ExpectedVersion::Any,
            vec![event("A", "1").with_id(generated.id.to_string())],
        )
        .await;
    expect_duplicate_id(
        retry,
        &generated.id,
        "an append reusing an imported id for other content",
    );
    let next = append_ok(store, &s, ExpectedVersion::Exact(10), vec![event("E", "5")]).await;
    assert_eq!((next.events[0].position, next.events[0].version), (13, 11));
    assert!(
        next.events[0].timestamp >= export[11].timestamp,
        "a later store timestamp is not below the imported ones"
    );
}

/// An imported event whose (stream, version) is stored is skipped with
/// `OnConflict::Skip` and refuses the whole batch with `VersionConflict` with
/// `OnConflict::Error`.
pub async fn import_of_a_stored_stream_version_is_skipped_or_a_version_conflict(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![event("T", "1"), event("T", "2")],
    )
    .await;
    let clash = recorded("other-id", &s, 2, 1);
    let fresh = recorded("new-id", &s, 3, 2);
    let err = store
        .import_events(import_batch(
            vec![
                fresh.clone(),
                recorded("x", &StreamId::new("t"), 1, 3),
                clash.clone(),
            ],
            OnConflict::Error,
        ))
        .await;
    match expect_kind(
        err,
        ErrorKind::VersionConflict,
        "import of a stored version",
    ) {
        Error::VersionConflict {
            stream,
            version,
            current,
        } => assert_eq!((stream, version, current), (s.clone(), 2, 3)),
        other => panic!("not VersionConflict: {other:?}"),
    }
    assert_eq!(
        read_everything(store).await.len(),
        2,
        "a refused import stores nothing"
    );
    let outcome = import_ok(
        store,
        import_batch(vec![clash.clone(), fresh.clone()], OnConflict::Skip),
    )
    .await;
    assert_eq!(
        (outcome.imported, outcome.skipped, outcome.head_position),
        (1, 1, 3),
        "skip drops the stored version and imports the rest"
    );
    let all = read_everything(store).await;
    assert_eq!(ids(&all)[2], "new-id");
    assert_ne!(all[1].id.as_ref(), "other-id", "the stored event stays");
}

/// An imported event whose id is stored (for any event) is skipped with `Skip` and
/// refuses the batch with `DuplicateEventId` with `Error`.
pub async fn import_of_a_stored_id_is_skipped_or_duplicate_event_id(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![event("T", "1").with_id("taken")],
    )
    .await;
    let t = StreamId::new("t");
    let dup = recorded("taken", &t, 1, 1);
    let ok = recorded("free", &t, 2, 2);
    expect_duplicate_id(
        store
            .import_events(import_batch(
                vec![dup.clone(), ok.clone()],
                OnConflict::Error,
            ))
            .await,
        "taken",
        "import of a stored id",
    );
    assert_eq!(read_everything(store).await.len(), 1, "nothing stored");
    let outcome = import_ok(store, import_batch(vec![dup, ok.clone()], OnConflict::Skip)).await;
    assert_eq!((outcome.imported, outcome.skipped), (1, 1));
    assert_eq!(
        read_everything(store).await[1],
        at_position(&ok, 2),
        "the event after the skipped one"
    );
    // Importing the same events again with Skip is a no-op.
    let again = import_ok(store, import_batch(vec![ok], OnConflict::Skip)).await;
    assert_eq!(
        (again.imported, again.skipped, again.head_position),
        (0, 1, 2)
    );
}

/// A version at or below a stream's current version that is not stored (back-filling a
/// gap below the head) is `InvalidInput` on `events[i].version`, also with `Skip`,
/// also when the higher version came earlier in the same batch.
pub async fn import_below_a_streams_current_version_is_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![event("T", "1").with_version(5)],
    )
    .await;
    for on_conflict in [OnConflict::Error, OnConflict::Skip] {
        expect_invalid(
            store
                .import_events(import_batch(
                    vec![
                        recorded("a", &StreamId::new("t"), 1, 1),
                        recorded("b", &s, 3, 1),
                    ],
                    on_conflict,
                ))
                .await,
            "events[1].version",
            "back-filling below the stored head",
        );
        let u = StreamId::new("u");
        expect_invalid(
            store
                .import_events(import_batch(
                    vec![recorded("c", &u, 4, 1), recorded("d", &u, 2, 1)],
                    on_conflict,
                ))
                .await,
            "events[1].version",
            "back-filling below a version of the same batch",
        );
    }
    expect_invalid(
        store
            .import_events(import_batch(
                vec![recorded("z", &StreamId::new("z"), 0, 1)],
                OnConflict::Error,
            ))
            .await,
        "events[0].version",
        "version 0",
    );
    assert_eq!(read_everything(store).await.len(), 1, "nothing imported");
}

/// Two events of one batch with the same id, or the same (stream, version), are
/// `InvalidInput`, with either conflict mode.
pub async fn import_duplicates_inside_one_batch_are_invalid_input(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    for on_conflict in [OnConflict::Error, OnConflict::Skip] {
        expect_invalid(
            store
                .import_events(import_batch(
                    vec![
                        recorded("same", &s, 1, 1),
                        recorded("same", &StreamId::new("t"), 1, 1),
                    ],
                    on_conflict,
                ))
                .await,
            "events[1].id",
            "one id twice in a batch",
        );
        expect_invalid(
            store
                .import_events(import_batch(
                    vec![
                        recorded("one", &s, 1, 1),
                        recorded("two", &s, 2, 1),
                        recorded("three", &s, 1, 1),
                    ],
                    on_conflict,
                ))
                .await,
            "events[2].version",
            "one stream version twice in a batch",
        );
    }
    assert!(read_everything(store).await.is_empty(), "nothing imported");
}

/// A bad event anywhere in a batch (a field append would refuse, or a conflict) stores
/// nothing of the batch; the error names `events[i].<field>`.
pub async fn import_with_one_bad_event_stores_nothing(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let good = || vec![recorded("g1", &s, 1, 1), recorded("g2", &s, 2, 2)];
    type Spoil = Box<dyn Fn(&mut RecordedEvent)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("events[2].payload", Box::new(|e| e.payload = json("{oops"))),
        (
            "events[2].metadata",
            Box::new(|e| e.metadata = json("{} {}")),
        ),
        ("events[2].id", Box::new(|e| e.id = "".into())),
        (
            "events[2].id",
            Box::new(|e| e.id = "x".repeat(MAX_NAME_BYTES + 1).into()),
        ),
        (
            "events[2].stream.id",
            Box::new(|e| e.stream = StreamId::new("")),
        ),
        ("events[2].type", Box::new(|e| e.event_type = "a\0b".into())),
        ("events[2].commit_id", Box::new(|e| e.commit_id = "".into())),
    ];
    for (field, spoil) in cases {
        let mut bad = recorded("b", &StreamId::new("t"), 1, 3);
        spoil(&mut bad);
        let mut events = good();
        events.push(bad);
        expect_invalid(
            store
                .import_events(import_batch(events, OnConflict::Skip))
                .await,
            field,
            "a batch with one bad event",
        );
    }
    assert!(read_everything(store).await.is_empty(), "nothing imported");
    let d = description(store).await;
    assert_eq!((d.event_count, d.stream_count, d.head_position), (0, 0, 0));
}

/// Import, clear_events, clear_secrets and import_secrets are the maintenance path:
/// they work while the store is frozen (and leave it frozen).
pub async fn maintenance_operations_work_while_frozen(store: &dyn EventStore) {
    assert_fresh(store).await;
    store.freeze().await.unwrap();
    let s = StreamId::new("s");
    let outcome = import_ok(
        store,
        import_batch(vec![recorded("e1", &s, 1, 1)], OnConflict::Error),
    )
    .await;
    assert_eq!(outcome.head_position, 1, "import while frozen");
    let secrets = store
        .import_secrets(vec![secret_import(None, "k", Some("v"))], OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(secrets.imported, 1, "secret import while frozen");
    store.clear_events().await.unwrap();
    store.clear_secrets().await.unwrap();
    let d = description(store).await;
    assert!(d.frozen, "still frozen");
    assert_eq!((d.event_count, d.secret_count), (0, 0));
    expect_kind(
        store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event("T", "1")])
            .await,
        ErrorKind::Frozen,
        "append while frozen after maintenance",
    );
}

/// With `expected_head: Some(p)` the import commits only if the head is `p`, else
/// `WrongExpectedHead { expected, actual }` and nothing is stored.
pub async fn import_with_expected_head_requires_that_head(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(store, &s, ExpectedVersion::NoStream, vec![event("T", "1")]).await;
    let t = StreamId::new("t");
    let batch = |expected_head| ImportBatch {
        events: vec![recorded("i1", &t, 1, 1)],
        on_conflict: OnConflict::Error,
        expected_head,
    };
    for wrong in [0, 2] {
        match expect_kind(
            store.import_events(batch(Some(wrong))).await,
            ErrorKind::WrongExpectedHead,
            "import with a wrong expected head",
        ) {
            Error::WrongExpectedHead { expected, actual } => {
                assert_eq!((expected, actual), (wrong, 1))
            }
            other => panic!("not WrongExpectedHead: {other:?}"),
        }
    }
    assert_eq!(read_everything(store).await.len(), 1, "nothing imported");
    let ok = import_ok(store, batch(Some(1))).await;
    assert_eq!((ok.imported, ok.head_position), (1, 2));
    // An expected head is checked even when every event is skipped.
    expect_kind(
        store
            .import_events(ImportBatch {
                on_conflict: OnConflict::Skip,
                ..batch(Some(1))
            })
            .await,
        ErrorKind::WrongExpectedHead,
        "expected head of an all-skipped batch",
    );
}

/// Imported timestamps are kept as given, even going backwards; a timestamp the store
/// assigns later is never below the newest event's.
pub async fn import_keeps_timestamps_that_go_backwards(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let future = Timestamp::from_millis(Timestamp::now().as_millis() + 86_400_000);
    let mut late = recorded("late", &s, 1, 0);
    late.timestamp = future;
    let early = recorded("early", &s, 2, 0);
    import_ok(
        store,
        import_batch(vec![late, early.clone()], OnConflict::Error),
    )
    .await;
    let all = read_everything(store).await;
    assert_eq!(
        (all[0].timestamp, all[1].timestamp),
        (future, early.timestamp),
        "imported timestamps kept"
    );
    let next = append_ok(store, &s, ExpectedVersion::Exact(2), vec![event("T", "1")]).await;
    assert!(
        next.events[0].timestamp >= early.timestamp,
        "a store timestamp after an import is max(now, newest)"
    );
}

/// `clear_events` deletes every event, stream, stream snapshot and dispatch mark;
/// positions restart at 1; secrets, keyed snapshots and the freeze flag stay; appends
/// and imports work afterwards.
pub async fn clear_events_empties_the_events_and_keeps_secrets_and_keyed_snapshots(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let fixture = seed_fixture(store).await;
    store.mark_dispatched(&fixture[0].id).await.unwrap();
    store.mark_dispatched(&fixture[3].id).await.unwrap();
    let o1 = fixture_stream(0);
    store
        .save_stream_snapshot(NewStreamSnapshot::new(o1.clone(), 1, json("{}")))
        .await
        .unwrap();
    store.save_snapshot("k", "content").await.unwrap();
    store.set_secret("user-1", "key-1").await.unwrap();
    store.set_secret("user-2", "key-2").await.unwrap();
    store.delete_secret("user-2").await.unwrap();

    store.clear_events().await.unwrap();
    let d = description(store).await;
    assert_eq!(
        (
            d.event_count,
            d.stream_count,
            d.head_position,
            d.last_event_timestamp
        ),
        (0, 0, 0, None),
        "describe after clear_events"
    );
    assert_eq!(
        (d.secret_count, d.set_secret_count, d.deleted_secret_count),
        (2, 1, 1),
        "secrets kept"
    );
    assert!(read_everything(store).await.is_empty(), "no events left");
    assert!(
        store.stream_info(&o1).await.unwrap().is_none(),
        "no stream left"
    );
    assert!(
        stream_events(store, &o1, StreamRead::all())
            .await
            .is_empty(),
        "no stream events left"
    );
    assert!(
        store
            .list_streams(ListStreams::default())
            .await
            .unwrap()
            .streams
            .is_empty(),
        "no stream listed"
    );
    assert!(
        store
            .latest_stream_snapshot(&o1, None)
            .await
            .unwrap()
            .is_none(),
        "stream snapshots gone"
    );
    assert_eq!(
        store.load_snapshot("k").await.unwrap().map(|s| s.content),
        Some("content".to_owned()),
        "keyed snapshot kept"
    );
    assert_eq!(
        store
            .get_secret("user-1")
            .await
            .unwrap()
            .and_then(|s| s.secret),
        Some("key-1".to_owned()),
        "secret kept"
    );
    expect_kind(
        store.mark_dispatched(&fixture[0].id).await,
        ErrorKind::NotFound,
        "mark_dispatched of a cleared event",
    );

    // Positions restart at 1; old ids and versions are free again; no dispatch mark
    // survives.
    let again = append_ok(
        store,
        &o1,
        ExpectedVersion::NoStream,
        vec![
            event("T", "1").with_id(fixture[0].id.to_string()),
            event("T", "2"),
        ],
    )
    .await;
    assert_eq!(positions(&again.events), vec![1, 2]);
    assert_eq!(versions(&again.events), vec![1, 2]);
    assert!(
        read_everything(store).await.iter().all(|e| !e.dispatched),
        "no dispatch mark survives clear_events"
    );
    assert_eq!(
        store
            .stream_info(&o1)
            .await
            .unwrap()
            .map(|i| i.first_position),
        Some(1)
    );
    let imported = import_ok(
        store,
        import_batch(
            vec![recorded(&fixture[3].id, &fixture_stream(3), 7, 1)],
            OnConflict::Error,
        ),
    )
    .await;
    assert_eq!(imported.head_position, 3, "import after clear_events");
    let d = description(store).await;
    assert_eq!((d.event_count, d.stream_count, d.head_position), (3, 1, 3));
    // Clearing an empty store is fine too.
    store.clear_events().await.unwrap();
    store.clear_events().await.unwrap();
    assert!(read_everything(store).await.is_empty());
}

/// `clear_secrets` deletes every secret and tombstone; idx restarts at 0 and ids
/// become usable again; events are untouched.
pub async fn clear_secrets_erases_every_secret_and_idx_restarts_at_zero(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(store, &s, ExpectedVersion::NoStream, vec![event("T", "1")]).await;
    store.set_secret("a", "1").await.unwrap();
    store.set_secret("b", "2").await.unwrap();
    store.delete_secret("a").await.unwrap();
    store.clear_secrets().await.unwrap();
    let d = description(store).await;
    assert_eq!(
        (
            d.secret_count,
            d.set_secret_count,
            d.deleted_secret_count,
            d.event_count
        ),
        (0, 0, 0, 1),
        "describe after clear_secrets"
    );
    assert!(store.get_secret("a").await.unwrap().is_none());
    assert!(store
        .list_secrets(SecretQuery {
            include_deleted: true,
            ..SecretQuery::default()
        })
        .await
        .unwrap()
        .is_empty());
    let a = store.set_secret("a", "again").await.unwrap();
    assert_eq!(
        (a.idx, a.secret.as_deref()),
        (0, Some("again")),
        "idx restarts"
    );
    assert_eq!(store.set_secret("c", "3").await.unwrap().idx, 1);
}

/// `import_secrets` keeps idx and tombstones; a secret without idx gets the next one;
/// afterwards the next idx is the greatest + 1.
pub async fn import_secrets_keeps_idx_and_tombstones(store: &dyn EventStore) {
    assert_fresh(store).await;
    store.set_secret("first", "0").await.unwrap();
    let outcome = store
        .import_secrets(
            vec![
                secret_import(Some(3), "three", Some("k3")),
                secret_import(Some(1), "gone", None),
                secret_import(None, "next", Some("k4")),
            ],
            OnConflict::Error,
        )
        .await
        .unwrap();
    assert_eq!(
        (outcome.imported, outcome.skipped, outcome.head_position),
        (3, 0, 0)
    );
    let all = store
        .list_secrets(SecretQuery {
            include_deleted: true,
            ..SecretQuery::default()
        })
        .await
        .unwrap();
    let got: Vec<(u64, &str, Option<&str>)> = all
        .iter()
        .map(|s| (s.idx, s.id.as_str(), s.secret.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "first", Some("0")),
            (1, "gone", None),
            (3, "three", Some("k3")),
            (4, "next", Some("k4")),
        ],
        "secrets after the import"
    );
    let live = store.list_secrets(SecretQuery::default()).await.unwrap();
    assert_eq!(
        live.len(),
        3,
        "the tombstone is only listed with include_deleted"
    );
    assert_eq!(
        store
            .get_secret("gone")
            .await
            .unwrap()
            .map(|s| (s.idx, s.secret)),
        Some((1, None))
    );
    expect_kind(
        store.set_secret("gone", "x").await,
        ErrorKind::SecretAlreadyExists,
        "an imported tombstone's id is never reused",
    );
    let d = description(store).await;
    assert_eq!(
        (d.set_secret_count, d.deleted_secret_count),
        (3, 1),
        "describe counts imported secrets and tombstones"
    );
    assert_eq!(
        store.set_secret("later", "5").await.unwrap().idx,
        5,
        "the next idx is the greatest + 1"
    );
    let from = store
        .list_secrets(SecretQuery {
            from_idx: 2,
            ..SecretQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        from.iter().map(|s| s.idx).collect::<Vec<_>>(),
        vec![3, 4, 5],
        "from_idx over a gap"
    );
}

/// A secret whose id is present, or whose idx is used, is skipped with `Skip` and
/// refuses the whole batch with `SecretAlreadyExists` with `Error`; duplicates inside
/// one batch are `InvalidInput`.
pub async fn import_secrets_conflicts_are_skipped_or_secret_already_exists(store: &dyn EventStore) {
    assert_fresh(store).await;
    store.set_secret("a", "1").await.unwrap();
    for conflict in [
        secret_import(None, "a", Some("x")),
        secret_import(Some(0), "new", Some("x")),
    ] {
        let err = store
            .import_secrets(
                vec![secret_import(Some(7), "fresh", Some("f")), conflict.clone()],
                OnConflict::Error,
            )
            .await;
        match expect_kind(
            err,
            ErrorKind::SecretAlreadyExists,
            "secret import conflict",
        ) {
            Error::SecretAlreadyExists { id } => assert_eq!(id, conflict.id),
            other => panic!("not SecretAlreadyExists: {other:?}"),
        }
        assert!(
            store.get_secret("fresh").await.unwrap().is_none(),
            "a refused secret import stores nothing"
        );
    }
    let outcome = store
        .import_secrets(
            vec![
                secret_import(None, "a", Some("x")),
                secret_import(Some(0), "new", Some("x")),
                secret_import(Some(2), "b", Some("2")),
            ],
            OnConflict::Skip,
        )
        .await
        .unwrap();
    assert_eq!((outcome.imported, outcome.skipped), (1, 2));
    assert_eq!(
        store.get_secret("a").await.unwrap().and_then(|s| s.secret),
        Some("1".to_owned()),
        "the stored secret stays"
    );
    expect_invalid(
        store
            .import_secrets(
                vec![
                    secret_import(None, "c", None),
                    secret_import(None, "c", None),
                ],
                OnConflict::Skip,
            )
            .await,
        "secrets[1].id",
        "one secret id twice in a batch",
    );
    expect_invalid(
        store
            .import_secrets(
                vec![
                    secret_import(Some(9), "c", None),
                    secret_import(Some(9), "d", None),
                ],
                OnConflict::Skip,
            )
            .await,
        "secrets[1].idx",
        "one idx twice in a batch",
    );
    expect_invalid(
        store
            .import_secrets(vec![secret_import(None, "", None)], OnConflict::Error)
            .await,
        "secrets[0].id",
        "an empty secret id",
    );
}

// ---------------------------------------------------------------------------------
// Overwrite (in-place replacement)
// ---------------------------------------------------------------------------------

/// An overwrite request (`AppendRequest::overwriting`) to one stream.
fn overwrite_request(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> AppendRequest {
    AppendRequest::to_stream(stream.clone(), expected, events).overwriting()
}

/// Appends `n` events to `stream`, one append each, with ids `{prefix}{i}`, type
/// `Counted`, payload `{"i":i}` and the timestamp `at(i)` (i from 1).
async fn seed_timed(
    store: &dyn EventStore,
    stream: &StreamId,
    prefix: &str,
    n: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for i in 1..=n {
        let e = event("Counted", &format!(r#"{{"i":{i}}}"#))
            .with_id(format!("{prefix}{i}"))
            .with_timestamp(at(i as i64));
        out.extend(
            append_ok(store, stream, ExpectedVersion::Any, vec![e])
                .await
                .events,
        );
    }
    out
}

/// `old` as it reads after an overwrite with `proposed` in the commit `commit_id`
/// (sequence `seq`), per the rules of `AppendRequest::overwriting`.
fn replaced_as(
    old: &RecordedEvent,
    proposed: &ProposedEvent,
    commit_id: &str,
    seq: u32,
) -> RecordedEvent {
    RecordedEvent {
        id: proposed
            .id
            .as_deref()
            .map_or_else(|| old.id.clone(), Into::into),
        event_type: proposed.event_type.as_str().into(),
        timestamp: proposed.timestamp.unwrap_or(old.timestamp),
        payload: proposed.payload.clone(),
        metadata: proposed.metadata.clone(),
        commit_id: commit_id.into(),
        commit_sequence: seq,
        ..old.clone()
    }
}

/// A replacement keeps the stored event's position, version and dispatch mark and
/// takes the new type, payload, metadata and commit id; the head, the stream's version
/// and the counts do not move, and every read shows the new content.
pub async fn overwrite_replaces_an_event_in_place(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("acc-1").with_aggregate("account");
    let t = StreamId::new("acc-2").with_aggregate("account");
    let seeded = seed_timed(store, &s, "e", 3).await;
    let other = append_ok(
        store,
        &t,
        ExpectedVersion::Any,
        vec![event("Opened", "{}").with_id("t1")],
    )
    .await;
    store.mark_dispatched("e2").await.unwrap();
    let mut stored = seeded.clone();
    stored[1].dispatched = true;
    let before = description(store).await;
    let fix = event("Corrected", r#"{ "amount" : 50 }"#)
        .with_metadata(json(r#"{ "reason" : "typo" }"#))
        .with_version(2);
    let r = request_ok(
        store,
        overwrite_request(&s, ExpectedVersion::Any, vec![fix.clone()]).with_commit_id("fix-1"),
    )
    .await;
    let want = replaced_as(&stored[1], &fix, "fix-1", 0);
    assert_eq!(
        (
            want.position,
            want.version,
            want.id.as_str(),
            want.timestamp
        ),
        (seeded[1].position, 2, "e2", at(2)),
        "the expected replacement (test self-check)"
    );
    assert!(want.dispatched, "the dispatch mark is kept");
    assert!(!r.retried, "overwrite: a replacement is not a retry");
    assert_eq!(r.commit_id, "fix-1", "overwrite: the request's commit id");
    assert_eq!(
        r.events,
        std::slice::from_ref(&want),
        "overwrite: the result is the stored event with the new type, payload, metadata \
         and commit id at its old position and version"
    );
    assert_eq!(
        r.head_position, before.head_position,
        "overwrite: a replacement does not move the head"
    );
    stored[1] = want.clone();
    assert_eq!(
        stream_events(store, &s, StreamRead::all()).await,
        stored,
        "overwrite: read_stream shows the replacement in place"
    );
    assert_eq!(
        read_everything(store).await,
        [stored.clone(), other.events].concat(),
        "overwrite: read_all shows the replacement at its position"
    );
    assert_eq!(
        description(store).await,
        before,
        "overwrite: counts, head and last timestamp unchanged"
    );
    assert_eq!(
        store.stream_version(&s).await.unwrap(),
        3,
        "overwrite: the stream's version is unchanged"
    );
    let next = append_ok(store, &s, ExpectedVersion::Exact(3), vec![event("T", "4")]).await;
    assert_eq!(
        next.events[0].version, 4,
        "overwrite: the next append continues after the old version"
    );
}

/// A replacement takes the proposed id, or keeps the old one when none is proposed;
/// a replaced id no longer finds the event (and is free again), the new one does.
pub async fn overwrite_replaces_the_id_or_keeps_it(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let seeded = seed_timed(store, &s, "e", 3).await;
    let r = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![event("Fixed", "1").with_version(1)],
        ),
    )
    .await;
    assert_eq!(
        r.events[0].id, "e1",
        "overwrite without an id keeps the old id"
    );
    let r = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![event("Fixed", "2").with_id("e2-new").with_version(2)],
        ),
    )
    .await;
    assert_eq!(r.events[0].id, "e2-new", "overwrite takes the proposed id");
    assert_eq!(r.events[0].position, seeded[1].position);
    assert_eq!(
        ids(&stream_events(store, &s, StreamRead::all()).await),
        ["e1", "e2-new", "e3"],
        "overwrite: read_stream shows the ids"
    );
    match expect_kind(
        store.mark_dispatched("e2").await,
        ErrorKind::NotFound,
        "overwrite: mark_dispatched of the replaced id",
    ) {
        Error::NotFound { what, id } => assert_eq!((what, id.as_str()), ("event", "e2")),
        other => panic!("not NotFound: {other:?}"),
    }
    store
        .mark_dispatched("e2-new")
        .await
        .unwrap_or_else(|e| panic!("overwrite: mark_dispatched of the new id failed: {e}"));
    store
        .mark_dispatched("e1")
        .await
        .unwrap_or_else(|e| panic!("overwrite: mark_dispatched of a kept id failed: {e}"));
    assert_eq!(
        read_all_dispatched_ids(store).await,
        ["e1", "e2-new"],
        "overwrite: the ids find the replaced events"
    );
    // The replaced id is free again: a new event may take it.
    let again = append_ok(
        store,
        &s,
        ExpectedVersion::Exact(3),
        vec![event("T", "4").with_id("e2")],
    )
    .await;
    assert_eq!(
        (again.events[0].id.as_str(), again.events[0].version),
        ("e2", 4),
        "overwrite: a replaced id can be used again"
    );
    store.mark_dispatched("e2").await.unwrap();
    assert_eq!(read_all_dispatched_ids(store).await, ["e1", "e2-new", "e2"]);
    // Another stored event's id is still a duplicate.
    expect_duplicate_id(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Any,
                vec![event("Fixed", "3").with_id("e1").with_version(3)],
            ))
            .await,
        "e1",
        "overwrite proposing the id of another stored event",
    );
}

async fn read_all_dispatched_ids(store: &dyn EventStore) -> Vec<String> {
    read_ids(store, ReadAll::forward().filter(filter().dispatched(true))).await
}

/// A replacement takes the proposed timestamp, or keeps the old one when none is
/// proposed; the dispatch mark is kept either way.
pub async fn overwrite_replaces_the_timestamp_or_keeps_it(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let seeded = seed_timed(store, &s, "e", 3).await;
    store.mark_dispatched("e3").await.unwrap();
    let r = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![
                event("Fixed", "1").with_version(2),
                event("Fixed", "2").with_version(3).with_timestamp(at(-50)),
            ],
        ),
    )
    .await;
    assert_eq!(
        r.events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        [at(2), at(-50)],
        "overwrite: no timestamp keeps the old one, a given one is stored as given"
    );
    assert_eq!(
        r.events.iter().map(|e| e.dispatched).collect::<Vec<_>>(),
        [false, true],
        "overwrite: the dispatch marks are kept"
    );
    assert_eq!(
        r.events
            .iter()
            .map(|e| e.commit_sequence)
            .collect::<Vec<_>>(),
        [0, 1],
        "overwrite: replacements are numbered in request order"
    );
    let stored = stream_events(store, &s, StreamRead::all()).await;
    assert_eq!(
        stored.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        [at(1), at(2), at(-50)],
        "overwrite: reads show the timestamps"
    );
    assert_eq!(positions(&stored), positions(&seeded));
    assert_eq!(
        ids(&store.undispatched(filter(), None).await.unwrap()),
        ["e1", "e2"],
        "overwrite: undispatched after replacements"
    );
}

/// Under overwrite, a version inside a gap of the stream, or replaced versions that do
/// not increase along the request, are `VersionConflict`, and nothing is stored.
pub async fn overwrite_of_a_gap_or_a_non_increasing_version_is_a_version_conflict(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::NoStream,
        vec![
            event("T", "1").with_version(1),
            event("T", "2").with_version(2),
            event("T", "5").with_version(5),
        ],
    )
    .await;
    let before = read_everything(store).await;
    let summary = description(store).await;
    let conflict = |r: Result<AppendResult>, version: Version, what: &str| match expect_kind(
        r,
        ErrorKind::VersionConflict,
        what,
    ) {
        Error::VersionConflict {
            stream,
            version: v,
            current,
        } => assert_eq!(
            (stream, v, current),
            (s.clone(), version, 5),
            "{what}: VersionConflict should carry (stream, version, current)"
        ),
        other => panic!("{what}: not Error::VersionConflict: {other:?}"),
    };
    conflict(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Any,
                vec![event("X", "1").with_version(3)],
            ))
            .await,
        3,
        "overwrite of a version in a gap",
    );
    conflict(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Any,
                vec![
                    event("X", "1").with_version(1),
                    event("X", "2").with_version(4),
                ],
            ))
            .await,
        4,
        "overwrite of a valid version then one in a gap",
    );
    conflict(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Any,
                vec![
                    event("X", "1").with_version(2),
                    event("X", "2").with_version(1),
                ],
            ))
            .await,
        1,
        "overwrite with decreasing versions",
    );
    conflict(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Any,
                vec![
                    event("X", "1").with_version(5),
                    event("X", "2").with_version(5),
                ],
            ))
            .await,
        5,
        "overwrite of one version twice",
    );
    assert_eq!(
        read_everything(store).await,
        before,
        "a refused overwrite stores nothing"
    );
    assert_eq!(description(store).await, summary);
    let ok = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![
                event("X", "1").with_version(1),
                event("X", "2").with_version(5),
            ],
        ),
    )
    .await;
    assert_eq!(
        versions(&ok.events),
        [1, 5],
        "overwrite of increasing stored versions across a gap"
    );
}

/// Under overwrite, the expectation is checked against the stream's version before the
/// request; new events get the next versions and positions `head + 1 ..` while
/// replacements keep theirs, in one commit numbered in request order.
pub async fn overwrite_mixed_with_new_events_in_one_request(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let t = StreamId::new("t");
    let seeded = seed_timed(store, &s, "e", 3).await;
    let t1 = append_ok(
        store,
        &t,
        ExpectedVersion::Any,
        vec![event("T", "0").with_id("t1")],
    )
    .await;
    let head = t1.head_position;
    expect_wrong_version(
        store
            .append(overwrite_request(
                &s,
                ExpectedVersion::Exact(4),
                vec![event("X", "1").with_version(1)],
            ))
            .await,
        &s,
        ExpectedVersion::Exact(4),
        3,
        "overwrite with an expectation the stream does not meet",
    );
    if !store.capabilities().atomic_multi_stream {
        return;
    }
    let fix1 = event("X", "1").with_version(1).with_id("x1");
    let fix3 = event("X", "3").with_version(3);
    let new_a = event("N", "4").with_id("n4");
    let new_b = event("N", "5").with_id("n5");
    let new_t = event("N", r#""t2""#).with_id("t2");
    let request = overwrite_request(
        &s,
        ExpectedVersion::Exact(3),
        vec![fix1.clone(), new_a.clone(), fix3.clone(), new_b.clone()],
    )
    .and_stream(t.clone(), ExpectedVersion::Exact(1), vec![new_t.clone()])
    .with_commit_id("mixed");
    let r = request_ok(store, request).await;
    assert_eq!(
        versions(&r.events),
        [1, 4, 3, 5, 2],
        "overwrite: replacements keep their versions, new events get the next ones"
    );
    let ps = positions(&r.events);
    assert_eq!(
        (ps[0], ps[2]),
        (seeded[0].position, seeded[2].position),
        "overwrite: replacements keep their positions"
    );
    assert!(
        ps[1] > head && ps[1] < ps[3] && ps[3] < ps[4],
        "overwrite: new events get positions after the head in request order: {ps:?}"
    );
    if store.capabilities().dense_positions {
        assert_eq!(
            [ps[1], ps[3], ps[4]],
            [head + 1, head + 2, head + 3],
            "overwrite: new events at head + 1 .."
        );
    }
    assert_eq!(
        r.head_position, ps[4],
        "overwrite: the head moves by the new events only"
    );
    assert!(
        r.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.commit_id == "mixed" && e.commit_sequence == i as u32),
        "overwrite: one commit numbered in request order: {:?}",
        r.events
    );
    assert_eq!(
        r.events[0],
        replaced_as(&seeded[0], &fix1, "mixed", 0),
        "overwrite: the first replacement"
    );
    assert_eq!(
        r.events[2],
        replaced_as(&seeded[2], &fix3, "mixed", 2),
        "overwrite: the second replacement"
    );
    assert!(
        [&r.events[1], &r.events[3], &r.events[4]]
            .iter()
            .all(|e| !e.dispatched && e.timestamp >= at(3)),
        "overwrite: new events are appended as usual"
    );
    assert_eq!(
        ids(&stream_events(store, &s, StreamRead::all()).await),
        ["x1", "e2", "e3", "n4", "n5"],
        "overwrite: the stream in version order"
    );
    let all = read_everything(store).await;
    assert_eq!(
        ids(&all),
        ["x1", "e2", "e3", "t1", "n4", "n5", "t2"],
        "overwrite: read_all in position order"
    );
    assert_eq!(
        (
            store.stream_version(&s).await.unwrap(),
            store.stream_version(&t).await.unwrap()
        ),
        (5, 2)
    );
    let d = description(store).await;
    assert_eq!(
        (d.event_count, d.head_position),
        (7, r.head_position),
        "overwrite: counts after a mixed request"
    );
}

/// Replacing version 1 with a new timestamp moves the stream's first timestamp in
/// `stream_info` and in the order of `list_streams`.
pub async fn overwrite_of_version_one_moves_the_first_timestamp(store: &dyn EventStore) {
    assert_fresh(store).await;
    let streams: Vec<StreamId> = ["a", "b", "c"].into_iter().map(StreamId::new).collect();
    for (k, s) in streams.iter().enumerate() {
        append_ok(
            store,
            s,
            ExpectedVersion::NoStream,
            vec![event("T", "1").with_timestamp(at(k as i64 + 1))],
        )
        .await;
    }
    assert_eq!(
        list_ids(store, ListStreams::default()).await,
        ["a", "b", "c"]
    );
    let info_before = store.stream_info(&streams[0]).await.unwrap().unwrap();
    request_ok(
        store,
        overwrite_request(
            &streams[0],
            ExpectedVersion::Any,
            vec![event("T", "1").with_version(1).with_timestamp(at(5))],
        ),
    )
    .await;
    let info = store.stream_info(&streams[0]).await.unwrap().unwrap();
    assert_eq!(
        info,
        annals_core::StreamInfo {
            first_timestamp: at(5),
            ..info_before
        },
        "overwrite: stream_info's first timestamp follows a replaced version 1"
    );
    assert_eq!(
        list_ids(store, ListStreams::default()).await,
        ["b", "c", "a"],
        "overwrite: list_streams orders by the new first timestamp"
    );
    assert_eq!(
        list_ids(
            store,
            ListStreams {
                reverse: true,
                ..ListStreams::default()
            }
        )
        .await,
        ["a", "c", "b"]
    );
    let page = store
        .list_streams(ListStreams::default())
        .await
        .unwrap()
        .streams;
    assert_eq!(page[2], info, "list_streams shows the same info");
}

/// After a replacement, read_stream, read_all with a type filter (the old type no
/// longer matches, the new one does), latest_event and a fresh subscription's
/// catch-up show the new content.
pub async fn overwrite_shows_in_filters_and_subscriptions(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("o-1").with_aggregate("order");
    let seeded = seed_timed(store, &s, "e", 4).await;
    let r = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![
                event("Placed", r#"{"v":2}"#).with_version(2),
                event("Shipped", r#"{"v":4}"#).with_version(4),
            ],
        ),
    )
    .await;
    let by_type = |t: &'static str| async move {
        read_ids(store, ReadAll::forward().filter(filter().event_types([t]))).await
    };
    assert_eq!(
        by_type("Counted").await,
        ["e1", "e3"],
        "overwrite: the old type no longer matches the replaced events"
    );
    assert_eq!(
        by_type("Placed").await,
        ["e2"],
        "overwrite: the new type matches"
    );
    assert_eq!(by_type("Shipped").await, ["e4"]);
    assert_eq!(
        read_ids(
            store,
            ReadAll::backward().filter(filter().aggregate("order").event_types(["Placed"]))
        )
        .await,
        ["e2"],
        "overwrite: a backward read with a type filter"
    );
    let latest = store
        .latest_event(filter().event_types(["Shipped"]))
        .await
        .unwrap()
        .expect("a latest Shipped event");
    assert_eq!(latest, r.events[1], "overwrite: latest_event");
    let mut want = seeded.clone();
    want[1] = r.events[0].clone();
    want[3] = r.events[1].clone();
    let mut backward = want.clone();
    backward.reverse();
    assert_eq!(
        stream_events(store, &s, StreamRead::backward()).await,
        backward,
        "overwrite: read_stream backward"
    );
    let mut live = store.subscribe(Subscribe::from_start());
    assert_eq!(
        take_events(&mut live, 4, "overwrite: catch-up of a fresh subscription").await,
        want,
        "overwrite: a fresh subscription's catch-up shows the replacements"
    );
    let mut placed =
        store.subscribe(Subscribe::from_start().filter(filter().event_types(["Placed"])));
    assert_eq!(
        take_events(&mut placed, 1, "overwrite: a filtered subscription").await,
        [r.events[0].clone()]
    );
    assert_quiet(&mut placed, "overwrite: a filtered subscription").await;
}

/// Overwrite is refused while frozen; without `overwrite` the same request is still a
/// `VersionConflict`; an identical overwrite sent again (same ids and content) is a
/// retry.
pub async fn overwrite_is_frozen_or_a_conflict_without_the_flag_and_retries(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    seed_timed(store, &s, "e", 2).await;
    let fix = vec![event("Fixed", "1").with_id("f1").with_version(1)];
    let plain = AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, fix.clone());
    expect_kind(
        store.append(plain).await,
        ErrorKind::VersionConflict,
        "the overwrite request without the flag",
    );
    let before = read_everything(store).await;
    store.freeze().await.unwrap();
    expect_kind(
        store
            .append(overwrite_request(&s, ExpectedVersion::Any, fix.clone()))
            .await,
        ErrorKind::Frozen,
        "overwrite while frozen",
    );
    store.unfreeze().await.unwrap();
    assert_eq!(
        read_everything(store).await,
        before,
        "a refused overwrite stores nothing"
    );
    let first = request_ok(
        store,
        overwrite_request(&s, ExpectedVersion::Any, fix.clone()),
    )
    .await;
    assert!(!first.retried);
    let head = description(store).await;
    let again = request_ok(
        store,
        overwrite_request(&s, ExpectedVersion::Any, fix.clone()),
    )
    .await;
    assert!(
        again.retried,
        "an identical overwrite sent again is a retry"
    );
    assert_eq!(
        again.events, first.events,
        "a retry returns the stored event"
    );
    assert_eq!(description(store).await, head, "a retry stores nothing");
    store.freeze().await.unwrap();
    let frozen_retry = request_ok(store, overwrite_request(&s, ExpectedVersion::Any, fix)).await;
    assert!(
        frozen_retry.retried,
        "an identical overwrite sent again while frozen is a retry"
    );
    store.unfreeze().await.unwrap();
}

/// An overwrite that repeats a stored event exactly (same id, version and content)
/// beside a new event is not a duplicate: the new event is appended and the repeated
/// one stays as it is.
pub async fn overwrite_repeating_a_stored_event_beside_a_new_one(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let stored = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![event("Opened", "1").with_id("e1")],
        ),
    )
    .await;
    let same = event("Opened", "1").with_id("e1").with_version(1);
    let result = request_ok(
        store,
        overwrite_request(
            &s,
            ExpectedVersion::Any,
            vec![same, event("Next", "2").with_id("e2")],
        ),
    )
    .await;
    assert!(!result.retried, "a request with a new event is no retry");
    assert_eq!(result.events.len(), 2);
    assert_eq!(
        (result.events[1].position, result.events[1].version),
        (2, 2),
        "the new event is appended after the repeated one"
    );
    let events = store.read_stream(&s, StreamRead::all()).await.unwrap();
    assert_eq!(events.len(), 2, "nothing stored twice");
    assert_eq!(
        (
            events[0].id.as_str(),
            events[0].position,
            events[0].payload.as_str()
        ),
        ("e1", 1, Some("1")),
        "the repeated event keeps its id, position and content"
    );
    assert_eq!(events[0].timestamp, stored.events[0].timestamp);
    // Without the flag the same request still names a stored id beside a new one.
    let plain = AppendRequest::to_stream(
        s.clone(),
        ExpectedVersion::Any,
        vec![
            event("Opened", "1").with_id("e1").with_version(1),
            event("Third", "3").with_id("e3"),
        ],
    );
    expect_kind(
        store.append(plain).await,
        ErrorKind::DuplicateEventId,
        "a stored event repeated beside a new one without overwrite",
    );
}

// ---------------------------------------------------------------------------------
// Secrets written with an append
// ---------------------------------------------------------------------------------

fn set_secret_change(id: &str, secret: &str) -> annals_core::SecretChange {
    annals_core::SecretChange::Set {
        id: id.into(),
        secret: secret.into(),
    }
}

fn delete_secret_change(id: &str) -> annals_core::SecretChange {
    annals_core::SecretChange::Delete { id: id.into() }
}

fn secret_record(idx: u64, id: &str, secret: Option<&str>) -> annals_core::Secret {
    annals_core::Secret {
        idx,
        id: id.into(),
        secret: secret.map(Into::into),
    }
}

/// A request with a secret `Set` stores the secret (at the next idx, interleaved with
/// plain `set_secret` calls) and the events in one commit; a request with only a
/// secret change is a plain secret write.
pub async fn append_with_secret_set_stores_both(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("user-1").with_aggregate("user");
    store.set_secret("a", "key-a").await.unwrap();
    let r = request_ok(
        store,
        AppendRequest::to_stream(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![event("SecretSet", r#"{"id":"b"}"#).with_id("ev-b")],
        )
        .with_secret(set_secret_change("b", "key-b")),
    )
    .await;
    assert_eq!(
        r.secret,
        Some(secret_record(1, "b", Some("key-b"))),
        "append with a secret Set: the result carries the stored secret at the next idx"
    );
    assert!(!r.retried);
    assert_eq!(
        ids(&r.events),
        ["ev-b"],
        "append with a secret Set: the events are stored"
    );
    assert_eq!(
        ids(&stream_events(store, &s, StreamRead::all()).await),
        ["ev-b"]
    );
    assert_eq!(
        store.get_secret("b").await.unwrap(),
        Some(secret_record(1, "b", Some("key-b"))),
        "append with a secret Set: get_secret finds it"
    );
    let c = store.set_secret("c", "key-c").await.unwrap();
    assert_eq!(c.idx, 2, "set_secret after a secret stored with an append");
    let only = request_ok(
        store,
        AppendRequest::default().with_secret(set_secret_change("d", "key-d")),
    )
    .await;
    assert_eq!(
        only.secret,
        Some(secret_record(3, "d", Some("key-d"))),
        "a request with only a secret change stores the secret"
    );
    assert!(
        only.events.is_empty(),
        "a secret-only request has no events"
    );
    assert_eq!(
        only.head_position, r.head_position,
        "a secret-only request does not move the head"
    );
    let plain = append_ok(store, &s, ExpectedVersion::Any, vec![event("T", "{}")]).await;
    assert_eq!(plain.secret, None, "an append without a secret change");
    assert_eq!(
        store
            .list_secrets(SecretQuery::default())
            .await
            .unwrap()
            .iter()
            .map(|x| (x.idx, x.id.as_str()))
            .collect::<Vec<_>>(),
        [(0, "a"), (1, "b"), (2, "c"), (3, "d")],
        "secrets in idx order"
    );
    let d = description(store).await;
    assert_eq!(
        (d.event_count, d.secret_count, d.set_secret_count),
        (2, 4, 4)
    );
}

/// A secret `Set` on an id in use (or used and deleted) is `SecretAlreadyExists` and
/// NO event of the request is stored.
pub async fn append_with_secret_set_on_a_used_id_stores_nothing(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    store.set_secret("used", "k").await.unwrap();
    store.set_secret("gone", "k").await.unwrap();
    store.delete_secret("gone").await.unwrap();
    let before = description(store).await;
    for id in ["used", "gone"] {
        let what = format!("append with a secret Set on the used id {id:?}");
        match expect_kind(
            store
                .append(
                    AppendRequest::to_stream(
                        s.clone(),
                        ExpectedVersion::Any,
                        vec![event("T", "1").with_id("x1")],
                    )
                    .with_secret(set_secret_change(id, "other")),
                )
                .await,
            ErrorKind::SecretAlreadyExists,
            &what,
        ) {
            Error::SecretAlreadyExists { id: got } => assert_eq!(got, id, "{what}"),
            other => panic!("{what}: not SecretAlreadyExists: {other:?}"),
        }
        assert_eq!(
            description(store).await,
            before,
            "{what}: nothing is stored"
        );
        assert!(
            read_everything(store).await.is_empty(),
            "{what}: no event is stored"
        );
    }
    assert_eq!(
        store.get_secret("gone").await.unwrap(),
        Some(secret_record(1, "gone", None)),
        "the tombstone is untouched"
    );
    assert_eq!(
        store.get_secret("used").await.unwrap(),
        Some(secret_record(0, "used", Some("k"))),
        "the secret in use is untouched"
    );
}

/// A secret `Delete` with events stores the tombstone and the events together; a
/// `Delete` of an unknown or deleted id is `NotFound` and stores nothing.
pub async fn append_with_secret_delete_stores_the_tombstone_with_the_events(
    store: &dyn EventStore,
) {
    assert_fresh(store).await;
    let s = StreamId::new("user-1");
    store.set_secret("u0", "k0").await.unwrap();
    store.set_secret("u1", "k1").await.unwrap();
    let r = request_ok(
        store,
        AppendRequest::to_stream(
            s.clone(),
            ExpectedVersion::Any,
            vec![event("Forgotten", "{}").with_id("f1")],
        )
        .with_secret(delete_secret_change("u1")),
    )
    .await;
    assert_eq!(
        r.secret,
        Some(secret_record(1, "u1", None)),
        "append with a secret Delete returns the tombstone (idx kept)"
    );
    assert_eq!(ids(&r.events), ["f1"]);
    assert_eq!(ids(&read_everything(store).await), ["f1"]);
    assert_eq!(
        store.get_secret("u1").await.unwrap(),
        Some(secret_record(1, "u1", None)),
        "append with a secret Delete: the value is erased"
    );
    let before = description(store).await;
    assert_eq!((before.secret_count, before.deleted_secret_count), (2, 1));
    for id in ["nobody", "u1"] {
        let what = format!("append with a secret Delete of {id:?}");
        match expect_kind(
            store
                .append(
                    AppendRequest::to_stream(
                        s.clone(),
                        ExpectedVersion::Any,
                        vec![event("Forgotten", "{}")],
                    )
                    .with_secret(delete_secret_change(id)),
                )
                .await,
            ErrorKind::NotFound,
            &what,
        ) {
            Error::NotFound {
                what: thing,
                id: got,
            } => {
                assert_eq!((thing, got.as_str()), ("secret", id), "{what}")
            }
            other => panic!("{what}: not NotFound: {other:?}"),
        }
        assert_eq!(description(store).await, before, "{what}: nothing stored");
    }
    let only = request_ok(
        store,
        AppendRequest::default().with_secret(delete_secret_change("u0")),
    )
    .await;
    assert_eq!(
        only.secret,
        Some(secret_record(0, "u0", None)),
        "a secret-only Delete"
    );
    assert_eq!(description(store).await.event_count, 1);
}

/// A request with a secret change is refused while frozen (even one that would
/// otherwise be a retry) and stores nothing.
pub async fn append_with_secret_while_frozen_is_frozen(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    let events = vec![event("T", "1").with_id("r1")];
    append_ok(store, &s, ExpectedVersion::Any, events.clone()).await;
    store.set_secret("u", "k").await.unwrap();
    store.freeze().await.unwrap();
    let before = description(store).await;
    let requests = [
        (
            AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, vec![event("T", "2")])
                .with_secret(set_secret_change("v", "k")),
            "Set with events",
        ),
        (
            AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, vec![event("T", "2")])
                .with_secret(delete_secret_change("u")),
            "Delete with events",
        ),
        (
            AppendRequest::default().with_secret(set_secret_change("v", "k")),
            "Set alone",
        ),
        (
            AppendRequest::default().with_secret(delete_secret_change("u")),
            "Delete alone",
        ),
        (
            AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, events)
                .with_secret(set_secret_change("v", "k")),
            "Set with the events of a stored append",
        ),
    ];
    for (request, what) in requests {
        expect_kind(
            store.append(request).await,
            ErrorKind::Frozen,
            &format!("append with a secret change while frozen ({what})"),
        );
    }
    assert_eq!(
        description(store).await,
        before,
        "frozen: nothing is stored"
    );
    assert_eq!(
        store.get_secret("u").await.unwrap(),
        Some(secret_record(0, "u", Some("k")))
    );
    assert_eq!(store.get_secret("v").await.unwrap(), None);
    store.unfreeze().await.unwrap();
}

/// When the events of a request with a secret change are refused (version conflict,
/// wrong expectation, an id of a stored event), nothing is stored and the secret id
/// stays free.
pub async fn append_with_secret_and_refused_events_stores_nothing(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("s");
    append_ok(
        store,
        &s,
        ExpectedVersion::Any,
        vec![event("T", "1").with_id("r1"), event("T", "2")],
    )
    .await;
    let before = description(store).await;
    let with_secret = |events: Vec<ProposedEvent>, expected: ExpectedVersion| {
        AppendRequest::to_stream(s.clone(), expected, events)
            .with_secret(set_secret_change("fresh", "k"))
    };
    expect_kind(
        store
            .append(with_secret(
                vec![event("T", r#""x""#).with_version(2)],
                ExpectedVersion::Any,
            ))
            .await,
        ErrorKind::VersionConflict,
        "append with a secret and a version conflict",
    );
    expect_kind(
        store
            .append(with_secret(
                vec![event("T", r#""x""#)],
                ExpectedVersion::Exact(1),
            ))
            .await,
        ErrorKind::WrongExpectedVersion,
        "append with a secret and a wrong expectation",
    );
    expect_duplicate_id(
        store
            .append(with_secret(
                vec![event("T", r#""x""#).with_id("r1")],
                ExpectedVersion::Any,
            ))
            .await,
        "r1",
        "append with a secret and the id of a stored event with other content",
    );
    // Never a retry: the same events as a stored append, with a secret change.
    expect_duplicate_id(
        store
            .append(with_secret(
                vec![event("T", "1").with_id("r1")],
                ExpectedVersion::Any,
            ))
            .await,
        "r1",
        "append with a secret and the events of a stored append",
    );
    if store.capabilities().atomic_multi_stream {
        expect_kind(
            store
                .append(
                    with_secret(vec![event("T", "3")], ExpectedVersion::Any).and_stream(
                        StreamId::new("t"),
                        ExpectedVersion::StreamExists,
                        vec![event("T", "1")],
                    ),
                )
                .await,
            ErrorKind::WrongExpectedVersion,
            "append with a secret and one refused stream",
        );
    }
    assert_eq!(
        description(store).await,
        before,
        "refused events: nothing is stored"
    );
    assert_eq!(
        store.get_secret("fresh").await.unwrap(),
        None,
        "refused events: the secret is not stored"
    );
    let r = request_ok(
        store,
        with_secret(vec![event("T", "3")], ExpectedVersion::Exact(2)),
    )
    .await;
    assert_eq!(
        r.secret,
        Some(secret_record(0, "fresh", Some("k"))),
        "the secret id stayed free and the idx unused"
    );
    assert_eq!(versions(&r.events), [3]);
}

// ---------------------------------------------------------------------------------
// Snapshot listing and import, batch dispatch marks
// ---------------------------------------------------------------------------------

fn keyed(key: &str, content: &str, k: i64) -> annals_core::KeyedSnapshot {
    annals_core::KeyedSnapshot {
        key: key.into(),
        content: content.into(),
        timestamp: at(k),
    }
}

async fn list_keys(
    store: &dyn EventStore,
    start_after: Option<&str>,
    limit: Option<u64>,
) -> Vec<String> {
    let query = annals_core::SnapshotKeyQuery {
        start_after: start_after.map(Into::into),
        limit,
    };
    let what = format!("{query:?}");
    store
        .list_snapshots(query)
        .await
        .unwrap_or_else(|e| panic!("list_snapshots {what} failed: {e}"))
        .into_iter()
        .map(|s| s.key)
        .collect()
}

/// `list_snapshots` lists keyed snapshots in bytewise key order, strictly after
/// `start_after`, at most `limit`; an empty store lists none.
pub async fn list_snapshots_in_key_order_after_a_key_with_a_limit(store: &dyn EventStore) {
    assert_fresh(store).await;
    assert!(
        list_keys(store, None, None).await.is_empty(),
        "list_snapshots of an empty store"
    );
    for key in ["b", "a", "é", "a-1", "B", "c", "a/0"] {
        store
            .save_snapshot(key, &format!("content of {key}"))
            .await
            .unwrap();
    }
    let all = ["B", "a", "a-1", "a/0", "b", "c", "é"];
    assert_eq!(
        list_keys(store, None, None).await,
        all,
        "list_snapshots in bytewise key order"
    );
    assert_eq!(
        list_keys(store, Some("a"), None).await,
        all[2..],
        "list_snapshots strictly after a stored key"
    );
    assert_eq!(
        list_keys(store, Some("a."), None).await,
        all[3..],
        "list_snapshots after a key that is not stored"
    );
    assert_eq!(list_keys(store, None, Some(2)).await, all[..2], "limit");
    assert_eq!(
        list_keys(store, Some("a-1"), Some(2)).await,
        ["a/0", "b"],
        "start_after and limit"
    );
    assert!(list_keys(store, None, Some(0)).await.is_empty(), "limit 0");
    assert!(
        list_keys(store, Some("é"), None).await.is_empty(),
        "after the last key"
    );
    let listed = store
        .list_snapshots(annals_core::SnapshotKeyQuery {
            start_after: Some("b".into()),
            limit: Some(1),
        })
        .await
        .unwrap();
    let loaded = store.load_snapshot("c").await.unwrap().unwrap();
    assert_eq!(
        listed,
        [loaded],
        "list_snapshots returns what load_snapshot does"
    );
    // Paging with the last key of each page covers every key once.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list_keys(store, after.as_deref(), Some(3)).await;
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
    }
    assert_eq!(paged, all, "pages of list_snapshots cover every key once");
    store.drop_snapshot("a").await.unwrap();
    assert_eq!(
        list_keys(store, None, Some(2)).await,
        ["B", "a-1"],
        "after a drop"
    );
}

/// `import_snapshots` stores keyed snapshots with their timestamps, replacing those
/// with the same key, and returns how many it stored; a key twice in one call is
/// `InvalidInput` and stores nothing; it works while frozen.
pub async fn import_snapshots_keeps_timestamps_and_replaces_same_keys(store: &dyn EventStore) {
    assert_fresh(store).await;
    store.save_snapshot("k1", "old").await.unwrap();
    store.save_snapshot("k0", "kept").await.unwrap();
    let kept = store.load_snapshot("k0").await.unwrap().unwrap();
    let n = store
        .import_snapshots(vec![keyed("k2", "two", 2), keyed("k1", "one", -3)])
        .await
        .unwrap_or_else(|e| panic!("import_snapshots failed: {e}"));
    assert_eq!(n, 2, "import_snapshots returns how many it stored");
    assert_eq!(
        store.load_snapshot("k1").await.unwrap(),
        Some(keyed("k1", "one", -3)),
        "import_snapshots replaces a stored key and keeps the imported timestamp"
    );
    assert_eq!(
        store.load_snapshot("k2").await.unwrap(),
        Some(keyed("k2", "two", 2)),
        "import_snapshots keeps the timestamp"
    );
    assert_eq!(
        store
            .list_snapshots(annals_core::SnapshotKeyQuery::default())
            .await
            .unwrap(),
        [kept.clone(), keyed("k1", "one", -3), keyed("k2", "two", 2)],
        "list_snapshots after an import"
    );
    let before = store
        .list_snapshots(annals_core::SnapshotKeyQuery::default())
        .await
        .unwrap();
    expect_invalid(
        store
            .import_snapshots(vec![
                keyed("k3", "three", 3),
                keyed("k1", "x", 1),
                keyed("k3", "again", 4),
            ])
            .await,
        "snapshots[2].key",
        "import_snapshots with one key twice",
    );
    expect_invalid(
        store
            .import_snapshots(vec![keyed("k4", "four", 4), keyed("", "x", 1)])
            .await,
        "snapshots[1].key",
        "import_snapshots with an empty key",
    );
    assert_eq!(
        store
            .list_snapshots(annals_core::SnapshotKeyQuery::default())
            .await
            .unwrap(),
        before,
        "a refused import_snapshots stores nothing"
    );
    assert_eq!(
        store.import_snapshots(Vec::new()).await.unwrap(),
        0,
        "an empty import"
    );
    store.freeze().await.unwrap();
    assert_eq!(
        store
            .import_snapshots(vec![keyed("k5", "five", 5)])
            .await
            .unwrap_or_else(|e| panic!("import_snapshots while frozen failed: {e}")),
        1
    );
    assert_eq!(
        store.load_snapshot("k5").await.unwrap(),
        Some(keyed("k5", "five", 5)),
        "import_snapshots while frozen"
    );
    store.unfreeze().await.unwrap();
    assert_eq!(
        description(store).await.event_count,
        0,
        "keyed snapshots are not events"
    );
}

/// `list_stream_snapshots` returns every snapshot of one stream (not of a stream with
/// the same id in another aggregate or context), oldest save first, with every field;
/// after a prune only the kept ones.
pub async fn list_stream_snapshots_lists_one_stream_oldest_save_first(store: &dyn EventStore) {
    assert_fresh(store).await;
    let s = StreamId::new("acc-1")
        .with_aggregate("account")
        .with_context("bank");
    let other_aggregate = StreamId::new("acc-1")
        .with_aggregate("ledger")
        .with_context("bank");
    let other_context = StreamId::new("acc-1").with_aggregate("account");
    assert!(
        store.list_stream_snapshots(&s).await.unwrap().is_empty(),
        "list_stream_snapshots with no snapshot"
    );
    // (id, stream, version, timestamp k): versions out of order, two at version 3,
    // timestamps disagreeing with the save order.
    let saves = [
        ("s5", &s, 5, 9),
        ("x1", &other_aggregate, 1, 1),
        ("s3a", &s, 3, 2),
        ("y1", &other_context, 1, 3),
        ("s7", &s, 7, 1),
        ("s3b", &s, 3, 8),
        ("s2", &s, 2, 4),
    ];
    let mut saved = Vec::new();
    for (id, stream, version, k) in saves {
        saved.push(
            store
                .save_stream_snapshot(stream_snapshot(
                    id,
                    stream,
                    version,
                    &format!("{{\"v\":{version}}}"),
                    k,
                ))
                .await
                .unwrap(),
        );
    }
    let of = |stream: &StreamId| -> Vec<annals_core::StreamSnapshot> {
        saved
            .iter()
            .filter(|x| x.stream == *stream)
            .cloned()
            .collect()
    };
    let listed = store.list_stream_snapshots(&s).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["s5", "s3a", "s7", "s3b", "s2"],
        "list_stream_snapshots: that stream only, oldest save first"
    );
    assert_eq!(
        listed,
        of(&s),
        "list_stream_snapshots returns every field as saved"
    );
    assert_eq!(
        store.list_stream_snapshots(&other_aggregate).await.unwrap(),
        of(&other_aggregate),
        "list_stream_snapshots of the same id in another aggregate"
    );
    assert_eq!(
        store.list_stream_snapshots(&other_context).await.unwrap(),
        of(&other_context),
        "list_stream_snapshots of the same id in another context"
    );
    assert!(store
        .list_stream_snapshots(&StreamId::new("nobody"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.prune_stream_snapshots(&s, 2).await.unwrap(), 3);
    assert_eq!(
        store
            .list_stream_snapshots(&s)
            .await
            .unwrap()
            .iter()
            .map(|x| x.id.as_str())
            .collect::<Vec<_>>(),
        ["s3b", "s2"],
        "list_stream_snapshots after a prune: the kept ones, oldest save first"
    );
    assert_eq!(
        store.list_stream_snapshots(&other_aggregate).await.unwrap(),
        of(&other_aggregate),
        "a prune leaves other streams alone"
    );
    expect_invalid(
        store.list_stream_snapshots(&StreamId::new("")).await,
        "stream.id",
        "list_stream_snapshots with an empty stream id",
    );
}

/// `mark_dispatched_at` marks exactly the events at the given positions (duplicates
/// and any order allowed), is idempotent, and changes nothing else.
pub async fn mark_dispatched_at_marks_exactly_those_positions(store: &dyn EventStore) {
    assert_fresh(store).await;
    let seeded = seed_fixture(store).await;
    let p = |k: usize| seeded[k].position;
    store
        .mark_dispatched_at(&[p(6), p(1), p(4), p(1)])
        .await
        .unwrap_or_else(|e| panic!("mark_dispatched_at failed: {e}"));
    let mut want = seeded.clone();
    for k in [1, 4, 6] {
        want[k].dispatched = true;
    }
    assert_eq!(
        read_everything(store).await,
        want,
        "mark_dispatched_at marks exactly those positions"
    );
    assert_eq!(
        read_all_dispatched_ids(store).await,
        ["p2", "p5", "p7"],
        "the dispatched filter after mark_dispatched_at"
    );
    assert_eq!(
        ids(&store.undispatched(filter(), None).await.unwrap()),
        ["p1", "p3", "p4", "p6", "p8"],
        "undispatched after mark_dispatched_at"
    );
    let before = description(store).await;
    store.mark_dispatched_at(&[p(4), p(6)]).await.unwrap();
    store.mark_dispatched_at(&[]).await.unwrap();
    assert_eq!(
        read_everything(store).await,
        want,
        "mark_dispatched_at is idempotent; an empty list marks nothing"
    );
    assert_eq!(description(store).await, before);
    store.mark_dispatched_at(&[p(7), p(0)]).await.unwrap();
    store.mark_dispatched("p3").await.unwrap();
    assert_eq!(
        ids(&store.undispatched(filter(), None).await.unwrap()),
        ["p4", "p6"]
    );
}

/// `mark_dispatched_at` with a position that holds no event (0, or above the head) is
/// `NotFound` (what `event`, id `position N`) and marks nothing.
pub async fn mark_dispatched_at_of_a_missing_position_is_not_found(store: &dyn EventStore) {
    assert_fresh(store).await;
    let missing = |r: Result<()>, position: Position, what: &str| match expect_kind(
        r,
        ErrorKind::NotFound,
        what,
    ) {
        Error::NotFound { what: thing, id } => assert_eq!(
            (thing, id),
            ("event", format!("position {position}")),
            "{what}: NotFound should name the position"
        ),
        other => panic!("{what}: not NotFound: {other:?}"),
    };
    missing(
        store.mark_dispatched_at(&[1]).await,
        1,
        "mark_dispatched_at on an empty store",
    );
    let seeded = seed_fixture(store).await;
    let head = description(store).await.head_position;
    missing(
        store.mark_dispatched_at(&[seeded[0].position, 0]).await,
        0,
        "mark_dispatched_at of position 0",
    );
    missing(
        store
            .mark_dispatched_at(&[seeded[2].position, head + 1, seeded[3].position])
            .await,
        head + 1,
        "mark_dispatched_at above the head",
    );
    assert!(
        read_everything(store).await.iter().all(|e| !e.dispatched),
        "a refused mark_dispatched_at marks nothing"
    );
}
