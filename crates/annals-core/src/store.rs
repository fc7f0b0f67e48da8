//! The [`EventStore`] trait that every backend implements, and the types of its
//! store-level operations.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::{Error, Result};
use crate::model::{
    Direction, ExpectedVersion, Json, Position, ProposedEvent, RecordedEvent, StreamId, Text,
    Timestamp, Version,
};
use crate::query::{
    EventFilter, ListStreams, ReadAll, ReadAllPage, ReadFrom, StreamInfo, StreamPage, StreamRead,
};

/// The events appended to one stream inside an [`AppendRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamWrite {
    /// The target stream.
    pub stream: StreamId,
    /// The optimistic-concurrency expectation for this stream.
    pub expected: ExpectedVersion,
    /// The events, in order; each gets the next version unless it carries one.
    pub events: Vec<ProposedEvent>,
}

/// An atomic append to one or more streams: every event is stored, or none.
///
/// ```
/// use annals_core::{AppendRequest, ExpectedVersion, Json, ProposedEvent, StreamId};
/// let req = AppendRequest::to_stream(
///     StreamId::new("acc-1"),
///     ExpectedVersion::NoStream,
///     vec![ProposedEvent::new("Opened", Json::null())],
/// )
/// .and_stream(StreamId::new("acc-2"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("Opened", Json::null())]);
/// assert_eq!(req.writes.len(), 2);
/// assert_eq!(req.event_count(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendRequest {
    /// The commit id shared by the events; a UUID v7 is generated when `None`.
    pub commit_id: Option<String>,
    /// One entry per stream (a stream may appear once).
    pub writes: Vec<StreamWrite>,
    /// Replace in place (castore's `force`, API.md's `overwrite`): an event whose
    /// `version` is already stored in its stream replaces the stored event instead of
    /// conflicting. See [`AppendRequest::overwriting`] for the exact rules.
    pub overwrite: bool,
    /// A secret set or deleted in the same commit as the events (reSolve writes a
    /// `SET_SECRET` event with the secret): both are stored, or neither.
    pub secret: Option<SecretChange>,
}

/// A secret written atomically with an append ([`AppendRequest::secret`]).
///
/// ```
/// let c = annals_core::SecretChange::Set { id: "user-1".into(), secret: "k".into() };
/// assert_eq!(c.id(), "user-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Store a secret under a new id ([`Error::SecretAlreadyExists`] when the id was
    /// ever used, deleted or not).
    Set {
        /// The secret's id.
        id: String,
        /// Its value.
        secret: String,
    },
    /// Erase a secret's value, keeping a tombstone ([`Error::NotFound`] when unknown or
    /// already deleted).
    Delete {
        /// The secret's id.
        id: String,
    },
}

impl SecretChange {
    /// The id of the secret it changes.
    ///
    /// ```
    /// assert_eq!(annals_core::SecretChange::Delete { id: "k".into() }.id(), "k");
    /// ```
    pub fn id(&self) -> &str {
        match self {
            SecretChange::Set { id, .. } | SecretChange::Delete { id } => id,
        }
    }
}

