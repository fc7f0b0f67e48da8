//! Reads. Every read is one statement, so it sees one committed snapshot; `read_all`
//! reads the head row and the events in the same statement and never returns a
//! position above that head.

use annals_core::scan::PageCollector;
use annals_core::{
    Direction, EventFilter, ListStreams, Position, ReadAll, ReadAllPage, ReadFrom, RecordedEvent,
    Result, StreamId, StreamInfo, StreamPage, StreamRead, Text, Timestamp, Version,
};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use crate::error::{corrupted, db_error};
use crate::schema::EVENT_COLUMNS;
use crate::Shared;

/// A value bound to a statement built per call.
pub(crate) enum Arg {
    I32(i32),
    I64(i64),
    OptI64(Option<i64>),
    Bool(bool),
    Text(String),
    Texts(Vec<String>),
}

/// Binds `args` in order.
pub(crate) fn bind_all(
    mut query: Query<'_, Postgres, PgArguments>,
    args: Vec<Arg>,
) -> Query<'_, Postgres, PgArguments> {
    for arg in args {
        query = match arg {
            Arg::I32(v) => query.bind(v),
            Arg::I64(v) => query.bind(v),
            Arg::OptI64(v) => query.bind(v),
            Arg::Bool(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::Texts(v) => query.bind(v),
        };
    }
    query
}

/// A count or position for SQL (`bigint`); larger values are clamped.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn stored_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| {
        corrupted(
            format!("postgres column {what}"),
            format!("negative value {v}"),
        )
    })
}

/// Decodes the event columns ([`EVENT_COLUMNS`]) starting at column `at`.
pub(crate) fn event_from_row(row: &PgRow, at: usize) -> Result<RecordedEvent> {
    let get_err = |e: sqlx::Error| corrupted("postgres table events", e.to_string());
    let position: i64 = row.try_get(at).map_err(get_err)?;
    let version: i64 = row.try_get(at + 1).map_err(get_err)?;
    let event_type: String = row.try_get(at + 4).map_err(get_err)?;
    let record: Vec<u8> = row.try_get(at + 5).map_err(get_err)?;
    let columns = crate::record::Columns {
        position: stored_u64(position, "events.position")?,
        version: stored_u64(version, "events.version")?,
        timestamp: Timestamp::from_millis(row.try_get(at + 2).map_err(get_err)?),
        dispatched: row.try_get(at + 3).map_err(get_err)?,
        event_type: Text::from(event_type),
    };
    crate::record::decode(columns, &bytes::Bytes::from(record))
}

/// The single stream a filter selects exactly, if it selects exactly one.
fn single_stream(filter: &EventFilter) -> Option<StreamId> {
    match (
        &filter.context,
        &filter.aggregate,
        filter.aggregate_ids.as_slice(),
    ) {
        (Some(context), Some(aggregate), [id]) => Some(StreamId {
            context: context.clone(),
            aggregate: aggregate.clone(),
            id: id.clone(),
        }),
        _ => None,
    }
}

