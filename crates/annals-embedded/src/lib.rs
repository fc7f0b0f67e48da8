//! # annals-embedded
//!
//! The default Annals backend: an event store in one data directory, durable on disk,
//! inside your process.
//!
//! ## Durability contract
//! **When `append` (or any other write) returns `Ok`, its data has been written to the
//! store's journal and `fdatasync`ed.** A crash of the process (`kill -9`) or of the
//! machine after that point loses nothing that was acknowledged, and never leaves half
//! of an append: every append is one atomic batch. Writes that have not returned may or
//! may not be present after a crash, as a whole.
//!
//! Concurrent appends share fsyncs: one writer thread per store takes every request
//! waiting in its queue and commits them in one durable transaction (group commit), then
//! answers all of them. If an fsync fails, the store is *poisoned*: every later write
//! fails with [`annals_core::Error::Poisoned`] until the store is reopened, because after
//! a failed fsync the state of the disk is unknown.
//!
//! Readers and subscribers only ever see events that are durable: the head position is
//! announced after the commit returns.
//!
//! An append's replacements (`overwrite`) and its secret change are part of its atomic,
//! fsynced batch; `mark_dispatched_at` and `import_snapshots` are one durable write each.
//!
//! Maintenance follows the same contract: each `import_events` batch (and each
//! `import_secrets` call) is one durable commit, fsynced before it returns.
//! `clear_events` first commits a durable "clearing" mark, then empties the event tables
//! and removes the mark; an open that finds the mark (a crash mid-clear) finishes the
//! clear before anything is read, so a half-cleared store is never served.
//!
//! ## Storage
//! The storage engine sits behind a small internal seam (ordered tables with atomic
//! durable batches). Today it is [fjall](https://docs.rs/fjall), an LSM tree with a
//! write-ahead journal, chosen over redb after measuring both on this workload: fjall
//! committed single events 4× faster (≈9,700/s vs ≈2,200/s) and batches of 100 about 5×
//! faster (≈130–155k events/s vs ≈26–30k) on the same disk. Each commit is one record
//! in the log (keyed by its first position), and each stream's run inside it one record
//! in the stream table (a copy for short runs, a pointer into the log record for long
//! ones), so a batch of 100 events costs a handful of keys, and both a store-wide scan and
//! a stream read are range reads. The newest events (64 MiB by default) are also kept in
//! memory for readers that follow the head.
//!
//! ```
//! use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId, StreamRead};
//! use annals_embedded::EmbeddedStore;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(dir.path())?;
//! let stream = StreamId::new("acc-1").with_aggregate("account");
//! store.append_to_stream(&stream, ExpectedVersion::NoStream,
//!     vec![ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#))]).await?;
//! store.close().await?;
//!
//! let reopened = EmbeddedStore::open(dir.path())?;
//! let events = reopened.read_stream(&stream, StreamRead::all()).await?;
//! assert_eq!(events[0].payload.as_str(), Some(r#"{"owner":"ann"}"#));
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

mod codec;
mod engine;
mod read;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use annals_core::limits::{check_name, check_text};
use annals_core::rules::{check_keyed_snapshots, check_stream, check_stream_read};
use annals_core::subscription::{subscription, PageReader, CLOSED};
use annals_core::{
    AppendRequest, AppendResult, Capabilities, Error, EventStore, EventStream, ImportBatch,
    ImportOutcome, KeyedSnapshot, ListStreams, NewStreamSnapshot, OnConflict, Position, ReadAll,
    ReadAllPage, RecordedEvent, Result, Secret, SecretImport, SecretQuery, SnapshotKeyQuery,
    StoreDescription, StreamId, StreamInfo, StreamPage, StreamRead, StreamSnapshot, Subscribe,
    Version,
};
use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::{oneshot, watch};

use crate::engine::{Engine, FjallEngine, FjallTuning, Table};
use crate::writer::{Command, Counters, Writer};

/// Options of an embedded store.
///
/// ```
/// let options = annals_embedded::EmbeddedOptions::default();
/// assert_eq!(options.cache_bytes, 256 * 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// Block cache size in bytes (reads of recent data come from it).
    pub cache_bytes: u64,
    /// Bytes of the newest events kept in memory for readers that follow the head
    /// (0 disables the cache).
    pub tail_cache_bytes: usize,
    /// Journal size after which in-memory tables are flushed; bounds recovery time.
    /// Values below 64 MiB are raised to 64 MiB.
    pub max_journal_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            cache_bytes: 256 * 1024 * 1024,
            tail_cache_bytes: 64 * 1024 * 1024,
            max_journal_bytes: 128 * 1024 * 1024,
        }
    }
}

