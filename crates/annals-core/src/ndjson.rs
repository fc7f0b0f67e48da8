//! The NDJSON codec of exports and imports: one recorded event (or one secret) per line.
//!
//! An event line is exactly the JSON object `GET /v1/stores/{s}/events` returns for the
//! event (API.md), fields in this order: `position`, `id`, `aggregateId`, `aggregate`,
//! `context`, `version`, `type`, `timestamp`, `payload`, `metadata`, `commitId`,
//! `commitSequence`, `dispatched`. `payload` and `metadata` are written byte-for-byte as
//! stored, so an export followed by an import reproduces every byte. Two extensions keep
//! that promise where a line cannot hold the stored bytes verbatim (both are what the
//! HTTP server already uses, or read back by [`decode_event`]):
//!
//! - `payloadPadding` / `metadataPadding`: `[leading, trailing]` whitespace around the
//!   document, present only when there is some;
//! - `payloadRaw` / `metadataRaw`: the exact stored text as a JSON string, present only
//!   when the document contains a line break between its tokens (which would split the
//!   line). The `payload`/`metadata` field then holds the same document with the
//!   whitespace between tokens removed, so a reader that ignores the extension still
//!   gets the same JSON value.
//!
//! A secret line is `{"idx":0,"id":"user-1","secret":"..."}`, with `"secret":null` for a
//! deleted secret (a tombstone).
//!
//! [`LineReader`] reads lines from any [`AsyncBufRead`], tracking each line's number and
//! byte offset, refusing lines longer than a limit before buffering them, and leaving a
//! last line that has no newline yet unread (an export still being written, a truncated
//! copy), so an import that resumes from the reported byte offset sees it whole.
//!
//! ```
//! use annals_core::ndjson::{decode_event, encode_event};
//! use annals_core::{Json, RecordedEvent, StreamId, Timestamp};
//! let e = RecordedEvent {
//!     position: 1, id: "e1".into(), stream: StreamId::new("acc-1").with_aggregate("account"),
//!     version: 1, event_type: "Opened".into(), timestamp: Timestamp::from_millis(0),
//!     payload: Json::from_raw("{\"owner\":\n \"ann\"}"), metadata: Json::null(),
//!     commit_id: "c1".into(), commit_sequence: 0, dispatched: false,
//! };
//! let line = encode_event(&e).unwrap();
//! assert!(line.ends_with(b"\n"));
//! assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
//! assert_eq!(decode_event(&line[..line.len() - 1]).unwrap(), e);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::error::{Error, Result};
use crate::limits::{MAX_JSON_BYTES, MAX_JSON_DEPTH};
use crate::model::{Json, Position, RecordedEvent, StreamId, Timestamp};
use crate::store::{Secret, SecretImport};

/// The default longest line [`LineReader`] accepts, in bytes (newline excluded): room
/// for a payload and metadata of the largest size the store accepts, plus the other
/// fields.
pub const DEFAULT_MAX_LINE_BYTES: usize = 2 * MAX_JSON_BYTES + 64 * 1024;

/// The deepest nesting of arrays and objects a line may carry: the documents' limit plus
/// the line's own object and the padding arrays.
const MAX_LINE_DEPTH: usize = MAX_JSON_DEPTH + 1;

