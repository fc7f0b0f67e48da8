//! The HTTP client runs the whole conformance suite, unchanged, against a real server on
//! 127.0.0.1 (one server for the test binary; each test gets a fresh store on it).

// Test helpers panic on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use annals_client::HttpStore;
use annals_embedded::EmbeddedOptions;
use annals_server::{Server, ServerConfig};
use annals_testkit::TestStore;

/// The base URL of the server shared by the tests of this binary. It runs on its own
/// thread and runtime, since every test has a runtime of its own.
fn server_url() -> &'static str {
    static SERVER: OnceLock<annals_server::RunningServer> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("annals-client-conformance-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut config = ServerConfig::new(dir).listen(SocketAddr::from(([127, 0, 0, 1], 0)));
            // Small caches: many stores are open at once while the suite runs.
            config.embedded = EmbeddedOptions {
                cache_bytes: 4 << 20,
                tail_cache_bytes: 4 << 10,
                max_journal_bytes: 64 << 20,
            };
            Server::spawn(config).expect("start the test server")
        })
        .url()
}

async fn fresh() -> TestStore {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let store = HttpStore::new(server_url(), &name).expect("client");
    store.create().await.expect("create the store");
    TestStore::new(Arc::new(store))
}

annals_testkit::conformance_suite!(fresh());

/// The model-based property test too: random operation sequences through the client and
/// a real server give what the in-memory reference gives.
#[test]
fn the_client_matches_the_reference_model() {
    annals_testkit::model::check_against_reference(32, fresh);
}
