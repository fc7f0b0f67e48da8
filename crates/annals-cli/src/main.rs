//! # annals
//!
//! The command line of Annals: `annals serve` runs the HTTP server on a data directory
//! (or, with `--postgres URL`, on a PostgreSQL database); every other verb works on one
//! store (`--store`, default `default`), which it reaches in one of three ways:
//!
//! - through a server: `--url` (default `http://127.0.0.1:2113`, or `ANNALS_URL`), with
//!   `--token` or `ANNALS_TOKEN` for a server started with `--token-file`;
//! - in a data directory opened directly: `--data DIR` (the store is `DIR/<store>`, as
//!   `annals serve --data DIR` keeps it; a directory is open in one process at a time,
//!   so stop a server using it first);
//! - in a PostgreSQL database opened directly: `--postgres URL` (stores in the schema
//!   `--postgres-schema`, default `annals`).
//!
//! Giving two of `--url`, `--data` and `--postgres` is a usage error (`ANNALS_URL` in the
//! environment gives way to `--data` or `--postgres`). Opened directly, a store that
//! does not exist is "not found" (exit 2), as a server answers, except for `create` and
//! for the verbs that fill a store (`import`, `secrets import`, the target of `copy`).
//!
//! ```text
//! annals serve --data ./annals-data
//! annals serve --postgres postgres://postgres@127.0.0.1:5432/test
//! annals create
//! annals append '{"aggregateId": "acc-1", "type": "Opened", "payload": {"owner": "ann"}}'
//! annals read --json
//! annals tail
//! annals describe --data ./annals-data            # the store ./annals-data/default
//! annals read --postgres postgres://postgres@127.0.0.1:5432/test --store orders
//! annals export > events.ndjson
//! annals import events.ndjson [--from-offset B]; annals import --incremental new.ndjson
//! annals secrets export|import; annals copy --from ./annals-data#a --to postgres://…#b
//! annals streams; annals describe; annals freeze; annals unfreeze
//! annals snapshot ls [--start-after K --limit N]; annals snapshot get|put|rm KEY
//! annals secret get|set|rm ID; annals secret set ID VALUE --events FILE|-
//! annals append --overwrite '{"aggregateId": "acc-1", "version": 1, "type": "Opened"}'
//! annals publish --channel nats://127.0.0.1:4222 --topic orders   # the outbox relay
//! annals pour all --channel nats://127.0.0.1:4222 --rate 200     # a replay
//! ```
//!
//! ## Output
//!
//! Output is human-readable by default; `--json` prints one JSON object per line, with
//! these fields (camelCase, stable):
//!
//! - `append`, `read`, `tail`: one line per event, the event as API.md writes it
//!   (`position`, `id`, `aggregateId`, `aggregate`, `context`, `version`, `type`,
//!   `timestamp`, `payload`, `metadata`, `commitId`, `commitSequence`, `dispatched`).
//! - `streams`: `aggregateId`, `aggregate`, `context`, `version`, `firstTimestamp`,
//!   `firstPosition`, `lastPosition`.
//! - `describe`: `store`, `eventCount`, `streamCount`, `headPosition`,
//!   `lastEventTimestamp`, `frozen`, `secretCount`, `setSecretCount`,
//!   `deletedSecretCount`.
//! - `create`: `store`, `created` (true). `freeze`, `unfreeze`: `store`, `frozen`.
//! - `snapshot ls`, `snapshot get`: `key`, `content`, `timestamp`. `snapshot put`: `key`,
//!   `saved` (true). `snapshot rm`: `key`, `deleted` (true).
//! - `secret get`: `idx`, `id`, `secret` (null once erased). `secret set`: `idx`, `id`,
//!   and with `--events` also `eventCount`, `commitId`, `headPosition`. `secret rm`:
//!   `id`, `deleted` (true).
//! - `export`: `events`, `bytes`, `cursor`, `position`, `end`, `headPosition` (on
//!   standard output with `--output`, else on standard error after the events).
//! - `import`: `imported`, `skipped`, `byteOffset`, `nextLine`, `unterminated`,
//!   `headPosition`, `end`; `import --incremental`: `imported`, `skipped`,
//!   `headPosition`.
//! - `secrets export`: `secrets`, `tombstones`, `nextIdx` (placed as for `export`).
//!   `secrets import`: `imported`, `skipped`, `byteOffset`, `nextLine`, `unterminated`,
//!   `end`.
//! - `copy`: `events`, `streamSnapshots`, `keyedSnapshots`, `secrets`, `verified`,
//!   `source` and `target` (checksums: `events`, `eventsSha256`, `secrets`,
//!   `secretsSha256`, `keyedSnapshots`, `keyedSnapshotsSha256`, `streamSnapshots`,
//!   `streamSnapshotsSha256`).
//! - `pour`: see `annals pour --help`.
//!
//! The summaries of `export`, `import` and `secrets` stopped by a signal also carry
//! `interrupted` (`"SIGINT"` or `"SIGTERM"`). Long operations draw a progress bar on
//! standard error when it is a terminal, none when it is piped.
//!
//! ## Errors and signals
//!
//! A failure prints one line on standard error, `annals: <what was wrong>`, naming the
//! field (and for input files the line and byte offset). SIGINT (Ctrl-C) or SIGTERM
//! stops `export`, `import`, `secrets export|import`, `copy` and `pour` cleanly: a store
//! frozen by `--maintenance-mode auto` is unfrozen, and the message says where to resume
//! (`--cursor`, `--from-offset`, `--from-idx`, `--resume`); a second signal abandons the
//! operation at once (still unfreezing the store). `tail` ends on either signal with
//! exit code 0.
//!
//! Exit codes: 0 success; 1 usage or invalid input; 2 not found or conflict (unknown
//! store or event, version conflict, duplicate id, frozen store, already (un)frozen,
//! store already exists, incremental import conflict); 3 the server cannot be reached;
//! 4 any other failure; 130 interrupted by SIGINT; 143 interrupted by SIGTERM.

