//! # annals-maintenance
//!
//! Data maintenance for any Annals store, written once over the
//! [`EventStore`](annals_core::EventStore) trait (so it works the same on the in-memory,
//! embedded, PostgreSQL and HTTP backends):
//!
//! - [`export_events`]: the events as NDJSON in position order, resumable from a cursor;
//! - [`import_events`]: NDJSON events into a store in batches, resumable from a byte
//!   offset, a malformed line stopping the import at its line and offset;
//! - [`IncrementalImport`] / [`incremental_import`]: new events without versions,
//!   appended atomically after the newest stored one;
//! - [`export_secrets`] / [`import_secrets`]: secrets with their idx and tombstones;
//! - [`copy()`]: a lossless copy between two stores, verified by [`checksum`]s;
//! - [`MaintenanceMode`]: freeze the store for the duration, or not.
//!
//! The line format is [`annals_core::ndjson`]: one event per line, exactly the JSON
//! object the HTTP API returns.
//!
//! ```
//! use std::sync::Arc;
//! use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
//! use annals_maintenance::{checksum, export_events, import_events, ExportOptions, ImportOptions};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let source: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! source.append_to_stream(&StreamId::new("acc-1"), ExpectedVersion::NoStream, vec![
//!     ProposedEvent::new("Opened", Json::from_raw(r#"{"owner":"ann"}"#)),
//! ]).await?;
//! let mut file = Vec::new();
//! export_events(&source, &mut file, ExportOptions::default(), |_| {}).await?;
//! let target: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! import_events(&target, &file[..], ImportOptions::default(), |_| {}).await?;
//! assert_eq!(checksum(&*source).await?, checksum(&*target).await?);
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

pub mod copy;
pub mod export;
pub mod import;
pub mod incremental;
pub mod mode;
pub mod secrets;

pub use copy::{checksum, copy, copy_with_progress, Checksum, CopyOptions, CopyReport};
pub use export::{export_events, ExportOptions, ExportReport};
pub use import::{
    import_events, ImportError, ImportOptions, ImportProgress, InputLine, RefusedBatch,
};
pub use incremental::{incremental_import, IncomingEvent, IncrementalImport};
pub use mode::{Maintenance, MaintenanceMode};
pub use secrets::{export_secrets, import_secrets, SecretsExportReport, SecretsImportOptions};
