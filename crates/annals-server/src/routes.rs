//! The handlers of API.md, one per route.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json as JsonBody, Router};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use annals_core::{
    Cursor, Direction, Error, EventFilter, EventStream, ListStreams, NewStreamSnapshot, ReadAll,
    ReadFrom, SecretQuery, StreamPageToken, StreamRead, Subscribe,
};

use crate::error::ApiError;
use crate::registry::Registry;
use crate::wire::{self, parse_body, AppendBody, Params};

pub(crate) type ApiResult = Result<Response, ApiError>;

/// How often an idle subscription gets a keep-alive comment.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every route of the server.
pub(crate) fn router(registry: Arc<Registry>, tokens: Option<crate::auth::Tokens>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route(
            "/v1/openapi.json",
            get(|| async { JsonBody(crate::openapi::document()) }),
        )
        .route(
            "/v1/stores/{store}",
            put(create_store).get(describe).delete(drop_store),
        )
        .route("/v1/stores/{store}/freeze", post(freeze))
        .route("/v1/stores/{store}/unfreeze", post(unfreeze))
        .route(
            "/v1/stores/{store}/events",
            post(append)
                .get(read_all)
                .delete(crate::maintenance::clear_events),
        )
        .route(
            "/v1/stores/{store}/events/import",
            post(crate::maintenance::import_events).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/stores/{store}/events/batch",
            post(crate::append_batch::append_batch),
        )
        .route(
            "/v1/stores/{store}/events/{id}/dispatched",
            post(mark_dispatched),
        )
        .route(
            "/v1/stores/{store}/events/dispatched",
            post(mark_dispatched_at),
        )
        .route("/v1/stores/{store}/events/export", get(export))
        .route("/v1/stores/{store}/streams", get(list_streams))
        .route("/v1/stores/{store}/streams/info", get(stream_info))
        .route("/v1/stores/{store}/streams/events", get(read_stream))
        .route(
            "/v1/stores/{store}/snapshots",
            post(save_stream_snapshot)
                .get(list_stream_snapshots)
                .delete(prune_stream_snapshots),
        )
        .route(
            "/v1/stores/{store}/snapshots/latest",
            get(latest_stream_snapshot),
        )
        .route("/v1/stores/{store}/snapshot-keys", get(list_snapshots))
        .route(
            "/v1/stores/{store}/snapshot-keys/{key}",
            put(save_snapshot)
                .get(load_snapshot)
                .delete(drop_snapshot)
                .post(import_snapshots),
        )
        .route(
            "/v1/stores/{store}/secrets",
            get(list_secrets).delete(crate::maintenance::clear_secrets),
        )
        .route(
            "/v1/stores/{store}/secrets/{id}",
            put(set_secret)
                .get(get_secret)
                .delete(delete_secret)
                .post(crate::maintenance::secrets_post),
        )
        .route(
            "/v1/stores/{store}/imports",
            post(crate::incremental::begin)
                .get(crate::incremental::list)
                .delete(crate::incremental::rollback_all),
        )
        .route(
            "/v1/stores/{store}/imports/{importId}",
            axum::routing::delete(crate::incremental::rollback),
        )
        .route(
            "/v1/stores/{store}/imports/{importId}/events",
            post(crate::incremental::push),
        )
        .route(
            "/v1/stores/{store}/imports/{importId}/commit",
            post(crate::incremental::commit),
        )
        .route("/v1/stores/{store}/subscribe", get(subscribe))
        .fallback(|| async { ApiError::Store(Error::not_found("route", "no such route")) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            crate::auth::check,
        ))
        .layer(axum::middleware::map_response(crate::error::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&registry),
            crate::metrics::track,
        ))
        .with_state(registry)
}

/// The largest request body accepted (API.md: 16 MiB by default).
pub(crate) const MAX_BODY_BYTES: usize = 16 << 20;

/// The body, or the error naming the limit it exceeds.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::invalid("body", e.body_text())
        }
    })
}

async fn metrics(State(reg): State<Arc<Registry>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        reg.metrics.render(),
    )
        .into_response()
}

/// Counts one append and its events.
fn count_append(reg: &Registry, result: &annals_core::AppendResult) {
    count(&reg.metrics.appends, 1);
    count(&reg.metrics.appended_events, result.events.len() as u64);
}