/// mimalloc rather than the system allocator: the server, the embedded writer and the
/// HTTP client allocate per request, per event and per commit from several threads, where
/// glibc's allocator spent a fifth of the CPU (consolidating and growing per-thread
/// arenas). Measured with annals-bench on 2 cores: w2 embedded 37–52k → 55–72k events/s,
/// w2 over HTTP 17–25k → 23–30k.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod fields;
mod interrupt;
mod location;
mod maintenance;
mod pour;
mod publish;

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use futures::StreamExt;
use serde_json::Value;

use annals_client::{ConnectionError, RemoteError};
use annals_core::{
    AppendRequest, Direction, Error, ErrorKind, EventFilter, EventStore, ExpectedVersion,
    ListStreams, ProposedEvent, ReadAll, ReadFrom, RecordedEvent, SecretChange, SnapshotKeyQuery,
    StreamId, StreamWrite, Subscribe,
};
use annals_server::{Server, ServerConfig};

use crate::fields::EventFields;
use crate::interrupt::Interrupt;
use crate::location::{IfMissing, Location, DEFAULT_SCHEMA};

/// The store the CLI uses without `--store`; `annals serve` creates it.
const DEFAULT_STORE: &str = "default";

const EXIT_HELP: &str = "Where the store is: --url (a server; the default), --data DIR or
--postgres URL (opened directly, in this process); one of them.

--json prints one JSON object per line; the fields of each verb are listed in its
--help and in the crate documentation.

Errors are one line on standard error. SIGINT (Ctrl-C) or SIGTERM stops export,
import, secrets, copy and pour cleanly (a store frozen by --maintenance-mode auto is
unfrozen) and says where to resume; a second signal abandons the operation at once.

Exit codes:
  0    success (also tail ended by SIGINT or SIGTERM)
  1    usage error or invalid input
  2    not found or conflict (unknown store or event, version conflict, duplicate id,
       frozen store, already frozen / not frozen, store already exists, incremental
       import conflict)
  3    the server cannot be reached
  4    any other failure
  130  interrupted by SIGINT: stopped cleanly, the message says where to resume
  143  interrupted by SIGTERM: the same";

