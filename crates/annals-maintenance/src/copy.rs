//! Copy: a lossless move of a store's contents to another (empty) store of any backend,
//! verified by counts and content checksums computed on both sides.
//!
//! Stream snapshots are found through the streams that have events (the trait lists
//! no other streams): a snapshot of a stream without any event is neither copied nor
//! counted.

use std::fmt;
use std::sync::Arc;

use annals_core::ndjson::{write_event, write_secret};
use annals_core::{
    Error, EventStore, ImportBatch, KeyedSnapshot, ListStreams, NewStreamSnapshot, OnConflict,
    ReadAll, Result, SnapshotKeyQuery, StreamSnapshot,
};
use sha2::{Digest, Sha256};

use crate::mode::{Maintenance, MaintenanceMode};
use crate::secrets::secret_pages;

/// What a store holds, summed up: counts and SHA-256 digests over the canonical NDJSON
/// encoding ([`annals_core::ndjson`]) of every event in position order (position, id,
/// stream, version, type, timestamp, payload and metadata bytes, commit id and sequence,
/// dispatched flag) and of every secret in idx order (tombstones included); and over
/// every keyed snapshot in key order (key, content, timestamp) and every stream
/// snapshot, stream by stream in the order of [`EventStore::list_streams`] and oldest
/// save first (stream, id, versions, data bytes, timestamp), each field
/// length-prefixed.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, MemoryStore};
/// use annals_maintenance::checksum;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let sum = checksum(&*store).await?;
/// assert_eq!(sum.events, 0);
/// // SHA-256 of nothing:
/// assert!(sum.to_string().contains("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// Events counted.
    pub events: u64,
    /// Hex SHA-256 over the events' lines.
    pub events_sha256: String,
    /// Secrets counted (tombstones included).
    pub secrets: u64,
    /// Hex SHA-256 over the secrets' lines.
    pub secrets_sha256: String,
    /// Keyed snapshots counted.
    pub keyed_snapshots: u64,
    /// Hex SHA-256 over the keyed snapshots.
    pub keyed_snapshots_sha256: String,
    /// Stream snapshots counted (of streams that have events).
    pub stream_snapshots: u64,
    /// Hex SHA-256 over the stream snapshots.
    pub stream_snapshots_sha256: String,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events sha256:{} / {} secrets sha256:{} / {} keyed snapshots sha256:{} / {} stream snapshots sha256:{}",
            self.events,
            self.events_sha256,
            self.secrets,
            self.secrets_sha256,
            self.keyed_snapshots,
            self.keyed_snapshots_sha256,
            self.stream_snapshots,
            self.stream_snapshots_sha256
        )
    }
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Events read per page while copying or summing.
const PAGE: u64 = 10_000;

/// Keyed snapshots read (and imported) per page while copying or summing.
const SNAPSHOT_PAGE: u64 = 1_000;

/// Streams listed per page while copying or summing stream snapshots.
const STREAM_PAGE: u64 = 1_000;

/// Feeds one length-prefixed field to a digest (so field boundaries are unambiguous).
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Computes the [`Checksum`] of a store by reading it.
///
/// ```
/// # use std::sync::Arc;
/// # use annals_core::{EventStore, MemoryStore};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// store.set_secret("u", "k").await?;
/// store.save_snapshot("projection", "{}").await?;
/// let sum = annals_maintenance::checksum(&*store).await?;
/// assert_eq!((sum.secrets, sum.keyed_snapshots, sum.stream_snapshots), (1, 1, 0));
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn checksum(store: &dyn EventStore) -> Result<Checksum> {
    checksum_of(store, true).await
}

