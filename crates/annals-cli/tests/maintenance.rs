//! The maintenance verbs of the `annals` binary as a process, on data directories opened
//! directly (`--data`): export → import round trip, resume from a byte offset and from
//! a cursor, secrets, copy with checksums, incremental import.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use support::ok as run;

use assert_cmd::Command;

fn annals(_data: &Path, store: &str) -> Command {
    let mut c = Command::cargo_bin("annals").unwrap();
    c.args(["--store", store]);
    c
}

/// Writes `n` events into the store `name` of `data` through the library (faster than
/// one CLI process per append).
fn seed(data: &Path, name: &str, n: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};
        let store = annals_embedded::EmbeddedStore::open(data.join(name)).unwrap();
        for i in 0..n {
            store
                .append_to_stream(
                    &StreamId::new(format!("acc-{}", i % 5)).with_aggregate("account"),
                    ExpectedVersion::Any,
                    vec![
                        ProposedEvent::new(
                            "Deposited",
                            Json::from_raw(format!("{{\"amount\": {i}}}")),
                        ),
                        ProposedEvent::new("Noted", Json::from_raw("\"line\\nbreak\"")),
                    ],
                )
                .await
                .unwrap();
        }
        store.set_secret("user-1", "k1").await.unwrap();
        store.set_secret("user-2", "k2").await.unwrap();
        store.delete_secret("user-1").await.unwrap();
        store.close().await.unwrap();
    });
}

fn data_arg(data: &Path) -> [String; 2] {
    ["--data".into(), data.display().to_string()]
}

#[test]
fn export_import_round_trip_and_copy_with_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 50);
    let file = data.join("events.ndjson");
    let (_, err) = run(annals(data, "src")
        .arg("export")
        .args(data_arg(data))
        .args(["--output", file.to_str().unwrap()]));
    assert!(err.contains("exported 100 event(s)"), "{err}");
    assert!(err.contains("reached the end"), "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 100);

    let (out, _) = run(annals(data, "dst")
        .args(["import", file.to_str().unwrap()])
        .args(data_arg(data))
        .args(["--maintenance-mode", "auto"]));
    assert!(out.contains("imported 100 event(s), skipped 0"), "{out}");
    assert!(
        out.contains(&format!("byte offset {}", text.len())),
        "{out}"
    );

    // The re-export is byte-identical.
    let (again, _) = run(annals(data, "dst").arg("export").args(data_arg(data)));
    assert_eq!(again, text);

    // Secrets round trip.
    let secrets = data.join("secrets.ndjson");
    run(annals(data, "src")
        .args(["secrets", "export", "--output", secrets.to_str().unwrap()])
        .args(data_arg(data)));
    let stext = std::fs::read_to_string(&secrets).unwrap();
    assert_eq!(
        stext,
        "{\"idx\":0,\"id\":\"user-1\",\"secret\":null}\n{\"idx\":1,\"id\":\"user-2\",\"secret\":\"k2\"}\n"
    );
    let (out, _) = run(annals(data, "dst")
        .args(["secrets", "import", secrets.to_str().unwrap()])
        .args(data_arg(data)));
    assert!(out.contains("imported 2 secret(s)"), "{out}");

    // Copy to a third store and check the printed checksums.
    let location = data.display().to_string();
    let (out, _) = run(annals(data, "x").args([
        "copy",
        "--from",
        &format!("{location}#src"),
        "--to",
        &format!("{location}#copy"),
        "--maintenance-mode",
        "auto",
    ]));
    assert!(out.contains("copied 100 event(s)"), "{out}");
    assert!(out.contains("verified: yes"), "{out}");
    let sums: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("source:") || l.starts_with("target:"))
        .map(|l| l.split_once(": ").unwrap().1)
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0], sums[1]);
    assert!(sums[0].starts_with("100 events sha256:"));
    // The store made by export/import has the same checksum as the copy.
    let (out, _) = run(annals(data, "x").args([
        "copy",
        "--from",
        &format!("{location}#dst"),
        "--to",
        &format!("{location}#copy2"),
    ]));
    assert!(out.contains(&format!("source: {}", sums[0])), "{out}");

    // Copying into a non-empty store is refused.
    let out = annals(data, "x")
        .args([
            "copy",
            "--from",
            &format!("{location}#src"),
            "--to",
            &format!("{location}#copy"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn import_resumes_from_the_offset_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 20);
    let (full, _) = run(annals(data, "src").arg("export").args(data_arg(data)));
    // A truncated copy of the file, cut inside line 13.
    let lines: Vec<&str> = full.split_inclusive('\n').collect();
    let head: usize = lines[..12].iter().map(|l| l.len()).sum();
    let cut = head + lines[12].len() / 2;
    let file = data.join("partial.ndjson");
    std::fs::write(&file, &full.as_bytes()[..cut]).unwrap();
    let (out, _) = run(annals(data, "dst")
        .args(["import", file.to_str().unwrap(), "--batch-size", "5"])
        .args(data_arg(data)));
    assert!(out.contains("imported 12 event(s)"), "{out}");
    assert!(
        out.contains(&format!("resume with --from-offset {head}")),
        "{out}"
    );
    // The file completes; the import resumes at the printed offset.
    std::fs::write(&file, full.as_bytes()).unwrap();
    let (out, _) = run(annals(data, "dst")
        .args([
            "import",
            file.to_str().unwrap(),
            "--from-offset",
            &head.to_string(),
        ])
        .args(data_arg(data)));
    assert!(out.contains("imported 28 event(s)"), "{out}");
    let (again, _) = run(annals(data, "dst").arg("export").args(data_arg(data)));
    assert_eq!(again, full);

    // A bad line stops the import with its line and offset, and says where to resume.
    let bad = data.join("bad.ndjson");
    std::fs::write(&bad, [lines[0], "\u{1}\u{2}garbage\n", lines[1]].concat()).unwrap();
    let out = annals(data, "bad")
        .args(["import", bad.to_str().unwrap()])
        .args(data_arg(data))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line 2 (byte offset {})", lines[0].len())),
        "{err}"
    );
    assert!(
        err.contains(&format!("resume with --from-offset {}", lines[0].len())),
        "{err}"
    );
}

