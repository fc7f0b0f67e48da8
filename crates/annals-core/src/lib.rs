//! # annals-core
//!
//! The shared heart of Annals, an event store: the event model, the one
//! [`EventStore`] trait every backend implements, the one [`Error`] type every backend
//! maps its failures into, opaque cursors, the append planner and the page and
//! subscription machinery written once for all backends, and [`MemoryStore`], the
//! in-memory reference backend.
//!
//! ## The model
//! - A stream is identified by `(context, aggregate, id)` ([`StreamId`]).
//! - Stream versions are 1-based; a missing stream has version 0.
//! - Every event gets a store-wide [`Position`]: dense, starting at 1, in commit order.
//! - Payloads and metadata are [`Json`] kept byte-for-byte.
//!
//! ```
//! use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, ReadAll, StreamId};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let account = StreamId::new("acc-1").with_aggregate("account");
//! store.append_to_stream(&account, ExpectedVersion::NoStream, vec![
//!     ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#)),
//!     ProposedEvent::new("Deposited", Json::from_raw(r#"{"amount":5}"#)),
//! ]).await?;
//! // A second writer that still thinks the stream is new loses:
//! let err = store.append_to_stream(&account, ExpectedVersion::NoStream, vec![
//!     ProposedEvent::new("Opened", Json::null()),
//! ]).await.unwrap_err();
//! assert_eq!(err.kind(), annals_core::ErrorKind::WrongExpectedVersion);
//! let page = store.read_all(ReadAll::forward().limit(10)).await?;
//! assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), vec![1, 2]);
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

pub mod append;
pub mod cursor;
pub mod error;
pub mod import;
pub mod limits;
pub mod memory;
pub mod model;
pub mod ndjson;
pub mod query;
pub mod rules;
pub mod scan;
pub mod store;
pub mod subscription;

pub use cursor::{Cursor, StreamPageToken};
pub use error::{Error, ErrorKind, Result};
pub use memory::MemoryStore;
pub use model::{
    Direction, ExpectedVersion, Json, Position, ProposedEvent, RecordedEvent, StreamId, Text,
    Timestamp, Version,
};
pub use query::{
    EventFilter, ListStreams, ReadAll, ReadAllPage, ReadFrom, StreamInfo, StreamPage, StreamRead,
};
pub use store::{
    AppendRequest, AppendResult, Capabilities, EventStore, EventStream, KeyedSnapshot,
    NewStreamSnapshot, Secret, SecretChange, SecretQuery, SnapshotKeyQuery, StoreDescription,
    StreamSnapshot, StreamWrite, Subscribe,
};
pub use store::{ImportBatch, ImportOutcome, OnConflict, SecretImport};
