//! The projector on every backend (memory, embedded, HTTP client against a real server):
//! checkpoints survive restarts, order, retries, the retry budget, isolation of a
//! failing projection, flushing, reset, filters.

// Test code panics on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_core::{EventFilter, EventStore, Position, RecordedEvent, StreamId};
use annals_projector::projector::checkpoint_key;
use annals_projector::{
    flush_after, projection_fn, Backoff, BoxError, Projection, ProjectionState, Projector,
    ProjectorOptions,
};
use common::{append, within, Env, Kind};

type Seen = Arc<Mutex<Vec<Position>>>;

/// A projection that records every position it handles.
fn recorder(seen: &Seen) -> impl Projection {
    let seen = seen.clone();
    projection_fn(move |event: RecordedEvent| {
        seen.lock().unwrap().push(event.position);
        async { Ok::<(), BoxError>(()) }
    })
}

fn positions(seen: &Seen) -> Vec<Position> {
    seen.lock().unwrap().clone()
}

fn fast_retries(max_attempts: u32) -> ProjectorOptions {
    ProjectorOptions {
        batch_size: 4,
        backoff: Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(20),
            Some(max_attempts),
        ),
    }
}

async fn stored_checkpoint(store: &dyn EventStore, name: &str) -> Option<String> {
    store
        .load_snapshot(&checkpoint_key(name))
        .await
        .unwrap()
        .map(|s| s.content)
}

async fn checkpoint_resumes_after_restart(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("a"), 6).await;
    append(&*store, &StreamId::new("b"), 4).await;

    let seen = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector.add("p", recorder(&seen)).await.unwrap();
    projector.start().await.unwrap();
    within(
        "the first run",
        projector.wait_until("p", |s| s.checkpoint >= 10),
    )
    .await
    .unwrap();
    let last = projector.shutdown().await;
    assert_eq!(last[0].state, ProjectionState::Stopped);
    assert_eq!(positions(&seen), (1..=10).collect::<Vec<_>>());
    drop(projector);

    // The application restarts; events were appended while it was down.
    let store = env.reopen(store).await;
    assert_eq!(
        stored_checkpoint(&*store, "p").await.as_deref(),
        Some(r#"{"position":10}"#)
    );
    append(&*store, &StreamId::new("a"), 5).await;
    let again = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector.add("p", recorder(&again)).await.unwrap();
    projector.start().await.unwrap();
    within(
        "the second run",
        projector.wait_until("p", |s| s.checkpoint >= 15),
    )
    .await
    .unwrap();
    // Live after the restart too.
    append(&*store, &StreamId::new("c"), 2).await;
    let status = within(
        "live events",
        projector.wait_until("p", |s| s.checkpoint >= 17),
    )
    .await
    .unwrap();
    assert!(status.live);
    projector.shutdown().await;
    assert_eq!(positions(&again), (11..=17).collect::<Vec<_>>());
    drop(store);
    env.finish().await;
}

async fn events_arrive_in_position_order_under_concurrent_writers(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("before"), 10).await;
    let seen = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector.add("p", recorder(&seen)).await.unwrap();
    projector.start().await.unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { append(&*store, &StreamId::new(format!("w{w}")), 25).await })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    within(
        "every event",
        projector.wait_until("p", |s| s.checkpoint >= 110),
    )
    .await
    .unwrap();
    projector.shutdown().await;
    assert_eq!(positions(&seen), (1..=110).collect::<Vec<_>>());
    env.finish().await;
}

async fn a_failing_handler_is_retried_until_it_succeeds(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 5).await;
    let seen = Seen::default();
    let failures_left = Arc::new(AtomicU32::new(2));
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector
        .add(
            "p",
            projection_fn({
                let seen = seen.clone();
                let failures_left = failures_left.clone();
                move |event: RecordedEvent| {
                    let fail = event.position == 3
                        && failures_left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    if !fail {
                        seen.lock().unwrap().push(event.position);
                    }
                    async move {
                        if fail {
                            Err::<(), BoxError>("the read model is busy".into())
                        } else {
                            Ok(())
                        }
                    }
                }
            }),
        )
        .await
        .unwrap();
    projector.start().await.unwrap();
    let status = within("recovery", projector.wait_until("p", |s| s.checkpoint >= 5))
        .await
        .unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.retries, 2);
    let error = status.last_error.unwrap();
    assert_eq!(error.position, 3);
    assert_eq!(error.attempts, 2);
    assert_eq!(error.error, "the read model is busy");
    projector.shutdown().await;
    assert_eq!(positions(&seen), vec![1, 2, 3, 4, 5]);
    env.finish().await;
}

