//! Crash safety, for real: a child process appends in a loop and prints every position
//! the store acknowledged; the parent kills it with SIGKILL at a random moment, reopens
//! the store, and checks that every acknowledged event is present and intact and that
//! positions are still dense. Beside the plain writers, one writer stores a secret with
//! each append, then overwrites the event and marks a batch of positions dispatched;
//! every acknowledged secret, replacement and dispatch mark must be there after the
//! kill. Repeated for many cycles on the same data directory.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    AppendRequest, EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, SecretChange,
    StreamId,
};
use annals_embedded::EmbeddedStore;

const CHILD_ENV: &str = "ANNALS_CRASH_CHILD_DIR";
const CYCLES: usize = 24;
const WRITERS: usize = 4;

fn payload(id: &str) -> String {
    format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(150))
}

fn secret_value(id: &str) -> String {
    format!("value of {id}")
}

/// What the child acknowledged, from its output lines.
#[derive(Default)]
struct Acks {
    /// position → the id it holds (the replacement's once the overwrite was acknowledged).
    events: HashMap<u64, String>,
    /// position → the id of an overwrite sent for it: before its acknowledgement the
    /// position may hold either id.
    overwrites: HashMap<u64, String>,
    replaced: usize,
    secrets: Vec<(String, u64)>,
    dispatched: HashSet<u64>,
}

impl Acks {
    /// Records one line of the child; returns whether it acknowledged an event.
    fn record(&mut self, line: &str) -> bool {
        let mut words = line.split(' ');
        let (Some(kind), Some(a), b) = (words.next(), words.next(), words.next()) else {
            return false;
        };
        match (kind, b) {
            ("ack", Some(id)) => {
                self.events.insert(a.parse().unwrap(), id.to_owned());
                return true;
            }
            ("overwrite", Some(id)) => {
                self.overwrites.insert(a.parse().unwrap(), id.to_owned());
            }
            ("replaced", Some(id)) => {
                self.events.insert(a.parse().unwrap(), id.to_owned());
                self.replaced += 1;
            }
            ("secret", Some(idx)) => self.secrets.push((a.to_owned(), idx.parse().unwrap())),
            ("dispatched", None) => {
                self.dispatched.insert(a.parse().unwrap());
            }
            _ => {}
        }
        false
    }
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
    // One more writer: an append with a secret, an overwrite of the event it stored,
    // and a batch of dispatch marks, each printed once acknowledged.
    tasks.push(tokio::spawn(async move {
        let stream = StreamId::new(format!("x{cycle}"));
        for n in 0.. {
            let id = format!("c{cycle}-x-n{n}");
            let secret_id = format!("c{cycle}-s{n}");
            let event = ProposedEvent::new("Appended", Json::from_raw(payload(&id))).with_id(&id);
            let request =
                AppendRequest::to_stream(stream.clone(), ExpectedVersion::Any, vec![event])
                    .with_secret(SecretChange::Set {
                        id: secret_id.clone(),
                        secret: secret_value(&secret_id),
                    });
            let result = store.append(request).await.expect("append with a secret");
            let e = &result.events[0];
            println!("ack {} {}", e.position, e.id);
            println!(
                "secret {secret_id} {}",
                result.secret.expect("the stored secret").idx
            );

            let new_id = format!("{id}-r");
            println!("overwrite {} {new_id}", e.position);
            let fix = ProposedEvent::new("Replaced", Json::from_raw(payload(&new_id)))
                .with_id(&new_id)
                .with_version(e.version);
            let request = AppendRequest::to_stream(stream.clone(), ExpectedVersion::Any, vec![fix])
                .overwriting();
            let result = store.append(request).await.expect("overwrite");
            println!(
                "replaced {} {}",
                result.events[0].position, result.events[0].id
            );

            // This event and the one before it (another writer's, usually).
            let batch: Vec<u64> = [e.position, e.position - 1]
                .into_iter()
                .filter(|p| *p > 0)
                .collect();
            store
                .mark_dispatched_at(&batch)
                .await
                .expect("mark dispatched");
            for p in batch {
                println!("dispatched {p}");
            }
        }
    }));
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn acknowledged_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acks = Acks::default();
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
                    if acks.record(&line) {
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
            if acks.record(&line) {
                cycle_acks += 1;
            }
        }
        assert!(
            deadline.is_some(),
            "cycle {cycle}: the child never opened the store"
        );
        verify(dir.path(), &acks, cycle, cycle_acks);
    }
    assert!(
        acks.events.len() > CYCLES * 10,
        "too few appends were acknowledged ({}) to mean anything",
        acks.events.len()
    );
    assert!(
        acks.replaced >= CYCLES && acks.secrets.len() >= CYCLES && acks.dispatched.len() >= CYCLES,
        "too few overwrites ({}), secrets ({}) or dispatch marks ({}) were acknowledged",
        acks.replaced,
        acks.secrets.len(),
        acks.dispatched.len()
    );
}

fn verify(dir: &std::path::Path, acks: &Acks, cycle: usize, cycle_acks: usize) {
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
        for (pos, id) in &acks.events {
            let e = page.events.get((*pos - 1) as usize).unwrap_or_else(|| {
                panic!("cycle {cycle}: acknowledged position {pos} ({id}) lost; head is {head} ({cycle_acks} acks this cycle)")
            });
            // An overwrite that was sent but not acknowledged may or may not be there.
            let in_flight = acks.overwrites.get(pos).is_some_and(|o| e.id == o.as_str());
            assert!(
                e.id == id.as_str() || in_flight,
                "cycle {cycle}: position {pos} holds {} instead of {id}",
                e.id
            );
        }
        for pos in &acks.dispatched {
            assert!(
                page.events[(*pos - 1) as usize].dispatched,
                "cycle {cycle}: position {pos} lost its acknowledged dispatch mark"
            );
        }
        for (id, idx) in &acks.secrets {
            let stored = store.get_secret(id).await.unwrap();
            let stored = stored.unwrap_or_else(|| panic!("cycle {cycle}: acknowledged secret {id} lost"));
            assert_eq!(
                (stored.idx, stored.secret.as_deref()),
                (*idx, Some(secret_value(id).as_str())),
                "cycle {cycle}: secret {id}"
            );
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
