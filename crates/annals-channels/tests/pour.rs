//! The pour tools over the reference store (MemoryStore) into the memory channel, and
//! into NATS for the rate limit (the real thing a pour talks to).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_channels::pour::{
    self, AggregateIdsQuery, PourCursor, PourOptions, StoreEventsQuery, StreamEventsQuery,
};
use annals_channels::{MemoryChannel, Message, MessageChannel};
use annals_core::{
    EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, RecordedEvent, Result, StreamId,
    Timestamp,
};
use async_trait::async_trait;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
}

async fn append(store: &MemoryStore, stream: &str, t: i64, ty: &str) {
    store
        .append_to_stream(
            &StreamId::new(stream).with_aggregate("account"),
            ExpectedVersion::Any,
            vec![
                ProposedEvent::new(ty, Json::from_raw(format!(r#"{{"t":{t}}}"#)))
                    .with_timestamp(at(t)),
            ],
        )
        .await
        .unwrap();
}

/// acc-a created at 1, acc-b at 2, acc-c at 3; more events later, and one event whose
/// own timestamp (4) is older than the event before it in position order (5).
async fn sample() -> MemoryStore {
    let s = MemoryStore::new();
    append(&s, "acc-a", 1, "Opened").await;
    append(&s, "acc-b", 2, "Opened").await;
    append(&s, "acc-c", 3, "Opened").await;
    append(&s, "acc-a", 5, "Deposited").await;
    append(&s, "acc-b", 4, "Deposited").await; // position 5, timestamp 4
    append(&s, "acc-a", 6, "Withdrawn").await;
    s
}

fn events(messages: &[Message]) -> Vec<RecordedEvent> {
    messages
        .iter()
        .map(|m| match m {
            Message::Notification { event, replay, .. } => {
                assert!(replay);
                event.clone()
            }
            other => panic!("not a notification: {other:?}"),
        })
        .collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            assert!(m.replay());
            assert!(matches!(m, Message::AggregateExists { .. }));
            m.stream().id.clone()
        })
        .collect()
}

#[tokio::test]
async fn aggregate_ids_in_first_event_order_with_filters_and_reverse() {
    let store = sample().await;
    let channel = MemoryChannel::new();
    let opts = PourOptions::default();
    let r = pour::pour_aggregate_ids(
        &store,
        "default",
        &channel,
        &AggregateIdsQuery {
            page_size: 2,
            ..Default::default()
        },
        &opts,
    )
    .await
    .unwrap();
    assert_eq!(ids(&channel.take()), ["acc-a", "acc-b", "acc-c"]);
    assert_eq!(r.poured_aggregate_id_count, 3);
    assert_eq!(r.first_scanned_aggregate.unwrap().aggregate_id, "acc-a");
    let last = r.last_scanned_aggregate.unwrap();
    assert_eq!(
        (last.aggregate_id.as_str(), last.initial_event_timestamp),
        ("acc-c", at(3))
    );
    assert!(r.finished);

    let q = AggregateIdsQuery {
        initial_event_after: Some(at(2)),
        reverse: true,
        ..Default::default()
    };
    let r = pour::pour_aggregate_ids(&store, "default", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&channel.take()), ["acc-c", "acc-b"]);
    assert_eq!(r.first_scanned_aggregate.unwrap().aggregate_id, "acc-c");

    let q = AggregateIdsQuery {
        initial_event_before: Some(at(2)),
        ..Default::default()
    };
    pour::pour_aggregate_ids(&store, "default", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&channel.take()), ["acc-a", "acc-b"]);

    // A limit, then resuming from the returned token.
    let q = AggregateIdsQuery {
        limit: Some(2),
        page_size: 1,
        ..Default::default()
    };
    let first = pour::pour_aggregate_ids(&store, "default", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&channel.take()), ["acc-a", "acc-b"]);
    let q = AggregateIdsQuery {
        resume: first.resume,
        ..Default::default()
    };
    let rest = pour::pour_aggregate_ids(&store, "default", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(ids(&channel.take()), ["acc-c"]);
    assert_eq!(rest.poured_aggregate_id_count, 1);
}

