//! The PostgreSQL backend runs the whole conformance suite and the model-based test
//! against the in-memory reference, unchanged, against a real server (see
//! `support/mod.rs` for the URL, the per-run schema, clean-up and skipping).

// Test helpers panic on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

// Each test gets a fresh store; without a server the test returns early (skipped, or
// failed under CI=true inside `fresh_store`).
annals_testkit::conformance_suite!({
    let Some(store) = support::fresh_store().await else {
        return;
    };
    std::future::ready(store)
});

#[test]
fn postgres_store_matches_the_reference_model() {
    if !support::available() {
        return;
    }
    // Keeps the run's schema for the whole test instead of re-creating it per case.
    let _schema = support::SchemaUse::new(None);
    annals_testkit::model::check_against_reference(48, || async {
        support::fresh_store()
            .await
            .expect("the server was reachable")
    });
}
