//! Stores for tests that misbehave on purpose or watch how they are called: a type
//! implements [`Intercept`] for the few calls it changes, and [`Wrapped`] passes every
//! other call to its inner store unchanged.
//!
//! ```
//! use annals_core::{EventStore, MemoryStore, Position, Result};
//! use annals_testkit::wrap::{Intercept, Wrapped};
//!
//! /// Refuses batch dispatch marks.
//! struct NoBatchMarks(MemoryStore);
//!
//! #[async_trait::async_trait]
//! impl Intercept for NoBatchMarks {
//!     fn inner(&self) -> &dyn EventStore {
//!         &self.0
//!     }
//!     async fn mark_dispatched_at(&self, _positions: &[Position]) -> Result<()> {
//!         Err(annals_core::Error::Unsupported { backend: "test", operation: "mark_dispatched_at" })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Wrapped(NoBatchMarks(MemoryStore::new()));
//! assert!(store.mark_dispatched_at(&[]).await.is_err());
//! assert_eq!(store.backend(), "memory");
//! # });
//! ```

use std::ops::Deref;

use async_trait::async_trait;

use annals_core::{
    AppendRequest, AppendResult, Capabilities, EventStore, EventStream, ImportBatch, ImportOutcome,
    KeyedSnapshot, ListStreams, NewStreamSnapshot, OnConflict, Position, ReadAll, ReadAllPage,
    RecordedEvent, Result, Secret, SecretImport, SecretQuery, SnapshotKeyQuery, StoreDescription,
    StreamId, StreamInfo, StreamPage, StreamRead, StreamSnapshot, Subscribe, Version,
};

/// The calls a test store may change; each defaults to the inner store's answer.
#[async_trait]
pub trait Intercept: Send + Sync + 'static {
    /// The store every call not changed here goes to.
    fn inner(&self) -> &dyn EventStore;

    /// The backend name ([`EventStore::backend`]).
    fn backend(&self) -> &'static str {
        self.inner().backend()
    }

    /// [`EventStore::append`].
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.inner().append(request).await
    }

    /// [`EventStore::read_all`].
    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        self.inner().read_all(read).await
    }

    /// [`EventStore::mark_dispatched`].
    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        self.inner().mark_dispatched(event_id).await
    }

    /// [`EventStore::mark_dispatched_at`].
    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        self.inner().mark_dispatched_at(positions).await
    }
}

/// An [`EventStore`] made of an [`Intercept`]: the intercepted calls go to it, every
/// other call to its inner store. Dereferences to the interceptor, so a test reads what
/// it recorded through the wrapper.
pub struct Wrapped<I>(pub I);

impl<I> Deref for Wrapped<I> {
    type Target = I;
    fn deref(&self) -> &I {
        &self.0
    }
}

#[async_trait]
impl<I: Intercept> EventStore for Wrapped<I> {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.inner().capabilities()
    }
    async fn describe(&self) -> Result<StoreDescription> {
        self.0.inner().describe().await
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.0.append(request).await
    }
    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        self.0.inner().read_stream(stream, read).await
    }
    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        self.0.read_all(read).await
    }
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        self.0.inner().stream_info(stream).await
    }
    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        self.0.inner().list_streams(query).await
    }
    async fn freeze(&self) -> Result<()> {
        self.0.inner().freeze().await
    }
    async fn unfreeze(&self) -> Result<()> {
        self.0.inner().unfreeze().await
    }
    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        self.0.inner().save_snapshot(key, content).await
    }
    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        self.0.inner().load_snapshot(key).await
    }
    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        self.0.inner().drop_snapshot(key).await
    }
    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
        self.0.inner().list_snapshots(query).await
    }
    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64> {
        self.0.inner().import_snapshots(snapshots).await
    }
    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        self.0.inner().save_stream_snapshot(snapshot).await
    }
    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        self.0
            .inner()
            .latest_stream_snapshot(stream, max_version)
            .await
    }
    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        self.0.inner().prune_stream_snapshots(stream, keep).await
    }
    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>> {
        self.0.inner().list_stream_snapshots(stream).await
    }
    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        self.0.inner().set_secret(id, secret).await
    }
    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        self.0.inner().get_secret(id).await
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.0.inner().delete_secret(id).await
    }
    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        self.0.inner().list_secrets(query).await
    }
    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        self.0.mark_dispatched(event_id).await
    }
    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        self.0.mark_dispatched_at(positions).await
    }
    fn subscribe(&self, request: Subscribe) -> EventStream {
        self.0.inner().subscribe(request)
    }
    async fn close(&self) -> Result<()> {
        self.0.inner().close().await
    }
    async fn drop_store(&self) -> Result<()> {
        self.0.inner().drop_store().await
    }
    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        self.0.inner().import_events(batch).await
    }
    async fn clear_events(&self) -> Result<()> {
        self.0.inner().clear_events().await
    }
    async fn clear_secrets(&self) -> Result<()> {
        self.0.inner().clear_secrets().await
    }
    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        self.0.inner().import_secrets(secrets, on_conflict).await
    }
}
