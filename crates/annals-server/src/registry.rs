//! The stores a server hosts: one embedded store per directory under the data directory,
//! or (with `--postgres`) one store per row of the `stores` table of one PostgreSQL
//! schema, through `annals_postgres`.

use std::collections::HashMap;
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
    shutting_down: AtomicBool,
    /// See [`crate::ServerConfig::max_subscriber_lag`].
    pub(crate) max_subscriber_lag: u64,
    /// The counters of `GET /metrics`.
    pub(crate) metrics: crate::metrics::Metrics,
}

/// Checks that `name` is usable as a store name (and so as a directory name).
pub(crate) fn check_store_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STORE_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
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
            stores: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    fn cached(&self, name: &str) -> Result<Option<Arc<dyn EventStore>>, ApiError> {
        let stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        Ok(stores.get(name).cloned())
    }

    fn cache(&self, name: &str, store: Arc<dyn EventStore>) -> Result<(), ApiError> {
        let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        stores.insert(name.to_owned(), store);
        Ok(())
    }

    /// The named store, opened if it is not open yet.
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<dyn EventStore>, ApiError> {
        check_store_name(name)?;
        match &self.backing {
            Backing::Embedded { dir, options } => {
                let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
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
                if !db.store_exists(name).await? {
                    return Err(Error::not_found("store", name).into());
                }
                let store: Arc<dyn EventStore> = Arc::new(db.open_store(name).await?);
                self.cache(name, Arc::clone(&store))?;
                Ok(store)
            }
        }
    }

    /// Creates a store; [`ApiError::StoreAlreadyExists`] when it exists.
    pub(crate) async fn create(&self, name: &str) -> Result<(), ApiError> {
        check_store_name(name)?;
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
                self.cache(name, store)
            }
        }
    }

    /// Deletes a store (its directory, or its rows).
    pub(crate) async fn drop_store(&self, name: &str) -> Result<(), ApiError> {
        let store = self.get(name).await?;
        {
            let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
            stores.remove(name);
        }
        store.drop_store().await?;
        match &self.backing {
            Backing::Embedded { dir, .. } => match std::fs::remove_dir_all(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::backend("server", e).into()),
            },
            Backing::Postgres(_) => Ok(()),
        }
    }

    /// Whether the server is shutting down (its stores close because of that).
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Closes every open store (ends their subscriptions); used at shutdown.
    pub(crate) async fn close_all(&self) {
        self.shutting_down.store(true, Ordering::Release);
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
