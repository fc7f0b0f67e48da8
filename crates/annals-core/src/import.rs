//! Import planning, written once for every backend: validation of imported events and
//! secrets, conflict handling ([`OnConflict`]), the back-fill refusal and the
//! expected-head check.
//!
//! The rules, identical for every backend (the conformance suite pins them):
//! - Each field is validated as an append validates it; errors are
//!   [`Error::InvalidInput`] naming `events[i].<field>`.
//! - An event's version must be above its stream's current version (counting earlier
//!   events of the same batch); gaps are allowed. When `(stream, version)` is already
//!   stored: [`OnConflict::Skip`] skips the event, [`OnConflict::Error`] refuses the batch
//!   with [`Error::VersionConflict`]. A version at or below the current one that is not
//!   stored (back-filling below a stream's head) is refused with `InvalidInput` on
//!   `events[i].version`: readers and snapshots that already saw the stream would miss it.
//! - An id already stored: `Skip` skips the event, `Error` refuses with
//!   [`Error::DuplicateEventId`]. Duplicate ids or `(stream, version)` pairs inside one
//!   batch are `InvalidInput`.
//! - Positions are assigned `head + 1, head + 2, …` in batch order; every other field is
//!   kept as given (timestamps may go backwards).
//! - Secrets: an id already present or an idx already used is skipped (`Skip`) or refused
//!   with [`Error::SecretAlreadyExists`] (`Error`); the next idx afterwards is the greatest
//!   idx + 1.
//!
//! ```
//! use annals_core::import::{plan_events, validate_events, ImportState};
//! use annals_core::{ImportBatch, Json, RecordedEvent, Result, StreamId, Timestamp, Version};
//! struct Empty;
//! impl ImportState for Empty {
//!     fn stream_version(&mut self, _: &StreamId) -> Result<Version> { Ok(0) }
//!     fn has_version(&mut self, _: &StreamId, _: Version) -> Result<bool> { Ok(false) }
//!     fn has_id(&mut self, _: &str) -> Result<bool> { Ok(false) }
//! }
//! let event = RecordedEvent {
//!     position: 99, id: "e-1".into(), stream: StreamId::new("a"), version: 4,
//!     event_type: "T".into(), timestamp: Timestamp::from_millis(5), payload: Json::null(),
//!     metadata: Json::null(), commit_id: "c-1".into(), commit_sequence: 0, dispatched: true,
//! };
//! let batch = ImportBatch { events: vec![event], ..ImportBatch::default() };
//! validate_events(&batch)?;
//! let plan = plan_events(&mut Empty, 10, batch)?;
//! assert_eq!(plan.events[0].position, 11);
//! assert_eq!(plan.events[0].version, 4);
//! assert_eq!(plan.skipped, 0);
//! # Ok::<(), annals_core::Error>(())
//! ```

use std::collections::{HashMap, HashSet};

/// The maps of import planning: foldhash is several times cheaper than SipHash on short
/// keys like ids and stream ids, and its per-process random seed still keeps crafted
/// inputs from colliding on purpose.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::error::{Error, Result};
use crate::limits::{check_document, check_name, check_text, MAX_EVENTS_PER_APPEND};
use crate::model::{Position, RecordedEvent, StreamId, Version};
use crate::store::{ImportBatch, OnConflict, Secret, SecretImport};

/// The committed state the event-import planner reads.
pub trait ImportState {
    /// The stream's current version (0 = no stream).
    fn stream_version(&mut self, stream: &StreamId) -> Result<Version>;
    /// Whether the stream holds an event with this version.
    fn has_version(&mut self, stream: &StreamId, version: Version) -> Result<bool>;
    /// Whether an event with this id is stored.
    fn has_id(&mut self, id: &str) -> Result<bool>;
}

/// The events an import stores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportPlan {
    /// The events to store, with their new positions (`head + 1 ..`, in order).
    pub events: Vec<RecordedEvent>,
    /// How many events of the batch were already stored and skipped.
    pub skipped: u64,
}

