//! The storage seam: ordered byte tables with atomic, durable batches.
//!
//! The store above speaks only this interface, so the engine underneath can be replaced
//! (a purpose-built segment log is the planned successor) without touching the event
//! store's logic. Today's engine is fjall (an LSM tree with a write-ahead journal); it
//! won the measured comparison against redb on this workload (see the crate docs).

use std::ops::Bound;
use std::path::Path;

use annals_core::{Error, Result};
use bytes::Bytes;

/// The tables of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// first position → the records of one group commit.
    Events,
    /// stream key ++ first version → one stream run of a commit (copied, or a pointer into
    /// the commit's log record for long runs).
    StreamEvents,
    /// stream key → stream info.
    Streams,
    /// first timestamp ++ first position → stream key (stream listing order).
    StreamsByTime,
    /// event id → position.
    EventIds,
    /// position → () for events dispatched above the dispatch watermark.
    Dispatched,
    /// store-level values (freeze flag, counters).
    Meta,
    /// key → keyed snapshot.
    Snapshots,
    /// stream key ++ version ++ save sequence → stream snapshot.
    StreamSnapshots,
    /// idx → secret.
    Secrets,
    /// secret id → idx.
    SecretIds,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 11] = [
        Table::Events,
        Table::StreamEvents,
        Table::Streams,
        Table::StreamsByTime,
        Table::EventIds,
        Table::Dispatched,
        Table::Meta,
        Table::Snapshots,
        Table::StreamSnapshots,
        Table::Secrets,
        Table::SecretIds,
    ];

    /// The table's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::StreamEvents => "stream_events",
            Table::Streams => "streams",
            Table::StreamsByTime => "streams_by_time",
            Table::EventIds => "event_ids",
            Table::Dispatched => "dispatched",
            Table::Meta => "meta",
            Table::Snapshots => "snapshots",
            Table::StreamSnapshots => "stream_snapshots",
            Table::Secrets => "secrets",
            Table::SecretIds => "secret_ids",
        }
    }
}

/// One write in a batch: a value to put, or `None` to delete the key. Values are shared
/// buffers, so one record can go to two tables without a copy.
pub type Write = (Table, Vec<u8>, Option<Bytes>);

/// A key-value pair read from a table.
pub type Entry = (Bytes, Bytes);

/// Iterator over table entries.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<Entry>> + Send + 'a>;

/// What the event store needs from a storage engine.
pub trait Engine: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>>;

    /// Reads a key range in key order (or reverse order).
    fn range(
        &self,
        table: Table,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Entries<'_>;

    /// The entry with the greatest key.
    fn last(&self, table: Table) -> Result<Option<Entry>>;

    /// Applies every write atomically and returns only once it is durable (fsynced).
    fn commit_durable(&self, writes: Vec<Write>) -> Result<()>;

    /// Deletes every entry of every table, durably.
    fn clear(&self) -> Result<()> {
        self.clear_tables(&Table::ALL)
    }

    /// Deletes every entry of the given tables, durably (table by table: not atomic).
    fn clear_tables(&self, tables: &[Table]) -> Result<()>;

    /// Bytes the store occupies on disk.
    fn disk_space(&self) -> Option<u64>;

    /// Flushes everything to disk (at close).
    fn sync(&self) -> Result<()>;
}

/// Tuning of the fjall engine.
#[derive(Debug, Clone, Copy)]
pub struct FjallTuning {
    /// Block cache in bytes.
    pub cache_bytes: u64,
    /// Journal size after which memtables are flushed, bounding replay time at open
    /// (at least 64 MiB).
    pub max_journal_bytes: u64,
}

/// fjall refuses (panics on) journal limits below 64 MiB.
const MIN_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The fjall engine: one database directory, one keyspace per table.
pub struct FjallEngine {
    db: fjall::Database,
    keyspaces: Vec<fjall::Keyspace>,
}

fn fjall_error(e: fjall::Error) -> Error {
    match e {
        fjall::Error::Poisoned => Error::Poisoned {
            reason: "a previous durable write failed in the storage engine".into(),
        },
        other => Error::backend("embedded", other),
    }
}

impl FjallEngine {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, tuning: FjallTuning) -> Result<Self> {
        let db = fjall::Database::builder(dir)
            .cache_size(tuning.cache_bytes)
            .max_journaling_size(tuning.max_journal_bytes.max(MIN_JOURNAL_BYTES))
            // Commit records are large; compressing them would cost the single writer
            // more CPU than the smaller write saves.
            .journal_compression(fjall::CompressionType::None)
            .open()
            .map_err(|e| match e {
                fjall::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    Error::backend(
                        "embedded",
                        std::io::Error::new(
                            io.kind(),
                            format!("{} is already open in another process", dir.display()),
                        ),
                    )
                }
                other => fjall_error(other),
            })?;
        let mut keyspaces = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            keyspaces.push(
                db.keyspace(table.name(), fjall::KeyspaceCreateOptions::default)
                    .map_err(fjall_error)?,
            );
        }
        Ok(FjallEngine { db, keyspaces })
    }

    fn ks(&self, table: Table) -> &fjall::Keyspace {
        // Table::ALL and keyspaces are built in the same order.
        &self.keyspaces[table as usize]
    }
}

fn entry(guard: fjall::Guard) -> Result<Entry> {
    let (k, v) = guard.into_inner().map_err(fjall_error)?;
    Ok((Bytes::from(k), Bytes::from(v)))
}

impl Engine for FjallEngine {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        self.ks(table)
            .get(key)
            .map(|v| v.map(Bytes::from))
            .map_err(fjall_error)
    }

    fn range(
        &self,
        table: Table,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Entries<'_> {
        let iter = self.ks(table).range::<Vec<u8>, _>((from, to));
        if reverse {
            Box::new(iter.rev().map(entry))
        } else {
            Box::new(iter.map(entry))
        }
    }

    fn last(&self, table: Table) -> Result<Option<Entry>> {
        self.ks(table).last_key_value().map(entry).transpose()
    }

    fn commit_durable(&self, writes: Vec<Write>) -> Result<()> {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for (table, key, value) in writes {
            match value {
                Some(v) => batch.insert(self.ks(table), key, fjall::Slice::from(v)),
                None => batch.remove(self.ks(table), key),
            }
        }
        batch.commit().map_err(fjall_error)
    }

    fn clear_tables(&self, tables: &[Table]) -> Result<()> {
        for table in tables {
            self.ks(*table).clear().map_err(fjall_error)?;
        }
        self.sync()
    }

    fn disk_space(&self) -> Option<u64> {
        self.db.disk_space().ok()
    }

    fn sync(&self) -> Result<()> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .map_err(fjall_error)
    }
}
