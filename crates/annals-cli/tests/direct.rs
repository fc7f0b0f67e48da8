//! The `annals` binary as a process on stores opened directly (`--data DIR`): every
//! store verb works without a server, locations are exclusive, `--json` prints JSON
//! lines everywhere, and errors are one line naming the field.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::ok;
use support::signal;

use assert_cmd::Command;
use serde_json::Value;

/// `annals --data DIR --store STORE`, with no server location from the environment.
fn annals(data: &Path, store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL")
        .env_remove("ANNALS_STORE")
        .arg("--data")
        .arg(data)
        .args(["--store", store]);
    c
}

/// The exit code and the standard error of a command that must fail with one line.
fn fails(c: &mut Command) -> (i32, String) {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("annals: "), "{err}");
    (out.status.code().unwrap(), err)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn one_json(text: &str) -> Value {
    let mut lines = json_lines(text);
    assert_eq!(lines.len(), 1, "{text}");
    lines.remove(0)
}

#[test]
fn store_verbs_work_on_a_data_directory_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // A missing store is not found, as a server answers; `create` makes it.
    let (code, err) = fails(annals(data, "s").arg("describe"));
    assert_eq!(code, 2);
    assert!(err.contains("store not found"), "{err}");
    assert_eq!(ok(annals(data, "s").arg("create")).0, "created store s\n");
    let (code, err) = fails(annals(data, "s").arg("create"));
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");

    let appended = json_lines(
        &ok(annals(data, "s").args([
            "append",
            "--json",
            r#"[{"aggregateId":"acc-1","aggregate":"account","type":"Opened","payload":{"owner":"ann"}},
                {"aggregateId":"acc-1","aggregate":"account","type":"Deposited","payload":{"amount":5}}]"#,
        ]))
        .0,
    );
    assert_eq!(appended.len(), 2);
    assert_eq!(appended[1]["position"], 2);
    ok(annals(data, "s")
        .args(["append", "--expected-version", "2"])
        .write_stdin(r#"{"aggregateId":"acc-1","aggregate":"account","type":"Withdrawn"}"#));

    let events = json_lines(&ok(annals(data, "s").args(["read", "--json"])).0);
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["payload"]["owner"], "ann");
    assert_eq!(events[2]["version"], 3);
    let (text, _) = ok(annals(data, "s").args(["read", "--type", "Deposited"]));
    assert!(
        text.contains("POSITION") && text.contains("Deposited"),
        "{text}"
    );

    let stream = one_json(&ok(annals(data, "s").args(["streams", "--json"])).0);
    assert_eq!(
        (stream["aggregateId"].as_str(), stream["version"].as_u64()),
        (Some("acc-1"), Some(3))
    );

    // The location flags work after the verb too.
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL")
        .args(["describe", "--json", "--store", "s", "--data"])
        .arg(data);
    let d = one_json(&ok(&mut c).0);
    assert_eq!(
        (
            d["eventCount"].as_u64(),
            d["headPosition"].as_u64(),
            d["frozen"].as_bool()
        ),
        (Some(3), Some(3), Some(false))
    );

    // Freeze and unfreeze, kept by the store between processes.
    assert_eq!(ok(annals(data, "s").arg("freeze")).0, "store s frozen\n");
    let (code, err) = fails(annals(data, "s").args(["append", r#"{"aggregateId":"b"}"#]));
    assert_eq!(code, 2);
    assert!(err.contains("frozen"), "{err}");
    let (code, _) = fails(annals(data, "s").arg("freeze"));
    assert_eq!(code, 2, "already frozen");
    let d = one_json(&ok(annals(data, "s").args(["describe", "--json"])).0);
    assert_eq!(d["frozen"], true);
    assert_eq!(
        ok(annals(data, "s").arg("unfreeze")).0,
        "store s unfrozen\n"
    );

    // Keyed snapshots.
    ok(annals(data, "s").args(["snapshot", "put", "k1", "state-1"]));
    ok(annals(data, "s")
        .args(["snapshot", "put", "k2"])
        .write_stdin("state-2"));
    assert_eq!(
        ok(annals(data, "s").args(["snapshot", "get", "k1"])).0,
        "state-1\n"
    );
    assert_eq!(ok(annals(data, "s").args(["snapshot", "ls"])).0, "k1\nk2\n");
    let listed = json_lines(&ok(annals(data, "s").args(["snapshot", "ls", "--json"])).0);
    assert_eq!(listed[1]["content"], "state-2");
    ok(annals(data, "s").args(["snapshot", "rm", "k1"]));
    let (code, _) = fails(annals(data, "s").args(["snapshot", "get", "k1"]));
    assert_eq!(code, 2);

    // Secrets, alone and with events in the same commit.
    let (text, _) = ok(annals(data, "s").args(["secret", "set", "user-1", "hunter2"]));
    assert_eq!(text, "secret user-1 stored at idx 0\n");
    assert_eq!(
        ok(annals(data, "s").args(["secret", "get", "user-1"])).0,
        "hunter2\n"
    );
    let (text, _) = ok(annals(data, "s")
        .args(["secret", "set", "user-2", "key-2", "--events", "-"])
        .write_stdin(r#"{"aggregateId": "user-2", "type": "SET_SECRET"}"#));
    assert!(
        text.contains("secret user-2 stored at idx 1 with 1 event(s)")
            && text.contains("head position 4"),
        "{text}"
    );
    ok(annals(data, "s").args(["secret", "rm", "user-1"]));
    let got = one_json(&ok(annals(data, "s").args(["secret", "get", "user-1", "--json"])).0);
    assert_eq!(got["secret"], Value::Null);
    let (code, _) = fails(annals(data, "s").args(["secret", "set", "user-1", "again"]));
    assert_eq!(code, 2, "ids are never reused");
}

#[test]
fn store_verbs_print_one_json_object_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let json = |args: &[&str]| one_json(&ok(annals(data, "j").args(args)).0);
    assert_eq!(
        json(&["create", "--json"]),
        serde_json::json!({"store": "j", "created": true})
    );
    assert_eq!(
        json(&["freeze", "--json"]),
        serde_json::json!({"store": "j", "frozen": true})
    );
    assert_eq!(
        json(&["unfreeze", "--json"]),
        serde_json::json!({"store": "j", "frozen": false})
    );
    assert_eq!(
        json(&["snapshot", "put", "k1", "state-1", "--json"]),
        serde_json::json!({"key": "k1", "saved": true})
    );
    assert_eq!(
        json(&["snapshot", "rm", "k1", "--json"]),
        serde_json::json!({"key": "k1", "deleted": true})
    );
    assert_eq!(
        json(&["secret", "set", "user-1", "hunter2", "--json"]),
        serde_json::json!({"idx": 0, "id": "user-1"})
    );
    assert_eq!(
        json(&["secret", "rm", "user-1", "--json"]),
        serde_json::json!({"id": "user-1", "deleted": true})
    );
    let with_events = one_json(
        &ok(annals(data, "j")
            .args([
                "secret", "set", "user-2", "key-2", "--json", "--events", "-",
            ])
            .write_stdin(r#"{"aggregateId": "user-2", "type": "SET_SECRET"}"#))
        .0,
    );
    assert_eq!(
        (
            &with_events["idx"],
            &with_events["id"],
            &with_events["eventCount"],
            &with_events["headPosition"]
        ),
        (
            &Value::from(1),
            &Value::from("user-2"),
            &Value::from(1),
            &Value::from(1)
        )
    );
    assert!(with_events["commitId"].is_string(), "{with_events}");
}

#[test]
fn two_locations_are_one_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (code, err) = fails(annals(data, "s").args(["--url", "http://127.0.0.1:9", "describe"]));
    assert_eq!(code, 1);
    assert!(err.contains("--url and --data"), "{err}");
    let (code, err) = fails(annals(data, "s").args([
        "read",
        "--postgres",
        "postgres://postgres@127.0.0.1:5432/test",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("--data and --postgres"), "{err}");
    let (code, err) = fails(annals(data, "s").args(["--postgres-schema", "x", "describe"]));
    assert_eq!(code, 1);
    assert!(err.contains("--postgres-schema"), "{err}");
    let (code, err) = fails(annals(data, "s").args(["copy", "--from", "a", "--to", "b"]));
    assert_eq!(code, 1);
    assert!(err.contains("--from and --to"), "{err}");
    // A store name never leaves the data directory.
    let (code, err) = fails(annals(data, "../escape").arg("create"));
    assert_eq!(code, 1);
    assert!(err.contains("not a store name"), "{err}");

    // A server URL from the environment gives way to --data.
    ok(annals(data, "s").arg("create"));
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env("ANNALS_URL", "http://127.0.0.1:9")
        .args(["describe", "--store", "s", "--data"])
        .arg(data);
    ok(&mut c);
}

#[test]
fn tail_on_a_data_directory_catches_up_and_ends_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(annals(data, "t").arg("create"));
    ok(annals(data, "t").args([
        "append",
        r#"[{"aggregateId":"a","type":"One"},{"aggregateId":"a","type":"Two"},{"aggregateId":"b","type":"Three"}]"#,
    ]));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .env_remove("ANNALS_URL")
        .arg("--data")
        .arg(data)
        .args(["--store", "t", "tail", "--after", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut types = Vec::new();
    for _ in 0..2 {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        types.push(line["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(types, ["Two", "Three"]);
    // Caught up: now it waits for live events, until Ctrl-C.
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), "INT");
    let status = child.wait().unwrap();
    assert!(lines.next().is_none(), "nothing after the catch-up");
    assert_eq!(status.code(), Some(0), "tail ends cleanly on SIGINT");
    // The store was closed: another process can open it.
    let d = one_json(&ok(annals(data, "t").args(["describe", "--json"])).0);
    assert_eq!(d["eventCount"], 3);
}

#[test]
fn maintenance_summaries_are_json_lines_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    ok(annals(data, "src").arg("create"));
    ok(annals(data, "src").args([
        "append",
        r#"[{"aggregateId":"a","type":"T","timestamp":"2030-01-01T00:00:01Z"},
            {"aggregateId":"b","type":"T","timestamp":"2030-01-01T00:00:02Z"}]"#,
    ]));
    ok(annals(data, "src").args(["secret", "set", "user-1", "k1"]));
    ok(annals(data, "src").args(["snapshot", "put", "p", "{}"]));

    // To a file: the summary is on standard output.
    let file = data.join("events.ndjson");
    let (out, err) = ok(annals(data, "src")
        .args(["export", "--json", "--output"])
        .arg(&file));
    assert_eq!(err, "");
    let s = one_json(&out);
    assert_eq!(
        (&s["events"], &s["position"], &s["end"]),
        (&Value::from(2), &Value::from(2), &Value::from(true))
    );
    assert!(
        s["cursor"].is_string() && s["bytes"].as_u64() > Some(0),
        "{s}"
    );
    // To standard output: the events there, the summary on standard error.
    let (out, err) = ok(annals(data, "src").args(["export", "--json", "--limit", "1"]));
    assert_eq!(json_lines(&out).len(), 1);
    let s = one_json(&err);
    assert_eq!(
        (&s["events"], &s["end"]),
        (&Value::from(1), &Value::from(false))
    );

    let s = one_json(&ok(annals(data, "dst").args(["import", "--json"]).arg(&file)).0);
    assert_eq!(
        (&s["imported"], &s["skipped"], &s["end"], &s["headPosition"]),
        (
            &Value::from(2),
            &Value::from(0),
            &Value::from(true),
            &Value::from(2)
        )
    );
    assert_eq!(
        s["byteOffset"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len())
    );

    let inc = data.join("inc.ndjson");
    std::fs::write(
        &inc,
        "{\"aggregateId\":\"c\",\"type\":\"T\",\"timestamp\":\"2030-01-01T00:00:03Z\"}\n",
    )
    .unwrap();
    let s = one_json(
        &ok(annals(data, "dst")
            .args(["import", "--incremental", "--json"])
            .arg(&inc))
        .0,
    );
    assert_eq!(
        s,
        serde_json::json!({"imported": 1, "skipped": 0, "headPosition": 3})
    );

    let secrets = data.join("secrets.ndjson");
    let s = one_json(
        &ok(annals(data, "src")
            .args(["secrets", "export", "--json", "--output"])
            .arg(&secrets))
        .0,
    );
    assert_eq!(
        s,
        serde_json::json!({"secrets": 1, "tombstones": 0, "nextIdx": 1})
    );
    let s = one_json(
        &ok(annals(data, "dst")
            .args(["secrets", "import", "--json"])
            .arg(&secrets))
        .0,
    );
    assert_eq!(
        (&s["imported"], &s["end"]),
        (&Value::from(1), &Value::from(true))
    );

    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL").args([
        "copy",
        "--json",
        "--from",
        &format!("{}#src", data.display()),
        "--to",
        &format!("{}#copy", data.display()),
    ]);
    let s = one_json(&ok(&mut c).0);
    assert_eq!(
        (
            &s["events"],
            &s["secrets"],
            &s["keyedSnapshots"],
            &s["verified"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(1),
            &Value::from(true)
        )
    );
    assert_eq!(s["source"], s["target"]);
    assert_eq!(s["source"]["events"], 2);
    assert!(s["source"]["eventsSha256"].is_string(), "{s}");
}

#[test]
fn pour_replays_a_data_directory_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for store in ["p1", "p2"] {
        ok(annals(data, store).arg("create"));
    }
    ok(annals(data, "p1").args([
        "append",
        r#"[{"aggregateId":"a","type":"T","timestamp":"2030-01-01T00:00:01Z"},
            {"aggregateId":"b","type":"T","timestamp":"2030-01-01T00:00:03Z"}]"#,
    ]));
    ok(annals(data, "p2").args([
        "append",
        r#"{"aggregateId":"c","type":"T","timestamp":"2030-01-01T00:00:02Z"}"#,
    ]));
    let (out, err) = ok(annals(data, "p1").args(["pour", "all", "--json"]));
    assert_eq!(json_lines(&out).len(), 2);
    assert_eq!(one_json(&err)["pouredEventCount"], 2);
    let (out, _) = ok(annals(data, "p1").args(["pour", "stores", "p1", "p2"]));
    let ids: Vec<String> = json_lines(&out)
        .iter()
        .map(|m| {
            m["event"]["aggregateId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["a", "c", "b"], "merged in timestamp order: {out}");
    let (code, err) = fails(annals(data, "nope").args(["pour", "all"]));
    assert_eq!(code, 2);
    assert!(err.contains("store not found"), "{err}");
}
