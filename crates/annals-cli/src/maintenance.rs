//! The data-maintenance verbs: `export`, `import` (also `--incremental`), `secrets
//! export|import` and `copy`, over a server (`--url`), a data directory opened directly
//! (`--data DIR`, the store `DIR/<--store>`) or a PostgreSQL database (`--postgres URL`).
//! On a terminal they draw a progress bar on standard error; piped, they draw none.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use tokio::io::{AsyncSeekExt, AsyncWrite, BufReader};

use annals_core::{Cursor, Error, EventStore, Json, OnConflict, StreamId, Timestamp};
use annals_maintenance::{
    copy_with_progress, export_events, export_secrets, import_events, import_secrets,
    incremental_import, CopyOptions, ExportOptions, ImportOptions, IncomingEvent, MaintenanceMode,
    SecretsImportOptions,
};

use crate::Failure;

/// Where the store of a maintenance verb is: the global `--url`/`--store`/`--token`, or
/// one of the direct openings below.
#[derive(Args, Clone)]
pub(crate) struct StoreArgs {
    /// Open the store directly in this data directory (the store is `DIR/<--store>`, as
    /// `annals serve --data DIR` keeps it; stop a server using it first) instead of
    /// talking to a server.
    #[arg(long, value_name = "DIR", conflicts_with = "postgres")]
    data: Option<PathBuf>,
    /// Open the store directly in this PostgreSQL database instead of talking to a server.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// The schema holding the stores with `--postgres`.
    #[arg(long, default_value = "annals")]
    postgres_schema: String,
}

/// The global connection options of the command line.
pub(crate) struct Remote<'a> {
    pub(crate) url: &'a str,
    pub(crate) store: &'a str,
    pub(crate) token: Option<&'a str>,
}

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
    #[command(flatten)]
    store: StoreArgs,
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
    #[command(flatten)]
    store: StoreArgs,
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
        #[command(flatten)]
        store: StoreArgs,
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
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// `annals copy`.
#[derive(Args)]
pub(crate) struct CopyArgs {
    /// The source: `LOCATION[#STORE]`, where LOCATION is a server URL (`http://…`), a
    /// PostgreSQL URL (`postgres://…`) or a data directory; STORE defaults to `--store`.
    #[arg(long)]
    from: String,
    /// The target (same form); must be empty.
    #[arg(long)]
    to: String,
    /// `auto` freezes the source during the copy.
    #[arg(long, value_enum, default_value = "manual")]
    maintenance_mode: Mode,
    /// Events per batch.
    #[arg(long, default_value_t = 10_000)]
    batch_size: u64,
}

/// Opens the store the arguments name.
async fn open(store: &StoreArgs, remote: &Remote<'_>) -> Result<Arc<dyn EventStore>, Failure> {
    if let Some(dir) = &store.data {
        return open_location(
            &dir.display().to_string(),
            remote.store,
            remote,
            &store.postgres_schema,
        )
        .await;
    }
    if let Some(url) = &store.postgres {
        return open_location(url, remote.store, remote, &store.postgres_schema).await;
    }
    open_location(remote.url, remote.store, remote, &store.postgres_schema).await
}

async fn open_location(
    location: &str,
    name: &str,
    remote: &Remote<'_>,
    schema: &str,
) -> Result<Arc<dyn EventStore>, Failure> {
    if location.starts_with("http://") || location.starts_with("https://") {
        let mut store = annals_client::HttpStore::new(location, name)?;
        if let Some(token) = remote.token {
            store = store.with_token(token.to_owned());
        }
        return Ok(Arc::new(store));
    }
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        let options = annals_postgres::PostgresOptions {
            schema: schema.to_owned(),
            ..annals_postgres::PostgresOptions::default()
        };
        let db = annals_postgres::PostgresDatabase::connect(location, options).await?;
        return Ok(Arc::new(db.open_store(name).await?));
    }
    let dir = PathBuf::from(location).join(name);
    Ok(Arc::new(annals_embedded::EmbeddedStore::open(dir)?))
}

