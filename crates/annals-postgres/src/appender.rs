//! The one appender of a store in this process: group commit.
//!
//! Every append of the store goes through one task with its own connection. It takes
//! every request waiting in its queue and writes them in one transaction; the store's
//! head row in `stores` serialises that transaction with every other writer of the
//! store, in this process or another one. When fewer requests wait than the previous
//! group had, it first gives the others up to one commit's time to come back, since a
//! commit costs nearly the same for a few appends as for many.
//!
//! A group is planned with [`annals_core::append::plan`], which needs the current
//! version of each stream involved and the stored events of the ids the requests name.
//! Two ways to get them:
//!
//! - **Locked path.** `BEGIN`, lock the head row (`SELECT … FOR NO KEY UPDATE`), then —
//!   in fresh statements, so the reads see everything committed before the lock was
//!   granted — read the versions of the streams and the events of the ids, plan, write
//!   with one statement (the head row's `UPDATE … RETURNING` plus multi-row inserts),
//!   `COMMIT`. Four round trips plus the commit's WAL flush.
//! - **Verified path.** The appender remembers stream versions and the head they are
//!   valid at. When every stream of a request is remembered, it plans against that
//!   memory and sends ONE autocommit statement that takes the head row and writes only
//!   if the head is still the one the memory is valid at (and the store is not
//!   frozen). A head that moved means another process appended: the statement writes
//!   nothing, the memory is dropped, and the requests take the locked path. So cached
//!   versions are never trusted, only used once the head row proves them current.
//!   Requests the memory cannot decide (unknown streams, ids that may be stored,
//!   replacements, secrets, any planning error, which might come from a stale memory)
//!   take the locked path too.
//!
//! Replacements (overwrite) and secrets are written on the locked path by one more
//! statement before the insert: stored rows are updated in place; a replacement of an
//! event written earlier in the same group just changes the row still to be inserted.
//!
//! A unique-constraint violation (SQLSTATE 23505) means the database holds something
//! the plan did not know about: the transaction is rolled back and the requests are
//! planned again one by one on the locked path, against freshly read state, so a
//! conflict surfaces as `WrongExpectedVersion` with the re-read actual version, as
//! `DuplicateEventId`, or as the idempotent retry it was.
//!
//! Streams are numbered densely per store (`streams.stream_no`, from the store's
//! stream counter, under the head row): the `(store, stream_no, version)` key is
//! narrow and cheap to maintain. Event ids the store generated carry their position
//! ([`annals_core::append::generated_event_id`]) and get no index entry; only
//! caller-supplied ids are in the unique id index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use annals_core::append::{self, position_of_generated_id, AppendCursor, AppendPlan, AppendState};
use annals_core::{
    AppendRequest, AppendResult, Error, Position, RecordedEvent, Result, Secret, StreamId, Text,
    Timestamp, Version,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::{mpsc, oneshot};

use crate::error::{connection_broken, db_error, unique_violation};
use crate::read::{event_from_row, to_sql};
use crate::Shared;

/// Most requests in one group.
const MAX_GROUP: usize = 1024;
/// A group stops growing past this many events (a single request may exceed it).
const MAX_GROUP_EVENTS: usize = 10_000;
/// Longest wait for the previous group's writers to come back: as long as the previous
/// commit took, and never longer than this. A PostgreSQL commit costs about the same for
/// 4 appends as for 8, so the two batches of an HTTP client that take turns are better
/// committed together. Measured on 2 cores, HTTP w2 over a PostgreSQL-backed server with
/// two batches in flight: 6.4–7.1k events/s without the wait, 8.7–9.6k waiting half a
/// commit, 9.5–10.2k waiting a whole one (one batch in flight: 9.2–12.0k); direct w2
/// unchanged (18.5–20.8k).
const MAX_LINGER: std::time::Duration = std::time::Duration::from_millis(1);
/// The remembered streams start over past this many.
const MEMORY_LIMIT: usize = 1 << 20;
/// Groups that skip the verified path after it found the head moved by another writer.
const SKIP_AFTER_FOREIGN_HEAD: u32 = 8;
/// Locked-path attempts of one request that keeps hitting unique violations.
const CONFLICT_ATTEMPTS: usize = 3;

type Reply<T> = oneshot::Sender<Result<T>>;

/// A request to the appender.
pub(crate) enum Command {
    Append(AppendRequest, Reply<AppendResult>),
    /// Finish the queued appends, then stop; `drop` also deletes the store's data.
    Close {
        drop: bool,
        reply: Reply<()>,
    },
}

struct Pending {
    request: AppendRequest,
    reply: Reply<AppendResult>,
}

/// What is known about a stream: its number in the store (`None` when it has no event
/// yet) and its version.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub(crate) number: Option<i64>,
    pub(crate) version: Version,
}

