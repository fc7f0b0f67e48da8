//! Client-side group commit: concurrent appends on one [`crate::HttpStore`] travel together.
//!
//! An append that finds fewer than `max_in_flight` append requests on the wire goes out at
//! once, alone, as `POST /events`. One that finds them all busy waits in a queue; when a
//! request comes back, the queued appends leave as one `POST /events/batch`. Each append
//! keeps its own atomicity, expectation and result: the batch only shares the trip (and, on
//! a backend with group commit, the sync). Under load this turns N round trips into one; a
//! lone writer sees no difference.
//!
//! A batch takes at most its fair share of the appends in play (those queued plus those on
//! the wire, divided by `max_in_flight`), so two requests in flight carry about half the
//! writers each and take turns at the store: one commits while the other travels. One
//! batch with every writer would leave the store idle for each round trip.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::RequestBuilder;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use annals_core::{AppendRequest, AppendResult, Result};

use crate::error;
use crate::wire;

/// The most appends one batch request carries.
const MAX_APPENDS_PER_BATCH: usize = 256;
/// The most body bytes one batch request carries (the server accepts 16 MiB).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// How long a batch waits, after answers came back, for their writers to append again
/// (they usually do at once, but a woken writer may first have to be scheduled on
/// another core). Waiting only while fewer appends are queued than were answered, so a
/// full batch leaves at once; measured on 2 cores: one yield alone carried 0.26–0.40 of
/// embedded w2, waiting up to 100–1000 µs 0.34–0.59.
const GATHER_AT_MOST: std::time::Duration = std::time::Duration::from_micros(250);

/// The shared queue of one [`crate::HttpStore`].
pub(crate) struct AppendPipeline {
    http: reqwest::Client,
    single_url: reqwest::Url,
    batch_url: reqwest::Url,
    token: Option<String>,
    max_in_flight: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Append requests on the wire (singles and batches).
    in_flight: usize,
    /// Appends those requests carry.
    on_wire: usize,
}

struct Pending {
    body: Vec<u8>,
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendResult>>,
}

/// Counts a request's appends as on the wire until it is dropped: when the answer is in,
/// or when the request is abandoned (its caller cancelled), so the fair share never
/// counts appends that are gone.
struct OnWire<'a> {
    pipeline: &'a AppendPipeline,
    appends: usize,
}

impl<'a> OnWire<'a> {
    /// For `appends` already counted in `State::on_wire`.
    fn new(pipeline: &'a AppendPipeline, appends: usize) -> Self {
        OnWire { pipeline, appends }
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        self.pipeline.landed(self.appends);
    }
}

/// Holds one in-flight slot; gives it back (or hands the queue to a drain task) when
/// dropped, so a cancelled append never strands the appends queued behind it.
struct Slot(Arc<AppendPipeline>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.keep_slot_for_queue() {
            spawn_drain(Arc::clone(&self.0));
        }
    }
}

fn spawn_drain(pipeline: Arc<AppendPipeline>) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(pipeline.drain());
        }
        // No runtime (the store is dropped outside one): nobody can send; the queued
        // appends learn it from their dropped reply channels.
        Err(_) => pipeline.abandon_queue(),
    }
}

#[derive(Deserialize)]
struct BatchOut<'a> {
    #[serde(borrow)]
    results: Vec<OutcomeIn<'a>>,
}

#[derive(Deserialize)]
struct OutcomeIn<'a> {
    status: u16,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Where a store's appends go, parsed once.
#[derive(Clone)]
pub(crate) struct AppendUrls {
    single: reqwest::Url,
    batch: reqwest::Url,
}

impl AppendUrls {
    /// The append URLs of the store at `store_url`.
    pub(crate) fn for_store(store_url: &str) -> Result<Self> {
        // `echo=false`: the answers carry what the store decided, not the payloads the
        // client just sent; the results are rebuilt from the requests.
        let parse = |url: String| {
            reqwest::Url::parse(&url)
                .map_err(|e| error::connection(format!("bad server URL {url}: {e}")))
        };
        Ok(AppendUrls {
            single: parse(format!("{store_url}/events?echo=false"))?,
            batch: parse(format!("{store_url}/events/batch?echo=false"))?,
        })
    }
}

