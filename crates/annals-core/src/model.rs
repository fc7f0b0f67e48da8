//! The event model shared by every part of Annals: streams, versions, positions,
//! timestamps, JSON bodies, proposed and recorded events.

use std::fmt;

use bytes::Bytes;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A stream's version: the version of its newest event. The first event of a stream has
/// version 1; a stream that does not exist has version 0.
pub type Version = u64;

/// A store-wide position: 1 for the first event ever appended, dense (no gaps) and
/// assigned in commit order. 0 means "before the first event".
pub type Position = u64;

/// The identity of a stream: `(context, aggregate, id)`.
///
/// `id` is the aggregate id or stream name and must be non-empty. `aggregate` (the
/// aggregate type, e.g. `order`) and `context` (the bounded context, e.g. `sales`) are
/// optional; the empty string means "none". Two streams with the same `id` in different
/// contexts are different streams.
///
/// ```
/// use annals_core::StreamId;
/// let s = StreamId::new("acc-1").with_aggregate("account").with_context("billing");
/// assert_eq!(s.to_string(), "billing/account/acc-1");
/// assert_ne!(s, StreamId::new("acc-1"));
/// assert_eq!(StreamId::new("acc-1").to_string(), "acc-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId {
    /// The bounded context; empty = none.
    pub context: String,
    /// The aggregate type; empty = none.
    pub aggregate: String,
    /// The aggregate id or stream name; never empty in a valid stream id.
    pub id: String,
}

impl StreamId {
    /// A stream with only an id (no aggregate type, no context).
    ///
    /// ```
    /// let s = annals_core::StreamId::new("order-7");
    /// assert_eq!(s.id, "order-7");
    /// assert!(s.aggregate.is_empty() && s.context.is_empty());
    /// ```
    pub fn new(id: impl Into<String>) -> Self {
        StreamId {
            context: String::new(),
            aggregate: String::new(),
            id: id.into(),
        }
    }

    /// The same stream id with the aggregate type set.
    ///
    /// ```
    /// let s = annals_core::StreamId::new("o-1").with_aggregate("order");
    /// assert_eq!(s.aggregate, "order");
    /// ```
    pub fn with_aggregate(mut self, aggregate: impl Into<String>) -> Self {
        self.aggregate = aggregate.into();
        self
    }

    /// The same stream id with the bounded context set.
    ///
    /// ```
    /// let s = annals_core::StreamId::new("o-1").with_context("sales");
    /// assert_eq!(s.context, "sales");
    /// ```
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.context.is_empty() {
            write!(f, "{}/", self.context)?;
        }
        if !self.aggregate.is_empty() || !self.context.is_empty() {
            write!(f, "{}/", self.aggregate)?;
        }
        f.write_str(&self.id)
    }
}

impl From<&str> for StreamId {
    fn from(id: &str) -> Self {
        StreamId::new(id)
    }
}

