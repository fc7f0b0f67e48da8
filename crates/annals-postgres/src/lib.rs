//! # annals-postgres
//!
//! The PostgreSQL backend of Annals: event stores kept in a PostgreSQL database, for
//! users who outgrow one machine — a managed or replicated PostgreSQL, with several
//! Annals processes on one database. It implements the whole
//! [`annals_core::EventStore`] trait and passes the same conformance suite as the
//! in-memory and embedded backends.
//!
//! ## Durability contract
//! **When `append` (or any other write) returns `Ok`, its transaction has committed
//! with `synchronous_commit = on`**: the backend sets that on every connection it opens,
//! so the commit's WAL record was flushed to the primary's disk (and, when the server
//! has synchronous standbys configured, to theirs) before PostgreSQL answered. A crash
//! of the Annals process (`kill -9`) or of the database server after that point loses
//! nothing that was acknowledged, and never leaves half of an append: every group of
//! appends is one transaction. An append that fails with a connection error during its
//! commit may or may not be stored (as a whole); re-send it with the same event ids and
//! it is answered as an idempotent retry if it was.
//!
//! ## How positions are assigned
//! Each store has one row in `stores` holding its head position. Every transaction
//! that appends to a store takes that row first and holds it until it commits, and
//! assigns positions `head + 1 …` while holding it (`UPDATE stores SET head = head + n
//! … RETURNING head`). So appends to one store commit one after another, in position
//! order, whichever process makes them: positions are dense (no gaps), and a reader
//! that sees position `P` also sees every position below it — no transaction can still
//! be about to commit a smaller one. No sequence is involved. The head row and the
//! events are read in one statement, so a page never holds a position above the head
//! it reports. `UNIQUE (store, stream, version)` and `UNIQUE (store, event id)` back
//! the planner up; a violation rolls the transaction back and the append is planned
//! again against fresh state, so it surfaces as `WrongExpectedVersion` (with the
//! re-read actual version), `DuplicateEventId`, or the idempotent retry it was.
//!
//! ## How appends are written
//! Inside one process, one appender task per store, with a connection of its own,
//! takes every append waiting for it and writes them in one transaction (group
//! commit), planned with [`annals_core::append::plan`]. Expected versions are checked
//! against the database inside that transaction, never against a cache the database
//! has not just confirmed:
//!
//! - **Locked path**: `BEGIN`; take the head row (`SELECT … FOR NO KEY UPDATE`); then,
//!   in fresh statements that see every commit made before the row was granted, read
//!   the current version of each stream involved and the stored events of the ids the
//!   appends name; plan; insert every event with one multi-row statement (`unnest` of
//!   arrays) that also moves the head; `COMMIT`.
//! - **Verified path**: the appender remembers the stream versions it read or wrote and
//!   the head they were current at. When every stream of an append is remembered, it
//!   plans against that memory and writes with ONE autocommit statement that takes the
//!   head row and inserts only if the head is still the remembered one and the store
//!   is not frozen. If another process appended in between, the statement writes
//!   nothing, the memory is dropped, and the appends take the locked path. An append
//!   the memory cannot decide (a stream not remembered, a planning error, an event id
//!   that turns out to be stored) takes the locked path too. One round trip instead of
//!   four is what lets a single writer approach the server's commit rate.
//!
//! Appends that replace events in place ([`AppendRequest::overwriting`]) or set or
//! delete a secret ([`AppendRequest::with_secret`]) always take the locked path: it
//! also reads the stored events at the versions they name and the secret they change,
//! and writes the replacements (an `UPDATE` of each row at its position, dispatch mark
//! kept), the secret, and the new events in the same transaction. Replacing events
//! moves the head row's generation on, so appenders of other processes re-read the
//! store's last timestamp before their next one-statement write.
//!
//! ## Reads
//! Every read is one statement over committed rows. Store-wide pages expected to hold
//! at least 512 events, with no filter on names (stream, context, aggregate, type),
//! are fetched with `COPY … TO STDOUT (FORMAT binary)` and decoded without copying;
//! other reads use prepared statements. An unfiltered page of 4,096 events or more is
//! an exact position range (positions are dense): the head is read first, then the two
//! halves of the range are read at once on two connections, each bounded by that head.
//!
//! ## Several Annals processes on one database
//! Point every process at the same database and schema and open the store by the same
//! name: they share its events. Appends from any process serialise on the store's head
//! row, optimistic concurrency holds across processes, and subscribers in any process
//! see every event exactly once, in position order: each committed group sends at most
//! one `NOTIFY` on the store's channel (`<schema>:<store number>`, payload
//! `<store name>:<head>`) as a wake-up hint — and none when no connection listens for
//! the store (a listening connection puts its pid on the store's head row, which the
//! write statement reads; a `NOTIFY` serialises commits database-wide, so unfollowed
//! stores do without) — every subscriber re-reads
//! committed events from its cursor, and a poll of the head row
//! ([`PostgresOptions::poll_interval`], 500 ms by default) covers lost notifications
//! and setups where `LISTEN/NOTIFY` is unavailable (some poolers; turn
//! [`PostgresOptions::notifications`] off there). Put a transaction-mode pooler such
//! as PgBouncer in front only with notifications off. Every process migrates the
//! schema at start, under an advisory lock; a process refuses a schema migrated by a
//! newer Annals.
//!
//! Stores are created by [`PostgresDatabase::open_store`] or
//! [`PostgresDatabase::create_store`], and can be checked, listed and dropped by name
//! from any process ([`PostgresDatabase::store_exists`],
//! [`PostgresDatabase::list_stores`], [`PostgresDatabase::drop_store`]).
//!
//! ## Maintenance
//! `import_events`, `import_secrets`, `import_snapshots`, `clear_events` and
//! `clear_secrets` are allowed while the store is frozen. `import_snapshots` is one
//! statement; each of the others is one transaction that takes the head row first,
//! like an append: an imported batch gets positions `head + 1 …` under that lock (so
//! appends of other processes stay dense and ordered around it), and `expected_head` is
//! compared with the head read under the lock. `clear_events` resets the head to 0 and
//! moves the head row's generation on, so no appender mistakes a head that later grows
//! back to a remembered value for the state it remembers.
//!
//! ## Requirements
//! PostgreSQL 10 or newer (identity columns, `ON CONFLICT`, `FOR NO KEY UPDATE`,
//! multi-argument `unnest`); tested with PostgreSQL 15.20. The database must use the
//! UTF8 encoding. The role needs `CREATE` on the database the first time (to create the
//! schema) and read/write on the schema's tables after that.
//!
//! ## Storage
//! One schema (default `annals`, see [`PostgresOptions::schema`]) holds every store of
//! the database: `stores` (one head row per store: head position, last timestamp,
//! frozen flag, stream counter, next secret idx, generation, pids of listening
//! connections), `events`, `streams` (each stream's names, number and first event; its
//! version is read from the events index), `keyed_snapshots`, `stream_snapshots`,
//! `secrets`, and `schema_migrations` (the applied versioned migrations; version 2
//! rewrites version-1 event rows in place into the layout below).
//!
//! An `events` row keeps as columns only what an index or a filter needs — position,
//! stream number, version, timestamp, dispatch flag, type, and the id when the caller
//! supplied it (generated ids carry their position and need no index entry) — and
//! everything else in one packed `bytea` record: id, stream names, commit id and
//! sequence, payload and metadata, the bodies byte-for-byte (never `jsonb`, which would
//! reorder keys). One datum instead of eight per event about halves the server's CPU
//! time per event when writing and when reading. Names are compared byte-wise
//! (`COLLATE "C"`). Versions, positions and timestamps are `bigint`, so explicit
//! versions above `i64::MAX` are refused.
//!
//! ```no_run
//! use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId, StreamRead};
//! use annals_postgres::{PostgresDatabase, PostgresOptions};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let db = PostgresDatabase::connect("postgres://postgres@127.0.0.1:5432/test",
//!     PostgresOptions::default()).await?;
//! let store = db.open_store("orders").await?;
//! let stream = StreamId::new("o-1").with_aggregate("order");
//! store.append_to_stream(&stream, ExpectedVersion::NoStream,
//!     vec![ProposedEvent::new("Placed", Json::from_raw(r#"{"total":5}"#))]).await?;
//! let events = store.read_stream(&stream, StreamRead::all()).await?;
//! assert_eq!(events[0].payload.as_str(), Some(r#"{"total":5}"#));
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