/// The stored streams among `streams`: their numbers and current versions (streams
/// with no events are absent).
pub(crate) async fn stored_streams(
    conn: &mut PgConnection,
    shared: &Shared,
    streams: &[&StreamId],
) -> Result<HashMap<StreamId, Known>> {
    let mut known = HashMap::with_capacity(streams.len());
    if streams.is_empty() {
        return Ok(known);
    }
    let column = |f: fn(&StreamId) -> &str| streams.iter().map(|s| f(s)).collect::<Vec<_>>();
    let rows = sqlx::query(&shared.sql.stream_versions)
        .bind(shared.store_id)
        .bind(column(|s| s.context.as_str()))
        .bind(column(|s| s.aggregate.as_str()))
        .bind(column(|s| s.id.as_str()))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    for row in rows {
        let stream = StreamId {
            context: row.try_get(0).map_err(db_error)?,
            aggregate: row.try_get(1).map_err(db_error)?,
            id: row.try_get(2).map_err(db_error)?,
        };
        let number: i64 = row.try_get(3).map_err(db_error)?;
        let version: Option<i64> = row.try_get(4).map_err(db_error)?;
        known.insert(
            stream,
            Known {
                number: Some(number),
                version: version.unwrap_or(0).max(0) as Version,
            },
        );
    }
    Ok(known)
}

/// The store's head row and the streams known to be current at `head`.
#[derive(Default)]
struct Memory {
    head: Option<Position>,
    /// The head row's generation at `head` (moved by `clear_events`, so a head that
    /// went back to zero and up again is never mistaken for the remembered one).
    generation: i64,
    last_timestamp: Option<Timestamp>,
    stream_count: i64,
    streams: HashMap<StreamId, Known>,
}

impl Memory {
    fn forget(&mut self) {
        self.head = None;
        self.generation = 0;
        self.last_timestamp = None;
        self.stream_count = 0;
        self.streams.clear();
    }
}

/// What a group changes about one stream.
#[derive(Debug, Clone)]
struct StreamChange {
    number: i64,
    version: Version,
    first_timestamp: Timestamp,
    first_position: Position,
    is_new: bool,
}

/// The requests planned into one transaction.
pub(crate) struct Group {
    base_head: Position,
    /// The head row's generation the group was planned at.
    generation: i64,
    head: Position,
    last_timestamp: Option<Timestamp>,
    /// The store's stream count before the group, and the next stream number.
    base_streams: i64,
    next_stream: i64,
    events: Vec<RecordedEvent>,
    /// The stream number of each event.
    numbers: Vec<i64>,
    streams: HashMap<StreamId, StreamChange>,
    /// Stream order of first appearance, so statements are deterministic.
    stream_order: Vec<StreamId>,
    /// Where each event id the group wrote is: `Some(position)`, or `None` when a
    /// replacement in the group freed it.
    ids: HashMap<Text, Option<Position>>,
    /// Replacements of stored events (positions up to `base_head`), one per position.
    updates: Vec<RecordedEvent>,
    /// Where each replaced stored position is in `updates`.
    update_at: HashMap<Position, usize>,
    /// The new timestamp of the stored event at `base_head`, when it was replaced.
    base_head_timestamp: Option<Timestamp>,
    /// The idx the group's next new secret gets (known on the locked path only).
    next_secret_idx: u64,
    /// The secrets as the group leaves them, and whether each is new (else a stored
    /// one the group deletes).
    secrets: Vec<(Secret, bool)>,
}

impl Group {
    pub(crate) fn new(
        head: Position,
        generation: i64,
        last_timestamp: Option<Timestamp>,
        stream_count: i64,
    ) -> Self {
        Group {
            base_head: head,
            generation,
            head,
            last_timestamp,
            base_streams: stream_count,
            next_stream: stream_count,
            events: Vec::new(),
            numbers: Vec::new(),
            streams: HashMap::new(),
            stream_order: Vec::new(),
            ids: HashMap::new(),
            updates: Vec::new(),
            update_at: HashMap::new(),
            base_head_timestamp: None,
            next_secret_idx: 0,
            secrets: Vec::new(),
        }
    }

    /// Whether the group changes more than it inserts: replaced events or secrets.
    fn has_changes(&self) -> bool {
        !self.updates.is_empty() || !self.secrets.is_empty()
    }

    /// The event the group leaves at `position`, if the group wrote it.
    fn event_at(&self, position: Position) -> Option<&RecordedEvent> {
        if position > self.base_head {
            self.events.get((position - self.base_head - 1) as usize)
        } else {
            self.update_at
                .get(&position)
                .and_then(|i| self.updates.get(*i))
        }
    }

    /// Replaces `old` (stored, or written earlier in the group) with `new`, at the
    /// same position.
    fn replace(&mut self, old: &RecordedEvent, new: RecordedEvent) {
        self.ids.insert(old.id.clone(), None);
        self.ids.insert(new.id.clone(), Some(new.position));
        if new.position == self.head {
            self.last_timestamp = Some(new.timestamp);
        }
        if new.position > self.base_head {
            if new.version == 1 {
                if let Some(change) = self.streams.get_mut(&new.stream) {
                    change.first_timestamp = new.timestamp;
                }
            }
            let at = (new.position - self.base_head - 1) as usize;
            if let Some(slot) = self.events.get_mut(at) {
                *slot = new;
            }
            return;
        }
        if new.position == self.base_head {
            self.base_head_timestamp = Some(new.timestamp);
        }
        match self.update_at.get(&new.position) {
            Some(i) => self.updates[*i] = new,
            None => {
                self.update_at.insert(new.position, self.updates.len());
                self.updates.push(new);
            }
        }
    }

    /// Records a secret the group stores (a new one, or a tombstone).
    fn store_secret(&mut self, secret: Secret) {
        self.next_secret_idx = self.next_secret_idx.max(secret.idx + 1);
        match self.secrets.iter_mut().find(|(s, _)| s.id == secret.id) {
            Some((s, _)) => *s = secret,
            None => {
                let new = secret.secret.is_some();
                self.secrets.push((secret, new));
            }
        }
    }

