//! Pour past events into a message channel (castore's "dam"): re-publish, with
//! `replay = true` and an optional rate limit, the aggregate ids of a store, the events
//! of one stream, every event of a store, or the events of several stores merged, all
//! in timestamp order.
//!
//! Every function works over [`EventStore`] only, so it runs on every backend (and
//! against a remote server through `annals-client`). Each returns the counts and the
//! first and last scanned or poured items that castore's dam returns, plus a `resume`
//! token: the place right after the last message the channel acknowledged. Passing
//! it back (`resume` of the query) continues an interrupted pour without re-publishing
//! what was poured; the batch that was in flight when a failure struck is published
//! again (at-least-once).
//!
//! A failure returns [`Interrupted`], which carries the error and the partial result
//! (with its `resume` token); `?` turns it into the [`annals_core::Error`].
//!
//! ```
//! use annals_channels::{pour, MemoryChannel, Message};
//! use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! for id in ["a", "b"] {
//!     store.append_to_stream(&StreamId::new(id), ExpectedVersion::Any,
//!         vec![ProposedEvent::new("Created", Json::null())]).await?;
//! }
//! let channel = MemoryChannel::new();
//! let result = pour::pour_aggregate_ids(&store, "default", &channel,
//!     &pour::AggregateIdsQuery::default(), &pour::PourOptions::default()).await?;
//! assert_eq!(result.poured_aggregate_id_count, 2);
//! assert_eq!(result.first_scanned_aggregate.unwrap().aggregate_id, "a");
//! assert!(channel.messages().iter().all(Message::replay));
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

use serde::Serialize;

use annals_core::{
    Direction, Error, EventFilter, EventStore, ListStreams, Position, ReadAll, RecordedEvent,
    Result, StreamId, StreamInfo, StreamPageToken, StreamRead, Timestamp, Version,
};

use crate::{Message, MessageChannel, RateLimiter};

/// How many events one store read asks for.
const READ_PAGE: u64 = 1000;

/// What a pour reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Messages acknowledged by the channel so far (in this run).
    pub poured: u64,
    /// How many messages this run will pour, when known.
    pub total: Option<u64>,
}

/// A function called after every published batch.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How a pour publishes: rate limit, batch size, stop flag, progress callback.
///
/// ```
/// let o = annals_channels::pour::PourOptions::default().rate_limit(100.0);
/// assert_eq!(o.rate_limit, Some(100.0));
/// assert_eq!(o.batch_size, 100);
/// ```
#[derive(Clone)]
pub struct PourOptions {
    /// At most this many messages per second (`None` = as fast as the channel takes them).
    pub rate_limit: Option<f64>,
    /// At most this many messages per `publish_batch` (a rate limit makes batches
    /// smaller: about a tenth of a second of messages).
    pub batch_size: usize,
    /// When set to `true` (by a Ctrl-C handler, say), the pour stops before its next
    /// batch and returns with `finished: false` and its `resume` token.
    pub stop: Option<Arc<AtomicBool>>,
    /// Called after every published batch.
    pub progress: Option<ProgressFn>,
    /// Pours in timestamp order (`all`, `stores`) hold at most about this many events
    /// per store in memory while putting them in order; events beyond it are read
    /// again when their turn comes. Memory is bounded by this plus 24 bytes per
    /// selected event.
    pub reorder_buffer: usize,
}

impl Default for PourOptions {
    fn default() -> Self {
        PourOptions {
            rate_limit: None,
            batch_size: 100,
            stop: None,
            progress: None,
            reorder_buffer: 20_000,
        }
    }
}

impl fmt::Debug for PourOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PourOptions")
            .field("rate_limit", &self.rate_limit)
            .field("batch_size", &self.batch_size)
            .field("stop", &self.stop)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .field("reorder_buffer", &self.reorder_buffer)
            .finish()
    }
}

impl PourOptions {
    /// Sets the rate limit in messages per second.
    ///
    /// ```
    /// assert_eq!(annals_channels::pour::PourOptions::default().rate_limit(5.0).rate_limit, Some(5.0));
    /// ```
    pub fn rate_limit(mut self, per_second: f64) -> Self {
        self.rate_limit = Some(per_second);
        self
    }
}

