//! Replacements (overwrite) and secrets written with events, where the PostgreSQL
//! backend differs from the others: requests planned together in one group commit,
//! events whose ids the store generated (no index entry), and appenders of other
//! processes that remember the head.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_core::append::position_of_generated_id;
use annals_core::{
    AppendRequest, AppendResult, ErrorKind, EventStore, ExpectedVersion, Json, MemoryStore,
    ProposedEvent, ReadAll, Result, SecretChange, SecretQuery, StreamId, StreamRead, Timestamp,
};

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

fn event(id: Option<&str>, payload: &str, ms: i64) -> ProposedEvent {
    let e = ProposedEvent::new("T", Json::from_raw(format!("{payload:?}"))).with_timestamp(at(ms));
    match id {
        Some(id) => e.with_id(id),
        None => e,
    }
}

fn to(stream: &str, events: Vec<ProposedEvent>) -> AppendRequest {
    AppendRequest::to_stream(StreamId::new(stream), ExpectedVersion::Any, events)
}

fn set(id: &str) -> SecretChange {
    SecretChange::Set {
        id: id.into(),
        secret: format!("value of {id}"),
    }
}

/// The requests of the concurrent batch. Every one is an overwrite or carries a
/// secret, so every one is planned on the locked path, in queue order, like the
/// reference runs them one by one.
fn batch() -> Vec<AppendRequest> {
    let requests = vec![
        // A new stream, then a replacement of its first event in the same group.
        to("c", vec![event(Some("c1"), "1", 100)]).overwriting(),
        to("c", vec![event(Some("c1x"), "2", 101).with_version(1)]).overwriting(),
        // A stored first event replaced under a new id (freeing "a1"), plus a new event.
        to(
            "a",
            vec![
                event(Some("a1x"), "3", 102).with_version(1),
                event(Some("a4"), "4", 103),
            ],
        )
        .overwriting(),
        // The freed id, taken by a new event later in the group.
        to("b", vec![event(Some("a1"), "5", 104)]).overwriting(),
        // A replacement without an id keeps the old one; a secret comes with it.
        to("a", vec![event(None, "6", 105).with_version(2)])
            .overwriting()
            .with_secret(set("s1")),
        // The secret set earlier in the group, deleted.
        to("b", vec![event(Some("b-next"), "7", 106)])
            .with_secret(SecretChange::Delete { id: "s1".into() }),
        // Its id is used: refused, nothing written.
        to("b", vec![event(Some("b-never"), "8", 107)]).with_secret(set("s1")),
        // A secret stored before the group, deleted.
        AppendRequest::default().with_secret(SecretChange::Delete { id: "old".into() }),
        // A retry of an event written earlier in the group.
        to("b", vec![event(Some("a1"), "5", 104)]).overwriting(),
        // An id still in use.
        to("d", vec![event(Some("a2"), "9", 108)]).overwriting(),
        // The replacement replaced again (it keeps "a1x").
        to("a", vec![event(None, "10", 109).with_version(1)]).overwriting(),
        // A version never stored.
        to("a", vec![event(None, "11", 110).with_version(9)])
            .overwriting()
            .with_secret(set("s2")),
        // A replacement after a refused request, with a new secret.
        to("b", vec![event(None, "12", 111).with_version(1)])
            .overwriting()
            .with_secret(set("s3")),
    ];
    requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.with_commit_id(format!("k{i}")))
        .collect()
}

async fn setup(store: &dyn EventStore) {
    store.set_secret("old", "old value").await.unwrap();
    let a = vec![
        event(Some("a1"), "a1", 1),
        event(Some("a2"), "a2", 2),
        event(None, "a3", 3),
    ];
    store
        .append(to("a", a).with_commit_id("setup-a"))
        .await
        .unwrap();
    store
        .append(to("b", vec![event(Some("b1"), "b1", 4)]).with_commit_id("setup-b"))
        .await
        .unwrap();
}

/// Answers with generated ids (random) shown as `generated`.
fn comparable(results: Vec<Result<AppendResult>>) -> Vec<String> {
    results
        .into_iter()
        .map(|r| {
            let r = r.map(|mut r| {
                for e in &mut r.events {
                    if position_of_generated_id(&e.id) == Some(e.position) {
                        e.id = "generated".into();
                    }
                }
                r
            });
            format!("{r:?}")
        })
        .collect()
}

async fn state(store: &dyn EventStore) -> Vec<String> {
    let page = store.read_all(ReadAll::default()).await.unwrap();
    let mut out: Vec<String> = page
        .events
        .into_iter()
        .map(|mut e| {
            if position_of_generated_id(&e.id) == Some(e.position) {
                e.id = "generated".into();
            }
            format!("{e:?}")
        })
        .collect();
    for s in ["a", "b", "c", "d"] {
        let info = store.stream_info(&StreamId::new(s)).await.unwrap();
        out.push(format!("{info:?}"));
    }
    let secrets = store
        .list_secrets(SecretQuery {
            include_deleted: true,
            ..SecretQuery::default()
        })
        .await
        .unwrap();
    out.push(format!("{secrets:?}"));
    let mut d = store.describe().await.unwrap();
    d.bytes_on_disk = None;
    out.push(format!("{d:?}"));
    for id in ["a1", "a1x", "a2", "c1", "c1x", "b-never"] {
        let marked = store.mark_dispatched(id).await.map_err(|e| e.kind());
        out.push(format!("mark {id}: {marked:?}"));
    }
    out
}

