//! `GET /events/export` over real HTTP: where it starts (`afterPosition` or an opaque
//! `cursor` from `GET /events`), `limit`, and refusals of bad starting points.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};

/// The positions of the exported lines, or the status and error code of a refusal.
async fn export(http: &reqwest::Client, url: &str) -> Result<Vec<u64>, (StatusCode, Value)> {
    let r = http.get(url).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    if !status.is_success() {
        return Err((status, serde_json::from_str(&text).unwrap()));
    }
    Ok(text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["position"]
                .as_u64()
                .unwrap()
        })
        .collect())
}

#[tokio::test]
async fn export_starts_after_a_position_or_a_cursor() {
    let s = support::start().await;
    s.create("x").await;
    let base = s.at("/v1/stores/x");
    let http = s.http.clone();
    let events: Vec<Value> = (0..2500)
        .map(|i| json!({"aggregateId": format!("s{}", i % 7), "type": "T", "payload": {"i": i}}))
        .collect();
    let r = http
        .post(format!("{base}/events"))
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let all = export(&http, &format!("{base}/events/export"))
        .await
        .unwrap();
    assert_eq!(all, (1..=2500).collect::<Vec<_>>());

    let after = export(
        &http,
        &format!("{base}/events/export?afterPosition=1200&limit=1001"),
    )
    .await
    .unwrap();
    assert_eq!(after, (1201..=2201).collect::<Vec<_>>());

    // The cursor `GET /events` hands out continues the export where the read stopped.
    let page: Value = http
        .get(format!("{base}/events?limit=10"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest = export(&http, &format!("{base}/events/export?cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(rest, (11..=2500).collect::<Vec<_>>());

    let (status, body) = export(
        &http,
        &format!("{base}/events/export?cursor={cursor}&afterPosition=3"),
    )
    .await
    .unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, body) = export(&http, &format!("{base}/events/export?cursor=not-a-cursor"))
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "cursor", "{body}");
    s.stop().await;
}
