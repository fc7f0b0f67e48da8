//! # Annals
//!
//! An event store: the append-only record of everything that happened in an
//! event-sourced application. One [`EventStore`] trait, many backends:
//!
//! - [`MemoryStore`]: in memory, the reference implementation (always available);
//! - [`embedded::EmbeddedStore`]: durable on disk in one data directory, the default
//!   (cargo feature `embedded`, on by default).
//!
//! **Durability** (embedded): when `append` returns `Ok`, the events are fsynced; a crash
//! (`kill -9`, power loss after the fsync) loses nothing acknowledged and never keeps half
//! of an append. Concurrent appends share fsyncs (group commit).
//!
//! ```
//! use annals::{EventStore, ExpectedVersion, Json, ProposedEvent, ReadAll, StreamId, Subscribe};
//! use futures::StreamExt;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = annals::embedded::EmbeddedStore::open(dir.path())?;
//!
//! let account = StreamId::new("acc-1").with_aggregate("account").with_context("billing");
//! store.append_to_stream(&account, ExpectedVersion::NoStream, vec![
//!     ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#)),
//!     ProposedEvent::new("Deposited", Json::from_raw(r#"{"amount":5}"#)),
//! ]).await?;
//!
//! // Optimistic concurrency: a writer that expected a new stream loses.
//! let lost = store.append_to_stream(&account, ExpectedVersion::NoStream, vec![]).await;
//! assert!(matches!(lost, Err(annals::Error::WrongExpectedVersion { actual: 2, .. })));
//!
//! // Catch up, then follow live.
//! let mut live = store.subscribe(Subscribe::from_start());
//! assert_eq!(live.next().await.unwrap()?.event_type, "Opened");
//!
//! let page = store.read_all(ReadAll::forward()).await?;
//! assert_eq!(page.head_position, 2);
//! # Ok::<(), annals::Error>(())
//! # }).unwrap();
//! ```

pub use annals_core::*;

/// The embedded, durable default backend.
#[cfg(feature = "embedded")]
pub use annals_embedded as embedded;

/// The projector (checkpointed projections) and the publisher (outbox), over any store.
pub use annals_projector::{projector, publisher};

/// The README's code compiles (checked as a doctest).
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
