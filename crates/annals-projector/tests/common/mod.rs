//! Shared test setup: the same tests run on the in-memory store, the embedded store in a
//! temporary directory, and through the HTTP client against a real server on
//! 127.0.0.1:0 (over embedded stores).

#![allow(dead_code)]

pub mod counted;
pub mod crash;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use annals_client::HttpStore;
use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
use annals_embedded::EmbeddedStore;
use annals_server::{Server, ServerConfig};

/// Long enough for a slow, shared machine; a test that needs it has hung.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Awaits `f`, failing the test if it hangs.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Embedded,
    Http,
}

/// A backend a test can open, close and reopen (a restart of the application).
pub struct Env {
    kind: Kind,
    dir: tempfile::TempDir,
    memory: Arc<MemoryStore>,
    server: Option<(
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Env {
    pub async fn new(kind: Kind) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = if kind == Kind::Http {
            let server = Server::bind(
                ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))),
            )
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
            let client = HttpStore::new(&format!("http://{addr}"), "t").unwrap();
            client.create().await.unwrap();
            Some((addr, stop, task))
        } else {
            None
        };
        Env {
            kind,
            dir,
            memory: Arc::new(MemoryStore::new()),
            server,
        }
    }

    /// Opens the store (for memory: the same store every time).
    pub fn open(&self) -> Arc<dyn EventStore> {
        match self.kind {
            Kind::Memory => self.memory.clone(),
            Kind::Embedded => Arc::new(EmbeddedStore::open(self.dir.path().join("store")).unwrap()),
            Kind::Http => {
                let (addr, _, _) = self.server.as_ref().unwrap();
                Arc::new(HttpStore::new(&format!("http://{addr}"), "t").unwrap())
            }
        }
    }

    /// Closes `store` as an application does on exit and opens it again.
    pub async fn reopen(&self, store: Arc<dyn EventStore>) -> Arc<dyn EventStore> {
        if self.kind != Kind::Memory {
            store.close().await.unwrap();
        }
        drop(store);
        self.open()
    }

    pub async fn finish(mut self) {
        if let Some((_, stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
    }
}

/// Appends `count` single-event commits to `stream`, types `T0`, `T1`, …
pub async fn append(store: &dyn EventStore, stream: &StreamId, count: usize) {
    for n in 0..count {
        store
            .append_to_stream(
                stream,
                ExpectedVersion::Any,
                vec![ProposedEvent::new(format!("T{n}"), Json::null())],
            )
            .await
            .unwrap();
    }
}

/// Runs an async test body on each backend, as one `#[tokio::test]` per backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Kind::Memory).await }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Kind::Embedded).await }
            )*
        }
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Kind::Http).await }
            )*
        }
    };
}
