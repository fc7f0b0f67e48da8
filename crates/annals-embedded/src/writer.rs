//! The single writer of a store: group commit.
//!
//! Every write goes through one thread. It takes every append request waiting in its
//! queue, plans each against the committed state plus the requests before it in the same
//! group, writes the whole group in ONE durable transaction (one fsync), and only then
//! answers the callers and announces the new head to readers and subscribers. Other
//! writes (freeze, secrets, snapshots, dispatch marks) are rare and commit on their own.
//! A secret change travels inside its append and shares the group. An overwrite request
//! whose streams the group already changed commits the group first, so replacements
//! only ever rewrite committed records (requests without overwrite never pay for this).
//! If a durable commit fails, the store is poisoned: every later write is refused with
//! [`Error::Poisoned`] until the store is reopened, because the state on disk is unknown.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use annals_core::append::{self, AppendCursor, AppendPlan, AppendState};
use annals_core::import::{self, ImportState, SecretImportState};
use annals_core::{
    AppendRequest, AppendResult, Error, ImportBatch, ImportOutcome, KeyedSnapshot,
    NewStreamSnapshot, OnConflict, Position, RecordedEvent, Result, Secret, SecretImport, StreamId,
    StreamInfo, StreamRead, StreamSnapshot, Text, Timestamp, Version,
};
use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::codec;
use crate::engine::{Engine, Table, Write};
use crate::read;
use crate::Shared;

/// Bounds the writer's stream-version cache; past it the cache starts over.
const STREAM_CACHE_LIMIT: usize = 1 << 20;
/// Stream runs at least this long are stored as pointers into the log record.
const RUN_POINTER_MIN: usize = 8;
/// Most append requests in one group commit.
const MAX_GROUP: usize = 1024;
/// Longest wait for more requests when the previous group had several (about one fsync,
/// which the late requests would otherwise spend queued behind this group's commit).
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_micros(250);
/// The wait for the previous group's writers ends sooner once none has arrived for this
/// long: writers woken by one commit come back microseconds apart, so a longer silence
/// means the rest are not on their way (they are a batch still on the wire, or gone),
/// and waiting would only delay this group and leave the disk idle. Measured on 2 cores
/// with 8 writers (annals-bench w2): direct writers still form groups of 7–8 appends, at
/// the same throughput; an HTTP client with two batches in flight is no longer merged into
/// one group that both batches wait for (15–19k → 33–49k events/s over HTTP).
const GROUP_LINGER_IDLE: std::time::Duration = std::time::Duration::from_micros(10);

pub(crate) const META_FROZEN: &[u8] = b"frozen";
pub(crate) const META_STREAM_COUNT: &[u8] = b"stream_count";
pub(crate) const META_SECRETS_DELETED: &[u8] = b"secrets_deleted";
pub(crate) const META_SNAPSHOT_SEQ: &[u8] = b"snapshot_seq";
pub(crate) const META_DISPATCH_WATERMARK: &[u8] = b"dispatch_watermark";
/// Present while `clear_events` is sweeping; an open that finds it finishes the sweep, so
/// a crash mid-clear never leaves a half-cleared store visible.
pub(crate) const META_CLEARING_EVENTS: &[u8] = b"clearing_events";
/// Secrets stored, tombstones included (absent in stores written before imports existed,
/// where it equals the next idx).
pub(crate) const META_SECRET_COUNT: &[u8] = b"secret_count";

/// The tables `clear_events` empties (keyed snapshots, secrets and meta stay).
const EVENT_TABLES: [Table; 7] = [
    Table::Events,
    Table::StreamEvents,
    Table::Streams,
    Table::StreamsByTime,
    Table::EventIds,
    Table::Dispatched,
    Table::StreamSnapshots,
];

type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the writer.
pub(crate) enum Command {
    Append(AppendRequest, Reply<AppendResult>),
    Freeze(bool, Reply<()>),
    SaveSnapshot(String, String, Reply<()>),
    DropSnapshot(String, Reply<bool>),
    SaveStreamSnapshot(StreamSnapshot, Reply<StreamSnapshot>),
    PruneStreamSnapshots(StreamId, usize, Reply<u64>),
    SetSecret(String, String, Reply<Secret>),
    DeleteSecret(String, Reply<()>),
    MarkDispatched(String, Reply<()>),
    MarkDispatchedAt(Vec<Position>, Reply<()>),
    ImportSnapshots(Vec<KeyedSnapshot>, Reply<u64>),
    Import(ImportBatch, Reply<ImportOutcome>),
    ClearEvents(Reply<()>),
    ClearSecrets(Reply<()>),
    ImportSecrets(Vec<SecretImport>, OnConflict, Reply<ImportOutcome>),
    Close { clear: bool, reply: Reply<()> },
}

impl Command {
    fn fail(self, err: Error) {
        // A caller that stopped waiting is not an error of the writer.
        match self {
            Command::Append(_, r) => drop(r.send(Err(err))),
            Command::Freeze(_, r) => drop(r.send(Err(err))),
            Command::SaveSnapshot(_, _, r) => drop(r.send(Err(err))),
            Command::DropSnapshot(_, r) => drop(r.send(Err(err))),
            Command::SaveStreamSnapshot(_, r) => drop(r.send(Err(err))),
            Command::PruneStreamSnapshots(_, _, r) => drop(r.send(Err(err))),
            Command::SetSecret(_, _, r) => drop(r.send(Err(err))),
            Command::DeleteSecret(_, r) => drop(r.send(Err(err))),
            Command::MarkDispatched(_, r) => drop(r.send(Err(err))),
            Command::MarkDispatchedAt(_, r) => drop(r.send(Err(err))),
            Command::ImportSnapshots(_, r) => drop(r.send(Err(err))),
            Command::Import(_, r) => drop(r.send(Err(err))),
            Command::ClearEvents(r) => drop(r.send(Err(err))),
            Command::ClearSecrets(r) => drop(r.send(Err(err))),
            Command::ImportSecrets(_, _, r) => drop(r.send(Err(err))),
            Command::Close { reply, .. } => drop(reply.send(Err(err))),
        }
    }
}

/// Committed store-level state, owned by the writer and published to readers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub head: Position,
    pub last_timestamp: Option<Timestamp>,
    pub frozen: bool,
    pub stream_count: u64,
    pub secret_next: u64,
    pub secret_count: u64,
    pub secrets_deleted: u64,
    pub snapshot_seq: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    engine: Arc<dyn Engine>,
    counters: Counters,
    dispatch: read::DispatchState,
    streams: HashMap<StreamId, StreamInfo>,
}

/// The appends of the group being built.
#[derive(Default)]
struct Group {
    writes: Vec<Write>,
    replies: Vec<(Reply<AppendResult>, Result<AppendResult>)>,
    /// Streams changed by the group, with whether they are new.
    streams: HashMap<StreamId, (StreamInfo, bool)>,
    /// Caller-supplied event ids written by the group: (reply index, event index).
    ids: HashMap<Text, (usize, usize)>,
    counters: Counters,
    /// Overwrite: committed log records the group rewrites (first position → events).
    records: HashMap<Position, Vec<RecordedEvent>>,
    /// Overwrite: committed stream runs (copies) the group rewrites (key → events).
    runs: HashMap<Vec<u8>, Vec<RecordedEvent>>,
    /// Overwrite: the new content of replaced positions.
    replaced: HashMap<Position, RecordedEvent>,
    /// Overwrite: indexed ids that replacements freed; their index entries are deleted
    /// at commit unless the group indexed them again.
    freed_ids: Vec<Text>,
    /// Overwrite: moves in the streams-by-time table (a version 1 with a new timestamp).
    time_writes: Vec<Write>,
    /// Secrets set or deleted with appends of the group, by id.
    secrets: HashMap<String, Secret>,
}

