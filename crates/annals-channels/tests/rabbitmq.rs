//! The RabbitMQ adapter against the real broker (`.ci/run` starts it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use annals_channels::rabbitmq::{RabbitMqChannel, RabbitMqConfig};
use annals_channels::{Message, MessageChannel};
use annals_core::ErrorKind;
use annals_testkit::services;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

#[tokio::test]
async fn published_messages_are_consumed_back_in_order() {
    let Some(url) = services::RABBITMQ.available() else {
        return;
    };
    let queue = support::unique("annals-test");
    let channel = RabbitMqChannel::connect(&url, RabbitMqConfig::queue(&queue))
        .await
        .unwrap();
    assert_eq!(channel.name(), "rabbitmq");
    let sent = support::messages(300);
    channel.publish(&sent[0]).await.unwrap();
    channel.publish_batch(&sent[1..]).await.unwrap();

    // A consumer on its own connection, as another process would have.
    let reader = RabbitMqChannel::connect(&url, RabbitMqConfig::queue(&queue))
        .await
        .unwrap();
    let mut consumer = reader
        .channel()
        .basic_consume(
            &queue,
            "annals-test",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(
            delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(*delivery.properties.delivery_mode(), Some(2));
        got.push(Message::from_json(&delivery.data).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got, sent);
    reader
        .channel()
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unroutable_message_is_a_backend_error() {
    let Some(url) = services::RABBITMQ.available() else {
        return;
    };
    let config = RabbitMqConfig::exchange("", support::unique("no-such-queue"));
    let channel = RabbitMqChannel::connect(&url, config).await.unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("no queue takes the message");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("returned the message"), "{err}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_backend_error() {
    let err = RabbitMqChannel::connect(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        RabbitMqConfig::queue("q"),
    )
    .await
    .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Backend);
}
