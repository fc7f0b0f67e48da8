//! The one place where errors become HTTP responses (API.md "Errors").

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use annals_core::{Error, ExpectedVersion, StreamId};

/// Why a request failed: a store error, or one of the server's own (the store registry).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// An error of a store (or of the request, as `InvalidInput`).
    #[error(transparent)]
    Store(#[from] Error),
    /// `PUT` of a store that exists.
    #[error("store {0:?} already exists")]
    StoreAlreadyExists(String),
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than the limit maxBodyBytes = {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An NDJSON import stopped: the store's (or the line's) error, and where.
    #[error("{source}")]
    Import {
        /// What went wrong (boxed: this variant is rare and keeps `ApiError` small).
        source: Box<Error>,
        /// The line the error is about (from 1).
        line: u64,
        /// The first byte not imported.
        byte_offset: u64,
        /// Items imported before the import stopped.
        imported: u64,
        /// Items skipped before the import stopped.
        skipped: u64,
    },
    /// A request exceeds a count limit (events per append, values of a filter).
    #[error("{what} exceeds the limit {limit} = {max}")]
    LimitExceeded {
        /// What was too large, e.g. `events` or `aggregateId`.
        what: String,
        /// The limit's name, e.g. `maxEventsPerAppend`.
        limit: &'static str,
        /// Its value.
        max: usize,
    },
}

impl ApiError {
    /// A `400 invalid_request` naming the field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Store(Error::invalid(field, reason))
    }

    /// The status, the API.md code and the details of this error.
    pub fn parts(&self) -> (StatusCode, String, Map<String, Value>) {
        let mut d = Map::new();
        let (status, code) = match self {
            ApiError::StoreAlreadyExists(name) => {
                d.insert("store".into(), json!(name));
                (StatusCode::CONFLICT, "store_already_exists".to_owned())
            }
            ApiError::BodyTooLarge { limit } => {
                d.insert("limit".into(), json!("maxBodyBytes"));
                d.insert("max".into(), json!(limit));
                (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded".to_owned())
            }
            ApiError::Import {
                source,
                line,
                byte_offset,
                imported,
                skipped,
            } => {
                let (status, code, details) = ApiError::Store((**source).clone()).parts();
                d.extend(details);
                d.insert("line".into(), json!(line));
                d.insert("byteOffset".into(), json!(byte_offset));
                d.insert("imported".into(), json!(imported));
                d.insert("skipped".into(), json!(skipped));
                (status, code)
            }
            ApiError::LimitExceeded { what, limit, max } => {
                d.insert("field".into(), json!(what));
                d.insert("limit".into(), json!(limit));
                d.insert("max".into(), json!(max));
                (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded".to_owned())
            }
            ApiError::Store(err) => match err {
                Error::WrongExpectedVersion {
                    stream,
                    expected,
                    actual,
                } => {
                    stream_details(&mut d, stream);
                    d.insert("conflict".into(), json!("expectedVersion"));
                    d.insert("expectedVersion".into(), expected_to_json(*expected));
                    d.insert("currentVersion".into(), json!(actual));
                    (StatusCode::CONFLICT, "version_conflict".to_owned())
                }
                Error::VersionConflict {
                    stream,
                    version,
                    current,
                } => {
                    stream_details(&mut d, stream);
                    d.insert("conflict".into(), json!("version"));
                    d.insert("version".into(), json!(version));
                    d.insert("currentVersion".into(), json!(current));
                    (StatusCode::CONFLICT, "version_conflict".to_owned())
                }
                Error::DuplicateEventId { id } => {
                    d.insert("id".into(), json!(id));
                    (StatusCode::CONFLICT, "duplicate_event_id".to_owned())
                }
                Error::WrongExpectedHead { expected, actual } => {
                    d.insert("expectedHead".into(), json!(expected));
                    d.insert("headPosition".into(), json!(actual));
                    (StatusCode::CONFLICT, "head_moved".to_owned())
                }
                Error::Frozen => (StatusCode::LOCKED, "store_frozen".to_owned()),
                Error::AlreadyFrozen => (StatusCode::CONFLICT, "already_frozen".to_owned()),
                Error::NotFrozen => (StatusCode::CONFLICT, "not_frozen".to_owned()),
                Error::NotFound { what, id } => {
                    d.insert("id".into(), json!(id));
                    (StatusCode::NOT_FOUND, format!("{what}_not_found"))
                }
                Error::SecretAlreadyExists { id } => {
                    d.insert("id".into(), json!(id));
                    (StatusCode::CONFLICT, "secret_already_exists".to_owned())
                }
                Error::ImportConflict { index, reason } => {
                    d.insert("index".into(), json!(index));
                    d.insert("reason".into(), json!(reason));
                    (StatusCode::CONFLICT, "import_conflict".to_owned())
                }
                Error::InvalidInput { field, reason } => {
                    d.insert("field".into(), json!(field));
                    d.insert("reason".into(), json!(reason));
                    (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
                }
                Error::Poisoned { reason } => {
                    d.insert("reason".into(), json!(reason));
                    (StatusCode::SERVICE_UNAVAILABLE, "store_poisoned".to_owned())
                }
                Error::Closed => (StatusCode::SERVICE_UNAVAILABLE, "store_closed".to_owned()),
                Error::Corrupted { location, detail } => {
                    d.insert("location".into(), json!(location));
                    d.insert("detail".into(), json!(detail));
                    (StatusCode::INTERNAL_SERVER_ERROR, "corrupted".to_owned())
                }
                Error::Unsupported { backend, operation } => {
                    d.insert("backend".into(), json!(backend));
                    d.insert("operation".into(), json!(operation));
                    (StatusCode::NOT_IMPLEMENTED, "unsupported".to_owned())
                }
                Error::Backend { backend, source } => {
                    d.insert("backend".into(), json!(backend));
                    d.insert("reason".into(), json!(source.to_string()));
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "backend_error".to_owned(),
                    )
                }
                // `Error` is non-exhaustive: a variant added later is a server error
                // until it gets its own code here.
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal".to_owned()),
            },
        };
        (status, code, d)
    }

    /// The API.md error body.
    pub fn body(&self) -> Value {
        json!({ "error": self.error_body().error.fields() })
    }

    /// The API.md error body, as the type the OpenAPI document describes.
    pub(crate) fn error_body(&self) -> ErrorBody {
        let (_, code, details) = self.parts();
        ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                details,
            },
        }
    }
}

