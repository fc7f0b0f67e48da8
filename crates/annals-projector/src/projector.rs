//! The projector: named projections, each fed every matching event in position order
//! from its durable checkpoint, in its own task.
//!
//! A projection's checkpoint is a keyed snapshot in the same store, under
//! [`checkpoint_key`] (`annals.projector/<name>`), holding `{"position":N}`: every event
//! at or below `N` was handled (and flushed). Each projection runs in its own tokio task:
//! it catches up with `read_all` pages after its checkpoint, then follows new events with
//! `subscribe`. Delivery is at-least-once: after a crash the events handled since the last
//! checkpoint are handled again.
//!
//! When to checkpoint: after every handled batch (a catch-up page, or the events a live
//! subscription had ready at once), after calling [`Projection::flush`]. A projection with
//! a [`Projection::flush_interval`] (see [`flush_after`]) is flushed and checkpointed
//! once its interval has elapsed since the last flush and something was handled since
//! (also while no new events come), and when it stops, so that it can gather writes in
//! memory and write them in one go in `flush`.
//!
//! A failing handler (or flush, or store call) is retried on the same event with the
//! projector's [`Backoff`]; other projections go on meanwhile. When the budget is used up
//! the projection stops in [`ProjectionState::Failed`]; its status names the error and the
//! position of the event that failed, and the checkpoint stays just before it, so nothing
//! is ever skipped: [`Projector::start_projection`] retries from there.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use annals_core::{
    Error, ErrorKind, EventFilter, EventStore, Position, ReadAll, ReadAllPage, RecordedEvent,
    Result, Subscribe,
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::retry::{after_failure, retry_store_call, stop_requested, stopped, Abort};
pub use crate::retry::{Backoff, BoxError};

/// The prefix of the keyed snapshots that hold the checkpoints.
pub const CHECKPOINT_PREFIX: &str = "annals.projector/";

/// The key of the keyed snapshot holding a projection's checkpoint.
///
/// ```
/// assert_eq!(annals_projector::projector::checkpoint_key("balances"), "annals.projector/balances");
/// ```
pub fn checkpoint_key(name: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{name}")
}

/// A read model or side effect fed by the projector, one event at a time, in position
/// order.
///
/// Only [`Projection::handle`] is required. Closures become projections with
/// [`projection_fn`]; [`flush_after`] adds a flush function and interval.
///
/// ```
/// use annals_core::RecordedEvent;
/// use annals_projector::{BoxError, Projection};
///
/// struct Counter(u64);
///
/// #[async_trait::async_trait]
/// impl Projection for Counter {
///     async fn handle(&mut self, _event: &RecordedEvent) -> Result<(), BoxError> {
///         self.0 += 1;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + 'static {
    /// Handles one event. An error makes the projector retry the same event after a
    /// backoff; events are handled at least once, so handling should be idempotent.
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError>;

    /// Makes everything handled so far durable; called before every checkpoint.
    /// Retried like `handle` when it fails.
    async fn flush(&mut self) -> Result<(), BoxError> {
        Ok(())
    }

    /// When `Some`, the projection is flushed and checkpointed once per interval (when
    /// something was handled since the last flush) instead of after every batch.
    fn flush_interval(&self) -> Option<Duration> {
        None
    }

    /// Forgets the projection's state before a rebuild from position 0
    /// ([`Projector::reset`]).
    async fn reset(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
}

#[async_trait]
impl Projection for Box<dyn Projection> {
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        (**self).handle(event).await
    }
    async fn flush(&mut self) -> Result<(), BoxError> {
        (**self).flush().await
    }
    fn flush_interval(&self) -> Option<Duration> {
        (**self).flush_interval()
    }
    async fn reset(&mut self) -> Result<(), BoxError> {
        (**self).reset().await
    }
}

/// A projection made of an async closure; see [`projection_fn`].
pub struct ProjectionFn<F> {
    handler: F,
}

