//! The JSON shapes of requests and responses that `annals-core` does not serialise itself,
//! and the parsing of query strings.
//!
//! Each shape derives its OpenAPI schema (`ToSchema`) next to its serde derive, so the
//! document describes what serde reads and writes; the query parameter groups at the end
//! are described for the document only, as [`Params`] parses queries by hand.

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{KnownFormat, Ref, RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use annals_core::{
    AppendRequest, AppendResult, ExpectedVersion, Json, KeyedSnapshot, Position, ProposedEvent,
    RecordedEvent, Secret, SecretChange, StoreDescription, StreamId, StreamInfo, StreamSnapshot,
    StreamWrite, Timestamp,
};

use crate::error::ApiError;
use crate::openapi::{ByteArray, JsonDocument, Padding, TimestampIn, TimestampOut};

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

/// Written by hand: serde takes any string, [`ExpectedWire::parse`] only three of them.
impl PartialSchema for ExpectedWire {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0))
                    .description(Some(
                        "The stream's current version must be this one; in an append \
                         body's `expectedVersion`, `0` means the stream must not exist.",
                    )),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["any", "exists", "noStream"]))
                    .description(Some(
                        "`any`: no check (the default); `exists`: the stream must exist; \
                         `noStream`: it must not.",
                    )),
            )
            .description(Some(
                "What the stream's version must be for the append to happen (409 \
                 `version_conflict` otherwise).",
            ))
            .into()
    }
}

impl ToSchema for ExpectedWire {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ExpectedVersion")
    }
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

/// One event to append (API.md "Append"). Names (`id`, `aggregateId`, `aggregate`,
/// `context`, `type`) are at most 256 bytes of UTF-8 without NUL.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ProposedEvent)]
pub(crate) struct EventBody {
    /// The event's id, unique in the store; a server UUID when absent.
    #[schema(min_length = 1, max_length = 256)]
    id: Option<String>,
    /// The stream's id: required in `events`; in `writes[].events` the write names the
    /// stream and this is ignored.
    #[schema(max_length = 256)]
    aggregate_id: Option<String>,
    /// The stream's aggregate type (absent or `null`: none, distinct from every string).
    #[schema(max_length = 256)]
    aggregate: Option<String>,
    /// The stream's context (absent or `null`: none, distinct from every string).
    #[schema(max_length = 256)]
    context: Option<String>,
    /// The event's version in its stream, above the stream's current one (gaps are
    /// allowed); absent: the next one.
    #[schema(minimum = 1)]
    version: Option<u64>,
    /// The event type (absent or `null`: `""`).
    #[serde(rename = "type")]
    #[schema(max_length = 256)]
    event_type: Option<String>,
    /// The event's time, stored as given; absent: the server's time (never below the
    /// newest event's).
    #[schema(value_type = Option<TimestampIn>)]
    timestamp: Option<Timestamp>,
    /// The payload (absent: `null`).
    #[schema(value_type = JsonDocument, required = false)]
    payload: Option<Json>,
    /// Extension: a payload that is not JSON, as its bytes (so the store can refuse it
    /// with the same error as in-process); replaces `payload`.
    #[schema(value_type = Option<ByteArray>)]
    payload_bytes: Option<Vec<u8>>,
    /// The metadata (absent: `null`).
    #[schema(value_type = JsonDocument, required = false)]
    metadata: Option<Json>,
    /// Extension: metadata that is not JSON, as its bytes; replaces `metadata`.
    #[schema(value_type = Option<ByteArray>)]
    metadata_bytes: Option<Vec<u8>>,
    /// Extension: whitespace around the payload.
    #[schema(value_type = Option<Padding>)]
    payload_padding: Option<[String; 2]>,
    /// Extension: whitespace around the metadata.
    #[schema(value_type = Option<Padding>)]
    metadata_padding: Option<[String; 2]>,
}

