//! Shared test setup: the same tests run on the in-memory store, the embedded store in a
//! temporary directory, PostgreSQL (a schema of its own per test, dropped at the end),
//! and through the HTTP client against a real server on 127.0.0.1:0 (over embedded
//! stores).

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
    Postgres,
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
    /// With [`Kind::Postgres`]: the database, in a schema of this test's own.
    postgres: Option<annals_postgres::PostgresDatabase>,
}

/// A schema name unique to this process and call.
fn schema() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "annals_projector_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
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
        let postgres = if kind == Kind::Postgres {
            let url = annals_testkit::services::POSTGRES.url();
            let options = annals_postgres::PostgresOptions {
                schema: schema(),
                ..annals_postgres::PostgresOptions::default()
            };
            Some(
                annals_postgres::PostgresDatabase::connect(&url, options)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        Env {
            kind,
            dir,
            memory: Arc::new(MemoryStore::new()),
            server,
            postgres,
        }
    }

    /// Opens the store (for memory: the same store every time).
    pub async fn open(&self) -> Arc<dyn EventStore> {
        match self.kind {
            Kind::Memory => self.memory.clone(),
            Kind::Embedded => Arc::new(EmbeddedStore::open(self.dir.path().join("store")).unwrap()),
            Kind::Postgres => {
                let db = self.postgres.as_ref().unwrap();
                Arc::new(db.open_store("t").await.unwrap())
            }
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
        self.open().await
    }

    pub async fn finish(mut self) {
        if let Some((_, stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.await.unwrap();
        }
        if let Some(db) = self.postgres.take() {
            let schema = db.schema().to_owned();
            let _ = db.drop_store("t").await;
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(db.pool())
                .await;
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
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    // Skipped loudly without a server, failed under CI=true.
                    if annals_testkit::services::POSTGRES.available().is_none() {
                        return;
                    }
                    super::$name($crate::common::Kind::Postgres).await
                }
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
