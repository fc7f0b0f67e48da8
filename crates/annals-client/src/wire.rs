//! The JSON shapes the client sends and receives (see the server's `wire` module).

use serde::{Deserialize, Serialize};

use annals_core::{
    ExpectedVersion, Json, Position, ProposedEvent, RecordedEvent, StreamId, StreamInfo,
    StreamSnapshot, Timestamp, Version,
};

/// Leading and trailing whitespace of a JSON text (a JSON body cannot carry it around a
/// raw value, so it travels beside it).
pub(crate) fn padding(json: &Json) -> Option<[&str; 2]> {
    let text = json.as_str()?;
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let lead = &text[..text.len() - text.trim_start_matches(ws).len()];
    let trail = &text[text.trim_end_matches(ws).len()..];
    (!lead.is_empty() || !trail.is_empty()).then_some([lead, trail])
}

/// Puts padding back around a received raw JSON value.
pub(crate) fn pad(json: Json, padding: Option<[String; 2]>) -> Json {
    match padding {
        Some([lead, trail]) => {
            let mut bytes = lead.into_bytes();
            bytes.extend_from_slice(json.as_bytes());
            bytes.extend_from_slice(trail.as_bytes());
            Json::from_raw(bytes)
        }
        None => json,
    }
}

/// A JSON body as sent: raw when it is valid JSON (with its padding beside it), as bytes
/// otherwise, so the server refuses it exactly as an in-process store would.
pub(crate) struct OutJson<'a> {
    pub(crate) raw: Option<&'a Json>,
    pub(crate) bytes: Option<&'a [u8]>,
    pub(crate) padding: Option<[&'a str; 2]>,
}

pub(crate) fn out_json(json: &Json) -> OutJson<'_> {
    if json.validate().is_ok() {
        OutJson {
            raw: Some(json),
            bytes: None,
            padding: padding(json),
        }
    } else {
        OutJson {
            raw: None,
            bytes: Some(json.as_bytes()),
            padding: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventIn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<&'a Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_bytes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload_padding: Option<[&'a str; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<&'a Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata_bytes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata_padding: Option<[&'a str; 2]>,
    /// Milliseconds since the epoch: exact for every timestamp, also outside RFC 3339's range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<Version>,
}

impl<'a> EventIn<'a> {
    pub(crate) fn new(e: &'a ProposedEvent) -> Self {
        let p = out_json(&e.payload);
        let m = out_json(&e.metadata);
        EventIn {
            id: e.id.as_deref(),
            event_type: &e.event_type,
            payload: p.raw,
            payload_bytes: p.bytes,
            payload_padding: p.padding,
            metadata: m.raw,
            metadata_bytes: m.bytes,
            metadata_padding: m.padding,
            timestamp: e.timestamp.map(Timestamp::as_millis),
            version: e.version,
        }
    }
}

/// The wire form of an expected version in the `writes` extension.
pub(crate) fn expected(e: ExpectedVersion) -> serde_json::Value {
    match e {
        ExpectedVersion::Any => "any".into(),
        ExpectedVersion::StreamExists => "exists".into(),
        ExpectedVersion::NoStream => "noStream".into(),
        ExpectedVersion::Exact(v) => v.into(),
    }
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WriteIn<'a> {
    pub(crate) aggregate_id: &'a str,
    pub(crate) aggregate: Option<&'a str>,
    pub(crate) context: Option<&'a str>,
    pub(crate) expected_version: serde_json::Value,
    pub(crate) events: Vec<EventIn<'a>>,
}

impl<'a> WriteIn<'a> {
    pub(crate) fn new(w: &'a annals_core::StreamWrite) -> Self {
        WriteIn {
            aggregate_id: &w.stream.id,
            aggregate: optional(&w.stream.aggregate),
            context: optional(&w.stream.context),
            expected_version: expected(w.expected),
            events: w.events.iter().map(EventIn::new).collect(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppendIn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) commit_id: Option<&'a str>,
    pub(crate) writes: Vec<WriteIn<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) overwrite: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<SecretChangeIn<'a>>,
}

impl<'a> AppendIn<'a> {
    pub(crate) fn new(r: &'a annals_core::AppendRequest) -> Self {
        AppendIn {
            commit_id: r.commit_id.as_deref(),
            writes: r.writes.iter().map(WriteIn::new).collect(),
            overwrite: r.overwrite,
            secret: r.secret.as_ref().map(SecretChangeIn::new),
        }
    }
}

/// The server's `secret` extension of an append body.
#[derive(Serialize)]
pub(crate) struct SecretChangeIn<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delete: bool,
}