/// The events of an append body's `events`: each names its stream, so `aggregateId` is
/// required there (it is not in `writes[].events`, where the write names the stream).
fn events_naming_streams() -> Schema {
    let names_stream = ObjectBuilder::new().required("aggregateId").property(
        "aggregateId",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(256)),
    );
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            AllOfBuilder::new()
                .item(Ref::from_schema_name(EventBody::name()))
                .item(names_stream),
        )
        .max_items(Some(MAX_EVENTS_PER_APPEND))
        .description(Some(
            "The events, in order; they may target several streams. More than 10000 \
             events are refused (413 `limit_exceeded`, `maxEventsPerAppend`).",
        ))
        .into()
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
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StreamWrite)]
pub(crate) struct WriteBody {
    /// The stream's id.
    #[schema(min_length = 1, max_length = 256)]
    aggregate_id: String,
    /// The stream's aggregate type (absent or `null`: none).
    #[schema(max_length = 256)]
    aggregate: Option<String>,
    /// The stream's context (absent or `null`: none).
    #[schema(max_length = 256)]
    context: Option<String>,
    /// The expectation on this stream (`0` is the exact version 0 here).
    expected_version: Option<ExpectedWire>,
    /// The stream's events, in order (their `aggregateId`, `aggregate` and `context`
    /// are ignored).
    events: Vec<EventBody>,
}

/// The `secret` extension of an append body: `{"id", "secret"}` sets a secret,
/// `{"id", "delete": true}` deletes one, in the same commit as the events.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SecretChange)]
pub(crate) struct SecretWire {
    /// The secret's id: new (and never used before) to set, existing to delete.
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    /// The secret to store; give either this or `delete: true`.
    secret: Option<String>,
    /// `true` deletes the secret `id` (404 `secret_not_found` when unknown or already
    /// deleted).
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

/// The append body of API.md, plus the `writes` and `secret` extensions. Give either
/// `events` or `writes`, not both.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AppendRequest)]
pub(crate) struct AppendBody {
    /// Shared by the events of this append; a server UUID when absent.
    #[schema(min_length = 1, max_length = 256)]
    commit_id: Option<String>,
    /// Only when every event targets one stream (and not with `writes`).
    expected_version: Option<ExpectedWire>,
    /// `true`: an event at an existing (stream, version) replaces it in place (it keeps
    /// its position).
    #[serde(default)]
    overwrite: bool,
    #[schema(schema_with = events_naming_streams)]
    events: Option<Vec<EventBody>>,
    /// Extension: the events by stream, each stream with its own expectation.
    writes: Option<Vec<WriteBody>>,
    /// Extension: a secret set or deleted in the same commit.
    secret: Option<SecretWire>,
}

/// The body of `PUT /secrets/{id}`: the secret, and optionally the events appended
/// atomically with it (as in an append body).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SetSecretRequest)]
pub(crate) struct SecretBody {
    /// The secret (at most 16 MiB).
    pub(crate) secret: String,
    /// As in an append body.
    #[schema(min_length = 1, max_length = 256)]
    commit_id: Option<String>,
    /// As in an append body.
    expected_version: Option<ExpectedWire>,
    /// As in an append body.
    #[serde(default)]
    overwrite: bool,
    #[schema(schema_with = events_naming_streams)]
    events: Option<Vec<EventBody>>,
    /// As in an append body.
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
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StoredEvent)]
pub(crate) struct EventOut<'a> {
    /// Server-assigned, 1-based, dense, per store, in commit order.
    position: u64,
    /// The client's id (unique in the store) or a server UUID.
    id: &'a str,
    /// The stream's id.
    aggregate_id: &'a str,
    /// The stream's aggregate type, `null` for none.
    #[schema(required = true)]
    aggregate: Option<&'a str>,
    /// The stream's context, `null` for none.
    #[schema(required = true)]
    context: Option<&'a str>,
    /// 1-based version inside the stream.
    #[schema(minimum = 1)]
    version: u64,
    /// The event type, possibly empty.
    #[serde(rename = "type")]
    event_type: &'a str,
    #[schema(value_type = TimestampOut)]
    timestamp: Timestamp,
    /// The payload, byte for byte as appended.
    #[schema(value_type = JsonDocument)]
    payload: &'a Json,
    /// The metadata, byte for byte as appended.
    #[schema(value_type = JsonDocument)]
    metadata: &'a Json,
    /// Shared by the events of one append.
    commit_id: &'a str,
    /// The event's index inside its append.
    commit_sequence: u32,
    /// Whether the event was marked dispatched.
    dispatched: bool,
    /// Extension: the whitespace around the stored payload, when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Padding)]
    payload_padding: Option<[&'a str; 2]>,
    /// Extension: the whitespace around the stored metadata, when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Padding)]
    metadata_padding: Option<[&'a str; 2]>,
}

impl<'a> EventOut<'a> {
    /// The wire form of a stored event.
    pub(crate) fn new(e: &'a RecordedEvent) -> Self {
        EventOut {
            position: e.position,
            id: e.id.as_str(),
            aggregate_id: &e.stream.id,
            aggregate: optional(&e.stream.aggregate),
            context: optional(&e.stream.context),
            version: e.version,
            event_type: e.event_type.as_str(),
            timestamp: e.timestamp,
            payload: &e.payload,
            metadata: &e.metadata,
            commit_id: e.commit_id.as_str(),
            commit_sequence: e.commit_sequence,
            dispatched: e.dispatched,
            payload_padding: padding(&e.payload),
            metadata_padding: padding(&e.metadata),
        }
    }
}

/// `None` (`null` on the wire) for the empty (absent) aggregate or context.
fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Events for a response body.
pub(crate) fn events(events: &[RecordedEvent]) -> Vec<EventOut<'_>> {
    events.iter().map(EventOut::new).collect()
}