/// Checks every field of a batch and the batch-internal uniqueness of ids and
/// `(stream, version)`; the error names `events[i].<field>`.
///
/// ```
/// use annals_core::{import::validate_events, ImportBatch};
/// assert!(validate_events(&ImportBatch::default()).is_ok());
/// ```
pub fn validate_events(batch: &ImportBatch) -> Result<()> {
    let count = batch.events.len();
    if count > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(
            "events",
            format!("{count} events in one import batch; the limit is {MAX_EVENTS_PER_APPEND}"),
        ));
    }
    let mut ids: Map<&[u8], usize> = Map::with_capacity_and_hasher(count, Default::default());
    let mut versions: Map<(&StreamId, Version), usize> =
        Map::with_capacity_and_hasher(count, Default::default());
    for (i, e) in batch.events.iter().enumerate() {
        validate_event(i, e)?;
        let field = |name: &str| format!("events[{i}].{name}");
        if let Some(first) = ids.insert(e.id.as_bytes(), i) {
            return Err(Error::invalid(
                field("id"),
                format!("repeats the id {:?} of events[{first}]", &*e.id),
            ));
        }
        if let Some(first) = versions.insert((&e.stream, e.version), i) {
            return Err(Error::invalid(
                field("version"),
                format!(
                    "repeats version {} of stream {} given by events[{first}]",
                    e.version, e.stream
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the fields of the event at index `i` of a batch as an append checks them; the
/// error names `events[i].<field>`. (Uniqueness inside the batch is [`validate_events`]'s.)
///
/// ```
/// use annals_core::{import::validate_event, Json, RecordedEvent, StreamId, Timestamp};
/// let e = RecordedEvent {
///     position: 0, id: "e".into(), stream: StreamId::new("s"), version: 1,
///     event_type: "T".into(), timestamp: Timestamp::from_millis(0),
///     payload: Json::from_raw("{oops"), metadata: Json::null(),
///     commit_id: "c".into(), commit_sequence: 0, dispatched: false,
/// };
/// let err = validate_event(4, &e).unwrap_err();
/// assert!(err.to_string().contains("events[4].payload"));
/// ```
pub fn validate_event(i: usize, e: &RecordedEvent) -> Result<()> {
    // Checked under the bare field names; the `events[i].` path is only built for an
    // error (formatting it for every event was a tenth of an import's decoding time).
    validate_fields(e).map_err(|error| match error {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: format!("events[{i}].{field}"),
            reason,
        },
        other => other,
    })
}

fn validate_fields(e: &RecordedEvent) -> Result<()> {
    check_name("id", &e.id, true)?;
    check_name("stream.id", &e.stream.id, true)?;
    check_name("stream.aggregate", &e.stream.aggregate, false)?;
    check_name("stream.context", &e.stream.context, false)?;
    check_name("type", &e.event_type, false)?;
    check_name("commit_id", &e.commit_id, true)?;
    crate::limits::check_timestamp("timestamp", e.timestamp)?;
    check_document("payload", &e.payload)?;
    check_document("metadata", &e.metadata)?;
    if e.version == 0 {
        return Err(Error::invalid(
            "version",
            "must be 1 or more (versions are 1-based)",
        ));
    }
    Ok(())
}

/// Plans a validated batch (see [`validate_events`]) against `state`, whose head position
/// is `head`. Checks `expected_head` first. Importing is allowed while the store is
/// frozen, so there is no freeze check here.
pub fn plan_events(
    state: &mut dyn ImportState,
    head: Position,
    batch: ImportBatch,
) -> Result<ImportPlan> {
    if let Some(expected) = batch.expected_head {
        if expected != head {
            return Err(Error::WrongExpectedHead {
                expected,
                actual: head,
            });
        }
    }
    let skip = batch.on_conflict == OnConflict::Skip;
    // Decided on the borrowed events first, so no stream id is cloned for the map; the
    // kept events then move into the plan.
    let mut current: Map<&StreamId, Version> = Map::default();
    let mut kept = Vec::with_capacity(batch.events.len());
    let mut skipped = 0;
    for (i, event) in batch.events.iter().enumerate() {
        let version = match current.get(&event.stream) {
            Some(v) => *v,
            None => state.stream_version(&event.stream)?,
        };
        let keep = if event.version <= version {
            // Versions of this batch are distinct (validated), so a version at or below the
            // current one is either stored already or a gap below the stream's head.
            if !state.has_version(&event.stream, event.version)? {
                return Err(Error::invalid(
                    format!("events[{i}].version"),
                    format!(
                        "version {} of stream {} is not stored but below the stream's current \
                         version {version}; importing cannot back-fill a stream",
                        event.version, event.stream
                    ),
                ));
            }
            if !skip {
                return Err(Error::VersionConflict {
                    stream: event.stream.clone(),
                    version: event.version,
                    current: version,
                });
            }
            false
        } else if state.has_id(&event.id)? {
            if !skip {
                return Err(Error::DuplicateEventId {
                    id: event.id.to_string(),
                });
            }
            false
        } else {
            true
        };
        current.insert(&event.stream, if keep { event.version } else { version });
        kept.push(keep);
        skipped += u64::from(!keep);
    }
    let mut position = head;
    let events = batch
        .events
        .into_iter()
        .zip(kept)
        .filter(|(_, keep)| *keep)
        .map(|(mut event, _)| {
            position += 1;
            event.position = position;
            event
        })
        .collect();
    Ok(ImportPlan { events, skipped })
}

/// The committed state the secret-import planner reads.
pub trait SecretImportState {
    /// Whether a secret (or tombstone) with this id is stored.
    fn has_secret_id(&mut self, id: &str) -> Result<bool>;
    /// Whether a secret (or tombstone) with this idx is stored.
    fn has_secret_idx(&mut self, idx: u64) -> Result<bool>;
}

/// The secrets an import stores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretImportPlan {
    /// The secrets to store, each with its idx.
    pub secrets: Vec<Secret>,
    /// How many were skipped.
    pub skipped: u64,
    /// The next idx after the import: greatest idx + 1 (or the previous next idx).
    pub next_idx: u64,
}

/// Checks every secret's fields and the batch-internal uniqueness of ids and idx; the
/// error names `secrets[i].<field>`.
///
/// ```
/// use annals_core::{import::validate_secrets, SecretImport};
/// let s = |id: &str| SecretImport { idx: None, id: id.into(), secret: Some("k".into()) };
/// assert!(validate_secrets(&[s("a"), s("b")]).is_ok());
/// let err = validate_secrets(&[s("a"), s("a")]).unwrap_err();
/// assert!(err.to_string().contains("secrets[1].id"));
/// ```
pub fn validate_secrets(secrets: &[SecretImport]) -> Result<()> {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(secrets.len());
    let mut idxs: HashMap<u64, usize> = HashMap::with_capacity(secrets.len());
    for (i, s) in secrets.iter().enumerate() {
        validate_secret(i, s)?;
        if let Some(first) = ids.insert(&s.id, i) {
            return Err(Error::invalid(
                format!("secrets[{i}].id"),
                format!("repeats the id {:?} of secrets[{first}]", s.id),
            ));
        }
        if let Some(idx) = s.idx {
            if let Some(first) = idxs.insert(idx, i) {
                return Err(Error::invalid(
                    format!("secrets[{i}].idx"),
                    format!("repeats idx {idx} of secrets[{first}]"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks the fields of the secret at index `i` of a batch; the error names
/// `secrets[i].<field>`. (Uniqueness inside the batch is [`validate_secrets`]'s.)
///
/// ```
/// use annals_core::{import::validate_secret, SecretImport};
/// let s = SecretImport { idx: Some(u64::MAX), id: "a".into(), secret: None };
/// assert!(validate_secret(2, &s).unwrap_err().to_string().contains("secrets[2].idx"));
/// ```
pub fn validate_secret(i: usize, s: &SecretImport) -> Result<()> {
    check_name(&format!("secrets[{i}].id"), &s.id, true)?;
    if let Some(value) = &s.secret {
        check_text(&format!("secrets[{i}].secret"), value)?;
    }
    if s.idx == Some(u64::MAX) {
        return Err(Error::invalid(
            format!("secrets[{i}].idx"),
            "must be below 18446744073709551615",
        ));
    }
    Ok(())
}

/// Plans a validated secret import (see [`validate_secrets`]); `next_idx` is the store's
/// next idx. A secret without idx gets the next free one (counting earlier secrets of
/// the batch).
///
/// ```
/// use annals_core::import::{plan_secrets, SecretImportState};
/// use annals_core::{OnConflict, Result, SecretImport};
/// struct Empty;
/// impl SecretImportState for Empty {
///     fn has_secret_id(&mut self, _: &str) -> Result<bool> { Ok(false) }
///     fn has_secret_idx(&mut self, _: u64) -> Result<bool> { Ok(false) }
/// }
/// let secrets = vec![
///     SecretImport { idx: Some(7), id: "a".into(), secret: None },
///     SecretImport { idx: None, id: "b".into(), secret: Some("k".into()) },
/// ];
/// let plan = plan_secrets(&mut Empty, 0, secrets, OnConflict::Error)?;
/// assert_eq!(plan.secrets[1].idx, 8);
/// assert_eq!(plan.next_idx, 9);
/// # Ok::<(), annals_core::Error>(())
/// ```
pub fn plan_secrets(
    state: &mut dyn SecretImportState,
    next_idx: u64,
    secrets: Vec<SecretImport>,
    on_conflict: OnConflict,
) -> Result<SecretImportPlan> {
    let mut plan = SecretImportPlan {
        secrets: Vec::with_capacity(secrets.len()),
        skipped: 0,
        next_idx,
    };
    let mut taken: HashSet<u64> = HashSet::new();
    for (i, s) in secrets.into_iter().enumerate() {
        let idx = s.idx.unwrap_or(plan.next_idx);
        if s.idx.is_none() && taken.contains(&idx) {
            return Err(Error::invalid(
                format!("secrets[{i}].idx"),
                format!("the next idx {idx} is already given to another secret of the batch"),
            ));
        }
        if state.has_secret_id(&s.id)? || state.has_secret_idx(idx)? {
            if on_conflict == OnConflict::Skip {
                plan.skipped += 1;
                continue;
            }
            return Err(Error::SecretAlreadyExists { id: s.id });
        }
        if s.idx.is_some() && taken.contains(&idx) {
            return Err(Error::invalid(
                format!("secrets[{i}].idx"),
                format!("idx {idx} is already given to another secret of the batch"),
            ));
        }
        taken.insert(idx);
        plan.next_idx = plan.next_idx.max(idx + 1);
        plan.secrets.push(Secret {
            idx,
            id: s.id,
            secret: s.secret,
        });
    }
    Ok(plan)
}
