//! Strict reading of an event's JSON fields (`append`, `secret set --events`,
//! `import --incremental`): a field given with the wrong JSON type is an error naming
//! it, never silently dropped; `null` counts as absent.

use serde_json::{Map, Value};

use annals_core::{Error, Json, Timestamp};

use crate::Failure;

/// One event object and where it came from (`events[2]`, `line 7 (byte offset 912)`),
/// which prefixes the field in every error.
pub(crate) struct EventFields<'a> {
    place: String,
    event: &'a Map<String, Value>,
}

impl<'a> EventFields<'a> {
    /// The fields of `event`, found at `place`.
    pub(crate) fn new(place: String, event: &'a Map<String, Value>) -> Self {
        EventFields { place, event }
    }

    /// `place.name`, as errors name a field.
    pub(crate) fn path(&self, name: &str) -> String {
        format!("{}.{name}", self.place)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.event.get(name).filter(|v| !v.is_null())
    }

    /// A string field.
    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::invalid(
                self.path(name),
                format!("must be a string, not {}", kind(other)),
            )
            .into()),
        }
    }

    /// A string field that must be there.
    pub(crate) fn required(&self, name: &str) -> Result<String, Failure> {
        self.string(name)?
            .ok_or_else(|| Error::invalid(self.path(name), "missing").into())
    }

    /// An RFC 3339 timestamp field.
    pub(crate) fn timestamp(&self, name: &str) -> Result<Option<Timestamp>, Failure> {
        match self.string(name)? {
            Some(t) => Timestamp::parse_rfc3339(&t)
                .map(Some)
                .map_err(|e| Error::invalid(self.path(name), e.to_string()).into()),
            None => Ok(None),
        }
    }

    /// A non-negative integer field.
    pub(crate) fn integer(&self, name: &str) -> Result<Option<u64>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::invalid(
                    self.path(name),
                    format!("must be a non-negative integer, not {v}"),
                )
                .into()
            }),
        }
    }

    /// Any JSON value, kept as its text (`null` when absent).
    pub(crate) fn json(&self, name: &str) -> Result<Json, Failure> {
        match self.event.get(name) {
            Some(v) => Json::from_value(v)
                .map_err(|e| Error::invalid(self.path(name), e.to_string()).into()),
            None => Ok(Json::null()),
        }
    }
}

/// "a number", "an array", … for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