/// The append response (with the `secret` extension when the append changed one).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AppendAnswer)]
pub(crate) struct AppendOut<'a> {
    /// The commit id of the append.
    pub(crate) commit_id: &'a str,
    pub(crate) events: AppendedEvents<'a>,
    /// The newest position in the store after the append.
    pub(crate) head_position: u64,
    /// `true`: the same events were stored before (a retry); nothing was written.
    pub(crate) retried: bool,
    /// Extension: the secret the append set or deleted (`secret: null` once deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = SecretOut)]
    pub(crate) secret: Option<SecretOut<'a>>,
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
                AppendedEvents::Brief(result.events.iter().map(EventBrief::new).collect())
            },
            head_position: result.head_position,
            retried: result.retried,
            secret: result.secret.as_ref().map(SecretOut::new),
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

/// Written by hand: the derive would make a `oneOf`, which an empty list (both kinds)
/// fails; the query's `echo` decides which kind it is.
impl PartialSchema for AppendedEvents<'_> {
    fn schema() -> RefOr<Schema> {
        let list = |item: Cow<'static, str>, description: &str| {
            ArrayBuilder::new()
                .items(Ref::from_schema_name(item))
                .description(Some(description))
        };
        AnyOfBuilder::new()
            .item(list(EventOut::name(), "The stored events (the default)."))
            .item(list(
                EventBrief::name(),
                "With `echo=false`: what the store decided about each event.",
            ))
            .description(Some("The events, in request order."))
            .into()
    }
}

impl ToSchema for AppendedEvents<'_> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AppendedEvents")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((EventOut::name().into(), EventOut::schema()));
        EventOut::schemas(schemas);
        schemas.push((EventBrief::name().into(), EventBrief::schema()));
        EventBrief::schemas(schemas);
    }
}

/// What the store decided about an appended event: position, id, version, timestamp,
/// commit id and sequence, dispatch mark (`?echo=false`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AppendedEventBrief)]
pub(crate) struct EventBrief<'a> {
    /// As in a stored event.
    position: u64,
    /// As in a stored event.
    id: &'a str,
    /// As in a stored event.
    #[schema(minimum = 1)]
    version: u64,
    #[schema(value_type = TimestampOut)]
    timestamp: Timestamp,
    /// As in a stored event.
    commit_id: &'a str,
    /// As in a stored event.
    commit_sequence: u32,
    /// As in a stored event.
    dispatched: bool,
}

impl<'a> EventBrief<'a> {
    fn new(e: &'a RecordedEvent) -> Self {
        EventBrief {
            position: e.position,
            id: e.id.as_str(),
            version: e.version,
            timestamp: e.timestamp,
            commit_id: e.commit_id.as_str(),
            commit_sequence: e.commit_sequence,
            dispatched: e.dispatched,
        }
    }
}

/// `GET /events` (with the `nextCursor` and `end` extensions).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = EventsPage)]
pub(crate) struct ReadOut<'a> {
    /// The matching events, in the requested order.
    pub(crate) events: Vec<EventOut<'a>>,
    /// The newest position in the store at read time.
    pub(crate) head_position: u64,
    /// Extension: where the next page starts (`cursor=`).
    pub(crate) next_cursor: String,
    /// Extension: `true` when no matching event follows this page.
    pub(crate) end: bool,
}

