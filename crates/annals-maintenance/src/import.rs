//! Import: NDJSON events (as exported) into a store, in batches, resumable from a byte
//! offset.

use std::sync::Arc;

use annals_core::ndjson::{at_line, decode_event, LineReader, DEFAULT_MAX_LINE_BYTES};
use annals_core::{Error, EventStore, ImportBatch, OnConflict, Position, RecordedEvent, Result};
use tokio::io::AsyncBufRead;

use crate::mode::{Maintenance, MaintenanceMode};

/// The most events one batch may grow to while it waits for a commit boundary.
const MAX_BATCH: usize = 100_000;

/// How to import.
///
/// ```
/// let o = annals_maintenance::ImportOptions::default();
/// assert_eq!((o.from_offset, o.first_line, o.batch_size), (0, 1, 10_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// The byte offset in the source where the input starts (the input must already be
    /// positioned there; the offset only labels what is read). Pass the
    /// [`ImportProgress::byte_offset`] of an interrupted import to resume it.
    pub from_offset: u64,
    /// The number of the first line read (for error messages after a resume).
    pub first_line: u64,
    /// Events per committed batch. A batch is cut at a commit-id boundary when it can be
    /// (so the events of one original append stay together), growing past this size up
    /// to 100,000 events to reach one.
    pub batch_size: usize,
    /// What to do with events already stored.
    pub on_conflict: OnConflict,
    /// [`MaintenanceMode::Auto`]: freeze during the import, and — when starting at
    /// offset 0 — delete every event first ([`EventStore::clear_events`]). A resumed import
    /// (`from_offset > 0`) never deletes what the first run imported.
    pub maintenance: MaintenanceMode,
    /// The longest line accepted.
    pub max_line_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            from_offset: 0,
            first_line: 1,
            batch_size: 10_000,
            on_conflict: OnConflict::Error,
            maintenance: MaintenanceMode::Manual,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Where an import stands: reported after each committed batch and at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportProgress {
    /// The offset of the first byte not imported: resume from here (every line before
    /// it is stored, none after it).
    pub byte_offset: u64,
    /// The number of the line that starts at `byte_offset`.
    pub next_line: u64,
    /// Events stored by this run.
    pub imported: u64,
    /// Events skipped as already stored ([`OnConflict::Skip`]).
    pub skipped: u64,
    /// The store's head position after the last batch.
    pub head_position: Position,
    /// Bytes of a last line without a newline that were left unread (0 at a clean end).
    pub unterminated: u64,
}

/// Reads NDJSON events ([`annals_core::ndjson`]) from `input` and stores them through
/// [`EventStore::import_events`] in batches, keeping ids, versions, timestamps, commit
/// ids and dispatch marks; `position` fields are ignored (the store assigns the next
/// positions, so a whole export imported into an empty store gets its positions back).
///
/// `progress` is called after each committed batch. On a malformed line, an over-long
/// line, or an event the store refuses (a conflict under [`OnConflict::Error`], a field
/// the store rejects), every event before that line is stored, nothing after it, and
/// the error is [`Error::InvalidInput`] naming `line N (byte offset B)` (B = the first
/// byte not imported) for bad input, or the store's error for a conflict (then the last
/// `progress` call carries the refused line's number and offset). A last line
/// without a newline is left unread (reported in [`ImportProgress::unterminated`]), so
/// importing a file that is still growing, or resuming, never stores half a line.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, MemoryStore};
/// use annals_maintenance::{import_events, ImportOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let ndjson = concat!(
///     r#"{"position":1,"id":"e1","aggregateId":"a","version":1,"type":"T","timestamp":"2021-01-01T00:00:00.000Z","payload":{},"metadata":null,"commitId":"c1","commitSequence":0,"dispatched":true}"#, "\n",
///     r#"{"position":2,"id":"e2","aggregateId":"a","version":2,"type":"T","timestamp":"2021-01-01T00:00:00.000Z","payload":{},"metadata":null,"commitId":"c2","commitSequence":0,"dispatched":false}"#, "\n",
///     r#"{"position":3,"id":"e3","aggreg"#,
/// );
/// let done = import_events(&store, ndjson.as_bytes(), ImportOptions::default(), |_| {}).await?;
/// assert_eq!((done.imported, done.unterminated), (2, 31));
/// assert_eq!(&ndjson[done.byte_offset as usize..], r#"{"position":3,"id":"e3","aggreg"#);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn import_events<R, F>(
    store: &Arc<dyn EventStore>,
    input: R,
    options: ImportOptions,
    progress: F,
) -> Result<ImportProgress>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(&ImportProgress),
{
    let maintenance = Maintenance::begin(store, options.maintenance).await?;
    let result = async {
        if options.maintenance == MaintenanceMode::Auto && options.from_offset == 0 {
            store.clear_events().await?;
        }
        import_lines(&**store, input, &options, progress).await
    }
    .await;
    maintenance.finish(result).await
}

