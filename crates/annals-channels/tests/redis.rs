//! The Redis Streams adapter against the real server (`.ci/run` starts it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_channels::redis::{RedisChannel, BODY_FIELD};
use annals_channels::{Message, MessageChannel};
use annals_core::ErrorKind;
use annals_testkit::services;
use redis::streams::StreamRangeReply;

#[tokio::test]
async fn published_messages_are_read_back_in_order() {
    let Some(url) = services::REDIS.available() else {
        return;
    };
    let key = support::unique("annals:test");
    let channel = RedisChannel::connect(&url, &key).await.unwrap();
    assert_eq!(channel.name(), "redis");
    let sent = support::messages(250);
    channel.publish(&sent[0]).await.unwrap();
    channel.publish_batch(&sent[1..]).await.unwrap();
    channel.publish_batch(&[]).await.unwrap();

    let mut conn = channel.connection();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let got: Vec<Message> = reply
        .ids
        .iter()
        .map(|entry| {
            let body: Vec<u8> = entry.get(BODY_FIELD).unwrap();
            let kind: String = entry.get("kind").unwrap();
            let m = Message::from_json(&body).unwrap();
            assert_eq!(
                kind,
                match m {
                    Message::Notification { .. } => "notification",
                    Message::AggregateExists { .. } => "aggregateExists",
                }
            );
            m
        })
        .collect();
    assert_eq!(got, sent);
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_of_another_type_is_a_backend_error() {
    let Some(url) = services::REDIS.available() else {
        return;
    };
    let key = support::unique("annals:test:string");
    let channel = RedisChannel::connect(&url, &key).await.unwrap();
    let mut conn = channel.connection();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = channel
        .publish(&support::messages(1)[0])
        .await
        .expect_err("XADD to a string key fails");
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    let err = RedisChannel::connect("redis://127.0.0.1:1", "k")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Backend);
}
