//! The data-maintenance routes (issue #6): NDJSON imports of events and secrets, and
//! clearing a store's events or secrets.
//!
//! Imports are [`annals_maintenance::import_events`] and
//! [`annals_maintenance::import_secrets`] over the request body, read as a stream, line
//! by line (each line at most [`annals_core::ndjson::DEFAULT_MAX_LINE_BYTES`]), so a
//! body may be far larger than the JSON body limit. Every `batchSize` lines (more to
//! keep the events of one commit id together, up to 100,000) are one all-or-nothing
//! `import_events` (or `import_secrets`) call. Where an import stops:
//! - a line that cannot be decoded (or whose fields an append would refuse): the lines
//!   before it are committed, and the answer names the line; `byteOffset` is its first
//!   byte;
//! - a batch the store refuses (a conflict under `onConflict=error`, a back-fill, a
//!   moved head): nothing of the batch is stored
//!   ([`annals_maintenance::RefusedBatch::StoreNothing`], so the HTTP client's one-batch
//!   imports stay atomic); `byteOffset` is the batch's first byte and `line` the refused
//!   event's line where the error names it (else the batch's first);
//! - a last line without a newline is left unimported (a truncated upload); the `200`
//!   answer's `byteOffset` is then its first byte and `unterminatedBytes` its length.
//!
//! Re-sending the body from `byteOffset` continues the import. The status and code of a
//! refused import are those of the store's error (400 `invalid_request`, 409
//! `version_conflict`, `duplicate_event_id`, `head_moved`, `secret_already_exists`), with
//! the details `line`, `byteOffset`, `imported` and `skipped` added; a field of the form
//! `events[i]`/`secrets[i]` counts from the body's first event (or secret) line.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json as JsonBody;
use futures::TryStreamExt;
use serde_json::json;

use annals_core::{OnConflict, Position};
use annals_maintenance::{
    ImportError, ImportOptions, ImportProgress, RefusedBatch, SecretsImportOptions,
};
use tokio::io::AsyncBufRead;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::routes::ApiResult;
use crate::wire::Params;

/// Lines per committed batch when `batchSize` is not given.
const DEFAULT_BATCH: usize = 1000;
/// The largest `batchSize` (also the most events one append may carry).
const MAX_BATCH: usize = annals_core::limits::MAX_EVENTS_PER_APPEND;

/// `maintenanceMode`: whether the route freezes (and empties) the store around itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = MaintenanceMode, rename_all = "lowercase")]
pub(crate) enum Mode {
    /// Nothing implicit (the default).
    Manual,
    /// Freeze for the duration, unfreeze afterwards (also on error).
    Auto,
}

impl From<Mode> for annals_maintenance::MaintenanceMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Manual => annals_maintenance::MaintenanceMode::Manual,
            Mode::Auto => annals_maintenance::MaintenanceMode::Auto,
        }
    }
}

/// The `maintenanceMode` query parameter.
pub(crate) fn mode(p: &Params) -> Result<Mode, ApiError> {
    match p.get("maintenanceMode") {
        None | Some("manual") => Ok(Mode::Manual),
        Some("auto") => Ok(Mode::Auto),
        Some(other) => Err(ApiError::invalid(
            "maintenanceMode",
            format!("must be `auto` or `manual`, not {other:?}"),
        )),
    }
}

struct ImportParams {
    on_conflict: OnConflict,
    batch_size: usize,
    expected_head: Option<Position>,
    mode: Mode,
}