async fn an_exhausted_budget_stops_the_projection_and_spares_the_others(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 6).await;
    let broken = Arc::new(AtomicBool::new(true));
    let bad_seen = Seen::default();
    let good_seen = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(3));
    projector
        .add(
            "bad",
            projection_fn({
                let broken = broken.clone();
                let seen = bad_seen.clone();
                move |event: RecordedEvent| {
                    let fail = event.position == 4 && broken.load(Ordering::SeqCst);
                    if !fail {
                        seen.lock().unwrap().push(event.position);
                    }
                    async move {
                        if fail {
                            Err::<(), BoxError>(format!("cannot project {}", event.id).into())
                        } else {
                            Ok(())
                        }
                    }
                }
            }),
        )
        .await
        .unwrap();
    projector.add("good", recorder(&good_seen)).await.unwrap();
    projector.start().await.unwrap();

    let failed = within(
        "the failure",
        projector.wait_until("bad", |s| s.state == ProjectionState::Failed),
    )
    .await
    .unwrap();
    let error = failed.last_error.clone().unwrap();
    assert_eq!(error.position, 4);
    assert_eq!(error.attempts, 3);
    assert!(error.error.starts_with("cannot project "), "{error:?}");
    assert_eq!(failed.checkpoint, 3, "the failing event is never skipped");
    assert_eq!(
        stored_checkpoint(&*store, "bad").await.as_deref(),
        Some(r#"{"position":3}"#)
    );

    // The healthy projection goes on, also live.
    append(&*store, &StreamId::new("s"), 2).await;
    within("good", projector.wait_until("good", |s| s.checkpoint >= 8))
        .await
        .unwrap();
    assert_eq!(positions(&good_seen), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        projector.status("bad").await.unwrap().state,
        ProjectionState::Failed
    );

    // Once fixed, a restart continues with the event that failed.
    broken.store(false, Ordering::SeqCst);
    projector.start_projection("bad").await.unwrap();
    let status = within(
        "bad again",
        projector.wait_until("bad", |s| s.checkpoint >= 8),
    )
    .await
    .unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    projector.shutdown().await;
    assert_eq!(positions(&bad_seen), (1..=8).collect::<Vec<_>>());
    env.finish().await;
}

