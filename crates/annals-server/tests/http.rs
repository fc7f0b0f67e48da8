//! The server over real HTTP on 127.0.0.1: status codes, bodies and error bodies of
//! API.md, and live subscriptions as Server-Sent Events.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use annals_server::{ServeError, Server, ServerConfig};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::start;

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let s = start().await;
    let r = s.http.get(s.at("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok");
    s.call(Method::PUT, "/v1/stores/m", None).await;
    s.call(
        Method::POST,
        "/v1/stores/m/events",
        Some(json!({"events": [{"aggregateId": "a"}, {"aggregateId": "b"}]})),
    )
    .await;
    s.call(Method::GET, "/v1/stores/m/streams", None).await;
    let _live = s
        .http
        .get(s.at("/v1/stores/m/subscribe"))
        .send()
        .await
        .unwrap();
    let text = s
        .http
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "annals_appends_total 1",
        "annals_appended_events_total 2",
        "annals_subscriptions_open 1",
        "annals_http_requests_total",
        "annals_http_request_duration_seconds_count{route=\"POST /v1/stores/{store}/events\"} 1",
        "annals_http_request_duration_seconds_bucket{route=\"PUT /v1/stores/{store}\",le=\"+Inf\"} 1",
        "annals_reads_total 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    s.stop().await;
}

#[tokio::test]
async fn stores_are_created_described_and_dropped() {
    let s = start().await;
    let (st, b) = s.call(Method::PUT, "/v1/stores/a", None).await;
    assert_eq!((st, b), (StatusCode::CREATED, json!({"store": "a"})));
    let (st, b) = s.call(Method::PUT, "/v1/stores/a", None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "store_already_exists");
    let (st, b) = s.call(Method::GET, "/v1/stores/a", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["eventCount"], 0);
    assert_eq!(b["headPosition"], 0);
    assert_eq!(b["frozen"], false);
    let (st, _) = s.call(Method::DELETE, "/v1/stores/a", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = s.call(Method::GET, "/v1/stores/a", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "store_not_found");
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/nope/events",
            Some(json!({"events": []})),
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("store_not_found"))
    );
    // Re-created after a drop: positions start at 1 again.
    s.call(Method::PUT, "/v1/stores/a", None).await;
    let (_, b) = s
        .call(
            Method::POST,
            "/v1/stores/a/events",
            Some(json!({"events": [{"aggregateId": "x"}]})),
        )
        .await;
    assert_eq!(b["events"][0]["position"], 1);
    let (st, b) = s.call(Method::PUT, "/v1/stores/..bad", None).await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_request"))
    );
    s.stop().await;
}

