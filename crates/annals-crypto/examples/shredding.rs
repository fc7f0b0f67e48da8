//! Crypto-shredding in a few lines: encrypt a customer's e-mail with their own key,
//! read it back, forget the customer, and read the event again.
//!
//! `cargo run -p annals-crypto --example shredding`

use std::sync::Arc;

use annals_core::{
    EventStore, ExpectedVersion, Json, MemoryStore, ProposedEvent, ReadAll, StreamId,
};
use annals_crypto::Shredder;

#[tokio::main]
async fn main() -> Result<(), annals_core::Error> {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let shredder = Shredder::new(["/email"])?;

    let payload = Json::from_raw(r#"{"email":"ann@example.com","plan":"pro"}"#);
    let sealed = shredder.encrypt(&*store, "customer-1", &payload).await?;
    println!("stored payload:   {sealed}");
    store
        .append_to_stream(
            &StreamId::new("customer-1"),
            ExpectedVersion::Any,
            vec![ProposedEvent::new("Registered", sealed)],
        )
        .await?;

    let event = store.read_all(ReadAll::forward()).await?.events.remove(0);
    println!(
        "decrypted:        {}",
        shredder
            .decrypt_event(&*store, event.clone())
            .await?
            .payload
    );

    Shredder::forget(&*store, "customer-1").await?;
    println!(
        "after forgetting: {}",
        shredder.decrypt_event(&*store, event).await?.payload
    );
    Ok(())
}