struct GroupView<'a> {
    writer: &'a mut Writer,
    group: &'a Group,
}

// The writer commits the group before planning an overwrite request whose streams the
// group changed (see `Writer::run`), so the events an overwrite replaces are committed;
// `Group::replaced` and `Group::ids` overlay what earlier requests of the group did.
impl AppendState for GroupView<'_> {
    fn event_at_version(
        &mut self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<RecordedEvent>> {
        let read = StreamRead {
            from_version: version,
            to_version: Some(version),
            limit: Some(1),
            ..StreamRead::default()
        };
        let w = &*self.writer;
        let found = read::read_stream(
            w.engine.as_ref(),
            w.counters.head,
            &w.dispatch,
            stream,
            &read,
        )?;
        Ok(found
            .into_iter()
            .find(|e| e.version == version)
            .map(|e| self.group.replaced.get(&e.position).cloned().unwrap_or(e)))
    }

    fn secret(&mut self, id: &str) -> Result<Option<Secret>> {
        if let Some(s) = self.group.secrets.get(id) {
            return Ok(Some(s.clone()));
        }
        read::get_secret(self.writer.engine.as_ref(), id)
    }

    fn next_secret_idx(&mut self) -> Result<u64> {
        Ok(self.group.counters.secret_next)
    }

    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        if let Some((info, _)) = self.group.streams.get(stream) {
            return Ok(info.version);
        }
        Ok(self.writer.stream(stream)?.map_or(0, |i| i.version))
    }

    fn event_by_id(&mut self, id: &str) -> Result<Option<RecordedEvent>> {
        if let Some((r, e)) = self.group.ids.get(id) {
            if let Ok(result) = &self.group.replies[*r].1 {
                return Ok(result.events.get(*e).cloned());
            }
        }
        let Some((pos, mut event)) =
            find_event(self.writer.engine.as_ref(), self.writer.counters.head, id)?
        else {
            return Ok(None);
        };
        if let Some(new) = self.group.replaced.get(&pos) {
            // Replaced in this group: the id is there only if the replacement kept it
            // (an id moved elsewhere in the group was found in `ids` above).
            return Ok((new.id.as_str() == id).then(|| new.clone()));
        }
        event.dispatched = self.writer.dispatch.is_dispatched(pos);
        Ok(Some(event))
    }
}

/// The committed state, as the import planner sees it.
struct ImportView<'a>(&'a mut Writer);

impl ImportState for ImportView<'_> {
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        Ok(self.0.stream(stream)?.map_or(0, |i| i.version))
    }

    fn has_version(&mut self, stream: &StreamId, version: Version) -> Result<bool> {
        let read = StreamRead {
            from_version: version,
            to_version: Some(version),
            limit: Some(1),
            ..StreamRead::default()
        };
        let w = &*self.0;
        let found = read::read_stream(
            w.engine.as_ref(),
            w.counters.head,
            &w.dispatch,
            stream,
            &read,
        )?;
        Ok(found.iter().any(|e| e.version == version))
    }

    fn has_id(&mut self, id: &str) -> Result<bool> {
        Ok(find_event(self.0.engine.as_ref(), self.0.counters.head, id)?.is_some())
    }
}

impl SecretImportState for ImportView<'_> {
    fn has_secret_id(&mut self, id: &str) -> Result<bool> {
        Ok(self
            .0
            .engine
            .get(Table::SecretIds, id.as_bytes())?
            .is_some())
    }

    fn has_secret_idx(&mut self, idx: u64) -> Result<bool> {
        Ok(self
            .0
            .engine
            .get(Table::Secrets, &idx.to_be_bytes())?
            .is_some())
    }
}

fn u64_value(v: u64) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(&v.to_be_bytes()))
}

fn value(v: Vec<u8>) -> Option<Bytes> {
    Some(Bytes::from(v))
}

/// Finds a stored event by id: generated ids carry their position (no index entry);
/// caller-supplied ids are looked up in the id table.
pub(crate) fn find_event(
    engine: &dyn Engine,
    head: Position,
    id: &str,
) -> Result<Option<(Position, RecordedEvent)>> {
    if let Some(pos) = annals_core::append::position_of_generated_id(id).filter(|p| *p <= head) {
        if let Some(event) = event_at(engine, pos)? {
            if event.id == id {
                return Ok(Some((pos, event)));
            }
        }
    }
    let Some(pos) = engine.get(Table::EventIds, id.as_bytes())? else {
        return Ok(None);
    };
    let pos = codec::read_u64(&pos, "event_ids")?;
    match event_at(engine, pos)? {
        Some(event) => Ok(Some((pos, event))),
        None => Err(Error::Corrupted {
            location: "embedded table event_ids".into(),
            detail: format!("event id {id:?} points at missing position {pos}"),
        }),
    }
}

/// The log record holding `position`: its key (first position) and value.
fn log_record(engine: &dyn Engine, position: Position) -> Result<(Position, Bytes)> {
    let seek = codec::position_key(position).to_vec();
    let found = engine
        .range(Table::Events, Bound::Unbounded, Bound::Included(seek), true)
        .next()
        .transpose()?;
    match found {
        Some((key, value)) => Ok((codec::read_u64(&key, "events")?, value)),
        None => Err(Error::Corrupted {
            location: "embedded table events".into(),
            detail: format!("no commit record holds position {position}"),
        }),
    }
}

/// The stream-table record holding `version` of `stream` when it is a copy (key and
/// events); `None` when it points into the log (rewriting the log record is enough).
fn stream_run(
    engine: &dyn Engine,
    stream: &StreamId,
    version: Version,
) -> Result<Option<(Vec<u8>, Vec<RecordedEvent>)>> {
    let sk = codec::stream_key(stream);
    let found = engine
        .range(
            Table::StreamEvents,
            Bound::Included(codec::stream_version_key(&sk, 0)),
            Bound::Included(codec::stream_version_key(&sk, version)),
            true,
        )
        .next()
        .transpose()?;
    let missing = || Error::Corrupted {
        location: "embedded table stream_events".into(),
        detail: format!("no stream record holds version {version} of {stream}"),
    };
    let (key, value) = found.ok_or_else(missing)?;
    match codec::decode_stream_record(&value)? {
        codec::StreamRecord::Pointer(..) => Ok(None),
        codec::StreamRecord::Events(events) if events.iter().any(|e| e.version == version) => {
            Ok(Some((key.to_vec(), events)))
        }
        codec::StreamRecord::Events(_) => Err(missing()),
    }
}

/// Stages a secret stored with an append: the record is written at commit (one entry
/// per id even when the group sets and then deletes it).
fn stage_secret(group: &mut Group, secret: &Secret) {
    match secret.secret {
        Some(_) => {
            group.counters.secret_next = group.counters.secret_next.max(secret.idx + 1);
            group.counters.secret_count += 1;
        }
        None => group.counters.secrets_deleted += 1,
    }
    group.secrets.insert(secret.id.clone(), secret.clone());
}

