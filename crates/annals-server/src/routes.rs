//! The handlers of API.md, one per route.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::{Json as JsonBody, Router};
use futures::{Stream, StreamExt};
use serde_json::json;

use annals_core::{
    Cursor, Direction, Error, EventFilter, EventStream, ListStreams, NewStreamSnapshot, ReadAll,
    ReadFrom, SecretQuery, StreamPageToken, StreamRead, Subscribe,
};

use crate::error::{ApiError, ErrorBody};
use crate::registry::Registry;
use crate::wire::query::{
    EchoQuery, EventFilterQuery, ExportQuery, LatestSnapshotQuery, ListStreamsQuery,
    PruneSnapshotsQuery, ReadQuery, ReadStreamQuery, SecretsQuery, SnapshotKeysQuery, StorePath,
    StreamQuery, SubscribeQuery,
};
use crate::wire::{
    self, parse_body, AppendBody, AppendOut, DeletedOut, EventsOut, ImportedOut, KeyedSnapshotBody,
    KeyedSnapshotOut, KeyedSnapshotsIn, KeyedSnapshotsOut, Params, PositionsIn, ReadOut,
    SecretBody, SecretOut, SecretsOut, SnapshotBody, SnapshotOut, SnapshotsOut, StoreCreated,
    StoreOut, StreamInfoAnswer, StreamsOut,
};

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A router that keeps the method and path of every route it is given, so that a test
/// can compare them with the OpenAPI document both ways (axum cannot list its routes).
struct Routes {
    router: Router<Arc<Registry>>,
    served: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        route: MethodRouter<Arc<Registry>>,
    ) -> Self {
        // Routes on one path merge into one `MethodRouter`.
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    fn get<H: Handler<T, Arc<Registry>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("get", path, routing::get(h))
    }

    fn put<H: Handler<T, Arc<Registry>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("put", path, routing::put(h))
    }

    fn post<H: Handler<T, Arc<Registry>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("post", path, routing::post(h))
    }

    /// A `POST` whose body is read as a stream, past the limit of JSON bodies.
    fn post_streamed<H: Handler<T, Arc<Registry>>, T: 'static>(
        self,
        path: &'static str,
        h: H,
    ) -> Self {
        self.add(
            "post",
            path,
            routing::post(h).layer(DefaultBodyLimit::disable()),
        )
    }

    fn delete<H: Handler<T, Arc<Registry>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("delete", path, routing::delete(h))
    }
}

/// Every route, with the handler that serves it.
fn routes() -> Routes {
    use crate::{append_batch, incremental, maintenance};
    let routes = Routes {
        router: Router::new(),
        served: Vec::new(),
    };
    routes
        .get("/healthz", health)
        .get("/metrics", metrics)
        .get("/v1/openapi.json", openapi)
        .put("/v1/stores/{store}", create_store)
        .get("/v1/stores/{store}", describe)
        .delete("/v1/stores/{store}", drop_store)
        .post("/v1/stores/{store}/freeze", freeze)
        .post("/v1/stores/{store}/unfreeze", unfreeze)
        .post("/v1/stores/{store}/events", append)
        .get("/v1/stores/{store}/events", read_all)
        .delete("/v1/stores/{store}/events", maintenance::clear_events)
        .post_streamed(
            "/v1/stores/{store}/events/import",
            maintenance::import_events,
        )
        .post(
            "/v1/stores/{store}/events/batch",
            append_batch::append_batch,
        )
        .post("/v1/stores/{store}/events/{id}/dispatched", mark_dispatched)
        .post("/v1/stores/{store}/events/dispatched", mark_dispatched_at)
        .get("/v1/stores/{store}/events/export", export)
        .get("/v1/stores/{store}/streams", list_streams)
        .get("/v1/stores/{store}/streams/info", stream_info)
        .get("/v1/stores/{store}/streams/events", read_stream)
        .post("/v1/stores/{store}/snapshots", save_stream_snapshot)
        .get("/v1/stores/{store}/snapshots", list_stream_snapshots)
        .delete("/v1/stores/{store}/snapshots", prune_stream_snapshots)
        .get(
            "/v1/stores/{store}/snapshots/latest",
            latest_stream_snapshot,
        )
        .get("/v1/stores/{store}/snapshot-keys", list_snapshots)
        .put("/v1/stores/{store}/snapshot-keys/{key}", save_snapshot)
        .get("/v1/stores/{store}/snapshot-keys/{key}", load_snapshot)
        .delete("/v1/stores/{store}/snapshot-keys/{key}", drop_snapshot)
        // `/snapshot-keys/import`, routed here so that a key may be called `import`.
        .post("/v1/stores/{store}/snapshot-keys/{key}", import_snapshots)
        .get("/v1/stores/{store}/secrets", list_secrets)
        .delete("/v1/stores/{store}/secrets", maintenance::clear_secrets)
        .put("/v1/stores/{store}/secrets/{id}", set_secret)
        .get("/v1/stores/{store}/secrets/{id}", get_secret)
        .delete("/v1/stores/{store}/secrets/{id}", delete_secret)
        // `/secrets/import`, routed here so that a secret may be called `import`.
        .post("/v1/stores/{store}/secrets/{id}", maintenance::secrets_post)
        .post("/v1/stores/{store}/imports", incremental::begin)
        .get("/v1/stores/{store}/imports", incremental::list)
        .delete("/v1/stores/{store}/imports", incremental::rollback_all)
        .delete(
            "/v1/stores/{store}/imports/{importId}",
            incremental::rollback,
        )
        .post(
            "/v1/stores/{store}/imports/{importId}/events",
            incremental::push,
        )
        .post(
            "/v1/stores/{store}/imports/{importId}/commit",
            incremental::commit,
        )
        .get("/v1/stores/{store}/subscribe", subscribe)
}

