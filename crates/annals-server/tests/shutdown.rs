//! Graceful shutdown over real HTTP: a request already running when the shutdown
//! begins finishes against an open store (here an NDJSON import whose body is still
//! arriving), new requests are refused, live subscriptions end, and the stores close
//! only after the last request.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use annals_server::{Server, ServerConfig};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

fn line(n: u64) -> String {
    format!(
        "{{\"id\":\"e{n}\",\"aggregateId\":\"imported\",\"version\":{n},\"type\":\"T\",\"timestamp\":\"2024-01-01T00:00:00.000Z\",\"payload\":{{\"n\":{n}}},\"metadata\":null,\"commitId\":\"c{n}\",\"commitSequence\":0,\"dispatched\":false}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_and_new_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    assert_eq!(
        http.put(format!("{url}/v1/stores/s"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    // A second keep-alive connection, opened before the shutdown.
    let late = reqwest::Client::new();
    assert!(late
        .get(format!("{url}/v1/stores/s"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let subscription = http
        .get(format!("{url}/v1/stores/s/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.status(), StatusCode::OK);

    // An import whose body arrives in two halves, with the shutdown between them.
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    let import = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = reqwest::Body::wrap_stream(tokio_stream_from(body_rx));
            let r = http
                .post(format!("{url}/v1/stores/s/events/import?batchSize=10"))
                .header("Content-Type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    body_tx
        .send(Ok((1..=50).map(line).collect()))
        .await
        .unwrap();
    // The import is storing (batches of 10; the library holds a batch until it sees
    // where the next commit starts, so not all of the first half need be in yet) before
    // the shutdown begins.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d: Value = late
            .get(format!("{url}/v1/stores/s"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["eventCount"].as_u64() >= Some(10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing of the first half was imported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop.send(()).unwrap();
    // The live subscription ends at once (its body completes).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut body = subscription.bytes_stream();
        while body.next().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the subscription did not end at shutdown");
    // A new request on a connection opened before is refused; nothing is opened again.
    let refused = late.get(format!("{url}/v1/stores/s")).send().await;
    if let Ok(r) = refused {
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "store_closed");
    }
    assert!(
        !serving.is_finished(),
        "the server waits for the import in flight"
    );

    // The rest of the body arrives after the shutdown began: the import finishes.
    body_tx
        .send(Ok((51..=100).map(line).collect()))
        .await
        .unwrap();
    drop(body_tx);
    let (status, answer) = tokio::time::timeout(Duration::from_secs(10), import)
        .await
        .expect("the import in flight is answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["imported"], 100);
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops once the import is answered")
        .unwrap()
        .unwrap();

    // Everything the import acknowledged is in the store.
    let store = annals_embedded::EmbeddedStore::open(dir.path().join("s")).unwrap();
    let d = annals_core::EventStore::describe(&store).await.unwrap();
    assert_eq!(d.head_position, 100);
}

/// A stream of the chunks sent on `rx`.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}
