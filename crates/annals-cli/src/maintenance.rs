//! The data-maintenance verbs: `export`, `import` (also `--incremental`), `secrets
//! export|import` and `copy`, on any [`Location`].
//!
//! On a terminal they draw a progress bar on standard error; piped, they draw none.
//! SIGINT or SIGTERM stops them at a safe point (see [`crate::interrupt`]): the store is
//! unfrozen (`--maintenance-mode auto`), the summary says where to resume, and the exit
//! code is 130 (SIGINT) or 143 (SIGTERM).

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader};

use annals_core::ndjson::LineReader;
use annals_core::{Cursor, Error, ErrorKind, EventStore, OnConflict, StreamId};
use annals_maintenance::{
    copy_with_progress, export_events, export_secrets, import_events, import_secrets, Checksum,
    CopyOptions, ExportOptions, ImportOptions, ImportProgress, IncomingEvent, IncrementalImport,
    MaintenanceMode, SecretsImportOptions,
};

use crate::fields::EventFields;
use crate::interrupt::{Interrupt, Signal};
use crate::location::{IfMissing, Location};
use crate::Failure;

/// `auto` or `manual` on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Freeze the store for the duration (an import also empties it first).
    Auto,
    /// Nothing implicit.
    Manual,
}

impl From<Mode> for MaintenanceMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Auto => MaintenanceMode::Auto,
            Mode::Manual => MaintenanceMode::Manual,
        }
    }
}

/// `error` or `skip` on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Conflict {
    /// Stop at the first event (or secret) already stored.
    Error,
    /// Skip events (or secrets) already stored.
    Skip,
}

impl From<Conflict> for OnConflict {
    fn from(c: Conflict) -> Self {
        match c {
            Conflict::Error => OnConflict::Error,
            Conflict::Skip => OnConflict::Skip,
        }
    }
}

/// `annals export`.
#[derive(Args)]
pub(crate) struct ExportArgs {
    /// Start after this position.
    #[arg(long, conflicts_with = "cursor")]
    after: Option<u64>,
    /// Resume after this cursor (printed by an earlier export).
    #[arg(long)]
    cursor: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Append to the output file (to continue an export with `--cursor`).
    #[arg(long, requires = "output")]
    append: bool,
    /// `auto` freezes the store during the export.
    #[arg(long, value_enum, default_value = "manual")]
    maintenance_mode: Mode,
    /// Print the summary as one JSON object (on standard output with `--output`, else on
    /// standard error): {"events", "bytes", "cursor", "position", "end",
    /// "headPosition"}, and "interrupted" ("SIGINT"/"SIGTERM") when a signal stopped it.
    #[arg(long)]
    json: bool,
}

/// `annals import`.
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The NDJSON file; `-` or absent reads standard input.
    file: Option<PathBuf>,
    /// Start at this byte offset of the file (printed by an interrupted import).
    #[arg(long, default_value_t = 0)]
    from_offset: u64,
    /// Events per committed batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: usize,
    /// What to do with events already stored.
    #[arg(long, value_enum, default_value = "error")]
    on_conflict: Conflict,
    /// `auto` freezes the store and empties its events first (from offset 0).
    #[arg(long, value_enum, default_value = "manual")]
    maintenance_mode: Mode,
    /// Incremental import: lines are events without versions (`aggregateId`, `type`,
    /// `timestamp`, `payload`, …); the new ones are appended atomically after the newest
    /// stored event, each stream getting its next versions.
    #[arg(long, conflicts_with_all = ["from_offset", "maintenance_mode"])]
    incremental: bool,
    /// Print the summary as one JSON object: {"imported", "skipped", "byteOffset",
    /// "nextLine", "unterminated", "headPosition", "end"}, and "interrupted" when a
    /// signal stopped it; with `--incremental`: {"imported", "skipped", "headPosition"}.
    #[arg(long)]
    json: bool,
}

