//! `annals serve --postgres URL` as a process: stores live in PostgreSQL, the verbs work
//! the same, and a restarted server still has them. The database is
//! `ANNALS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`), in a
//! schema of the test's own, dropped when it ends. Without a reachable database the
//! test fails under `CI=true` and is skipped (loudly) elsewhere.

// Test code panics on failure by design: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use support::stdout;

use annals_testkit::services::POSTGRES;
use assert_cmd::Command;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `annals serve --postgres`; `Err(stderr)` when it exits instead of serving.
fn serve(database: &str, schema: &str) -> Result<(Server, String), String> {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("annals"))
        .args(["serve", "--listen", "127.0.0.1:0", "--postgres", database])
        .args(["--postgres-schema", schema])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    if line.is_empty() {
        let mut why = String::new();
        let _ = stderr.read_to_string(&mut why);
        let _ = child.wait();
        return Err(why.trim().to_owned());
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    assert!(line.contains("PostgreSQL"), "{line}");
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    Ok((Server(child), url))
}

fn annals(url: &str, store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.args(["--url", url, "--store", store]);
    c
}

#[test]
fn serve_on_postgres_keeps_stores_across_restarts() {
    let Some(database) = POSTGRES.available() else {
        return;
    };
    // Declared before the servers, so dropped after them: no connection holds it then.
    let schema = support::Schema::fresh(&database);
    let (server, url) = serve(&database, schema.name())
        .unwrap_or_else(|why| panic!("`annals serve --postgres {database}` did not start: {why}"));

    stdout(annals(&url, "orders").arg("create"));
    let out = annals(&url, "orders").arg("create").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "creating twice is a conflict");
    stdout(annals(&url, "orders").args([
        "append",
        r#"[{"aggregateId": "o-1", "type": "Placed", "payload": {"n": 1}},
            {"aggregateId": "o-1", "type": "Paid", "payload": {"n": 2}}]"#,
    ]));
    let out = annals(&url, "missing").arg("describe").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown store is not found");
    drop(server);

    // A new server on the same schema still has the store and its events.
    let (server, url) = serve(&database, schema.name()).expect("the server restarts");
    let read = stdout(annals(&url, "orders").args(["read", "--json"]));
    let events: Vec<serde_json::Value> = read
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{read}");
    assert_eq!(events[0]["type"], "Placed");
    assert_eq!(events[1]["position"], 2);
    assert_eq!(events[1]["payload"]["n"], 2);

    // Dropping the store removes it; the default store was created by `serve`.
    let dropped = delete_store(&url, "orders");
    assert!(dropped.contains("204"), "{dropped}");
    let out = annals(&url, "orders").arg("describe").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    stdout(annals(&url, "default").arg("describe"));
    drop(server);
}

/// `DELETE /v1/stores/{store}` over a plain socket (the CLI has no verb for it); the
/// status line.
fn delete_store(url: &str, store: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "DELETE /v1/stores/{store} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    status
}
