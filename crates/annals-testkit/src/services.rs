//! The one rule for tests that need a service from outside the process (PostgreSQL,
//! NATS, Redis, RabbitMQ):
//!
//! - the service's URL is its environment variable, else the local default (the
//!   services `.ci/run` starts on `127.0.0.1`);
//! - a TCP connection to the URL's host and port decides whether the service is there
//!   (enough to decide, and it keeps this crate free of database and broker drivers);
//! - when it is not, the test fails under `CI=true`, where nothing may be skipped, and
//!   elsewhere is skipped with a message on the terminal saying which service, at which
//!   address, why, and how to run it. libtest captures `println!` and `eprintln!`, so
//!   the message is written to stderr directly.
//!
//! What is specific to a backend (its schemas, a store per test, clean-up) stays in its
//! own tests, which ask [`Service::available`] whether to run:
//!
//! ```no_run
//! use annals_testkit::services::POSTGRES;
//!
//! #[test]
//! fn appends_on_postgres() {
//!     let Some(url) = POSTGRES.available() else {
//!         return; // skipped, and said so on the terminal
//!     };
//!     // ... connect to `url`, run the test ...
//! }
//! # fn main() {}
//! ```

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

/// How long a probe waits for each address of a service to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A service some tests need: its name, the environment variable that gives its URL,
/// and the URL used when that variable is unset.
///
/// ```
/// use annals_testkit::services::Service;
///
/// let search = Service::new("Search", "ANNALS_TEST_SEARCH_URL", "http://127.0.0.1:9200");
/// assert_eq!(search.name(), "Search");
/// assert_eq!(search.env(), "ANNALS_TEST_SEARCH_URL");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    name: &'static str,
    env: &'static str,
    default_url: &'static str,
}

/// PostgreSQL: `ANNALS_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.
///
/// ```
/// let url = annals_testkit::services::POSTGRES.url();
/// assert!(std::env::var("ANNALS_TEST_POSTGRES_URL").is_ok()
///     || url == "postgres://postgres@127.0.0.1:5432/test");
/// ```
pub const POSTGRES: Service = Service::new(
    "PostgreSQL",
    "ANNALS_TEST_POSTGRES_URL",
    "postgres://postgres@127.0.0.1:5432/test",
);

/// NATS (with JetStream): `ANNALS_TEST_NATS_URL`, else `nats://127.0.0.1:4222`.
///
/// ```
/// assert_eq!(annals_testkit::services::NATS.env(), "ANNALS_TEST_NATS_URL");
/// ```
pub const NATS: Service = Service::new("NATS", "ANNALS_TEST_NATS_URL", "nats://127.0.0.1:4222");

/// Redis: `ANNALS_TEST_REDIS_URL`, else `redis://127.0.0.1:6379`.
///
/// ```
/// assert_eq!(annals_testkit::services::REDIS.env(), "ANNALS_TEST_REDIS_URL");
/// ```
pub const REDIS: Service = Service::new("Redis", "ANNALS_TEST_REDIS_URL", "redis://127.0.0.1:6379");

/// RabbitMQ: `ANNALS_TEST_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
///
/// ```
/// assert_eq!(annals_testkit::services::RABBITMQ.env(), "ANNALS_TEST_AMQP_URL");
/// ```
pub const RABBITMQ: Service = Service::new(
    "RabbitMQ",
    "ANNALS_TEST_AMQP_URL",
    "amqp://guest:guest@127.0.0.1:5672/%2f",
);

impl Service {
    /// A service called `name` whose URL is `env`, else `default_url`. The port of
    /// `default_url` is also the port probed when a URL names none.
    ///
    /// ```
    /// const SEARCH: annals_testkit::services::Service = annals_testkit::services::Service::new(
    ///     "Search", "ANNALS_TEST_SEARCH_URL", "http://127.0.0.1:9200");
    /// # assert_eq!(SEARCH.name(), "Search");
    /// ```
    pub const fn new(name: &'static str, env: &'static str, default_url: &'static str) -> Self {
        Service {
            name,
            env,
            default_url,
        }
    }

