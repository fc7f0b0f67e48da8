//! Live subscriptions written once over any backend that can read pages and announce
//! its head position.
//!
//! The stream keeps at most one page in memory. It reads the next page only when the
//! consumer has taken every event of the previous one, so a slow consumer slows the
//! reads instead of growing a buffer. Positions come from committed reads only, so the
//! stream sees every matching event exactly once, in position order.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::model::{Position, RecordedEvent};
use crate::query::{ReadAll, ReadAllPage, ReadFrom};
use crate::store::{EventStream, Subscribe};

/// The head value a backend announces when it closes: wakes every subscriber, whose
/// next read then fails with [`Error::Closed`].
pub const CLOSED: Position = Position::MAX;

/// How many events a subscription reads per page.
pub const PAGE_SIZE: u64 = 512;

/// Reads one forward page; backends pass a closure over their own `read_all`.
pub type PageReader = Arc<dyn Fn(ReadAll) -> BoxFuture<'static, Result<ReadAllPage>> + Send + Sync>;

struct State {
    reader: PageReader,
    head: watch::Receiver<Position>,
    request: Subscribe,
    from: ReadFrom,
    buffer: VecDeque<RecordedEvent>,
    failed: bool,
}

/// A catch-up-then-live stream of the events `request` selects.
///
/// `head` announces the newest committed position; the stream waits on it once it has
/// read everything. The stream ends with [`Error::Closed`] when the store closes.
///
/// ```
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId, Subscribe};
/// use futures::StreamExt;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let mut live = store.subscribe(Subscribe::from_start());
/// store.append_to_stream(&StreamId::new("s"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::null())]).await.unwrap();
/// let first = live.next().await.unwrap().unwrap();
/// assert_eq!(first.position, 1);
/// # });
/// ```
pub fn subscription(
    reader: PageReader,
    head: watch::Receiver<Position>,
    request: Subscribe,
) -> EventStream {
    let state = State {
        reader,
        head,
        from: request.from,
        request,
        buffer: VecDeque::new(),
        failed: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(event) = s.buffer.pop_front() {
                return Some((Ok(event), s));
            }
            let read = ReadAll::forward()
                .filter(s.request.filter.clone())
                .limit(PAGE_SIZE);
            let read = ReadAll {
                from: s.from,
                ..read
            };
            let page = match (s.reader)(read).await {
                Ok(page) => page,
                Err(e) => {
                    s.failed = true;
                    return Some((Err(e), s));
                }
            };
            let after = page.next_cursor.position();
            s.from = ReadFrom::Position(after);
            s.buffer.extend(page.events);
            if !s.buffer.is_empty() || !page.end {
                continue;
            }
            // Caught up: wait until something is committed past what we scanned.
            loop {
                if *s.head.borrow_and_update() > after {
                    break;
                }
                if s.head.changed().await.is_err() {
                    s.failed = true;
                    return Some((Err(Error::Closed), s));
                }
            }
        }
    }))
}