impl AppendRequest {
    /// An append to one stream.
    ///
    /// ```
    /// let r = annals_core::AppendRequest::to_stream("s".into(), Default::default(), vec![]);
    /// assert_eq!(r.writes[0].stream.id, "s");
    /// ```
    pub fn to_stream(
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Self {
        AppendRequest {
            commit_id: None,
            writes: vec![StreamWrite {
                stream,
                expected,
                events,
            }],
            overwrite: false,
            secret: None,
        }
    }

    /// Adds another stream to the same atomic append.
    ///
    /// ```
    /// let r = annals_core::AppendRequest::default().and_stream("s".into(), Default::default(), vec![]);
    /// assert_eq!(r.writes.len(), 1);
    /// ```
    pub fn and_stream(
        mut self,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Self {
        self.writes.push(StreamWrite {
            stream,
            expected,
            events,
        });
        self
    }

    /// Sets the commit id.
    ///
    /// ```
    /// let r = annals_core::AppendRequest::default().with_commit_id("c-1");
    /// assert_eq!(r.commit_id.as_deref(), Some("c-1"));
    /// ```
    pub fn with_commit_id(mut self, commit_id: impl Into<String>) -> Self {
        self.commit_id = Some(commit_id.into());
        self
    }

    /// Turns on in-place replacement (API.md `overwrite: true`, castore's `force`).
    ///
    /// With it, an event whose `version` is at or below its stream's current version
    /// replaces the stored event of that version: the stored event keeps its position
    /// and version, and takes the new type, payload, metadata and this request's commit
    /// id; its id becomes the proposed id (the old id when none is proposed, and the old
    /// id is then free again); its timestamp becomes the proposed timestamp (the old
    /// one when none is proposed); its dispatch mark is kept. Replaced versions of one
    /// stream must increase along the request; a version inside a gap of the stream
    /// (never stored) is [`Error::VersionConflict`]. Every other event is appended as
    /// usual, after the stream's current version, and the expectation is checked
    /// against the version before the request. Subscriptions that already delivered a
    /// replaced position do not deliver it again: replacement is a repair tool, not a
    /// way to publish. The result lists every event in request order, replaced ones at
    /// their old positions.
    ///
    /// ```
    /// use annals_core::{AppendRequest, ExpectedVersion, Json, ProposedEvent, StreamId};
    /// let fix = ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#)).with_version(1);
    /// let r = AppendRequest::to_stream(StreamId::new("acc-1"), ExpectedVersion::Any, vec![fix])
    ///     .overwriting();
    /// assert!(r.overwrite);
    /// ```
    pub fn overwriting(mut self) -> Self {
        self.overwrite = true;
        self
    }

    /// Sets or deletes a secret in the same commit as the events.
    ///
    /// A request with a secret change is never an idempotent retry: the change is
    /// checked first (frozen store, id in use, unknown or deleted id) and when it is
    /// refused nothing is written. A request with a secret change and no events is a
    /// plain secret write.
    ///
    /// ```
    /// use annals_core::{AppendRequest, SecretChange};
    /// let r = AppendRequest::default()
    ///     .with_secret(SecretChange::Set { id: "user-1".into(), secret: "k".into() });
    /// assert_eq!(r.secret.as_ref().map(|s| s.id()), Some("user-1"));
    /// ```
    pub fn with_secret(mut self, change: SecretChange) -> Self {
        self.secret = Some(change);
        self
    }

    /// How many events the request carries.
    ///
    /// ```
    /// assert_eq!(annals_core::AppendRequest::default().event_count(), 0);
    /// ```
    pub fn event_count(&self) -> usize {
        self.writes.iter().map(|w| w.events.len()).sum()
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The commit id shared by the events.
    pub commit_id: Text,
    /// The recorded events, in request order.
    pub events: Vec<RecordedEvent>,
    /// The store's head position after the append.
    pub head_position: Position,
    /// Whether this was an idempotent retry that wrote nothing.
    pub retried: bool,
    /// The secret as stored by the request's [`SecretChange`] (a tombstone for a
    /// deletion); `None` when the request carried none.
    pub secret: Option<Secret>,
}

impl AppendResult {
    /// The position of the last event appended (0 when the append was empty).
    ///
    /// ```
    /// let r = annals_core::AppendResult { commit_id: "c".into(), events: vec![], head_position: 3, retried: false, secret: None };
    /// assert_eq!(r.last_position(), 0);
    /// ```
    pub fn last_position(&self) -> Position {
        self.events.last().map_or(0, |e| e.position)
    }
}

/// What a store reports about itself (reSolve's `describe`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreDescription {
    /// Number of events stored.
    pub event_count: u64,
    /// Number of streams with at least one event.
    pub stream_count: u64,
    /// The newest position (0 when empty).
    pub head_position: Position,
    /// The timestamp of the newest event.
    pub last_event_timestamp: Option<Timestamp>,
    /// Whether writes are refused.
    pub frozen: bool,
    /// Every secret stored, tombstones included (the next `idx`, unless an import left
    /// gaps in idx).
    pub secret_count: u64,
    /// Secrets still holding a value.
    pub set_secret_count: u64,
    /// Secrets erased (tombstones).
    pub deleted_secret_count: u64,
    /// Bytes on disk, where the backend knows.
    pub bytes_on_disk: Option<u64>,
}

/// What a backend guarantees, for callers that adapt and for the conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Positions are dense and in commit order (the DESIGN.md invariant).
    pub dense_positions: bool,
    /// Appends spanning several streams are atomic.
    pub atomic_multi_stream: bool,
    /// Acknowledged appends survive a crash of the process.
    pub durable: bool,
}

/// A keyed snapshot (reSolve's `saveSnapshot`/`loadSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedSnapshot {
    /// The key.
    pub key: String,
    /// The content.
    pub content: String,
    /// When it was saved.
    pub timestamp: Timestamp,
}

/// A page of keyed snapshots, in key order (bytewise).
///
/// ```
/// let q = annals_core::SnapshotKeyQuery { start_after: Some("user-9".into()), limit: Some(100) };
/// assert_eq!(q.limit, Some(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotKeyQuery {
    /// Only keys strictly after this one.
    pub start_after: Option<String>,
    /// At most this many; `None` = all.
    pub limit: Option<u64>,
}

