//! The incremental-import routes over real HTTP on 127.0.0.1 (API.md "Incremental
//! import"): stage, commit, rollback, listing, conflicts and unknown ids.

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
    async fn begin(&self) -> String {
        let (status, body) = self.call(Method::POST, "/v1/stores/s/imports", None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["importId"].as_str().unwrap().to_owned()
    }

    async fn push(&self, id: &str, events: Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/stores/s/imports/{id}/events"),
            Some(json!({ "events": events })),
        )
        .await
    }

    async fn commit(&self, id: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/stores/s/imports/{id}/commit"),
            None,
        )
        .await
    }

    async fn events(&self) -> Vec<Value> {
        let (status, body) = self.call(Method::GET, "/v1/stores/s/events", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["events"].as_array().unwrap().clone()
    }
}

fn event(stream: &str, second: u32, payload: u32) -> Value {
    json!({
        "aggregateId": stream,
        "type": "T",
        "timestamp": format!("2024-05-01T10:00:{second:02}.000Z"),
        "payload": {"n": payload},
    })
}

#[tokio::test]
async fn two_pushes_commit_in_timestamp_then_staging_order_with_next_versions() {
    let s = start().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [event("a", 1, 0)]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let id = s.begin().await;
    let (status, body) = s
        .push(&id, json!([event("a", 30, 3), event("b", 10, 1)]))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // Same timestamp as the first staged event: staging order breaks the tie.
    let (status, body) = s
        .push(&id, json!([event("a", 30, 4), event("a", 20, 2)]))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"imports": [{"importId": id, "stagedCount": 4}]})
    );

    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 4);
    assert_eq!(body["skipped"], 0);
    assert_eq!(body["headPosition"], 5);

    let events = s.events().await;
    let got: Vec<(String, u64, u64)> = events
        .iter()
        .map(|e| {
            (
                e["aggregateId"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
                e["payload"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 1, 0),
            ("b".into(), 1, 1),
            ("a".into(), 2, 2),
            ("a".into(), 3, 3),
            ("a".into(), 4, 4),
        ]
    );
    // The commit closed the import.
    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "import_not_found");
    s.stop().await;
}

#[tokio::test]
async fn staged_copies_of_stored_events_are_skipped() {
    let s = start().await;
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [event("a", 1, 1), event("a", 2, 2)]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = s.begin().await;
    let (status, _) = s
        .push(
            &id,
            json!([event("a", 1, 1), event("a", 2, 2), event("a", 3, 3)]),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["imported"].as_u64(), body["skipped"].as_u64()),
        (Some(1), Some(2))
    );
    let events = s.events().await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[2]["version"], 3);
    assert_eq!(events[2]["payload"]["n"], 3);
    s.stop().await;
}

#[tokio::test]
async fn a_staged_event_older_than_the_newest_stored_one_is_an_import_conflict() {
    let s = start().await;
    let (status, _) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [event("a", 50, 1)]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = s.begin().await;
    s.push(&id, json!([event("b", 55, 2), event("c", 40, 3)]))
        .await;
    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "import_conflict");
    assert_eq!(body["error"]["index"], 1);
    // Nothing written, and the import is closed.
    assert_eq!(s.events().await.len(), 1);
    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "import_not_found");
    s.stop().await;
}

