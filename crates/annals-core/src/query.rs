//! Read requests and their answers: stream reads, store-wide reads with filters,
//! stream listings.

use crate::cursor::{Cursor, StreamPageToken};
use crate::model::{Direction, Position, RecordedEvent, StreamId, Timestamp, Version};

/// Which events a store-wide read, a subscription or an undispatched listing selects.
/// Every field narrows the selection; an empty list means "any".
///
/// ```
/// use annals_core::EventFilter;
/// let f = EventFilter::default()
///     .context("billing")
///     .aggregate("account")
///     .aggregate_ids(["acc-1", "acc-2"])
///     .event_types(["Deposited"]);
/// assert_eq!(f.aggregate_ids.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    /// Exact bounded context (`Some("")` = streams without a context); `None` = any.
    pub context: Option<String>,
    /// Exact aggregate type (`Some("")` = streams without one); `None` = any.
    pub aggregate: Option<String>,
    /// Stream ids (aggregate ids), any of them; empty = any.
    pub aggregate_ids: Vec<String>,
    /// Event types, any of them; empty = any.
    pub event_types: Vec<String>,
    /// Inclusive lower bound on the timestamp.
    pub from_time: Option<Timestamp>,
    /// Inclusive upper bound on the timestamp.
    pub to_time: Option<Timestamp>,
    /// Inclusive lower bound on the stream version.
    pub min_version: Option<Version>,
    /// Inclusive upper bound on the stream version.
    pub max_version: Option<Version>,
    /// Only dispatched (`Some(true)`) or undispatched (`Some(false)`) events.
    pub dispatched: Option<bool>,
}

impl EventFilter {
    /// Selects one stream exactly.
    ///
    /// ```
    /// let s = annals_core::StreamId::new("a").with_context("c");
    /// let f = annals_core::EventFilter::stream(&s);
    /// assert_eq!(f.context.as_deref(), Some("c"));
    /// assert_eq!(f.aggregate.as_deref(), Some(""));
    /// ```
    pub fn stream(stream: &StreamId) -> Self {
        EventFilter {
            context: Some(stream.context.clone()),
            aggregate: Some(stream.aggregate.clone()),
            aggregate_ids: vec![stream.id.clone()],
            ..EventFilter::default()
        }
    }

    /// Restricts to one bounded context.
    ///
    /// ```
    /// assert_eq!(annals_core::EventFilter::default().context("x").context.as_deref(), Some("x"));
    /// ```
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Restricts to one aggregate type.
    ///
    /// ```
    /// assert_eq!(annals_core::EventFilter::default().aggregate("x").aggregate.as_deref(), Some("x"));
    /// ```
    pub fn aggregate(mut self, aggregate: impl Into<String>) -> Self {
        self.aggregate = Some(aggregate.into());
        self
    }

    /// Restricts to these stream ids.
    ///
    /// ```
    /// assert_eq!(annals_core::EventFilter::default().aggregate_ids(["a"]).aggregate_ids, vec!["a"]);
    /// ```
    pub fn aggregate_ids<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.aggregate_ids = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts to these event types.
    ///
    /// ```
    /// assert_eq!(annals_core::EventFilter::default().event_types(["T"]).event_types, vec!["T"]);
    /// ```
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts to an inclusive time range.
    ///
    /// ```
    /// use annals_core::{EventFilter, Timestamp};
    /// let f = EventFilter::default().time_range(Some(Timestamp::from_millis(1)), None);
    /// assert!(f.to_time.is_none());
    /// ```
    pub fn time_range(mut self, from: Option<Timestamp>, to: Option<Timestamp>) -> Self {
        self.from_time = from;
        self.to_time = to;
        self
    }

    /// Restricts by dispatch state.
    ///
    /// ```
    /// assert_eq!(annals_core::EventFilter::default().dispatched(false).dispatched, Some(false));
    /// ```
    pub fn dispatched(mut self, dispatched: bool) -> Self {
        self.dispatched = Some(dispatched);
        self
    }

    /// Whether the filter selects every event.
    ///
    /// ```
    /// assert!(annals_core::EventFilter::default().is_all());
    /// assert!(!annals_core::EventFilter::default().context("c").is_all());
    /// ```
    pub fn is_all(&self) -> bool {
        *self == EventFilter::default()
    }

    /// Whether the filter selects streams only by stream fields (no per-event condition).
    ///
    /// ```
    /// assert!(annals_core::EventFilter::default().aggregate_ids(["a"]).is_stream_only());
    /// assert!(!annals_core::EventFilter::default().event_types(["T"]).is_stream_only());
    /// ```
    pub fn is_stream_only(&self) -> bool {
        self.event_types.is_empty()
            && self.from_time.is_none()
            && self.to_time.is_none()
            && self.min_version.is_none()
            && self.max_version.is_none()
            && self.dispatched.is_none()
    }

