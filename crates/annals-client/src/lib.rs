//! # annals-client
//!
//! [`HttpStore`]: an [`EventStore`] over the HTTP API of `annals-server`, so application
//! code can switch between an in-process store and a remote one by configuration. Errors
//! come back as the same [`annals_core::Error`] variants an in-process store returns;
//! a server that cannot be reached is an [`Error::Backend`] whose source is a
//! [`ConnectionError`].
//!
//! ```no_run
//! use annals_client::HttpStore;
//! use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};
//! # async fn run() -> annals_core::Result<()> {
//! let store = HttpStore::new("http://127.0.0.1:2113", "default")?;
//! store.append_to_stream(&StreamId::new("acc-1"), ExpectedVersion::NoStream,
//!     vec![ProposedEvent::new("Opened", Json::null())]).await?;
//! # Ok(()) }
//! ```

mod append_pipeline;
mod error;
mod maintenance;
mod wire;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

use annals_core::{
    AppendRequest, AppendResult, Capabilities, Cursor, Error, EventFilter, EventStore, EventStream,
    KeyedSnapshot, ListStreams, NewStreamSnapshot, Position, ReadAll, ReadAllPage, ReadFrom,
    RecordedEvent, Result, Secret, SecretQuery, SnapshotKeyQuery, StoreDescription, StreamId,
    StreamInfo, StreamPage, StreamRead, StreamSnapshot, Subscribe, Version,
};
use annals_core::{ImportBatch, ImportOutcome, OnConflict, SecretImport};

pub use error::{ConnectionError, RemoteError};

/// The most keyed snapshots the server answers per `GET /snapshot-keys`.
const SNAPSHOT_PAGE: u64 = 1000;

/// How many times in a row a subscription reconnects before it gives up.
const MAX_RECONNECTS: u32 = 8;

/// A store on an Annals server.
pub struct HttpStore {
    http: reqwest::Client,
    store_url: String,
    append_urls: append_pipeline::AppendUrls,
    name: String,
    token: Option<String>,
    closed: tokio::sync::watch::Sender<bool>,
    appends: std::sync::Arc<append_pipeline::AppendPipeline>,
    max_appends_in_flight: usize,
}

/// How many append requests one [`HttpStore`] keeps on the wire at once by default;
/// appends beyond that queue and leave together as batch requests. Two let one batch
/// commit while the other travels (measured with 8 writers on 2 cores: about 1.5–2× the
/// throughput of one; three or more split the writers into batches too small to pay).
pub const DEFAULT_MAX_APPENDS_IN_FLIGHT: usize = 2;

/// Percent-encodes one path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Params = Vec<(&'static str, String)>;

fn stream_params(stream: &StreamId) -> Params {
    let mut p = vec![("aggregateId", stream.id.clone())];
    if !stream.aggregate.is_empty() {
        p.push(("aggregate", stream.aggregate.clone()));
    }
    if !stream.context.is_empty() {
        p.push(("context", stream.context.clone()));
    }
    p
}

fn filter_params(f: &EventFilter) -> Params {
    let mut p = Params::new();
    if let Some(c) = &f.context {
        p.push(("context", c.clone()));
    }
    if let Some(a) = &f.aggregate {
        p.push(("aggregate", a.clone()));
    }
    p.extend(f.aggregate_ids.iter().map(|id| ("aggregateId", id.clone())));
    p.extend(f.event_types.iter().map(|t| ("type", t.clone())));
    if let Some(t) = f.from_time {
        p.push(("fromTimestamp", t.as_millis().to_string()));
    }
    if let Some(t) = f.to_time {
        p.push(("toTimestamp", t.as_millis().to_string()));
    }
    if let Some(v) = f.min_version {
        p.push(("minVersion", v.to_string()));
    }
    if let Some(v) = f.max_version {
        p.push(("maxVersion", v.to_string()));
    }
    if let Some(d) = f.dispatched {
        p.push(("dispatched", d.to_string()));
    }
    p
}