#[tokio::test]
async fn rollback_list_and_unknown_ids() {
    let s = start().await;
    let one = s.begin().await;
    let two = s.begin().await;
    let three = s.begin().await;
    s.push(&one, json!([event("a", 1, 1)])).await;
    // A staged event without a timestamp gets the staging time.
    let (status, body) = s
        .push(&two, json!([{"aggregateId": "x", "type": "T"}]))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut listed: Vec<(String, u64)> = body["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["importId"].as_str().unwrap().to_owned(),
                i["stagedCount"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![(one.clone(), 1), (two.clone(), 1), (three.clone(), 0)];
    expected.sort();
    assert_eq!(listed, expected);

    // Rolling one back.
    let (status, _) = s
        .call(Method::DELETE, &format!("/v1/stores/s/imports/{one}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s
        .call(Method::DELETE, &format!("/v1/stores/s/imports/{one}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "import_not_found");
    assert_eq!(body["error"]["id"], one.as_str());
    let (status, body) = s.push(&one, json!([event("a", 1, 1)])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "import_not_found");

    // The one without a timestamp commits with the staging time.
    let (status, body) = s.commit(&two).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 1);
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    assert!(events[0]["timestamp"].as_str().unwrap().starts_with("20"));

    // Rolling back every open import.
    let (status, _) = s.call(Method::DELETE, "/v1/stores/s/imports", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
    assert_eq!(body, json!({"imports": []}));
    let (status, _) = s.commit(&three).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(s.events().await.len(), 1);

    // Unknown store.
    let (status, body) = s.call(Method::POST, "/v1/stores/nope/imports", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "store_not_found");
    s.stop().await;
}

#[tokio::test]
async fn bad_pushes_are_refused_naming_the_field() {
    let s = start().await;
    let id = s.begin().await;
    let mut with_version = event("a", 1, 1);
    with_version["version"] = json!(1);
    let (status, body) = s.push(&id, json!([event("a", 1, 1), with_version])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["field"], "events[1].version");
    let (status, body) = s.push(&id, json!([{"type": "T"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "events[0].aggregateId");
    // Nothing of a refused push is staged.
    let (_, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
    assert_eq!(body["imports"][0]["stagedCount"], 0);
    s.stop().await;
}

#[tokio::test]
async fn open_imports_are_limited_per_store_and_dropped_with_the_store() {
    let s = start().await;
    for _ in 0..64 {
        s.begin().await;
    }
    let (status, body) = s.call(Method::POST, "/v1/stores/s/imports", None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "limit_exceeded");
    assert_eq!(body["error"]["limit"], "maxOpenImports");

    let (status, _) = s.call(Method::DELETE, "/v1/stores/s", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.call(Method::PUT, "/v1/stores/s", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
    assert_eq!(body, json!({"imports": []}));
    s.stop().await;
}

#[tokio::test]
async fn a_commit_while_the_store_is_frozen_is_allowed() {
    let s = start().await;
    let id = s.begin().await;
    s.push(&id, json!([event("a", 1, 1)])).await;
    let (status, _) = s.call(Method::POST, "/v1/stores/s/freeze", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // Imports are the maintenance path: they run while the store is frozen.
    let (status, body) = s.commit(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 1);
    assert_eq!(s.events().await.len(), 1);
    // An ordinary append is still refused.
    let (status, body) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [event("a", 2, 2)]})),
        )
        .await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn an_import_cannot_be_opened_on_a_dropped_store() {
    let s = start().await;
    let (status, _) = s.call(Method::DELETE, "/v1/stores/s", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.call(Method::POST, "/v1/stores/s/imports", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "store_not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_opened_while_the_store_is_dropped_never_outlive_it() {
    let s = std::sync::Arc::new(start().await);
    for round in 0..20 {
        if round > 0 {
            let (status, _) = s.call(Method::PUT, "/v1/stores/s", None).await;
            assert_eq!(status, StatusCode::CREATED);
        }
        let begins: Vec<_> = (0..8)
            .map(|_| {
                let s = std::sync::Arc::clone(&s);
                tokio::spawn(
                    async move { s.call(Method::POST, "/v1/stores/s/imports", None).await },
                )
            })
            .collect();
        let (status, _) = s.call(Method::DELETE, "/v1/stores/s", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        for begin in begins {
            let (status, body) = begin.await.unwrap();
            // Before the drop: opened (and gone with the store); after: no store.
            assert!(
                status == StatusCode::CREATED
                    || (status == StatusCode::NOT_FOUND
                        && body["error"]["code"] == "store_not_found"),
                "{status} {body}"
            );
        }
        // A new store of the same name starts without any of them.
        let (status, _) = s.call(Method::PUT, "/v1/stores/s", None).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, body) = s.call(Method::GET, "/v1/stores/s/imports", None).await;
        assert_eq!(body, json!({"imports": []}), "round {round}");
        let (status, _) = s.call(Method::DELETE, "/v1/stores/s", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let s = std::sync::Arc::into_inner(s).unwrap();
    s.stop().await;
}
