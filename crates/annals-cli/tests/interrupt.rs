//! Signals during long verbs, as a process on a data directory with
//! `--maintenance-mode auto`: the store must not stay frozen, the exit code says which
//! signal stopped the verb, and resuming from the offset or cursor it printed completes
//! the work with nothing duplicated or lost.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;
use support::signal;
use support::stdout as ok;

use assert_cmd::Command;
use serde_json::Value;

fn annals(data: &Path, store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL")
        .arg("--data")
        .arg(data)
        .args(["--store", store]);
    c
}

fn spawn(data: &Path, store: &str, args: &[&str]) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .env_remove("ANNALS_URL")
        .arg("--data")
        .arg(data)
        .args(["--store", store])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn describe(data: &Path, store: &str) -> Value {
    serde_json::from_str(ok(annals(data, store).args(["describe", "--json"])).trim()).unwrap()
}

/// Writes `n` events of two per commit into the store `name` through the library.
fn seed(data: &Path, name: &str, n: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};
        let store = annals_embedded::EmbeddedStore::open(data.join(name)).unwrap();
        for chunk in 0..n / 500 {
            let events = (0..500)
                .map(|i| {
                    ProposedEvent::new(
                        "Deposited",
                        Json::from_raw(format!(
                            "{{\"amount\": {}, \"pad\": \"{}\"}}",
                            chunk * 500 + i,
                            "x".repeat(64)
                        )),
                    )
                })
                .collect();
            store
                .append_to_stream(
                    &StreamId::new(format!("acc-{}", chunk % 7)).with_aggregate("account"),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    });
}

/// The one line of standard error; the number after `flag` in it.
fn resume_point(stderr: &str, flag: &str) -> String {
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    stderr
        .split(flag)
        .nth(1)
        .unwrap_or_else(|| panic!("no {flag} in {stderr:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn sigint_stops_an_auto_import_unfrozen_and_it_resumes_from_the_printed_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 20_000);
    let full = ok(annals(data, "src").arg("export"));
    assert_eq!(full.lines().count(), 20_000);

    let mut child = spawn(
        data,
        "dst",
        &[
            "import",
            "--maintenance-mode",
            "auto",
            "--batch-size",
            "100",
            "--json",
        ],
    );
    // Half the file, cut inside a line; the import then waits for more input.
    let half = full.len() / 2 + 17;
    let mut stdin = child.stdin.take().unwrap();
    // Returns once the child has read all but a pipe buffer of it: it is importing.
    stdin.write_all(&full.as_bytes()[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    signal(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.starts_with("annals: interrupted by SIGINT: imported "),
        "{stderr}"
    );
    let offset: usize = resume_point(&stderr, "--from-offset ").parse().unwrap();
    assert!(offset > 0 && offset <= half, "{offset} of {half}");
    assert_eq!(
        full.as_bytes()[offset - 1],
        b'\n',
        "the offset starts a line"
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &summary["interrupted"],
            &summary["byteOffset"],
            &summary["end"]
        ),
        (
            &Value::from("SIGINT"),
            &Value::from(offset),
            &Value::from(false)
        )
    );

    let d = describe(data, "dst");
    assert_eq!(
        d["frozen"], false,
        "the interrupted import unfroze the store"
    );
    assert_eq!(
        d["eventCount"].as_u64(),
        Some(full[..offset].lines().count() as u64),
        "every line before the offset is stored, none after it"
    );

    let file = data.join("events.ndjson");
    std::fs::write(&file, &full).unwrap();
    ok(annals(data, "dst").arg("import").arg(&file).args([
        "--from-offset",
        &offset.to_string(),
        "--maintenance-mode",
        "auto",
    ]));
    assert_eq!(ok(annals(data, "dst").arg("export")), full);
    assert_eq!(describe(data, "dst")["frozen"], false);
}

#[test]
fn sigterm_stops_an_auto_export_unfrozen_and_it_resumes_from_the_printed_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 30_000);
    let full = ok(annals(data, "src").arg("export"));

    let mut child = spawn(data, "src", &["export", "--maintenance-mode", "auto"]);
    let mut stdout = child.stdout.take().unwrap();
    // The first bytes: the export is under way, and blocks on the pipe we do not read.
    let mut partial = vec![0u8; 1];
    stdout.read_exact(&mut partial).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), "TERM");
    stdout.read_to_end(&mut partial).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.starts_with("annals: interrupted by SIGTERM: exported "),
        "{stderr}"
    );
    let partial = String::from_utf8(partial).unwrap();
    assert!(partial.len() < full.len(), "the export stopped early");
    assert!(partial.ends_with('\n'), "the output ends with a whole line");
    assert!(full.starts_with(&partial));
    assert!(
        stderr.contains(&format!("exported {} event(s)", partial.lines().count())),
        "{stderr}"
    );
    assert_eq!(describe(data, "src")["frozen"], false);

    let cursor = resume_point(&stderr, "--cursor ");
    let rest = ok(annals(data, "src").args(["export", "--cursor", &cursor]));
    assert_eq!(partial + &rest, full, "nothing duplicated or lost");
}

#[test]
fn a_second_signal_abandons_an_export_and_still_unfreezes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 30_000);

    let mut child = spawn(data, "src", &["export", "--maintenance-mode", "auto"]);
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    // Standard output stays unread: the first signal cannot reach a safe point.
    signal(child.id(), "INT");
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), "INT");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdout);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("abandoned") && stderr.contains("not frozen"),
        "{stderr}"
    );
    assert_eq!(describe(data, "src")["frozen"], false);
}
