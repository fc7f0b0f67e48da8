//! The data-maintenance calls over the HTTP API: NDJSON imports of events and secrets
//! and clearing a store's events or secrets.
//!
//! An `import_events` call is ONE request carrying the whole batch with
//! `batchSize = <number of events>`, so the server commits it as one atomic
//! `import_events`: all or nothing, exactly as the other backends. The batch is
//! validated here first, with the same rules (`annals_core::import`), so a bad field is
//! reported as `events[i].<field>` without a round trip.

use annals_core::ndjson::write_event;
use annals_core::{Error, ImportBatch, ImportOutcome, OnConflict, Position, Result, SecretImport};
use reqwest::Method;
use serde::Deserialize;

use crate::{body, send, HttpStore};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportOut {
    imported: u64,
    skipped: u64,
    head_position: Position,
}

fn on_conflict(on_conflict: OnConflict) -> &'static str {
    match on_conflict {
        OnConflict::Error => "error",
        OnConflict::Skip => "skip",
    }
}

fn ndjson_request(
    store: &HttpStore,
    path: &str,
    query: &[(&str, String)],
    lines: Vec<u8>,
) -> Result<reqwest::RequestBuilder> {
    Ok(store
        .request(Method::POST, path)?
        .query(query)
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(lines))
}

pub(crate) async fn import_events(store: &HttpStore, batch: ImportBatch) -> Result<ImportOutcome> {
    annals_core::import::validate_events(&batch)?;
    let mut lines = Vec::with_capacity(batch.events.len() * 256);
    for event in &batch.events {
        write_event(&mut lines, event)?;
    }
    let mut query = vec![
        ("onConflict", on_conflict(batch.on_conflict).to_owned()),
        ("batchSize", batch.events.len().max(1).to_string()),
    ];
    if let Some(head) = batch.expected_head {
        query.push(("expectedHead", head.to_string()));
    }
    let out: ImportOut =
        body(send(ndjson_request(store, "/events/import", &query, lines)?).await?).await?;
    Ok(ImportOutcome {
        imported: out.imported,
        skipped: out.skipped,
        head_position: out.head_position,
    })
}

pub(crate) async fn import_secrets(
    store: &HttpStore,
    secrets: Vec<SecretImport>,
    conflict: OnConflict,
) -> Result<ImportOutcome> {
    annals_core::import::validate_secrets(&secrets)?;
    let mut lines = Vec::with_capacity(secrets.len() * 64);
    for s in &secrets {
        let line = match s.idx {
            Some(idx) => serde_json::json!({"idx": idx, "id": s.id, "secret": s.secret}),
            None => serde_json::json!({"id": s.id, "secret": s.secret}),
        };
        serde_json::to_writer(&mut lines, &line).map_err(|e| Error::backend("http", e))?;
        lines.push(b'\n');
    }
    let query = [
        ("onConflict", on_conflict(conflict).to_owned()),
        ("batchSize", secrets.len().max(1).to_string()),
    ];
    let out: ImportOut =
        body(send(ndjson_request(store, "/secrets/import", &query, lines)?).await?).await?;
    Ok(ImportOutcome {
        imported: out.imported,
        skipped: out.skipped,
        head_position: out.head_position,
    })
}

pub(crate) async fn clear(store: &HttpStore, what: &str) -> Result<()> {
    send(store.request(Method::DELETE, what)?).await.map(drop)
}
