//! The workloads: what each one prepares (untimed), what it times, and what it counts.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId, StreamRead, Subscribe,
};
use futures::StreamExt;

use crate::backend::Backend;
use crate::report::{Latencies, Measured, Report};
use crate::BenchResult;

/// w1: events appended one at a time by one writer.
const W1_EVENTS: u64 = 5_000;
/// w2: concurrent writers, each on its own stream.
const W2_WRITERS: u64 = 8;
/// w2: events appended in total, shared evenly by the writers.
const W2_EVENTS: u64 = W2_WRITERS * 5_000;
/// w3 and the preparation of w4 and w5: events per append.
const BATCH: u64 = 100;
/// w3: events appended in total.
const W3_EVENTS: u64 = 2_000 * BATCH;
/// w4: the length of the stream read.
const W4_STREAM_LEN: u64 = 1_000;
/// w4: events read in total (200 whole-stream reads).
const W4_EVENTS: u64 = 200 * W4_STREAM_LEN;
/// w5: events prepared, and read on each pass.
const W5_EVENTS: u64 = 100_000;
/// w5: streams the prepared events are spread over.
const W5_STREAMS: u64 = 1_000;
/// w5: events per `read_all` call.
const W5_PAGE: u64 = 10_000;
/// w5: passes over the whole store.
const W5_PASSES: u64 = 5;
/// w6: events appended while the subscriber follows.
const W6_EVENTS: u64 = 2_000;
/// w6: pause between two appends, so the subscriber is idle when each event commits
/// (tokio's timer rounds it up to about 1 ms).
const W6_PAUSE: Duration = Duration::from_micros(200);
/// w6: how long the subscriber may lag behind the last append before the run fails.
const W6_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// projector: events prepared, then projected by a no-op handler from position 0.
const PROJECTOR_EVENTS: u64 = 200_000;
/// fsync: how long the loop runs when `--events` is not given.
const FSYNC_DURATION: Duration = Duration::from_secs(2);
/// fsync: bytes written before each sync.
const FSYNC_BLOCK: usize = 4 * 1024;
/// Payload size the events are padded to.
const PAYLOAD_BYTES: usize = 200;
/// The event type of every benchmark event.
const EVENT_TYPE: &str = "Deposited";

/// One benchmark workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Single-event appends from one writer, each awaited.
    W1,
    /// Single-event appends from eight concurrent writers, each on its own stream.
    W2,
    /// Appends of 100-event batches from one writer.
    W3,
    /// Whole-stream reads of one 1,000-event stream.
    W4,
    /// Store-wide forward reads of 100,000 events in pages of 10,000.
    W5,
    /// Latency from `append` to a live subscriber receiving the event.
    W6,
    /// 4 KiB write plus `sync_data` in a loop: the machine's fsync ceiling.
    Fsync,
    /// Catch-up of a projector with a no-op handler over a prepared store.
    Projector,
    /// Eight writers' events carried by the publisher (outbox) to NATS JetStream.
    PublisherNats,
    /// Every event of a prepared store poured in timestamp order (see [`crate::pour`]).
    Pour,
    /// Raw PostgreSQL baseline: single-row INSERTs, one commit each, one client.
    PgInsert1,
    /// Raw PostgreSQL baseline: single-row INSERTs, one commit each, eight clients.
    PgInsert8,
}

impl Workload {
    /// Every workload, in the order `--workload all` runs them.
    pub const ALL: [Workload; 7] = [
        Workload::Fsync,
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
    ];

    /// The raw PostgreSQL baselines, run by `--workload all` on the `postgres` backend.
    pub const POSTGRES_BASELINES: [Workload; 2] = [Workload::PgInsert1, Workload::PgInsert8];

