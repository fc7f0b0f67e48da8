//! The JSON shapes of requests and responses that `annals-core` does not serialise itself,
//! and the parsing of query strings.

use std::fmt::Display;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Value};

use annals_core::{
    AppendRequest, AppendResult, ExpectedVersion, Json, KeyedSnapshot, ProposedEvent,
    RecordedEvent, Secret, SecretChange, StoreDescription, StreamId, StreamInfo, StreamSnapshot,
    StreamWrite, Timestamp,
};

use crate::error::{optional, ApiError};

/// The most events one append may carry: the store's own limit, so the HTTP client
/// accepts what every backend accepts (the body size limit still applies).
pub(crate) const MAX_EVENTS_PER_APPEND: usize = annals_core::limits::MAX_EVENTS_PER_APPEND;

/// The most values a repeated filter parameter (`aggregateId`, `type`, `id`) may carry.
pub(crate) const MAX_FILTER_VALUES: usize = 1_000;

/// The query string as name/value pairs (names may repeat).
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    /// Parses a raw query string.
    pub(crate) fn parse_query(query: Option<&str>) -> Result<Self, ApiError> {
        let uri = format!("/?{}", query.unwrap_or_default());
        let uri: axum::http::Uri = uri
            .parse()
            .map_err(|e| ApiError::invalid("query", format!("{e}")))?;
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::invalid("query", e.body_text()))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let values: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect();
        if values.len() > MAX_FILTER_VALUES {
            return Err(ApiError::LimitExceeded {
                what: name.to_owned(),
                limit: "maxFilterValues",
                max: MAX_FILTER_VALUES,
            });
        }
        Ok(values)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    pub(crate) fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: Display,
    {
        self.get(name)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| ApiError::invalid(name, format!("{v:?}: {e}")))
            })
            .transpose()
    }

    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(ApiError::invalid(
                    name,
                    format!("{other:?} is not true or false"),
                )),
            })
            .transpose()
    }

    pub(crate) fn timestamp(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        self.get(name)
            .map(|v| {
                Timestamp::parse_rfc3339(v)
                    .or_else(|_| v.parse::<i64>().map(Timestamp::from_millis))
                    .map_err(|_| {
                        ApiError::invalid(name, format!("{v:?} is not an RFC 3339 timestamp"))
                    })
            })
            .transpose()
    }

    /// The stream named by `aggregateId`, `aggregate`, `context` (absent = null).
    pub(crate) fn stream(&self) -> StreamId {
        StreamId {
            context: self.string("context").unwrap_or_default(),
            aggregate: self.string("aggregate").unwrap_or_default(),
            id: self.string("aggregateId").unwrap_or_default(),
        }
    }
}

/// Parses a JSON body, naming the problem as `body`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", e.to_string()))
}

/// An expected version on the wire.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ExpectedWire {
    Number(u64),
    Word(String),
}

impl ExpectedWire {
    fn parse(&self, field: &str, zero_is_no_stream: bool) -> Result<ExpectedVersion, ApiError> {
        match self {
            ExpectedWire::Number(0) if zero_is_no_stream => Ok(ExpectedVersion::NoStream),
            ExpectedWire::Number(n) => Ok(ExpectedVersion::Exact(*n)),
            ExpectedWire::Word(w) => match w.as_str() {
                "any" => Ok(ExpectedVersion::Any),
                "exists" => Ok(ExpectedVersion::StreamExists),
                "noStream" => Ok(ExpectedVersion::NoStream),
                other => Err(ApiError::invalid(
                    field,
                    format!("{other:?} is not a version, \"any\", \"exists\" or \"noStream\""),
                )),
            },
        }
    }
}

