//! The data-maintenance routes (issue #6): NDJSON imports of events and secrets, and
//! clearing a store's events or secrets.
//!
//! Imports read the request body as a stream, line by line (each line at most
//! [`annals_core::ndjson::DEFAULT_MAX_LINE_BYTES`]), so a body may be far larger than the
//! JSON body limit. Every `batchSize` lines are one all-or-nothing `import_events` (or
//! `import_secrets`) call. Where an import stops:
//! - a line that cannot be decoded (or whose fields an append would refuse): the lines
//!   before it are committed, and the answer names the line; `byteOffset` is its first
//!   byte;
//! - a batch the store refuses (a conflict under `onConflict=error`, a back-fill, a moved
//!   head): nothing of the batch is stored; `byteOffset` is the batch's first byte and
//!   `line` the refused event's line where the error names it (else the batch's first);
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

use annals_core::ndjson::{decode_event, decode_secret, LineReader};
use annals_core::{
    Error, EventStore, ImportBatch, ImportOutcome, OnConflict, Position, RecordedEvent,
    SecretImport,
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

/// A freeze that `maintenanceMode=auto` took and must lift: [`FreezeGuard::release`]
/// lifts it in place; a guard dropped unreleased (a response body dropped because the
/// client went away) lifts it in a task of its own.
pub(crate) struct FreezeGuard {
    store: Option<Arc<dyn EventStore>>,
}

impl FreezeGuard {
    /// Freezes the store ([`Error::AlreadyFrozen`] when it is frozen: `auto` never
    /// lifts a freeze it did not take).
    pub(crate) async fn freeze(store: Arc<dyn EventStore>) -> Result<Self, ApiError> {
        store.freeze().await?;
        Ok(FreezeGuard { store: Some(store) })
    }

    /// Unfreezes the store now.
    pub(crate) async fn release(mut self) {
        if let Some(store) = self.store.take() {
            unfreeze(&*store).await;
        }
    }
}

async fn unfreeze(store: &dyn EventStore) {
    match store.unfreeze().await {
        Ok(()) => {}
        // Someone unfroze it by hand meanwhile: nothing left to lift.
        Err(Error::NotFrozen) => {}
        Err(e) => tracing::warn!(error = %e, "cannot unfreeze the store after an export"),
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { unfreeze(&*store).await });
            }
            Err(_) => tracing::warn!("no runtime left to unfreeze the store after an export"),
        }
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

/// Runs `work` with the store frozen (and unfreezes it afterwards, also on error) when
/// the mode is `auto`.
async fn maintained<T>(
    store: &Arc<dyn EventStore>,
    mode: Mode,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    if mode == Mode::Manual {
        return work.await;
    }
    store.freeze().await?;
    let result = work.await;
    let unfrozen = store.unfreeze().await;
    let value = result?;
    unfrozen?;
    Ok(value)
}

/// Where an import stands.
#[derive(Default)]
struct Progress {
    imported: u64,
    skipped: u64,
    head: Position,
    /// Items (events or secrets) read before the pending batch.
    items_before: u64,
}

/// One decoded line waiting in the pending batch.
struct Pending<T> {
    item: T,
    line: u64,
    offset: u64,
}

impl Progress {
    fn failed(&self, source: Error, line: u64, byte_offset: u64) -> ApiError {
        ApiError::Import {
            source: Box::new(source),
            line,
            byte_offset,
            imported: self.imported,
            skipped: self.skipped,
        }
    }

    /// A store error about a batch, with its `items[i]` field renumbered from the
    /// body's start and the line of item `i` (else the batch's first line).
    fn batch_failed<T>(&self, source: Error, what: &str, batch: &[Pending<T>]) -> ApiError {
        let (first_line, first_offset) = batch.first().map_or((0, 0), |p| (p.line, p.offset));
        let mut line = first_line;
        let source = match source {
            Error::InvalidInput { field, reason } => {
                let prefix = format!("{what}[");
                let renumbered = field.strip_prefix(&prefix).and_then(|rest| {
                    let (index, tail) = rest.split_once(']')?;
                    let i: usize = index.parse().ok()?;
                    line = batch.get(i)?.line;
                    Some(format!("{what}[{}]{tail}", self.items_before + i as u64))
                });
                Error::InvalidInput {
                    field: renumbered.unwrap_or(field),
                    reason,
                }
            }
            other => other,
        };
        self.failed(source, line, first_offset)
    }
}