/// A pour that failed part-way: the error and what was poured before it.
#[derive(Debug, Clone)]
pub struct Interrupted<R> {
    /// What went wrong.
    pub error: Error,
    /// The result so far; its `resume` token continues the pour.
    pub partial: R,
}

impl<R> fmt::Display for Interrupted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the pour was interrupted: {}", self.error)
    }
}

impl<R: fmt::Debug> std::error::Error for Interrupted<R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<R> From<Interrupted<R>> for Error {
    fn from(i: Interrupted<R>) -> Error {
        i.error
    }
}

/// The result of a pour, or where it stopped.
pub type PourResult<R> = std::result::Result<R, Interrupted<R>>;

/// A stream as a pour scanned it (castore's `firstScannedAggregate`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannedAggregate {
    /// The stream id (castore's aggregate id).
    pub aggregate_id: String,
    /// The aggregate type; absent when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aggregate: String,
    /// The bounded context; absent when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub context: String,
    /// Its current version.
    pub version: Version,
    /// The timestamp of its first event.
    pub initial_event_timestamp: Timestamp,
    /// The position of its first event.
    pub first_position: Position,
}

impl ScannedAggregate {
    /// The stream id.
    ///
    /// ```
    /// use annals_channels::pour::ScannedAggregate;
    /// use annals_core::{StreamId, StreamInfo, Timestamp};
    /// let s = ScannedAggregate::from(&StreamInfo { stream: StreamId::new("a").with_aggregate("t"),
    ///     version: 2, first_timestamp: Timestamp::from_millis(1), first_position: 1, last_position: 2 });
    /// assert_eq!(s.stream(), StreamId::new("a").with_aggregate("t"));
    /// ```
    pub fn stream(&self) -> StreamId {
        StreamId {
            context: self.context.clone(),
            aggregate: self.aggregate.clone(),
            id: self.aggregate_id.clone(),
        }
    }
}

impl From<&StreamInfo> for ScannedAggregate {
    fn from(i: &StreamInfo) -> Self {
        ScannedAggregate {
            aggregate_id: i.stream.id.clone(),
            aggregate: i.stream.aggregate.clone(),
            context: i.stream.context.clone(),
            version: i.version,
            initial_event_timestamp: i.first_timestamp,
            first_position: i.first_position,
        }
    }
}

/// Where a timestamp-ordered pour ([`pour_store_events`], [`pour_stores_events`])
/// stands: the sort key of the last poured event, `(timestamp, store, position)`.
/// Written `<millis>.<position>` or `<millis>.<position>.<store>`.
///
/// ```
/// use annals_channels::pour::PourCursor;
/// use annals_core::Timestamp;
/// let c = PourCursor { timestamp: Timestamp::from_millis(1500), position: 7, store: Some("a.b".into()) };
/// assert_eq!(c.to_string(), "1500.7.a.b");
/// assert_eq!("1500.7.a.b".parse::<PourCursor>().unwrap(), c);
/// assert!("garbage".parse::<PourCursor>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PourCursor {
    /// The timestamp of the last poured event.
    pub timestamp: Timestamp,
    /// Its position in its store.
    pub position: Position,
    /// Its store (for a pour of several stores).
    pub store: Option<String>,
}

impl PourCursor {
    fn key(&self) -> (Timestamp, &str, Position) {
        (
            self.timestamp,
            self.store.as_deref().unwrap_or(""),
            self.position,
        )
    }
}

impl fmt::Display for PourCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.timestamp.as_millis(), self.position)?;
        if let Some(store) = &self.store {
            write!(f, ".{store}")?;
        }
        Ok(())
    }
}

impl FromStr for PourCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "resume",
                format!("{s:?} is not a pour cursor (<millis>.<position>[.<store>])"),
            )
        };
        let mut parts = s.splitn(3, '.');
        let millis: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let position: Position = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let store = parts.next().map(str::to_owned);
        if store.as_deref() == Some("") {
            return Err(bad());
        }
        Ok(PourCursor {
            timestamp: Timestamp::from_millis(millis),
            position,
            store,
        })
    }
}

impl Serialize for PourCursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn serialize_token<S: serde::Serializer>(
    t: &Option<StreamPageToken>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

/// Publishes in rate-limited batches and counts.
struct Pourer<'a> {
    channel: &'a dyn MessageChannel,
    limiter: RateLimiter,
    batch_size: usize,
    options: &'a PourOptions,
    poured: u64,
    total: Option<u64>,
}

