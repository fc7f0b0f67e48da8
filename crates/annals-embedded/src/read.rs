//! Reads: every read sees only what the writer has made durable and published.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;

use annals_core::scan::PageCollector;
use annals_core::{
    Direction, EventFilter, KeyedSnapshot, ListStreams, Position, ReadAll, ReadAllPage,
    RecordedEvent, Result, Secret, SecretQuery, SnapshotKeyQuery, StreamId, StreamInfo, StreamPage,
    StreamRead, StreamSnapshot, Version,
};

use crate::codec;
use crate::engine::{Engine, Table};

/// Which events are dispatched: every position up to `watermark`, plus `above`.
#[derive(Debug, Default, Clone)]
pub struct DispatchState {
    /// Every position ≤ watermark is dispatched.
    pub watermark: Position,
    /// Dispatched positions above the watermark.
    pub above: BTreeSet<Position>,
}

impl DispatchState {
    /// Whether the event at `position` is dispatched.
    pub fn is_dispatched(&self, position: Position) -> bool {
        position <= self.watermark || self.above.contains(&position)
    }
}

/// The newest events, kept in memory by the writer after each commit, so that readers
/// following the head (subscribers, projections, catch-up reads) do not decode from
/// storage. Bounded by an approximate byte size.
#[derive(Debug, Default)]
pub struct TailCache {
    events: VecDeque<RecordedEvent>,
    bytes: usize,
    max_bytes: usize,
}

fn approximate_size(e: &RecordedEvent) -> usize {
    96 + e.id.len()
        + e.stream.id.len()
        + e.stream.aggregate.len()
        + e.stream.context.len()
        + e.event_type.len()
        + e.commit_id.len()
        + e.payload.as_bytes().len()
        + e.metadata.as_bytes().len()
}

impl TailCache {
    /// An empty cache holding at most about `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        TailCache {
            max_bytes,
            ..TailCache::default()
        }
    }

    /// Appends newly committed events (their positions continue the cache's last one).
    pub fn push<'a>(&mut self, committed: impl Iterator<Item = &'a RecordedEvent>) {
        if self.max_bytes == 0 {
            return;
        }
        for e in committed {
            self.push_one(e.clone());
        }
        self.trim();
    }

    /// [`TailCache::push`] of events the caller no longer needs: they move in instead of
    /// being cloned (an import's events).
    pub fn push_owned(&mut self, committed: impl IntoIterator<Item = RecordedEvent>) {
        if self.max_bytes == 0 {
            return;
        }
        for e in committed {
            self.push_one(e);
        }
        self.trim();
    }

    fn push_one(&mut self, e: RecordedEvent) {
        if self
            .events
            .back()
            .is_some_and(|last| last.position + 1 != e.position)
        {
            self.events.clear();
            self.bytes = 0;
        }
        self.bytes += approximate_size(&e);
        self.events.push_back(e);
    }

    fn trim(&mut self) {
        while self.bytes > self.max_bytes {
            match self.events.pop_front() {
                Some(e) => self.bytes -= approximate_size(&e),
                None => break,
            }
        }
    }

    /// Replaces a held event with a new version of it (overwrite); an event the cache
    /// does not hold is left to storage.
    pub fn replace(&mut self, event: &RecordedEvent) {
        let first = self.first();
        if event.position < first {
            return;
        }
        if let Some(slot) = self.events.get_mut((event.position - first) as usize) {
            if slot.position == event.position {
                self.bytes = self.bytes - approximate_size(slot) + approximate_size(event);
                *slot = event.clone();
            }
        }
    }

    /// Forgets every held event (after the events were cleared).
    pub fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    /// The first position held (`Position::MAX` when empty).
    fn first(&self) -> Position {
        self.events.front().map_or(Position::MAX, |e| e.position)
    }

    /// Held events with positions in `from..=to`, ascending.
    fn range(
        &self,
        from: Position,
        to: Position,
    ) -> std::collections::vec_deque::Iter<'_, RecordedEvent> {
        let first = self.first();
        if to < first || from > to {
            return self.events.range(0..0);
        }
        let start = (from.max(first) - first) as usize;
        let end = ((to - first) as usize + 1).min(self.events.len());
        self.events.range(start.min(end)..end)
    }
}

fn offer_cached<'a>(
    page: &mut PageCollector,
    events: impl Iterator<Item = &'a RecordedEvent>,
    dispatch: &DispatchState,
) -> bool {
    for e in events {
        let mut e = e.clone();
        e.dispatched = dispatch.is_dispatched(e.position);
        if !page.offer(e) {
            return false;
        }
    }
    true
}