/// Appends the filter's conditions to `conditions`, binding their values. Stream names
/// are not event columns: they select stream numbers from `streams` (skipped when
/// `names` is false, because the caller selects the one stream itself). `$1` is the
/// store.
fn filter_conditions(
    schema: &str,
    filter: &EventFilter,
    names: bool,
    conditions: &mut Vec<String>,
    args: &mut Vec<Arg>,
) {
    fn add(conditions: &mut Vec<String>, args: &mut Vec<Arg>, condition: &str, arg: Arg) {
        args.push(arg);
        conditions.push(condition.replace('?', &format!("${}", args.len())));
    }
    let mut streams = Vec::new();
    if names {
        if let Some(c) = &filter.context {
            add(&mut streams, args, "context = ?", Arg::Text(c.clone()));
        }
        if let Some(a) = &filter.aggregate {
            add(&mut streams, args, "aggregate = ?", Arg::Text(a.clone()));
        }
        if !filter.aggregate_ids.is_empty() {
            let ids = Arg::Texts(filter.aggregate_ids.clone());
            add(&mut streams, args, "stream_id = ANY(?)", ids);
        }
    }
    if !streams.is_empty() {
        conditions.push(format!(
            "stream_no IN (SELECT stream_no FROM {schema}.streams WHERE store_id = $1 AND {})",
            streams.join(" AND ")
        ));
    }
    if !filter.event_types.is_empty() {
        let types = Arg::Texts(filter.event_types.clone());
        add(conditions, args, "event_type = ANY(?)", types);
    }
    if let Some(t) = filter.from_time {
        add(
            conditions,
            args,
            "timestamp_ms >= ?",
            Arg::I64(t.as_millis()),
        );
    }
    if let Some(t) = filter.to_time {
        add(
            conditions,
            args,
            "timestamp_ms <= ?",
            Arg::I64(t.as_millis()),
        );
    }
    match filter.min_version {
        // Stored versions never exceed i64::MAX.
        Some(v) if v > i64::MAX as u64 => conditions.push("false".into()),
        Some(v) => add(conditions, args, "version >= ?", Arg::I64(to_sql(v))),
        None => {}
    }
    if let Some(v) = filter.max_version {
        add(conditions, args, "version <= ?", Arg::I64(to_sql(v)));
    }
    if let Some(d) = filter.dispatched {
        add(conditions, args, "dispatched = ?", Arg::Bool(d));
    }
}

/// One page of a store-wide read.
pub(crate) async fn read_all(shared: &Shared, read: &ReadAll) -> Result<ReadAllPage> {
    let (sql, store) = (&shared.sql, shared.store_id);
    // The exclusive bounds of the scan; the head bounds it too, inside the statement.
    let (after, before) = match (read.direction, read.from) {
        (_, ReadFrom::Start) => (0, i64::MAX),
        (Direction::Forward, ReadFrom::Position(p)) => (to_sql(p), i64::MAX),
        (Direction::Forward, ReadFrom::Cursor(c)) => (to_sql(c.position()), i64::MAX),
        (Direction::Backward, ReadFrom::Position(p)) => (0, to_sql(p)),
        (Direction::Backward, ReadFrom::Cursor(c)) => (0, to_sql(c.position())),
    };
    let limit = read.limit.map(|l| to_sql(l.saturating_add(read.skip)));
    if let Some(numeric) = crate::copy::numeric_conditions(&read.filter) {
        // Big pages go through COPY (see the `copy` module); small ones, like a caught-up
        // subscriber's, through a prepared statement.
        let known_head = *shared.head.borrow();
        let expected = match read.direction {
            Direction::Forward => known_head.saturating_sub(after as u64),
            Direction::Backward => known_head.min(before as u64),
        };
        let expected = limit.map_or(expected, |l| expected.min(l as u64));
        if expected >= COPY_MIN_ROWS {
            let bounds = (after, before, limit, expected as usize);
            return read_all_copy(shared, read, bounds, &numeric).await;
        }
    }
    let mut args = vec![
        Arg::I32(store),
        Arg::I64(after),
        Arg::I64(before),
        Arg::OptI64(limit),
    ];
    let mut conditions = Vec::new();
    let single = single_stream(&read.filter);
    filter_conditions(
        &sql.schema,
        &read.filter,
        single.is_none(),
        &mut conditions,
        &mut args,
    );
    let desc = if read.direction == Direction::Backward {
        " DESC"
    } else {
        ""
    };
    let s = &sql.schema;
    // Inside one stream, versions grow with positions: ordering by version lets the
    // stream's (stream_no, version) index drive the scan.
    let order = match single {
        Some(stream) => {
            let n = args.len();
            args.push(Arg::Text(stream.context));
            args.push(Arg::Text(stream.aggregate));
            args.push(Arg::Text(stream.id));
            conditions.push(format!(
                "stream_no = (SELECT stream_no FROM {s}.streams WHERE store_id = h.id
                     AND context = ${} AND aggregate = ${} AND stream_id = ${})",
                n + 1,
                n + 2,
                n + 3
            ));
            "version"
        }
        None => "position",
    };
    let extra: String = conditions.iter().map(|c| format!(" AND {c}")).collect();
    let text = format!(
        "SELECT h.head, e.* FROM {s}.stores h LEFT JOIN LATERAL (
             SELECT {EVENT_COLUMNS} FROM {s}.events
             WHERE store_id = h.id AND position > $2 AND position < least(h.head + 1, $3){extra}
             ORDER BY {order}{desc} LIMIT $4
         ) e ON true
         WHERE h.id = $1"
    );
    let rows = bind_all(sqlx::query(&text), args)
        .fetch_all(&shared.pool)
        .await
        .map_err(db_error)?;
    let Some(first) = rows.first() else {
        return Err(crate::store_gone_named(&shared.name));
    };
    let head: i64 = first.try_get(0).map_err(db_error)?;
    let mut page = PageCollector::new(read, stored_u64(head, "stores.head")?)?;
    for row in &rows {
        let position: Option<i64> = row.try_get(1).map_err(db_error)?;
        if position.is_none() {
            break;
        }
        if !page.offer(event_from_row(row, 1)?) {
            break;
        }
    }
    Ok(page.finish(true))
}

