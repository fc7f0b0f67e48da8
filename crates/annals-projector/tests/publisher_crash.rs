//! The outbox never loses an event across `kill -9`: a child process appends events to
//! an embedded store while a publisher delivers them to a file (one fsynced line per
//! delivered event); the parent kills the child with SIGKILL at a random moment, several
//! times, restarting it on the same store and file; finally a publisher drains what is
//! left. Every committed event must be in the file at least once, and per stream the
//! deliveries must come in version order.

// Test code panics on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    EventFilter, EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, RecordedEvent, StreamId,
};
use annals_embedded::EmbeddedStore;
use annals_projector::{BoxError, Publish, Publisher, PublisherOptions};
use common::crash::{read_runs, run_and_kill, DurableLog, Xorshift};

const CHILD_ENV: &str = "ANNALS_PUBLISHER_CRASH_DIR";
const CYCLES: usize = 8;
const WRITERS: usize = 3;

/// Delivers to a [`DurableLog`]: one fsynced line per delivered event,
/// `stream version position id`.
struct FileSink(DurableLog);

impl FileSink {
    fn open(path: &Path) -> FileSink {
        FileSink(DurableLog::open(path))
    }
}

#[async_trait::async_trait]
impl Publish for FileSink {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.publish_batch(std::slice::from_ref(event)).await
    }

    async fn publish_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        let records: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    e.stream.id.clone(),
                    e.version.to_string(),
                    e.position.to_string(),
                    e.id.to_string(),
                ]
            })
            .collect();
        self.0.append(&records)?;
        Ok(())
    }
}

fn publisher_options() -> PublisherOptions {
    PublisherOptions {
        batch_size: 8,
        ..PublisherOptions::default()
    }
}

/// The child: only does something when started by `no_event_is_lost_across_kill_9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let cycle: usize = std::env::var("ANNALS_PUBLISHER_CRASH_CYCLE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let store: Arc<dyn EventStore> =
        Arc::new(EmbeddedStore::open(dir.join("store")).expect("child opens the store"));
    let sink = FileSink::open(&dir.join("sink.log"));
    let _publisher = Publisher::start(store.clone(), sink, publisher_options());
    // libtest may have printed "test publisher_crash_child ... " on this line already.
    println!("\nready");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let count = if n % 4 == 0 { 2 } else { 1 };
                let events = (0..count)
                    .map(|k| {
                        ProposedEvent::new("Appended", Json::null())
                            .with_id(format!("c{cycle}-w{w}-n{n}-k{k}"))
                    })
                    .collect();
                let result = store
                    .append_to_stream(
                        &StreamId::new(format!("w{w}")),
                        ExpectedVersion::Any,
                        events,
                    )
                    .await
                    .expect("append");
                for e in &result.events {
                    println!("ack {} {}", e.position, e.id);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn no_event_is_lost_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut random = Xorshift(0x2545_f491_4f6c_dd1d);
    for cycle in 0..CYCLES {
        let delay = Duration::from_millis(50 + random.next() % 350);
        let started = run_and_kill(
            "publisher_crash_child",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("ANNALS_PUBLISHER_CRASH_CYCLE", cycle.to_string()),
            ],
            delay,
            |line| {
                if let Some((_, id)) = line.strip_prefix("ack ").and_then(|r| r.split_once(' ')) {
                    acknowledged.push(id.to_owned());
                }
                line == "ready"
            },
        );
        assert!(started, "cycle {cycle}: the child never started");
    }

    let deliveries_before_drain = parse_log(&dir.path().join("sink.log")).deliveries.len();
    assert!(
        deliveries_before_drain > CYCLES * 10,
        "too few deliveries ({deliveries_before_drain}) before the kills to mean anything"
    );

    // The last restart: a publisher drains every undispatched event.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let committed = rt.block_on(async {
        let store: Arc<dyn EventStore> =
            Arc::new(EmbeddedStore::open(dir.path().join("store")).unwrap());
        let publisher = Publisher::start(
            store.clone(),
            FileSink::open(&dir.path().join("sink.log")),
            publisher_options(),
        );
        tokio::time::timeout(Duration::from_secs(60), publisher.wait_until(|s| s.live))
            .await
            .expect("the drain finishes");
        publisher.shutdown().await;
        assert!(store
            .undispatched(EventFilter::default(), None)
            .await
            .unwrap()
            .is_empty());
        let all = store.read_all(ReadAll::forward()).await.unwrap().events;
        store.close().await.unwrap();
        all
    });

    let log = parse_log(&dir.path().join("sink.log"));
    assert_eq!(log.starts, CYCLES + 1);
    // Every committed event was delivered at least once, with its stream and version.
    let delivered: HashSet<(String, u64, u64, String)> = log.deliveries.iter().cloned().collect();
    for e in &committed {
        let key = (e.stream.id.clone(), e.version, e.position, e.id.to_string());
        assert!(
            delivered.contains(&key),
            "event {key:?} was committed but never delivered"
        );
    }
    let committed_ids: HashSet<&str> = committed.iter().map(|e| &*e.id).collect();
    for id in &acknowledged {
        assert!(
            committed_ids.contains(id.as_str()),
            "acknowledged {id} is not in the store"
        );
    }
    // Per stream, in order: a version is first delivered only after the one before it.
    let mut seen: HashMap<String, HashSet<u64>> = HashMap::new();
    for (stream, version, _, _) in &log.deliveries {
        let versions = seen.entry(stream.clone()).or_default();
        assert!(
            *version == 1 || versions.contains(&(version - 1)),
            "{stream} v{version} was delivered before v{}",
            version - 1
        );
        versions.insert(*version);
    }
    // Within one run of the publisher, each stream's versions only go up.
    for run in &log.runs {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (stream, version, _, _) in run {
            let previous = last.insert(stream.as_str(), *version).unwrap_or(0);
            assert!(
                *version > previous,
                "{stream}: v{version} after v{previous} in one run"
            );
        }
    }
    eprintln!(
        "{} events committed, {} acknowledged, {} deliveries ({} before the drain), {} runs",
        committed.len(),
        acknowledged.len(),
        log.deliveries.len(),
        deliveries_before_drain,
        log.starts
    );
}

struct Log {
    starts: usize,
    deliveries: Vec<(String, u64, u64, String)>,
    runs: Vec<Vec<(String, u64, u64, String)>>,
}

/// Reads the sink file (see [`read_runs`]).
fn parse_log(path: &Path) -> Log {
    let runs: Vec<Vec<(String, u64, u64, String)>> = read_runs(path)
        .into_iter()
        .map(|run| {
            run.into_iter()
                .map(|f| {
                    assert_eq!(f.len(), 4, "not a delivery: {f:?}");
                    (
                        f[0].clone(),
                        f[1].parse().unwrap(),
                        f[2].parse().unwrap(),
                        f[3].clone(),
                    )
                })
                .collect()
        })
        .collect();
    Log {
        starts: runs.len(),
        deliveries: runs.iter().flatten().cloned().collect(),
        runs,
    }
}