/// State shared by the handles, the readers and the writer thread.
pub(crate) struct Shared {
    /// `None` once closed: dropping the last reference releases the directory lock.
    engine: RwLock<Option<Arc<dyn Engine>>>,
    dir: PathBuf,
    head: watch::Sender<Position>,
    published: AtomicU64,
    counters: RwLock<Counters>,
    dispatch: RwLock<read::DispatchState>,
    tail: RwLock<read::TailCache>,
    closed: AtomicBool,
    poisoned: Mutex<Option<String>>,
}

impl Shared {
    /// The shared state of a store opened over `engine`, as recovered.
    fn new(
        dir: &Path,
        engine: Arc<dyn Engine>,
        counters: &Counters,
        dispatch: &read::DispatchState,
        tail_cache_bytes: usize,
    ) -> Self {
        Shared {
            engine: RwLock::new(Some(engine)),
            dir: dir.to_path_buf(),
            head: watch::Sender::new(counters.head),
            published: AtomicU64::new(counters.head),
            counters: RwLock::new(counters.clone()),
            dispatch: RwLock::new(dispatch.clone()),
            tail: RwLock::new(read::TailCache::new(tail_cache_bytes)),
            closed: AtomicBool::new(false),
            poisoned: Mutex::new(None),
        }
    }

    /// Makes newly committed events (and replacements of held ones) visible to readers:
    /// the tail cache first, then the head, so a reader that sees the new head finds
    /// every event below it, and no reader is served a replaced event from memory.
    fn publish_events<'a>(
        &self,
        counters: &Counters,
        events: impl Iterator<Item = &'a RecordedEvent>,
        replaced: impl Iterator<Item = &'a RecordedEvent>,
    ) {
        if let Ok(mut tail) = self.tail.write() {
            tail.push(events);
            for e in replaced {
                tail.replace(e);
            }
        }
        self.publish(counters);
    }

    /// [`Shared::publish_events`] of imported events, which move into the tail cache.
    fn publish_imported(&self, counters: &Counters, events: Vec<RecordedEvent>) {
        if let Ok(mut tail) = self.tail.write() {
            tail.push_owned(events);
        }
        self.publish(counters);
    }

    fn publish(&self, counters: &Counters) {
        if let Ok(mut c) = self.counters.write() {
            *c = counters.clone();
        }
        self.published.store(counters.head, Ordering::Release);
        self.head.send_if_modified(|h| {
            let changed = *h != counters.head;
            *h = counters.head;
            changed
        });
    }

    fn clear_tail(&self) {
        if let Ok(mut tail) = self.tail.write() {
            tail.clear();
        }
    }

    fn set_dispatch(&self, state: read::DispatchState) {
        if let Ok(mut d) = self.dispatch.write() {
            *d = state;
        }
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().ok().and_then(|p| p.clone())
    }

    fn set_poisoned(&self, reason: String) {
        if let Ok(mut p) = self.poisoned.lock() {
            p.get_or_insert(reason);
        }
    }

    fn mark_closed(&self) {
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

    fn engine(&self) -> Result<Arc<dyn Engine>> {
        self.engine
            .read()
            .map_err(|_| lock_error())?
            .clone()
            .ok_or(Error::Closed)
    }

    fn take_engine(&self) -> Option<Arc<dyn Engine>> {
        self.engine.write().ok().and_then(|mut e| e.take())
    }

    fn head(&self) -> Position {
        self.published.load(Ordering::Acquire)
    }

    fn dispatch(&self) -> read::DispatchState {
        self.dispatch.read().map(|d| d.clone()).unwrap_or_default()
    }

    fn read_all(&self, read: &ReadAll) -> Result<ReadAllPage> {
        let engine = self.engine()?;
        let head = self.head();
        let dispatch = self.dispatch.read().map_err(|_| lock_error())?;
        let tail = self.tail.read().map_err(|_| lock_error())?;
        read::read_all(&*engine, &tail, head, &dispatch, read)
    }
}

fn lock_error() -> Error {
    Error::backend(
        "embedded",
        std::io::Error::other("a thread panicked while holding the dispatch state lock"),
    )
}

