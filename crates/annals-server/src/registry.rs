//! The stores a server hosts: one embedded store per directory under the data directory,
//! or (with `--postgres`) one store per row of the `stores` table of one PostgreSQL
//! schema, through `annals_postgres`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use annals_core::{Error, EventStore};
use annals_embedded::{EmbeddedOptions, EmbeddedStore};

use crate::error::ApiError;

/// The longest store name accepted (it is a directory name).
pub const MAX_STORE_NAME: usize = 128;

/// Where the stores live.
pub(crate) enum Backing {
    /// One embedded store per subdirectory.
    Embedded {
        /// The data directory.
        dir: PathBuf,
        /// The options of every store.
        options: EmbeddedOptions,
    },
    /// Stores as rows of one PostgreSQL schema.
    Postgres(annals_postgres::PostgresDatabase),
}

/// Stores by name, opened on first use.
pub(crate) struct Registry {
    backing: Backing,
    stores: Mutex<HashMap<String, Arc<dyn EventStore>>>,
    /// PostgreSQL stores being dropped: they answer `store_not_found` from the start of
    /// the drop (an embedded store's directory is renamed away instead).
    dropping: Mutex<HashSet<String>>,
    shutting_down: AtomicBool,
    /// Cancelled when the shutdown begins: live subscriptions end on it.
    shutdown: tokio_util::sync::CancellationToken,
    /// See [`crate::ServerConfig::max_body_bytes`].
    pub(crate) max_body_bytes: usize,
    /// See [`crate::ServerConfig::keep_alive`].
    pub(crate) keep_alive: std::time::Duration,
    /// See [`crate::ServerConfig::max_subscriber_lag`].
    pub(crate) max_subscriber_lag: u64,
    /// The counters of `GET /metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
    /// The open incremental imports of every store.
    pub(crate) imports: crate::incremental::Imports,
}

/// Removes a dropped store's renamed directory. The store's engine may still be finishing
/// background work in it for a moment, so this retries; whatever is left is removed at the
/// next start ([`remove_leftover_trash`]).
async fn remove_trash(trash: &std::path::Path) {
    for attempt in 0..20u64 {
        match std::fs::remove_dir_all(trash) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if attempt == 19 => {
                tracing::warn!(dir = %trash.display(), error = %e, "cannot remove a dropped store's files yet; they go at the next start");
            }
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50 * (attempt + 1))).await
            }
        }
    }
}

/// Removes what dropped stores left behind in `dir` (see [`remove_trash`]).
pub(crate) fn remove_leftover_trash(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".dropped-") {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a dropped store's files");
            }
        }
    }
}

/// Checks that `name` is usable as a store name, and so as a directory name under the
/// data directory: 1 to [`MAX_STORE_NAME`] ASCII letters, digits, `-`, `_` or `.`, not
/// starting with `.` (never a path that leaves the directory, never a hidden or trash
/// directory). The CLI applies the same rule to stores it opens directly.
///
/// ```
/// assert!(annals_server::check_store_name("orders-2024").is_ok());
/// assert!(annals_server::check_store_name("../etc").is_err());
/// assert!(annals_server::check_store_name(".dropped-x").is_err());
/// ```
pub fn check_store_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STORE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "store",
            format!(
                "{name:?} is not a store name: use 1 to {MAX_STORE_NAME} ASCII letters, digits, \
                 '-', '_' or '.', not starting with '.'"
            ),
        ))
    }
}

fn lock_poisoned() -> ApiError {
    ApiError::Store(Error::backend(
        "server",
        std::io::Error::other("a thread panicked while holding the store registry"),
    ))
}

impl Registry {
    pub(crate) fn new(backing: Backing, max_subscriber_lag: u64) -> Self {
        Registry {
            backing,
            max_subscriber_lag,
            max_body_bytes: crate::DEFAULT_MAX_BODY_BYTES,
            keep_alive: crate::DEFAULT_KEEP_ALIVE,
            stores: Mutex::new(HashMap::new()),
            dropping: Mutex::new(HashSet::new()),
            shutting_down: AtomicBool::new(false),
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics: crate::metrics::Metrics::default(),
            imports: crate::incremental::Imports::default(),
        }
    }

    fn cached(&self, name: &str) -> Result<Option<Arc<dyn EventStore>>, ApiError> {
        let stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        Ok(stores.get(name).cloned())
    }

    /// Caches a store just opened, unless a drop of it began meanwhile; returns the
    /// cached store (another request's, when it was first).
    pub(crate) fn cache(
        &self,
        name: &str,
        store: Arc<dyn EventStore>,
    ) -> Result<Arc<dyn EventStore>, ApiError> {
        let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        if self.is_dropping(name)? {
            return Err(Error::not_found("store", name).into());
        }
        Ok(Arc::clone(stores.entry(name.to_owned()).or_insert(store)))
    }

