//! The publisher (outbox) on every backend (memory, embedded, HTTP client against a real
//! server): order, marking, the backlog before new events after a restart, retries
//! without skipping, the retry budget, filters, batches, the manual path.

// Test code panics on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_core::{EventFilter, EventStore, Position, RecordedEvent, StreamId};
use annals_projector::{
    dispatch_undispatched, publish_fn, Backoff, BoxError, Publish, Publisher, PublisherOptions,
    PublisherState,
};
use annals_testkit::wrap::Wrapped;
use common::counted::Counts;
use common::{append, within, Env, Kind};

type Sink = Arc<Mutex<Vec<Position>>>;

fn sink_publisher(sink: &Sink) -> impl Publish {
    let sink = sink.clone();
    publish_fn(move |event: RecordedEvent| {
        sink.lock().unwrap().push(event.position);
        async { Ok::<(), BoxError>(()) }
    })
}

fn options(max_attempts: Option<u32>) -> PublisherOptions {
    PublisherOptions {
        batch_size: 4,
        backoff: Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(20),
            max_attempts,
        ),
        ..PublisherOptions::default()
    }
}

fn delivered(sink: &Sink) -> Vec<Position> {
    sink.lock().unwrap().clone()
}

async fn undispatched_positions(store: &dyn EventStore) -> Vec<Position> {
    store
        .undispatched(EventFilter::default(), None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect()
}

async fn delivers_in_order_and_marks_dispatched(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    for s in ["a", "b", "c"] {
        append(&*store, &StreamId::new(s), 5).await;
    }
    let sink = Sink::default();
    let publisher = Publisher::start(store.clone(), sink_publisher(&sink), options(None));
    within(
        "the backlog",
        publisher.wait_until(|s| s.last_dispatched >= 15),
    )
    .await;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { append(&*store, &StreamId::new(format!("w{w}")), 10).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let status = within(
        "live events",
        publisher.wait_until(|s| s.last_dispatched >= 45),
    )
    .await;
    assert!(status.live);
    assert_eq!(status.dispatched, 45);
    let last = publisher.shutdown().await;
    assert_eq!(last.state, PublisherState::Stopped);
    assert_eq!(delivered(&sink), (1..=45).collect::<Vec<_>>());
    assert!(undispatched_positions(&*store).await.is_empty());
    env.finish().await;
}

async fn after_a_restart_the_backlog_goes_before_new_events(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("a"), 5).await;
    let first = Sink::default();
    let publisher = Publisher::start(store.clone(), sink_publisher(&first), options(None));
    within(
        "the first run",
        publisher.wait_until(|s| s.last_dispatched >= 5),
    )
    .await;
    publisher.shutdown().await;
    // Committed while no publisher runs: undispatched.
    append(&*store, &StreamId::new("a"), 3).await;
    append(&*store, &StreamId::new("b"), 3).await;
    let store = env.reopen(store).await;
    assert_eq!(
        undispatched_positions(&*store).await,
        (6..=11).collect::<Vec<_>>()
    );
    let second = Sink::default();
    let publisher = Publisher::start(store.clone(), sink_publisher(&second), options(None));
    append(&*store, &StreamId::new("a"), 4).await;
    within(
        "the second run",
        publisher.wait_until(|s| s.last_dispatched >= 15),
    )
    .await;
    publisher.shutdown().await;
    assert_eq!(delivered(&first), (1..=5).collect::<Vec<_>>());
    assert_eq!(delivered(&second), (6..=15).collect::<Vec<_>>());
    assert!(undispatched_positions(&*store).await.is_empty());
    env.finish().await;
}

async fn a_failing_publish_is_retried_without_skipping(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    let sink = Sink::default();
    let failures_left = Arc::new(AtomicU32::new(3));
    let publish = publish_fn({
        let sink = sink.clone();
        let failures_left = failures_left.clone();
        move |event: RecordedEvent| {
            let fail = event.position == 2
                && failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if !fail {
                sink.lock().unwrap().push(event.position);
            }
            async move {
                if fail {
                    Err::<(), BoxError>("the bus is down".into())
                } else {
                    Ok(())
                }
            }
        }
    });
    let publisher = Publisher::start(
        store.clone(),
        publish,
        PublisherOptions {
            batch_size: 1,
            ..options(None)
        },
    );
    append(&*store, &StreamId::new("s"), 6).await;
    let status = within("recovery", publisher.wait_until(|s| s.last_dispatched >= 6)).await;
    assert_eq!(status.state, PublisherState::Running);
    assert_eq!(status.retries, 3);
    let error = status.last_error.unwrap();
    assert_eq!((error.position, error.attempts), (2, 3));
    assert_eq!(error.error, "the bus is down");
    publisher.shutdown().await;
    assert_eq!(delivered(&sink), (1..=6).collect::<Vec<_>>());
    env.finish().await;
}

async fn a_bounded_budget_fails_and_leaves_the_rest_undispatched(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 6).await;
    let sink = Sink::default();
    let publish = publish_fn({
        let sink = sink.clone();
        move |event: RecordedEvent| {
            let fail = event.position == 3;
            if !fail {
                sink.lock().unwrap().push(event.position);
            }
            async move {
                if fail {
                    Err::<(), BoxError>("rejected".into())
                } else {
                    Ok(())
                }
            }
        }
    });
    let publisher = Publisher::start(
        store.clone(),
        publish,
        PublisherOptions {
            batch_size: 1,
            ..options(Some(2))
        },
    );
    let status = within(
        "the failure",
        publisher.wait_until(|s| s.state == PublisherState::Failed),
    )
    .await;
    let error = status.last_error.clone().unwrap();
    assert_eq!((error.position, error.attempts), (3, 2));
    assert_eq!(status.last_dispatched, 2);
    assert_eq!(publisher.shutdown().await.state, PublisherState::Failed);
    assert_eq!(delivered(&sink), vec![1, 2]);
    assert_eq!(undispatched_positions(&*store).await, vec![3, 4, 5, 6]);
    env.finish().await;
}