#[test]
fn export_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 10);
    let (full, _) = run(annals(data, "src").arg("export").args(data_arg(data)));
    let file = data.join("part.ndjson");
    let (_, err) = run(annals(data, "src")
        .args(["export", "--limit", "7", "--output", file.to_str().unwrap()])
        .args(data_arg(data)));
    let cursor = err
        .split("resume with --cursor ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    run(annals(data, "src")
        .args([
            "export",
            "--cursor",
            &cursor,
            "--append",
            "--output",
            file.to_str().unwrap(),
        ])
        .args(data_arg(data)));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), full);
}

#[test]
fn incremental_import_appends_after_the_newest_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let file = data.join("new.ndjson");
    std::fs::write(
        &file,
        concat!(
            r#"{"aggregateId":"a","type":"T","timestamp":"2030-01-01T00:00:02.000Z","payload":{"n":2}}"#,
            "\n",
            r#"{"aggregateId":"a","type":"T","timestamp":"2030-01-01T00:00:01.000Z","payload":{"n":1}}"#,
            "\n"
        ),
    )
    .unwrap();
    let (out, _) = run(annals(data, "inc")
        .args(["import", "--incremental", file.to_str().unwrap()])
        .args(data_arg(data)));
    assert!(out.contains("imported 2 event(s) incrementally"), "{out}");
    let (out, _) = run(annals(data, "inc")
        .args(["import", "--incremental", file.to_str().unwrap()])
        .args(data_arg(data)));
    assert!(
        out.contains("imported 0 event(s) incrementally, skipped 2"),
        "{out}"
    );
    let (events, _) = run(annals(data, "inc").arg("export").args(data_arg(data)));
    let first: serde_json::Value = serde_json::from_str(events.lines().next().unwrap()).unwrap();
    assert_eq!(first["payload"]["n"], 1);
    assert_eq!(first["version"], 1);
}

#[test]
fn copy_embedded_to_postgres_when_available() {
    let Some(url) = annals_testkit::services::POSTGRES.available() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 30);
    let name = format!(
        "cli-copy-{}-{}",
        std::process::id(),
        annals_core::Timestamp::now().as_millis()
    );
    let (out, _) = run(annals(data, "x").args([
        "copy",
        "--from",
        &format!("{}#src", data.display()),
        "--to",
        &format!("{url}#{name}"),
    ]));
    assert!(out.contains("copied 60 event(s)"), "{out}");
    assert!(out.contains("verified: yes"), "{out}");
}

#[test]
fn import_errors_are_one_line_naming_line_offset_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seed(data, "src", 1);
    let (full, _) = run(annals(data, "src").arg("export").args(data_arg(data)));
    let first = full.lines().next().unwrap();
    let fails = |c: &mut Command| -> String {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{c:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
        err
    };

    // A field of the wrong type, named although the decoder only gives its column.
    let mut bad: serde_json::Value = serde_json::from_str(full.lines().nth(1).unwrap()).unwrap();
    bad["version"] = "two".into();
    let file = data.join("bad.ndjson");
    std::fs::write(&file, format!("{first}\n{bad}\n")).unwrap();
    let offset = first.len() + 1;
    let err = fails(
        annals(data, "dst")
            .arg("import")
            .arg(&file)
            .args(data_arg(data)),
    );
    assert!(
        err.contains(&format!(
            "line 2 (byte offset {offset}).version: invalid type: string \"two\", expected u64; \
             1 event(s) imported before it; resume with --from-offset {offset}"
        )),
        "{err}"
    );

    // An incremental import names the line and the field as the line spells it.
    let inc = data.join("inc.ndjson");
    std::fs::write(
        &inc,
        "{\"aggregateId\":\"a\",\"type\":\"T\"}\n{\"aggregateId\":\"a\",\"type\":[1]}\n",
    )
    .unwrap();
    let err = fails(
        annals(data, "inc")
            .args(["import", "--incremental"])
            .arg(&inc)
            .args(data_arg(data)),
    );
    assert!(
        err.contains("line 2 (byte offset 31).type: must be a string, not an array"),
        "{err}"
    );
    std::fs::write(&inc, "{\"aggregateId\":\"\",\"type\":\"T\"}\n").unwrap();
    let err = fails(
        annals(data, "inc")
            .args(["import", "--incremental"])
            .arg(&inc)
            .args(data_arg(data)),
    );
    assert!(err.contains("line 1 (byte offset 0).aggregateId"), "{err}");
}