/// The body of every refusal (API.md "Errors"): `{"error": {"code", "message", ...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
}

impl ErrorBody {
    /// A refusal without details.
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                details: Map::new(),
            },
        }
    }
}

/// The code, the message and the details of a refusal.
#[derive(Debug, Clone, ToSchema)]
pub(crate) struct ErrorDetail {
    /// The API.md code, e.g. `invalid_request`, `store_not_found`, `version_conflict`,
    /// `limit_exceeded`.
    code: String,
    /// What went wrong, for people.
    message: String,
    /// Details that depend on the code: `field` and `reason` (`invalid_request`);
    /// `aggregateId`, `aggregate`, `context`, `conflict`, `version`, `expectedVersion`,
    /// `currentVersion` (`version_conflict`); `id` of the thing not found or in use;
    /// `limit` and `max` (`limit_exceeded`); `line`, `byteOffset`, `imported`, `skipped`
    /// (NDJSON imports); ...
    #[serde(flatten)]
    details: Map<String, Value>,
}

impl ErrorDetail {
    /// Every field in one map.
    fn fields(&self) -> Map<String, Value> {
        let mut fields = self.details.clone();
        fields.insert("code".into(), json!(self.code));
        fields.insert("message".into(), json!(self.message));
        fields
    }
}

/// One object whose keys come in byte order, `code` and `message` among the details, as
/// error bodies have always been written (they were built as a `serde_json::Map`).
impl Serialize for ErrorDetail {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.fields().serialize(serializer)
    }
}

fn stream_details(d: &mut Map<String, Value>, stream: &StreamId) {
    d.insert("aggregateId".into(), json!(stream.id));
    d.insert("aggregate".into(), optional(&stream.aggregate));
    d.insert("context".into(), optional(&stream.context));
}

/// `null` for the empty (absent) aggregate or context, the string otherwise.
pub(crate) fn optional(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

/// The wire form of an expected version: `"any"`, `"exists"`, `"noStream"` or the exact
/// version `n` (in an append body `0` also means "no stream", as API.md says).
pub(crate) fn expected_to_json(expected: ExpectedVersion) -> Value {
    match expected {
        ExpectedVersion::Any => json!("any"),
        ExpectedVersion::StreamExists => json!("exists"),
        ExpectedVersion::NoStream => json!("noStream"),
        ExpectedVersion::Exact(v) => json!(v),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        (status, axum::Json(self.error_body())).into_response()
    }
}

/// Gives the API.md error body to every refusal that does not have it yet: the ones axum
/// makes itself (a path segment that is not UTF-8, a method a route lacks, ...).
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "limit_exceeded",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    (parts.status, axum::Json(ErrorBody::new(code, message))).into_response()
}