impl AppendPipeline {
    /// A pipeline for the store at `store_url`; `max_in_flight` of 0 is taken as 1.
    pub(crate) fn new(
        http: reqwest::Client,
        urls: AppendUrls,
        token: Option<String>,
        max_in_flight: usize,
    ) -> Self {
        AppendPipeline {
            http,
            single_url: urls.single,
            batch_url: urls.batch,
            token,
            max_in_flight: max_in_flight.max(1),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a queue and a counter, consistent after every statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn post(&self, url: &reqwest::Url, body: Vec<u8>) -> RequestBuilder {
        // A parsed URL: parsing the string again for every append is measurable.
        let request = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    /// Appends the JSON body of one `POST /events`.
    pub(crate) async fn append(
        self: &Arc<Self>,
        body: Vec<u8>,
        request: AppendRequest,
    ) -> Result<AppendResult> {
        let answer = {
            let mut state = self.lock();
            if state.in_flight < self.max_in_flight && state.queue.is_empty() {
                state.in_flight += 1;
                state.on_wire += 1;
                Err((body, request))
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push_back(Pending {
                    body,
                    request,
                    reply,
                });
                Ok((answer, state.take_slot(self.max_in_flight)))
            }
        };
        match answer {
            Ok((answer, start_drain)) => {
                if start_drain {
                    spawn_drain(Arc::clone(self));
                }
                answer
                    .await
                    .map_err(|_| error::connection("the append was abandoned before it was sent"))?
            }
            // Nothing queued and a slot free: this append goes out alone, at once.
            Err((body, request)) => {
                let _slot = Slot(Arc::clone(self));
                // Dropped before the slot, also when the caller gives up mid-trip.
                let _on_wire = OnWire::new(self, 1);
                self.send_single(body, request).await
            }
        }
    }

    /// Called when a slot's request is done: `true` when the slot stays taken because
    /// appends are queued (the caller starts a drain task for them).
    fn keep_slot_for_queue(&self) -> bool {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.in_flight -= 1;
            false
        } else {
            true
        }
    }

    /// Called when a request carrying `appends` came back (or failed).
    fn landed(&self, appends: usize) {
        let mut state = self.lock();
        state.on_wire = state.on_wire.saturating_sub(appends);
    }

    /// Fails every queued append (their reply channels close).
    fn abandon_queue(&self) {
        let mut state = self.lock();
        state.queue.clear();
        state.in_flight -= 1;
    }

    /// The next batch, or `None` (and the slot given back) when the queue is empty.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.in_flight -= 1;
            return None;
        }
        let most = state
            .fair_share(self.max_in_flight)
            .min(MAX_APPENDS_PER_BATCH);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = state.queue.front() {
            let fits = batch.is_empty()
                || (batch.len() < most && bytes + next.body.len() < MAX_BATCH_BYTES);
            if !fits {
                break;
            }
            bytes += next.body.len() + 1;
            if let Some(p) = state.queue.pop_front() {
                batch.push(p);
            }
        }
        state.on_wire += batch.len();
        Some(batch)
    }

    /// Yields to the writers just woken by `answered` answers, so that those appending
    /// again at once make the next trip: until as many appends are queued as were just
    /// answered, for a few hundred microseconds at most.
    async fn let_writers_queue(&self, answered: usize) {
        let deadline = std::time::Instant::now() + GATHER_AT_MOST;
        loop {
            tokio::task::yield_now().await;
            if self.lock().queue.len() >= answered || std::time::Instant::now() >= deadline {
                break;
            }
        }
    }

    /// Sends queued appends until the queue is empty, then gives the slot back.
    async fn drain(self: Arc<Self>) {
        // Before each batch, let the writers just woken by the previous answers run: they
        // usually append again at once, and should make this trip rather than the next.
        self.let_writers_queue(1).await;
        while let Some(mut batch) = self.next_batch() {
            if batch.len() == 1 {
                if let Some(p) = batch.pop() {
                    let on_wire = OnWire::new(&self, 1);
                    let result = self.send_single(p.body, p.request).await;
                    drop(on_wire);
                    let _ = p.reply.send(result);
                }
                self.let_writers_queue(1).await;
                continue;
            }
            let mut body =
                Vec::with_capacity(batch.iter().map(|p| p.body.len() + 1).sum::<usize>() + 16);
            body.extend_from_slice(b"{\"appends\":[");
            for (n, p) in batch.iter().enumerate() {
                if n > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&p.body);
            }
            body.extend_from_slice(b"]}");
            let answered = batch.len();
            let on_wire = OnWire::new(&self, answered);
            let sent = self.send_batch(body, answered).await;
            drop(on_wire);
            match sent {
                Ok(results) => {
                    for (p, result) in batch.into_iter().zip(results) {
                        let result =
                            result.and_then(|out| wire::brief_append_result(p.request, out));
                        let _ = p.reply.send(result);
                    }
                    self.let_writers_queue(answered).await;
                }
                Err(e) => {
                    // One failure for the whole trip: every append in it gets the same
                    // error (rebuilt per append, since errors are not `Clone`).
                    let message = e.to_string();
                    for p in batch {
                        let _ = p.reply.send(Err(error::connection(&message)));
                    }
                }
            }
        }
    }

    async fn send_single(&self, body: Vec<u8>, request: AppendRequest) -> Result<AppendResult> {
        let out: wire::AppendBriefOut =
            crate::body(crate::send(self.post(&self.single_url, body)).await?).await?;
        wire::brief_append_result(request, out)
    }

    /// One answer per append, in order.
    async fn send_batch(
        &self,
        body: Vec<u8>,
        appends: usize,
    ) -> Result<Vec<Result<wire::AppendBriefOut>>> {
        let response = crate::send(self.post(&self.batch_url, body)).await?;
        let bytes = response.bytes().await.map_err(error::connection)?;
        let out: BatchOut<'_> = serde_json::from_slice(&bytes)
            .map_err(|e| error::connection(format!("unreadable batch answer: {e}")))?;
        if out.results.len() != appends {
            return Err(error::connection(format!(
                "the batch answer has {} results for {appends} appends",
                out.results.len()
            )));
        }
        Ok(out
            .results
            .into_iter()
            .map(|r| {
                if (200..300).contains(&r.status) {
                    serde_json::from_str::<wire::AppendBriefOut>(r.body.get())
                        .map_err(|e| error::connection(format!("unreadable append answer: {e}")))
                } else {
                    Err(error::from_body(r.status, r.body.get().as_bytes()))
                }
            })
            .collect())
    }
}