impl<'a> Pourer<'a> {
    fn new(channel: &'a dyn MessageChannel, options: &'a PourOptions) -> Result<Self> {
        let limiter = RateLimiter::new(options.rate_limit)?;
        let batch_size = limiter.batch_size(options.batch_size.max(1));
        Ok(Pourer {
            channel,
            limiter,
            batch_size,
            options,
            poured: 0,
            total: None,
        })
    }

    fn stopped(&self) -> bool {
        self.options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(AtomicOrdering::SeqCst))
    }

    /// Publishes one batch (at most `batch_size` messages).
    async fn publish(&mut self, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.limiter.acquire(messages.len() as u64).await;
        self.channel.publish_batch(messages).await?;
        self.poured += messages.len() as u64;
        if let Some(p) = &self.options.progress {
            p(Progress {
                poured: self.poured,
                total: self.total,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Aggregate ids

/// Which aggregate ids [`pour_aggregate_ids`] pours (castore's `listAggregateIds`
/// options), ordered by their first event.
///
/// ```
/// let q = annals_channels::pour::AggregateIdsQuery::default();
/// assert_eq!(q.page_size, 100);
/// assert!(!q.reverse);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateIdsQuery {
    /// Only streams of this bounded context.
    pub context: Option<String>,
    /// Only streams of this aggregate type.
    pub aggregate: Option<String>,
    /// Only streams whose first event is at or after this time.
    pub initial_event_after: Option<Timestamp>,
    /// Only streams whose first event is at or before this time.
    pub initial_event_before: Option<Timestamp>,
    /// Newest first.
    pub reverse: bool,
    /// At most this many ids in this run (`None` = all). Castore's `limit` is the size
    /// of a listing page: that is `page_size` here.
    pub limit: Option<u64>,
    /// How many streams one `list_streams` call asks for.
    pub page_size: u64,
    /// Continue after this stream (the `resume` of an earlier result).
    pub resume: Option<StreamPageToken>,
}

impl Default for AggregateIdsQuery {
    fn default() -> Self {
        AggregateIdsQuery {
            context: None,
            aggregate: None,
            initial_event_after: None,
            initial_event_before: None,
            reverse: false,
            limit: None,
            page_size: 100,
            resume: None,
        }
    }
}

/// What [`pour_aggregate_ids`] did (castore's result, plus `resume` and `finished`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregateIdsResult {
    /// Aggregate ids the channel acknowledged.
    pub poured_aggregate_id_count: u64,
    /// The first stream listed.
    pub first_scanned_aggregate: Option<ScannedAggregate>,
    /// The last stream listed.
    pub last_scanned_aggregate: Option<ScannedAggregate>,
    /// Continues after the last poured stream (`None` before the first).
    #[serde(serialize_with = "serialize_token")]
    pub resume: Option<StreamPageToken>,
    /// Whether every selected id was poured (`false` when stopped or interrupted).
    pub finished: bool,
}

/// Pours the ids of the streams of `store` into `channel` as "aggregate exists"
/// messages (`replay = true`), in the order of their first event (newest first with
/// `reverse`), listing them page by page.
pub async fn pour_aggregate_ids(
    store: &dyn EventStore,
    store_name: &str,
    channel: &dyn MessageChannel,
    query: &AggregateIdsQuery,
    options: &PourOptions,
) -> PourResult<AggregateIdsResult> {
    let mut result = AggregateIdsResult {
        resume: query.resume,
        ..AggregateIdsResult::default()
    };
    let mut pourer = match Pourer::new(channel, options) {
        Ok(p) => p,
        Err(error) => {
            return Err(Interrupted {
                error,
                partial: result,
            })
        }
    };
    if query.page_size == 0 {
        let error = Error::invalid("page_size", "must be at least 1");
        return Err(Interrupted {
            error,
            partial: result,
        });
    }
    pourer.total = match store.describe().await {
        Ok(d) => Some(
            query
                .limit
                .map_or(d.stream_count, |l| l.min(d.stream_count)),
        ),
        Err(_) => query.limit,
    };
    let mut token = query.resume;
    let limit = query.limit.unwrap_or(u64::MAX);
    loop {
        let remaining = limit - result.poured_aggregate_id_count;
        if remaining == 0 || pourer.stopped() {
            result.finished = remaining == 0;
            return Ok(result);
        }
        let listing = ListStreams {
            context: query.context.clone(),
            aggregate: query.aggregate.clone(),
            created_after: query.initial_event_after,
            created_before: query.initial_event_before,
            reverse: query.reverse,
            limit: Some(query.page_size.min(remaining)),
            page_token: token,
        };
        let page = match store.list_streams(listing).await {
            Ok(p) => p,
            Err(error) => {
                return Err(Interrupted {
                    error,
                    partial: result,
                })
            }
        };
        if let (None, Some(first)) = (&result.first_scanned_aggregate, page.streams.first()) {
            result.first_scanned_aggregate = Some(first.into());
        }
        if let Some(last) = page.streams.last() {
            result.last_scanned_aggregate = Some(last.into());
        }
        for chunk in page.streams.chunks(pourer.batch_size) {
            if pourer.stopped() {
                return Ok(result);
            }
            let messages: Vec<Message> = chunk
                .iter()
                .map(|s| Message::aggregate_exists(store_name, s.stream.clone(), true))
                .collect();
            if let Err(error) = pourer.publish(&messages).await {
                return Err(Interrupted {
                    error,
                    partial: result,
                });
            }
            result.poured_aggregate_id_count += chunk.len() as u64;
            if let Some(last) = chunk.last() {
                result.resume = Some(StreamPageToken::new(
                    last.first_timestamp,
                    last.first_position,
                ));
            }
        }
        match page.next_page_token {
            Some(next) if !page.streams.is_empty() => token = Some(next),
            _ => {
                result.finished = true;
                return Ok(result);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// One stream

/// Which events of one stream [`pour_stream_events`] pours (castore's `getEvents`
/// options and `timestamp` filters).
///
/// ```
/// let q = annals_channels::pour::StreamEventsQuery::default();
/// assert_eq!(q.min_version, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamEventsQuery {
    /// The lowest version (inclusive).
    pub min_version: Option<Version>,
    /// The highest version (inclusive).
    pub max_version: Option<Version>,
    /// At most this many events in this run (counted after the time filters).
    pub limit: Option<u64>,
    /// Newest first.
    pub reverse: bool,
    /// Only events at or after this time.
    pub from: Option<Timestamp>,
    /// Only events at or before this time.
    pub to: Option<Timestamp>,
    /// Continue after this version (the `resume` of an earlier result).
    pub resume: Option<Version>,
}

/// What [`pour_stream_events`] did (castore's result, plus `resume` and `finished`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEventsResult {
    /// Events the channel acknowledged.
    pub poured_event_count: u64,
    /// The first event poured.
    pub first_poured_event: Option<RecordedEvent>,
    /// The last event poured.
    pub last_poured_event: Option<RecordedEvent>,
    /// The version of the last poured event: continues after it.
    pub resume: Option<Version>,
    /// Whether every selected event was poured.
    pub finished: bool,
}

/// Pours the events of `stream` into `channel` as notifications (`replay = true`) in
/// version order (newest first with `reverse`; versions follow timestamps within a
/// stream).
pub async fn pour_stream_events(
    store: &dyn EventStore,
    store_name: &str,
    channel: &dyn MessageChannel,
    stream: &StreamId,
    query: &StreamEventsQuery,
    options: &PourOptions,
) -> PourResult<StreamEventsResult> {
    let mut result = StreamEventsResult {
        resume: query.resume,
        ..StreamEventsResult::default()
    };
    let events = match stream_events(store, stream, query).await {
        Ok(e) => e,
        Err(error) => {
            return Err(Interrupted {
                error,
                partial: result,
            })
        }
    };
    let mut pourer = match Pourer::new(channel, options) {
        Ok(p) => p,
        Err(error) => {
            return Err(Interrupted {
                error,
                partial: result,
            })
        }
    };
    pourer.total = Some(events.len() as u64);
    for chunk in events.chunks(pourer.batch_size) {
        if pourer.stopped() {
            return Ok(result);
        }
        let messages: Vec<Message> = chunk
            .iter()
            .map(|e| Message::notification(store_name, e.clone(), true))
            .collect();
        if let Err(error) = pourer.publish(&messages).await {
            return Err(Interrupted {
                error,
                partial: result,
            });
        }
        result.poured_event_count += chunk.len() as u64;
        if result.first_poured_event.is_none() {
            result.first_poured_event = chunk.first().cloned();
        }
        result.last_poured_event = chunk.last().cloned();
        result.resume = chunk.last().map(|e| e.version);
    }
    result.finished = true;
    Ok(result)
}

/// The selected events of one stream, in pour order.
async fn stream_events(
    store: &dyn EventStore,
    stream: &StreamId,
    query: &StreamEventsQuery,
) -> Result<Vec<RecordedEvent>> {
    let mut low = query.min_version.unwrap_or(1).max(1);
    let mut high = query.max_version.unwrap_or(Version::MAX);
    match (query.resume, query.reverse) {
        (Some(v), false) => low = low.max(v.saturating_add(1)),
        (Some(v), true) => high = high.min(v.saturating_sub(1)),
        (None, _) => {}
    }
    let limit = query.limit.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    while low <= high && high >= 1 && (out.len() as u64) < limit {
        let mut read = StreamRead::all().from_version(low).limit(READ_PAGE);
        if high != Version::MAX {
            read = read.to_version(high);
        }
        if query.reverse {
            read.direction = Direction::Backward;
        }
        let page = store.read_stream(stream, read).await?;
        let Some(last) = page.last() else { break };
        if query.reverse {
            high = last.version.saturating_sub(1);
        } else {
            low = last.version.saturating_add(1);
        }
        let full = page.len() as u64 == READ_PAGE;
        for e in page {
            let in_time = query.from.is_none_or(|t| e.timestamp >= t)
                && query.to.is_none_or(|t| e.timestamp <= t);
            if in_time && (out.len() as u64) < limit {
                out.push(e);
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// A whole store, several stores

/// Which events [`pour_store_events`] and [`pour_stores_events`] pour (castore's
/// `timestamp` filters).
///
/// ```
/// let q = annals_channels::pour::StoreEventsQuery::default();
/// assert!(q.from.is_none() && q.resume.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreEventsQuery {
    /// Only events at or after this time.
    pub from: Option<Timestamp>,
    /// Only events at or before this time.
    pub to: Option<Timestamp>,
    /// Continue after this event (the `resume` of an earlier result).
    pub resume: Option<PourCursor>,
}

/// What [`pour_store_events`] did (castore's result, plus `resume` and `finished`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreEventsResult {
    /// Events the channel acknowledged.
    pub poured_event_count: u64,
    /// The first stream scanned: the stream with the oldest first event (among those
    /// created at or before `to`).
    pub first_scanned_aggregate: Option<ScannedAggregate>,
    /// The last stream scanned: the stream with the newest first event (among those
    /// created at or before `to`).
    pub last_scanned_aggregate: Option<ScannedAggregate>,
    /// The sort key of the last poured event: continues after it.
    pub resume: Option<PourCursor>,
    /// Whether every selected event was poured.
    pub finished: bool,
}

/// The first and last streams of one store's scan (castore's `scans[store]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreScan {
    /// See [`StoreEventsResult::first_scanned_aggregate`].
    pub first_scanned_aggregate: Option<ScannedAggregate>,
    /// See [`StoreEventsResult::last_scanned_aggregate`].
    pub last_scanned_aggregate: Option<ScannedAggregate>,
}

/// What [`pour_stores_events`] did (castore's result, plus `resume` and `finished`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoresEventsResult {
    /// Events the channel acknowledged, over every store.
    pub poured_event_count: u64,
    /// The scan of each store, by store name.
    pub scans: BTreeMap<String, StoreScan>,
    /// The sort key of the last poured event: continues after it.
    pub resume: Option<PourCursor>,
    /// Whether every selected event was poured.
    pub finished: bool,
}

/// The streams created first and last (at or before `to`).
async fn scan(store: &dyn EventStore, to: Option<Timestamp>) -> Result<StoreScan> {
    let mut out = StoreScan::default();
    for reverse in [false, true] {
        let page = store
            .list_streams(ListStreams {
                created_before: to,
                reverse,
                limit: Some(1),
                ..ListStreams::default()
            })
            .await?;
        let first = page.streams.first().map(ScannedAggregate::from);
        if reverse {
            out.last_scanned_aggregate = first;
        } else {
            out.first_scanned_aggregate = first;
        }
    }
    Ok(out)
}

/// One selected event's sort key, and its rank among the selected events in position
/// order.
#[derive(Debug, Clone, Copy)]
struct SortKey {
    timestamp: Timestamp,
    position: Position,
    rank: u64,
}

impl SortKey {
    fn of(&self) -> (Timestamp, Position) {
        (self.timestamp, self.position)
    }
}

/// One store's selected events in (timestamp, position) order after `resume`, read
/// lazily with bounded memory.
///
/// A store's positions follow commit order and its timestamps usually do too, but not
/// always: concurrent writers' clocks jitter, and an imported event keeps its own
/// timestamp. A first pass reads the selected events in position order and keeps only
/// their sort keys (24 bytes an event). The second pass reads them again in position
/// order into a reorder buffer and hands them out in key order: an event leaves the
/// buffer as soon as it is the next key, so out-of-order events cost only the distance
/// they are out of place. When the buffer is full, its latest events are dropped and
/// read again, in runs of consecutive positions, when their turn comes.
struct TimeOrdered<'a> {
    store: &'a dyn EventStore,
    filter: EventFilter,
    /// Every event to pour, in pour order.
    keys: Vec<SortKey>,
    /// The next key to pour.
    next: usize,
    /// Events read and not poured yet, by key.
    buffer: BTreeMap<(Timestamp, Position), RecordedEvent>,
    capacity: usize,
    /// The sequential read: where it continues, and the rank of its next event.
    cursor: Option<ReadAll>,
    frontier: u64,
}

impl<'a> TimeOrdered<'a> {
    async fn open(
        store: &'a dyn EventStore,
        store_key: Option<&str>,
        query: &StoreEventsQuery,
        capacity: usize,
    ) -> Result<Self> {
        let filter = EventFilter::default().time_range(query.from, query.to);
        let mut read = ReadAll::forward().filter(filter.clone()).limit(READ_PAGE);
        let mut keys = Vec::new();
        loop {
            let page = store.read_all(read.clone()).await?;
            let end = page.end || page.events.is_empty();
            for e in &page.events {
                let rank = keys.len() as u64;
                keys.push(SortKey {
                    timestamp: e.timestamp,
                    position: e.position,
                    rank,
                });
            }
            if end {
                break;
            }
            read = read.cursor(page.next_cursor);
        }
        keys.sort_unstable_by_key(SortKey::of);
        if let Some(resume) = &query.resume {
            let store_key = store_key.unwrap_or("");
            keys.retain(|k| (k.timestamp, store_key, k.position) > resume.key());
        }
        // The sequential pass starts at the first event still to pour.
        let first = keys.iter().min_by_key(|k| k.rank).copied();
        let cursor = first.map(|k| {
            ReadAll::forward()
                .after(k.position.saturating_sub(1))
                .filter(filter.clone())
                .limit(READ_PAGE)
        });
        Ok(TimeOrdered {
            store,
            filter,
            keys,
            next: 0,
            buffer: BTreeMap::new(),
            capacity: capacity.max(1),
            cursor,
            frontier: first.map_or(0, |k| k.rank),
        })
    }

    /// How many events this source pours in all.
    fn len(&self) -> u64 {
        self.keys.len() as u64
    }

    /// The key of the next event, without reading it.
    fn peek(&self) -> Option<SortKey> {
        self.keys.get(self.next).copied()
    }

    /// The next event; `None` after the last.
    async fn pop(&mut self) -> Result<Option<RecordedEvent>> {
        let Some(key) = self.peek() else {
            return Ok(None);
        };
        if !self.buffer.contains_key(&key.of()) {
            if key.rank >= self.frontier && self.cursor.is_some() {
                // Not read yet: the sequential pass reads on until it is.
                while key.rank >= self.frontier && self.cursor.is_some() {
                    self.read_on().await?;
                }
            } else {
                // Read, then dropped from the full buffer: read its run again.
                self.read_run().await?;
            }
        }
        match self.buffer.remove(&key.of()) {
            Some(e) => {
                self.next += 1;
                Ok(Some(e))
            }
            None => Err(self.changed(key.position)),
        }
    }

    /// The next page of the sequential pass into the buffer.
    async fn read_on(&mut self) -> Result<()> {
        let Some(read) = self.cursor.take() else {
            return Ok(());
        };
        let page = match self.store.read_all(read.clone()).await {
            Ok(page) => page,
            // The store refuses a cursor past its head: it was cleared meanwhile.
            Err(Error::InvalidInput { field, .. }) if field == "cursor" => {
                let position = self.peek().map_or(0, |k| k.position);
                return Err(self.changed(position));
            }
            Err(e) => return Err(e),
        };
        self.frontier += page.events.len() as u64;
        if !(page.end || page.events.is_empty()) {
            self.cursor = Some(read.cursor(page.next_cursor));
        }
        self.keep(page.events);
        Ok(())
    }

    /// Reads again the run of events starting at the next key: the following keys as
    /// long as they are also the following events in position order.
    async fn read_run(&mut self) -> Result<()> {
        let run = &self.keys[self.next..];
        let mut count = 1;
        while count < run.len()
            && (count as u64) < READ_PAGE
            && run[count].rank == run[count - 1].rank + 1
        {
            count += 1;
        }
        let page = self
            .store
            .read_all(
                ReadAll::forward()
                    .after(run[0].position.saturating_sub(1))
                    .filter(self.filter.clone())
                    .limit(count as u64),
            )
            .await?;
        self.keep(page.events);
        Ok(())
    }

    /// Buffers the events still to pour, then drops the latest ones above capacity.
    fn keep(&mut self, events: Vec<RecordedEvent>) {
        let Some(next) = self.peek() else { return };
        for e in events {
            if (e.timestamp, e.position) >= next.of() {
                self.buffer.insert((e.timestamp, e.position), e);
            }
        }
        while self.buffer.len() > self.capacity {
            self.buffer.pop_last();
        }
    }

    fn changed(&self, position: Position) -> Error {
        Error::invalid(
            "store",
            format!(
                "its events changed during the pour (the event at position {position} \
                 read back differently or not at all): was it cleared or overwritten? Pour \
                 again from the resume token"
            ),
        )
    }
}

fn cursor_of(e: &RecordedEvent, store: Option<&str>) -> PourCursor {
    PourCursor {
        timestamp: e.timestamp,
        position: e.position,
        store: store.map(str::to_owned),
    }
}

/// Pours every event of `store` (within the time filters) into `channel` as
/// notifications (`replay = true`) in timestamp order, ties in position order,
/// whatever their stream.
pub async fn pour_store_events(
    store: &dyn EventStore,
    store_name: &str,
    channel: &dyn MessageChannel,
    query: &StoreEventsQuery,
    options: &PourOptions,
) -> PourResult<StoreEventsResult> {
    let mut result = StoreEventsResult {
        resume: query.resume.clone(),
        ..StoreEventsResult::default()
    };
    if query.resume.as_ref().is_some_and(|c| c.store.is_some()) {
        let error = Error::invalid(
            "resume",
            "a cursor naming a store belongs to a pour of several stores",
        );
        return Err(Interrupted {
            error,
            partial: result,
        });
    }
    let prepared = async {
        let s = scan(store, query.to).await?;
        let events = TimeOrdered::open(store, None, query, options.reorder_buffer).await?;
        let pourer = Pourer::new(channel, options)?;
        Ok::<_, Error>((s, events, pourer))
    };
    let (s, mut events, mut pourer) = match prepared.await {
        Ok(p) => p,
        Err(error) => {
            return Err(Interrupted {
                error,
                partial: result,
            })
        }
    };
    result.first_scanned_aggregate = s.first_scanned_aggregate;
    result.last_scanned_aggregate = s.last_scanned_aggregate;
    pourer.total = Some(events.len());
    let mut batch: Vec<Message> = Vec::with_capacity(pourer.batch_size);
    loop {
        batch.clear();
        let mut last = None;
        while batch.len() < pourer.batch_size {
            match events.pop().await {
                Ok(Some(e)) => {
                    last = Some(cursor_of(&e, None));
                    batch.push(Message::notification(store_name, e, true));
                }
                Ok(None) => break,
                Err(error) => {
                    return Err(Interrupted {
                        error,
                        partial: result,
                    })
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        if pourer.stopped() {
            return Ok(result);
        }
        if let Err(error) = pourer.publish(&batch).await {
            return Err(Interrupted {
                error,
                partial: result,
            });
        }
        result.poured_event_count += batch.len() as u64;
        result.resume = last;
    }
    result.finished = true;
    Ok(result)
}

/// One store's next event in the merge, ordered by (timestamp, store name, position).
struct Head {
    timestamp: Timestamp,
    store: usize,
    position: Position,
}

impl Head {
    fn of(store: usize, key: SortKey) -> Self {
        Head {
            timestamp: key.timestamp,
            store,
            position: key.position,
        }
    }
}

/// Pours the events of several stores (each given with its name; names must differ)
/// into `channel` as notifications (`replay = true`), merged in timestamp order
/// (a k-way merge of the stores' timestamp-ordered events; ties go by store name,
/// then position).
pub async fn pour_stores_events(
    stores: &[(&str, &dyn EventStore)],
    channel: &dyn MessageChannel,
    query: &StoreEventsQuery,
    options: &PourOptions,
) -> PourResult<StoresEventsResult> {
    let mut result = StoresEventsResult {
        resume: query.resume.clone(),
        ..StoresEventsResult::default()
    };
    // Stores sorted by name, so ties break by name whatever the argument order.
    let mut order: Vec<usize> = (0..stores.len()).collect();
    order.sort_by_key(|&i| stores[i].0);
    if let Some(w) = order.windows(2).find(|w| stores[w[0]].0 == stores[w[1]].0) {
        let error = Error::invalid(
            "stores",
            format!("the store {:?} is given twice", stores[w[0]].0),
        );
        return Err(Interrupted {
            error,
            partial: result,
        });
    }
    if query.resume.as_ref().is_some_and(|c| c.store.is_none()) && !stores.is_empty() {
        let error = Error::invalid(
            "resume",
            "a pour of several stores resumes from a cursor naming a store",
        );
        return Err(Interrupted {
            error,
            partial: result,
        });
    }
    let mut per_store: Vec<TimeOrdered<'_>> = Vec::with_capacity(order.len());
    for &i in &order {
        let (name, store) = stores[i];
        let loaded = async {
            let s = scan(store, query.to).await?;
            let events =
                TimeOrdered::open(store, Some(name), query, options.reorder_buffer).await?;
            Ok::<_, Error>((s, events))
        };
        match loaded.await {
            Ok((s, events)) => {
                result.scans.insert(name.to_owned(), s);
                per_store.push(events);
            }
            Err(error) => {
                return Err(Interrupted {
                    error,
                    partial: result,
                })
            }
        }
    }
    let mut pourer = match Pourer::new(channel, options) {
        Ok(p) => p,
        Err(error) => {
            return Err(Interrupted {
                error,
                partial: result,
            })
        }
    };
    pourer.total = Some(per_store.iter().map(TimeOrdered::len).sum());
    let mut heap: BinaryHeap<Reverse<Head>> = per_store
        .iter()
        .enumerate()
        .filter_map(|(store, events)| events.peek().map(|k| Reverse(Head::of(store, k))))
        .collect();
    let mut batch: Vec<Message> = Vec::with_capacity(pourer.batch_size);
    let mut batch_last: Option<PourCursor> = None;
    loop {
        let next = heap.pop().map(|Reverse(h)| h);
        if let Some(head) = &next {
            let events = &mut per_store[head.store];
            let name = stores[order[head.store]].0;
            match events.pop().await {
                Ok(Some(e)) => {
                    batch_last = Some(cursor_of(&e, Some(name)));
                    batch.push(Message::notification(name, e, true));
                }
                // The heap holds a store only while it has a next key.
                Ok(None) => {}
                Err(error) => {
                    return Err(Interrupted {
                        error,
                        partial: result,
                    })
                }
            }
            if let Some(k) = events.peek() {
                heap.push(Reverse(Head::of(head.store, k)));
            }
        }
        if batch.len() >= pourer.batch_size || (next.is_none() && !batch.is_empty()) {
            if pourer.stopped() {
                return Ok(result);
            }
            if let Err(error) = pourer.publish(&batch).await {
                return Err(Interrupted {
                    error,
                    partial: result,
                });
            }
            result.poured_event_count += batch.len() as u64;
            result.resume = batch_last.take();
            batch.clear();
        }
        if next.is_none() {
            result.finished = true;
            return Ok(result);
        }
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Stores are indexed in name order, so the index stands for the name.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.timestamp, self.store, self.position).cmp(&(
            other.timestamp,
            other.store,
            other.position,
        ))
    }
}