/// What the caller expects of a stream's version when appending (optimistic concurrency).
///
/// ```
/// use annals_core::ExpectedVersion;
/// assert!(ExpectedVersion::Any.accepts(7));
/// assert!(ExpectedVersion::NoStream.accepts(0));
/// assert!(!ExpectedVersion::StreamExists.accepts(0));
/// assert!(ExpectedVersion::Exact(3).accepts(3));
/// assert!(ExpectedVersion::Exact(0).accepts(0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedVersion {
    /// No check.
    #[default]
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must exist (version ≥ 1).
    StreamExists,
    /// The stream must be at exactly this version (0 = must not exist).
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    ///
    /// ```
    /// assert!(!annals_core::ExpectedVersion::Exact(2).accepts(3));
    /// ```
    pub fn accepts(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::StreamExists => actual > 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Milliseconds since the Unix epoch, UTC. On the wire: RFC 3339 with exactly
/// millisecond precision (`2021-01-01T00:00:00.000Z`).
///
/// ```
/// use annals_core::Timestamp;
/// let t = Timestamp::from_millis(1_609_459_200_123);
/// assert_eq!(t.to_rfc3339(), "2021-01-01T00:00:00.123Z");
/// assert_eq!(Timestamp::parse_rfc3339("2021-01-01T00:00:00.123Z").unwrap(), t);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp of this many milliseconds since the Unix epoch.
    ///
    /// ```
    /// assert_eq!(annals_core::Timestamp::from_millis(5).as_millis(), 5);
    /// ```
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    ///
    /// ```
    /// assert_eq!(annals_core::Timestamp::from_millis(-1).as_millis(), -1);
    /// ```
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time, truncated to milliseconds.
    ///
    /// ```
    /// assert!(annals_core::Timestamp::now().as_millis() > 1_600_000_000_000);
    /// ```
    pub fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// RFC 3339, UTC, exactly three fractional digits.
    ///
    /// ```
    /// assert_eq!(annals_core::Timestamp::from_millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
    /// ```
    pub fn to_rfc3339(self) -> String {
        match self.civil_text() {
            Some(bytes) => bytes.iter().map(|b| char::from(*b)).collect(),
            None => self.to_rfc3339_slow(),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` for years 0 to 9999 without going through `fmt` (every
    /// event written to the wire formats one); `None` outside that range.
    fn civil_text(self) -> Option<[u8; 24]> {
        const FIRST: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        const LAST: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        if !(FIRST..=LAST).contains(&self.0) {
            return None;
        }
        let (secs, milli) = (self.0.div_euclid(1000), self.0.rem_euclid(1000));
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Days to a proleptic Gregorian date (H. Hinnant's civil_from_days).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, sod / 3600);
        put(14, 2, sod / 60 % 60);
        put(17, 2, sod % 60);
        put(20, 3, milli);
        Some(out)
    }

    fn to_rfc3339_slow(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            ),
            // Out of the calendar's range: fall back to the raw number, still parseable.
            Err(_) => self.0.to_string(),
        }
    }

    /// Parses RFC 3339 (any offset, any fraction; sub-millisecond digits are truncated).
    ///
    /// ```
    /// use annals_core::Timestamp;
    /// let t = Timestamp::parse_rfc3339("2021-01-01T01:00:00.000+01:00").unwrap();
    /// assert_eq!(t.to_rfc3339(), "2021-01-01T00:00:00.000Z");
    /// assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    /// ```
    pub fn parse_rfc3339(text: &str) -> Result<Self> {
        let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
            Error::invalid("timestamp", format!("{text:?} is not RFC 3339: {e}"))
        })?;
        Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or milliseconds since the Unix epoch")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A JSON document kept byte-for-byte: payloads and metadata are stored and returned
/// exactly as given, never re-parsed on reads.
///
/// [`Json::from_raw`] does not validate (the store validates every body when it is
/// appended and names the field that is not JSON); [`Json::from_value`] serialises a
/// Rust value.
///
/// ```
/// use annals_core::Json;
/// let j = Json::from_raw(r#"{ "amount" : 5 }"#);
/// assert_eq!(j.as_bytes(), br#"{ "amount" : 5 }"#); // whitespace kept
/// let v: serde_json::Value = j.parse().unwrap();
/// assert_eq!(v["amount"], 5);
/// assert_eq!(Json::from_value(&[1, 2]).unwrap().as_str(), Some("[1,2]"));
/// ```
#[derive(Clone)]
pub struct Json {
    bytes: Bytes,
    /// Whether core itself has proven that the bytes pass [`crate::limits::check_json`]
    /// (the NDJSON decoder, for a document it took verbatim from a line within every
    /// limit), so validating them again need not parse them again. Never part of the
    /// value: equality and hashing look at the bytes only.
    checked: bool,
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Json {}

impl std::hash::Hash for Json {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

impl Json {
    fn unchecked(bytes: Bytes) -> Self {
        Json {
            bytes,
            checked: false,
        }
    }

    /// Bytes that core has just proven to pass [`crate::limits::check_json`].
    pub(crate) fn checked(bytes: Bytes) -> Self {
        Json {
            bytes,
            checked: true,
        }
    }

    /// Whether core has proven the bytes valid (see [`Json::checked`]).
    pub(crate) fn is_checked(&self) -> bool {
        self.checked
    }

    /// The JSON `null`.
    ///
    /// ```
    /// assert_eq!(annals_core::Json::null().as_str(), Some("null"));
    /// ```
    pub fn null() -> Self {
        Json::unchecked(Bytes::from_static(b"null"))
    }

    /// Wraps bytes that are claimed to be JSON. Validated when appended.
    ///
    /// ```
    /// let j = annals_core::Json::from_raw("[1]");
    /// assert!(j.validate().is_ok());
    /// ```
    pub fn from_raw(bytes: impl Into<Bytes>) -> Self {
        Json::unchecked(bytes.into())
    }

    /// Serialises a value to compact JSON.
    ///
    /// ```
    /// let j = annals_core::Json::from_value(&serde_json::json!({"a": 1})).unwrap();
    /// assert_eq!(j.as_str(), Some(r#"{"a":1}"#));
    /// ```
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        serde_json::to_vec(value)
            .map(|v| Json::unchecked(Bytes::from(v)))
            .map_err(|e| Error::invalid("payload", e.to_string()))
    }

    /// Checks that the bytes are one well-formed JSON value (nesting at most 128 deep).
    /// The error text says what is wrong and at which line and column.
    ///
    /// ```
    /// assert!(annals_core::Json::from_raw("{").validate().is_err());
    /// ```
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::limits::json_problem(&self.bytes).map_or(Ok(()), Err)
    }

    /// The raw bytes.
    ///
    /// ```
    /// assert_eq!(annals_core::Json::null().as_bytes(), b"null");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The raw bytes as a shared buffer.
    ///
    /// ```
    /// assert_eq!(annals_core::Json::null().to_bytes().len(), 4);
    /// ```
    pub fn to_bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The text, when the bytes are UTF-8 (valid JSON always is).
    ///
    /// ```
    /// assert_eq!(annals_core::Json::from_raw("1").as_str(), Some("1"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Deserialises the document into a Rust value.
    ///
    /// ```
    /// let n: u32 = annals_core::Json::from_raw("42").parse().unwrap();
    /// assert_eq!(n, 42);
    /// ```
    pub fn parse<T: de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::invalid("json", e.to_string()))
    }

    /// Whether this is exactly the bytes `null`.
    ///
    /// ```
    /// assert!(annals_core::Json::null().is_null());
    /// ```
    pub fn is_null(&self) -> bool {
        &self.bytes[..] == b"null"
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::null()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "Json({s})"),
            None => write!(f, "Json({:?})", &self.bytes[..]),
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.bytes))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let text = self
            .as_str()
            .ok_or_else(|| serde::ser::Error::custom("stored JSON is not UTF-8"))?;
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text: Box<str> = raw.into();
        Ok(Json::unchecked(Bytes::from(String::from(text))))
    }
}