/// The single stream a filter selects exactly, if it selects exactly one.
fn single_stream(filter: &EventFilter) -> Option<StreamId> {
    match (
        &filter.context,
        &filter.aggregate,
        filter.aggregate_ids.as_slice(),
    ) {
        (Some(c), Some(a), [id]) => Some(StreamId {
            context: c.clone(),
            aggregate: a.clone(),
            id: id.clone(),
        }),
        _ => None,
    }
}

/// A page of `read_all` over positions `..= head`.
pub fn read_all(
    engine: &dyn Engine,
    tail: &TailCache,
    head: Position,
    dispatch: &DispatchState,
    read: &ReadAll,
) -> Result<ReadAllPage> {
    let mut page = PageCollector::new(read, head)?;
    let start = page.start();
    let backward = read.direction == Direction::Backward;
    if let Some(stream) = single_stream(&read.filter) {
        // One stream: walk its own records instead of the whole log.
        let mut visit = |event: RecordedEvent| {
            let in_range = if backward {
                event.position < start
            } else {
                event.position > start
            };
            if !in_range || event.position > head {
                return true;
            }
            page.offer(event)
        };
        stream_events(
            engine,
            dispatch,
            &stream,
            1,
            Version::MAX,
            backward,
            &mut visit,
        )?;
        return Ok(page.finish(true));
    }
    if start >= head && !backward {
        return Ok(page.finish(true));
    }
    // Positions the tail cache holds come from memory; older ones from storage.
    let cached_from = tail.first().max(1);
    if backward {
        let upper = start.min(head + 1);
        if upper > cached_from
            && !offer_cached(
                &mut page,
                tail.range(cached_from, upper - 1).rev(),
                dispatch,
            )
        {
            return Ok(page.finish(true));
        }
        let to = upper.min(cached_from);
        scan_events(engine, &mut page, dispatch, 0, to, true)?;
    } else {
        // Undispatched events all lie above the dispatch watermark: an outbox poll does
        // not rescan the dispatched history.
        let mut start = start;
        if read.filter.dispatched == Some(false) && dispatch.watermark > start {
            start = dispatch.watermark.min(head);
            page.passed(start);
        }
        let storage_to = head.min(cached_from - 1);
        let mut more = true;
        if start < storage_to {
            more = scan_events(engine, &mut page, dispatch, start, storage_to + 1, false)?;
        }
        if more {
            offer_cached(
                &mut page,
                tail.range(start.max(storage_to) + 1, head),
                dispatch,
            );
        }
    }
    Ok(page.finish(true))
}

