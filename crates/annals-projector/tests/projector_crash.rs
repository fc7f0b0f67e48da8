//! A projection resumes from its durable checkpoint across `kill -9`: a child process
//! runs a projector over an embedded store (a backlog to catch up on, and a writer
//! appending meanwhile) whose handler writes each handled position to a file (one
//! fsynced line per event); the parent kills it with SIGKILL mid-run, several times,
//! restarting it on the same store and file; finally the parent runs the projector until
//! its checkpoint reaches the head. Every event must have been handled at least once,
//! each run must handle positions in increasing order starting right after the
//! checkpoint stored before it, and a checkpoint may never be ahead of what was handled.

// Test code panics on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals_core::{EventStore, ExpectedVersion, Json, Position, ProposedEvent, StreamId};
use annals_embedded::EmbeddedStore;
use annals_projector::projector::checkpoint_key;
use annals_projector::{projection_fn, BoxError, Projector, ProjectorOptions};
use common::crash::{read_runs, run_and_kill, DurableLog, Xorshift};

const CHILD_ENV: &str = "ANNALS_PROJECTOR_CRASH_DIR";
const CYCLES: usize = 3;
/// Events in the store before the first run: a catch-up, not only live events.
const BACKLOG: usize = 300;
const PROJECTION: &str = "crash";

/// Small batches: many checkpoints per run, so a kill lands between two of them.
fn projector_options() -> ProjectorOptions {
    ProjectorOptions {
        batch_size: 16,
        ..ProjectorOptions::default()
    }
}

/// A projector whose one projection writes each handled position to `log` (fsynced),
/// then prints `handled <position>`.
async fn start_projector(store: Arc<dyn EventStore>, log: DurableLog) -> Projector {
    let log = Arc::new(log);
    let projector = Projector::with_options(store, projector_options());
    projector
        .add(
            PROJECTION,
            projection_fn(move |event| {
                let result = log.append(&[vec![event.position.to_string()]]);
                if result.is_ok() {
                    println!("handled {}", event.position);
                }
                async move { result.map_err(BoxError::from) }
            }),
        )
        .await
        .unwrap();
    projector.start().await.unwrap();
    projector
}

/// The child: only does something when started by `projection_resumes_across_kill_9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let cycle = std::env::var("ANNALS_PROJECTOR_CRASH_CYCLE").unwrap_or_default();
    let store: Arc<dyn EventStore> =
        Arc::new(EmbeddedStore::open(dir.join("store")).expect("child opens the store"));
    let _projector =
        start_projector(store.clone(), DurableLog::open(&dir.join("handled.log"))).await;
    // Live events while the backlog is worked off, until the kill.
    for n in 0.. {
        store
            .append_to_stream(
                &StreamId::new("live"),
                ExpectedVersion::Any,
                vec![ProposedEvent::new("Appended", Json::null())
                    .with_id(format!("c{cycle}-n{n}"))],
            )
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The durable checkpoint (0 when none) and the head of the store in `dir`.
async fn checkpoint_and_head(store: &dyn EventStore) -> (Position, Position) {
    let checkpoint = match store
        .load_snapshot(&checkpoint_key(PROJECTION))
        .await
        .unwrap()
    {
        None => 0,
        Some(s) => {
            let v: serde_json::Value = serde_json::from_str(&s.content).unwrap();
            v["position"].as_u64().unwrap()
        }
    };
    (checkpoint, store.describe().await.unwrap().head_position)
}

fn open(dir: &Path) -> Arc<dyn EventStore> {
    Arc::new(EmbeddedStore::open(dir.join("store")).unwrap())
}

#[test]
fn projection_resumes_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(dir.path());
        common::append(&*store, &StreamId::new("backlog"), BACKLOG).await;
        store.close().await.unwrap();
    });

    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    // The checkpoint stored before each run (the last entry: before the final run).
    let mut checkpoints: Vec<Position> = Vec::new();
    for cycle in 0..CYCLES {
        let checkpoint = rt.block_on(async {
            let store = open(dir.path());
            let (checkpoint, _) = checkpoint_and_head(&*store).await;
            store.close().await.unwrap();
            checkpoint
        });
        checkpoints.push(checkpoint);
        // Kill once this run has handled a few dozen events, plus a little.
        let handled_before_kill = 40 + random.next() % 120;
        let delay = Duration::from_millis(random.next() % 60);
        let mut handled = 0;
        let killed_mid_run = run_and_kill(
            "projector_crash_child",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("ANNALS_PROJECTOR_CRASH_CYCLE", cycle.to_string()),
            ],
            delay,
            |line| {
                if line.starts_with("handled ") {
                    handled += 1;
                }
                handled >= handled_before_kill
            },
        );
        assert!(
            killed_mid_run,
            "cycle {cycle}: the child handled only {handled} events"
        );
    }

    // The last restart: the projector runs until its checkpoint reaches the head.
    let (final_checkpoint, head) = rt.block_on(async {
        let store = open(dir.path());
        let (checkpoint, _) = checkpoint_and_head(&*store).await;
        checkpoints.push(checkpoint);
        // Events appended while it was down: the final run always has work.
        common::append(&*store, &StreamId::new("offline"), 5).await;
        let head = store.describe().await.unwrap().head_position;
        let projector = start_projector(
            store.clone(),
            DurableLog::open(&dir.path().join("handled.log")),
        )
        .await;
        common::within(
            "the final run to reach the head",
            projector.wait_until(PROJECTION, |s| s.checkpoint >= head),
        )
        .await
        .unwrap();
        projector.shutdown().await;
        let after = checkpoint_and_head(&*store).await;
        store.close().await.unwrap();
        after
    });
    assert_eq!(final_checkpoint, head, "the final checkpoint is the head");

    let runs: Vec<Vec<Position>> = read_runs(&dir.path().join("handled.log"))
        .into_iter()
        .map(|run| run.iter().map(|r| r[0].parse().unwrap()).collect())
        .collect();
    assert_eq!(runs.len(), CYCLES + 1);
    for (n, (run, checkpoint)) in runs.iter().zip(&checkpoints).enumerate() {
        // Each run starts right after the checkpoint stored before it ...
        assert_eq!(
            run.first().copied(),
            Some(checkpoint + 1),
            "run {n} did not resume from its checkpoint {checkpoint}"
        );
        // ... and handles positions in increasing order.
        assert!(
            run.windows(2).all(|w| w[0] < w[1]),
            "run {n} handled positions out of order: {run:?}"
        );
        if n > 0 {
            // A run after a kill resumes from a durable checkpoint, not from 0, and that
            // checkpoint is never ahead of what the killed run handled.
            let previous_last = *runs[n - 1].last().unwrap();
            assert!(*checkpoint > 0, "run {n} started from 0");
            assert!(
                *checkpoint <= previous_last,
                "checkpoint {checkpoint} is ahead of the last handled position {previous_last}"
            );
        }
    }
    // Every event was handled at least once.
    let handled: HashSet<Position> = runs.iter().flatten().copied().collect();
    let missing: Vec<Position> = (1..=head).filter(|p| !handled.contains(p)).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    let total: usize = runs.iter().map(Vec::len).sum();
    eprintln!(
        "{head} events, {total} handled in {} runs, checkpoints before each run {checkpoints:?}",
        runs.len()
    );
}
