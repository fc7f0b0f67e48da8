//! Global order across processes, for real.
//!
//! - Two OS processes append concurrently to one store (each with several tasks, so
//!   each process also group-commits) while a subscriber in a third process checks
//!   that every position arrives exactly once, in order. The processes are this test
//!   binary, started again with a role in the environment.
//! - The out-of-order commit case: writer A holds the store's head row in an open
//!   transaction (as another Annals process does between its lock and its commit);
//!   writer B's append must wait until A commits, and a reader running meanwhile never
//!   sees a gap and never skips A's events.
//! - A subscriber in another process is woken by the writer's `NOTIFY` alone (its poll
//!   of the head row is an hour apart), and by the poll alone when notifications are off.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    AppendRequest, ErrorKind, EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId,
    Subscribe,
};
use futures::StreamExt;
use sqlx::Connection;

const ROLE_ENV: &str = "ANNALS_PG_PROCESS_ROLE";
const STORE_ENV: &str = "ANNALS_PG_PROCESS_STORE";
/// Writer processes, tasks per writer process, appends per task.
const WRITERS: usize = 2;
const TASKS: usize = 4;
const APPENDS: usize = 300;
/// Successful appends of one event per writer process to the stream they share.
const SHARED_APPENDS: usize = 50;
const DEADLINE: Duration = Duration::from_secs(180);

/// Events per append of task `t`'s append `n`: 1, 2 or 3.
fn batch(t: usize, n: usize) -> usize {
    1 + (t + n) % 3
}

fn total_events() -> usize {
    let per_process: usize = (0..TASKS)
        .map(|t| (0..APPENDS).map(|n| batch(t, n)).sum::<usize>())
        .sum::<usize>()
        + SHARED_APPENDS;
    WRITERS * per_process
}

fn shared_stream() -> StreamId {
    StreamId::new("shared").with_aggregate("race")
}

/// The children: only do something when started by a test below with a role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var(STORE_ENV).expect("store name");
    if let Some(("waker", wake)) = role.split_once(':') {
        return woken_subscriber(&name, wake).await;
    }
    let store = Arc::new(
        support::database()
            .await
            .open_store(&name)
            .await
            .expect("child opens the store"),
    );
    match role.split_once(':') {
        Some(("writer", w)) => writer(store, w.parse().unwrap()).await,
        _ if role == "subscriber" => subscriber(store).await,
        _ => panic!("unknown role {role}"),
    }
}

