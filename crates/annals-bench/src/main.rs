//! `annals-bench`: measures the throughput and latency of an Annals backend through the
//! [`annals_core::EventStore`] trait.
//!
//! Each workload runs on a fresh store in a fresh directory and prints exactly one JSON
//! line to stdout (see [`report::Report`]); progress and notes go to stderr. The README
//! beside this crate describes the workloads.

/// The allocator the `annals` binary runs on (see its `main.rs`), so that the figures are
/// those of `annals serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod backend;
mod baseline;
#[cfg(feature = "nats")]
mod outbox;
mod pour;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use crate::backend::Backend;
use crate::workload::Workload;

/// The error every step of a benchmark run reports: a store error, an I/O error, or a
/// failed sanity check, all ending the run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a benchmark step.
pub type BenchResult<T> = Result<T, BenchError>;

/// Measures an Annals backend; prints one JSON line per workload to stdout.
#[derive(Debug, Parser)]
#[command(name = "annals-bench", version, about)]
struct Args {
    /// The backend to measure.
    #[arg(long, value_enum)]
    backend: Backend,
    /// The workload to run; `all` runs fsync, then w1 to w6, each on a fresh store.
    #[arg(long, value_enum)]
    workload: WorkloadChoice,
    /// Overrides the event count of each workload run (what it counts is in the README).
    #[arg(long)]
    events: Option<u64>,
    /// Where each run's fresh data directory is created (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `fsync` only: sleep this many microseconds after each sync, to see what an idle
    /// disk costs the next sync (read the latencies; the throughput includes the pauses).
    #[arg(long, default_value_t = 0)]
    fsync_pause_us: u64,
}

/// What `--workload` accepts: one workload, or all of them in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadChoice {
    /// Single-event appends, one writer.
    W1,
    /// Single-event appends, eight concurrent writers.
    W2,
    /// Appends of 100-event batches, one writer.
    W3,
    /// Reads of one 1,000-event stream.
    W4,
    /// Store-wide forward reads, page by page.
    W5,
    /// Append-to-subscriber latency.
    W6,
    /// The machine's fsync ceiling, without a store.
    Fsync,
    /// Projector catch-up with a no-op handler (not part of `all`).
    Projector,
    /// Publisher (outbox) to NATS JetStream, eight writers (feature `nats`; not part of
    /// `all`).
    PublisherNats,
    /// `pour all` in timestamp order of a prepared store with out-of-order events, into
    /// a channel that only counts (not part of `all`).
    Pour,
    /// Raw PostgreSQL single-row INSERT per commit, one client (feature `postgres`).
    PgInsert1,
    /// Raw PostgreSQL single-row INSERT per commit, eight clients (feature `postgres`).
    PgInsert8,
    /// fsync, then w1 to w6 (on `postgres`, then the two raw INSERT baselines).
    All,
}

impl WorkloadChoice {
    /// The workloads to run on `backend`, in order.
    fn workloads(self, backend: Backend) -> Vec<Workload> {
        match self {
            WorkloadChoice::W1 => vec![Workload::W1],
            WorkloadChoice::W2 => vec![Workload::W2],
            WorkloadChoice::W3 => vec![Workload::W3],
            WorkloadChoice::W4 => vec![Workload::W4],
            WorkloadChoice::W5 => vec![Workload::W5],
            WorkloadChoice::W6 => vec![Workload::W6],
            WorkloadChoice::Fsync => vec![Workload::Fsync],
            WorkloadChoice::Projector => vec![Workload::Projector],
            WorkloadChoice::PublisherNats => vec![Workload::PublisherNats],
            WorkloadChoice::Pour => vec![Workload::Pour],
            WorkloadChoice::PgInsert1 => vec![Workload::PgInsert1],
            WorkloadChoice::PgInsert8 => vec![Workload::PgInsert8],
            WorkloadChoice::All if backend == Backend::Postgres => {
                let mut all = Workload::ALL.to_vec();
                all.extend(Workload::POSTGRES_BASELINES);
                all
            }
            WorkloadChoice::All => Workload::ALL.to_vec(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("annals-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> BenchResult<()> {
    let base = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => std::env::temp_dir(),
    };
    for workload in args.workload.workloads(args.backend) {
        run_one(workload, args, &base).await?;
    }
    Ok(())
}

/// Runs one workload in a fresh directory under `base`, prints its line, and removes the
/// directory.
async fn run_one(workload: Workload, args: &Args, base: &Path) -> BenchResult<()> {
    let backend = args.backend;
    let dir = tempfile::Builder::new()
        .prefix("annals-bench-")
        .tempdir_in(base)?;
    eprintln!(
        "annals-bench: {} on {} in {}",
        workload.name(),
        workload.backend_label(backend),
        dir.path().display()
    );
    let pause = std::time::Duration::from_micros(args.fsync_pause_us);
    let report = workload
        .run_with(backend, dir.path(), args.events, pause)
        .await?;
    println!("{}", serde_json::to_string(&report)?);
    dir.close()?;
    Ok(())
}