/// `GET /streams/events` (extension).
#[derive(Serialize, ToSchema)]
#[schema(as = StreamEvents)]
pub(crate) struct EventsOut<'a> {
    /// The stream's events by version.
    pub(crate) events: Vec<EventOut<'a>>,
}

/// A stream snapshot.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StreamSnapshot)]
pub(crate) struct SnapshotOut<'a> {
    /// The snapshot's id (client-given or a server UUID).
    id: &'a str,
    /// The stream's id.
    aggregate_id: &'a str,
    /// The stream's aggregate type, `null` for none.
    #[schema(required = true)]
    aggregate: Option<&'a str>,
    /// The stream's context, `null` for none.
    #[schema(required = true)]
    context: Option<&'a str>,
    /// The event version the snapshot covers.
    #[schema(minimum = 1)]
    stream_version: u64,
    /// The version of the snapshot's own schema (default 1).
    snapshot_version: u32,
    #[schema(value_type = TimestampOut)]
    timestamp: Timestamp,
    /// The snapshot, byte for byte as saved.
    #[schema(value_type = JsonDocument)]
    data: &'a Json,
    /// Extension: the whitespace around the stored data, when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Padding)]
    data_padding: Option<[&'a str; 2]>,
}

/// A stream snapshot for a response body.
pub(crate) fn stream_snapshot(s: &StreamSnapshot) -> SnapshotOut<'_> {
    SnapshotOut {
        id: &s.id,
        aggregate_id: &s.stream.id,
        aggregate: optional(&s.stream.aggregate),
        context: optional(&s.stream.context),
        stream_version: s.stream_version,
        snapshot_version: s.schema_version,
        timestamp: s.timestamp,
        data: &s.data,
        data_padding: padding(&s.data),
    }
}

/// `GET /snapshots` (extension): every snapshot of one stream, oldest save first.
#[derive(Serialize, ToSchema)]
#[schema(as = StreamSnapshots)]
pub(crate) struct SnapshotsOut<'a> {
    /// The snapshots.
    pub(crate) snapshots: Vec<SnapshotOut<'a>>,
}

/// `DELETE /snapshots`.
#[derive(Serialize, ToSchema)]
#[schema(as = PrunedSnapshots)]
pub(crate) struct DeletedOut {
    /// How many snapshots were deleted.
    pub(crate) deleted: u64,
}

/// `PUT /v1/stores/{store}`.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedStore)]
pub(crate) struct StoreCreated<'a> {
    /// The store's name.
    pub(crate) store: &'a str,
}

/// `GET /v1/stores/{store}`: the store's counts, head and freeze flag.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StoreDescription)]
pub(crate) struct StoreOut<'a> {
    /// Extension: the store's size on disk, `null` where the backend cannot tell.
    #[schema(required = true)]
    bytes_on_disk: Option<u64>,
    /// Secrets erased (`secretCount - setSecretCount`).
    deleted_secret_count: u64,
    /// Events stored.
    event_count: u64,
    /// Whether writes are refused (423 `store_frozen`).
    frozen: bool,
    /// The newest position, 0 when the store is empty.
    head_position: u64,
    /// Extension: the newest event's timestamp, `null` when the store is empty.
    #[schema(value_type = Option<TimestampOut>, required = true)]
    last_event_timestamp: Option<Timestamp>,
    /// Every secret ever stored (reSolve's meaning).
    secret_count: u64,
    /// Secrets still holding a value.
    set_secret_count: u64,
    /// The store's name.
    store: &'a str,
    /// Extension: streams stored.
    stream_count: u64,
}

/// `GET /v1/stores/{store}`.
pub(crate) fn description<'a>(name: &'a str, d: &StoreDescription) -> StoreOut<'a> {
    StoreOut {
        bytes_on_disk: d.bytes_on_disk,
        deleted_secret_count: d.deleted_secret_count,
        event_count: d.event_count,
        frozen: d.frozen,
        head_position: d.head_position,
        last_event_timestamp: d.last_event_timestamp,
        secret_count: d.secret_count,
        set_secret_count: d.set_secret_count,
        store: name,
        stream_count: d.stream_count,
    }
}

