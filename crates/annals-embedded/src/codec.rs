//! Byte layouts of keys and values in the embedded tables.
//!
//! Records are length-prefixed binary with a leading format byte, so a future layout can
//! be told apart from this one. Decoding never trusts lengths: a short or inconsistent
//! record is [`Error::Corrupted`] naming the table and key.

use annals_core::{
    Error, Json, Position, RecordedEvent, Result, StreamId, StreamInfo, StreamSnapshot, Text,
    Timestamp, Version,
};
use bytes::Bytes;

const EVENT_FORMAT: u8 = 1;

/// A stream's key: its three parts, each length-prefixed, so no part can run into another.
pub fn stream_key(stream: &StreamId) -> Vec<u8> {
    let mut key =
        Vec::with_capacity(6 + stream.context.len() + stream.aggregate.len() + stream.id.len());
    for part in [&stream.context, &stream.aggregate, &stream.id] {
        // Names are limited to 256 bytes by validation, so u16 always fits.
        key.extend_from_slice(&(part.len() as u16).to_be_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The stream key followed by a big-endian version: one stream's events sort by version.
pub fn stream_version_key(stream_key: &[u8], version: Version) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream_key.len() + 8);
    key.extend_from_slice(stream_key);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// Big-endian position: the events table sorts by position.
pub fn position_key(position: Position) -> [u8; 8] {
    position.to_be_bytes()
}

/// Timestamps as keys: the sign bit flipped so negative times sort first.
pub fn time_key(timestamp: Timestamp, position: Position) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&((timestamp.as_millis() as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&position.to_be_bytes());
    key
}

/// Reads a big-endian u64 value.
pub fn read_u64(bytes: &[u8], table: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupted(table, "expected 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

fn corrupted(table: &str, detail: impl Into<String>) -> Error {
    Error::Corrupted {
        location: format!("embedded table {table}"),
        detail: detail.into(),
    }
}

struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
    table: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                corrupted(
                    self.table,
                    format!("record truncated at byte {} (wanted {n} more)", self.at),
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let table = self.table;
        let at = self.at;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| corrupted(table, format!("text at byte {at} is not UTF-8")))
    }

    /// Zero-copy text: a slice of the record, checked to be UTF-8.
    fn text(&mut self) -> Result<Text> {
        let at = self.at;
        let table = self.table;
        Text::from_utf8(self.bytes()?)
            .map_err(|_| corrupted(table, format!("text at byte {at} is not UTF-8")))
    }

    /// A zero-copy slice of the record (payloads are returned without copying).
    fn bytes(&mut self) -> Result<Bytes> {
        let n = self.u32()? as usize;
        let start = self.at;
        self.take(n)?;
        Ok(self.bytes.slice(start..start + n))
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

const BATCH_FORMAT: u8 = 2;

/// Encodes consecutive events (one commit, or one stream's run inside a commit) as one
/// record: storing a commit as one entry instead of one per event is what lets a batch
/// of 100 events cost one key in each table.
pub fn encode_batch<'a>(events: impl Iterator<Item = &'a RecordedEvent>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.push(BATCH_FORMAT);
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut count: u32 = 0;
    for e in events {
        let len_at = out.len();
        out.extend_from_slice(&0u32.to_be_bytes());
        encode_event_into(e, &mut out);
        let len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        count += 1;
    }
    out[1..5].copy_from_slice(&count.to_be_bytes());
    out
}

/// Decodes a batch record into its events, in order (zero-copy: every text and body is
/// a slice of `bytes`).
pub fn decode_batch(bytes: &Bytes, table: &'static str) -> Result<Vec<RecordedEvent>> {
    let mut r = Reader {
        bytes,
        at: 0,
        table,
    };
    let format = r.u8()?;
    if format != BATCH_FORMAT {
        return Err(corrupted(table, format!("unknown batch format {format}")));
    }
    let count = r.u32()? as usize;
    let mut events = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let event = r.bytes()?;
        events.push(decode_event(&event, table)?);
    }
    if r.at != bytes.len() {
        return Err(corrupted(
            table,
            format!(
                "{} bytes after the last event of a batch",
                bytes.len() - r.at
            ),
        ));
    }
    Ok(events)
}

const RUN_POINTER_FORMAT: u8 = 3;

/// A stream-table value that points into the log instead of copying: the run's events
/// are the `count` events from `first_position` on, inside one commit record.
pub fn encode_run_pointer(first_position: Position, count: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(RUN_POINTER_FORMAT);
    out.extend_from_slice(&first_position.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out
}

/// What a stream-table value holds.
pub enum StreamRecord {
    /// The run's events, copied.
    Events(Vec<RecordedEvent>),
    /// A pointer into the log: first position and count.
    Pointer(Position, u32),
}

/// Decodes a stream-table value.
pub fn decode_stream_record(bytes: &Bytes) -> Result<StreamRecord> {
    if bytes.first() == Some(&RUN_POINTER_FORMAT) {
        let mut r = Reader {
            bytes,
            at: 1,
            table: "stream_events",
        };
        let first = r.u64()?;
        let count = r.u32()?;
        return Ok(StreamRecord::Pointer(first, count));
    }
    decode_batch(bytes, "stream_events").map(StreamRecord::Events)
}

/// Encodes a recorded event (without its dispatched flag, which lives elsewhere).
#[cfg(test)]
pub fn encode_event(e: &RecordedEvent) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event_into(e, &mut out);
    out
}

fn encode_event_into(e: &RecordedEvent, out: &mut Vec<u8>) {
    out.reserve(
        64 + e.id.len()
            + e.stream.context.len()
            + e.stream.aggregate.len()
            + e.stream.id.len()
            + e.event_type.len()
            + e.commit_id.len()
            + e.payload.as_bytes().len()
            + e.metadata.as_bytes().len(),
    );
    out.push(EVENT_FORMAT);
    out.extend_from_slice(&e.position.to_be_bytes());
    out.extend_from_slice(&e.version.to_be_bytes());
    out.extend_from_slice(&(e.timestamp.as_millis() as u64).to_be_bytes());
    out.extend_from_slice(&e.commit_sequence.to_be_bytes());
    for s in [
        e.id.as_bytes(),
        e.stream.context.as_bytes(),
        e.stream.aggregate.as_bytes(),
        e.stream.id.as_bytes(),
        e.event_type.as_bytes(),
        e.commit_id.as_bytes(),
        e.payload.as_bytes(),
        e.metadata.as_bytes(),
    ] {
        put_str(out, s);
    }
}

/// Decodes a recorded event; `dispatched` comes from the dispatch table.
pub fn decode_event(bytes: &Bytes, table: &'static str) -> Result<RecordedEvent> {
    let mut r = Reader {
        bytes,
        at: 0,
        table,
    };
    let format = r.u8()?;
    if format != EVENT_FORMAT {
        return Err(corrupted(table, format!("unknown event format {format}")));
    }
    let position = r.u64()?;
    let version = r.u64()?;
    let timestamp = Timestamp::from_millis(r.u64()? as i64);
    let commit_sequence = r.u32()?;
    Ok(RecordedEvent {
        position,
        version,
        timestamp,
        commit_sequence,
        id: r.text()?,
        stream: StreamId {
            context: r.string()?,
            aggregate: r.string()?,
            id: r.string()?,
        },
        event_type: r.text()?,
        commit_id: r.text()?,
        payload: Json::from_raw(r.bytes()?),
        metadata: Json::from_raw(r.bytes()?),
        dispatched: false,
    })
}

/// Stream info value: version, first timestamp, first position, last position.
pub fn encode_stream_info(info: &StreamInfo) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&info.version.to_be_bytes());
    out[8..16].copy_from_slice(&(info.first_timestamp.as_millis() as u64).to_be_bytes());
    out[16..24].copy_from_slice(&info.first_position.to_be_bytes());
    out[24..].copy_from_slice(&info.last_position.to_be_bytes());
    out
}