pub(crate) fn count(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

fn ok(status: StatusCode, body: Value) -> ApiResult {
    Ok((status, JsonBody(body)).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_store(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.create(&store).await?;
    tracing::info!(%store, "store created");
    ok(StatusCode::CREATED, json!({ "store": store }))
}

async fn drop_store(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.drop_store(&store).await?;
    tracing::info!(%store, "store dropped");
    no_content()
}

async fn describe(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    let d = reg.get(&store).await?.describe().await?;
    ok(StatusCode::OK, wire::description(&store, &d))
}

async fn freeze(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.get(&store).await?.freeze().await?;
    no_content()
}

async fn unfreeze(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.get(&store).await?.unfreeze().await?;
    no_content()
}

async fn append(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let echo = echo(query.as_deref())?;
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let request = parse_body::<AppendBody>(&body)?.into_request()?;
    let result = s.append(request).await?;
    count_append(&reg, &result);
    Ok((
        StatusCode::CREATED,
        JsonBody(wire::AppendOut::new(&result, echo)),
    )
        .into_response())
}

/// The `echo` query parameter of the append endpoints (default `true`): `false` answers
/// each event with what the store decided only (position, id, version, timestamp,
/// commit sequence, dispatch mark), not what the client sent.
pub(crate) fn echo(query: Option<&str>) -> Result<bool, ApiError> {
    Ok(Params::parse_query(query)?.flag("echo")?.unwrap_or(true))
}

/// The filter of `GET /events` and `/subscribe`.
fn event_filter(p: &Params) -> Result<EventFilter, ApiError> {
    Ok(EventFilter {
        context: p.string("context"),
        aggregate: p.string("aggregate"),
        aggregate_ids: p.all("aggregateId")?,
        event_types: p.all("type")?,
        from_time: p.timestamp("fromTimestamp")?,
        to_time: p.timestamp("toTimestamp")?,
        min_version: p.parse("minVersion")?,
        max_version: p.parse("maxVersion")?,
        dispatched: p.flag("dispatched")?,
    })
}

/// Where a read starts: `cursor` (extension) or `afterPosition`.
fn read_from(p: &Params) -> Result<ReadFrom, ApiError> {
    match (p.get("cursor"), p.parse("afterPosition")?) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "cursor",
            "give either cursor or afterPosition, not both",
        )),
        (Some(c), None) => Ok(ReadFrom::Cursor(c.parse::<Cursor>()?)),
        (None, Some(pos)) => Ok(ReadFrom::Position(pos)),
        (None, None) => Ok(ReadFrom::Start),
    }
}

async fn read_all(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let filter = event_filter(&p)?;
    if p.get("afterPosition").is_some()
        && (p.get("fromTimestamp").is_some() || p.get("toTimestamp").is_some())
    {
        return Err(ApiError::invalid(
            "afterPosition",
            "cannot be combined with fromTimestamp/toTimestamp",
        ));
    }
    let read = ReadAll {
        from: read_from(&p)?,
        direction: if p.flag("reverse")?.unwrap_or(false) {
            Direction::Backward
        } else {
            Direction::Forward
        },
        filter,
        skip: p.parse("skip")?.unwrap_or(0),
        limit: p.parse("limit")?,
    };
    let page = s.read_all(read).await?;
    count(&reg.metrics.reads, 1);
    let body = wire::ReadOut {
        events: wire::events(&page.events),
        head_position: page.head_position,
        next_cursor: page.next_cursor.to_string(),
        end: page.end,
    };
    Ok(JsonBody(body).into_response())
}

/// Events per page read while exporting.
const EXPORT_PAGE: u64 = 1000;

/// Where an export stands between two pages of its body.
struct ExportState {
    store: Arc<dyn annals_core::EventStore>,
    /// Where the next page starts: the request's `afterPosition` or `cursor` first, then
    /// the cursor each page returns.
    from: ReadFrom,
    remaining: Option<u64>,
    done: bool,
    /// With `maintenanceMode=auto`: the freeze to lift when the body ends.
    frozen: Option<crate::maintenance::FreezeGuard>,
}

impl ExportState {
    /// Lifts the export's freeze (if any) before the body's last byte or error goes out,
    /// so a client that saw the end also sees the store writable.
    async fn finish(&mut self) {
        if let Some(guard) = self.frozen.take() {
            guard.release().await;
        }
    }
}