/// Makes a projection of an async closure that takes each event.
///
/// ```
/// use annals_projector::{projection_fn, BoxError};
/// let p = projection_fn(|event| async move {
///     println!("{} at {}", event.event_type, event.position);
///     Ok::<(), BoxError>(())
/// });
/// # let _ = p;
/// ```
pub fn projection_fn<F, Fut>(handler: F) -> ProjectionFn<F>
where
    F: FnMut(RecordedEvent) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    ProjectionFn { handler }
}

#[async_trait]
impl<F, Fut> Projection for ProjectionFn<F>
where
    F: FnMut(RecordedEvent) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        (self.handler)(event.clone()).await
    }
}

/// A projection with a flush function called on an interval and before every
/// checkpoint; see [`flush_after`].
pub struct FlushAfter<P, F> {
    inner: P,
    flush: F,
    interval: Duration,
}

/// Wraps `projection` so that `flush` is called on an `interval` and before every
/// checkpoint (the Go seed's `FlushAfter`). The projection is then flushed and
/// checkpointed once per interval (when events were handled since the last flush, even
/// if no new ones follow) and when it stops, instead of after every batch: handlers can
/// gather writes in memory and `flush` writes them out in one go.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use annals_projector::{flush_after, projection_fn, BoxError, Projection};
///
/// let batch = Arc::new(Mutex::new(Vec::new()));
/// let p = flush_after(
///     projection_fn({
///         let batch = batch.clone();
///         move |event| {
///             batch.lock().unwrap().push(event.position);
///             async { Ok::<(), BoxError>(()) }
///         }
///     }),
///     move || {
///         let rows: Vec<u64> = std::mem::take(&mut *batch.lock().unwrap());
///         async move { /* write `rows` in one transaction */ let _ = rows; Ok::<(), BoxError>(()) }
///     },
///     Duration::from_millis(500),
/// );
/// assert_eq!(p.flush_interval(), Some(Duration::from_millis(500)));
/// ```
pub fn flush_after<P, F, Fut>(projection: P, flush: F, interval: Duration) -> FlushAfter<P, F>
where
    P: Projection,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FlushAfter {
        inner: projection,
        flush,
        interval,
    }
}

#[async_trait]
impl<P, F, Fut> Projection for FlushAfter<P, F>
where
    P: Projection,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn handle(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }
    async fn flush(&mut self) -> Result<(), BoxError> {
        self.inner.flush().await?;
        (self.flush)().await
    }
    fn flush_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
    async fn reset(&mut self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
}

/// How the projector reads and retries.
///
/// ```
/// let o = annals_projector::ProjectorOptions::default();
/// assert_eq!(o.batch_size, 8192);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectorOptions {
    /// Events per catch-up page (each page is checkpointed, and the next one is read
    /// while the checkpoint is written), and at most this many per live batch.
    pub batch_size: u64,
    /// How failing handlers, flushes and store calls are retried.
    pub backoff: Backoff,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            batch_size: 8192,
            backoff: Backoff::default(),
        }
    }
}

/// Whether a projection's task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionState {
    /// Registered but not running (never started, stopped, or being reset).
    Stopped,
    /// Its task is running (catching up, live, or waiting to retry).
    Running,
    /// It gave up after its retry budget; see [`ProjectionStatus::last_error`].
    Failed,
}

/// An error a projection met: which event (or checkpoint) it was at, what went wrong,
/// and how many attempts in a row had failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionFailure {
    /// The position of the event being handled, or the position being checkpointed
    /// when a flush or a store call failed.
    pub position: Position,
    /// The error's text.
    pub error: String,
    /// Failed attempts in a row.
    pub attempts: u32,
}

/// What a projection is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Running, stopped or failed.
    pub state: ProjectionState,
    /// The durable checkpoint: everything at or below it was handled and flushed.
    pub checkpoint: Position,
    /// Everything at or below this position was handled (may be ahead of the checkpoint).
    pub handled: Position,
    /// Whether it caught up and follows new events live.
    pub live: bool,
    /// The last error it met (kept after a successful retry, cleared by a reset).
    pub last_error: Option<ProjectionFailure>,
    /// Failed attempts since it was registered or reset.
    pub retries: u64,
}