/// One event of an append body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventBody {
    id: Option<String>,
    aggregate_id: Option<String>,
    aggregate: Option<String>,
    context: Option<String>,
    version: Option<u64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    timestamp: Option<Timestamp>,
    payload: Option<Json>,
    /// Extension: a payload that is not JSON, as its bytes (so the store can refuse it
    /// with the same error as in-process).
    payload_bytes: Option<Vec<u8>>,
    metadata: Option<Json>,
    /// Extension: metadata that is not JSON, as its bytes.
    metadata_bytes: Option<Vec<u8>>,
    /// Extension: whitespace around the payload (see [`padding`]).
    payload_padding: Option<[String; 2]>,
    /// Extension: whitespace around the metadata.
    metadata_padding: Option<[String; 2]>,
}

impl EventBody {
    fn stream(&self) -> Option<StreamId> {
        self.aggregate_id.as_ref().map(|id| StreamId {
            context: self.context.clone().unwrap_or_default(),
            aggregate: self.aggregate.clone().unwrap_or_default(),
            id: id.clone(),
        })
    }

    fn into_proposed(self) -> ProposedEvent {
        let json = |j: Option<Json>, b: Option<Vec<u8>>, p: Option<[String; 2]>| match (b, j) {
            (Some(bytes), _) => Json::from_raw(bytes),
            (None, Some(j)) => pad(j, p),
            (None, None) => Json::null(),
        };
        ProposedEvent {
            id: self.id,
            event_type: self.event_type.unwrap_or_default(),
            payload: json(self.payload, self.payload_bytes, self.payload_padding),
            metadata: json(self.metadata, self.metadata_bytes, self.metadata_padding),
            timestamp: self.timestamp,
            version: self.version,
        }
    }
}

/// One stream's part of an append (extension: `writes` keeps the trait's structure).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WriteBody {
    aggregate_id: String,
    aggregate: Option<String>,
    context: Option<String>,
    expected_version: Option<ExpectedWire>,
    events: Vec<EventBody>,
}

/// The `secret` extension of an append body: `{"id", "secret"}` sets a secret,
/// `{"id", "delete": true}` deletes one, in the same commit as the events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretWire {
    id: String,
    secret: Option<String>,
    #[serde(default)]
    delete: bool,
}

impl SecretWire {
    fn into_change(self) -> Result<SecretChange, ApiError> {
        match (self.secret, self.delete) {
            (Some(secret), false) => Ok(SecretChange::Set {
                id: self.id,
                secret,
            }),
            (None, true) => Ok(SecretChange::Delete { id: self.id }),
            (Some(_), true) => Err(ApiError::invalid(
                "secret.delete",
                "give either secret (to set) or delete: true, not both",
            )),
            (None, false) => Err(ApiError::invalid(
                "secret.secret",
                "is required unless delete is true",
            )),
        }
    }
}

/// The append body of API.md, plus the `writes` and `secret` extensions.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppendBody {
    commit_id: Option<String>,
    expected_version: Option<ExpectedWire>,
    #[serde(default)]
    overwrite: bool,
    events: Option<Vec<EventBody>>,
    writes: Option<Vec<WriteBody>>,
    secret: Option<SecretWire>,
}

/// The body of `PUT /secrets/{id}`: the secret, and optionally the events appended
/// atomically with it (as in an append body).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretBody {
    pub(crate) secret: String,
    commit_id: Option<String>,
    expected_version: Option<ExpectedWire>,
    #[serde(default)]
    overwrite: bool,
    events: Option<Vec<EventBody>>,
    writes: Option<Vec<WriteBody>>,
}

impl SecretBody {
    /// Whether the body carries events to append with the secret.
    pub(crate) fn has_events(&self) -> bool {
        self.events.as_ref().is_some_and(|e| !e.is_empty())
            || self
                .writes
                .as_ref()
                .is_some_and(|w| w.iter().any(|w| !w.events.is_empty()))
    }

    /// The append that stores the secret `id` with the events.
    pub(crate) fn into_request(self, id: String) -> Result<AppendRequest, ApiError> {
        let mut request = AppendBody {
            commit_id: self.commit_id,
            expected_version: self.expected_version,
            overwrite: self.overwrite,
            events: self.events,
            writes: self.writes,
            secret: None,
        }
        .into_request()?;
        request.secret = Some(SecretChange::Set {
            id,
            secret: self.secret,
        });
        Ok(request)
    }
}