    /// The name printed in the `workload` field.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
            Workload::W6 => "w6",
            Workload::Fsync => "fsync",
            Workload::Projector => "projector",
            Workload::PublisherNats => "publisher-nats",
            Workload::Pour => "pour",
            Workload::PgInsert1 => "pg-insert-1",
            Workload::PgInsert8 => "pg-insert-8",
        }
    }

    /// The name printed in the `backend` field: `raw` when no store is involved.
    pub fn backend_label(self, backend: Backend) -> &'static str {
        match self {
            Workload::Fsync | Workload::PgInsert1 | Workload::PgInsert8 => "raw",
            _ => backend.name(),
        }
    }

    /// `run_with` without a pause (the tests' entry point).
    #[cfg(test)]
    pub async fn run(
        self,
        backend: Backend,
        dir: &Path,
        events: Option<u64>,
    ) -> BenchResult<Report> {
        self.run_with(backend, dir, events, Duration::ZERO).await
    }

    /// Runs the workload in `dir`, an empty directory, on a fresh store of `backend`;
    /// `events` overrides the default size, and the `fsync` workload sleeps `fsync_pause`
    /// after each sync.
    pub async fn run_with(
        self,
        backend: Backend,
        dir: &Path,
        events: Option<u64>,
        fsync_pause: Duration,
    ) -> BenchResult<Report> {
        let (measured, undispatched) = if self == Workload::Fsync {
            let dir = dir.to_path_buf();
            (
                tokio::task::spawn_blocking(move || fsync(&dir, events, fsync_pause)).await??,
                None,
            )
        } else if self == Workload::PgInsert1 {
            let payload = deposit(0).payload;
            let payload = payload.as_str().unwrap_or_default();
            let measured =
                crate::baseline::insert_per_commit(1, events.unwrap_or(W1_EVENTS), payload).await?;
            (measured, None)
        } else if self == Workload::PgInsert8 {
            let payload = deposit(0).payload;
            let payload = payload.as_str().unwrap_or_default();
            let measured =
                crate::baseline::insert_per_commit(8, events.unwrap_or(W2_EVENTS), payload).await?;
            (measured, None)
        } else {
            let opened = backend.open(dir).await?;
            let store = opened.store.clone();
            let mut undispatched = None;
            let measured = match self {
                Workload::W1 => w1(&store, events.unwrap_or(W1_EVENTS)).await?,
                Workload::W2 => w2(&store, events.unwrap_or(W2_EVENTS)).await?,
                Workload::W3 => w3(&store, events.unwrap_or(W3_EVENTS)).await?,
                Workload::W4 => w4(&store, events.unwrap_or(W4_EVENTS)).await?,
                Workload::W5 => w5(&store, events.unwrap_or(W5_EVENTS)).await?,
                Workload::W6 => w6(&store, events.unwrap_or(W6_EVENTS)).await?,
                Workload::Projector => {
                    projector(&store, events.unwrap_or(PROJECTOR_EVENTS)).await?
                }
                Workload::Pour => {
                    crate::pour::pour(&store, events.unwrap_or(crate::pour::EVENTS)).await?
                }
                Workload::PublisherNats => {
                    let (measured, left) = publisher_nats(&store, events).await?;
                    undispatched = Some(left);
                    measured
                }
                Workload::Fsync | Workload::PgInsert1 | Workload::PgInsert8 => {
                    unreachable!("handled above")
                }
            };
            drop(store);
            opened.close().await?;
            if let Some(left) = undispatched.filter(|left| *left > 0) {
                return Err(format!(
                    "{}: {left} events are still undispatched at the end",
                    self.name()
                )
                .into());
            }
            (measured, undispatched)
        };
        let mut report = Report::new(self.name(), self.backend_label(backend), measured);
        report.undispatched = undispatched;
        Ok(report)
    }
}

/// A "Deposited" event whose JSON payload is padded to [`PAYLOAD_BYTES`].
pub(crate) fn deposit(seq: u64) -> ProposedEvent {
    const NOTE: &str = "padding so every payload is about the size of a small domain event; ";
    let mut payload = format!(
        r#"{{"account":"acc-{:06}","amount":{},"currency":"EUR","note":""#,
        seq % 1_000_000,
        seq.wrapping_mul(7_919) % 1_000_000
    );
    // NOTE is ASCII, so any byte length is a char boundary; the harness should spend
    // its time in the store, not in building payloads.
    let room = PAYLOAD_BYTES.saturating_sub(payload.len() + 2);
    let mut left = room;
    while left > 0 {
        let take = left.min(NOTE.len());
        payload.push_str(&NOTE[..take]);
        left -= take;
    }
    payload.push_str("\"}");
    ProposedEvent::new(EVENT_TYPE, Json::from_raw(payload))
}

/// The stream of benchmark account `n`.
pub(crate) fn account(n: u64) -> StreamId {
    StreamId::new(format!("acc-{n}")).with_aggregate("account")
}

/// `total` split into `parts` shares differing by at most one.
pub(crate) fn shares(total: u64, parts: u64) -> impl Iterator<Item = u64> {
    (0..parts).map(move |i| total / parts + u64::from(i < total % parts))
}

/// Fails the run when a read returned something other than what was written.
pub(crate) fn check(ok: bool, what: impl FnOnce() -> String) -> BenchResult<()> {
    if ok {
        Ok(())
    } else {
        Err(what().into())
    }
}