async fn writer(store: Arc<annals_postgres::PostgresStore>, w: usize) {
    // libtest may have printed "test process_child ... " on this line already.
    println!("\nready");
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("p{w}-t{t}")).with_aggregate("load");
            let mut version = 0u64;
            for n in 0..APPENDS {
                let events = (0..batch(t, n))
                    .map(|k| {
                        ProposedEvent::new("Appended", Json::from_raw(format!(r#"{{"n":{n}}}"#)))
                            .with_id(format!("p{w}-t{t}-n{n}-k{k}"))
                    })
                    .collect::<Vec<_>>();
                let count = events.len() as u64;
                store
                    .append_to_stream(&stream, ExpectedVersion::Exact(version), events)
                    .await
                    .unwrap_or_else(|e| panic!("writer {w} task {t} append {n}: {e}"));
                version += count;
            }
        }));
    }
    // Optimistic concurrency across processes: both processes race on one stream.
    let shared = shared_stream();
    let mut won = 0;
    let mut conflicts = 0;
    while won < SHARED_APPENDS {
        let version = store.stream_version(&shared).await.unwrap();
        let e = ProposedEvent::new("Raced", Json::from_raw(format!(r#"{{"w":{w}}}"#)))
            .with_id(format!("shared-p{w}-{won}"));
        match store
            .append_to_stream(&shared, ExpectedVersion::Exact(version), vec![e])
            .await
        {
            Ok(_) => won += 1,
            Err(e) if e.kind() == ErrorKind::WrongExpectedVersion => conflicts += 1,
            Err(e) => panic!("writer {w}: shared append failed: {e}"),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("\ndone {w} conflicts={conflicts}");
}

async fn subscriber(store: Arc<annals_postgres::PostgresStore>) {
    let total = total_events();
    let mut live = store.subscribe(Subscribe::from_start());
    println!("\nready");
    let mut next = 1u64;
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let started = Instant::now();
    while (next as usize) <= total {
        let e = tokio::time::timeout(Duration::from_secs(60), live.next())
            .await
            .unwrap_or_else(|_| panic!("subscriber: nothing for 60 s after position {}", next - 1))
            .expect("the subscription ended")
            .expect("the subscription failed");
        assert_eq!(
            e.position, next,
            "subscriber: position {} arrived when {next} was due (a gap or a repeat)",
            e.position
        );
        let v = versions.entry(e.stream.clone()).or_insert(0);
        assert_eq!(
            e.version,
            *v + 1,
            "subscriber: stream {} skipped a version",
            e.stream
        );
        *v = e.version;
        next += 1;
    }
    // Nothing beyond what the writers wrote.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(700), live.next()).await {
        panic!("subscriber: an unexpected event after the last one: {extra:?}");
    }
    println!(
        "\nok {} in {:.1}s",
        next - 1,
        started.elapsed().as_secs_f64()
    );
}

/// Live events the wake-up test appends, one at a time.
const WAKE_EVENTS: usize = 12;

/// A subscriber that can be woken only one way: `notify` (LISTEN/NOTIFY, with the
/// poll of the head row an hour apart) or `poll` (no notifications, a 100 ms poll).
/// Prints `got <position> <micros since the append's timestamp>` per event.
async fn woken_subscriber(name: &str, wake: &str) {
    let options = match wake {
        "notify" => annals_postgres::PostgresOptions {
            poll_interval: Duration::from_secs(3600),
            ..support::options()
        },
        "poll" => annals_postgres::PostgresOptions {
            notifications: false,
            poll_interval: Duration::from_millis(100),
            ..support::options()
        },
        other => panic!("unknown wake-up {other}"),
    };
    let db = annals_postgres::PostgresDatabase::connect(&support::url(), options)
        .await
        .expect("child connects");
    let store = db.open_store(name).await.expect("child opens the store");
    let mut live = store.subscribe(Subscribe::from_start());
    println!("\nready");
    for _ in 0..WAKE_EVENTS {
        let e = live
            .next()
            .await
            .expect("the subscription ended")
            .expect("the subscription failed");
        let lag = annals_core::Timestamp::now().as_millis() - e.timestamp.as_millis();
        println!("\ngot {} {lag}", e.position);
    }
}

/// Appends one event at a time from this process and waits for the subscriber in
/// the child to report it; returns the reported lags in milliseconds.
fn ping_pong(name: &str, wake: &str) -> Vec<i64> {
    let mut child = KillOnDrop(spawn_child(&format!("waker:{wake}"), name));
    let rx = lines(&mut child.0);
    wait_for(&rx, "ready", "the subscriber");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(async { support::database().await.open_store(name).await.unwrap() });
    let mut lags = Vec::new();
    for n in 1..=WAKE_EVENTS {
        let appended = rt.block_on(async {
            store
                .append_to_stream(
                    &StreamId::new(format!("wake-{wake}")),
                    ExpectedVersion::Any,
                    vec![ProposedEvent::new("Woke", Json::null())],
                )
                .await
                .unwrap()
        });
        let position = appended.events[0].position;
        // The notify subscriber polls once an hour: only a notification can wake it
        // within the deadline.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("got ") => {
                    let mut parts = line.split(' ').skip(1);
                    let got: u64 = parts.next().unwrap().parse().unwrap();
                    assert_eq!(got, position, "{wake}: append {n} arrived out of order");
                    lags.push(parts.next().unwrap().parse().unwrap());
                    break;
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "{wake}: the subscriber in the other process was not woken for position {position}"
                ),
            }
        }
    }
    rt.block_on(store.close()).unwrap();
    assert!(
        child.0.wait().unwrap().success(),
        "the {wake} subscriber failed"
    );
    lags
}