/// Annals event store: run the server, or work on a store through one or directly.
#[derive(Parser)]
#[command(name = "annals", version, after_help = EXIT_HELP)]
struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:2113",
        env = "ANNALS_URL"
    )]
    url: String,
    /// The store to use.
    #[arg(long, global = true, default_value = DEFAULT_STORE, env = "ANNALS_STORE")]
    store: String,
    /// The bearer token for a server started with a token file.
    #[arg(long, global = true, env = "ANNALS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Open the store directly in this data directory instead of talking to a server:
    /// the store is `DIR/<--store>`, as `annals serve --data DIR` keeps it (stop a
    /// server using it first). With `serve`: the directory to serve (default
    /// `./annals-data`).
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Open the store directly in this PostgreSQL database
    /// (`postgres://user@host:port/db`) instead of talking to a server. With `serve`:
    /// serve its stores instead of a data directory.
    #[arg(long, global = true, value_name = "URL")]
    postgres: Option<String>,
    /// The schema holding the stores with `--postgres` (created when missing).
    #[arg(long, global = true, value_name = "SCHEMA", default_value = DEFAULT_SCHEMA)]
    postgres_schema: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server on a data directory (`--data`, one subdirectory per store) or
    /// a PostgreSQL database (`--postgres`, each store a row of `--postgres-schema`);
    /// creates the store `default` if it is missing.
    Serve {
        /// The address to listen on (loopback only, unless a token file is given).
        #[arg(long, default_value = annals_server::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Bearer tokens, one `<token> read-write|read-only` per line; every `/v1`
        /// request then needs one.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How many events a live subscriber may fall behind the store head (counting
        /// events committed since it connected) before the server closes its stream
        /// with `event: lagged`; the client then resumes from its last id.
        #[arg(long, default_value_t = annals_server::DEFAULT_MAX_SUBSCRIBER_LAG)]
        max_subscriber_lag: u64,
        /// The largest request body accepted, in bytes (413 `limit_exceeded` naming
        /// `maxBodyBytes` beyond it); NDJSON imports are streamed and not bound by it.
        #[arg(long, default_value_t = annals_server::DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
    },
    /// Create the store.
    Create {
        /// Print {"store", "created"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Append events: a JSON event, an array of events or `{"events": [...]}` (API.md
    /// form, each with `aggregateId`), from the argument or from standard input.
    Append {
        /// The events; `-` or absent reads standard input.
        events: Option<String>,
        /// Only append if the stream is at this version (0 = must not exist; `any`,
        /// `exists`); needs every event in one stream.
        #[arg(long)]
        expected_version: Option<String>,
        /// The commit id shared by the events.
        #[arg(long)]
        commit_id: Option<String>,
        /// Replace in place: an event whose `version` is already stored replaces the
        /// stored event (keeping its position); the others are appended.
        #[arg(long)]
        overwrite: bool,
        /// Print the stored events as JSON lines (the fields of `read --json`).
        #[arg(long)]
        json: bool,
    },
    /// Read events in position order.
    Read {
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this position.
        #[arg(long)]
        after: Option<u64>,
        /// At most this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write every event (after `--after` or `--cursor`) as NDJSON, one event per line, in
    /// position order; resumable with the cursor it prints.
    Export(maintenance::ExportArgs),
    /// Read NDJSON events (as exported) into the store in batches; resumable with
    /// `--from-offset`; `--incremental` appends new events after the newest stored one.
    Import(maintenance::ImportArgs),
    /// Export or import secrets as NDJSON (with their idx and deleted ones).
    Secrets {
        #[command(subcommand)]
        action: maintenance::SecretsAction,
    },
    /// Copy a whole store to an empty one (any backend to any backend), then verify
    /// counts and content checksums.
    Copy(maintenance::CopyArgs),
    /// Re-publish past events into a message channel (replay): the ids of the store's
    /// streams, one stream's events, every event of the store, or several stores merged.
    Pour(pour::PourArgs),
    /// The outbox relay: deliver the undispatched events, then every new commit, to a
    /// message channel, marking each batch dispatched once the channel accepted it;
    /// runs until Ctrl-C or SIGTERM, or with `--until-idle` until none is left.
    Publish(publish::PublishArgs),
    /// Follow new events live (from the current head, or after `--after`); ends on
    /// Ctrl-C or SIGTERM (exit code 0). On a store opened directly it follows the
    /// store's own subscription (with `--data`, only this process can write to it).
    Tail {
        #[command(flatten)]
        filter: FilterArgs,
        /// Start after this position (0 = every stored event first).
        #[arg(long)]
        after: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List streams ordered by their first event.
    Streams {
        /// Only this context.
        #[arg(long)]
        context: Option<String>,
        /// Only this aggregate.
        #[arg(long)]
        aggregate: Option<String>,
        /// At most this many streams.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the store's counts, head position and freeze flag.
    Describe {
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Refuse writes to the store.
    Freeze {
        /// Print {"store", "frozen"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accept writes to the store again.
    Unfreeze {
        /// Print {"store", "frozen"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Keyed snapshots: ls, get, put, rm.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Secrets (crypto-shredding keys): get, set, rm.
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// List the keys of keyed snapshots in bytewise order, a page at a time.
    Ls {
        /// Only keys after this one (the last key of the previous page).
        #[arg(long)]
        start_after: Option<String>,
        /// At most this many keys (all when absent).
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line, with the content and timestamp.
        #[arg(long)]
        json: bool,
    },
    /// Print a keyed snapshot's content.
    Get {
        /// The key.
        key: String,
        /// As one JSON object with the key and timestamp.
        #[arg(long)]
        json: bool,
    },
    /// Save a keyed snapshot (replacing any under the key).
    Put {
        /// The key.
        key: String,
        /// The content; `-` or absent reads standard input.
        content: Option<String>,
        /// Print {"key", "saved"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete a keyed snapshot.
    Rm {
        /// The key.
        key: String,
        /// Print {"key", "deleted"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SecretAction {
    /// Print a secret (`(deleted)` once erased).
    Get {
        /// The secret's id.
        id: String,
        /// As one JSON object with the id and idx.
        #[arg(long)]
        json: bool,
    },
    /// Store a secret under a new id (ids are never reused), optionally with events
    /// appended in the same commit.
    Set {
        /// The secret's id.
        id: String,
        /// The secret; `-` or absent reads standard input.
        secret: Option<String>,
        /// Events to append atomically with the secret (the `append` forms), from this
        /// file or, with `-`, from standard input.
        #[arg(long, value_name = "FILE|-")]
        events: Option<String>,
        /// Print {"idx", "id"} as one JSON object (with `--events` also "eventCount",
        /// "commitId", "headPosition").
        #[arg(long)]
        json: bool,
    },
    /// Erase a secret for good (its id stays used).
    Rm {
        /// The secret's id.
        id: String,
        /// Print {"id", "deleted"} as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The argument, or standard input when it is absent or `-`.
fn argument_or_stdin(arg: Option<String>) -> Result<String, Failure> {
    match arg.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
            Ok(s)
        }
        Some(s) => Ok(s.to_owned()),
    }
}

#[derive(Args)]
struct FilterArgs {
    /// Only these aggregate ids (repeatable).
    #[arg(long = "aggregate-id")]
    aggregate_ids: Vec<String>,
    /// Only this aggregate.
    #[arg(long)]
    aggregate: Option<String>,
    /// Only this context.
    #[arg(long)]
    context: Option<String>,
    /// Only these event types (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> EventFilter {
        EventFilter {
            context: self.context.clone(),
            aggregate: self.aggregate.clone(),
            aggregate_ids: self.aggregate_ids.clone(),
            event_types: self.types.clone(),
            ..EventFilter::default()
        }
    }
}

/// A failure and the exit code it gets.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidInput => 1,
            ErrorKind::NotFound
            | ErrorKind::WrongExpectedVersion
            | ErrorKind::VersionConflict
            | ErrorKind::DuplicateEventId
            | ErrorKind::Frozen
            | ErrorKind::AlreadyFrozen
            | ErrorKind::NotFrozen
            | ErrorKind::SecretAlreadyExists
            | ErrorKind::ImportConflict
            | ErrorKind::WrongExpectedHead => 2,
            _ => match &e {
                Error::Backend { source, .. } => {
                    let source: &(dyn std::error::Error + 'static) = &**source;
                    if source.downcast_ref::<ConnectionError>().is_some() {
                        3
                    } else if source
                        .downcast_ref::<RemoteError>()
                        .is_some_and(|r| r.status == 409 || r.status == 404)
                    {
                        2
                    } else {
                        4
                    }
                }
                _ => 4,
            },
        };
        let message = if code == 3 {
            format!("cannot reach the server: {e}")
        } else {
            e.to_string()
        };
        Failure { code, message }
    }
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_exit(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    let given = Given {
        url: on_command_line(&matches, "url"),
        postgres_schema: on_command_line(&matches, "postgres_schema"),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("annals: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    let outcome = runtime.block_on(run(cli, given));
    // Not waiting for a read of standard input that will never end (tokio reads it on
    // a blocking thread, which an interrupted import leaves behind).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("annals: {}", one_line(&f.message));
            ExitCode::from(f.code)
        }
    }
}

fn usage_exit(e: &clap::Error) -> ExitCode {
    let code = if e.use_stderr() { 1 } else { 0 };
    let _ = e.print();
    ExitCode::from(code)
}

/// Which options were typed on the command line (not taken from the environment or a
/// default): what the location checks need.
struct Given {
    url: bool,
    postgres_schema: bool,
}

/// Whether the argument `id` was given on the command line, at any subcommand level
/// (a global option may follow the subcommand).
fn on_command_line(matches: &clap::ArgMatches, id: &str) -> bool {
    let mut level = Some(matches);
    while let Some(m) = level {
        if m.try_contains_id(id).unwrap_or(false)
            && m.value_source(id) == Some(ValueSource::CommandLine)
        {
            return true;
        }
        level = m.subcommand().map(|(_, sub)| sub);
    }
    false
}

/// The one location the options name; two are a usage error.
fn location(cli: &Cli, given: &Given) -> Result<Location, Failure> {
    let named: Vec<&str> = [
        (given.url, "--url"),
        (cli.data.is_some(), "--data"),
        (cli.postgres.is_some(), "--postgres"),
    ]
    .into_iter()
    .filter_map(|(yes, flag)| yes.then_some(flag))
    .collect();
    if named.len() > 1 {
        return Err(Failure::usage(format!(
            "{} name two locations of the store: give one of --url (a server), --data DIR \
             or --postgres URL",
            named.join(" and ")
        )));
    }
    if given.postgres_schema && cli.postgres.is_none() {
        return Err(Failure::usage("--postgres-schema needs --postgres URL"));
    }
    Ok(if let Some(dir) = &cli.data {
        Location::Data(dir.clone())
    } else if let Some(url) = &cli.postgres {
        Location::Postgres {
            url: url.clone(),
            schema: cli.postgres_schema.clone(),
        }
    } else {
        Location::Server {
            url: cli.url.clone(),
            token: cli.token.clone(),
        }
    })
}

async fn run(cli: Cli, given: Given) -> Result<(), Failure> {
    if let Command::Serve {
        listen,
        token_file,
        max_subscriber_lag,
        max_body_bytes,
    } = cli.command
    {
        if cli.data.is_some() && cli.postgres.is_some() {
            return Err(Failure::usage(
                "serve a data directory (--data) or a PostgreSQL database (--postgres), not both",
            ));
        }
        if given.postgres_schema && cli.postgres.is_none() {
            return Err(Failure::usage("--postgres-schema needs --postgres URL"));
        }
        let data = cli.data.unwrap_or_else(|| PathBuf::from("./annals-data"));
        let mut config = ServerConfig::new(&data).listen(listen);
        config.max_subscriber_lag = max_subscriber_lag;
        config.max_body_bytes = max_body_bytes;
        config.postgres = cli.postgres;
        config.postgres_options.schema = cli.postgres_schema;
        return serve(config, token_file).await;
    }
    let location = location(&cli, &given)?;
    let name = cli.store.as_str();
    match cli.command {
        Command::Export(args) => return maintenance::export(args, &location, name).await,
        Command::Import(args) => return maintenance::import(args, &location, name).await,
        Command::Secrets { action } => return maintenance::secrets(action, &location, name).await,
        Command::Copy(args) => {
            if location.is_direct() {
                return Err(Failure::usage(
                    "copy takes its stores from --from and --to, not from --data or --postgres",
                ));
            }
            return maintenance::copy(args, name, cli.token.as_deref()).await;
        }
        Command::Pour(args) => return pour::run(&location, name, args).await,
        Command::Publish(args) => return publish::run(&location, name, args).await,
        Command::Create { json } => {
            location.connect().await?.create(name).await?;
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"store": name, "created": true})
                );
            } else {
                let _ = writeln!(out, "created store {name}");
            }
            return Ok(());
        }
        _ => {}
    }
    let store = location.open(name, IfMissing::Fail).await?;
    let result = on_store(&*store, name, cli.command).await;
    let _ = store.close().await;
    result
}

/// The verbs that work on one open store.
async fn on_store(store: &dyn EventStore, name: &str, command: Command) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Serve { .. }
        | Command::Create { .. }
        | Command::Export(_)
        | Command::Import(_)
        | Command::Secrets { .. }
        | Command::Copy(_)
        | Command::Pour(_)
        | Command::Publish(_) => Ok(()),
        Command::Append {
            events,
            expected_version,
            commit_id,
            overwrite,
            json,
        } => {
            let text = argument_or_stdin(events)?;
            let mut request = append_request(&text, expected_version.as_deref())?;
            request.commit_id = commit_id;
            request.overwrite = overwrite;
            let result = store.append(request).await?;
            if json {
                for e in &result.events {
                    print_json(&mut out, e);
                }
            } else {
                let _ = writeln!(
                    out,
                    "appended {} event(s), commit {}, head position {}",
                    result.events.len(),
                    result.commit_id,
                    result.head_position
                );
            }
            Ok(())
        }
        Command::Read {
            filter,
            after,
            limit,
            reverse,
            json,
        } => {
            let read = ReadAll {
                from: after.map_or(ReadFrom::Start, ReadFrom::Position),
                direction: if reverse {
                    Direction::Backward
                } else {
                    Direction::Forward
                },
                filter: filter.filter(),
                skip: 0,
                limit,
            };
            let page = store.read_all(read).await?;
            if !json {
                print_header(&mut out);
            }
            for e in &page.events {
                print_event(&mut out, e, json);
            }
            Ok(())
        }
        Command::Tail {
            filter,
            after,
            count,
            json,
        } => {
            // Installed before the subscription, so a signal during the catch-up ends it
            // cleanly too.
            let interrupt = Interrupt::install()?;
            let from = match after {
                Some(p) => p,
                None => store.describe().await?.head_position,
            };
            let mut live = store.subscribe(Subscribe::after(from).filter(filter.filter()));
            if !json && std::io::stdout().is_terminal() {
                print_header(&mut out);
            }
            let mut seen = 0u64;
            while count.is_none_or(|c| seen < c) {
                let next = tokio::select! {
                    next = live.next() => next,
                    () = interrupt.requested() => None,
                };
                match next {
                    Some(Ok(e)) => {
                        print_event(&mut out, &e, json);
                        let _ = out.flush();
                        seen += 1;
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                }
            }
            Ok(())
        }
        Command::Streams {
            context,
            aggregate,
            limit,
            json,
        } => {
            let page = store
                .list_streams(ListStreams {
                    context,
                    aggregate,
                    limit,
                    ..ListStreams::default()
                })
                .await?;
            if !json {
                let _ = writeln!(
                    out,
                    "{:<40} {:>8} {:>10} {:<24}",
                    "STREAM", "VERSION", "FIRST POS", "CREATED"
                );
            }
            for s in &page.streams {
                if json {
                    let v = serde_json::json!({
                        "aggregateId": s.stream.id,
                        "aggregate": optional(&s.stream.aggregate),
                        "context": optional(&s.stream.context),
                        "version": s.version,
                        "firstTimestamp": s.first_timestamp,
                        "firstPosition": s.first_position,
                        "lastPosition": s.last_position,
                    });
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(
                        out,
                        "{:<40} {:>8} {:>10} {:<24}",
                        s.stream.to_string(),
                        s.version,
                        s.first_position,
                        s.first_timestamp.to_string()
                    );
                }
            }
            if page.next_page_token.is_some() && !json {
                let _ = writeln!(out, "(more streams: raise --limit)");
            }
            Ok(())
        }
        Command::Describe { json } => {
            let d = store.describe().await?;
            if json {
                let v = serde_json::json!({
                    "store": name,
                    "eventCount": d.event_count,
                    "streamCount": d.stream_count,
                    "headPosition": d.head_position,
                    "lastEventTimestamp": d.last_event_timestamp,
                    "frozen": d.frozen,
                    "secretCount": d.secret_count,
                    "setSecretCount": d.set_secret_count,
                    "deletedSecretCount": d.deleted_secret_count,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let last = d
                    .last_event_timestamp
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                let _ = writeln!(out, "store:          {name}");
                let _ = writeln!(out, "events:         {}", d.event_count);
                let _ = writeln!(out, "streams:        {}", d.stream_count);
                let _ = writeln!(out, "head position:  {}", d.head_position);
                let _ = writeln!(out, "last event:     {last}");
                let _ = writeln!(out, "frozen:         {}", d.frozen);
                let _ = writeln!(
                    out,
                    "secrets:        {} ({} set, {} deleted)",
                    d.secret_count, d.set_secret_count, d.deleted_secret_count
                );
            }
            Ok(())
        }
        Command::Freeze { json } => {
            store.freeze().await?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"store": name, "frozen": true})
                );
            } else {
                let _ = writeln!(out, "store {name} frozen");
            }
            Ok(())
        }
        Command::Unfreeze { json } => {
            store.unfreeze().await?;
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"store": name, "frozen": false})
                );
            } else {
                let _ = writeln!(out, "store {name} unfrozen");
            }
            Ok(())
        }
        Command::Snapshot { action } => snapshot(store, action, &mut out).await,
        Command::Secret { action } => secret(store, action, &mut out).await,
    }
}

