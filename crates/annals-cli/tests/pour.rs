//! `annals pour` as a process, against a server started by the test, pouring to
//! standard output (`--channel memory`) and into the real NATS server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_channels::Message;
use assert_cmd::Command;
use serde_json::Value;
use support::ok;

use support::server_url;

fn annals(store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.args(["--url", server_url(), "--store", store]);
    c
}

fn seed(store: &str) {
    ok(annals(store).arg("create"));
    ok(annals(store).args([
        "append",
        r#"[{"aggregateId":"acc-1","aggregate":"account","type":"Opened","timestamp":"2024-01-01T00:00:01Z"},
            {"aggregateId":"acc-2","aggregate":"account","type":"Opened","timestamp":"2024-01-01T00:00:02Z"}]"#,
    ]));
    ok(annals(store).args([
        "append",
        r#"{"aggregateId":"acc-1","aggregate":"account","type":"Deposited","payload":{"amount":5},"timestamp":"2024-01-01T00:00:04Z"}"#,
    ]));
    ok(annals(store).args([
        "append",
        r#"{"aggregateId":"acc-2","aggregate":"account","type":"Deposited","timestamp":"2024-01-01T00:00:03Z"}"#,
    ]));
}

fn messages(stdout: &str) -> Vec<Message> {
    stdout
        .lines()
        .map(|l| Message::from_json(l.as_bytes()).unwrap())
        .collect()
}

#[test]
fn pour_all_and_stream_to_stdout() {
    seed("p1");
    let (out, err) = ok(annals("p1").args(["pour", "all", "--channel", "memory", "--json"]));
    let got = messages(&out);
    let order: Vec<(String, String)> = got
        .iter()
        .map(|m| match m {
            Message::Notification {
                event,
                replay,
                store,
            } => {
                assert!(replay);
                assert_eq!(store, "p1");
                (
                    event.stream.id.clone(),
                    event.event_type.as_str().to_owned(),
                )
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let expect = [
        ("acc-1", "Opened"),
        ("acc-2", "Opened"),
        ("acc-2", "Deposited"),
        ("acc-1", "Deposited"),
    ];
    assert_eq!(order, expect.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let summary: Value = serde_json::from_str(err.trim()).unwrap();
    assert_eq!(summary["pouredEventCount"], 4);
    assert_eq!(summary["firstScannedAggregate"]["aggregateId"], "acc-1");
    assert_eq!(summary["lastScannedAggregate"]["aggregateId"], "acc-2");
    assert_eq!(summary["finished"], true);

    // A reorder buffer of one event: the same messages, in the same order.
    let (tight, _) = ok(annals("p1").args(["pour", "all", "--reorder-buffer", "1"]));
    assert_eq!(tight, out);

    // Resume after the second event: the last two only.
    let (out, _) = ok(annals("p1").args(["pour", "all", "--resume", "1704067202000.2"]));
    assert_eq!(messages(&out).len(), 2);

    let (out, _) = ok(annals("p1").args([
        "pour",
        "stream",
        "acc-1",
        "--aggregate",
        "account",
        "--reverse",
    ]));
    let versions: Vec<u64> = messages(&out)
        .iter()
        .map(|m| match m {
            Message::Notification { event, .. } => event.version,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(versions, [2, 1]);

    let bad = annals("p1")
        .args(["pour", "all", "--from", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from"));
}

#[test]
fn pour_ids_into_nats() {
    let Some(url) = annals_testkit::services::NATS.available() else {
        return;
    };
    seed("p2");
    let subject = format!("annals.clitest.{}", std::process::id());
    let (out, _) = ok(annals("p2").args([
        "pour",
        "ids",
        "--channel",
        &url,
        "--topic",
        &subject,
        "--rate",
        "50",
        "--json",
    ]));
    let summary: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["pouredAggregateIdCount"], 2);
    assert_eq!(summary["channel"], "nats");

    let messages = support::drain_jetstream(&url, &subject);
    assert_eq!(messages.len(), 2);
    let mut ids = Vec::new();
    for m in messages {
        assert!(m.replay());
        assert!(matches!(m, Message::AggregateExists { .. }));
        ids.push(m.stream().id.clone());
    }
    assert_eq!(ids, ["acc-1", "acc-2"]);
}
