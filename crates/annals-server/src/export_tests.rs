//! `maintenanceMode=auto` exports over real HTTP, with a store that holds the body at a
//! chosen page: the freeze lasts while the body is sent and is lifted when the body
//! fails or the client goes away.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use annals_core::{
    Error, EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, ReadAll, ReadAllPage,
    Result, StreamId,
};
use annals_testkit::wrap::{Intercept, Wrapped};

use crate::registry::{Backing, Registry};

/// What the store's export reads do after the first page.
#[derive(Clone, Copy)]
enum Pages {
    /// The second read fails.
    FailSecond,
    /// Every read returns the first page again, never the end: the body ends only when
    /// the client goes away.
    Endless,
}

/// A memory store whose `read_all` misbehaves as [`Pages`] says.
struct Paged {
    inner: MemoryStore,
    pages: Pages,
    reads: AtomicU64,
}

#[async_trait]
impl Intercept for Paged {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }
    fn backend(&self) -> &'static str {
        "paged"
    }
    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        match self.pages {
            _ if n == 0 => self.inner.read_all(read).await,
            Pages::FailSecond => Err(Error::backend(
                "paged",
                std::io::Error::other("the disk went away"),
            )),
            Pages::Endless => {
                let mut page = self.inner.read_all(ReadAll::forward().limit(100)).await?;
                page.end = false;
                Ok(page)
            }
        }
    }
}

/// A server on 127.0.0.1 hosting the store `p` (a [`Paged`] store with 1500 events);
/// returns its export URL and the store.
async fn serve(pages: Pages, dir: &std::path::Path) -> (String, Arc<Wrapped<Paged>>) {
    let store = Arc::new(Wrapped(Paged {
        inner: MemoryStore::new(),
        pages,
        reads: AtomicU64::new(0),
    }));
    let events = (0..1500)
        .map(|i| ProposedEvent::new("E", Json::from_raw(format!("{{\"i\":{i}}}"))))
        .collect();
    store
        .append_to_stream(&StreamId::new("a"), ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let registry = Arc::new(Registry::new(
        Backing::Embedded {
            dir: dir.to_path_buf(),
            options: annals_embedded::EmbeddedOptions::default(),
        },
        crate::DEFAULT_MAX_SUBSCRIBER_LAG,
    ));
    registry
        .cache("p", Arc::clone(&store) as Arc<dyn EventStore>)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = crate::routes::router(registry, None);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://{addr}/v1/stores/p/events/export?maintenanceMode=auto"),
        store,
    )
}

async fn frozen(store: &Wrapped<Paged>) -> bool {
    store.describe().await.unwrap().frozen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_export_body_lifts_the_freeze_before_the_error_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = serve(Pages::FailSecond, dir.path()).await;
    // The connection is cut at the error: before the head reaches the client, or in
    // the body.
    let failed = match reqwest::get(&url).await {
        Err(_) => true,
        Ok(mut resp) => {
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            }
        }
    };
    assert!(failed, "the body ends with an error, not a clean end");
    assert!(!frozen(&store).await);
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_client_goes_away_lifts_the_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = serve(Pages::Endless, dir.path()).await;
    let mut resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    for _ in 0..3 {
        assert!(!resp.chunk().await.unwrap().unwrap().is_empty());
    }
    // The body never ends by itself: the store stays frozen while it is sent.
    assert!(frozen(&store).await);
    let err = store
        .append_to_stream(
            &StreamId::new("b"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new("Late", Json::null())],
        )
        .await;
    assert!(matches!(err, Err(Error::Frozen)), "{err:?}");
    drop(resp);
    // The server learns of the disconnect at its next writes, drops the body, and the
    // freeze goes with it.
    let mut waited = 0;
    while frozen(&store).await {
        waited += 1;
        assert!(
            waited < 600,
            "the store is still frozen after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