/// Records the size of every batch.
struct Batches(Arc<Mutex<Vec<Vec<Position>>>>);

#[async_trait::async_trait]
impl Publish for Batches {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.0.lock().unwrap().push(vec![event.position]);
        Ok(())
    }
    async fn publish_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap()
            .push(events.iter().map(|e| e.position).collect());
        Ok(())
    }
}

async fn batches_and_filters(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    let order = StreamId::new("o-1").with_aggregate("order");
    append(&*store, &order, 6).await; // 1..6
    append(&*store, &StreamId::new("other"), 2).await; // 7, 8
    append(&*store, &order, 4).await; // 9..12
    let batches = Arc::new(Mutex::new(Vec::new()));
    let publisher = Publisher::start(
        store.clone(),
        Batches(batches.clone()),
        PublisherOptions {
            filter: EventFilter::default().aggregate("order"),
            ..options(None)
        },
    );
    within("the orders", publisher.wait_until(|s| s.dispatched >= 10)).await;
    publisher.shutdown().await;
    let batches = batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 4),
        "{batches:?}"
    );
    let flat: Vec<Position> = batches.into_iter().flatten().collect();
    assert_eq!(flat, vec![1, 2, 3, 4, 5, 6, 9, 10, 11, 12]);
    assert_eq!(undispatched_positions(&*store).await, vec![7, 8]);
    env.finish().await;
}

async fn the_manual_path_dispatches_by_hand(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("a"), 3).await;
    append(&*store, &StreamId::new("b"), 2).await;
    let sink = Sink::default();
    // Only stream b, by hand.
    let filter = EventFilter::default().aggregate_ids(["b"]);
    let sent = dispatch_undispatched(&*store, filter.clone(), 1, &sink_publisher(&sink))
        .await
        .unwrap();
    assert_eq!(sent, 2);
    assert_eq!(delivered(&sink), vec![4, 5]);
    assert_eq!(undispatched_positions(&*store).await, vec![1, 2, 3]);
    // A second pass finds nothing.
    let sent = dispatch_undispatched(&*store, filter, 1, &sink_publisher(&sink))
        .await
        .unwrap();
    assert_eq!(sent, 0);
    // A failing publish stops the pass and marks nothing.
    let failing = publish_fn(|_| async { Err::<(), BoxError>("down".into()) });
    let err = dispatch_undispatched(&*store, EventFilter::default(), 10, &failing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("down"), "{err}");
    assert_eq!(undispatched_positions(&*store).await, vec![1, 2, 3]);
    env.finish().await;
}

