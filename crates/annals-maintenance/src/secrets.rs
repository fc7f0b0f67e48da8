//! Secrets export and import as NDJSON `{"idx","id","secret"}`, tombstones included.

use std::sync::Arc;

use annals_core::ndjson::{at_line, decode_secret, write_secret, LineReader};
use annals_core::{Error, EventStore, OnConflict, Result, Secret, SecretImport, SecretQuery};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};

use crate::export::io_error;
use crate::mode::{Maintenance, MaintenanceMode};
use crate::ImportProgress;

/// Secrets read per page while exporting or copying.
pub(crate) const SECRET_PAGE: u64 = 5_000;

/// Every secret from index `from_idx` on, in idx order, tombstones included, one page
/// at a time.
pub(crate) async fn secret_pages<F>(
    store: &dyn EventStore,
    from_idx: u64,
    mut page: F,
) -> Result<()>
where
    F: FnMut(Vec<Secret>) -> Result<()>,
{
    let mut from = from_idx;
    loop {
        let secrets = store
            .list_secrets(SecretQuery {
                from_idx: from,
                limit: Some(SECRET_PAGE),
                include_deleted: true,
                ..SecretQuery::default()
            })
            .await?;
        let Some(last) = secrets.last() else {
            return Ok(());
        };
        from = last.idx + 1;
        let full = secrets.len() as u64 == SECRET_PAGE;
        page(secrets)?;
        if !full {
            return Ok(());
        }
    }
}

/// What a secrets export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretsExportReport {
    /// Lines written.
    pub lines: u64,
    /// Of which tombstones (`"secret":null`).
    pub tombstones: u64,
    /// The idx to resume from (one past the last written).
    pub next_idx: u64,
}

/// Writes every secret with `idx >= from_idx` as NDJSON `{"idx","id","secret"}` in idx
/// order; deleted secrets are written as tombstones with `"secret":null`.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, MemoryStore};
/// use annals_maintenance::{export_secrets, MaintenanceMode};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// store.set_secret("u1", "k1").await?;
/// store.set_secret("u2", "k2").await?;
/// store.delete_secret("u1").await?;
/// let mut out = Vec::new();
/// let report = export_secrets(&store, &mut out, 0, MaintenanceMode::Manual).await?;
/// assert_eq!((report.lines, report.tombstones, report.next_idx), (2, 1, 2));
/// assert_eq!(String::from_utf8(out).unwrap(),
///     "{\"idx\":0,\"id\":\"u1\",\"secret\":null}\n{\"idx\":1,\"id\":\"u2\",\"secret\":\"k2\"}\n");
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn export_secrets<W>(
    store: &Arc<dyn EventStore>,
    out: &mut W,
    from_idx: u64,
    maintenance: MaintenanceMode,
) -> Result<SecretsExportReport>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let guard = Maintenance::begin(store, maintenance).await?;
    let result = async {
        let mut report = SecretsExportReport {
            lines: 0,
            tombstones: 0,
            next_idx: from_idx,
        };
        let mut pages = Vec::new();
        secret_pages(&**store, from_idx, |page| {
            pages.push(page);
            Ok(())
        })
        .await?;
        let mut buf = Vec::new();
        for page in pages {
            buf.clear();
            for s in &page {
                write_secret(&mut buf, s);
                report.lines += 1;
                report.tombstones += u64::from(s.secret.is_none());
                report.next_idx = s.idx + 1;
            }
            out.write_all(&buf).await.map_err(io_error)?;
        }
        out.flush().await.map_err(io_error)?;
        Ok(report)
    }
    .await;
    guard.finish(result).await
}

/// How to import secrets.
///
/// ```
/// let o = annals_maintenance::SecretsImportOptions::default();
/// assert_eq!(o.batch_size, 1_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsImportOptions {
    /// Where the input starts in its source (see [`crate::ImportOptions::from_offset`]).
    pub from_offset: u64,
    /// The number of the first line read.
    pub first_line: u64,
    /// Secrets per committed batch.
    pub batch_size: usize,
    /// What to do with a secret whose id or idx is already used.
    pub on_conflict: OnConflict,
    /// [`MaintenanceMode::Auto`]: freeze during the import and, from offset 0, delete
    /// every secret first ([`EventStore::clear_secrets`]).
    pub maintenance: MaintenanceMode,
}

impl Default for SecretsImportOptions {
    fn default() -> Self {
        SecretsImportOptions {
            from_offset: 0,
            first_line: 1,
            batch_size: 1_000,
            on_conflict: OnConflict::Error,
            maintenance: MaintenanceMode::Manual,
        }
    }
}

