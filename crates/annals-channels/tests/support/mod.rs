//! What the adapter tests share: the service URLs and the skip-or-fail rule.
//!
//! - URLs come from `ANNALS_TEST_NATS_URL`, `ANNALS_TEST_AMQP_URL` and
//!   `ANNALS_TEST_REDIS_URL` (defaults: the services on 127.0.0.1 that `.ci/run` starts).
//! - Without a reachable service, its tests fail under `CI=true` and are skipped
//!   elsewhere, with a message on the terminal saying why.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use annals_channels::Message;
use annals_core::{Json, RecordedEvent, StreamId, Timestamp};

/// Writes to the terminal even when libtest captures test output.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The URL of a service: `env` or `default`, when its `host:port` answers. Under
/// `CI=true` a missing service panics; elsewhere the caller skips its test.
pub fn service(name: &str, env: &str, default: &str) -> Option<String> {
    let url = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let probe = host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
        .and_then(|addr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())
        });
    match probe {
        Ok(_) => Some(url),
        Err(why) if in_ci() => {
            panic!("{name} at {url} is not reachable ({why}); under CI=true its tests must run")
        }
        Err(why) => {
            say(&format!(
                "\n*** SKIPPED: {name} at {url} is not reachable ({why}).\n*** Start it (.ci/run does), or set {env}; this test did not run.\n"
            ));
            None
        }
    }
}

pub fn nats() -> Option<String> {
    service("NATS", "ANNALS_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

pub fn rabbitmq() -> Option<String> {
    service(
        "RabbitMQ",
        "ANNALS_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

pub fn redis() -> Option<String> {
    service("Redis", "ANNALS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// A name unique to this process and call: `prefix-<pid>-<n>-<millis>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        Timestamp::now().as_millis()
    )
}

/// A recorded event, for messages.
pub fn event(position: u64, stream: &str, version: u64) -> RecordedEvent {
    RecordedEvent {
        position,
        id: format!("e-{position}").into(),
        stream: StreamId::new(stream).with_aggregate("account"),
        version,
        event_type: "Deposited".into(),
        timestamp: Timestamp::from_millis(1_609_459_200_000 + position as i64),
        payload: Json::from_raw(format!(r#"{{"amount": {position}}}"#)),
        metadata: Json::null(),
        commit_id: format!("c-{position}").into(),
        commit_sequence: 0,
        dispatched: false,
    }
}

/// `n` messages mixing both kinds, numbered in order.
pub fn messages(n: u64) -> Vec<Message> {
    (1..=n)
        .map(|i| {
            if i % 3 == 0 {
                Message::aggregate_exists("default", StreamId::new(format!("acc-{i}")), i % 2 == 0)
            } else {
                Message::notification("default", event(i, &format!("acc-{i}"), 1), true)
            }
        })
        .collect()
}