async fn flush_runs_before_every_checkpoint_and_on_its_interval(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 9).await;
    let pending = Seen::default();
    let written = Seen::default();
    let flushes = Arc::new(AtomicU32::new(0));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let handler = projection_fn({
        let pending = pending.clone();
        let written = written.clone();
        let store = store.clone();
        let violations = violations.clone();
        move |event: RecordedEvent| {
            pending.lock().unwrap().push(event.position);
            let written = written.clone();
            let store = store.clone();
            let violations = violations.clone();
            async move {
                // Whatever is checkpointed must already be written by a flush.
                if let Some(snapshot) = store.load_snapshot(&checkpoint_key("p")).await? {
                    let v: serde_json::Value = serde_json::from_str(&snapshot.content)?;
                    let checkpoint = v["position"].as_u64().unwrap();
                    let flushed = written.lock().unwrap().last().copied().unwrap_or(0);
                    if checkpoint > flushed {
                        violations.lock().unwrap().push(format!(
                            "checkpoint {checkpoint} ahead of the flushed position {flushed}"
                        ));
                    }
                }
                Ok::<(), BoxError>(())
            }
        }
    });
    let projection = flush_after(
        handler,
        {
            let pending = pending.clone();
            let written = written.clone();
            let flushes = flushes.clone();
            move || {
                let rows: Vec<Position> = std::mem::take(&mut *pending.lock().unwrap());
                written.lock().unwrap().extend(rows);
                flushes.fetch_add(1, Ordering::SeqCst);
                async { Ok::<(), BoxError>(()) }
            }
        },
        Duration::from_millis(30),
    );
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector.add("p", projection).await.unwrap();
    projector.start().await.unwrap();
    within("catch-up", projector.wait_until("p", |s| s.checkpoint >= 9))
        .await
        .unwrap();
    let after_catch_up = flushes.load(Ordering::SeqCst);
    assert!(after_catch_up >= 1);

    // One live event and nothing else: only the interval can flush and checkpoint it.
    append(&*store, &StreamId::new("s"), 1).await;
    let status = within(
        "the interval flush",
        projector.wait_until("p", |s| s.checkpoint >= 10),
    )
    .await
    .unwrap();
    assert!(status.live);
    assert!(flushes.load(Ordering::SeqCst) > after_catch_up);
    assert_eq!(positions(&written), (1..=10).collect::<Vec<_>>());

    // Stopping flushes what is pending and checkpoints it.
    append(&*store, &StreamId::new("s"), 3).await;
    within("handling", projector.wait_until("p", |s| s.handled >= 13))
        .await
        .unwrap();
    let last = projector.stop("p").await.unwrap();
    assert_eq!(last.checkpoint, 13);
    assert_eq!(positions(&written), (1..=13).collect::<Vec<_>>());
    assert!(pending.lock().unwrap().is_empty());
    assert_eq!(violations.lock().unwrap().clone(), Vec::<String>::new());
    env.finish().await;
}

/// A projection whose flush and reset hooks are its own (no interval): flushed before
/// every checkpoint, i.e. after every batch.
struct Table {
    rows: Seen,
    pending: Vec<Position>,
    flushed_at_checkpoint: Arc<Mutex<Vec<usize>>>,
    resets: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Projection for Table {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.pending.push(event.position);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), BoxError> {
        self.flushed_at_checkpoint
            .lock()
            .unwrap()
            .push(self.pending.len());
        self.rows.lock().unwrap().append(&mut self.pending);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), BoxError> {
        self.rows.lock().unwrap().clear();
        self.pending.clear();
        self.resets.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn reset_rebuilds_from_position_zero(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 10).await;
    let rows = Seen::default();
    let resets = Arc::new(AtomicU32::new(0));
    let flushed = Arc::new(Mutex::new(Vec::new()));
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector
        .add(
            "table",
            Table {
                rows: rows.clone(),
                pending: Vec::new(),
                flushed_at_checkpoint: flushed.clone(),
                resets: resets.clone(),
            },
        )
        .await
        .unwrap();
    projector.start().await.unwrap();
    within(
        "first build",
        projector.wait_until("table", |s| s.checkpoint >= 10),
    )
    .await
    .unwrap();
    assert_eq!(positions(&rows), (1..=10).collect::<Vec<_>>());
    // Pages of 4: flushed with 4, 4 and 2 rows pending, each before its checkpoint.
    assert_eq!(flushed.lock().unwrap().clone(), vec![4, 4, 2]);

    projector.reset("table").await.unwrap();
    assert_eq!(resets.load(Ordering::SeqCst), 1);
    let status = within(
        "rebuild",
        projector.wait_until("table", |s| s.checkpoint >= 10),
    )
    .await
    .unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    projector.shutdown().await;
    assert_eq!(positions(&rows), (1..=10).collect::<Vec<_>>());
    env.finish().await;
}

async fn a_filter_selects_events_and_the_checkpoint_passes_the_rest(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    let order = StreamId::new("o-1").with_aggregate("order");
    append(&*store, &order, 2).await; // 1, 2
    append(&*store, &StreamId::new("other"), 3).await; // 3..5
    append(&*store, &order, 1).await; // 6
    append(&*store, &StreamId::new("other"), 4).await; // 7..10
    let seen = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(5));
    projector
        .add_filtered(
            "orders",
            EventFilter::default().aggregate("order"),
            recorder(&seen),
        )
        .await
        .unwrap();
    projector.start().await.unwrap();
    within(
        "catch-up",
        projector.wait_until("orders", |s| s.checkpoint >= 10),
    )
    .await
    .unwrap();
    append(&*store, &order, 1).await; // 11
    within(
        "live",
        projector.wait_until("orders", |s| s.checkpoint >= 11),
    )
    .await
    .unwrap();
    projector.shutdown().await;
    assert_eq!(positions(&seen), vec![1, 2, 6, 11]);
    env.finish().await;
}

