//! Crypto-shredding on the in-memory and embedded backends: fields decrypt while the
//! subject's key exists, and read as the erased marker everywhere once it is deleted —
//! in the store, in an export imported elsewhere, and in a copy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use annals_core::{
    EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, ReadAll, StreamId,
};
use annals_crypto::{Shredder, ERASED};
use annals_maintenance::{
    copy, export_events, export_secrets, import_events, import_secrets, CopyOptions, ExportOptions,
    ImportOptions, MaintenanceMode, SecretsImportOptions,
};
use serde_json::Value;

async fn payloads(shredder: &Shredder, store: &Arc<dyn EventStore>) -> Vec<Value> {
    let events = store.read_all(ReadAll::forward()).await.unwrap().events;
    shredder
        .decrypt_events(&**store, events)
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.parse().unwrap())
        .collect()
}

async fn exercise(open: impl Fn() -> Arc<dyn EventStore>) {
    let store = open();
    let shredder = Shredder::new(["/email", "/card/number"]).unwrap();
    for (subject, email) in [("ann", "ann@example.com"), ("bob", "bob@example.com")] {
        let payload = Json::from_raw(format!(
            r#"{{"email":"{email}","card":{{"number":"4111","brand":"visa"}},"plan":"pro"}}"#
        ));
        let sealed = shredder.encrypt(&*store, subject, &payload).await.unwrap();
        assert!(!sealed.as_str().unwrap().contains(email));
        assert!(!sealed.as_str().unwrap().contains("4111"));
        store
            .append_to_stream(
                &StreamId::new(subject),
                ExpectedVersion::Any,
                vec![ProposedEvent::new("Registered", sealed)],
            )
            .await
            .unwrap();
    }
    let open_before = payloads(&shredder, &store).await;
    assert_eq!(open_before[0]["email"], "ann@example.com");
    assert_eq!(open_before[0]["card"]["number"], "4111");

    // An export taken BEFORE the shredding, with the secrets, imported elsewhere later.
    let mut events_file = Vec::new();
    export_events(&store, &mut events_file, ExportOptions::default(), |_| {})
        .await
        .unwrap();
    let mut secrets_before = Vec::new();
    export_secrets(&store, &mut secrets_before, 0, MaintenanceMode::Manual)
        .await
        .unwrap();

    Shredder::forget(&*store, "ann").await.unwrap();
    let after = payloads(&shredder, &store).await;
    assert_eq!(after[0]["email"], ERASED);
    assert_eq!(after[0]["card"]["number"], ERASED);
    assert_eq!(after[0]["card"]["brand"], "visa");
    assert_eq!(after[0]["plan"], "pro");
    assert_eq!(after[1]["email"], "bob@example.com");
    // New data for a forgotten subject is refused.
    assert!(shredder
        .encrypt(&*store, "ann", &Json::from_raw(r#"{"email":"x"}"#))
        .await
        .is_err());

    // An export taken AFTER: imported with its secrets, ann stays erased.
    let mut secrets_after = Vec::new();
    export_secrets(&store, &mut secrets_after, 0, MaintenanceMode::Manual)
        .await
        .unwrap();
    let restored = open();
    import_events(
        &restored,
        &events_file[..],
        ImportOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    import_secrets(
        &restored,
        &secrets_after[..],
        SecretsImportOptions::default(),
    )
    .await
    .unwrap();
    let r = payloads(&shredder, &restored).await;
    assert_eq!(r[0]["email"], ERASED);
    assert_eq!(r[1]["email"], "bob@example.com");
    // The exported file itself holds no plaintext.
    let text = String::from_utf8(events_file.clone()).unwrap();
    assert!(!text.contains("ann@example.com") && !text.contains("4111"));

    // A copy: erased too.
    let copied = open();
    assert!(copy(&store, &copied, CopyOptions::default())
        .await
        .unwrap()
        .verified());
    let c = payloads(&shredder, &copied).await;
    assert_eq!(c[0]["email"], ERASED);
    assert_eq!(c[1]["card"]["number"], "4111");
    let _ = secrets_before;
}

#[tokio::test]
async fn shredding_on_memory() {
    exercise(|| Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn shredding_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    exercise(|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::new(annals_embedded::EmbeddedStore::open(dir.path().join(format!("s{i}"))).unwrap())
    })
    .await;
}

#[tokio::test]
async fn tampered_ciphertext_is_corrupted_not_erased() {
    let store = MemoryStore::new();
    let shredder = Shredder::new(["/email"]).unwrap();
    let sealed = shredder
        .encrypt(&store, "ann", &Json::from_raw(r#"{"email":"a@b"}"#))
        .await
        .unwrap();
    let mut v: Value = sealed.parse().unwrap();
    let s = v["email"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        &s[..s.len() - 4],
        if &s[s.len() - 4..] == "AAAA" {
            "BBBB"
        } else {
            "AAAA"
        }
    );
    v["email"] = Value::String(flipped);
    let err = shredder
        .decrypt(&store, &Json::from_value(&v).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), annals_core::ErrorKind::Corrupted);
}
