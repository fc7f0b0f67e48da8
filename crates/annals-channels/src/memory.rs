//! The in-memory channel, for tests and examples.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use annals_core::Result;

use crate::{Message, MessageChannel};

/// A channel that keeps every message in memory, in publish order. Clones share the
/// same messages.
///
/// ```
/// use annals_channels::{MemoryChannel, Message, MessageChannel};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let channel = MemoryChannel::new();
/// let reader = channel.clone();
/// channel.publish(&Message::aggregate_exists("s", "a".into(), true)).await?;
/// assert_eq!(reader.len(), 1);
/// assert_eq!(reader.take().len(), 1);
/// assert!(reader.is_empty());
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryChannel {
    messages: Arc<Mutex<Vec<Message>>>,
}

impl MemoryChannel {
    /// An empty channel.
    ///
    /// ```
    /// assert!(annals_channels::MemoryChannel::new().is_empty());
    /// ```
    pub fn new() -> Self {
        MemoryChannel::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every message published so far, in order.
    ///
    /// ```
    /// assert!(annals_channels::MemoryChannel::new().messages().is_empty());
    /// ```
    pub fn messages(&self) -> Vec<Message> {
        self.lock().clone()
    }

    /// Removes and returns every message published so far.
    ///
    /// ```
    /// assert!(annals_channels::MemoryChannel::new().take().is_empty());
    /// ```
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.lock())
    }

    /// How many messages are held.
    ///
    /// ```
    /// assert_eq!(annals_channels::MemoryChannel::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no message is held.
    ///
    /// ```
    /// assert!(annals_channels::MemoryChannel::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[async_trait]
impl MessageChannel for MemoryChannel {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, message: &Message) -> Result<()> {
        self.lock().push(message.clone());
        Ok(())
    }

    async fn publish_batch(&self, messages: &[Message]) -> Result<()> {
        self.lock().extend_from_slice(messages);
        Ok(())
    }
}