/// Immutable UTF-8 text backed by a shared buffer: cloning it is a reference-count
/// increment, and a backend can hand out slices of a record it read without copying.
/// Used for the string fields of [`RecordedEvent`]; compares, hashes, displays and
/// dereferences like `str`.
///
/// ```
/// use annals_core::Text;
/// let t = Text::from("Deposited");
/// assert_eq!(t, "Deposited");
/// assert_eq!(t.len(), 9); // via Deref<Target = str>
/// assert_eq!(t.as_str().to_uppercase(), "DEPOSITED");
/// let owned: String = t.clone().into();
/// assert_eq!(owned, "Deposited");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// Wraps bytes after checking they are UTF-8.
    ///
    /// ```
    /// assert!(annals_core::Text::from_utf8(bytes::Bytes::from_static(b"ok")).is_ok());
    /// assert!(annals_core::Text::from_utf8(bytes::Bytes::from_static(b"\xff")).is_err());
    /// ```
    pub fn from_utf8(bytes: Bytes) -> std::result::Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The text as a `&str`.
    ///
    /// ```
    /// assert_eq!(annals_core::Text::from("a").as_str(), "a");
    /// ```
    pub fn as_str(&self) -> &str {
        // Every constructor checks UTF-8 (from_utf8) or starts from a str/String.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying shared bytes.
    ///
    /// ```
    /// assert_eq!(annals_core::Text::from("ab").as_bytes(), b"ab");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Text::from(s.as_str())
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(Text::from)
    }
}

