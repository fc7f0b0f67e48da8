//! Incremental import: stage events without versions, then append the new ones
//! atomically after the store's newest event (reSolve's `beginIncrementalImport`,
//! `pushIncrementalImport`, `commitIncrementalImport`, `rollbackIncrementalImport`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use annals_core::limits::{check_name, MAX_EVENTS_PER_APPEND};
use annals_core::rules::check_stream;
use annals_core::{
    Error, EventStore, ImportBatch, ImportOutcome, Json, OnConflict, RecordedEvent, Result,
    StreamId, StreamRead, Text, Timestamp, Version,
};

/// How many times a commit re-reads the store and retries when another writer moved the
/// head between its read and its write.
const COMMIT_ATTEMPTS: usize = 5;

/// What makes a staged event identical to a stored one: (type, timestamp, payload).
type EventKey = (Text, Timestamp, Json);

/// An event to import incrementally: no version (the commit gives each stream its next
/// versions) and no position.
///
/// ```
/// use annals_core::{Json, StreamId, Timestamp};
/// use annals_maintenance::IncomingEvent;
/// let e = IncomingEvent::new(StreamId::new("acc-1"), "Opened", Json::null())
///     .with_timestamp(Timestamp::from_millis(5))
///     .with_id("evt-1");
/// assert_eq!(e.timestamp, Some(Timestamp::from_millis(5)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingEvent {
    /// The event id; a UUID v7 when `None`.
    pub id: Option<String>,
    /// The stream.
    pub stream: StreamId,
    /// The event type.
    pub event_type: String,
    /// When it happened; the staging time when `None`.
    pub timestamp: Option<Timestamp>,
    /// The payload.
    pub payload: Json,
    /// The metadata.
    pub metadata: Json,
}

impl IncomingEvent {
    /// An event of `event_type` in `stream`.
    ///
    /// ```
    /// let e = annals_maintenance::IncomingEvent::new("a".into(), "T", annals_core::Json::null());
    /// assert!(e.id.is_none() && e.timestamp.is_none());
    /// ```
    pub fn new(stream: StreamId, event_type: impl Into<String>, payload: Json) -> Self {
        IncomingEvent {
            id: None,
            stream,
            event_type: event_type.into(),
            timestamp: None,
            payload,
            metadata: Json::null(),
        }
    }

    /// Sets the timestamp.
    ///
    /// ```
    /// let t = annals_core::Timestamp::from_millis(1);
    /// let e = annals_maintenance::IncomingEvent::new("a".into(), "T", annals_core::Json::null()).with_timestamp(t);
    /// assert_eq!(e.timestamp, Some(t));
    /// ```
    pub fn with_timestamp(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the id.
    ///
    /// ```
    /// let e = annals_maintenance::IncomingEvent::new("a".into(), "T", annals_core::Json::null()).with_id("x");
    /// assert_eq!(e.id.as_deref(), Some("x"));
    /// ```
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the metadata.
    ///
    /// ```
    /// let e = annals_maintenance::IncomingEvent::new("a".into(), "T", annals_core::Json::null())
    ///     .with_metadata(annals_core::Json::from_raw("{}"));
    /// assert_eq!(e.metadata.as_str(), Some("{}"));
    /// ```
    pub fn with_metadata(mut self, metadata: Json) -> Self {
        self.metadata = metadata;
        self
    }
}

/// One open incremental import.
///
/// The staged events are kept **in memory, in this value** (not in the store): they are
/// lost if the process stops before [`IncrementalImport::commit`], and a large import
/// needs memory in proportion. [`IncrementalImport::commit`]:
///
/// 1. drops staged events identical to a stored one (same stream, type, timestamp and
///    payload bytes);
/// 2. refuses with [`Error::ImportConflict`] naming the staged index `i` if any remaining
///    event is older than the store's newest event (nothing is written);
/// 3. orders the rest by (timestamp, staging order), gives each stream its next
///    versions, and stores them all in ONE [`EventStore::import_events`] call with the
///    head it read as `expected_head` (one commit id, UUID v7) — atomic; when another
///    writer moved the head meanwhile it re-reads and retries (5 attempts).
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, Json, MemoryStore, StreamId, StreamRead, Timestamp};
/// use annals_maintenance::{IncomingEvent, IncrementalImport};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let at = |ms| Timestamp::from_millis(ms);
/// let mut import = IncrementalImport::begin(&store);
/// import.push(vec![IncomingEvent::new("a".into(), "T", Json::from_raw("2")).with_timestamp(at(20))])?;
/// import.push(vec![IncomingEvent::new("a".into(), "T", Json::from_raw("1")).with_timestamp(at(10))])?;
/// let outcome = import.commit().await?;
/// assert_eq!(outcome.imported, 2);
/// let events = store.read_stream(&StreamId::new("a"), StreamRead::all()).await?;
/// assert_eq!(events[0].payload.as_str(), Some("1")); // ordered by timestamp
/// assert_eq!(events[1].version, 2);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub struct IncrementalImport {
    store: Arc<dyn EventStore>,
    staged: Vec<IncomingEvent>,
}