/// [`checksum`], counting stream snapshots only when `stream_snapshots` (else they
/// count as none).
async fn checksum_of(store: &dyn EventStore, stream_snapshots: bool) -> Result<Checksum> {
    let mut hasher = Sha256::new();
    let mut events = 0u64;
    let mut read = ReadAll::forward().limit(PAGE);
    let mut line = Vec::with_capacity(1 << 16);
    loop {
        let page = store.read_all(read.clone()).await?;
        for e in &page.events {
            line.clear();
            write_event(&mut line, e)?;
            hasher.update(&line);
        }
        events += page.events.len() as u64;
        if page.end || page.events.is_empty() {
            break;
        }
        read = read.cursor(page.next_cursor);
    }
    let events_sha256 = hex(&hasher.finalize());
    let mut hasher = Sha256::new();
    let mut secrets = 0u64;
    secret_pages(store, 0, |page| {
        for s in &page {
            line.clear();
            write_secret(&mut line, s);
            hasher.update(&line);
        }
        secrets += page.len() as u64;
        Ok(())
    })
    .await?;
    let secrets_sha256 = hex(&hasher.finalize());

    let mut hasher = Sha256::new();
    let mut keyed_snapshots = 0u64;
    keyed_snapshot_pages(store, |page| {
        for s in page {
            field(&mut hasher, s.key.as_bytes());
            field(&mut hasher, s.content.as_bytes());
            hasher.update(s.timestamp.as_millis().to_be_bytes());
        }
        keyed_snapshots += page.len() as u64;
        Ok(())
    })
    .await?;
    let keyed_snapshots_sha256 = hex(&hasher.finalize());

    let mut hasher = Sha256::new();
    let mut stream_snapshot_count = 0u64;
    if stream_snapshots {
        stream_snapshot_lists(store, |list| {
            for s in list {
                field(&mut hasher, s.stream.context.as_bytes());
                field(&mut hasher, s.stream.aggregate.as_bytes());
                field(&mut hasher, s.stream.id.as_bytes());
                field(&mut hasher, s.id.as_bytes());
                hasher.update(s.stream_version.to_be_bytes());
                hasher.update(s.schema_version.to_be_bytes());
                field(&mut hasher, s.data.as_bytes());
                hasher.update(s.timestamp.as_millis().to_be_bytes());
            }
            stream_snapshot_count += list.len() as u64;
            Ok(())
        })
        .await?;
    }
    Ok(Checksum {
        events,
        events_sha256,
        secrets,
        secrets_sha256,
        keyed_snapshots,
        keyed_snapshots_sha256,
        stream_snapshots: stream_snapshot_count,
        stream_snapshots_sha256: hex(&hasher.finalize()),
    })
}

/// Every keyed snapshot in key order, one page at a time.
async fn keyed_snapshot_pages<F>(store: &dyn EventStore, mut page: F) -> Result<()>
where
    F: FnMut(&[KeyedSnapshot]) -> Result<()>,
{
    let mut start_after = None;
    loop {
        let snapshots = store
            .list_snapshots(SnapshotKeyQuery {
                start_after: start_after.take(),
                limit: Some(SNAPSHOT_PAGE),
            })
            .await?;
        page(&snapshots)?;
        if (snapshots.len() as u64) < SNAPSHOT_PAGE {
            return Ok(());
        }
        start_after = snapshots.last().map(|s| s.key.clone());
    }
}

/// The snapshots of every stream that has events, stream by stream in the order of
/// `list_streams`, each stream's oldest save first.
async fn stream_snapshot_lists<F>(store: &dyn EventStore, mut list: F) -> Result<()>
where
    F: FnMut(&[StreamSnapshot]) -> Result<()>,
{
    let mut query = ListStreams::default().limit(STREAM_PAGE);
    loop {
        let page = store.list_streams(query.clone()).await?;
        for info in &page.streams {
            let snapshots = store.list_stream_snapshots(&info.stream).await?;
            if !snapshots.is_empty() {
                list(&snapshots)?;
            }
        }
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => return Ok(()),
        }
    }
}

/// How to copy.
///
/// ```
/// let o = annals_maintenance::CopyOptions::default();
/// assert!(o.stream_snapshots);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// [`MaintenanceMode::Auto`]: freeze the source for the duration (so the copy is a
    /// consistent cut) and unfreeze it afterwards, also on error.
    pub maintenance: MaintenanceMode,
    /// Events per import batch.
    pub batch_size: u64,
    /// Copy stream snapshots (found through the stream listing). When `false` they are
    /// left out of the copy and of the verification on both sides.
    pub stream_snapshots: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            maintenance: MaintenanceMode::Manual,
            batch_size: PAGE,
            stream_snapshots: true,
        }
    }
}