/// Pages expected to hold at least this many events are read with COPY.
const COPY_MIN_ROWS: u64 = 512;

/// The `COPY` statement of one page: rows of (head, event columns) with positions in
/// (`after`, `before`), at most `limit` of them.
fn copy_statement(
    shared: &Shared,
    (after, before, limit): (i64, i64, Option<i64>),
    conditions: &str,
    direction: Direction,
) -> String {
    let desc = if direction == Direction::Backward {
        " DESC"
    } else {
        ""
    };
    let limit = limit.map_or_else(|| "ALL".to_owned(), |l| l.to_string());
    let s = &shared.sql.schema;
    format!(
        "COPY (SELECT h.head, e.* FROM {s}.stores h LEFT JOIN LATERAL (
             SELECT {EVENT_COLUMNS} FROM {s}.events
             WHERE store_id = h.id AND position > {after}
               AND position < least(h.head + 1, {before}){conditions}
             ORDER BY position{desc} LIMIT {limit}
         ) e ON true
         WHERE h.id = {store}) TO STDOUT (FORMAT binary)",
        store = shared.store_id
    )
}

async fn copy_fetch(
    shared: &Shared,
    statement: &str,
    expected: usize,
) -> Result<(Position, Vec<RecordedEvent>)> {
    crate::copy::fetch(&shared.pool, statement, expected)
        .await
        .map_err(|e| match e {
            annals_core::Error::Corrupted { detail, .. } if detail.starts_with("no row") => {
                crate::store_gone_named(&shared.name)
            }
            other => other,
        })
}

async fn read_all_copy(
    shared: &Shared,
    read: &ReadAll,
    (after, before, limit, expected): (i64, i64, Option<i64>, usize),
    conditions: &str,
) -> Result<ReadAllPage> {
    if read.filter.is_all() && read.skip == 0 && expected as u64 >= SPLIT_MIN_ROWS {
        if let Some(page) = read_all_split(shared, read, (after, before, limit)).await? {
            return Ok(page);
        }
    }
    let statement = copy_statement(shared, (after, before, limit), conditions, read.direction);
    let (head, events) = copy_fetch(shared, &statement, expected).await?;
    let mut page = PageCollector::new(read, head)?;
    for event in events {
        if !page.offer(event) {
            break;
        }
    }
    Ok(page.finish(true))
}

/// Unfiltered pages expected to hold at least this many events are read as two halves
/// on two connections at once, so two server processes produce them.
const SPLIT_MIN_ROWS: u64 = 4096;