/// A child process killed when the test fails before waiting for it (an orphan would
/// keep the test run's output pipe open).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A subscriber in another process is woken by the writer's NOTIFY, not by polling:
/// its poll runs once an hour, yet every append reaches it. The poll-only path (for
/// poolers without LISTEN) is checked the same way.
#[test]
fn a_subscriber_in_another_process_is_woken_by_notify_without_polling() {
    if !support::available() {
        return;
    }
    for wake in ["notify", "poll"] {
        let name = support::unique_store_name(&format!("wake-{wake}"));
        let _schema = support::SchemaUse::new(Some(name.clone()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { support::database().await.open_store(&name).await.unwrap() });
        drop(rt);
        let mut lags = ping_pong(&name, wake);
        lags.sort_unstable();
        assert_eq!(lags.len(), WAKE_EVENTS);
        support::say(&format!(
            "{wake}: wake-up lag across processes, median {} ms, max {} ms",
            lags[lags.len() / 2],
            lags[lags.len() - 1]
        ));
    }
}

fn spawn_child(role: &str, store: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "process_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(STORE_ENV, store)
        .env(support::SCHEMA_ENV, support::schema())
        .env(annals_testkit::services::POSTGRES.env(), support::url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Collects a child's output lines on a thread.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &std::sync::mpsc::Receiver<String>, prefix: &str, who: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(_) => panic!("{who} never printed {prefix:?}"),
        }
    }
}

