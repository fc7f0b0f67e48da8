//! HTTP failures back into [`annals_core::Error`].

use std::fmt;

use serde_json::{Map, Value};

use annals_core::{Error, ExpectedVersion, StreamId};

/// The server could not be reached (or the connection broke): the `source` of an
/// [`Error::Backend`] from this client, so callers can tell it from a refusal.
#[derive(Debug)]
pub struct ConnectionError {
    /// What went wrong, as the HTTP library says it.
    pub message: String,
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectionError {}

/// An error answer of the server that has no [`Error`] variant of its own (e.g.
/// `store_already_exists`): the `source` of an [`Error::Backend`] from this client.
#[derive(Debug, Clone)]
pub struct RemoteError {
    /// The HTTP status.
    pub status: u16,
    /// The API.md error code.
    pub code: String,
    /// The server's message.
    pub message: String,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for RemoteError {}

pub(crate) fn connection(e: impl fmt::Display) -> Error {
    Error::backend(
        "http",
        ConnectionError {
            message: e.to_string(),
        },
    )
}

fn text(d: &Map<String, Value>, key: &str) -> String {
    d.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn number(d: &Map<String, Value>, key: &str) -> u64 {
    d.get(key).and_then(Value::as_u64).unwrap_or_default()
}

fn stream(d: &Map<String, Value>) -> StreamId {
    StreamId {
        context: text(d, "context"),
        aggregate: text(d, "aggregate"),
        id: text(d, "aggregateId"),
    }
}

fn expected(v: Option<&Value>) -> ExpectedVersion {
    match v {
        Some(Value::Number(n)) => ExpectedVersion::Exact(n.as_u64().unwrap_or_default()),
        Some(Value::String(s)) if s == "exists" => ExpectedVersion::StreamExists,
        Some(Value::String(s)) if s == "noStream" => ExpectedVersion::NoStream,
        _ => ExpectedVersion::Any,
    }
}

/// The names [`Error::NotFound`] uses for `what` (it needs a `&'static str`).
fn what(code: &str) -> &'static str {
    match code.strip_suffix("_not_found").unwrap_or(code) {
        "event" => "event",
        "secret" => "secret",
        "snapshot" => "snapshot",
        "store" => "store",
        "stream" => "stream",
        "import" => "import",
        "route" => "route",
        _ => "resource",
    }
}

/// Rebuilds the store error the server mapped into this answer.
pub(crate) fn from_body(status: u16, body: &[u8]) -> Error {
    let details = match serde_json::from_slice::<crate::wire::ErrorOut>(body) {
        Ok(b) => b.error,
        Err(_) => {
            return Error::backend(
                "http",
                RemoteError {
                    status,
                    code: "http_error".into(),
                    message: String::from_utf8_lossy(body).into_owned(),
                },
            )
        }
    };
    let d = &details;
    let code = text(d, "code");
    match code.as_str() {
        "version_conflict" if text(d, "conflict") == "version" => Error::VersionConflict {
            stream: stream(d),
            version: number(d, "version"),
            current: number(d, "currentVersion"),
        },
        "version_conflict" => Error::WrongExpectedVersion {
            stream: stream(d),
            expected: expected(d.get("expectedVersion")),
            actual: number(d, "currentVersion"),
        },
        "duplicate_event_id" => Error::DuplicateEventId { id: text(d, "id") },
        "head_moved" => Error::WrongExpectedHead {
            expected: number(d, "expectedHead"),
            actual: number(d, "headPosition"),
        },
        "store_frozen" => Error::Frozen,
        "already_frozen" => Error::AlreadyFrozen,
        "not_frozen" => Error::NotFrozen,
        "secret_already_exists" => Error::SecretAlreadyExists { id: text(d, "id") },
        "import_conflict" => Error::ImportConflict {
            index: d
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(0),
            reason: text(d, "reason"),
        },
        "invalid_request" => Error::InvalidInput {
            field: text(d, "field"),
            reason: text(d, "reason"),
        },
        // A request limit of the server: the caller asked too much at once.
        "limit_exceeded" => Error::InvalidInput {
            field: d
                .get("field")
                .or_else(|| d.get("limit"))
                .and_then(Value::as_str)
                .unwrap_or("request")
                .to_owned(),
            reason: text(d, "message"),
        },
        "store_poisoned" => Error::Poisoned {
            reason: text(d, "reason"),
        },
        "store_closed" => Error::Closed,
        "corrupted" => Error::Corrupted {
            location: text(d, "location"),
            detail: text(d, "detail"),
        },
        c if c.ends_with("_not_found") => Error::NotFound {
            what: what(c),
            id: text(d, "id"),
        },
        _ => Error::backend(
            "http",
            RemoteError {
                status,
                code,
                message: text(d, "message"),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_conflict_answer_becomes_the_import_conflict_error() {
        // The body exactly as the server writes it for `Error::ImportConflict`.
        let body =
            br#"{"error":{"code":"import_conflict","message":"m","index":3,"reason":"older"}}"#;
        let err = from_body(409, body);
        assert_eq!(
            err,
            Error::ImportConflict {
                index: 3,
                reason: "older".into()
            }
        );
        assert_eq!(err.kind(), annals_core::ErrorKind::ImportConflict);
    }
}