/// An event as the caller proposes it, before the store records it.
///
/// ```
/// use annals_core::{Json, ProposedEvent};
/// let e = ProposedEvent::new("Deposited", Json::from_raw(r#"{"amount":5}"#))
///     .with_id("evt-1")
///     .with_metadata(Json::from_raw(r#"{"correlationId":"c-1"}"#));
/// assert_eq!(e.event_type, "Deposited");
/// assert_eq!(e.id.as_deref(), Some("evt-1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProposedEvent {
    /// The event id, unique in the store; a UUID v7 is generated when `None`.
    pub id: Option<String>,
    /// The event type; may be empty.
    pub event_type: String,
    /// The payload, any JSON value, kept byte-for-byte.
    pub payload: Json,
    /// Metadata, any JSON value (usually an object); `null` when not given.
    pub metadata: Json,
    /// The timestamp; assigned by the store at append when `None`.
    pub timestamp: Option<Timestamp>,
    /// An explicit stream version; must be above the stream's current version.
    pub version: Option<Version>,
}

impl ProposedEvent {
    /// An event of this type with this payload.
    ///
    /// ```
    /// let e = annals_core::ProposedEvent::new("Opened", annals_core::Json::null());
    /// assert!(e.id.is_none());
    /// ```
    pub fn new(event_type: impl Into<String>, payload: Json) -> Self {
        ProposedEvent {
            event_type: event_type.into(),
            payload,
            ..ProposedEvent::default()
        }
    }

    /// An event whose payload is `value` serialised to JSON.
    ///
    /// ```
    /// let e = annals_core::ProposedEvent::json("Opened", &serde_json::json!({"by": "ann"})).unwrap();
    /// assert_eq!(e.payload.as_str(), Some(r#"{"by":"ann"}"#));
    /// ```
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        Ok(ProposedEvent::new(event_type, Json::from_value(value)?))
    }

    /// Sets the event id (for idempotent retries).
    ///
    /// ```
    /// let e = annals_core::ProposedEvent::default().with_id("x");
    /// assert_eq!(e.id.as_deref(), Some("x"));
    /// ```
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the metadata.
    ///
    /// ```
    /// let e = annals_core::ProposedEvent::default().with_metadata(annals_core::Json::from_raw("{}"));
    /// assert_eq!(e.metadata.as_str(), Some("{}"));
    /// ```
    pub fn with_metadata(mut self, metadata: Json) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the timestamp instead of letting the store assign it.
    ///
    /// ```
    /// let t = annals_core::Timestamp::from_millis(1);
    /// assert_eq!(annals_core::ProposedEvent::default().with_timestamp(t).timestamp, Some(t));
    /// ```
    pub fn with_timestamp(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets an explicit stream version (must be above the stream's current version).
    ///
    /// ```
    /// assert_eq!(annals_core::ProposedEvent::default().with_version(4).version, Some(4));
    /// ```
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }
}