/// Feeds stored events with positions strictly between `after` and `before` to the page;
/// returns whether the page still wants more.
fn scan_events(
    engine: &dyn Engine,
    page: &mut PageCollector,
    dispatch: &DispatchState,
    after: Position,
    before: Position,
    backward: bool,
) -> Result<bool> {
    if before <= after + 1 {
        return Ok(true);
    }
    let table = Table::Events;
    let lower = if backward {
        Bound::Unbounded
    } else {
        // Start at the record holding `after + 1`: the last one that starts at or below it.
        let seek = codec::position_key(after + 1).to_vec();
        match engine
            .range(table, Bound::Unbounded, Bound::Included(seek.clone()), true)
            .next()
        {
            Some(item) => Bound::Included(item?.0.to_vec()),
            None => Bound::Included(seek),
        }
    };
    let upper = Bound::Excluded(codec::position_key(before).to_vec());
    for item in engine.range(table, lower, upper, backward) {
        let (_, value) = item?;
        let mut events = codec::decode_batch(&value, "events")?;
        if backward {
            events.reverse();
        }
        for mut event in events {
            if event.position <= after {
                if backward {
                    return Ok(true);
                }
                continue;
            }
            if event.position >= before {
                if backward {
                    continue;
                }
                return Ok(true);
            }
            event.dispatched = dispatch.is_dispatched(event.position);
            if !page.offer(event) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Feeds the stored events of `stream` with versions in `from..=to` to `visit`, in
/// version order (or reverse), until it returns `false`.
fn stream_events(
    engine: &dyn Engine,
    dispatch: &DispatchState,
    stream: &StreamId,
    from: Version,
    to: Version,
    backward: bool,
    visit: &mut dyn FnMut(RecordedEvent) -> bool,
) -> Result<()> {
    let table = Table::StreamEvents;
    let key = codec::stream_key(stream);
    let floor = Bound::Included(codec::stream_version_key(&key, 0));
    let ceiling = Bound::Included(codec::stream_version_key(&key, to));
    let lower = if backward {
        floor
    } else {
        // Start at the record holding `from`: the last one of this stream that starts at
        // or below it.
        let seek = codec::stream_version_key(&key, from);
        match engine
            .range(table, floor, Bound::Included(seek.clone()), true)
            .next()
        {
            Some(item) => Bound::Included(item?.0.to_vec()),
            None => Bound::Included(seek),
        }
    };
    for item in engine.range(table, lower, ceiling, backward) {
        let (_, value) = item?;
        let mut events = match codec::decode_stream_record(&value)? {
            codec::StreamRecord::Events(events) => events,
            codec::StreamRecord::Pointer(first, count) => {
                events_in_log(engine, first, u64::from(count))?
            }
        };
        if backward {
            events.reverse();
        }
        for mut event in events {
            if event.version < from {
                if backward {
                    return Ok(());
                }
                continue;
            }
            if event.version > to {
                if backward {
                    continue;
                }
                return Ok(());
            }
            event.dispatched = dispatch.is_dispatched(event.position);
            if !visit(event) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The `count` stored events from position `first` on, all inside one commit record.
fn events_in_log(engine: &dyn Engine, first: Position, count: u64) -> Result<Vec<RecordedEvent>> {
    let seek = codec::position_key(first).to_vec();
    let Some(item) = engine
        .range(Table::Events, Bound::Unbounded, Bound::Included(seek), true)
        .next()
    else {
        return Err(dangling(first));
    };
    let (_, value) = item?;
    let events: Vec<RecordedEvent> = codec::decode_batch(&value, "events")?
        .into_iter()
        .filter(|e| e.position >= first && e.position < first + count)
        .collect();
    if events.len() as u64 != count {
        return Err(dangling(first));
    }
    Ok(events)
}

fn dangling(first: Position) -> annals_core::Error {
    annals_core::Error::Corrupted {
        location: "embedded table stream_events".into(),
        detail: format!("a stream run points at position {first}, which no commit record holds"),
    }
}

/// Events of one stream by version.
pub fn read_stream(
    engine: &dyn Engine,
    head: Position,
    dispatch: &DispatchState,
    stream: &StreamId,
    read: &StreamRead,
) -> Result<Vec<RecordedEvent>> {
    let limit = read.limit.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut visit = |event: RecordedEvent| {
        if event.position <= head {
            out.push(event);
        }
        (out.len() as u64) < limit
    };
    stream_events(
        engine,
        dispatch,
        stream,
        read.from_version,
        read.to_version.unwrap_or(Version::MAX),
        read.direction == Direction::Backward,
        &mut visit,
    )?;
    Ok(out)
}

/// A stream's info.
pub fn stream_info(engine: &dyn Engine, stream: &StreamId) -> Result<Option<StreamInfo>> {
    engine
        .get(Table::Streams, &codec::stream_key(stream))?
        .map(|v| codec::decode_stream_info(stream.clone(), &v))
        .transpose()
}

/// Streams ordered by first event.
pub fn list_streams(engine: &dyn Engine, query: &ListStreams) -> Result<StreamPage> {
    let (from, to) = match query.page_token {
        None => (Bound::Unbounded, Bound::Unbounded),
        Some(t) => {
            let key = codec::time_key(t.first_timestamp, t.first_position).to_vec();
            if query.reverse {
                (Bound::Unbounded, Bound::Excluded(key))
            } else {
                (Bound::Excluded(key), Bound::Unbounded)
            }
        }
    };
    let mut selected = Vec::new();
    let limit = query.limit.unwrap_or(u64::MAX);
    for item in engine.range(Table::StreamsByTime, from, to, query.reverse) {
        let (_, stream_key) = item?;
        let stream = codec::decode_stream_key(&stream_key)?;
        let Some(value) = engine.get(Table::Streams, &stream_key)? else {
            continue;
        };
        let info = codec::decode_stream_info(stream, &value)?;
        if query.matches(&info) {
            selected.push(info);
            if selected.len() as u64 > limit {
                break;
            }
        }
    }
    let mut paging = query.clone();
    paging.page_token = None;
    Ok(annals_core::rules::page_streams(
        selected.into_iter(),
        &paging,
    ))
}

/// The latest stream snapshot at or below `max_version`.
pub fn latest_stream_snapshot(
    engine: &dyn Engine,
    stream: &StreamId,
    max_version: Option<Version>,
) -> Result<Option<StreamSnapshot>> {
    let key = codec::stream_key(stream);
    let from = codec::stream_version_key(&key, 0);
    let mut to = codec::stream_version_key(&key, max_version.unwrap_or(Version::MAX));
    to.extend_from_slice(&u64::MAX.to_be_bytes());
    let mut iter = engine.range(
        Table::StreamSnapshots,
        Bound::Included(from),
        Bound::Included(to),
        true,
    );
    match iter.next() {
        None => Ok(None),
        Some(item) => {
            let (k, v) = item?;
            let version = codec::read_u64(&k[key.len()..], "stream_snapshots")?;
            codec::decode_stream_snapshot(stream.clone(), version, &v).map(Some)
        }
    }
}

/// Every snapshot of `stream`, oldest save first.
pub fn list_stream_snapshots(
    engine: &dyn Engine,
    stream: &StreamId,
) -> Result<Vec<StreamSnapshot>> {
    let key = codec::stream_key(stream);
    let from = codec::stream_version_key(&key, 0);
    let mut to = codec::stream_version_key(&key, Version::MAX);
    to.extend_from_slice(&u64::MAX.to_be_bytes());
    let mut found = Vec::new();
    for item in engine.range(
        Table::StreamSnapshots,
        Bound::Included(from),
        Bound::Included(to),
        false,
    ) {
        // Key: stream key, version, save sequence.
        let (k, v) = item?;
        let tail = k.get(key.len()..).unwrap_or_default();
        let version = codec::read_u64(tail, "stream_snapshots")?;
        let seq = codec::read_u64(tail.get(8..).unwrap_or_default(), "stream_snapshots")?;
        found.push((
            seq,
            codec::decode_stream_snapshot(stream.clone(), version, &v)?,
        ));
    }
    found.sort_by_key(|(seq, _)| *seq);
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

/// Keyed snapshots in key order (bytewise).
pub fn list_snapshots(engine: &dyn Engine, query: &SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
    let from = match &query.start_after {
        Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
        None => Bound::Unbounded,
    };
    let limit = query.limit.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for item in engine.range(Table::Snapshots, from, Bound::Unbounded, false) {
        let (k, v) = item?;
        let key = String::from_utf8(k.to_vec()).map_err(|_| annals_core::Error::Corrupted {
            location: "embedded table snapshots".into(),
            detail: "a key is not UTF-8".into(),
        })?;
        let (timestamp, content) = codec::decode_keyed_snapshot(&v)?;
        out.push(KeyedSnapshot {
            key,
            content,
            timestamp,
        });
        if out.len() as u64 >= limit {
            break;
        }
    }
    Ok(out)
}

/// A secret by id.
pub fn get_secret(engine: &dyn Engine, id: &str) -> Result<Option<Secret>> {
    let Some(idx) = engine.get(Table::SecretIds, id.as_bytes())? else {
        return Ok(None);
    };
    let idx = codec::read_u64(&idx, "secret_ids")?;
    secret_at(engine, idx)
}

/// The secret with index `idx`.
pub fn secret_at(engine: &dyn Engine, idx: u64) -> Result<Option<Secret>> {
    let Some(value) = engine.get(Table::Secrets, &idx.to_be_bytes())? else {
        return Ok(None);
    };
    let (id, secret) = codec::decode_secret(&value)?;
    Ok(Some(Secret { idx, id, secret }))
}

/// Secrets by index.
pub fn list_secrets(engine: &dyn Engine, query: &SecretQuery) -> Result<Vec<Secret>> {
    let mut out = Vec::new();
    let mut skip = query.skip;
    let limit = query.limit.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(out);
    }
    for item in engine.range(
        Table::Secrets,
        Bound::Included(query.from_idx.to_be_bytes().to_vec()),
        Bound::Unbounded,
        false,
    ) {
        let (k, v) = item?;
        let idx = codec::read_u64(&k, "secrets")?;
        let (id, secret) = codec::decode_secret(&v)?;
        let s = Secret { idx, id, secret };
        if !annals_core::rules::secret_matches(query, &s) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
            continue;
        }
        out.push(s);
        if out.len() as u64 >= limit {
            break;
        }
    }
    Ok(out)
}
