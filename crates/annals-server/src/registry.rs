//! The stores a server hosts: one embedded store per directory under the data directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use annals_core::{Error, EventStore};
use annals_embedded::{EmbeddedOptions, EmbeddedStore};

use crate::error::ApiError;

/// The longest store name accepted (it is a directory name).
pub const MAX_STORE_NAME: usize = 128;

/// Stores by name, opened on first use.
pub(crate) struct Registry {
    dir: PathBuf,
    options: EmbeddedOptions,
    stores: Mutex<HashMap<String, Arc<dyn EventStore>>>,
    shutting_down: AtomicBool,
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
    pub(crate) fn new(dir: PathBuf, options: EmbeddedOptions) -> Self {
        Registry {
            dir,
            options,
            stores: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    fn store_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn open(&self, dir: &Path) -> Result<Arc<dyn EventStore>, ApiError> {
        Ok(Arc::new(EmbeddedStore::open_with(dir, self.options)?))
    }

    /// The named store, opened from its directory if it is not open yet.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<dyn EventStore>, ApiError> {
        check_store_name(name)?;
        let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        if let Some(store) = stores.get(name) {
            return Ok(Arc::clone(store));
        }
        let dir = self.store_dir(name);
        if !dir.is_dir() {
            return Err(Error::not_found("store", name).into());
        }
        let store = self.open(&dir)?;
        stores.insert(name.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// Creates a store; [`ApiError::StoreAlreadyExists`] when it exists.
    pub(crate) fn create(&self, name: &str) -> Result<(), ApiError> {
        check_store_name(name)?;
        let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
        let dir = self.store_dir(name);
        if stores.contains_key(name) || dir.exists() {
            return Err(ApiError::StoreAlreadyExists(name.to_owned()));
        }
        let store = self.open(&dir)?;
        stores.insert(name.to_owned(), store);
        Ok(())
    }

    /// Deletes a store and its directory.
    pub(crate) async fn drop_store(&self, name: &str) -> Result<(), ApiError> {
        let store = self.get(name)?;
        {
            let mut stores = self.stores.lock().map_err(|_| lock_poisoned())?;
            stores.remove(name);
        }
        store.drop_store().await?;
        match std::fs::remove_dir_all(self.store_dir(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::backend("server", e).into()),
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
