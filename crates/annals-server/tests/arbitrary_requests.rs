//! Arbitrary bodies, query strings and path segments thrown at every route: the server
//! never panics, never answers 500 for a client's mistake, and every refusal carries the
//! API.md error body.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use annals_server::{Server, ServerConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::Method;
use serde_json::Value;

/// Every route the server documents in its OpenAPI document, with the store named `p`
/// (which exists) or, for a second copy of each, an arbitrary segment, and `{x}` where
/// any other path parameter goes: a route added to the server is fuzzed without editing
/// this test.
fn routes(document: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for method in methods.as_object().expect("operations").keys() {
            let method = method.to_uppercase();
            let templated = |store: &str| {
                path.split('/')
                    .map(|segment| match segment {
                        "{store}" => store.to_owned(),
                        s if s.starts_with('{') => "{x}".to_owned(),
                        s => s.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            routes.push((method.clone(), templated("p")));
            if path.contains("{store}") {
                routes.push((method, templated("{x}")));
            }
        }
    }
    routes
}

const PARAMS: &[&str] = &[
    "aggregateId",
    "aggregate",
    "context",
    "type",
    "minVersion",
    "maxVersion",
    "afterPosition",
    "cursor",
    "fromTimestamp",
    "toTimestamp",
    "dispatched",
    "reverse",
    "skip",
    "limit",
    "createdAfter",
    "createdBefore",
    "pageToken",
    "fromVersion",
    "toVersion",
    "maxStreamVersion",
    "keep",
    "fromIdx",
    "id",
    "includeDeleted",
    "echo",
    "startAfter",
    "maintenanceMode",
    "onConflict",
    "batchSize",
    "expectedHead",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}",
        "-?[0-9]{1,3}",
        Just("true".to_owned()),
        Just("2024-05-01T10:00:00.000Z".to_owned()),
        Just("f1.00000000".to_owned()),
        "[ -~]{0,12}",
        "%[0-9A-F]{2}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(PARAMS), value()), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.replace(['&', '#'], "")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        prop::sample::select(PARAMS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(PARAMS).prop_map(str::to_owned),
                        Just("events".to_owned()),
                        Just("writes".to_owned()),
                        Just("payload".to_owned()),
                        Just("secret".to_owned()),
                        Just("content".to_owned()),
                        Just("streamVersion".to_owned()),
                        Just("expectedVersion".to_owned()),
                        Just("data".to_owned()),
                        Just("appends".to_owned()),
                        Just("positions".to_owned()),
                        Just("snapshots".to_owned()),
                        Just("overwrite".to_owned()),
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,12}",
        "%[0-9A-F]{2}[a-z]{0,3}",
        "[a-z]{300}",
    ]
}

#[test]
fn arbitrary_requests_never_get_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, http, document) = runtime.block_on(async {
        let server = Server::bind(
            ServerConfig::new(dir.path()).listen(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await
        .unwrap();
        let url = format!("http://{}", server.local_addr());
        tokio::spawn(server.run_until(std::future::pending()));
        let http = reqwest::Client::new();
        http.put(format!("{url}/v1/stores/p")).send().await.unwrap();
        http.post(format!("{url}/v1/stores/p/events"))
            .body(r#"{"events":[{"id":"e1","aggregateId":"a","type":"T"},{"aggregateId":"b"}]}"#)
            .send()
            .await
            .unwrap();
        let document: Value = http
            .get(format!("{url}/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (url, http, document)
    });
    let routes = routes(&document);
    assert!(
        routes.len() >= 40,
        "the OpenAPI document lists only {} routes",
        routes.len()
    );
    let mut runner = TestRunner::new(Config {
        cases: 1000,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (prop::sample::select(routes), segment(), query(), body());
    runner
        .run(&strategy, |((method, route), seg, query, body)| {
            let path = route.replace("{x}", &seg);
            let target = format!("{url}{path}?{query}");
            runtime.block_on(async {
                let response = http
                    .request(Method::from_bytes(method.as_bytes()).unwrap(), &target)
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                prop_assert!(
                    !status.is_server_error(),
                    "{method} {target} with body {:?} answered {status}",
                    String::from_utf8_lossy(&body)
                );
                if path.ends_with("/subscribe") && status.is_success() {
                    // A live stream: nothing more to read.
                    return Ok(());
                }
                let text = response.text().await.unwrap();
                if !status.is_success() {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    prop_assert!(
                        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                        "{method} {target}: {status} without the error body: {text}"
                    );
                }
                Ok(())
            })
        })
        .unwrap();
}
