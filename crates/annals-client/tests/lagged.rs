//! A slow subscriber over HTTP: the server closes its stream with `event: lagged` once it
//! falls more than `max_subscriber_lag` events behind, and the client resumes from its
//! last id, so the application still sees every event once, in order.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use annals_client::HttpStore;
use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId, Subscribe};
use annals_server::{Server, ServerConfig};
use futures::StreamExt;

/// Events appended in all.
const EVENTS: u64 = 4_000;
/// Events per append.
const BATCH: u64 = 100;
/// Payload bytes per event: enough that the backlog does not fit in socket buffers.
const PAYLOAD: usize = 8_000;
/// The server's limit.
const MAX_LAG: u64 = 300;

/// One number from the server's `/metrics`.
async fn metric(url: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{name} is exported"))
        .trim()
        .parse()
        .unwrap()
}

fn batch(first: u64) -> Vec<ProposedEvent> {
    (first..first + BATCH)
        .map(|n| {
            let payload = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(PAYLOAD));
            ProposedEvent::new("Padded", Json::from_raw(payload))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_lagged_and_resumes_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.max_subscriber_lag = MAX_LAG;
    let server = Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let store = HttpStore::new(&url, "slow").unwrap();
    store.create().await.unwrap();
    let stream = StreamId::new("padded");
    store
        .append_to_stream(&stream, ExpectedVersion::Any, batch(0))
        .await
        .unwrap();
    let mut live = store.subscribe(Subscribe::from_start());
    let first = live.next().await.unwrap().unwrap();
    assert_eq!(first.position, 1);

    let writer = {
        let store = HttpStore::new(&url, "slow").unwrap();
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut n = BATCH;
            while n < EVENTS {
                store
                    .append_to_stream(&stream, ExpectedVersion::Any, batch(n))
                    .await
                    .unwrap();
                n += BATCH;
            }
        })
    };

    let mut expected = 2;
    let mut largest_lag_seen = 0;
    while expected <= EVENTS {
        let e = tokio::time::timeout(Duration::from_secs(30), live.next())
            .await
            .expect("the subscription delivers in time")
            .expect("the subscription does not end")
            .unwrap();
        assert_eq!(e.position, expected, "a gap or a duplicate");
        expected += 1;
        // Slow for the first half: the writer gets far ahead.
        if expected < EVENTS / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if expected % 50 == 0 {
                largest_lag_seen =
                    largest_lag_seen.max(metric(&url, "annals_subscriber_lag_events_max").await);
            }
        }
    }
    eprintln!("the largest subscriber lag /metrics showed: {largest_lag_seen}");
    assert!(
        largest_lag_seen > 0,
        "the lag gauge never showed the slow subscriber behind"
    );
    writer.await.unwrap();

    let lagged = metric(&url, "annals_subscriptions_lagged_total").await;
    eprintln!("the subscription was lagged {lagged} times");
    assert!(lagged >= 1, "the slow subscriber was never lagged");

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
