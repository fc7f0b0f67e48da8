//! Import: NDJSON events (as exported) into a store, in batches, resumable from a byte
//! offset. Secrets ([`crate::import_secrets`]) go through the same pipeline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use annals_core::limits::MAX_EVENTS_PER_APPEND;
use annals_core::ndjson::{at_line, decode_event, LineReader, DEFAULT_MAX_LINE_BYTES};
use annals_core::{
    Error, ErrorKind, EventStore, ImportBatch, ImportOutcome, OnConflict, Position, RecordedEvent,
    Result,
};
use tokio::io::AsyncBufRead;

use crate::mode::{Maintenance, MaintenanceMode};

/// The most items one batch may grow to while it waits for a commit boundary: the most
/// one import call accepts.
const MAX_BATCH: usize = MAX_EVENTS_PER_APPEND;

/// How to import.
///
/// ```
/// use annals_maintenance::{ImportOptions, RefusedBatch};
/// let o = ImportOptions::default();
/// assert_eq!((o.from_offset, o.first_line, o.batch_size), (0, 1, 10_000));
/// assert_eq!((o.expected_head, o.refused_batch), (None, RefusedBatch::KeepLinesBefore));
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
    /// When `Some(p)`: the store's head position must be `p` when the first batch
    /// commits, and each later batch expects the head the one before it left
    /// ([`ImportBatch::expected_head`]), so the import stops with
    /// [`Error::WrongExpectedHead`] instead of interleaving with other writers. An input
    /// without events still checks it.
    pub expected_head: Option<Position>,
    /// What is kept of a batch the store refuses.
    pub refused_batch: RefusedBatch,
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
            expected_head: None,
            refused_batch: RefusedBatch::KeepLinesBefore,
        }
    }
}

/// What an import keeps of a batch the store refuses: a conflict under
/// [`OnConflict::Error`], a back-fill below a stream's head, an id or a version given
/// twice in the batch, a moved head ([`ImportOptions::expected_head`]).
///
/// Either way the import stops at the start of a line, and
/// [`ImportProgress::byte_offset`] is exact: every line before it is stored, none after
/// it. (A line whose own fields are invalid is no refusal of its batch: the lines before
/// it are stored in both cases.)
///
/// ```
/// assert_eq!(
///     annals_maintenance::RefusedBatch::default(),
///     annals_maintenance::RefusedBatch::KeepLinesBefore
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefusedBatch {
    /// Store the batch's items before the refused one; the import stops at the refused
    /// line.
    #[default]
    KeepLinesBefore,
    /// Store nothing of the batch; the import stops at its first line. Each batch is
    /// then all or nothing, as one [`EventStore::import_events`] call is (the HTTP
    /// import, whose client sends one atomic batch per request, needs this).
    StoreNothing,
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

/// A line of an import's input.
///
/// ```
/// let line = annals_maintenance::InputLine { number: 3, offset: 120 };
/// assert_eq!((line.number, line.offset), (3, 120));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLine {
    /// Its number, counted from [`ImportOptions::first_line`].
    pub number: u64,
    /// The offset of its first byte.
    pub offset: u64,
}

/// Why an import stopped, at which line, and where it stood then.
///
/// Its message is that of [`ImportError::located`]; `?` turns it into that [`Error`].
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{ErrorKind, EventStore, MemoryStore};
/// use annals_maintenance::{import_events, ImportOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let ndjson = concat!(
///     r#"{"id":"e1","aggregateId":"a","version":1,"timestamp":"2021-01-01T00:00:00.000Z","commitId":"c1"}"#, "\n",
///     "not json\n",
/// );
/// let err = import_events(&store, ndjson.as_bytes(), ImportOptions::default(), |_| {})
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.line.map(|l| (l.number, l.offset)), Some((2, 97)));
/// assert_eq!((err.progress.imported, err.progress.byte_offset), (1, 97));
/// assert!(err.to_string().starts_with("invalid input at line 2 (byte offset 97)"));
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportError {
    /// What stopped the import: a line that cannot be read or decoded
    /// ([`Error::InvalidInput`] naming `line N (byte offset B)`); an item whose fields
    /// the store refuses, or the store's refusal of its batch (the store's error as it
    /// is, where an `events[i]` or `secrets[i]` field counts `i` from the first item
    /// this run read); or a failure to freeze, empty, read or unfreeze the store.
    pub error: Error,
    /// The line the error is about: the refused item's where the store's error names
    /// one, else the refused batch's first. `None` for an error about no line (freezing,
    /// emptying, reading or unfreezing the store).
    pub line: Option<InputLine>,
    /// Where the import stopped: every line before `progress.byte_offset` is stored and
    /// none after it (resume from there); `imported` and `skipped` count this run.
    pub progress: ImportProgress,
}