fn event_line_of(batch: &[Pending<RecordedEvent>], err: &Error) -> Option<u64> {
    let i = match err {
        Error::VersionConflict {
            stream, version, ..
        } => batch
            .iter()
            .position(|p| p.item.stream == *stream && p.item.version == *version)?,
        Error::DuplicateEventId { id } => batch.iter().position(|p| &*p.item.id == id)?,
        _ => return None,
    };
    Some(batch[i].line)
}

async fn commit_events(
    store: &dyn EventStore,
    progress: &mut Progress,
    pending: &mut Vec<Pending<RecordedEvent>>,
    on_conflict: OnConflict,
    expected_head: &mut Option<Position>,
) -> Result<(), ApiError> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = ImportBatch {
        events: pending.iter().map(|p| p.item.clone()).collect(),
        on_conflict,
        expected_head: *expected_head,
    };
    match store.import_events(batch).await {
        Ok(outcome) => {
            record(progress, outcome, pending.len());
            // Later batches continue exactly where this one ended.
            if expected_head.is_some() {
                *expected_head = Some(outcome.head_position);
            }
            pending.clear();
            Ok(())
        }
        Err(e) => {
            let line = event_line_of(pending, &e);
            let mut err = progress.batch_failed(e, "events", pending);
            if let (Some(l), ApiError::Import { line: at, .. }) = (line, &mut err) {
                *at = l;
            }
            Err(err)
        }
    }
}

fn record(progress: &mut Progress, outcome: ImportOutcome, items: usize) {
    progress.imported += outcome.imported;
    progress.skipped += outcome.skipped;
    progress.head = outcome.head_position;
    progress.items_before += items as u64;
}

async fn import_event_lines(
    store: &dyn EventStore,
    mut reader: LineReader<impl AsyncBufRead + Unpin>,
    params: &ImportParams,
) -> Result<serde_json::Value, ApiError> {
    let mut progress = Progress {
        head: store.describe().await?.head_position,
        ..Progress::default()
    };
    let mut expected_head = params.expected_head;
    let mut pending: Vec<Pending<RecordedEvent>> = Vec::new();
    loop {
        let (line, offset) = (reader.next_number(), reader.offset());
        let decoded = match reader.next_line().await {
            Ok(None) => break,
            Ok(Some(l)) => decode_event(l.bytes)
                .map_err(|e| annals_core::ndjson::at_line(e, l.number, l.offset))
                .and_then(|event| {
                    let index = (progress.items_before as usize).saturating_add(pending.len());
                    annals_core::import::validate_event(index, &event)?;
                    Ok(event)
                })
                .map(|item| Pending {
                    item,
                    line: l.number,
                    offset: l.offset,
                })
                .map_err(|e| (e, l.number, l.offset)),
            Err(e) => Err((e, line, offset)),
        };
        match decoded {
            Ok(p) => {
                pending.push(p);
                if pending.len() >= params.batch_size {
                    commit_events(
                        store,
                        &mut progress,
                        &mut pending,
                        params.on_conflict,
                        &mut expected_head,
                    )
                    .await?;
                }
            }
            Err((e, line, offset)) => {
                // Keep every event before the bad line, then report it.
                commit_events(
                    store,
                    &mut progress,
                    &mut pending,
                    params.on_conflict,
                    &mut expected_head,
                )
                .await?;
                return Err(progress.failed(e, line, offset));
            }
        }
    }
    commit_events(
        store,
        &mut progress,
        &mut pending,
        params.on_conflict,
        &mut expected_head,
    )
    .await?;
    if progress.items_before == 0 {
        // No event at all: the expected head is still checked, as the store checks it
        // for an empty batch.
        if let Some(expected) = expected_head {
            let outcome = store
                .import_events(ImportBatch {
                    expected_head: Some(expected),
                    ..ImportBatch::default()
                })
                .await
                .map_err(|e| progress.failed(e, reader.next_number(), reader.offset()))?;
            progress.head = outcome.head_position;
        }
    }
    Ok(json!({
        "imported": progress.imported,
        "skipped": progress.skipped,
        "byteOffset": reader.offset(),
        "unterminatedBytes": reader.unterminated(),
        "headPosition": progress.head,
    }))
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
    let reader = LineReader::new(body_reader(body));
    let answer = maintained(&s, params.mode, async {
        if params.mode == Mode::Auto {
            s.clear_events().await?;
        }
        import_event_lines(&*s, reader, &params).await
    })
    .await?;
    crate::routes::count(
        &reg.metrics.appended_events,
        answer["imported"].as_u64().unwrap_or(0),
    );
    tracing::info!(%store, imported = %answer["imported"], "events imported");
    Ok((StatusCode::OK, JsonBody(answer)).into_response())
}

