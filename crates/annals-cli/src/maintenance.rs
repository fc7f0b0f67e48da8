//! The data-maintenance verbs: `export`, `import` (also `--incremental`), `secrets
//! export|import` and `copy`, on any [`Location`].
//! On a terminal they draw a progress bar on standard error; piped, they draw none.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncSeekExt, AsyncWrite, BufReader};

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;

use annals_core::{Cursor, Error, EventStore, OnConflict, StreamId};
use annals_maintenance::{
    copy_with_progress, export_events, export_secrets, import_events, import_secrets, CopyOptions,
    ExportOptions, ImportOptions, ImportProgress, IncomingEvent, IncrementalImport,
    MaintenanceMode, SecretsImportOptions,
};

use crate::fields::EventFields;
use crate::location::{IfMissing, Location};
use crate::Failure;

/// `auto` or `manual` on the command line.
#[derive(Clone, Copy, ValueEnum)]
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
        /// `auto` freezes the store during the export.
        #[arg(long, value_enum, default_value = "manual")]
        maintenance_mode: Mode,
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

/// A progress bar on standard error when it is a terminal; hidden otherwise.
fn progress_bar(total: Option<u64>, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = match (total, unit) {
        (Some(_), "bytes") => "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        (Some(_), _) => "{bar:40} {pos}/{len} events, {per_sec} ({eta} left)",
        (None, _) => "{spinner} {pos} events, {per_sec} {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn io(what: &str, e: std::io::Error) -> Failure {
    Failure::usage(format!("{what}: {e}"))
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

/// `annals export`.
pub(crate) async fn export(
    args: ExportArgs,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    let store = location.open(name, IfMissing::Fail).await?;
    let after = match (&args.cursor, args.after) {
        (Some(c), _) => c.parse::<Cursor>()?.position(),
        (None, a) => a.unwrap_or(0),
    };
    let head = store.describe().await?.head_position;
    let total = head.saturating_sub(after);
    let bar = progress_bar(Some(args.limit.map_or(total, |l| l.min(total))), "events");
    let mut out = output(args.output.as_ref(), args.append).await?;
    let options = ExportOptions {
        after,
        limit: args.limit,
        maintenance: args.maintenance_mode.into(),
        ..ExportOptions::default()
    };
    let result = export_events(&store, &mut out, options, |r| bar.set_position(r.lines)).await;
    bar.finish_and_clear();
    let _ = store.close().await;
    let report = result?;
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
    Ok(())
}

/// `annals import`.
pub(crate) async fn import(
    args: ImportArgs,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    let store = location.open(name, IfMissing::Create).await?;
    if args.incremental {
        return import_incremental(&store, args.file.as_ref()).await;
    }
    let (reader, size) = input(args.file.as_ref(), args.from_offset).await?;
    let bar = progress_bar(size, "bytes");
    bar.set_position(args.from_offset);
    let options = ImportOptions {
        from_offset: args.from_offset,
        batch_size: args.batch_size,
        on_conflict: args.on_conflict.into(),
        maintenance: args.maintenance_mode.into(),
        ..ImportOptions::default()
    };
    let started = std::time::Instant::now();
    let mut last = ImportProgress {
        byte_offset: args.from_offset,
        ..ImportProgress::default()
    };
    let result = import_events(&store, reader, options, |p| {
        last = *p;
        bar.set_position(p.byte_offset);
        let rate = p.imported as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{} events, {rate:.0} events/s", p.imported));
    })
    .await;
    bar.finish_and_clear();
    let _ = store.close().await;
    match result {
        Ok(done) => {
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
            Ok(())
        }
        Err(e) => {
            let mut failure = Failure::from(name_the_field(e, args.file.as_ref()));
            failure.message = format!(
                "{}; {} event(s) imported before it; resume with --from-offset {}",
                failure.message, last.imported, last.byte_offset
            );
            Err(failure)
        }
    }
}

/// An input line the NDJSON decoder refused as a whole (`line N (byte offset B)`, with
/// serde_json's "… at line 1 column C") becomes an error naming the field whose value
/// sits at that column, found by reading the line again: `line N (byte offset
/// B).version: invalid type: …`. Only for a file (standard input cannot be read twice);
/// any other error is returned as it is.
fn name_the_field(error: Error, file: Option<&PathBuf>) -> Error {
    let named = || -> Option<Error> {
        let Error::InvalidInput { field, reason } = &error else {
            return None;
        };
        let path = file.filter(|p| p.as_os_str() != "-")?;
        let offset: u64 = field
            .strip_prefix("line ")?
            .split_once(" (byte offset ")?
            .1
            .strip_suffix(')')?
            .parse()
            .ok()?;
        let (message, column) = reason.rsplit_once(" at line 1 column ")?;
        let column: usize = column.parse().ok()?;
        let mut file = std::fs::File::open(path).ok()?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).ok()?;
        let mut line = Vec::new();
        // A line longer than the decoder's limit was refused for its length, not a field.
        std::io::BufRead::read_until(
            &mut std::io::BufReader::new(std::io::Read::take(file, 1 << 26)),
            b'\n',
            &mut line,
        )
        .ok()?;
        let text = std::str::from_utf8(&line).ok()?;
        let fields: HashMap<String, &RawValue> = serde_json::from_str(text).ok()?;
        // serde_json's column is the byte (from 1) where it stopped, inside or just
        // after the bad value.
        let at = column.checked_sub(1)?;
        let base = text.as_ptr() as usize;
        let (name, _) = fields.iter().find(|(_, raw)| {
            let start = raw.get().as_ptr() as usize - base;
            start <= at && at <= start + raw.get().len()
        })?;
        Some(Error::invalid(format!("{field}.{name}"), message))
    };
    named().unwrap_or(error)
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
    file: Option<&PathBuf>,
) -> Result<(), Failure> {
    let (reader, _) = input(file, 0).await?;
    let mut lines = annals_core::ndjson::LineReader::new(reader).accept_unterminated(true);
    let mut import = IncrementalImport::begin(store);
    // Where each staged event came from, for the errors of the commit.
    let mut places = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let place = format!("line {} (byte offset {})", line.number, line.offset);
        let event = incoming_event(&place, line.bytes)?;
        places.push(place);
        import
            .push(vec![event])
            .map_err(|e| at_staged_line(e, "events", &places))?;
    }
    let outcome = import.commit().await;
    let _ = store.close().await;
    let outcome = outcome.map_err(|e| at_staged_line(e, "staged", &places))?;
    println!(
        "imported {} event(s) incrementally, skipped {} already stored; head position {}",
        outcome.imported, outcome.skipped, outcome.head_position
    );
    Ok(())
}