mod appender;
mod copy;
mod error;
mod maintenance;
mod notify;
mod read;
mod record;
mod schema;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use annals_core::limits::{check_name, check_text};
use annals_core::rules::{
    check_keyed_snapshots, check_stream, check_stream_read, check_stream_snapshot,
};
use annals_core::subscription::{subscription, PageReader, CLOSED};
use annals_core::{
    AppendRequest, AppendResult, Capabilities, Error, EventStore, EventStream, ImportBatch,
    ImportOutcome, Json, KeyedSnapshot, ListStreams, NewStreamSnapshot, OnConflict, Position,
    ReadAll, ReadAllPage, RecordedEvent, Result, Secret, SecretImport, SecretQuery,
    SnapshotKeyQuery, StoreDescription, StreamId, StreamInfo, StreamPage, StreamRead,
    StreamSnapshot, Subscribe, Timestamp, Version,
};
use async_trait::async_trait;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot, watch};

use crate::appender::{Appender, Command};
use crate::error::{corrupted, db_error, unique_violation, BACKEND};
use crate::read::to_sql;
pub use crate::schema::check_schema_name;
use crate::schema::Sql;

/// Options of a PostgreSQL database connection and of the stores opened through it.
///
/// ```
/// let o = annals_postgres::PostgresOptions::default();
/// assert_eq!(o.schema, "annals");
/// assert!(o.notifications);
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// The schema holding Annals' tables; created and migrated when missing. Lower-case
    /// letters, digits and `_`, at most 40 bytes ([`check_schema_name`]).
    pub schema: String,
    /// Pooled connections for reads and the rarer writes (freeze, snapshots, secrets,
    /// dispatch marks), shared by the stores of one [`PostgresDatabase`]. Each open
    /// store also has one appender connection of its own, and each store with live
    /// subscribers keeps one pooled connection for `LISTEN`.
    pub max_connections: u32,
    /// Whether subscribers are woken by `LISTEN/NOTIFY` (as well as by polling).
    pub notifications: bool,
    /// How often a store with subscribers re-reads its head row, to catch commits of
    /// other processes whose notification was lost.
    pub poll_interval: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "annals".into(),
            max_connections: 8,
            notifications: true,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// A connection pool to one PostgreSQL database with the Annals schema migrated; opens
