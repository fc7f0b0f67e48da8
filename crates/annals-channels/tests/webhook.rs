//! The webhook adapter against a real HTTP server on 127.0.0.1:0 that fails on purpose.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_channels::webhook::{WebhookChannel, WebhookConfig};
use annals_channels::{Message, MessageChannel};
use annals_core::ErrorKind;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

#[derive(Default)]
struct Hook {
    /// Requests seen per route.
    attempts: Mutex<Vec<&'static str>>,
    /// Bodies accepted by `/flaky`, in order.
    accepted: Mutex<Vec<Vec<u8>>>,
}

/// `/flaky` answers 503 to every other request (so each message fails its first
/// attempt), then 204; `/refuse` answers 400; `/broken` always 500.
async fn server() -> (String, Arc<Hook>) {
    let hook = Arc::new(Hook::default());
    let app = Router::new()
        .route(
            "/flaky",
            post(
                |State(h): State<Arc<Hook>>, headers: HeaderMap, body: Bytes| async move {
                    assert_eq!(headers["content-type"], "application/json");
                    let n = {
                        let mut a = h.attempts.lock().unwrap();
                        a.push("flaky");
                        a.iter().filter(|r| **r == "flaky").count()
                    };
                    if n % 2 == 1 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    h.accepted.lock().unwrap().push(body.to_vec());
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/refuse",
            post(|State(h): State<Arc<Hook>>| async move {
                h.attempts.lock().unwrap().push("refuse");
                (StatusCode::BAD_REQUEST, "unknown message kind")
            }),
        )
        .route(
            "/broken",
            post(|State(h): State<Arc<Hook>>| async move {
                h.attempts.lock().unwrap().push("broken");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hook)
}

fn fast() -> WebhookConfig {
    WebhookConfig {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..WebhookConfig::default()
    }
}

fn count(hook: &Hook, route: &str) -> usize {
    hook.attempts
        .lock()
        .unwrap()
        .iter()
        .filter(|r| **r == route)
        .count()
}

#[tokio::test]
async fn server_errors_are_retried_and_messages_arrive_in_order() {
    let (base, hook) = server().await;
    let channel = WebhookChannel::new(&format!("{base}/flaky"), fast()).unwrap();
    assert_eq!(channel.name(), "webhook");
    let sent = support::messages(20);
    channel.publish(&sent[0]).await.unwrap();
    channel.publish_batch(&sent[1..]).await.unwrap();
    let got: Vec<Message> = hook
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|b| Message::from_json(b).unwrap())
        .collect();
    assert_eq!(got, sent);
    assert_eq!(
        count(&hook, "flaky"),
        40,
        "each message: one 503, then accepted"
    );
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (base, hook) = server().await;
    let channel = WebhookChannel::new(&format!("{base}/refuse"), fast()).unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("400 is final");
    assert_eq!(err.kind(), ErrorKind::Backend);
    let text = err.to_string();
    assert!(
        text.contains("400") && text.contains("unknown message kind"),
        "{text}"
    );
    assert_eq!(count(&hook, "refuse"), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let (base, hook) = server().await;
    let channel = WebhookChannel::new(&format!("{base}/broken"), fast()).unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("always 500");
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    assert_eq!(count(&hook, "broken"), 4);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    // Bind then drop a listener: its port is closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let channel = WebhookChannel::new(&format!("http://127.0.0.1:{port}/h"), fast()).unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
}

#[test]
fn only_http_urls_are_webhooks() {
    let err = WebhookChannel::new("ftp://127.0.0.1/x", WebhookConfig::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
