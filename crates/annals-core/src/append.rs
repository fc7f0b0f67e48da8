//! Append planning, written once for every backend: input validation, idempotent-retry
//! detection, expectation checks, version, position, id and timestamp assignment.
//!
//! A backend gives the planner a view of its committed state ([`AppendState`]); the
//! planner answers with the exact events to store ([`AppendPlan::Write`]) or the events
//! an identical earlier append stored ([`AppendPlan::Retry`]). Backends that batch
//! several requests into one transaction (group commit) call the planner once per
//! request against a state that includes the earlier requests of the batch.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::limits::{check_document, check_name, check_text, MAX_EVENTS_PER_APPEND};
use crate::model::{Position, ProposedEvent, RecordedEvent, StreamId, Text, Timestamp, Version};
use crate::store::{AppendRequest, Secret, SecretChange};

/// The state the planner reads.
pub trait AppendState {
    /// The stream's current version (0 = no stream).
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version>;
    /// The stored event with this id, if any.
    fn event_by_id(&mut self, id: &str) -> Result<Option<RecordedEvent>>;
    /// The stored event of `stream` at `version`, if any (asked only for
    /// [`AppendRequest::overwrite`] requests).
    fn event_at_version(
        &mut self,
        stream: &StreamId,
        version: Version,
    ) -> Result<Option<RecordedEvent>>;
    /// The secret with this id, tombstones included (asked only for requests with a
    /// [`AppendRequest::secret`]).
    fn secret(&mut self, id: &str) -> Result<Option<Secret>>;
    /// The idx the next new secret gets (asked only for [`SecretChange::Set`]).
    fn next_secret_idx(&mut self) -> Result<u64>;
}

/// Where the store stands when a request is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendCursor {
    /// The newest position stored (0 = empty store).
    pub head_position: Position,
    /// The timestamp of the newest event (server timestamps never go below it).
    pub last_timestamp: Timestamp,
    /// Whether the store refuses writes.
    pub frozen: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// Store these events: new ones at positions `head_position + 1 ..` in order, and
    /// replacements (overwrite) at the positions they carry, which are at or below
    /// `head_position`. `events` is in request order.
    Write {
        /// The commit id.
        commit_id: Text,
        /// The events to store, in request order.
        events: Vec<RecordedEvent>,
        /// The stored events that `events` replace (overwrite), in the order of their
        /// replacements in `events`: a backend drops their id and type index entries
        /// before storing the replacement at the same position.
        replaced: Vec<RecordedEvent>,
        /// The secret to store with the events: a new one, or a tombstone for a
        /// deletion.
        secret: Option<Secret>,
    },
    /// An identical append was stored before: answer with its events, write nothing.
    Retry {
        /// The stored events, in request order.
        events: Vec<RecordedEvent>,
    },
}

/// Checks a request against the documented limits; the error names the field.
///
/// ```
/// use annals_core::{append::validate, AppendRequest, ExpectedVersion, Json, ProposedEvent, StreamId};
/// let bad = AppendRequest::to_stream(StreamId::new("a"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::from_raw("{oops"))]);
/// let err = validate(&bad).unwrap_err();
/// assert!(err.to_string().contains("writes[0].events[0].payload"));
/// ```
pub fn validate(request: &AppendRequest) -> Result<()> {
    if let Some(commit_id) = &request.commit_id {
        check_name("commit_id", commit_id, true)?;
    }
    match &request.secret {
        Some(SecretChange::Set { id, secret }) => {
            check_name("secret.id", id, true)?;
            check_text("secret.secret", secret)?;
        }
        Some(SecretChange::Delete { id }) => check_name("secret.id", id, true)?,
        None => {}
    }
    let count = request.event_count();
    if count > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(
            "events",
            format!("{count} events in one append; the limit is {MAX_EVENTS_PER_APPEND}"),
        ));
    }
    let mut streams = HashSet::new();
    // Where each id was first seen (write, event); field names are built only for errors.
    let mut ids: HashMap<&str, (usize, usize)> = HashMap::new();
    for (w, write) in request.writes.iter().enumerate() {
        let s = &write.stream;
        named(check_name("", &s.id, true), || {
            format!("writes[{w}].stream.id")
        })?;
        named(check_name("", &s.aggregate, false), || {
            format!("writes[{w}].stream.aggregate")
        })?;
        named(check_name("", &s.context, false), || {
            format!("writes[{w}].stream.context")
        })?;
        if !streams.insert(s) {
            return Err(Error::invalid(
                format!("writes[{w}].stream"),
                format!("stream {s} appears twice in one append"),
            ));
        }
        for (e, event) in write.events.iter().enumerate() {
            let field = |name: &str| format!("writes[{w}].events[{e}].{name}");
            if let Some(id) = &event.id {
                named(check_name("", id, true), || field("id"))?;
                if let Some((fw, fe)) = ids.insert(id, (w, e)) {
                    return Err(Error::invalid(
                        field("id"),
                        format!("repeats the id {id:?} of writes[{fw}].events[{fe}].id"),
                    ));
                }
            }
            named(check_name("", &event.event_type, false), || field("type"))?;
            named(check_document("", &event.payload), || field("payload"))
                .map_err(|e| in_stream(e, s))?;
            named(check_document("", &event.metadata), || field("metadata"))
                .map_err(|e| in_stream(e, s))?;
            if let Some(t) = event.timestamp {
                named(crate::limits::check_timestamp("", t), || field("timestamp"))?;
            }
            if event.version == Some(0) {
                return Err(Error::invalid(
                    field("version"),
                    "must be 1 or more (versions are 1-based)",
                ));
            }
        }
    }
    Ok(())
}