/// stores. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresDatabase {
    inner: Arc<Database>,
}

struct Database {
    pool: PgPool,
    connect_options: PgConnectOptions,
    options: PostgresOptions,
    sql: Arc<Sql>,
    /// Open stores by name, so a process has one appender per store.
    open: Mutex<HashMap<String, Weak<Handle>>>,
}

impl PostgresDatabase {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), checks the
    /// server, and creates or migrates the schema.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// assert_eq!(db.schema(), "annals");
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self> {
        let connect_options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("url", format!("not a PostgreSQL connection URL: {e}")))?;
        Self::connect_with(connect_options, options).await
    }

    /// Like [`PostgresDatabase::connect`], with connection options built by the caller
    /// (TLS, socket paths, passwords from elsewhere). `synchronous_commit` is forced on.
    ///
    /// ```no_run
    /// use sqlx::postgres::PgConnectOptions;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let connect = PgConnectOptions::new().host("127.0.0.1").username("postgres").database("test");
    /// let db = annals_postgres::PostgresDatabase::connect_with(connect, Default::default()).await?;
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn connect_with(
        connect_options: PgConnectOptions,
        options: PostgresOptions,
    ) -> Result<Self> {
        check_schema_name(&options.schema)?;
        let connect_options = connect_options
            .application_name("annals")
            .options([("synchronous_commit", "on")]);
        let mut conn = sqlx::PgConnection::connect_with(&connect_options)
            .await
            .map_err(db_error)?;
        check_server(&mut conn).await?;
        schema::migrate(&mut conn, &options.schema).await?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .min_connections(0)
            .connect_lazy_with(connect_options.clone());
        Ok(PostgresDatabase {
            inner: Arc::new(Database {
                pool,
                connect_options,
                sql: Arc::new(Sql::new(&options.schema)),
                options,
                open: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The schema holding the stores.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await.unwrap();
    /// println!("{}", db.schema());
    /// # });
    /// ```
    pub fn schema(&self) -> &str {
        &self.inner.options.schema
    }

    /// The connection pool (for administration and tests; Annals' tables are private to
    /// the backend).
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await.unwrap();
    /// let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(db.pool()).await.unwrap();
    /// # });
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Opens the store named `name` (at most 256 bytes, no NUL), creating it when it
    /// does not exist. Opening a store that is already open in this process returns
    /// another handle to it.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// let orders = db.open_store("orders").await?;
    /// assert_eq!(orders.name(), "orders");
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn open_store(&self, name: &str) -> Result<PostgresStore> {
        check_name("store", name, true)?;
        if let Some(handle) = self.registered(name) {
            return Ok(PostgresStore { handle });
        }
        let db = &self.inner;
        sqlx::query(&db.sql.create_store)
            .bind(name)
            .execute(&db.pool)
            .await
            .map_err(db_error)?;
        let store_id: i32 = sqlx::query(&db.sql.store_id)
            .bind(name)
            .fetch_one(&db.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
        let head: i64 = sqlx::query(&db.sql.head)
            .bind(store_id)
            .fetch_one(&db.pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
        let mut registry = db.open.lock().map_err(|_| poisoned_lock())?;
        if let Some(handle) = registry.get(name).and_then(Weak::upgrade) {
            if !handle.shared.closed.load(Ordering::Acquire) {
                return Ok(PostgresStore { handle });
            }
        }
        let shared = Arc::new(Shared {
            store_id,
            name: name.to_owned(),
            channel: format!("{}:{store_id}", db.options.schema),
            pool: db.pool.clone(),
            connect_options: db.connect_options.clone(),
            sql: db.sql.clone(),
            options: db.options.clone(),
            head: watch::Sender::new(head.max(0) as Position),
            closed: AtomicBool::new(false),
            tracking: Mutex::new(false),
            runtime: tokio::runtime::Handle::current(),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Appender::new(shared.clone()).run(receiver));
        let handle = Arc::new(Handle { shared, commands });
        registry.retain(|_, h| h.strong_count() > 0);
        registry.insert(name.to_owned(), Arc::downgrade(&handle));
        Ok(PostgresStore { handle })
    }

    /// Creates the store named `name` without opening it: `true` when this call created
    /// it, `false` when it already existed. Of several processes creating the same
    /// store at once, exactly one gets `true`.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// if db.create_store("invoices").await? {
    ///     println!("created");
    /// }
    /// assert!(!db.create_store("invoices").await?, "it exists now");
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn create_store(&self, name: &str) -> Result<bool> {
        check_name("store", name, true)?;
        let created = sqlx::query(&self.inner.sql.create_store_returning)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db_error)?;
        Ok(created.is_some())
    }

    /// Whether the store named `name` exists in the database (created by any process).
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// db.create_store("invoices").await?;
    /// assert!(db.store_exists("invoices").await?);
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn store_exists(&self, name: &str) -> Result<bool> {
        check_name("store", name, true)?;
        let row = sqlx::query(&self.inner.sql.store_id)
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    /// The names of every store in the database, in byte order.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// db.create_store("invoices").await?;
    /// assert!(db.list_stores().await?.iter().any(|n| n == "invoices"));
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn list_stores(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.inner.sql.list_stores)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(db_error))
            .collect()
    }

    /// Deletes the store named `name` and all its data: `true` when it existed. A
    /// handle of this process open on it is closed first (its queued appends finish);
    /// handles in other processes get [`Error::NotFound`] from then on.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = annals_postgres::PostgresDatabase::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", Default::default()).await?;
    /// db.create_store("scratch").await?;
    /// assert!(db.drop_store("scratch").await?);
    /// assert!(!db.store_exists("scratch").await?);
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn drop_store(&self, name: &str) -> Result<bool> {
        check_name("store", name, true)?;
        if let Some(handle) = self.registered(name) {
            match (PostgresStore { handle }).drop_store().await {
                // Closed meanwhile by another caller: delete the rows below.
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => return Err(e),
            }
        }
        let db = &self.inner;
        let id: Option<i32> = sqlx::query(&db.sql.store_id)
            .bind(name)
            .fetch_optional(&db.pool)
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(db_error)?;
        match id {
            Some(id) => delete_store_rows(&db.pool, &db.sql, id).await,
            None => Ok(false),
        }
    }

    fn registered(&self, name: &str) -> Option<Arc<Handle>> {
        let registry = self.inner.open.lock().ok()?;
        let handle = registry.get(name)?.upgrade()?;
        (!handle.shared.closed.load(Ordering::Acquire)).then_some(handle)
    }
}

async fn check_server(conn: &mut sqlx::PgConnection) -> Result<()> {
    let row = sqlx::query(
        "SELECT current_setting('server_version_num')::int, current_setting('server_encoding')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    let version: i32 = row.try_get(0).map_err(db_error)?;
    let encoding: String = row.try_get(1).map_err(db_error)?;
    let refuse = |why: String| Err(Error::backend(BACKEND, std::io::Error::other(why)));
    if version < 100_000 {
        return refuse(format!(
            "PostgreSQL {version} is too old: Annals needs version 10 or newer"
        ));
    }
    if encoding != "UTF8" {
        return refuse(format!(
            "the database encoding is {encoding}: Annals needs UTF8"
        ));
    }
    Ok(())
}

/// Runs a freeze or unfreeze statement, which returns a row only when it changed the
/// flag; no row means the store already was in that state (or is gone, which
/// `read::head` reports).
async fn set_frozen(shared: &Shared, sql: &str, unchanged: Error) -> Result<()> {
    let done = sqlx::query(sql)
        .bind(shared.store_id)
        .fetch_optional(&shared.pool)
        .await
        .map_err(db_error)?;
    match done {
        Some(_) => Ok(()),
        None => {
            read::head(shared).await?;
            Err(unchanged)
        }
    }
}

fn poisoned_lock() -> Error {
    Error::backend(
        BACKEND,
        std::io::Error::other("a thread panicked while holding the open-store registry"),
    )
}

/// State shared by a store's handles, its appender and its subscription helpers.
pub(crate) struct Shared {
    pub(crate) store_id: i32,
    pub(crate) name: String,
    /// The `NOTIFY` channel of the store.
    pub(crate) channel: String,
    pub(crate) pool: PgPool,
    pub(crate) connect_options: PgConnectOptions,
    pub(crate) sql: Arc<Sql>,
    pub(crate) options: PostgresOptions,
    /// The newest committed position known to this process; [`CLOSED`] once closed.
    pub(crate) head: watch::Sender<Position>,
    pub(crate) closed: AtomicBool,
    /// Whether the listener and poller were started.
    tracking: Mutex<bool>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl Shared {
    /// Announces a committed head; the announced head only moves forward.
    pub(crate) fn publish(&self, head: Position) {
        self.head.send_if_modified(|announced| {
            let newer = *announced != CLOSED && head > *announced;
            if newer {
                *announced = head;
            }
            newer
        });
    }

    /// Announces that the head went back to 0 (`clear_events`).
    pub(crate) fn restart_head(&self) {
        self.head.send_if_modified(|announced| {
            let restart = *announced != CLOSED && *announced != 0;
            if restart {
                *announced = 0;
            }
            restart
        });
    }

    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.head.send_replace(CLOSED);
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn start_tracking(self: &Arc<Self>) {
        if let Ok(mut started) = self.tracking.lock() {
            if !*started {
                *started = true;
                notify::start(self);
            }
        }
    }
}

/// The error of a store whose head row is gone (another process dropped it).
pub(crate) fn store_gone_named(name: &str) -> Error {
    Error::not_found("store", name)
}

/// Deletes every row of the store, under its head row lock.
pub(crate) fn drop_store_data(shared: &Shared) -> futures::future::BoxFuture<'_, Result<()>> {
    async move {
        delete_store_rows(&shared.pool, &shared.sql, shared.store_id).await?;
        Ok(())
    }
    .boxed()
}

/// Deletes every row of store `id` under its head row lock; `false` when its head row
/// was already gone.
async fn delete_store_rows(pool: &PgPool, sql: &Sql, id: i32) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let locked = sqlx::query(&sql.lock_store)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
    for statement in &sql.drop_store {
        sqlx::query(statement)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    Ok(locked.is_some())
}

struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

/// One event store in a PostgreSQL database. Cheap to clone: clones share the store
/// (and its one appender).
#[derive(Clone)]
pub struct PostgresStore {
    handle: Arc<Handle>,
}

impl PostgresStore {
    /// Connects to `url` with default options and opens the store `name` (a shortcut
    /// for [`PostgresDatabase::connect`] then [`PostgresDatabase::open_store`]).
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = annals_postgres::PostgresStore::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", "orders").await?;
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn connect(url: &str, name: &str) -> Result<Self> {
        PostgresDatabase::connect(url, PostgresOptions::default())
            .await?
            .open_store(name)
            .await
    }

    /// The store's name.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = annals_postgres::PostgresStore::connect(
    ///     "postgres://postgres@127.0.0.1:5432/test", "orders").await.unwrap();
    /// assert_eq!(store.name(), "orders");
    /// # });
    /// ```
    pub fn name(&self) -> &str {
        &self.handle.shared.name
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    fn open(&self) -> Result<&Shared> {
        let shared = self.shared();
        shared.check_open()?;
        Ok(shared)
    }

    async fn send(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<AppendResult>>) -> Command,
    ) -> Result<AppendResult> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .commands
            .send(make(tx))
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn stop(&self, drop: bool) -> Result<()> {
        let shared = self.shared();
        if shared.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.handle.commands.send(Command::Close { drop, reply });
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        shared.mark_closed();
        result
    }

    /// Runs a write that takes the head row lock, in its own transaction; `f` gets the
    /// transaction and whether the store is frozen.
    async fn locked<T>(
        &self,
        f: impl for<'t> FnOnce(
            &'t mut sqlx::PgConnection,
            bool,
            i64,
        ) -> futures::future::BoxFuture<'t, Result<T>>,
    ) -> Result<T> {
        let shared = self.open()?;
        let mut tx = shared.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(&shared.sql.lock_store)
            .bind(shared.store_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| store_gone_named(&shared.name))?;
        let frozen: bool = row.try_get(0).map_err(db_error)?;
        let secret_count: i64 = row.try_get(1).map_err(db_error)?;
        let value = f(&mut tx, frozen, secret_count).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(value)
    }
}

fn utf8(bytes: Vec<u8>, location: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| corrupted(location, e.to_string()))
}

pub(crate) fn secret_value(bytes: Option<Vec<u8>>) -> Result<Option<String>> {
    bytes.map(|b| utf8(b, "postgres table secrets")).transpose()
}

/// Decodes a stream snapshot row (id, stream version, schema version, data,
/// timestamp).
fn stream_snapshot_from_row(
    stream: &StreamId,
    row: &sqlx::postgres::PgRow,
) -> Result<StreamSnapshot> {
    let schema_version: i64 = row.try_get(2).map_err(db_error)?;
    let data: Vec<u8> = row.try_get(3).map_err(db_error)?;
    Ok(StreamSnapshot {
        id: row.try_get(0).map_err(db_error)?,
        stream: stream.clone(),
        stream_version: unsigned(
            row.try_get(1).map_err(db_error)?,
            "stream_snapshots.stream_version",
        )?,
        schema_version: u32::try_from(schema_version).map_err(|_| {
            corrupted(
                "postgres column stream_snapshots.schema_version",
                format!("{schema_version} is out of range"),
            )
        })?,
        data: Json::from_raw(data),
        timestamp: Timestamp::from_millis(row.try_get(4).map_err(db_error)?),
    })
}

fn unsigned(v: i64, location: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupted(location, format!("negative value {v}")))
}

#[async_trait]
impl EventStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
        if let Some(after) = &query.start_after {
            check_name("start_after", after, true)?;
        }
        let shared = self.open()?;
        let rows = sqlx::query(&shared.sql.list_snapshots)
            .bind(shared.store_id)
            .bind(query.start_after.as_deref())
            .bind(query.limit.map(to_sql))
            .fetch_all(&shared.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(KeyedSnapshot {
                    key: row.try_get(0).map_err(db_error)?,
                    content: utf8(
                        row.try_get(1).map_err(db_error)?,
                        "postgres table keyed_snapshots",
                    )?,
                    timestamp: Timestamp::from_millis(row.try_get(2).map_err(db_error)?),
                })
            })
            .collect()
    }

    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64> {
        check_keyed_snapshots(&snapshots)?;
        let shared = self.open()?;
        if snapshots.is_empty() {
            return Ok(0);
        }
        // One statement: all of them or none.
        sqlx::query(&shared.sql.import_snapshots)
            .bind(shared.store_id)
            .bind(snapshots.iter().map(|s| s.key.as_str()).collect::<Vec<_>>())
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.content.as_bytes())
                    .collect::<Vec<_>>(),
            )
            .bind(
                snapshots
                    .iter()
                    .map(|s| s.timestamp.as_millis())
                    .collect::<Vec<_>>(),
            )
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        Ok(snapshots.len() as u64)
    }

    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>> {
        check_stream(stream)?;
        let shared = self.open()?;
        let rows = sqlx::query(&shared.sql.list_stream_snapshots)
            .bind(shared.store_id)
            .bind(&stream.context)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .fetch_all(&shared.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| stream_snapshot_from_row(stream, row))
            .collect()
    }

    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        let shared = self.open()?;
        let Some(max) = positions.iter().max() else {
            return Ok(());
        };
        // One statement reads the head and marks only when every position is at or
        // below it (and none is 0).
        let bound = if positions.contains(&0) {
            i64::MAX
        } else {
            to_sql(*max)
        };
        let row = sqlx::query(&shared.sql.mark_dispatched_positions)
            .bind(shared.store_id)
            .bind(positions.iter().map(|p| to_sql(*p)).collect::<Vec<_>>())
            .bind(bound)
            .fetch_optional(&shared.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| store_gone_named(&shared.name))?;
        let head = unsigned(row.try_get(0).map_err(db_error)?, "stores.head")?;
        match positions.iter().find(|p| **p == 0 || **p > head) {
            Some(p) => Err(Error::not_found("event", format!("position {p}"))),
            None => Ok(()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dense_positions: true,
            atomic_multi_stream: true,
            durable: true,
        }
    }

    async fn describe(&self) -> Result<StoreDescription> {
        let shared = self.open()?;
        let row = sqlx::query(&shared.sql.describe)
            .bind(shared.store_id)
            .fetch_optional(&shared.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| store_gone_named(&shared.name))?;
        let get = |i: usize| -> Result<i64> { row.try_get(i).map_err(db_error) };
        let head = unsigned(get(0)?, "stores.head")?;
        let last: Option<i64> = row.try_get(1).map_err(db_error)?;
        let secrets = unsigned(get(4)?, "stores.secret_count")?;
        let deleted = unsigned(get(5)?, "stores.deleted_secret_count")?;
        Ok(StoreDescription {
            event_count: head,
            stream_count: unsigned(get(3)?, "stores.stream_count")?,
            head_position: head,
            last_event_timestamp: last.map(Timestamp::from_millis),
            frozen: row.try_get(2).map_err(db_error)?,
            secret_count: secrets,
            set_secret_count: secrets.saturating_sub(deleted),
            deleted_secret_count: deleted,
            bytes_on_disk: None,
        })
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.open()?;
        annals_core::append::validate(&request)?;
        appender::check_request(&request)?;
        self.send(|reply| Command::Append(request, reply)).await
    }

    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        check_stream_read(stream, &read)?;
        read::read_stream(self.open()?, stream, &read).await
    }

    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        read::read_all(self.open()?, &read).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        check_stream(stream)?;
        let shared = self.open()?;
        read::stream_info(shared, stream).await
    }

    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        read::list_streams(self.open()?, &query).await
    }

    async fn freeze(&self) -> Result<()> {
        let shared = self.open()?;
        set_frozen(shared, &shared.sql.freeze, Error::AlreadyFrozen).await
    }

    async fn unfreeze(&self) -> Result<()> {
        let shared = self.open()?;
        set_frozen(shared, &shared.sql.unfreeze, Error::NotFrozen).await
    }

    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        check_name("key", key, true)?;
        check_text("content", content)?;
        let shared = self.open()?;
        sqlx::query(&shared.sql.save_snapshot)
            .bind(shared.store_id)
            .bind(key)
            .bind(content.as_bytes())
            .bind(Timestamp::now().as_millis())
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        check_name("key", key, true)?;
        let shared = self.open()?;
        let row = sqlx::query(&shared.sql.load_snapshot)
            .bind(shared.store_id)
            .bind(key)
            .fetch_optional(&shared.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(KeyedSnapshot {
                key: key.to_owned(),
                content: utf8(
                    row.try_get(0).map_err(db_error)?,
                    "postgres table keyed_snapshots",
                )?,
                timestamp: Timestamp::from_millis(row.try_get(1).map_err(db_error)?),
            })
        })
        .transpose()
    }

    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        check_name("key", key, true)?;
        let shared = self.open()?;
        let done = sqlx::query(&shared.sql.drop_snapshot)
            .bind(shared.store_id)
            .bind(key)
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        let snapshot = check_stream_snapshot(snapshot)?;
        if snapshot.stream_version > i64::MAX as u64 {
            return Err(Error::invalid(
                "stream_version",
                format!("must be at most {} on PostgreSQL", i64::MAX),
            ));
        }
        let shared = self.open()?;
        let s = &snapshot.stream;
        sqlx::query(&shared.sql.save_stream_snapshot)
            .bind(shared.store_id)
            .bind(&s.context)
            .bind(&s.aggregate)
            .bind(&s.id)
            .bind(to_sql(snapshot.stream_version))
            .bind(&snapshot.id)
            .bind(i64::from(snapshot.schema_version))
            .bind(snapshot.data.as_bytes())
            .bind(snapshot.timestamp.as_millis())
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        Ok(snapshot)
    }

    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        check_stream(stream)?;
        let shared = self.open()?;
        let row = sqlx::query(&shared.sql.latest_stream_snapshot)
            .bind(shared.store_id)
            .bind(&stream.context)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(to_sql(max_version.unwrap_or(Version::MAX)))
            .fetch_optional(&shared.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| stream_snapshot_from_row(stream, &row))
            .transpose()
    }

    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        check_stream(stream)?;
        let shared = self.open()?;
        let done = sqlx::query(&shared.sql.prune_stream_snapshots)
            .bind(shared.store_id)
            .bind(&stream.context)
            .bind(&stream.aggregate)
            .bind(&stream.id)
            .bind(to_sql(keep as u64))
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        check_name("id", id, true)?;
        check_text("secret", secret)?;
        let sql = self.shared().sql.clone();
        let store = self.shared().store_id;
        let (id, secret) = (id.to_owned(), secret.to_owned());
        self.locked(move |tx, frozen, next| {
            async move {
                if frozen {
                    return Err(Error::Frozen);
                }
                let exists = sqlx::query(&sql.secret_exists)
                    .bind(store)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if exists.is_some() {
                    return Err(Error::SecretAlreadyExists { id });
                }
                let inserted = sqlx::query(&sql.insert_secret)
                    .bind(store)
                    .bind(next)
                    .bind(&id)
                    .bind(secret.as_bytes())
                    .execute(&mut *tx)
                    .await;
                match inserted {
                    Ok(_) => Ok(Secret {
                        idx: unsigned(next, "stores.secret_count")?,
                        id,
                        secret: Some(secret),
                    }),
                    Err(e) if unique_violation(&e).is_some() => {
                        Err(Error::SecretAlreadyExists { id })
                    }
                    Err(e) => Err(db_error(e)),
                }
            }
            .boxed()
        })
        .await
    }

    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        check_name("id", id, true)?;
        let shared = self.open()?;
        let row = sqlx::query(&shared.sql.get_secret)
            .bind(shared.store_id)
            .bind(id)
            .fetch_optional(&shared.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(Secret {
                idx: unsigned(row.try_get(0).map_err(db_error)?, "secrets.idx")?,
                id: id.to_owned(),
                secret: secret_value(row.try_get(1).map_err(db_error)?)?,
            })
        })
        .transpose()
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        check_name("id", id, true)?;
        let sql = self.shared().sql.clone();
        let store = self.shared().store_id;
        let id = id.to_owned();
        self.locked(move |tx, frozen, _| {
            async move {
                if frozen {
                    return Err(Error::Frozen);
                }
                let erased = sqlx::query(&sql.erase_secret)
                    .bind(store)
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if erased.is_none() {
                    return Err(Error::not_found("secret", id));
                }
                sqlx::query(&sql.count_deleted_secret)
                    .bind(store)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        let shared = self.open()?;
        let rows = sqlx::query(&shared.sql.list_secrets)
            .bind(shared.store_id)
            .bind(to_sql(query.from_idx))
            .bind(query.include_deleted)
            .bind(&query.ids)
            .bind(to_sql(query.skip))
            .bind(query.limit.map(to_sql))
            .fetch_all(&shared.pool)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(Secret {
                    idx: unsigned(row.try_get(0).map_err(db_error)?, "secrets.idx")?,
                    id: row.try_get(1).map_err(db_error)?,
                    secret: secret_value(row.try_get(2).map_err(db_error)?)?,
                })
            })
            .collect()
    }

    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        check_name("event_id", event_id, true)?;
        let shared = self.open()?;
        // A caller-supplied id, through its index.
        let done = sqlx::query(&shared.sql.mark_dispatched)
            .bind(shared.store_id)
            .bind(event_id)
            .execute(&shared.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() > 0 {
            return Ok(());
        }
        // Already marked, or a generated id (its record, at the position it carries,
        // holds it).
        let stored = read::events_by_id(shared, &[event_id]).await?;
        match stored.first() {
            Some(e) if !e.dispatched => {
                sqlx::query(&shared.sql.mark_dispatched_at)
                    .bind(shared.store_id)
                    .bind(to_sql(e.position))
                    .execute(&shared.pool)
                    .await
                    .map_err(db_error)?;
                Ok(())
            }
            Some(_) => Ok(()),
            None => Err(Error::not_found("event", event_id)),
        }
    }

    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        maintenance::import_events(self.open()?, batch).await
    }

    async fn clear_events(&self) -> Result<()> {
        maintenance::clear_events(self.open()?).await
    }

    async fn clear_secrets(&self) -> Result<()> {
        maintenance::clear_secrets(self.open()?).await
    }

    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        maintenance::import_secrets(self.open()?, secrets, on_conflict).await
    }

    fn subscribe(&self, request: Subscribe) -> EventStream {
        let shared = self.shared().clone();
        if shared.check_open().is_ok() {
            shared.start_tracking();
        }
        let head = shared.head.subscribe();
        let reader: PageReader = Arc::new(move |read| {
            let shared = shared.clone();
            async move {
                shared.check_open()?;
                read::read_all(&shared, &read).await
            }
            .boxed()
        });
        subscription(reader, head, request)
    }

    async fn close(&self) -> Result<()> {
        self.stop(false).await
    }

    async fn drop_store(&self) -> Result<()> {
        self.stop(true).await
    }
}