on_every_backend!(
    delivers_in_order_and_marks_dispatched,
    after_a_restart_the_backlog_goes_before_new_events,
    a_failing_publish_is_retried_without_skipping,
    a_bounded_budget_fails_and_leaves_the_rest_undispatched,
    batches_and_filters,
    the_manual_path_dispatches_by_hand,
);

// How marks reach the store (memory, wrapped to count the calls).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivered_batch_is_marked_in_one_store_call() {
    let store = Arc::new(Wrapped(Counts::default()));
    append(&*store, &StreamId::new("a"), 10).await;
    let sink = Sink::default();
    let publisher = Publisher::start(store.clone(), sink_publisher(&sink), options(None));
    within(
        "the backlog",
        publisher.wait_until(|s| s.last_dispatched >= 10),
    )
    .await;
    // The backlog, in pages of the batch size: one mark per page.
    assert_eq!(
        store.batch_marks(),
        vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]]
    );
    // Live events: however the subscription groups them, one mark per delivered batch.
    append(&*store, &StreamId::new("b"), 7).await;
    let status = within(
        "live events",
        publisher.wait_until(|s| s.last_dispatched >= 17),
    )
    .await;
    assert_eq!(status.dispatched, 17);
    publisher.shutdown().await;
    let marks = store.batch_marks();
    let live: Vec<Position> = marks[3..].iter().flatten().copied().collect();
    assert_eq!(live, (11..=17).collect::<Vec<_>>());
    assert!(
        marks[3..].iter().all(|b| !b.is_empty() && b.len() <= 4),
        "{marks:?}"
    );
    assert_eq!(store.single_marks(), 0);
    assert_eq!(delivered(&sink), (1..=17).collect::<Vec<_>>());
    assert!(undispatched_positions(&*store).await.is_empty());
}

#[tokio::test]
async fn the_manual_path_marks_each_page_in_one_store_call() {
    let store = Wrapped(Counts::default());
    append(&store, &StreamId::new("a"), 5).await;
    let sink = Sink::default();
    let sent = dispatch_undispatched(&store, EventFilter::default(), 2, &sink_publisher(&sink))
        .await
        .unwrap();
    assert_eq!(sent, 5);
    assert_eq!(store.batch_marks(), vec![vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(store.single_marks(), 0);
    assert!(undispatched_positions(&store).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_batch_marks_is_marked_event_by_event() {
    let store = Arc::new(Wrapped(Counts {
        without_batch_marks: true,
        ..Counts::default()
    }));
    append(&*store, &StreamId::new("a"), 6).await;
    let sink = Sink::default();
    let publisher = Publisher::start(store.clone(), sink_publisher(&sink), options(Some(1)));
    let status = within(
        "the backlog",
        publisher.wait_until(|s| s.last_dispatched >= 6),
    )
    .await;
    assert_eq!(status.state, PublisherState::Running);
    assert_eq!(status.last_error, None);
    publisher.shutdown().await;
    assert_eq!(store.single_marks(), 6);
    assert_eq!(delivered(&sink), (1..=6).collect::<Vec<_>>());
    assert!(undispatched_positions(&*store).await.is_empty());
}

#[tokio::test]
async fn events_gone_before_their_mark_need_none_and_newer_ones_stay_undispatched() {
    let store = Arc::new(Wrapped(Counts::default()));
    append(&*store, &StreamId::new("old"), 4).await;
    // The store is emptied (and written again) while the first batch is being published:
    // its positions no longer hold its events.
    let emptied = Arc::new(AtomicU32::new(0));
    let publish = publish_fn({
        let store = store.clone();
        let emptied = emptied.clone();
        move |_| {
            let store = store.clone();
            let first = emptied.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    store.clear_events().await?;
                    append(&*store, &StreamId::new("new"), 2).await;
                }
                Ok::<(), BoxError>(())
            }
        }
    });
    let sent = dispatch_undispatched(&*store, EventFilter::default(), 4, &publish)
        .await
        .unwrap();
    assert_eq!(sent, 4);
    // The batch mark was refused (position 3 holds nothing); by id, the old events are
    // gone, and the new events at positions 1 and 2 were not marked in their place.
    assert_eq!(store.batch_marks(), vec![vec![1, 2, 3, 4]]);
    assert_eq!(store.single_marks(), 4);
    assert_eq!(undispatched_positions(&*store).await, vec![1, 2]);
}
