//! What the CLI tests share: the skip-or-fail rule for what a test needs from outside
//! (a service, `/proc`), and a fresh PostgreSQL schema per test.
//!
//! - Without what it needs, a test fails under `CI=true` and is skipped elsewhere, with
//!   a message on the terminal (not captured by libtest) saying why and how to run it.
//! - PostgreSQL is `ANNALS_TEST_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/test`); each test gets its own schema,
//!   `annals_test_<unix seconds>_<pid><n>` (the pattern whose stale schemas the
//!   annals-postgres tests drop after an hour), dropped when the test ends.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// The PostgreSQL server used when `ANNALS_TEST_POSTGRES_URL` is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Writes to the terminal even when libtest captures test output.
pub fn say(message: &str) {
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Whether the tests run under `CI=true`, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails the test under `CI=true`; elsewhere says loudly that `test` is skipped,
/// `why`, and how to run it. The caller returns after it.
pub fn skip(test: &str, why: &str, how: &str) {
    if in_ci() {
        panic!("{test}: {why}; under CI=true this test must run ({how})");
    }
    say(&format!(
        "\n*** SKIPPED: {test}: {why}.\n*** To run it: {how}. Under CI=true it fails instead.\n"
    ));
}

/// Whether the `host:port` of `url` accepts a connection (within 3 s).
fn reachable(url: &str) -> Result<(), String> {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
        .and_then(|addr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())
        })
        .map(drop)
}

/// The URL of the service `name` (`env`, else `default`) when it answers; `None` (after
/// [`skip`]) when it does not.
pub fn service(test: &str, name: &str, env: &str, default: &str) -> Option<String> {
    let url = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    match reachable(&url) {
        Ok(()) => Some(url),
        Err(why) => {
            skip(
                test,
                &format!("{name} at {url} is not reachable ({why})"),
                &format!("start {name} (.ci/run does), or set {env}"),
            );
            None
        }
    }
}

/// The PostgreSQL URL when the server answers (see [`service`]).
pub fn postgres(test: &str) -> Option<String> {
    service(
        test,
        "PostgreSQL",
        "ANNALS_TEST_POSTGRES_URL",
        DEFAULT_POSTGRES_URL,
    )
}

/// A schema of this test's own, dropped (with its stores) when the value is dropped.
pub struct Schema {
    url: String,
    name: String,
}

impl Schema {
    /// A new schema name in the database at `url` (the CLI creates the schema).
    pub fn fresh(url: &str) -> Schema {
        static N: AtomicUsize = AtomicUsize::new(0);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let n = N.fetch_add(1, Ordering::Relaxed);
        Schema {
            url: url.to_owned(),
            name: format!("annals_test_{secs}_{}{n:02}", std::process::id()),
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let url = self.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // On a thread of its own: a test may be inside a runtime, or panicking.
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
            Ok(Err(e)) => say(&format!("dropping the test schema {}: {e}", self.name)),
            Err(_) => say(&format!(
                "dropping the test schema {}: the thread panicked",
                self.name
            )),
        }
    }
}
