//! Every append the server acknowledged survives a `kill -9` of the server.
//!
//! `annals serve` runs as a process on a data directory (and, in a second test, on
//! PostgreSQL); writers append through the
//! HTTP client (whose concurrent appends go out as batches) and note each append the
//! server acknowledged. The server is SIGKILLed mid-stream, several times, and
//! restarted on the same directory. At the end every acknowledged event is there, once,
//! positions are dense and every stream's versions are dense: the server acknowledges
//! only what the store made durable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_client::HttpStore;
use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId};

const CYCLES: usize = 4;
const WRITERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    kill_and_check(&["--data".into(), data.into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_appends_survive_kill_9_of_a_server_on_postgres() {
    let Some(url) = annals_testkit::services::POSTGRES.available() else {
        return;
    };
    let schema = support::Schema::fresh(&url);
    kill_and_check(&[
        "--postgres".into(),
        url.into(),
        "--postgres-schema".into(),
        schema.name().into(),
    ])
    .await;
}

/// Kills a server on `on` mid-stream [`CYCLES`] times, then checks the store.
async fn kill_and_check(on: &[OsString]) {
    // (stream, id) of every acknowledged event.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for cycle in 0..CYCLES {
        let (mut server, url) = support::serve(on);
        let store = Arc::new(
            HttpStore::new(&url, "crash")
                .unwrap()
                .with_max_appends_in_flight(2),
        );
        if cycle == 0 {
            store.create().await.unwrap();
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, acked) = (store.clone(), acked.clone());
                tokio::spawn(async move {
                    let stream = format!("w{w}");
                    for n in 0.. {
                        let id = format!("c{cycle}-w{w}-n{n}");
                        let events = vec![ProposedEvent::new(
                            "Wrote",
                            Json::from_raw(format!(r#"{{"n":{n}}}"#)),
                        )
                        .with_id(id.clone())];
                        let appended = store
                            .append_to_stream(&StreamId::new(&stream), ExpectedVersion::Any, events)
                            .await;
                        match appended {
                            Ok(_) => acked.lock().unwrap().push((stream.clone(), id)),
                            // The server is gone: this writer is done for this cycle.
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        // Let the writers get going, then kill the server mid-stream.
        tokio::time::sleep(Duration::from_millis(200 + 150 * cycle as u64)).await;
        let before = acked.lock().unwrap().len();
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for w in writers {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("a writer hung after the server died")
                .unwrap();
        }
        assert!(
            before > 0,
            "cycle {cycle}: nothing was acknowledged before the kill"
        );
    }

    let (mut server, url) = support::serve(on);
    let store = HttpStore::new(&url, "crash").unwrap();
    let mut events = Vec::new();
    let mut read = ReadAll::forward().limit(10_000);
    loop {
        let page = store.read_all(read.clone()).await.unwrap();
        let end = page.end || page.events.is_empty();
        events.extend(page.events);
        if end {
            break;
        }
        read = read.cursor(page.next_cursor);
    }
    server.kill().unwrap();
    server.wait().unwrap();

    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions have a gap");
    }
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    for e in &events {
        let v = versions.entry(e.stream.id.clone()).or_insert(0);
        assert_eq!(
            e.version,
            *v + 1,
            "stream {} has a version gap",
            e.stream.id
        );
        *v = e.version;
        assert!(ids.insert(e.id.clone()), "event {} is stored twice", e.id);
    }
    let acked = acked.lock().unwrap();
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(_, id)| !ids.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after kill -9: {lost:?}"
    );
    eprintln!(
        "serve_crash: {} acknowledged over {CYCLES} kills, {} stored",
        acked.len(),
        events.len()
    );
}