async fn snapshot(
    store: &dyn EventStore,
    action: SnapshotAction,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match action {
        SnapshotAction::Ls {
            start_after,
            limit,
            json,
        } => {
            let page = store
                .list_snapshots(SnapshotKeyQuery { start_after, limit })
                .await?;
            for s in &page {
                if json {
                    let v = serde_json::json!({"key": s.key, "content": s.content, "timestamp": s.timestamp});
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(out, "{}", s.key);
                }
            }
            if let (Some(limit), Some(last)) = (limit, page.last()) {
                if page.len() as u64 == limit && !json {
                    eprintln!("annals: more keys may follow: --start-after {:?}", last.key);
                }
            }
        }
        SnapshotAction::Get { key, json } => {
            let s = store
                .load_snapshot(&key)
                .await?
                .ok_or_else(|| Failure::from(Error::not_found("snapshot", key)))?;
            if json {
                let v = serde_json::json!({"key": s.key, "content": s.content, "timestamp": s.timestamp});
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(out, "{}", s.content);
            }
        }
        SnapshotAction::Put { key, content, json } => {
            let content = argument_or_stdin(content)?;
            store.save_snapshot(&key, &content).await?;
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"key": key, "saved": true}));
            }
        }
        SnapshotAction::Rm { key, json } => {
            if !store.drop_snapshot(&key).await? {
                return Err(Error::not_found("snapshot", key).into());
            }
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"key": key, "deleted": true}));
            }
        }
    }
    Ok(())
}