/// An unfiltered page read as two halves in parallel, or `None` when it is too small.
///
/// Without a filter every position up to the head holds an event, so the page is an
/// exact position range. The head is read first; both halves are read after it, so
/// each sees every position up to it, and the page stops there.
async fn read_all_split(
    shared: &Shared,
    read: &ReadAll,
    (after, before, limit): (i64, i64, Option<i64>),
) -> Result<Option<ReadAllPage>> {
    let head = head(shared).await?;
    let mut page = PageCollector::new(read, head)?;
    let head = to_sql(head);
    let limit = limit.unwrap_or(i64::MAX);
    // The inclusive position range of the page.
    let (lo, hi) = match read.direction {
        Direction::Forward => (
            after.saturating_add(1),
            head.min(after.saturating_add(limit)),
        ),
        Direction::Backward => {
            let hi = head.min(before.saturating_sub(1));
            (hi.saturating_sub(limit.saturating_sub(1)).max(1), hi)
        }
    };
    if hi < lo || ((hi - lo + 1) as u64) < SPLIT_MIN_ROWS {
        return Ok(None);
    }
    let mid = lo + (hi - lo + 1) / 2;
    let lower = (lo - 1, mid, Some(mid - lo));
    let upper = (mid - 1, hi + 1, Some(hi - mid + 1));
    let (first, second) = match read.direction {
        Direction::Forward => (lower, upper),
        Direction::Backward => (upper, lower),
    };
    let (a, b) = (
        copy_statement(shared, first, "", read.direction),
        copy_statement(shared, second, "", read.direction),
    );
    let count = |r: (i64, i64, Option<i64>)| r.2.unwrap_or(0).max(0) as usize;
    let (a_rows, b_rows) = tokio::join!(
        copy_fetch(shared, &a, count(first)),
        copy_fetch(shared, &b, count(second))
    );
    let (a_rows, b_rows) = (a_rows?.1, b_rows?.1);
    if a_rows.len() != count(first) || b_rows.len() != count(second) {
        return Err(crate::error::corrupted(
            format!("postgres table events, store {}", shared.name),
            format!(
                "positions {lo}..={hi} are below the head {head} but {} of them are missing",
                (hi - lo + 1) as usize - a_rows.len() - b_rows.len()
            ),
        ));
    }
    for event in a_rows.into_iter().chain(b_rows) {
        if !page.offer(event) {
            break;
        }
    }
    Ok(Some(page.finish(true)))
}

/// Events of one stream by version.
pub(crate) async fn read_stream(
    shared: &Shared,
    stream: &StreamId,
    read: &StreamRead,
) -> Result<Vec<RecordedEvent>> {
    let sql = &shared.sql;
    if read.from_version > i64::MAX as u64 {
        return Ok(Vec::new());
    }
    let text = match read.direction {
        Direction::Forward => &sql.read_stream_forward,
        Direction::Backward => &sql.read_stream_backward,
    };
    let rows = sqlx::query(text)
        .bind(shared.store_id)
        .bind(&stream.context)
        .bind(&stream.aggregate)
        .bind(&stream.id)
        .bind(to_sql(read.from_version))
        .bind(to_sql(read.to_version.unwrap_or(Version::MAX)))
        .bind(read.limit.map(to_sql))
        .fetch_all(&shared.pool)
        .await
        .map_err(db_error)?;
    rows.iter().map(|row| event_from_row(row, 0)).collect()
}

/// The stored events with the given ids (in no particular order).
pub(crate) async fn events_by_id(shared: &Shared, ids: &[&str]) -> Result<Vec<RecordedEvent>> {
    let positions: Vec<i64> = ids
        .iter()
        .filter_map(|id| annals_core::append::position_of_generated_id(id))
        .map(to_sql)
        .collect();
    let rows = sqlx::query(&shared.sql.events_by_id)
        .bind(shared.store_id)
        .bind(ids)
        .bind(positions)
        .fetch_all(&shared.pool)
        .await
        .map_err(db_error)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let e = event_from_row(row, 0)?;
        if ids.contains(&e.id.as_str()) {
            events.push(e);
        }
    }
    Ok(events)
}