/// What a copy moved, and the verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Events copied.
    pub events: u64,
    /// Stream snapshots copied.
    pub stream_snapshots: u64,
    /// Keyed snapshots copied.
    pub keyed_snapshots: u64,
    /// Secrets copied, tombstones included.
    pub secrets: u64,
    /// The source's checksum, computed by reading the source.
    pub source: Checksum,
    /// The target's checksum, computed by reading the target after the copy.
    pub target: Checksum,
}

impl CopyReport {
    /// Whether both sides have the same counts and digests.
    ///
    /// ```
    /// # let c = annals_maintenance::Checksum { events: 0, events_sha256: String::new(), secrets: 0, secrets_sha256: String::new(),
    /// #     keyed_snapshots: 0, keyed_snapshots_sha256: String::new(), stream_snapshots: 0, stream_snapshots_sha256: String::new() };
    /// let r = annals_maintenance::CopyReport { events: 0, stream_snapshots: 0, keyed_snapshots: 0, secrets: 0, source: c.clone(), target: c };
    /// assert!(r.verified());
    /// ```
    pub fn verified(&self) -> bool {
        self.source == self.target
    }
}

/// Copies everything `from` holds into `to`, which must be empty (no events, no
/// secrets, no keyed snapshots): events with their positions, ids, stream versions, timestamps, payload and
/// metadata bytes, commit ids and sequences and dispatched marks (through
/// [`EventStore::import_events`]); every keyed snapshot with its timestamp (through
/// [`EventStore::import_snapshots`]); every snapshot of every stream that has events,
/// saved in the source's save order with its id and timestamp (so
/// `latest_stream_snapshot` and pruning answer the same on both sides); secrets with
/// their idx, tombstones included. Then reads both stores and compares their
/// [`Checksum`]s; a difference is [`Error::Corrupted`] (the report is lost then: the
/// error names both checksums).
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_maintenance::{copy, CopyOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let from: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// from.append_to_stream(&StreamId::new("a"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::from_raw("{ }"))]).await?;
/// from.set_secret("u", "k").await?;
/// from.save_snapshot("projection", "{}").await?;
/// let to: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let report = copy(&from, &to, CopyOptions::default()).await?;
/// assert!(report.verified());
/// assert_eq!((report.events, report.secrets, report.keyed_snapshots), (1, 1, 1));
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn copy(
    from: &Arc<dyn EventStore>,
    to: &Arc<dyn EventStore>,
    options: CopyOptions,
) -> Result<CopyReport> {
    copy_with_progress(from, to, options, |_| {}).await
}

/// [`copy`], calling `progress` with the number of events copied so far after each batch.
///
/// ```
/// # use std::sync::Arc;
/// # use annals_core::{EventStore, MemoryStore};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let from: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let to: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let r = annals_maintenance::copy_with_progress(&from, &to, Default::default(), |n| println!("{n}")).await?;
/// assert_eq!(r.events, 0);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn copy_with_progress<F>(
    from: &Arc<dyn EventStore>,
    to: &Arc<dyn EventStore>,
    options: CopyOptions,
    progress: F,
) -> Result<CopyReport>
where
    F: FnMut(u64),
{
    let target = to.describe().await?;
    let keyed = to
        .list_snapshots(SnapshotKeyQuery {
            start_after: None,
            limit: Some(1),
        })
        .await?;
    if target.event_count > 0
        || target.head_position > 0
        || target.secret_count > 0
        || !keyed.is_empty()
    {
        return Err(Error::invalid(
            "to",
            format!(
                "the target store is not empty ({} events, {} secrets, {} keyed snapshots); \
                 copy needs an empty one",
                target.event_count,
                target.secret_count,
                if keyed.is_empty() { "no" } else { "some" }
            ),
        ));
    }
    let guard = Maintenance::begin(from, options.maintenance).await?;
    let result = copy_contents(&**from, &**to, &options, progress).await;
    guard.finish(result).await
}

