//! The conformance suite and the model-based test against the in-memory reference
//! backend (which proves the suite and the reference agree).

use std::sync::Arc;

use annals_core::MemoryStore;
use annals_testkit::TestStore;

annals_testkit::conformance_suite!(async { TestStore::new(Arc::new(MemoryStore::new())) });

#[test]
fn memory_store_matches_the_reference_model() {
    annals_testkit::model::check_against_reference(64, || async {
        TestStore::new(Arc::new(MemoryStore::new()))
    });
}
