//! Throughput of export, import and copy (issue #6 targets: export ≥ 500,000 events/s to
//! a file, import ≥ 200,000 events/s into embedded, copy embedded → PostgreSQL ≥ 50,000
//! events/s).
//!
//! `cargo run --release -p annals-maintenance --example maintenance_bench -- [EVENTS] [RUNS] [PHASES]`
//! (PostgreSQL copy with `ANNALS_TEST_POSTGRES_URL` set). `PHASES` is a comma-separated
//! subset of `export,import,copy` (all by default); `import` alone writes its input file
//! directly, without a source store, so an instruction-count profile
//! (`valgrind --tool=callgrind`) of it is the import's alone.

use std::sync::Arc;
use std::time::Instant;

use annals_core::{EventStore, ImportBatch, Json, RecordedEvent, StreamId, Timestamp};
use annals_maintenance::{
    copy, export_events, import_events, CopyOptions, ExportOptions, ImportOptions,
};

fn event(i: u64) -> RecordedEvent {
    RecordedEvent {
        position: 0,
        id: format!("evt-{i:012}").into(),
        stream: StreamId::new(format!("acc-{}", i / 10)).with_aggregate("account"),
        version: i % 10 + 1,
        event_type: "Deposited".into(),
        timestamp: Timestamp::from_millis(1_700_000_000_000 + i as i64),
        payload: Json::from_raw(format!(
            r#"{{"amount":{i},"currency":"EUR","note":"benchmark payload of about a hundred bytes"}}"#
        )),
        metadata: Json::from_raw(r#"{"correlationId":"c-1"}"#),
        commit_id: format!("commit-{}", i / 10).into(),
        commit_sequence: (i % 10) as u32,
        dispatched: false,
    }
}

fn summary(name: &str, n: u64, secs: &[f64]) {
    let rates: Vec<f64> = secs.iter().map(|s| n as f64 / s).collect();
    let min = rates.iter().cloned().fold(f64::MAX, f64::min);
    let max = rates.iter().cloned().fold(0.0, f64::max);
    println!(
        "{name}: {n} events, {} runs, {min:.0}–{max:.0} events/s",
        rates.len()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let phases: Vec<&str> = args
        .get(3)
        .map_or("export,import,copy", String::as_str)
        .split(',')
        .collect();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.ndjson");
    let source: Arc<dyn EventStore> = Arc::new(annals_embedded::EmbeddedStore::open(
        dir.path().join("source"),
    )?);
    if phases == ["import"] {
        // The lines an export of the populated source would write.
        let mut out = Vec::new();
        for i in 0..n {
            let e = RecordedEvent {
                position: i + 1,
                ..event(i)
            };
            annals_core::ndjson::write_event(&mut out, &e)?;
        }
        tokio::fs::write(&file, out).await?;
    } else {
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            source
                .import_events(ImportBatch {
                    events: chunk.iter().map(|&i| event(i)).collect(),
                    ..ImportBatch::default()
                })
                .await?;
        }
        let mut secs = Vec::new();
        for _ in 0..runs {
            let out = tokio::fs::File::create(&file).await?;
            let mut out = tokio::io::BufWriter::with_capacity(1 << 20, out);
            let t = Instant::now();
            let options = ExportOptions {
                page_size: 10_000,
                ..ExportOptions::default()
            };
            let r = export_events(&source, &mut out, options, |_| {}).await?;
            secs.push(t.elapsed().as_secs_f64());
            assert_eq!(r.lines, n);
        }
        if phases.contains(&"export") {
            summary("export embedded -> file", n, &secs);
        }
    }

    if phases.contains(&"import") {
        let mut secs = Vec::new();
        for run in 0..runs {
            let target: Arc<dyn EventStore> = Arc::new(annals_embedded::EmbeddedStore::open(
                dir.path().join(format!("import-{run}")),
            )?);
            let input =
                tokio::io::BufReader::with_capacity(1 << 20, tokio::fs::File::open(&file).await?);
            let t = Instant::now();
            let r = import_events(&target, input, ImportOptions::default(), |_| {}).await?;
            secs.push(t.elapsed().as_secs_f64());
            assert_eq!(r.imported, n);
            target.close().await?;
        }
        summary("import file -> embedded", n, &secs);
    }

    let postgres = std::env::var("ANNALS_TEST_POSTGRES_URL").ok();
    if let Some(url) = postgres.filter(|_| phases.contains(&"copy")) {
        let mut secs = Vec::new();
        for run in 0..runs {
            let name = format!("bench-copy-{}-{run}", Timestamp::now().as_millis());
            let target: Arc<dyn EventStore> =
                Arc::new(annals_postgres::PostgresStore::connect(&url, &name).await?);
            let t = Instant::now();
            let options = CopyOptions {
                stream_snapshots: false,
                ..CopyOptions::default()
            };
            let r = copy(&source, &target, options).await?;
            secs.push(t.elapsed().as_secs_f64());
            assert!(r.verified());
            target.drop_store().await?;
        }
        summary(
            "copy embedded -> postgres (incl. checksums of both sides)",
            n,
            &secs,
        );
    }
    Ok(())
}
