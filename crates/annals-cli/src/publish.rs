//! `annals publish`: the outbox relay. Delivers the store's undispatched events, oldest
//! first, then every new commit, to a message channel as live notifications
//! (`replay = false`), and marks each batch dispatched once the channel accepted it
//! (JetStream and RabbitMQ: acknowledged). A crash or a stop between delivery and mark
//! delivers that batch again on the next run: at least once, in position order.
//!
//! ```text
//! annals publish --channel nats://127.0.0.1:4222 --topic orders     # until Ctrl-C
//! annals publish --channel memory --until-idle > outbox.ndjson       # the backlog, then exit
//! ```
//!
//! Ctrl-C or SIGTERM stops it after the batch in flight (exit code 130 or 143). With
//! `--until-idle` it exits 0 once no undispatched event is left. `--max-attempts N`
//! makes a channel that keeps failing stop it (exit code 4) instead of being retried
//! forever. A progress line shows on a terminal; the summary (one JSON object with
//! `--json`: `dispatched`, `lastDispatched`, `retries`, `interrupted`) goes to standard
//! output, or to standard error with `--channel memory`, whose messages own standard
//! output.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use annals_channels::outbox::ChannelPublisher;
use annals_core::{EventFilter, EventStore};
use annals_projector::{Backoff, Publisher, PublisherOptions, PublisherState, PublisherStatus};

use crate::interrupt::Interrupt;
use crate::location::{IfMissing, Location};
use crate::maintenance::{progress_bar, Unit};
use crate::pour::open_channel;
use crate::Failure;

/// `annals publish` and its options.
#[derive(Args)]
pub struct PublishArgs {
    /// Where to deliver: nats://host:port, amqp://user:pass@host:port/vhost,
    /// redis://host:port, http(s)://… (a webhook) or `memory` (NDJSON on stdout).
    #[arg(long, default_value = "memory")]
    channel: String,
    /// The NATS subject, RabbitMQ queue or Redis stream key.
    #[arg(long, default_value = "annals")]
    topic: String,
    /// At most this many events per delivered (and marked) batch.
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Exit once every event is dispatched, instead of following new commits.
    #[arg(long)]
    until_idle: bool,
    /// Give up after this many failed attempts in a row (default: retry forever, with
    /// a backoff from 100 ms up to 30 s).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `annals publish` on the store `store_name` of `location`.
pub async fn run(location: &Location, store_name: &str, args: PublishArgs) -> Result<(), Failure> {
    let interrupt = Interrupt::install()?;
    let store = location.open(store_name, IfMissing::Fail).await?;
    let result = relay(&store, store_name, &args, &interrupt).await;
    let _ = store.close().await;
    result
}

async fn relay(
    store: &Arc<dyn EventStore>,
    store_name: &str,
    args: &PublishArgs,
    interrupt: &Interrupt,
) -> Result<(), Failure> {
    let to_stdout = args.channel == "memory";
    let channel = open_channel(&args.channel, &args.topic).await?;
    let options = PublisherOptions {
        batch_size: args.batch.max(1),
        backoff: Backoff {
            max_attempts: args.max_attempts,
            ..Backoff::default()
        },
        ..PublisherOptions::default()
    };
    let publisher = Publisher::start(
        Arc::clone(store),
        ChannelPublisher::new(store_name, channel),
        options,
    );
    let bar = progress_bar(None, Unit::Status);
    let mut status = publisher.watch();
    let ended = loop {
        let now = status.borrow_and_update().clone();
        bar.set_message(progress(&now));
        if now.state == PublisherState::Failed {
            break End::Failed(now);
        }
        if args.until_idle && now.live && idle(&**store).await? {
            break End::Idle;
        }
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    break End::Idle;
                }
            }
            () = interrupt.requested() => break End::Interrupted,
            // An idle check now and then: marks made by others change no status.
            () = tokio::time::sleep(Duration::from_millis(200)), if args.until_idle => {}
        }
    };
    let last = publisher.shutdown().await;
    bar.finish_and_clear();
    let interrupted = matches!(ended, End::Interrupted)
        .then(|| interrupt.signal())
        .flatten();
    let summary = if args.json {
        serde_json::json!({
            "dispatched": last.dispatched,
            "lastDispatched": last.last_dispatched,
            "retries": last.retries,
            "interrupted": interrupted.map(|s| s.name()),
        })
        .to_string()
    } else {
        format!(
            "dispatched {} event(s) to {}; last position {}",
            last.dispatched, args.channel, last.last_dispatched
        )
    };
    if to_stdout {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    match ended {
        End::Idle => Ok(()),
        End::Interrupted => Err(Failure {
            code: interrupted.map_or(130, |s| s.exit_code()),
            message: format!(
                "stopped by {}; the next run delivers the rest",
                interrupted.map_or("a signal", |s| s.name())
            ),
        }),
        End::Failed(status) => Err(Failure {
            code: 4,
            message: match status.last_error {
                Some(e) => format!(
                    "gave up after {} attempt(s) at position {}: {}",
                    e.attempts, e.position, e.error
                ),
                None => "the publisher stopped".to_owned(),
            },
        }),
    }
}

enum End {
    Idle,
    Interrupted,
    Failed(PublisherStatus),
}

/// Whether no event is left undispatched.
async fn idle(store: &dyn EventStore) -> Result<bool, Failure> {
    Ok(store
        .undispatched(EventFilter::default(), Some(1))
        .await?
        .is_empty())
}

fn progress(s: &PublisherStatus) -> String {
    let phase = if s.live { "live" } else { "backlog" };
    match &s.last_error {
        Some(e) if s.retries > 0 => format!(
            "{phase}: {} dispatched (last position {}); retrying after: {}",
            s.dispatched, s.last_dispatched, e.error
        ),
        _ => format!(
            "{phase}: {} dispatched (last position {})",
            s.dispatched, s.last_dispatched
        ),
    }
}
