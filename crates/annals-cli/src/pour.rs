//! `annals pour ids|stream|all|stores`: re-publish past events into a message channel
//! (castore's dam), from the stores of any location (a server, `--data`, `--postgres`).
//!
//! ```text
//! annals pour ids --channel nats://127.0.0.1:4222 --topic annals.ids --rate 100
//! annals pour stream acc-1 --aggregate account --min-version 2 --channel redis://127.0.0.1:6379
//! annals pour all --from 2024-01-01T00:00:00Z --channel amqp://guest:guest@127.0.0.1:5672/%2f
//! annals pour stores pokemons trainers --channel https://hooks.example/annals
//! annals pour all --channel memory > messages.ndjson     # the messages as NDJSON on stdout
//! ```
//!
//! A progress bar shows on a terminal (standard error), none when it is piped. The
//! summary (human, or one JSON object with `--json`) goes to standard output, or to
//! standard error with `--channel memory`, whose messages own standard output. Ctrl-C
//! (or SIGTERM) stops after the batch in flight; the summary then gives the `--resume`
//! token that continues the pour, as does the error of a failed pour, and the exit code
//! is 130 (143 after SIGTERM).

use std::io::Write;
use std::sync::Arc;

use async_trait::async_trait;
use clap::{Args, Subcommand};
use serde::Serialize;

use annals_channels::pour::{
    self, AggregateIdsQuery, Interrupted, PourCursor, PourOptions, PourResult, Progress,
    StoreEventsQuery, StreamEventsQuery,
};
use annals_channels::{Message, MessageChannel};
use annals_core::{Error, EventStore, StreamId, StreamPageToken, Timestamp};

use crate::interrupt::{Interrupt, Signal};
use crate::location::{IfMissing, Location};
use crate::maintenance::{progress_bar, Unit};
use crate::Failure;

/// `annals pour` and its options.
#[derive(Args)]
pub struct PourArgs {
    #[command(subcommand)]
    verb: PourVerb,
    /// Where to publish: nats://host:port, amqp://user:pass@host:port/vhost,
    /// redis://host:port, http(s)://… (a webhook) or `memory` (NDJSON on stdout).
    #[arg(long, global = true, default_value = "memory")]
    channel: String,
    /// The NATS subject, RabbitMQ queue or Redis stream key.
    #[arg(long, global = true, default_value = "annals")]
    topic: String,
    /// At most this many messages per second.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// At most this many messages per published batch.
    #[arg(long, global = true, default_value_t = 100)]
    batch: usize,
    /// Continue an interrupted pour from the token its summary gave.
    #[arg(long, global = true)]
    resume: Option<String>,
    /// `all` and `stores`: at most about this many events per store held in memory
    /// while putting them in timestamp order (events beyond it are read again later).
    #[arg(long, global = true, default_value_t = PourOptions::default().reorder_buffer)]
    reorder_buffer: usize,
    /// Print the summary as one JSON object.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum PourVerb {
    /// Pour the ids of the store's streams ("aggregate exists" messages), ordered by
    /// their first event.
    Ids {
        /// Only this context.
        #[arg(long)]
        context: Option<String>,
        /// Only this aggregate.
        #[arg(long)]
        aggregate: Option<String>,
        /// Only streams whose first event is at or after this time (RFC 3339).
        #[arg(long)]
        initial_event_after: Option<String>,
        /// Only streams whose first event is at or before this time (RFC 3339).
        #[arg(long)]
        initial_event_before: Option<String>,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
        /// At most this many ids.
        #[arg(long)]
        limit: Option<u64>,
        /// Streams listed per request.
        #[arg(long, default_value_t = 100)]
        page_size: u64,
    },
    /// Pour the events of one stream.
    Stream {
        /// The stream's id (aggregate id).
        aggregate_id: String,
        /// The stream's aggregate type.
        #[arg(long, default_value = "")]
        aggregate: String,
        /// The stream's context.
        #[arg(long, default_value = "")]
        context: String,
        /// The lowest version.
        #[arg(long)]
        min_version: Option<u64>,
        /// The highest version.
        #[arg(long)]
        max_version: Option<u64>,
        /// At most this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
        #[command(flatten)]
        time: TimeArgs,
    },
    /// Pour every event of the store in timestamp order.
    All {
        #[command(flatten)]
        time: TimeArgs,
    },
    /// Pour the events of several stores merged in timestamp order.
    Stores {
        /// The stores (at least one).
        #[arg(required = true)]
        stores: Vec<String>,
        #[command(flatten)]
        time: TimeArgs,
    },
}

#[derive(Args)]
struct TimeArgs {
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only events at or before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

fn time(flag: &str, text: Option<&str>) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| Timestamp::parse_rfc3339(t).map_err(|e| Failure::usage(format!("--{flag}: {e}"))))
        .transpose()
}