fn import_params(q: Option<&str>) -> Result<ImportParams, ApiError> {
    let p = Params::parse_query(q)?;
    let on_conflict = match p.get("onConflict") {
        None | Some("error") => OnConflict::Error,
        Some("skip") => OnConflict::Skip,
        Some(other) => {
            return Err(ApiError::invalid(
                "onConflict",
                format!("must be `error` or `skip`, not {other:?}"),
            ))
        }
    };
    let mode = mode(&p)?;
    let batch_size = match p.parse::<u64>("batchSize")? {
        None => DEFAULT_BATCH,
        Some(0) => return Err(ApiError::invalid("batchSize", "must be 1 or more")),
        Some(n) if n > MAX_BATCH as u64 => {
            return Err(ApiError::LimitExceeded {
                what: "batchSize".into(),
                limit: "maxImportBatchSize",
                max: MAX_BATCH,
            })
        }
        Some(n) => n as usize,
    };
    Ok(ImportParams {
        on_conflict,
        batch_size,
        expected_head: p.parse("expectedHead")?,
        mode,
    })
}

/// The body as buffered bytes read on demand, never as a whole.
fn body_reader(body: Body) -> impl AsyncBufRead + Unpin {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    tokio::io::BufReader::with_capacity(256 << 10, tokio_util::io::StreamReader::new(stream))
}

/// The answer to a refused import: the store's (or the line's) error with where the
/// import stopped, or the plain error when it is about no line (freezing, emptying or
/// unfreezing the store).
fn refused(e: ImportError) -> ApiError {
    match e.line {
        Some(line) => ApiError::Import {
            source: Box::new(e.error),
            line: line.number,
            byte_offset: e.progress.byte_offset,
            imported: e.progress.imported,
            skipped: e.progress.skipped,
        },
        None => ApiError::Store(e.error),
    }
}

