//! The HTTP client runs the whole conformance suite, unchanged, against a real server
//! whose stores live in PostgreSQL (`annals serve --postgres URL`): one server for the
//! test binary, a fresh store per test, dropped when the test ends.
//!
//! The database is `ANNALS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of this run's own,
//! `annals_test_<unix seconds>_<pid>` (each test drops its store; the emptied schema is
//! dropped by a later run of the annals-postgres tests, which remove the
//! `annals_test_*` schemas of runs older than an hour). Without a reachable database
//! the tests fail under `CI=true` and are skipped (loudly) elsewhere: the rule of
//! `annals_testkit::services`.

// Test helpers panic on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use annals_client::HttpStore;
use annals_core::EventStore;
use annals_server::{Server, ServerConfig};
use annals_testkit::services::POSTGRES;
use annals_testkit::TestStore;

/// The base URL of the PostgreSQL-backed server shared by the tests of this binary, or
/// `None` (the test is skipped, and says so) when the database cannot be reached
/// outside CI.
fn server_url() -> Option<&'static str> {
    let database = POSTGRES.available()?;
    static SERVER: OnceLock<annals_server::RunningServer> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut config =
            ServerConfig::new("unused-with-postgres").listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.postgres = Some(database.clone());
        config.postgres_options.schema = format!("annals_test_{secs}_{}", std::process::id());
        match Server::spawn(config) {
            Ok(server) => {
                eprintln!(
                    "annals-client postgres tests: server at {} on {database}",
                    server.url()
                );
                server
            }
            // PostgreSQL answers, so a server that does not start is a failure.
            Err(why) => panic!("the server on PostgreSQL at {database} did not start: {why}"),
        }
    });
    let url = server.url();
    Some(url)
}

/// Drops the test's store on the server when the test is done with it, so the server
/// does not keep one appender connection per finished test.
struct DropStore {
    url: &'static str,
    name: String,
}

impl Drop for DropStore {
    fn drop(&mut self) {
        let url = self.url;
        let name = std::mem::take(&mut self.name);
        // Its own thread and runtime: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("clean-up runtime");
            runtime.block_on(async move {
                if let Ok(store) = HttpStore::new(url, &name) {
                    // Already dropped by the test itself: fine.
                    let _ = store.drop_store().await;
                }
            });
        })
        .join();
    }
}

async fn fresh(url: &'static str) -> TestStore {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("pg{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = HttpStore::new(url, &name).expect("client");
    store.create().await.expect("create the store");
    TestStore::with_guard(Arc::new(store), DropStore { url, name })
}

annals_testkit::conformance_suite!({
    let Some(url) = server_url() else {
        return;
    };
    fresh(url)
});

/// The model-based property test through the client and a PostgreSQL-backed server.
#[test]
fn the_client_on_postgres_matches_the_reference_model() {
    let Some(url) = server_url() else {
        return;
    };
    annals_testkit::model::check_against_reference(24, move || fresh(url));
}