/// The events of the batch being collected, with the line each came from.
struct Pending {
    events: Vec<RecordedEvent>,
    /// (line number, byte offset) of each event's line.
    lines: Vec<(u64, u64)>,
    /// The offset after the last event's line.
    end: u64,
    /// The number of the line after the last event's line.
    next_line: u64,
}

async fn import_lines<R, F>(
    store: &dyn EventStore,
    input: R,
    options: &ImportOptions,
    mut progress: F,
) -> Result<ImportProgress>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(&ImportProgress),
{
    let mut state = ImportProgress {
        byte_offset: options.from_offset,
        next_line: options.first_line,
        ..ImportProgress::default()
    };
    // Decoding the next batch overlaps storing the previous one (the store's own work
    // mostly runs elsewhere: its writer thread, its database). The channel holds one
    // batch, so at most two are in memory besides the one being stored.
    let (batches, mut to_store) = tokio::sync::mpsc::channel::<Pending>(1);
    let reading = read_batches(input, options, batches);
    let storing = async {
        while let Some(mut pending) = to_store.recv().await {
            commit(store, options, &mut pending, &mut state, &mut progress).await?;
        }
        Ok::<(), Error>(())
    };
    let (read, stored) = tokio::join!(reading, storing);
    // A refused batch comes before anything the reader found later in the file.
    stored?;
    if let Some((offset, next_line, unterminated)) = read? {
        // Blank lines after the last event are consumed too.
        state.byte_offset = offset;
        state.next_line = next_line;
        state.unterminated = unterminated;
    }
    Ok(state)
}