    fn cursor(&self, frozen: bool) -> AppendCursor {
        AppendCursor {
            head_position: self.head,
            last_timestamp: self
                .last_timestamp
                .unwrap_or(Timestamp::from_millis(i64::MIN)),
            frozen,
        }
    }

    fn new_streams(&self) -> i64 {
        self.next_stream - self.base_streams
    }

    /// Adds a planned request to the group and returns its answer.
    pub(crate) fn apply(
        &mut self,
        plan: AppendPlan,
        known: &HashMap<StreamId, Known>,
    ) -> AppendResult {
        match plan {
            AppendPlan::Retry { events } => AppendResult {
                commit_id: events
                    .first()
                    .map(|e| e.commit_id.clone())
                    .unwrap_or_default(),
                events,
                head_position: self.head,
                retried: true,
                secret: None,
            },
            AppendPlan::Write {
                commit_id,
                events,
                replaced,
                secret,
            } => {
                let mut replaced = replaced.iter();
                for e in &events {
                    // Replacements carry positions the store (or the group) already has.
                    if e.position <= self.head {
                        if let Some(old) = replaced.next() {
                            self.replace(old, e.clone());
                        }
                        continue;
                    }
                    let number = match self.streams.get_mut(&e.stream) {
                        Some(change) => {
                            change.version = e.version;
                            change.number
                        }
                        None => {
                            let existing = known.get(&e.stream).and_then(|k| k.number);
                            let number = existing.unwrap_or_else(|| {
                                self.next_stream += 1;
                                self.next_stream - 1
                            });
                            self.stream_order.push(e.stream.clone());
                            self.streams.insert(
                                e.stream.clone(),
                                StreamChange {
                                    number,
                                    version: e.version,
                                    first_timestamp: e.timestamp,
                                    first_position: e.position,
                                    is_new: existing.is_none(),
                                },
                            );
                            number
                        }
                    };
                    self.ids.insert(e.id.clone(), Some(e.position));
                    self.head = e.position;
                    self.last_timestamp = Some(e.timestamp);
                    self.numbers.push(number);
                    self.events.push(e.clone());
                }
                if let Some(secret) = &secret {
                    self.store_secret(secret.clone());
                }
                AppendResult {
                    commit_id,
                    events,
                    head_position: self.head,
                    retried: false,
                    secret,
                }
            }
        }
    }
}

/// The state a request is planned against: what was read or remembered, plus the
/// requests before it in the same group.
struct View<'a> {
    known: &'a HashMap<StreamId, Known>,
    /// What the locked path read; `None` on the verified path, which reads nothing
    /// (the unique index catches a stored caller-supplied id there, and requests that
    /// replace events or change secrets never take it).
    read: Option<&'a Stored>,
    group: &'a Group,
}

/// The error of a question the planning view has no answer for (the request must take
/// the locked path).
fn not_read(what: &str) -> Error {
    crate::error::corrupted(
        "postgres appender",
        format!("{what} was asked without being read"),
    )
}

impl AppendState for View<'_> {
    fn event_at_version(
        &mut self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<RecordedEvent>> {
        let read = self.read.ok_or_else(|| not_read("an event by version"))?;
        if let Some(stored) = read.at_version.get(stream).and_then(|v| v.get(&version)) {
            let current = self.group.event_at(stored.position).unwrap_or(stored);
            return Ok(Some(current.clone()));
        }
        // Written earlier in the group (rare: a replacement of a fresh event).
        if self.group.streams.contains_key(stream) {
            let found = self
                .group
                .events
                .iter()
                .rev()
                .find(|e| e.version == version && e.stream == *stream);
            return Ok(found.cloned());
        }
        Ok(None)
    }

    fn secret(&mut self, id: &str) -> Result<Option<Secret>> {
        if let Some((s, _)) = self.group.secrets.iter().find(|(s, _)| s.id == id) {
            return Ok(Some(s.clone()));
        }
        let read = self.read.ok_or_else(|| not_read("a secret"))?;
        Ok(read.secrets.get(id).cloned())
    }

    fn next_secret_idx(&mut self) -> Result<u64> {
        self.read.ok_or_else(|| not_read("the next secret idx"))?;
        Ok(self.group.next_secret_idx)
    }

    fn stream_version(&mut self, stream: &StreamId) -> Result<Version> {
        if let Some(change) = self.group.streams.get(stream) {
            return Ok(change.version);
        }
        // Every stream of a request is read (or remembered) before it is planned.
        self.known.get(stream).map(|k| k.version).ok_or_else(|| {
            crate::error::corrupted(
                "postgres appender",
                format!("stream {stream} was planned without its version"),
            )
        })
    }

    fn event_by_id(&mut self, id: &str) -> Result<Option<RecordedEvent>> {
        if let Some(at) = self.group.ids.get(id) {
            return Ok(at.and_then(|p| self.group.event_at(p).cloned()));
        }
        Ok(self.read.and_then(|r| r.by_id.get(id).cloned()))
    }
}

/// What the locked path reads besides the streams: stored events by id, stored events
/// by version (for requests that replace events), and secrets by id (for requests that
/// change one).
#[derive(Default)]
struct Stored {
    by_id: HashMap<Text, RecordedEvent>,
    at_version: HashMap<StreamId, HashMap<Version, RecordedEvent>>,
    secrets: HashMap<String, Secret>,
}

