//! # annals-channels
//!
//! Carries Annals events to the rest of a system: one small [`MessageChannel`] trait
//! with real adapters, the [`outbox`] relay that delivers new commits to a channel
//! through the outbox publisher (`replay = false`), and the [`pour`] tools that
//! re-publish past events (castore's "dam": pour aggregate ids, one stream, a whole
//! store, several stores merged; `replay = true`).
//!
//! | adapter | feature | delivery guarantee of `publish` |
//! | --- | --- | --- |
//! | [`MemoryChannel`] | `memory` (default) | kept in a `Vec` |
//! | `NatsChannel` | `nats` | JetStream acknowledged the message |
//! | `RabbitMqChannel` | `rabbitmq` | the broker confirmed it (publisher confirms) |
//! | `RedisChannel` | `redis` | `XADD` returned the entry id |
//! | `WebhookChannel` | `webhook` | the endpoint answered 2xx (retried on 5xx / connection errors) |
//!
//! The heavy drivers are never in the default build; [`connect`] opens an adapter from
//! a URL when its feature is on.
//!
//! ## Messages and their wire body
//!
//! A [`Message`] is a *notification* (one recorded event) or an *aggregate exists*
//! message (one stream id), each with the name of the store it comes from and a
//! `replay` flag (`true` for everything the pour tools send). Every adapter carries the
//! same JSON body ([`Message::to_json`]), one message per body:
//!
//! ```json
//! {"kind":"notification","store":"default","replay":true,
//!  "event":{"position":7,"id":"…","aggregateId":"acc-1","aggregate":"account",
//!           "version":2,"type":"Deposited","timestamp":"2021-01-01T00:00:00.000Z",
//!           "payload":{"amount":5},"metadata":null,"commitId":"…","commitSequence":0,
//!           "dispatched":false}}
//! {"kind":"aggregateExists","store":"default","replay":true,
//!  "aggregateId":"acc-1","aggregate":"account","context":"billing"}
//! ```
//!
//! `event` is the event exactly as the HTTP API and `annals export` write it;
//! `aggregate` and `context` are left out when empty.
//!
//! ```
//! use annals_channels::{MemoryChannel, Message, MessageChannel};
//! use annals_core::StreamId;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let channel = MemoryChannel::new();
//! let m = Message::aggregate_exists("default", StreamId::new("acc-1"), true);
//! channel.publish(&m).await?;
//! assert_eq!(channel.messages(), vec![m.clone()]);
//! assert_eq!(Message::from_json(&m.to_json()?)?, m);
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use annals_core::{Error, RecordedEvent, Result, StreamId};

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "nats")]
pub mod nats;
pub mod outbox;
pub mod pour;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod rate;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "webhook")]
pub mod webhook;

#[cfg(feature = "memory")]
pub use memory::MemoryChannel;
pub use rate::RateLimiter;

/// One message on a channel.
// Nearly every message is a notification: boxing its event to shrink the rare
// `AggregateExists` would cost an allocation per published event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A recorded event (castore's `NotificationMessage`).
    Notification {
        /// The store the event comes from.
        store: String,
        /// The event.
        event: RecordedEvent,
        /// Whether this is a replay of a past event (the pour tools) rather than news.
        replay: bool,
    },
    /// A stream exists (castore's `AggregateExistsMessage`).
    AggregateExists {
        /// The store the stream lives in.
        store: String,
        /// The stream.
        stream: StreamId,
        /// Whether this is a replay (the pour tools) rather than news.
        replay: bool,
    },
}

impl Message {
    /// A notification carrying `event`.
    ///
    /// ```
    /// # let e: annals_core::RecordedEvent = serde_json::from_str(r#"{"position":1,"id":"e",
    /// #   "aggregateId":"a","version":1,"type":"T","timestamp":0,"commitId":"c"}"#).unwrap();
    /// let m = annals_channels::Message::notification("default", e, false);
    /// assert!(!m.replay());
    /// ```
    pub fn notification(store: impl Into<String>, event: RecordedEvent, replay: bool) -> Self {
        Message::Notification {
            store: store.into(),
            event,
            replay,
        }
    }

    /// An "aggregate exists" message for `stream`.
    ///
    /// ```
    /// let m = annals_channels::Message::aggregate_exists("s", "acc-1".into(), true);
    /// assert!(m.replay());
    /// assert_eq!(m.store(), "s");
    /// ```
    pub fn aggregate_exists(store: impl Into<String>, stream: StreamId, replay: bool) -> Self {
        Message::AggregateExists {
            store: store.into(),
            stream,
            replay,
        }
    }