async fn a_corrupted_checkpoint_is_reported_not_ignored(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 2).await;
    store
        .save_snapshot(&checkpoint_key("p"), "not json")
        .await
        .unwrap();
    let seen = Seen::default();
    let projector = Projector::with_options(store.clone(), fast_retries(2));
    projector.add("p", recorder(&seen)).await.unwrap();
    projector.start().await.unwrap();
    let status = within(
        "the failure",
        projector.wait_until("p", |s| s.state == ProjectionState::Failed),
    )
    .await
    .unwrap();
    let error = status.last_error.unwrap().error;
    assert!(error.contains("annals.projector/p"), "{error}");
    assert!(positions(&seen).is_empty());
    env.finish().await;
}

/// While one projection waits between retries (an endless budget, a slow backoff), the
/// others catch up and follow new events live: a failing handler never holds them up.
async fn a_retrying_projection_does_not_hold_up_the_others(kind: Kind) {
    let env = Env::new(kind).await;
    let store = env.open().await;
    append(&*store, &StreamId::new("s"), 6).await;
    let good_seen = Seen::default();
    let projector = Projector::with_options(
        store.clone(),
        ProjectorOptions {
            batch_size: 4,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(1), None),
        },
    );
    projector
        .add(
            "stuck",
            projection_fn(|event: RecordedEvent| async move {
                if event.position >= 2 {
                    Err::<(), BoxError>("the read model is down".into())
                } else {
                    Ok(())
                }
            }),
        )
        .await
        .unwrap();
    projector.add("good", recorder(&good_seen)).await.unwrap();
    projector.start().await.unwrap();
    within(
        "the first failure",
        projector.wait_until("stuck", |s| s.retries >= 1),
    )
    .await
    .unwrap();
    append(&*store, &StreamId::new("s"), 3).await;
    within(
        "good",
        projector.wait_until("good", |s| s.live && s.checkpoint >= 9),
    )
    .await
    .unwrap();
    assert_eq!(positions(&good_seen), (1..=9).collect::<Vec<_>>());
    let stuck = projector.status("stuck").await.unwrap();
    assert_eq!(stuck.state, ProjectionState::Running, "still retrying");
    assert!(stuck.checkpoint <= 1, "{stuck:?}");
    assert_eq!(stuck.last_error.unwrap().position, 2);
    projector.shutdown().await;
    env.finish().await;
}

on_every_backend!(
    checkpoint_resumes_after_restart,
    events_arrive_in_position_order_under_concurrent_writers,
    a_failing_handler_is_retried_until_it_succeeds,
    an_exhausted_budget_stops_the_projection_and_spares_the_others,
    a_retrying_projection_does_not_hold_up_the_others,
    flush_runs_before_every_checkpoint_and_on_its_interval,
    reset_rebuilds_from_position_zero,
    a_filter_selects_events_and_the_checkpoint_passes_the_rest,
    a_corrupted_checkpoint_is_reported_not_ignored,
);

#[tokio::test]
async fn names_are_checked_and_unknown_ones_are_not_found() {
    let store: Arc<dyn EventStore> = Arc::new(annals_core::MemoryStore::new());
    let projector = Projector::new(store);
    let seen = Seen::default();
    let err = projector.add("", recorder(&seen)).await.unwrap_err();
    assert_eq!(err.kind(), annals_core::ErrorKind::InvalidInput);
    projector.add("p", recorder(&seen)).await.unwrap();
    let err = projector.add("p", recorder(&seen)).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    for err in [
        projector.status("q").await.unwrap_err(),
        projector.stop("q").await.unwrap_err(),
        projector.reset("q").await.unwrap_err(),
        projector.start_projection("q").await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), annals_core::ErrorKind::NotFound);
    }
    assert_eq!(
        projector.status("p").await.unwrap().state,
        ProjectionState::Stopped
    );
}
