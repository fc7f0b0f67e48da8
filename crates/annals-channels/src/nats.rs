//! NATS JetStream (feature `nats`): every message is published on one subject of a
//! JetStream stream, and `publish` returns once JetStream acknowledged it.

use async_nats::jetstream::{self, context::PublishAckFuture};
use async_trait::async_trait;

use annals_core::{Error, Result};

use crate::{Message, MessageChannel};

const BACKEND: &str = "nats";

/// Where and how a [`NatsChannel`] publishes.
///
/// ```
/// let c = annals_channels::nats::NatsConfig::new("annals.orders");
/// assert_eq!(c.stream, "ANNALS_ORDERS");
/// assert!(c.create_stream);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// The subject messages are published on.
    pub subject: String,
    /// The JetStream stream holding the subject.
    pub stream: String,
    /// Create the stream (capturing `subject`) when it does not exist.
    pub create_stream: bool,
    /// How many publishes of a batch may await their acknowledgement at once.
    pub max_in_flight: usize,
}

impl NatsConfig {
    /// Publishes on `subject`, in a stream named after it (upper case, every character
    /// other than a letter, digit, `-` or `_` replaced by `_`), created when missing.
    ///
    /// ```
    /// assert_eq!(annals_channels::nats::NatsConfig::new("a.b*").stream, "A_B_");
    /// ```
    pub fn new(subject: impl Into<String>) -> Self {
        let subject = subject.into();
        let stream = subject
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        NatsConfig {
            subject,
            stream,
            create_stream: true,
            max_in_flight: 256,
        }
    }

    /// Uses this stream name instead of the derived one.
    ///
    /// ```
    /// let c = annals_channels::nats::NatsConfig::new("s").stream("EVENTS");
    /// assert_eq!(c.stream, "EVENTS");
    /// ```
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }
}

/// A JetStream publisher. `publish` waits for the acknowledgement; `publish_batch`
/// sends up to `max_in_flight` messages before awaiting their acknowledgements, in
/// order. Connection, publish and acknowledgement failures are
/// [`Error::Backend`] with backend `nats`.
///
/// ```no_run
/// use annals_channels::{nats::{NatsChannel, NatsConfig}, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel = NatsChannel::connect("nats://127.0.0.1:4222", NatsConfig::new("annals.events")).await?;
/// channel.publish(&Message::aggregate_exists("default", "acc-1".into(), true)).await?;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct NatsChannel {
    context: jetstream::Context,
    config: NatsConfig,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(BACKEND, e)
}

impl NatsChannel {
    /// Connects to the server at `url` and, with `create_stream`, makes sure the stream
    /// exists.
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self> {
        let client = async_nats::connect(url).await.map_err(backend)?;
        Self::with_client(client, config).await
    }

    /// Uses an existing client connection.
    pub async fn with_client(client: async_nats::Client, config: NatsConfig) -> Result<Self> {
        if config.subject.is_empty() {
            return Err(Error::invalid("subject", "empty"));
        }
        let context = jetstream::new(client);
        if config.create_stream {
            context
                .get_or_create_stream(jetstream::stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![config.subject.clone()],
                    ..Default::default()
                })
                .await
                .map_err(backend)?;
        }
        Ok(NatsChannel { context, config })
    }

    /// The JetStream context (to read the stream back, manage it).
    pub fn context(&self) -> &jetstream::Context {
        &self.context
    }

    /// The configuration in use.
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    async fn send(&self, message: &Message) -> Result<PublishAckFuture> {
        let body = message.to_json()?;
        self.context
            .publish(self.config.subject.clone(), body.into())
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl MessageChannel for NatsChannel {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        self.send(message).await?.await.map_err(backend)?;
        Ok(())
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(self.config.max_in_flight.max(1)) {
            let mut acks = Vec::with_capacity(chunk.len());
            for m in chunk {
                acks.push(self.send(m).await?);
            }
            for ack in acks {
                ack.await.map_err(backend)?;
            }
        }
        Ok(())
    }
}
