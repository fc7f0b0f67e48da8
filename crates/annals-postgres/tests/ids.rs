//! Event ids the store generated are not in the id index (they carry their position);
//! caller-supplied ids are. Both kinds must behave the same way through every path
//! that finds an event by id: idempotent retries, duplicate detection, dispatch marks.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_core::append::{generated_event_id, position_of_generated_id};
use annals_core::{
    ErrorKind, ExpectedVersion, Json, ProposedEvent, StreamId, StreamRead, Timestamp,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_ids_are_found_like_caller_supplied_ones() {
    let Some(test_store) = support::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let s = StreamId::new("s");
    // Enough appends that later ones take the one-statement path.
    let mut first = Vec::new();
    for i in 0..5 {
        let r = store
            .append_to_stream(
                &s,
                ExpectedVersion::Exact(i),
                vec![ProposedEvent::new("T", Json::from_raw(format!("{i}")))],
            )
            .await
            .unwrap();
        first.extend(r.events);
    }
    let e = &first[2];
    assert_eq!(position_of_generated_id(&e.id), Some(e.position));

    // Re-sending an event with the id the store gave it is an idempotent retry.
    let resend = ProposedEvent::new("T", Json::from_raw("2"))
        .with_id(e.id.to_string())
        .with_version(e.version);
    let retry = store
        .append_to_stream(&s, ExpectedVersion::Any, vec![resend])
        .await
        .unwrap();
    assert!(retry.retried, "a re-sent generated id is a retry");
    assert_eq!(retry.events, vec![e.clone()]);

    // The same id for other content is a duplicate, and nothing is stored.
    let other = ProposedEvent::new("T", Json::from_raw("99")).with_id(e.id.to_string());
    let err = store
        .append_to_stream(&s, ExpectedVersion::Any, vec![other])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateEventId, "{err}");
    assert_eq!(store.stream_version(&s).await.unwrap(), 5);

    // Dispatch marks find generated ids; a near miss of one is unknown.
    store.mark_dispatched(&e.id).await.unwrap();
    store.mark_dispatched(&e.id).await.unwrap();
    let events = store.read_stream(&s, StreamRead::all()).await.unwrap();
    assert!(events[2].dispatched && !events[1].dispatched);
    let mut near = e.id.to_string();
    let last = near.pop().unwrap();
    near.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        store.mark_dispatched(&near).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // An id of the generated form made elsewhere (it carries another position) is an
    // ordinary caller-supplied id: stored, indexed, unique.
    let foreign = generated_event_id(1_000, Timestamp::from_millis(1_700_000_000_000));
    let r = store
        .append_to_stream(
            &s,
            ExpectedVersion::Exact(5),
            vec![ProposedEvent::new("T", Json::from_raw("5")).with_id(foreign.clone())],
        )
        .await
        .unwrap();
    assert_eq!(r.events[0].id, foreign.as_str());
    let again = store
        .append_to_stream(
            &s,
            ExpectedVersion::Exact(6),
            vec![ProposedEvent::new("T", Json::from_raw("5")).with_id(foreign.clone())],
        )
        .await
        .unwrap();
    assert!(again.retried, "re-sending the foreign-form id is a retry");
    let dup = store
        .append_to_stream(
            &StreamId::new("t"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new("T", Json::from_raw("7")).with_id(foreign.clone())],
        )
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::DuplicateEventId, "{dup}");
    store.mark_dispatched(&foreign).await.unwrap();
    assert_eq!(store.describe().await.unwrap().event_count, 6);
    store.close().await.unwrap();
}