/// A snapshot of one stream's state at a version (node-eventstore's `createSnapshot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSnapshot {
    /// The snapshot's id.
    pub id: String,
    /// The stream it reflects.
    pub stream: StreamId,
    /// The event version it covers.
    pub stream_version: Version,
    /// The schema version of `data` (the application's, for upcasting).
    pub schema_version: u32,
    /// The state.
    pub data: Json,
    /// When it was saved.
    pub timestamp: Timestamp,
}

/// A stream snapshot to save.
///
/// ```
/// use annals_core::{Json, NewStreamSnapshot, StreamId};
/// let s = NewStreamSnapshot::new(StreamId::new("acc-1"), 10, Json::from_raw(r#"{"balance":5}"#));
/// assert_eq!(s.schema_version, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStreamSnapshot {
    /// The snapshot id; generated when `None`.
    pub id: Option<String>,
    /// The stream.
    pub stream: StreamId,
    /// The event version it covers (≥ 1).
    pub stream_version: Version,
    /// The schema version of `data`.
    pub schema_version: u32,
    /// The state.
    pub data: Json,
    /// When it was taken; now when `None`.
    pub timestamp: Option<Timestamp>,
}

impl NewStreamSnapshot {
    /// A snapshot of `stream` at `stream_version`, schema version 1.
    ///
    /// ```
    /// let s = annals_core::NewStreamSnapshot::new("a".into(), 1, annals_core::Json::null());
    /// assert!(s.id.is_none());
    /// ```
    pub fn new(stream: StreamId, stream_version: Version, data: Json) -> Self {
        NewStreamSnapshot {
            id: None,
            stream,
            stream_version,
            schema_version: 1,
            data,
            timestamp: None,
        }
    }
}

/// A secret (crypto-shredding key). `secret` is `None` once deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Its index: 0, 1, 2 … per store, in order of setting.
    pub idx: u64,
    /// Its id.
    pub id: String,
    /// Its value; `None` after deletion (the tombstone).
    pub secret: Option<String>,
}

/// A listing of secrets by index (reSolve's `exportSecrets`).
///
/// ```
/// let q = annals_core::SecretQuery::default();
/// assert!(!q.include_deleted);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretQuery {
    /// Start at this index (inclusive).
    pub from_idx: u64,
    /// Pass over this many matching secrets first.
    pub skip: u64,
    /// At most this many.
    pub limit: Option<u64>,
    /// Only these ids; empty = any.
    pub ids: Vec<String>,
    /// Include tombstones (with `secret: None`).
    pub include_deleted: bool,
}

/// How an import treats an event (or secret) that is already stored.
///
/// ```
/// assert_eq!(annals_core::OnConflict::default(), annals_core::OnConflict::Error);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Refuse the whole batch ([`Error::VersionConflict`], [`Error::DuplicateEventId`] or
    /// [`Error::SecretAlreadyExists`]).
    #[default]
    Error,
    /// Leave the stored one alone and count the imported one as skipped.
    Skip,
}

/// One call's worth of events to import (all or nothing).
///
/// ```
/// use annals_core::{ImportBatch, OnConflict};
/// let batch = ImportBatch { on_conflict: OnConflict::Skip, ..ImportBatch::default() };
/// assert!(batch.events.is_empty());
/// assert_eq!(batch.expected_head, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportBatch {
    /// Events as recorded elsewhere: id, stream, version, type, timestamp, payload, metadata,
    /// commit_id, commit_sequence and dispatched are KEPT; `position` is IGNORED (the store
    /// assigns head+1, head+2, … in the given order, so importing a whole export into an empty
    /// store reproduces its positions).
    pub events: Vec<RecordedEvent>,
    /// What to do with events already stored.
    pub on_conflict: OnConflict,
    /// When `Some(p)`: refuse with [`Error::WrongExpectedHead`] unless the store's head
    /// position is `p` at commit time (keeps an incremental import atomic against
    /// concurrent appends).
    pub expected_head: Option<Position>,
}

/// What an import stored.
///
/// ```
/// let o = annals_core::ImportOutcome::default();
/// assert_eq!((o.imported, o.skipped, o.head_position), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOutcome {
    /// How many events (or secrets) were stored.
    pub imported: u64,
    /// How many were already stored and skipped ([`OnConflict::Skip`]).
    pub skipped: u64,
    /// The store's head position afterwards.
    pub head_position: Position,
}