/// Appends `event` as one NDJSON line (newline included) to `out`.
///
/// Fails with [`Error::Corrupted`] only when a stored document is not UTF-8.
///
/// ```
/// use annals_core::{ndjson::write_event, Json, RecordedEvent, StreamId, Timestamp};
/// let e = RecordedEvent {
///     position: 7, id: "e7".into(), stream: StreamId::new("acc-1"), version: 2,
///     event_type: "Deposited".into(), timestamp: Timestamp::from_millis(1_609_459_200_000),
///     payload: Json::from_raw(r#"{"amount":5}"#), metadata: Json::null(),
///     commit_id: "c7".into(), commit_sequence: 0, dispatched: true,
/// };
/// let mut out = Vec::new();
/// write_event(&mut out, &e).unwrap();
/// assert_eq!(
///     String::from_utf8(out).unwrap(),
///     r#"{"position":7,"id":"e7","aggregateId":"acc-1","aggregate":null,"context":null,"version":2,"type":"Deposited","timestamp":"2021-01-01T00:00:00.000Z","payload":{"amount":5},"metadata":null,"commitId":"c7","commitSequence":0,"dispatched":true}"#.to_owned() + "\n"
/// );
/// ```
pub fn write_event(out: &mut Vec<u8>, event: &RecordedEvent) -> Result<()> {
    let payload = split_document(event, "payload", event.payload.as_bytes())?;
    let metadata = split_document(event, "metadata", event.metadata.as_bytes())?;
    out.extend_from_slice(b"{\"position\":");
    push_number(out, event.position);
    out.extend_from_slice(b",\"id\":");
    push_string(out, &event.id);
    out.extend_from_slice(b",\"aggregateId\":");
    push_string(out, &event.stream.id);
    out.extend_from_slice(b",\"aggregate\":");
    push_optional(out, &event.stream.aggregate);
    out.extend_from_slice(b",\"context\":");
    push_optional(out, &event.stream.context);
    out.extend_from_slice(b",\"version\":");
    push_number(out, event.version);
    out.extend_from_slice(b",\"type\":");
    push_string(out, &event.event_type);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(event.timestamp.to_rfc3339().as_bytes());
    out.extend_from_slice(b"\",\"payload\":");
    payload.push_value(out);
    out.extend_from_slice(b",\"metadata\":");
    metadata.push_value(out);
    out.extend_from_slice(b",\"commitId\":");
    push_string(out, &event.commit_id);
    out.extend_from_slice(b",\"commitSequence\":");
    push_number(out, u64::from(event.commit_sequence));
    out.extend_from_slice(b",\"dispatched\":");
    out.extend_from_slice(if event.dispatched { b"true" } else { b"false" });
    payload.push_extensions(out, "payload");
    metadata.push_extensions(out, "metadata");
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// `event` as one NDJSON line, newline included (see [`write_event`]).
///
/// ```
/// use annals_core::{ndjson::encode_event, Json, RecordedEvent, StreamId, Timestamp};
/// let e = RecordedEvent {
///     position: 1, id: "e1".into(), stream: StreamId::new("s"), version: 1,
///     event_type: "".into(), timestamp: Timestamp::from_millis(0),
///     payload: Json::from_raw(" 1 "), metadata: Json::null(),
///     commit_id: "c".into(), commit_sequence: 0, dispatched: false,
/// };
/// let line = String::from_utf8(encode_event(&e).unwrap()).unwrap();
/// assert!(line.contains(r#""payload":1,"#));
/// assert!(line.contains(r#""payloadPadding":[" "," "]"#));
/// ```
pub fn encode_event(event: &RecordedEvent) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256 + event.payload.as_bytes().len());
    write_event(&mut out, event)?;
    Ok(out)
}

/// A stored document cut into what a line can carry.
struct Document<'a> {
    lead: &'a str,
    core: &'a str,
    trail: &'a str,
    /// The document without whitespace between tokens, when `core` has line breaks.
    compact: Option<String>,
}

impl Document<'_> {
    fn push_value(&self, out: &mut Vec<u8>) {
        match &self.compact {
            Some(c) => out.extend_from_slice(c.as_bytes()),
            None => out.extend_from_slice(self.core.as_bytes()),
        }
    }

    fn push_extensions(&self, out: &mut Vec<u8>, name: &str) {
        if self.compact.is_some() {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"Raw\":");
            let mut whole = String::with_capacity(self.lead.len() + self.core.len());
            whole.push_str(self.lead);
            whole.push_str(self.core);
            whole.push_str(self.trail);
            push_string(out, &whole);
        } else if !self.lead.is_empty() || !self.trail.is_empty() {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"Padding\":[");
            push_string(out, self.lead);
            out.push(b',');
            push_string(out, self.trail);
            out.push(b']');
        }
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn split_document<'a>(event: &RecordedEvent, field: &str, bytes: &'a [u8]) -> Result<Document<'a>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::Corrupted {
        location: format!("event at position {} ({field})", event.position),
        detail: format!("stored document is not UTF-8: {e}"),
    })?;
    let core_start = text.len() - text.trim_start_matches(is_ws).len();
    let core_end = text.trim_end_matches(is_ws).len().max(core_start);
    let core = &text[core_start..core_end];
    let compact = core
        .bytes()
        .any(|b| b == b'\n' || b == b'\r')
        .then(|| without_whitespace(core));
    // An empty document (never accepted by the store) still has to keep the line valid.
    let core = if core.is_empty() { "null" } else { core };
    Ok(Document {
        lead: &text[..core_start],
        core,
        trail: &text[core_end..],
        compact,
    })
}