/// `GET /events/export?afterPosition=|cursor=&limit=&maintenanceMode=`: NDJSON in
/// position order, after a position or an opaque cursor (from `GET /events` or an
/// earlier export's last line). With `maintenanceMode=auto` the store is frozen (409 `already_frozen` when it
/// is) for as long as the body is being sent, and unfrozen when it ends, fails, or the
/// client goes away.
async fn export(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let from = read_from(&p)?;
    let limit: Option<u64> = p.parse("limit")?;
    let frozen = match crate::maintenance::mode(&p)? {
        crate::maintenance::Mode::Auto => {
            Some(crate::maintenance::FreezeGuard::freeze(Arc::clone(&s)).await?)
        }
        crate::maintenance::Mode::Manual => None,
    };
    let head = s.describe().await?.head_position;
    count(&reg.metrics.reads, 1);
    let state = ExportState {
        store: s,
        from,
        remaining: limit,
        done: false,
        frozen,
    };
    // Pages are read one at a time, as the client takes the previous one.
    let lines = futures::stream::unfold(state, |mut st| async move {
        if st.done || st.remaining == Some(0) {
            st.finish().await;
            return None;
        }
        let page_size = st.remaining.map_or(EXPORT_PAGE, |r| r.min(EXPORT_PAGE));
        let read = ReadAll {
            from: st.from,
            ..ReadAll::forward().limit(page_size)
        };
        let page = match st.store.read_all(read).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "export stopped");
                st.finish().await;
                st.done = true;
                return Some((Err(std::io::Error::other(e.to_string())), st));
            }
        };
        // The NDJSON codec every exporter and importer shares: a payload with a line
        // break inside still makes one line.
        let mut text = Vec::new();
        for e in &page.events {
            if let Err(e) = annals_core::ndjson::write_event(&mut text, e) {
                st.finish().await;
                st.done = true;
                return Some((Err(std::io::Error::other(e.to_string())), st));
            }
        }
        let n = page.events.len() as u64;
        st.from = ReadFrom::Cursor(page.next_cursor);
        st.remaining = st.remaining.map(|r| r - n);
        st.done = page.end || n == 0;
        Some((Ok(Bytes::from(text)), st))
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/x-ndjson".to_owned(),
            ),
            (
                axum::http::HeaderName::from_static("x-head-position"),
                head.to_string(),
            ),
        ],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

async fn mark_dispatched(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
) -> ApiResult {
    reg.get(&store).await?.mark_dispatched(&id).await?;
    no_content()
}

/// The most positions one `POST /events/dispatched` may mark.
pub(crate) const MAX_DISPATCHED_POSITIONS: usize = annals_core::limits::MAX_EVENTS_PER_APPEND;

/// `POST /events/dispatched` body `{"positions": [...]}` (extension): marks the events
/// at these positions dispatched, all or nothing; `404 event_not_found` naming the first
/// position that holds no event.
async fn mark_dispatched_at(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let b: wire::PositionsIn = parse_body(&body)?;
    if b.positions.len() > MAX_DISPATCHED_POSITIONS {
        return Err(ApiError::LimitExceeded {
            what: "positions".into(),
            limit: "maxDispatchedPositions",
            max: MAX_DISPATCHED_POSITIONS,
        });
    }
    s.mark_dispatched_at(&b.positions).await?;
    no_content()
}

async fn list_streams(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    count(&reg.metrics.reads, 1);
    let mut query = ListStreams {
        context: p.string("context"),
        aggregate: p.string("aggregate"),
        created_after: p.timestamp("createdAfter")?,
        created_before: p.timestamp("createdBefore")?,
        reverse: p.flag("reverse")?.unwrap_or(false),
        limit: p.parse("limit")?,
        page_token: p
            .get("pageToken")
            .map(str::parse::<StreamPageToken>)
            .transpose()?,
    };
    if let Some(after) = p.get("startAfter") {
        if query.page_token.is_some() {
            return Err(ApiError::invalid(
                "startAfter",
                "give either startAfter or pageToken, not both",
            ));
        }
        // API.md's page key is an aggregateId; within the filter's context and aggregate
        // (absent = null) it names one stream, whose sort key continues the listing.
        let stream = annals_core::StreamId {
            context: query.context.clone().unwrap_or_default(),
            aggregate: query.aggregate.clone().unwrap_or_default(),
            id: after.to_owned(),
        };
        let info = s.stream_info(&stream).await?.ok_or_else(|| {
            ApiError::invalid("startAfter", format!("no stream {stream} in this store"))
        })?;
        query.page_token = Some(StreamPageToken::new(
            info.first_timestamp,
            info.first_position,
        ));
    }
    let page = s.list_streams(query).await?;
    let streams: Vec<Value> = page.streams.iter().map(wire::stream_info).collect();
    ok(
        StatusCode::OK,
        json!({
            "streams": streams,
            "hasMore": page.next_page_token.is_some(),
            "nextPageToken": page.next_page_token.map(|t| t.to_string()),
        }),
    )
}

