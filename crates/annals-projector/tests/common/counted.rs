//! A store that counts how it is asked to mark events dispatched: the in-memory
//! reference, wrapped; optionally without batch marks, as a backend that does not
//! support them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use annals_core::{Error, EventStore, MemoryStore, Position, Result};
use annals_testkit::wrap::{Intercept, Wrapped};

/// The in-memory store, counting dispatch marks.
pub type CountedStore = Wrapped<Counts>;

/// What the wrapped in-memory store records of dispatch marks.
#[derive(Default)]
pub struct Counts {
    pub inner: MemoryStore,
    /// Every `mark_dispatched_at` call, with its positions.
    pub batch_marks: Mutex<Vec<Vec<Position>>>,
    /// How many `mark_dispatched` (one event by id) calls were made.
    pub single_marks: AtomicU32,
    /// Refuse `mark_dispatched_at` with `Unsupported`.
    pub without_batch_marks: bool,
}

impl Counts {
    pub fn batch_marks(&self) -> Vec<Vec<Position>> {
        self.batch_marks.lock().unwrap().clone()
    }

    pub fn single_marks(&self) -> u32 {
        self.single_marks.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Intercept for Counts {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }
    fn backend(&self) -> &'static str {
        "counted"
    }
    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        self.single_marks.fetch_add(1, Ordering::SeqCst);
        self.inner.mark_dispatched(event_id).await
    }
    async fn mark_dispatched_at(&self, positions: &[annals_core::Position]) -> Result<()> {
        if self.without_batch_marks {
            return Err(Error::Unsupported {
                backend: "counted",
                operation: "mark_dispatched_at",
            });
        }
        self.batch_marks.lock().unwrap().push(positions.to_vec());
        self.inner.mark_dispatched_at(positions).await
    }
}
