//! The behaviour every backend must show, as functions over a store factory.

#![allow(dead_code)]

use std::sync::Arc;

use annals_core::{
    AppendRequest, ErrorKind, EventStore, ExpectedVersion, Json, NewStreamSnapshot, OnConflict,
    ProposedEvent, ReadAll, RecordedEvent, SecretImport, StreamId, StreamRead, Timestamp,
};
use annals_maintenance::{
    checksum, copy, export_events, export_secrets, import_events, import_secrets,
    incremental_import, CopyOptions, ExportOptions, ImportOptions, ImportProgress, IncomingEvent,
    IncrementalImport, InputLine, MaintenanceMode, RefusedBatch, SecretsImportOptions,
};

/// Which backend a test runs on; each call of [`Backend::open`] gives a new empty store.
pub enum Backend {
    Memory,
    Embedded(tempfile::TempDir),
    Postgres(String),
    /// The HTTP client against the server at this URL (embedded stores behind it).
    Http(String),
}

impl Backend {
    pub fn embedded() -> Self {
        Backend::Embedded(tempfile::tempdir().unwrap())
    }

    /// The HTTP client against this test binary's server (started on first use, on a
    /// thread and runtime of its own: every test has a runtime of its own).
    pub fn http() -> Self {
        static SERVER: std::sync::OnceLock<annals_server::RunningServer> =
            std::sync::OnceLock::new();
        let server = SERVER.get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("annals-maintenance-http-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            annals_server::Server::spawn(
                annals_server::ServerConfig::new(dir)
                    .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            )
            .unwrap()
        });
        Backend::Http(server.url().to_owned())
    }

    pub async fn open(&self) -> Arc<dyn EventStore> {
        match self {
            Backend::Memory => Arc::new(annals_core::MemoryStore::new()),
            Backend::Embedded(dir) => {
                let path = dir.path().join(uuid_like());
                Arc::new(annals_embedded::EmbeddedStore::open(path).unwrap())
            }
            Backend::Postgres(url) => Arc::new(
                annals_postgres::PostgresStore::connect(url, &uuid_like())
                    .await
                    .unwrap(),
            ),
            Backend::Http(url) => {
                let store = annals_client::HttpStore::new(url, &uuid_like()).unwrap();
                store.create().await.unwrap();
                Arc::new(store)
            }
        }
    }
}