impl ImportError {
    /// The kind of [`ImportError::error`].
    ///
    /// ```
    /// use annals_core::{Error, ErrorKind};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store: std::sync::Arc<dyn annals_core::EventStore> =
    ///     std::sync::Arc::new(annals_core::MemoryStore::new());
    /// store.freeze().await.unwrap();
    /// let options = annals_maintenance::ImportOptions {
    ///     maintenance: annals_maintenance::MaintenanceMode::Auto,
    ///     ..Default::default()
    /// };
    /// let err = annals_maintenance::import_events(&store, &b""[..], options, |_| {})
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!((err.kind(), err.line), (ErrorKind::AlreadyFrozen, None));
    /// # });
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The error as one [`Error`] that names its line: an `events[i].<field>` (or
    /// `secrets[i].<field>`) field becomes `line N (byte offset B).<field>`; every other
    /// error is [`ImportError::error`] as it is.
    ///
    /// ```
    /// use annals_core::{Error, MemoryStore, EventStore};
    /// use annals_maintenance::{import_events, ImportOptions};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store: std::sync::Arc<dyn EventStore> = std::sync::Arc::new(MemoryStore::new());
    /// let line = r#"{"id":"e1","aggregateId":"","version":1,"timestamp":"2021-01-01T00:00:00.000Z","commitId":"c1"}"#;
    /// let err = import_events(&store, format!("{line}\n").as_bytes(), ImportOptions::default(), |_| {})
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(&err.error, Error::InvalidInput { field, .. } if field == "events[0].stream.id"));
    /// assert!(matches!(err.located(), Error::InvalidInput { field, .. } if field == "line 1 (byte offset 0).stream.id"));
    /// # });
    /// ```
    pub fn located(&self) -> Error {
        if let (Error::InvalidInput { field, reason }, Some(line)) = (&self.error, self.line) {
            if let Some(item) = ItemField::parse(field) {
                let field = item.field();
                let field = if field.is_empty() { "line" } else { field };
                return at_line(
                    Error::invalid(field, reason.clone()),
                    line.number,
                    line.offset,
                );
            }
        }
        self.error.clone()
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.located().fmt(f)
    }
}

impl std::error::Error for ImportError {}

impl From<ImportError> for Error {
    fn from(e: ImportError) -> Self {
        e.located()
    }
}

/// A field `events[i]<rest>` (or `secrets[i]<rest>`) of a store's error.
struct ItemField<'a> {
    what: &'a str,
    index: usize,
    rest: &'a str,
}

impl<'a> ItemField<'a> {
    fn parse(field: &'a str) -> Option<Self> {
        let (what, tail) = field.split_once('[')?;
        if what != "events" && what != "secrets" {
            return None;
        }
        let (index, rest) = tail.split_once(']')?;
        Some(ItemField {
            what,
            index: index.parse().ok()?,
            rest,
        })
    }

    /// The field inside the item (`version` of `events[3].version`).
    fn field(&self) -> &'a str {
        self.rest.strip_prefix('.').unwrap_or(self.rest)
    }
}

/// Reads NDJSON events ([`annals_core::ndjson`]) from `input` and stores them through
/// [`EventStore::import_events`] in batches, keeping ids, versions, timestamps, commit
/// ids and dispatch marks; `position` fields are ignored (the store assigns the next
/// positions, so a whole export imported into an empty store gets its positions back).
/// Decoding the next batch overlaps storing the one before.
///
/// `progress` is called after each committed batch, and once more when the import
/// stops at a line. The import stops at:
/// - a line that cannot be read or decoded, or whose fields the store refuses: every
///   event before that line is stored, nothing after it;
/// - a batch the store refuses (a conflict under [`OnConflict::Error`], a back-fill, a
///   moved head): what is kept of the batch is [`ImportOptions::refused_batch`]'s;
///
/// and the [`ImportError`] names the line, the offset to resume from and the counts so
/// far. A last line without a newline is left unread (reported in
/// [`ImportProgress::unterminated`]), so importing a file that is still growing, or
/// resuming, never stores half a line.
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
) -> Result<ImportProgress, ImportError>
where
    R: AsyncBufRead + Unpin,
    F: FnMut(&ImportProgress),
{
    import::<RecordedEvent, R, F>(store, input, &options, progress).await
}

