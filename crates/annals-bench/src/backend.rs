//! The backends the benchmark can measure. Adding one is one enum variant and one match
//! arm in [`Backend::open`].

use std::path::Path;
use std::sync::Arc;

use annals_core::{EventStore, MemoryStore};
use clap::ValueEnum;

use crate::BenchResult;

/// Which store to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// `annals_core::MemoryStore`, the in-memory reference backend.
    Memory,
    /// `annals_embedded::EmbeddedStore`, the single-node on-disk backend (cargo feature
    /// `embedded`, on by default).
    Embedded,
}

impl Backend {
    /// The name printed in the `backend` field.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Embedded => "embedded",
        }
    }

    /// Opens a fresh, empty store keeping its files (if any) in `dir`, an empty directory.
    pub fn open(self, dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
        match self {
            Backend::Memory => Ok(Arc::new(MemoryStore::new())),
            Backend::Embedded => open_embedded(dir),
        }
    }
}

#[cfg(feature = "embedded")]
fn open_embedded(dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Ok(Arc::new(annals_embedded::EmbeddedStore::open(dir)?))
}

#[cfg(not(feature = "embedded"))]
fn open_embedded(_dir: &Path) -> BenchResult<Arc<dyn EventStore>> {
    Err("this annals-bench was built without the `embedded` feature".into())
}