/// `annals secrets`.
#[derive(Subcommand)]
pub(crate) enum SecretsAction {
    /// Write every secret as NDJSON `{"idx","id","secret"}` (`null` for deleted ones).
    Export {
        /// Start at this idx.
        #[arg(long, default_value_t = 0)]
        from_idx: u64,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Append to the output file (to continue an export with `--from-idx`).
        #[arg(long, requires = "output")]
        append: bool,
        /// `auto` freezes the store during the export.
        #[arg(long, value_enum, default_value = "manual")]
        maintenance_mode: Mode,
        /// Print the summary as one JSON object (on standard output with `--output`,
        /// else on standard error): {"secrets", "tombstones", "nextIdx"}, and
        /// "interrupted" when a signal stopped it.
        #[arg(long)]
        json: bool,
    },
    /// Read NDJSON secrets, keeping their idx.
    Import {
        /// The NDJSON file; `-` or absent reads standard input.
        file: Option<PathBuf>,
        /// Start at this byte offset of the file.
        #[arg(long, default_value_t = 0)]
        from_offset: u64,
        /// What to do with secrets already stored.
        #[arg(long, value_enum, default_value = "error")]
        on_conflict: Conflict,
        /// `auto` freezes the store and deletes its secrets first.
        #[arg(long, value_enum, default_value = "manual")]
        maintenance_mode: Mode,
        /// Print the summary as one JSON object: {"imported", "skipped", "byteOffset",
        /// "nextLine", "unterminated", "end"}, and "interrupted" when a signal stopped it.
        #[arg(long)]
        json: bool,
    },
}

/// `annals copy`.
#[derive(Args)]
pub(crate) struct CopyArgs {
    /// The source: `LOCATION[#STORE]`, where LOCATION is a server URL (`http://…`), a
    /// PostgreSQL URL (`postgres://…`, schema `annals`) or a data directory; STORE
    /// defaults to `--store`.
    #[arg(long)]
    from: String,
    /// The target (same form); must be empty (created when missing).
    #[arg(long)]
    to: String,
    /// `auto` freezes the source during the copy.
    #[arg(long, value_enum, default_value = "manual")]
    maintenance_mode: Mode,
    /// Events per batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: u64,
    /// Print the summary as one JSON object: {"events", "streamSnapshots",
    /// "keyedSnapshots", "secrets", "verified", "source", "target"}; source and target
    /// are checksums {"events", "eventsSha256", "secrets", "secretsSha256",
    /// "keyedSnapshots", "keyedSnapshotsSha256", "streamSnapshots",
    /// "streamSnapshotsSha256"}.
    #[arg(long)]
    json: bool,
}

/// What a progress bar counts.
#[derive(Clone, Copy)]
pub(crate) enum Unit {
    /// Events (the rate is events/s).
    Events,
    /// Secrets.
    Secrets,
    /// Bytes of the input (the message gives events/s).
    Bytes,
    /// Messages published to a channel.
    Messages,
    /// Nothing counted: the message says how far it got.
    Status,
}