/// A boxed store call (the [`EventStore`] methods are boxed futures already).
pub(crate) type StoreCall<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What one line of an import becomes: an event or a secret.
pub(crate) trait Item: Sized + Clone + Send + 'static {
    /// Decodes one line (without its newline).
    fn decode(line: &[u8]) -> Result<Self>;
    /// Checks the item's own fields as the store does (`i`: its index in its batch).
    fn validate(&self, i: usize) -> Result<()>;
    /// Whether `next` must be stored in the same batch as `self`.
    fn joins(&self, next: &Self) -> bool;
    /// The index of the item a conflict names.
    fn conflicting(items: &[Self], error: &Error) -> Option<usize>;
    /// Stores a batch in one call.
    fn store<'a>(
        store: &'a dyn EventStore,
        items: Vec<Self>,
        on_conflict: OnConflict,
        expected_head: Option<Position>,
    ) -> StoreCall<'a, ImportOutcome>;
    /// Deletes every stored item of this kind.
    fn clear(store: &dyn EventStore) -> StoreCall<'_, ()>;
}

impl Item for RecordedEvent {
    fn decode(line: &[u8]) -> Result<Self> {
        decode_event(line)
    }

    fn validate(&self, i: usize) -> Result<()> {
        annals_core::import::validate_event(i, self)
    }

    fn joins(&self, next: &Self) -> bool {
        self.commit_id == next.commit_id
    }

    fn conflicting(items: &[Self], error: &Error) -> Option<usize> {
        match error {
            Error::VersionConflict {
                stream, version, ..
            } => items
                .iter()
                .position(|e| e.stream == *stream && e.version == *version),
            Error::DuplicateEventId { id } => items.iter().position(|e| &*e.id == id),
            _ => None,
        }
    }

    fn store<'a>(
        store: &'a dyn EventStore,
        events: Vec<Self>,
        on_conflict: OnConflict,
        expected_head: Option<Position>,
    ) -> StoreCall<'a, ImportOutcome> {
        store.import_events(ImportBatch {
            events,
            on_conflict,
            expected_head,
        })
    }

    fn clear(store: &dyn EventStore) -> StoreCall<'_, ()> {
        store.clear_events()
    }
}

/// Imports the NDJSON items of `input` (see [`import_events`]), in maintenance when
/// `options` ask for it.
pub(crate) async fn import<T, R, F>(
    store: &Arc<dyn EventStore>,
    input: R,
    options: &ImportOptions,
    progress: F,
) -> Result<ImportProgress, ImportError>
where
    T: Item,
    R: AsyncBufRead + Unpin,
    F: FnMut(&ImportProgress),
{
    let start = starting(options);
    let maintenance = Maintenance::begin(store, options.maintenance)
        .await
        .map_err(off_the_lines(start))?;
    let result = async {
        if options.maintenance == MaintenanceMode::Auto && options.from_offset == 0 {
            T::clear(&**store).await.map_err(off_the_lines(start))?;
        }
        import_lines::<T, R, F>(&**store, input, options, progress).await
    }
    .await;
    // Unfrozen whatever the result; the import's own error wins.
    let ended = maintenance.end().await;
    let done = result?;
    ended.map_err(off_the_lines(done))?;
    Ok(done)
}

/// Where an import stands before it reads anything.
fn starting(options: &ImportOptions) -> ImportProgress {
    ImportProgress {
        byte_offset: options.from_offset,
        next_line: options.first_line,
        ..ImportProgress::default()
    }
}

/// An error about no line, with where the import stood.
fn off_the_lines(progress: ImportProgress) -> impl Fn(Error) -> ImportError {
    move |error| ImportError {
        error,
        line: None,
        progress,
    }
}

/// The batch being collected, with each item's line. The lines' bytes are kept so a
/// refused batch can be decoded again to find the refused item: copying the bytes costs
/// far less than cloning the decoded items.
struct Pending<T> {
    items: Vec<T>,
    /// The items' lines, one after another.
    raw: Vec<u8>,
    /// Each item's line, and the end of its bytes in `raw`.
    lines: Vec<(InputLine, usize)>,
    /// How many items this run read before the batch.
    first_index: u64,
    /// The offset after the last item's line.
    end: u64,
    /// The number of the line after the last item's line.
    next_line: u64,
}

impl<T: Item> Pending<T> {
    fn new(capacity: usize, first_index: u64, end: u64, next_line: u64) -> Self {
        Pending {
            items: Vec::with_capacity(capacity),
            raw: Vec::new(),
            lines: Vec::with_capacity(capacity),
            first_index,
            end,
            next_line,
        }
    }

