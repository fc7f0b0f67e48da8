//! # annals-server
//!
//! The HTTP server of Annals (`annals serve`): the JSON API of `API.md` over many stores,
//! each an embedded store in its own directory under the data directory (or, with
//! [`ServerConfig::postgres`], a store of one PostgreSQL schema), and live
//! subscriptions as Server-Sent Events.
//!
//! ```no_run
//! # async fn run() -> Result<(), annals_server::ServeError> {
//! let server = annals_server::Server::bind(annals_server::ServerConfig::new("./annals-data")).await?;
//! println!("listening on {}", server.local_addr());
//! server.run().await
//! # }
//! ```
//!
//! With [`ServerConfig::tokens`] (a token file), every `/v1` request needs
//! `Authorization: Bearer <token>` (401 without, 403 for a read-only token on a write);
//! without tokens the server refuses to listen on anything but a loopback address.
//!
//! ## Routes
//! Those of `API.md` for stores (`PUT`/`GET`/`DELETE /v1/stores/{store}`, `freeze`,
//! `unfreeze`), events (append, read, export, mark dispatched), streams, stream and keyed
//! snapshots, secrets, live subscriptions (`/subscribe`, SSE), `/healthz`, `/metrics` and
//! `/v1/openapi.json`; plus these extensions, which the HTTP client needs to implement
//! the whole `EventStore` trait:
//! - `GET /v1/stores/{store}/streams/info?aggregateId=&aggregate=&context=` →
//!   `{"stream": <stream info> | null}`;
//! - `GET /v1/stores/{store}/streams/events?aggregateId=&aggregate=&context=&fromVersion=&toVersion=&reverse=&limit=`
//!   → `{"events": [...]}` (one stream by version);
//! - `GET /events` takes `cursor=` and answers `nextCursor` and `end`; `GET /streams`
//!   takes `pageToken=` and answers `nextPageToken`;
//! - the append body may give `writes: [{aggregateId, aggregate, context,
//!   expectedVersion, events}]` instead of `events` (one expectation per stream);
//! - events carry `payloadPadding`/`metadataPadding` (whitespace around the JSON, so
//!   payloads round-trip byte for byte) and may be sent as `payloadBytes` (not JSON:
//!   refused by the store exactly as in-process);
//! - SSE sends `event: error` (the error body) or `event: end` when the store ends a
//!   subscription, so a client can tell that from a dropped connection.

mod append_batch;
mod auth;
mod background;
mod error;
#[cfg(test)]
mod export_tests;
mod incremental;
mod maintenance;
mod metrics;
mod openapi;
mod registry;
mod routes;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use annals_embedded::EmbeddedOptions;

pub use auth::{Role, Tokens};
pub use background::RunningServer;
pub use error::ApiError;
pub use registry::{check_store_name, MAX_STORE_NAME};

/// The address `annals serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2113";

/// The default of [`ServerConfig::max_body_bytes`] (API.md: 16 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

/// The default of [`ServerConfig::keep_alive`] (API.md: every 15 s).
pub const DEFAULT_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The default of [`ServerConfig::max_subscriber_lag`].
pub const DEFAULT_MAX_SUBSCRIBER_LAG: u64 = 100_000;

/// How a server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory: one subdirectory per store (unused with [`Self::postgres`]).
    pub data_dir: PathBuf,
    /// Serve stores in this PostgreSQL database (`postgres://user@host:port/db`)
    /// instead of the data directory: each store is a row of the schema
    /// [`Self::postgres_options`] names, through `annals_postgres`.
    pub postgres: Option<String>,
    /// The options of the PostgreSQL database (schema, pool size).
    pub postgres_options: annals_postgres::PostgresOptions,
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The options of every embedded store the server opens.
    pub embedded: EmbeddedOptions,
    /// Bearer tokens every `/v1` request must carry; without them the server only
    /// listens on a loopback address.
    pub tokens: Option<Tokens>,
    /// How far a live subscriber may fall behind before the server closes its stream
    /// with `event: lagged` (the client resumes from its last id): the number of events
    /// committed since the subscriber connected that it has not been sent yet, i.e.
    /// `head - max(subscriber position, head at connect)`. A subscriber catching up on
    /// old events is not cut for the history it reads, only for falling further behind
    /// the writers while it does. Reads from storage are paced by the connection (no
    /// event is read before the socket takes the previous ones), so memory stays
    /// bounded whatever this is; the limit bounds how stale a connection may get.
    pub max_subscriber_lag: u64,
    /// The largest request body accepted, in bytes (413 `limit_exceeded` naming
    /// `maxBodyBytes` beyond it). NDJSON imports are streamed and not bound by it; one
    /// append (events and all) is.
    pub max_body_bytes: usize,
    /// How often an idle live subscription gets a keep-alive comment (`:` line), so
    /// proxies and clients can tell a quiet stream from a dead connection.
    pub keep_alive: std::time::Duration,
}

