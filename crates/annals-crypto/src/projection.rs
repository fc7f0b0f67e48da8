//! Crypto-shredding for projections: [`Decrypting`] hands a projection its events with
//! their encrypted fields already decrypted (or `"[erased]"` once the subject's key is
//! deleted), so read models are built from plaintext without every handler calling
//! [`Shredder::decrypt_event`] itself.
//!
//! Keys are looked up in the store for every event, never cached across events: a
//! subject forgotten while a projection runs reads as erased from the next event on.

use std::sync::Arc;
use std::time::Duration;

use annals_core::{EventStore, RecordedEvent};
use annals_projector::{BoxError, Projection};
use async_trait::async_trait;

use crate::Shredder;

/// A projection fed decrypted events (see the [module docs](self)).
///
/// A decryption failure (the store unreachable, a tampered field) is the handler's
/// failure: the projector retries the event with its backoff and, once the budget is
/// spent, stops the projection with the error and the event's position: an event is
/// never handed over still encrypted, and never skipped.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_crypto::{Decrypting, Shredder};
/// use annals_projector::{projection_fn, BoxError, Projector};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let shredder = Shredder::new(["/email"])?;
/// let sealed = shredder
///     .encrypt(&*store, "user-1", &Json::from_raw(r#"{"email":"ann@example.com"}"#))
///     .await?;
/// store.append_to_stream(&StreamId::new("user-1"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("Registered", sealed)]).await?;
///
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let emails = projection_fn(move |e| {
///     let tx = tx.clone();
///     async move {
///         let _ = tx.send(e.payload.as_str().unwrap_or_default().to_owned());
///         Ok::<(), BoxError>(())
///     }
/// });
/// let projector = Projector::new(store.clone());
/// projector.add("emails", Decrypting::new(shredder, store.clone(), emails)).await?;
/// projector.start().await?;
/// assert_eq!(rx.recv().await.unwrap(), r#"{"email":"ann@example.com"}"#);
/// projector.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Decrypting<P> {
    shredder: Shredder,
    store: Arc<dyn EventStore>,
    inner: P,
}

impl<P: Projection> Decrypting<P> {
    /// Wraps `inner`: its events are decrypted with `shredder`'s fields and the keys
    /// kept in `store` (the store the projector reads).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// let store: Arc<dyn annals_core::EventStore> = Arc::new(annals_core::MemoryStore::new());
    /// let shredder = annals_crypto::Shredder::new(["/name"]).unwrap();
    /// let p = annals_crypto::Decrypting::new(shredder, store, annals_projector::projection_fn(
    ///     |_e| async { Ok::<(), annals_projector::BoxError>(()) }));
    /// assert_eq!(p.shredder().fields(), ["/name"]);
    /// ```
    pub fn new(shredder: Shredder, store: Arc<dyn EventStore>, inner: P) -> Self {
        Decrypting {
            shredder,
            store,
            inner,
        }
    }

    /// The shredder that decrypts.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let store: Arc<dyn annals_core::EventStore> = Arc::new(annals_core::MemoryStore::new());
    /// # let p = annals_crypto::Decrypting::new(annals_crypto::Shredder::new(["/a"]).unwrap(), store,
    /// #     annals_projector::projection_fn(|_e| async { Ok::<(), annals_projector::BoxError>(()) }));
    /// assert_eq!(p.shredder().fields().len(), 1);
    /// ```
    pub fn shredder(&self) -> &Shredder {
        &self.shredder
    }

    /// The wrapped projection.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let store: Arc<dyn annals_core::EventStore> = Arc::new(annals_core::MemoryStore::new());
    /// struct Count(u64);
    /// # #[async_trait::async_trait]
    /// # impl annals_projector::Projection for Count {
    /// #     async fn handle(&mut self, _e: &annals_core::RecordedEvent) -> Result<(), annals_projector::BoxError> { self.0 += 1; Ok(()) }
    /// # }
    /// let p = annals_crypto::Decrypting::new(annals_crypto::Shredder::new(["/a"]).unwrap(), store, Count(0));
    /// assert_eq!(p.into_inner().0, 0);
    /// ```
    pub fn into_inner(self) -> P {
        self.inner
    }
}

#[async_trait]
impl<P: Projection> Projection for Decrypting<P> {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let open = self
            .shredder
            .decrypt_event(&*self.store, event.clone())
            .await?;
        self.inner.handle(&open).await
    }

    async fn flush(&mut self) -> Result<(), BoxError> {
        self.inner.flush().await
    }

    fn flush_interval(&self) -> Option<Duration> {
        self.inner.flush_interval()
    }

    async fn reset(&mut self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
}