    /// The first `n` items, decoded again from their lines.
    fn decode_again(&self, n: usize) -> Result<Vec<T>> {
        let mut start = 0;
        self.lines[..n]
            .iter()
            .map(|&(_, end)| {
                let item = T::decode(&self.raw[start..end]);
                start = end;
                item
            })
            .collect()
    }

    /// A store error about this batch, with an item field counted from the run's first
    /// item instead of the batch's.
    fn renumbered(&self, error: Error) -> Error {
        match error {
            Error::InvalidInput { field, reason } => {
                let field = match ItemField::parse(&field) {
                    Some(item) => format!(
                        "{}[{}]{}",
                        item.what,
                        self.first_index + item.index as u64,
                        item.rest
                    ),
                    None => field,
                };
                Error::InvalidInput { field, reason }
            }
            other => other,
        }
    }
}

/// A line that stopped the reading: its error, already naming the line.
struct Stop {
    error: Error,
    line: InputLine,
}

/// Where the reading ended.
struct End {
    offset: u64,
    next_line: u64,
    unterminated: u64,
}

/// The import itself: reads batches and stores them, overlapping the two.
async fn import_lines<T, R, F>(
    store: &dyn EventStore,
    input: R,
    options: &ImportOptions,
    mut progress: F,
) -> Result<ImportProgress, ImportError>
where
    T: Item,
    R: AsyncBufRead + Unpin,
    F: FnMut(&ImportProgress),
{
    let mut state = starting(options);
    let mut expected_head = options.expected_head;
    let mut committed = false;
    // Decoding the next batch overlaps storing the previous one (the store's own work
    // mostly runs elsewhere: its writer thread, its database). The channel holds one
    // batch, so at most two are in memory besides the one being stored.
    let (batches, mut to_store) = tokio::sync::mpsc::channel::<Pending<T>>(1);
    let reading = read_batches(input, options, batches);
    let storing = async {
        while let Some(pending) = to_store.recv().await {
            commit(
                store,
                options,
                pending,
                &mut state,
                &mut expected_head,
                &mut progress,
            )
            .await?;
            committed = true;
        }
        Ok::<(), ImportError>(())
    };
    let (read, stored) = tokio::join!(reading, storing);
    // A refused batch comes before anything the reader found later in the input.
    stored?;
    let end = match read {
        Ok(Some(end)) => end,
        // The storing side stopped first, which it does only with an error (returned
        // above); keep what is known.
        Ok(None) => End {
            offset: state.byte_offset,
            next_line: state.next_line,
            unterminated: 0,
        },
        Err(stop) => {
            // Every batch before the line is stored (blank lines before it too).
            state.byte_offset = stop.line.offset;
            state.next_line = stop.line.number;
            progress(&state);
            return Err(ImportError {
                error: stop.error,
                line: Some(stop.line),
                progress: state,
            });
        }
    };
    // Blank lines after the last item are consumed too.
    state.byte_offset = end.offset;
    state.next_line = end.next_line;
    state.unterminated = end.unterminated;
    if !committed {
        // No item at all: the expected head is still checked (as the store checks it
        // for an empty batch), and the answer still carries the head.
        let head = match expected_head {
            Some(expected) => store
                .import_events(ImportBatch {
                    expected_head: Some(expected),
                    ..ImportBatch::default()
                })
                .await
                .map(|outcome| outcome.head_position)
                .map_err(|error| ImportError {
                    error,
                    line: Some(InputLine {
                        number: end.next_line,
                        offset: end.offset,
                    }),
                    progress: state,
                })?,
            None => store
                .describe()
                .await
                .map(|d| d.head_position)
                .map_err(|error| ImportError {
                    error,
                    line: None,
                    progress: state,
                })?,
        };
        state.head_position = head;
    }
    Ok(state)
}

