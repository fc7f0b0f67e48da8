//! Crash safety, for real: a child process appends in a loop (several tasks, single
//! events and batches of three) and prints every event the store acknowledged; the
//! parent kills it with SIGKILL at a random moment, then checks through a fresh
//! connection that every acknowledged event is present and intact, that no batch is
//! half-written, that positions are still dense, and that the store takes appends
//! again (the dead process's open transaction no longer holds the head row).
//! Repeated for several cycles on the same store.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId};

const STORE_ENV: &str = "ANNALS_PG_CRASH_STORE";
const CYCLE_ENV: &str = "ANNALS_PG_CRASH_CYCLE";
const CYCLES: usize = 8;
const WRITERS: usize = 4;

fn payload(id: &str) -> String {
    format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(150))
}

/// The child: only does something when started by the test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(name) = std::env::var(STORE_ENV) else {
        return;
    };
    let cycle: usize = std::env::var(CYCLE_ENV).unwrap().parse().unwrap();
    let store = Arc::new(support::database().await.open_store(&name).await.unwrap());
    // libtest may have printed "test crash_child ... " on this line already.
    println!("\nready");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let base = format!("c{cycle}-w{w}-n{n}");
                // Batches of three and single events: group commit and atomicity.
                let count = if n % 3 == 0 { 3 } else { 1 };
                let events = (0..count)
                    .map(|k| {
                        let id = format!("{base}-k{k}");
                        ProposedEvent::new("Appended", Json::from_raw(payload(&id))).with_id(id)
                    })
                    .collect();
                let stream = StreamId::new(format!("w{w}"));
                let result = store
                    .append_to_stream(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
                for e in &result.events {
                    println!("ack {} {}", e.position, e.id);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn parse_ack(line: &str) -> Option<(u64, String)> {
    let rest = line.strip_prefix("ack ")?;
    let (pos, id) = rest.split_once(' ')?;
    Some((pos.parse().ok()?, id.to_owned()))
}

#[test]
fn acknowledged_appends_survive_kill_9_of_the_appending_process() {
    if !support::available() {
        return;
    }
    let name = support::unique_store_name("crash");
    let _schema = support::SchemaUse::new(Some(name.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async { support::database().await.open_store(&name).await.unwrap() });
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(STORE_ENV, &name)
            .env(CYCLE_ENV, cycle.to_string())
            .env(support::SCHEMA_ENV, support::schema())
            .env(annals_testkit::services::POSTGRES.env(), support::url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A random moment between 50 and 650 ms after the store is open.
        let delay = Duration::from_millis(50 + seed % 600);
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
                Ok(line) => acknowledged.extend(parse_ack(&line)),
                Err(_) => break,
            }
            if deadline.is_none() && started.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines printed before the kill were acknowledged too.
        reader.join().unwrap();
        while let Ok(line) = rx.try_recv() {
            acknowledged.extend(parse_ack(&line));
        }
        assert!(
            deadline.is_some(),
            "cycle {cycle}: the child never opened the store"
        );
        rt.block_on(verify(&name, &acknowledged, cycle));
    }
    support::say(&format!(
        "crash test: {} acknowledged events over {CYCLES} kill -9 cycles, all present",
        acknowledged.len()
    ));
    assert!(
        acknowledged.len() > CYCLES * 10,
        "too few appends were acknowledged ({}) to mean anything",
        acknowledged.len()
    );
}

async fn verify(name: &str, acknowledged: &[(u64, String)], cycle: usize) {
    let store = support::database().await.open_store(name).await.unwrap();
    let page = store.read_all(ReadAll::forward()).await.unwrap();
    let head = page.head_position;
    assert_eq!(
        page.events.len() as u64,
        head,
        "cycle {cycle}: event count != head"
    );
    for (i, e) in page.events.iter().enumerate() {
        assert_eq!(
            e.position,
            i as u64 + 1,
            "cycle {cycle}: positions are not dense"
        );
        assert_eq!(
            e.payload.as_str(),
            Some(payload(&e.id).as_str()),
            "cycle {cycle}: event {} is torn",
            e.id
        );
    }
    for (pos, id) in acknowledged {
        let e = page.events.get((*pos - 1) as usize).unwrap_or_else(|| {
            panic!("cycle {cycle}: acknowledged position {pos} ({id}) lost; head is {head}")
        });
        assert_eq!(
            e.id,
            id.as_str(),
            "cycle {cycle}: position {pos} holds another event"
        );
    }
    // Batches are all-or-nothing: a batch's first event implies the other two.
    let ids: HashSet<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    for e in &page.events {
        if let Some(base) = e.id.strip_suffix("-k0") {
            let n: u64 = base.rsplit("-n").next().unwrap().parse().unwrap();
            if n % 3 == 0 {
                for k in 1..3 {
                    assert!(
                        ids.contains(format!("{base}-k{k}").as_str()),
                        "cycle {cycle}: batch {base} is half-written"
                    );
                }
            }
        }
    }
    // The killed process's transaction is gone: the head row takes appends again.
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        store.append_to_stream(
            &StreamId::new("after-crash"),
            ExpectedVersion::Any,
            vec![{
                let id = format!("check-{cycle}");
                ProposedEvent::new("Checked", Json::from_raw(payload(&id))).with_id(id)
            }],
        ),
    )
    .await
    .expect("the head row is still locked after the writer died")
    .unwrap();
    assert_eq!(r.events[0].position, head + 1);
    store.close().await.unwrap();
}
