//! The backends the benchmark can measure. Adding one is one enum variant and one match
//! arm in [`Backend::open`].

use std::path::Path;
use std::sync::Arc;

use annals_core::{EventStore, MemoryStore};
use clap::ValueEnum;

use crate::BenchResult;

/// Which store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// `annals_core::MemoryStore`, the in-memory reference backend.
    Memory,
    /// `annals_embedded::EmbeddedStore`, the single-node on-disk backend (cargo feature
    /// `embedded`, on by default).
    Embedded,
    /// `annals_postgres::PostgresStore` (cargo feature `postgres`), on the server named
    /// by `ANNALS_BENCH_POSTGRES_URL` or `ANNALS_TEST_POSTGRES_URL`.
    Postgres,
    /// `annals_client::HttpStore` talking to a live `annals_server::Server` (embedded
    /// stores in the run's directory) started in-process on `127.0.0.1:0` (cargo
    /// feature `http`, on by default). Concurrent writers share one client, whose
    /// connection pool opens one HTTP connection per concurrent request. Appends made while
    /// two requests are on the wire travel together, each batch with about half of them
    /// (the client's default batching).
    Http,
    /// As `http`, with the client's append batching off: every append is its own request
    /// (up to 1,024 on the wire at once), as with many independent clients.
    HttpPerRequest,
    /// As `http`, with the server's stores in PostgreSQL (the `postgres` backend's server
    /// and schema) instead of embedded stores: `annals serve --postgres URL` (cargo
    /// features `http` and `postgres`).
    HttpPostgres,
}

/// A store opened for one workload run, with whatever must outlive it (the server of
/// the `http` backend).
pub struct OpenStore {
    /// The store the workload measures.
    pub store: Arc<dyn EventStore>,
    /// Stops the in-process server, when there is one.
    server: Option<ServerHandle>,
}

impl OpenStore {
    fn plain(store: Arc<dyn EventStore>) -> Self {
        OpenStore {
            store,
            server: None,
        }
    }

    /// Closes the store, then stops its server (if any) and waits for it.
    pub async fn close(self) -> BenchResult<()> {
        self.store.close().await?;
        if let Some(server) = self.server {
            server.stop().await?;
        }
        Ok(())
    }
}

/// A running in-process server: send on `stop` to shut it down, then join `task`.
struct ServerHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<BenchResult<()>>,
}

impl ServerHandle {
    async fn stop(self) -> BenchResult<()> {
        // The server may have stopped already (then its task reports why).
        let _ = self.stop.send(());
        self.task.await?
    }
}

impl Backend {
    /// The name printed in the `backend` field.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Embedded => "embedded",
            Backend::Postgres => "postgres",
            Backend::Http => "http",
            Backend::HttpPerRequest => "http-per-request",
            Backend::HttpPostgres => "http-postgres",
        }
    }

    /// Opens a fresh, empty store keeping its files (if any) in `dir`, an empty directory.
    pub async fn open(self, dir: &Path) -> BenchResult<OpenStore> {
        match self {
            Backend::Memory => Ok(OpenStore::plain(Arc::new(MemoryStore::new()))),
            Backend::Embedded => open_embedded(dir).map(OpenStore::plain),
            Backend::Postgres => open_postgres().await.map(OpenStore::plain),
            Backend::Http => open_http(dir, http_in_flight(), None).await,
            Backend::HttpPerRequest => open_http(dir, 1024, None).await,
            Backend::HttpPostgres => {
                let url = fresh_postgres_schema().await?;
                open_http(dir, http_in_flight(), Some(url)).await
            }
        }
    }
}

#[cfg(feature = "embedded")]
fn open_embedded(dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Ok(Arc::new(annals_embedded::EmbeddedStore::open(dir)?))
}

#[cfg(not(feature = "embedded"))]
fn open_embedded(_dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Err("this annals-bench was built without the `embedded` feature".into())
}

/// The PostgreSQL server to measure: `ANNALS_BENCH_POSTGRES_URL`, else
/// `ANNALS_TEST_POSTGRES_URL`, else the local default.
#[cfg(feature = "postgres")]
pub fn postgres_url() -> String {
    std::env::var("ANNALS_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("ANNALS_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The schema the benchmark's stores live in; dropped before each workload, so a run
/// leaves at most the last workload's store behind.
#[cfg(any(feature = "postgres", feature = "http"))]
pub const POSTGRES_SCHEMA: &str = "annals_bench";

/// Drops [`POSTGRES_SCHEMA`] on the server of [`postgres_url`], which it returns.
#[cfg(feature = "postgres")]
async fn fresh_postgres_schema() -> BenchResult<String> {
    use sqlx::Connection;
    let url = postgres_url();
    eprintln!("annals-bench: PostgreSQL at {url}, schema {POSTGRES_SCHEMA}");
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {POSTGRES_SCHEMA} CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(url)
}

#[cfg(not(feature = "postgres"))]
async fn fresh_postgres_schema() -> BenchResult<String> {
    Err("this annals-bench was built without the `postgres` feature".into())
}

#[cfg(feature = "postgres")]
async fn open_postgres() -> BenchResult<Arc<dyn EventStore>> {
    let url = fresh_postgres_schema().await?;
    let options = annals_postgres::PostgresOptions {
        schema: POSTGRES_SCHEMA.into(),
        ..annals_postgres::PostgresOptions::default()
    };
    let db = annals_postgres::PostgresDatabase::connect(&url, options).await?;
    Ok(Arc::new(db.open_store("bench").await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres() -> BenchResult<Arc<dyn EventStore>> {
    Err("this annals-bench was built without the `postgres` feature".into())
}

/// Append requests the `http` backend's client keeps on the wire:
/// `ANNALS_BENCH_HTTP_IN_FLIGHT`, else the client's default.
fn http_in_flight() -> usize {
    std::env::var("ANNALS_BENCH_HTTP_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(annals_client_default_in_flight)
}

#[cfg(feature = "http")]
fn annals_client_default_in_flight() -> usize {
    annals_client::DEFAULT_MAX_APPENDS_IN_FLIGHT
}

#[cfg(not(feature = "http"))]
fn annals_client_default_in_flight() -> usize {
    1
}

/// Starts a server on `127.0.0.1:0` in this process, over `dir` or, given a URL, over
/// PostgreSQL in [`POSTGRES_SCHEMA`], and returns a client of a fresh store on it.
#[cfg(feature = "http")]
async fn open_http(
    dir: &Path,
    max_appends_in_flight: usize,
    postgres: Option<String>,
) -> BenchResult<OpenStore> {
    use std::net::SocketAddr;
    let mut config = annals_server::ServerConfig::new(dir.join("server"))
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(url) = postgres {
        config.postgres = Some(url);
        config.postgres_options.schema = POSTGRES_SCHEMA.into();
    }
    let server = annals_server::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr());
    eprintln!("annals-bench: server at {url}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run_until(async move {
                let _ = stopped.await;
            })
            .await
            .map_err(crate::BenchError::from)
    });
    let client = annals_client::HttpStore::new(&url, "bench")?
        .with_max_appends_in_flight(max_appends_in_flight);
    client.create().await?;
    Ok(OpenStore {
        store: Arc::new(client),
        server: Some(ServerHandle { stop, task }),
    })
}

#[cfg(not(feature = "http"))]
async fn open_http(
    _dir: &Path,
    _max_appends_in_flight: usize,
    _postgres: Option<String>,
) -> BenchResult<OpenStore> {
    Err("this annals-bench was built without the `http` feature".into())
}
