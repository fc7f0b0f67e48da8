//! The outbox into a message channel: an [`annals_projector::Publish`] that delivers the
//! committed events a [`Publisher`](annals_projector::Publisher) hands it as
//! "notification" messages (`replay = false`) to any [`MessageChannel`], a batch at a
//! time. With it, `Publisher::start(store, ChannelPublisher::new(…), options)` is the
//! whole relay: undispatched events first, then new commits in position order, each
//! batch marked dispatched once the channel accepted every message of it (for NATS
//! JetStream and RabbitMQ: once the broker acknowledged them).
//!
//! ```
//! use std::sync::Arc;
//! use annals_channels::{outbox::ChannelPublisher, Message, MemoryChannel};
//! use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
//! use annals_projector::{Publisher, PublisherOptions};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! store.append_to_stream(&StreamId::new("acc-1"), ExpectedVersion::Any,
//!     vec![ProposedEvent::new("Opened", Json::null())]).await?;
//! let channel = MemoryChannel::new();
//! let publisher = Publisher::start(
//!     Arc::clone(&store),
//!     ChannelPublisher::new("accounts", channel.clone()),
//!     PublisherOptions::default(),
//! );
//! publisher.wait_until(|s| s.last_dispatched >= 1).await;
//! publisher.shutdown().await;
//! let sent = channel.messages();
//! assert!(matches!(&sent[0], Message::Notification { replay: false, .. }));
//! assert!(store.undispatched(Default::default(), None).await?.is_empty());
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

use async_trait::async_trait;

use annals_core::RecordedEvent;
use annals_projector::{BoxError, Publish};

use crate::{Message, MessageChannel};

/// Delivers committed events to a [`MessageChannel`] as live (not replayed)
/// notification messages naming the store they come from.
///
/// ```
/// let p = annals_channels::outbox::ChannelPublisher::new("orders", annals_channels::MemoryChannel::new());
/// assert_eq!(p.store_name(), "orders");
/// ```
pub struct ChannelPublisher<C> {
    store: String,
    channel: C,
}

impl<C> ChannelPublisher<C> {
    /// Messages name `store` (the `store` field of each message) and go to `channel`.
    ///
    /// ```
    /// # use annals_channels::{outbox::ChannelPublisher, MemoryChannel};
    /// let boxed: Box<dyn annals_channels::MessageChannel> = Box::new(MemoryChannel::new());
    /// let _ = ChannelPublisher::new("orders", boxed);
    /// ```
    pub fn new(store: impl Into<String>, channel: C) -> Self {
        ChannelPublisher {
            store: store.into(),
            channel,
        }
    }

    /// The store name the messages carry.
    ///
    /// ```
    /// # use annals_channels::{outbox::ChannelPublisher, MemoryChannel};
    /// assert_eq!(ChannelPublisher::new("s", MemoryChannel::new()).store_name(), "s");
    /// ```
    pub fn store_name(&self) -> &str {
        &self.store
    }
}

#[async_trait]
impl<C: MessageChannel + Send + Sync + 'static> Publish for ChannelPublisher<C> {
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.publish_batch(std::slice::from_ref(event)).await
    }

    async fn publish_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        let messages: Vec<Message> = events
            .iter()
            .map(|e| Message::notification(self.store.as_str(), e.clone(), false))
            .collect();
        self.channel.publish_batch(&messages).await?;
        Ok(())
    }
}
