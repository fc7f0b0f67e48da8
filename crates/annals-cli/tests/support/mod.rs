//! What the CLI tests share:
//!
//! - [`ok`] / [`stdout`]: run the binary, fail the test on a non-zero exit.
//! - [`serve`]: `annals serve` as a child process, with the URL it printed.
//! - [`server_url`]: one real server per test binary, on its own thread and runtime.
//! - [`signal`]: a Unix signal to a child; [`drain_jetstream`]: what a test published
//!   to NATS, read back and deleted.
//! - [`Schema`]: a PostgreSQL schema of a test's own, named
//!   `annals_test_<unix seconds>_<pid><n>` (the pattern whose stale schemas the
//!   annals-postgres tests drop after an hour) and dropped when the test ends. Whether
//!   the server is there at all is decided by `annals_testkit::services::POSTGRES`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use annals_testkit::services::say;
use sqlx::Connection;

/// Runs `c`; fails the test (with its standard error) unless it exits 0. Returns its
/// standard output and standard error.
pub fn ok(c: &mut assert_cmd::Command) -> (String, String) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// [`ok`], standard output only.
pub fn stdout(c: &mut assert_cmd::Command) -> String {
    ok(c).0
}

/// Starts `annals serve --listen 127.0.0.1:0 <args>` as a child process and returns it
/// with the URL it printed on its first line.
pub fn serve<I, S>(args: I) -> (Child, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://"), "serve printed {line:?}");
    (child, url)
}

/// Sends `SIG<name>` to the process `pid` (through kill(1): the workspace forbids
/// unsafe code, and so a direct libc call).
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Every message the JetStream stream of `subject` holds (its channel's default
/// configuration), in order; the stream is deleted afterwards.
pub fn drain_jetstream(url: &str, subject: &str) -> Vec<annals_channels::Message> {
    use annals_channels::nats::{NatsChannel, NatsConfig};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = NatsConfig::new(subject);
        let channel = NatsChannel::connect(url, config.clone()).await.unwrap();
        let stream = channel.context().get_stream(&config.stream).await.unwrap();
        let mut messages = Vec::new();
        let mut seq = 1;
        while let Ok(m) = stream.get_raw_message(seq).await {
            messages.push(annals_channels::Message::from_json(&m.payload).unwrap());
            seq += 1;
        }
        channel
            .context()
            .delete_stream(&config.stream)
            .await
            .unwrap();
        messages
    })
}

/// The URL of a server (embedded stores under the test target directory) shared by
/// every test of this binary, started on first use on its own thread and runtime.
pub fn server_url() -> &'static str {
    static SERVER: OnceLock<annals_server::RunningServer> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let binary = exe.file_stem().unwrap().to_string_lossy().into_owned();
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("annals-cli-{binary}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            annals_server::Server::spawn(
                annals_server::ServerConfig::new(dir).listen(SocketAddr::from(([127, 0, 0, 1], 0))),
            )
            .unwrap()
        })
        .url()
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
