//! RabbitMQ (feature `rabbitmq`): messages go to an exchange with a routing key (by
//! default straight to one durable queue) as persistent JSON messages, on a channel in
//! publisher-confirm mode; `publish` returns once the broker confirmed the message.

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use annals_core::{Error, Result};

use crate::{channel_error, Message, MessageChannel};

const BACKEND: &str = "rabbitmq";

/// Where a [`RabbitMqChannel`] publishes.
///
/// ```
/// let c = annals_channels::rabbitmq::RabbitMqConfig::queue("annals");
/// assert_eq!((c.exchange.as_str(), c.routing_key.as_str()), ("", "annals"));
/// assert_eq!(c.declare_queue.as_deref(), Some("annals"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMqConfig {
    /// The exchange (`""` = the default exchange, which routes by queue name).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// A durable queue to declare on connect, if any.
    pub declare_queue: Option<String>,
    /// How many publishes of a batch may await their confirmation at once.
    pub max_in_flight: usize,
}

impl RabbitMqConfig {
    /// Straight to the durable queue `queue` (declared on connect) through the default
    /// exchange.
    ///
    /// ```
    /// assert_eq!(annals_channels::rabbitmq::RabbitMqConfig::queue("q").routing_key, "q");
    /// ```
    pub fn queue(queue: impl Into<String>) -> Self {
        let queue = queue.into();
        RabbitMqConfig {
            exchange: String::new(),
            routing_key: queue.clone(),
            declare_queue: Some(queue),
            max_in_flight: 256,
        }
    }

    /// To an existing exchange with a routing key; nothing is declared.
    ///
    /// ```
    /// let c = annals_channels::rabbitmq::RabbitMqConfig::exchange("events", "orders");
    /// assert!(c.declare_queue.is_none());
    /// ```
    pub fn exchange(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        RabbitMqConfig {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            declare_queue: None,
            max_in_flight: 256,
        }
    }
}

/// A RabbitMQ publisher with publisher confirms. Messages are `mandatory`: one that no
/// queue takes comes back and is an error, as is a negative confirm. Failures are
/// [`Error::Backend`] with backend `rabbitmq`.
///
/// ```no_run
/// use annals_channels::{rabbitmq::{RabbitMqChannel, RabbitMqConfig}, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel = RabbitMqChannel::connect("amqp://guest:guest@127.0.0.1:5672/%2f",
///     RabbitMqConfig::queue("annals")).await?;
/// channel.publish(&Message::aggregate_exists("default", "acc-1".into(), true)).await?;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub struct RabbitMqChannel {
    connection: Connection,
    channel: Channel,
    config: RabbitMqConfig,
}

impl std::fmt::Debug for RabbitMqChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqChannel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn backend(e: lapin::Error) -> Error {
    Error::backend(BACKEND, e)
}

impl RabbitMqChannel {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`), opens a channel in
    /// confirm mode and declares the queue of the configuration, if any.
    pub async fn connect(url: &str, config: RabbitMqConfig) -> Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(backend)?;
        let channel = connection.create_channel().await.map_err(backend)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(backend)?;
        if let Some(queue) = &config.declare_queue {
            channel
                .queue_declare(
                    queue,
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(backend)?;
        }
        Ok(RabbitMqChannel {
            connection,
            channel,
            config,
        })
    }

    /// The AMQP channel (to declare, consume, purge).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    async fn send(&self, message: &Message) -> Result<PublisherConfirm> {
        let body = message.to_json()?;
        self.channel
            .basic_publish(
                &self.config.exchange,
                &self.config.routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .map_err(backend)
    }

    async fn confirmed(&self, confirm: PublisherConfirm) -> Result<()> {
        match confirm.await.map_err(backend)? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(channel_error(
                BACKEND,
                format!(
                    "the broker returned the message: no queue is bound to exchange {:?} with routing key {:?} ({} {})",
                    self.config.exchange,
                    self.config.routing_key,
                    returned.reply_code,
                    returned.reply_text.as_str()
                ),
            )),
            Confirmation::Nack(_) => Err(channel_error(
                BACKEND,
                "the broker refused the message (negative confirm)",
            )),
            Confirmation::NotRequested => Err(channel_error(
                BACKEND,
                "the channel is not in confirm mode",
            )),
        }
    }
}

#[async_trait]
impl MessageChannel for RabbitMqChannel {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        let confirm = self.send(message).await?;
        self.confirmed(confirm).await
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(self.config.max_in_flight.max(1)) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for m in chunk {
                confirms.push(self.send(m).await?);
            }
            for c in confirms {
                self.confirmed(c).await?;
            }
        }
        Ok(())
    }
}
