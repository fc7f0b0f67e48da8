//! Annals on the embedded default: appends to a stream, reads it back, and follows the
//! store live, printing what it does. Run it twice: the data directory keeps every event.
//!
//! ```text
//! cargo run --release -p annals --example quickstart [DATA_DIR]
//! ```

use std::time::Duration;

use annals::embedded::EmbeddedStore;
use annals::{EventStore, ExpectedVersion, ProposedEvent, StreamId, StreamRead, Subscribe};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "annals-data/quickstart".to_owned());
    let store = EmbeddedStore::open(&dir)?;
    let before = store.describe().await?;
    println!(
        "opened {dir}: {} events in {} streams (head position {})",
        before.event_count, before.stream_count, before.head_position
    );

    // Follow the store live from its current head before writing anything.
    let mut live = store.subscribe(Subscribe::after(before.head_position));

    let account = StreamId::new("acc-1")
        .with_aggregate("account")
        .with_context("billing");
    let version = store.stream_version(&account).await?;
    let result = store
        .append_to_stream(
            &account,
            ExpectedVersion::Exact(version),
            vec![
                ProposedEvent::json("Deposited", &serde_json::json!({ "amount": 5 }))?,
                ProposedEvent::json("Withdrawn", &serde_json::json!({ "amount": 2 }))?,
            ],
        )
        .await?;
    println!(
        "appended {} events to {account} (durable: fsynced before this line), commit {}",
        result.events.len(),
        result.commit_id
    );

    for event in store.read_stream(&account, StreamRead::all()).await? {
        println!(
            "  read  v{:<3} pos {:<5} {} {:<10} {}",
            event.version, event.position, event.timestamp, event.event_type, event.payload
        );
    }

    for _ in 0..result.events.len() {
        let event = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await?
            .ok_or("the subscription ended")??;
        println!(
            "  live  pos {:<5} {} {}",
            event.position, event.event_type, event.payload
        );
    }

    let after = store.describe().await?;
    println!(
        "now {} events in {} streams; {} bytes on disk",
        after.event_count,
        after.stream_count,
        after.bytes_on_disk.unwrap_or(0)
    );
    store.close().await?;
    Ok(())
}