impl AppendBody {
    /// Whether the body carries events.
    pub(crate) fn has_events(&self) -> bool {
        self.events.as_ref().is_some_and(|e| !e.is_empty())
            || self
                .writes
                .as_ref()
                .is_some_and(|w| w.iter().any(|w| !w.events.is_empty()))
    }

    /// The append request of `DELETE /secrets/{id}`: the events with the deletion.
    pub(crate) fn into_deletion(mut self, id: String) -> Result<AppendRequest, ApiError> {
        if self.secret.take().is_some() {
            return Err(ApiError::invalid(
                "secret",
                "the secret to delete is the one of the path",
            ));
        }
        let mut request = self.into_request()?;
        request.secret = Some(SecretChange::Delete { id });
        Ok(request)
    }

    /// The append request this body describes.
    pub(crate) fn into_request(self) -> Result<AppendRequest, ApiError> {
        let mut request = AppendRequest {
            commit_id: self.commit_id,
            overwrite: self.overwrite,
            secret: self.secret.map(SecretWire::into_change).transpose()?,
            ..AppendRequest::default()
        };
        match (self.events, self.writes) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "writes",
                    "give either events or writes, not both",
                ))
            }
            (None, Some(writes)) => {
                if self.expected_version.is_some() {
                    return Err(ApiError::invalid(
                        "expectedVersion",
                        "with writes, each write carries its own expectedVersion",
                    ));
                }
                for (i, w) in writes.into_iter().enumerate() {
                    let expected = match &w.expected_version {
                        Some(e) => e.parse(&format!("writes[{i}].expectedVersion"), false)?,
                        None => ExpectedVersion::Any,
                    };
                    request.writes.push(StreamWrite {
                        stream: StreamId {
                            context: w.context.unwrap_or_default(),
                            aggregate: w.aggregate.unwrap_or_default(),
                            id: w.aggregate_id,
                        },
                        expected,
                        events: w.events.into_iter().map(EventBody::into_proposed).collect(),
                    });
                }
            }
            (events, None) => {
                for (i, event) in events.unwrap_or_default().into_iter().enumerate() {
                    let stream = event.stream().ok_or_else(|| {
                        ApiError::invalid(format!("events[{i}].aggregateId"), "is required")
                    })?;
                    let proposed = event.into_proposed();
                    match request.writes.iter_mut().find(|w| w.stream == stream) {
                        Some(w) => w.events.push(proposed),
                        None => request.writes.push(StreamWrite {
                            stream,
                            expected: ExpectedVersion::Any,
                            events: vec![proposed],
                        }),
                    }
                }
                if let Some(e) = &self.expected_version {
                    let expected = e.parse("expectedVersion", true)?;
                    match request.writes.as_mut_slice() {
                        [] => {}
                        [only] => only.expected = expected,
                        _ => {
                            return Err(ApiError::invalid(
                                "expectedVersion",
                                "only allowed when every event targets one stream",
                            ))
                        }
                    }
                }
            }
        }
        if request.event_count() > MAX_EVENTS_PER_APPEND {
            return Err(ApiError::LimitExceeded {
                what: "events".into(),
                limit: "maxEventsPerAppend",
                max: MAX_EVENTS_PER_APPEND,
            });
        }
        Ok(request)
    }
}

/// The leading and trailing whitespace of a JSON text, which a JSON body cannot carry
/// around a raw value (extension `payloadPadding`/`metadataPadding`/`dataPadding`: the
/// client restores the stored bytes exactly).
pub(crate) fn padding(json: &Json) -> Option<[&str; 2]> {
    let text = json.as_str()?;
    let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    let lead = &text[..text.len() - text.trim_start_matches(ws).len()];
    let trail = &text[text.trim_end_matches(ws).len()..];
    (!lead.is_empty() || !trail.is_empty()).then_some([lead, trail])
}

