//! The `annals` binary as a process, against a server started by the test.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use support::stdout;

use assert_cmd::Command;
use serde_json::Value;

use support::server_url;

fn annals(store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.args(["--url", server_url(), "--store", store]);
    c
}

#[test]
fn create_append_read_describe_streams() {
    stdout(annals("s1").arg("create"));
    let out = stdout(annals("s1").args([
        "append",
        r#"[{"aggregateId":"acc-1","aggregate":"account","type":"Opened","payload":{"owner":"ann"}},
            {"aggregateId":"acc-1","aggregate":"account","type":"Deposited","payload":{"amount":5}}]"#,
    ]));
    assert!(out.contains("appended 2 event(s)"), "{out}");
    // From standard input, with an expected version.
    stdout(
        annals("s1")
            .args(["append", "--expected-version", "2"])
            .write_stdin(r#"{"aggregateId":"acc-1","aggregate":"account","type":"Withdrawn"}"#),
    );

    let out = stdout(annals("s1").args(["read", "--json"]));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["payload"]["owner"], "ann");
    assert_eq!(events[2]["type"], "Withdrawn");
    assert_eq!(events[2]["version"], 3);

    let out = stdout(annals("s1").args(["read", "--type", "Deposited"]));
    assert!(out.contains("POSITION"), "{out}");
    assert!(
        out.contains("Deposited") && !out.contains("Opened"),
        "{out}"
    );

    let out = stdout(annals("s1").args(["export", "--after", "1"]));
    let positions: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, [2, 3]);

    let out = stdout(annals("s1").args(["describe", "--json"]));
    let d: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (d["eventCount"].as_u64(), d["headPosition"].as_u64()),
        (Some(3), Some(3))
    );

    let out = stdout(annals("s1").args(["streams", "--json"]));
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (s["aggregateId"].as_str(), s["version"].as_u64()),
        (Some("acc-1"), Some(3))
    );
}