/// A `LOCATION[#STORE]` of `copy`.
async fn open_spec(spec: &str, remote: &Remote<'_>) -> Result<Arc<dyn EventStore>, Failure> {
    let (location, name) = match spec.rsplit_once('#') {
        Some((l, n)) if !n.is_empty() => (l, n),
        _ => (spec, remote.store),
    };
    open_location(location, name, remote, "annals").await
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
pub(crate) async fn export(args: ExportArgs, remote: &Remote<'_>) -> Result<(), Failure> {
    let store = open(&args.store, remote).await?;
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
    let report = result?;
    let _ = store.close().await;
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
pub(crate) async fn import(args: ImportArgs, remote: &Remote<'_>) -> Result<(), Failure> {
    let store = open(&args.store, remote).await?;
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
    let result = import_events(&store, reader, options, |p| {
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
            let stopped = e.progress;
            let mut failure = Failure::from(Error::from(e));
            failure.message = format!(
                "{}\nannals: {} event(s) imported before it; resume with --from-offset {}",
                failure.message, stopped.imported, stopped.byte_offset
            );
            Err(failure)
        }
    }
}

/// One line of an incremental import.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingLine {
    id: Option<String>,
    aggregate_id: String,
    aggregate: Option<String>,
    context: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    timestamp: Option<Timestamp>,
    payload: Option<Json>,
    metadata: Option<Json>,
}

async fn import_incremental(
    store: &Arc<dyn EventStore>,
    file: Option<&PathBuf>,
) -> Result<(), Failure> {
    let (reader, _) = input(file, 0).await?;
    let mut lines = annals_core::ndjson::LineReader::new(reader).accept_unterminated(true);
    let mut events = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let parsed: IncomingLine = serde_json::from_slice(line.bytes).map_err(|e| {
            Failure::from(Error::invalid(
                format!("line {} (byte offset {})", line.number, line.offset),
                e.to_string(),
            ))
        })?;
        events.push(IncomingEvent {
            id: parsed.id,
            stream: StreamId {
                context: parsed.context.unwrap_or_default(),
                aggregate: parsed.aggregate.unwrap_or_default(),
                id: parsed.aggregate_id,
            },
            event_type: parsed.event_type.unwrap_or_default(),
            timestamp: parsed.timestamp,
            payload: parsed.payload.unwrap_or_default(),
            metadata: parsed.metadata.unwrap_or_default(),
        });
    }
    let outcome = incremental_import(store, events).await;
    let _ = store.close().await;
    let outcome = outcome?;
    println!(
        "imported {} event(s) incrementally, skipped {} already stored; head position {}",
        outcome.imported, outcome.skipped, outcome.head_position
    );
    Ok(())
}

/// `annals secrets export|import`.
pub(crate) async fn secrets(action: SecretsAction, remote: &Remote<'_>) -> Result<(), Failure> {
    match action {
        SecretsAction::Export {
            from_idx,
            output: path,
            maintenance_mode,
            store,
        } => {
            let store = open(&store, remote).await?;
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
            store,
        } => {
            let store = open(&store, remote).await?;
            let (reader, _) = input(file.as_ref(), from_offset).await?;
            let options = SecretsImportOptions {
                from_offset,
                on_conflict: on_conflict.into(),
                maintenance: maintenance_mode.into(),
                ..SecretsImportOptions::default()
            };
            let done = import_secrets(&store, reader, options).await;
            let _ = store.close().await;
            let done = done.map_err(Error::from)?;
            println!(
                "imported {} secret(s), skipped {}; byte offset {}",
                done.imported, done.skipped, done.byte_offset
            );
        }
    }
    Ok(())
}

/// `annals copy`.
pub(crate) async fn copy(args: CopyArgs, remote: &Remote<'_>) -> Result<(), Failure> {
    let from = open_spec(&args.from, remote).await?;
    let to = open_spec(&args.to, remote).await?;
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