impl ProjectionStatus {
    fn new(name: &str) -> Self {
        ProjectionStatus {
            name: name.to_owned(),
            state: ProjectionState::Stopped,
            checkpoint: 0,
            handled: 0,
            live: false,
            last_error: None,
            retries: 0,
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<Box<dyn Projection>>,
}

struct Slot {
    filter: EventFilter,
    /// Present while no task owns it.
    projection: Option<Box<dyn Projection>>,
    running: Option<Running>,
    status: watch::Sender<ProjectionStatus>,
}

/// Runs named projections over one store, each in its own task from its durable
/// checkpoint. See the [module docs](self) for the delivery and checkpoint rules.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_projector::{projection_fn, BoxError, Projector};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// store.append_to_stream(&StreamId::new("s"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::null())]).await?;
/// let projector = Projector::new(store.clone());
/// projector.add("log", projection_fn(|e| async move {
///     println!("{}", e.position);
///     Ok::<(), BoxError>(())
/// })).await?;
/// projector.start().await?;
/// let status = projector.wait_until("log", |s| s.checkpoint >= 1).await?;
/// assert_eq!(status.checkpoint, 1);
/// projector.shutdown().await;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Projector {
    store: Arc<dyn EventStore>,
    options: ProjectorOptions,
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl Projector {
    /// A projector over `store` with default options.
    ///
    /// ```
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// # let _ = p;
    /// ```
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self::with_options(store, ProjectorOptions::default())
    }

    /// A projector over `store` with explicit options.
    ///
    /// ```
    /// use annals_projector::{Projector, ProjectorOptions};
    /// let options = ProjectorOptions { batch_size: 256, ..ProjectorOptions::default() };
    /// let p = Projector::with_options(std::sync::Arc::new(annals_core::MemoryStore::new()), options);
    /// # let _ = p;
    /// ```
    pub fn with_options(store: Arc<dyn EventStore>, options: ProjectorOptions) -> Self {
        Projector {
            store,
            options,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers a projection of every event under `name` (not started yet; see
    /// [`Projector::start`]). [`Error::InvalidInput`] for an empty or taken name.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// assert!(p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.is_err());
    /// # });
    /// ```
    pub async fn add(&self, name: &str, projection: impl Projection) -> Result<()> {
        self.add_filtered(name, EventFilter::default(), projection)
            .await
    }

    /// Registers a projection of the events `filter` selects under `name`.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// let orders = annals_core::EventFilter::default().aggregate("order");
    /// p.add_filtered("orders", orders, projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// # });
    /// ```
    pub async fn add_filtered(
        &self,
        name: &str,
        filter: EventFilter,
        projection: impl Projection,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("projection name", "must not be empty"));
        }
        let mut slots = self.slots.lock().await;
        if slots.contains_key(name) {
            return Err(Error::invalid(
                "projection name",
                format!("{name:?} is already registered"),
            ));
        }
        slots.insert(
            name.to_owned(),
            Slot {
                filter,
                projection: Some(Box::new(projection)),
                running: None,
                status: watch::Sender::new(ProjectionStatus::new(name)),
            },
        );
        Ok(())
    }

    /// Starts every registered projection that is not running (also failed ones, which
    /// retry from their checkpoint).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.start().await.unwrap(); // nothing registered: nothing to do
    /// # });
    /// ```
    pub async fn start(&self) -> Result<()> {
        let mut slots = self.slots.lock().await;
        for (name, slot) in slots.iter_mut() {
            self.start_slot(name, slot).await?;
        }
        Ok(())
    }

    /// Starts one projection if it is not running (a failed one retries from its
    /// checkpoint). [`Error::NotFound`] when no projection has that name.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// assert!(p.start_projection("nope").await.is_err());
    /// # });
    /// ```
    pub async fn start_projection(&self, name: &str) -> Result<()> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| Error::not_found("projection", name))?;
        self.start_slot(name, slot).await
    }

