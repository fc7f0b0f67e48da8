//! Redis Streams (feature `redis`): each message is one entry `XADD`ed to a stream key,
//! with the wire body in the field `body` (and the kind in `kind`).

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use annals_core::{Error, Result};

use crate::{Message, MessageChannel};

const BACKEND: &str = "redis";

/// The field of each stream entry holding the wire body.
pub const BODY_FIELD: &str = "body";

/// A Redis Streams publisher: `publish` returns once `XADD` answered with the entry id;
/// `publish_batch` sends the `XADD`s in one pipeline (in order). Failures are
/// [`Error::Backend`] with backend `redis`.
///
/// ```no_run
/// use annals_channels::{redis::RedisChannel, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel = RedisChannel::connect("redis://127.0.0.1:6379", "annals:events").await?;
/// channel.publish(&Message::aggregate_exists("default", "acc-1".into(), true)).await?;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct RedisChannel {
    connection: MultiplexedConnection,
    key: String,
}

impl std::fmt::Debug for RedisChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannel")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn backend(e: redis::RedisError) -> Error {
    Error::backend(BACKEND, e)
}

fn kind(message: &Message) -> &'static str {
    match message {
        Message::Notification { .. } => "notification",
        Message::AggregateExists { .. } => "aggregateExists",
    }
}

impl RedisChannel {
    /// Connects to `url` (`redis://host:port/db`) and publishes to the stream `key`.
    pub async fn connect(url: &str, key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::invalid("key", "empty"));
        }
        let client = redis::Client::open(url).map_err(backend)?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(backend)?;
        Ok(RedisChannel { connection, key })
    }

    /// The stream key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A clone of the connection (to read the stream back).
    pub fn connection(&self) -> MultiplexedConnection {
        self.connection.clone()
    }
}

#[async_trait]
impl MessageChannel for RedisChannel {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        let body = message.to_json()?;
        let mut conn = self.connection.clone();
        let _id: String = redis::cmd("XADD")
            .arg(&self.key)
            .arg("*")
            .arg("kind")
            .arg(kind(message))
            .arg(BODY_FIELD)
            .arg(body)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for m in messages {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg("kind")
                .arg(kind(m))
                .arg(BODY_FIELD)
                .arg(m.to_json()?);
        }
        let mut conn = self.connection.clone();
        let ids: Vec<String> = pipe.query_async(&mut conn).await.map_err(backend)?;
        if ids.len() != messages.len() {
            return Err(crate::channel_error(
                BACKEND,
                format!(
                    "XADD answered {} ids for {} messages",
                    ids.len(),
                    messages.len()
                ),
            ));
        }
        Ok(())
    }
}
