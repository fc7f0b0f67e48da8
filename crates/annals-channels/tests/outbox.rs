//! The outbox relay end to end against the real NATS JetStream (`.ci/run` starts it): a
//! backlog of undispatched events and events committed while the publisher runs reach
//! JetStream once each, in position order, as live notifications, and every one of them
//! ends marked dispatched in the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use annals_channels::nats::{NatsChannel, NatsConfig};
use annals_channels::outbox::ChannelPublisher;
use annals_channels::Message;
use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
use annals_projector::{Publisher, PublisherOptions};
use annals_testkit::services;
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;

async fn append(store: &dyn EventStore, stream: &str, n: u64) {
    let events = (0..n)
        .map(|i| ProposedEvent::new("Ticked", Json::from_raw(format!("{{\"i\":{i}}}"))))
        .collect();
    store
        .append_to_stream(&StreamId::new(stream), ExpectedVersion::Any, events)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_then_new_commits_reach_jetstream_in_order_and_are_marked() {
    let Some(url) = services::NATS.available() else {
        return;
    };
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for s in 0..5 {
        append(&*store, &format!("backlog-{s}"), 60).await;
    }
    let subject = format!("annals.outbox.{}", support::unique("relay"));
    let config = NatsConfig::new(&subject);
    let channel = NatsChannel::connect(&url, config.clone()).await.unwrap();
    let context = channel.context().clone();
    let publisher = Publisher::start(
        Arc::clone(&store),
        ChannelPublisher::new("relay", channel),
        PublisherOptions {
            batch_size: 50,
            ..PublisherOptions::default()
        },
    );
    for s in 0..4 {
        append(&*store, &format!("live-{s}"), 25).await;
    }
    let head = store.describe().await.unwrap().head_position;
    assert_eq!(head, 400);
    tokio::time::timeout(
        Duration::from_secs(30),
        publisher.wait_until(|s| s.last_dispatched >= head),
    )
    .await
    .expect("every event dispatched within 30 s");
    publisher.shutdown().await;
    assert!(store
        .undispatched(Default::default(), None)
        .await
        .unwrap()
        .is_empty());

    let stream = context.get_stream(&config.stream).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config::default())
        .await
        .unwrap();
    let mut incoming = consumer.messages().await.unwrap();
    let mut positions = Vec::new();
    while positions.len() < head as usize {
        let m = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        match Message::from_json(&m.payload).unwrap() {
            Message::Notification {
                store,
                event,
                replay,
            } => {
                assert_eq!((store.as_str(), replay), ("relay", false));
                positions.push(event.position);
            }
            other => panic!("an outbox sends notifications only, not {other:?}"),
        }
        m.ack().await.unwrap();
    }
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    context.delete_stream(&config.stream).await.unwrap();
}