/// A progress bar on standard error when it is a terminal; hidden otherwise. With a
/// known total it shows the rate and the time left.
pub(crate) fn progress_bar(total: Option<u64>, unit: Unit) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = match (total, unit) {
        (Some(_), Unit::Bytes) => "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        (Some(_), Unit::Events) => "{bar:40} {pos}/{len} events, {per_sec} ({eta} left)",
        (Some(_), Unit::Secrets) => "{bar:40} {pos}/{len} secrets, {per_sec} ({eta} left)",
        (None, Unit::Bytes) => "{spinner} {bytes} {msg}",
        (None, Unit::Events) => "{spinner} {pos} events, {per_sec} {msg}",
        (None, Unit::Secrets) => "{spinner} {pos} secrets, {per_sec} {msg}",
        (Some(_), Unit::Messages) => "{bar:40} {pos}/{len} messages, {per_sec} ({eta} left)",
        (None, Unit::Messages) => "{spinner} {pos} messages, {per_sec} {msg}",
        (_, Unit::Status) => "{spinner} {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `n events, r events/s` since `started`, for a bar's message.
fn rate(n: u64, what: &str, started: Instant) -> String {
    let per_sec = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
    format!("{n} {what}, {per_sec:.0} {what}/s")
}

fn io(what: &str, e: std::io::Error) -> Failure {
    Failure::usage(format!("{what}: {e}"))
}

/// Prints a summary line on standard error or standard output.
fn emit(to_stderr: bool, line: &str) {
    if to_stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// The failure of an operation a signal stopped at a safe point.
fn interrupted(signal: Option<Signal>, what: String) -> Failure {
    let signal = signal.unwrap_or(Signal::Interrupt);
    Failure {
        code: signal.exit_code(),
        message: format!("interrupted by {}: {what}", signal.name()),
    }
}

/// The failure of an operation a second signal abandoned; `settled` says what became of
/// the freeze.
fn abandoned(signal: Option<Signal>, settled: &str, what: &str) -> Failure {
    let signal = signal.unwrap_or(Signal::Interrupt);
    Failure {
        code: signal.exit_code(),
        message: format!(
            "abandoned after a second signal ({}){settled}; {what}",
            signal.name()
        ),
    }
}

/// After an operation in `--maintenance-mode auto` was abandoned (its future dropped):
/// waits for the library's maintenance guard to unfreeze the store, and unfreezes it
/// itself when the guard could not (the freeze was in flight when the future was
/// dropped). Nothing when the store was frozen before the operation: that freeze is
/// someone else's.
async fn settle(store: &Arc<dyn EventStore>, mode: Mode, frozen_before: bool) -> String {
    if mode == Mode::Manual || frozen_before {
        return String::new();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.describe().await {
            Ok(d) if !d.frozen => return "; the store is not frozen".to_owned(),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            _ => break,
        }
    }
    match store.unfreeze().await {
        Ok(()) => "; the store was unfrozen".to_owned(),
        Err(e) if e.kind() == ErrorKind::NotFrozen => "; the store is not frozen".to_owned(),
        Err(e) => format!("; the store may still be frozen ({e}): run `annals unfreeze`"),
    }
}

/// Whether the store was frozen before an operation in `mode` (only asked in `auto`).
async fn frozen_by_someone_else(store: &Arc<dyn EventStore>, mode: Mode) -> Result<bool, Failure> {
    Ok(mode == Mode::Auto && store.describe().await?.frozen)
}

async fn output(
    path: Option<&PathBuf>,
    append: bool,
) -> Result<Box<dyn AsyncWrite + Unpin + Send>, Failure> {
    match path {
        Some(p) => {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(p)
                .await
                .map_err(|e| io(&format!("cannot open {}", p.display()), e))?;
            Ok(Box::new(tokio::io::BufWriter::with_capacity(1 << 20, file)))
        }
        None => Ok(Box::new(tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::io::stdout(),
        ))),
    }
}

/// The input from `offset`, and its size when it is a file.
async fn input(
    path: Option<&PathBuf>,
    offset: u64,
) -> Result<(Box<dyn tokio::io::AsyncBufRead + Unpin + Send>, Option<u64>), Failure> {
    match path.filter(|p| p.as_os_str() != "-") {
        Some(p) => {
            let mut file = tokio::fs::File::open(p)
                .await
                .map_err(|e| io(&format!("cannot open {}", p.display()), e))?;
            let size = file.metadata().await.map(|m| m.len()).ok();
            if offset > 0 {
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| io("cannot seek", e))?;
            }
            Ok((Box::new(BufReader::with_capacity(1 << 20, file)), size))
        }
        None => {
            if offset > 0 {
                // Standard input cannot seek: skip the bytes before the offset.
                let mut stdin = BufReader::with_capacity(1 << 20, tokio::io::stdin());
                let skipped = tokio::io::copy(
                    &mut tokio::io::AsyncReadExt::take(&mut stdin, offset),
                    &mut tokio::io::sink(),
                )
                .await
                .map_err(|e| io("cannot read standard input", e))?;
                if skipped < offset {
                    return Err(Failure::usage(format!(
                        "standard input ended at byte {skipped}, before --from-offset {offset}"
                    )));
                }
                return Ok((Box::new(stdin), None));
            }
            Ok((
                Box::new(BufReader::with_capacity(1 << 20, tokio::io::stdin())),
                None,
            ))
        }
    }
}