impl<'a> SecretChangeIn<'a> {
    fn new(c: &'a annals_core::SecretChange) -> Self {
        match c {
            annals_core::SecretChange::Set { id, secret } => SecretChangeIn {
                id,
                secret: Some(secret),
                delete: false,
            },
            annals_core::SecretChange::Delete { id } => SecretChangeIn {
                id,
                secret: None,
                delete: true,
            },
        }
    }
}

/// A stored event as received.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventOut {
    position: Position,
    id: String,
    aggregate_id: String,
    aggregate: Option<String>,
    context: Option<String>,
    version: Version,
    #[serde(rename = "type")]
    event_type: Option<String>,
    timestamp: Timestamp,
    payload: Option<Json>,
    metadata: Option<Json>,
    commit_id: String,
    #[serde(default)]
    commit_sequence: u32,
    #[serde(default)]
    dispatched: bool,
    payload_padding: Option<[String; 2]>,
    metadata_padding: Option<[String; 2]>,
}

impl From<EventOut> for RecordedEvent {
    fn from(e: EventOut) -> Self {
        RecordedEvent {
            position: e.position,
            id: e.id.into(),
            stream: StreamId {
                context: e.context.unwrap_or_default(),
                aggregate: e.aggregate.unwrap_or_default(),
                id: e.aggregate_id,
            },
            version: e.version,
            event_type: e.event_type.unwrap_or_default().into(),
            timestamp: e.timestamp,
            payload: pad(e.payload.unwrap_or_default(), e.payload_padding),
            metadata: pad(e.metadata.unwrap_or_default(), e.metadata_padding),
            commit_id: e.commit_id.into(),
            commit_sequence: e.commit_sequence,
            dispatched: e.dispatched,
        }
    }
}

/// One event of an append answer given with `?echo=false`: what the store decided.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BriefOut {
    position: Position,
    id: String,
    version: Version,
    timestamp: Timestamp,
    commit_id: String,
    #[serde(default)]
    commit_sequence: u32,
    #[serde(default)]
    dispatched: bool,
}

/// An append answer given with `?echo=false`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppendBriefOut {
    commit_id: String,
    events: Vec<BriefOut>,
    head_position: Position,
    #[serde(default)]
    retried: bool,
    secret: Option<SecretOut>,
}

/// The append result of `request`, from the brief answer: the events are rebuilt from
/// what was sent (stream, type, payload, metadata, which the store keeps byte for byte)
/// and what the store decided.
pub(crate) fn brief_append_result(
    request: annals_core::AppendRequest,
    out: AppendBriefOut,
) -> annals_core::Result<annals_core::AppendResult> {
    if out.events.len() != request.event_count() {
        return Err(crate::error::connection(format!(
            "the append answer has {} events for {} sent",
            out.events.len(),
            request.event_count()
        )));
    }
    let sent = request.writes.into_iter().flat_map(|w| {
        let stream = w.stream;
        w.events.into_iter().map(move |e| (stream.clone(), e))
    });
    let events = sent
        .zip(out.events)
        .map(|((stream, e), b)| RecordedEvent {
            position: b.position,
            id: b.id.into(),
            stream,
            version: b.version,
            event_type: e.event_type.into(),
            timestamp: b.timestamp,
            payload: e.payload,
            metadata: e.metadata,
            commit_id: b.commit_id.into(),
            commit_sequence: b.commit_sequence,
            dispatched: b.dispatched,
        })
        .collect();
    Ok(annals_core::AppendResult {
        commit_id: out.commit_id.into(),
        events,
        head_position: out.head_position,
        retried: out.retried,
        secret: out.secret.map(|s| annals_core::Secret {
            idx: s.idx,
            id: s.id,
            secret: s.secret,
        }),
    })
}

