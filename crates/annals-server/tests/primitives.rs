//! The store primitives added to the HTTP API, over real HTTP on 127.0.0.1: overwriting
//! appends, secrets written with events, batch dispatch marks, keyed-snapshot listing and
//! import, a stream's snapshots, and exports in `maintenanceMode=auto`.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::Running;

/// A server with the store `s`.
async fn start() -> Running {
    let running = support::start().await;
    running.create("s").await;
    running
}

impl Running {
    async fn events(&self) -> Vec<Value> {
        let (status, body) = self.call(Method::GET, "/v1/stores/s/events", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().clone()
    }

    async fn frozen(&self) -> bool {
        let (_, body) = self.call(Method::GET, "/v1/stores/s", None).await;
        body["frozen"].as_bool().unwrap()
    }
}

fn event(stream: &str, event_type: &str, payload: Value) -> Value {
    json!({"aggregateId": stream, "type": event_type, "payload": payload})
}

#[tokio::test]
async fn an_overwriting_append_answers_the_replaced_events_at_their_positions() {
    let s = start().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [
                event("a", "Opened", json!({"owner": "ann"})),
                event("b", "Opened", json!({})),
                event("a", "Deposited", json!({"amount": 5})),
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let fix =
        json!({"aggregateId": "a", "version": 1, "type": "Opened", "payload": {"owner": "bob"}});
    let new = event("a", "Withdrawn", json!({"amount": 1}));
    // Without overwrite the stored version conflicts.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [fix.clone()]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "version_conflict");

    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"overwrite": true, "commitId": "fix-1", "events": [fix, new]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let answered: Vec<(u64, u64, &str)> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["version"].as_u64().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(answered, [(1, 1, "Opened"), (4, 3, "Withdrawn")]);
    assert_eq!(body["events"][0]["payload"], json!({"owner": "bob"}));
    assert_eq!(body["events"][0]["commitId"], "fix-1");
    assert_eq!(body["headPosition"], 4);

    let stored = s.events().await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0]["payload"], json!({"owner": "bob"}));
    assert_eq!(stored[2]["aggregateId"], "b");
    assert_eq!(stored[3]["type"], "Withdrawn");
    s.stop().await;
}