/// What the locked path reads: the streams, and the rest.
type ReadState = (HashMap<StreamId, Known>, Stored);

/// How a locked-path transaction ended.
enum Outcome {
    /// Every request was answered.
    Done,
    /// A unique constraint (named) refused the write; nothing was written, nothing
    /// answered.
    Conflict(Vec<Pending>, String),
}

/// The head row as the locked path read it.
pub(crate) struct HeadRow {
    pub(crate) head: Position,
    pub(crate) generation: i64,
    pub(crate) last_timestamp: Option<Timestamp>,
    pub(crate) frozen: bool,
    pub(crate) stream_count: i64,
    /// The idx the next new secret gets.
    pub(crate) secret_count: i64,
}

impl HeadRow {
    /// Decodes (head, last_timestamp, frozen, stream_count, generation, secret_count).
    pub(crate) fn from_row(row: &PgRow) -> std::result::Result<Self, sqlx::Error> {
        let head: i64 = row.try_get(0)?;
        let last: Option<i64> = row.try_get(1)?;
        Ok(HeadRow {
            head: head.max(0) as Position,
            last_timestamp: last.map(Timestamp::from_millis),
            frozen: row.try_get(2)?,
            stream_count: row.try_get(3)?,
            generation: row.try_get(4)?,
            secret_count: row.try_get(5)?,
        })
    }
}

pub(crate) struct Appender {
    shared: Arc<Shared>,
    conn: Option<PgConnection>,
    memory: Memory,
    skip_verified: u32,
}