    /// Whether a stream is selected by the stream fields of this filter.
    ///
    /// ```
    /// use annals_core::{EventFilter, StreamId};
    /// let f = EventFilter::default().aggregate("order");
    /// assert!(f.matches_stream(&StreamId::new("o-1").with_aggregate("order")));
    /// assert!(!f.matches_stream(&StreamId::new("o-1")));
    /// ```
    pub fn matches_stream(&self, stream: &StreamId) -> bool {
        self.context.as_ref().is_none_or(|c| *c == stream.context)
            && self
                .aggregate
                .as_ref()
                .is_none_or(|a| *a == stream.aggregate)
            && (self.aggregate_ids.is_empty() || self.aggregate_ids.contains(&stream.id))
    }

    /// Whether the event is selected by this filter.
    ///
    /// ```
    /// use annals_core::{EventFilter, Json, RecordedEvent, StreamId, Timestamp};
    /// let e = RecordedEvent {
    ///     position: 1, id: "e".into(), stream: StreamId::new("a"), version: 1,
    ///     event_type: "T".into(), timestamp: Timestamp::from_millis(10),
    ///     payload: Json::null(), metadata: Json::null(), commit_id: "c".into(),
    ///     commit_sequence: 0, dispatched: false,
    /// };
    /// assert!(EventFilter::default().event_types(["T"]).matches(&e));
    /// assert!(!EventFilter::default().time_range(Some(Timestamp::from_millis(11)), None).matches(&e));
    /// ```
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_stream(&event.stream)
            && (self.event_types.is_empty()
                || self.event_types.iter().any(|t| *t == event.event_type))
            && self.from_time.is_none_or(|t| event.timestamp >= t)
            && self.to_time.is_none_or(|t| event.timestamp <= t)
            && self.min_version.is_none_or(|v| event.version >= v)
            && self.max_version.is_none_or(|v| event.version <= v)
            && self.dispatched.is_none_or(|d| event.dispatched == d)
    }
}

/// Where a store-wide read starts.
///
/// ```
/// use annals_core::ReadFrom;
/// assert_eq!(ReadFrom::default(), ReadFrom::Start);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The beginning in the reading direction: position 1 forward, the head backward.
    #[default]
    Start,
    /// An exclusive bound: after this position forward, before it backward.
    Position(Position),
    /// A cursor returned by an earlier read (its direction must match the read's).
    Cursor(Cursor),
}

/// A store-wide read (reSolve's `loadEvents`, node-eventstore's `getEvents`).
///
/// ```
/// use annals_core::{Direction, EventFilter, ReadAll, ReadFrom};
/// let q = ReadAll::forward().after(10).limit(100).filter(EventFilter::default().event_types(["T"]));
/// assert_eq!(q.from, ReadFrom::Position(10));
/// assert_eq!(ReadAll::backward().direction, Direction::Backward);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadAll {
    /// Where to start.
    pub from: ReadFrom,
    /// The order of the result.
    pub direction: Direction,
    /// Which events to return.
    pub filter: EventFilter,
    /// How many matching events to pass over before returning any.
    pub skip: u64,
    /// At most this many events; `None` = all.
    pub limit: Option<u64>,
}

impl ReadAll {
    /// Every event, oldest first.
    ///
    /// ```
    /// assert_eq!(annals_core::ReadAll::forward().limit, None);
    /// ```
    pub fn forward() -> Self {
        ReadAll::default()
    }

    /// Every event, newest first.
    ///
    /// ```
    /// assert_eq!(annals_core::ReadAll::backward().direction, annals_core::Direction::Backward);
    /// ```
    pub fn backward() -> Self {
        ReadAll {
            direction: Direction::Backward,
            ..ReadAll::default()
        }
    }

    /// Starts after (forward) or before (backward) this position.
    ///
    /// ```
    /// assert_eq!(annals_core::ReadAll::forward().after(3).from, annals_core::ReadFrom::Position(3));
    /// ```
    pub fn after(mut self, position: Position) -> Self {
        self.from = ReadFrom::Position(position);
        self
    }

    /// Continues from a cursor of an earlier read.
    ///
    /// ```
    /// let c = annals_core::Cursor::forward_after(7);
    /// assert_eq!(annals_core::ReadAll::forward().cursor(c).from, annals_core::ReadFrom::Cursor(c));
    /// ```
    pub fn cursor(mut self, cursor: Cursor) -> Self {
        self.from = ReadFrom::Cursor(cursor);
        self
    }

