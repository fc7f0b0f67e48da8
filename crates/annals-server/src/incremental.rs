//! The incremental-import routes (API.md "Incremental import", issue #6), on top of
//! [`annals_maintenance::IncrementalImport`].
//!
//! Open imports live in this server's memory ([`Imports`], per store): their staged events
//! are lost when the server stops, and they go when their store is dropped. A store has at
//! most [`MAX_OPEN_IMPORTS`] open imports, and an import at most [`MAX_STAGED_EVENTS`]
//! staged events (`limit_exceeded`, naming the limit). A commit closes the import whether
//! it succeeds or not; a failed commit writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json as JsonBody;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use annals_core::{Error, Json, StreamId, Timestamp};
use annals_maintenance::{IncomingEvent, IncrementalImport};

use crate::error::{ApiError, ErrorBody};
use crate::openapi::{JsonDocument, TimestampIn};
use crate::registry::Registry;
use crate::routes::{body_bytes, ApiResult};
use crate::wire::parse_body;
use crate::wire::query::StorePath;

/// The most imports one store may have open at once.
pub(crate) const MAX_OPEN_IMPORTS: usize = 64;
/// The most events one import may stage (over all its pushes): what its commit, one
/// atomic store write, can take.
pub(crate) const MAX_STAGED_EVENTS: usize = annals_core::limits::MAX_EVENTS_PER_APPEND;

/// Store name → import id → import.
type OpenImports = HashMap<String, HashMap<String, IncrementalImport>>;

/// The open imports of every store.
#[derive(Default)]
pub(crate) struct Imports {
    open: Mutex<OpenImports>,
}

fn lock_poisoned() -> ApiError {
    ApiError::Store(Error::backend(
        "server",
        std::io::Error::other("a thread panicked while holding the open imports"),
    ))
}

impl Imports {
    fn lock(&self) -> Result<MutexGuard<'_, OpenImports>, ApiError> {
        self.open.lock().map_err(|_| lock_poisoned())
    }

    /// Forgets (rolls back) every open import of `store`; used when the store is dropped.
    pub(crate) fn drop_store(&self, store: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(store);
        }
    }
}

fn not_found(id: &str) -> ApiError {
    Error::not_found("import", id).into()
}

/// One event of a push body: the append body's event without a version.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = StagedEvent)]
struct StagedBody {
    /// The event's id, unique in the store; a server UUID when absent.
    #[schema(min_length = 1, max_length = 256)]
    id: Option<String>,
    /// The stream's id.
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    aggregate_id: Option<String>,
    /// The stream's aggregate type (absent or `null`: none).
    #[schema(max_length = 256)]
    aggregate: Option<String>,
    /// The stream's context (absent or `null`: none).
    #[schema(max_length = 256)]
    context: Option<String>,
    /// The event type (absent or `null`: `""`).
    #[serde(rename = "type")]
    #[schema(max_length = 256)]
    event_type: Option<String>,
    /// The event's time; absent: the staging time.
    #[schema(value_type = Option<TimestampIn>)]
    timestamp: Option<Timestamp>,
    /// The payload (absent: `null`).
    #[schema(value_type = JsonDocument, required = false)]
    payload: Option<Json>,
    /// The metadata (absent: `null`).
    #[schema(value_type = JsonDocument, required = false)]
    metadata: Option<Json>,
    /// Refused when present: the commit gives the versions.
    #[schema(schema_with = crate::openapi::null_only, required = false)]
    version: Option<Value>,
}

/// The body of `POST /imports/{importId}/events`.
#[derive(Deserialize, ToSchema)]
#[schema(as = StageEventsRequest)]
struct PushBody {
    /// The events to stage, in order.
    events: Vec<StagedBody>,
}

/// `POST /imports`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ImportBegun)]
struct ImportBegun<'a> {
    /// The import's id.
    import_id: &'a str,
}

/// An open import.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OpenImport)]
struct ImportOut<'a> {
    /// The import's id.
    import_id: &'a str,
    /// Events staged so far.
    staged_count: usize,
}

/// `GET /imports`.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenImports)]
struct ImportsOut<'a> {
    /// The open imports, by id.
    imports: Vec<ImportOut<'a>>,
}

