//! Maintenance mode: whether an export or import freezes the store for its duration.

use std::str::FromStr;
use std::sync::Arc;

use annals_core::{Error, EventStore, Result};

/// Whether an operation switches the store into maintenance (frozen) for its duration
/// (reSolve's `MAINTENANCE_MODE_AUTO` / `MAINTENANCE_MODE_MANUAL`).
///
/// ```
/// use annals_maintenance::MaintenanceMode;
/// assert_eq!(MaintenanceMode::default(), MaintenanceMode::Manual);
/// assert_eq!("auto".parse::<MaintenanceMode>().unwrap(), MaintenanceMode::Auto);
/// assert!("sometimes".parse::<MaintenanceMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaintenanceMode {
    /// Nothing implicit: the caller freezes (or not) and, for imports, empties the store.
    #[default]
    Manual,
    /// Freeze at the start and unfreeze at the end, also on error or cancellation; an
    /// import in this mode first empties what it imports (events or secrets).
    Auto,
}

impl FromStr for MaintenanceMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(MaintenanceMode::Auto),
            "manual" => Ok(MaintenanceMode::Manual),
            other => Err(Error::invalid(
                "maintenanceMode",
                format!("{other:?} is not \"auto\" or \"manual\""),
            )),
        }
    }
}

/// A store frozen for maintenance. [`Maintenance::end`] unfreezes it; when the guard is
/// dropped without `end` (the operation failed with `?`, panicked or its future was
/// cancelled), a task spawned on the current Tokio runtime unfreezes it.
///
/// ```
/// use std::sync::Arc;
/// use annals_core::{EventStore, MemoryStore};
/// use annals_maintenance::{Maintenance, MaintenanceMode};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let guard = Maintenance::begin(&store, MaintenanceMode::Auto).await?;
/// assert!(store.describe().await?.frozen);
/// guard.end().await?;
/// assert!(!store.describe().await?.frozen);
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
pub struct Maintenance {
    store: Option<Arc<dyn EventStore>>,
}

impl Maintenance {
    /// In [`MaintenanceMode::Auto`], freezes the store ([`Error::AlreadyFrozen`] when it
    /// is frozen already: someone else is maintaining it); in `Manual`, does nothing.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use annals_core::{EventStore, MemoryStore};
    /// use annals_maintenance::{Maintenance, MaintenanceMode};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    /// let guard = Maintenance::begin(&store, MaintenanceMode::Manual).await?;
    /// assert!(!store.describe().await?.frozen);
    /// guard.end().await?;
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn begin(store: &Arc<dyn EventStore>, mode: MaintenanceMode) -> Result<Self> {
        match mode {
            MaintenanceMode::Manual => Ok(Maintenance { store: None }),
            MaintenanceMode::Auto => {
                store.freeze().await?;
                Ok(Maintenance {
                    store: Some(Arc::clone(store)),
                })
            }
        }
    }

    /// Unfreezes the store (when this guard froze it).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use annals_core::{EventStore, MemoryStore};
    /// # use annals_maintenance::{Maintenance, MaintenanceMode};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// # let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    /// Maintenance::begin(&store, MaintenanceMode::Auto).await?.end().await?;
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn end(mut self) -> Result<()> {
        match self.store.take() {
            Some(store) => store.unfreeze().await,
            None => Ok(()),
        }
    }

    /// Ends the maintenance after `result`: the store is unfrozen whatever the result,
    /// and the operation's error wins over an unfreeze error.
    pub(crate) async fn finish<T>(self, result: Result<T>) -> Result<T> {
        let ended = self.end().await;
        let value = result?;
        ended?;
        Ok(value)
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = store.unfreeze().await;
                });
            }
        }
    }
}