/// What the `streams` table knows about one stream.
pub(crate) async fn stream_info(shared: &Shared, stream: &StreamId) -> Result<Option<StreamInfo>> {
    let row = sqlx::query(&shared.sql.stream_info)
        .bind(shared.store_id)
        .bind(&stream.context)
        .bind(&stream.aggregate)
        .bind(&stream.id)
        .fetch_optional(&shared.pool)
        .await
        .map_err(db_error)?;
    row.map(|row| info_from_row(stream.clone(), &row, 0))
        .transpose()
}

fn info_from_row(stream: StreamId, row: &PgRow, at: usize) -> Result<StreamInfo> {
    let get = |i: usize| -> Result<i64> { row.try_get(at + i).map_err(db_error) };
    Ok(StreamInfo {
        stream,
        version: stored_u64(get(0)?, "streams.version")?,
        first_timestamp: Timestamp::from_millis(get(1)?),
        first_position: stored_u64(get(2)?, "streams.first_position")?,
        last_position: stored_u64(get(3)?, "streams.last_position")?,
    })
}

/// Streams ordered by their first event.
pub(crate) async fn list_streams(shared: &Shared, query: &ListStreams) -> Result<StreamPage> {
    let mut args = vec![Arg::I32(shared.store_id)];
    let mut conditions = Vec::new();
    let mut add = |condition: &str, arg: Arg, args: &mut Vec<Arg>| {
        args.push(arg);
        conditions.push(condition.replace('?', &format!("${}", args.len())));
    };
    if let Some(c) = &query.context {
        add("s.context = ?", Arg::Text(c.clone()), &mut args);
    }
    if let Some(a) = &query.aggregate {
        add("s.aggregate = ?", Arg::Text(a.clone()), &mut args);
    }
    if let Some(t) = query.created_after {
        add("s.first_timestamp >= ?", Arg::I64(t.as_millis()), &mut args);
    }
    if let Some(t) = query.created_before {
        add("s.first_timestamp <= ?", Arg::I64(t.as_millis()), &mut args);
    }
    let (cmp, desc) = if query.reverse {
        ("<", " DESC")
    } else {
        (">", "")
    };
    if let Some(token) = query.page_token {
        args.push(Arg::I64(token.first_timestamp.as_millis()));
        args.push(Arg::I64(to_sql(token.first_position)));
        let (t, p) = (args.len() - 1, args.len());
        conditions.push(format!(
            "(s.first_timestamp, s.first_position) {cmp} (${t}, ${p})"
        ));
    }
    // One more than asked for tells whether another page follows.
    args.push(Arg::OptI64(
        query.limit.map(|l| to_sql(l.saturating_add(1))),
    ));
    let limit = args.len();
    let extra: String = conditions.iter().map(|c| format!(" AND {c}")).collect();
    let text = format!(
        "SELECT s.context, s.aggregate, s.stream_id, l.version, s.first_timestamp,
                s.first_position, l.position
         FROM {schema}.streams s CROSS JOIN LATERAL ({last}) l
         WHERE s.store_id = $1{extra}
         ORDER BY s.first_timestamp{desc}, s.first_position{desc} LIMIT ${limit}",
        schema = shared.sql.schema,
        last = crate::schema::last_event(&shared.sql.schema),
    );
    let rows = bind_all(sqlx::query(&text), args)
        .fetch_all(&shared.pool)
        .await
        .map_err(db_error)?;
    let mut infos = Vec::with_capacity(rows.len());
    for row in &rows {
        let stream = StreamId {
            context: row.try_get(0).map_err(db_error)?,
            aggregate: row.try_get(1).map_err(db_error)?,
            id: row.try_get(2).map_err(db_error)?,
        };
        infos.push(info_from_row(stream, row, 3)?);
    }
    let mut paging = query.clone();
    paging.page_token = None;
    Ok(annals_core::rules::page_streams(infos.into_iter(), &paging))
}

/// The store's head position, read from its head row.
pub(crate) async fn head(shared: &Shared) -> Result<Position> {
    let row = sqlx::query(&shared.sql.head)
        .bind(shared.store_id)
        .fetch_optional(&shared.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| crate::store_gone_named(&shared.name))?;
    stored_u64(row.try_get(0).map_err(db_error)?, "stores.head")
}
