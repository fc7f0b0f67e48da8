//! The in-memory backend: the reference every other backend is compared against.
//!
//! Nothing survives the process. Appends are applied under one lock, so the in-memory
//! store is the simplest correct implementation of the trait; the model-based property
//! test in `annals-testkit` checks every other backend against it, operation by
//! operation.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::watch;

use crate::append::{self, AppendCursor, AppendPlan, AppendState};
use crate::error::{Error, Result};
use crate::import::{self, ImportState, SecretImportState};
use crate::limits::{check_name, check_text};
use crate::model::{Direction, Position, RecordedEvent, StreamId, Timestamp, Version};
use crate::query::{ListStreams, ReadAll, ReadAllPage, StreamInfo, StreamPage, StreamRead};
use crate::rules::{
    check_keyed_snapshots, check_stream, check_stream_read, check_stream_snapshot, page_streams,
    secret_matches,
};
use crate::scan::PageCollector;
use crate::store::{
    AppendRequest, AppendResult, Capabilities, EventStore, EventStream, ImportBatch, ImportOutcome,
    KeyedSnapshot, NewStreamSnapshot, OnConflict, Secret, SecretImport, SecretQuery,
    SnapshotKeyQuery, StoreDescription, StreamSnapshot, Subscribe,
};
use crate::subscription::{subscription, PageReader};

#[derive(Default)]
struct Stream {
    info: Option<StreamInfo>,
    /// (version, position), ascending.
    versions: Vec<(Version, Position)>,
}

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    streams: HashMap<StreamId, Stream>,
    ids: HashMap<String, Position>,
    frozen: bool,
    closed: bool,
    snapshots: BTreeMap<String, KeyedSnapshot>,
    /// (save sequence, snapshot), in save order.
    stream_snapshots: Vec<(u64, StreamSnapshot)>,
    snapshot_seq: u64,
    /// idx → secret (imports may leave gaps in idx).
    secrets: BTreeMap<u64, Secret>,
    secret_ids: HashMap<String, u64>,
    next_secret_idx: u64,
}

impl State {
    fn head(&self) -> Position {
        self.events.len() as Position
    }

    fn open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl State {
    /// Replaces the event at `old.position` with `new` (overwrite).
    fn replace_event(&mut self, old: &RecordedEvent, new: RecordedEvent) {
        self.ids.remove(old.id.as_str());
        self.ids.insert(new.id.to_string(), new.position);
        if new.version == 1 {
            if let Some(info) = self
                .streams
                .get_mut(&new.stream)
                .and_then(|s| s.info.as_mut())
            {
                info.first_timestamp = new.timestamp;
            }
        }
        let at = (new.position - 1) as usize;
        self.events[at] = new;
    }

    /// Stores a secret (new, or the tombstone of a deleted one).
    fn store_secret(&mut self, secret: Secret) {
        self.next_secret_idx = self.next_secret_idx.max(secret.idx + 1);
        self.secret_ids.insert(secret.id.clone(), secret.idx);
        self.secrets.insert(secret.idx, secret);
    }

    /// Stores one planned event (its position is `head + 1`).
    fn store_event(&mut self, e: RecordedEvent) {
        self.ids.insert(e.id.to_string(), e.position);
        let stream = self.streams.entry(e.stream.clone()).or_default();
        stream.versions.push((e.version, e.position));
        match &mut stream.info {
            Some(info) => {
                info.version = e.version;
                info.last_position = e.position;
            }
            None => {
                stream.info = Some(StreamInfo {
                    stream: e.stream.clone(),
                    version: e.version,
                    first_timestamp: e.timestamp,
                    first_position: e.position,
                    last_position: e.position,
                })
            }
        }
        self.events.push(e);
    }
}

struct View<'a>(&'a State);

impl ImportState for View<'_> {
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        AppendState::stream_version(self, stream)
    }

    fn has_version(&mut self, stream: &StreamId, version: Version) -> Result<bool> {
        Ok(self.0.streams.get(stream).is_some_and(|s| {
            s.versions
                .binary_search_by_key(&version, |(v, _)| *v)
                .is_ok()
        }))
    }

    fn has_id(&mut self, id: &str) -> Result<bool> {
        Ok(self.0.ids.contains_key(id))
    }
}

impl SecretImportState for View<'_> {
    fn has_secret_id(&mut self, id: &str) -> Result<bool> {
        Ok(self.0.secret_ids.contains_key(id))
    }

    fn has_secret_idx(&mut self, idx: u64) -> Result<bool> {
        Ok(self.0.secrets.contains_key(&idx))
    }
}

