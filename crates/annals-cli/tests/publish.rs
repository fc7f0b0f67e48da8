//! `annals publish`, the outbox relay, as a process on a data directory: the backlog of
//! undispatched events goes out in position order as live notifications and is marked
//! dispatched, a second run sends nothing again, new commits go out next, a signal stops
//! it with the rest left for the next run, and into NATS JetStream every event arrives.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::ok;

use annals_channels::Message;
use assert_cmd::Command;
use serde_json::Value;

/// `annals --data DIR`, with no server location from the environment.
fn annals(data: &Path) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL")
        .env_remove("ANNALS_STORE")
        .arg("--data")
        .arg(data);
    c
}

/// The messages `publish --channel memory` printed: (position, replay) of each.
fn notifications(stdout: &str) -> Vec<(u64, bool)> {
    stdout
        .lines()
        .map(|l| match Message::from_json(l.as_bytes()).unwrap() {
            Message::Notification { event, replay, .. } => (event.position, replay),
            other => panic!("the outbox sends notifications only, not {other:?}"),
        })
        .collect()
}

fn append(data: &Path, events: &str) {
    ok(annals(data).args(["append", events]));
}

fn dispatched(data: &Path) -> Vec<bool> {
    ok(annals(data).args(["read", "--json"]))
        .0
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["dispatched"]
                .as_bool()
                .unwrap()
        })
        .collect()
}

#[test]
fn the_backlog_goes_out_once_in_order_then_new_commits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(annals(data).arg("create"));
    append(
        data,
        r#"[{"aggregateId":"a","type":"Opened"},{"aggregateId":"b","type":"Opened"}]"#,
    );
    append(data, r#"{"aggregateId":"a","type":"Closed"}"#);

    let (out, err) = ok(annals(data).args([
        "publish",
        "--channel",
        "memory",
        "--until-idle",
        "--batch",
        "2",
        "--json",
    ]));
    assert_eq!(notifications(&out), [(1, false), (2, false), (3, false)]);
    let summary: Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(summary["dispatched"], 3);
    assert_eq!(summary["lastDispatched"], 3);
    assert_eq!(dispatched(data), [true, true, true]);

    // Nothing is sent twice.
    let (out, _) = ok(annals(data).args(["publish", "--until-idle"]));
    assert_eq!(out, "");

    append(data, r#"{"aggregateId":"c","type":"Opened"}"#);
    let (out, err) = ok(annals(data).args(["publish", "--until-idle"]));
    assert_eq!(notifications(&out), [(4, false)]);
    assert!(err.contains("dispatched 1 event(s)"), "{err}");
    assert_eq!(dispatched(data), [true, true, true, true]);
}

#[test]
fn sigint_stops_the_relay_and_the_rest_waits_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(annals(data).arg("create"));
    append(data, r#"[{"aggregateId":"a"},{"aggregateId":"a"}]"#);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .env_remove("ANNALS_URL")
        .arg("--data")
        .arg(data)
        .args(["publish", "--channel", "memory"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..2 {
        stdout.read_line(&mut lines).unwrap();
    }
    assert_eq!(notifications(&lines), [(1, false), (2, false)]);
    // Give it time to mark the batch, then stop it while it follows live.
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped by SIGINT"), "{err}");
    assert_eq!(dispatched(data), [true, true]);
}

#[test]
fn into_nats_jetstream_every_event_arrives() {
    let Some(url) = annals_testkit::services::NATS.available() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(annals(data).arg("create"));
    let events: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"aggregateId":"s{}","type":"T","payload":{{"i":{i}}}}}"#,
                i % 4
            )
        })
        .collect();
    append(data, &format!("[{}]", events.join(",")));
    let subject = format!("annals.clipublish.{}", std::process::id());
    let (out, _) = ok(annals(data).args([
        "publish",
        "--channel",
        &url,
        "--topic",
        &subject,
        "--until-idle",
        "--json",
    ]));
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["dispatched"], 30);

    let messages = support::drain_jetstream(&url, &subject);
    assert_eq!(messages.len(), 30);
    for (seq, m) in (1..=30u64).zip(messages) {
        match m {
            Message::Notification { event, replay, .. } => {
                assert_eq!((event.position, replay), (seq, false));
            }
            other => panic!("not a notification: {other:?}"),
        }
    }
}
