//! A subscriber that stops reading while many events are appended: the server (`annals
//! serve`, a child process) must not buffer them for it, and past
//! `--max-subscriber-lag` it closes the stream with `event: lagged`.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use annals_client::HttpStore;
use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};

/// Events appended while the subscriber does not read.
const EVENTS: u64 = 60_000;
/// Events per append.
const BATCH: u64 = 500;
/// Bytes of each event's payload: `EVENTS * PAYLOAD` (about 120 MB) is far more than
/// socket buffers hold, so a server buffering for the subscriber would show in its RSS.
const PAYLOAD: usize = 2_000;
/// The server's `--max-subscriber-lag`.
const MAX_LAG: u64 = 5_000;
/// How much more the server's resident memory may grow with a stalled subscriber than
/// without one, while the same events are appended. (The store's own memtables and
/// caches grow with the appends either way, which is why a control server is measured.)
/// A server that queued the events for the subscriber would grow by at least the
/// ~125 MB of their SSE text more.
const EXTRA_RSS_BOUND_KB: u64 = 48 * 1024;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/<pid>/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn batch(first: u64) -> Vec<ProposedEvent> {
    (first..first + BATCH)
        .map(|n| {
            let payload = format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(PAYLOAD));
            ProposedEvent::new("Padded", Json::from_raw(payload))
        })
        .collect()
}

/// A child `annals serve` on a fresh data directory: (process, its URL).
fn start(dir: &std::path::Path) -> (Server, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .args(["serve", "--listen", "127.0.0.1:0", "--max-subscriber-lag"])
        .arg(MAX_LAG.to_string())
        .arg("--data")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    (server, url)
}

/// Appends the first batch (the warm-up), then calls `stall` (which may open a
/// subscriber), then appends [`EVENTS`] more; returns the server's RSS growth in kB
/// over the second part and what `stall` returned.
fn measure<T>(server: &Server, url: &str, stall: impl FnOnce() -> T) -> (u64, T) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = HttpStore::new(url, "default").unwrap();
    let stream = StreamId::new("padded");
    runtime.block_on(async {
        store
            .append_to_stream(&stream, ExpectedVersion::Any, batch(0))
            .await
            .unwrap();
    });
    let stalled = stall();
    let pid = server.0.id();
    let before = rss_kb(pid);
    runtime.block_on(async {
        let mut n = BATCH;
        while n < EVENTS + BATCH {
            store
                .append_to_stream(&stream, ExpectedVersion::Any, batch(n))
                .await
                .unwrap();
            n += BATCH;
        }
    });
    // Let the server do whatever it would do for a subscriber meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(pid);
    eprintln!("server VmRSS: {before} kB before, {after} kB after appending {EVENTS} events");
    (after.saturating_sub(before), stalled)
}

#[test]
fn a_stalled_subscriber_costs_no_memory_and_is_told_it_lagged() {
    if !std::path::Path::new("/proc/self/status").exists() {
        annals_testkit::services::skip(
            "no /proc to read the server's resident memory from",
            "run it on Linux",
        );
        return;
    }
    // The control: the same appends without a subscriber.
    let control_dir = tempfile::tempdir().unwrap();
    let (control, control_url) = start(control_dir.path());
    let (control_growth, ()) = measure(&control, &control_url, || ());
    drop(control);
    drop(control_dir);

    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start(dir.path());
    let addr = url.trim_start_matches("http://").to_owned();
    let (growth, mut sse) = measure(&server, &url, || {
        // The subscriber: reads the response head, then nothing.
        let mut sse = TcpStream::connect(&addr).unwrap();
        write!(
            sse,
            "GET /v1/stores/default/subscribe HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            sse.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        sse
    });
    eprintln!(
        "server RSS growth while {EVENTS} events of {PAYLOAD} bytes were appended: \
         {control_growth} kB without a subscriber, {growth} kB with a stalled one"
    );
    assert!(
        growth < control_growth + EXTRA_RSS_BOUND_KB,
        "the server grew by {growth} kB with a stalled subscriber, {control_growth} kB without"
    );

    // Now read: the buffered events, then `lagged`, then the end of the stream.
    sse.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let mut body = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match sse.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the stream: {e}"),
        }
        if body.windows(14).any(|w| w == b"event: lagged\n") && body.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no end of stream"
        );
    }
    let text = String::from_utf8_lossy(&body);
    let events = text.matches("event: event\n").count() as u64;
    let lagged = text
        .find("event: lagged\n")
        .unwrap_or_else(|| panic!("no `lagged` after {events} events"));
    let data = text[lagged..]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("lagged data");
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    eprintln!("received {events} events, then lagged: {data}");
    assert!(data["lag"].as_u64().unwrap() > MAX_LAG, "{data}");
    assert_eq!(data["maxSubscriberLag"].as_u64(), Some(MAX_LAG));
    assert!(
        events < EVENTS,
        "the whole backlog was sent ({events} events)"
    );
    assert_eq!(text.matches("event: lagged\n").count(), 1);
}
