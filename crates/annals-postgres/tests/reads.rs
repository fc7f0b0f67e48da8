//! Large pages: `read_all` reads big pages through binary COPY and small ones through
//! a prepared statement. Both must answer exactly what the in-memory reference does,
//! for every numeric filter, direction, skip, limit and cursor.

// Test helpers panic on failure by design: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use annals_core::{
    AppendRequest, EventFilter, EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent,
    ReadAll, ReadFrom, StreamId, Timestamp,
};

const EVENTS: usize = 1_500;

fn requests() -> Vec<AppendRequest> {
    let mut out = Vec::new();
    let mut n = 0usize;
    let mut batch = 0usize;
    while n < EVENTS {
        let size = 1 + batch % 7;
        let stream = StreamId::new(format!("s-{}", batch % 5)).with_aggregate(if batch % 2 == 0 {
            "even"
        } else {
            "odd"
        });
        let events = (0..size)
            .map(|k| {
                let i = n + k;
                ProposedEvent::new(
                    if i % 3 == 0 { "A" } else { "B" },
                    Json::from_raw(format!(
                        r#"{{ "i" : {i}, "pad": "{}" }}"#,
                        "p".repeat(i % 40)
                    )),
                )
                .with_id(format!("e-{i}"))
                .with_metadata(if i % 4 == 0 {
                    Json::null()
                } else {
                    Json::from_raw(format!(r#"{{"m":{i}}}"#))
                })
                // Timestamps that do not follow positions, shared by several events.
                .with_timestamp(Timestamp::from_millis(1_000 + ((i * 37) % 200) as i64))
            })
            .collect();
        out.push(
            AppendRequest::to_stream(stream, ExpectedVersion::Any, events)
                .with_commit_id(format!("c-{batch}")),
        );
        n += size;
        batch += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_and_small_pages_answer_like_the_reference() {
    let Some(test_store) = support::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let reference = MemoryStore::new();
    for r in requests() {
        let a = store.append(r.clone()).await.unwrap();
        let b = reference.append(r).await.unwrap();
        assert_eq!(a, b);
    }
    for i in (0..EVENTS).step_by(11) {
        store.mark_dispatched(&format!("e-{i}")).await.unwrap();
        reference.mark_dispatched(&format!("e-{i}")).await.unwrap();
    }
    let filters = [
        EventFilter::default(),
        EventFilter::default().time_range(Some(Timestamp::from_millis(1_050)), None),
        EventFilter::default().time_range(
            Some(Timestamp::from_millis(1_020)),
            Some(Timestamp::from_millis(1_120)),
        ),
        EventFilter {
            min_version: Some(40),
            max_version: Some(250),
            ..EventFilter::default()
        },
        EventFilter {
            min_version: Some(u64::MAX),
            ..EventFilter::default()
        },
        EventFilter::default().dispatched(true),
        EventFilter::default().dispatched(false),
        // A name filter takes the prepared path whatever the page size.
        EventFilter::default().aggregate("odd").event_types(["A"]),
    ];
    let mut reads = Vec::new();
    for f in &filters {
        for base in [ReadAll::forward(), ReadAll::backward()] {
            let base = base.filter(f.clone());
            reads.push(base.clone());
            reads.push(base.clone().limit(600));
            reads.push(base.clone().limit(2_000).skip(100));
            reads.push(base.clone().limit(700).after(300));
            reads.push(base.clone().after(1_400));
            reads.push(base.clone().limit(10));
            reads.push(base.clone().after(EVENTS as u64 + 5));
        }
    }
    for read in reads {
        let got = store.read_all(read.clone()).await.unwrap();
        let want = reference.read_all(read.clone()).await.unwrap();
        assert_eq!(got, want, "read_all {read:?}");
        // Continuing from the cursor gives the same answers too.
        if !got.end {
            let next = ReadAll {
                from: ReadFrom::Cursor(got.next_cursor),
                ..read.clone()
            };
            assert_eq!(
                store.read_all(next.clone()).await.unwrap(),
                reference.read_all(next).await.unwrap(),
                "continuing {read:?}"
            );
        }
    }
    store.close().await.unwrap();
}

/// Unfiltered pages of thousands of events are read as two halves in parallel; the
/// halves must join into exactly the reference's page, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_unfiltered_pages_read_in_halves_answer_like_the_reference() {
    let Some(test_store) = support::fresh_store().await else {
        return;
    };
    let store = test_store.store.clone();
    let reference = MemoryStore::new();
    for b in 0..20 {
        let events = (0..500)
            .map(|k| {
                let i = b * 500 + k;
                ProposedEvent::new("T", Json::from_raw(format!("{i}")))
                    .with_id(format!("big-{i}"))
                    .with_timestamp(Timestamp::from_millis(i as i64))
            })
            .collect();
        let r = AppendRequest::to_stream(
            StreamId::new(format!("s-{}", b % 3)),
            ExpectedVersion::Any,
            events,
        )
        .with_commit_id(format!("big-{b}"));
        assert_eq!(
            store.append(r.clone()).await.unwrap(),
            reference.append(r).await.unwrap()
        );
    }
    let reads = [
        ReadAll::forward(),
        ReadAll::forward().limit(5_000),
        ReadAll::forward().limit(4_097).after(1_234),
        ReadAll::forward().after(5_000),
        ReadAll::forward().limit(20_000).after(3),
        ReadAll::backward(),
        ReadAll::backward().limit(6_000),
        ReadAll::backward().limit(4_500).after(9_000),
        ReadAll::backward().after(5_001),
    ];
    for read in reads {
        let got = store.read_all(read.clone()).await.unwrap();
        let want = reference.read_all(read.clone()).await.unwrap();
        assert_eq!(got.events.len(), want.events.len(), "{read:?}");
        assert_eq!(got, want, "read_all {read:?}");
        if !got.end {
            let next = ReadAll {
                from: ReadFrom::Cursor(got.next_cursor),
                ..read.clone()
            };
            assert_eq!(
                store.read_all(next.clone()).await.unwrap(),
                reference.read_all(next).await.unwrap(),
                "continuing {read:?}"
            );
        }
    }
    store.close().await.unwrap();
}