async fn secret(
    store: &dyn EventStore,
    action: SecretAction,
    out: &mut impl Write,
) -> Result<(), Failure> {
    match action {
        SecretAction::Get { id, json } => {
            let s = store
                .get_secret(&id)
                .await?
                .ok_or_else(|| Failure::from(Error::not_found("secret", id)))?;
            if json {
                let v = serde_json::json!({"idx": s.idx, "id": s.id, "secret": s.secret});
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(out, "{}", s.secret.as_deref().unwrap_or("(deleted)"));
            }
        }
        SecretAction::Set {
            id,
            secret,
            events: None,
            json,
        } => {
            let secret = argument_or_stdin(secret)?;
            let s = store.set_secret(&id, secret.trim_end_matches('\n')).await?;
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"idx": s.idx, "id": s.id}));
            } else {
                let _ = writeln!(out, "secret {} stored at idx {}", s.id, s.idx);
            }
        }
        SecretAction::Set {
            id,
            secret,
            events: Some(source),
            json,
        } => {
            let text = match source.as_str() {
                "-" => {
                    if secret.as_deref().is_none_or(|s| s == "-") {
                        return Err(Failure::usage(
                            "with --events -, give the secret as an argument",
                        ));
                    }
                    argument_or_stdin(None)?
                }
                path => std::fs::read_to_string(path)
                    .map_err(|e| Failure::usage(format!("cannot read {path}: {e}")))?,
            };
            let secret = argument_or_stdin(secret)?;
            let request = append_request(&text, None)?.with_secret(SecretChange::Set {
                id,
                secret: secret.trim_end_matches('\n').to_owned(),
            });
            let result = store.append(request).await?;
            let s = result.secret.ok_or_else(|| Failure {
                code: 4,
                message: "the store did not report the secret it stored".into(),
            })?;
            if json {
                let v = serde_json::json!({
                    "idx": s.idx,
                    "id": s.id,
                    "eventCount": result.events.len(),
                    "commitId": result.commit_id,
                    "headPosition": result.head_position,
                });
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "secret {} stored at idx {} with {} event(s), commit {}, head position {}",
                    s.id,
                    s.idx,
                    result.events.len(),
                    result.commit_id,
                    result.head_position
                );
            }
        }
        SecretAction::Rm { id, json } => {
            store.delete_secret(&id).await?;
            if json {
                let _ = writeln!(out, "{}", serde_json::json!({"id": id, "deleted": true}));
            }
        }
    }
    Ok(())
}