/// Decodes a stream info value for `stream`.
pub fn decode_stream_info(stream: StreamId, bytes: &[u8]) -> Result<StreamInfo> {
    if bytes.len() != 32 {
        return Err(corrupted(
            "streams",
            format!("stream {stream}: expected 32 bytes"),
        ));
    }
    Ok(StreamInfo {
        version: read_u64(&bytes[..8], "streams")?,
        first_timestamp: Timestamp::from_millis(read_u64(&bytes[8..16], "streams")? as i64),
        first_position: read_u64(&bytes[16..24], "streams")?,
        last_position: read_u64(&bytes[24..], "streams")?,
        stream,
    })
}

/// Decodes a stream key back into the stream id.
pub fn decode_stream_key(key: &[u8]) -> Result<StreamId> {
    let mut parts = Vec::with_capacity(3);
    let mut at = 0;
    for _ in 0..3 {
        let len = key
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| corrupted("streams", "stream key truncated"))?;
        let part = key
            .get(at + 2..at + 2 + len)
            .ok_or_else(|| corrupted("streams", "stream key truncated"))?;
        parts.push(
            String::from_utf8(part.to_vec())
                .map_err(|_| corrupted("streams", "stream key is not UTF-8"))?,
        );
        at += 2 + len;
    }
    let id = parts.pop().unwrap_or_default();
    let aggregate = parts.pop().unwrap_or_default();
    let context = parts.pop().unwrap_or_default();
    Ok(StreamId {
        context,
        aggregate,
        id,
    })
}