/// Puts padding back around a received raw JSON value.
fn pad(json: Json, padding: Option<[String; 2]>) -> Json {
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

/// A stored event as API.md shows it, plus the padding extension.
pub(crate) struct EventOut<'a>(pub(crate) &'a RecordedEvent);

impl Serialize for EventOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let opt = |s: &str| (!s.is_empty()).then_some(s.to_owned());
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("position", &e.position)?;
        m.serialize_entry("id", e.id.as_str())?;
        m.serialize_entry("aggregateId", &e.stream.id)?;
        m.serialize_entry("aggregate", &opt(&e.stream.aggregate))?;
        m.serialize_entry("context", &opt(&e.stream.context))?;
        m.serialize_entry("version", &e.version)?;
        m.serialize_entry("type", e.event_type.as_str())?;
        m.serialize_entry("timestamp", &e.timestamp)?;
        m.serialize_entry("payload", &e.payload)?;
        m.serialize_entry("metadata", &e.metadata)?;
        m.serialize_entry("commitId", e.commit_id.as_str())?;
        m.serialize_entry("commitSequence", &e.commit_sequence)?;
        m.serialize_entry("dispatched", &e.dispatched)?;
        if let Some(p) = padding(&e.payload) {
            m.serialize_entry("payloadPadding", &p)?;
        }
        if let Some(p) = padding(&e.metadata) {
            m.serialize_entry("metadataPadding", &p)?;
        }
        m.end()
    }
}

/// Events for a response body.
pub(crate) fn events(events: &[RecordedEvent]) -> Vec<EventOut<'_>> {
    events.iter().map(EventOut).collect()
}

/// The append response (with the `secret` extension when the append changed one).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppendOut<'a> {
    pub(crate) commit_id: &'a str,
    pub(crate) events: AppendedEvents<'a>,
    pub(crate) head_position: u64,
    pub(crate) retried: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<Value>,
}

impl<'a> AppendOut<'a> {
    /// The answer to an append; `echo = false` (the `?echo=false` extension) leaves out
    /// what the client sent itself (stream, type, payload, metadata).
    pub(crate) fn new(result: &'a AppendResult, echo: bool) -> Self {
        AppendOut {
            commit_id: &result.commit_id,
            events: if echo {
                AppendedEvents::Full(events(&result.events))
            } else {
                AppendedEvents::Brief(result.events.iter().map(EventBrief).collect())
            },
            head_position: result.head_position,
            retried: result.retried,
            secret: result.secret.as_ref().map(secret),
        }
    }
}

/// The events of an append answer, whole or brief.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum AppendedEvents<'a> {
    Full(Vec<EventOut<'a>>),
    Brief(Vec<EventBrief<'a>>),
}

/// What the store decided about an appended event: position, id, version, timestamp,
/// commit id and sequence, dispatch mark (`?echo=false`).
pub(crate) struct EventBrief<'a>(pub(crate) &'a RecordedEvent);

impl Serialize for EventBrief<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = serializer.serialize_map(Some(7))?;
        m.serialize_entry("position", &e.position)?;
        m.serialize_entry("id", e.id.as_str())?;
        m.serialize_entry("version", &e.version)?;
        m.serialize_entry("timestamp", &e.timestamp)?;
        m.serialize_entry("commitId", e.commit_id.as_str())?;
        m.serialize_entry("commitSequence", &e.commit_sequence)?;
        m.serialize_entry("dispatched", &e.dispatched)?;
        m.end()
    }
}

/// `GET /events` (with the `nextCursor` and `end` extensions).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReadOut<'a> {
    pub(crate) events: Vec<EventOut<'a>>,
    pub(crate) head_position: u64,
    pub(crate) next_cursor: String,
    pub(crate) end: bool,
}

/// `GET /streams/events` (extension).
#[derive(Serialize)]
pub(crate) struct EventsOut<'a> {
    pub(crate) events: Vec<EventOut<'a>>,
}