async fn serve(mut config: ServerConfig, token_file: Option<PathBuf>) -> Result<(), Failure> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn")
            }),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let serving = match &config.postgres {
        Some(url) => format!(
            "the PostgreSQL database {} (schema {})",
            redact_password(url),
            config.postgres_options.schema
        ),
        None => config.data_dir.display().to_string(),
    };
    if let Some(path) = token_file {
        config.tokens = Some(annals_server::Tokens::from_file(&path).map_err(Failure::usage)?);
    }
    let server = Server::bind(config).await.map_err(|e| Failure {
        code: match e {
            annals_server::ServeError::NotLoopback(_) => 1,
            _ => 4,
        },
        message: e.to_string(),
    })?;
    if server
        .ensure_store(DEFAULT_STORE)
        .await
        .map_err(|e| Failure {
            code: 4,
            message: format!("cannot create the store {DEFAULT_STORE:?}: {e}"),
        })?
    {
        eprintln!("annals: created the store {DEFAULT_STORE:?}");
    }
    println!(
        "annals: serving {serving} on http://{}",
        server.local_addr()
    );
    server.run().await.map_err(|e| Failure {
        code: 4,
        message: e.to_string(),
    })
}

/// `message` on one line: errors from drivers and servers may span several, and a
/// script reading standard error expects one line per failure.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `url` with the password (if any) replaced by `***`, for messages.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn optional(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn print_header(out: &mut impl Write) {
    let _ = writeln!(
        out,
        "{:>8}  {:<24}  {:<30} {:>7}  {:<20} PAYLOAD",
        "POSITION", "TIMESTAMP", "STREAM", "VERSION", "TYPE"
    );
}