/// `POST /v1/stores/{store}/events/import?onConflict=&batchSize=&expectedHead=&maintenanceMode=`
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/events/import",
    operation_id = "importEvents",
    tag = "maintenance",
    summary = "Import NDJSON events, keeping ids, versions, timestamps (allowed while frozen).",
    params(crate::wire::query::StorePath, crate::wire::query::ImportEventsQuery),
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "One stored event per line, as the export writes them (`id`, `aggregateId`, `aggregate`, `context`, `version`, `type`, `timestamp`, `payload`, `metadata`, `commitId`, `commitSequence`, `dispatched`; `position` is ignored); a last line without a newline is left for the next request. Not limited in size."
    ),
    responses(
        (status = 200, description = "Every complete line is imported (or skipped).", body = crate::wire::ImportOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter, or a line that is not an event (details `line`, `byteOffset` of its first byte, `imported`, `skipped`: re-send the body from `byteOffset` to continue).", body = crate::error::ErrorBody),
        (status = 404, description = "`store_not_found`.", body = crate::error::ErrorBody),
        (status = 409, description = "`version_conflict`, `duplicate_event_id` (with `onConflict=error`), `head_moved` (`expectedHead`), with `line`, `byteOffset`, `imported`, `skipped`; `already_frozen` with `maintenanceMode=auto`.", body = crate::error::ErrorBody),
        (status = 413, description = "`limit_exceeded`: `batchSize` above `maxImportBatchSize`, or a line longer than the line limit.", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn import_events(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    let s = reg.get(&store).await?;
    let params = import_params(q.as_deref())?;
    let options = ImportOptions {
        batch_size: params.batch_size,
        on_conflict: params.on_conflict,
        maintenance: params.mode.into(),
        expected_head: params.expected_head,
        refused_batch: RefusedBatch::StoreNothing,
        ..ImportOptions::default()
    };
    let done = annals_maintenance::import_events(&s, body_reader(body), options, |_| {})
        .await
        .map_err(refused)?;
    crate::routes::count(&reg.metrics.appended_events, done.imported);
    tracing::info!(%store, imported = done.imported, "events imported");
    Ok((StatusCode::OK, JsonBody(answer(&done))).into_response())
}

fn answer(done: &ImportProgress) -> serde_json::Value {
    json!({
        "imported": done.imported,
        "skipped": done.skipped,
        "byteOffset": done.byte_offset,
        "unterminatedBytes": done.unterminated,
        "headPosition": done.head_position,
    })
}

/// `POST /v1/stores/{store}/secrets/import?onConflict=&batchSize=&maintenanceMode=`,
/// routed through `/secrets/{id}` (a secret may be called `import`: its GET, PUT and
/// DELETE stay on the `{id}` route).
#[utoipa::path(
    post,
    path = "/v1/stores/{store}/secrets/import",
    operation_id = "importSecrets",
    tag = "maintenance",
    summary = "Import NDJSON secrets, keeping idx and tombstones (allowed while frozen).",
    params(crate::wire::query::StorePath, crate::wire::query::ImportSecretsQuery),
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "One secret per line: `{\"idx\"?, \"id\", \"secret\"}` (`secret: null` for a deleted one); a last line without a newline is left for the next request. Not limited in size."
    ),
    responses(
        (status = 200, description = "Every complete line is imported (or skipped).", body = crate::wire::ImportOut),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter (`expectedHead` is for events only), or a line that is not a secret (details `line`, `byteOffset`, `imported`, `skipped`).", body = crate::error::ErrorBody),
        (status = 404, description = "`store_not_found`.", body = crate::error::ErrorBody),
        (status = 409, description = "`secret_already_exists` (with `onConflict=error`), with `line`, `byteOffset`, `imported`, `skipped`; `already_frozen` with `maintenanceMode=auto`.", body = crate::error::ErrorBody),
        (status = 413, description = "`limit_exceeded`: `batchSize` above `maxImportBatchSize`, or a line longer than the line limit.", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn secrets_post(
    State(reg): State<Arc<Registry>>,
    Path((store, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Body,
) -> ApiResult {
    if id != "import" {
        return Ok((
            StatusCode::METHOD_NOT_ALLOWED,
            JsonBody(json!({"error": {
                "code": "method_not_allowed",
                "message": "POST is only defined for /secrets/import",
            }})),
        )
            .into_response());
    }
    let s = reg.get(&store).await?;
    let params = import_params(q.as_deref())?;
    if params.expected_head.is_some() {
        return Err(ApiError::invalid(
            "expectedHead",
            "applies to event imports only",
        ));
    }
    let options = SecretsImportOptions {
        batch_size: params.batch_size,
        on_conflict: params.on_conflict,
        maintenance: params.mode.into(),
        refused_batch: RefusedBatch::StoreNothing,
        ..SecretsImportOptions::default()
    };
    let done = annals_maintenance::import_secrets(&s, body_reader(body), options)
        .await
        .map_err(refused)?;
    tracing::info!(%store, imported = done.imported, "secrets imported");
    Ok((StatusCode::OK, JsonBody(answer(&done))).into_response())
}

/// `DELETE /v1/stores/{store}/events`: every event, stream, stream snapshot and
/// dispatch mark goes; positions restart at 1.
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/events",
    operation_id = "clearEvents",
    tag = "maintenance",
    summary = "Delete every event, stream and stream snapshot; positions restart at 1.",
    params(crate::wire::query::StorePath),
    responses(
        (status = 204, description = "The events are gone (secrets and keyed snapshots stay); allowed while frozen."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = crate::error::ErrorBody),
        (status = 404, description = "`store_not_found`.", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn clear_events(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?.clear_events().await?;
    tracing::info!(%store, "events cleared");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/stores/{store}/secrets`: every secret (and tombstone) goes; idx restarts
/// at 0.
#[utoipa::path(
    delete,
    path = "/v1/stores/{store}/secrets",
    operation_id = "clearSecrets",
    tag = "maintenance",
    summary = "Delete every secret; idx restarts at 0.",
    params(crate::wire::query::StorePath),
    responses(
        (status = 204, description = "The secrets are gone; allowed while frozen."),
        (status = 400, description = "`invalid_request`: a malformed store name or parameter.", body = crate::error::ErrorBody),
        (status = 404, description = "`store_not_found`.", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn clear_secrets(
    State(reg): State<Arc<Registry>>,
    Path(store): Path<String>,
) -> ApiResult {
    reg.get(&store).await?.clear_secrets().await?;
    tracing::info!(%store, "secrets cleared");
    Ok(StatusCode::NO_CONTENT.into_response())
}