#[test]
fn two_processes_append_while_a_third_subscribes_and_sees_every_position_once_in_order() {
    if !support::available() {
        return;
    }
    let name = support::unique_store_name("procs");
    let _schema = support::SchemaUse::new(Some(name.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Create the schema and the store before the children race to.
    rt.block_on(async { support::database().await.open_store(&name).await.unwrap() });

    let mut sub = spawn_child("subscriber", &name);
    let sub_lines = lines(&mut sub);
    wait_for(&sub_lines, "ready", "the subscriber");
    let mut writers: Vec<(Child, std::sync::mpsc::Receiver<String>)> = (0..WRITERS)
        .map(|w| {
            let mut c = spawn_child(&format!("writer:{w}"), &name);
            let l = lines(&mut c);
            (c, l)
        })
        .collect();
    for (w, (_, l)) in writers.iter().enumerate() {
        wait_for(l, "ready", &format!("writer {w}"));
    }
    for (w, (_, l)) in writers.iter().enumerate() {
        let done = wait_for(l, "done", &format!("writer {w}"));
        support::say(&format!("writer process {w}: {done}"));
    }
    let ok = wait_for(&sub_lines, "ok", "the subscriber");
    support::say(&format!("subscriber process: {ok}"));
    for (c, _) in writers.iter_mut() {
        assert!(c.wait().unwrap().success(), "a writer process failed");
    }
    assert!(
        sub.wait().unwrap().success(),
        "the subscriber process failed"
    );

    // The store holds exactly what was written, densely.
    rt.block_on(async {
        let store = support::database().await.open_store(&name).await.unwrap();
        let all = store.read_all(ReadAll::forward()).await.unwrap();
        let total = total_events() as u64;
        assert_eq!(all.head_position, total);
        assert!(all
            .events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position == i as u64 + 1));
        assert_eq!(
            store.stream_version(&shared_stream()).await.unwrap(),
            (WRITERS * SHARED_APPENDS) as u64
        );
        // Both processes' appends interleave in the global order.
        let first_of = |p: &str| all.events.iter().position(|e| e.id.starts_with(p));
        assert!(first_of("p0").is_some() && first_of("p1").is_some());
    });
}

/// The out-of-order commit case. Writer A is a transaction following the backend's
/// write protocol by hand (lock the head row, insert at head + 1.., move the head),
/// held open; writer B is the backend. B must wait for A; a reader meanwhile sees no
/// gap; after A commits, B's events follow A's and every reader sees both.
#[test]
fn a_writer_holding_the_head_row_blocks_later_appends_and_readers_never_skip_its_events() {
    if !support::available() {
        return;
    }
    let name = support::unique_store_name("held");
    let _schema = support::SchemaUse::new(Some(name.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = support::database().await;
        let store = Arc::new(db.open_store(&name).await.unwrap());
        let s = support::schema();
        let b_stream = StreamId::new("b");
        for i in 0..3 {
            store
                .append_to_stream(
                    &b_stream,
                    ExpectedVersion::Exact(i),
                    vec![ProposedEvent::new("Seed", Json::null())],
                )
                .await
                .unwrap();
        }
        let mut live = store.subscribe(Subscribe::from_start());
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(live.next().await.unwrap().unwrap());
        }

        // Writer A: lock, write positions 4 and 5, hold.
        let mut a = sqlx::PgConnection::connect(&support::url()).await.unwrap();
        let store_id: i32 =
            sqlx::query_scalar(&format!("SELECT id FROM \"{s}\".stores WHERE name = $1"))
                .bind(&name)
                .fetch_one(&mut a)
                .await
                .unwrap();
        sqlx::raw_sql("BEGIN").execute(&mut a).await.unwrap();
        let (head, streams): (i64, i64) = sqlx::query_as(&format!(
            "SELECT head, stream_count FROM \"{s}\".stores WHERE id = $1 FOR NO KEY UPDATE"
        ))
        .bind(store_id)
        .fetch_one(&mut a)
        .await
        .unwrap();
        assert_eq!((head, streams), (3, 1));
        // Stream "a" is the store's second stream: number 1.
        let now = annals_core::Timestamp::now().as_millis();
        for (k, position) in [4i64, 5].into_iter().enumerate() {
            sqlx::query(&format!(
                "INSERT INTO \"{s}\".events (store_id, position, stream_no, version, timestamp_ms,
                     event_type, event_id, record)
                 VALUES ($1, $2, 1, $3, $4, 'ByA', $6,
                     '\\x01'::bytea || int4send($5::integer)
                     || int4send(octet_length($6::text)) || convert_to($6::text, 'UTF8')
                     || int4send(0) || int4send(0) || int4send(1) || 'a'::bytea
                     || int4send(8) || 'commit-a'::bytea
                     || int4send(2) || '{{}}'::bytea || int4send(4) || 'null'::bytea)"
            ))
            .bind(store_id)
            .bind(position)
            .bind(k as i64 + 1)
            .bind(now)
            .bind(k as i32)
            .bind(format!("a-{position}"))
            .execute(&mut a)
            .await
            .unwrap();
        }
        sqlx::query(&format!(
            "INSERT INTO \"{s}\".streams (store_id, context, aggregate, stream_id, stream_no,
                 first_timestamp, first_position)
             VALUES ($1, '', '', 'a', 1, $2, 4)"
        ))
        .bind(store_id)
        .bind(now)
        .execute(&mut a)
        .await
        .unwrap();
        sqlx::query(&format!(
            "UPDATE \"{s}\".stores SET head = 5, last_timestamp = $2, stream_count = 2
             WHERE id = $1"
        ))
        .bind(store_id)
        .bind(now)
        .execute(&mut a)
        .await
        .unwrap();

        // Writer B: the backend, which remembers head 3 and tries its one-statement path.
        let b = {
            let store = store.clone();
            let b_stream = b_stream.clone();
            tokio::spawn(async move {
                store
                    .append(AppendRequest::to_stream(
                        b_stream,
                        ExpectedVersion::Exact(3),
                        vec![
                            ProposedEvent::new("ByB", Json::null()),
                            ProposedEvent::new("ByB", Json::null()),
                        ],
                    ))
                    .await
            })
        };
        // A reader, meanwhile: only committed, gap-free prefixes.
        let deadline = Instant::now() + Duration::from_millis(600);
        while Instant::now() < deadline {
            let page = store.read_all(ReadAll::forward()).await.unwrap();
            assert_eq!(
                page.head_position, 3,
                "the reader sees A's uncommitted head"
            );
            assert_eq!(
                page.events.iter().map(|e| e.position).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!b.is_finished(), "B committed while A held the head row");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), live.next())
                .await
                .is_err(),
            "the subscriber got an event while A held the head row"
        );

        sqlx::raw_sql("COMMIT").execute(&mut a).await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(30), b)
            .await
            .expect("B still blocked after A committed")
            .unwrap()
            .expect("B's append");
        assert_eq!(
            b.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            [6, 7],
            "B's events come after A's"
        );
        for _ in 0..4 {
            seen.push(
                tokio::time::timeout(Duration::from_secs(10), live.next())
                    .await
                    .expect("the subscriber missed events")
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(
            seen.iter().map(|e| e.position).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7],
            "the subscriber sees A's events, then B's"
        );
        assert_eq!(seen[3].id, "a-4");
        assert_eq!(seen[4].id, "a-5");
        let all = store.read_all(ReadAll::forward()).await.unwrap();
        assert_eq!(
            all.events.iter().map(|e| e.position).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6, 7]
        );
        let _ = a.close().await;
        store.close().await.unwrap();
    });
}