    /// Stops one projection gracefully: the event being handled finishes, the handled
    /// events are flushed and checkpointed. Returns its final status.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, ProjectionState, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// p.start().await.unwrap();
    /// assert_eq!(p.stop("a").await.unwrap().state, ProjectionState::Stopped);
    /// # });
    /// ```
    pub async fn stop(&self, name: &str) -> Result<ProjectionStatus> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| Error::not_found("projection", name))?;
        stop_slot(name, slot).await?;
        let status = slot.status.borrow().clone();
        Ok(status)
    }

    /// Rebuilds one projection from position 0: stops it, calls [`Projection::reset`],
    /// deletes its checkpoint, clears its status, and starts it again if it was running
    /// or failed.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// p.reset("a").await.unwrap();
    /// assert_eq!(p.status("a").await.unwrap().checkpoint, 0);
    /// # });
    /// ```
    pub async fn reset(&self, name: &str) -> Result<()> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| Error::not_found("projection", name))?;
        let was_active = slot.status.borrow().state != ProjectionState::Stopped;
        stop_slot(name, slot).await?;
        let projection = slot
            .projection
            .as_mut()
            .ok_or_else(|| lost_projection(name))?;
        projection
            .reset()
            .await
            .map_err(|e| Error::backend("projector", std::io::Error::other(e)))?;
        self.store.drop_snapshot(&checkpoint_key(name)).await?;
        slot.status.send_replace(ProjectionStatus::new(name));
        if was_active {
            self.start_slot(name, slot).await?;
        }
        Ok(())
    }

    /// The status of one projection; [`Error::NotFound`] when unknown.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// assert_eq!(p.status("x").await.unwrap_err().kind(), annals_core::ErrorKind::NotFound);
    /// # });
    /// ```
    pub async fn status(&self, name: &str) -> Result<ProjectionStatus> {
        let slots = self.slots.lock().await;
        let slot = slots
            .get(name)
            .ok_or_else(|| Error::not_found("projection", name))?;
        let status = slot.status.borrow().clone();
        Ok(status)
    }

    /// The status of every projection, by name.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// assert!(p.statuses().await.is_empty());
    /// # });
    /// ```
    pub async fn statuses(&self) -> Vec<ProjectionStatus> {
        let slots = self.slots.lock().await;
        slots.values().map(|s| s.status.borrow().clone()).collect()
    }

    /// A receiver that sees every change of one projection's status.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// let rx = p.watch("a").await.unwrap();
    /// assert_eq!(rx.borrow().name, "a");
    /// # });
    /// ```
    pub async fn watch(&self, name: &str) -> Result<watch::Receiver<ProjectionStatus>> {
        let slots = self.slots.lock().await;
        let slot = slots
            .get(name)
            .ok_or_else(|| Error::not_found("projection", name))?;
        Ok(slot.status.subscribe())
    }

    /// Waits until one projection's status satisfies `done` (e.g. its checkpoint reached
    /// a position, or it failed), and returns that status.
    ///
    /// ```
    /// # use annals_projector::{projection_fn, BoxError, Projector};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// p.add("a", projection_fn(|_| async { Ok::<(), BoxError>(()) })).await.unwrap();
    /// p.start().await.unwrap();
    /// let s = p.wait_until("a", |s| s.live).await.unwrap();
    /// assert_eq!(s.checkpoint, 0);
    /// # });
    /// ```
    pub async fn wait_until(
        &self,
        name: &str,
        mut done: impl FnMut(&ProjectionStatus) -> bool,
    ) -> Result<ProjectionStatus> {
        let mut rx = self.watch(name).await?;
        let status = rx.wait_for(|s| done(s)).await.map_err(|_| Error::Closed)?;
        Ok(status.clone())
    }

    /// Stops every projection gracefully (see [`Projector::stop`]) and returns their
    /// final statuses.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let p = annals_projector::Projector::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// assert!(p.shutdown().await.is_empty());
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Vec<ProjectionStatus> {
        let mut slots = self.slots.lock().await;
        // Signal every task first so they wind down in parallel.
        for slot in slots.values() {
            if let Some(running) = &slot.running {
                running.stop.send_replace(true);
            }
        }
        let mut statuses = Vec::with_capacity(slots.len());
        for (name, slot) in slots.iter_mut() {
            // A lost (panicked) projection is already reported in its status.
            let _ = stop_slot(name, slot).await;
            statuses.push(slot.status.borrow().clone());
        }
        statuses
    }

    async fn start_slot(&self, name: &str, slot: &mut Slot) -> Result<()> {
        // A task that reported Failed (or Stopped) may still be returning: wait for it.
        if let Some(running) = &slot.running {
            let running_state = slot.status.borrow().state == ProjectionState::Running;
            if running_state && !running.task.is_finished() {
                return Ok(());
            }
        }
        reclaim(name, slot).await?;
        let projection = slot
            .projection
            .take()
            .ok_or_else(|| lost_projection(name))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        slot.status.send_modify(|s| {
            s.state = ProjectionState::Running;
            s.live = false;
        });
        let interval = projection.flush_interval();
        let runner = Runner {
            store: self.store.clone(),
            key: checkpoint_key(name),
            filter: slot.filter.clone(),
            options: self.options,
            stop: stop_rx,
            status: slot.status.clone(),
            projection,
            handled: 0,
            saved: 0,
            interval,
            last_flush: Instant::now(),
        };
        slot.running = Some(Running {
            stop: stop_tx,
            task: tokio::spawn(runner.run()),
        });
        Ok(())
    }
}