/// An embedded, durable event store in one data directory. Cheap to clone: clones share
/// the store.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    commands: crossbeam_channel::Sender<Command>,
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating the directory and the store if needed.
    /// A directory can be open in one process at a time.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = annals_embedded::EmbeddedStore::open(dir.path()).unwrap();
    /// assert_eq!(store.path(), dir.path());
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Opens the store with explicit options.
    ///
    /// ```
    /// use annals_embedded::{EmbeddedOptions, EmbeddedStore};
    /// let dir = tempfile::tempdir().unwrap();
    /// let options = EmbeddedOptions { cache_bytes: 8 << 20, ..EmbeddedOptions::default() };
    /// let _store = EmbeddedStore::open_with(dir.path(), options).unwrap();
    /// ```
    pub fn open_with(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::backend(
                "embedded",
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())),
            )
        })?;
        let engine = FjallEngine::open(
            dir,
            FjallTuning {
                cache_bytes: options.cache_bytes,
                max_journal_bytes: options.max_journal_bytes,
            },
        )?;
        Self::from_engine(dir, Arc::new(engine), options)
    }

    /// Starts a store over any engine (the fault-injection tests wrap the real one).
    fn from_engine(dir: &Path, engine: Arc<dyn Engine>, options: EmbeddedOptions) -> Result<Self> {
        let (counters, dispatch) = writer::recover(&*engine)?;
        let shared = Arc::new(Shared::new(
            dir,
            engine.clone(),
            &counters,
            &dispatch,
            options.tail_cache_bytes,
        ));
        let (commands, receiver) = crossbeam_channel::unbounded();
        let writer = Writer::new(shared.clone(), engine, counters, dispatch);
        std::thread::Builder::new()
            .name("annals-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::backend("embedded", e))?;
        Ok(EmbeddedStore { shared, commands })
    }

    /// The store's data directory.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = annals_embedded::EmbeddedStore::open(dir.path()).unwrap();
    /// assert!(store.path().exists());
    /// ```
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        self.shared.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    fn check_writable(&self) -> Result<()> {
        self.shared.check_open()?;
        match self.shared.poisoned() {
            Some(reason) => Err(Error::Poisoned { reason }),
            None => Ok(()),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.shared.check_open()?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Error::backend("embedded", e))?
    }
}