impl ServerConfig {
    /// Stores under `data_dir`, listening on [`DEFAULT_LISTEN`], default store options.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            postgres: None,
            postgres_options: annals_postgres::PostgresOptions::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 2113)),
            embedded: EmbeddedOptions::default(),
            tokens: None,
            max_subscriber_lag: DEFAULT_MAX_SUBSCRIBER_LAG,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }

    /// Sets the listen address.
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
}

/// Why the server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is not a loopback one and there is no authentication yet.
    #[error("refusing to listen on {0}: without a token file (--token-file) the server only listens on a loopback address (127.0.0.1, ::1)")]
    NotLoopback(SocketAddr),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The PostgreSQL database could not be reached or prepared.
    #[error("cannot use the PostgreSQL database: {0}")]
    Postgres(annals_core::Error),
    /// Binding or serving failed.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A server bound to its address, ready to run.
pub struct Server {
    registry: Arc<registry::Registry>,
    tokens: Option<Tokens>,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Creates the data directory and binds the listen address.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServeError> {
        if !config.listen.ip().is_loopback() && config.tokens.is_none() {
            return Err(ServeError::NotLoopback(config.listen));
        }
        let backing = match &config.postgres {
            Some(url) => registry::Backing::Postgres(
                annals_postgres::PostgresDatabase::connect(url, config.postgres_options.clone())
                    .await
                    .map_err(ServeError::Postgres)?,
            ),
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| {
                    ServeError::DataDir {
                        path: config.data_dir.clone(),
                        source,
                    }
                })?;
                registry::remove_leftover_trash(&config.data_dir);
                registry::Backing::Embedded {
                    dir: config.data_dir.clone(),
                    options: config.embedded,
                }
            }
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Io {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Io {
            addr: config.listen,
            source,
        })?;
        Ok(Server {
            registry: Arc::new({
                let mut registry = registry::Registry::new(backing, config.max_subscriber_lag);
                registry.max_body_bytes = config.max_body_bytes;
                registry.keep_alive = config.keep_alive;
                registry
            }),
            tokens: config.tokens,
            listener,
            addr,
        })
    }

    /// The address the server listens on (with the port picked when it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates the store `name` unless it exists; `true` when it was created.
    pub async fn ensure_store(&self, name: &str) -> Result<bool, ApiError> {
        match self.registry.create(name).await {
            Ok(()) => Ok(true),
            Err(ApiError::StoreAlreadyExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run(self) -> Result<(), ServeError> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops accepting
    /// connections and refuses new requests (503 `store_closed`), ends live
    /// subscriptions, lets every request already running finish (an append in flight is
    /// answered), and only then closes the stores.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let registry = Arc::clone(&self.registry);
        let app = routes::router(Arc::clone(&self.registry), self.tokens.clone());
        tracing::info!(addr = %self.addr, "annals server listening");
        // Responses go out as soon as they are written (no Nagle delay on small ones).
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let draining = Arc::clone(&registry);
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing requests in flight");
                draining.begin_shutdown();
            })
            .await;
        tracing::info!("shutting down: closing stores");
        registry.close_all().await;
        served.map_err(|source| ServeError::Io {
            addr: self.addr,
            source,
        })
    }
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