/// `json` without the whitespace between its tokens (strings untouched).
fn without_whitespace(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !is_ws(c) {
            out.push(c);
        }
    }
    out
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn push_optional(out: &mut Vec<u8>, s: &str) {
    if s.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        push_string(out, s);
    }
}

/// The wire form of an event line, as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventLine<'a> {
    #[serde(default)]
    position: Option<Position>,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    aggregate: Option<Borrowed<'a>>,
    #[serde(default, borrow)]
    context: Option<Borrowed<'a>>,
    version: u64,
    #[serde(rename = "type", default, borrow)]
    event_type: Option<Borrowed<'a>>,
    timestamp: Timestamp,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    commit_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    commit_sequence: u32,
    #[serde(default)]
    dispatched: bool,
    #[serde(default)]
    payload_padding: Option<[String; 2]>,
    #[serde(default)]
    metadata_padding: Option<[String; 2]>,
    #[serde(default)]
    payload_raw: Option<String>,
    #[serde(default)]
    metadata_raw: Option<String>,
}

/// A string borrowed from the line unless it has escapes. (`#[serde(borrow)]` borrows
/// only a bare `Cow` field; inside an `Option`, serde's `Cow` copies every string.)
struct Borrowed<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Borrowed<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Borrowed(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Borrowed(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(Borrowed(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// A line's document: the exact text (`…Raw`), the padded core (`…Padding`), or the
/// core as it stands in the line. Only called on a line that passed [`checked_text`]:
/// a document taken verbatim from it (not longer than a document may be) is then
/// proven valid JSON — serde_json skipped over it with the same parser
/// [`crate::limits::check_json`] uses, the line is UTF-8, and the line's nesting limit
/// is the documents' plus one for the line's own object — so validation does not parse
/// it again. Padding and raw text are not proven.
fn document(raw: Option<&RawValue>, padding: Option<[String; 2]>, exact: Option<String>) -> Json {
    if let Some(exact) = exact {
        return Json::from_raw(exact);
    }
    let core = raw.map_or("null", RawValue::get);
    match padding {
        Some([lead, trail]) => {
            let mut s = String::with_capacity(lead.len() + core.len() + trail.len());
            s.push_str(&lead);
            s.push_str(core);
            s.push_str(&trail);
            Json::from_raw(s)
        }
        None if core.len() <= MAX_JSON_BYTES => {
            Json::checked(bytes::Bytes::copy_from_slice(core.as_bytes()))
        }
        None => Json::from_raw(bytes::Bytes::copy_from_slice(core.as_bytes())),
    }
}

/// Decodes one event line (without its newline). `position` is optional (0 when absent;
/// imports ignore it); `id`, `aggregateId`, `version`, `timestamp` and `commitId` are
/// required. Errors are [`Error::InvalidInput`] with `field` = `line` and a reason that
/// names the field (serde's message) and the column; [`LineReader`] callers add the
/// line number and byte offset with [`at_line`].
///
/// ```
/// use annals_core::ndjson::decode_event;
/// let e = decode_event(br#"{"id":"e1","aggregateId":"a","version":1,"timestamp":"2021-01-01T00:00:00.000Z","payload":{"x":1},"commitId":"c"}"#).unwrap();
/// assert_eq!(e.payload.as_str(), Some(r#"{"x":1}"#));
/// let err = decode_event(br#"{"id":"e1","aggregateId":"a","timestamp":0,"commitId":"c"}"#).unwrap_err();
/// assert!(err.to_string().contains("missing field `version`"));
/// // A value of the wrong type is named by its field:
/// let err = decode_event(br#"{"id":"e1","aggregateId":"a","version":"two","timestamp":0,"commitId":"c"}"#).unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid input at version: invalid type: string "two", expected u64"#);
/// ```
pub fn decode_event(line: &[u8]) -> Result<RecordedEvent> {
    let text = checked_text(line)?;
    let w: EventLine<'_> = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) => return Err(line_error::<EventLine<'_>>(text, e)),
    };
    Ok(RecordedEvent {
        position: w.position.unwrap_or(0),
        id: w.id.as_ref().into(),
        stream: StreamId {
            context: w.context.map(|c| c.0.into_owned()).unwrap_or_default(),
            aggregate: w.aggregate.map(|c| c.0.into_owned()).unwrap_or_default(),
            id: w.aggregate_id.into_owned(),
        },
        version: w.version,
        event_type: w.event_type.as_ref().map_or("", |t| &t.0).into(),
        timestamp: w.timestamp,
        payload: document(w.payload, w.payload_padding, w.payload_raw),
        metadata: document(w.metadata, w.metadata_padding, w.metadata_raw),
        commit_id: w.commit_id.as_ref().into(),
        commit_sequence: w.commit_sequence,
        dispatched: w.dispatched,
    })
}

/// The error of a line that does not decode as a `T`, naming the field where the
/// decoder stopped (`version`, `payload`…) when it stopped inside one, else the line.
/// The line is decoded a second time to find the field's path: errors are rare, and the
/// first decode stays as fast as it was.
fn line_error<'a, T: serde::Deserialize<'a>>(text: &'a str, error: serde_json::Error) -> Error {
    let mut decoder = serde_json::Deserializer::from_str(text);
    let path = match serde_path_to_error::deserialize::<_, T>(&mut decoder) {
        Err(e) => e.path().to_string(),
        Ok(_) => String::new(),
    };
    let message = error.to_string();
    match path.as_str() {
        "" | "." | "?" => Error::invalid("line", message),
        field => {
            // The column is of no use once the field is named.
            let reason = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(reason, _)| reason);
            Error::invalid(field, reason)
        }
    }
}

/// The line as text, refusing invalid UTF-8 and nesting deeper than the store accepts
/// (serde_json checks neither when it only skips over a raw document).
fn checked_text(line: &[u8]) -> Result<&str> {
    let text = std::str::from_utf8(line).map_err(|e| {
        Error::invalid(
            "line",
            format!(
                "invalid UTF-8 at byte {} of the line (binary data?)",
                e.valid_up_to()
            ),
        )
    })?;
    if let Some(depth) = crate::limits::depth_above(line, MAX_LINE_DEPTH) {
        return Err(Error::invalid(
            "line",
            format!(
                "arrays and objects nest {depth} deep; the limit for a document is {MAX_JSON_DEPTH}"
            ),
        ));
    }
    Ok(text)
}

#[derive(Serialize)]
struct SecretOut<'a> {
    idx: u64,
    id: &'a str,
    secret: Option<&'a str>,
}