/// Gives the error of a check run with a placeholder field name the real field name,
/// built only when the check failed (validation runs on every append).
fn named(check: Result<()>, field: impl FnOnce() -> String) -> Result<()> {
    check.map_err(|err| match err {
        Error::InvalidInput { reason, .. } => Error::InvalidInput {
            field: field(),
            reason,
        },
        other => other,
    })
}

fn in_stream(err: Error, stream: &StreamId) -> Error {
    match err {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("{reason} (stream {stream})"),
        },
        other => other,
    }
}

fn same_content(stored: &RecordedEvent, stream: &StreamId, proposed: &ProposedEvent) -> bool {
    stored.stream == *stream
        && stored.event_type == proposed.event_type
        && stored.payload == proposed.payload
        && stored.metadata == proposed.metadata
        && proposed.version.is_none_or(|v| v == stored.version)
        && proposed.timestamp.is_none_or(|t| t == stored.timestamp)
}

/// Plans one validated request (see [`validate`]) against `state`.
///
/// `now` is the wall-clock time to assign to events without a timestamp (it is raised
/// to the previous event's timestamp so timestamps never decrease along positions).
///
/// Order of checks: a request with a secret change checks the freeze flag and then the
/// secret first (it is never a retry: an event id already stored is
/// [`Error::DuplicateEventId`], even with the same content); any other request is first
/// matched against stored events for an idempotent retry, then refused when frozen. The
/// events' own checks (expectations, versions) follow.
pub fn plan(
    state: &mut dyn AppendState,
    at: AppendCursor,
    request: AppendRequest,
    now: Timestamp,
) -> Result<AppendPlan> {
    let secret = match &request.secret {
        Some(change) => {
            if at.frozen {
                return Err(Error::Frozen);
            }
            let secret = plan_secret(state, change)?;
            // Never a retry: events that are already stored would be stored twice.
            if let Some(stored) = find_retry(state, &request)? {
                return Err(Error::DuplicateEventId {
                    id: stored[0].id.to_string(),
                });
            }
            Some(secret)
        }
        None => {
            if let Some(events) = find_retry(state, &request)? {
                return Ok(AppendPlan::Retry { events });
            }
            None
        }
    };
    let count = request.event_count();
    if at.frozen && count > 0 {
        return Err(Error::Frozen);
    }
    let commit_id: Text = request
        .commit_id
        .unwrap_or_else(|| uuid_text(uuid::Uuid::now_v7()))
        .into();
    let overwrite = request.overwrite;
    let mut events = Vec::with_capacity(count);
    let mut replaced = Vec::new();
    let mut position = at.head_position;
    let mut last_timestamp = at.last_timestamp;
    let mut sequence: u32 = 0;
    for write in request.writes {
        let current = state.stream_version(&write.stream)?;
        if !write.expected.accepts(current) {
            return Err(Error::WrongExpectedVersion {
                stream: write.stream,
                expected: write.expected,
                actual: current,
            });
        }
        let mut version = current;
        let mut last_replaced: Version = 0;
        for proposed in write.events {
            if let Some(v) = proposed.version.filter(|v| overwrite && *v <= current) {
                let old = match state.event_at_version(&write.stream, v)? {
                    Some(old) if v > last_replaced => old,
                    _ => {
                        return Err(Error::VersionConflict {
                            stream: write.stream,
                            version: v,
                            current,
                        })
                    }
                };
                last_replaced = v;
                events.push(RecordedEvent {
                    position: old.position,
                    id: proposed.id.map_or_else(|| old.id.clone(), Text::from),
                    stream: write.stream.clone(),
                    version: v,
                    event_type: proposed.event_type.into(),
                    timestamp: proposed.timestamp.unwrap_or(old.timestamp),
                    payload: proposed.payload,
                    metadata: proposed.metadata,
                    commit_id: commit_id.clone(),
                    commit_sequence: sequence,
                    dispatched: old.dispatched,
                });
                replaced.push(old);
                sequence += 1;
                continue;
            }
            version = match proposed.version {
                Some(v) if v <= version => {
                    return Err(Error::VersionConflict {
                        stream: write.stream,
                        version: v,
                        current: version,
                    })
                }
                Some(v) => v,
                None => version + 1,
            };
            position += 1;
            let timestamp = proposed
                .timestamp
                .unwrap_or_else(|| now.max(last_timestamp));
            last_timestamp = timestamp;
            events.push(RecordedEvent {
                position,
                id: proposed
                    .id
                    .unwrap_or_else(|| generated_event_id(position, now))
                    .into(),
                stream: write.stream.clone(),
                version,
                event_type: proposed.event_type.into(),
                timestamp,
                payload: proposed.payload,
                metadata: proposed.metadata,
                commit_id: commit_id.clone(),
                commit_sequence: sequence,
                dispatched: false,
            });
            sequence += 1;
        }
    }
    Ok(AppendPlan::Write {
        commit_id,
        events,
        replaced,
        secret,
    })
}