impl TimeArgs {
    fn range(&self) -> Result<(Option<Timestamp>, Option<Timestamp>), Failure> {
        Ok((
            time("from", self.from.as_deref())?,
            time("to", self.to.as_deref())?,
        ))
    }
}

fn resume<T: std::str::FromStr>(text: Option<&str>, what: &str) -> Result<Option<T>, Failure> {
    text.map(|t| {
        t.parse::<T>().map_err(|_| {
            Failure::usage(format!(
                "--resume {t:?} is not a token of `annals pour {what}`"
            ))
        })
    })
    .transpose()
}

/// `--channel memory`: every message as one NDJSON line on standard output (`pour` and
/// `publish`).
pub(crate) struct StdoutChannel;

/// The channel `--channel` names: `memory` (NDJSON on standard output) or a URL for
/// [`annals_channels::connect`].
pub(crate) async fn open_channel(
    channel: &str,
    topic: &str,
) -> Result<Box<dyn MessageChannel>, Failure> {
    if channel == "memory" {
        Ok(Box::new(StdoutChannel))
    } else {
        Ok(annals_channels::connect(channel, topic).await?)
    }
}

#[async_trait]
impl MessageChannel for StdoutChannel {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, message: &Message) -> annals_core::Result<()> {
        self.publish_batch(std::slice::from_ref(message)).await
    }

    async fn publish_batch(&self, messages: &[Message]) -> annals_core::Result<()> {
        let mut out = std::io::stdout().lock();
        for m in messages {
            let mut line = m.to_json()?;
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| Error::backend("memory", e))?;
        }
        out.flush().map_err(|e| Error::backend("memory", e))
    }
}

/// Runs `annals pour …` on the store `store_name` of `location`.
pub async fn run(location: &Location, store_name: &str, args: PourArgs) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    let connected = location.connect().await?;
    let mut opened: Vec<Arc<dyn EventStore>> = Vec::new();
    let result = pour(&connected, &mut opened, store_name, args, &interrupt).await;
    for store in opened {
        let _ = store.close().await;
    }
    result
}