/// A stream of a listing.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StreamInfo)]
pub(crate) struct StreamInfoOut<'a> {
    /// The stream's aggregate type, `null` for none.
    #[schema(required = true)]
    aggregate: Option<&'a str>,
    /// The stream's id.
    aggregate_id: &'a str,
    /// The stream's context, `null` for none.
    #[schema(required = true)]
    context: Option<&'a str>,
    /// The position of the stream's first event.
    first_position: u64,
    /// The timestamp of the stream's first event.
    #[schema(value_type = TimestampOut)]
    first_timestamp: Timestamp,
    /// The position of the stream's newest event.
    last_position: u64,
    /// The stream's current version.
    version: u64,
}

/// A stream of a listing.
pub(crate) fn stream_info(i: &StreamInfo) -> StreamInfoOut<'_> {
    StreamInfoOut {
        aggregate: optional(&i.stream.aggregate),
        aggregate_id: &i.stream.id,
        context: optional(&i.stream.context),
        first_position: i.first_position,
        first_timestamp: i.first_timestamp,
        last_position: i.last_position,
        version: i.version,
    }
}

/// `GET /streams`.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StreamsPage)]
pub(crate) struct StreamsOut<'a> {
    /// Whether more streams follow this page.
    pub(crate) has_more: bool,
    /// Extension: where the next page starts (`pageToken=`), `null` on the last page.
    #[schema(required = true)]
    pub(crate) next_page_token: Option<String>,
    /// The streams, by first event.
    pub(crate) streams: Vec<StreamInfoOut<'a>>,
}

/// `GET /streams/info` (extension).
#[derive(Serialize, ToSchema)]
#[schema(as = StreamInfoAnswer)]
pub(crate) struct StreamInfoAnswer<'a> {
    /// The stream, `null` when it has no event.
    #[schema(required = true)]
    pub(crate) stream: Option<StreamInfoOut<'a>>,
}

/// The body of `POST /snapshots`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = SaveStreamSnapshotRequest)]
pub(crate) struct SnapshotBody {
    /// The snapshot's id; a server UUID when absent.
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) id: Option<String>,
    /// The stream's id.
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) aggregate_id: String,
    /// The stream's aggregate type (absent or `null`: none).
    #[schema(max_length = 256)]
    pub(crate) aggregate: Option<String>,
    /// The stream's context (absent or `null`: none).
    #[schema(max_length = 256)]
    pub(crate) context: Option<String>,
    /// The event version the snapshot covers.
    #[schema(minimum = 1)]
    pub(crate) stream_version: u64,
    /// The version of the snapshot's own schema (default 1).
    pub(crate) snapshot_version: Option<u32>,
    /// The snapshot's time; absent: the server's time.
    #[schema(value_type = Option<TimestampIn>)]
    pub(crate) timestamp: Option<Timestamp>,
    /// The snapshot (absent: `null`).
    #[schema(value_type = JsonDocument, required = false)]
    pub(crate) data: Option<Json>,
    /// Extension: whitespace around the data.
    #[schema(value_type = Option<Padding>)]
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
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[schema(as = KeyedSnapshot)]
pub(crate) struct KeyedSnapshotOut<'a> {
    /// The snapshot.
    content: &'a str,
    /// Its key.
    key: &'a str,
    /// When it was saved (or the time it was imported with).
    #[schema(value_type = TimestampOut)]
    timestamp: Timestamp,
}

/// A keyed snapshot.
pub(crate) fn keyed_snapshot(s: &KeyedSnapshot) -> KeyedSnapshotOut<'_> {
    KeyedSnapshotOut {
        content: &s.content,
        key: &s.key,
        timestamp: s.timestamp,
    }
}

/// `GET /snapshot-keys` (extension).
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = KeyedSnapshotsPage)]
pub(crate) struct KeyedSnapshotsOut<'a> {
    /// The last key of this page when more may follow (`startAfter=`), else `null`.
    #[schema(required = true)]
    pub(crate) next_start_after: Option<String>,
    /// The snapshots, in bytewise key order.
    pub(crate) snapshots: Vec<KeyedSnapshotOut<'a>>,
}

