//! Secrets export and import as NDJSON `{"idx","id","secret"}`, tombstones included.

use std::sync::Arc;

use annals_core::ndjson::{decode_secret, write_secret};
use annals_core::{
    Error, EventStore, ImportOutcome, OnConflict, Position, Result, Secret, SecretImport,
    SecretQuery,
};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};

use crate::export::io_error;
use crate::import::{import, Item, StoreCall};
use crate::mode::{Maintenance, MaintenanceMode};
use crate::{ImportError, ImportOptions, ImportProgress, RefusedBatch};

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
        // A page at a time: each is written before the next is read, so memory stays
        // bounded by one page whatever the number of secrets.
        let mut buf = Vec::new();
        loop {
            let page = store
                .list_secrets(SecretQuery {
                    from_idx: report.next_idx,
                    limit: Some(SECRET_PAGE),
                    include_deleted: true,
                    ..SecretQuery::default()
                })
                .await?;
            buf.clear();
            for s in &page {
                write_secret(&mut buf, s);
                report.lines += 1;
                report.tombstones += u64::from(s.secret.is_none());
                report.next_idx = s.idx + 1;
            }
            out.write_all(&buf).await.map_err(io_error)?;
            if (page.len() as u64) < SECRET_PAGE {
                break;
            }
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
    /// What is kept of a batch the store refuses (see [`RefusedBatch`]).
    pub refused_batch: RefusedBatch,
}

impl Default for SecretsImportOptions {
    fn default() -> Self {
        SecretsImportOptions {
            from_offset: 0,
            first_line: 1,
            batch_size: 1_000,
            on_conflict: OnConflict::Error,
            maintenance: MaintenanceMode::Manual,
            refused_batch: RefusedBatch::KeepLinesBefore,
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
) -> std::result::Result<ImportProgress, ImportError>
where
    R: AsyncBufRead + Unpin,
{
    let options = ImportOptions {
        from_offset: options.from_offset,
        first_line: options.first_line,
        batch_size: options.batch_size,
        on_conflict: options.on_conflict,
        maintenance: options.maintenance,
        refused_batch: options.refused_batch,
        ..ImportOptions::default()
    };
    import::<SecretImport, R, _>(store, input, &options, |_| {}).await
}

impl Item for SecretImport {
    fn decode(line: &[u8]) -> Result<Self> {
        decode_secret(line)
    }

    fn validate(&self, i: usize) -> Result<()> {
        annals_core::import::validate_secret(i, self)
    }

    fn joins(&self, _: &Self) -> bool {
        false
    }

    fn conflicting(secrets: &[Self], error: &Error) -> Option<usize> {
        match error {
            Error::SecretAlreadyExists { id } => secrets.iter().position(|s| s.id == *id),
            _ => None,
        }
    }

    fn store<'a>(
        store: &'a dyn EventStore,
        secrets: Vec<Self>,
        on_conflict: OnConflict,
        _: Option<Position>,
    ) -> StoreCall<'a, ImportOutcome> {
        store.import_secrets(secrets, on_conflict)
    }

    fn clear(store: &dyn EventStore) -> StoreCall<'_, ()> {
        store.clear_secrets()
    }
}