fn lost_projection(name: &str) -> Error {
    Error::backend(
        "projector",
        std::io::Error::other(format!(
            "projection {name:?} was lost: its handler panicked"
        )),
    )
}

/// Signals the slot's task to stop, waits for it and takes the projection back.
async fn stop_slot(name: &str, slot: &mut Slot) -> Result<()> {
    if let Some(running) = &slot.running {
        running.stop.send_replace(true);
    }
    reclaim(name, slot).await
}

/// Waits for the slot's task (if any) and takes the projection back.
async fn reclaim(name: &str, slot: &mut Slot) -> Result<()> {
    let Some(running) = slot.running.take() else {
        return Ok(());
    };
    match running.task.await {
        Ok(projection) => {
            slot.projection = Some(projection);
            Ok(())
        }
        Err(join) => {
            let error = format!("the projection's task panicked: {join}");
            slot.status.send_modify(|s| {
                s.state = ProjectionState::Failed;
                s.live = false;
                s.last_error = Some(ProjectionFailure {
                    position: s.handled + 1,
                    error,
                    attempts: 1,
                });
            });
            Err(lost_projection(name))
        }
    }
}

/// Why a projection's task ends.
enum Exit {
    Stopped,
    Failed(ProjectionFailure),
}

/// Errors that retrying cannot fix.
fn retryable(error: &Error) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Closed
            | ErrorKind::InvalidInput
            | ErrorKind::Corrupted
            | ErrorKind::Unsupported
            | ErrorKind::NotFound
    )
}

/// One projection's task.
struct Runner {
    store: Arc<dyn EventStore>,
    key: String,
    filter: EventFilter,
    options: ProjectorOptions,
    stop: watch::Receiver<bool>,
    status: watch::Sender<ProjectionStatus>,
    projection: Box<dyn Projection>,
    /// Every matching event at or below this was handled.
    handled: Position,
    /// The durable checkpoint.
    saved: Position,
    interval: Option<Duration>,
    last_flush: Instant,
}

impl Runner {
    async fn run(mut self) -> Box<dyn Projection> {
        let exit = match self.drive().await {
            Err(exit) => exit,
            Ok(never) => match never {},
        };
        // Keep what was handled before stopping or failing: one attempt, no retries.
        if self.handled > self.saved {
            let _ = self.try_checkpoint_once().await;
        }
        self.status.send_modify(|s| {
            s.live = false;
            s.checkpoint = self.saved;
            match exit {
                Exit::Stopped => s.state = ProjectionState::Stopped,
                Exit::Failed(failure) => {
                    s.state = ProjectionState::Failed;
                    s.last_error = Some(failure);
                }
            }
        });
        self.projection
    }