/// The body of `PUT /snapshot-keys/{key}`.
#[derive(Deserialize, ToSchema)]
#[schema(as = SaveSnapshotRequest)]
pub(crate) struct KeyedSnapshotBody {
    /// The snapshot (at most 16 MiB).
    pub(crate) content: String,
}

/// A secret.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[schema(as = Secret)]
pub(crate) struct SecretOut<'a> {
    /// The secret's id.
    id: &'a str,
    /// Its index: 0, 1, 2 ... per store, in the order secrets were stored.
    idx: u64,
    /// The secret, `null` once deleted.
    #[schema(required = true)]
    secret: Option<&'a str>,
}

impl<'a> SecretOut<'a> {
    /// The wire form of a secret.
    pub(crate) fn new(s: &'a Secret) -> Self {
        SecretOut {
            id: &s.id,
            idx: s.idx,
            secret: s.secret.as_deref(),
        }
    }
}

/// `GET /secrets`.
#[derive(Serialize, ToSchema)]
#[schema(as = Secrets)]
pub(crate) struct SecretsOut<'a> {
    /// The secrets by index.
    pub(crate) secrets: Vec<SecretOut<'a>>,
}

/// `PUT /secrets/{id}` without events.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[schema(as = StoredSecret)]
pub(crate) struct SecretStored<'a> {
    /// The secret's id.
    pub(crate) id: &'a str,
    /// Its index.
    pub(crate) idx: u64,
}

/// `PUT /secrets/{id}` with events: the append answer (without its `secret`) and the
/// secret's id and index.
#[derive(Serialize, ToSchema)]
#[schema(as = StoredSecretWithEvents)]
pub(crate) struct SecretAppendOut<'a> {
    #[serde(flatten)]
    pub(crate) append: AppendOut<'a>,
    /// The secret's id.
    pub(crate) id: &'a str,
    /// Its index.
    pub(crate) idx: u64,
}

/// The answer of `PUT /secrets/{id}`: [`SecretStored`], or [`SecretAppendOut`] when the
/// body has events. Written by hand: the second has every field of the first, so only
/// `anyOf` (not a derived `oneOf`) describes the pair.
pub(crate) struct SetSecretOut;

impl PartialSchema for SetSecretOut {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(SecretStored::name()))
            .item(Ref::from_schema_name(SecretAppendOut::name()))
            .into()
    }
}

impl ToSchema for SetSecretOut {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SetSecretAnswer")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((SecretStored::name().into(), SecretStored::schema()));
        SecretStored::schemas(schemas);
        schemas.push((SecretAppendOut::name().into(), SecretAppendOut::schema()));
        SecretAppendOut::schemas(schemas);
    }
}

/// A keyed snapshot as `POST /snapshot-keys/import` takes it (timestamp kept).
#[derive(Deserialize, ToSchema)]
#[schema(as = KeyedSnapshotImport)]
pub(crate) struct KeyedSnapshotIn {
    /// Its key (unique in the body).
    #[schema(min_length = 1, max_length = 256)]
    key: String,
    /// The snapshot (at most 16 MiB).
    content: String,
    /// Its time, kept.
    #[schema(value_type = TimestampIn)]
    timestamp: Timestamp,
}

/// The body of `POST /snapshot-keys/import`.
#[derive(Deserialize, ToSchema)]
#[schema(as = ImportSnapshotsRequest)]
pub(crate) struct KeyedSnapshotsIn {
    /// The snapshots, stored all or none.
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

/// `POST /snapshot-keys/import` (extension).
#[derive(Serialize, ToSchema)]
#[schema(as = ImportedSnapshots)]
pub(crate) struct ImportedOut {
    /// How many snapshots were stored.
    pub(crate) imported: u64,
}

/// The body of `POST /events/dispatched`.
#[derive(Deserialize, ToSchema)]
#[schema(as = MarkDispatchedRequest)]
pub(crate) struct PositionsIn {
    /// The positions of the events to mark (at most 100000).
    #[schema(max_items = 100_000, inline)]
    pub(crate) positions: Vec<Position>,
}

/// The answer of an NDJSON import (`POST /events/import`, `POST /secrets/import`).
// Described here, for the document: `maintenance.rs` still writes it with `json!` (its
// import loop is being reworked elsewhere); the keys are the same, and the schemathesis
// run of CI checks the answers against this schema.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ImportAnswer)]
#[allow(
    dead_code,
    reason = "documentation only until maintenance.rs builds it"
)]
pub(crate) struct ImportOut {
    /// Lines stored.
    imported: u64,
    /// Lines dropped by `onConflict=skip`.
    skipped: u64,
    /// The first byte not imported: the body's length, or where an unterminated last
    /// line starts.
    byte_offset: u64,
    /// The length of a last line without a newline, left unimported (a truncated
    /// upload); 0 otherwise.
    unterminated_bytes: u64,
    /// The newest position in the store afterwards.
    head_position: u64,
}

