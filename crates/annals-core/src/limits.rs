//! The documented size limits, and the checks that enforce them.
//!
//! Every backend applies the same limits (through [`crate::append`] and the store
//! operations), so an input refused by one backend is refused by all.

use crate::error::{Error, Result};
use crate::model::Timestamp;

/// Longest event id, commit id, stream id, aggregate type, context, event type, snapshot
/// key, snapshot id or secret id, in bytes (UTF-8).
pub const MAX_NAME_BYTES: usize = 256;

/// Largest payload or metadata document, in bytes.
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// Deepest nesting of arrays and objects inside a payload or metadata document.
pub const MAX_JSON_DEPTH: usize = 128;

/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 100_000;

/// Largest secret value or keyed-snapshot content, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// The earliest timestamp a store takes: `0000-01-01T00:00:00.000Z`, in milliseconds.
pub const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;

/// The latest timestamp a store takes: `9999-12-31T23:59:59.999Z`, in milliseconds. The
/// wire writes timestamps as RFC 3339, whose years have four digits.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Checks that a given timestamp lies in the years 0000 to 9999 (what RFC 3339 can
/// write, so every timestamp a store returns is one).
///
/// ```
/// use annals_core::{limits::check_timestamp, Timestamp};
/// assert!(check_timestamp("timestamp", Timestamp::from_millis(0)).is_ok());
/// let err = check_timestamp("timestamp", Timestamp::from_millis(1_000_000_000_000_000)).unwrap_err();
/// assert!(err.to_string().contains("years 0000 to 9999"));
/// ```
pub fn check_timestamp(field: &str, timestamp: Timestamp) -> Result<()> {
    let ms = timestamp.as_millis();
    if !(MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&ms) {
        return Err(Error::invalid(
            field,
            format!("{ms} ms since the epoch is outside the years 0000 to 9999"),
        ));
    }
    Ok(())
}

/// Checks a name-like string: at most [`MAX_NAME_BYTES`], no NUL character, and
/// non-empty when `required`.
///
/// ```
/// use annals_core::limits::check_name;
/// assert!(check_name("id", "acc-1", true).is_ok());
/// assert!(check_name("id", "", true).is_err());
/// assert!(check_name("aggregate", "", false).is_ok());
/// assert!(check_name("id", &"x".repeat(257), true).is_err());
/// ```
pub fn check_name(field: &str, value: &str, required: bool) -> Result<()> {
    if required && value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; the limit is {MAX_NAME_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain a NUL character"));
    }
    Ok(())
}

/// Checks a text value (secret, snapshot content) against [`MAX_TEXT_BYTES`].
///
/// ```
/// assert!(annals_core::limits::check_text("secret", "s3cr3t").is_ok());
/// ```
pub fn check_text(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; the limit is {MAX_TEXT_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Checks that `bytes` is one JSON value within [`MAX_JSON_BYTES`] and
/// [`MAX_JSON_DEPTH`], in UTF-8.
///
/// ```
/// use annals_core::limits::check_json;
/// assert!(check_json("payload", br#"{"a":[1,2]}"#).is_ok());
/// let err = check_json("payload", b"\xff").unwrap_err();
/// assert!(err.to_string().starts_with("invalid input at payload: not JSON"));
/// assert!(check_json("payload", "[".repeat(200).as_bytes()).is_err());
/// let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
/// assert!(check_json("payload", deep(128).as_bytes()).is_ok());
/// assert!(check_json("payload", deep(129).as_bytes()).is_err());
/// assert!(check_json("payload", b"\"\xff\"").is_err());
/// ```
pub fn check_json(field: &str, bytes: &[u8]) -> Result<()> {
    if bytes.len() > MAX_JSON_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "is {} bytes long; the limit is {MAX_JSON_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    json_problem(bytes).map_or(Ok(()), |reason| {
        Err(Error::invalid(field, format!("not JSON: {reason}")))
    })
}

/// [`check_json`] of a document, skipped when core has already proven it (a document
/// the NDJSON decoder took verbatim from a line that passed the same checks).
pub(crate) fn check_document(field: &str, json: &crate::model::Json) -> Result<()> {
    if json.is_checked() {
        return Ok(());
    }
    check_json(field, json.as_bytes())
}

/// What makes `bytes` unacceptable as a JSON document, if anything (size aside).
pub(crate) fn json_problem(bytes: &[u8]) -> Option<String> {
    // serde_json checks neither UTF-8 inside strings nor nesting depth when it only
    // skips over a value, so both are checked here; a syntax error is reported first.
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(utf8) => {
            return Some(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Err(e) => e.to_string(),
                    Ok(_) => format!("invalid UTF-8: {utf8}"),
                },
            )
        }
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Some(e.to_string());
    }
    depth_above(bytes, MAX_JSON_DEPTH)
        .map(|depth| format!("arrays and objects nest {depth} deep; the limit is {MAX_JSON_DEPTH}"))
}

/// The nesting depth of arrays and objects in well-formed JSON, when it is above
/// `limit`.
pub(crate) fn depth_above(bytes: &[u8], limit: usize) -> Option<usize> {
    // Nesting needs an opening bracket per level, so a document with no more of them
    // than the limit is within it. Counting them is one vectorised pass (`[` and `{`
    // differ only in bit 0x20; byte-wide counters, summed every 255 bytes), while the
    // exact scan below pays a search per string.
    let openers: usize = bytes
        .chunks(255)
        .map(|chunk| {
            usize::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{')),
            )
        })
        .sum();
    if openers <= limit {
        return None;
    }
    let depth = nesting_depth(bytes);
    (depth > limit).then_some(depth)
}

/// The deepest nesting of arrays and objects in well-formed JSON (for other input, a
/// number the parser's own refusal makes irrelevant).
pub(crate) fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            // Strings are most of a document: jump from quote or backslash to the next one.
            b'"' => loop {
                let Some(rest) = bytes.get(i..) else {
                    return max;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    Some(at) if rest.get(at) == Some(&b'\\') => i += at + 2,
                    Some(at) => {
                        i += at + 1;
                        break;
                    }
                    // An unterminated string: the parser refuses the document anyway.
                    None => return max,
                }
            },
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_above_counts_only_real_nesting() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(depth_above(deep(4).as_bytes(), 4), None);
        assert_eq!(depth_above(deep(5).as_bytes(), 4), Some(5));
        // Many brackets, little nesting: the exact scan decides.
        let flat = format!("[{}]", vec!["[1]"; 50].join(","));
        assert_eq!(depth_above(flat.as_bytes(), 4), None);
        let quoted = format!("{{\"a\":\"{}\",\"b\":[[[[[0]]]]]}}", "{[".repeat(40));
        assert_eq!(depth_above(quoted.as_bytes(), 5), Some(6));
        assert_eq!(depth_above(quoted.as_bytes(), 6), None);
    }
}
