//! The `annals` binary as a process on a PostgreSQL database opened directly
//! (`--postgres URL --postgres-schema S`), in a fresh schema per test. Without a
//! reachable database the tests fail under `CI=true` and are skipped (loudly) elsewhere.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_testkit::services::POSTGRES;
use assert_cmd::Command;
use serde_json::Value;
use support::stdout as ok;

fn annals(url: &str, schema: &str, store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.env_remove("ANNALS_URL").args([
        "--postgres",
        url,
        "--postgres-schema",
        schema,
        "--store",
        store,
    ]);
    c
}

#[test]
fn append_read_describe_on_a_postgres_url() {
    let Some(url) = POSTGRES.available() else {
        return;
    };
    let schema = support::Schema::fresh(&url);
    let s = schema.name();

    let out = annals(&url, s, "orders").arg("describe").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a missing store is not found");
    assert!(String::from_utf8_lossy(&out.stderr).contains("store not found"));
    ok(annals(&url, s, "orders").arg("create"));
    let out = annals(&url, s, "orders").arg("create").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "creating twice is a conflict");

    ok(annals(&url, s, "orders").args([
        "append",
        r#"[{"aggregateId": "o-1", "type": "Placed", "payload": {"n": 1}},
            {"aggregateId": "o-1", "type": "Paid", "payload": {"n": 2}}]"#,
    ]));
    let out = annals(&url, s, "orders")
        .args([
            "append",
            "--expected-version",
            "1",
            r#"{"aggregateId": "o-1"}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a version conflict");

    let events: Vec<Value> = ok(annals(&url, s, "orders").args(["read", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "Placed");
    assert_eq!(events[1]["payload"]["n"], 2);

    let d: Value =
        serde_json::from_str(ok(annals(&url, s, "orders").args(["describe", "--json"])).trim())
            .unwrap();
    assert_eq!(
        (
            d["store"].as_str(),
            d["eventCount"].as_u64(),
            d["headPosition"].as_u64()
        ),
        (Some("orders"), Some(2), Some(2))
    );

    assert_eq!(
        ok(annals(&url, s, "orders").arg("freeze")),
        "store orders frozen\n"
    );
    let out = annals(&url, s, "orders")
        .args(["append", r#"{"aggregateId": "o-2"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a frozen store refuses appends");
    ok(annals(&url, s, "orders").arg("unfreeze"));

    // The maintenance verbs take the same location.
    let export = ok(annals(&url, s, "orders").arg("export"));
    assert_eq!(export.lines().count(), 2);
    ok(annals(&url, s, "copy")
        .arg("import")
        .write_stdin(export.clone()));
    assert_eq!(ok(annals(&url, s, "copy").arg("export")), export);
}
