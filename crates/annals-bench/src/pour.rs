//! `pour`: every event of a prepared store poured in timestamp order (castore's
//! `pourEventStoreEvents`) into a channel that only counts, so the figure is the
//! pour's own cost: the key pass, the ordered re-read and the batching. One event in
//! 97 carries a timestamp 5,000 events older than its neighbours, so the reorder
//! buffer has work to do (as after an import of older events, or writers whose clocks
//! disagree).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use annals_channels::pour::{pour_store_events, PourOptions, Progress, StoreEventsQuery};
use annals_channels::{Message, MessageChannel};
use annals_core::{AppendRequest, EventStore, ExpectedVersion, Result, StreamId, Timestamp};
use async_trait::async_trait;

use crate::report::{Latencies, Measured};
use crate::workload::{check, deposit};
use crate::BenchResult;

/// Events in the store (the default size).
pub const EVENTS: u64 = 200_000;
/// Every this many events, one is out of timestamp order.
const OUT_OF_ORDER_EVERY: u64 = 97;
/// How far back (in events, one millisecond apart) an out-of-order event lies.
const OUT_OF_ORDER_BY: i64 = 5_000;
/// Events per append while preparing.
const PREPARE_BATCH: u64 = 1_000;
/// Streams the prepared events are spread over.
const STREAMS: u64 = 100;

/// A channel that counts what it is given.
#[derive(Default)]
struct Counting(AtomicU64);

#[async_trait]
impl MessageChannel for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    async fn publish(&self, _message: &Message) -> Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        self.0.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Prepares `events` events and pours them; latencies are per published batch.
pub async fn pour(store: &Arc<dyn EventStore>, events: u64) -> BenchResult<Measured> {
    let base = Timestamp::now().as_millis() - 10 * events as i64;
    let mut seq = 0;
    while seq < events {
        let n = PREPARE_BATCH.min(events - seq);
        let batch = (seq..seq + n)
            .map(|i| {
                let late = i % OUT_OF_ORDER_EVERY == OUT_OF_ORDER_EVERY - 1;
                let at = base + i as i64 - if late { OUT_OF_ORDER_BY } else { 0 };
                deposit(i).with_timestamp(Timestamp::from_millis(at))
            })
            .collect();
        let stream = StreamId::new(format!("acc-{}", (seq / PREPARE_BATCH) % STREAMS));
        store
            .append(AppendRequest::to_stream(
                stream,
                ExpectedVersion::Any,
                batch,
            ))
            .await?;
        seq += n;
    }

    let channel = Counting::default();
    let latencies = Arc::new(Mutex::new(Latencies::with_capacity(
        (events / 100 + 1) as usize,
    )));
    let last = Arc::new(Mutex::new(Instant::now()));
    let options = PourOptions {
        progress: Some({
            let (latencies, last) = (latencies.clone(), last.clone());
            Arc::new(move |_: Progress| {
                let now = Instant::now();
                if let (Ok(mut l), Ok(mut t)) = (latencies.lock(), last.lock()) {
                    l.record(now - *t);
                    *t = now;
                }
            })
        }),
        ..PourOptions::default()
    };
    let started = Instant::now();
    if let Ok(mut t) = last.lock() {
        *t = started;
    }
    let result = pour_store_events(
        &**store,
        "bench",
        &channel,
        &StoreEventsQuery::default(),
        &options,
    )
    .await
    .map_err(|interrupted| interrupted.error)?;
    let elapsed = started.elapsed();
    let poured = channel.0.load(Ordering::Relaxed);
    check(
        result.finished && result.poured_event_count == events && poured == events,
        || format!("pour: {poured} of {events} events poured"),
    )?;
    drop(options);
    let latencies = Arc::try_unwrap(latencies)
        .map_err(|_| "pour: the progress callback is still held")?
        .into_inner()
        .map_err(|_| "pour: a progress callback panicked")?;
    Ok(Measured {
        events,
        elapsed,
        latencies,
    })
}