/// `POST /imports/{importId}/commit`.
// Fields in byte order, as the answer always had them (it was built as a JSON map).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = IncrementalImportCommitted)]
struct CommitOut {
    /// The newest position in the store afterwards.
    head_position: u64,
    /// Staged events appended.
    imported: u64,
    /// Staged events dropped as equal to a stored one.
    skipped: u64,
}

fn incoming(events: Vec<StagedBody>) -> Result<Vec<IncomingEvent>, ApiError> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.version.is_some() {
                return Err(ApiError::invalid(
                    format!("events[{i}].version"),
                    "an incremental import gives versions at commit; leave version out",
                ));
            }
            let id = e.aggregate_id.ok_or_else(|| {
                ApiError::invalid(format!("events[{i}].aggregateId"), "is required")
            })?;
            Ok(IncomingEvent {
                id: e.id,
                stream: StreamId {
                    context: e.context.unwrap_or_default(),
                    aggregate: e.aggregate.unwrap_or_default(),
                    id,
                },
                event_type: e.event_type.unwrap_or_default(),
                timestamp: e.timestamp,
                payload: e.payload.unwrap_or_else(Json::null),
                metadata: e.metadata.unwrap_or_else(Json::null),
            })
        })
        .collect()
}

/// `POST /v1/stores/{store}/imports` → `201 {"importId"}`.
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/imports",
    operation_id = "beginIncrementalImport",
    tag = "imports",
    summary = "Open an incremental import (`201 {\"importId\"}`); staged events live in the server's memory.",
    params(StorePath),
    responses(
        (status = 201, description = "The import is open.", body = ImportBegun),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxOpenImports`.", body = ErrorBody),
    )
)]
pub(crate) async fn begin(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    let handle = reg.get(&store).await?;
    let id = uuid::Uuid::now_v7().to_string();
    // Registered under the registry lock, and only while the store is still the open one:
    // a drop racing this request either finds the import (and removes it) or makes this
    // request `store_not_found`, never leaves an import of a dropped store behind.
    reg.while_open(&store, &handle, || {
        let mut open = reg.imports.lock()?;
        let imports = open.entry(store.clone()).or_default();
        if imports.len() >= MAX_OPEN_IMPORTS {
            return Err(ApiError::LimitExceeded {
                what: "imports".into(),
                limit: "maxOpenImports",
                max: MAX_OPEN_IMPORTS,
            });
        }
        imports.insert(id.clone(), IncrementalImport::begin(&handle));
        Ok(())
    })?;
    Ok((
        StatusCode::CREATED,
        JsonBody(ImportBegun { import_id: &id }),
    )
        .into_response())
}

/// `GET /v1/stores/{store}/imports` → `200 {"imports": [{"importId", "stagedCount"}]}`,
/// oldest first.
#[utoipa::path(
    get,
    path = "/v1/stores/{store}/imports",
    operation_id = "listIncrementalImports",
    tag = "imports",
    summary = "The open incremental imports: `{\"imports\": [{\"importId\", \"stagedCount\"}]}`.",
    params(StorePath),
    responses(
        (status = 200, description = "The open imports, by id.", body = ImportsOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.get(&store).await?;
    let open = reg.imports.lock()?;
    let mut imports: Vec<(&String, usize)> = open
        .get(&store)
        .map(|m| m.iter().map(|(id, i)| (id, i.staged_count())).collect())
        .unwrap_or_default();
    imports.sort();
    let imports = imports
        .into_iter()
        .map(|(id, n)| ImportOut {
            import_id: id,
            staged_count: n,
        })
        .collect();
    Ok(JsonBody(ImportsOut { imports }).into_response())
}

/// `DELETE /v1/stores/{store}/imports`: rolls back every open import of the store.
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/imports",
    operation_id = "rollbackIncrementalImports",
    tag = "imports",
    summary = "Roll back every open incremental import of the store.",
    params(StorePath),
    responses(
        (status = 204, description = "No import of the store is open."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn rollback_all(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?;
    reg.imports.lock()?.remove(&store);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/stores/{store}/imports/{importId}/events` body `{"events": [...]}` → `204`.
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/imports/{importId}/events",
    operation_id = "pushIncrementalImport",
    tag = "imports",
    summary = "Stage events (no versions; a missing timestamp is the staging time).",
    params(StorePath, ("importId" = String, Path, description = "The import's id, as `POST /imports` gave it.")),
    request_body(content = PushBody, content_type = "application/json"),
    responses(
        (status = 204, description = "The events are staged."),
        (status = 400, description = "`invalid_request`: a malformed store name or body, an event with a `version` or without `aggregateId`.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `import_not_found`.", body = ErrorBody),
        (status = 413, description = "`limit_exceeded`: `maxBodyBytes`, `maxStagedEvents`.", body = ErrorBody),
    )
)]
pub(crate) async fn push(
    State(reg): State<Arc<Registry>>,
    Path((store, import_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    reg.get(&store).await?;
    let body: PushBody = parse_body(&body_bytes(body, reg.max_body_bytes)?)?;
    let events = incoming(body.events)?;
    let mut open = reg.imports.lock()?;
    let import = open
        .get_mut(&store)
        .and_then(|m| m.get_mut(&import_id))
        .ok_or_else(|| not_found(&import_id))?;
    if import.staged_count().saturating_add(events.len()) > MAX_STAGED_EVENTS {
        return Err(ApiError::LimitExceeded {
            what: "events".into(),
            limit: "maxStagedEvents",
            max: MAX_STAGED_EVENTS,
        });
    }
    import.push(events)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/stores/{store}/imports/{importId}/commit` →
/// `200 {"imported", "skipped", "headPosition"}`; closes the import, also on error.
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/imports/{importId}/commit",
    operation_id = "commitIncrementalImport",
    tag = "imports",
    summary = "Append the staged events not stored yet after the newest event, ordered by (timestamp, staging order), atomically; 409 `import_conflict` when one is older than the newest stored event. Closes the import, also on error.",
    params(StorePath, ("importId" = String, Path, description = "The import's id, as `POST /imports` gave it.")),
    responses(
        (status = 200, description = "The staged events are appended (or were already stored).", body = CommitOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `import_not_found`.", body = ErrorBody),
        (status = 409, description = "`import_conflict` (details `index`, `reason`); `duplicate_event_id`.", body = ErrorBody),
        (status = 423, description = "`store_frozen`.", body = ErrorBody),
    )
)]
pub(crate) async fn commit(
    State(reg): State<Arc<Registry>>,
    Path((store, import_id)): Path<(String, String)>,
) -> ApiResult {
    reg.get(&store).await?;
    let import = reg
        .imports
        .lock()?
        .get_mut(&store)
        .and_then(|m| m.remove(&import_id))
        .ok_or_else(|| not_found(&import_id))?;
    let outcome = import.commit().await?;
    tracing::info!(%store, import = %import_id, imported = outcome.imported, skipped = outcome.skipped, "incremental import committed");
    Ok(JsonBody(CommitOut {
        head_position: outcome.head_position,
        imported: outcome.imported,
        skipped: outcome.skipped,
    })
    .into_response())
}

/// `DELETE /v1/stores/{store}/imports/{importId}` → `204` (rollback).
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/imports/{importId}",
    operation_id = "rollbackIncrementalImport",
    tag = "imports",
    summary = "Roll back (close) one incremental import.",
    params(StorePath, ("importId" = String, Path, description = "The import's id, as `POST /imports` gave it.")),
    responses(
        (status = 204, description = "The import is closed; nothing was written."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = ErrorBody),
        (status = 404, description = "`store_not_found`, `import_not_found`.", body = ErrorBody),
    )
)]
pub(crate) async fn rollback(
    State(reg): State<Arc<Registry>>,
    Path((store, import_id)): Path<(String, String)>,
) -> ApiResult {
    reg.get(&store).await?;
    reg.imports
        .lock()?
        .get_mut(&store)
        .and_then(|m| m.remove(&import_id))
        .ok_or_else(|| not_found(&import_id))?
        .rollback();
    Ok(StatusCode::NO_CONTENT.into_response())
}
