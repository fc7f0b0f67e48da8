//! The rules every backend applies the same way: argument checks beyond the size
//! limits, secret selection and stream-listing pages. Kept here, not in a backend, so a
//! new backend reuses them instead of re-deriving them.

use crate::error::{Error, Result};
use crate::limits::{check_json, check_name, check_text};
use crate::model::{StreamId, Timestamp};
use crate::query::{ListStreams, StreamInfo, StreamPage, StreamRead};
use crate::store::{KeyedSnapshot, NewStreamSnapshot, Secret, SecretQuery, StreamSnapshot};
use crate::StreamPageToken;

/// Checks a stream id's fields against the limits.
///
/// ```
/// assert!(annals_core::rules::check_stream(&annals_core::StreamId::new("")).is_err());
/// ```
pub fn check_stream(stream: &StreamId) -> Result<()> {
    check_name("stream.id", &stream.id, true)?;
    check_name("stream.aggregate", &stream.aggregate, false)?;
    check_name("stream.context", &stream.context, false)
}

/// Checks a stream read's arguments.
///
/// ```
/// use annals_core::{rules::check_stream_read, StreamId, StreamRead};
/// assert!(check_stream_read(&StreamId::new("s"), &StreamRead::all().from_version(0)).is_err());
/// ```
pub fn check_stream_read(stream: &StreamId, read: &StreamRead) -> Result<()> {
    check_stream(stream)?;
    if read.from_version == 0 {
        return Err(Error::invalid(
            "from_version",
            "must be 1 or more (versions are 1-based)",
        ));
    }
    if read.to_version == Some(0) {
        return Err(Error::invalid(
            "to_version",
            "must be 1 or more (versions are 1-based)",
        ));
    }
    Ok(())
}

/// Validates a new stream snapshot and fills in its id and timestamp.
///
/// ```
/// use annals_core::{rules::check_stream_snapshot, Json, NewStreamSnapshot, StreamId};
/// let s = check_stream_snapshot(NewStreamSnapshot::new(StreamId::new("a"), 1, Json::null())).unwrap();
/// assert!(!s.id.is_empty());
/// assert!(check_stream_snapshot(NewStreamSnapshot::new(StreamId::new("a"), 0, Json::null())).is_err());
/// ```
pub fn check_stream_snapshot(snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
    check_stream(&snapshot.stream)?;
    if let Some(id) = &snapshot.id {
        check_name("id", id, true)?;
    }
    if snapshot.stream_version == 0 {
        return Err(Error::invalid(
            "stream_version",
            "must be 1 or more (versions are 1-based)",
        ));
    }
    check_json("data", snapshot.data.as_bytes())?;
    if let Some(t) = snapshot.timestamp {
        crate::limits::check_timestamp("timestamp", t)?;
    }
    Ok(StreamSnapshot {
        id: snapshot
            .id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        stream: snapshot.stream,
        stream_version: snapshot.stream_version,
        schema_version: snapshot.schema_version,
        data: snapshot.data,
        timestamp: snapshot.timestamp.unwrap_or_else(Timestamp::now),
    })
}

/// Validates keyed snapshots to import: every key and content within the limits, no key
/// twice (the error names the index).
///
/// ```
/// use annals_core::{rules::check_keyed_snapshots, KeyedSnapshot, Timestamp};
/// let s = |k: &str| KeyedSnapshot { key: k.into(), content: "{}".into(), timestamp: Timestamp::from_millis(0) };
/// assert!(check_keyed_snapshots(&[s("a"), s("b")]).is_ok());
/// let err = check_keyed_snapshots(&[s("a"), s("a")]).unwrap_err();
/// assert!(err.to_string().contains("snapshots[1].key"));
/// ```
pub fn check_keyed_snapshots(snapshots: &[KeyedSnapshot]) -> Result<()> {
    let mut keys = std::collections::HashSet::new();
    for (i, s) in snapshots.iter().enumerate() {
        check_name(&format!("snapshots[{i}].key"), &s.key, true)?;
        check_text(&format!("snapshots[{i}].content"), &s.content)?;
        crate::limits::check_timestamp(&format!("snapshots[{i}].timestamp"), s.timestamp)?;
        if !keys.insert(s.key.as_str()) {
            return Err(Error::invalid(
                format!("snapshots[{i}].key"),
                format!("the key {:?} appears twice", s.key),
            ));
        }
    }
    Ok(())
}

/// Whether a secret is selected by the query's id list and tombstone flag.
///
/// ```
/// use annals_core::{rules::secret_matches, Secret, SecretQuery};
/// let s = Secret { idx: 0, id: "a".into(), secret: None };
/// assert!(!secret_matches(&SecretQuery::default(), &s));
/// ```
pub fn secret_matches(query: &SecretQuery, secret: &Secret) -> bool {
    (query.include_deleted || secret.secret.is_some())
        && (query.ids.is_empty() || query.ids.contains(&secret.id))
}

/// Applies `page_token` and `limit` to streams that are already filtered and sorted in
/// the query's order.
///
/// ```
/// use annals_core::{rules::page_streams, ListStreams};
/// let page = page_streams(std::iter::empty(), &ListStreams::default());
/// assert!(page.streams.is_empty() && page.next_page_token.is_none());
/// ```
pub fn page_streams(sorted: impl Iterator<Item = StreamInfo>, query: &ListStreams) -> StreamPage {
    let after = |i: &StreamInfo| match query.page_token {
        None => true,
        Some(t) => {
            let key = (i.first_timestamp, i.first_position);
            let tok = (t.first_timestamp, t.first_position);
            if query.reverse {
                key < tok
            } else {
                key > tok
            }
        }
    };
    let limit = query.limit.unwrap_or(u64::MAX).min(usize::MAX as u64) as usize;
    let mut streams = Vec::new();
    let mut more = false;
    for info in sorted.filter(|i| after(i)) {
        if streams.len() == limit {
            more = true;
            break;
        }
        streams.push(info);
    }
    let next_page_token = if more {
        streams
            .last()
            .map(|i| StreamPageToken::new(i.first_timestamp, i.first_position))
    } else {
        None
    };
    StreamPage {
        streams,
        next_page_token,
    }
}