#[derive(Deserialize)]
struct SecretLine {
    #[serde(default)]
    idx: Option<u64>,
    id: String,
    secret: Option<String>,
}

/// Appends `secret` as one NDJSON line `{"idx","id","secret"}` (`null` for a tombstone).
///
/// ```
/// use annals_core::{ndjson::write_secret, Secret};
/// let mut out = Vec::new();
/// write_secret(&mut out, &Secret { idx: 3, id: "user-1".into(), secret: None });
/// assert_eq!(out, b"{\"idx\":3,\"id\":\"user-1\",\"secret\":null}\n");
/// ```
pub fn write_secret(out: &mut Vec<u8>, secret: &Secret) {
    // Serialising plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(
        &mut *out,
        &SecretOut {
            idx: secret.idx,
            id: &secret.id,
            secret: secret.secret.as_deref(),
        },
    );
    out.push(b'\n');
}

/// Decodes one secret line (without its newline): `{"idx"?, "id", "secret"}`, where a
/// missing `secret` or `null` is a tombstone.
///
/// ```
/// use annals_core::ndjson::decode_secret;
/// let s = decode_secret(br#"{"idx":0,"id":"u1","secret":"k"}"#).unwrap();
/// assert_eq!((s.idx, s.id.as_str(), s.secret.as_deref()), (Some(0), "u1", Some("k")));
/// assert!(decode_secret(br#"{"idx":0}"#).is_err());
/// ```
pub fn decode_secret(line: &[u8]) -> Result<SecretImport> {
    let text = checked_text(line)?;
    let s: SecretLine = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => return Err(line_error::<SecretLine>(text, e)),
    };
    if let Some(v) = &s.secret {
        crate::limits::check_text("secret", v)?;
    }
    Ok(SecretImport {
        idx: s.idx,
        id: s.id,
        secret: s.secret,
    })
}

