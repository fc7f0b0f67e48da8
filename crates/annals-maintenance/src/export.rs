//! Export: the store's events as NDJSON in position order, resumable from a cursor.

use std::sync::Arc;

use annals_core::ndjson::write_event;
use annals_core::{Cursor, EventStore, Position, ReadAll, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::mode::{Maintenance, MaintenanceMode};

/// How to export.
///
/// ```
/// let o = annals_maintenance::ExportOptions::default();
/// assert_eq!((o.after, o.limit, o.page_size), (0, None, 5_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Start after this position (0 = from the first event). A cursor from an earlier
    /// [`ExportReport`] gives it: `cursor.position()`.
    pub after: Position,
    /// Stop after this many lines (`None` = to the end).
    pub limit: Option<u64>,
    /// Freeze the store for the duration ([`MaintenanceMode::Auto`]) or not.
    pub maintenance: MaintenanceMode,
    /// Events read per page.
    pub page_size: u64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            after: 0,
            limit: None,
            maintenance: MaintenanceMode::Manual,
            page_size: 5_000,
        }
    }
}

impl ExportOptions {
    /// Continues after `cursor` (from an earlier export's report).
    ///
    /// ```
    /// let o = annals_maintenance::ExportOptions::default().from_cursor(annals_core::Cursor::forward_after(7));
    /// assert_eq!(o.after, 7);
    /// ```
    pub fn from_cursor(mut self, cursor: Cursor) -> Self {
        self.after = cursor.position();
        self
    }
}

/// What an export wrote (also reported after each page while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    /// The cursor after the last line written: pass it to resume.
    pub cursor: Cursor,
    /// Lines written by this export.
    pub lines: u64,
    /// Bytes written by this export.
    pub bytes: u64,
    /// Whether the export reached the end of the store.
    pub end: bool,
    /// The store's head position at the last page read.
    pub head_position: Position,
}

/// Writes the store's events after `options.after` as NDJSON (one
/// [`annals_core::ndjson`] line per event) to `out`, in position order, page by page,
/// calling `progress` after each page has been written. Every line carries its
/// position, so an export interrupted anywhere resumes after the last complete line
/// (or after the reported cursor). The writer is flushed at the end.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_maintenance::{export_events, ExportOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// store.append_to_stream(&StreamId::new("a"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::null()), ProposedEvent::new("T", Json::null())]).await?;
/// let mut out = Vec::new();
/// let report = export_events(&store, &mut out, ExportOptions { limit: Some(1), ..Default::default() }, |_| {}).await?;
/// assert_eq!((report.lines, report.end, report.cursor.position()), (1, false, 1));
/// let rest = export_events(&store, &mut out, ExportOptions::default().from_cursor(report.cursor), |_| {}).await?;
/// assert_eq!((rest.lines, rest.end), (1, true));
/// assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn export_events<W, F>(
    store: &Arc<dyn EventStore>,
    out: &mut W,
    options: ExportOptions,
    progress: F,
) -> Result<ExportReport>
where
    W: AsyncWrite + Unpin + ?Sized,
    F: FnMut(&ExportReport),
{
    let maintenance = Maintenance::begin(store, options.maintenance).await?;
    let result = export_pages(&**store, out, &options, progress).await;
    maintenance.finish(result).await
}

async fn export_pages<W, F>(
    store: &dyn EventStore,
    out: &mut W,
    options: &ExportOptions,
    mut progress: F,
) -> Result<ExportReport>
where
    W: AsyncWrite + Unpin + ?Sized,
    F: FnMut(&ExportReport),
{
    let mut report = ExportReport {
        cursor: Cursor::forward_after(options.after),
        lines: 0,
        bytes: 0,
        end: false,
        head_position: 0,
    };
    let page_size = options.page_size.max(1);
    let mut buf = Vec::with_capacity(1 << 20);
    loop {
        let want = match options.limit {
            Some(limit) if report.lines >= limit => break,
            Some(limit) => (limit - report.lines).min(page_size),
            None => page_size,
        };
        let page = store
            .read_all(ReadAll::forward().cursor(report.cursor).limit(want))
            .await?;
        buf.clear();
        for event in &page.events {
            write_event(&mut buf, event)?;
        }
        out.write_all(&buf).await.map_err(io_error)?;
        report.lines += page.events.len() as u64;
        report.bytes += buf.len() as u64;
        report.head_position = page.head_position;
        if let Some(last) = page.events.last() {
            report.cursor = Cursor::forward_after(last.position);
        }
        report.end = page.end || page.events.is_empty();
        progress(&report);
        if report.end {
            break;
        }
    }
    if !report.end {
        // Stopped by the limit: say whether the last line written was the newest event.
        report.end = report.cursor.position() >= store.describe().await?.head_position;
    }
    out.flush().await.map_err(io_error)?;
    Ok(report)
}

/// An I/O failure of the output or input, as a [`annals_core::Error::Backend`].
pub(crate) fn io_error(e: std::io::Error) -> annals_core::Error {
    annals_core::Error::backend("io", e)
}