    async fn drive(&mut self) -> std::result::Result<Infallible, Exit> {
        self.saved = self.load_checkpoint().await?;
        self.handled = self.saved;
        self.status.send_modify(|s| {
            s.checkpoint = self.saved;
            s.handled = self.saved;
        });
        let mut subscription_failures = 0;
        loop {
            self.catch_up().await?;
            self.status.send_modify(|s| s.live = true);
            let error = self.follow(&mut subscription_failures).await?;
            self.status.send_modify(|s| s.live = false);
            subscription_failures += 1;
            let retry = retryable(&error);
            self.note_error(self.handled + 1, error.to_string(), subscription_failures);
            after_failure(
                &self.options.backoff,
                subscription_failures,
                error.to_string(),
                retry,
                &mut self.stop,
            )
            .await
            .map_err(|a| self.abort(a, self.handled + 1))?;
        }
    }

    /// Reads pages after the handled position until the end of the store.
    async fn catch_up(&mut self) -> std::result::Result<(), Exit> {
        // The next page, read while the previous checkpoint was being saved.
        let mut prefetched: Option<ReadAllPage> = None;
        loop {
            if stop_requested(&self.stop) {
                return Err(Exit::Stopped);
            }
            let page = match prefetched.take() {
                Some(page) => page,
                None => {
                    let read = self.page_after(self.handled);
                    self.store_call(self.handled + 1, |store| {
                        let read = read.clone();
                        async move { store.read_all(read).await }
                    })
                    .await?
                }
            };
            for event in &page.events {
                self.handle(event).await?;
                self.handled = event.position;
            }
            // Also past the events the filter passed over, so they are not read again.
            self.handled = self.handled.max(page.next_cursor.position());
            if page.end {
                self.after_batch().await?;
                return Ok(());
            }
            // Overlap the checkpoint's durable write with reading the next page; a failed
            // read is simply retried on the next turn.
            let store = self.store.clone();
            let read = self.page_after(self.handled);
            let (saved, next) =
                tokio::join!(
                    self.after_batch(),
                    async move { store.read_all(read).await }
                );
            saved?;
            prefetched = next.ok();
        }
    }

    fn page_after(&self, position: Position) -> ReadAll {
        ReadAll::forward()
            .after(position)
            .filter(self.filter.clone())
            .limit(self.options.batch_size)
    }

    /// Follows new events live; returns the error that ended the subscription.
    async fn follow(&mut self, failures: &mut u32) -> std::result::Result<Error, Exit> {
        let batch = usize::try_from(self.options.batch_size)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut live = self
            .store
            .subscribe(Subscribe::after(self.handled).filter(self.filter.clone()))
            .ready_chunks(batch);
        loop {
            let deadline = match self.interval {
                Some(interval) if self.handled > self.saved => Some(self.last_flush + interval),
                _ => None,
            };
            tokio::select! {
                biased;
                () = stopped(&mut self.stop) => return Err(Exit::Stopped),
                () = sleep_until(deadline) => self.checkpoint().await?,
                chunk = live.next() => {
                    let Some(chunk) = chunk else {
                        return Ok(Error::Closed);
                    };
                    let mut ended = None;
                    for item in chunk {
                        match item {
                            Ok(event) if event.position > self.handled => {
                                self.handle(&event).await?;
                                self.handled = event.position;
                                *failures = 0;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                ended = Some(e);
                                break;
                            }
                        }
                    }
                    self.after_batch().await?;
                    if let Some(e) = ended {
                        return Ok(e);
                    }
                }
            }
        }
    }

