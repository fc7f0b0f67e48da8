//! The NATS JetStream adapter against the real server (`.ci/run` starts it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use annals_channels::nats::{NatsChannel, NatsConfig};
use annals_channels::{Message, MessageChannel};
use annals_core::ErrorKind;
use annals_testkit::services;
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;

#[tokio::test]
async fn published_messages_are_consumed_back_in_order() {
    let Some(url) = services::NATS.available() else {
        return;
    };
    let subject = format!("annals.test.{}", support::unique("order"));
    let config = NatsConfig::new(&subject);
    let channel = NatsChannel::connect(&url, config.clone()).await.unwrap();
    assert_eq!(channel.name(), "nats");
    let sent = support::messages(600);
    channel.publish(&sent[0]).await.unwrap();
    channel.publish_batch(&sent[1..]).await.unwrap(); // more than max_in_flight

    let stream = channel.context().get_stream(&config.stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config::default())
        .await
        .unwrap();
    let mut incoming = consumer.messages().await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(m.subject.as_str(), subject);
        got.push(Message::from_json(&m.payload).unwrap());
        m.ack().await.unwrap();
    }
    assert_eq!(got, sent);
    let info = channel.context().get_stream(&config.stream).await.unwrap();
    assert_eq!(info.cached_info().state.messages, 600);
    channel
        .context()
        .delete_stream(&config.stream)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_subject_no_stream_captures_is_a_backend_error() {
    let Some(url) = services::NATS.available() else {
        return;
    };
    let mut config = NatsConfig::new(format!("annals.nostream.{}", support::unique("x")));
    config.create_stream = false;
    let channel = NatsChannel::connect(&url, config).await.unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("no stream acknowledges the subject");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().starts_with("nats backend error"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    // Port 1 on loopback: nothing listens there.
    let err = NatsChannel::connect("nats://127.0.0.1:1", NatsConfig::new("annals.x"))
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Backend);
}