/// `annals secrets export|import`.
pub(crate) async fn secrets(
    action: SecretsAction,
    location: &Location,
    name: &str,
) -> Result<(), Failure> {
    match action {
        SecretsAction::Export {
            from_idx,
            output: path,
            maintenance_mode,
        } => {
            let store = location.open(name, IfMissing::Fail).await?;
            let mut out = output(path.as_ref(), false).await?;
            let report = export_secrets(&store, &mut out, from_idx, maintenance_mode.into()).await;
            let _ = store.close().await;
            let report = report?;
            eprintln!(
                "annals: exported {} secret(s) ({} deleted); next idx {}",
                report.lines, report.tombstones, report.next_idx
            );
        }
        SecretsAction::Import {
            file,
            from_offset,
            on_conflict,
            maintenance_mode,
        } => {
            let store = location.open(name, IfMissing::Create).await?;
            let (reader, _) = input(file.as_ref(), from_offset).await?;
            let options = SecretsImportOptions {
                from_offset,
                on_conflict: on_conflict.into(),
                maintenance: maintenance_mode.into(),
                ..SecretsImportOptions::default()
            };
            let done = import_secrets(&store, reader, options).await;
            let _ = store.close().await;
            let done = done.map_err(|e| name_the_field(e, file.as_ref()))?;
            println!(
                "imported {} secret(s), skipped {}; byte offset {}",
                done.imported, done.skipped, done.byte_offset
            );
        }
    }
    Ok(())
}

/// `annals copy`.
pub(crate) async fn copy(
    args: CopyArgs,
    default_store: &str,
    token: Option<&str>,
) -> Result<(), Failure> {
    let from = open_spec(&args.from, default_store, token, IfMissing::Fail).await?;
    let to = match open_spec(&args.to, default_store, token, IfMissing::Create).await {
        Ok(to) => to,
        Err(e) => {
            let _ = from.close().await;
            return Err(e);
        }
    };
    let total = from.describe().await?.event_count;
    let bar = progress_bar(Some(total), "events");
    let options = CopyOptions {
        maintenance: args.maintenance_mode.into(),
        batch_size: args.batch_size,
        ..CopyOptions::default()
    };
    let result = copy_with_progress(&from, &to, options, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let _ = from.close().await;
    let _ = to.close().await;
    let report = result?;
    println!(
        "copied {} event(s), {} stream snapshot(s), {} keyed snapshot(s), {} secret(s)",
        report.events, report.stream_snapshots, report.keyed_snapshots, report.secrets
    );
    println!("source: {}", report.source);
    println!("target: {}", report.target);
    println!("verified: {}", if report.verified() { "yes" } else { "NO" });
    Ok(())
}
