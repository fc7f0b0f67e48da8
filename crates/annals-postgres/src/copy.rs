//! The bulk read path: a page of `read_all` fetched with
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` and decoded without copying.
//!
//! Row-by-row decoding through the driver costs about 2 µs per event (allocations for
//! every text and bytea column); the binary COPY stream arrives in shared buffers that
//! events can point into: payloads, metadata, ids, types and commit ids become slices
//! of the received bytes. COPY takes no parameters, so this path is used only when
//! every value in the statement is a number (store, bounds, limit, and the numeric
//! filters: time range, version range, dispatch state), which the statement carries
//! as literals; reads filtered by names take the parameterised path.

use annals_core::{EventFilter, Position, RecordedEvent, Result, Text, Timestamp};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::{corrupted, db_error};

/// The binary COPY signature that opens the stream.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// The most events room is made for ahead of a page.
const MAX_PREALLOCATED: usize = 16_384;
/// Columns per row: the head, then the event columns.
const COLUMNS: i16 = 7;

/// The filter's conditions as SQL with literal values, or `None` when the filter names
/// streams or types (strings, which this path does not inline).
pub(crate) fn numeric_conditions(filter: &EventFilter) -> Option<String> {
    if filter.context.is_some()
        || filter.aggregate.is_some()
        || !filter.aggregate_ids.is_empty()
        || !filter.event_types.is_empty()
    {
        return None;
    }
    let mut sql = String::new();
    if let Some(t) = filter.from_time {
        sql.push_str(&format!(" AND timestamp_ms >= {}", t.as_millis()));
    }
    if let Some(t) = filter.to_time {
        sql.push_str(&format!(" AND timestamp_ms <= {}", t.as_millis()));
    }
    if let Some(v) = filter.min_version {
        match i64::try_from(v) {
            Ok(v) => sql.push_str(&format!(" AND version >= {v}")),
            // Stored versions never exceed i64::MAX.
            Err(_) => sql.push_str(" AND false"),
        }
    }
    if let Some(v) = filter.max_version {
        sql.push_str(&format!(" AND version <= {}", crate::read::to_sql(v)));
    }
    if let Some(d) = filter.dispatched {
        sql.push_str(&format!(" AND dispatched = {d}"));
    }
    Some(sql)
}

/// Runs a `COPY … TO STDOUT (FORMAT binary)` statement producing rows of (head, event
/// columns); returns the head and the events.
/// `expected` is how many rows the page probably holds (room is made for them).
pub(crate) async fn fetch(
    pool: &sqlx::PgPool,
    statement: &str,
    expected: usize,
) -> Result<(Position, Vec<RecordedEvent>)> {
    // Position order straight from the primary key: on a table not analysed yet the
    // planner may estimate a handful of rows and pick a bitmap scan plus a sort, which
    // for a 10,000-event page spills to disk and takes 2-3 times as long. The setting
    // is local to this read's transaction.
    let mut conn = pool.acquire().await.map_err(db_error)?;
    if let Err(e) =
        crate::appender::raw(&mut conn, "BEGIN; SET LOCAL enable_bitmapscan = off").await
    {
        conn.close_on_drop();
        return Err(db_error(e));
    }
    let result = {
        let mut stream = conn.copy_out_raw(statement).await.map_err(db_error)?;
        let mut decoder = Decoder {
            events: Vec::with_capacity(expected.min(MAX_PREALLOCATED)),
            ..Decoder::default()
        };
        let mut failure = None;
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(db_error).and_then(|c| decoder.push(c)) {
                Ok(()) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => decoder.finish(),
        }
    };
    let result = match result {
        Ok(page) => crate::appender::raw(&mut conn, "COMMIT")
            .await
            .map(|_| page)
            .map_err(db_error),
        Err(e) => Err(e),
    };
    if result.is_err() {
        // The COPY may not have been read to its end, or the transaction not ended:
        // never reuse this connection.
        conn.close_on_drop();
    }
    result
}

/// Decodes a binary COPY stream of (head, event columns) rows.
#[derive(Default)]
struct Decoder {
    /// Bytes of an item cut by a chunk boundary.
    carry: Option<BytesMut>,
    header_read: bool,
    ended: bool,
    head: Option<Position>,
    events: Vec<RecordedEvent>,
}

fn bad(detail: impl Into<String>) -> annals_core::Error {
    corrupted("postgres COPY stream of events", detail)
}

/// A cursor over one buffer; `None` from a read means "incomplete, wait for more".
struct Cursor<'a> {
    data: &'a Bytes,
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<std::ops::Range<usize>> {
        let end = self.at.checked_add(n)?;
        if end > self.data.len() {
            return None;
        }
        let range = self.at..end;
        self.at = end;
        Some(range)
    }

    fn i16(&mut self) -> Option<i16> {
        let r = self.take(2)?;
        Some(i16::from_be_bytes([
            self.data[r.start],
            self.data[r.start + 1],
        ]))
    }

    fn i32(&mut self) -> Option<i32> {
        let r = self.take(4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.data[r]);
        Some(i32::from_be_bytes(b))
    }

    /// One field: `Some(None)` for NULL.
    fn field(&mut self) -> Option<Option<std::ops::Range<usize>>> {
        let len = self.i32()?;
        if len < 0 {
            return Some(None);
        }
        self.take(len as usize).map(Some)
    }
}

impl Decoder {
    fn push(&mut self, chunk: Bytes) -> Result<()> {
        let data = match self.carry.take() {
            None => chunk,
            Some(mut carried) => {
                carried.extend_from_slice(&chunk);
                carried.freeze()
            }
        };
        let mut at = 0;
        while at < data.len() {
            match self.item(&data, at)? {
                Some(next) => at = next,
                None => break,
            }
        }
        if at < data.len() {
            self.carry = Some(BytesMut::from(&data[at..]));
        }
        Ok(())
    }

    /// Decodes the item at `at`; returns where the next one starts, or `None` when the
    /// buffer ends inside it.
    fn item(&mut self, data: &Bytes, at: usize) -> Result<Option<usize>> {
        let mut c = Cursor { data, at };
        if !self.header_read {
            let Some(sig) = c.take(SIGNATURE.len()) else {
                return Ok(None);
            };
            if &data[sig] != SIGNATURE {
                return Err(bad("missing binary COPY signature"));
            }
            let (Some(_flags), Some(ext)) = (c.i32(), c.i32()) else {
                return Ok(None);
            };
            if c.take(ext.max(0) as usize).is_none() {
                return Ok(None);
            }
            self.header_read = true;
            return Ok(Some(c.at));
        }
        if self.ended {
            return Err(bad("data after the end of the COPY stream"));
        }
        let Some(count) = c.i16() else {
            return Ok(None);
        };
        if count == -1 {
            self.ended = true;
            return Ok(Some(c.at));
        }
        if count != COLUMNS {
            return Err(bad(format!("a row of {count} columns, {COLUMNS} expected")));
        }
        let mut fields: [Option<std::ops::Range<usize>>; COLUMNS as usize] = Default::default();
        for f in fields.iter_mut() {
            match c.field() {
                Some(v) => *f = v,
                None => return Ok(None),
            }
        }
        let int8 = |r: &Option<std::ops::Range<usize>>, what: &str| -> Result<i64> {
            let r = r.clone().ok_or_else(|| bad(format!("{what} is NULL")))?;
            let b: [u8; 8] = data[r]
                .try_into()
                .map_err(|_| bad(format!("{what} is not 8 bytes")))?;
            Ok(i64::from_be_bytes(b))
        };
        let head = int8(&fields[0], "head")?;
        self.head = Some(u64::try_from(head).map_err(|_| bad(format!("negative head {head}")))?);
        if fields[1].is_none() {
            // The store has no event in range: the row carries the head only.
            return Ok(Some(c.at));
        }
        let bytes = |i: usize, what: &str| -> Result<Bytes> {
            fields[i]
                .clone()
                .map(|r| data.slice(r))
                .ok_or_else(|| bad(format!("{what} is NULL")))
        };
        let unsigned = |i: usize, what: &str| -> Result<u64> {
            let v = int8(&fields[i], what)?;
            u64::try_from(v).map_err(|_| bad(format!("negative {what} {v}")))
        };
        let dispatched = {
            let r = fields[4].clone().ok_or_else(|| bad("dispatched is NULL"))?;
            data[r].first().is_some_and(|b| *b != 0)
        };
        let columns = crate::record::Columns {
            position: unsigned(1, "position")?,
            version: unsigned(2, "version")?,
            timestamp: Timestamp::from_millis(int8(&fields[3], "timestamp_ms")?),
            dispatched,
            event_type: Text::from_utf8(bytes(5, "event_type")?)
                .map_err(|e| bad(format!("event_type: {e}")))?,
        };
        let record = bytes(6, "record")?;
        self.events.push(crate::record::decode(columns, &record)?);
        Ok(Some(c.at))
    }

    fn finish(self) -> Result<(Position, Vec<RecordedEvent>)> {
        if self.carry.is_some() || !self.ended {
            return Err(bad("the COPY stream ended inside a row"));
        }
        let head = self.head.ok_or_else(|| {
            crate::error::corrupted(
                "postgres COPY stream of events",
                "no row: the store's head row is missing",
            )
        })?;
        Ok((head, self.events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals_core::{Json, StreamId};

    fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
        match value {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }

    fn stream_bytes(rows: usize) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for p in 1..=rows as i64 {
            let event = RecordedEvent {
                position: p as u64,
                id: Text::from(format!("id-{p}")),
                stream: StreamId::new("s-1").with_context("ctx"),
                version: p as u64,
                event_type: Text::from("T"),
                timestamp: Timestamp::from_millis(-5),
                payload: Json::from_raw(r#"{ "a" : 1 }"#),
                metadata: Json::null(),
                commit_id: Text::from("c"),
                commit_sequence: 0,
                dispatched: true,
            };
            out.extend_from_slice(&COLUMNS.to_be_bytes());
            field(&mut out, Some(&(rows as i64).to_be_bytes()));
            field(&mut out, Some(&p.to_be_bytes()));
            field(&mut out, Some(&p.to_be_bytes()));
            field(&mut out, Some(&(-5i64).to_be_bytes()));
            field(&mut out, Some(&[1u8]));
            field(&mut out, Some(b"T"));
            field(&mut out, Some(&crate::record::encode(&event)));
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn rows_decode_whatever_the_chunk_boundaries() {
        let all = stream_bytes(3);
        for cut in [1, 7, 13, 40, 77, all.len() - 1] {
            let mut d = Decoder::default();
            d.push(Bytes::copy_from_slice(&all[..cut])).unwrap();
            d.push(Bytes::copy_from_slice(&all[cut..])).unwrap();
            let (head, events) = d.finish().unwrap();
            assert_eq!(head, 3);
            assert_eq!(events.len(), 3, "cut at {cut}");
            assert_eq!(events[2].position, 3);
            assert_eq!(events[2].id, "id-3");
            assert_eq!(events[0].stream, StreamId::new("s-1").with_context("ctx"));
            assert_eq!(events[0].payload.as_bytes(), br#"{ "a" : 1 }"#);
            assert_eq!(events[0].timestamp.as_millis(), -5);
            assert!(events[0].dispatched);
        }
    }

    #[test]
    fn a_truncated_stream_is_corruption_not_a_short_page() {
        let all = stream_bytes(2);
        let mut d = Decoder::default();
        d.push(Bytes::copy_from_slice(&all[..all.len() - 10]))
            .unwrap();
        assert!(d.finish().is_err());
    }

    #[test]
    fn numeric_filters_become_literals_and_names_are_refused() {
        let f = EventFilter::default()
            .time_range(Some(Timestamp::from_millis(5)), None)
            .dispatched(false);
        assert_eq!(
            numeric_conditions(&f).unwrap(),
            " AND timestamp_ms >= 5 AND dispatched = false"
        );
        assert!(numeric_conditions(&EventFilter::default().context("c")).is_none());
    }
}
