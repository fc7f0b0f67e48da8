//! `annals pour all` orders by timestamp the same way on every backend it can open:
//! a server (`--url`), a data directory (`--data`) and PostgreSQL (`--postgres`). Each
//! store is filled by `annals import` with events whose timestamps are out of position
//! order, then poured with a reorder buffer far smaller than the store, so events are
//! dropped from the buffer and read again; the messages must come out in (timestamp,
//! position) order, every event exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use support::stdout as ok;

use annals_channels::Message;
use annals_testkit::services::POSTGRES;
use assert_cmd::Command;

const EVENTS: u64 = 600;

/// An export-format NDJSON file: event `i` at second `i`, except every 7th, which is
/// 50 seconds early, and a block from the future.
fn ndjson(path: &Path) -> Vec<(i64, u64)> {
    let mut text = String::new();
    let mut keys = Vec::new();
    for i in 0..EVENTS {
        let secs = match i {
            _ if i % 7 == 3 => i as i64 - 50,
            300..=319 => i as i64 + 1_000,
            _ => i as i64,
        } + 100;
        let ts = annals_core::Timestamp::from_millis((1_700_000_000 + secs) * 1000);
        let stream = i % 11;
        let version = i / 11 + 1;
        text.push_str(&format!(
            r#"{{"position":{p},"id":"e-{i}","aggregateId":"s-{stream}","aggregate":null,"context":null,"version":{version},"type":"E","timestamp":"{ts}","payload":{{"i":{i}}},"metadata":null,"commitId":"c-{i}","commitSequence":0,"dispatched":false}}"#,
            p = i + 1
        ));
        text.push('\n');
        keys.push((secs, i + 1));
    }
    std::fs::write(path, text).unwrap();
    keys.sort();
    keys
}

/// Imports the file through `base`, pours with a small buffer, checks the order.
fn import_and_pour(base: impl Fn() -> Command, file: &Path, want: &[(i64, u64)], on: &str) {
    ok(base().arg("create"));
    ok(base().arg("import").arg(file));
    let out = ok(base().args(["pour", "all", "--reorder-buffer", "16", "--batch", "25"]));
    let got: Vec<u64> = out
        .lines()
        .map(|l| match Message::from_json(l.as_bytes()).unwrap() {
            Message::Notification { event, .. } => event.position,
            other => panic!("{on}: {other:?}"),
        })
        .collect();
    let want: Vec<u64> = want.iter().map(|(_, p)| *p).collect();
    assert_eq!(got, want, "{on}: not in (timestamp, position) order");
}

#[test]
fn pour_all_orders_by_timestamp_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let want = ndjson(&file);

    // A server.
    let url = support::server_url();
    import_and_pour(
        || {
            let mut c = Command::cargo_bin("annals").unwrap();
            c.args(["--url", url, "--store", "pour-order"]);
            c
        },
        &file,
        &want,
        "http",
    );

    // A data directory, opened directly.
    let data = dir.path().join("data");
    import_and_pour(
        || {
            let mut c = Command::cargo_bin("annals").unwrap();
            c.env_remove("ANNALS_URL")
                .arg("--data")
                .arg(&data)
                .args(["--store", "pour-order"]);
            c
        },
        &file,
        &want,
        "embedded",
    );

    // PostgreSQL, opened directly.
    let Some(pg) = POSTGRES.available() else {
        return;
    };
    let schema = support::Schema::fresh(&pg);
    import_and_pour(
        || {
            let mut c = Command::cargo_bin("annals").unwrap();
            c.env_remove("ANNALS_URL").args([
                "--postgres",
                &pg,
                "--postgres-schema",
                schema.name(),
                "--store",
                "pour-order",
            ]);
            c
        },
        &file,
        &want,
        "postgres",
    );
}