/// The secret a [`SecretChange`] stores: a new secret at the next idx, or the
/// tombstone of a deleted one.
fn plan_secret(state: &mut dyn AppendState, change: &SecretChange) -> Result<Secret> {
    match change {
        SecretChange::Set { id, secret } => match state.secret(id)? {
            Some(_) => Err(Error::SecretAlreadyExists { id: id.clone() }),
            None => Ok(Secret {
                idx: state.next_secret_idx()?,
                id: id.clone(),
                secret: Some(secret.clone()),
            }),
        },
        SecretChange::Delete { id } => match state.secret(id)? {
            Some(stored) if stored.secret.is_some() => Ok(Secret {
                secret: None,
                ..stored
            }),
            _ => Err(Error::not_found("secret", id)),
        },
    }
}

/// `Some(stored events)` when the request is an exact retry of a stored append;
/// an error when it reuses a stored id for something else.
fn find_retry(
    state: &mut dyn AppendState,
    request: &AppendRequest,
) -> Result<Option<Vec<RecordedEvent>>> {
    let mut found = Vec::new();
    let mut unknown = false;
    // Under overwrite: found events the request names by their own version, i.e.
    // identical replacements rather than a replay of an earlier append.
    let mut replacements = 0;
    for write in &request.writes {
        for proposed in &write.events {
            let Some(id) = &proposed.id else {
                unknown = true;
                continue;
            };
            match state.event_by_id(id)? {
                Some(stored) if same_content(&stored, &write.stream, proposed) => {
                    if request.overwrite && proposed.version == Some(stored.version) {
                        replacements += 1;
                    }
                    found.push(stored)
                }
                // Under overwrite, the id of the very event being replaced is the
                // replacement's own, not a duplicate.
                Some(stored)
                    if request.overwrite
                        && stored.stream == write.stream
                        && proposed.version == Some(stored.version) =>
                {
                    unknown = true
                }
                Some(_) => return Err(Error::DuplicateEventId { id: id.clone() }),
                None => unknown = true,
            }
        }
    }
    match (found.is_empty(), unknown) {
        (true, _) => Ok(None),
        (false, false) => Ok(Some(found)),
        (false, true) if replacements == found.len() => Ok(None),
        (false, true) => Err(Error::DuplicateEventId {
            id: found[0].id.to_string(),
        }),
    }
}

/// The id Annals gives an event appended without one: a UUID v7 (time-ordered) whose
/// 62 low random bits carry the event's position, so a backend can find the event by
/// such an id without an index entry (see [`position_of_generated_id`]). Positions are
/// unique in a store, so generated ids are too.
///
/// ```
/// use annals_core::append::{generated_event_id, position_of_generated_id};
/// use annals_core::Timestamp;
/// let id = generated_event_id(42, Timestamp::from_millis(1_700_000_000_000));
/// assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
/// assert_eq!(position_of_generated_id(&id), Some(42));
/// assert_eq!(position_of_generated_id("order-1"), None);
/// ```
pub fn generated_event_id(position: Position, now: Timestamp) -> String {
    let mut random = [0u8; 10];
    let noise = next_noise();
    random[..2].copy_from_slice(&noise.to_be_bytes()[..2]);
    let low = position & ((1 << 62) - 1);
    random[2..].copy_from_slice(&low.to_be_bytes());
    // Builder sets the version and variant bits; the variant takes the top two bits of
    // random[2], which are always zero here because positions stay below 2^62.
    let uuid = uuid::Builder::from_unix_timestamp_millis(now.as_millis().max(0) as u64, &random)
        .into_uuid();
    uuid_text(uuid)
}

/// The position a [`generated_event_id`] carries, if `id` has that form. Callers must
/// still check that the event at that position has this id: a caller-supplied id can
/// look the same.
pub fn position_of_generated_id(id: &str) -> Option<Position> {
    if id.len() != 36 {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    if uuid.get_version_num() != 7 || uuid.to_string() != id {
        return None;
    }
    let b = uuid.as_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&b[8..16]);
    Some(u64::from_be_bytes(low) & ((1 << 62) - 1))
}

/// The hyphenated lower-case form, without going through `fmt` (hot on the append path).
fn uuid_text(uuid: uuid::Uuid) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid.hyphenated().encode_lower(&mut buf).to_owned()
}

/// Cheap per-process noise for the spare bits of generated ids (not security relevant:
/// uniqueness comes from the position).
fn next_noise() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}
