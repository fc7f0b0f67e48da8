//! The data-maintenance routes over real HTTP on 127.0.0.1: NDJSON imports (batches,
//! where an import stops, resuming from `byteOffset`, bodies above the JSON body limit,
//! `maintenanceMode=auto`), `DELETE /events` and `DELETE /secrets`.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{start, Running};

impl Running {
    async fn export(&self, store: &str) -> Vec<u8> {
        let r = self
            .http
            .get(self.at(&format!("/v1/stores/{store}/events/export")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap().to_vec()
    }

    async fn events(&self, store: &str) -> Vec<Value> {
        let (st, b) = self
            .call(
                Method::GET,
                &format!("/v1/stores/{store}/events?limit=100000"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        b["events"].as_array().unwrap().clone()
    }

    async fn describe(&self, store: &str) -> Value {
        self.call(Method::GET, &format!("/v1/stores/{store}"), None)
            .await
            .1
    }
}

/// One event line as an export writes it.
fn line(id: &str, stream: &str, version: u64) -> String {
    json!({
        "position": 0, "id": id, "aggregateId": stream, "aggregate": "acc", "context": null,
        "version": version, "type": "T", "timestamp": "2024-05-01T10:00:00.000Z",
        "payload": {"id": id}, "metadata": null, "commitId": format!("c-{id}"),
        "commitSequence": 0, "dispatched": false
    })
    .to_string()
        + "\n"
}

async fn seed(s: &Running, store: &str, n: usize) {
    s.call(Method::PUT, &format!("/v1/stores/{store}"), None)
        .await;
    for i in 0..n {
        let (st, b) = s
            .call(
                Method::POST,
                &format!("/v1/stores/{store}/events"),
                Some(json!({"events": [
                    {"aggregateId": format!("a-{}", i % 3), "type": "Seeded", "payload": {"i": i}},
                    {"id": format!("id-{i}"), "aggregateId": "b", "payload": [i]}
                ]})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_into_an_empty_store_reproduces_it() {
    let s = start().await;
    seed(&s, "a", 10).await;
    let (st, _) = s
        .call(Method::POST, "/v1/stores/a/events/id-3/dispatched", None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let export = s.export("a").await;
    s.call(Method::PUT, "/v1/stores/b", None).await;
    let (st, b) = s
        .ndjson("/v1/stores/b/events/import?batchSize=7", export.clone())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"imported": 20, "skipped": 0, "byteOffset": export.len(),
               "unterminatedBytes": 0, "headPosition": 20})
    );
    assert_eq!(s.events("b").await, s.events("a").await);
    assert_eq!(s.export("b").await, export, "export of the copy");

    // The same body again with onConflict=skip is a no-op; with error it is a conflict.
    let (st, b) = s
        .ndjson("/v1/stores/b/events/import?onConflict=skip", export.clone())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        (b["imported"].clone(), b["skipped"].clone()),
        (json!(0), json!(20))
    );
    let (st, b) = s.ndjson("/v1/stores/b/events/import", export).await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "version_conflict");
    assert_eq!(
        (b["error"]["line"].clone(), b["error"]["byteOffset"].clone()),
        (json!(1), json!(0))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_stops_the_import_after_the_lines_before_it_and_resumes_from_its_offset() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let good: Vec<String> = (1..=5).map(|v| line(&format!("e{v}"), "s", v)).collect();
    let mut body = String::new();
    body.push_str(&good[0]);
    body.push_str(&good[1]);
    body.push('\n'); // a blank line counts for line numbers
    body.push_str(&good[2]);
    let bad_at = body.len();
    body.push_str("{\"id\":\"x\",\"aggregateId\":\n");
    body.push_str(&good[3]);
    body.push_str(&good[4]);
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?batchSize=2",
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let e = &b["error"];
    assert_eq!(e["code"], "invalid_request");
    assert_eq!(e["line"], 5);
    assert_eq!(e["byteOffset"], bad_at);
    assert_eq!(e["imported"], 3, "every event before the bad line is kept");
    assert!(e["field"].as_str().unwrap().starts_with("line 5"), "{e}");
    assert_eq!(s.events("m").await.len(), 3);

    // Fix the line and send the rest from byteOffset.
    let rest = body[bad_at..].replacen("{\"id\":\"x\",\"aggregateId\":\n", "", 1);
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import", rest.into_bytes())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["imported"], 2);
    assert_eq!(b["headPosition"], 5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_stores_nothing_of_itself_and_names_the_line() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let body = [
        line("e1", "s", 1),
        line("e2", "s", 2),
        line("e3", "t", 1),
        line("e4", "s", 4),
        line("e1", "u", 1), // reuses the id of line 1
        line("e6", "s", 6),
    ]
    .concat();
    let batch2_at = body.match_indices('\n').nth(2).unwrap().0 + 1;
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?batchSize=3", body.into_bytes())
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    let e = &b["error"];
    assert_eq!(e["code"], "duplicate_event_id");
    assert_eq!(e["id"], "e1");
    assert_eq!(e["line"], 5);
    assert_eq!(e["byteOffset"], batch2_at, "the first byte not imported");
    assert_eq!(e["imported"], 3);
    assert_eq!(s.events("m").await.len(), 3);

    // A back-fill names the event counted from the body's start.
    let body = [line("f1", "v", 1), line("f2", "v", 5), line("f3", "v", 3)].concat();
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?batchSize=2", body.into_bytes())
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["field"], "events[2].version");
    assert_eq!(b["error"]["line"], 3);
    assert_eq!(b["error"]["imported"], 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_last_line_is_not_imported_and_is_reported_by_its_offset() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let whole = [line("e1", "s", 1), line("e2", "s", 2)].concat();
    let third = line("e3", "s", 3);
    let cut = &third[..third.len() / 2];
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import",
            format!("{whole}{cut}").into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["imported"], 2);
    assert_eq!(b["byteOffset"], whole.len());
    assert_eq!(b["unterminatedBytes"], cut.len());
    // Resuming from byteOffset with the complete line finishes the import.
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import", third.into_bytes())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["headPosition"], 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_body_may_be_larger_than_the_json_body_limit() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let filler = "x".repeat(32 << 10);
    let mut body = Vec::new();
    let n = 600; // about 19 MiB
    for v in 1..=n {
        let l = json!({
            "id": format!("e{v}"), "aggregateId": "big", "version": v, "type": "T",
            "timestamp": "2024-05-01T10:00:00.000Z", "payload": {"f": filler},
            "commitId": "c", "commitSequence": 0, "dispatched": false
        });
        serde_json::to_writer(&mut body, &l).unwrap();
        body.push(b'\n');
    }
    assert!(body.len() > 16 << 20);
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?batchSize=100", body)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["imported"], n);
    assert_eq!(s.describe("m").await["headPosition"], n);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_parameters_are_checked() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let body = line("e1", "s", 1).into_bytes();
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?batchSize=100001", body.clone())
        .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert_eq!(b["error"]["code"], "limit_exceeded");
    assert_eq!(b["error"]["field"], "batchSize");
    for q in [
        "batchSize=0",
        "onConflict=maybe",
        "maintenanceMode=later",
        "expectedHead=x",
    ] {
        let (st, b) = s
            .ndjson(&format!("/v1/stores/m/events/import?{q}"), body.clone())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {b}");
    }
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?expectedHead=3", body.clone())
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "head_moved");
    assert_eq!(
        (
            b["error"]["expectedHead"].clone(),
            b["error"]["headPosition"].clone()
        ),
        (json!(3), json!(0))
    );
    let (st, b) = s
        .ndjson("/v1/stores/m/events/import?expectedHead=0", body)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, _) = s.ndjson("/v1/stores/nope/events/import", Vec::new()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_auto_replaces_the_events_and_unfreezes_also_on_error() {
    let s = start().await;
    seed(&s, "m", 3).await;
    let body = [line("n1", "s", 1), line("n2", "s", 2)].concat();
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?maintenanceMode=auto",
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["headPosition"], 2, "the old events are gone first");
    let ids: Vec<Value> = s
        .events("m")
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("n1"), json!("n2")]);
    assert_eq!(s.describe("m").await["frozen"], false);

    let bad = format!("{body}not json\n");
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?maintenanceMode=auto",
            bad.into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        s.describe("m").await["frozen"],
        false,
        "unfrozen after an error"
    );

    // Manual mode on a frozen store works and leaves it frozen.
    s.call(Method::POST, "/v1/stores/m/freeze", None).await;
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?onConflict=skip",
            line("n3", "s", 3).into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(s.describe("m").await["frozen"], true);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_events_and_secrets_and_import_secrets() {
    let s = start().await;
    seed(&s, "m", 2).await;
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/stores/m/secrets/import",
            Some(json!({"secret": "a secret called import"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "a secret may be called `import`");
    let (st, b) = s
        .call(Method::GET, "/v1/stores/m/secrets/import", None)
        .await;
    assert_eq!((st, b["idx"].clone()), (StatusCode::OK, json!(0)));

    let (st, _) = s.call(Method::DELETE, "/v1/stores/m/events", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let d = s.describe("m").await;
    assert_eq!(
        (d["headPosition"].clone(), d["secretCount"].clone()),
        (json!(0), json!(1))
    );

    let (st, _) = s.call(Method::DELETE, "/v1/stores/m/secrets", None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(s.describe("m").await["secretCount"], 0);

    let secrets = "{\"idx\":4,\"id\":\"u4\",\"secret\":\"k4\"}\n{\"idx\":2,\"id\":\"u2\",\"secret\":null}\n{\"id\":\"u5\",\"secret\":\"k5\"}\n";
    let (st, b) = s
        .ndjson("/v1/stores/m/secrets/import", secrets.as_bytes().to_vec())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        (b["imported"].clone(), b["skipped"].clone()),
        (json!(3), json!(0))
    );
    let (_, b) = s
        .call(
            Method::GET,
            "/v1/stores/m/secrets?includeDeleted=true",
            None,
        )
        .await;
    let got: Vec<(Value, Value)> = b["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["idx"].clone(), x["id"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!(2), json!("u2")),
            (json!(4), json!("u4")),
            (json!(5), json!("u5"))
        ]
    );
    let (st, b) = s
        .ndjson("/v1/stores/m/secrets/import", secrets.as_bytes().to_vec())
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "secret_already_exists");
    assert_eq!(b["error"]["line"], 1);
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/secrets/import?maintenanceMode=auto",
            secrets.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "auto empties the secrets first: {b}");
    assert_eq!(b["imported"], 3);
    let (st, _) = s.call(Method::POST, "/v1/stores/m/secrets/u4", None).await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_payload_with_line_breaks_stays_on_one_line_and_round_trips() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/nl", None).await;
    // Raw JSON: the payload keeps its line breaks and indentation, byte for byte.
    let body = "{\"events\": [{\"aggregateId\": \"p\", \"type\": \"Pretty\", \"payload\": {\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}}]}";
    let r = s
        .http
        .post(s.at("/v1/stores/nl/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let export = s.export("nl").await;
    assert_eq!(
        export.iter().filter(|&&b| b == b'\n').count(),
        1,
        "one event, one line: {}",
        String::from_utf8_lossy(&export)
    );
    s.call(Method::PUT, "/v1/stores/nl2", None).await;
    let (st, b) = s
        .ndjson("/v1/stores/nl2/events/import", export.clone())
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(s.events("nl2").await, s.events("nl").await);
    assert_eq!(s.export("nl2").await, export);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_head_holds_for_the_first_batch_and_moves_with_each_one() {
    let s = start().await;
    s.call(Method::PUT, "/v1/stores/m", None).await;
    let body = [line("e1", "s", 1), line("e2", "s", 2), line("e3", "s", 3)].concat();
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?batchSize=1&expectedHead=0",
            body.into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        (b["imported"].clone(), b["headPosition"].clone()),
        (json!(3), json!(3))
    );
    let (st, b) = s
        .ndjson(
            "/v1/stores/m/events/import?expectedHead=2",
            line("e4", "s", 4).into_bytes(),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "head_moved");
    assert_eq!(
        (b["error"]["line"].clone(), b["error"]["byteOffset"].clone()),
        (json!(1), json!(0))
    );
    s.stop().await;
}