/// The query and path parameters, for the OpenAPI document only: the handlers parse the
/// raw query with [`Params`] (names may repeat, and a bad value is a 400 naming it), so
/// these structs are never built.
pub(crate) mod query {
    #![allow(
        dead_code,
        reason = "documentation only: the handlers parse queries with `Params`"
    )]

    use utoipa::{IntoParams, ToSchema};

    use crate::maintenance::Mode;
    use crate::openapi::TimestampIn;

    /// The store of a `/v1/stores/{store}/...` path.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub(crate) struct StorePath {
        /// The store's name: 1 to 128 ASCII letters, digits, `-`, `_` or `.`, not
        /// starting with `.` (400 `invalid_request` otherwise).
        #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
        store: String,
    }

    /// `?echo=` of the append endpoints.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct EchoQuery {
        /// Extension: `false` answers each event with what the store decided only
        /// (position, id, version, timestamp, commit id and sequence, dispatch mark);
        /// default `true`.
        echo: Option<bool>,
    }

    /// The event filter of `GET /events` and `GET /subscribe`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct EventFilterQuery {
        /// Stream ids; may repeat (any of them; at most 1000, else 413). Omitted: any.
        #[param(max_items = 1000)]
        aggregate_id: Option<Vec<String>>,
        /// The aggregate type; omitted: any.
        aggregate: Option<String>,
        /// The context; omitted: any.
        context: Option<String>,
        /// Event types; may repeat (any of them; at most 1000, else 413).
        #[param(rename = "type", max_items = 1000)]
        event_type: Option<Vec<String>>,
        /// Inclusive lower bound on `version`.
        min_version: Option<u64>,
        /// Inclusive upper bound on `version`.
        max_version: Option<u64>,
        /// Inclusive lower bound on `timestamp`.
        #[param(value_type = Option<TimestampIn>)]
        from_timestamp: Option<String>,
        /// Inclusive upper bound on `timestamp`.
        #[param(value_type = Option<TimestampIn>)]
        to_timestamp: Option<String>,
        /// Only dispatched (`true`) or undispatched (`false`) events.
        dispatched: Option<bool>,
    }

    /// Where and how `GET /events` reads.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ReadQuery {
        /// Exclusive bound on `position` (after it, or before it with `reverse`;
        /// default: from the start); not with `cursor`. Combines with the time bounds
        /// (API.md refused that; a time window resumed from a position needs it).
        after_position: Option<u64>,
        /// Extension: continue where a page ended (its `nextCursor`); not with
        /// `afterPosition`.
        cursor: Option<String>,
        /// `true`: descending position.
        reverse: Option<bool>,
        /// Matching events to leave out first.
        skip: Option<u64>,
        /// At most this many events; omitted: all.
        limit: Option<u64>,
    }

    /// Where `GET /subscribe` starts.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct SubscribeQuery {
        /// Start after this position (default 0: from the beginning); a valid
        /// `Last-Event-ID` header takes precedence.
        after_position: Option<u64>,
    }

    /// `maintenanceMode`: `auto` freezes the store for the duration and unfreezes it
    /// afterwards, also on error (409 `already_frozen` when it is frozen); `manual` (the
    /// default) does nothing implicit.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ExportQuery {
        /// Start after this position (default 0).
        after_position: Option<u64>,
        /// At most this many events; omitted: all.
        limit: Option<u64>,
        /// `auto`: the store is frozen while the body is sent.
        #[param(inline)]
        maintenance_mode: Option<Mode>,
    }

    /// What an NDJSON import does with a line whose (stream, version) or id is stored.
    #[derive(ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub(crate) enum OnConflict {
        /// Stop (409) and keep the lines before the refused batch.
        Error,
        /// Drop the line silently.
        Skip,
    }

    /// The parameters of `POST /events/import`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ImportEventsQuery {
        /// `error` (the default) or `skip`.
        #[param(inline)]
        on_conflict: Option<OnConflict>,
        /// Lines per committed batch (default 1000; above 100000: 413).
        #[param(minimum = 1, maximum = 100_000)]
        batch_size: Option<u64>,
        /// The head position the store must have before the first batch (409
        /// `head_moved` otherwise); each batch then continues from the previous one.
        expected_head: Option<u64>,
        /// `auto`: freeze the store, empty its events, import, unfreeze.
        #[param(inline)]
        maintenance_mode: Option<Mode>,
    }

    /// The parameters of `POST /secrets/import`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ImportSecretsQuery {
        /// `error` (the default) or `skip`.
        #[param(inline)]
        on_conflict: Option<OnConflict>,
        /// Lines per committed batch (default 1000; above 100000: 413).
        #[param(minimum = 1, maximum = 100_000)]
        batch_size: Option<u64>,
        /// `auto`: freeze the store, empty its secrets, import, unfreeze.
        #[param(inline)]
        maintenance_mode: Option<Mode>,
    }

    /// The parameters of `GET /streams`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ListStreamsQuery {
        /// The aggregate type; omitted: any.
        aggregate: Option<String>,
        /// The context; omitted: any.
        context: Option<String>,
        /// Inclusive lower bound on the stream's first-event timestamp.
        #[param(value_type = Option<TimestampIn>)]
        created_after: Option<String>,
        /// Inclusive upper bound on the stream's first-event timestamp.
        #[param(value_type = Option<TimestampIn>)]
        created_before: Option<String>,
        /// `true`: newest first.
        reverse: Option<bool>,
        /// At most this many streams.
        limit: Option<u64>,
        /// The `aggregateId` of the previous page's last stream (400 when no such stream
        /// matches the filter); not with `pageToken`.
        #[param(min_length = 1, max_length = 256)]
        start_after: Option<String>,
        /// Extension: a previous page's `nextPageToken`.
        page_token: Option<String>,
    }

    /// The stream named by the query (absent `aggregate`/`context`: none, `null`).
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct StreamQuery {
        /// The stream's id (400 when absent or empty).
        #[param(min_length = 1, max_length = 256)]
        aggregate_id: String,
        /// The stream's aggregate type; absent: none.
        aggregate: Option<String>,
        /// The stream's context; absent: none.
        context: Option<String>,
    }

    /// How `GET /streams/events` reads a stream.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct ReadStreamQuery {
        /// The first version (default 1).
        #[param(minimum = 1)]
        from_version: Option<u64>,
        /// The last version; omitted: the newest.
        #[param(minimum = 1)]
        to_version: Option<u64>,
        /// `true`: descending version.
        reverse: Option<bool>,
        /// At most this many events.
        limit: Option<u64>,
    }

    /// The bound of `GET /snapshots/latest`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct LatestSnapshotQuery {
        /// The greatest `streamVersion` wanted; omitted: any.
        max_stream_version: Option<u64>,
    }

    /// How many snapshots `DELETE /snapshots` keeps.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct PruneSnapshotsQuery {
        /// Keep the N most recently written snapshots of the stream (default 0).
        keep: Option<u64>,
    }

    /// A page of `GET /snapshot-keys`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct SnapshotKeysQuery {
        /// Continue after this key (a page's `nextStartAfter`).
        #[param(min_length = 1, max_length = 256)]
        start_after: Option<String>,
        /// At most this many snapshots (default and cap 1000).
        limit: Option<u64>,
    }

    /// The parameters of `GET /secrets`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query, rename_all = "camelCase")]
    pub(crate) struct SecretsQuery {
        /// The first index (default 0).
        from_idx: Option<u64>,
        /// Matching secrets to leave out first.
        skip: Option<u64>,
        /// At most this many secrets.
        limit: Option<u64>,
        /// Only these ids; may repeat (at most 1000, else 413).
        #[param(max_items = 1000)]
        id: Option<Vec<String>>,
        /// `true`: deleted secrets too (with `secret: null`).
        include_deleted: Option<bool>,
    }
}