/// Rewrites an error about one line so it names the line number and byte offset:
/// `InvalidInput { field: "line 3 (byte offset 120)[.field]", .. }`.
///
/// ```
/// let e = annals_core::ndjson::at_line(annals_core::Error::invalid("line", "bad"), 3, 120);
/// assert_eq!(e.to_string(), "invalid input at line 3 (byte offset 120): bad");
/// ```
pub fn at_line(error: Error, line: u64, byte_offset: u64) -> Error {
    let place = format!("line {line} (byte offset {byte_offset})");
    match error {
        Error::InvalidInput { field, reason } => {
            let field = if field == "line" {
                place
            } else {
                format!("{place}.{field}")
            };
            Error::InvalidInput { field, reason }
        }
        other => other,
    }
}

/// One line read by [`LineReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line's number, from 1 at the reader's start.
    pub number: u64,
    /// The byte offset of its first byte in the source.
    pub offset: u64,
    /// The offset of the first byte after its newline (where the next line starts).
    pub end: u64,
    /// Its bytes without the newline (and without a `\r` before it).
    pub bytes: &'a [u8],
}

/// Reads NDJSON lines from an [`AsyncBufRead`], tracking line numbers and byte offsets.
///
/// - A line longer than the limit ([`DEFAULT_MAX_LINE_BYTES`] by default) is refused
///   with [`Error::InvalidInput`] naming its number and offset, without buffering it.
/// - Blank lines are skipped (they count for line numbers).
/// - A last line without a newline is left unread: [`LineReader::next_line`] returns
///   `None` and [`LineReader::unterminated`] says how many bytes were left, so a resumed
///   import sees the line whole once it is complete. [`LineReader::accept_unterminated`]
///   turns this off (for a body that is known to be complete).
///
/// ```
/// use annals_core::ndjson::LineReader;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut r = LineReader::new(&b"{\"a\":1}\n\n{\"b\":2}\n{\"c\""[..]);
/// let l = r.next_line().await.unwrap().unwrap();
/// assert_eq!((l.number, l.offset, l.bytes), (1, 0, &b"{\"a\":1}"[..]));
/// let l = r.next_line().await.unwrap().unwrap();
/// assert_eq!((l.number, l.offset, l.end), (3, 9, 17));
/// assert!(r.next_line().await.unwrap().is_none());
/// assert_eq!(r.unterminated(), 4);
/// assert_eq!(r.offset(), 17);
/// # });
/// ```
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    offset: u64,
    next_number: u64,
    max_line: usize,
    accept_unterminated: bool,
    unterminated: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// A reader whose first byte is at offset 0 and whose first line is line 1.
    ///
    /// ```
    /// let r = annals_core::ndjson::LineReader::new(&b""[..]);
    /// assert_eq!(r.offset(), 0);
    /// ```
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::new(),
            offset: 0,
            next_number: 1,
            max_line: DEFAULT_MAX_LINE_BYTES,
            accept_unterminated: false,
            unterminated: 0,
        }
    }

    /// Counts offsets from `offset` (the source was opened there, e.g. to resume an
    /// import) and numbers the first line `line`.
    ///
    /// ```
    /// let r = annals_core::ndjson::LineReader::new(&b""[..]).starting_at(100, 5);
    /// assert_eq!(r.offset(), 100);
    /// ```
    pub fn starting_at(mut self, offset: u64, line: u64) -> Self {
        self.offset = offset;
        self.next_number = line;
        self
    }

    /// Sets the longest line accepted, in bytes.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut r = annals_core::ndjson::LineReader::new(&b"0123456789\n"[..]).max_line_bytes(4);
    /// let err = r.next_line().await.unwrap_err();
    /// assert!(err.to_string().starts_with("invalid input at line 1 (byte offset 0)"));
    /// # });
    /// ```
    pub fn max_line_bytes(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// Also returns a last line that has no newline.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut r = annals_core::ndjson::LineReader::new(&b"{}"[..]).accept_unterminated(true);
    /// assert_eq!(r.next_line().await.unwrap().unwrap().bytes, b"{}");
    /// # });
    /// ```
    pub fn accept_unterminated(mut self, accept: bool) -> Self {
        self.accept_unterminated = accept;
        self
    }

    /// The offset of the first byte not yet returned in a line (where the next line
    /// starts).
    ///
    /// ```
    /// assert_eq!(annals_core::ndjson::LineReader::new(&b""[..]).offset(), 0);
    /// ```
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The number the next line will get.
    ///
    /// ```
    /// assert_eq!(annals_core::ndjson::LineReader::new(&b""[..]).next_number(), 1);
    /// ```
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// How many bytes of an unterminated last line were left unread (0 when the source
    /// ended with a newline).
    ///
    /// ```
    /// assert_eq!(annals_core::ndjson::LineReader::new(&b""[..]).unterminated(), 0);
    /// ```
    pub fn unterminated(&self) -> usize {
        self.unterminated
    }

    /// The next non-blank line, or `None` at the end of the source.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut r = annals_core::ndjson::LineReader::new(&b"x\r\n"[..]);
    /// assert_eq!(r.next_line().await.unwrap().unwrap().bytes, b"x");
    /// assert!(r.next_line().await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn next_line(&mut self) -> Result<Option<Line<'_>>> {
        loop {
            self.buf.clear();
            let number = self.next_number;
            let start = self.offset;
            let mut terminated = false;
            loop {
                let available = self.inner.fill_buf().await.map_err(|e| {
                    Error::invalid(
                        format!("line {number} (byte offset {start})"),
                        format!("cannot read the input: {e}"),
                    )
                })?;
                if available.is_empty() {
                    break;
                }
                let (take, found) = match memchr::memchr(b'\n', available) {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                let content = if found { take - 1 } else { take };
                if self.buf.len() + content > self.max_line {
                    return Err(Error::invalid(
                        format!("line {number} (byte offset {start})"),
                        format!(
                            "the line is longer than the limit of {} bytes",
                            self.max_line
                        ),
                    ));
                }
                self.buf.extend_from_slice(&available[..take]);
                self.inner.consume(take);
                if found {
                    terminated = true;
                    break;
                }
            }
            if !terminated {
                if self.buf.is_empty() || !self.accept_unterminated {
                    self.unterminated = self.buf.len();
                    return Ok(None);
                }
                self.unterminated = 0;
            }
            let end = start + self.buf.len() as u64;
            self.offset = end;
            self.next_number += 1;
            let mut len = self.buf.len();
            if terminated {
                len -= 1;
            }
            if len > 0 && self.buf[len - 1] == b'\r' {
                len -= 1;
            }
            if self.buf[..len]
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
            {
                continue;
            }
            return Ok(Some(Line {
                number,
                offset: start,
                end,
                bytes: &self.buf[..len],
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn event(payload: &str, metadata: &str) -> RecordedEvent {
        RecordedEvent {
            position: 3,
            id: "e\"1\n".into(),
            stream: StreamId::new("a").with_context("c"),
            version: 9,
            event_type: "T".into(),
            timestamp: Timestamp::from_millis(1_700_000_000_123),
            payload: Json::from_raw(payload.to_owned()),
            metadata: Json::from_raw(metadata.to_owned()),
            commit_id: "c".into(),
            commit_sequence: 4,
            dispatched: true,
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        for (p, m) in [
            ("{}", "null"),
            (" {\"a\" : [1, 2]}\n", "\t{\"k\":\"v\\n\"}"),
            ("{\n  \"a\": \"x y\",\r\n \"b\": [1,\n2]\n}", "[\n]"),
            ("\"text with \\\" quote\"", "1.50"),
        ] {
            let e = event(p, m);
            let line = encode_event(&e).unwrap();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{p:?}");
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["position"], 3);
            assert_eq!(decode_event(&line[..line.len() - 1]).unwrap(), e);
        }
    }

    #[test]
    fn optional_strings_with_and_without_escapes() {
        let line = br#"{"id":"e","aggregateId":"s","aggregate":"a\"b","context":"ctx","version":1,"type":"T\u0041","timestamp":0,"commitId":"c"}"#;
        let e = decode_event(line).unwrap();
        assert_eq!(
            (e.stream.aggregate.as_str(), e.stream.context.as_str()),
            ("a\"b", "ctx")
        );
        assert_eq!(&*e.event_type, "TA");
        let bare = decode_event(br#"{"id":"e","aggregateId":"s","aggregate":null,"version":1,"timestamp":0,"commitId":"c"}"#).unwrap();
        assert_eq!(
            (bare.stream.aggregate.as_str(), &*bare.event_type),
            ("", "")
        );
        assert!(decode_event(
            br#"{"id":"e","aggregateId":"s","type":5,"version":1,"timestamp":0,"commitId":"c"}"#
        )
        .is_err());
    }

    #[test]
    fn only_documents_taken_verbatim_from_the_line_skip_validation() {
        let plain = decode_event(br#"{"id":"e","aggregateId":"s","version":1,"timestamp":0,"commitId":"c","payload":{"a":[1]}}"#).unwrap();
        assert!(plain.payload.is_checked() && plain.metadata.is_checked());
        crate::import::validate_event(0, &plain).unwrap();
        // Padding is not proven: non-whitespace in it is still refused.
        let padded = decode_event(br#"{"id":"e","aggregateId":"s","version":1,"timestamp":0,"commitId":"c","payload":{},"payloadPadding":["x",""]}"#).unwrap();
        assert!(!padded.payload.is_checked());
        let err = crate::import::validate_event(3, &padded).unwrap_err();
        assert!(err.to_string().contains("events[3].payload"), "{err}");
        let raw = decode_event(br#"{"id":"e","aggregateId":"s","version":1,"timestamp":0,"commitId":"c","payload":{},"metadataRaw":"{oops"}"#).unwrap();
        assert!(!raw.metadata.is_checked());
        assert!(crate::import::validate_event(0, &raw).is_err());
        // Equality ignores the mark.
        assert_eq!(plain.payload, Json::from_raw(r#"{"a":[1]}"#));
    }

    #[test]
    fn matches_the_recorded_event_serialisation() {
        let e = event(r#"{"a":1}"#, "null");
        let ours: serde_json::Value = serde_json::from_slice(&encode_event(&e).unwrap()).unwrap();
        let theirs = serde_json::to_value(&e).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn hostile_lines_are_typed_errors() {
        let deep = format!("{{\"payload\":{}{}}}", "[".repeat(200), "]".repeat(200));
        for bad in [
            &b"\xff\xfe\x00garbage"[..],
            b"{\"id\":\"\xc3\x28\"}",
            deep.as_bytes(),
            b"[1,2]",
            b"{\"id\":\"e\"}",
        ] {
            let err = decode_event(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{err}");
        }
    }

    #[tokio::test]
    async fn enormous_line_is_refused_without_reading_it_all() {
        let big = vec![b'x'; 10_000];
        let mut r = LineReader::new(&big[..]).max_line_bytes(100);
        let err = r.next_line().await.unwrap_err();
        assert!(err.to_string().contains("line 1 (byte offset 0)"));
    }

    #[tokio::test]
    async fn reader_offsets_with_resume() {
        let data = b"a\nbb\r\nccc";
        let mut r = LineReader::new(&data[2..]).starting_at(2, 2);
        let l = r.next_line().await.unwrap().unwrap();
        assert_eq!((l.number, l.offset, l.end, l.bytes), (2, 2, 6, &b"bb"[..]));
        assert!(r.next_line().await.unwrap().is_none());
        assert_eq!((r.offset(), r.unterminated()), (6, 3));
    }
}