    /// The `replay` flag.
    ///
    /// ```
    /// assert!(annals_channels::Message::aggregate_exists("s", "a".into(), true).replay());
    /// ```
    pub fn replay(&self) -> bool {
        match self {
            Message::Notification { replay, .. } | Message::AggregateExists { replay, .. } => {
                *replay
            }
        }
    }

    /// The store the message comes from.
    ///
    /// ```
    /// assert_eq!(annals_channels::Message::aggregate_exists("s", "a".into(), true).store(), "s");
    /// ```
    pub fn store(&self) -> &str {
        match self {
            Message::Notification { store, .. } | Message::AggregateExists { store, .. } => store,
        }
    }

    /// The stream the message is about.
    ///
    /// ```
    /// let m = annals_channels::Message::aggregate_exists("s", "acc-1".into(), true);
    /// assert_eq!(m.stream().id, "acc-1");
    /// ```
    pub fn stream(&self) -> &StreamId {
        match self {
            Message::Notification { event, .. } => &event.stream,
            Message::AggregateExists { stream, .. } => stream,
        }
    }

    /// The wire body (see the crate documentation), one JSON object.
    ///
    /// ```
    /// let m = annals_channels::Message::aggregate_exists("s", "acc-1".into(), true);
    /// assert_eq!(
    ///     String::from_utf8(m.to_json().unwrap()).unwrap(),
    ///     r#"{"kind":"aggregateExists","store":"s","replay":true,"aggregateId":"acc-1"}"#
    /// );
    /// ```
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let wire = match self {
            Message::Notification {
                store,
                event,
                replay,
            } => WireOut {
                kind: NOTIFICATION,
                store,
                replay: *replay,
                event: Some(event),
                aggregate_id: None,
                aggregate: None,
                context: None,
            },
            Message::AggregateExists {
                store,
                stream,
                replay,
            } => WireOut {
                kind: AGGREGATE_EXISTS,
                store,
                replay: *replay,
                event: None,
                aggregate_id: Some(&stream.id),
                aggregate: (!stream.aggregate.is_empty()).then_some(stream.aggregate.as_str()),
                context: (!stream.context.is_empty()).then_some(stream.context.as_str()),
            },
        };
        serde_json::to_vec(&wire).map_err(|e| Error::invalid("message", e.to_string()))
    }

    /// Parses a wire body; a body that is not one names what is wrong (line and column).
    ///
    /// ```
    /// let m = annals_channels::Message::from_json(
    ///     br#"{"kind":"aggregateExists","store":"s","replay":false,"aggregateId":"a"}"#).unwrap();
    /// assert!(!m.replay());
    /// assert!(annals_channels::Message::from_json(b"{}").is_err());
    /// ```
    pub fn from_json(body: &[u8]) -> Result<Self> {
        let wire: WireIn = serde_json::from_slice(body).map_err(|e| {
            Error::invalid(
                "message",
                format!(
                    "not a message body (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        match (wire.kind.as_str(), wire.event, wire.aggregate_id) {
            (NOTIFICATION, Some(event), _) => Ok(Message::Notification {
                store: wire.store,
                event,
                replay: wire.replay,
            }),
            (AGGREGATE_EXISTS, _, Some(id)) => Ok(Message::AggregateExists {
                store: wire.store,
                stream: StreamId {
                    context: wire.context.unwrap_or_default(),
                    aggregate: wire.aggregate.unwrap_or_default(),
                    id,
                },
                replay: wire.replay,
            }),
            (NOTIFICATION, None, _) => Err(Error::invalid("message.event", "missing")),
            (AGGREGATE_EXISTS, _, None) => Err(Error::invalid("message.aggregateId", "missing")),
            (other, _, _) => Err(Error::invalid(
                "message.kind",
                format!("{other:?} is neither \"notification\" nor \"aggregateExists\""),
            )),
        }
    }
}

const NOTIFICATION: &str = "notification";
const AGGREGATE_EXISTS: &str = "aggregateExists";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    kind: &'static str,
    store: &'a str,
    replay: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a RecordedEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    kind: String,
    store: String,
    replay: bool,
    #[serde(default)]
    event: Option<RecordedEvent>,
    #[serde(default)]
    aggregate_id: Option<String>,
    #[serde(default)]
    aggregate: Option<String>,
    #[serde(default)]
    context: Option<String>,
}

/// A place messages are published to: a broker subject, queue, stream or endpoint.
///
/// `publish` returns once the channel holds the message as durably as the adapter
/// documents (an acknowledgement, a confirm, an entry id, a 2xx); `publish_batch`
/// publishes in order and returns once every message is held. Failures are
/// [`Error::Backend`] naming the adapter; a failed batch may have published a prefix.
///
/// ```
/// use annals_channels::{MemoryChannel, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel: Box<dyn MessageChannel> = Box::new(MemoryChannel::new());
/// channel.publish_batch(&[
///     Message::aggregate_exists("s", "a".into(), true),
///     Message::aggregate_exists("s", "b".into(), true),
/// ]).await?;
/// assert_eq!(channel.name(), "memory");
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait MessageChannel: Send + Sync {
    /// The adapter's short name (`memory`, `nats`, `rabbitmq`, `redis`, `webhook`).
    fn name(&self) -> &'static str;

    /// Publishes one message.
    async fn publish(&self, message: &Message) -> Result<()>;

    /// Publishes several messages, in order. The default publishes them one by one;
    /// adapters pipeline where their protocol allows.
    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        for m in messages {
            self.publish(m).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<T: MessageChannel + ?Sized> MessageChannel for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn publish(&self, message: &Message) -> Result<()> {
        (**self).publish(message).await
    }
    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        (**self).publish_batch(messages).await
    }
}

#[async_trait]
impl<T: MessageChannel + ?Sized> MessageChannel for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn publish(&self, message: &Message) -> Result<()> {
        (**self).publish(message).await
    }
    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        (**self).publish_batch(messages).await
    }
}