impl IncrementalImport {
    /// Opens an import on `store` with nothing staged.
    ///
    /// ```
    /// # let store: std::sync::Arc<dyn annals_core::EventStore> = std::sync::Arc::new(annals_core::MemoryStore::new());
    /// let import = annals_maintenance::IncrementalImport::begin(&store);
    /// assert_eq!(import.staged_count(), 0);
    /// ```
    pub fn begin(store: &Arc<dyn EventStore>) -> Self {
        IncrementalImport {
            store: Arc::clone(store),
            staged: Vec::new(),
        }
    }

    /// How many events are staged.
    ///
    /// ```
    /// # let store: std::sync::Arc<dyn annals_core::EventStore> = std::sync::Arc::new(annals_core::MemoryStore::new());
    /// let mut import = annals_maintenance::IncrementalImport::begin(&store);
    /// import.push(vec![annals_maintenance::IncomingEvent::new("a".into(), "T", annals_core::Json::null())]).unwrap();
    /// assert_eq!(import.staged_count(), 1);
    /// ```
    pub fn staged_count(&self) -> usize {
        self.staged.len()
    }

    /// Stages events (after the ones staged before). A missing timestamp becomes the
    /// staging time. Checks names here so a bad event is refused at the push that
    /// carries it, naming `events[i].<field>` of that push; payloads are checked at commit.
    /// One import stages at most [`MAX_EVENTS_PER_APPEND`] events in all: its commit is
    /// one atomic store write, and a push past that is refused (nothing of it staged)
    /// instead of failing the commit later.
    ///
    /// ```
    /// # let store: std::sync::Arc<dyn annals_core::EventStore> = std::sync::Arc::new(annals_core::MemoryStore::new());
    /// let mut import = annals_maintenance::IncrementalImport::begin(&store);
    /// let bad = annals_maintenance::IncomingEvent::new("".into(), "T", annals_core::Json::null());
    /// assert!(import.push(vec![bad]).is_err());
    /// assert_eq!(import.staged_count(), 0);
    /// ```
    pub fn push(&mut self, events: Vec<IncomingEvent>) -> Result<()> {
        let total = self.staged.len().saturating_add(events.len());
        if total > MAX_EVENTS_PER_APPEND {
            return Err(Error::invalid(
                "events",
                format!(
                    "{total} events staged in one import; one commit stores at most {MAX_EVENTS_PER_APPEND}"
                ),
            ));
        }
        for (i, e) in events.iter().enumerate() {
            check_stream(&e.stream).map_err(|err| prefix(err, &format!("events[{i}].")))?;
            check_name(&format!("events[{i}].type"), &e.event_type, false)?;
            if let Some(t) = e.timestamp {
                annals_core::limits::check_timestamp(&format!("events[{i}].timestamp"), t)?;
            }
            if let Some(id) = &e.id {
                check_name(&format!("events[{i}].id"), id, true)?;
            }
        }
        let now = Timestamp::now();
        self.staged.extend(events.into_iter().map(|mut e| {
            e.timestamp.get_or_insert(now);
            e
        }));
        Ok(())
    }

    /// Drops every staged event and closes the import.
    ///
    /// ```
    /// # let store: std::sync::Arc<dyn annals_core::EventStore> = std::sync::Arc::new(annals_core::MemoryStore::new());
    /// annals_maintenance::IncrementalImport::begin(&store).rollback();
    /// ```
    pub fn rollback(self) {}