#[tokio::test]
async fn one_stream_with_versions_limit_reverse_and_time_filters() {
    let store = sample().await;
    let channel = MemoryChannel::new();
    let opts = PourOptions::default();
    let acc_a = StreamId::new("acc-a").with_aggregate("account");
    let pour = |q: StreamEventsQuery| {
        let (store, channel, opts, acc_a) = (&store, &channel, &opts, &acc_a);
        async move {
            pour::pour_stream_events(store, "default", channel, acc_a, &q, opts)
                .await
                .unwrap()
        }
    };
    let r = pour(StreamEventsQuery::default()).await;
    let got = events(&channel.take());
    assert_eq!(got.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(r.poured_event_count, 3);
    assert_eq!(r.first_poured_event.unwrap().version, 1);
    assert_eq!(r.last_poured_event.unwrap().version, 3);

    pour(StreamEventsQuery {
        min_version: Some(2),
        reverse: true,
        ..Default::default()
    })
    .await;
    assert_eq!(
        events(&channel.take())
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [3, 2]
    );

    pour(StreamEventsQuery {
        max_version: Some(2),
        limit: Some(1),
        reverse: true,
        ..Default::default()
    })
    .await;
    assert_eq!(
        events(&channel.take())
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [2]
    );

    pour(StreamEventsQuery {
        from: Some(at(2)),
        to: Some(at(5)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        events(&channel.take())
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [2]
    );

    let r = pour(StreamEventsQuery {
        resume: Some(1),
        ..Default::default()
    })
    .await;
    assert_eq!(
        events(&channel.take())
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(r.resume, Some(3));

    let r = pour(StreamEventsQuery {
        max_version: Some(0),
        ..Default::default()
    })
    .await;
    assert_eq!((r.poured_event_count, r.first_poured_event), (0, None));
}

#[tokio::test]
async fn a_store_in_timestamp_order_and_resumed() {
    let store = sample().await;
    let channel = MemoryChannel::new();
    let opts = PourOptions {
        batch_size: 2,
        ..Default::default()
    };
    let r = pour::pour_store_events(
        &store,
        "bank",
        &channel,
        &StoreEventsQuery::default(),
        &opts,
    )
    .await
    .unwrap();
    let got = events(&channel.take());
    let times: Vec<Timestamp> = got.iter().map(|e| e.timestamp).collect();
    assert_eq!(times, (1..=6).map(at).collect::<Vec<_>>());
    assert_eq!(
        got.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 5, 4, 6]
    );
    assert_eq!(r.poured_event_count, 6);
    assert_eq!(r.first_scanned_aggregate.unwrap().aggregate_id, "acc-a");
    assert_eq!(r.last_scanned_aggregate.unwrap().aggregate_id, "acc-c");
    assert_eq!(
        r.resume.as_ref().unwrap().to_string(),
        format!("{}.6", at(6).as_millis())
    );

    let q = StoreEventsQuery {
        from: Some(at(3)),
        to: Some(at(5)),
        ..Default::default()
    };
    pour::pour_store_events(&store, "bank", &channel, &q, &opts)
        .await
        .unwrap();
    let got = events(&channel.take());
    assert_eq!(
        got.iter().map(|e| e.position).collect::<Vec<_>>(),
        [3, 5, 4]
    );

    // Resume after the 4th event (timestamp 4, position 5).
    let resume: PourCursor = format!("{}.5", at(4).as_millis()).parse().unwrap();
    let q = StoreEventsQuery {
        resume: Some(resume),
        ..Default::default()
    };
    let r = pour::pour_store_events(&store, "bank", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(
        events(&channel.take())
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        [4, 6]
    );
    assert_eq!(r.poured_event_count, 2);
    assert!(channel.messages().iter().all(|m| m.store() == "bank"));
}

#[tokio::test]
async fn several_stores_merged_in_timestamp_order() {
    let pokemons = MemoryStore::new();
    let trainers = MemoryStore::new();
    append(&pokemons, "pikachu", 1, "Appeared").await;
    append(&trainers, "ash", 2, "Started").await;
    append(&pokemons, "pikachu", 3, "Caught").await;
    append(&trainers, "ash", 3, "Caught").await; // same time: "pokemons" < "trainers"? no: by name
    append(&trainers, "misty", 5, "Started").await;
    append(&pokemons, "eevee", 4, "Appeared").await;
    let channel = MemoryChannel::new();
    let stores: [(&str, &dyn EventStore); 2] = [("trainers", &trainers), ("pokemons", &pokemons)];
    let opts = PourOptions {
        batch_size: 4,
        ..Default::default()
    };
    let r = pour::pour_stores_events(&stores, &channel, &StoreEventsQuery::default(), &opts)
        .await
        .unwrap();
    let got: Vec<(String, i64, String)> = channel
        .take()
        .iter()
        .map(|m| match m {
            Message::Notification {
                store,
                event,
                replay,
            } => {
                assert!(replay);
                (
                    store.clone(),
                    (event.timestamp.as_millis() - at(0).as_millis()) / 1000,
                    event.stream.id.clone(),
                )
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let expect = [
        ("pokemons", 1, "pikachu"),
        ("trainers", 2, "ash"),
        ("pokemons", 3, "pikachu"),
        ("trainers", 3, "ash"),
        ("pokemons", 4, "eevee"),
        ("trainers", 5, "misty"),
    ];
    assert_eq!(got, expect.map(|(s, t, a)| (s.to_owned(), t, a.to_owned())));
    assert_eq!(r.poured_event_count, 6);
    assert_eq!(
        r.scans["pokemons"]
            .first_scanned_aggregate
            .as_ref()
            .unwrap()
            .aggregate_id,
        "pikachu"
    );
    assert_eq!(
        r.scans["pokemons"]
            .last_scanned_aggregate
            .as_ref()
            .unwrap()
            .aggregate_id,
        "eevee"
    );
    assert_eq!(
        r.scans["trainers"]
            .last_scanned_aggregate
            .as_ref()
            .unwrap()
            .aggregate_id,
        "misty"
    );
    let resume = r.resume.unwrap();
    assert_eq!(resume.store.as_deref(), Some("trainers"));

    // Resume after the third message (pokemons, t=3).
    let third = PourCursor {
        timestamp: at(3),
        position: 2,
        store: Some("pokemons".into()),
    };
    let q = StoreEventsQuery {
        resume: Some(third),
        ..Default::default()
    };
    let r = pour::pour_stores_events(&stores, &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(r.poured_event_count, 3);
    assert_eq!(
        channel
            .take()
            .iter()
            .map(|m| m.stream().id.clone())
            .collect::<Vec<_>>(),
        ["ash", "eevee", "misty"]
    );

    let twice: [(&str, &dyn EventStore); 2] = [("a", &trainers), ("a", &pokemons)];
    let err = pour::pour_stores_events(&twice, &channel, &StoreEventsQuery::default(), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.error.kind(), annals_core::ErrorKind::InvalidInput);
}

/// Accepts `budget` messages, then fails every publish.
struct Failing {
    inner: MemoryChannel,
    budget: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl MessageChannel for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    async fn publish(&self, m: &Message) -> Result<()> {
        self.publish_batch(std::slice::from_ref(m)).await
    }
    async fn publish_batch(&self, ms: &[Message]) -> Result<()> {
        let left = self.budget.load(Ordering::SeqCst);
        if left < ms.len() {
            return Err(annals_core::Error::backend(
                "failing",
                std::io::Error::other("broker down"),
            ));
        }
        self.budget.fetch_sub(ms.len(), Ordering::SeqCst);
        self.inner.publish_batch(ms).await
    }
}

#[tokio::test]
async fn an_interrupted_pour_resumes_without_loss_or_duplicates() {
    let store = MemoryStore::new();
    for i in 0..50 {
        append(&store, &format!("s{}", i % 7), i, "E").await;
    }
    let failing = Failing {
        inner: MemoryChannel::new(),
        budget: 23.into(),
    };
    let opts = PourOptions {
        batch_size: 5,
        ..Default::default()
    };
    let err = pour::pour_store_events(&store, "x", &failing, &StoreEventsQuery::default(), &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("broker down"), "{err}");
    assert_eq!(err.partial.poured_event_count, 20);
    assert!(!err.partial.finished);
    let q = StoreEventsQuery {
        resume: err.partial.resume.clone(),
        ..Default::default()
    };
    let rest = pour::pour_store_events(&store, "x", &failing.inner, &q, &opts)
        .await
        .unwrap();
    assert_eq!(rest.poured_event_count, 30);
    let all = events(&failing.inner.messages());
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );

    // The same for ids, stopped by the stop flag from the progress callback.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let opts = PourOptions {
        batch_size: 2,
        stop: Some(stop.clone()),
        progress: Some(Arc::new(move |p| {
            if p.poured >= 4 {
                flag.store(true, Ordering::SeqCst);
            }
        })),
        ..Default::default()
    };
    let channel = MemoryChannel::new();
    let first =
        pour::pour_aggregate_ids(&store, "x", &channel, &AggregateIdsQuery::default(), &opts)
            .await
            .unwrap();
    assert_eq!(
        (first.poured_aggregate_id_count, first.finished),
        (4, false)
    );
    stop.store(false, Ordering::SeqCst);
    let q = AggregateIdsQuery {
        resume: first.resume,
        ..Default::default()
    };
    let opts = PourOptions::default();
    pour::pour_aggregate_ids(&store, "x", &channel, &q, &opts)
        .await
        .unwrap();
    assert_eq!(
        ids(&channel.take()),
        (0..7).map(|i| format!("s{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_rate_limit_holds_1000_messages_at_200_per_second_for_4_5_s() {
    let store = MemoryStore::new();
    let batch: Vec<ProposedEvent> = (0..1000)
        .map(|i| ProposedEvent::new("E", Json::from_raw(i.to_string())))
        .collect();
    store
        .append_to_stream(&StreamId::new("s"), ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    let channel = MemoryChannel::new();
    let opts = PourOptions::default().rate_limit(200.0);
    let start = Instant::now();
    let r = pour::pour_store_events(&store, "x", &channel, &StoreEventsQuery::default(), &opts)
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(r.poured_event_count, 1000);
    assert_eq!(channel.len(), 1000);
    assert!(took >= Duration::from_millis(4500), "took {took:?}");
    let bad = PourOptions::default().rate_limit(-1.0);
    let err = pour::pour_store_events(&store, "x", &channel, &StoreEventsQuery::default(), &bad)
        .await
        .unwrap_err();
    assert_eq!(err.error.kind(), annals_core::ErrorKind::InvalidInput);
}

/// Appends `n` events whose timestamps mostly follow positions, with scattered events
/// older than their neighbours (every 97th) and a block from the future: several read
/// runs, some longer than one read page.
async fn shuffled_store(n: i64, salt: i64) -> MemoryStore {
    let store = MemoryStore::new();
    for i in 0..n {
        let t = match i {
            _ if i % 97 == salt => i - 500,
            _ if (1200..1250).contains(&i) => i + 3000,
            _ => i,
        };
        append(&store, &format!("s{}", i % 13), t, "E").await;
    }
    store
}

/// What a pour must give: every selected event, sorted by (timestamp, store, position).
async fn expected(stores: &[(&str, &MemoryStore)], q: &StoreEventsQuery) -> Vec<(String, u64)> {
    let mut all = Vec::new();
    for (name, store) in stores {
        let page = store
            .read_all(annals_core::ReadAll::forward())
            .await
            .unwrap();
        assert!(page.end);
        for e in page.events {
            if q.from.is_none_or(|t| e.timestamp >= t) && q.to.is_none_or(|t| e.timestamp <= t) {
                all.push((e.timestamp, name.to_string(), e.position));
            }
        }
    }
    all.sort();
    all.into_iter().map(|(_, s, p)| (s, p)).collect()
}

fn poured(messages: &[Message]) -> Vec<(String, u64)> {
    messages
        .iter()
        .zip(events(messages))
        .map(|(m, e)| (m.store().to_owned(), e.position))
        .collect()
}

/// A pour reads the events in position order and puts them in timestamp order through
/// a bounded buffer; whatever the interleaving of timestamps and however small the
/// buffer (events that do not fit are read again), the result is the full sort, with
/// and without time filters, resumed from anywhere, one store or several.
#[tokio::test]
async fn out_of_order_timestamps_across_read_pages_pour_in_timestamp_order() {
    let store = shuffled_store(2600, 5).await;
    let other = shuffled_store(1300, 11).await;
    for reorder_buffer in [PourOptions::default().reorder_buffer, 700, 7] {
        let opts = PourOptions {
            batch_size: 64,
            reorder_buffer,
            ..Default::default()
        };
        for q in [
            StoreEventsQuery::default(),
            StoreEventsQuery {
                from: Some(at(100)),
                to: Some(at(2400)),
                ..Default::default()
            },
        ] {
            let want = expected(&[("a", &store)], &q).await;
            let channel = MemoryChannel::new();
            let r = pour::pour_store_events(&store, "a", &channel, &q, &opts)
                .await
                .unwrap();
            assert!(r.finished);
            assert_eq!(r.poured_event_count, want.len() as u64);
            assert_eq!(poured(&channel.take()), want, "buffer {reorder_buffer}");

            // Resumed after the 1,000th event.
            let (_, position) = &want[999];
            let e = store
                .read_all(annals_core::ReadAll::forward().after(position - 1).limit(1))
                .await
                .unwrap()
                .events
                .remove(0);
            let resumed = StoreEventsQuery {
                resume: Some(
                    format!("{}.{}", e.timestamp.as_millis(), e.position)
                        .parse()
                        .unwrap(),
                ),
                ..q.clone()
            };
            pour::pour_store_events(&store, "a", &channel, &resumed, &opts)
                .await
                .unwrap();
            assert_eq!(
                poured(&channel.take()),
                want[1000..],
                "buffer {reorder_buffer}"
            );
        }

        // Two stores merged, each with its own out-of-order events.
        let q = StoreEventsQuery {
            to: Some(at(2000)),
            ..Default::default()
        };
        let want = expected(&[("a", &store), ("b", &other)], &q).await;
        let channel = MemoryChannel::new();
        let r = pour::pour_stores_events(&[("b", &other), ("a", &store)], &channel, &q, &opts)
            .await
            .unwrap();
        assert!(r.finished);
        assert_eq!(r.poured_event_count, want.len() as u64);
        assert_eq!(poured(&channel.take()), want, "buffer {reorder_buffer}");
    }
}

/// Clears the store on its first batch: the store changes under a running pour.
struct Clearing {
    store: Arc<MemoryStore>,
    inner: MemoryChannel,
}

#[async_trait]
impl MessageChannel for Clearing {
    fn name(&self) -> &'static str {
        "clearing"
    }
    async fn publish(&self, m: &Message) -> Result<()> {
        self.publish_batch(std::slice::from_ref(m)).await
    }
    async fn publish_batch(&self, ms: &[Message]) -> Result<()> {
        if self.inner.messages().is_empty() {
            self.store.clear_events().await?;
        }
        self.inner.publish_batch(ms).await
    }
}

/// Events that vanish between the sort and the read are an error naming the store,
/// with the partial result to resume from, never a silent skip.
#[tokio::test]
async fn a_store_cleared_during_a_pour_stops_it_with_an_error() {
    let store = Arc::new(shuffled_store(1500, 3).await);
    let channel = Clearing {
        store: store.clone(),
        inner: MemoryChannel::new(),
    };
    let opts = PourOptions {
        batch_size: 100,
        ..Default::default()
    };
    let err = pour::pour_store_events(
        store.as_ref(),
        "a",
        &channel,
        &StoreEventsQuery::default(),
        &opts,
    )
    .await
    .unwrap_err();
    assert_eq!(err.error.kind(), annals_core::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("changed during the pour"), "{err}");
    assert!(!err.partial.finished);
    let got = channel.inner.messages();
    assert_eq!(err.partial.poured_event_count, got.len() as u64);
    assert!(!got.is_empty() && got.len() < 1500);
    let last = events(&got).pop().unwrap();
    assert_eq!(err.partial.resume.unwrap().position, last.position);
}