/// A stream snapshot.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotOut<'a> {
    id: &'a str,
    aggregate_id: &'a str,
    aggregate: Option<&'a str>,
    context: Option<&'a str>,
    stream_version: u64,
    snapshot_version: u32,
    timestamp: Timestamp,
    data: &'a Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_padding: Option<[&'a str; 2]>,
}

/// A stream snapshot for a response body.
pub(crate) fn stream_snapshot(s: &StreamSnapshot) -> SnapshotOut<'_> {
    SnapshotOut {
        id: &s.id,
        aggregate_id: &s.stream.id,
        aggregate: (!s.stream.aggregate.is_empty()).then_some(s.stream.aggregate.as_str()),
        context: (!s.stream.context.is_empty()).then_some(s.stream.context.as_str()),
        stream_version: s.stream_version,
        snapshot_version: s.schema_version,
        timestamp: s.timestamp,
        data: &s.data,
        data_padding: padding(&s.data),
    }
}

/// `GET /v1/stores/{store}`.
pub(crate) fn description(name: &str, d: &StoreDescription) -> Value {
    json!({
        "store": name,
        "eventCount": d.event_count,
        "streamCount": d.stream_count,
        "headPosition": d.head_position,
        "lastEventTimestamp": d.last_event_timestamp,
        "frozen": d.frozen,
        "secretCount": d.secret_count,
        "setSecretCount": d.set_secret_count,
        "deletedSecretCount": d.deleted_secret_count,
        "bytesOnDisk": d.bytes_on_disk,
    })
}

/// A stream of a listing.
pub(crate) fn stream_info(i: &StreamInfo) -> Value {
    json!({
        "aggregateId": i.stream.id,
        "aggregate": optional(&i.stream.aggregate),
        "context": optional(&i.stream.context),
        "version": i.version,
        "firstTimestamp": i.first_timestamp,
        "firstPosition": i.first_position,
        "lastPosition": i.last_position,
    })
}

/// The body of `POST /snapshots`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SnapshotBody {
    pub(crate) id: Option<String>,
    pub(crate) aggregate_id: String,
    pub(crate) aggregate: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) stream_version: u64,
    pub(crate) snapshot_version: Option<u32>,
    pub(crate) timestamp: Option<Timestamp>,
    pub(crate) data: Option<Json>,
    pub(crate) data_padding: Option<[String; 2]>,
}

impl SnapshotBody {
    /// The data with its padding restored.
    pub(crate) fn data(&mut self) -> Json {
        pad(
            self.data.take().unwrap_or_default(),
            self.data_padding.take(),
        )
    }
}

/// A keyed snapshot.
pub(crate) fn keyed_snapshot(s: &KeyedSnapshot) -> Value {
    json!({"key": s.key, "content": s.content, "timestamp": s.timestamp})
}

/// The body of `PUT /snapshot-keys/{key}`.
#[derive(Deserialize)]
pub(crate) struct KeyedSnapshotBody {
    pub(crate) content: String,
}

/// A secret.
pub(crate) fn secret(s: &Secret) -> Value {
    json!({"idx": s.idx, "id": s.id, "secret": s.secret})
}

/// A keyed snapshot as `POST /snapshot-keys/import` takes it (timestamp kept).
#[derive(Deserialize)]
pub(crate) struct KeyedSnapshotIn {
    key: String,
    content: String,
    timestamp: Timestamp,
}

/// The body of `POST /snapshot-keys/import`.
#[derive(Deserialize)]
pub(crate) struct KeyedSnapshotsIn {
    snapshots: Vec<KeyedSnapshotIn>,
}

impl KeyedSnapshotsIn {
    /// The snapshots to import.
    pub(crate) fn into_snapshots(self) -> Vec<KeyedSnapshot> {
        self.snapshots
            .into_iter()
            .map(|s| KeyedSnapshot {
                key: s.key,
                content: s.content,
                timestamp: s.timestamp,
            })
            .collect()
    }
}

/// The body of `POST /events/dispatched`.
#[derive(Deserialize)]
pub(crate) struct PositionsIn {
    pub(crate) positions: Vec<u64>,
}