fn from_params(from: &ReadFrom, p: &mut Params) {
    match from {
        ReadFrom::Start => {}
        ReadFrom::Position(pos) => p.push(("afterPosition", pos.to_string())),
        ReadFrom::Cursor(c) => p.push(("cursor", c.to_string())),
    }
}

/// Refuses an empty id before it becomes an empty path segment (which names no route).
fn non_empty(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

async fn send(request: RequestBuilder) -> Result<reqwest::Response> {
    let response = request.send().await.map_err(error::connection)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(error::connection)?;
        Err(error::from_body(status, &body))
    }
}

async fn body<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let bytes = response.bytes().await.map_err(error::connection)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::backend(
            "http",
            RemoteError {
                status: 200,
                code: "unreadable_response".into(),
                message: e.to_string(),
            },
        )
    })
}

impl HttpStore {
    /// The store `store_name` on the server at `base_url` (e.g. `http://127.0.0.1:2113`).
    /// Nothing is sent yet; see [`HttpStore::create`] for a new store.
    pub fn new(base_url: &str, store_name: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(error::connection)?;
        let store_url = format!(
            "{}/v1/stores/{}",
            base_url.trim_end_matches('/'),
            segment(store_name)
        );
        let append_urls = append_pipeline::AppendUrls::for_store(&store_url)?;
        let appends = std::sync::Arc::new(append_pipeline::AppendPipeline::new(
            http.clone(),
            append_urls.clone(),
            None,
            DEFAULT_MAX_APPENDS_IN_FLIGHT,
        ));
        Ok(HttpStore {
            http,
            store_url,
            append_urls,
            name: store_name.to_owned(),
            token: None,
            closed: tokio::sync::watch::Sender::new(false),
            appends,
            max_appends_in_flight: DEFAULT_MAX_APPENDS_IN_FLIGHT,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request (for a server started
    /// with a token file).
    ///
    /// ```
    /// let store = annals_client::HttpStore::new("http://127.0.0.1:2113", "default")?
    ///     .with_token("s3cret");
    /// assert_eq!(store.name(), "default");
    /// # Ok::<(), annals_core::Error>(())
    /// ```
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self.rebuild_pipeline();
        self
    }

    /// How many append requests may be on the wire at once (at least 1; default
    /// [`DEFAULT_MAX_APPENDS_IN_FLIGHT`]). Appends made while that many are out wait and
    /// then travel together in `POST /events/batch` requests, each keeping its own
    /// atomicity and result: client-side group commit. A batch carries at most an even
    /// share of the appends in play, so the requests in flight take turns at the store.
    /// A high value sends every append at once on its own connection.
    ///
    /// ```
    /// let store = annals_client::HttpStore::new("http://127.0.0.1:2113", "default")?
    ///     .with_max_appends_in_flight(8);
    /// # Ok::<(), annals_core::Error>(())
    /// ```
    pub fn with_max_appends_in_flight(mut self, max: usize) -> Self {
        self.max_appends_in_flight = max.max(1);
        self.rebuild_pipeline();
        self
    }

    fn rebuild_pipeline(&mut self) {
        self.appends = std::sync::Arc::new(append_pipeline::AppendPipeline::new(
            self.http.clone(),
            self.append_urls.clone(),
            self.token.clone(),
            self.max_appends_in_flight,
        ));
    }

    /// The store's name on the server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the store on the server (`PUT`); an existing store is an
    /// [`Error::Backend`] with a [`RemoteError`] of code `store_already_exists`.
    pub async fn create(&self) -> Result<()> {
        send(self.request(Method::PUT, "")?).await.map(drop)
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder> {
        if *self.closed.borrow() {
            return Err(Error::Closed);
        }
        let request = self
            .http
            .request(method, format!("{}{path}", self.store_url));
        Ok(match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, params: &Params) -> Result<T> {
        body(send(self.request(Method::GET, path)?.query(params)).await?).await
    }

    /// `None` for a 404 with the given code (e.g. `snapshot_not_found`).
    async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
        absent: &'static str,
    ) -> Result<Option<T>> {
        match send(self.request(Method::GET, path)?.query(params)).await {
            Ok(r) => body(r).await.map(Some),
            Err(Error::NotFound { what, .. }) if what == absent => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl EventStore for HttpStore {
    fn backend(&self) -> &'static str {
        "http"
    }

    fn capabilities(&self) -> Capabilities {
        // The server hosts embedded stores.
        Capabilities {
            dense_positions: true,
            atomic_multi_stream: true,
            durable: true,
        }
    }

    async fn describe(&self) -> Result<StoreDescription> {
        let d: wire::DescribeOut = self.get("", &Params::new()).await?;
        Ok(StoreDescription {
            event_count: d.event_count,
            stream_count: d.stream_count,
            head_position: d.head_position,
            last_event_timestamp: d.last_event_timestamp,
            frozen: d.frozen,
            secret_count: d.secret_count,
            set_secret_count: d.set_secret_count,
            deleted_secret_count: d.deleted_secret_count,
            bytes_on_disk: d.bytes_on_disk,
        })
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        // Overwrites and secret changes travel like any append (alone or in a batch):
        // the server's append body carries both.
        let body_in = wire::AppendIn::new(&request);
        let bytes =
            serde_json::to_vec(&body_in).map_err(|e| Error::invalid("payload", e.to_string()))?;
        if *self.closed.borrow() {
            return Err(Error::Closed);
        }
        self.appends.append(bytes, request).await
    }

    async fn read_stream(&self, stream: &StreamId, read: StreamRead) -> Result<Vec<RecordedEvent>> {
        let mut p = stream_params(stream);
        p.push(("fromVersion", read.from_version.to_string()));
        if let Some(v) = read.to_version {
            p.push(("toVersion", v.to_string()));
        }
        if read.direction == annals_core::Direction::Backward {
            p.push(("reverse", "true".into()));
        }
        if let Some(l) = read.limit {
            p.push(("limit", l.to_string()));
        }
        let out: wire::EventsOut = self.get("/streams/events", &p).await?;
        Ok(wire::recorded(out.events))
    }

    async fn read_all(&self, read: ReadAll) -> Result<ReadAllPage> {
        let mut p = filter_params(&read.filter);
        from_params(&read.from, &mut p);
        if read.direction == annals_core::Direction::Backward {
            p.push(("reverse", "true".into()));
        }
        if read.skip > 0 {
            p.push(("skip", read.skip.to_string()));
        }
        if let Some(l) = read.limit {
            p.push(("limit", l.to_string()));
        }
        let out: wire::ReadOut = self.get("/events", &p).await?;
        Ok(ReadAllPage {
            events: wire::recorded(out.events),
            next_cursor: out.next_cursor.parse::<Cursor>()?,
            head_position: out.head_position,
            end: out.end,
        })
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        let out: wire::OneStreamOut = self.get("/streams/info", &stream_params(stream)).await?;
        Ok(out.stream.map(StreamInfo::from))
    }

    async fn list_streams(&self, query: ListStreams) -> Result<StreamPage> {
        let mut p = Params::new();
        if let Some(c) = &query.context {
            p.push(("context", c.clone()));
        }
        if let Some(a) = &query.aggregate {
            p.push(("aggregate", a.clone()));
        }
        if let Some(t) = query.created_after {
            p.push(("createdAfter", t.as_millis().to_string()));
        }
        if let Some(t) = query.created_before {
            p.push(("createdBefore", t.as_millis().to_string()));
        }
        if query.reverse {
            p.push(("reverse", "true".into()));
        }
        if let Some(l) = query.limit {
            p.push(("limit", l.to_string()));
        }
        if let Some(t) = &query.page_token {
            p.push(("pageToken", t.to_string()));
        }
        let out: wire::StreamsOut = self.get("/streams", &p).await?;
        Ok(StreamPage {
            streams: out.streams.into_iter().map(StreamInfo::from).collect(),
            next_page_token: out.next_page_token.map(|t| t.parse()).transpose()?,
        })
    }

    async fn freeze(&self) -> Result<()> {
        send(self.request(Method::POST, "/freeze")?).await.map(drop)
    }

    async fn unfreeze(&self) -> Result<()> {
        send(self.request(Method::POST, "/unfreeze")?)
            .await
            .map(drop)
    }

    async fn save_snapshot(&self, key: &str, content: &str) -> Result<()> {
        non_empty("key", key)?;
        let path = format!("/snapshot-keys/{}", segment(key));
        send(
            self.request(Method::PUT, &path)?
                .json(&serde_json::json!({ "content": content })),
        )
        .await
        .map(drop)
    }

    async fn load_snapshot(&self, key: &str) -> Result<Option<KeyedSnapshot>> {
        non_empty("key", key)?;
        let path = format!("/snapshot-keys/{}", segment(key));
        let out: Option<wire::KeyedOut> =
            self.get_optional(&path, &Params::new(), "snapshot").await?;
        Ok(out.map(|k| KeyedSnapshot {
            key: k.key,
            content: k.content,
            timestamp: k.timestamp,
        }))
    }

    async fn drop_snapshot(&self, key: &str) -> Result<bool> {
        non_empty("key", key)?;
        let path = format!("/snapshot-keys/{}", segment(key));
        match send(self.request(Method::DELETE, &path)?).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound {
                what: "snapshot", ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_snapshots(&self, query: SnapshotKeyQuery) -> Result<Vec<KeyedSnapshot>> {
        let mut snapshots = Vec::new();
        let mut start_after = query.start_after;
        // The server answers pages of at most `SNAPSHOT_PAGE`; a larger (or no) limit
        // takes several.
        loop {
            let want = match query.limit {
                Some(limit) => (limit - snapshots.len() as u64).min(SNAPSHOT_PAGE),
                None => SNAPSHOT_PAGE,
            };
            if want == 0 {
                break;
            }
            let mut p = vec![("limit", want.to_string())];
            if let Some(after) = &start_after {
                p.push(("startAfter", after.clone()));
            }
            let page: wire::KeyedPageOut = self.get("/snapshot-keys", &p).await?;
            let got = page.snapshots.len() as u64;
            snapshots.extend(page.snapshots.into_iter().map(KeyedSnapshot::from));
            match page.next_start_after {
                Some(next) if got == want => start_after = Some(next),
                _ => break,
            }
        }
        Ok(snapshots)
    }

    async fn import_snapshots(&self, snapshots: Vec<KeyedSnapshot>) -> Result<u64> {
        let payload = serde_json::json!({
            "snapshots": snapshots
                .iter()
                .map(|s| wire::KeyedIn {
                    key: &s.key,
                    content: &s.content,
                    timestamp: s.timestamp.as_millis(),
                })
                .collect::<Vec<_>>(),
        });
        let r = send(
            self.request(Method::POST, "/snapshot-keys/import")?
                .json(&payload),
        )
        .await?;
        body::<wire::ImportedOut>(r).await.map(|o| o.imported)
    }

    async fn list_stream_snapshots(&self, stream: &StreamId) -> Result<Vec<StreamSnapshot>> {
        let out: wire::StreamSnapshotsOut = self.get("/snapshots", &stream_params(stream)).await?;
        Ok(out
            .snapshots
            .into_iter()
            .map(StreamSnapshot::from)
            .collect())
    }

    async fn save_stream_snapshot(&self, snapshot: NewStreamSnapshot) -> Result<StreamSnapshot> {
        // The store's own checks, in its order, before the data must be embedded in a
        // JSON body (which needs it to be JSON): the same input gets the same error as
        // on every other backend.
        annals_core::rules::check_stream_snapshot(snapshot.clone())?;
        let bytes = serde_json::to_vec(&wire::SnapshotIn::new(&snapshot))
            .map_err(|e| Error::invalid("data", e.to_string()))?;
        let r = send(
            self.request(Method::POST, "/snapshots")?
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes),
        )
        .await?;
        body::<wire::SnapshotOut>(r).await.map(StreamSnapshot::from)
    }

    async fn latest_stream_snapshot(
        &self,
        stream: &StreamId,
        max_version: Option<Version>,
    ) -> Result<Option<StreamSnapshot>> {
        let mut p = stream_params(stream);
        if let Some(v) = max_version {
            p.push(("maxStreamVersion", v.to_string()));
        }
        let out: Option<wire::SnapshotOut> = self
            .get_optional("/snapshots/latest", &p, "snapshot")
            .await?;
        Ok(out.map(StreamSnapshot::from))
    }

    async fn prune_stream_snapshots(&self, stream: &StreamId, keep: usize) -> Result<u64> {
        let mut p = stream_params(stream);
        p.push(("keep", keep.to_string()));
        let r = send(self.request(Method::DELETE, "/snapshots")?.query(&p)).await?;
        body::<wire::DeletedOut>(r).await.map(|d| d.deleted)
    }

    async fn set_secret(&self, id: &str, secret: &str) -> Result<Secret> {
        non_empty("id", id)?;
        let path = format!("/secrets/{}", segment(id));
        let r = send(
            self.request(Method::PUT, &path)?
                .json(&serde_json::json!({ "secret": secret })),
        )
        .await?;
        let out: wire::SecretOut = body(r).await?;
        Ok(Secret {
            idx: out.idx,
            id: out.id,
            secret: Some(secret.to_owned()),
        })
    }

    async fn get_secret(&self, id: &str) -> Result<Option<Secret>> {
        non_empty("id", id)?;
        let path = format!("/secrets/{}", segment(id));
        let out: Option<wire::SecretOut> =
            self.get_optional(&path, &Params::new(), "secret").await?;
        Ok(out.map(|s| Secret {
            idx: s.idx,
            id: s.id,
            secret: s.secret,
        }))
    }

    async fn delete_secret(&self, id: &str) -> Result<()> {
        non_empty("id", id)?;
        let path = format!("/secrets/{}", segment(id));
        send(self.request(Method::DELETE, &path)?).await.map(drop)
    }

    async fn list_secrets(&self, query: SecretQuery) -> Result<Vec<Secret>> {
        let mut p = vec![("fromIdx", query.from_idx.to_string())];
        if query.skip > 0 {
            p.push(("skip", query.skip.to_string()));
        }
        if let Some(l) = query.limit {
            p.push(("limit", l.to_string()));
        }
        p.extend(query.ids.iter().map(|id| ("id", id.clone())));
        if query.include_deleted {
            p.push(("includeDeleted", "true".into()));
        }
        let out: wire::SecretsOut = self.get("/secrets", &p).await?;
        Ok(out
            .secrets
            .into_iter()
            .map(|s| Secret {
                idx: s.idx,
                id: s.id,
                secret: s.secret,
            })
            .collect())
    }

    async fn mark_dispatched(&self, event_id: &str) -> Result<()> {
        non_empty("event_id", event_id)?;
        let path = format!("/events/{}/dispatched", segment(event_id));
        send(self.request(Method::POST, &path)?).await.map(drop)
    }

    async fn mark_dispatched_at(&self, positions: &[Position]) -> Result<()> {
        let payload = serde_json::json!({ "positions": positions });
        send(
            self.request(Method::POST, "/events/dispatched")?
                .json(&payload),
        )
        .await
        .map(drop)
    }

    fn subscribe(&self, request: Subscribe) -> EventStream {
        let mut params = filter_params(&request.filter);
        from_params(&request.from, &mut params);
        let state = Subscription {
            http: self.http.clone(),
            url: format!("{}/subscribe", self.store_url),
            params,
            token: self.token.clone(),
            last: None,
            response: None,
            buffer: Vec::new(),
            pending: VecDeque::new(),
            done: false,
            failures: 0,
            closed: self.closed.subscribe(),
        };
        futures::stream::unfold(state, Subscription::next).boxed()
    }

    async fn close(&self) -> Result<()> {
        // Closing a remote store closes this handle only: the store stays on the server.
        if self.closed.send_replace(true) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn import_events(&self, batch: ImportBatch) -> Result<ImportOutcome> {
        maintenance::import_events(self, batch).await
    }

    async fn clear_events(&self) -> Result<()> {
        maintenance::clear(self, "/events").await
    }

    async fn clear_secrets(&self) -> Result<()> {
        maintenance::clear(self, "/secrets").await
    }

    async fn import_secrets(
        &self,
        secrets: Vec<SecretImport>,
        on_conflict: OnConflict,
    ) -> Result<ImportOutcome> {
        maintenance::import_secrets(self, secrets, on_conflict).await
    }

    async fn drop_store(&self) -> Result<()> {
        send(self.request(Method::DELETE, "")?).await?;
        self.closed.send_replace(true);
        Ok(())
    }
}

/// The state of one SSE subscription: reconnects after a dropped connection, resuming
/// after the last position it delivered (`Last-Event-ID`).
struct Subscription {
    http: reqwest::Client,
    url: String,
    params: Params,
    token: Option<String>,
    last: Option<Position>,
    response: Option<reqwest::Response>,
    buffer: Vec<u8>,
    pending: VecDeque<Result<RecordedEvent>>,
    done: bool,
    failures: u32,
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<RecordedEvent>, Self)> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            if let Some(item) = self.pending.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            let Some(response) = self.response.as_mut() else {
                self.connect().await?;
                continue;
            };
            let chunk = tokio::select! {
                chunk = response.chunk() => chunk,
                _ = self.closed.changed() => return None,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    self.buffer.extend_from_slice(&bytes);
                    self.parse();
                }
                // The connection ended without an `end` message: resume.
                Ok(None) | Err(_) => {
                    self.response = None;
                    self.buffer.clear();
                    self.failures += 1;
                }
            }
        }
    }

    /// Opens the event stream; `None` when the handle was closed meanwhile.
    async fn connect(&mut self) -> Option<()> {
        if self.failures >= MAX_RECONNECTS {
            self.pending.push_back(Err(error::connection(format!(
                "the subscription lost its connection {MAX_RECONNECTS} times in a row"
            ))));
            self.done = true;
            return Some(());
        }
        if self.failures > 0 {
            let pause = Duration::from_millis(100 * u64::from(self.failures));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = self.closed.changed() => return None,
            }
        }
        let mut request = self.http.get(&self.url).query(&self.params);
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        if let Some(last) = self.last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let sent = tokio::select! {
            r = request.send() => r,
            _ = self.closed.changed() => return None,
        };
        match sent {
            Ok(r) if r.status().is_success() => self.response = Some(r),
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                self.pending.push_back(Err(error::from_body(status, &body)));
                self.done = true;
            }
            Err(_) => self.failures += 1,
        }
        Some(())
    }

    /// Takes every complete SSE message out of the buffer.
    fn parse(&mut self) {
        while let Some(end) = find_message_end(&self.buffer) {
            let message: Vec<u8> = self.buffer.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&message[..end.0]);
            let mut kind = "message";
            let mut data = String::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = match v.trim() {
                        "event" => "event",
                        "error" => "error",
                        "end" => "end",
                        "lagged" => "lagged",
                        _ => "message",
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match kind {
                "event" => match serde_json::from_str::<wire::EventOut>(&data) {
                    Ok(e) => {
                        let e = RecordedEvent::from(e);
                        self.last = Some(e.position);
                        self.failures = 0;
                        self.pending.push_back(Ok(e));
                    }
                    Err(e) => {
                        self.pending.push_back(Err(error::connection(format!(
                            "unreadable event from the server: {e}"
                        ))));
                        self.done = true;
                    }
                },
                "error" => {
                    self.pending
                        .push_back(Err(error::from_body(200, data.as_bytes())));
                    self.done = true;
                }
                "end" => self.done = true,
                "lagged" => {
                    self.response = None;
                    self.buffer.clear();
                    return;
                }
                _ => {}
            }
            if self.done {
                return;
            }
        }
    }
}

/// The end of the first complete SSE message: (end of its text, start of the next).
fn find_message_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