/// A failure reported by a channel's far side (a refused message, an HTTP status),
/// carried inside [`Error::Backend`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ChannelError(pub String);

/// An [`Error::Backend`] of the named adapter with this message.
#[cfg(any(feature = "rabbitmq", feature = "redis", feature = "webhook"))]
pub(crate) fn channel_error(backend: &'static str, message: impl Into<String>) -> Error {
    Error::backend(backend, ChannelError(message.into()))
}

/// Opens a channel from a URL; `topic` names the NATS subject (and JetStream stream),
/// the RabbitMQ queue or the Redis stream key (ignored by webhooks).
///
/// | URL | adapter (feature) |
/// | --- | --- |
/// | `nats://host:port` | [`nats::NatsChannel`] (`nats`) |
/// | `amqp://user:pass@host:port/vhost` | [`rabbitmq::RabbitMqChannel`] (`rabbitmq`) |
/// | `redis://host:port/db` | [`redis::RedisChannel`] (`redis`) |
/// | `http://…`, `https://…` | [`webhook::WebhookChannel`] (`webhook`) |
/// | `memory` | [`MemoryChannel`] (`memory`) |
///
/// A scheme whose feature is off, or an unknown one, is [`Error::InvalidInput`] on
/// field `channel`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let c = annals_channels::connect("memory", "annals").await?;
/// assert_eq!(c.name(), "memory");
/// assert!(annals_channels::connect("ftp://x", "t").await.is_err());
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn connect(url: &str, topic: &str) -> Result<Box<dyn MessageChannel>> {
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    let off = |feature: &str| {
        Error::invalid(
            "channel",
            format!("{url:?} needs the `{feature}` feature of annals-channels, which is off"),
        )
    };
    match scheme {
        "memory" => {
            #[cfg(feature = "memory")]
            return Ok(Box::new(MemoryChannel::new()));
            #[cfg(not(feature = "memory"))]
            return Err(off("memory"));
        }
        "nats" => {
            #[cfg(feature = "nats")]
            return Ok(Box::new(
                nats::NatsChannel::connect(url, nats::NatsConfig::new(topic)).await?,
            ));
            #[cfg(not(feature = "nats"))]
            return Err(off("nats"));
        }
        "amqp" | "amqps" => {
            #[cfg(feature = "rabbitmq")]
            return Ok(Box::new(
                rabbitmq::RabbitMqChannel::connect(url, rabbitmq::RabbitMqConfig::queue(topic))
                    .await?,
            ));
            #[cfg(not(feature = "rabbitmq"))]
            return Err(off("rabbitmq"));
        }
        "redis" | "rediss" => {
            #[cfg(feature = "redis")]
            return Ok(Box::new(redis::RedisChannel::connect(url, topic).await?));
            #[cfg(not(feature = "redis"))]
            return Err(off("redis"));
        }
        "http" | "https" => {
            #[cfg(feature = "webhook")]
            return Ok(Box::new(webhook::WebhookChannel::new(
                url,
                webhook::WebhookConfig::default(),
            )?));
            #[cfg(not(feature = "webhook"))]
            return Err(off("webhook"));
        }
        _ => {
            let _ = (topic, off);
            Err(Error::invalid(
                "channel",
                format!("{url:?}: expected nats://, amqp://, redis://, http(s):// or memory"),
            ))
        }
    }
}