async fn copy_contents<F>(
    from: &dyn EventStore,
    to: &dyn EventStore,
    options: &CopyOptions,
    mut progress: F,
) -> Result<CopyReport>
where
    F: FnMut(u64),
{
    let mut report = CopyReport {
        events: 0,
        stream_snapshots: 0,
        keyed_snapshots: 0,
        secrets: 0,
        source: empty_checksum(),
        target: empty_checksum(),
    };

    // Events, in position order, into positions 1.. of the empty target.
    let mut read = ReadAll::forward().limit(options.batch_size.max(1));
    loop {
        let page = from.read_all(read.clone()).await?;
        let n = page.events.len() as u64;
        if n > 0 {
            to.import_events(ImportBatch {
                events: page.events,
                on_conflict: OnConflict::Error,
                expected_head: Some(report.events),
            })
            .await?;
            report.events += n;
            progress(report.events);
        }
        if page.end || n == 0 {
            break;
        }
        read = read.cursor(page.next_cursor);
    }

    if options.stream_snapshots {
        report.stream_snapshots = copy_stream_snapshots(from, to).await?;
    }
    report.keyed_snapshots = copy_keyed_snapshots(from, to).await?;

    let mut secrets = Vec::new();
    secret_pages(from, 0, |page| {
        secrets.extend(page.into_iter().map(|s| annals_core::SecretImport {
            idx: Some(s.idx),
            id: s.id,
            secret: s.secret,
        }));
        Ok(())
    })
    .await?;
    report.secrets = secrets.len() as u64;
    for chunk in secrets.chunks(crate::secrets::SECRET_PAGE as usize) {
        to.import_secrets(chunk.to_vec(), OnConflict::Error).await?;
    }

    report.source = checksum_of(from, options.stream_snapshots).await?;
    report.target = checksum_of(to, options.stream_snapshots).await?;
    if !report.verified() {
        return Err(Error::Corrupted {
            location: "copy target".into(),
            detail: format!(
                "the copy differs from its source: source {}, target {}",
                report.source, report.target
            ),
        });
    }
    Ok(report)
}

fn empty_checksum() -> Checksum {
    Checksum {
        events: 0,
        events_sha256: String::new(),
        secrets: 0,
        secrets_sha256: String::new(),
        keyed_snapshots: 0,
        keyed_snapshots_sha256: String::new(),
        stream_snapshots: 0,
        stream_snapshots_sha256: String::new(),
    }
}

/// Copies every keyed snapshot, a page at a time, keeping its timestamp.
async fn copy_keyed_snapshots(from: &dyn EventStore, to: &dyn EventStore) -> Result<u64> {
    let mut copied = 0;
    let mut start_after = None;
    loop {
        let page = from
            .list_snapshots(SnapshotKeyQuery {
                start_after: start_after.take(),
                limit: Some(SNAPSHOT_PAGE),
            })
            .await?;
        let full = page.len() as u64 == SNAPSHOT_PAGE;
        start_after = page.last().map(|s| s.key.clone());
        if !page.is_empty() {
            copied += to.import_snapshots(page).await?;
        }
        if !full {
            return Ok(copied);
        }
    }
}

/// Copies the snapshots of every stream that has events, each stream's in its save
/// order, with their ids and timestamps.
async fn copy_stream_snapshots(from: &dyn EventStore, to: &dyn EventStore) -> Result<u64> {
    let mut copied = 0;
    let mut query = ListStreams::default().limit(STREAM_PAGE);
    loop {
        let page = from.list_streams(query.clone()).await?;
        for info in &page.streams {
            for s in from.list_stream_snapshots(&info.stream).await? {
                to.save_stream_snapshot(NewStreamSnapshot {
                    id: Some(s.id),
                    stream: s.stream,
                    stream_version: s.stream_version,
                    schema_version: s.schema_version,
                    data: s.data,
                    timestamp: Some(s.timestamp),
                })
                .await?;
                copied += 1;
            }
        }
        match page.next_page_token {
            Some(token) => query.page_token = Some(token),
            None => return Ok(copied),
        }
    }
}
