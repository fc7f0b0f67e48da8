//! Crash safety, for real: a child process appends in a loop and prints every position
//! the store acknowledged; the parent kills it with SIGKILL at a random moment, reopens
//! the store, and checks that every acknowledged event is present and intact and that
//! positions are still dense. Repeated for many cycles on the same data directory.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId};
use annals_embedded::EmbeddedStore;

const CHILD_ENV: &str = "ANNALS_CRASH_CHILD_DIR";
const CYCLES: usize = 24;
const WRITERS: usize = 4;

fn payload(id: &str) -> String {
    format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(150))
}

/// The child: only does something when started by `acknowledged_appends_survive_kill_9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cycle: usize = std::env::var("ANNALS_CRASH_CYCLE")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let store = Arc::new(EmbeddedStore::open(&dir).expect("child opens the store"));
    // libtest may have printed "test crash_child ... " on this line already.
    println!("\nready");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("c{cycle}-w{w}-n{n}");
                // Mix single events and small batches so group commit and multi-event
                // atomicity are both exercised.
                let count = if n % 3 == 0 { 3 } else { 1 };
                let events = (0..count)
                    .map(|k| {
                        let id = format!("{id}-k{k}");
                        ProposedEvent::new("Appended", Json::from_raw(payload(&id))).with_id(id)
                    })
                    .collect();
                let stream = StreamId::new(format!("w{w}"));
                let result = store
                    .append_to_stream(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
                for e in &result.events {
                    // One line per acknowledged event; stdout is line-buffered by println.
                    println!("ack {} {}", e.position, e.id);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("ANNALS_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Random kill moment between 20 and 320 ms after the store is ready.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(20 + seed % 300);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut deadline: Option<Instant> = None;
        let started = Instant::now();
        let mut cycle_acks = 0;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(30),
            };
            match rx.recv_timeout(wait) {
                Ok(line) if line == "ready" => deadline = Some(Instant::now() + delay),
                Ok(_) if deadline.is_none() && started.elapsed() > Duration::from_secs(30) => break,
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("ack ") {
                        let (pos, id) = rest.split_once(' ').unwrap();
                        acknowledged.push((pos.parse().unwrap(), id.to_owned()));
                        cycle_acks += 1;
                    }
                }
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines printed before the kill are acknowledged too.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            if let Some(rest) = line.strip_prefix("ack ") {
                let (pos, id) = rest.split_once(' ').unwrap();
                acknowledged.push((pos.parse().unwrap(), id.to_owned()));
                cycle_acks += 1;
            }
        }
        assert!(
            deadline.is_some(),
            "cycle {cycle}: the child never opened the store"
        );
        verify(dir.path(), &acknowledged, cycle, cycle_acks);
    }
    assert!(
        acknowledged.len() > CYCLES * 10,
        "too few appends were acknowledged ({}) to mean anything",
        acknowledged.len()
    );
}

fn verify(dir: &std::path::Path, acknowledged: &[(u64, String)], cycle: usize, cycle_acks: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir).expect("reopen after kill -9");
        let page = store.read_all(ReadAll::forward()).await.unwrap();
        let head = page.head_position;
        assert_eq!(page.events.len() as u64, head, "cycle {cycle}: event count != head");
        for (i, e) in page.events.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1, "cycle {cycle}: positions are not dense");
            assert_eq!(
                e.payload.as_str(),
                Some(payload(&e.id).as_str()),
                "cycle {cycle}: event {} is torn",
                e.id
            );
        }
        for (pos, id) in acknowledged {
            let e = page.events.get((*pos - 1) as usize).unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged position {pos} ({id}) lost; head is {head} ({cycle_acks} acks this cycle)")
            });
            assert_eq!(&e.id, id, "cycle {cycle}: position {pos} holds another event");
        }
        // Batches are all-or-nothing: every batch of 3 is present entirely or not at all.
        let ids: std::collections::HashSet<&str> =
            page.events.iter().map(|e| e.id.as_str()).collect();
        for e in &page.events {
            if let Some(base) = e.id.strip_suffix("-k0") {
                if e.id.contains("-n") && base.rsplit("-n").next().is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n % 3 == 0)) {
                    for k in 1..3 {
                        assert!(ids.contains(format!("{base}-k{k}").as_str()), "cycle {cycle}: batch {base} is half-written");
                    }
                }
            }
        }
        store.close().await.unwrap();
    });
}
