//! The publisher (outbox): hands every committed event to a publish function, in
//! position order, and marks it dispatched once the function succeeded
//! (node-eventstore's `useEventPublisher`).
//!
//! The dispatch flag lives with the event in the store, so the outbox survives any
//! crash: when a publisher starts, it first delivers every undispatched event (oldest
//! first), then follows new commits live. An event is marked dispatched only after its
//! publish call returned `Ok`; a crash between the two delivers it again on restart, so
//! delivery is at-least-once. The events of a delivered batch are marked in one write
//! ([`EventStore::mark_dispatched_at`]), so marking costs one store call per batch. A
//! failing publish is retried on the same events with the [`Backoff`] (forever by
//! default): nothing is skipped, so per stream (and store-wide) events reach the publish
//! function in order.
//!
//! Applications that dispatch by hand use the store's own
//! [`EventStore::undispatched`] and [`EventStore::mark_dispatched`], or
//! [`dispatch_undispatched`] for one pass.

use std::future::Future;
use std::sync::Arc;

use annals_core::{
    Error, ErrorKind, EventFilter, EventStore, Position, ReadAll, RecordedEvent, Result, Subscribe,
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::retry::{after_failure, retry_store_call, stop_requested, stopped, Abort};
pub use crate::retry::{Backoff, BoxError};

/// Where committed events go: a message bus, a webhook, another system.
///
/// ```
/// use annals_core::RecordedEvent;
/// use annals_projector::{BoxError, Publish};
///
/// struct Stdout;
///
/// #[async_trait::async_trait]
/// impl Publish for Stdout {
///     async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
///         println!("{} {}", event.stream, event.event_type);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Publish: Send + Sync + 'static {
    /// Delivers one event. `Ok` means delivered: the event is then marked dispatched.
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError>;

    /// Delivers several events, in order (consecutive undispatched events in position
    /// order). The default calls [`Publish::publish`] for each; a bus with batch sends
    /// overrides it. After an error the whole batch is delivered again.
    async fn publish_batch(&self, events: &[RecordedEvent]) -> Result<(), BoxError> {
        for event in events {
            self.publish(event).await?;
        }
        Ok(())
    }
}

/// A publish function made of an async closure; see [`publish_fn`].
pub struct PublishFn<F> {
    publish: F,
}

/// Makes a [`Publish`] of an async closure that takes each event.
///
/// ```
/// use annals_projector::{publish_fn, BoxError};
/// let p = publish_fn(|event| async move {
///     println!("{}", event.position);
///     Ok::<(), BoxError>(())
/// });
/// # let _ = p;
/// ```
pub fn publish_fn<F, Fut>(publish: F) -> PublishFn<F>
where
    F: Fn(RecordedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    PublishFn { publish }
}

#[async_trait]
impl<F, Fut> Publish for PublishFn<F>
where
    F: Fn(RecordedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    async fn publish(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        (self.publish)(event.clone()).await
    }
}

/// What a publisher delivers and how it retries.
///
/// ```
/// let o = annals_projector::PublisherOptions::default();
/// assert_eq!(o.backoff.max_attempts, None); // an outbox never gives up by default
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherOptions {
    /// Which events to publish (default: all). `dispatched` is ignored.
    pub filter: EventFilter,
    /// At most this many events per [`Publish::publish_batch`] call.
    pub batch_size: u64,
    /// How failing publishes and store calls are retried.
    pub backoff: Backoff,
}

impl Default for PublisherOptions {
    /// Every event, batches of up to 256, 100 ms doubling up to 30 s, forever.
    fn default() -> Self {
        PublisherOptions {
            filter: EventFilter::default(),
            batch_size: 256,
            backoff: Backoff {
                max_attempts: None,
                ..Backoff::default()
            },
        }
    }
}

/// Whether a publisher's task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    /// Delivering, or waiting for new events or for a retry.
    Running,
    /// Shut down.
    Stopped,
    /// Gave up after its retry budget (only with a bounded [`Backoff`]) or on an error
    /// retrying cannot fix (the store was closed); see [`PublisherStatus::last_error`].
    Failed,
}

/// An error the publisher met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailure {
    /// The position of the first event of the batch being delivered or marked.
    pub position: Position,
    /// The error's text.
    pub error: String,
    /// Failed attempts in a row.
    pub attempts: u32,
}