// A current-thread runtime: the appender runs only once the test task waits, so every
// request of the batch is queued before it takes them.
#[tokio::test]
async fn a_group_answers_and_stores_like_its_requests_one_by_one() {
    let Some(test_store) = support::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let reference = MemoryStore::new();
    setup(store.as_ref()).await;
    setup(&reference).await;

    let mut expected = Vec::new();
    for r in batch() {
        expected.push(reference.append(r).await);
    }
    let results = futures::future::join_all(batch().into_iter().map(|r| store.append(r))).await;
    assert_eq!(comparable(results), comparable(expected));
    assert_eq!(state(store.as_ref()).await, state(&reference).await);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_events_are_found_by_their_new_ids_only() {
    let Some(test_store) = support::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let s = StreamId::new("s");
    let first = store
        .append(to(
            "s",
            vec![
                event(None, "1", 1),
                event(None, "2", 2),
                event(Some("c3"), "3", 3),
                event(Some("c4"), "4", 4),
            ],
        ))
        .await
        .unwrap()
        .events;
    let (g1, g2) = (first[0].id.to_string(), first[1].id.to_string());
    store.mark_dispatched(&g1).await.unwrap();

    let fix = vec![
        // generated id kept
        event(None, "1b", 11).with_version(1),
        // generated id replaced by a caller id
        event(Some("c2"), "2b", 12).with_version(2),
        // caller id kept
        event(None, "3b", 13).with_version(3),
        // caller id replaced by another
        event(Some("c4b"), "4b", 14).with_version(4),
    ];
    let r = store
        .append(
            AppendRequest::to_stream(s.clone(), ExpectedVersion::Exact(4), fix.clone())
                .overwriting(),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = r.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [g1.as_str(), "c2", "c3", "c4b"]);
    assert!(r.events[0].dispatched, "the dispatch mark is kept");

    let stored = store.read_stream(&s, StreamRead::all()).await.unwrap();
    assert_eq!(stored, r.events, "what is read is what the append answered");

    // The same request again, every id named, is a retry: every id is found where it
    // now is.
    let named: Vec<ProposedEvent> = fix
        .into_iter()
        .zip(&r.events)
        .map(|(e, stored)| e.with_id(stored.id.to_string()))
        .collect();
    let again = store
        .append(AppendRequest::to_stream(s.clone(), ExpectedVersion::Any, named).overwriting())
        .await
        .unwrap();
    assert!(again.retried);
    assert_eq!(again.events, r.events);

    for id in [g1.as_str(), "c2", "c3", "c4b"] {
        store.mark_dispatched(id).await.unwrap();
    }
    for freed in [g2.as_str(), "c4"] {
        let err = store.mark_dispatched(freed).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{freed}: {err}");
    }
    // Freed ids may be used again.
    let reuse = store
        .append(to(
            "t",
            vec![event(Some("c4"), "5", 20), event(Some(&g2), "6", 21)],
        ))
        .await
        .unwrap();
    assert_eq!(reuse.events[1].id, g2.as_str());
    store.mark_dispatched(&g2).await.unwrap();
    store.mark_dispatched("c4").await.unwrap();
    let all = store.read_all(ReadAll::default()).await.unwrap().events;
    assert!(all.iter().all(|e| e.dispatched), "{all:?}");
    assert_eq!(store.describe().await.unwrap().event_count, 6);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_the_timestamp_of_a_replaced_head_event() {
    if !support::available() {
        return;
    }
    let name = support::unique_store_name("ow");
    let _guard = support::SchemaUse::new(Some(name.clone()));
    // Two databases: two appenders of one store, as in two processes.
    let here = support::database().await.open_store(&name).await.unwrap();
    let there = support::database().await.open_store(&name).await.unwrap();
    let s = StreamId::new("s");
    // Enough appends that `here` writes with its one-statement path.
    for i in 0..3 {
        here.append(to(
            "s",
            vec![ProposedEvent::new("T", Json::from_raw(format!("{i}")))],
        ))
        .await
        .unwrap();
    }
    let later = Timestamp::from_millis(Timestamp::now().as_millis() + 3_600_000);
    let fix = ProposedEvent::new("T", Json::from_raw("9"))
        .with_version(3)
        .with_timestamp(later);
    there
        .append(
            AppendRequest::to_stream(s.clone(), ExpectedVersion::Exact(3), vec![fix]).overwriting(),
        )
        .await
        .unwrap();
    assert_eq!(
        here.describe().await.unwrap().last_event_timestamp,
        Some(later)
    );
    // Timestamps never go back along positions: the next event is raised to it.
    let next = here
        .append(to("s", vec![ProposedEvent::new("T", Json::from_raw("4"))]))
        .await
        .unwrap();
    assert_eq!(next.events[0].position, 4);
    assert!(next.events[0].timestamp >= later, "{next:?}");
    here.close().await.unwrap();
    there.close().await.unwrap();
}