/// The stored event at `position`: found in the record of the commit that holds it.
pub(crate) fn event_at(engine: &dyn Engine, position: Position) -> Result<Option<RecordedEvent>> {
    let seek = codec::position_key(position).to_vec();
    let Some(item) = engine
        .range(
            Table::Events,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Included(seek),
            true,
        )
        .next()
    else {
        return Ok(None);
    };
    let (_, value) = item?;
    Ok(codec::decode_batch(&value, "events")?
        .into_iter()
        .find(|e| e.position == position))
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        engine: Arc<dyn Engine>,
        counters: Counters,
        dispatch: read::DispatchState,
    ) -> Self {
        Writer {
            shared,
            engine,
            counters,
            dispatch,
            streams: HashMap::new(),
        }
    }

    fn stream(&mut self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        if let Some(info) = self.streams.get(stream) {
            return Ok(Some(info.clone()));
        }
        let info = read::stream_info(self.engine.as_ref(), stream)?;
        if let Some(info) = &info {
            // The cache is trimmed between groups only (see commit_group), so a stream
            // loaded while planning stays cached until its group is built.
            self.streams.insert(stream.clone(), info.clone());
        }
        Ok(info)
    }

    /// Runs until the store closes or every handle is gone.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut queue = Vec::new();
        let mut last_group = 1;
        while let Ok(first) = commands.recv() {
            queue.push(first);
            while queue.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(c) => queue.push(c),
                    Err(_) => break,
                }
            }
            // Concurrent writers were seen in the last group: give the ones still on
            // their way a moment to join, so they share this fsync instead of waiting
            // for the next one, as long as they keep arriving. A lone writer never waits.
            if last_group > 1 && queue.len() < last_group {
                let deadline = std::time::Instant::now() + GROUP_LINGER;
                while queue.len() < last_group {
                    let quiet_until = std::time::Instant::now() + GROUP_LINGER_IDLE;
                    match commands.recv_deadline(quiet_until.min(deadline)) {
                        Ok(c) => queue.push(c),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            last_group = queue.len();
            let mut group = Group {
                counters: self.counters.clone(),
                ..Group::default()
            };
            let mut closing = None;
            for command in queue.drain(..) {
                if closing.is_some() {
                    command.fail(Error::Closed);
                    continue;
                }
                match command {
                    Command::Append(request, reply) => {
                        // An overwrite replaces committed events only: a group that
                        // already changed one of its streams is committed first.
                        if request.overwrite
                            && request
                                .writes
                                .iter()
                                .any(|w| group.streams.contains_key(&w.stream))
                        {
                            self.commit_group(std::mem::take(&mut group));
                            group.counters = self.counters.clone();
                        }
                        self.plan(&mut group, request, reply)
                    }
                    Command::Close { clear, reply } => {
                        self.commit_group(std::mem::take(&mut group));
                        closing = Some((reply, self.close(clear)));
                    }
                    other => {
                        self.commit_group(std::mem::take(&mut group));
                        group.counters = self.counters.clone();
                        self.single(other);
                    }
                }
            }
            if let Some((reply, result)) = closing {
                while let Ok(c) = commands.try_recv() {
                    c.fail(Error::Closed);
                }
                // Release the engine before answering, so the caller can reopen the
                // directory as soon as `close` returns.
                drop(self);
                let _ = reply.send(result);
                return;
            }
            self.commit_group(group);
        }
    }

    fn poisoned(&self) -> Option<Error> {
        self.shared
            .poisoned()
            .map(|reason| Error::Poisoned { reason })
    }

    fn plan(&mut self, group: &mut Group, request: AppendRequest, reply: Reply<AppendResult>) {
        if let Some(err) = self.poisoned() {
            let _ = reply.send(Err(err));
            return;
        }
        let at = AppendCursor {
            head_position: group.counters.head,
            last_timestamp: group
                .counters
                .last_timestamp
                .unwrap_or(Timestamp::from_millis(i64::MIN)),
            frozen: group.counters.frozen,
        };
        let planned = {
            let mut view = GroupView {
                writer: self,
                group,
            };
            append::plan(&mut view, at, request, Timestamp::now())
        };
        let result = match planned {
            Err(e) => Err(e),
            Ok(AppendPlan::Retry { events }) => Ok(AppendResult {
                commit_id: events
                    .first()
                    .map(|e| e.commit_id.clone())
                    .unwrap_or_default(),
                events,
                head_position: group.counters.head,
                retried: true,
                secret: None,
            }),
            Ok(AppendPlan::Write {
                commit_id,
                events,
                replaced,
                secret,
            }) => {
                let reply_index = group.replies.len();
                let staged = if replaced.is_empty() {
                    self.stage_events(
                        &mut group.streams,
                        &mut group.writes,
                        &events,
                        Some((&mut group.ids, reply_index)),
                    );
                    if let Some(last) = events.last() {
                        group.counters.head = last.position;
                        group.counters.last_timestamp = Some(last.timestamp);
                    }
                    Ok(())
                } else {
                    self.stage_overwrite(group, &events, &replaced, reply_index)
                };
                staged.map(|()| {
                    if let Some(secret) = &secret {
                        stage_secret(group, secret);
                    }
                    AppendResult {
                        commit_id,
                        events,
                        head_position: group.counters.head,
                        retried: false,
                        secret,
                    }
                })
            }
        };
        group.replies.push((reply, result));
    }

    /// Stages an overwrite request: its replacements rewrite the committed log records
    /// and stream-run copies that hold them (merged with the group's earlier rewrites),
    /// move id index entries, and move the stream in the by-time table when version 1
    /// gets a new timestamp; its other events are staged as usual. Every read happens
    /// before the group changes, so a failed read leaves the group as it was.
    fn stage_overwrite(
        &mut self,
        group: &mut Group,
        events: &[RecordedEvent],
        replaced: &[RecordedEvent],
        reply_index: usize,
    ) -> Result<()> {
        let head_before = group.counters.head;
        let engine = self.engine.clone();
        let engine = engine.as_ref();
        // Reads: the log record and the stream run of each replacement, and stream infos.
        let mut loaded_records = Vec::new();
        let mut loaded_runs = Vec::new();
        let mut infos = HashMap::new();
        let mut targets = Vec::with_capacity(replaced.len());
        let replacements = || {
            events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.position <= head_before)
                .zip(replaced)
        };
        for ((_, new), old) in replacements() {
            let (record_key, value) = log_record(engine, old.position)?;
            if !group.records.contains_key(&record_key) {
                loaded_records.push((record_key, codec::decode_batch(&value, "events")?));
            }
            let run_key = match stream_run(engine, &new.stream, new.version)? {
                Some((key, run)) => {
                    if !group.runs.contains_key(&key) {
                        loaded_runs.push((key.clone(), run));
                    }
                    Some(key)
                }
                None => None,
            };
            targets.push((record_key, run_key));
            if !group.streams.contains_key(&new.stream) && !infos.contains_key(&new.stream) {
                let info = self.stream(&new.stream)?.ok_or_else(|| Error::Corrupted {
                    location: "embedded table streams".into(),
                    detail: format!("stream {} has events but no record", new.stream),
                })?;
                infos.insert(new.stream.clone(), info);
            }
        }
        // Changes.
        for (key, record) in loaded_records {
            group.records.entry(key).or_insert(record);
        }
        for (key, run) in loaded_runs {
            group.runs.entry(key).or_insert(run);
        }
        let indexed =
            |e: &RecordedEvent| append::position_of_generated_id(&e.id) != Some(e.position);
        for (((i, new), old), (record_key, run_key)) in replacements().zip(targets) {
            let put = |events: Option<&mut Vec<RecordedEvent>>| {
                if let Some(slot) = events
                    .into_iter()
                    .flatten()
                    .find(|e| e.position == new.position)
                {
                    *slot = new.clone();
                }
            };
            put(group.records.get_mut(&record_key));
            if let Some(run_key) = run_key {
                put(group.runs.get_mut(&run_key));
            }
            if old.id != new.id && indexed(old) {
                group.freed_ids.push(old.id.clone());
            }
            if indexed(new) {
                if old.id != new.id {
                    group.writes.push((
                        Table::EventIds,
                        new.id.as_bytes().to_vec(),
                        u64_value(new.position),
                    ));
                }
                group.ids.insert(new.id.clone(), (reply_index, i));
            }
            let entry = match group.streams.entry(new.stream.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => Some(o.into_mut()),
                std::collections::hash_map::Entry::Vacant(v) => infos
                    .remove(&new.stream)
                    .map(|info| v.insert((info, false))),
            };
            if let Some((info, _)) = entry {
                if new.version == 1 && new.timestamp != info.first_timestamp {
                    group.time_writes.push((
                        Table::StreamsByTime,
                        codec::time_key(info.first_timestamp, info.first_position).to_vec(),
                        None,
                    ));
                    group.time_writes.push((
                        Table::StreamsByTime,
                        codec::time_key(new.timestamp, info.first_position).to_vec(),
                        Some(Bytes::from(codec::stream_key(&new.stream))),
                    ));
                    info.first_timestamp = new.timestamp;
                }
            }
            if new.position == group.counters.head {
                group.counters.last_timestamp = Some(new.timestamp);
            }
            group.replaced.insert(new.position, new.clone());
        }
        // The request's new events, staged as in any append.
        let appended: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| e.position > head_before)
            .cloned()
            .collect();
        self.stage_events(&mut group.streams, &mut group.writes, &appended, None);
        for (i, e) in events.iter().enumerate() {
            if e.position > head_before
                && append::position_of_generated_id(&e.id) != Some(e.position)
            {
                group.ids.insert(e.id.clone(), (reply_index, i));
            }
        }
        if let Some(last) = appended.last() {
            group.counters.head = last.position;
            group.counters.last_timestamp = Some(last.timestamp);
        }
        Ok(())
    }

    /// Stages the stream-table records, id index entries and stream infos of planned
    /// events (consecutive positions); `ids` records the indexed ids of an append group.
    #[allow(clippy::type_complexity)]
    fn stage_events(
        &self,
        streams: &mut HashMap<StreamId, (StreamInfo, bool)>,
        writes: &mut Vec<Write>,
        events: &[RecordedEvent],
        mut ids: Option<(&mut HashMap<Text, (usize, usize)>, usize)>,
    ) {
        let mut run_start = 0;
        while run_start < events.len() {
            // Handle each run of consecutive events of one stream at once (an append plan
            // has one run per stream; an import may come back to a stream later).
            let stream = &events[run_start].stream;
            let run_end = events[run_start..]
                .iter()
                .position(|e| e.stream != *stream)
                .map_or(events.len(), |n| run_start + n);
            // One record per stream run, keyed by its first version; the
            // store-wide record of the whole group is written at commit.
            // A long run points into the log record instead of copying it: a
            // stream read then costs one lookup per run, and the commit writes
            // the events once. Short runs (many streams per commit) are copied
            // so reading a stream never needs one lookup per event.
            let sk = codec::stream_key(stream);
            let run_len = run_end - run_start;
            let value = if run_len >= RUN_POINTER_MIN {
                codec::encode_run_pointer(events[run_start].position, run_len as u32)
            } else {
                codec::encode_batch(events[run_start..run_end].iter())
            };
            writes.push((
                Table::StreamEvents,
                codec::stream_version_key(&sk, events[run_start].version),
                Some(Bytes::from(value)),
            ));
            for (i, e) in events.iter().enumerate().take(run_end).skip(run_start) {
                // Generated ids carry their position: no index entry, and no
                // caller can retry them within this group.
                if append::position_of_generated_id(&e.id) != Some(e.position) {
                    writes.push((
                        Table::EventIds,
                        e.id.as_bytes().to_vec(),
                        u64_value(e.position),
                    ));
                    if let Some((ids, reply_index)) = ids.as_mut() {
                        ids.insert(e.id.clone(), (*reply_index, i));
                    }
                }
            }
            let (first, last) = (&events[run_start], &events[run_end - 1]);
            let entry = match streams.get_mut(stream) {
                Some(entry) => {
                    entry.0.version = last.version;
                    entry.0.last_position = last.position;
                    None
                }
                None => Some(match self.streams.get(stream) {
                    Some(info) => (
                        StreamInfo {
                            version: last.version,
                            last_position: last.position,
                            ..info.clone()
                        },
                        false,
                    ),
                    None => (
                        StreamInfo {
                            stream: stream.clone(),
                            version: last.version,
                            first_timestamp: first.timestamp,
                            first_position: first.position,
                            last_position: last.position,
                        },
                        true,
                    ),
                }),
            };
            if let Some(entry) = entry {
                streams.insert(stream.clone(), entry);
            }
            run_start = run_end;
        }
    }

    fn commit_group(&mut self, mut group: Group) {
        // Replacements (overwrite) sit at committed positions; the group's record holds
        // only the new events, above the committed head.
        let base = self.counters.head;
        let written = || {
            group
                .replies
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok())
                .filter(|r| !r.retried)
                .flat_map(|r| r.events.iter())
                .filter(move |e| e.position > base)
        };
        if let Some(first) = written().next() {
            // The whole group is one record in the store-wide log.
            let record = Bytes::from(codec::encode_batch(written()));
            group.writes.push((
                Table::Events,
                codec::position_key(first.position).to_vec(),
                Some(record),
            ));
        }
        if !group.replaced.is_empty() {
            self.stage_rewrites(&mut group);
        }
        if !group.secrets.is_empty() {
            stage_secret_writes(&mut group);
        }
        if group.writes.is_empty() {
            for (reply, result) in group.replies {
                let _ = reply.send(result);
            }
            return;
        }
        stage_streams(&group.streams, &mut group.counters, &mut group.writes);
        match self.engine.commit_durable(group.writes) {
            Ok(()) => {
                if self.streams.len() + group.streams.len() > STREAM_CACHE_LIMIT {
                    self.streams.clear();
                }
                for (stream, (info, _)) in group.streams {
                    self.streams.insert(stream, info);
                }
                self.counters = group.counters;
                let committed = group
                    .replies
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .filter(|r| !r.retried)
                    .flat_map(|r| r.events.iter())
                    .filter(|e| e.position > base);
                self.shared
                    .publish_events(&self.counters, committed, group.replaced.values());
                for (reply, result) in group.replies {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let err = self.poison(e);
                for (reply, result) in group.replies {
                    let _ = reply.send(result.and(Err(err.clone())));
                }
            }
        }
    }

    /// Stages the records an overwrite group rewrote, its id index deletions and its
    /// streams-by-time moves.
    fn stage_rewrites(&self, group: &mut Group) {
        for (key, events) in group.records.drain() {
            group.writes.push((
                Table::Events,
                codec::position_key(key).to_vec(),
                Some(Bytes::from(codec::encode_batch(events.iter()))),
            ));
        }
        for (key, events) in group.runs.drain() {
            group.writes.push((
                Table::StreamEvents,
                key,
                Some(Bytes::from(codec::encode_batch(events.iter()))),
            ));
        }
        for id in group.freed_ids.drain(..) {
            // An id freed and indexed again in the same group keeps its new entry.
            if !group.ids.contains_key(&id) {
                group
                    .writes
                    .push((Table::EventIds, id.as_bytes().to_vec(), None));
            }
        }
        group.writes.append(&mut group.time_writes);
    }

    /// Imports one batch as one durable commit (allowed while frozen).
    fn import(&mut self, batch: ImportBatch) -> Result<ImportOutcome> {
        let head = self.counters.head;
        let plan = import::plan_events(&mut ImportView(self), head, batch)?;
        let (Some(first), Some(last)) = (plan.events.first(), plan.events.last()) else {
            return Ok(ImportOutcome {
                imported: 0,
                skipped: plan.skipped,
                head_position: head,
            });
        };
        let mut streams = HashMap::new();
        let mut writes = Vec::with_capacity(plan.events.len() + 8);
        self.stage_events(&mut streams, &mut writes, &plan.events, None);
        writes.push((
            Table::Events,
            codec::position_key(first.position).to_vec(),
            Some(Bytes::from(codec::encode_batch(plan.events.iter()))),
        ));
        let mut counters = self.counters.clone();
        counters.head = last.position;
        counters.last_timestamp = Some(last.timestamp);
        stage_streams(&streams, &mut counters, &mut writes);

        // Dispatch marks travel with the events: below-watermark runs fold into it.
        let mut dispatch = self.dispatch.clone();
        let marked: Vec<Position> = plan
            .events
            .iter()
            .filter(|e| e.dispatched)
            .map(|e| e.position)
            .collect();
        if !marked.is_empty() {
            let old = dispatch.clone();
            dispatch.above.extend(marked.iter().copied());
            while dispatch.above.remove(&(dispatch.watermark + 1)) {
                dispatch.watermark += 1;
            }
            for pos in old.above.iter().filter(|p| **p <= dispatch.watermark) {
                writes.push((Table::Dispatched, codec::position_key(*pos).to_vec(), None));
            }
            for pos in marked.iter().filter(|p| dispatch.above.contains(p)) {
                writes.push((
                    Table::Dispatched,
                    codec::position_key(*pos).to_vec(),
                    Some(Bytes::new()),
                ));
            }
            writes.push((
                Table::Meta,
                META_DISPATCH_WATERMARK.to_vec(),
                u64_value(dispatch.watermark),
            ));
        }
        if let Err(e) = self.engine.commit_durable(writes) {
            return Err(self.poison(e));
        }
        if self.streams.len() + streams.len() > STREAM_CACHE_LIMIT {
            self.streams.clear();
        }
        for (stream, (info, _)) in streams {
            self.streams.insert(stream, info);
        }
        // Readers that see the new head must see the imported dispatch marks too.
        self.shared.set_dispatch(dispatch.clone());
        self.dispatch = dispatch;
        self.counters = counters;
        let imported = plan.events.len() as u64;
        self.shared.publish_imported(&self.counters, plan.events);
        Ok(ImportOutcome {
            imported,
            skipped: plan.skipped,
            head_position: self.counters.head,
        })
    }

    /// Deletes every event, stream, stream snapshot and dispatch mark: mark, sweep,
    /// unmark. The mark is durable before anything is deleted, and an open that finds it
    /// finishes the sweep (see [`recover`]), so a crash mid-clear is never visible.
    fn clear_events(&mut self) -> Result<()> {
        self.commit(
            vec![(
                Table::Meta,
                META_CLEARING_EVENTS.to_vec(),
                Some(Bytes::from_static(&[1])),
            )],
            self.counters.clone(),
        )?;
        let counters = Counters {
            head: 0,
            last_timestamp: None,
            stream_count: 0,
            ..self.counters.clone()
        };
        // Readers stop seeing the old events before they are deleted.
        self.streams.clear();
        self.dispatch = read::DispatchState::default();
        self.shared.set_dispatch(read::DispatchState::default());
        self.shared.clear_tail();
        self.counters = counters;
        self.shared.publish(&self.counters);
        if let Err(e) = sweep_events(self.engine.as_ref()) {
            // The mark stays: reopening finishes the sweep.
            return Err(self.poison(e));
        }
        Ok(())
    }

    fn clear_secrets(&mut self) -> Result<()> {
        let mut writes = Vec::new();
        for table in [Table::Secrets, Table::SecretIds] {
            for item in self.engine.range(
                table,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                false,
            ) {
                let (k, _) = item?;
                writes.push((table, k.to_vec(), None));
            }
        }
        writes.push((Table::Meta, META_SECRETS_DELETED.to_vec(), None));
        writes.push((Table::Meta, META_SECRET_COUNT.to_vec(), None));
        let counters = Counters {
            secret_next: 0,
            secret_count: 0,
            secrets_deleted: 0,
            ..self.counters.clone()
        };
        self.commit(writes, counters)
    }

    fn import_secrets(
        &mut self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        let next = self.counters.secret_next;
        let plan = import::plan_secrets(&mut ImportView(self), next, secrets, on_conflict)?;
        let mut counters = self.counters.clone();
        let mut writes = Vec::with_capacity(plan.secrets.len() * 2 + 2);
        for s in &plan.secrets {
            writes.push((
                Table::Secrets,
                s.idx.to_be_bytes().to_vec(),
                value(codec::encode_secret(&s.id, s.secret.as_deref())),
            ));
            writes.push((Table::SecretIds, s.id.as_bytes().to_vec(), u64_value(s.idx)));
            if s.secret.is_none() {
                counters.secrets_deleted += 1;
            }
        }
        if !plan.secrets.is_empty() {
            counters.secret_next = plan.next_idx;
            counters.secret_count += plan.secrets.len() as u64;
            writes.push((
                Table::Meta,
                META_SECRETS_DELETED.to_vec(),
                u64_value(counters.secrets_deleted),
            ));
            writes.push((
                Table::Meta,
                META_SECRET_COUNT.to_vec(),
                u64_value(counters.secret_count),
            ));
        }
        self.commit(writes, counters)?;
        Ok(ImportOutcome {
            imported: plan.secrets.len() as u64,
            skipped: plan.skipped,
            head_position: self.counters.head,
        })
    }

    fn poison(&mut self, cause: Error) -> Error {
        let reason = cause.to_string();
        tracing::error!(%reason, "durable commit failed; the store refuses writes until reopened");
        self.shared.set_poisoned(reason.clone());
        Error::Poisoned { reason }
    }

    /// Commits `writes` durably and, on success, makes `counters` the committed state.
    fn commit(&mut self, writes: Vec<Write>, counters: Counters) -> Result<()> {
        if let Some(err) = self.poisoned() {
            return Err(err);
        }
        if writes.is_empty() {
            return Ok(());
        }
        match self.engine.commit_durable(writes) {
            Ok(()) => {
                self.counters = counters;
                self.shared.publish(&self.counters);
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    fn single(&mut self, command: Command) {
        if let Some(err) = self.poisoned() {
            command.fail(err);
            return;
        }
        match command {
            Command::Freeze(freeze, reply) => {
                let _ = reply.send(self.freeze(freeze));
            }
            Command::SaveSnapshot(key, content, reply) => {
                let snapshot = codec::encode_keyed_snapshot(Timestamp::now(), &content);
                let writes = vec![(Table::Snapshots, key.into_bytes(), value(snapshot))];
                let _ = reply.send(self.commit(writes, self.counters.clone()));
            }
            Command::DropSnapshot(key, reply) => {
                let result = self
                    .engine
                    .get(Table::Snapshots, key.as_bytes())
                    .and_then(|found| match found {
                        None => Ok(false),
                        Some(_) => self
                            .commit(
                                vec![(Table::Snapshots, key.into_bytes(), None)],
                                self.counters.clone(),
                            )
                            .map(|()| true),
                    });
                let _ = reply.send(result);
            }
            Command::SaveStreamSnapshot(snapshot, reply) => {
                let mut counters = self.counters.clone();
                counters.snapshot_seq += 1;
                let mut key = codec::stream_version_key(
                    &codec::stream_key(&snapshot.stream),
                    snapshot.stream_version,
                );
                key.extend_from_slice(&counters.snapshot_seq.to_be_bytes());
                let writes = vec![
                    (
                        Table::StreamSnapshots,
                        key,
                        value(codec::encode_stream_snapshot(&snapshot)),
                    ),
                    (
                        Table::Meta,
                        META_SNAPSHOT_SEQ.to_vec(),
                        u64_value(counters.snapshot_seq),
                    ),
                ];
                let _ = reply.send(self.commit(writes, counters).map(|()| snapshot));
            }
            Command::PruneStreamSnapshots(stream, keep, reply) => {
                let _ = reply.send(self.prune(&stream, keep));
            }
            Command::SetSecret(id, secret, reply) => {
                let _ = reply.send(self.set_secret(id, secret));
            }
            Command::DeleteSecret(id, reply) => {
                let _ = reply.send(self.delete_secret(&id));
            }
            Command::MarkDispatched(id, reply) => {
                let _ = reply.send(self.mark_dispatched(&id));
            }
            Command::MarkDispatchedAt(positions, reply) => {
                let _ = reply.send(self.mark_dispatched_at(&positions));
            }
            Command::ImportSnapshots(snapshots, reply) => {
                let count = snapshots.len() as u64;
                let writes = snapshots
                    .into_iter()
                    .map(|s| {
                        let snapshot = codec::encode_keyed_snapshot(s.timestamp, &s.content);
                        (Table::Snapshots, s.key.into_bytes(), value(snapshot))
                    })
                    .collect();
                let _ = reply.send(self.commit(writes, self.counters.clone()).map(|()| count));
            }
            Command::Import(batch, reply) => {
                let _ = reply.send(self.import(batch));
            }
            Command::ClearEvents(reply) => {
                let _ = reply.send(self.clear_events());
            }
            Command::ClearSecrets(reply) => {
                let _ = reply.send(self.clear_secrets());
            }
            Command::ImportSecrets(secrets, on_conflict, reply) => {
                let _ = reply.send(self.import_secrets(secrets, on_conflict));
            }
            // Appends and close are handled by `run`.
            Command::Append(_, reply) => {
                let _ = reply.send(Err(Error::Closed));
            }
            Command::Close { reply, .. } => {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    fn freeze(&mut self, freeze: bool) -> Result<()> {
        match (freeze, self.counters.frozen) {
            (true, true) => return Err(Error::AlreadyFrozen),
            (false, false) => return Err(Error::NotFrozen),
            _ => {}
        }
        let mut counters = self.counters.clone();
        counters.frozen = freeze;
        let writes = vec![(
            Table::Meta,
            META_FROZEN.to_vec(),
            Some(Bytes::copy_from_slice(&[u8::from(freeze)])),
        )];
        self.commit(writes, counters)
    }

    fn prune(&mut self, stream: &StreamId, keep: usize) -> Result<u64> {
        let prefix = codec::stream_key(stream);
        let from = codec::stream_version_key(&prefix, 0);
        let mut to = codec::stream_version_key(&prefix, Version::MAX);
        to.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut keys = Vec::new();
        for item in self.engine.range(
            Table::StreamSnapshots,
            std::ops::Bound::Included(from),
            std::ops::Bound::Included(to),
            false,
        ) {
            let (k, _) = item?;
            let seq = codec::read_u64(&k[k.len() - 8..], "stream_snapshots")?;
            keys.push((seq, k.to_vec()));
        }
        // Newest saves first; everything past `keep` goes.
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        let doomed: Vec<Write> = keys
            .into_iter()
            .skip(keep)
            .map(|(_, k)| (Table::StreamSnapshots, k, None))
            .collect();
        let deleted = doomed.len() as u64;
        self.commit(doomed, self.counters.clone())?;
        Ok(deleted)
    }

    fn set_secret(&mut self, id: String, secret: String) -> Result<Secret> {
        if self.counters.frozen {
            return Err(Error::Frozen);
        }
        if self.engine.get(Table::SecretIds, id.as_bytes())?.is_some() {
            return Err(Error::SecretAlreadyExists { id });
        }
        let mut counters = self.counters.clone();
        let idx = counters.secret_next;
        counters.secret_next += 1;
        counters.secret_count += 1;
        let writes = vec![
            (
                Table::Secrets,
                idx.to_be_bytes().to_vec(),
                value(codec::encode_secret(&id, Some(&secret))),
            ),
            (Table::SecretIds, id.as_bytes().to_vec(), u64_value(idx)),
            (
                Table::Meta,
                META_SECRET_COUNT.to_vec(),
                u64_value(counters.secret_count),
            ),
        ];
        self.commit(writes, counters)?;
        Ok(Secret {
            idx,
            id,
            secret: Some(secret),
        })
    }

    fn delete_secret(&mut self, id: &str) -> Result<()> {
        if self.counters.frozen {
            return Err(Error::Frozen);
        }
        let engine = self.engine.as_ref();
        let existing = read::get_secret(engine, id)?;
        let Some(Secret {
            idx,
            secret: Some(_),
            ..
        }) = existing
        else {
            return Err(Error::not_found("secret", id));
        };
        let mut counters = self.counters.clone();
        counters.secrets_deleted += 1;
        let writes = vec![
            (
                Table::Secrets,
                idx.to_be_bytes().to_vec(),
                value(codec::encode_secret(id, None)),
            ),
            (
                Table::Meta,
                META_SECRETS_DELETED.to_vec(),
                u64_value(counters.secrets_deleted),
            ),
        ];
        self.commit(writes, counters)
    }

    fn mark_dispatched(&mut self, id: &str) -> Result<()> {
        let Some((pos, _)) = find_event(self.engine.as_ref(), self.counters.head, id)? else {
            return Err(Error::not_found("event", id));
        };
        self.mark_positions(&[pos])
    }

    fn mark_dispatched_at(&mut self, positions: &[Position]) -> Result<()> {
        let head = self.counters.head;
        if let Some(p) = positions.iter().find(|p| **p == 0 || **p > head) {
            return Err(Error::not_found("event", format!("position {p}")));
        }
        self.mark_positions(positions)
    }

    /// Marks stored positions dispatched in one durable write: positions that join the
    /// contiguous run fold into the watermark, the others are kept one key each.
    fn mark_positions(&mut self, positions: &[Position]) -> Result<()> {
        let mut next = self.dispatch.clone();
        let mut added = Vec::new();
        for p in positions {
            if !next.is_dispatched(*p) {
                next.above.insert(*p);
                added.push(*p);
            }
        }
        if added.is_empty() {
            return Ok(());
        }
        while next.above.remove(&(next.watermark + 1)) {
            next.watermark += 1;
        }
        let mut writes = Vec::new();
        for p in self.dispatch.above.range(..=next.watermark) {
            writes.push((Table::Dispatched, codec::position_key(*p).to_vec(), None));
        }
        for p in added.iter().filter(|p| next.above.contains(p)) {
            writes.push((
                Table::Dispatched,
                codec::position_key(*p).to_vec(),
                Some(Bytes::new()),
            ));
        }
        writes.push((
            Table::Meta,
            META_DISPATCH_WATERMARK.to_vec(),
            u64_value(next.watermark),
        ));
        self.commit(writes, self.counters.clone())?;
        self.shared.set_dispatch(next.clone());
        self.dispatch = next;
        Ok(())
    }

    fn close(&mut self, clear: bool) -> Result<()> {
        let result = if clear {
            self.engine.clear()
        } else {
            self.engine.sync()
        };
        // Readers stop taking the engine; the writer's own reference goes when `run`
        // returns, and the last in-flight reader releases the directory.
        drop(self.shared.take_engine());
        self.shared.mark_closed();
        result
    }
}

/// Stages the secrets an append group stored, and the secret counters.
fn stage_secret_writes(group: &mut Group) {
    for s in group.secrets.values() {
        group.writes.push((
            Table::Secrets,
            s.idx.to_be_bytes().to_vec(),
            value(codec::encode_secret(&s.id, s.secret.as_deref())),
        ));
        group
            .writes
            .push((Table::SecretIds, s.id.as_bytes().to_vec(), u64_value(s.idx)));
    }
    group.writes.push((
        Table::Meta,
        META_SECRET_COUNT.to_vec(),
        u64_value(group.counters.secret_count),
    ));
    group.writes.push((
        Table::Meta,
        META_SECRETS_DELETED.to_vec(),
        u64_value(group.counters.secrets_deleted),
    ));
}

/// Stages the records of streams an append group or import changed, and the stream
/// count.
fn stage_streams(
    streams: &HashMap<StreamId, (StreamInfo, bool)>,
    counters: &mut Counters,
    writes: &mut Vec<Write>,
) {
    let mut new_streams = 0;
    for (stream, (info, is_new)) in streams {
        let sk = codec::stream_key(stream);
        if *is_new {
            new_streams += 1;
            writes.push((
                Table::StreamsByTime,
                codec::time_key(info.first_timestamp, info.first_position).to_vec(),
                Some(Bytes::from(sk.clone())),
            ));
        }
        writes.push((
            Table::Streams,
            sk,
            Some(Bytes::copy_from_slice(&codec::encode_stream_info(info))),
        ));
    }
    if new_streams > 0 {
        counters.stream_count += new_streams;
        writes.push((
            Table::Meta,
            META_STREAM_COUNT.to_vec(),
            u64_value(counters.stream_count),
        ));
    }
}

/// The sweep of `clear_events` (and of an open that finds it interrupted): empties the
/// event tables durably, then removes the event counters and the clearing mark in one
/// durable commit.
fn sweep_events(engine: &dyn Engine) -> Result<()> {
    engine.clear_tables(&EVENT_TABLES)?;
    engine.commit_durable(vec![
        (Table::Meta, META_STREAM_COUNT.to_vec(), None),
        (Table::Meta, META_DISPATCH_WATERMARK.to_vec(), None),
        (Table::Meta, META_CLEARING_EVENTS.to_vec(), None),
    ])
}

/// Reads the committed counters and dispatch state at open, first finishing a
/// `clear_events` that a crash interrupted.
pub(crate) fn recover(engine: &dyn Engine) -> Result<(Counters, read::DispatchState)> {
    if engine.get(Table::Meta, META_CLEARING_EVENTS)?.is_some() {
        tracing::warn!("finishing a clear of the events that was interrupted");
        sweep_events(engine)?;
    }
    let meta = |key: &[u8]| -> Result<u64> {
        engine
            .get(Table::Meta, key)?
            .map_or(Ok(0), |v| codec::read_u64(&v, "meta"))
    };
    let (head, last_timestamp) = match engine.last(Table::Events)? {
        Some((_, value)) => match codec::decode_batch(&value, "events")?.pop() {
            Some(e) => (e.position, Some(e.timestamp)),
            None => (0, None),
        },
        None => (0, None),
    };
    let secret_next = match engine.last(Table::Secrets)? {
        Some((k, _)) => codec::read_u64(&k, "secrets")? + 1,
        None => 0,
    };
    let frozen = engine
        .get(Table::Meta, META_FROZEN)?
        .is_some_and(|v| v.first() == Some(&1));
    let mut above = BTreeSet::new();
    for item in engine.range(
        Table::Dispatched,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
        false,
    ) {
        let (k, _) = item?;
        above.insert(codec::read_u64(&k, "dispatched")?);
    }
    Ok((
        Counters {
            head,
            last_timestamp,
            frozen,
            stream_count: meta(META_STREAM_COUNT)?,
            secret_next,
            secret_count: match engine.get(Table::Meta, META_SECRET_COUNT)? {
                Some(v) => codec::read_u64(&v, "meta")?,
                None => secret_next,
            },
            secrets_deleted: meta(META_SECRETS_DELETED)?,
            snapshot_seq: meta(META_SNAPSHOT_SEQ)?,
        },
        read::DispatchState {
            watermark: meta(META_DISPATCH_WATERMARK)?,
            above,
        },
    ))
}

/// Validated snapshot to save (the writer only stores it).
pub(crate) fn snapshot_command(snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
    annals_core::rules::check_stream_snapshot(snapshot)
}

#[cfg(test)]
mod tests {
    // Test helpers panic on failure by design: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use annals_core::{
        ErrorKind, EventStore, ExpectedVersion, Json, ListStreams, ProposedEvent, ReadAll,
        SecretChange, StreamRead,
    };

    use super::*;
    use crate::engine::{FjallEngine, FjallTuning};
    use crate::EmbeddedStore;

    /// Runs the writer over `requests` queued before it starts, so they form ONE group
    /// (with the commits the writer's own rules add), and returns their results.
    fn one_group(dir: &Path, requests: Vec<AppendRequest>) -> Vec<Result<AppendResult>> {
        let engine: Arc<dyn Engine> = Arc::new(
            FjallEngine::open(
                dir,
                FjallTuning {
                    cache_bytes: 1 << 20,
                    max_journal_bytes: 64 << 20,
                },
            )
            .unwrap(),
        );
        let (counters, dispatch) = recover(&*engine).unwrap();
        let shared = Arc::new(Shared::new(
            dir,
            engine.clone(),
            &counters,
            &dispatch,
            1 << 20,
        ));
        let writer = Writer::new(shared.clone(), engine, counters, dispatch);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut replies = Vec::new();
        for request in requests {
            let (reply, answer) = oneshot::channel();
            tx.send(Command::Append(request, reply)).unwrap();
            replies.push(answer);
        }
        drop(tx);
        writer.run(rx);
        drop(shared.take_engine());
        replies
            .into_iter()
            .map(|mut r| r.try_recv().unwrap())
            .collect()
    }

    fn event(id: &str) -> ProposedEvent {
        ProposedEvent::new("T", Json::from_raw(format!("{{\"id\":\"{id}\"}}"))).with_id(id)
    }

    /// A corrected event: same id, new type.
    fn fixed(id: &str) -> ProposedEvent {
        ProposedEvent::new("Fixed", Json::from_raw(format!("{{\"id\":\"{id}\"}}"))).with_id(id)
    }

    fn to(stream: &str, events: Vec<ProposedEvent>) -> AppendRequest {
        AppendRequest::to_stream(StreamId::new(stream), ExpectedVersion::Any, events)
    }

    fn set(id: &str) -> SecretChange {
        SecretChange::Set {
            id: id.into(),
            secret: format!("value of {id}"),
        }
    }

    #[tokio::test]
    async fn secrets_set_by_earlier_requests_of_a_group_are_seen_by_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let results = one_group(
            dir.path(),
            vec![
                to("s", vec![event("e1")]).with_secret(set("k")),
                to("s", vec![event("e2")]).with_secret(set("k")),
                AppendRequest::default().with_secret(set("k2")),
                AppendRequest::default().with_secret(SecretChange::Delete { id: "k".into() }),
                AppendRequest::default().with_secret(SecretChange::Delete { id: "k".into() }),
            ],
        );
        let secret = |i: usize| results[i].as_ref().unwrap().secret.clone().unwrap();
        assert_eq!(
            (secret(0).idx, secret(0).secret.as_deref()),
            (0, Some("value of k"))
        );
        assert_eq!(
            results[1].as_ref().unwrap_err().kind(),
            ErrorKind::SecretAlreadyExists
        );
        assert_eq!(secret(2).idx, 1, "next idx counts the group's own secrets");
        assert_eq!((secret(3).idx, secret(3).secret.as_deref()), (0, None));
        assert_eq!(results[4].as_ref().unwrap_err().kind(), ErrorKind::NotFound);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let k = store.get_secret("k").await.unwrap().unwrap();
        assert_eq!((k.idx, k.secret), (0, None));
        let k2 = store.get_secret("k2").await.unwrap().unwrap();
        assert_eq!((k2.idx, k2.secret.as_deref()), (1, Some("value of k2")));
        let d = store.describe().await.unwrap();
        assert_eq!(
            (d.secret_count, d.set_secret_count, d.deleted_secret_count),
            (2, 1, 1)
        );
        let events = store.read_all(ReadAll::forward()).await.unwrap().events;
        assert_eq!(events.len(), 1, "the refused request stored nothing");
        assert_eq!(events[0].id.as_str(), "e1");
        assert_eq!(store.set_secret("k3", "v").await.unwrap().idx, 2);
    }

    #[tokio::test]
    async fn overwrites_in_a_group_keep_every_index_right() {
        let dir = tempfile::tempdir().unwrap();
        let first = one_group(
            dir.path(),
            vec![
                to("a", vec![event("a1"), event("a2")]),
                to("g", vec![ProposedEvent::new("T", Json::from_raw("{}"))]),
            ],
        );
        let generated = first[1].as_ref().unwrap().events[0].id.to_string();
        assert_eq!(
            annals_core::append::position_of_generated_id(&generated),
            Some(3)
        );
        let far = Timestamp::from_millis(4_000_000_000_000);
        let results = one_group(
            dir.path(),
            vec![
                to("b", vec![event("b1")]),
                to("a", vec![event("x").with_version(1).with_timestamp(far)]).overwriting(),
                // The id the overwrite freed is free in the same group...
                to("c", vec![event("a1")]),
                // ...and the id it took is not.
                to("d", vec![event("x")]),
                // Same stream again: the group is committed first.
                to("a", vec![fixed("a2").with_version(2), event("a3")]).overwriting(),
                to("g", vec![event("g-new").with_version(1)]).overwriting(),
                to("e", vec![event(&generated)]),
                // An event appended earlier in this group: committed first, then replaced.
                to("b", vec![fixed("b1").with_version(1)]).overwriting(),
            ],
        );
        let ok = |i: usize| results[i].as_ref().unwrap();
        assert_eq!(ok(1).events[0].position, 1);
        assert_eq!(ok(2).events[0].position, 5);
        assert_eq!(
            results[3].as_ref().unwrap_err().kind(),
            ErrorKind::DuplicateEventId
        );
        assert_eq!(
            ok(4).events.iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![2, 6]
        );
        assert_eq!(ok(5).events[0].position, 3);
        assert_eq!(ok(6).events[0].position, 7);
        assert_eq!(ok(7).events[0].position, 4);

        let store = EmbeddedStore::open(dir.path()).unwrap();
        let all = store.read_all(ReadAll::forward()).await.unwrap().events;
        assert_eq!(
            all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec!["x", "a2", "g-new", "b1", "a1", "a3", generated.as_str()]
        );
        let a = store
            .read_stream(&StreamId::new("a"), StreamRead::all())
            .await
            .unwrap();
        assert_eq!(
            a.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            vec!["x", "a2", "a3"]
        );
        assert_eq!(a[0].timestamp, far);
        let b = store
            .read_stream(&StreamId::new("b"), StreamRead::all())
            .await
            .unwrap();
        assert_eq!(
            (b.len(), b[0].id.as_str(), b[0].event_type.as_str()),
            (1, "b1", "Fixed")
        );
        assert_eq!(
            (a[1].commit_id.as_str(), a[1].event_type.as_str()),
            (ok(4).commit_id.as_str(), "Fixed")
        );
        let info = store
            .stream_info(&StreamId::new("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.first_timestamp, info.version), (far, 3));
        let order: Vec<String> = store
            .list_streams(ListStreams::default())
            .await
            .unwrap()
            .streams
            .into_iter()
            .map(|s| s.stream.id)
            .collect();
        assert_eq!(
            order,
            vec!["g", "b", "c", "e", "a"],
            "a moved with its new first timestamp"
        );
        // Id lookups: each id leads to the event that holds it now.
        for (id, position) in [("x", 1), ("a1", 5), ("g-new", 3), (generated.as_str(), 7)] {
            store.mark_dispatched(id).await.unwrap();
            let e = store.read_all(ReadAll::forward()).await.unwrap().events;
            assert!(e[position - 1].dispatched, "{id} marks position {position}");
        }
        assert_eq!(
            store.mark_dispatched("b9").await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let d = store.describe().await.unwrap();
        assert_eq!((d.event_count, d.stream_count), (7, 5));
    }
}