/// What a publisher is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherStatus {
    /// Running, stopped or failed.
    pub state: PublisherState,
    /// Events this publisher marked dispatched.
    pub dispatched: u64,
    /// The position of the last event it marked dispatched.
    pub last_dispatched: Position,
    /// Whether it delivered the backlog and follows new commits live.
    pub live: bool,
    /// The last error it met (kept after a successful retry).
    pub last_error: Option<PublishFailure>,
    /// Failed attempts so far.
    pub retries: u64,
}

/// A running publisher. Dropping it stops its task at the next await point; call
/// [`Publisher::shutdown`] to wait for the batch in flight.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_projector::{publish_fn, BoxError, Publisher, PublisherOptions};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let publisher = Publisher::start(store.clone(), publish_fn(|event| async move {
///     println!("publish {}", event.id);
///     Ok::<(), BoxError>(())
/// }), PublisherOptions::default());
/// store.append_to_stream(&StreamId::new("s"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::null())]).await?;
/// publisher.wait_until(|s| s.last_dispatched >= 1).await;
/// assert!(store.undispatched(Default::default(), None).await?.is_empty());
/// publisher.shutdown().await;
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Publisher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    status: watch::Receiver<PublisherStatus>,
}

/// Starts a publisher of every event with the default options (node-eventstore's
/// `useEventPublisher`). Needs a tokio runtime.
///
/// ```
/// # use annals_projector::{publish_fn, use_publisher, BoxError};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = std::sync::Arc::new(annals_core::MemoryStore::new());
/// let publisher = use_publisher(store, publish_fn(|_| async { Ok::<(), BoxError>(()) }));
/// publisher.shutdown().await;
/// # });
/// ```
pub fn use_publisher(store: Arc<dyn EventStore>, publish: impl Publish) -> Publisher {
    Publisher::start(store, publish, PublisherOptions::default())
}

impl Publisher {
    /// Starts a publisher task over `store`. Needs a tokio runtime.
    ///
    /// ```
    /// # use annals_projector::{publish_fn, BoxError, Publisher, PublisherOptions, PublisherState};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = std::sync::Arc::new(annals_core::MemoryStore::new());
    /// let options = PublisherOptions { batch_size: 64, ..PublisherOptions::default() };
    /// let p = Publisher::start(store, publish_fn(|_| async { Ok::<(), BoxError>(()) }), options);
    /// assert_eq!(p.status().state, PublisherState::Running);
    /// # p.shutdown().await;
    /// # });
    /// ```
    pub fn start(
        store: Arc<dyn EventStore>,
        publish: impl Publish,
        options: PublisherOptions,
    ) -> Publisher {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(PublisherStatus {
            state: PublisherState::Running,
            dispatched: 0,
            last_dispatched: 0,
            live: false,
            last_error: None,
            retries: 0,
        });
        let runner = Runner {
            store,
            publish: Box::new(publish),
            options,
            stop: stop_rx,
            status: status_tx,
        };
        Publisher {
            stop: stop_tx,
            task: tokio::spawn(runner.run()),
            status: status_rx,
        }
    }

    /// The current status.
    ///
    /// ```
    /// # use annals_projector::{publish_fn, use_publisher, BoxError};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let p = use_publisher(std::sync::Arc::new(annals_core::MemoryStore::new()), publish_fn(|_| async { Ok::<(), BoxError>(()) }));
    /// assert_eq!(p.status().dispatched, 0);
    /// # p.shutdown().await;
    /// # });
    /// ```
    pub fn status(&self) -> PublisherStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every change of the status.
    ///
    /// ```
    /// # use annals_projector::{publish_fn, use_publisher, BoxError};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let p = use_publisher(std::sync::Arc::new(annals_core::MemoryStore::new()), publish_fn(|_| async { Ok::<(), BoxError>(()) }));
    /// let rx = p.watch();
    /// assert!(rx.borrow().last_error.is_none());
    /// # p.shutdown().await;
    /// # });
    /// ```
    pub fn watch(&self) -> watch::Receiver<PublisherStatus> {
        self.status.clone()
    }

    /// Waits until the status satisfies `done` and returns it (or the final status,
    /// if the task ended first).
    ///
    /// ```
    /// # use annals_projector::{publish_fn, use_publisher, BoxError};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let p = use_publisher(std::sync::Arc::new(annals_core::MemoryStore::new()), publish_fn(|_| async { Ok::<(), BoxError>(()) }));
    /// let s = p.wait_until(|s| s.live).await;
    /// assert!(s.live);
    /// # p.shutdown().await;
    /// # });
    /// ```
    pub async fn wait_until(
        &self,
        mut done: impl FnMut(&PublisherStatus) -> bool,
    ) -> PublisherStatus {
        let mut rx = self.status.clone();
        let result = rx.wait_for(|s| done(s)).await.map(|s| s.clone());
        match result {
            Ok(status) => status,
            Err(_) => self.status(),
        }
    }

