//! A subscription over HTTP survives a server restart: it reconnects and resumes after
//! the last position it delivered, with no gap and no duplicate.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use annals_client::HttpStore;
use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId, Subscribe};
use annals_server::{Server, ServerConfig};
use futures::StreamExt;

async fn start(
    dir: &Path,
    addr: SocketAddr,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::bind(ServerConfig::new(dir).listen(addr))
        .await
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run_until(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop, task)
}

async fn append(store: &HttpStore, t: &str) {
    store
        .append_to_stream(
            &StreamId::new("s"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new(t, Json::null())],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, task) = start(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let store = HttpStore::new(&format!("http://{addr}"), "r").unwrap();
    store.create().await.unwrap();
    append(&store, "one").await;
    let mut live = store.subscribe(Subscribe::from_start());
    let first = live.next().await.unwrap().unwrap();
    assert_eq!(first.position, 1);

    stop.send(()).unwrap();
    task.await.unwrap();
    let (_, stop, task) = start(dir.path(), addr).await;
    append(&store, "two").await;
    append(&store, "three").await;

    let mut rest = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("the subscription resumes in time")
            .unwrap()
            .unwrap();
        rest.push((e.position, e.event_type.to_string()));
    }
    assert_eq!(rest, [(2, "two".to_owned()), (3, "three".to_owned())]);
    stop.send(()).unwrap();
    task.await.unwrap();
}
