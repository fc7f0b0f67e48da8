//! Concurrent appends on one `HttpStore` share trips to the server (client-side group
//! commit) and still get exactly their own results.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use annals_client::HttpStore;
use annals_core::{Error, EventStore, ExpectedVersion, Json, ProposedEvent, StreamId, StreamRead};
use annals_server::{Server, ServerConfig};

/// The server's count of HTTP requests so far, from `/metrics`.
async fn requests_served(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("annals_http_requests_total "))
        .expect("the request counter is exported")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_travel_together_and_keep_their_own_results() {
    concurrent_appends_keep_their_own_results(Some(1)).await;
}

/// The default keeps two requests in flight, each with a fair share of the writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_in_flight_keep_every_result() {
    concurrent_appends_keep_their_own_results(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_keep_every_result() {
    concurrent_appends_keep_their_own_results(Some(5)).await;
}

/// 64 writers on one client with `max_in_flight` requests on the wire (`None`: the
/// default): fewer requests than appends, and every append gets its own result.
async fn concurrent_appends_keep_their_own_results(max_in_flight: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::bind(ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let client = HttpStore::new(&url, "p").unwrap();
    let store = Arc::new(match max_in_flight {
        Some(max) => client.with_max_appends_in_flight(max),
        None => client,
    });
    store.create().await.unwrap();
    let before = requests_served(&url).await;

    // 64 writers × 10 appends; every fourth writer also makes one append that must fail
    // (a wrong expectation), which must not disturb the others in its batch.
    let writers = 64u64;
    let rounds = 10u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("w-{w}"));
            for v in 0..rounds {
                let r = store
                    .append_to_stream(
                        &stream,
                        ExpectedVersion::Exact(v),
                        vec![ProposedEvent::new("Tick", Json::from_value(&v).unwrap())],
                    )
                    .await
                    .unwrap();
                assert_eq!(r.events.len(), 1);
                assert_eq!(r.events[0].version, v + 1);
                assert_eq!(r.events[0].stream, stream);
                if w % 4 == 0 && v == rounds / 2 {
                    let refused = store
                        .append_to_stream(
                            &stream,
                            ExpectedVersion::Exact(0),
                            vec![ProposedEvent::new("Never", Json::null())],
                        )
                        .await
                        .unwrap_err();
                    assert!(
                        matches!(refused, Error::WrongExpectedVersion { actual, .. } if actual == v + 1),
                        "{refused:?}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let appends = writers * rounds + writers / 4;
    // The `/metrics` read itself is one request too.
    let trips = requests_served(&url).await - before - 1;
    assert!(
        trips < appends,
        "{appends} appends took {trips} requests: none were batched"
    );

    // Exactly the accepted events are stored, densely, each stream in order.
    let described = store.describe().await.unwrap();
    assert_eq!(described.event_count, writers * rounds);
    assert_eq!(described.head_position, writers * rounds);
    for w in 0..writers {
        let events = store
            .read_stream(&StreamId::new(format!("w-{w}")), StreamRead::all())
            .await
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=rounds).collect::<Vec<_>>());
        assert!(events.iter().all(|e| e.event_type.as_str() == "Tick"));
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_and_secret_changes_keep_their_meaning_in_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::bind(ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let store = Arc::new(
        HttpStore::new(&url, "q")
            .unwrap()
            .with_max_appends_in_flight(1),
    );
    store.create().await.unwrap();
    let writers = 16u64;
    for w in 0..writers {
        store
            .append_to_stream(
                &StreamId::new(format!("s-{w}")),
                ExpectedVersion::NoStream,
                vec![ProposedEvent::new("Old", Json::null())],
            )
            .await
            .unwrap();
    }
    // Concurrent writers: each overwrites version 1 of its stream and sets a secret with
    // an event, so most of these travel in batches.
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("s-{w}"));
            let fix = annals_core::AppendRequest::to_stream(
                stream.clone(),
                ExpectedVersion::Any,
                vec![ProposedEvent::new("New", Json::from_value(&w).unwrap()).with_version(1)],
            )
            .overwriting();
            let r = store.append(fix).await.unwrap();
            assert_eq!((r.events[0].position, r.events[0].version), (w + 1, 1));
            let set = annals_core::AppendRequest::to_stream(
                stream.clone(),
                ExpectedVersion::Exact(1),
                vec![ProposedEvent::new("SET_SECRET", Json::null())],
            )
            .with_secret(annals_core::SecretChange::Set {
                id: format!("k-{w}"),
                secret: format!("v-{w}"),
            });
            let r = store.append(set).await.unwrap();
            let secret = r.secret.expect("the stored secret comes back");
            assert_eq!(
                (secret.id.as_str(), secret.secret.as_deref()),
                (format!("k-{w}").as_str(), Some(format!("v-{w}").as_str()))
            );
            assert_eq!(r.events[0].version, 2);
            // The same id again: refused, and its event is not stored.
            let again = annals_core::AppendRequest::to_stream(
                stream,
                ExpectedVersion::Any,
                vec![ProposedEvent::new("Never", Json::null())],
            )
            .with_secret(annals_core::SecretChange::Set {
                id: format!("k-{w}"),
                secret: "x".into(),
            });
            let refused = store.append(again).await.unwrap_err();
            assert!(
                matches!(refused, Error::SecretAlreadyExists { .. }),
                "{refused:?}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let described = store.describe().await.unwrap();
    assert_eq!(described.event_count, 2 * writers);
    assert_eq!(described.secret_count, writers);
    for w in 0..writers {
        let events = store
            .read_stream(&StreamId::new(format!("s-{w}")), StreamRead::all())
            .await
            .unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["New", "SET_SECRET"]);
        assert_eq!(events[0].position, w + 1);
    }
    let idx: std::collections::BTreeSet<u64> = store
        .list_secrets(annals_core::SecretQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.idx)
        .collect();
    assert_eq!(idx, (0..writers).collect());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