    /// Stops gracefully: the batch in flight is delivered and marked (or, when failing,
    /// left undispatched for the next publisher). Returns the final status.
    ///
    /// ```
    /// # use annals_projector::{publish_fn, use_publisher, BoxError, PublisherState};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let p = use_publisher(std::sync::Arc::new(annals_core::MemoryStore::new()), publish_fn(|_| async { Ok::<(), BoxError>(()) }));
    /// assert_eq!(p.shutdown().await.state, PublisherState::Stopped);
    /// # });
    /// ```
    pub async fn shutdown(self) -> PublisherStatus {
        self.stop.send_replace(true);
        let status = self.status.clone();
        if let Err(join) = self.task.await {
            // The publish function panicked: report it instead of losing it.
            let error = format!("the publisher's task panicked: {join}");
            let mut s = status.borrow().clone();
            s.state = PublisherState::Failed;
            s.live = false;
            s.last_error = Some(PublishFailure {
                position: s.last_dispatched + 1,
                error,
                attempts: 1,
            });
            return s;
        }
        let s = status.borrow().clone();
        s
    }
}

/// One pass over the undispatched events `filter` selects, oldest first: publishes each
/// batch and marks its events dispatched; stops at the first error (nothing after it is
/// published). Returns how many events were marked dispatched.
///
/// ```
/// use annals_core::{EventFilter, EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, StreamId};
/// use annals_projector::{dispatch_undispatched, publish_fn, BoxError};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// store.append_to_stream(&StreamId::new("s"), ExpectedVersion::Any,
///     vec![ProposedEvent::new("T", Json::null())]).await?;
/// let sent = dispatch_undispatched(&store, EventFilter::default(), 100,
///     &publish_fn(|_| async { Ok::<(), BoxError>(()) })).await?;
/// assert_eq!(sent, 1);
/// assert!(store.undispatched(EventFilter::default(), None).await?.is_empty());
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn dispatch_undispatched(
    store: &dyn EventStore,
    filter: EventFilter,
    batch_size: u64,
    publish: &dyn Publish,
) -> Result<u64> {
    let mut after = 0;
    let mut marked = 0;
    loop {
        let page = store
            .read_all(undispatched_page(&filter, after, batch_size))
            .await?;
        if !page.events.is_empty() {
            publish
                .publish_batch(&page.events)
                .await
                .map_err(|e| Error::backend("publisher", std::io::Error::other(e)))?;
            mark_batch(store, &page.events).await?;
            marked += page.events.len() as u64;
        }
        after = page.next_cursor.position();
        if page.end {
            return Ok(marked);
        }
    }
}

/// The next page of undispatched events after `after` (the store's `undispatched`,
/// continued by position so a large backlog is read once).
fn undispatched_page(filter: &EventFilter, after: Position, batch_size: u64) -> ReadAll {
    ReadAll::forward()
        .after(after)
        .filter(filter.clone().dispatched(false))
        .limit(batch_size.max(1))
}

/// Marks a delivered batch dispatched in one write ([`EventStore::mark_dispatched_at`]).
/// When a position holds no event any more (the store was emptied meanwhile) the batch
/// write refuses all of it; the events are then marked one by one by id, and an event
/// that is gone needs no mark. A backend without batch marks ([`ErrorKind::Unsupported`])
/// is marked one event at a time too.
async fn mark_batch(store: &dyn EventStore, events: &[RecordedEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let positions: Vec<Position> = events.iter().map(|e| e.position).collect();
    match store.mark_dispatched_at(&positions).await {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Unsupported) => {
            for event in events {
                match store.mark_dispatched(&event.id).await {
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    other => other?,
                }
            }
            Ok(())
        }
        other => other,
    }
}

fn retryable(error: &Error) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::Closed | ErrorKind::InvalidInput | ErrorKind::Corrupted | ErrorKind::Unsupported
    )
}

/// Why the publisher's task ends.
enum Exit {
    Stopped,
    Failed(PublishFailure),
}

struct Runner {
    store: Arc<dyn EventStore>,
    publish: Box<dyn Publish>,
    options: PublisherOptions,
    stop: watch::Receiver<bool>,
    status: watch::Sender<PublisherStatus>,
}