impl Appender {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Appender {
            shared,
            conn: None,
            memory: Memory::default(),
            skip_verified: 0,
        }
    }

    /// Runs until the store closes or every handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut queue = Vec::new();
        let mut last_group = 1;
        let mut last_commit = std::time::Duration::ZERO;
        while let Some(first) = commands.recv().await {
            queue.push(first);
            // Let writers that were just answered (and are ready to run) send their next
            // request, so it joins this group instead of waiting for the next commit.
            tokio::task::yield_now().await;
            take_waiting(&mut commands, &mut queue);
            // Concurrent writers were seen in the last group: while fewer are queued, wait
            // for the others up to one commit's time, so they share this commit instead
            // of paying one of their own. A lone writer never waits. (Yielding, not
            // sleeping: tokio's timer counts in milliseconds.)
            if last_group > 1 && queue.len() < last_group {
                let deadline = std::time::Instant::now() + last_commit.min(MAX_LINGER);
                while queue.len() < last_group && std::time::Instant::now() < deadline {
                    tokio::task::yield_now().await;
                    take_waiting(&mut commands, &mut queue);
                }
            }
            last_group = queue.len();
            let started = std::time::Instant::now();
            let mut appends = Vec::new();
            let mut closing = None;
            for command in queue.drain(..) {
                match command {
                    Command::Append(request, reply) if closing.is_none() => {
                        appends.push(Pending { request, reply })
                    }
                    Command::Append(_, reply) => drop(reply.send(Err(Error::Closed))),
                    Command::Close { drop, reply } if closing.is_none() => {
                        closing = Some((drop, reply))
                    }
                    Command::Close { reply, .. } => drop(reply.send(Err(Error::Closed))),
                }
            }
            self.commit(appends).await;
            last_commit = started.elapsed();
            if let Some((drop_data, reply)) = closing {
                commands.close();
                while let Ok(c) = commands.try_recv() {
                    match c {
                        Command::Append(_, r) => drop(r.send(Err(Error::Closed))),
                        Command::Close { reply, .. } => drop(reply.send(Err(Error::Closed))),
                    }
                }
                let result = self.close(drop_data).await;
                let _ = reply.send(result);
                return;
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn close(&mut self, drop_data: bool) -> Result<()> {
        let result = if drop_data {
            crate::drop_store_data(&self.shared).await
        } else {
            Ok(())
        };
        self.shared.mark_closed();
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
        result
    }

    /// Commits queued requests in groups bounded by [`MAX_GROUP_EVENTS`].
    async fn commit(&mut self, appends: Vec<Pending>) {
        let mut chunk = Vec::new();
        let mut events = 0;
        for p in appends {
            let n = p.request.event_count();
            if !chunk.is_empty() && events + n > MAX_GROUP_EVENTS {
                self.commit_group(std::mem::take(&mut chunk)).await;
                events = 0;
            }
            events += n;
            chunk.push(p);
        }
        if !chunk.is_empty() {
            self.commit_group(chunk).await;
        }
    }

    async fn commit_group(&mut self, pending: Vec<Pending>) {
        let rest = self.verified(pending).await;
        if rest.is_empty() {
            return;
        }
        let alone = match self.locked(rest).await {
            Outcome::Done => return,
            Outcome::Conflict(pending, _) => pending,
        };
        // Someone wrote what the plan did not expect: plan each request on its own
        // against fresh state, so each gets its own answer.
        for mut p in alone {
            let mut attempt = 1;
            loop {
                match self.locked(vec![p]).await {
                    Outcome::Done => break,
                    Outcome::Conflict(mut again, _) if attempt < CONFLICT_ATTEMPTS => {
                        attempt += 1;
                        p = again.remove(0);
                    }
                    Outcome::Conflict(again, constraint) => {
                        for p in again {
                            let err = self.conflict_error(&p.request, &constraint).await;
                            let _ = p.reply.send(Err(err));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// The error of a request that a unique constraint refused on every attempt (only
    /// a writer that bypasses the head row can cause that): `DuplicateEventId` for the
    /// event-id index, `SecretAlreadyExists` for the secrets' keys, else
    /// `WrongExpectedVersion` with the re-read version of the request's first stream.
    fn conflict_error<'a>(
        &'a mut self,
        request: &'a AppendRequest,
        constraint: &'a str,
    ) -> BoxFuture<'a, Error> {
        async move {
            if constraint == "events_event_id_key" {
                let id = request
                    .writes
                    .iter()
                    .flat_map(|w| &w.events)
                    .find_map(|e| e.id.clone())
                    .unwrap_or_default();
                return Error::DuplicateEventId { id };
            }
            if constraint.starts_with("secrets") {
                if let Some(change) = &request.secret {
                    return Error::SecretAlreadyExists {
                        id: change.id().to_owned(),
                    };
                }
            }
            let Some(w) = request.writes.iter().find(|w| !w.events.is_empty()) else {
                return Error::Closed;
            };
            match crate::read::stream_info(&self.shared, &w.stream).await {
                Ok(info) => Error::WrongExpectedVersion {
                    stream: w.stream.clone(),
                    expected: w.expected,
                    actual: info.map_or(0, |i| i.version),
                },
                Err(e) => e,
            }
        }
        .boxed()
    }

    async fn connection(&mut self) -> Result<&mut PgConnection> {
        if self.conn.is_none() {
            let conn = PgConnection::connect_with(&self.shared.connect_options)
                .await
                .map_err(db_error)?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or(Error::Closed)
    }

    /// Drops the connection when an error leaves it in an unknown state.
    fn after_error(&mut self, err: &sqlx::Error) {
        if connection_broken(err) {
            self.conn = None;
        }
        self.memory.forget();
    }

    /// Whether the verified path can plan `request`: no replacement and no secret (they
    /// need stored state the memory does not hold), every stream remembered (or
    /// written earlier in the group), and no caller-supplied id of the form Annals
    /// generates (the unique index does not cover those; see `read_state`).
    fn decidable(&self, request: &AppendRequest, group: &Group) -> bool {
        !request.overwrite
            && request.secret.is_none()
            && request.writes.iter().all(|w| {
                (self.memory.streams.contains_key(&w.stream)
                    || group.streams.contains_key(&w.stream))
                    && w.events.iter().all(|e| {
                        e.id.as_deref()
                            .is_none_or(|id| position_of_generated_id(id).is_none())
                    })
            })
    }

    /// The verified path: plans against remembered versions and writes with one
    /// statement that checks the head. Returns the requests it did not answer.
    async fn verified(&mut self, pending: Vec<Pending>) -> Vec<Pending> {
        if self.skip_verified > 0 {
            self.skip_verified -= 1;
            return pending;
        }
        let Some(head) = self.memory.head else {
            return pending;
        };
        let mut group = Group::new(
            head,
            self.memory.generation,
            self.memory.last_timestamp,
            self.memory.stream_count,
        );
        let mut planned = Vec::new();
        let mut rest = Vec::new();
        for p in pending {
            if !self.decidable(&p.request, &group) {
                rest.push(p);
                continue;
            }
            let plan = {
                let mut view = View {
                    known: &self.memory.streams,
                    read: None,
                    group: &group,
                };
                append::plan(
                    &mut view,
                    group.cursor(false),
                    p.request.clone(),
                    Timestamp::now(),
                )
            };
            match plan {
                Ok(plan) => {
                    let result = group.apply(plan, &self.memory.streams);
                    planned.push((p, result));
                }
                // The memory may be stale: only the locked path may refuse a request.
                Err(_) => rest.push(p),
            }
        }
        if planned.is_empty() {
            return rest;
        }
        let shared = self.shared.clone();
        let written = match self.connection().await {
            Ok(conn) => write(conn, &shared, &group, false).await,
            Err(e) => {
                for (p, _) in planned {
                    let _ = p.reply.send(Err(e.clone()));
                }
                return rest;
            }
        };
        match written {
            Ok(Some(new_head)) => {
                self.remember(&group, new_head);
                self.shared.publish(new_head);
                for (p, result) in planned {
                    let _ = p.reply.send(Ok(result));
                }
                rest
            }
            Ok(None) => {
                // Another writer moved the head (or froze the store): nothing written.
                self.memory.forget();
                self.skip_verified = SKIP_AFTER_FOREIGN_HEAD;
                let mut all: Vec<Pending> = planned.into_iter().map(|(p, _)| p).collect();
                all.extend(rest);
                all
            }
            Err(e) if unique_violation(&e).is_some() => {
                // A stored id (or an outside writer): the locked path sorts it out.
                self.memory.forget();
                let mut all: Vec<Pending> = planned.into_iter().map(|(p, _)| p).collect();
                all.extend(rest);
                all
            }
            Err(e) => {
                // The statement may or may not have committed: say so, never repeat it.
                self.after_error(&e);
                let err = db_error(e);
                for (p, _) in planned {
                    let _ = p.reply.send(Err(err.clone()));
                }
                rest
            }
        }
    }

    /// Records what a committed group wrote: the memory is valid at `new_head`.
    fn remember(&mut self, group: &Group, new_head: Position) {
        if self.memory.streams.len() + group.streams.len() > MEMORY_LIMIT {
            self.memory.streams.clear();
        }
        for (stream, change) in &group.streams {
            let known = Known {
                number: Some(change.number),
                version: change.version,
            };
            self.memory.streams.insert(stream.clone(), known);
        }
        self.memory.head = Some(new_head);
        self.memory.generation = group.generation;
        self.memory.stream_count = group.next_stream;
        if group.last_timestamp.is_some() {
            self.memory.last_timestamp = group.last_timestamp;
        }
    }

    /// Rolls back the open transaction; a connection that cannot is dropped.
    async fn rollback(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            if raw(conn, "ROLLBACK").await.is_err() {
                self.conn = None;
            }
        }
    }

    /// The locked path for a group.
    async fn locked(&mut self, pending: Vec<Pending>) -> Outcome {
        match self.locked_inner(pending).await {
            Ok(outcome) => outcome,
            Err((pending, err)) => {
                for p in pending {
                    let _ = p.reply.send(Err(err.clone()));
                }
                Outcome::Done
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn locked_inner(
        &mut self,
        pending: Vec<Pending>,
    ) -> BoxFuture<'_, std::result::Result<Outcome, (Vec<Pending>, Error)>> {
        async move {
            let shared = self.shared.clone();
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => return Err((pending, e)),
            };
            let lock = shared
                .sql
                .begin_and_lock
                .replace("{id}", &shared.store_id.to_string());
            let row = match raw(conn, &lock).await {
                Ok(rows) => rows.into_iter().next(),
                Err(e) => {
                    self.rollback().await;
                    self.after_error(&e);
                    return Err((pending, db_error(e)));
                }
            };
            let Some(row) = row else {
                self.rollback().await;
                return Err((pending, crate::store_gone_named(&shared.name)));
            };
            let at = match HeadRow::from_row(&row) {
                Ok(at) => at,
                Err(e) => {
                    self.rollback().await;
                    return Err((pending, db_error(e)));
                }
            };
            // Fresh statements from here on: they see everything committed before the
            // lock was granted.
            let (known, stored) = match self.read_state(&pending).await {
                Ok(state) => state,
                Err(e) => {
                    self.rollback().await;
                    return Err((pending, e));
                }
            };
            let mut group = Group::new(at.head, at.generation, at.last_timestamp, at.stream_count);
            group.next_secret_idx = at.secret_count.max(0) as u64;
            let mut answers = Vec::with_capacity(pending.len());
            for p in &pending {
                let plan = {
                    let mut view = View {
                        known: &known,
                        read: Some(&stored),
                        group: &group,
                    };
                    append::plan(
                        &mut view,
                        group.cursor(at.frozen),
                        p.request.clone(),
                        Timestamp::now(),
                    )
                };
                answers.push(plan.map(|plan| group.apply(plan, &known)));
            }
            let new_head = if group.events.is_empty() && !group.has_changes() {
                self.rollback().await;
                None
            } else {
                let written = match self.conn.as_mut() {
                    Some(conn) => write_locked(conn, &shared, &mut group).await,
                    None => Err(sqlx::Error::PoolClosed),
                };
                match written {
                    Ok(Some(new_head)) => Some(new_head),
                    Ok(None) => {
                        self.rollback().await;
                        self.memory.forget();
                        let err = crate::error::corrupted(
                            format!("postgres table stores, store {}", shared.name),
                            "the head row changed while this appender held its lock",
                        );
                        return Err((pending, err));
                    }
                    Err(e) if unique_violation(&e).is_some() => {
                        self.rollback().await;
                        self.memory.forget();
                        let constraint = unique_violation(&e).unwrap_or_default();
                        return Ok(Outcome::Conflict(pending, constraint));
                    }
                    Err(e) => {
                        self.rollback().await;
                        self.after_error(&e);
                        return Err((pending, db_error(e)));
                    }
                }
            };
            if new_head.is_some() {
                let committed = match self.conn.as_mut() {
                    Some(conn) => raw(conn, "COMMIT").await.map(|_| ()),
                    None => Err(sqlx::Error::PoolClosed),
                };
                if let Err(e) = committed {
                    // The commit may or may not have happened.
                    self.conn = None;
                    self.memory.forget();
                    return Err((pending, db_error(e)));
                }
            }
            // What was read under the lock is current at `at.head`; the group moves it on.
            if self.memory.head != Some(at.head) {
                self.memory.forget();
                self.memory.head = Some(at.head);
                self.memory.generation = at.generation;
                self.memory.last_timestamp = at.last_timestamp;
                self.memory.stream_count = at.stream_count;
            }
            if self.memory.streams.len() + known.len() > MEMORY_LIMIT {
                self.memory.streams.clear();
            }
            self.memory.streams.extend(known);
            if let Some(new_head) = new_head {
                self.remember(&group, new_head);
                self.shared.publish(new_head);
            }
            for (p, answer) in pending.into_iter().zip(answers) {
                let _ = p.reply.send(answer);
            }
            Ok(Outcome::Done)
        }
        .boxed()
    }

    /// Reads every stream the requests name (number and version) and the stored events
    /// of every id they name, inside the locked transaction. Ids of the form Annals
    /// generates are looked up by the position they carry as well as in the index.
    /// Requests that may replace events also get the stored events at the versions
    /// they propose, and requests that change a secret the stored secret of its id
    /// (one more statement each, only when some request needs it).
    fn read_state<'a>(&'a mut self, pending: &'a [Pending]) -> BoxFuture<'a, Result<ReadState>> {
        async move {
            let shared = self.shared.clone();
            let mut streams: Vec<&StreamId> = Vec::new();
            let mut seen = HashSet::new();
            let mut ids: Vec<&str> = Vec::new();
            let mut at_versions: Vec<(&StreamId, i64)> = Vec::new();
            let mut secret_ids: Vec<&str> = Vec::new();
            for p in pending {
                for w in &p.request.writes {
                    if seen.insert(&w.stream) {
                        streams.push(&w.stream);
                    }
                    ids.extend(w.events.iter().filter_map(|e| e.id.as_deref()));
                    if p.request.overwrite {
                        let versions = w.events.iter().filter_map(|e| e.version);
                        at_versions.extend(versions.map(|v| (&w.stream, to_sql(v))));
                    }
                }
                secret_ids.extend(p.request.secret.as_ref().map(|s| s.id()));
            }
            let positions: Vec<i64> = ids
                .iter()
                .filter_map(|id| position_of_generated_id(id))
                .map(to_sql)
                .collect();
            let conn = self.connection().await?;
            let mut known = stored_streams(&mut *conn, &shared, &streams).await?;
            for s in streams {
                known.entry(s.clone()).or_insert(Known {
                    number: None,
                    version: 0,
                });
            }
            let mut stored = Stored::default();
            if !ids.is_empty() {
                let rows = sqlx::query(&shared.sql.events_by_id)
                    .bind(shared.store_id)
                    .bind(ids)
                    .bind(positions)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error)?;
                for row in rows {
                    let e = event_from_row(&row, 0)?;
                    stored.by_id.insert(e.id.clone(), e);
                }
            }
            if !at_versions.is_empty() {
                let rows = sqlx::query(&shared.sql.events_at_versions)
                    .bind(shared.store_id)
                    .bind(
                        at_versions
                            .iter()
                            .map(|(s, _)| s.context.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        at_versions
                            .iter()
                            .map(|(s, _)| s.aggregate.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        at_versions
                            .iter()
                            .map(|(s, _)| s.id.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .bind(at_versions.iter().map(|(_, v)| *v).collect::<Vec<_>>())
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error)?;
                for row in rows {
                    let e = event_from_row(&row, 0)?;
                    stored
                        .at_version
                        .entry(e.stream.clone())
                        .or_default()
                        .insert(e.version, e);
                }
            }
            if !secret_ids.is_empty() {
                let rows = sqlx::query(&shared.sql.secrets_by_id)
                    .bind(shared.store_id)
                    .bind(secret_ids)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(db_error)?;
                for row in rows {
                    let idx: i64 = row.try_get(0).map_err(db_error)?;
                    let id: String = row.try_get(1).map_err(db_error)?;
                    let value: Option<Vec<u8>> = row.try_get(2).map_err(db_error)?;
                    let secret = Secret {
                        idx: idx.max(0) as u64,
                        id: id.clone(),
                        secret: crate::secret_value(value)?,
                    };
                    stored.secrets.insert(id, secret);
                }
            }
            Ok((known, stored))
        }
        .boxed()
    }
}

/// Writes a group inside the locked transaction: its replacements and secrets first
/// (so an id a replacement frees may be taken by a later event of the group), then its
/// new events. `Some(new head)` as [`write`] answers; a group that inserts nothing
/// keeps the head it was planned at.
fn write_locked<'a>(
    conn: &'a mut PgConnection,
    shared: &'a Shared,
    group: &'a mut Group,
) -> BoxFuture<'a, std::result::Result<Option<Position>, sqlx::Error>> {
    async move {
        if group.has_changes() {
            apply_changes(conn, shared, group).await?;
            if !group.updates.is_empty() {
                // `apply_changes` moved the generation on (see there).
                group.generation += 1;
            }
        }
        if group.events.is_empty() {
            return Ok(Some(group.base_head));
        }
        write(conn, shared, group, false).await
    }
    .boxed()
}

/// Runs the statement that replaces stored events in place and stores the group's
/// secrets. Replacing events moves the head row's generation on: the replaced head
/// event may have changed the store's last timestamp, which appenders of other
/// processes remember, so their next one-statement write fails and they re-read.
fn apply_changes<'a>(
    conn: &'a mut PgConnection,
    shared: &'a Shared,
    group: &'a Group,
) -> BoxFuture<'a, std::result::Result<(), sqlx::Error>> {
    async move {
        let n = group.updates.len();
        let mut positions = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut timestamps = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        let (mut f_contexts, mut f_aggregates, mut f_ids, mut f_ts) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for e in &group.updates {
            positions.push(to_sql(e.position));
            types.push(e.event_type.as_str());
            let generated = position_of_generated_id(&e.id) == Some(e.position);
            ids.push((!generated).then_some(e.id.as_str()));
            timestamps.push(e.timestamp.as_millis());
            records.push(crate::record::encode(e));
            if e.version == 1 {
                f_contexts.push(e.stream.context.as_str());
                f_aggregates.push(e.stream.aggregate.as_str());
                f_ids.push(e.stream.id.as_str());
                f_ts.push(e.timestamp.as_millis());
            }
        }
        let (mut s_idx, mut s_ids, mut s_values, mut erased) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut deleted = 0i64;
        for (s, new) in &group.secrets {
            if s.secret.is_none() {
                deleted += 1;
            }
            if *new {
                s_idx.push(to_sql(s.idx));
                s_ids.push(s.id.as_str());
                s_values.push(s.secret.as_deref().map(str::as_bytes));
            } else {
                erased.push(to_sql(s.idx));
            }
        }
        sqlx::query(&shared.sql.apply_changes)
            .bind(shared.store_id)
            .bind(positions)
            .bind(types)
            .bind(ids)
            .bind(timestamps)
            .bind(records)
            .bind(f_contexts)
            .bind(f_aggregates)
            .bind(f_ids)
            .bind(f_ts)
            .bind(s_idx)
            .bind(s_ids)
            .bind(s_values)
            .bind(erased)
            .bind(group.base_head_timestamp.map(|t| t.as_millis()))
            .bind(i64::from(n > 0))
            .bind(to_sql(group.next_secret_idx))
            .bind(deleted)
            .execute(conn)
            .await?;
        Ok(())
    }
    .boxed()
}

/// Runs a group's write statement; `Some(new head)` when it wrote, `None` when the
/// head row was not at `group.base_head` and `group.generation`, or the store is frozen
/// and this is not a `maintenance` write (an import), which is allowed while frozen.
pub(crate) fn write<'a>(
    conn: &'a mut PgConnection,
    shared: &'a Shared,
    group: &'a Group,
    maintenance: bool,
) -> BoxFuture<'a, std::result::Result<Option<Position>, sqlx::Error>> {
    async move {
        let ev = &group.events;
        let n = ev.len();
        let mut positions = Vec::with_capacity(n);
        let mut versions = Vec::with_capacity(n);
        let mut timestamps = Vec::with_capacity(n);
        let mut dispatched = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        for e in ev {
            positions.push(to_sql(e.position));
            versions.push(to_sql(e.version));
            timestamps.push(e.timestamp.as_millis());
            dispatched.push(e.dispatched);
            types.push(e.event_type.as_str());
            // Generated ids carry their position: only caller-supplied ids are indexed.
            let generated = position_of_generated_id(&e.id) == Some(e.position);
            ids.push((!generated).then_some(e.id.as_str()));
            records.push(crate::record::encode(e));
        }
        // Only new streams get a `streams` row; versions live in the events index.
        let mut s_contexts = Vec::new();
        let mut s_aggregates = Vec::new();
        let mut s_ids = Vec::new();
        let mut s_numbers = Vec::new();
        let mut s_first_ts = Vec::new();
        let mut s_first_pos = Vec::new();
        for stream in &group.stream_order {
            let Some(c) = group.streams.get(stream).filter(|c| c.is_new) else {
                continue;
            };
            s_contexts.push(stream.context.as_str());
            s_aggregates.push(stream.aggregate.as_str());
            s_ids.push(stream.id.as_str());
            s_numbers.push(c.number);
            s_first_ts.push(c.first_timestamp.as_millis());
            s_first_pos.push(to_sql(c.first_position));
        }
        let last_timestamp = group
            .last_timestamp
            .filter(|_| n > 0)
            .map(|t| t.as_millis());
        let row = sqlx::query(&shared.sql.write_batch)
            .bind(shared.store_id)
            .bind(n as i64)
            .bind(last_timestamp)
            .bind(group.new_streams())
            .bind(to_sql(group.base_head))
            .bind(positions)
            .bind(&group.numbers)
            .bind(versions)
            .bind(timestamps)
            .bind(dispatched)
            .bind(types)
            .bind(ids)
            .bind(records)
            .bind(s_contexts)
            .bind(s_aggregates)
            .bind(s_ids)
            .bind(s_numbers)
            .bind(s_first_ts)
            .bind(s_first_pos)
            .bind(&shared.channel)
            .bind(group.generation)
            .bind(maintenance)
            .fetch_optional(conn)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let head: i64 = row.try_get(0)?;
                Ok(Some(head.max(0) as Position))
            }
        }
    }
    .boxed()
}

/// Runs statements without parameters in one round trip (the simple-query protocol)
/// and returns the rows they produce.
pub(crate) fn raw<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> BoxFuture<'c, std::result::Result<Vec<PgRow>, sqlx::Error>> {
    sqlx::Executor::fetch_all(conn, sql)
}

/// Checks what PostgreSQL cannot store as given: versions above `i64::MAX`.
pub(crate) fn check_request(request: &AppendRequest) -> Result<()> {
    for (w, write) in request.writes.iter().enumerate() {
        for (e, event) in write.events.iter().enumerate() {
            if event.version.is_some_and(|v| v > i64::MAX as u64) {
                return Err(Error::invalid(
                    format!("writes[{w}].events[{e}].version"),
                    format!("must be at most {} on PostgreSQL", i64::MAX),
                ));
            }
        }
    }
    Ok(())
}

/// Moves the commands already waiting into `queue`, up to [`MAX_GROUP`].
fn take_waiting(commands: &mut mpsc::UnboundedReceiver<Command>, queue: &mut Vec<Command>) {
    while queue.len() < MAX_GROUP {
        match commands.try_recv() {
            Ok(c) => queue.push(c),
            Err(_) => break,
        }
    }
}
