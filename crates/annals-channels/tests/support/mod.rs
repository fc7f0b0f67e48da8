//! What the adapter tests share: unique names and sample messages. Whether a service
//! is there, and what happens when it is not, is the rule of `annals_testkit::services`
//! (`ANNALS_TEST_NATS_URL`, `ANNALS_TEST_AMQP_URL`, `ANNALS_TEST_REDIS_URL`, else the
//! services on 127.0.0.1 that `.ci/run` starts).

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use annals_channels::Message;
use annals_core::{Json, RecordedEvent, StreamId, Timestamp};

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