    /// Sets the filter.
    ///
    /// ```
    /// let q = annals_core::ReadAll::forward().filter(annals_core::EventFilter::default().context("c"));
    /// assert!(!q.filter.is_all());
    /// ```
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Skips this many matching events first.
    ///
    /// ```
    /// assert_eq!(annals_core::ReadAll::forward().skip(2).skip, 2);
    /// ```
    pub fn skip(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    /// Returns at most this many events.
    ///
    /// ```
    /// assert_eq!(annals_core::ReadAll::forward().limit(5).limit, Some(5));
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One page of a store-wide read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAllPage {
    /// The events, in the requested order.
    pub events: Vec<RecordedEvent>,
    /// Continues the read exactly after what this page covered (also past filtered-out
    /// events, so a sparse filter does not rescan).
    pub next_cursor: Cursor,
    /// The store's head position when the page was read.
    pub head_position: Position,
    /// Whether the read reached the end of the store in its direction.
    pub end: bool,
}

/// A read of one stream by version (node-eventstore's `getEventsByRevision`).
///
/// ```
/// use annals_core::StreamRead;
/// let r = StreamRead::all().from_version(5).to_version(8);
/// assert_eq!((r.from_version, r.to_version), (5, Some(8)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRead {
    /// Inclusive lowest version (≥ 1).
    pub from_version: Version,
    /// Inclusive highest version; `None` = to the end.
    pub to_version: Option<Version>,
    /// Oldest first or newest first.
    pub direction: Direction,
    /// At most this many events.
    pub limit: Option<u64>,
}

impl Default for StreamRead {
    fn default() -> Self {
        StreamRead {
            from_version: 1,
            to_version: None,
            direction: Direction::Forward,
            limit: None,
        }
    }
}

impl StreamRead {
    /// The whole stream, oldest first.
    ///
    /// ```
    /// assert_eq!(annals_core::StreamRead::all().from_version, 1);
    /// ```
    pub fn all() -> Self {
        StreamRead::default()
    }

    /// The whole stream, newest first.
    ///
    /// ```
    /// assert_eq!(annals_core::StreamRead::backward().direction, annals_core::Direction::Backward);
    /// ```
    pub fn backward() -> Self {
        StreamRead {
            direction: Direction::Backward,
            ..StreamRead::default()
        }
    }

    /// Sets the inclusive lowest version.
    ///
    /// ```
    /// assert_eq!(annals_core::StreamRead::all().from_version(3).from_version, 3);
    /// ```
    pub fn from_version(mut self, version: Version) -> Self {
        self.from_version = version;
        self
    }

    /// Sets the inclusive highest version.
    ///
    /// ```
    /// assert_eq!(annals_core::StreamRead::all().to_version(3).to_version, Some(3));
    /// ```
    pub fn to_version(mut self, version: Version) -> Self {
        self.to_version = Some(version);
        self
    }

    /// Returns at most this many events.
    ///
    /// ```
    /// assert_eq!(annals_core::StreamRead::all().limit(3).limit, Some(3));
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// What a store knows about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Its current version (the version of its newest event).
    pub version: Version,
    /// The timestamp of its first event.
    pub first_timestamp: Timestamp,
    /// The position of its first event.
    pub first_position: Position,
    /// The position of its newest event.
    pub last_position: Position,
}

/// A listing of streams ordered by their first event (castore's `listAggregateIds`).
///
/// ```
/// let q = annals_core::ListStreams::default().aggregate("order").limit(10);
/// assert_eq!(q.limit, Some(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListStreams {
    /// Exact bounded context; `None` = any.
    pub context: Option<String>,
    /// Exact aggregate type; `None` = any.
    pub aggregate: Option<String>,
    /// Inclusive lower bound on the first event's timestamp.
    pub created_after: Option<Timestamp>,
    /// Inclusive upper bound on the first event's timestamp.
    pub created_before: Option<Timestamp>,
    /// Newest first.
    pub reverse: bool,
    /// At most this many streams.
    pub limit: Option<u64>,
    /// Continue strictly after the last stream of an earlier page.
    pub page_token: Option<StreamPageToken>,
}

impl ListStreams {
    /// Restricts to one bounded context.
    ///
    /// ```
    /// assert!(annals_core::ListStreams::default().context("c").context.is_some());
    /// ```
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Restricts to one aggregate type.
    ///
    /// ```
    /// assert!(annals_core::ListStreams::default().aggregate("a").aggregate.is_some());
    /// ```
    pub fn aggregate(mut self, aggregate: impl Into<String>) -> Self {
        self.aggregate = Some(aggregate.into());
        self
    }

    /// Returns at most this many streams.
    ///
    /// ```
    /// assert_eq!(annals_core::ListStreams::default().limit(2).limit, Some(2));
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether a stream's info is selected (before paging).
    ///
    /// ```
    /// use annals_core::{ListStreams, StreamId, StreamInfo, Timestamp};
    /// let info = StreamInfo { stream: StreamId::new("a"), version: 1,
    ///     first_timestamp: Timestamp::from_millis(5), first_position: 1, last_position: 1 };
    /// assert!(ListStreams::default().matches(&info));
    /// assert!(!ListStreams::default().aggregate("x").matches(&info));
    /// ```
    pub fn matches(&self, info: &StreamInfo) -> bool {
        self.context
            .as_ref()
            .is_none_or(|c| *c == info.stream.context)
            && self
                .aggregate
                .as_ref()
                .is_none_or(|a| *a == info.stream.aggregate)
            && self.created_after.is_none_or(|t| info.first_timestamp >= t)
            && self
                .created_before
                .is_none_or(|t| info.first_timestamp <= t)
    }
}

/// One page of a stream listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// The streams, in the requested order.
    pub streams: Vec<StreamInfo>,
    /// Present when more streams follow; pass it as `page_token` to continue.
    pub next_page_token: Option<StreamPageToken>,
}