#[tokio::test]
async fn stores_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let server = Server::bind(
            ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await
        .unwrap();
        let url = format!("http://{}/v1/stores/kept", server.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        if round == 0 {
            http.put(&url).send().await.unwrap();
            let r = http
                .post(format!("{url}/events"))
                .json(&json!({"events": [{"aggregateId": "x", "type": "T"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        } else {
            let b: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
            assert_eq!(b["eventCount"], 1);
        }
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn append_and_read_follow_api_md() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/s", None).await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({
                "commitId": "c-1",
                "expectedVersion": 0,
                "events": [
                    {"id": "e1", "aggregateId": "acc-1", "aggregate": "account", "type": "Opened",
                     "timestamp": "2024-05-01T10:00:00.000Z", "payload": {"owner": "ann"}},
                    {"aggregateId": "acc-1", "aggregate": "account", "type": "Deposited", "payload": {"amount": 5}}
                ]
            })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["commitId"], "c-1");
    assert_eq!(b["headPosition"], 2);
    let e = &b["events"][0];
    assert_eq!(e["id"], "e1");
    assert_eq!(e["aggregateId"], "acc-1");
    assert_eq!(e["aggregate"], "account");
    assert_eq!(e["context"], Value::Null);
    assert_eq!(e["version"], 1);
    assert_eq!(e["timestamp"], "2024-05-01T10:00:00.000Z");
    assert_eq!(e["commitSequence"], 0);
    assert_eq!(e["dispatched"], false);
    assert_eq!(b["events"][1]["version"], 2);

    // expectedVersion mismatch: 409 with the details API.md names.
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"expectedVersion": 1, "events": [{"aggregateId": "acc-1", "aggregate": "account"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "version_conflict");
    assert_eq!(b["error"]["aggregateId"], "acc-1");
    assert_eq!(b["error"]["currentVersion"], 2);
    assert!(b["error"]["message"].as_str().unwrap().contains("acc-1"));

    // An event without aggregateId is 400.
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/s/events",
            Some(json!({"events": [{"type": "T"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "invalid_request");
    assert_eq!(b["error"]["field"], "events[0].aggregateId");

    // Reads with filters, reverse, limit; nextCursor chains.
    let (st, b) = s
        .call(Method::GET, "/v1/stores/s/events?type=Deposited", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["events"].as_array().unwrap().len(), 1);
    assert_eq!(b["headPosition"], 2);
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/s/events?reverse=true&limit=1",
            None,
        )
        .await;
    assert_eq!(b["events"][0]["position"], 2);
    let (_, b) = s
        .call(Method::GET, "/v1/stores/s/events?limit=1", None)
        .await;
    let cursor = b["nextCursor"].as_str().unwrap().to_owned();
    let (_, b) = s
        .call(
            Method::GET,
            &format!("/v1/stores/s/events?cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(b["events"][0]["position"], 2);
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/s/events?aggregateId=acc-1&aggregateId=other&afterPosition=1",
            None,
        )
        .await;
    assert_eq!(b["events"].as_array().unwrap().len(), 1);
    // A position and a time window combine (API.md refused it; the store's reads allow
    // it, and a time-filtered read resumed from a position needs it).
    let (st, b) = s
        .call(
            Method::GET,
            "/v1/stores/s/events?afterPosition=1&fromTimestamp=2024-01-01T00:00:00.000Z",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert!(b["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["position"].as_u64() > Some(1)));
    let (st, _) = s
        .call(Method::GET, "/v1/stores/s/events?limit=many", None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Dispatched.
    let (st, _) = s
        .call(Method::POST, "/v1/stores/s/events/e1/dispatched", None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, b) = s
        .call(Method::GET, "/v1/stores/s/events?dispatched=true", None)
        .await;
    assert_eq!(b["events"][0]["id"], "e1");
    let (st, b) = s
        .call(Method::POST, "/v1/stores/s/events/none/dispatched", None)
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("event_not_found"))
    );

    // Export: NDJSON with the head position in a header.
    let r = s
        .http
        .get(s.at("/v1/stores/s/events/export?afterPosition=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-head-position"], "2");
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let positions: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, [2]);
    let text = s
        .http
        .get(s.at("/v1/stores/s/events/export?limit=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count(), 1);

    // Streams.
    let (st, b) = s
        .call(Method::GET, "/v1/stores/s/streams?aggregate=account", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["streams"][0]["aggregateId"], "acc-1");
    assert_eq!(b["streams"][0]["version"], 2);
    assert_eq!(b["streams"][0]["firstPosition"], 1);
    assert_eq!(b["hasMore"], false);
    s.call(
        Method::POST,
        "/v1/stores/s/events",
        Some(
            json!({"events": [{"aggregateId": "acc-2", "aggregate": "account"},
                               {"aggregateId": "acc-3", "aggregate": "account"}]}),
        ),
    )
    .await;
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/s/streams?aggregate=account&limit=1",
            None,
        )
        .await;
    assert_eq!(
        (&b["streams"][0]["aggregateId"], &b["hasMore"]),
        (&json!("acc-1"), &json!(true))
    );
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/s/streams?aggregate=account&limit=1&startAfter=acc-1",
            None,
        )
        .await;
    assert_eq!(b["streams"][0]["aggregateId"], "acc-2");
    let token = b["nextPageToken"].as_str().unwrap().to_owned();
    let (_, b) = s
        .call(
            Method::GET,
            &format!("/v1/stores/s/streams?aggregate=account&pageToken={token}"),
            None,
        )
        .await;
    assert_eq!(b["streams"][0]["aggregateId"], "acc-3");
    assert_eq!(b["hasMore"], false);
    let (st, _) = s
        .call(
            Method::GET,
            "/v1/stores/s/streams?aggregate=account&startAfter=nobody",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn freeze_refuses_appends_with_423() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/f", None).await;
    assert_eq!(
        s.call(Method::POST, "/v1/stores/f/freeze", None).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, b) = s.call(Method::POST, "/v1/stores/f/freeze", None).await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::CONFLICT, &json!("already_frozen"))
    );
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/f/events",
            Some(json!({"events": [{"aggregateId": "x"}]})),
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::LOCKED, &json!("store_frozen"))
    );
    assert_eq!(
        s.call(Method::POST, "/v1/stores/f/unfreeze", None).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, b) = s.call(Method::POST, "/v1/stores/f/unfreeze", None).await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::CONFLICT, &json!("not_frozen"))
    );
    s.stop().await;
}

#[tokio::test]
async fn snapshots_and_secrets() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/x", None).await;
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/x/snapshots",
            Some(json!({"aggregateId": "a", "streamVersion": 3, "data": {"balance": 5}})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["streamVersion"], 3);
    let (st, b) = s
        .call(
            Method::GET,
            "/v1/stores/x/snapshots/latest?aggregateId=a",
            None,
        )
        .await;
    assert_eq!((st, &b["data"]), (StatusCode::OK, &json!({"balance": 5})));
    let (st, b) = s
        .call(
            Method::GET,
            "/v1/stores/x/snapshots/latest?aggregateId=a&maxStreamVersion=2",
            None,
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("snapshot_not_found"))
    );
    let (_, b) = s
        .call(
            Method::DELETE,
            "/v1/stores/x/snapshots?aggregateId=a&keep=0",
            None,
        )
        .await;
    assert_eq!(b["deleted"], 1);

    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/stores/x/snapshot-keys/k%2F1",
            Some(json!({"content": "c"})),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, b) = s
        .call(Method::GET, "/v1/stores/x/snapshot-keys/k%2F1", None)
        .await;
    assert_eq!((&b["key"], &b["content"]), (&json!("k/1"), &json!("c")));
    assert_eq!(
        s.call(Method::DELETE, "/v1/stores/x/snapshot-keys/k%2F1", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.call(Method::GET, "/v1/stores/x/snapshot-keys/k%2F1", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let (st, b) = s
        .call(
            Method::PUT,
            "/v1/stores/x/secrets/u1",
            Some(json!({"secret": "s1"})),
        )
        .await;
    assert_eq!(
        (st, b),
        (StatusCode::CREATED, json!({"id": "u1", "idx": 0}))
    );
    let (st, b) = s
        .call(
            Method::PUT,
            "/v1/stores/x/secrets/u1",
            Some(json!({"secret": "s1"})),
        )
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::CONFLICT, &json!("secret_already_exists"))
    );
    assert_eq!(
        s.call(Method::DELETE, "/v1/stores/x/secrets/u1", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (st, b) = s
        .call(Method::DELETE, "/v1/stores/x/secrets/u1", None)
        .await;
    assert_eq!(
        (st, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("secret_not_found"))
    );
    let (_, b) = s.call(Method::GET, "/v1/stores/x/secrets/u1", None).await;
    assert_eq!(b, json!({"idx": 0, "id": "u1", "secret": null}));
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/x/secrets?includeDeleted=true",
            None,
        )
        .await;
    assert_eq!(b["secrets"].as_array().unwrap().len(), 1);
    let (_, b) = s.call(Method::GET, "/v1/stores/x/secrets", None).await;
    assert_eq!(b["secrets"], json!([]));
    let (_, b) = s.call(Method::GET, "/v1/stores/x", None).await;
    assert_eq!(
        (&b["secretCount"], &b["deletedSecretCount"]),
        (&json!(1), &json!(1))
    );
    s.stop().await;
}

/// Reads SSE messages `(id, event, data)` off a response until `n` events arrived.
async fn sse_events(resp: reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE message in time")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            let mut id = String::new();
            let mut data = String::new();
            let mut kind = String::new();
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                }
            }
            if kind == "event" {
                out.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

/// An idle subscription gets a keep-alive comment every `keep_alive` (15 s by default),
/// so a quiet stream stays distinguishable from a dead connection.
#[tokio::test]
async fn an_idle_subscription_gets_keep_alive_comments() {
    let s = support::start_with(|mut config| {
        config.keep_alive = Duration::from_millis(100);
        config
    })
    .await;
    s.create("idle").await;
    let resp = s
        .http
        .get(s.at("/v1/stores/idle/subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while text.matches("\n\n").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("a keep-alive within 5 s")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    // Three comment-only messages (lines starting with `:`), no event, and not sooner
    // than the interval allows.
    assert!(
        text.split("\n\n")
            .filter(|m| !m.is_empty())
            .all(|m| m.lines().all(|l| l.starts_with(':'))),
        "{text:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250), "{text:?}");
    drop(body);
    s.stop().await;
}

#[tokio::test]
async fn subscribe_catches_up_then_follows_live_and_resumes_with_last_event_id() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/live", None).await;
    let append = |t: &'static str| {
        s.call(
            Method::POST,
            "/v1/stores/live/events",
            Some(json!({"events": [{"aggregateId": "a", "type": t}]})),
        )
    };
    append("one").await;
    append("two").await;
    let resp = s
        .http
        .get(s.at("/v1/stores/live/subscribe?afterPosition=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = tokio::spawn(sse_events(resp, 2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    append("three").await;
    let got = reader.await.unwrap();
    assert_eq!(got[0].0, "2");
    assert_eq!(got[0].1["type"], "two");
    assert_eq!(got[1].0, "3");
    assert_eq!(got[1].1["type"], "three");

    // Last-Event-ID takes precedence over afterPosition.
    let resp = s
        .http
        .get(s.at("/v1/stores/live/subscribe?afterPosition=0"))
        .header("Last-Event-ID", "2")
        .send()
        .await
        .unwrap();
    let got = sse_events(resp, 1).await;
    assert_eq!(got[0].0, "3");
    let resp = s
        .http
        .get(s.at("/v1/stores/live/subscribe"))
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // An open subscription does not hold up shutdown.
    let _open = s
        .http
        .get(s.at("/v1/stores/live/subscribe"))
        .send()
        .await
        .unwrap();
    s.stop().await;
}

#[tokio::test]
async fn refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        Server::bind(ServerConfig::new(dir.path()).listen(SocketAddr::from(([0, 0, 0, 0], 0))))
            .await
            .err()
            .expect("binding 0.0.0.0 is refused");
    assert!(matches!(err, ServeError::NotLoopback(_)));
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn unknown_routes_and_bad_bodies_get_the_json_error_body() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/b", None).await;
    let r = s
        .http
        .post(s.at("/v1/stores/b/events"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_request");
    let r = s
        .http
        .post(s.at("/v1/stores/b/events"))
        .body(vec![b' '; 17 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "limit_exceeded");
    assert_eq!(b["error"]["limit"], "maxBodyBytes");
    let many: Vec<Value> = (0..100_001).map(|_| json!({"aggregateId": "a"})).collect();
    let (st, b) = s
        .call(
            Method::POST,
            "/v1/stores/b/events",
            Some(json!({ "events": many })),
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"]["limit"], "maxEventsPerAppend");
    let query: Vec<String> = (0..1001).map(|i| format!("type=t{i}")).collect();
    let (st, b) = s
        .call(
            Method::GET,
            &format!("/v1/stores/b/events?{}", query.join("&")),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b["error"]["limit"], "maxFilterValues");
    let (st, b) = s.call(Method::GET, "/v1/nothing", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(b["error"]["code"].is_string());
    s.stop().await;
}

/// Whether the documented path template `template` covers the concrete `path`.
fn covers(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t == p || t.starts_with('{'))
}

/// Both ways over HTTP: every documented operation is answered by a route (not 404
/// `route_not_found`, not 405), and on every documented path each method the document
/// does not list there answers 405, so no method is served undocumented. (That every
/// route of the router is documented at all is checked inside the crate, where the
/// router's own list of routes is at hand.)
#[tokio::test]
async fn every_operation_of_the_openapi_document_is_served_and_nothing_else() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/o", None).await;
    let (st, doc) = s.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{paths:?}");
    let concrete = |path: &str| {
        path.split('/')
            .map(|segment| match segment {
                "{store}" => "o",
                s if s.starts_with('{') => "x",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    for (path, methods) in paths {
        let at = concrete(path);
        // The methods documented for this concrete path, by any template covering it
        // (`/secrets/import` is also the secret `import` of `/secrets/{id}`).
        let documented: Vec<String> = paths
            .iter()
            .filter(|(template, _)| covers(template, &at))
            .flat_map(|(_, methods)| methods.as_object().unwrap().keys().cloned())
            .collect();
        for method in ["get", "put", "post", "delete", "patch"] {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = s.http.request(m, s.at(&at)).send().await.unwrap();
            let status = r.status();
            if !documented.iter().any(|d| d == method) {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {at} is served but not documented"
                );
                continue;
            }
            if !methods.as_object().unwrap().contains_key(method) {
                continue;
            }
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if at.ends_with("/subscribe") && status.is_success() {
                // A live stream: it never ends.
                continue;
            }
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("route_not_found"),
                "{method} {path} is documented but not served: {text}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn tokens_guard_every_v1_request() {
    let tokens =
        annals_server::Tokens::parse("# tokens\n\nrw-secret read-write\nro-secret read-only\n")
            .unwrap();
    let s = support::start_with(|mut config| {
        config.tokens = Some(tokens);
        config
    })
    .await;
    let send = |method: Method, path: &str, token: Option<&str>| {
        let mut r = s.http.request(method, s.at(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = send(Method::PUT, "/v1/stores/t", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "unauthorized");
    let r = send(Method::PUT, "/v1/stores/t", Some("wrong"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = send(Method::PUT, "/v1/stores/t", Some("ro-secret"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = send(Method::PUT, "/v1/stores/t", Some("rw-secret"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(Method::GET, "/v1/stores/t", Some("ro-secret"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(Method::GET, "/v1/openapi.json", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Operations endpoints need no token.
    assert_eq!(
        send(Method::GET, "/healthz", None).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        send(Method::GET, "/metrics", None).await.unwrap().status(),
        StatusCode::OK
    );
    s.stop().await;

    assert!(annals_server::Tokens::parse("only-a-token\n").is_err());
    assert!(annals_server::Tokens::parse("t admin\n").is_err());
    assert!(annals_server::Tokens::parse("# nothing\n").is_err());
}

#[tokio::test]
async fn with_tokens_a_non_loopback_address_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path()).listen(SocketAddr::from(([0, 0, 0, 0], 0)));
    config.tokens = Some(annals_server::Tokens::parse("t read-write").unwrap());
    let server = Server::bind(config).await.unwrap();
    assert!(server.local_addr().ip().is_unspecified());
}

#[tokio::test]
async fn a_batch_of_appends_answers_each_append_on_its_own() {
    let s = start().await;
    let (status, _) = s.call(reqwest::Method::PUT, "/v1/stores/b", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/v1/stores/b/events/batch",
            Some(json!({"appends": [
                {"expectedVersion": 0, "events": [{"aggregateId": "a", "type": "One", "payload": {"n": 1}}]},
                {"expectedVersion": 3, "events": [{"aggregateId": "b", "type": "Two", "payload": {}}]},
                {"events": [{"aggregateId": "", "type": "Bad", "payload": {}}]},
                {"events": [{"aggregateId": "d", "type": "Three", "payload": [1, 2]}, {"aggregateId": "d", "type": "Four", "payload": null}]}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["status"], 201, "{}", results[0]);
    assert_eq!(results[0]["body"]["events"][0]["version"], 1);
    assert_eq!(results[1]["status"], 409);
    assert_eq!(results[1]["body"]["error"]["code"], "version_conflict");
    assert_eq!(results[2]["status"], 400);
    assert_eq!(results[2]["body"]["error"]["code"], "invalid_request");
    assert_eq!(results[3]["status"], 201);
    assert_eq!(results[3]["body"]["events"].as_array().unwrap().len(), 2);
    // Only the accepted appends were stored: 3 events, positions dense.
    let (_, read) = s
        .call(reqwest::Method::GET, "/v1/stores/b/events", None)
        .await;
    let positions: Vec<u64> = read["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
    // A body that is not a batch is refused as a whole.
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/v1/stores/b/events/batch",
            Some(json!({"appends": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    s.stop().await;
}