/// Opens the store, runs `verb` on it, and closes it whatever the outcome.
async fn with_store<F, Fut>(
    location: &Location,
    name: &str,
    if_missing: IfMissing,
    verb: F,
) -> Result<(), Failure>
where
    F: FnOnce(Arc<dyn EventStore>) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let store = location.open(name, if_missing).await?;
    let result = verb(Arc::clone(&store)).await;
    let _ = store.close().await;
    result
}

/// `annals export`.
pub(crate) async fn export(
    args: ExportArgs,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    with_store(location, name, IfMissing::Fail, |store| async move {
        export_from(&store, args, &interrupt).await
    })
    .await
}

async fn export_from(
    store: &Arc<dyn EventStore>,
    args: ExportArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let after = match (&args.cursor, args.after) {
        (Some(c), _) => c.parse::<Cursor>()?.position(),
        (None, a) => a.unwrap_or(0),
    };
    let before = store.describe().await?;
    let total = before.head_position.saturating_sub(after);
    let bar = progress_bar(
        Some(args.limit.map_or(total, |l| l.min(total))),
        Unit::Events,
    );
    let mut out = interrupt.writer(
        output(args.output.as_ref(), args.append).await?,
        bar.clone(),
    );
    let options = ExportOptions {
        after,
        limit: args.limit,
        maintenance: args.maintenance_mode.into(),
        ..ExportOptions::default()
    };
    // What the output holds: the cursor after its last page, lines, bytes.
    let mut done = (Cursor::forward_after(after), 0u64, 0u64);
    let outcome = interrupt
        .unless_abandoned(export_events(store, &mut out, options, |r| {
            done = (r.cursor, r.lines, r.bytes);
        }))
        .await;
    bar.finish_and_clear();
    // The summary goes where the events do not.
    let summary_to_stderr = args.output.is_none();
    let summary = |(cursor, lines, bytes): (Cursor, u64, u64),
                   end: bool,
                   head: u64,
                   signal: Option<Signal>| {
        let mut v = json!({
            "events": lines,
            "bytes": bytes,
            "cursor": cursor.to_string(),
            "position": cursor.position(),
            "end": end,
            "headPosition": head,
        });
        if let (Some(s), Some(o)) = (signal, v.as_object_mut()) {
            o.insert("interrupted".into(), s.name().into());
        }
        emit(summary_to_stderr, &v.to_string());
    };
    match outcome {
        Some(Ok(report)) => {
            if args.json {
                summary(
                    (report.cursor, report.lines, report.bytes),
                    report.end,
                    report.head_position,
                    None,
                );
            } else {
                eprintln!(
                    "annals: exported {} event(s); cursor {} (position {}){}",
                    report.lines,
                    report.cursor,
                    report.cursor.position(),
                    if report.end {
                        "; reached the end".to_owned()
                    } else {
                        format!("; resume with --cursor {}", report.cursor)
                    }
                );
            }
            Ok(())
        }
        Some(Err(e)) => {
            // The output holds whole pages (the writer takes each page whole): keep them,
            // so the cursor after the last one is where to resume.
            let flushed = out.flush().await;
            let (cursor, lines, _) = done;
            if out.refused() && flushed.is_ok() {
                if args.json {
                    summary(done, false, before.head_position, interrupt.signal());
                }
                return Err(interrupted(
                    interrupt.signal(),
                    format!(
                        "exported {lines} event(s); resume with --cursor {cursor}{}",
                        if args.output.is_some() {
                            " --append"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            let mut failure = Failure::from(e);
            if flushed.is_ok() {
                failure.message = format!(
                    "{}; {lines} event(s) exported before it; resume with --cursor {cursor}",
                    failure.message
                );
            }
            Err(failure)
        }
        None => {
            let settled = settle(store, args.maintenance_mode, before.frozen).await;
            Err(abandoned(
                interrupt.signal(),
                &settled,
                "the output may end in a partial line: every line carries its position, \
                 resume with --after the position of the last complete one",
            ))
        }
    }
}

/// `annals import`.
pub(crate) async fn import(
    args: ImportArgs,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    with_store(location, name, IfMissing::Create, |store| async move {
        if args.incremental {
            import_incremental(&store, &args, &interrupt).await
        } else {
            import_into(&store, &args, &interrupt).await
        }
    })
    .await
}

fn import_json(p: &ImportProgress, end: bool, signal: Option<Signal>) -> Value {
    let mut v = json!({
        "imported": p.imported,
        "skipped": p.skipped,
        "byteOffset": p.byte_offset,
        "nextLine": p.next_line,
        "unterminated": p.unterminated,
        "headPosition": p.head_position,
        "end": end,
    });
    if let (Some(s), Some(o)) = (signal, v.as_object_mut()) {
        o.insert("interrupted".into(), s.name().into());
    }
    v
}

async fn import_into(
    store: &Arc<dyn EventStore>,
    args: &ImportArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let frozen_before = frozen_by_someone_else(store, args.maintenance_mode).await?;
    let (reader, size) = input(args.file.as_ref(), args.from_offset).await?;
    let bar = progress_bar(size, Unit::Bytes);
    bar.set_position(args.from_offset);
    let mut reader = interrupt.reader(reader, bar.clone());
    let options = ImportOptions {
        from_offset: args.from_offset,
        batch_size: args.batch_size,
        on_conflict: args.on_conflict.into(),
        maintenance: args.maintenance_mode.into(),
        ..ImportOptions::default()
    };
    let started = Instant::now();
    let mut last = ImportProgress {
        byte_offset: args.from_offset,
        ..ImportProgress::default()
    };
    let outcome = interrupt
        .unless_abandoned(import_events(store, &mut reader, options, |p| {
            last = *p;
            bar.set_message(rate(p.imported, "events", started));
        }))
        .await;
    bar.finish_and_clear();
    match outcome {
        Some(Ok(done)) if reader.was_cut() => {
            if args.json {
                println!("{}", import_json(&done, false, interrupt.signal()));
            }
            Err(interrupted(
                interrupt.signal(),
                format!(
                    "imported {} event(s), skipped {}; resume with --from-offset {}",
                    done.imported, done.skipped, done.byte_offset
                ),
            ))
        }
        Some(Ok(done)) => {
            if args.json {
                println!("{}", import_json(&done, done.unterminated == 0, None));
            } else {
                println!(
                    "imported {} event(s), skipped {}; byte offset {}{}",
                    done.imported,
                    done.skipped,
                    done.byte_offset,
                    if done.unterminated > 0 {
                        format!(
                            " ({} bytes of an unterminated last line left; resume with --from-offset {})",
                            done.unterminated, done.byte_offset
                        )
                    } else {
                        " (end of input)".to_owned()
                    }
                );
            }
            Ok(())
        }
        Some(Err(e)) => {
            let stopped = e.progress;
            let mut failure = Failure::from(Error::from(e));
            failure.message = format!(
                "{}; {} event(s) imported before it; resume with --from-offset {}",
                failure.message, stopped.imported, stopped.byte_offset
            );
            Err(failure)
        }
        None => {
            let settled = settle(store, args.maintenance_mode, frozen_before).await;
            Err(abandoned(
                interrupt.signal(),
                &settled,
                &format!(
                    "the batch in flight may or may not be stored: resume with --from-offset {} \
                     --on-conflict skip",
                    last.byte_offset
                ),
            ))
        }
    }
}

/// One line of an incremental import as an event; errors name the line and the field.
fn incoming_event(place: &str, bytes: &[u8]) -> Result<IncomingEvent, Failure> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(place, format!("not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::invalid(place, "must be a JSON object").into());
    };
    let fields = EventFields::new(place.to_owned(), &map);
    Ok(IncomingEvent {
        id: fields.string("id")?,
        stream: StreamId {
            context: fields.string("context")?.unwrap_or_default(),
            aggregate: fields.string("aggregate")?.unwrap_or_default(),
            id: fields.required("aggregateId")?,
        },
        event_type: fields.string("type")?.unwrap_or_default(),
        timestamp: fields.timestamp("timestamp")?,
        payload: fields.json("payload")?,
        metadata: fields.json("metadata")?,
    })
}

/// Renames `<prefix>[i]` at the start of an error's field to the line staged event `i`
/// came from (`staged[i]` of a commit, `events[0]` of a one-event push), and the
/// library's `stream.*` to the names the line uses.
fn at_staged_line(error: Error, prefix: &str, places: &[String]) -> Failure {
    let relabel = |field: &str, index: Option<usize>| -> Option<String> {
        let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
        let (i, tail) = rest.split_once(']')?;
        let i = index.or_else(|| i.parse().ok())?;
        let tail = match tail {
            ".stream.id" => ".aggregateId",
            ".stream.aggregate" => ".aggregate",
            ".stream.context" => ".context",
            other => other,
        };
        Some(format!("{}{tail}", places.get(i)?))
    };
    match error {
        Error::InvalidInput { field, reason } => {
            let index = (prefix == "events").then(|| places.len().saturating_sub(1));
            Error::InvalidInput {
                field: relabel(&field, index).unwrap_or(field),
                reason,
            }
            .into()
        }
        Error::ImportConflict { index, reason } => match places.get(index) {
            Some(place) => Failure {
                code: 2,
                message: format!("incremental import conflict at {place}: {reason}"),
            },
            None => Error::ImportConflict { index, reason }.into(),
        },
        other => other.into(),
    }
}

async fn import_incremental(
    store: &Arc<dyn EventStore>,
    args: &ImportArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let (reader, size) = input(args.file.as_ref(), 0).await?;
    let bar = progress_bar(size, Unit::Bytes);
    let mut reader = interrupt.reader(reader, bar.clone());
    let mut lines = LineReader::new(&mut reader).accept_unterminated(true);
    let mut import = IncrementalImport::begin(store);
    // Where each staged event came from, for the errors of the commit.
    let mut places = Vec::new();
    let started = Instant::now();
    let nothing = "nothing was imported (an incremental import stores all its events or none): \
                   run it again";
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(e.into()),
        };
        // A signal cuts the input, maybe inside a line: that line is not an error.
        if interrupt.signal().is_some() {
            return Err(interrupted(interrupt.signal(), nothing.to_owned()));
        }
        let place = format!("line {} (byte offset {})", line.number, line.offset);
        let event = incoming_event(&place, line.bytes)?;
        places.push(place);
        import
            .push(vec![event])
            .map_err(|e| at_staged_line(e, "events", &places))?;
        if places.len() % 1024 == 0 {
            bar.set_message(rate(places.len() as u64, "events", started));
        }
    }
    drop(lines);
    if reader.was_cut() {
        return Err(interrupted(interrupt.signal(), nothing.to_owned()));
    }
    bar.set_message(format!("committing {} event(s)", places.len()));
    let outcome = interrupt.unless_abandoned(import.commit()).await;
    bar.finish_and_clear();
    let outcome = match outcome {
        Some(result) => result.map_err(|e| at_staged_line(e, "staged", &places))?,
        None => {
            return Err(abandoned(
                interrupt.signal(),
                "",
                "the commit may or may not be stored: run the import again (events already \
                 stored are skipped)",
            ))
        }
    };
    if args.json {
        let v = json!({
            "imported": outcome.imported,
            "skipped": outcome.skipped,
            "headPosition": outcome.head_position,
        });
        println!("{v}");
    } else {
        println!(
            "imported {} event(s) incrementally, skipped {} already stored; head position {}",
            outcome.imported, outcome.skipped, outcome.head_position
        );
    }
    Ok(())
}

/// `annals secrets export|import`.
pub(crate) async fn secrets(
    action: SecretsAction,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    match action {
        SecretsAction::Export {
            from_idx,
            output: path,
            append,
            maintenance_mode,
            json,
        } => {
            with_store(location, name, IfMissing::Fail, |store| async move {
                let before = store.describe().await?;
                let bar = progress_bar(
                    (from_idx == 0).then_some(before.secret_count),
                    Unit::Secrets,
                );
                let mut out = interrupt.writer(output(path.as_ref(), append).await?, bar.clone());
                let outcome = interrupt
                    .unless_abandoned(export_secrets(
                        &store,
                        &mut out,
                        from_idx,
                        maintenance_mode.into(),
                    ))
                    .await;
                bar.finish_and_clear();
                let to_stderr = path.is_none();
                let summary = |lines: u64,
                               tombstones: Option<u64>,
                               next: u64,
                               signal: Option<Signal>| {
                    if json {
                        let mut v =
                            json!({"secrets": lines, "tombstones": tombstones, "nextIdx": next});
                        if let (Some(s), Some(o)) = (signal, v.as_object_mut()) {
                            o.insert("interrupted".into(), s.name().into());
                        }
                        emit(to_stderr, &v.to_string());
                    }
                };
                match outcome {
                    Some(Ok(report)) => {
                        summary(report.lines, Some(report.tombstones), report.next_idx, None);
                        if !json {
                            eprintln!(
                                "annals: exported {} secret(s) ({} deleted); next idx {}",
                                report.lines, report.tombstones, report.next_idx
                            );
                        }
                        Ok(())
                    }
                    Some(Err(e)) => {
                        let flushed = out.flush().await;
                        // The last line written names the idx to go on from.
                        let next = serde_json::from_slice::<Value>(out.last_line())
                            .ok()
                            .and_then(|v| v["idx"].as_u64())
                            .map_or(from_idx, |idx| idx + 1);
                        if out.refused() && flushed.is_ok() {
                            summary(out.lines(), None, next, interrupt.signal());
                            return Err(interrupted(
                                interrupt.signal(),
                                format!(
                                    "exported {} secret(s); resume with --from-idx {next}{}",
                                    out.lines(),
                                    if path.is_some() { " --append" } else { "" }
                                ),
                            ));
                        }
                        Err(e.into())
                    }
                    None => {
                        let settled = settle(&store, maintenance_mode, before.frozen).await;
                        Err(abandoned(
                            interrupt.signal(),
                            &settled,
                            "the output may end in a partial line: resume with --from-idx one \
                             past the idx of its last complete line",
                        ))
                    }
                }
            })
            .await
        }
        SecretsAction::Import {
            file,
            from_offset,
            on_conflict,
            maintenance_mode,
            json,
        } => {
            with_store(location, name, IfMissing::Create, |store| async move {
                let frozen_before = frozen_by_someone_else(&store, maintenance_mode).await?;
                let (reader, size) = input(file.as_ref(), from_offset).await?;
                let bar = progress_bar(size, Unit::Bytes);
                bar.set_position(from_offset);
                let mut reader = interrupt.reader(reader, bar.clone());
                let options = SecretsImportOptions {
                    from_offset,
                    on_conflict: on_conflict.into(),
                    maintenance: maintenance_mode.into(),
                    ..SecretsImportOptions::default()
                };
                let outcome = interrupt
                    .unless_abandoned(import_secrets(&store, &mut reader, options))
                    .await;
                bar.finish_and_clear();
                let done = match outcome {
                    Some(Ok(done)) => done,
                    Some(Err(e)) => {
                        let stopped = e.progress;
                        let mut failure = Failure::from(Error::from(e));
                        failure.message = format!(
                            "{}; {} secret(s) imported before it; resume with --from-offset {}",
                            failure.message, stopped.imported, stopped.byte_offset
                        );
                        return Err(failure);
                    }
                    None => {
                        let settled = settle(&store, maintenance_mode, frozen_before).await;
                        return Err(abandoned(
                            interrupt.signal(),
                            &settled,
                            "the batch in flight may or may not be stored: import again with \
                             --on-conflict skip",
                        ));
                    }
                };
                let cut = reader.was_cut();
                let signal = if cut { interrupt.signal() } else { None };
                if json {
                    let mut v = json!({
                        "imported": done.imported,
                        "skipped": done.skipped,
                        "byteOffset": done.byte_offset,
                        "nextLine": done.next_line,
                        "unterminated": done.unterminated,
                        "end": !cut && done.unterminated == 0,
                    });
                    if let (Some(s), Some(o)) = (signal, v.as_object_mut()) {
                        o.insert("interrupted".into(), s.name().into());
                    }
                    println!("{v}");
                }
                if cut {
                    return Err(interrupted(
                        signal,
                        format!(
                            "imported {} secret(s), skipped {}; resume with --from-offset {}",
                            done.imported, done.skipped, done.byte_offset
                        ),
                    ));
                }
                if !json {
                    println!(
                        "imported {} secret(s), skipped {}; byte offset {}",
                        done.imported, done.skipped, done.byte_offset
                    );
                }
                Ok(())
            })
            .await
        }
    }
}

/// A `LOCATION[#STORE]` of `copy`.
async fn open_spec(
    spec: &str,
    default_store: &str,
    token: Option<&str>,
    if_missing: IfMissing,
) -> Result<Arc<dyn EventStore>, Failure> {
    let (location, name) = match spec.rsplit_once('#') {
        Some((l, n)) if !n.is_empty() => (l, n),
        _ => (spec, default_store),
    };
    Location::parse(location, token)
        .open(name, if_missing)
        .await
}

fn checksum_json(c: &Checksum) -> Value {
    json!({
        "events": c.events,
        "eventsSha256": c.events_sha256,
        "secrets": c.secrets,
        "secretsSha256": c.secrets_sha256,
        "keyedSnapshots": c.keyed_snapshots,
        "keyedSnapshotsSha256": c.keyed_snapshots_sha256,
        "streamSnapshots": c.stream_snapshots,
        "streamSnapshotsSha256": c.stream_snapshots_sha256,
    })
}

/// `annals copy`.
pub(crate) async fn copy(
    args: CopyArgs,
    default_store: &str,
    token: Option<&str>,
) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    let from = open_spec(&args.from, default_store, token, IfMissing::Fail).await?;
    let to = match open_spec(&args.to, default_store, token, IfMissing::Create).await {
        Ok(to) => to,
        Err(e) => {
            let _ = from.close().await;
            return Err(e);
        }
    };
    let result = copy_between(&from, &to, &args, &interrupt).await;
    let _ = from.close().await;
    let _ = to.close().await;
    result
}

async fn copy_between(
    from: &Arc<dyn EventStore>,
    to: &Arc<dyn EventStore>,
    args: &CopyArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let before = from.describe().await?;
    let bar = progress_bar(Some(before.event_count), Unit::Events);
    let options = CopyOptions {
        maintenance: args.maintenance_mode.into(),
        batch_size: args.batch_size,
        ..CopyOptions::default()
    };
    let mut copied = 0;
    // A copy cannot resume (its target must be empty), so it has no safe point to stop
    // at: the first signal abandons it.
    let outcome = tokio::select! {
        r = copy_with_progress(from, to, options, |n| {
            copied = n;
            bar.set_position(n);
        }) => Some(r),
        () = interrupt.requested() => None,
    };
    bar.finish_and_clear();
    let Some(result) = outcome else {
        let settled = settle(from, args.maintenance_mode, before.frozen).await;
        return Err(interrupted(
            interrupt.signal(),
            format!(
                "the copy stopped after {copied} event(s){settled}; the target holds a partial \
                 copy: empty it (or pick a new one) and copy again"
            ),
        ));
    };
    let report = result?;
    if args.json {
        let v = json!({
            "events": report.events,
            "streamSnapshots": report.stream_snapshots,
            "keyedSnapshots": report.keyed_snapshots,
            "secrets": report.secrets,
            "verified": report.verified(),
            "source": checksum_json(&report.source),
            "target": checksum_json(&report.target),
        });
        println!("{v}");
    } else {
        println!(
            "copied {} event(s), {} stream snapshot(s), {} keyed snapshot(s), {} secret(s)",
            report.events, report.stream_snapshots, report.keyed_snapshots, report.secrets
        );
        println!("source: {}", report.source);
        println!("target: {}", report.target);
        println!("verified: {}", if report.verified() { "yes" } else { "NO" });
    }
    Ok(())
}
