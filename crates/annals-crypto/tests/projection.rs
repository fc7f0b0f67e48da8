//! `Decrypting` under the real projector, on the embedded store: a projection gets
//! plaintext while a subject's key exists, `"[erased]"` after the key is deleted (a
//! rebuild from 0 shows it for the old events too), and a tampered field stops the
//! projection at that event instead of handing it over encrypted or skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_core::{EventStore, ExpectedVersion, Json, ProposedEvent, StreamId};
use annals_crypto::{Decrypting, Shredder, ERASED};
use annals_embedded::EmbeddedStore;
use annals_projector::{
    projection_fn, Backoff, BoxError, ProjectionState, Projector, ProjectorOptions,
};
use serde_json::Value;

type Seen = Arc<Mutex<Vec<(u64, Value)>>>;

fn recorder(seen: &Seen) -> impl annals_projector::Projection {
    let seen = seen.clone();
    projection_fn(move |e| {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((e.position, e.payload.parse::<Value>()?));
            Ok::<(), BoxError>(())
        }
    })
}

async fn append(store: &Arc<dyn EventStore>, subject: &str, payload: Json) -> u64 {
    store
        .append_to_stream(
            &StreamId::new(subject).with_aggregate("user"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new("Registered", payload)],
        )
        .await
        .unwrap()
        .events[0]
        .position
}

fn projector(store: &Arc<dyn EventStore>) -> Projector {
    Projector::with_options(
        store.clone(),
        ProjectorOptions {
            backoff: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
                max_attempts: Some(3),
            },
            ..ProjectorOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_reads_plaintext_then_erased_after_the_key_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let shredder = Shredder::new(["/email"]).unwrap();
    for (subject, email) in [("ann", "ann@example.com"), ("bob", "bob@example.com")] {
        let payload = Json::from_raw(format!(r#"{{"email":"{email}","plan":"pro"}}"#));
        let sealed = shredder.encrypt(&*store, subject, &payload).await.unwrap();
        assert!(!sealed.as_str().unwrap().contains(email));
        append(&store, subject, sealed).await;
    }

    let seen: Seen = Arc::default();
    let p = projector(&store);
    p.add(
        "users",
        Decrypting::new(shredder.clone(), store.clone(), recorder(&seen)),
    )
    .await
    .unwrap();
    p.start().await.unwrap();
    p.wait_until("users", |s| s.checkpoint == 2).await.unwrap();
    let emails = |seen: &Seen| -> Vec<Value> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["email"].clone())
            .collect()
    };
    assert_eq!(emails(&seen), ["ann@example.com", "bob@example.com"]);

    // Ann is forgotten while the projection runs: her next event reads erased at once.
    Shredder::forget(&*store, "ann").await.unwrap();
    let late = shredder
        .encrypt(
            &*store,
            "bob",
            &Json::from_raw(r#"{"email":"bob@new.example","plan":"pro"}"#),
        )
        .await
        .unwrap();
    append(&store, "bob", late).await;
    // An event sealed with Ann's deleted key (her first event, appended again verbatim)
    // reads erased.
    let old = store
        .read_all(annals_core::ReadAll::forward().limit(1))
        .await
        .unwrap()
        .events
        .remove(0);
    append(&store, "ann", old.payload.clone()).await;
    p.wait_until("users", |s| s.checkpoint == 4).await.unwrap();
    assert_eq!(
        emails(&seen)[2..],
        [Value::from("bob@new.example"), Value::from(ERASED)]
    );

    // A rebuild from 0 sees Ann erased in her old events too; Bob is intact.
    seen.lock().unwrap().clear();
    p.reset("users").await.unwrap();
    p.wait_until("users", |s| s.checkpoint == 4 && s.live)
        .await
        .unwrap();
    assert_eq!(
        emails(&seen),
        [ERASED, "bob@example.com", "bob@new.example", ERASED]
    );
    assert!(seen.lock().unwrap().iter().all(|(_, v)| v["plan"] == "pro"));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_field_stops_the_projection_at_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let shredder = Shredder::new(["/email"]).unwrap();
    let good = shredder
        .encrypt(&*store, "ann", &Json::from_raw(r#"{"email":"a@b"}"#))
        .await
        .unwrap();
    append(&store, "ann", good.clone()).await;
    // The same envelope with its last ciphertext bytes changed: authentication fails.
    let mut v: Value = good.parse().unwrap();
    let s = v["email"].as_str().unwrap().to_owned();
    let tail = if s.ends_with("AAAA") { "BBBB" } else { "AAAA" };
    v["email"] = Value::String(format!("{}{tail}", &s[..s.len() - 4]));
    let tampered = append(&store, "ann", Json::from_value(&v).unwrap()).await;
    append(&store, "ann", good).await;

    let seen: Seen = Arc::default();
    let p = projector(&store);
    p.add(
        "users",
        Decrypting::new(shredder, store.clone(), recorder(&seen)),
    )
    .await
    .unwrap();
    p.start().await.unwrap();
    let status = p
        .wait_until("users", |s| s.state == ProjectionState::Failed)
        .await
        .unwrap();
    let failure = status.last_error.unwrap();
    assert_eq!(failure.position, tampered);
    assert!(failure.error.contains("corrupt"), "{}", failure.error);
    assert_eq!(failure.attempts, 3);
    // Only the event before it was handed over, decrypted; nothing after it.
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, serde_json::json!({"email": "a@b"}))]
    );
    assert_eq!(status.checkpoint, tampered - 1);
    p.shutdown().await;
}