async fn commit_secrets(
    store: &dyn EventStore,
    progress: &mut Progress,
    pending: &mut Vec<Pending<SecretImport>>,
    on_conflict: OnConflict,
) -> Result<(), ApiError> {
    if pending.is_empty() {
        return Ok(());
    }
    let secrets = pending.iter().map(|p| p.item.clone()).collect();
    match store.import_secrets(secrets, on_conflict).await {
        Ok(outcome) => {
            record(progress, outcome, pending.len());
            pending.clear();
            Ok(())
        }
        Err(e) => {
            let line = match &e {
                Error::SecretAlreadyExists { id } => {
                    pending.iter().find(|p| p.item.id == *id).map(|p| p.line)
                }
                _ => None,
            };
            let mut err = progress.batch_failed(e, "secrets", pending);
            if let (Some(l), ApiError::Import { line: at, .. }) = (line, &mut err) {
                *at = l;
            }
            Err(err)
        }
    }
}

async fn import_secret_lines(
    store: &dyn EventStore,
    mut reader: LineReader<impl AsyncBufRead + Unpin>,
    params: &ImportParams,
) -> Result<serde_json::Value, ApiError> {
    let mut progress = Progress::default();
    let mut pending: Vec<Pending<SecretImport>> = Vec::new();
    loop {
        let (line, offset) = (reader.next_number(), reader.offset());
        let decoded = match reader.next_line().await {
            Ok(None) => break,
            Ok(Some(l)) => decode_secret(l.bytes)
                .map_err(|e| annals_core::ndjson::at_line(e, l.number, l.offset))
                .and_then(|secret| {
                    let index = (progress.items_before as usize).saturating_add(pending.len());
                    annals_core::import::validate_secret(index, &secret)?;
                    Ok(secret)
                })
                .map(|item| Pending {
                    item,
                    line: l.number,
                    offset: l.offset,
                })
                .map_err(|e| (e, l.number, l.offset)),
            Err(e) => Err((e, line, offset)),
        };
        match decoded {
            Ok(p) => {
                pending.push(p);
                if pending.len() >= params.batch_size {
                    commit_secrets(store, &mut progress, &mut pending, params.on_conflict).await?;
                }
            }
            Err((e, line, offset)) => {
                commit_secrets(store, &mut progress, &mut pending, params.on_conflict).await?;
                return Err(progress.failed(e, line, offset));
            }
        }
    }
    commit_secrets(store, &mut progress, &mut pending, params.on_conflict).await?;
    Ok(json!({
        "imported": progress.imported,
        "skipped": progress.skipped,
        "headPosition": store.describe().await?.head_position,
        "byteOffset": reader.offset(),
        "unterminatedBytes": reader.unterminated(),
    }))
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
    let reader = LineReader::new(body_reader(body));
    let answer = maintained(&s, params.mode, async {
        if params.mode == Mode::Auto {
            s.clear_secrets().await?;
        }
        import_secret_lines(&*s, reader, &params).await
    })
    .await?;
    tracing::info!(%store, imported = %answer["imported"], "secrets imported");
    Ok((StatusCode::OK, JsonBody(answer)).into_response())
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
