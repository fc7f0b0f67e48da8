//! # annals-projector
//!
//! Carries events out of an Annals store, written once over the
//! [`annals_core::EventStore`] trait so it works on every backend (memory, embedded,
//! PostgreSQL, and a remote server through `annals_client::HttpStore`):
//!
//! - [`Projector`] ([`projector`]): named projections (async handlers, each with an
//!   optional [`annals_core::EventFilter`]), each run in its own task from a durable
//!   checkpoint kept in the same store (keyed snapshot `annals.projector/<name>`).
//!   At-least-once, in position order per projection; failing handlers are retried with a
//!   bounded exponential [`Backoff`] without holding up other projections, and a
//!   projection whose budget runs out stops with its error and position in its status.
//!   [`flush_after`] adds a flush function called on an interval and before every
//!   checkpoint, so handlers can batch their writes. [`Projector::reset`] rebuilds one
//!   projection from position 0.
//! - [`Publisher`] ([`publisher`]): the outbox. Hands every committed event to a
//!   [`Publish`] function in position order and marks it dispatched once it succeeded;
//!   on start every undispatched event is delivered before new ones. At-least-once,
//!   ordered, nothing lost across `kill -9` (tested).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use annals_core::{EventFilter, EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
//! use annals_projector::{projection_fn, publish_fn, BoxError, Projector, Publisher, PublisherOptions};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! let account = StreamId::new("acc-1").with_aggregate("account");
//! store.append_to_stream(&account, ExpectedVersion::NoStream, vec![
//!     ProposedEvent::new("Deposited", Json::from_raw(r#"{"amount":5}"#)),
//!     ProposedEvent::new("Deposited", Json::from_raw(r#"{"amount":7}"#)),
//! ]).await?;
//!
//! // A read model: the balance of every account, checkpointed in the store.
//! let balance = Arc::new(Mutex::new(0i64));
//! let projector = Projector::new(store.clone());
//! projector.add_filtered("balances", EventFilter::default().aggregate("account"), projection_fn({
//!     let balance = balance.clone();
//!     move |event| {
//!         let amount: serde_json::Value = event.payload.parse().unwrap_or_default();
//!         *balance.lock().unwrap() += amount["amount"].as_i64().unwrap_or(0);
//!         async { Ok::<(), BoxError>(()) }
//!     }
//! })).await?;
//! projector.start().await?;
//! projector.wait_until("balances", |s| s.checkpoint >= 2).await?;
//! assert_eq!(*balance.lock().unwrap(), 12);
//! projector.shutdown().await;
//!
//! // The outbox: every event is published once (at least), then marked dispatched.
//! let publisher = Publisher::start(store.clone(), publish_fn(|event| async move {
//!     println!("to the bus: {} {}", event.stream, event.event_type);
//!     Ok::<(), BoxError>(())
//! }), PublisherOptions::default());
//! publisher.wait_until(|s| s.last_dispatched >= 2).await;
//! assert!(store.undispatched(EventFilter::default(), None).await?.is_empty());
//! publisher.shutdown().await;
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

pub mod projector;
pub mod publisher;
pub mod retry;

pub use projector::{
    flush_after, projection_fn, FlushAfter, Projection, ProjectionFailure, ProjectionFn,
    ProjectionState, ProjectionStatus, Projector, ProjectorOptions,
};
pub use publisher::{
    dispatch_undispatched, publish_fn, use_publisher, Publish, PublishFailure, PublishFn,
    Publisher, PublisherOptions, PublisherState, PublisherStatus,
};
pub use retry::{Backoff, BoxError};