/// A secret as exported: `idx` is kept when given (else the next idx); `secret: None` is a
/// tombstone.
///
/// ```
/// let s = annals_core::SecretImport { idx: Some(3), id: "user-1".into(), secret: None };
/// assert!(s.secret.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretImport {
    /// The index to keep; `None` = the next one.
    pub idx: Option<u64>,
    /// The secret's id.
    pub id: String,
    /// The value; `None` = a tombstone (a deleted secret).
    pub secret: Option<String>,
}

/// A live subscription request: catch up from `from`, then follow new events.
///
/// ```
/// use annals_core::{EventFilter, Subscribe};
/// let s = Subscribe::after(5).filter(EventFilter::default().aggregate("order"));
/// assert_eq!(s.from, annals_core::ReadFrom::Position(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Where to start (forward); `Start` = every event.
    pub from: ReadFrom,
    /// Which events to deliver.
    pub filter: EventFilter,
}

impl Subscribe {
    /// Every event from the beginning.
    ///
    /// ```
    /// assert_eq!(annals_core::Subscribe::from_start().from, annals_core::ReadFrom::Start);
    /// ```
    pub fn from_start() -> Self {
        Subscribe::default()
    }

    /// Events after this position.
    ///
    /// ```
    /// assert_eq!(annals_core::Subscribe::after(1).from, annals_core::ReadFrom::Position(1));
    /// ```
    pub fn after(position: Position) -> Self {
        Subscribe {
            from: ReadFrom::Position(position),
            filter: EventFilter::default(),
        }
    }

    /// Sets the filter.
    ///
    /// ```
    /// let s = annals_core::Subscribe::from_start().filter(annals_core::EventFilter::default().context("c"));
    /// assert!(!s.filter.is_all());
    /// ```
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }
}

/// A live stream of recorded events (see [`EventStore::subscribe`]).
pub type EventStream = BoxStream<'static, Result<RecordedEvent>>;

