//! Publishing throughput to NATS JetStream: `cargo bench -p annals-channels --features nats
//! --bench nats_publish [-- MESSAGES BATCH RUNS]` (defaults 20000, 100, 5). Each run
//! publishes MESSAGES notifications in `publish_batch` calls of BATCH messages (every
//! message acknowledged) into a fresh stream, then prints messages/s; the summary gives
//! the median and the min–max of the runs. Needs NATS with JetStream at
//! `ANNALS_BENCH_NATS_URL` (default nats://127.0.0.1:4222).

use std::time::Instant;

use annals_channels::nats::{NatsChannel, NatsConfig};
use annals_channels::{Message, MessageChannel};
use annals_core::{Json, RecordedEvent, StreamId, Timestamp};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn message(i: u64) -> Message {
    Message::notification(
        "bench",
        RecordedEvent {
            position: i,
            id: format!("event-{i}").into(),
            stream: StreamId::new(format!("acc-{}", i % 1000)).with_aggregate("account"),
            version: i / 1000 + 1,
            event_type: "Deposited".into(),
            timestamp: Timestamp::now(),
            payload: Json::from_raw(format!(r#"{{"amount":{i},"currency":"EUR"}}"#)),
            metadata: Json::null(),
            commit_id: format!("commit-{i}").into(),
            commit_sequence: 0,
            dispatched: false,
        },
        true,
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages = arg(1, 20_000) as u64;
    let batch = arg(2, 100).max(1);
    let runs = arg(3, 5).max(1);
    let url = std::env::var("ANNALS_BENCH_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let all: Vec<Message> = (1..=messages).map(message).collect();
    let body = all[0].to_json()?.len();
    println!("nats publish: {messages} messages (~{body} B), batch {batch}, {runs} runs, {url}");
    let mut rates = Vec::new();
    for run in 1..=runs {
        let subject = format!("annals.bench.{}.{run}", std::process::id());
        let config = NatsConfig::new(&subject);
        let channel = NatsChannel::connect(&url, config.clone()).await?;
        let start = Instant::now();
        for chunk in all.chunks(batch) {
            channel.publish_batch(chunk).await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = messages as f64 / secs;
        println!("run {run}: {secs:.3} s, {rate:.0} messages/s");
        rates.push(rate);
        channel.context().delete_stream(&config.stream).await?;
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "median {:.0} messages/s (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}