async fn stream_info(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let info = s.stream_info(&p.stream()).await?;
    ok(
        StatusCode::OK,
        json!({ "stream": info.as_ref().map(wire::stream_info) }),
    )
}

async fn read_stream(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let read = StreamRead {
        from_version: p.parse("fromVersion")?.unwrap_or(1),
        to_version: p.parse("toVersion")?,
        direction: if p.flag("reverse")?.unwrap_or(false) {
            Direction::Backward
        } else {
            Direction::Forward
        },
        limit: p.parse("limit")?,
    };
    let events = s.read_stream(&p.stream(), read).await?;
    count(&reg.metrics.reads, 1);
    Ok(JsonBody(wire::EventsOut {
        events: wire::events(&events),
    })
    .into_response())
}

async fn save_stream_snapshot(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let mut b: wire::SnapshotBody = parse_body(&body)?;
    let data = b.data();
    let snapshot = s
        .save_stream_snapshot(NewStreamSnapshot {
            id: b.id,
            stream: annals_core::StreamId {
                context: b.context.unwrap_or_default(),
                aggregate: b.aggregate.unwrap_or_default(),
                id: b.aggregate_id,
            },
            stream_version: b.stream_version,
            schema_version: b.snapshot_version.unwrap_or(1),
            data,
            timestamp: b.timestamp,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        JsonBody(wire::stream_snapshot(&snapshot)),
    )
        .into_response())
}

/// `GET /snapshots?aggregateId=&aggregate=&context=` (extension): every snapshot of
/// the stream (absent `aggregate`/`context` = null), oldest save first.
async fn list_stream_snapshots(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    if p.get("aggregateId").is_none() {
        return Err(ApiError::invalid("aggregateId", "is required"));
    }
    let snapshots = s.list_stream_snapshots(&p.stream()).await?;
    let snapshots: Vec<_> = snapshots.iter().map(wire::stream_snapshot).collect();
    Ok(JsonBody(json!({ "snapshots": snapshots })).into_response())
}

async fn latest_stream_snapshot(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let stream = p.stream();
    match s
        .latest_stream_snapshot(&stream, p.parse("maxStreamVersion")?)
        .await?
    {
        Some(snapshot) => Ok(JsonBody(wire::stream_snapshot(&snapshot)).into_response()),
        None => Err(Error::not_found("snapshot", stream.to_string()).into()),
    }
}

async fn prune_stream_snapshots(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let keep: usize = p.parse("keep")?.unwrap_or(0);
    let deleted = s.prune_stream_snapshots(&p.stream(), keep).await?;
    ok(StatusCode::OK, json!({ "deleted": deleted }))
}

async fn save_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let b: wire::KeyedSnapshotBody = parse_body(&body)?;
    s.save_snapshot(&key, &b.content).await?;
    no_content()
}

/// The most keyed snapshots one `GET /snapshot-keys` answers when `limit` is absent
/// or larger.
pub(crate) const MAX_SNAPSHOT_PAGE: u64 = 1000;

/// `GET /snapshot-keys?startAfter=&limit=` (extension): keyed snapshots in bytewise key
/// order, at most `limit` (default and maximum [`MAX_SNAPSHOT_PAGE`]); `nextStartAfter` is
/// the last key when more may follow.
async fn list_snapshots(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let limit = p
        .parse::<u64>("limit")?
        .unwrap_or(MAX_SNAPSHOT_PAGE)
        .min(MAX_SNAPSHOT_PAGE);
    let snapshots = s
        .list_snapshots(annals_core::SnapshotKeyQuery {
            start_after: p.string("startAfter"),
            limit: Some(limit),
        })
        .await?;
    let next = (limit > 0 && snapshots.len() as u64 == limit)
        .then(|| snapshots.last().map(|s| s.key.clone()))
        .flatten();
    let snapshots: Vec<Value> = snapshots.iter().map(wire::keyed_snapshot).collect();
    ok(
        StatusCode::OK,
        json!({ "snapshots": snapshots, "nextStartAfter": next }),
    )
}