impl State {
    /// The most appends the next batch takes: an even split of the appends in play over
    /// the requests that may be in flight, so that each request carries about as many.
    fn fair_share(&self, max_in_flight: usize) -> usize {
        (self.queue.len() + self.on_wire)
            .div_ceil(max_in_flight.max(1))
            .max(1)
    }

    /// Takes an in-flight slot for a drain task when one is free.
    fn take_slot(&mut self, max_in_flight: usize) -> bool {
        if self.in_flight < max_in_flight {
            self.in_flight += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use annals_core::{ExpectedVersion, StreamId};

    fn pipeline(max_in_flight: usize) -> AppendPipeline {
        let urls = AppendUrls::for_store("http://127.0.0.1:9/v1/stores/s").unwrap();
        AppendPipeline::new(reqwest::Client::new(), urls, None, max_in_flight)
    }

    /// Queues `n` appends as writers that found every slot busy would.
    fn queue(p: &AppendPipeline, n: usize) -> Vec<oneshot::Receiver<Result<AppendResult>>> {
        (0..n)
            .map(|i| {
                let (reply, answer) = oneshot::channel();
                let request = AppendRequest::to_stream(
                    StreamId::new(format!("w-{i}")),
                    ExpectedVersion::Any,
                    Vec::new(),
                );
                p.lock().queue.push_back(Pending {
                    body: b"{}".to_vec(),
                    request,
                    reply,
                });
                answer
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_its_fair_share_of_the_appends_in_play() {
        // Two requests in flight: one alone on the wire, seven writers queued behind it.
        let p = pipeline(2);
        {
            let mut state = p.lock();
            state.in_flight = 2;
            state.on_wire = 1;
        }
        let _answers = queue(&p, 7);
        // Eight appends in play over two requests: this batch carries four, three wait.
        let batch = p.next_batch().unwrap();
        assert_eq!(batch.len(), 4);
        assert_eq!(p.lock().queue.len(), 3);
        assert_eq!(p.lock().on_wire, 5);
        // The lone request lands; with the batch of four still out, the three left go
        // together.
        p.landed(1);
        assert_eq!(p.next_batch().unwrap().len(), 3);
        assert_eq!(p.lock().on_wire, 7);
        p.landed(4);
        p.landed(3);
        // Nothing queued: the slot is given back and nothing is counted on the wire.
        assert!(p.next_batch().is_none());
        let state = p.lock();
        assert_eq!((state.in_flight, state.on_wire), (1, 0));
    }

    /// An append whose caller gives up mid-trip leaves nothing counted: neither its slot
    /// nor its place on the wire.
    #[tokio::test]
    async fn a_cancelled_append_gives_back_its_slot_and_its_place_on_the_wire() {
        // A server that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let urls = AppendUrls::for_store(&format!("http://{addr}/v1/stores/s")).unwrap();
        let p = Arc::new(AppendPipeline::new(reqwest::Client::new(), urls, None, 2));
        let request =
            AppendRequest::to_stream(StreamId::new("w"), ExpectedVersion::Any, Vec::new());
        let append = p.append(b"{}".to_vec(), request);
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(200), append).await;
        assert!(gave_up.is_err(), "the silent server never answers");
        let state = p.lock();
        assert_eq!((state.in_flight, state.on_wire), (0, 0));
        drop(state);
        accepting.abort();
    }

    #[test]
    fn one_request_in_flight_takes_the_whole_queue() {
        let p = pipeline(1);
        p.lock().in_flight = 1;
        let _answers = queue(&p, 9);
        assert_eq!(p.next_batch().unwrap().len(), 9);
        assert!(p.lock().queue.is_empty());
    }

    #[test]
    fn a_batch_never_carries_more_than_the_request_limit() {
        let p = pipeline(1);
        p.lock().in_flight = 1;
        let _answers = queue(&p, MAX_APPENDS_PER_BATCH + 3);
        assert_eq!(p.next_batch().unwrap().len(), MAX_APPENDS_PER_BATCH);
        assert_eq!(p.next_batch().unwrap().len(), 3);
    }
}