fn print_json(out: &mut impl Write, e: &RecordedEvent) {
    match serde_json::to_string(e) {
        Ok(line) => {
            let _ = writeln!(out, "{line}");
        }
        Err(err) => eprintln!("annals: event {} is not printable: {err}", e.position),
    }
}

fn print_event(out: &mut impl Write, e: &RecordedEvent, json: bool) {
    if json {
        print_json(out, e);
    } else {
        let _ = writeln!(
            out,
            "{:>8}  {:<24}  {:<30} {:>7}  {:<20} {}",
            e.position,
            e.timestamp.to_string(),
            e.stream.to_string(),
            e.version,
            e.event_type.as_str(),
            e.payload.to_string().trim()
        );
    }
}

/// The events of `text` (API.md append form) as an append request.
fn append_request(text: &str, expected: Option<&str>) -> Result<AppendRequest, Failure> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Failure::usage(format!("the events are not JSON: {e}")))?;
    let events = match value {
        Value::Array(events) => events,
        Value::Object(mut o) if o.contains_key("events") => match o.remove("events") {
            Some(Value::Array(events)) => events,
            _ => return Err(Failure::usage("\"events\" must be an array")),
        },
        v @ Value::Object(_) => vec![v],
        _ => {
            return Err(Failure::usage(
                "give an event object, an array of events or {\"events\": [...]}",
            ))
        }
    };
    let mut writes: Vec<StreamWrite> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Value::Object(e) = e else {
            return Err(Error::invalid(format!("events[{i}]"), "must be a JSON object").into());
        };
        let fields = EventFields::new(format!("events[{i}]"), e);
        let stream = StreamId {
            context: fields.string("context")?.unwrap_or_default(),
            aggregate: fields.string("aggregate")?.unwrap_or_default(),
            id: fields.required("aggregateId")?,
        };
        let proposed = ProposedEvent {
            id: fields.string("id")?,
            event_type: fields.string("type")?.unwrap_or_default(),
            payload: fields.json("payload")?,
            metadata: fields.json("metadata")?,
            timestamp: fields.timestamp("timestamp")?,
            version: fields.integer("version")?,
        };
        match writes.iter_mut().find(|w| w.stream == stream) {
            Some(w) => w.events.push(proposed),
            None => writes.push(StreamWrite {
                stream,
                expected: ExpectedVersion::Any,
                events: vec![proposed],
            }),
        }
    }
    if let Some(expected) = expected {
        let expected = match expected {
            "any" => ExpectedVersion::Any,
            "exists" => ExpectedVersion::StreamExists,
            "0" => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n.parse().map_err(|_| {
                Failure::usage(format!(
                    "--expected-version {n:?} is not a version, \"any\" or \"exists\""
                ))
            })?),
        };
        match writes.as_mut_slice() {
            [only] => only.expected = expected,
            _ => {
                return Err(Failure::usage(
                    "--expected-version needs every event in one stream",
                ))
            }
        }
    }
    Ok(AppendRequest {
        writes,
        ..AppendRequest::default()
    })
}