#[test]
fn conflicts_and_unknown_stores_exit_2_with_one_line() {
    stdout(annals("s2").arg("create"));
    let out = annals("s2")
        .args([
            "append",
            "--expected-version",
            "5",
            r#"{"aggregateId":"a"}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong expected version"), "{err}");

    let out = annals("nope").arg("describe").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("store not found"));

    stdout(annals("s2").arg("freeze"));
    let out = annals("s2").arg("freeze").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = annals("s2")
        .args(["append", r#"{"aggregateId":"a"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frozen"));
    stdout(annals("s2").arg("unfreeze"));
}

#[test]
fn usage_errors_exit_1_and_unreachable_servers_exit_3() {
    let out = annals("s3").arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = annals("s3").args(["append", "not json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::cargo_bin("annals")
        .unwrap()
        .args(["--url", "http://127.0.0.1:9", "describe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the server"));
    let help = stdout(Command::cargo_bin("annals").unwrap().arg("--help"));
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn tail_follows_live_events() {
    stdout(annals("s4").arg("create"));
    stdout(annals("s4").args(["append", r#"{"aggregateId":"a","type":"Old"}"#]));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .args([
            "--url",
            server_url(),
            "--store",
            "s4",
            "tail",
            "--json",
            "--count",
            "2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the subscription start at the current head, then append twice.
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdout(annals("s4").args(["append", r#"{"aggregateId":"a","type":"New1"}"#]));
    stdout(annals("s4").args(["append", r#"{"aggregateId":"a","type":"New2"}"#]));
    let lines: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    let types: Vec<_> = lines.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["New1", "New2"]);
}

#[test]
fn serve_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("annals")
        .unwrap()
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn serve_answers_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = support::serve([OsStr::new("--data"), dir.path().as_os_str()]);
    let out = Command::cargo_bin("annals")
        .unwrap()
        .args(["--url", &url, "--store", "x", "create"])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn snapshot_and_secret_verbs() {
    stdout(annals("s5").arg("create"));
    stdout(annals("s5").args(["snapshot", "put", "k1", "state-1"]));
    assert_eq!(
        stdout(annals("s5").args(["snapshot", "get", "k1"])),
        "state-1\n"
    );
    stdout(annals("s5").args(["snapshot", "rm", "k1"]));
    let out = annals("s5")
        .args(["snapshot", "get", "k1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = stdout(
        annals("s5")
            .args(["secret", "set", "user-1"])
            .write_stdin("hunter2\n"),
    );
    assert!(out.contains("idx 0"), "{out}");
    assert_eq!(
        stdout(annals("s5").args(["secret", "get", "user-1"])),
        "hunter2\n"
    );
    stdout(annals("s5").args(["secret", "rm", "user-1"]));
    assert_eq!(
        stdout(annals("s5").args(["secret", "get", "user-1"])),
        "(deleted)\n"
    );
    let out = annals("s5")
        .args(["secret", "set", "user-1", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serve_with_a_token_file_and_a_client_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, "# test\nsecret-1 read-write\n").unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = support::serve([
        OsStr::new("--data"),
        data.as_os_str(),
        OsStr::new("--token-file"),
        token_file.as_os_str(),
    ]);
    let without = Command::cargo_bin("annals")
        .unwrap()
        .env_remove("ANNALS_TOKEN")
        .args(["--url", &url, "describe"])
        .output()
        .unwrap();
    let with = Command::cargo_bin("annals")
        .unwrap()
        .env("ANNALS_TOKEN", "secret-1")
        .args(["--url", &url, "describe"])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(without.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&without.stderr).contains("unauthorized"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}

#[test]
fn snapshot_ls_pages_through_keys_in_order() {
    stdout(annals("s7").arg("create"));
    for key in ["k3", "k1", "k2"] {
        stdout(annals("s7").args(["snapshot", "put", key, &format!("state of {key}")]));
    }
    assert_eq!(
        stdout(annals("s7").args(["snapshot", "ls"])),
        "k1\nk2\nk3\n"
    );
    let out = annals("s7")
        .args(["snapshot", "ls", "--limit", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "k1\nk2\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--start-after \"k2\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(annals("s7").args(["snapshot", "ls", "--start-after", "k2"])),
        "k3\n"
    );
    let line = stdout(annals("s7").args(["snapshot", "ls", "--limit", "1", "--json"]));
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        (&v["key"], &v["content"]),
        (&json_str("k1"), &json_str("state of k1"))
    );
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

#[test]
fn secret_set_with_events_appends_them_in_the_same_commit() {
    stdout(annals("s8").arg("create"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(
        &file,
        r#"{"aggregateId": "user-1", "type": "SET_SECRET", "payload": {"id": "user-1"}}"#,
    )
    .unwrap();
    let out = stdout(annals("s8").args([
        "secret",
        "set",
        "user-1",
        "key-1",
        "--events",
        file.to_str().unwrap(),
    ]));
    assert!(
        out.contains("secret user-1 stored at idx 0 with 1 event(s)"),
        "{out}"
    );
    // Events from standard input.
    let out = stdout(
        annals("s8")
            .args(["secret", "set", "user-2", "key-2", "--events", "-"])
            .write_stdin(r#"[{"aggregateId": "user-2", "type": "SET_SECRET"}]"#),
    );
    assert!(
        out.contains("secret user-2 stored at idx 1 with 1 event(s)"),
        "{out}"
    );
    assert_eq!(
        stdout(annals("s8").args(["secret", "get", "user-2"])),
        "key-2\n"
    );
    let events: Vec<Value> = stdout(annals("s8").args(["read", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    // A used id: exit 2, and its events are not stored.
    let out = annals("s8")
        .args([
            "secret",
            "set",
            "user-1",
            "again",
            "--events",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stdout(annals("s8").args(["read", "--json"]))
            .lines()
            .count(),
        2
    );
    // The secret and the events cannot both come from standard input.
    let out = annals("s8")
        .args(["secret", "set", "user-3", "--events", "-"])
        .write_stdin("[]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn append_overwrite_replaces_an_event_in_place() {
    stdout(annals("s9").arg("create"));
    stdout(annals("s9").args([
        "append",
        r#"[{"aggregateId": "a", "type": "Opened", "payload": {"owner": "ann"}},
            {"aggregateId": "b", "type": "Opened"}]"#,
    ]));
    let fix =
        r#"{"aggregateId": "a", "version": 1, "type": "Opened", "payload": {"owner": "bob"}}"#;
    let out = annals("s9").args(["append", fix]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "without --overwrite: a conflict"
    );
    let out = stdout(annals("s9").args(["append", "--overwrite", "--json", fix]));
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&e["position"], &e["version"]),
        (&Value::from(1), &Value::from(1))
    );
    let events: Vec<Value> = stdout(annals("s9").args(["read", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["payload"]["owner"], "bob");
}

#[test]
fn append_errors_name_the_field_on_one_line() {
    stdout(annals("s10").arg("create"));
    let fails = |events: &str| -> String {
        let out = annals("s10").args(["append", events]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{events}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err:?}");
        err
    };
    let err = fails(r#"[{"aggregateId":"a"},{"aggregateId":"a","version":"2"}]"#);
    assert!(
        err.contains("events[1].version: must be a non-negative integer, not \"2\""),
        "{err}"
    );
    let err = fails(r#"{"aggregateId":"a","version":1.5}"#);
    assert!(err.contains("events[0].version"), "{err}");
    let err = fails(r#"{"aggregateId":"a","type":5}"#);
    assert!(
        err.contains("events[0].type: must be a string, not a number"),
        "{err}"
    );
    let err = fails(r#"{"aggregateId":"a","timestamp":"yesterday"}"#);
    assert!(err.contains("events[0].timestamp"), "{err}");
    let err = fails(r#"{"type":"T"}"#);
    assert!(err.contains("events[0].aggregateId: missing"), "{err}");
    let err = fails(r#"[{"aggregateId":"a"}, 7]"#);
    assert!(err.contains("events[1]: must be a JSON object"), "{err}");
    // Nothing was stored by the refused appends; `null` counts as absent.
    assert_eq!(stdout(annals("s10").args(["read", "--json"])), "");
    stdout(annals("s10").args(["append", r#"{"aggregateId":"a","version":null}"#]));
    stdout(annals("s10").args(["append", r#"{"aggregateId":"a","version":2}"#]));
}

#[test]
fn serve_with_a_smaller_body_limit_names_it_in_the_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = support::serve([
        OsStr::new("--max-body-bytes"),
        OsStr::new("2048"),
        OsStr::new("--data"),
        data.as_os_str(),
    ]);
    let append = |payload_bytes: usize| {
        let event = format!(
            r#"{{"aggregateId":"a","type":"T","payload":"{}"}}"#,
            "x".repeat(payload_bytes)
        );
        Command::cargo_bin("annals")
            .unwrap()
            .args(["--url", &url, "append", &event])
            .output()
            .unwrap()
    };
    let small = append(1000);
    let large = append(3000);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        small.status.success(),
        "{}",
        String::from_utf8_lossy(&small.stderr)
    );
    assert!(!large.status.success());
    let refusal = String::from_utf8_lossy(&large.stderr);
    assert!(
        refusal.contains("maxBodyBytes") && refusal.contains("2048"),
        "{refusal}"
    );
}