/// The method (lower case) and path template of every route the router serves.
#[cfg(test)]
pub(crate) fn served_routes() -> Vec<(&'static str, &'static str)> {
    routes().served
}

/// Every route of the server.
pub(crate) fn router(registry: Arc<Registry>, tokens: Option<crate::auth::Tokens>) -> Router {
    routes()
        .router
        .fallback(|| async { ApiError::Store(Error::not_found("route", "no such route")) })
        .layer(DefaultBodyLimit::max(registry.max_body_bytes))
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

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    tag = "operations",
    summary = "Liveness check: `ok`.",
    responses(
        (status = 200, description = "The server is up: `ok`.", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn health() -> &'static str {
    "ok"
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This document.",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object),
    )
)]
pub(crate) async fn openapi() -> JsonBody<&'static utoipa::openapi::OpenApi> {
    JsonBody(crate::openapi::document())
}

/// The body, or the error naming the limit it exceeds (`limit`, the server's
/// [`crate::ServerConfig::max_body_bytes`], which the router enforces).
pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::invalid("body", e.body_text())
        }
    })
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus text metrics.",
    responses(
        (status = 200, description = "The Prometheus text exposition format 0.0.4: appends, reads, subscribers, lag, latency histograms.", body = String, content_type = "text/plain"),
    )
)]
pub(crate) async fn metrics(State(reg): State<Arc<Registry>>) -> Response {
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

fn ok(status: StatusCode, body: impl serde::Serialize) -> ApiResult {
    Ok((status, JsonBody(body)).into_response())
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    put,
    path = "/v1/stores/{store}",
    operation_id = "createStore",
    tag = "stores",
    summary = "Create a store.",
    params(StorePath),
    responses(
        (status = 201, description = "The store was created.", body = StoreCreated),
        (status = 400, description = "`invalid_request`: not a store name.", body = ErrorBody),
        (status = 409, description = "`store_already_exists`.", body = ErrorBody),
    )
)]
pub(crate) async fn create_store(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.create(&store).await?;
    tracing::info!(%store, "store created");
    ok(StatusCode::CREATED, wire::StoreCreated { store: &store })
}