async fn pour(
    connected: &crate::location::Connected,
    opened: &mut Vec<Arc<dyn EventStore>>,
    store_name: &str,
    args: PourArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let to_stdout = args.channel == "memory";
    let channel = open_channel(&args.channel, &args.topic).await?;
    // The total is set once the pour knows it.
    let bar = progress_bar(Some(0), Unit::Messages);
    let stop = interrupt.flag();
    let progress_bar = bar.clone();
    let options = PourOptions {
        rate_limit: args.rate,
        batch_size: args.batch,
        stop: Some(stop),
        progress: Some(Arc::new(move |p: Progress| {
            if let Some(total) = p.total {
                progress_bar.set_length(total);
            }
            progress_bar.set_position(p.poured);
        })),
        reorder_buffer: args.reorder_buffer,
    };
    let channel: &dyn MessageChannel = &*channel;
    let summary = Summary {
        json: args.json,
        to_stderr: to_stdout,
        channel: channel.name(),
        bar: &bar,
        interrupt,
    };

    match args.verb {
        PourVerb::Ids {
            context,
            aggregate,
            initial_event_after,
            initial_event_before,
            reverse,
            limit,
            page_size,
        } => {
            let query = AggregateIdsQuery {
                context,
                aggregate,
                initial_event_after: time("initial-event-after", initial_event_after.as_deref())?,
                initial_event_before: time(
                    "initial-event-before",
                    initial_event_before.as_deref(),
                )?,
                reverse,
                limit,
                page_size,
                resume: resume::<StreamPageToken>(args.resume.as_deref(), "ids")?,
            };
            let store = connected.open(store_name, IfMissing::Fail).await?;
            opened.push(Arc::clone(&store));
            let r = pour::pour_aggregate_ids(&*store, store_name, channel, &query, &options).await;
            summary.report(r, |r| {
                (
                    format!(
                        "poured {} aggregate id(s) into {}; first scanned {}, last scanned {}",
                        r.poured_aggregate_id_count,
                        "{channel}",
                        name(r.first_scanned_aggregate.as_ref().map(|a| a.stream())),
                        name(r.last_scanned_aggregate.as_ref().map(|a| a.stream())),
                    ),
                    r.resume.map(|t| t.to_string()),
                    r.finished,
                )
            })
        }
        PourVerb::Stream {
            aggregate_id,
            aggregate,
            context,
            min_version,
            max_version,
            limit,
            reverse,
            time,
        } => {
            let (from, to) = time.range()?;
            let query = StreamEventsQuery {
                min_version,
                max_version,
                limit,
                reverse,
                from,
                to,
                resume: resume::<u64>(args.resume.as_deref(), "stream")?,
            };
            let stream = StreamId {
                context,
                aggregate,
                id: aggregate_id,
            };
            let store = connected.open(store_name, IfMissing::Fail).await?;
            opened.push(Arc::clone(&store));
            let r =
                pour::pour_stream_events(&*store, store_name, channel, &stream, &query, &options)
                    .await;
            summary.report(r, |r| {
                (
                    format!(
                        "poured {} event(s) of {stream} into {}; first poured version {}, last poured version {}",
                        r.poured_event_count,
                        "{channel}",
                        r.first_poured_event.as_ref().map_or("-".to_owned(), |e| e.version.to_string()),
                        r.last_poured_event.as_ref().map_or("-".to_owned(), |e| e.version.to_string()),
                    ),
                    r.resume.map(|v| v.to_string()),
                    r.finished,
                )
            })
        }
        PourVerb::All { time } => {
            let (from, to) = time.range()?;
            let query = StoreEventsQuery {
                from,
                to,
                resume: resume::<PourCursor>(args.resume.as_deref(), "all")?,
            };
            let store = connected.open(store_name, IfMissing::Fail).await?;
            opened.push(Arc::clone(&store));
            let r = pour::pour_store_events(&*store, store_name, channel, &query, &options).await;
            summary.report(r, |r| {
                (
                    format!(
                        "poured {} event(s) into {}; first scanned {}, last scanned {}",
                        r.poured_event_count,
                        "{channel}",
                        name(r.first_scanned_aggregate.as_ref().map(|a| a.stream())),
                        name(r.last_scanned_aggregate.as_ref().map(|a| a.stream())),
                    ),
                    r.resume.as_ref().map(|c| c.to_string()),
                    r.finished,
                )
            })
        }
        PourVerb::Stores { stores, time } => {
            let (from, to) = time.range()?;
            let query = StoreEventsQuery {
                from,
                to,
                resume: resume::<PourCursor>(args.resume.as_deref(), "stores")?,
            };
            for name in &stores {
                let store = connected.open(name, IfMissing::Fail).await?;
                opened.push(store);
            }
            let list: Vec<(&str, &dyn EventStore)> = stores
                .iter()
                .zip(opened.iter())
                .map(|(n, s)| (n.as_str(), &**s))
                .collect();
            let r = pour::pour_stores_events(&list, channel, &query, &options).await;
            summary.report(r, |r| {
                let scans: Vec<String> = r
                    .scans
                    .iter()
                    .map(|(store, s)| {
                        format!(
                            "{store}: first scanned {}, last scanned {}",
                            name(s.first_scanned_aggregate.as_ref().map(|a| a.stream())),
                            name(s.last_scanned_aggregate.as_ref().map(|a| a.stream())),
                        )
                    })
                    .collect();
                (
                    format!(
                        "poured {} event(s) into {}; {}",
                        r.poured_event_count,
                        "{channel}",
                        scans.join("; ")
                    ),
                    r.resume.as_ref().map(|c| c.to_string()),
                    r.finished,
                )
            })
        }
    }
}

fn name(stream: Option<StreamId>) -> String {
    stream.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

struct Summary<'a> {
    json: bool,
    to_stderr: bool,
    channel: &'static str,
    bar: &'a indicatif::ProgressBar,
    interrupt: &'a Interrupt,
}

impl Summary<'_> {
    /// Prints the result (or the partial result of a failure) and picks the exit.
    fn report<R: Serialize>(
        &self,
        result: PourResult<R>,
        describe: impl Fn(&R) -> (String, Option<String>, bool),
    ) -> Result<(), Failure> {
        self.bar.finish_and_clear();
        let (r, error) = match result {
            Ok(r) => (r, None),
            Err(Interrupted { error, partial }) => (partial, Some(error)),
        };
        let (text, resume, finished) = describe(&r);
        let line = if self.json {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("channel".into(), self.channel.into());
                if let Some(e) = &error {
                    o.insert("error".into(), e.to_string().into());
                }
            }
            v.to_string()
        } else {
            let mut t = text.replace("{channel}", self.channel);
            if !finished {
                match &resume {
                    Some(token) => {
                        t.push_str(&format!("; stopped early: continue with --resume {token}"))
                    }
                    None => t.push_str("; stopped before pouring anything"),
                }
            }
            t
        };
        if self.to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        match error {
            None if finished => Ok(()),
            None => {
                let signal = self.interrupt.signal().unwrap_or(Signal::Interrupt);
                Err(Failure {
                    code: signal.exit_code(),
                    message: format!(
                        "interrupted by {}: the pour stopped after the batch in flight{}",
                        signal.name(),
                        resume
                            .map(|t| format!("; continue with --resume {t}"))
                            .unwrap_or_default()
                    ),
                })
            }
            Some(e) => {
                let mut f = Failure::from(e);
                if let Some(token) = resume {
                    f.message
                        .push_str(&format!(" (continue with --resume {token})"));
                }
                Err(f)
            }
        }
    }
}