#[tokio::test]
async fn secrets_are_set_and_deleted_in_the_same_commit_as_their_events() {
    let s = start().await;
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/stores/s/secrets/user-1",
            Some(json!({"secret": "k1", "commitId": "c-set", "events": [
                event("user-1", "SET_SECRET", json!({"id": "user-1"})),
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((&body["id"], &body["idx"]), (&json!("user-1"), &json!(0)));
    assert_eq!(body["commitId"], "c-set");
    assert_eq!(body["headPosition"], 1);
    assert_eq!(body["events"][0]["type"], "SET_SECRET");

    // Refused secret: the events are not stored either.
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/stores/s/secrets/user-1",
            Some(json!({"secret": "k2", "events": [event("user-1", "SET_SECRET", json!({}))]})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "secret_already_exists");
    assert_eq!(s.events().await.len(), 1);

    // The append-body extension does the same on POST /events.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(
                json!({"secret": {"id": "user-2", "secret": "k2"}, "events": [
                    event("user-2", "SET_SECRET", json!({})),
                ]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["secret"],
        json!({"idx": 1, "id": "user-2", "secret": "k2"})
    );

    // Delete with events: the append answer, 200.
    let (status, body) = s
        .call(
            Method::DELETE,
            "/v1/stores/s/secrets/user-1",
            Some(json!({"events": [event("user-1", "DELETE_SECRET", json!({}))]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["type"], "DELETE_SECRET");
    assert_eq!(body["events"][0]["position"], 3);
    assert_eq!(
        body["secret"],
        json!({"idx": 0, "id": "user-1", "secret": null})
    );
    let (_, body) = s
        .call(Method::GET, "/v1/stores/s/secrets/user-1", None)
        .await;
    assert_eq!(body["secret"], Value::Null);

    // Deleting again: 404 and nothing appended.
    let (status, body) = s
        .call(
            Method::DELETE,
            "/v1/stores/s/secrets/user-1",
            Some(json!({"events": [event("user-1", "DELETE_SECRET", json!({}))]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "secret_not_found");
    assert_eq!(s.events().await.len(), 3);

    // The extension deletes too; a body naming both forms is refused.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"secret": {"id": "user-2", "delete": true}, "events": []})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["secret"]["secret"], Value::Null);
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"secret": {"id": "user-3", "secret": "x", "delete": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "secret.delete");

    // While frozen: 423, nothing written.
    s.call(Method::POST, "/v1/stores/s/freeze", None).await;
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/stores/s/secrets/user-4",
            Some(json!({"secret": "k4", "events": [event("user-4", "SET_SECRET", json!({}))]})),
        )
        .await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    let (_, body) = s.call(Method::GET, "/v1/stores/s", None).await;
    assert_eq!(
        (&body["eventCount"], &body["secretCount"]),
        (&json!(3), &json!(2))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_batch_carries_overwrites_and_secrets() {
    let s = start().await;
    s.call(
        Method::POST,
        "/v1/stores/s/events",
        Some(json!({"events": [event("a", "Old", json!(1))]})),
    )
    .await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events/batch",
            Some(json!({"appends": [
                {"overwrite": true, "events": [{"aggregateId": "a", "version": 1, "type": "New", "payload": 2}]},
                {"secret": {"id": "k", "secret": "v"}, "events": [event("k", "SET_SECRET", json!({}))]},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], 201, "{body}");
    assert_eq!(body["results"][0]["body"]["events"][0]["position"], 1);
    assert_eq!(body["results"][1]["status"], 201, "{body}");
    assert_eq!(body["results"][1]["body"]["secret"]["id"], "k");
    let stored = s.events().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["type"], "New");
    s.stop().await;
}

#[tokio::test]
async fn events_are_marked_dispatched_by_position_all_or_nothing() {
    let s = start().await;
    s.call(
        Method::POST,
        "/v1/stores/s/events",
        Some(json!({"events": [event("a", "A", json!(1)), event("a", "B", json!(2)), event("a", "C", json!(3))]})),
    )
    .await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events/dispatched",
            Some(json!({"positions": [1, 4]})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "event_not_found");
    assert_eq!(body["error"]["id"], "position 4");
    let (_, body) = s
        .call(Method::GET, "/v1/stores/s/events?dispatched=true", None)
        .await;
    assert_eq!(body["events"], json!([]));

    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events/dispatched",
            Some(json!({"positions": [3, 1, 3]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let dispatched: Vec<bool> = s
        .events()
        .await
        .iter()
        .map(|e| e["dispatched"].as_bool().unwrap())
        .collect();
    assert_eq!(dispatched, [true, false, true]);
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events/dispatched",
            Some(json!({"positions": "all"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn keyed_snapshots_are_listed_in_key_order_and_imported_with_their_timestamps() {
    let s = start().await;
    for key in ["b", "import", "a", "c"] {
        let (status, _) = s
            .call(
                Method::PUT,
                &format!("/v1/stores/s/snapshot-keys/{key}"),
                Some(json!({"content": format!("content of {key}")})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, body) = s
        .call(Method::GET, "/v1/stores/s/snapshot-keys?limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys = |b: &Value| -> Vec<String> {
        b["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&body), ["a", "b"]);
    assert_eq!(body["nextStartAfter"], "b");
    assert_eq!(body["snapshots"][0]["content"], "content of a");
    let (_, body) = s
        .call(Method::GET, "/v1/stores/s/snapshot-keys?startAfter=b", None)
        .await;
    assert_eq!(keys(&body), ["c", "import"]);
    assert_eq!(body["nextStartAfter"], Value::Null);
    // A key called `import` is still a key.
    let (status, body) = s
        .call(Method::GET, "/v1/stores/s/snapshot-keys/import", None)
        .await;
    assert_eq!(
        (status, &body["content"]),
        (StatusCode::OK, &json!("content of import"))
    );

    // Import keeps the timestamps and replaces same keys; allowed while frozen.
    s.call(Method::POST, "/v1/stores/s/freeze", None).await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/snapshot-keys/import",
            Some(json!({"snapshots": [
                {"key": "a", "content": "new a", "timestamp": "2020-01-02T03:04:05.678Z"},
                {"key": "d", "content": "d", "timestamp": "2021-01-01T00:00:00.000Z"},
            ]})),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"imported": 2})));
    let (_, body) = s
        .call(Method::GET, "/v1/stores/s/snapshot-keys/a", None)
        .await;
    assert_eq!(
        body,
        json!({"key": "a", "content": "new a", "timestamp": "2020-01-02T03:04:05.678Z"})
    );
    // All or nothing: a key twice refuses the whole import.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/snapshot-keys/import",
            Some(json!({"snapshots": [
                {"key": "e", "content": "e", "timestamp": 0},
                {"key": "e", "content": "e", "timestamp": 0},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = s
        .call(Method::GET, "/v1/stores/s/snapshot-keys/e", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn a_streams_snapshots_are_listed_oldest_save_first() {
    let s = start().await;
    for (stream, version) in [("a", 5), ("b", 1), ("a", 2), ("a", 9)] {
        let (status, body) = s
            .call(
                Method::POST,
                "/v1/stores/s/snapshots",
                Some(json!({"aggregateId": stream, "aggregate": "acc", "streamVersion": version, "data": {"v": version}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = s
        .call(
            Method::GET,
            "/v1/stores/s/snapshots?aggregateId=a&aggregate=acc",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let versions: Vec<u64> = body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["streamVersion"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [5, 2, 9]);
    assert_eq!(body["snapshots"][0]["data"], json!({"v": 5}));
    // Another stream (no aggregate) has none.
    let (_, body) = s
        .call(Method::GET, "/v1/stores/s/snapshots?aggregateId=a", None)
        .await;
    assert_eq!(body["snapshots"], json!([]));
    let (status, _) = s.call(Method::GET, "/v1/stores/s/snapshots", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_export_unfreezes_at_its_end_and_refuses_a_frozen_store() {
    let s = start().await;
    let events: Vec<Value> = (0..2500).map(|i| event("a", "E", json!(i))).collect();
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({ "events": events })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut resp = s
        .http
        .get(format!(
            "{}/v1/stores/s/events/export?maintenanceMode=auto",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // (That the store is frozen mid-body, also when the body fails or the client goes
    // away, is tested in the crate, where a store can hold the body at a page.)
    let mut text = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        text.extend_from_slice(&chunk);
    }
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 2500);
    // The freeze is lifted before the body's end goes out.
    assert!(!s.frozen().await);

    // A store frozen by hand: 409 already_frozen, as for an auto import, and it stays
    // frozen.
    s.call(Method::POST, "/v1/stores/s/freeze", None).await;
    let (status, body) = s
        .call(
            Method::GET,
            "/v1/stores/s/events/export?maintenanceMode=auto",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "already_frozen");
    let import = s
        .http
        .post(format!(
            "{}/v1/stores/s/events/import?maintenanceMode=auto",
            s.url
        ))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(import.status(), StatusCode::CONFLICT);
    assert!(s.frozen().await);
    // Manual (the default) does nothing implicit.
    let (status, _) = s
        .call(
            Method::GET,
            "/v1/stores/s/events/export?maintenanceMode=manual&limit=1",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.frozen().await);
    let (status, _) = s
        .call(
            Method::GET,
            "/v1/stores/s/events/export?maintenanceMode=sometimes",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// `?echo=false` answers each appended event with what the store decided (position, id,
/// version, timestamp, commit id and sequence, dispatch mark) and nothing the client
/// sent; the stored events are the same as with the full answer.
#[tokio::test]
async fn brief_append_answers_leave_out_what_was_sent() {
    let server = start().await;
    let body = json!({"events": [
        {"aggregateId": "a", "type": "Opened", "payload": {"owner": "ann"}, "id": "e1"},
        {"aggregateId": "a", "type": "Renamed", "payload": {"owner": "bo"}}
    ]});
    let (status, brief) = server
        .call(Method::POST, "/v1/stores/s/events?echo=false", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{brief}");
    let first = &brief["events"][0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "commitId",
            "commitSequence",
            "dispatched",
            "id",
            "position",
            "timestamp",
            "version"
        ]
    );
    assert_eq!(
        (first["id"].as_str(), first["position"].as_u64()),
        (Some("e1"), Some(1))
    );
    assert_eq!(brief["events"][1]["version"], 2);
    assert_eq!(brief["headPosition"], 2);
    let stored = server.events().await;
    assert_eq!(stored[0]["payload"], json!({"owner": "ann"}));
    assert_eq!(stored[1]["timestamp"], brief["events"][1]["timestamp"]);
    assert_eq!(stored[1]["id"], brief["events"][1]["id"]);

    let batch = json!({"appends": [
        {"events": [{"aggregateId": "b", "type": "T", "payload": 1}]},
        {"events": [{"aggregateId": "a", "type": "T", "version": 1}]}
    ]});
    let (status, out) = server
        .call(
            Method::POST,
            "/v1/stores/s/events/batch?echo=false",
            Some(batch),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let ok = &out["results"][0];
    assert_eq!(ok["status"], 201);
    assert!(ok["body"]["events"][0].get("payload").is_none());
    assert_eq!(ok["body"]["events"][0]["position"], 3);
    assert_eq!(
        out["results"][1]["status"], 409,
        "a refused append keeps its error body"
    );
    assert_eq!(
        out["results"][1]["body"]["error"]["code"],
        "version_conflict"
    );

    let (status, full) = server
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [{"aggregateId": "c", "type": "T", "payload": [1]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        full["events"][0]["payload"],
        json!([1]),
        "echo defaults to true"
    );
    let (status, bad) = server
        .call(
            Method::POST,
            "/v1/stores/s/events?echo=maybe",
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    server.stop().await;
}

/// The raw text of an answer.
async fn raw(s: &Running, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let r = s
        .http
        .request(method, format!("{}{path}", s.url))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// Payloads and snapshot data go out byte for byte (API.md: "returned verbatim") from
/// every answer that carries them, not only from `POST /events` and `GET /events`.
#[tokio::test]
async fn answers_with_events_or_snapshots_keep_their_bytes() {
    let s = start().await;
    let payload = r#"{"b":1,"a":[1.0, 1e2]}"#;
    let (status, text) = raw(
        &s,
        Method::PUT,
        "/v1/stores/s/secrets/k1",
        &format!(
            r#"{{"secret":"x","events":[{{"aggregateId":"a","type":"T","payload":{payload}}}]}}"#
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    assert!(text.contains(payload), "PUT secret with events: {text}");
    let (status, text) = raw(
        &s,
        Method::DELETE,
        "/v1/stores/s/secrets/k1",
        &format!(r#"{{"events":[{{"aggregateId":"a","type":"T","payload":{payload}}}]}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(payload), "DELETE secret with events: {text}");

    let data = r#"{"z":1, "y":2.50}"#;
    let (status, text) = raw(
        &s,
        Method::POST,
        "/v1/stores/s/snapshots",
        &format!(r#"{{"aggregateId":"a","streamVersion":1,"data":{data}}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (status, text) = raw(&s, Method::GET, "/v1/stores/s/snapshots?aggregateId=a", "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(data), "GET /snapshots: {text}");
    s.stop().await;
}