/// Reads and decodes lines into batches and hands each full one to `batches`. Ends with
/// where the reader stopped, or `None` when the storing side stopped early (its error is
/// the one to report); a bad line is a [`Stop`] after the batch before it was handed
/// over.
async fn read_batches<T, R>(
    input: R,
    options: &ImportOptions,
    batches: tokio::sync::mpsc::Sender<Pending<T>>,
) -> std::result::Result<Option<End>, Stop>
where
    T: Item,
    R: AsyncBufRead + Unpin,
{
    let mut reader = LineReader::new(input)
        .starting_at(options.from_offset, options.first_line)
        .max_line_bytes(options.max_line_bytes);
    let batch_size = options.batch_size.clamp(1, MAX_BATCH);
    let mut pending = Pending::<T>::new(batch_size, 0, options.from_offset, options.first_line);
    let stop = loop {
        let line = match reader.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break None,
            Err(error) => {
                // The reader did not move past the line it refused.
                let line = InputLine {
                    number: reader.next_number(),
                    offset: reader.offset(),
                };
                break Some(Stop { error, line });
            }
        };
        let at = InputLine {
            number: line.number,
            offset: line.offset,
        };
        let item = match T::decode(line.bytes) {
            Ok(item) => item,
            Err(e) => {
                break Some(Stop {
                    error: at_line(e, at.number, at.offset),
                    line: at,
                })
            }
        };
        if let Some(last) = pending.items.last() {
            let len = pending.items.len();
            if len >= MAX_BATCH || (len >= batch_size && !last.joins(&item)) {
                let next = Pending::new(
                    batch_size,
                    pending.first_index + len as u64,
                    pending.end,
                    pending.next_line,
                );
                if batches
                    .send(std::mem::replace(&mut pending, next))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
        }
        pending.raw.extend_from_slice(line.bytes);
        pending.lines.push((at, pending.raw.len()));
        pending.items.push(item);
        pending.end = line.end;
        pending.next_line = line.number + 1;
    };
    let handed = pending.items.is_empty() || batches.send(pending).await.is_ok();
    match stop {
        Some(stop) => Err(stop),
        None if handed => Ok(Some(End {
            offset: reader.offset(),
            next_line: reader.next_number(),
            unterminated: reader.unterminated() as u64,
        })),
        None => Ok(None),
    }
}

/// Adds a stored batch's outcome to `state`; the next batch expects the head it left.
fn record(
    state: &mut ImportProgress,
    outcome: ImportOutcome,
    expected_head: &mut Option<Position>,
) {
    state.imported += outcome.imported;
    state.skipped += outcome.skipped;
    state.head_position = outcome.head_position;
    if expected_head.is_some() {
        *expected_head = Some(outcome.head_position);
    }
}

/// Stores the pending batch. When the store refuses it, keeps what
/// [`ImportOptions::refused_batch`] keeps (always the items before one whose own fields
/// are invalid) and stops at the right line.
async fn commit<T, F>(
    store: &dyn EventStore,
    options: &ImportOptions,
    mut pending: Pending<T>,
    state: &mut ImportProgress,
    expected_head: &mut Option<Position>,
    progress: &mut F,
) -> Result<(), ImportError>
where
    T: Item,
    F: FnMut(&ImportProgress),
{
    let items = std::mem::take(&mut pending.items);
    if items.is_empty() {
        return Ok(());
    }
    let count = items.len();
    let mut error = match T::store(store, items, options.on_conflict, *expected_head).await {
        Ok(outcome) => {
            record(state, outcome, expected_head);
            state.byte_offset = pending.end;
            state.next_line = pending.next_line;
            progress(state);
            return Ok(());
        }
        Err(error) => error,
    };
    // Refused: nothing of the batch is stored. Find the refused item among the first
    // `tried` ones (the prefix offered last), then store the items before it when they
    // may be kept.
    let first = pending.lines[0].0;
    let mut tried = count;
    let stop = match pending.decode_again(count) {
        // The lines decoded a moment ago; should they not, the batch stays unstored.
        Err(_) => (first, first),
        Ok(decoded) => loop {
            let refused = match &error {
                Error::InvalidInput { field, .. } => ItemField::parse(field)
                    .map(|f| f.index)
                    .filter(|&i| i < tried),
                other => T::conflicting(&decoded[..tried], other),
            };
            let Some(i) = refused else {
                break (first, first);
            };
            let at = pending.lines[i].0;
            let bad_line = decoded[i].validate(i).is_err();
            if !bad_line && options.refused_batch == RefusedBatch::StoreNothing {
                break (at, first);
            }
            if i == 0 {
                break (at, at);
            }
            match T::store(
                store,
                decoded[..i].to_vec(),
                options.on_conflict,
                *expected_head,
            )
            .await
            {
                Ok(outcome) => {
                    record(state, outcome, expected_head);
                    break (at, at);
                }
                // The items before it hold a refusal of their own.
                Err(e) => {
                    error = e;
                    tried = i;
                }
            }
        },
    };
    let (line, resume) = stop;
    state.byte_offset = resume.offset;
    state.next_line = resume.number;
    progress(state);
    Err(ImportError {
        error: pending.renumbered(error),
        line: Some(line),
        progress: *state,
    })
}