#[utoipa::path(
    delete,
    path = "/v1/stores/{store}",
    operation_id = "dropStore",
    tag = "stores",
    summary = "Delete a store and all its data.",
    params(StorePath),
    responses(
        (status = 204, description = "The store and everything in it (events, snapshots, secrets, imports, freeze flag) are gone."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn drop_store(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.drop_store(&store).await?;
    tracing::info!(%store, "store dropped");
    no_content()
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}",
    operation_id = "describeStore",
    tag = "stores",
    summary = "Counts, head position, freeze flag.",
    params(StorePath),
    responses(
        (status = 200, description = "The store.", body = StoreOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn describe(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    let d = reg.get(&store).await?.describe().await?;
    ok(StatusCode::OK, wire::description(&store, &d))
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/freeze",
    operation_id = "freeze",
    tag = "stores",
    summary = "Refuse writes.",
    params(StorePath),
    responses(
        (status = 204, description = "The store is frozen: appends and secret changes answer 423."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 409, description = "`already_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn freeze(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?.freeze().await?;
    no_content()
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/unfreeze",
    operation_id = "unfreeze",
    tag = "stores",
    summary = "Accept writes again.",
    params(StorePath),
    responses(
        (status = 204, description = "The store accepts writes."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 409, description = "`not_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn unfreeze(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?.unfreeze().await?;
    no_content()
}

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/events",
    operation_id = "append",
    tag = "events",
    summary = "Append events atomically.",
    params(StorePath, EchoQuery),
    request_body(content = AppendBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The stored events in request order (an empty `events` stores nothing); a retry of a stored append answers its events with `retried: true`.", body = AppendOut),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`; `secret_not_found` for a `secret` to delete that is unknown or deleted.", body = ErrorBody),
        (status = 409, description = "`version_conflict` (details `aggregateId`, `aggregate`, `context`, `version` or `expectedVersion`, `currentVersion`), `duplicate_event_id`, `secret_already_exists`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxBodyBytes`, `maxEventsPerAppend`.", body = ErrorBody),
        (status = 423, description = "`store_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn append(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let echo = echo(query.as_deref())?;
    let body = body_bytes(body, reg.max_body_bytes)?;
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

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/events",
    operation_id = "readEvents",
    tag = "events",
    summary = "Read events by position, filtered.",
    params(StorePath, EventFilterQuery, ReadQuery),
    responses(
        (status = 200, description = "The matching events; `reverse=true&limit=1` is the latest one.", body = ReadOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter, `cursor` with `afterPosition`.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxFilterValues` (a repeated parameter).", body = ErrorBody),
    )
)]
pub(crate) async fn read_all(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let filter = event_filter(&p)?;
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
    /// The export's maintenance (a freeze with `maintenanceMode=auto`), ended when the
    /// body ends; a body dropped because the client went away drops it, which lifts
    /// the freeze in a task of its own.
    maintenance: Option<annals_maintenance::Maintenance>,
}

impl ExportState {
    /// Lifts the export's freeze (if any) before the body's last byte or error goes out,
    /// so a client that saw the end also sees the store writable.
    async fn finish(&mut self) {
        if let Some(maintenance) = self.maintenance.take() {
            match maintenance.end().await {
                // Someone unfroze it by hand meanwhile: nothing left to lift.
                Ok(()) | Err(Error::NotFrozen) => {}
                Err(e) => tracing::warn!(error = %e, "cannot unfreeze the store after an export"),
            }
        }
    }
}

/// `GET /events/export?afterPosition=|cursor=&limit=&maintenanceMode=`: NDJSON in
/// position order, after a position or an opaque cursor (from `GET /events` or an
/// earlier export's last line). With `maintenanceMode=auto` the store is frozen (409 `already_frozen` when it
/// is) for as long as the body is being sent, and unfrozen when it ends, fails, or the
/// client goes away.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/events/export",
    operation_id = "exportEvents",
    tag = "maintenance",
    summary = "Stored events as NDJSON.",
    params(StorePath, ExportQuery),
    responses(
        (status = 200, description = "One stored event (as `GET /events` writes it) per line, in position order; a client interrupted after a line resumes with `afterPosition` = its `position`.", body = String, content_type = "application/x-ndjson",
            headers(("X-Head-Position" = u64, description = "The newest position when the export started."))),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 409, description = "`already_frozen`: `maintenanceMode=auto` on a frozen store.", body = ErrorBody),
    )
)]
pub(crate) async fn export(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let from = read_from(&p)?;
    let limit: Option<u64> = p.parse("limit")?;
    let maintenance = Some(
        annals_maintenance::Maintenance::begin(&s, crate::maintenance::mode(&p)?.into()).await?,
    );
    let head = s.describe().await?.head_position;
    count(&reg.metrics.reads, 1);
    let state = ExportState {
        store: s,
        from,
        remaining: limit,
        done: false,
        maintenance,
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

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/events/{id}/dispatched",
    operation_id = "markDispatched",
    tag = "events",
    summary = "Mark an event dispatched.",
    params(StorePath, ("id" = String, Path, description = "The event's id (URL-encoded).")),
    responses(
        (status = 204, description = "The event is marked dispatched."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `event_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn mark_dispatched(
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
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/events/dispatched",
    operation_id = "markDispatchedAt",
    tag = "events",
    summary = "Mark the events at these positions dispatched, all or nothing (extension); 404 `event_not_found` naming a position that holds no event.",
    params(StorePath),
    request_body(content = PositionsIn, content_type = "application/json"),
    responses(
        (status = 204, description = "Every event is marked dispatched."),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`; `event_not_found` (`id`: `position N`) for a position that holds no event: nothing is marked.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxBodyBytes`, `maxDispatchedPositions`.", body = ErrorBody),
    )
)]
pub(crate) async fn mark_dispatched_at(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body, reg.max_body_bytes)?;
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

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/streams",
    operation_id = "listStreams",
    tag = "streams",
    summary = "List streams by first event.",
    params(StorePath, ListStreamsQuery),
    responses(
        (status = 200, description = "A page of streams by (first timestamp, first position).", body = StreamsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter, an unknown `startAfter`, `startAfter` with `pageToken`.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn list_streams(
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
    ok(
        StatusCode::OK,
        wire::StreamsOut {
            has_more: page.next_page_token.is_some(),
            next_page_token: page.next_page_token.map(|t| t.to_string()),
            streams: page.streams.iter().map(wire::stream_info).collect(),
        },
    )
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/streams/info",
    operation_id = "streamInfo",
    tag = "streams",
    summary = "One stream's version and positions (extension).",
    params(StorePath, StreamQuery),
    responses(
        (status = 200, description = "The stream, or `null`.", body = StreamInfoAnswer),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn stream_info(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let info = s.stream_info(&p.stream()).await?;
    ok(
        StatusCode::OK,
        wire::StreamInfoAnswer {
            stream: info.as_ref().map(wire::stream_info),
        },
    )
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/streams/events",
    operation_id = "readStream",
    tag = "streams",
    summary = "One stream's events by version (extension).",
    params(StorePath, StreamQuery, ReadStreamQuery),
    responses(
        (status = 200, description = "The stream's events in the range.", body = EventsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn read_stream(
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

#[utoipa::path(
    post,
    path = "/v1/stores/{store}/snapshots",
    operation_id = "saveStreamSnapshot",
    tag = "snapshots",
    summary = "Save a stream snapshot.",
    params(StorePath),
    request_body(content = SnapshotBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The snapshot, with its id and timestamp filled in.", body = SnapshotOut),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: the body is larger than `maxBodyBytes`.", body = ErrorBody),
    )
)]
pub(crate) async fn save_stream_snapshot(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body, reg.max_body_bytes)?;
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
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/snapshots",
    operation_id = "listStreamSnapshots",
    tag = "snapshots",
    summary = "Every snapshot of one stream, oldest save first: `{\"snapshots\": [...]}` (extension).",
    params(StorePath, StreamQuery),
    responses(
        (status = 200, description = "The stream's snapshots.", body = SnapshotsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn list_stream_snapshots(
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
    let answer = wire::SnapshotsOut {
        snapshots: snapshots.iter().map(wire::stream_snapshot).collect(),
    };
    // Written directly: `data` goes out byte for byte, as everywhere else.
    ok(StatusCode::OK, answer)
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/snapshots/latest",
    operation_id = "latestStreamSnapshot",
    tag = "snapshots",
    summary = "The newest snapshot at or below a version.",
    params(StorePath, StreamQuery, LatestSnapshotQuery),
    responses(
        (status = 200, description = "The snapshot with the greatest `streamVersion` at or below `maxStreamVersion`; of equal ones, the last written.", body = SnapshotOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `snapshot_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn latest_stream_snapshot(
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

#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/snapshots",
    operation_id = "pruneStreamSnapshots",
    tag = "snapshots",
    summary = "Keep the newest N snapshots of a stream.",
    params(StorePath, StreamQuery, PruneSnapshotsQuery),
    responses(
        (status = 200, description = "How many snapshots were deleted.", body = DeletedOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn prune_stream_snapshots(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let p = Params::parse_query(q.as_deref())?;
    let keep: usize = p.parse("keep")?.unwrap_or(0);
    let deleted = s.prune_stream_snapshots(&p.stream(), keep).await?;
    ok(StatusCode::OK, wire::DeletedOut { deleted })
}

#[utoipa::path(
    put,
    path = "/v1/stores/{store}/snapshot-keys/{key}",
    operation_id = "saveSnapshot",
    tag = "snapshots",
    summary = "Save a keyed snapshot.",
    params(StorePath, ("key" = String, Path, description = "The snapshot's key (URL-encoded), at most 256 bytes.")),
    request_body(content = KeyedSnapshotBody, content_type = "application/json"),
    responses(
        (status = 204, description = "The snapshot is stored (replacing the key's previous one)."),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: the body is larger than `maxBodyBytes`.", body = ErrorBody),
    )
)]
pub(crate) async fn save_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body, reg.max_body_bytes)?;
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
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/snapshot-keys",
    operation_id = "listSnapshots",
    tag = "snapshots",
    summary = "Keyed snapshots in bytewise key order, paged with startAfter and limit: `{\"snapshots\": [{\"key\", \"content\", \"timestamp\"}], \"nextStartAfter\"}` (extension).",
    params(StorePath, SnapshotKeysQuery),
    responses(
        (status = 200, description = "A page of keyed snapshots.", body = KeyedSnapshotsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn list_snapshots(
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
    ok(
        StatusCode::OK,
        wire::KeyedSnapshotsOut {
            next_start_after: next,
            snapshots: snapshots.iter().map(wire::keyed_snapshot).collect(),
        },
    )
}

/// `POST /snapshot-keys/import` body `{"snapshots": [{"key", "content", "timestamp"}]}`
/// (extension) → `{"imported": n}`: keeps the timestamps, replaces snapshots with the
/// same keys, all or nothing; allowed while frozen. Routed through `/snapshot-keys/{key}`
/// so that a key may be called `import` (its GET, PUT and DELETE stay there).
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/snapshot-keys/import",
    operation_id = "importSnapshots",
    tag = "snapshots",
    summary = "Store keyed snapshots keeping their timestamps, replacing same keys, all or nothing; allowed while frozen: `{\"imported\": n}` (extension).",
    params(StorePath),
    request_body(content = KeyedSnapshotsIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Every snapshot is stored.", body = ImportedOut),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: the body is larger than `maxBodyBytes`.", body = ErrorBody),
    )
)]
pub(crate) async fn import_snapshots(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    if key != "import" {
        return Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            JsonBody(ErrorBody::new(
                "method_not_allowed",
                "POST is only defined for /snapshot-keys/import",
            )),
        )
            .into_response());
    }
    let body = body_bytes(body, reg.max_body_bytes)?;
    let s = reg.get(&store).await?;
    let b: wire::KeyedSnapshotsIn = parse_body(&body)?;
    let imported = s.import_snapshots(b.into_snapshots()).await?;
    ok(StatusCode::OK, wire::ImportedOut { imported })
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/snapshot-keys/{key}",
    operation_id = "loadSnapshot",
    tag = "snapshots",
    summary = "Load a keyed snapshot.",
    params(StorePath, ("key" = String, Path, description = "The snapshot's key (URL-encoded).")),
    responses(
        (status = 200, description = "The snapshot.", body = KeyedSnapshotOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `snapshot_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn load_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
) -> ApiResult {
    match reg.get(&store).await?.load_snapshot(&key).await? {
        Some(snapshot) => ok(StatusCode::OK, wire::keyed_snapshot(&snapshot)),
        None => Err(Error::not_found("snapshot", key).into()),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/snapshot-keys/{key}",
    operation_id = "dropSnapshot",
    tag = "snapshots",
    summary = "Delete a keyed snapshot.",
    params(StorePath, ("key" = String, Path, description = "The snapshot's key (URL-encoded).")),
    responses(
        (status = 204, description = "The snapshot is gone."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `snapshot_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn drop_snapshot(
    State(reg): State<Arc<Registry>>,
    Path((store, key)): Path<(String, String)>,
) -> ApiResult {
    if reg.get(&store).await?.drop_snapshot(&key).await? {
        no_content()
    } else {
        Err(Error::not_found("snapshot", key).into())
    }
}

#[utoipa::path(
    put,
    path = "/v1/stores/{store}/secrets/{id}",
    operation_id = "setSecret",
    tag = "secrets",
    summary = "Store a secret under a new id; with `events`, appended in the same commit (the answer then also carries `commitId`, `events`, `headPosition`).",
    params(StorePath, ("id" = String, Path, description = "The secret's id (URL-encoded), never used before in the store.")),
    request_body(content = SecretBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The secret is stored (with the events, when the body has some).", body = wire::SetSecretOut),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 409, description = "`secret_already_exists` (ids are never reused); with events, `version_conflict`, `duplicate_event_id`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxBodyBytes`, `maxEventsPerAppend`.", body = ErrorBody),
        (status = 423, description = "`store_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn set_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body, reg.max_body_bytes)?;
    let s = reg.get(&store).await?;
    let b: wire::SecretBody = parse_body(&body)?;
    if !b.has_events() {
        let secret = s.set_secret(&id, &b.secret).await?;
        return ok(
            StatusCode::CREATED,
            wire::SecretStored {
                id: &secret.id,
                idx: secret.idx,
            },
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
    let answer = wire::SecretAppendOut {
        append: wire::AppendOut {
            secret: None,
            ..wire::AppendOut::new(&result, true)
        },
        id: &id,
        idx,
    };
    // Written directly: payloads go out byte for byte, as from `POST /events`.
    ok(StatusCode::CREATED, answer)
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/secrets/{id}",
    operation_id = "getSecret",
    tag = "secrets",
    summary = "Read a secret.",
    params(StorePath, ("id" = String, Path, description = "The secret's id (URL-encoded).")),
    responses(
        (status = 200, description = "The secret (`secret: null` once deleted).", body = SecretOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `secret_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn get_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
) -> ApiResult {
    match reg.get(&store).await?.get_secret(&id).await? {
        Some(secret) => ok(StatusCode::OK, wire::SecretOut::new(&secret)),
        None => Err(Error::not_found("secret", id).into()),
    }
}

/// `DELETE /secrets/{id}`: `204`, or with `events` in the body (appended in the same
/// commit as the deletion) `200` with the append answer.
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/secrets/{id}",
    operation_id = "deleteSecret",
    tag = "secrets",
    summary = "Erase a secret for good (204); with `events` in the body, appended in the same commit, the answer is 200 with the append answer.",
    params(StorePath, ("id" = String, Path, description = "The secret's id (URL-encoded).")),
    request_body(content = ref("#/components/schemas/AppendRequest"),
        content_type = "application/json",
        description = "Optional (an empty body is none): events to append in the same commit, as an append body without `secret`."),
    responses(
        (status = 200, description = "With events: the append answer; its `secret` is the deleted one.", body = AppendOut),
        (status = 204, description = "The secret is erased."),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or body.", body = ErrorBody),
        (status = 404, description = "`store_not_found`; `secret_not_found` when the secret is unknown or already deleted (nothing is appended then).", body = ErrorBody),
        (status = 409, description = "With events: `version_conflict`, `duplicate_event_id`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxBodyBytes`, `maxEventsPerAppend`.", body = ErrorBody),
        (status = 423, description = "`store_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn delete_secret(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = body_bytes(body, reg.max_body_bytes)?;
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
            ok(StatusCode::OK, wire::AppendOut::new(&result, true))
        }
        _ => {
            s.delete_secret(&id).await?;
            no_content()
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/secrets",
    operation_id = "listSecrets",
    tag = "secrets",
    summary = "Secrets by index.",
    params(StorePath, SecretsQuery),
    responses(
        (status = 200, description = "The matching secrets by `idx`.", body = SecretsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxFilterValues` (repeated `id`).", body = ErrorBody),
    )
)]
pub(crate) async fn list_secrets(
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
    ok(
        StatusCode::OK,
        wire::SecretsOut {
            secrets: secrets.iter().map(wire::SecretOut::new).collect(),
        },
    )
}

#[utoipa::path(
    get,
    path = "/v1/stores/{store}/subscribe",
    operation_id = "subscribe",
    tag = "events",
    summary = "Catch-up then live events as Server-Sent Events (`event: event`); a subscriber more than the server's --max-subscriber-lag events behind gets `event: lagged` and the stream ends, to be resumed with Last-Event-ID.",
    params(StorePath, EventFilterQuery, SubscribeQuery, ("Last-Event-ID" = Option<u64>, Header, nullable = false, description = "Resume after this position (the last `id:` received); takes precedence over `afterPosition`.")),
    responses(
        (status = 200, description = "An endless stream: `id: <position>`, `event: event`, `data: <stored event JSON>` per event; `event: lagged` (data: `lastPosition`, `headPosition`, `lag`, `maxSubscriberLag`) ends it when the subscriber falls too far behind, `event: error` (data: the error body) when the store fails, `event: end` when the store closes; keep-alive comments every 15 s.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "`invalid_request`: a malformed store name, parameter or `Last-Event-ID`.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxFilterValues` (a repeated parameter).", body = ErrorBody),
    )
)]
pub(crate) async fn subscribe(
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
    let keep_alive = reg.keep_alive;
    Ok(Sse::new(sse_events(events, lag, reg))
        .keep_alive(KeepAlive::new().interval(keep_alive))
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
                    let data =
                        serde_json::to_string(&wire::EventOut::new(&e)).unwrap_or_else(|err| {
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