#[async_trait]
impl EventStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dense_positions: true,
            atomic_multi_stream: true,
            durable: true,
        }
    }

    async fn describe(&self) -> Result<StoreDescription> {
        self.shared.check_open()?;
        let c = self
            .shared
            .counters
            .read()
            .map(|c| c.clone())
            .map_err(|_| lock_error())?;
        Ok(StoreDescription {
            event_count: c.head,
            stream_count: c.stream_count,
            head_position: c.head,
            last_event_timestamp: c.last_timestamp,
            frozen: c.frozen,
            secret_count: c.secret_count,
            set_secret_count: c.secret_count.saturating_sub(c.secrets_deleted),
            deleted_secret_count: c.secrets_deleted,
            bytes_on_disk: self.shared.engine()?.disk_space(),
        })
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.shared.check_open()?;
        // Validation (JSON parsing included) runs on the caller's task, in parallel
        // with other callers, not on the single writer thread.
        annals_core::append::validate(&request)?;
        self.send(|reply| Command::Append(request, reply)).await
    }

    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        check_stream_read(stream, &read)?;
        let stream = stream.clone();
        self.blocking(move |s| {
            let dispatch = s.dispatch();
            read::read_stream(&*s.engine()?, s.head(), &dispatch, &stream, &read)
        })
        .await
    }

    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        self.blocking(move |s| s.read_all(&read)).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        check_stream(stream)?;
        read::stream_info(&*self.shared.engine()?, stream)
    }

    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        self.blocking(move |s| read::list_streams(&*s.engine()?, &query))
            .await
    }

    async fn freeze(&self) -> Result<()> {
        self.check_writable()?;
        self.send(|reply| Command::Freeze(true, reply)).await
    }

    async fn unfreeze(&self) -> Result<()> {
        self.check_writable()?;
        self.send(|reply| Command::Freeze(false, reply)).await
    }

    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        check_name("key", key, true)?;
        check_text("content", content)?;
        let (key, content) = (key.to_owned(), content.to_owned());
        self.send(|reply| Command::SaveSnapshot(key, content, reply))
            .await
    }

    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        check_name("key", key, true)?;
        match self
            .shared
            .engine()?
            .get(Table::Snapshots, key.as_bytes())?
        {
            None => Ok(None),
            Some(value) => {
                let (timestamp, content) = codec::decode_keyed_snapshot(&value)?;
                Ok(Some(KeyedSnapshot {
                    key: key.to_owned(),
                    content,
                    timestamp,
                }))
            }
        }
    }

    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        check_name("key", key, true)?;
        let key = key.to_owned();
        self.send(|reply| Command::DropSnapshot(key, reply)).await
    }

    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
        if let Some(after) = &query.start_after {
            check_name("start_after", after, true)?;
        }
        self.blocking(move |s| read::list_snapshots(&*s.engine()?, &query))
            .await
    }

    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64> {
        self.check_writable()?;
        check_keyed_snapshots(&snapshots)?;
        self.send(|reply| Command::ImportSnapshots(snapshots, reply))
            .await
    }

    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        let snapshot = writer::snapshot_command(snapshot)?;
        self.send(|reply| Command::SaveStreamSnapshot(snapshot, reply))
            .await
    }

    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        check_stream(stream)?;
        let stream = stream.clone();
        self.blocking(move |s| read::latest_stream_snapshot(&*s.engine()?, &stream, max_version))
            .await
    }

    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        check_stream(stream)?;
        let stream = stream.clone();
        self.send(|reply| Command::PruneStreamSnapshots(stream, keep, reply))
            .await
    }

    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>> {
        check_stream(stream)?;
        let stream = stream.clone();
        self.blocking(move |s| read::list_stream_snapshots(&*s.engine()?, &stream))
            .await
    }

    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        check_name("id", id, true)?;
        check_text("secret", secret)?;
        let (id, secret) = (id.to_owned(), secret.to_owned());
        self.send(|reply| Command::SetSecret(id, secret, reply))
            .await
    }

    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        check_name("id", id, true)?;
        read::get_secret(&*self.shared.engine()?, id)
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        check_name("id", id, true)?;
        let id = id.to_owned();
        self.send(|reply| Command::DeleteSecret(id, reply)).await
    }

    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        self.blocking(move |s| read::list_secrets(&*s.engine()?, &query))
            .await
    }

    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        check_name("event_id", event_id, true)?;
        let id = event_id.to_owned();
        self.send(|reply| Command::MarkDispatched(id, reply)).await
    }

    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        let positions = positions.to_vec();
        self.send(|reply| Command::MarkDispatchedAt(positions, reply))
            .await
    }

    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        self.check_writable()?;
        // Validation runs on the caller's task, not on the single writer thread.
        annals_core::import::validate_events(&batch)?;
        self.send(|reply| Command::Import(batch, reply)).await
    }

    async fn clear_events(&self) -> Result<()> {
        self.check_writable()?;
        self.send(Command::ClearEvents).await
    }

    async fn clear_secrets(&self) -> Result<()> {
        self.check_writable()?;
        self.send(Command::ClearSecrets).await
    }

    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        self.check_writable()?;
        annals_core::import::validate_secrets(&secrets)?;
        self.send(|reply| Command::ImportSecrets(secrets, on_conflict, reply))
            .await
    }

    fn subscribe(&self, request: Subscribe) -> EventStream {
        let shared = self.shared.clone();
        let reader: PageReader = Arc::new(move |read| {
            let shared = shared.clone();
            async move {
                tokio::task::spawn_blocking(move || shared.read_all(&read))
                    .await
                    .map_err(|e| Error::backend("embedded", e))?
            }
            .boxed()
        });
        subscription(reader, self.shared.head.subscribe(), request)
    }

    async fn close(&self) -> Result<()> {
        self.send(|reply| Command::Close {
            clear: false,
            reply,
        })
        .await
    }

    async fn drop_store(&self) -> Result<()> {
        self.send(|reply| Command::Close { clear: true, reply })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use annals_core::{
        ErrorKind, EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId,
    };

    use super::*;
    use crate::engine::{Entries, Entry, Write};

    /// The real engine, with commits that fail on demand (as a failed fsync would).
    struct FailingEngine {
        inner: FjallEngine,
        fail: Arc<AtomicBool>,
        /// Makes `clear_tables` stop after the first table (as a crash mid-sweep would).
        fail_clear: Arc<AtomicBool>,
    }

    impl Engine for FailingEngine {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<bytes::Bytes>> {
            self.inner.get(table, key)
        }
        fn range(
            &self,
            table: Table,
            from: std::ops::Bound<Vec<u8>>,
            to: std::ops::Bound<Vec<u8>>,
            reverse: bool,
        ) -> Entries<'_> {
            self.inner.range(table, from, to, reverse)
        }
        fn last(&self, table: Table) -> Result<Option<Entry>> {
            self.inner.last(table)
        }
        fn commit_durable(&self, writes: Vec<Write>) -> Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::backend(
                    "embedded",
                    std::io::Error::other("injected: fdatasync failed (EIO)"),
                ));
            }
            self.inner.commit_durable(writes)
        }
        fn clear_tables(&self, tables: &[Table]) -> Result<()> {
            if self.fail_clear.load(Ordering::SeqCst) {
                self.inner.clear_tables(&tables[..1])?;
                return Err(Error::backend(
                    "embedded",
                    std::io::Error::other("injected: crash in the middle of a clear"),
                ));
            }
            self.inner.clear_tables(tables)
        }
        fn disk_space(&self) -> Option<u64> {
            self.inner.disk_space()
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
    }

    fn event(n: u32) -> ProposedEvent {
        ProposedEvent::new("T", Json::from_raw(format!("{{\"n\":{n}}}")))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_durable_commit_poisons_the_store_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let engine = FailingEngine {
            inner: FjallEngine::open(
                dir.path(),
                FjallTuning {
                    cache_bytes: 1 << 20,
                    max_journal_bytes: 64 << 20,
                },
            )
            .unwrap(),
            fail: fail.clone(),
            fail_clear: Arc::new(AtomicBool::new(false)),
        };
        let store =
            EmbeddedStore::from_engine(dir.path(), Arc::new(engine), EmbeddedOptions::default())
                .unwrap();
        let s = StreamId::new("s");
        store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event(1)])
            .await
            .unwrap();

        fail.store(true, Ordering::SeqCst);
        let err = store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event(2)])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Poisoned, "{err}");
        assert!(err.to_string().contains("fdatasync failed"), "{err}");

        // Even when the disk recovers, the store keeps refusing writes: after a failed
        // fsync the state on disk is unknown.
        fail.store(false, Ordering::SeqCst);
        for result in [
            store
                .append_to_stream(&s, ExpectedVersion::Any, vec![event(3)])
                .await
                .map(|_| ()),
            store.set_secret("k", "v").await.map(|_| ()),
            store.freeze().await,
            store.save_snapshot("k", "v").await,
        ] {
            assert_eq!(result.unwrap_err().kind(), ErrorKind::Poisoned);
        }
        // Reads keep working and show only what was acknowledged.
        let page = store.read_all(ReadAll::forward()).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].payload.as_str(), Some("{\"n\":1}"));
        store.close().await.unwrap();

        // Reopened, the store accepts writes again and positions stay dense.
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let result = reopened
            .append_to_stream(&s, ExpectedVersion::Exact(1), vec![event(4)])
            .await
            .unwrap();
        assert_eq!(result.events[0].position, 2);
    }

    fn imported(id: &str, stream: &StreamId, version: u64, dispatched: bool) -> RecordedEvent {
        RecordedEvent {
            position: 0,
            id: id.into(),
            stream: stream.clone(),
            version,
            event_type: "Imported".into(),
            timestamp: annals_core::Timestamp::from_millis(1_000 * version as i64),
            payload: Json::from_raw(format!("{{\"v\":{version}}}")),
            metadata: Json::null(),
            commit_id: format!("c-{id}").into(),
            commit_sequence: 0,
            dispatched,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn imports_and_clears_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("s");
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .append_to_stream(&s, ExpectedVersion::Any, vec![event(1)])
            .await
            .unwrap();
        let batch = ImportBatch {
            events: vec![
                imported("i1", &s, 5, true),
                imported("i2", &StreamId::new("t"), 1, false),
                imported("i3", &s, 9, true),
            ],
            ..ImportBatch::default()
        };
        store.import_events(batch).await.unwrap();
        store
            .mark_dispatched(&read_ids(&store).await[0])
            .await
            .unwrap();
        let before = store.read_all(ReadAll::forward()).await.unwrap().events;
        assert_eq!(
            before.iter().map(|e| e.dispatched).collect::<Vec<_>>(),
            vec![true, true, false, true]
        );
        store.close().await.unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.read_all(ReadAll::forward()).await.unwrap().events,
            before,
            "imported events and dispatch marks after reopening"
        );
        assert_eq!(store.stream_version(&s).await.unwrap(), 9);
        store.set_secret("k", "v").await.unwrap();
        store.save_snapshot("key", "content").await.unwrap();
        store.clear_events().await.unwrap();
        store.close().await.unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let d = store.describe().await.unwrap();
        assert_eq!((d.event_count, d.stream_count, d.head_position), (0, 0, 0));
        assert_eq!(d.secret_count, 1);
        assert!(store.load_snapshot("key").await.unwrap().is_some());
        let r = store
            .append_to_stream(&s, ExpectedVersion::NoStream, vec![event(2)])
            .await
            .unwrap();
        assert_eq!((r.events[0].position, r.events[0].version), (1, 1));
        assert!(!store.read_all(ReadAll::forward()).await.unwrap().events[0].dispatched);
    }

    async fn read_ids(store: &EmbeddedStore) -> Vec<String> {
        store
            .read_all(ReadAll::forward())
            .await
            .unwrap()
            .events
            .iter()
            .map(|e| e.id.to_string())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clear_interrupted_half_way_is_finished_when_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let fail_clear = Arc::new(AtomicBool::new(false));
        let engine = FailingEngine {
            inner: FjallEngine::open(
                dir.path(),
                FjallTuning {
                    cache_bytes: 1 << 20,
                    max_journal_bytes: 64 << 20,
                },
            )
            .unwrap(),
            fail: Arc::new(AtomicBool::new(false)),
            fail_clear: fail_clear.clone(),
        };
        let store =
            EmbeddedStore::from_engine(dir.path(), Arc::new(engine), EmbeddedOptions::default())
                .unwrap();
        let s = StreamId::new("s");
        for n in 0..5 {
            store
                .append_to_stream(&s, ExpectedVersion::Any, vec![event(n), event(n + 10)])
                .await
                .unwrap();
        }
        store.set_secret("k", "v").await.unwrap();
        fail_clear.store(true, Ordering::SeqCst);
        let err = store.clear_events().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Poisoned, "{err}");
        // The half-cleared state is never shown as a valid store.
        assert!(store
            .read_all(ReadAll::forward())
            .await
            .unwrap()
            .events
            .is_empty());
        store.close().await.unwrap();

        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let d = reopened.describe().await.unwrap();
        assert_eq!(
            (
                d.event_count,
                d.stream_count,
                d.head_position,
                d.secret_count
            ),
            (0, 0, 0, 1)
        );
        assert!(reopened
            .read_all(ReadAll::forward())
            .await
            .unwrap()
            .events
            .is_empty());
        assert!(reopened.stream_info(&s).await.unwrap().is_none());
        assert!(reopened
            .read_stream(&s, annals_core::StreamRead::all())
            .await
            .unwrap()
            .is_empty());
        let r = reopened
            .append_to_stream(&s, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap();
        assert_eq!(r.events[0].position, 1);
    }

    fn with_tail(tail_cache_bytes: usize) -> EmbeddedOptions {
        EmbeddedOptions {
            cache_bytes: 1 << 20,
            tail_cache_bytes,
            max_journal_bytes: 64 << 20,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overwritten_events_are_never_served_old_from_memory_or_after_reopening() {
        for tail in [64 << 20, 0] {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open_with(dir.path(), with_tail(tail)).unwrap();
            let s = StreamId::new("s");
            let appended = store
                .append_to_stream(&s, ExpectedVersion::Any, vec![event(1), event(2), event(3)])
                .await
                .unwrap();
            let generated: Vec<String> = appended.events.iter().map(|e| e.id.to_string()).collect();
            // Warm every cache with the old content.
            assert_eq!(read_ids(&store).await, generated);
            store.mark_dispatched_at(&[3, 3]).await.unwrap();

            let fix = |n: u32| {
                ProposedEvent::new("Fixed", Json::from_raw(format!("{{\"fixed\":{n}}}")))
                    .with_version(u64::from(n))
            };
            store
                .append(
                    AppendRequest::to_stream(
                        s.clone(),
                        ExpectedVersion::Exact(3),
                        vec![fix(2).with_id("fix-2"), fix(3)],
                    )
                    .overwriting(),
                )
                .await
                .unwrap();
            let expected = vec![generated[0].clone(), "fix-2".into(), generated[2].clone()];
            assert_eq!(read_ids(&store).await, expected, "tail cache {tail}");
            let events = store.read_all(ReadAll::forward()).await.unwrap().events;
            assert_eq!(events[2].payload.as_str(), Some("{\"fixed\":3}"));
            assert!(events[2].dispatched, "the dispatch mark stays");
            let stream = store
                .read_stream(&s, annals_core::StreamRead::all())
                .await
                .unwrap();
            assert_eq!(stream, events);

            // The replaced generated id is gone; the kept one still leads to its event.
            let err = store.mark_dispatched(&generated[1]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            store.mark_dispatched("fix-2").await.unwrap();
            store.mark_dispatched(&generated[2]).await.unwrap();
            let before = store.read_all(ReadAll::forward()).await.unwrap().events;
            assert_eq!(
                before.iter().map(|e| e.dispatched).collect::<Vec<_>>(),
                vec![false, true, true]
            );
            store.close().await.unwrap();

            let store = EmbeddedStore::open_with(dir.path(), with_tail(tail)).unwrap();
            assert_eq!(
                store.read_all(ReadAll::forward()).await.unwrap().events,
                before
            );
            let err = store.mark_dispatched(&generated[1]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dispatch_batches_are_all_or_nothing_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let s = StreamId::new("s");
        let events = (0..6).map(event).collect();
        store
            .append_to_stream(&s, ExpectedVersion::Any, events)
            .await
            .unwrap();
        for bad in [vec![2, 0], vec![1, 7]] {
            let err = store.mark_dispatched_at(&bad).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            let wrong = bad.iter().find(|p| **p == 0 || **p > 6).unwrap();
            assert!(
                err.to_string().contains(&format!("position {wrong}")),
                "{err}"
            );
        }
        // Runs that reach the watermark fold into it; the others stay marks of their own.
        store.mark_dispatched_at(&[5, 2, 1, 2]).await.unwrap();
        store.mark_dispatched_at(&[]).await.unwrap();
        let dispatched = |events: Vec<RecordedEvent>| -> Vec<bool> {
            events.iter().map(|e| e.dispatched).collect()
        };
        let marks = vec![true, true, false, false, true, false];
        let page = store.read_all(ReadAll::forward()).await.unwrap();
        assert_eq!(dispatched(page.events), marks);
        store.close().await.unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let page = store.read_all(ReadAll::forward()).await.unwrap();
        assert_eq!(dispatched(page.events), marks);
        store.mark_dispatched_at(&[3, 4]).await.unwrap();
        store.close().await.unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let page = store.read_all(ReadAll::forward()).await.unwrap();
        assert_eq!(
            dispatched(page.events),
            vec![true, true, true, true, true, false]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_listings_and_imports_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.save_snapshot("b", "old").await.unwrap();
        store.freeze().await.unwrap();
        let at = |ms| annals_core::Timestamp::from_millis(ms);
        let imported = ["b", "a", "c"].map(|key| KeyedSnapshot {
            key: key.into(),
            content: format!("content of {key}"),
            timestamp: at(1_000),
        });
        assert_eq!(store.import_snapshots(imported.to_vec()).await.unwrap(), 3);
        store.unfreeze().await.unwrap();
        let s = StreamId::new("s");
        for version in [5, 3, 5] {
            store
                .save_stream_snapshot(NewStreamSnapshot::new(
                    s.clone(),
                    version,
                    Json::from_raw(format!("{{\"v\":{version}}}")),
                ))
                .await
                .unwrap();
        }
        store.close().await.unwrap();

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let all = store
            .list_snapshots(SnapshotKeyQuery::default())
            .await
            .unwrap();
        let mut sorted = imported.to_vec();
        sorted.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(all, sorted, "keys in order, imported timestamps kept");
        let page = store
            .list_snapshots(SnapshotKeyQuery {
                start_after: Some("a".into()),
                limit: Some(1),
            })
            .await
            .unwrap();
        assert_eq!(page, vec![sorted[1].clone()]);
        let versions: Vec<u64> = store
            .list_stream_snapshots(&s)
            .await
            .unwrap()
            .iter()
            .map(|s| s.stream_version)
            .collect();
        assert_eq!(versions, vec![5, 3, 5], "oldest save first");
        assert!(store
            .list_stream_snapshots(&StreamId::new("other"))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_directory_open_in_this_process_cannot_be_opened_twice() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let second = EmbeddedStore::open(dir.path());
        assert_eq!(second.err().map(|e| e.kind()), Some(ErrorKind::Backend));
    }
}