/// Reads NDJSON secrets `{"idx"?, "id", "secret"}` (null = tombstone) and stores them
/// through [`EventStore::import_secrets`] in batches, keeping `idx`. Errors, offsets and
/// unterminated last lines behave as in [`crate::import_events`].
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, MemoryStore};
/// use annals_maintenance::{import_secrets, SecretsImportOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let lines = "{\"idx\":4,\"id\":\"u1\",\"secret\":null}\n{\"idx\":7,\"id\":\"u2\",\"secret\":\"k2\"}\n";
/// let done = import_secrets(&store, lines.as_bytes(), SecretsImportOptions::default()).await?;
/// assert_eq!(done.imported, 2);
/// assert_eq!(store.get_secret("u2").await?.unwrap().idx, 7);
/// assert_eq!(store.get_secret("u1").await?.unwrap().secret, None);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn import_secrets<R>(
    store: &Arc<dyn EventStore>,
    input: R,
    options: SecretsImportOptions,
) -> Result<ImportProgress>
where
    R: AsyncBufRead + Unpin,
{
    let guard = Maintenance::begin(store, options.maintenance).await?;
    let result = async {
        if options.maintenance == MaintenanceMode::Auto && options.from_offset == 0 {
            store.clear_secrets().await?;
        }
        import_secret_lines(&**store, input, &options).await
    }
    .await;
    guard.finish(result).await
}

async fn import_secret_lines<R>(
    store: &dyn EventStore,
    input: R,
    options: &SecretsImportOptions,
) -> Result<ImportProgress>
where
    R: AsyncBufRead + Unpin,
{
    let mut reader = LineReader::new(input).starting_at(options.from_offset, options.first_line);
    let mut state = ImportProgress {
        byte_offset: options.from_offset,
        next_line: options.first_line,
        ..ImportProgress::default()
    };
    let mut batch: Vec<SecretImport> = Vec::new();
    let mut lines: Vec<(u64, u64)> = Vec::new();
    let mut end = (options.from_offset, options.first_line);
    loop {
        let failure = match reader.next_line().await {
            Ok(Some(line)) => {
                let (number, offset, line_end) = (line.number, line.offset, line.end);
                match decode_secret(line.bytes) {
                    Ok(secret) => {
                        batch.push(secret);
                        lines.push((number, offset));
                        end = (line_end, number + 1);
                        if batch.len() >= options.batch_size.max(1) {
                            store_secrets(store, options, &mut batch, &mut lines, end, &mut state)
                                .await?;
                        }
                        continue;
                    }
                    Err(e) => at_line(e, number, offset),
                }
            }
            Ok(None) => break,
            Err(e) => e,
        };
        store_secrets(store, options, &mut batch, &mut lines, end, &mut state).await?;
        return Err(failure);
    }
    store_secrets(store, options, &mut batch, &mut lines, end, &mut state).await?;
    state.byte_offset = reader.offset();
    state.next_line = reader.next_number();
    state.unterminated = reader.unterminated() as u64;
    Ok(state)
}

async fn store_secrets(
    store: &dyn EventStore,
    options: &SecretsImportOptions,
    batch: &mut Vec<SecretImport>,
    lines: &mut Vec<(u64, u64)>,
    end: (u64, u64),
    state: &mut ImportProgress,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let secrets = std::mem::take(batch);
    let located = std::mem::take(lines);
    match store
        .import_secrets(secrets.clone(), options.on_conflict)
        .await
    {
        Ok(outcome) => {
            state.imported += outcome.imported;
            state.skipped += outcome.skipped;
            state.head_position = outcome.head_position;
            (state.byte_offset, state.next_line) = end;
            Ok(())
        }
        Err(error) => {
            // Find the refused secret by storing them one by one up to it.
            for (i, secret) in secrets.into_iter().enumerate() {
                match store
                    .import_secrets(vec![secret], options.on_conflict)
                    .await
                {
                    Ok(outcome) => {
                        state.imported += outcome.imported;
                        state.skipped += outcome.skipped;
                    }
                    Err(e) => {
                        let (number, offset) = located[i];
                        (state.byte_offset, state.next_line) = (offset, number);
                        return Err(match e {
                            Error::InvalidInput { field, reason } => {
                                let field = field
                                    .split_once("].")
                                    .map_or(field.clone(), |(_, f)| f.to_owned());
                                at_line(Error::invalid(field, reason), number, offset)
                            }
                            other => other,
                        });
                    }
                }
            }
            Err(error)
        }
    }
}
