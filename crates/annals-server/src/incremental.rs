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
use serde::Deserialize;
use serde_json::{json, Value};

use annals_core::{Error, Json, StreamId, Timestamp};
use annals_maintenance::{IncomingEvent, IncrementalImport};

use crate::error::ApiError;
use crate::registry::Registry;
use crate::routes::{body_bytes, ApiResult};
use crate::wire::parse_body;

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
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StagedBody {
    id: Option<String>,
    aggregate_id: Option<String>,
    aggregate: Option<String>,
    context: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    timestamp: Option<Timestamp>,
    payload: Option<Json>,
    metadata: Option<Json>,
    /// Refused when present: the commit gives the versions.
    version: Option<Value>,
}

#[derive(Deserialize)]
struct PushBody {
    events: Vec<StagedBody>,
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
    Ok((StatusCode::CREATED, JsonBody(json!({ "importId": id }))).into_response())
}

/// `GET /v1/stores/{store}/imports` → `200 {"imports": [{"importId", "stagedCount"}]}`,
/// oldest first.
pub(crate) async fn list(State(reg): State<Arc<Registry>>, Path(store): Path<String>) -> ApiResult {
    reg.get(&store).await?;
    let open = reg.imports.lock()?;
    let mut imports: Vec<(&String, usize)> = open
        .get(&store)
        .map(|m| m.iter().map(|(id, i)| (id, i.staged_count())).collect())
        .unwrap_or_default();
    imports.sort();
    let imports: Vec<Value> = imports
        .into_iter()
        .map(|(id, n)| json!({"importId": id, "stagedCount": n}))
        .collect();
    Ok(JsonBody(json!({ "imports": imports })).into_response())
}

/// `DELETE /v1/stores/{store}/imports`: rolls back every open import of the store.
pub(crate) async fn rollback_all(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?;
    reg.imports.lock()?.remove(&store);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/stores/{store}/imports/{importId}/events` body `{"events": [...]}` → `204`.
pub(crate) async fn push(
    State(reg): State<Arc<Registry>>,
    Path((store, import_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    reg.get(&store).await?;
    let body: PushBody = parse_body(&body_bytes(body)?)?;
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
    Ok(JsonBody(json!({
        "imported": outcome.imported,
        "skipped": outcome.skipped,
        "headPosition": outcome.head_position,
    }))
    .into_response())
}

/// `DELETE /v1/stores/{store}/imports/{importId}` → `204` (rollback).
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