    /// Appends the new staged events atomically (see the type's documentation) and
    /// closes the import; on any error nothing is written.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use annals_core::{EventStore, ErrorKind, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId, Timestamp};
    /// use annals_maintenance::{IncomingEvent, IncrementalImport};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    /// store.append_to_stream(&StreamId::new("a"), ExpectedVersion::Any, vec![
    ///     ProposedEvent::new("T", Json::null()).with_timestamp(Timestamp::from_millis(100))]).await?;
    /// let mut import = IncrementalImport::begin(&store);
    /// import.push(vec![IncomingEvent::new("b".into(), "T", Json::null()).with_timestamp(Timestamp::from_millis(50))])?;
    /// let err = import.commit().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::ImportConflict);
    /// assert!(err.to_string().contains("older than the newest stored event"));
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn commit(self) -> Result<ImportOutcome> {
        let mut last = None;
        for _ in 0..COMMIT_ATTEMPTS {
            match self.try_commit().await {
                Err(e @ Error::WrongExpectedHead { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(Error::WrongExpectedHead {
            expected: 0,
            actual: 0,
        }))
    }

    async fn try_commit(&self) -> Result<ImportOutcome> {
        let store = &*self.store;
        let newest = store.latest_event(Default::default()).await?;
        let head = newest.as_ref().map_or(0, |e| e.position);
        let newest_timestamp = newest.as_ref().map(|e| e.timestamp);

        // What each stream holds: its version and its events' (type, timestamp, payload).
        let mut streams: HashMap<&StreamId, (Version, HashSet<EventKey>)> = HashMap::new();
        for e in &self.staged {
            if streams.contains_key(&e.stream) {
                continue;
            }
            let stored = store.read_stream(&e.stream, StreamRead::all()).await?;
            let version = stored.last().map_or(0, |e| e.version);
            let known = stored
                .into_iter()
                .filter(|s| s.position <= head)
                .map(|s| (s.event_type, s.timestamp, s.payload))
                .collect();
            streams.insert(&e.stream, (version, known));
        }

        let mut fresh: Vec<(usize, &IncomingEvent, Timestamp)> = Vec::new();
        let mut skipped = 0u64;
        for (i, e) in self.staged.iter().enumerate() {
            let timestamp = e.timestamp.unwrap_or_default();
            let key = (
                Text::from(e.event_type.as_str()),
                timestamp,
                e.payload.clone(),
            );
            if streams
                .get(&e.stream)
                .is_some_and(|(_, known)| known.contains(&key))
            {
                skipped += 1;
                continue;
            }
            if let Some(newest) = newest_timestamp {
                if timestamp < newest {
                    return Err(Error::ImportConflict {
                        index: i,
                        reason: format!(
                            "its timestamp {timestamp} is older than the newest stored event \
                             ({newest}); an incremental import only appends after it"
                        ),
                    });
                }
            }
            fresh.push((i, e, timestamp));
        }
        fresh.sort_by_key(|(i, _, t)| (*t, *i));

        let commit_id: Text = uuid::Uuid::now_v7().to_string().into();
        let mut events = Vec::with_capacity(fresh.len());
        let staged_index: Vec<usize> = fresh.iter().map(|(i, _, _)| *i).collect();
        for (sequence, (_, e, timestamp)) in fresh.into_iter().enumerate() {
            let version = match streams.get_mut(&e.stream) {
                Some((version, _)) => {
                    *version += 1;
                    *version
                }
                None => 1,
            };
            events.push(RecordedEvent {
                position: 0,
                id: e
                    .id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
                    .into(),
                stream: e.stream.clone(),
                version,
                event_type: e.event_type.as_str().into(),
                timestamp,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                commit_id: commit_id.clone(),
                commit_sequence: u32::try_from(sequence).map_err(|_| {
                    Error::invalid("staged", "more than 4,294,967,295 events in one import")
                })?,
                dispatched: false,
            });
        }
        if events.is_empty() {
            return Ok(ImportOutcome {
                imported: 0,
                skipped,
                head_position: head,
            });
        }
        let mut outcome = store
            .import_events(ImportBatch {
                events,
                on_conflict: OnConflict::Error,
                expected_head: Some(head),
            })
            .await
            .map_err(|e| staged_field(e, &staged_index))?;
        outcome.skipped += skipped;
        Ok(outcome)
    }
}

/// Renames `events[k].field` of an import error (k in commit order) to `staged[i].field`
/// (i in staging order), which is what the caller knows.
fn staged_field(error: Error, staged_index: &[usize]) -> Error {
    match error {
        Error::InvalidInput { field, reason } => {
            let renamed = field
                .strip_prefix("events[")
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(k, tail)| {
                    let k: usize = k.parse().ok()?;
                    Some(format!("staged[{}]{tail}", staged_index.get(k)?))
                });
            Error::InvalidInput {
                field: renamed.unwrap_or(field),
                reason,
            }
        }
        other => other,
    }
}

fn prefix(error: Error, prefix: &str) -> Error {
    match error {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: format!("{prefix}{field}"),
            reason,
        },
        other => other,
    }
}

/// Stages `events` and commits them in one call (reSolve's `incrementalImport`); on any
/// error nothing is written.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, Json, MemoryStore, Timestamp};
/// use annals_maintenance::{incremental_import, IncomingEvent};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let e = IncomingEvent::new("a".into(), "T", Json::from_raw("1")).with_timestamp(Timestamp::from_millis(1));
/// assert_eq!(incremental_import(&store, vec![e.clone()]).await?.imported, 1);
/// // The same event again is recognised as stored:
/// let again = incremental_import(&store, vec![e]).await?;
/// assert_eq!((again.imported, again.skipped), (0, 1));
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn incremental_import(
    store: &Arc<dyn EventStore>,
    events: Vec<IncomingEvent>,
) -> Result<ImportOutcome> {
    let mut import = IncrementalImport::begin(store);
    import.push(events)?;
    import.commit().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use annals_core::MemoryStore;

    #[test]
    fn a_push_past_the_commit_limit_is_refused_and_stages_nothing() {
        let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
        let mut import = IncrementalImport::begin(&store);
        let event = || IncomingEvent::new("a".into(), "T", Json::null());
        import
            .push((0..MAX_EVENTS_PER_APPEND - 1).map(|_| event()).collect())
            .unwrap();
        let err = import.push(vec![event(), event()]).unwrap_err();
        assert!(err.to_string().contains("events"), "{err}");
        assert_eq!(import.staged_count(), MAX_EVENTS_PER_APPEND - 1);
        import.push(vec![event()]).unwrap();
        assert_eq!(import.staged_count(), MAX_EVENTS_PER_APPEND);
    }
}