    async fn handle(&mut self, event: &RecordedEvent) -> std::result::Result<(), Exit> {
        let mut failures = 0;
        loop {
            match self.projection.handle(event).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    failures += 1;
                    let error = e.to_string();
                    self.note_error(event.position, error.clone(), failures);
                    after_failure(&self.options.backoff, failures, error, true, &mut self.stop)
                        .await
                        .map_err(|a| self.abort(a, event.position))?;
                }
            }
        }
    }

    /// Publishes progress; checkpoints unless the projection flushes on an interval and
    /// the interval has not elapsed.
    async fn after_batch(&mut self) -> std::result::Result<(), Exit> {
        let handled = self.handled;
        self.status.send_modify(|s| s.handled = handled);
        let due = match self.interval {
            None => true,
            Some(interval) => self.last_flush.elapsed() >= interval,
        };
        if due {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Flushes, then saves the handled position as the checkpoint (both retried).
    async fn checkpoint(&mut self) -> std::result::Result<(), Exit> {
        let position = self.handled;
        if position > self.saved {
            let mut failures = 0;
            loop {
                match self.projection.flush().await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        let error = format!("flush failed: {e}");
                        self.note_error(position, error.clone(), failures);
                        after_failure(&self.options.backoff, failures, error, true, &mut self.stop)
                            .await
                            .map_err(|a| self.abort(a, position))?;
                    }
                }
            }
            self.last_flush = Instant::now();
            let key = self.key.clone();
            let content = checkpoint_content(position);
            self.store_call(position, |store| {
                let key = key.clone();
                let content = content.clone();
                async move { store.save_snapshot(&key, &content).await }
            })
            .await?;
            self.saved = position;
            self.status.send_modify(|s| s.checkpoint = position);
        }
        Ok(())
    }

    async fn try_checkpoint_once(&mut self) -> std::result::Result<(), BoxError> {
        self.projection.flush().await?;
        self.store
            .save_snapshot(&self.key, &checkpoint_content(self.handled))
            .await?;
        self.saved = self.handled;
        Ok(())
    }

    async fn load_checkpoint(&mut self) -> std::result::Result<Position, Exit> {
        let key = self.key.clone();
        let snapshot = self
            .store_call(1, |store| {
                let key = key.clone();
                async move { store.load_snapshot(&key).await }
            })
            .await?;
        match snapshot {
            None => Ok(0),
            Some(snapshot) => parse_checkpoint(&snapshot.content).ok_or_else(|| {
                Exit::Failed(ProjectionFailure {
                    position: 0,
                    error: Error::Corrupted {
                        location: format!("keyed snapshot {key}"),
                        detail: format!(
                            "not a projector checkpoint ({{\"position\":N}}): {:?}",
                            snapshot.content
                        ),
                    }
                    .to_string(),
                    attempts: 1,
                })
            }),
        }
    }

    /// Calls the store, retrying failures with the backoff.
    async fn store_call<T, F, Fut>(
        &mut self,
        position: Position,
        call: F,
    ) -> std::result::Result<T, Exit>
    where
        F: Fn(Arc<dyn EventStore>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // A clone of the stop signal, so the closures below can borrow `self`; it sees
        // the same stop requests.
        let mut stop = self.stop.clone();
        let status = &self.status;
        retry_store_call(
            &self.options.backoff,
            &mut stop,
            retryable,
            |error, failures| note_error(status, position, error, failures),
            || call(self.store.clone()),
        )
        .await
        .map_err(|a| self.abort(a, position))
    }

    fn note_error(&self, position: Position, error: String, attempts: u32) {
        note_error(&self.status, position, error, attempts);
    }

    fn abort(&self, abort: Abort, position: Position) -> Exit {
        match abort {
            Abort::Stopped => Exit::Stopped,
            Abort::GaveUp { error, attempts } => Exit::Failed(ProjectionFailure {
                position,
                error,
                attempts,
            }),
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    position: Position,
}

fn checkpoint_content(position: Position) -> String {
    format!("{{\"position\":{position}}}")
}

fn parse_checkpoint(content: &str) -> Option<Position> {
    serde_json::from_str::<Checkpoint>(content)
        .ok()
        .map(|c| c.position)
}

/// Records one failed attempt (a retry is coming) in the status.
fn note_error(
    status: &watch::Sender<ProjectionStatus>,
    position: Position,
    error: String,
    attempts: u32,
) {
    status.send_modify(|s| {
        s.retries += 1;
        s.last_error = Some(ProjectionFailure {
            position,
            error,
            attempts,
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_garbage_is_refused() {
        assert_eq!(parse_checkpoint(&checkpoint_content(42)), Some(42));
        assert_eq!(parse_checkpoint("{\"position\":-1}"), None);
        assert_eq!(parse_checkpoint("7"), None);
    }
}