    /// The service's name, for messages.
    ///
    /// ```
    /// assert_eq!(annals_testkit::services::REDIS.name(), "Redis");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The environment variable that gives the service's URL (to pass it on to a child
    /// process, say).
    ///
    /// ```
    /// assert_eq!(annals_testkit::services::POSTGRES.env(), "ANNALS_TEST_POSTGRES_URL");
    /// ```
    pub fn env(&self) -> &'static str {
        self.env
    }

    /// The URL the tests use: the environment variable, else the default.
    ///
    /// ```
    /// let url = annals_testkit::services::NATS.url();
    /// assert!(std::env::var("ANNALS_TEST_NATS_URL").is_ok() || url == "nats://127.0.0.1:4222");
    /// ```
    pub fn url(&self) -> String {
        std::env::var(self.env).unwrap_or_else(|_| self.default_url.to_owned())
    }

    /// Whether the host and port of `url` accept a TCP connection (each address the host
    /// resolves to is tried, for up to 3 s each). A URL without a port is probed on the
    /// port of the default URL.
    ///
    /// ```
    /// use annals_testkit::services::REDIS;
    ///
    /// // A port that is certainly closed: bound, then released.
    /// let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// assert!(REDIS.probe(&format!("redis://127.0.0.1:{port}")).is_err());
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let open = listener.local_addr().unwrap().port();
    /// assert!(REDIS.probe(&format!("redis://user:secret@127.0.0.1:{open}/0")).is_ok());
    /// ```
    pub fn probe(&self, url: &str) -> io::Result<()> {
        let (host, port) = host_and_port(url);
        let port = port
            .or_else(|| host_and_port(self.default_url).1)
            .ok_or_else(|| invalid(format!("no port in {url}")))?;
        if host.is_empty() {
            return Err(invalid(format!("no host in {url}")));
        }
        let mut last = invalid(format!("{host} resolves to no address"));
        let addresses = (host, port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("{host}: {e}")))?;
        for address in addresses {
            match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) => last = io::Error::new(e.kind(), format!("{address}: {e}")),
            }
        }
        Err(last)
    }

    /// The rule, for the service's [`url`](Service::url): that URL when the service
    /// answers. When it does not, panics under `CI=true`; elsewhere says on the terminal
    /// that the test is skipped, why and how to run it, and returns `None` — the caller
    /// then returns.
    ///
    /// ```
    /// use annals_testkit::services::Service;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("search://{}", listener.local_addr().unwrap());
    /// std::env::set_var("ANNALS_TEST_SEARCH_URL", &url);
    /// let search = Service::new("Search", "ANNALS_TEST_SEARCH_URL", "search://127.0.0.1:9200");
    /// assert_eq!(search.available(), Some(url));
    /// ```
    #[track_caller]
    pub fn available(&self) -> Option<String> {
        self.available_at(&self.url())
    }

    /// The rule for a URL the caller found elsewhere (a benchmark's own variable, say);
    /// see [`available`](Service::available). Each URL is probed once per process.
    ///
    /// ```
    /// use annals_testkit::services::NATS;
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let url = format!("nats://{}", listener.local_addr().unwrap());
    /// assert_eq!(NATS.available_at(&url), Some(url.clone()));
    /// ```
    #[track_caller]
    pub fn available_at(&self, url: &str) -> Option<String> {
        static PROBED: Mutex<BTreeMap<String, Result<(), String>>> = Mutex::new(BTreeMap::new());
        let outcome = {
            let mut probed = PROBED.lock().unwrap_or_else(|e| e.into_inner());
            probed
                .entry(url.to_owned())
                .or_insert_with(|| self.probe(url).map_err(|e| e.to_string()))
                .clone()
        };
        match outcome {
            Ok(()) => Some(url.to_owned()),
            Err(why) => {
                skip(
                    &format!("{} at {url} is not reachable ({why})", self.name),
                    &format!(
                        "start {} (.ci/run does), or set {} to where it runs",
                        self.name, self.env
                    ),
                );
                None
            }
        }
    }
}

/// Whether the tests run under `CI=true`, where nothing may be skipped.
///
/// ```
/// let ci = annals_testkit::services::in_ci();
/// assert_eq!(ci, std::env::var("CI").as_deref() == Ok("true"));
/// ```
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Writes `message` and a line break to stderr directly, so it reaches the terminal
/// even while libtest captures the test's output.
///
/// ```
/// annals_testkit::services::say("annals tests: using the local server");
/// ```
pub fn say(message: &str) {
    let _ = writeln!(io::stderr(), "{message}");
}

/// Skips the calling test for a reason other than a service (no `/proc`, say): under
/// `CI=true` panics with `why` and `how`; elsewhere says on the terminal that the test
/// is skipped, `why`, and `how` to run it. The caller returns after it.
///
/// ```
/// use annals_testkit::services::skip;
///
/// if !std::path::Path::new("/").exists() {
///     skip("no root directory", "run it on a machine with a file system");
/// }
/// ```
#[track_caller]
pub fn skip(why: &str, how: &str) {
    if in_ci() {
        panic!("{why}; under CI=true this test must run (to run it: {how})");
    }
    say(&format!(
        "\n*** SKIPPED: {why}.\n*** To run it: {how}. Under CI=true it fails instead.\n"
    ));
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The host and port of `scheme://user@host:port/path?query` (brackets kept off an IPv6
/// host; the first host of a list).
fn host_and_port(url: &str) -> (&str, Option<u16>) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    let first = hosts.split(',').next().unwrap_or_default();
    let (host, port) = match first.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => (bracketed, None),
        },
        None => match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        },
    };
    (host, port.and_then(|p| p.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_reads_every_url_shape_the_tests_use() {
        assert_eq!(
            host_and_port("postgres://postgres@127.0.0.1:5432/test"),
            ("127.0.0.1", Some(5432))
        );
        assert_eq!(
            host_and_port("amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("127.0.0.1", Some(5672))
        );
        assert_eq!(
            host_and_port("nats://localhost:4222"),
            ("localhost", Some(4222))
        );
        assert_eq!(host_and_port("redis://127.0.0.1"), ("127.0.0.1", None));
        assert_eq!(
            host_and_port("postgres://u:p@[::1]:5433/db?sslmode=disable"),
            ("::1", Some(5433))
        );
        assert_eq!(host_and_port("postgres://[::1]/db"), ("::1", None));
        assert_eq!(
            host_and_port("postgres://u@db1:5432,db2:5432/x"),
            ("db1", Some(5432))
        );
        assert_eq!(host_and_port("127.0.0.1:4222"), ("127.0.0.1", Some(4222)));
    }

    #[test]
    fn a_url_without_a_port_is_probed_on_the_default_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let default = format!("x://127.0.0.1:{port}");
        let service = Service::new("X", "ANNALS_TEST_X_URL", default.leak());
        service.probe("x://user@127.0.0.1/db").unwrap();
    }

    #[test]
    fn an_unreachable_service_is_named_with_its_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = NATS
            .probe(&format!("nats://127.0.0.1:{port}"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("127.0.0.1:{port}: ")), "{err}");
        assert!(POSTGRES.probe("postgres:///test").is_err());
    }
}