/// Appends `events` to `stream` in batches of [`BATCH`], untimed.
async fn prepare(
    store: &Arc<dyn EventStore>,
    stream: &StreamId,
    events: u64,
    first_seq: u64,
) -> BenchResult<()> {
    let mut version = 0;
    for size in shares(events, events.div_ceil(BATCH)) {
        let batch = (version..version + size)
            .map(|v| deposit(first_seq + v))
            .collect();
        store
            .append_to_stream(stream, ExpectedVersion::Exact(version), batch)
            .await?;
        version += size;
    }
    Ok(())
}

/// Appends `events` single events to `stream`, each awaited, and times each append.
async fn single_appends(
    store: Arc<dyn EventStore>,
    stream: StreamId,
    events: u64,
) -> BenchResult<Latencies> {
    let mut latencies = Latencies::with_capacity(events as usize);
    for version in 0..events {
        let event = vec![deposit(version)];
        let started = Instant::now();
        store
            .append_to_stream(&stream, ExpectedVersion::Exact(version), event)
            .await?;
        latencies.record(started.elapsed());
    }
    Ok(latencies)
}

/// w1: one writer, single-event appends, each awaited.
async fn w1(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let started = Instant::now();
    let latencies = single_appends(store.clone(), account(0), events).await?;
    Ok(Measured {
        events,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// w2: [`W2_WRITERS`] concurrent writers, single-event appends to their own streams.
async fn w2(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let started = Instant::now();
    let writers: Vec<_> = shares(events, W2_WRITERS)
        .enumerate()
        .map(|(n, share)| tokio::spawn(single_appends(store.clone(), account(n as u64), share)))
        .collect();
    let mut latencies = Latencies::with_capacity(events as usize);
    for writer in writers {
        latencies.merge(writer.await??);
    }
    Ok(Measured {
        events,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// w3: one writer, appends of [`BATCH`] events; one latency sample per batch.
async fn w3(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let stream = account(0);
    let sizes: Vec<u64> = shares(events, events.div_ceil(BATCH)).collect();
    let mut latencies = Latencies::with_capacity(sizes.len());
    let mut version = 0;
    let started = Instant::now();
    for size in sizes {
        let batch = (version..version + size).map(deposit).collect();
        let append_started = Instant::now();
        store
            .append_to_stream(&stream, ExpectedVersion::Exact(version), batch)
            .await?;
        latencies.record(append_started.elapsed());
        version += size;
    }
    Ok(Measured {
        events,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// w4: whole-stream reads of one prepared [`W4_STREAM_LEN`]-event stream.
async fn w4(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let stream = account(0);
    prepare(store, &stream, W4_STREAM_LEN, 0).await?;
    let reads = events.div_ceil(W4_STREAM_LEN).max(1);
    let mut latencies = Latencies::with_capacity(reads as usize);
    let started = Instant::now();
    for _ in 0..reads {
        let read_started = Instant::now();
        let read = store.read_stream(&stream, StreamRead::all()).await?;
        latencies.record(read_started.elapsed());
        check(read.len() as u64 == W4_STREAM_LEN, || {
            format!(
                "w4: read_stream returned {} events, {W4_STREAM_LEN} were written",
                read.len()
            )
        })?;
    }
    Ok(Measured {
        events: reads * W4_STREAM_LEN,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// w5: [`W5_PASSES`] paged forward passes over a prepared store of `events` events.
async fn w5(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let batches = events.div_ceil(BATCH);
    let per_stream = shares(batches, W5_STREAMS).filter(|b| *b > 0);
    let mut remaining = events;
    for (n, stream_batches) in per_stream.enumerate() {
        let size = (stream_batches * BATCH).min(remaining);
        prepare(store, &account(n as u64), size, remaining).await?;
        remaining -= size;
    }
    let mut latencies = Latencies::default();
    let mut read = 0;
    let started = Instant::now();
    for pass in 0..W5_PASSES {
        let mut request = ReadAll::forward().limit(W5_PAGE);
        let mut pass_read = 0;
        loop {
            let call_started = Instant::now();
            let page = store.read_all(request.clone()).await?;
            latencies.record(call_started.elapsed());
            pass_read += page.events.len() as u64;
            if page.end || page.events.is_empty() {
                break;
            }
            request = request.cursor(page.next_cursor);
        }
        check(pass_read == events, || {
            format!("w5: pass {pass} read {pass_read} events, {events} were written")
        })?;
        read += pass_read;
    }
    Ok(Measured {
        events: read,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// w6: time from calling `append` to a live subscriber receiving the event.
async fn w6(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let stream = account(0);
    let head = store.describe().await?.head_position;
    let mut live = store.subscribe(Subscribe::after(head));
    let expected = events as usize;
    let subscriber = tokio::spawn({
        let stream = stream.clone();
        async move {
            // received[v - 1]: when the event of version v arrived.
            let mut received = Vec::with_capacity(expected);
            while received.len() < expected {
                match live.next().await {
                    Some(Ok(event)) if event.stream == stream => {
                        let at = Instant::now();
                        check(event.version == received.len() as u64 + 1, || {
                            format!("w6: subscriber got version {} out of order", event.version)
                        })?;
                        received.push(at);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err.into()),
                    None => return Err("w6: the subscription ended early".into()),
                }
            }
            BenchResult::Ok(received)
        }
    });
    // Let the subscriber reach the live tail before the first append.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut sent = Vec::with_capacity(expected);
    let started = Instant::now();
    for version in 0..events {
        let event = vec![deposit(version)];
        sent.push(Instant::now());
        store
            .append_to_stream(&stream, ExpectedVersion::Exact(version), event)
            .await?;
        tokio::time::sleep(W6_PAUSE).await;
    }
    let received = tokio::time::timeout(W6_DRAIN_TIMEOUT, subscriber)
        .await
        .map_err(|_| "w6: the subscriber did not receive every event in time")???;
    let elapsed = started.elapsed();

    let mut latencies = Latencies::with_capacity(expected);
    for (sent, received) in sent.iter().zip(&received) {
        latencies.record(received.saturating_duration_since(*sent));
    }
    Ok(Measured {
        events,
        elapsed,
        latencies,
    })
}

/// projector: a projector with a no-op handler catches up from position 0 over a
/// prepared store of `events` events (spread like w5's); one latency sample per
/// checkpoint (one page of the projector's default batch size).
async fn projector(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    use annals_projector::{projection_fn, BoxError, ProjectionState, Projector};

    let batches = events.div_ceil(BATCH);
    let per_stream = shares(batches, W5_STREAMS).filter(|b| *b > 0);
    let mut remaining = events;
    for (n, stream_batches) in per_stream.enumerate() {
        let size = (stream_batches * BATCH).min(remaining);
        prepare(store, &account(n as u64), size, remaining).await?;
        remaining -= size;
    }
    let projector = Projector::new(store.clone());
    projector
        .add(
            "bench",
            projection_fn(|_| std::future::ready(Ok::<(), BoxError>(()))),
        )
        .await?;
    let mut status = projector.watch("bench").await?;
    let mut latencies = Latencies::default();
    let started = Instant::now();
    projector.start().await?;
    let mut last = started;
    let mut checkpoint = 0;
    while checkpoint < events {
        status.changed().await?;
        let now = status.borrow_and_update().clone();
        if now.state == ProjectionState::Failed {
            return Err(format!("projector: the projection failed: {:?}", now.last_error).into());
        }
        if now.checkpoint > checkpoint {
            checkpoint = now.checkpoint;
            let at = Instant::now();
            latencies.record(at - last);
            last = at;
        }
    }
    let elapsed = started.elapsed();
    projector.shutdown().await;
    check(checkpoint == events, || {
        format!("projector: checkpoint {checkpoint}, {events} events were written")
    })?;
    Ok(Measured {
        events,
        elapsed,
        latencies,
    })
}

/// publisher-nats: see [`crate::outbox`] (cargo feature `nats`).
#[cfg(feature = "nats")]
async fn publisher_nats(
    store: &Arc<dyn EventStore>,
    events: Option<u64>,
) -> BenchResult<(Measured, u64)> {
    crate::outbox::publisher_nats(store, events.unwrap_or(crate::outbox::EVENTS)).await
}

#[cfg(not(feature = "nats"))]
async fn publisher_nats(
    _store: &Arc<dyn EventStore>,
    _events: Option<u64>,
) -> BenchResult<(Measured, u64)> {
    Err("this annals-bench was built without the `nats` feature".into())
}

/// Writes 4 KiB and syncs, in a loop: `syncs` times, or for [`FSYNC_DURATION`]; sleeps
/// `pause` after each sync (untimed in the latencies, counted in the elapsed time).
fn fsync(dir: &Path, syncs: Option<u64>, pause: Duration) -> BenchResult<Measured> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(dir.join("fsync-probe"))?;
    let block = [0xA5u8; FSYNC_BLOCK];
    let mut latencies = Latencies::default();
    let mut done = 0;
    let started = Instant::now();
    while match syncs {
        Some(n) => done < n,
        None => started.elapsed() < FSYNC_DURATION,
    } {
        let sync_started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.record(sync_started.elapsed());
        done += 1;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    Ok(Measured {
        events: done,
        elapsed: started.elapsed(),
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_about_two_hundred_bytes_of_json() {
        for seq in [0, 7, 123_456, u64::MAX] {
            let event = deposit(seq);
            let text = event.payload.as_str().unwrap();
            assert_eq!(text.len(), PAYLOAD_BYTES, "{text}");
            serde_json::from_str::<serde_json::Value>(text).unwrap();
        }
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        let s: Vec<u64> = shares(10, 4).collect();
        assert_eq!(s, vec![3, 3, 2, 2]);
        assert_eq!(shares(40_000, 8).sum::<u64>(), 40_000);
    }

    #[tokio::test]
    async fn every_store_workload_runs_small_on_memory() {
        for workload in Workload::ALL {
            let dir = tempfile::tempdir().unwrap();
            let report = workload
                .run(Backend::Memory, dir.path(), Some(250))
                .await
                .unwrap();
            assert_eq!(report.workload, workload.name());
            assert!(report.events > 0, "{report:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_projector_workload_runs_small_on_memory() {
        let dir = tempfile::tempdir().unwrap();
        let report = Workload::Projector
            .run(Backend::Memory, dir.path(), Some(3_000))
            .await
            .unwrap();
        assert_eq!(report.workload, "projector");
        assert_eq!(report.events, 3_000);
    }

    /// Whether the NATS server the workload publishes to answers; without it the test
    /// is skipped (loudly), except under `CI=true`, where it must run.
    #[cfg(feature = "nats")]
    fn nats_reachable() -> bool {
        annals_testkit::services::NATS
            .available_at(&crate::outbox::nats_url())
            .is_some()
    }

    #[cfg(all(feature = "nats", feature = "embedded"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_publisher_nats_workload_delivers_every_event_on_memory_and_embedded() {
        if !nats_reachable() {
            return;
        }
        for backend in [Backend::Memory, Backend::Embedded] {
            let dir = tempfile::tempdir().unwrap();
            let report = Workload::PublisherNats
                .run(backend, dir.path(), Some(400))
                .await
                .unwrap();
            assert_eq!(report.workload, "publisher-nats");
            assert_eq!(report.backend, backend.name());
            assert_eq!(report.events, 400);
            assert_eq!(report.undispatched, Some(0));
            assert!(
                report.p50_us > 0.0 && report.p99_us >= report.p50_us,
                "{report:?}"
            );
            let line = serde_json::to_string(&report).unwrap();
            assert!(line.ends_with(r#","undispatched":0}"#), "{line}");
        }
    }

    #[cfg(not(feature = "nats"))]
    #[tokio::test]
    async fn the_publisher_nats_workload_needs_the_nats_feature() {
        let dir = tempfile::tempdir().unwrap();
        let err = Workload::PublisherNats
            .run(Backend::Memory, dir.path(), Some(10))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`nats` feature"), "{err}");
    }

    /// The server of `http-postgres` keeps its stores in PostgreSQL: the events a run
    /// appended through HTTP are rows in the bench's schema. Skipped (loudly) without a
    /// reachable PostgreSQL, except under `CI=true`.
    #[cfg(all(feature = "http", feature = "postgres"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_http_postgres_backend_serves_stores_kept_in_postgresql() {
        use sqlx::Connection;
        let url = crate::backend::postgres_url();
        if annals_testkit::services::POSTGRES
            .available_at(&url)
            .is_none()
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let report = Workload::W2
            .run(Backend::HttpPostgres, dir.path(), Some(80))
            .await
            .unwrap();
        assert_eq!((report.workload, report.backend), ("w2", "http-postgres"));
        assert_eq!(report.events, 80);
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let rows: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {}.events",
            crate::backend::POSTGRES_SCHEMA
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(rows, 80);
    }

    #[cfg(feature = "http")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_store_workload_runs_small_over_http() {
        for workload in Workload::ALL {
            if workload == Workload::Fsync {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let report = workload
                .run(Backend::Http, dir.path(), Some(120))
                .await
                .unwrap();
            assert_eq!(report.workload, workload.name());
            assert_eq!(report.backend, "http");
            assert!(report.events > 0, "{report:?}");
        }
    }
}