/// One event store: the storage seam every Annals backend implements.
///
/// The trait is object-safe; servers hold an `Arc<dyn EventStore>`. Creating and opening
/// a store is each backend's own constructor; everything after that goes through here.
///
/// ```
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId, StreamRead};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: std::sync::Arc<dyn EventStore> = std::sync::Arc::new(MemoryStore::new());
/// let stream = StreamId::new("acc-1").with_aggregate("account");
/// store.append_to_stream(&stream, ExpectedVersion::NoStream,
///     vec![ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#))]).await?;
/// let events = store.read_stream(&stream, StreamRead::all()).await?;
/// assert_eq!(events[0].version, 1);
/// assert_eq!(events[0].payload.as_str(), Some(r#"{"owner":"ann"}"#));
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The backend's short name (`memory`, `embedded`, `postgres`, `http`).
    fn backend(&self) -> &'static str;

    /// What this backend guarantees.
    fn capabilities(&self) -> Capabilities;

    /// Counts, head position, freeze flag, secret counts, bytes on disk.
    async fn describe(&self) -> Result<StoreDescription>;

    /// Appends atomically to one or more streams. Returns only when the events are as
    /// durable as the backend documents.
    ///
    /// Idempotent retry: when every event of the request carries an id that is already
    /// stored in the same stream with the same content (and the same version, when the
    /// request gives one), nothing is written and the original events are returned
    /// (`retried = true`), even while the store is frozen. A known id reused for other
    /// content is [`Error::DuplicateEventId`].
    async fn append(&self, request: AppendRequest) -> Result<AppendResult>;

    /// Reads one stream by version.
    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>>;

    /// Reads events across the store in position order, filtered, with a cursor.
    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage>;

    /// What the store knows about one stream; `None` when it has no events.
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>>;

    /// Lists streams ordered by their first event.
    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage>;

    /// Refuses every write from now on ([`Error::AlreadyFrozen`] if frozen).
    async fn freeze(&self) -> Result<()>;

    /// Accepts writes again ([`Error::NotFrozen`] if not frozen).
    async fn unfreeze(&self) -> Result<()>;

    /// Creates or replaces a keyed snapshot.
    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()>;

    /// Loads a keyed snapshot.
    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>>;

    /// Deletes a keyed snapshot; `false` when there was none.
    async fn drop_snapshot(&self, key: &str) -> Result<bool>;

    /// Keyed snapshots in key order (bytewise), for copies and listings.
    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>>;

    /// Stores keyed snapshots recorded elsewhere, keeping their timestamps and replacing
    /// snapshots with the same key: all or nothing. Returns how many were stored.
    /// Allowed while frozen (it is the maintenance path).
    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64>;

    /// Saves a stream snapshot.
    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot>;

    /// The snapshot of `stream` with the greatest `stream_version` ≤ `max_version`
    /// (`None` = any); ties go to the most recently saved.
    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>>;

    /// Keeps the `keep` most recently saved snapshots of `stream`; returns how many were
    /// deleted.
    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64>;

    /// Every snapshot of `stream`, oldest save first (saving them in this order into
    /// another store reproduces `latest_stream_snapshot` and pruning there).
    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>>;

    /// Stores a secret under a new id; ids are never reused, even after deletion.
    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret>;

    /// Reads a secret (a tombstone has `secret: None`); `None` when the id is unknown.
    async fn get_secret(&self, id: &str) -> Result<Option<Secret>>;

    /// Erases a secret's value for good, keeping a tombstone.
    /// [`Error::NotFound`] when unknown or already deleted.
    async fn delete_secret(&self, id: &str) -> Result<()>;

    /// Lists secrets by index.
    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>>;

    /// Marks an event dispatched (idempotent). [`Error::NotFound`] when the id is unknown.
    async fn mark_dispatched(&self, event_id: &str) -> Result<()>;

    /// Marks the events at these positions dispatched, in one write (a publisher's
    /// batch): all or nothing, idempotent, any order, duplicates allowed.
    /// [`Error::NotFound`] (thing `"event"`, id `"position N"`) when a position holds no
    /// event (0 or above the head); nothing is marked then.
    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()>;

    /// Catch-up, then live: every matching event after `from`, in position order, with no
    /// gap and no duplicate. Memory is bounded: the stream reads a page at a time and
    /// reads the next page only when the consumer has taken the previous one.
    fn subscribe(&self, request: Subscribe) -> EventStream;

    /// Stops the store: waits for in-flight appends, then refuses every call with
    /// [`Error::Closed`].
    async fn close(&self) -> Result<()>;

    /// Deletes every piece of data of the store (events, streams, snapshots, secrets,
    /// the freeze flag) and closes it.
    async fn drop_store(&self) -> Result<()>;

    /// Imports events recorded elsewhere, keeping their ids, versions, timestamps, commit
    /// ids and dispatch marks, at positions `head + 1 ..` in the given order: all or
    /// nothing. Allowed while frozen (it is the maintenance path). The rules (conflicts,
    /// back-fill refusal, `expected_head`) are in [`crate::import`].
    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome>;

    /// Deletes every event, stream, stream snapshot and dispatch mark; positions restart
    /// at 1. Keeps secrets, keyed snapshots and the freeze flag. Allowed while frozen.
    async fn clear_events(&self) -> Result<()>;

    /// Deletes every secret (tombstones too); the next idx is 0 again. Allowed while
    /// frozen.
    async fn clear_secrets(&self) -> Result<()>;

    /// Imports secrets (with tombstones), keeping their idx when given: all or nothing.
    /// The next idx afterwards is the greatest idx + 1. `head_position` in the outcome is
    /// the store's (unchanged) head. Allowed while frozen.
    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome>;

    /// Appends events to one stream (a convenience over [`EventStore::append`]).
    async fn append_to_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult> {
        self.append(AppendRequest::to_stream(stream.clone(), expected, events))
            .await
    }

    /// The stream's current version (0 when it does not exist).
    async fn stream_version(&self, stream: &StreamId) -> Result<Version> {
        Ok(self.stream_info(stream).await?.map_or(0, |i| i.version))
    }

    /// The newest event selected by the filter (reSolve's `getLatestEvent`).
    async fn latest_event(&self, filter: EventFilter) -> Result<Option<RecordedEvent>> {
        let page = self
            .read_all(ReadAll {
                from: ReadFrom::Start,
                direction: Direction::Backward,
                filter,
                skip: 0,
                limit: Some(1),
            })
            .await?;
        Ok(page.events.into_iter().next())
    }

    /// Undispatched events selected by the filter, oldest first (node-eventstore's
    /// `getUndispatchedEvents`).
    async fn undispatched(
        &self,
        filter: EventFilter,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>> {
        let page = self
            .read_all(ReadAll {
                filter: EventFilter {
                    dispatched: Some(false),
                    ..filter
                },
                limit,
                ..ReadAll::default()
            })
            .await?;
        Ok(page.events)
    }
}

#[allow(dead_code)]
fn _object_safe(_: &dyn EventStore) {}

#[allow(dead_code)]
fn _error_is_send_sync() -> Option<Box<dyn std::error::Error + Send + Sync>> {
    Some(Box::new(Error::Closed))
}
