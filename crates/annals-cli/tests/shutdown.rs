//! `annals serve` shut down with SIGTERM while eight writers append and a subscriber
//! follows live: the process exits 0 promptly, the subscription's stream ends, every
//! append the server acknowledged is stored (read back after a restart), and no writer
//! gets a server error — only a refusal (`store_closed`) or a closed connection.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_client::HttpStore;
use annals_core::{ErrorKind, EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};

const WRITERS: usize = 8;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child `annals serve` on `dir`: (process, its URL).
fn start(dir: &std::path::Path) -> (Server, String) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
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

/// Opens a live subscription on a raw socket and reads its response head.
fn subscribe(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut sse = TcpStream::connect(addr).unwrap();
    write!(
        sse,
        "GET /v1/stores/default/subscribe HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    sse.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the subscription is accepted");
    sse
}

/// Appends single events to its own stream until the server stops answering; returns
/// the versions acknowledged and how the last append failed.
async fn write_until_refused(
    store: Arc<HttpStore>,
    stream: StreamId,
) -> (u64, Option<annals_core::Error>) {
    let mut acknowledged = 0;
    loop {
        let event = ProposedEvent::new(
            "Ticked",
            Json::from_raw(format!("{{\"n\":{acknowledged}}}")),
        );
        match store
            .append_to_stream(&stream, ExpectedVersion::Exact(acknowledged), vec![event])
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(e) => return (acknowledged, Some(e)),
        }
    }
}

#[test]
fn sigterm_finishes_appends_in_flight_ends_subscriptions_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut sse = subscribe(&url);

    let store = Arc::new(HttpStore::new(&url, "default").unwrap());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            runtime.spawn(write_until_refused(
                Arc::clone(&store),
                StreamId::new(format!("writer-{w}")),
            ))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));

    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(15),
            "the server did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        exit.success(),
        "annals serve exited with {exit} after SIGTERM"
    );

    // The subscription's stream ended (EOF), it was not cut by a crash: the process
    // exited 0 above, and the stream had delivered events before.
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut seen = Vec::new();
    sse.read_to_end(&mut seen).unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("event: event"),
        "the subscriber received events live"
    );

    let mut acknowledged = Vec::new();
    for w in writers {
        let (count, error) = runtime.block_on(w).unwrap();
        let error = error.expect("every writer stops on an error");
        // A refusal at shutdown or a connection the server closed: never a server fault.
        assert!(
            matches!(error.kind(), ErrorKind::Closed | ErrorKind::Backend),
            "a writer ended with {error}"
        );
        assert!(
            !error.to_string().contains("500"),
            "a writer got a server error: {error}"
        );
        acknowledged.push(count);
    }
    assert!(
        acknowledged.iter().all(|&n| n > 0),
        "every writer appended before the shutdown: {acknowledged:?}"
    );

    // Every acknowledged append is stored, with nothing after a gap.
    let (_server, url) = start(dir.path());
    let store = HttpStore::new(&url, "default").unwrap();
    runtime.block_on(async {
        for (w, &count) in acknowledged.iter().enumerate() {
            let info = store
                .stream_info(&StreamId::new(format!("writer-{w}")))
                .await
                .unwrap()
                .expect("the writer's stream exists");
            // An append the server committed but could not answer before the
            // connection closed may be stored too: at most one per writer.
            assert!(
                info.version == count || info.version == count + 1,
                "writer-{w}: {count} acknowledged, version {} stored",
                info.version
            );
        }
    });
}