/// `POST /snapshot-keys/import` body `{"snapshots": [{"key", "content", "timestamp"}]}`
/// (extension) → `{"imported": n}`: keeps the timestamps, replaces snapshots with the
/// same keys, all or nothing; allowed while frozen. Routed through `/snapshot-keys/{key}`
/// so that a key may be called `import` (its GET, PUT and DELETE stay there).
async fn import_snapshots(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    if key != "import" {
        return Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            JsonBody(json!({"error": {
                "code": "method_not_allowed",
                "message": "POST is only defined for /snapshot-keys/import",
            }})),
        )
            .into_response());
    }
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let b: wire::KeyedSnapshotsIn = parse_body(&body)?;
    let imported = s.import_snapshots(b.into_snapshots()).await?;
    ok(StatusCode::OK, json!({ "imported": imported }))
}

async fn load_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
) -> ApiResult {
    match reg.get(&store).await?.load_snapshot(&key).await? {
        Some(snapshot) => ok(StatusCode::OK, wire::keyed_snapshot(&snapshot)),
        None => Err(Error::not_found("snapshot", key).into()),
    }
}

async fn drop_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
) -> ApiResult {
    if reg.get(&store).await?.drop_snapshot(&key).await? {
        no_content()
    } else {
        Err(Error::not_found("snapshot", key).into())
    }
}

async fn set_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let b: wire::SecretBody = parse_body(&body)?;
    if !b.has_events() {
        let secret = s.set_secret(&id, &b.secret).await?;
        return ok(
            StatusCode::CREATED,
            json!({"id": secret.id, "idx": secret.idx}),
        );
    }
    // One append stores the secret and the events: both, or neither.
    let result = s.append(b.into_request(id.clone())?).await?;
    count_append(&reg, &result);
    let idx = result
        .secret
        .as_ref()
        .map(|secret| secret.idx)
        .ok_or_else(|| {
            ApiError::from(Error::backend(
                "server",
                std::io::Error::other("the store did not report the secret it stored"),
            ))
        })?;
    let mut answer = serde_json::to_value(wire::AppendOut::new(&result, true))
        .map_err(|e| ApiError::from(Error::backend("server", e)))?;
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("secret");
        fields.insert("id".into(), json!(id));
        fields.insert("idx".into(), json!(idx));
    }
    ok(StatusCode::CREATED, answer)
}

async fn get_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
) -> ApiResult {
    match reg.get(&store).await?.get_secret(&id).await? {
        Some(secret) => ok(StatusCode::OK, wire::secret(&secret)),
        None => Err(Error::not_found("secret", id).into()),
    }
}

/// `DELETE /secrets/{id}`: `204`, or with `events` in the body (appended in the same
/// commit as the deletion) `200` with the append answer.
async fn delete_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body)?;
    let s = reg.get(&store).await?;
    let b: Option<AppendBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_body(&body)?)
    };
    match b {
        Some(b) if b.has_events() => {
            let result = s.append(b.into_deletion(id)?).await?;
            count_append(&reg, &result);
            ok(
                StatusCode::OK,
                serde_json::to_value(wire::AppendOut::new(&result, true))
                    .map_err(|e| ApiError::from(Error::backend("server", e)))?,
            )
        }
        _ => {
            s.delete_secret(&id).await?;
            no_content()
        }
    }
}

async fn list_secrets(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let secrets = s
        .list_secrets(SecretQuery {
            from_idx: p.parse("fromIdx")?.unwrap_or(0),
            skip: p.parse("skip")?.unwrap_or(0),
            limit: p.parse("limit")?,
            ids: p.all("id")?,
            include_deleted: p.flag("includeDeleted")?.unwrap_or(false),
        })
        .await?;
    let secrets: Vec<Value> = secrets.iter().map(wire::secret).collect();
    ok(StatusCode::OK, json!({ "secrets": secrets }))
}