/// Every maintenance behaviour of this module, as one `#[tokio::test]` each, on the
/// backend `$backend` (an `Option<Backend>` expression evaluated in each test; `None`
/// skips it). One list for every backend, so none can miss a behaviour.
#[macro_export]
macro_rules! maintenance_suite {
    ($backend:expr) => {
        $crate::maintenance_suite!(@tests $backend;
            export_then_import_reproduces_the_store,
            export_resumes_from_its_cursor,
            import_resumes_from_the_reported_offset_after_each_batch,
            unterminated_last_line_is_left_for_the_next_run,
            hostile_lines_stop_the_import_at_their_line,
            conflicting_line_keeps_everything_before_it,
            a_refused_batch_keeps_the_lines_before_the_refused_one_or_nothing,
            a_line_with_invalid_fields_keeps_the_lines_before_it_in_both_modes,
            an_expected_head_is_carried_from_batch_to_batch,
            a_refused_secret_is_named_by_its_line,
            auto_mode_empties_freezes_and_unfreezes,
            auto_mode_unfreezes_after_a_failed_import,
            batches_keep_commits_whole,
            incremental_import_appends_new_events_in_timestamp_order,
            incremental_import_refuses_older_events_and_writes_nothing,
            incremental_rollback_writes_nothing,
            secrets_round_trip_with_idx_and_tombstones,
            secrets_export_spans_pages,
            copy_is_lossless_and_verified,
            copy_refuses_a_non_empty_target,
            copy_keeps_every_snapshot,
            copy_without_stream_snapshots_leaves_them_out,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend: Option<$crate::support::Backend> = $backend;
                if let Some(backend) = backend {
                    $crate::support::$name(&backend).await;
                }
            }
        )*
    };
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s{}-{}-{}",
        std::process::id(),
        Timestamp::now().as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store with several streams and commits, odd payloads (whitespace, line breaks,
/// unicode, escapes), dispatched marks, a stream snapshot, secrets and a tombstone.
pub async fn populate(store: &Arc<dyn EventStore>, commits: usize) {
    let payloads = [
        r#"{"amount":5}"#,
        " {\"a\" :\n [1, 2]}\r\n",
        r#""snow ☃ \" \\ \u0001""#,
        "null",
        "[\n]",
        r#"{"nested":{"deep":[{"x":1.50e3}]}}"#,
    ];
    for c in 0..commits {
        let stream = StreamId::new(format!("acc-{}", c % 7))
            .with_aggregate(if c % 2 == 0 { "account" } else { "" })
            .with_context(if c % 3 == 0 { "billing" } else { "" });
        let n = 1 + c % 3;
        let events = (0..n)
            .map(|i| {
                ProposedEvent::new(
                    format!("T{i}"),
                    Json::from_raw(payloads[(c + i) % payloads.len()]),
                )
                .with_metadata(Json::from_raw(format!(r#"{{"c":{c}}}"#)))
                .with_timestamp(Timestamp::from_millis(1_600_000_000_000 + (c as i64) * 10))
            })
            .collect();
        let mut request = AppendRequest::to_stream(stream, ExpectedVersion::Any, events);
        if c % 4 == 0 {
            request = request.with_commit_id(format!("commit-{c}"));
        }
        store.append(request).await.unwrap();
    }
    let page = store
        .read_all(ReadAll::forward().limit(1_000_000))
        .await
        .unwrap();
    for e in page.events.iter().step_by(5) {
        store.mark_dispatched(&e.id).await.unwrap();
    }
    store
        .save_stream_snapshot(NewStreamSnapshot::new(
            StreamId::new("acc-1"),
            1,
            Json::from_raw(r#"{"b":1}"#),
        ))
        .await
        .unwrap();
    store.set_secret("user-1", "k1").await.unwrap();
    store.set_secret("user-2", "k2").await.unwrap();
    store.delete_secret("user-1").await.unwrap();
}

pub async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(ReadAll::forward().limit(10_000_000))
        .await
        .unwrap()
        .events
}

pub async fn export_all(store: &Arc<dyn EventStore>) -> Vec<u8> {
    let mut out = Vec::new();
    let report = export_events(store, &mut out, ExportOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(report.end);
    out
}

/// Events-only checksum comparison (secrets are not part of an events export).
pub async fn same_events(a: &dyn EventStore, b: &dyn EventStore) {
    let (ca, cb) = (checksum(a).await.unwrap(), checksum(b).await.unwrap());
    assert_eq!(ca.events, cb.events);
    assert_eq!(ca.events_sha256, cb.events_sha256);
}

pub async fn export_then_import_reproduces_the_store(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 40).await;
    let file = export_all(&source).await;
    let target = backend.open().await;
    let mut batches = 0;
    let done = import_events(
        &target,
        &file[..],
        ImportOptions {
            batch_size: 7,
            ..ImportOptions::default()
        },
        |_| batches += 1,
    )
    .await
    .unwrap();
    assert!(batches > 1);
    assert_eq!(done.byte_offset, file.len() as u64);
    assert_eq!(done.unterminated, 0);
    assert_eq!(done.imported, all_events(&*source).await.len() as u64);
    assert_eq!(all_events(&*source).await, all_events(&*target).await);
    same_events(&*source, &*target).await;
    // Exporting the copy gives the same bytes.
    assert_eq!(export_all(&target).await, file);
}

pub async fn export_resumes_from_its_cursor(backend: &Backend) {
    let store = backend.open().await;
    populate(&store, 30).await;
    let whole = export_all(&store).await;
    let mut pieces = Vec::new();
    let mut options = ExportOptions {
        limit: Some(11),
        page_size: 4,
        ..ExportOptions::default()
    };
    loop {
        let report = export_events(&store, &mut pieces, options.clone(), |_| {})
            .await
            .unwrap();
        if report.end {
            break;
        }
        assert_eq!(report.lines, 11);
        options = options.from_cursor(report.cursor);
    }
    assert_eq!(pieces, whole);
    // Resuming from the position on the last kept line works the same.
    let lines: Vec<&[u8]> = whole.split_inclusive(|&b| b == b'\n').collect();
    let kept: serde_json::Value = serde_json::from_slice(lines[9]).unwrap();
    let mut rest = Vec::new();
    export_events(
        &store,
        &mut rest,
        ExportOptions {
            after: kept["position"].as_u64().unwrap(),
            ..ExportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(rest, lines[10..].concat());
}

/// Imports `file` in pieces: each run sees the bytes from the reported offset up to the
/// next cut, as a reader of a file that was being written (or a killed run) would.
pub async fn import_in_pieces(
    store: &Arc<dyn EventStore>,
    file: &[u8],
    cuts: &[usize],
    batch: usize,
) -> ImportProgress {
    let mut offset = 0usize;
    let mut line = 1;
    let mut total = ImportProgress::default();
    for &cut in cuts.iter().chain(std::iter::once(&file.len())) {
        if cut < offset {
            continue;
        }
        let done = import_events(
            store,
            &file[offset..cut],
            ImportOptions {
                from_offset: offset as u64,
                first_line: line,
                batch_size: batch,
                ..ImportOptions::default()
            },
            |_| {},
        )
        .await
        .unwrap();
        assert!(done.byte_offset as usize <= cut);
        assert_eq!(done.byte_offset as usize + done.unterminated as usize, cut);
        // Never half a line: the offset is at a line start.
        assert!(done.byte_offset == 0 || file[done.byte_offset as usize - 1] == b'\n');
        offset = done.byte_offset as usize;
        line = done.next_line;
        total.imported += done.imported;
        total.byte_offset = done.byte_offset;
    }
    total
}

pub async fn import_resumes_from_the_reported_offset_after_each_batch(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 25).await;
    let file = export_all(&source).await;
    // Every progress report is a resume point: resuming from each one gives the source.
    let probe = backend.open().await;
    let mut offsets = Vec::new();
    import_events(
        &probe,
        &file[..],
        ImportOptions {
            batch_size: 5,
            ..ImportOptions::default()
        },
        |p| offsets.push((p.byte_offset, p.imported)),
    )
    .await
    .unwrap();
    assert!(offsets.len() > 3);
    for &(offset, imported) in offsets.iter().step_by(2) {
        let target = backend.open().await;
        // The first run is "killed" right after the batch that reported `offset`.
        let first = import_events(
            &target,
            &file[..offset as usize],
            ImportOptions {
                batch_size: 5,
                ..ImportOptions::default()
            },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(first.imported, imported);
        let second = import_events(
            &target,
            &file[offset as usize..],
            ImportOptions {
                from_offset: offset,
                batch_size: 5,
                ..ImportOptions::default()
            },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            first.imported + second.imported,
            all_events(&*source).await.len() as u64
        );
        same_events(&*source, &*target).await;
    }
}

pub async fn unterminated_last_line_is_left_for_the_next_run(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 5).await;
    let file = export_all(&source).await;
    let cut = file.len() - 10;
    let target = backend.open().await;
    let done = import_in_pieces(&target, &file, &[cut], 3).await;
    assert_eq!(done.byte_offset, file.len() as u64);
    same_events(&*source, &*target).await;
}

fn good_line(n: u64) -> String {
    format!(
        r#"{{"position":{n},"id":"e{n}","aggregateId":"a","version":{n},"type":"T","timestamp":"2021-01-01T00:00:00.000Z","payload":{{"n":{n}}},"metadata":null,"commitId":"c{n}","commitSequence":0,"dispatched":false}}"#
    ) + "\n"
}

pub async fn hostile_lines_stop_the_import_at_their_line(backend: &Backend) {
    let deep = format!(
        r#"{{"id":"x","aggregateId":"a","version":4,"timestamp":0,"commitId":"c","payload":{}{}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let deep_inside_limit = format!(
        r#"{{"id":"x","aggregateId":"a","version":4,"timestamp":0,"commitId":"c","payload":{}{}}}"#,
        "[".repeat(129),
        "]".repeat(129)
    );
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("binary", vec![0x00, 0xff, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, b'\n']),
        ("invalid UTF-8", b"{\"id\":\"\xc3\x28\",\"aggregateId\":\"a\"}\n".to_vec()),
        ("deep JSON", format!("{deep}\n").into_bytes()),
        ("deep payload", format!("{deep_inside_limit}\n").into_bytes()),
        ("enormous line", [vec![b'{'; 5_000_000], vec![b'\n']].concat()),
        ("missing field", b"{\"id\":\"x\",\"aggregateId\":\"a\",\"timestamp\":0,\"commitId\":\"c\"}\n".to_vec()),
        ("not an object", b"[1,2,3]\n".to_vec()),
        ("empty aggregate id", b"{\"id\":\"x\",\"aggregateId\":\"\",\"version\":4,\"timestamp\":0,\"commitId\":\"c\"}\n".to_vec()),
    ];
    for (what, bad) in hostile {
        let store = backend.open().await;
        let head = [good_line(1), good_line(2), good_line(3)].concat();
        let file = [head.as_bytes(), &bad, good_line(5).as_bytes()].concat();
        let mut last = ImportProgress::default();
        let err = import_events(
            &store,
            &file[..],
            ImportOptions {
                max_line_bytes: 1_000_000,
                batch_size: 2,
                ..ImportOptions::default()
            },
            |p| last = *p,
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("line 4 (byte offset {})", head.len())),
            "{what}: {text}"
        );
        assert_eq!(last.byte_offset, head.len() as u64, "{what}");
        assert_eq!(last.next_line, 4, "{what}");
        let stored = all_events(&*store).await;
        assert_eq!(stored.len(), 3, "{what}: only the lines before the bad one");
        assert_eq!(stored[2].id, "e3");
    }
}

pub async fn conflicting_line_keeps_everything_before_it(backend: &Backend) {
    let store = backend.open().await;
    let file = [good_line(1), good_line(2), good_line(3)].concat();
    import_events(
        &store,
        &file.as_bytes()[..good_line(1).len() * 2 - 1],
        ImportOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    // Line 1 is stored (line 2 was cut short); importing all again: conflict at line 1.
    let mut last = ImportProgress::default();
    let err = import_events(&store, file.as_bytes(), ImportOptions::default(), |p| {
        last = *p
    })
    .await
    .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::VersionConflict | ErrorKind::DuplicateEventId
        ),
        "{err}"
    );
    assert_eq!((last.byte_offset, last.next_line), (0, 1));
    // With skip, line 1 is skipped and the rest stored.
    let done = import_events(
        &store,
        file.as_bytes(),
        ImportOptions {
            on_conflict: OnConflict::Skip,
            ..ImportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((done.imported, done.skipped), (2, 1));
    assert_eq!(all_events(&*store).await.len(), 3);
}

/// A line of event `id` in stream `stream` at `version`, in a commit of its own.
fn event_line(id: &str, stream: &str, version: u64) -> String {
    format!(
        r#"{{"id":"{id}","aggregateId":"{stream}","version":{version},"type":"T","timestamp":"2021-01-01T00:00:00.000Z","payload":{{}},"commitId":"c-{id}"}}"#
    ) + "\n"
}

/// The byte offset of line `n` (from 1) of `lines`.
fn start_of(lines: &[String], n: usize) -> u64 {
    lines[..n - 1].iter().map(|l| l.len() as u64).sum()
}

async fn ids(store: &dyn EventStore) -> Vec<String> {
    all_events(store)
        .await
        .iter()
        .map(|e| e.id.to_string())
        .collect()
}

pub async fn a_refused_batch_keeps_the_lines_before_the_refused_one_or_nothing(backend: &Backend) {
    // Line 5 reuses the id of line 1: the batch of lines 4 to 6 is refused.
    let lines = [
        event_line("e1", "s", 1),
        event_line("e2", "s", 2),
        event_line("e3", "s", 3),
        event_line("e4", "s", 4),
        event_line("e1", "u", 1),
        event_line("e6", "s", 6),
    ];
    let file = lines.concat();
    for (refused_batch, kept, resume) in [
        (RefusedBatch::KeepLinesBefore, 4, start_of(&lines, 5)),
        (RefusedBatch::StoreNothing, 3, start_of(&lines, 4)),
    ] {
        let store = backend.open().await;
        let options = ImportOptions {
            batch_size: 3,
            refused_batch,
            ..ImportOptions::default()
        };
        let mut last = ImportProgress::default();
        let err = import_events(&store, file.as_bytes(), options.clone(), |p| last = *p)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DuplicateEventId, "{err}");
        assert_eq!(
            err.line,
            Some(InputLine {
                number: 5,
                offset: start_of(&lines, 5)
            }),
            "{refused_batch:?}"
        );
        assert_eq!(
            (err.progress.byte_offset, err.progress.imported),
            (resume, kept),
            "{refused_batch:?}"
        );
        assert_eq!(
            last, err.progress,
            "the last progress report is where it stopped"
        );
        assert_eq!(all_events(&*store).await.len() as u64, kept);
        // The rest, from the offset, with the line fixed: nothing twice, nothing lost.
        let rest = file[resume as usize..].replacen(&lines[4], &event_line("e5", "s", 5), 1);
        let done = import_events(
            &store,
            rest.as_bytes(),
            ImportOptions {
                from_offset: resume,
                first_line: err.progress.next_line,
                ..options
            },
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(done.imported + kept, 6);
        assert_eq!(ids(&*store).await, ["e1", "e2", "e3", "e4", "e5", "e6"]);
    }
}

pub async fn a_line_with_invalid_fields_keeps_the_lines_before_it_in_both_modes(backend: &Backend) {
    let lines = [
        event_line("e1", "s", 1),
        event_line("e2", "s", 2),
        event_line("e3", "", 1),
        event_line("e4", "s", 4),
    ];
    let file = lines.concat();
    let bad = start_of(&lines, 3);
    for refused_batch in [RefusedBatch::KeepLinesBefore, RefusedBatch::StoreNothing] {
        for batch_size in [1, 10] {
            let store = backend.open().await;
            let options = ImportOptions {
                batch_size,
                refused_batch,
                ..ImportOptions::default()
            };
            let err = import_events(&store, file.as_bytes(), options, |_| {})
                .await
                .unwrap_err();
            let case = format!("{refused_batch:?}, batches of {batch_size}: {err:?}");
            assert!(
                matches!(&err.error, annals_core::Error::InvalidInput { field, .. } if field == "events[2].stream.id"),
                "counted from the first event: {case}"
            );
            assert_eq!(
                err.line,
                Some(InputLine {
                    number: 3,
                    offset: bad
                }),
                "{case}"
            );
            assert_eq!(
                (err.progress.byte_offset, err.progress.imported),
                (bad, 2),
                "{case}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("line 3 (byte offset {bad}).stream.id")),
                "{case}"
            );
            assert_eq!(ids(&*store).await, ["e1", "e2"], "{case}");
        }
    }
}

pub async fn an_expected_head_is_carried_from_batch_to_batch(backend: &Backend) {
    let store = backend.open().await;
    let file: String = (1..=5).map(good_line).collect();
    let done = import_events(
        &store,
        file.as_bytes(),
        ImportOptions {
            batch_size: 2,
            expected_head: Some(0),
            ..ImportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((done.imported, done.head_position), (5, 5));
    // A head that moved refuses the first batch: nothing is stored.
    let more: String = (6..=7).map(good_line).collect();
    let expecting = |head| ImportOptions {
        expected_head: Some(head),
        ..ImportOptions::default()
    };
    let err = import_events(&store, more.as_bytes(), expecting(4), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.error,
            annals_core::Error::WrongExpectedHead {
                expected: 4,
                actual: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.line,
        Some(InputLine {
            number: 1,
            offset: 0
        })
    );
    assert_eq!((err.progress.byte_offset, err.progress.imported), (0, 0));
    assert_eq!(all_events(&*store).await.len(), 5);
    // An input without events still checks the head, and reports it.
    let err = import_events(&store, &b"\n"[..], expecting(4), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongExpectedHead);
    assert_eq!(
        err.line,
        Some(InputLine {
            number: 2,
            offset: 1
        })
    );
    let done = import_events(&store, &b""[..], expecting(5), |_| {})
        .await
        .unwrap();
    assert_eq!(done.head_position, 5);
    let done = import_events(&store, &b""[..], ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(done.head_position, 5);
}

pub async fn a_refused_secret_is_named_by_its_line(backend: &Backend) {
    let file = concat!(
        "{\"idx\":5,\"id\":\"a\",\"secret\":\"1\"}\n",
        "{\"idx\":6,\"id\":\"b\",\"secret\":\"2\"}\n",
        "{\"idx\":7,\"id\":\"taken\",\"secret\":\"3\"}\n",
    );
    for (refused_batch, kept) in [
        (RefusedBatch::KeepLinesBefore, 2),
        (RefusedBatch::StoreNothing, 0),
    ] {
        let store = backend.open().await;
        store.set_secret("taken", "k").await.unwrap();
        let err = import_secrets(
            &store,
            file.as_bytes(),
            SecretsImportOptions {
                refused_batch,
                ..SecretsImportOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SecretAlreadyExists, "{err}");
        assert_eq!(err.line.map(|l| l.number), Some(3), "{refused_batch:?}");
        assert_eq!(err.progress.imported, kept, "{refused_batch:?}");
        assert_eq!(
            store.describe().await.unwrap().secret_count,
            1 + kept,
            "{refused_batch:?}"
        );
    }
}

pub async fn auto_mode_empties_freezes_and_unfreezes(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 10).await;
    let file = export_all(&source).await;
    let target = backend.open().await;
    populate(&target, 3).await;
    let mut frozen_during = false;
    let probe = Arc::clone(&target);
    let done = import_events(
        &target,
        &file[..],
        ImportOptions {
            maintenance: MaintenanceMode::Auto,
            batch_size: 4,
            ..ImportOptions::default()
        },
        |_| frozen_during = true,
    )
    .await
    .unwrap();
    assert!(frozen_during);
    assert!(done.imported > 0);
    assert!(!probe.describe().await.unwrap().frozen);
    same_events(&*source, &*target).await;
    // Export in auto mode freezes too, and refuses a store someone else froze.
    let mut out = Vec::new();
    export_events(
        &target,
        &mut out,
        ExportOptions {
            maintenance: MaintenanceMode::Auto,
            ..ExportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(out, file);
    assert!(!target.describe().await.unwrap().frozen);
    target.freeze().await.unwrap();
    let err = export_events(
        &target,
        &mut out,
        ExportOptions {
            maintenance: MaintenanceMode::Auto,
            ..ExportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyFrozen);
    // Manual mode works on a frozen store (imports are the maintenance path).
    let again = backend.open().await;
    again.freeze().await.unwrap();
    import_events(&again, &file[..], ImportOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(again.describe().await.unwrap().frozen);
}

pub async fn auto_mode_unfreezes_after_a_failed_import(backend: &Backend) {
    let store = backend.open().await;
    let file = [good_line(1), "garbage\n".to_owned(), good_line(3)].concat();
    let err = import_events(
        &store,
        file.as_bytes(),
        ImportOptions {
            maintenance: MaintenanceMode::Auto,
            ..ImportOptions::default()
        },
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("line 2"));
    assert!(!store.describe().await.unwrap().frozen);
    assert_eq!(all_events(&*store).await.len(), 1);
    // A cancelled auto import unfreezes too (the guard's drop).
    let slow = ClosedAfter {
        data: file.into_bytes(),
    };
    let fut = import_events(
        &store,
        slow,
        ImportOptions {
            maintenance: MaintenanceMode::Auto,
            ..ImportOptions::default()
        },
        |_| {},
    );
    let _ = tokio::time::timeout(std::time::Duration::from_millis(50), fut).await;
    for _ in 0..100 {
        if !store.describe().await.unwrap().frozen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!store.describe().await.unwrap().frozen);
}

/// An input that yields its data and then never ends (a stalled pipe).
pub struct ClosedAfter {
    data: Vec<u8>,
}

impl tokio::io::AsyncRead for ClosedAfter {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Pending
    }
}

impl tokio::io::AsyncBufRead for ClosedAfter {
    fn poll_fill_buf(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(Ok(&this.data[..]))
        }
    }

    fn consume(self: std::pin::Pin<&mut Self>, amt: usize) {
        self.get_mut().data.drain(..amt);
    }
}

pub async fn batches_keep_commits_whole(backend: &Backend) {
    let source = backend.open().await;
    for c in 0..10 {
        source
            .append(
                AppendRequest::to_stream(
                    StreamId::new(format!("s{c}")),
                    ExpectedVersion::Any,
                    (0..5)
                        .map(|_| ProposedEvent::new("T", Json::null()))
                        .collect(),
                )
                .with_commit_id(format!("c{c}")),
            )
            .await
            .unwrap();
    }
    let file = export_all(&source).await;
    let target = backend.open().await;
    let mut heads = Vec::new();
    import_events(
        &target,
        &file[..],
        ImportOptions {
            batch_size: 3,
            ..ImportOptions::default()
        },
        |p| heads.push(p.head_position),
    )
    .await
    .unwrap();
    // Each batch ends at a commit boundary: 5 events per commit.
    assert!(heads.iter().all(|h| h % 5 == 0), "{heads:?}");
    same_events(&*source, &*target).await;
}

fn incoming(stream: &str, ms: i64, payload: &str) -> IncomingEvent {
    IncomingEvent::new(
        StreamId::new(stream),
        "T",
        Json::from_raw(payload.to_owned()),
    )
    .with_timestamp(Timestamp::from_millis(ms))
}

pub async fn incremental_import_appends_new_events_in_timestamp_order(backend: &Backend) {
    let store = backend.open().await;
    store
        .append_to_stream(
            &StreamId::new("a"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new("T", Json::from_raw("1"))
                .with_timestamp(Timestamp::from_millis(100))],
        )
        .await
        .unwrap();
    let mut import = IncrementalImport::begin(&store);
    import
        .push(vec![incoming("a", 100, "1"), incoming("b", 300, "3")])
        .unwrap();
    import
        .push(vec![
            incoming("a", 200, "2"),
            incoming("b", 300, "4"),
            incoming("a", 150, "\"x\""),
        ])
        .unwrap();
    let outcome = import.commit().await.unwrap();
    assert_eq!((outcome.imported, outcome.skipped), (4, 1));
    let events = all_events(&*store).await;
    let seen: Vec<(String, u64, i64, String)> = events
        .iter()
        .map(|e| {
            (
                e.stream.id.clone(),
                e.version,
                e.timestamp.as_millis(),
                e.payload.to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a".into(), 1, 100, "1".into()),
            ("a".into(), 2, 150, "\"x\"".into()),
            ("a".into(), 3, 200, "2".into()),
            ("b".into(), 1, 300, "3".into()),
            ("b".into(), 2, 300, "4".into()),
        ]
    );
    // One commit for the whole import.
    assert_eq!(events[1].commit_id, events[4].commit_id);
    // Importing the same again changes nothing.
    let again = incremental_import(
        &store,
        vec![incoming("a", 200, "2"), incoming("b", 300, "4")],
    )
    .await
    .unwrap();
    assert_eq!((again.imported, again.skipped), (0, 2));
    assert_eq!(
        store
            .read_stream(&StreamId::new("b"), StreamRead::all())
            .await
            .unwrap()
            .len(),
        2
    );
}

pub async fn incremental_import_refuses_older_events_and_writes_nothing(backend: &Backend) {
    let store = backend.open().await;
    incremental_import(&store, vec![incoming("a", 500, "1")])
        .await
        .unwrap();
    let err = incremental_import(
        &store,
        vec![incoming("b", 600, "2"), incoming("c", 400, "3")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ImportConflict);
    assert!(
        matches!(err, annals_core::Error::ImportConflict { index: 1, .. }),
        "{err}"
    );
    assert_eq!(all_events(&*store).await.len(), 1);
}

pub async fn incremental_rollback_writes_nothing(backend: &Backend) {
    let store = backend.open().await;
    let mut import = IncrementalImport::begin(&store);
    import.push(vec![incoming("a", 1, "1")]).unwrap();
    assert_eq!(import.staged_count(), 1);
    import.rollback();
    assert!(all_events(&*store).await.is_empty());
}

/// A secrets export longer than one page of the store's listing (5,000) writes every
/// secret once, in idx order, and imports back to the same secrets.
pub async fn secrets_export_spans_pages(backend: &Backend) {
    let source = backend.open().await;
    let secrets: Vec<SecretImport> = (0..12_001u64)
        .map(|i| SecretImport {
            idx: Some(i),
            id: format!("s{i}"),
            secret: (i % 1_000 != 0).then(|| format!("key-{i}")),
        })
        .collect();
    source
        .import_secrets(secrets, OnConflict::Error)
        .await
        .unwrap();
    let mut file = Vec::new();
    let report = export_secrets(&source, &mut file, 0, MaintenanceMode::Manual)
        .await
        .unwrap();
    assert_eq!(
        (report.lines, report.tombstones, report.next_idx),
        (12_001, 13, 12_001)
    );
    let idx: Vec<u64> = String::from_utf8(file.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["idx"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(idx, (0..12_001).collect::<Vec<_>>());
    let target = backend.open().await;
    import_secrets(&target, &file[..], SecretsImportOptions::default())
        .await
        .unwrap();
    assert_eq!(
        checksum(&*source).await.unwrap(),
        checksum(&*target).await.unwrap()
    );
}

pub async fn secrets_round_trip_with_idx_and_tombstones(backend: &Backend) {
    let source = backend.open().await;
    for i in 0..12 {
        source
            .set_secret(&format!("u{i}"), &format!("k{i}"))
            .await
            .unwrap();
    }
    for i in [0, 5, 11] {
        source.delete_secret(&format!("u{i}")).await.unwrap();
    }
    let mut file = Vec::new();
    let report = export_secrets(&source, &mut file, 0, MaintenanceMode::Manual)
        .await
        .unwrap();
    assert_eq!(
        (report.lines, report.tombstones, report.next_idx),
        (12, 3, 12)
    );
    let target = backend.open().await;
    target.set_secret("old", "gone after auto").await.unwrap();
    let done = import_secrets(
        &target,
        &file[..],
        SecretsImportOptions {
            maintenance: MaintenanceMode::Auto,
            batch_size: 5,
            ..SecretsImportOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(done.imported, 12);
    assert!(!target.describe().await.unwrap().frozen);
    assert_eq!(
        checksum(&*source).await.unwrap(),
        checksum(&*target).await.unwrap()
    );
    assert_eq!(target.get_secret("u5").await.unwrap().unwrap().secret, None);
    assert_eq!(target.get_secret("u7").await.unwrap().unwrap().idx, 7);
    // Resume from an idx.
    let mut tail = Vec::new();
    let r = export_secrets(&source, &mut tail, 10, MaintenanceMode::Manual)
        .await
        .unwrap();
    assert_eq!(r.lines, 2);
    // A bad line stops at its line.
    let bad = b"{\"idx\":0,\"id\":\"z\",\"secret\":\"a\"}\n{\"idx\":\"x\"}\n";
    let err = import_secrets(
        &backend.open().await,
        &bad[..],
        SecretsImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("line 2 (byte offset 32)"), "{err}");
}

pub async fn copy_is_lossless_and_verified(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 30).await;
    source
        .save_snapshot("projection-1", "{\"state\":1}")
        .await
        .unwrap();
    let target = backend.open().await;
    let report = copy(
        &source,
        &target,
        CopyOptions {
            batch_size: 9,
            ..CopyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.verified());
    assert_eq!(report.events, all_events(&*source).await.len() as u64);
    assert_eq!(
        (
            report.secrets,
            report.keyed_snapshots,
            report.stream_snapshots
        ),
        (2, 1, 1)
    );
    assert_eq!(all_events(&*source).await, all_events(&*target).await);
    let (a, b) = (
        source.describe().await.unwrap(),
        target.describe().await.unwrap(),
    );
    assert_eq!(
        (a.event_count, a.stream_count, a.head_position),
        (b.event_count, b.stream_count, b.head_position)
    );
    assert_eq!(
        (a.secret_count, a.set_secret_count, a.deleted_secret_count),
        (b.secret_count, b.set_secret_count, b.deleted_secret_count)
    );
    let snap = target
        .latest_stream_snapshot(&StreamId::new("acc-1"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        snap,
        source
            .latest_stream_snapshot(&StreamId::new("acc-1"), None)
            .await
            .unwrap()
            .unwrap()
    );
    assert_eq!(
        target
            .load_snapshot("projection-1")
            .await
            .unwrap()
            .unwrap()
            .content,
        "{\"state\":1}"
    );
    // Across backends: memory -> this backend -> memory.
    let memory: Arc<dyn EventStore> = Arc::new(annals_core::MemoryStore::new());
    let back = copy(
        &target,
        &memory,
        CopyOptions {
            maintenance: MaintenanceMode::Auto,
            ..CopyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(back.verified());
    assert_eq!(back.source, report.source);
    assert!(!target.describe().await.unwrap().frozen);
}

pub async fn copy_refuses_a_non_empty_target(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 2).await;
    let target = backend.open().await;
    target.set_secret("x", "y").await.unwrap();
    let err = copy(&source, &target, CopyOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let with_snapshot = backend.open().await;
    with_snapshot.save_snapshot("k", "v").await.unwrap();
    let err = copy(&source, &with_snapshot, CopyOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "a target holding a keyed snapshot is not empty: {err}"
    );
    assert!(all_events(&*with_snapshot).await.is_empty());
}

fn stream_snapshot(
    stream: &StreamId,
    id: &str,
    version: u64,
    data: &str,
    ms: i64,
) -> NewStreamSnapshot {
    NewStreamSnapshot {
        id: Some(id.into()),
        timestamp: Some(Timestamp::from_millis(1_650_000_000_000 + ms)),
        schema_version: 3,
        ..NewStreamSnapshot::new(stream.clone(), version, Json::from_raw(data.to_owned()))
    }
}

async fn keyed_snapshots(store: &dyn EventStore) -> Vec<annals_core::KeyedSnapshot> {
    store
        .list_snapshots(annals_core::SnapshotKeyQuery::default())
        .await
        .unwrap()
}

/// Every stream's snapshots, stream by stream in listing order.
async fn stream_snapshots(store: &dyn EventStore) -> Vec<annals_core::StreamSnapshot> {
    let mut out = Vec::new();
    let streams = store
        .list_streams(annals_core::ListStreams::default())
        .await
        .unwrap()
        .streams;
    for info in streams {
        out.extend(store.list_stream_snapshots(&info.stream).await.unwrap());
    }
    out
}

/// A copy from the in-memory reference into `backend` carries every keyed snapshot
/// (more than one listing page, timestamps kept) and every snapshot of every stream
/// with events, in save order with ids and timestamps (two at one version, after a
/// prune), so both sides answer every snapshot query the same.
pub async fn copy_keeps_every_snapshot(backend: &Backend) {
    let source: Arc<dyn EventStore> = Arc::new(annals_core::MemoryStore::new());
    populate(&source, 21).await;
    source
        .save_snapshot("projection-1", "{\"state\":1}")
        .await
        .unwrap();
    let imported: Vec<annals_core::KeyedSnapshot> = (0..2_300)
        .map(|i| annals_core::KeyedSnapshot {
            key: format!("user-{i:05}"),
            content: format!("{{\"n\":{i}}}\n é"),
            timestamp: Timestamp::from_millis(1_500_000_000_000 + i),
        })
        .collect();
    source.import_snapshots(imported).await.unwrap();
    source
        .save_snapshot("user-00007", "saved after the import")
        .await
        .unwrap();
    let plain = StreamId::new("acc-1");
    let account = StreamId::new("acc-2").with_aggregate("account");
    let ghost = StreamId::new("no-events");
    for (id, version, data, ms) in [
        ("a1", 1, "1", 50),
        ("a3", 3, r#"{"v":3}"#, 10),
        ("a3-again", 3, r#"{ "v" : "3 again" }"#, 20),
        ("a2", 2, "2", 5),
    ] {
        source
            .save_stream_snapshot(stream_snapshot(&plain, id, version, data, ms))
            .await
            .unwrap();
    }
    for (id, version) in [("b1", 1), ("b4", 4), ("b2", 2)] {
        source
            .save_stream_snapshot(stream_snapshot(&account, id, version, "{}", 0))
            .await
            .unwrap();
    }
    source
        .save_stream_snapshot(stream_snapshot(&ghost, "g1", 1, "{}", 0))
        .await
        .unwrap();
    // populate saved one snapshot of `plain` first; keep the newest four of it.
    assert_eq!(source.prune_stream_snapshots(&plain, 4).await.unwrap(), 1);
    assert_eq!(source.prune_stream_snapshots(&account, 2).await.unwrap(), 1);

    let target = backend.open().await;
    let report = copy(&source, &target, CopyOptions::default())
        .await
        .unwrap();
    assert!(report.verified());
    assert_eq!(report.keyed_snapshots, 2_301, "every keyed snapshot");
    assert_eq!(
        report.stream_snapshots, 6,
        "every snapshot of the streams with events (not of a stream without events)"
    );
    assert_eq!(
        (
            report.source.keyed_snapshots,
            report.source.stream_snapshots
        ),
        (2_301, 6)
    );
    assert_eq!(report.source, report.target);
    assert_eq!(
        checksum(&*source).await.unwrap(),
        checksum(&*target).await.unwrap()
    );
    assert_eq!(
        keyed_snapshots(&*target).await,
        keyed_snapshots(&*source).await,
        "keyed snapshots with contents and timestamps"
    );
    assert_eq!(
        target.load_snapshot("user-00007").await.unwrap(),
        source.load_snapshot("user-00007").await.unwrap()
    );
    let copied = stream_snapshots(&*target).await;
    assert_eq!(copied, stream_snapshots(&*source).await);
    assert_eq!(
        target
            .list_stream_snapshots(&plain)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["a1", "a3", "a3-again", "a2"],
        "the kept snapshots in save order"
    );
    for stream in [&plain, &account] {
        for max in [None, Some(1), Some(2), Some(3), Some(4)] {
            assert_eq!(
                target.latest_stream_snapshot(stream, max).await.unwrap(),
                source.latest_stream_snapshot(stream, max).await.unwrap(),
                "latest_stream_snapshot({stream}, {max:?}) on both sides"
            );
        }
    }
    assert_eq!(
        target
            .latest_stream_snapshot(&plain, Some(3))
            .await
            .unwrap()
            .unwrap()
            .id,
        "a3-again",
        "of two snapshots at one version the later save wins on the copy too"
    );
    assert!(
        target
            .list_stream_snapshots(&ghost)
            .await
            .unwrap()
            .is_empty(),
        "a snapshot of a stream without events is not copied"
    );
    // Pruning answers the same on both sides.
    for store in [&source, &target] {
        assert_eq!(store.prune_stream_snapshots(&plain, 2).await.unwrap(), 2);
    }
    assert_eq!(
        target.list_stream_snapshots(&plain).await.unwrap(),
        source.list_stream_snapshots(&plain).await.unwrap()
    );
    // And a copy back into memory reproduces the same checksum.
    let back: Arc<dyn EventStore> = Arc::new(annals_core::MemoryStore::new());
    let again = copy(&target, &back, CopyOptions::default()).await.unwrap();
    assert_eq!(again.source, checksum(&*source).await.unwrap());
    assert_eq!(again.target, again.source);
}

/// Without stream snapshots, a copy leaves them out and still verifies.
pub async fn copy_without_stream_snapshots_leaves_them_out(backend: &Backend) {
    let source = backend.open().await;
    populate(&source, 5).await;
    let target = backend.open().await;
    let report = copy(
        &source,
        &target,
        CopyOptions {
            stream_snapshots: false,
            ..CopyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.verified());
    assert_eq!(
        (report.stream_snapshots, report.source.stream_snapshots),
        (0, 0)
    );
    assert!(target
        .list_stream_snapshots(&StreamId::new("acc-1"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(checksum(&*source).await.unwrap().stream_snapshots, 1);
}