impl Runner {
    async fn run(mut self) {
        let exit = match self.drive().await {
            Err(exit) => exit,
            Ok(never) => match never {},
        };
        self.status.send_modify(|s| {
            s.live = false;
            match exit {
                Exit::Stopped => s.state = PublisherState::Stopped,
                Exit::Failed(failure) => {
                    s.state = PublisherState::Failed;
                    s.last_error = Some(failure);
                }
            }
        });
    }

    async fn drive(&mut self) -> std::result::Result<std::convert::Infallible, Exit> {
        let mut filter = self.options.filter.clone();
        filter.dispatched = None;
        // Everything at or below `after` was delivered (or dispatched by someone else).
        let mut after: Position = 0;
        let mut subscription_failures = 0;
        loop {
            // The backlog: every undispatched event, oldest first.
            loop {
                if stop_requested(&self.stop) {
                    return Err(Exit::Stopped);
                }
                let read = undispatched_page(&filter, after, self.options.batch_size);
                let page = self
                    .store_call(after + 1, |store| {
                        let read = read.clone();
                        async move { store.read_all(read).await }
                    })
                    .await?;
                self.deliver(&page.events).await?;
                after = after.max(page.next_cursor.position());
                if page.end {
                    break;
                }
            }
            // Then new commits, as they come.
            self.status.send_modify(|s| s.live = true);
            let batch = usize::try_from(self.options.batch_size)
                .unwrap_or(usize::MAX)
                .max(1);
            let mut live = self
                .store
                .subscribe(Subscribe::after(after).filter(filter.clone()))
                .ready_chunks(batch);
            let error = loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut self.stop) => return Err(Exit::Stopped),
                    chunk = live.next() => {
                        let Some(chunk) = chunk else { break Error::Closed };
                        let mut events = Vec::with_capacity(chunk.len());
                        let mut ended = None;
                        for item in chunk {
                            match item {
                                Ok(event) if event.position > after => {
                                    after = event.position;
                                    if !event.dispatched {
                                        events.push(event);
                                    }
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    ended = Some(e);
                                    break;
                                }
                            }
                        }
                        self.deliver(&events).await?;
                        if !events.is_empty() {
                            subscription_failures = 0;
                        }
                        if let Some(e) = ended {
                            break e;
                        }
                    }
                }
            };
            self.status.send_modify(|s| s.live = false);
            subscription_failures += 1;
            self.note_error(after + 1, error.to_string(), subscription_failures);
            after_failure(
                &self.options.backoff,
                subscription_failures,
                error.to_string(),
                retryable(&error),
                &mut self.stop,
            )
            .await
            .map_err(|a| abort(a, after + 1))?;
        }
    }

    /// Publishes a batch (retrying until it succeeds), then marks its events dispatched
    /// in one write (retried too).
    async fn deliver(&mut self, events: &[RecordedEvent]) -> std::result::Result<(), Exit> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut failures = 0;
        loop {
            match self.publish.publish_batch(events).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    let error = e.to_string();
                    self.note_error(first.position, error.clone(), failures);
                    after_failure(&self.options.backoff, failures, error, true, &mut self.stop)
                        .await
                        .map_err(|a| abort(a, first.position))?;
                }
            }
        }
        // One write for the whole batch; a failed write is retried as a whole (marking is
        // idempotent), and nothing after this batch is delivered until it succeeded.
        self.store_call(first.position, |store| async move {
            mark_batch(&*store, events).await
        })
        .await?;
        let last = events.last().map_or(first.position, |e| e.position);
        self.status.send_modify(|s| {
            s.dispatched += events.len() as u64;
            s.last_dispatched = last;
        });
        Ok(())
    }

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
        .map_err(|a| abort(a, position))
    }

    fn note_error(&self, position: Position, error: String, attempts: u32) {
        note_error(&self.status, position, error, attempts);
    }
}

fn abort(abort: Abort, position: Position) -> Exit {
    match abort {
        Abort::Stopped => Exit::Stopped,
        Abort::GaveUp { error, attempts } => Exit::Failed(PublishFailure {
            position,
            error,
            attempts,
        }),
    }
}

/// Records one failed attempt (a retry is coming) in the status.
fn note_error(
    status: &watch::Sender<PublisherStatus>,
    position: Position,
    error: String,
    attempts: u32,
) {
    status.send_modify(|s| {
        s.retries += 1;
        s.last_error = Some(PublishFailure {
            position,
            error,
            attempts,
        });
    });
}