    fn is_dropping(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .dropping
            .lock()
            .map_err(|_| lock_poisoned())?
            .contains(name))
    }

    /// Runs `f` under the registry lock if `store` is still the open store `name` (not
    /// dropped, not being dropped, not replaced by a new store of the same name): what
    /// `f` registers for the store then goes with the store's drop, which takes the same
    /// lock. `store_not_found` otherwise.
    pub(crate) fn while_open<T>(
        &self,
        name: &str,
        store: &Arc<dyn EventStore>,
        f: impl FnOnce() -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        let current = stores.get(name).is_some_and(|s| Arc::ptr_eq(s, store));
        if !current || self.is_dropping(name)? {
            return Err(Error::not_found("store", name).into());
        }
        let result = f();
        drop(stores);
        result
    }

    /// The named store, opened if it is not open yet. Once the shutdown began, every
    /// request is refused with 503 `store_closed`: no store is opened (or re-opened after
    /// [`Registry::close_all`]) any more.
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<dyn EventStore>, ApiError> {
        check_store_name(name)?;
        self.refuse_when_shutting_down()?;
        match &self.backing {
            Backing::Embedded { dir, options } => {
                let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
                if self.is_dropping(name)? {
                    return Err(Error::not_found("store", name).into());
                }
                if let Some(store) = stores.get(name) {
                    return Ok(Arc::clone(store));
                }
                let dir = dir.join(name);
                if !dir.is_dir() {
                    return Err(Error::not_found("store", name).into());
                }
                let store: Arc<dyn EventStore> =
                    Arc::new(EmbeddedStore::open_with(&dir, *options)?);
                stores.insert(name.to_owned(), Arc::clone(&store));
                Ok(store)
            }
            Backing::Postgres(db) => {
                if let Some(store) = self.cached(name)? {
                    return Ok(store);
                }
                if self.is_dropping(name)? || !db.store_exists(name).await? {
                    return Err(Error::not_found("store", name).into());
                }
                let store: Arc<dyn EventStore> = Arc::new(db.open_store(name).await?);
                self.cache(name, store)
            }
        }
    }

    /// Creates a store; [`ApiError::StoreAlreadyExists`] when it exists.
    pub(crate) async fn create(&self, name: &str) -> Result<(), ApiError> {
        check_store_name(name)?;
        self.refuse_when_shutting_down()?;
        match &self.backing {
            Backing::Embedded { dir, options } => {
                let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
                let dir = dir.join(name);
                if stores.contains_key(name) || dir.exists() {
                    return Err(ApiError::StoreAlreadyExists(name.to_owned()));
                }
                let store = Arc::new(EmbeddedStore::open_with(&dir, *options)?);
                stores.insert(name.to_owned(), store);
                Ok(())
            }
            Backing::Postgres(db) => {
                // Of concurrent creators (in any process), exactly one gets `true`.
                if !db.create_store(name).await? {
                    return Err(ApiError::StoreAlreadyExists(name.to_owned()));
                }
                let store: Arc<dyn EventStore> = Arc::new(db.open_store(name).await?);
                self.cache(name, store).map(drop)
            }
        }
    }

    /// Deletes a store (its directory, or its rows).
    ///
    /// An embedded store's directory is first renamed out of the way (under the registry
    /// lock, so no request can open it again meanwhile), then closed and removed: requests
    /// racing the drop see either the store or `store_not_found`, never a half-deleted
    /// directory. From the start of the drop the store answers `store_not_found` and its
    /// open incremental imports are gone; none can be opened on it any more
    /// ([`Registry::while_open`]).
    pub(crate) async fn drop_store(&self, name: &str) -> Result<(), ApiError> {
        let store = self.get(name).await?;
        let trash = {
            let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
            if !stores
                .get(name)
                .is_some_and(|current| Arc::ptr_eq(current, &store))
            {
                // Another drop got there first.
                return Err(Error::not_found("store", name).into());
            }
            let trash = match &self.backing {
                Backing::Embedded { dir, .. } => {
                    let trash = dir.join(format!(".dropped-{name}-{}", uuid::Uuid::now_v7()));
                    std::fs::rename(dir.join(name), &trash)
                        .map_err(|e| ApiError::from(Error::backend("server", e)))?;
                    Some(trash)
                }
                Backing::Postgres(_) => {
                    // The rows stay until `drop_store` returns: until then the store
                    // must not be opened again.
                    let mut dropping = self.dropping.lock().map_err(|_| lock_poisoned())?;
                    if !dropping.insert(name.to_owned()) {
                        return Err(Error::not_found("store", name).into());
                    }
                    None
                }
            };
            stores.remove(name);
            self.imports.drop_store(name);
            trash
        };
        match trash {
            // The files are already out of the store's reach: closing is all that is left
            // before they go.
            Some(trash) => {
                store.close().await?;
                drop(store);
                remove_trash(&trash).await;
            }
            None => {
                let dropped = store.drop_store().await;
                self.dropped(name);
                dropped?;
            }
        }
        Ok(())
    }

    /// Ends the drop of `name`: a store of that name may be created again.
    fn dropped(&self, name: &str) {
        if let Ok(mut dropping) = self.dropping.lock() {
            dropping.remove(name);
        }
    }

    /// Whether the server is shutting down (its stores close because of that).
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn refuse_when_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutting_down() {
            return Err(Error::Closed.into());
        }
        Ok(())
    }

    /// The first step of a graceful shutdown: new requests are refused, live
    /// subscriptions end (clients resume with `Last-Event-ID` elsewhere or later), and
    /// requests already past [`Registry::get`] — appends among them — finish normally.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Completes once [`Registry::begin_shutdown`] was called.
    pub(crate) async fn shutdown_started(&self) {
        self.shutdown.cancelled().await;
    }

    /// Closes every open store; the last step of a shutdown, once no request is left.
    pub(crate) async fn close_all(&self) {
        self.begin_shutdown();
        let stores: Vec<_> = match self.stores.lock() {
            Ok(mut stores) => stores.drain().collect(),
            Err(_) => return,
        };
        for (name, store) in stores {
            if let Err(e) = store.close().await {
                tracing::warn!(store = %name, error = %e, "closing a store at shutdown failed");
            }
        }
    }
}