/// Keyed snapshot value: timestamp, then the content.
pub fn encode_keyed_snapshot(timestamp: Timestamp, content: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + content.len());
    out.extend_from_slice(&(timestamp.as_millis() as u64).to_be_bytes());
    out.extend_from_slice(content.as_bytes());
    out
}

/// Decodes a keyed snapshot value.
pub fn decode_keyed_snapshot(bytes: &[u8]) -> Result<(Timestamp, String)> {
    let ts = read_u64(bytes, "snapshots")?;
    let content = String::from_utf8(bytes[8..].to_vec())
        .map_err(|_| corrupted("snapshots", "content is not UTF-8"))?;
    Ok((Timestamp::from_millis(ts as i64), content))
}

/// Stream snapshot value: schema version, timestamp, id, data.
pub fn encode_stream_snapshot(s: &StreamSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + s.id.len() + s.data.as_bytes().len());
    out.extend_from_slice(&s.schema_version.to_be_bytes());
    out.extend_from_slice(&(s.timestamp.as_millis() as u64).to_be_bytes());
    put_str(&mut out, s.id.as_bytes());
    put_str(&mut out, s.data.as_bytes());
    out
}

/// Decodes a stream snapshot value.
pub fn decode_stream_snapshot(
    stream: StreamId,
    stream_version: Version,
    bytes: &Bytes,
) -> Result<StreamSnapshot> {
    let mut r = Reader {
        bytes,
        at: 0,
        table: "stream_snapshots",
    };
    let schema_version = r.u32()?;
    let timestamp = Timestamp::from_millis(r.u64()? as i64);
    Ok(StreamSnapshot {
        schema_version,
        timestamp,
        id: r.string()?,
        data: Json::from_raw(r.bytes()?),
        stream,
        stream_version,
    })
}

/// Secret value: id, then a flag and the value (flag 0 = deleted, no value).
pub fn encode_secret(id: &str, secret: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + id.len() + secret.map_or(0, str::len));
    put_str(&mut out, id.as_bytes());
    match secret {
        Some(s) => {
            out.push(1);
            put_str(&mut out, s.as_bytes());
        }
        None => out.push(0),
    }
    out
}

/// Decodes a secret value.
pub fn decode_secret(bytes: &Bytes) -> Result<(String, Option<String>)> {
    let mut r = Reader {
        bytes,
        at: 0,
        table: "secrets",
    };
    let id = r.string()?;
    let secret = match r.u8()? {
        0 => None,
        _ => Some(r.string()?),
    };
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips_byte_for_byte() {
        let e = RecordedEvent {
            position: 7,
            id: "e-7".into(),
            stream: StreamId::new("acc")
                .with_aggregate("account")
                .with_context("billing"),
            version: 3,
            event_type: "Deposited".into(),
            timestamp: Timestamp::from_millis(-5),
            payload: Json::from_raw("{ \"a\" : 1 }"),
            metadata: Json::null(),
            commit_id: "c".into(),
            commit_sequence: 2,
            dispatched: false,
        };
        let bytes = Bytes::from(encode_event(&e));
        assert_eq!(decode_event(&bytes, "events").unwrap(), e);
        for cut in 0..bytes.len() {
            let err = decode_event(&bytes.slice(..cut), "events").unwrap_err();
            assert_eq!(err.kind(), annals_core::ErrorKind::Corrupted);
        }
    }

    #[test]
    fn batches_round_trip_and_refuse_truncation() {
        let events: Vec<RecordedEvent> = (1..=3)
            .map(|p| RecordedEvent {
                position: p,
                id: format!("e{p}").into(),
                stream: StreamId::new("s"),
                version: p,
                event_type: "T".into(),
                timestamp: Timestamp::from_millis(1),
                payload: Json::from_raw(format!("[{p}]")),
                metadata: Json::null(),
                commit_id: "c".into(),
                commit_sequence: 0,
                dispatched: false,
            })
            .collect();
        let bytes = Bytes::from(encode_batch(events.iter()));
        assert_eq!(decode_batch(&bytes, "events").unwrap(), events);
        for cut in 0..bytes.len() {
            assert!(decode_batch(&bytes.slice(..cut), "events").is_err());
        }
    }

    #[test]
    fn stream_keys_round_trip_and_do_not_collide() {
        let a = StreamId::new("b").with_aggregate("a");
        let b = StreamId::new("ab");
        assert_ne!(stream_key(&a), stream_key(&b));
        assert_eq!(decode_stream_key(&stream_key(&a)).unwrap(), a);
    }

    #[test]
    fn time_keys_sort_negative_first() {
        let early = time_key(Timestamp::from_millis(-1), 9);
        let late = time_key(Timestamp::from_millis(1), 1);
        assert!(early < late);
    }
}
