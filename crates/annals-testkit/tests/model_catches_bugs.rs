//! The model-based test must notice a backend that deviates from the reference: these
//! wrap the reference with one injected bug each and expect the test to fail.

use std::sync::Arc;

use annals_core::{
    AppendRequest, AppendResult, Capabilities, Direction, Error, EventStore, EventStream,
    ImportBatch, ImportOutcome, KeyedSnapshot, ListStreams, MemoryStore, NewStreamSnapshot,
    OnConflict, ReadAll, ReadAllPage, RecordedEvent, Result, Secret, SecretImport, SecretQuery,
    StoreDescription, StreamId, StreamInfo, StreamPage, StreamRead, StreamSnapshot, Subscribe,
    Version,
};
use annals_testkit::TestStore;

#[derive(Clone, Copy)]
enum Bug {
    /// Backward store-wide reads ignore `skip`.
    BackwardSkipIgnored,
    /// Idempotent retries are refused as duplicates.
    RetryRefused,
}

struct Buggy {
    inner: MemoryStore,
    bug: Bug,
}

#[async_trait::async_trait]
impl EventStore for Buggy {
    fn backend(&self) -> &'static str {
        "buggy"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn describe(&self) -> Result<StoreDescription> {
        self.inner.describe().await
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let result = self.inner.append(request).await?;
        match self.bug {
            Bug::RetryRefused if result.retried => Err(Error::DuplicateEventId {
                id: result.events[0].id.to_string(),
            }),
            _ => Ok(result),
        }
    }
    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, read).await
    }
    async fn read_all(&self, mut read: ReadAll) -> Result<ReadAllPage> {
        if matches!(self.bug, Bug::BackwardSkipIgnored) && read.direction == Direction::Backward {
            read.skip = 0;
        }
        self.inner.read_all(read).await
    }
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        self.inner.stream_info(stream).await
    }
    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        self.inner.list_streams(query).await
    }
    async fn freeze(&self) -> Result<()> {
        self.inner.freeze().await
    }
    async fn unfreeze(&self) -> Result<()> {
        self.inner.unfreeze().await
    }
    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        self.inner.save_snapshot(key, content).await
    }
    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        self.inner.load_snapshot(key).await
    }
    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        self.inner.drop_snapshot(key).await
    }
    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        self.inner.save_stream_snapshot(snapshot).await
    }
    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        self.inner.latest_stream_snapshot(stream, max_version).await
    }
    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        self.inner.prune_stream_snapshots(stream, keep).await
    }
    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        self.inner.set_secret(id, secret).await
    }
    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        self.inner.get_secret(id).await
    }
    async fn delete_secret(&self, id: &str) -> Result<()> {
        self.inner.delete_secret(id).await
    }
    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        self.inner.list_secrets(query).await
    }
    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        self.inner.mark_dispatched(event_id).await
    }
    fn subscribe(&self, request: Subscribe) -> EventStream {
        self.inner.subscribe(request)
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn drop_store(&self) -> Result<()> {
        self.inner.drop_store().await
    }
    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        self.inner.import_events(batch).await
    }
    async fn clear_events(&self) -> Result<()> {
        self.inner.clear_events().await
    }
    async fn clear_secrets(&self) -> Result<()> {
        self.inner.clear_secrets().await
    }
    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        self.inner.import_secrets(secrets, on_conflict).await
    }
}

fn check(bug: Bug) {
    annals_testkit::model::check_against_reference(256, move || async move {
        TestStore::new(Arc::new(Buggy {
            inner: MemoryStore::new(),
            bug,
        }))
    });
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_backward_reads_that_ignore_skip() {
    check(Bug::BackwardSkipIgnored);
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_refused_retries() {
    check(Bug::RetryRefused);
}