async fn subscribe(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let filter = event_filter(&p)?;
    let last_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "is not a position"))
        })
        .transpose()?;
    let from = match last_id {
        Some(position) => ReadFrom::Position(position),
        None => read_from(&p)?,
    };
    let start_head = s.describe().await?.head_position;
    let events = s.subscribe(Subscribe { from, filter });
    let lag = LagWatch {
        store: Arc::clone(&s),
        start_head,
        max_lag: reg.max_subscriber_lag,
        since_check: 0,
        checked_at: std::time::Instant::now(),
        measured: None,
    };
    Ok(Sse::new(sse_events(events, lag, reg))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Events between a live subscription and the store head, checked every
/// [`LAG_CHECK_EVENTS`] events or [`LAG_CHECK_INTERVAL`] (the head is one `describe`).
struct LagWatch {
    store: Arc<dyn annals_core::EventStore>,
    /// The head when the subscriber connected: history before it is not lag.
    start_head: u64,
    max_lag: u64,
    since_check: u64,
    checked_at: std::time::Instant,
    /// The lag found by the last check, until it is reported to the metrics.
    measured: Option<u64>,
}

/// See [`LagWatch`].
const LAG_CHECK_EVENTS: u64 = 256;
/// See [`LagWatch`].
const LAG_CHECK_INTERVAL: Duration = Duration::from_millis(250);

impl LagWatch {
    /// The `lagged` message when the subscriber, about to be sent the event at
    /// `position`, is more than the limit behind.
    async fn check(&mut self, position: u64) -> Option<Event> {
        self.since_check += 1;
        if self.since_check < LAG_CHECK_EVENTS && self.checked_at.elapsed() < LAG_CHECK_INTERVAL {
            return None;
        }
        self.since_check = 0;
        self.checked_at = std::time::Instant::now();
        let head = self.store.describe().await.ok()?.head_position;
        // `position` is not sent yet: the subscriber holds everything before it.
        let lag = head.saturating_sub(position.saturating_sub(1).max(self.start_head));
        self.measured = Some(lag);
        (lag > self.max_lag).then(|| {
            Event::default().event("lagged").data(
                json!({
                    "lastPosition": position.saturating_sub(1),
                    "headPosition": head,
                    "lag": lag,
                    "maxSubscriberLag": self.max_lag,
                })
                .to_string(),
            )
        })
    }
}

/// The SSE messages of a subscription: `event` per stored event; a failure becomes one
/// `error` message (the API.md error body) and ends the stream; the store ending the
/// subscription (closed, dropped) sends `end`; a subscriber past the lag limit gets
/// `lagged` (data: `lastPosition`, `headPosition`, `lag`, `maxSubscriberLag`) and the
/// stream ends, so it resumes from its last id; the store ending the
/// subscription (closed, dropped) sends `end`, so a client can tell it from a dropped
/// connection. At server shutdown the stream just stops (before the stores close), so
/// clients reconnect and resume.
fn sse_events(
    events: EventStream,
    lag: LagWatch,
    reg: Arc<Registry>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let open = crate::metrics::OpenSubscription::new(Arc::clone(&reg));
    futures::stream::unfold(Some((events, open, lag)), move |state| {
        let reg = Arc::clone(&reg);
        async move {
            let (mut events, open, mut lag) = state?;
            let next = tokio::select! {
                // At shutdown the stream ends at once: the client resumes elsewhere or
                // later from its last id.
                biased;
                () = reg.shutdown_started() => return None,
                next = events.next() => next,
            };
            let message = match next {
                Some(Ok(e)) => {
                    let lagged = lag.check(e.position).await;
                    if let Some(events_behind) = lag.measured.take() {
                        open.lag(events_behind);
                    }
                    if let Some(lagged) = lagged {
                        count(&reg.metrics.subscriptions_lagged, 1);
                        return Some((Ok(lagged), None));
                    }
                    let data = serde_json::to_string(&wire::EventOut(&e)).unwrap_or_else(|err| {
                        ApiError::Store(Error::invalid("event", err.to_string()))
                            .body()
                            .to_string()
                    });
                    open.sent();
                    return Some((
                        Ok(Event::default()
                            .id(e.position.to_string())
                            .event("event")
                            .data(data)),
                        Some((events, open, lag)),
                    ));
                }
                Some(Err(_)) | None if reg.shutting_down() => return None,
                Some(Err(err)) => Event::default()
                    .event("error")
                    .data(ApiError::Store(err).body().to_string()),
                None => Event::default().event("end").data(""),
            };
            Some((Ok(message), None))
        }
    })
}
