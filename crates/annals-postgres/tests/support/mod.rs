//! What the PostgreSQL tests share: a schema per test run, a fresh store per test and
//! clean-up. Whether the server is there, and what happens when it is not, is the
//! rule of `annals_testkit::services` (`ANNALS_TEST_POSTGRES_URL`, else the local
//! server; skipped loudly, or failed under `CI=true`).
//!
//! - Every test binary run uses its own schema, `annals_test_<unix seconds>_<pid>`;
//!   each test gets its own store in it. A test's store is deleted when the test ends,
//!   and the schema is dropped when no test of the run is using it. Schemas of runs
//!   that died more than an hour ago are dropped by the next run.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use annals_postgres::{PostgresDatabase, PostgresOptions, PostgresStore};
pub use annals_testkit::services::say;
use annals_testkit::services::POSTGRES;
use annals_testkit::TestStore;
use sqlx::Connection;

/// Child processes of a test find their schema here.
pub const SCHEMA_ENV: &str = "ANNALS_TEST_SCHEMA";

/// The server the tests use.
pub fn url() -> String {
    POSTGRES.url()
}

/// Whether the tests use the server (said once on the terminal). Without it, panics
/// under `CI=true`; elsewhere says the test is skipped, and the caller returns.
pub fn available() -> bool {
    static USING: Once = Once::new();
    let Some(url) = POSTGRES.available() else {
        return false;
    };
    USING.call_once(|| say(&format!("annals-postgres tests: using PostgreSQL at {url}")));
    true
}

/// The schema of this test run (children of a test use their parent's).
pub fn schema() -> String {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            std::env::var(SCHEMA_ENV).unwrap_or_else(|_| {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("annals_test_{secs}_{}", std::process::id())
            })
        })
        .clone()
}

/// Tests of this run currently using the schema.
static LIVE: Mutex<usize> = Mutex::new(0);

/// Runs `sql` (simple-query statements) on a fresh connection, on a helper thread, so
/// it can run from `Drop` inside any runtime.
fn run_sql(sql: String) {
    let url = url();
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(&sql)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok::<(), String>(())
        })
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => say(&format!("annals-postgres tests: clean-up failed: {e}")),
        Err(_) => say("annals-postgres tests: the clean-up thread panicked"),
    }
}

/// Drops test schemas of runs that started more than an hour ago (runs that were
/// killed before they could clean up).
fn sweep_old_schemas() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let cutoff = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(3600);
        run_sql(format!(
            "DO $$ DECLARE s text; BEGIN
               FOR s IN SELECT nspname FROM pg_namespace
                        WHERE nspname ~ '^annals_test_[0-9]+_[0-9]+$'
                          AND split_part(nspname, '_', 3)::bigint < {cutoff}
               LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP;
             END $$"
        ));
    });
}

/// Holds the run's schema while alive; when the last holder goes, the schema is
/// dropped. A holder for a store also deletes that store's rows.
pub struct SchemaUse {
    store: Option<String>,
}

impl SchemaUse {
    /// Registers a user of the schema (waits while a clean-up is dropping it).
    pub fn new(store: Option<String>) -> Self {
        sweep_old_schemas();
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *live += 1;
        SchemaUse { store }
    }
}

impl Drop for SchemaUse {
    fn drop(&mut self) {
        if std::env::var(SCHEMA_ENV).is_ok() {
            return; // a child process: the parent cleans up
        }
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        let s = schema();
        // Held across the clean-up, so no test starts migrating a schema being dropped.
        if *live == 0 {
            run_sql(format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"));
        } else if let Some(store) = &self.store {
            let name = store.replace('\'', "''");
            let tables = [
                "events",
                "streams",
                "keyed_snapshots",
                "stream_snapshots",
                "secrets",
            ];
            let mut sql = String::new();
            for t in tables {
                sql.push_str(&format!(
                    "DELETE FROM \"{s}\".{t} WHERE store_id = (SELECT id FROM \"{s}\".stores WHERE name = '{name}');"
                ));
            }
            sql.push_str(&format!(
                "DELETE FROM \"{s}\".stores WHERE name = '{name}';"
            ));
            run_sql(sql);
        }
        drop(live);
    }
}

/// Options for test databases: few connections, since many tests run at once.
pub fn options() -> PostgresOptions {
    PostgresOptions {
        schema: schema(),
        max_connections: 4,
        ..PostgresOptions::default()
    }
}

/// Connects to the test database (in the run's schema).
pub async fn database() -> PostgresDatabase {
    PostgresDatabase::connect(&url(), options())
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {}: {e}", url()))
}

/// A store name unique to this process.
pub fn unique_store_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty store of its own, removed after the test; `None` when the test is
/// skipped (no server, outside CI).
pub async fn fresh_store() -> Option<TestStore> {
    if !available() {
        return None;
    }
    let name = unique_store_name("t");
    let guard = SchemaUse::new(Some(name.clone()));
    let store: PostgresStore = database()
        .await
        .open_store(&name)
        .await
        .unwrap_or_else(|e| panic!("opening store {name}: {e}"));
    Some(TestStore::with_guard(Arc::new(store), guard))
}