impl AppendState for View<'_> {
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        Ok(self
            .0
            .streams
            .get(stream)
            .and_then(|s| s.info.as_ref())
            .map_or(0, |i| i.version))
    }

    fn event_by_id(&mut self, id: &str) -> Result<Option<RecordedEvent>> {
        Ok(self
            .0
            .ids
            .get(id)
            .map(|p| self.0.events[(*p - 1) as usize].clone()))
    }

    fn event_at_version(
        &mut self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<RecordedEvent>> {
        Ok(self.0.streams.get(stream).and_then(|s| {
            s.versions
                .binary_search_by_key(&version, |(v, _)| *v)
                .ok()
                .map(|i| self.0.events[(s.versions[i].1 - 1) as usize].clone())
        }))
    }

    fn secret(&mut self, id: &str) -> Result<Option<Secret>> {
        Ok(self
            .0
            .secret_ids
            .get(id)
            .and_then(|idx| self.0.secrets.get(idx).cloned()))
    }

    fn next_secret_idx(&mut self) -> Result<u64> {
        Ok(self.0.next_secret_idx)
    }
}

struct Inner {
    state: Mutex<State>,
    head: watch::Sender<Position>,
}

/// The in-memory event store.
///
/// ```
/// use annals_core::{EventStore, MemoryStore, ReadAll};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert_eq!(store.read_all(ReadAll::forward()).await.unwrap().events.len(), 0);
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// let _store = annals_core::MemoryStore::new();
    /// ```
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                head: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied append: every
        // mutation below is prepared first and applied without fallible steps.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Announces a new head to subscribers. Concurrent appends announce outside the
    /// lock, possibly out of order: the announced head only moves forward (and stays at
    /// CLOSED), or a subscriber could wait for an event that is already committed.
    fn announce(&self, head: Position) {
        self.inner.head.send_if_modified(|announced| {
            let newer = head > *announced;
            if newer {
                *announced = head;
            }
            newer
        });
    }

    fn read_page(&self, read: ReadAll) -> Result<ReadAllPage> {
        let state = self.lock();
        state.open()?;
        let head = state.head();
        let mut page = PageCollector::new(&read, head)?;
        let start = page.start();
        match read.direction {
            Direction::Forward => {
                for e in state.events.iter().skip(start as usize) {
                    if !page.offer(e.clone()) {
                        break;
                    }
                }
            }
            Direction::Backward => {
                let end = (start.saturating_sub(1) as usize).min(state.events.len());
                for e in state.events[..end].iter().rev() {
                    if !page.offer(e.clone()) {
                        break;
                    }
                }
            }
        }
        Ok(page.finish(true))
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dense_positions: true,
            atomic_multi_stream: true,
            durable: false,
        }
    }

    async fn describe(&self) -> Result<StoreDescription> {
        let state = self.lock();
        state.open()?;
        let deleted = state
            .secrets
            .values()
            .filter(|s| s.secret.is_none())
            .count() as u64;
        Ok(StoreDescription {
            event_count: state.events.len() as u64,
            stream_count: state.streams.len() as u64,
            head_position: state.head(),
            last_event_timestamp: state.events.last().map(|e| e.timestamp),
            frozen: state.frozen,
            secret_count: state.secrets.len() as u64,
            set_secret_count: state.secrets.len() as u64 - deleted,
            deleted_secret_count: deleted,
            bytes_on_disk: None,
        })
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        append::validate(&request)?;
        let mut state = self.lock();
        state.open()?;
        let at = AppendCursor {
            head_position: state.head(),
            last_timestamp: state
                .events
                .last()
                .map_or(Timestamp::from_millis(i64::MIN), |e| e.timestamp),
            frozen: state.frozen,
        };
        let plan = append::plan(&mut View(&state), at, request, Timestamp::now())?;
        match plan {
            AppendPlan::Retry { events } => Ok(AppendResult {
                commit_id: events[0].commit_id.clone(),
                events,
                head_position: state.head(),
                retried: true,
                secret: None,
            }),
            AppendPlan::Write {
                commit_id,
                events,
                replaced,
                secret,
            } => {
                let head_before = state.head();
                let mut replaced = replaced.iter();
                for e in &events {
                    if e.position <= head_before {
                        if let Some(old) = replaced.next() {
                            state.replace_event(old, e.clone());
                        }
                    } else {
                        state.store_event(e.clone());
                    }
                }
                if let Some(secret) = &secret {
                    state.store_secret(secret.clone());
                }
                let head = state.head();
                drop(state);
                self.announce(head);
                Ok(AppendResult {
                    commit_id,
                    events,
                    head_position: head,
                    retried: false,
                    secret,
                })
            }
        }
    }

    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        check_stream_read(stream, &read)?;
        let state = self.lock();
        state.open()?;
        let Some(s) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let to = read.to_version.unwrap_or(Version::MAX);
        let limit = read.limit.unwrap_or(u64::MAX) as usize;
        let selected = s
            .versions
            .iter()
            .filter(|(v, _)| *v >= read.from_version && *v <= to);
        let pick = |(_, p): &(Version, Position)| state.events[(*p - 1) as usize].clone();
        Ok(match read.direction {
            Direction::Forward => selected.take(limit).map(pick).collect(),
            Direction::Backward => selected.rev().take(limit).map(pick).collect(),
        })
    }

    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        self.read_page(read)
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        let state = self.lock();
        state.open()?;
        Ok(state.streams.get(stream).and_then(|s| s.info.clone()))
    }

    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        let state = self.lock();
        state.open()?;
        let mut infos: Vec<&StreamInfo> = state
            .streams
            .values()
            .filter_map(|s| s.info.as_ref())
            .filter(|i| query.matches(i))
            .collect();
        infos.sort_by_key(|i| (i.first_timestamp, i.first_position));
        if query.reverse {
            infos.reverse();
        }
        Ok(page_streams(infos.into_iter().cloned(), &query))
    }

    async fn freeze(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        if state.frozen {
            return Err(Error::AlreadyFrozen);
        }
        state.frozen = true;
        Ok(())
    }

    async fn unfreeze(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        if !state.frozen {
            return Err(Error::NotFrozen);
        }
        state.frozen = false;
        Ok(())
    }

    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        check_name("key", key, true)?;
        check_text("content", content)?;
        let mut state = self.lock();
        state.open()?;
        state.snapshots.insert(
            key.to_owned(),
            KeyedSnapshot {
                key: key.to_owned(),
                content: content.to_owned(),
                timestamp: Timestamp::now(),
            },
        );
        Ok(())
    }

    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        check_name("key", key, true)?;
        let state = self.lock();
        state.open()?;
        Ok(state.snapshots.get(key).cloned())
    }

    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        check_name("key", key, true)?;
        let mut state = self.lock();
        state.open()?;
        Ok(state.snapshots.remove(key).is_some())
    }

    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
        if let Some(after) = &query.start_after {
            check_name("start_after", after, true)?;
        }
        let state = self.lock();
        state.open()?;
        let limit = query.limit.unwrap_or(u64::MAX).min(usize::MAX as u64) as usize;
        let range = match &query.start_after {
            Some(after) => state
                .snapshots
                .range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded)),
            None => state.snapshots.range::<str, _>(..),
        };
        Ok(range.take(limit).map(|(_, s)| s.clone()).collect())
    }

    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64> {
        check_keyed_snapshots(&snapshots)?;
        let mut state = self.lock();
        state.open()?;
        let count = snapshots.len() as u64;
        for s in snapshots {
            state.snapshots.insert(s.key.clone(), s);
        }
        Ok(count)
    }

    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        let snapshot = check_stream_snapshot(snapshot)?;
        let mut state = self.lock();
        state.open()?;
        state.snapshot_seq += 1;
        let seq = state.snapshot_seq;
        state.stream_snapshots.push((seq, snapshot.clone()));
        Ok(snapshot)
    }

    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        check_stream(stream)?;
        let state = self.lock();
        state.open()?;
        let max = max_version.unwrap_or(Version::MAX);
        Ok(state
            .stream_snapshots
            .iter()
            .filter(|(_, s)| s.stream == *stream && s.stream_version <= max)
            .max_by_key(|(seq, s)| (s.stream_version, *seq))
            .map(|(_, s)| s.clone()))
    }

    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        check_stream(stream)?;
        let mut state = self.lock();
        state.open()?;
        let total = state
            .stream_snapshots
            .iter()
            .filter(|(_, s)| s.stream == *stream)
            .count();
        let mut to_delete = total.saturating_sub(keep);
        let deleted = to_delete as u64;
        // Oldest saves come first in the vector.
        state.stream_snapshots.retain(|(_, s)| {
            if to_delete > 0 && s.stream == *stream {
                to_delete -= 1;
                false
            } else {
                true
            }
        });
        Ok(deleted)
    }

    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>> {
        check_stream(stream)?;
        let state = self.lock();
        state.open()?;
        Ok(state
            .stream_snapshots
            .iter()
            .filter(|(_, s)| s.stream == *stream)
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        check_name("id", id, true)?;
        check_text("secret", secret)?;
        let mut state = self.lock();
        state.open()?;
        if state.frozen {
            return Err(Error::Frozen);
        }
        if state.secret_ids.contains_key(id) {
            return Err(Error::SecretAlreadyExists { id: id.to_owned() });
        }
        let record = Secret {
            idx: state.next_secret_idx,
            id: id.to_owned(),
            secret: Some(secret.to_owned()),
        };
        state.next_secret_idx += 1;
        state.secret_ids.insert(id.to_owned(), record.idx);
        state.secrets.insert(record.idx, record.clone());
        Ok(record)
    }

    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        check_name("id", id, true)?;
        let state = self.lock();
        state.open()?;
        Ok(state
            .secret_ids
            .get(id)
            .and_then(|idx| state.secrets.get(idx).cloned()))
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        check_name("id", id, true)?;
        let mut state = self.lock();
        state.open()?;
        if state.frozen {
            return Err(Error::Frozen);
        }
        let idx = state.secret_ids.get(id).copied();
        match idx.and_then(|idx| state.secrets.get_mut(&idx)) {
            Some(secret) if secret.secret.is_some() => secret.secret = None,
            _ => return Err(Error::not_found("secret", id)),
        }
        Ok(())
    }

    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        let state = self.lock();
        state.open()?;
        Ok(state
            .secrets
            .range(query.from_idx..)
            .map(|(_, s)| s)
            .filter(|s| secret_matches(&query, s))
            .skip(query.skip.min(usize::MAX as u64) as usize)
            .take(query.limit.unwrap_or(u64::MAX).min(usize::MAX as u64) as usize)
            .cloned()
            .collect())
    }

    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        check_name("event_id", event_id, true)?;
        let mut state = self.lock();
        state.open()?;
        let Some(position) = state.ids.get(event_id).copied() else {
            return Err(Error::not_found("event", event_id));
        };
        state.events[(position - 1) as usize].dispatched = true;
        Ok(())
    }

    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        let head = state.head();
        if let Some(p) = positions.iter().find(|p| **p == 0 || **p > head) {
            return Err(Error::not_found("event", format!("position {p}")));
        }
        for p in positions {
            state.events[(*p - 1) as usize].dispatched = true;
        }
        Ok(())
    }

    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        import::validate_events(&batch)?;
        let mut state = self.lock();
        state.open()?;
        let head = state.head();
        let plan = import::plan_events(&mut View(&state), head, batch)?;
        let imported = plan.events.len() as u64;
        for e in plan.events {
            state.store_event(e);
        }
        let head = state.head();
        drop(state);
        self.announce(head);
        Ok(ImportOutcome {
            imported,
            skipped: plan.skipped,
            head_position: head,
        })
    }

    async fn clear_events(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        state.events = Vec::new();
        state.streams = HashMap::new();
        state.ids = HashMap::new();
        state.stream_snapshots = Vec::new();
        // Announced under the lock: the head goes back to 0 (unless closed).
        self.inner.head.send_if_modified(|announced| {
            let changed = *announced != 0 && *announced != crate::subscription::CLOSED;
            if changed {
                *announced = 0;
            }
            changed
        });
        Ok(())
    }

    async fn clear_secrets(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        state.secrets = BTreeMap::new();
        state.secret_ids = HashMap::new();
        state.next_secret_idx = 0;
        Ok(())
    }

    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        import::validate_secrets(&secrets)?;
        let mut state = self.lock();
        state.open()?;
        let next = state.next_secret_idx;
        let plan = import::plan_secrets(&mut View(&state), next, secrets, on_conflict)?;
        let imported = plan.secrets.len() as u64;
        for secret in plan.secrets {
            state.secret_ids.insert(secret.id.clone(), secret.idx);
            state.secrets.insert(secret.idx, secret);
        }
        state.next_secret_idx = plan.next_idx;
        Ok(ImportOutcome {
            imported,
            skipped: plan.skipped,
            head_position: state.head(),
        })
    }

    fn subscribe(&self, request: Subscribe) -> EventStream {
        let store = self.clone();
        let reader: PageReader = Arc::new(move |read| {
            let store = store.clone();
            async move { store.read_page(read) }.boxed()
        });
        subscription(reader, self.inner.head.subscribe(), request)
    }

    async fn close(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        state.closed = true;
        drop(state);
        self.inner.head.send_replace(crate::subscription::CLOSED);
        Ok(())
    }

    async fn drop_store(&self) -> Result<()> {
        let mut state = self.lock();
        state.open()?;
        *state = State {
            closed: true,
            ..State::default()
        };
        drop(state);
        self.inner.head.send_replace(crate::subscription::CLOSED);
        Ok(())
    }
}