/// An event as the store recorded it.
///
/// Serialises to the wire form of the HTTP API and of NDJSON exports (camelCase,
/// `aggregate`/`context` as `null` when empty, RFC 3339 timestamps, payload and
/// metadata verbatim).
///
/// ```
/// use annals_core::{Json, RecordedEvent, StreamId, Timestamp};
/// let e = RecordedEvent {
///     position: 1, id: "e1".into(), stream: StreamId::new("acc-1"), version: 1,
///     event_type: "Opened".into(), timestamp: Timestamp::from_millis(0),
///     payload: Json::from_raw("{ }"), metadata: Json::null(),
///     commit_id: "c1".into(), commit_sequence: 0, dispatched: false,
/// };
/// let line = serde_json::to_string(&e).unwrap();
/// assert!(line.contains(r#""payload":{ }"#));
/// let back: RecordedEvent = serde_json::from_str(&line).unwrap();
/// assert_eq!(back, e);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The store-wide position.
    pub position: Position,
    /// The event id, unique in the store.
    pub id: Text,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// The event's version inside its stream (1-based).
    pub version: Version,
    /// The event type.
    pub event_type: Text,
    /// When the event happened (assigned at append unless given).
    pub timestamp: Timestamp,
    /// The payload, byte-for-byte as appended.
    pub payload: Json,
    /// The metadata, byte-for-byte as appended.
    pub metadata: Json,
    /// Shared by every event of one append.
    pub commit_id: Text,
    /// The event's index inside its append.
    pub commit_sequence: u32,
    /// Whether a publisher has marked the event dispatched.
    pub dispatched: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    position: Position,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    aggregate: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    context: Option<std::borrow::Cow<'a, str>>,
    version: Version,
    #[serde(rename = "type", default, borrow)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    timestamp: Timestamp,
    #[serde(default = "Json::null")]
    payload: Json,
    #[serde(default = "Json::null")]
    metadata: Json,
    #[serde(borrow)]
    commit_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    commit_sequence: u32,
    #[serde(default)]
    dispatched: bool,
}

fn optional(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    (!s.is_empty()).then_some(std::borrow::Cow::Borrowed(s))
}

impl Serialize for RecordedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        WireEvent {
            position: self.position,
            id: self.id.as_str().into(),
            aggregate_id: self.stream.id.as_str().into(),
            aggregate: optional(&self.stream.aggregate),
            context: optional(&self.stream.context),
            version: self.version,
            event_type: Some(self.event_type.as_str().into()),
            timestamp: self.timestamp,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            commit_id: self.commit_id.as_str().into(),
            commit_sequence: self.commit_sequence,
            dispatched: self.dispatched,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RecordedEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let w = WireEvent::deserialize(deserializer)?;
        Ok(RecordedEvent {
            position: w.position,
            id: w.id.into_owned().into(),
            stream: StreamId {
                context: w.context.map(|c| c.into_owned()).unwrap_or_default(),
                aggregate: w.aggregate.map(|c| c.into_owned()).unwrap_or_default(),
                id: w.aggregate_id.into_owned(),
            },
            version: w.version,
            event_type: w
                .event_type
                .map(|c| c.into_owned())
                .unwrap_or_default()
                .into(),
            timestamp: w.timestamp,
            payload: w.payload,
            metadata: w.metadata,
            commit_id: w.commit_id.into_owned().into(),
            commit_sequence: w.commit_sequence,
            dispatched: w.dispatched,
        })
    }
}

/// The order of a read.
///
/// ```
/// assert_eq!(annals_core::Direction::default(), annals_core::Direction::Forward);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Ascending positions / versions.
    #[default]
    Forward,
    /// Descending positions / versions.
    Backward,
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    /// The hand-written formatter agrees with the `time` crate's calendar everywhere it
    /// is used, including leap days, century years and both ends of its range.
    #[test]
    fn fast_rfc3339_matches_the_calendar_crate() {
        let edges = [
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
            0,
            -1,
            951_782_400_000,   // 2000-02-29
            4_107_542_400_000, // 2100-03-01
            -2_203_891_200_000,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let span = 253_402_300_800_000_i64 + 62_167_219_200_000;
        let random = (0..200_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % span as u64) as i64 - 62_167_219_200_000
        });
        for ms in edges.into_iter().chain(random) {
            let t = Timestamp::from_millis(ms);
            assert_eq!(t.to_rfc3339(), t.to_rfc3339_slow(), "{ms} ms");
        }
    }
}
