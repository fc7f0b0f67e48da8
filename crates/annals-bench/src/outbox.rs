//! `publisher-nats`: events out of the store, end to end. Writers append to the store,
//! an `annals_projector::Publisher` (the outbox) hands each batch of committed events to
//! the NATS JetStream channel of `annals-channels` and marks it dispatched once
//! JetStream acknowledged every message of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals_channels::nats::{NatsChannel, NatsConfig};
use annals_channels::{Message, MessageChannel};
use annals_core::{EventFilter, EventStore, ExpectedVersion, Position, RecordedEvent};
use annals_projector::{BoxError, Publish, Publisher, PublisherOptions, PublisherState};

use crate::report::{Latencies, Measured};
use crate::workload::{account, deposit, shares};
use crate::BenchResult;

/// Concurrent writers, each on its own stream.
pub const WRITERS: u64 = 8;
/// Events appended in total, shared evenly by the writers.
pub const EVENTS: u64 = WRITERS * 5_000;
/// How long the publisher may lag behind the last append before the run fails.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// The `store` field of every message.
const STORE_NAME: &str = "bench";

/// The NATS server: `ANNALS_BENCH_NATS_URL`, else `ANNALS_TEST_NATS_URL`, else the
/// local default.
pub fn nats_url() -> String {
    std::env::var("ANNALS_BENCH_NATS_URL")
        .or_else(|_| std::env::var("ANNALS_TEST_NATS_URL"))
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Publishes each batch to JetStream and notes when its acknowledgements came back.
struct JetStreamSink {
    channel: NatsChannel,
    /// (position, when JetStream acknowledged it), in delivery order.
    acked: Arc<Mutex<Vec<(Position, Instant)>>>,
}

#[async_trait::async_trait]
impl Publish for JetStreamSink {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.publish_batch(std::slice::from_ref(event)).await
    }

    async fn publish_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        let messages: Vec<Message> = events
            .iter()
            .map(|e| Message::notification(STORE_NAME, e.clone(), false))
            .collect();
        self.channel.publish_batch(&messages).await?;
        // The channel returns once every message of the batch is acknowledged; that is
        // the moment the publisher learns it, too.
        let at = Instant::now();
        let mut acked = self
            .acked
            .lock()
            .map_err(|_| "publisher-nats: the ack log's lock is poisoned")?;
        acked.extend(events.iter().map(|e| (e.position, at)));
        Ok(())
    }
}

/// Appends `events` single events to `account(n)`, each awaited; returns when each
/// append was acknowledged, by position.
async fn writer(
    store: Arc<dyn EventStore>,
    n: u64,
    events: u64,
) -> BenchResult<Vec<(Position, Instant)>> {
    let stream = account(n);
    let mut acked = Vec::with_capacity(events as usize);
    for version in 0..events {
        let result = store
            .append_to_stream(
                &stream,
                ExpectedVersion::Exact(version),
                vec![deposit(n * events + version)],
            )
            .await?;
        let at = Instant::now();
        acked.extend(result.events.iter().map(|e| (e.position, at)));
    }
    Ok(acked)
}

/// [`WRITERS`] writers append `events` single events while a publisher carries them to
/// a fresh JetStream stream. Times from the first append to the last JetStream
/// acknowledgement; one latency sample per event, from its append's acknowledgement to
/// JetStream's. Returns the measurement and the undispatched events left at the end.
pub async fn publisher_nats(
    store: &Arc<dyn EventStore>,
    events: u64,
) -> BenchResult<(Measured, u64)> {
    let url = nats_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let subject = format!("annals.bench.outbox.{}.{nanos}", std::process::id());
    let config = NatsConfig::new(&subject);
    eprintln!(
        "annals-bench: NATS at {url}, JetStream stream {}",
        config.stream
    );
    let channel = NatsChannel::connect(&url, config.clone()).await?;
    let jetstream = channel.context().clone();
    let acked = Arc::new(Mutex::new(Vec::with_capacity(events as usize)));
    let publisher = Publisher::start(
        store.clone(),
        JetStreamSink {
            channel,
            acked: acked.clone(),
        },
        PublisherOptions::default(),
    );
    // The publisher follows the (empty) store live before the first append.
    publisher.wait_until(|s| s.live).await;

    let started = Instant::now();
    let writers: Vec<_> = shares(events, WRITERS)
        .enumerate()
        .map(|(n, share)| tokio::spawn(writer(store.clone(), n as u64, share)))
        .collect();
    let mut appended = Vec::with_capacity(events as usize);
    for w in writers {
        appended.extend(w.await??);
    }
    let waited = tokio::time::timeout(
        DRAIN_TIMEOUT,
        publisher.wait_until(|s| s.dispatched >= events || s.state != PublisherState::Running),
    )
    .await;
    let last = publisher.shutdown().await;
    waited.map_err(|_| "publisher-nats: the publisher did not dispatch every event in time")?;
    if last.state == PublisherState::Failed {
        return Err(format!(
            "publisher-nats: the publisher failed: {:?}",
            last.last_error
        )
        .into());
    }

    let acked = std::mem::take(
        &mut *acked
            .lock()
            .map_err(|_| "publisher-nats: the ack log's lock is poisoned")?,
    );
    let last_ack = acked
        .iter()
        .map(|(_, at)| *at)
        .max()
        .ok_or("publisher-nats: nothing was acknowledged")?;
    // Delivery is at-least-once: the first acknowledgement of a position counts.
    let mut first_ack: Vec<Option<Instant>> = vec![None; events as usize + 1];
    for (position, at) in &acked {
        if let Some(slot) = first_ack.get_mut(*position as usize) {
            slot.get_or_insert(*at);
        }
    }
    let mut latencies = Latencies::with_capacity(appended.len());
    for (position, appended_at) in &appended {
        let acked_at = first_ack
            .get(*position as usize)
            .copied()
            .flatten()
            .ok_or_else(|| {
                format!("publisher-nats: position {position} never reached JetStream")
            })?;
        latencies.record(acked_at.saturating_duration_since(*appended_at));
    }

    let undispatched = store
        .undispatched(EventFilter::default(), None)
        .await?
        .len() as u64;
    let stream = jetstream.get_stream(&config.stream).await?;
    let messages = stream.cached_info().state.messages;
    jetstream.delete_stream(&config.stream).await?;
    if messages < events {
        return Err(format!(
            "publisher-nats: JetStream holds {messages} messages, {events} were appended"
        )
        .into());
    }
    Ok((
        Measured {
            events,
            elapsed: last_ack.saturating_duration_since(started),
            latencies,
        },
        undispatched,
    ))
}
