//! The embedded backend runs the whole conformance suite and the model-based test
//! against the in-memory reference, unchanged.

// Test helpers panic on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use annals_embedded::{EmbeddedOptions, EmbeddedStore};
use annals_testkit::TestStore;

fn options() -> EmbeddedOptions {
    // Small caches: many stores are open at once while the suite runs.
    EmbeddedOptions {
        cache_bytes: 4 << 20,
        // A tail cache of a few events: reads cross from storage into the cache.
        tail_cache_bytes: 4 << 10,
        max_journal_bytes: 64 << 20,
    }
}

fn fresh() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open_with(dir.path(), options()).expect("open embedded store");
    TestStore::with_guard(Arc::new(store), dir)
}

annals_testkit::conformance_suite!(async { fresh() });

#[test]
fn embedded_store_matches_the_reference_model() {
    annals_testkit::model::check_against_reference(48, || async { fresh() });
}