pub(crate) fn recorded(events: Vec<EventOut>) -> Vec<RecordedEvent> {
    events.into_iter().map(RecordedEvent::from).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReadOut {
    pub(crate) events: Vec<EventOut>,
    pub(crate) head_position: Position,
    pub(crate) next_cursor: String,
    #[serde(default)]
    pub(crate) end: bool,
}

#[derive(Deserialize)]
pub(crate) struct EventsOut {
    pub(crate) events: Vec<EventOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamInfoOut {
    aggregate_id: String,
    aggregate: Option<String>,
    context: Option<String>,
    version: Version,
    first_timestamp: Timestamp,
    first_position: Position,
    last_position: Position,
}

impl From<StreamInfoOut> for StreamInfo {
    fn from(i: StreamInfoOut) -> Self {
        StreamInfo {
            stream: StreamId {
                context: i.context.unwrap_or_default(),
                aggregate: i.aggregate.unwrap_or_default(),
                id: i.aggregate_id,
            },
            version: i.version,
            first_timestamp: i.first_timestamp,
            first_position: i.first_position,
            last_position: i.last_position,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct OneStreamOut {
    pub(crate) stream: Option<StreamInfoOut>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamsOut {
    pub(crate) streams: Vec<StreamInfoOut>,
    pub(crate) next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeOut {
    pub(crate) event_count: u64,
    #[serde(default)]
    pub(crate) stream_count: u64,
    pub(crate) head_position: Position,
    pub(crate) last_event_timestamp: Option<Timestamp>,
    pub(crate) frozen: bool,
    pub(crate) secret_count: u64,
    pub(crate) set_secret_count: u64,
    pub(crate) deleted_secret_count: u64,
    pub(crate) bytes_on_disk: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotOut {
    id: String,
    aggregate_id: String,
    aggregate: Option<String>,
    context: Option<String>,
    stream_version: Version,
    snapshot_version: u32,
    timestamp: Timestamp,
    data: Option<Json>,
    data_padding: Option<[String; 2]>,
}

impl From<SnapshotOut> for StreamSnapshot {
    fn from(s: SnapshotOut) -> Self {
        StreamSnapshot {
            id: s.id,
            stream: StreamId {
                context: s.context.unwrap_or_default(),
                aggregate: s.aggregate.unwrap_or_default(),
                id: s.aggregate_id,
            },
            stream_version: s.stream_version,
            schema_version: s.snapshot_version,
            data: pad(s.data.unwrap_or_default(), s.data_padding),
            timestamp: s.timestamp,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotIn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
    pub(crate) aggregate_id: &'a str,
    pub(crate) aggregate: Option<&'a str>,
    pub(crate) context: Option<&'a str>,
    pub(crate) stream_version: Version,
    pub(crate) snapshot_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<&'a Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_padding: Option<[&'a str; 2]>,
}

impl<'a> SnapshotIn<'a> {
    pub(crate) fn new(s: &'a annals_core::NewStreamSnapshot) -> Self {
        SnapshotIn {
            id: s.id.as_deref(),
            aggregate_id: &s.stream.id,
            aggregate: optional(&s.stream.aggregate),
            context: optional(&s.stream.context),
            stream_version: s.stream_version,
            snapshot_version: s.schema_version,
            timestamp: s.timestamp.map(Timestamp::as_millis),
            data: Some(&s.data),
            data_padding: padding(&s.data),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct KeyedOut {
    pub(crate) key: String,
    pub(crate) content: String,
    pub(crate) timestamp: Timestamp,
}

impl From<KeyedOut> for annals_core::KeyedSnapshot {
    fn from(k: KeyedOut) -> Self {
        annals_core::KeyedSnapshot {
            key: k.key,
            content: k.content,
            timestamp: k.timestamp,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyedPageOut {
    pub(crate) snapshots: Vec<KeyedOut>,
    pub(crate) next_start_after: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct KeyedIn<'a> {
    pub(crate) key: &'a str,
    pub(crate) content: &'a str,
    /// Milliseconds since the epoch (exact for every timestamp).
    pub(crate) timestamp: i64,
}

#[derive(Deserialize)]
pub(crate) struct StreamSnapshotsOut {
    pub(crate) snapshots: Vec<SnapshotOut>,
}

#[derive(Deserialize)]
pub(crate) struct ImportedOut {
    pub(crate) imported: u64,
}

#[derive(Deserialize)]
pub(crate) struct SecretOut {
    pub(crate) idx: u64,
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) secret: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SecretsOut {
    pub(crate) secrets: Vec<SecretOut>,
}

#[derive(Deserialize)]
pub(crate) struct DeletedOut {
    pub(crate) deleted: u64,
}

/// The error body of API.md.
#[derive(Deserialize)]
pub(crate) struct ErrorOut {
    pub(crate) error: serde_json::Map<String, serde_json::Value>,
}