/// Reads and decodes lines into batches and hands each full one to `batches`. Ends with
/// the reader's final offset, next line number and unterminated byte count, or `None`
/// when the storing side stopped early (its error is the one to report); a bad line is
/// an error after the batch before it was handed over.
async fn read_batches<R>(
    input: R,
    options: &ImportOptions,
    batches: tokio::sync::mpsc::Sender<Pending>,
) -> Result<Option<(u64, u64, u64)>>
where
    R: AsyncBufRead + Unpin,
{
    let mut reader = LineReader::new(input)
        .starting_at(options.from_offset, options.first_line)
        .max_line_bytes(options.max_line_bytes);
    let batch_size = options.batch_size.clamp(1, MAX_BATCH);
    let empty = |end: u64, next_line: u64| Pending {
        events: Vec::with_capacity(batch_size),
        lines: Vec::with_capacity(batch_size),
        end,
        next_line,
    };
    let mut pending = empty(options.from_offset, options.first_line);
    loop {
        let (number, offset, end, decoded) = match reader.next_line().await {
            Ok(Some(line)) => (line.number, line.offset, line.end, decode_event(line.bytes)),
            Ok(None) => break,
            Err(e) => {
                let _ = batches.send(pending).await;
                return Err(e);
            }
        };
        let event = match decoded {
            Ok(event) => event,
            Err(e) => {
                let _ = batches.send(pending).await;
                return Err(at_line(e, number, offset));
            }
        };
        if let Some(last) = pending.events.last() {
            let full = pending.events.len() >= batch_size;
            if (full && last.commit_id != event.commit_id) || pending.events.len() >= MAX_BATCH {
                let next = empty(pending.end, pending.next_line);
                if batches
                    .send(std::mem::replace(&mut pending, next))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
        }
        pending.events.push(event);
        pending.lines.push((number, offset));
        pending.end = end;
        pending.next_line = number + 1;
    }
    if batches.send(pending).await.is_err() {
        return Ok(None);
    }
    Ok(Some((
        reader.offset(),
        reader.next_number(),
        reader.unterminated() as u64,
    )))
}

/// Stores the pending batch. When the store refuses one of its events, stores the events
/// before it and returns the refusal, located at that event's line.
async fn commit<F>(
    store: &dyn EventStore,
    options: &ImportOptions,
    pending: &mut Pending,
    state: &mut ImportProgress,
    progress: &mut F,
) -> Result<()>
where
    F: FnMut(&ImportProgress),
{
    if pending.events.is_empty() {
        return Ok(());
    }
    let events = std::mem::take(&mut pending.events);
    let lines = std::mem::take(&mut pending.lines);
    let batch = ImportBatch {
        events: events.clone(),
        on_conflict: options.on_conflict,
        expected_head: None,
    };
    match store.import_events(batch).await {
        Ok(outcome) => {
            state.imported += outcome.imported;
            state.skipped += outcome.skipped;
            state.head_position = outcome.head_position;
            state.byte_offset = pending.end;
            state.next_line = pending.next_line;
            progress(state);
            Ok(())
        }
        Err(error) => {
            let (index, field, error) = match event_index(&error) {
                Some((i, field)) => {
                    let i = i.min(events.len() - 1);
                    if i > 0 {
                        let outcome = store
                            .import_events(ImportBatch {
                                events: events[..i].to_vec(),
                                on_conflict: options.on_conflict,
                                expected_head: None,
                            })
                            .await?;
                        state.imported += outcome.imported;
                        state.skipped += outcome.skipped;
                        state.head_position = outcome.head_position;
                    }
                    (i, Some(field), error)
                }
                // A conflict names no index: store the events one by one up to the
                // refused one.
                None if is_conflict(&error) => {
                    let mut refused = None;
                    for (i, event) in events.iter().enumerate() {
                        match store
                            .import_events(ImportBatch {
                                events: vec![event.clone()],
                                on_conflict: options.on_conflict,
                                expected_head: None,
                            })
                            .await
                        {
                            Ok(outcome) => {
                                state.imported += outcome.imported;
                                state.skipped += outcome.skipped;
                                state.head_position = outcome.head_position;
                            }
                            Err(e) => {
                                refused = Some((i, e));
                                break;
                            }
                        }
                    }
                    match refused {
                        Some((i, e)) => (i, None, e),
                        None => (events.len() - 1, None, error),
                    }
                }
                None => return Err(error),
            };
            let (number, offset) = lines[index];
            state.byte_offset = offset;
            state.next_line = number;
            progress(state);
            Err(match (field, error) {
                (Some(field), Error::InvalidInput { reason, .. }) => {
                    at_line(Error::invalid(field, reason), number, offset)
                }
                // A conflict keeps its variant; `progress` has the offset to resume from.
                (_, other) => other,
            })
        }
    }
}

/// `events[i].field` of an import error: the index and the field.
fn event_index(error: &Error) -> Option<(usize, String)> {
    let Error::InvalidInput { field, .. } = error else {
        return None;
    };
    let rest = field.strip_prefix("events[")?;
    let (index, tail) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    let tail = tail.strip_prefix('.').unwrap_or(tail);
    Some((
        index,
        if tail.is_empty() {
            "line".into()
        } else {
            tail.into()
        },
    ))
}

fn is_conflict(error: &Error) -> bool {
    matches!(
        error,
        Error::VersionConflict { .. } | Error::DuplicateEventId { .. }
    )
}
