//! # annals-crypto
//!
//! Crypto-shredding for Annals: personal data in chosen payload fields is encrypted with
//! a key per *subject* (a person, a customer…), and the key is kept as a store secret.
//! Deleting the subject's secret ([`Shredder::forget`]) makes those fields unreadable for
//! good — in the store, in every event export and in every copy, since they all hold
//! only the ciphertext and (at most) the secret's tombstone.
//!
//! **What it cannot erase:** a *secrets* export
//! (`annals_maintenance::export_secrets`, `annals
//! secrets export`) taken before the deletion holds the subject's key, and importing it
//! brings the fields back (a test pins this). Treat secrets exports as key material:
//! keep them apart from event exports, encrypted, and expire them with your backups.
//!
//! - Cipher: AES-256-GCM (the `aes-gcm` crate), a random 96-bit nonce per field, the
//!   subject id as associated data (a ciphertext cannot be moved to another subject).
//! - Key: 32 random bytes, base64 in the secret [`Shredder::secret_id`]`(subject)` =
//!   `annals-crypto/<subject>`, created on the subject's first encryption.
//! - An encrypted field is the JSON string
//!   `"annals-aes256gcm:v1:<subject, base64url>:<nonce ‖ ciphertext, base64>"`
//!   ([`ENVELOPE_PREFIX`]); the plaintext is the field's JSON text.
//! - **The erased marker:** when the subject's secret is deleted (or absent), a
//!   decrypted field reads as the JSON string `"[erased]"` ([`ERASED`]). Every other
//!   field is returned unchanged.
//! - Reading: [`Shredder::decrypt_event`] / [`Shredder::decrypt_events`] for events
//!   read by hand; [`Decrypting`] wraps a projector's projection so its handler gets
//!   decrypted events.
//!
//! ```
//! use std::sync::Arc;
//! use annals_core::{EventStore, Json, MemoryStore};
//! use annals_crypto::Shredder;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
//! let shredder = Shredder::new(["/email", "/address/street"])?;
//! let payload = Json::from_raw(r#"{"email":"ann@example.com","address":{"street":"Main 1","city":"Oslo"}}"#);
//! let sealed = shredder.encrypt(&*store, "user-1", &payload).await?;
//! assert!(!sealed.as_str().unwrap().contains("ann@example.com"));
//! let open: serde_json::Value = shredder.decrypt(&*store, &sealed).await?.parse()?;
//! assert_eq!(open["email"], "ann@example.com");
//!
//! Shredder::forget(&*store, "user-1").await?;
//! let erased: serde_json::Value = shredder.decrypt(&*store, &sealed).await?.parse()?;
//! assert_eq!(erased["email"], annals_crypto::ERASED);
//! assert_eq!(erased["address"]["street"], "[erased]");
//! assert_eq!(erased["address"]["city"], "Oslo");
//! # Ok::<(), annals_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

use annals_core::limits::{check_name, MAX_NAME_BYTES};
use annals_core::{Error, EventStore, Json, RecordedEvent, Result};

pub mod projection;

pub use projection::Decrypting;

/// What a field reads as once its subject's key is deleted: the JSON string `"[erased]"`.
pub const ERASED: &str = "[erased]";

/// The start of every encrypted field's string value.
pub const ENVELOPE_PREFIX: &str = "annals-aes256gcm:v1:";

/// The prefix of the secret ids holding subject keys.
const SECRET_PREFIX: &str = "annals-crypto/";

/// Bytes of an AES-GCM nonce.
const NONCE_BYTES: usize = 12;

/// Encrypts and decrypts chosen payload fields with per-subject keys kept as secrets.
///
/// ```
/// let s = annals_crypto::Shredder::new(["/name"]).unwrap();
/// assert_eq!(s.fields(), ["/name"]);
/// assert!(annals_crypto::Shredder::new(["name"]).is_err()); // not a JSON pointer
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shredder {
    fields: Vec<String>,
}

/// The keys looked up during one call: `None` = the subject's key is gone.
type Keys = HashMap<String, Option<Key<Aes256Gcm>>>;

impl Shredder {
    /// A shredder for these fields, given as JSON pointers (RFC 6901, e.g. `/email` or
    /// `/address/street`). Fields absent from a payload are left alone.
    ///
    /// ```
    /// assert!(annals_crypto::Shredder::new(Vec::<String>::new()).is_ok());
    /// ```
    pub fn new<I, S>(fields: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let fields: Vec<String> = fields.into_iter().map(Into::into).collect();
        for (i, f) in fields.iter().enumerate() {
            if !f.starts_with('/') {
                return Err(Error::invalid(
                    format!("fields[{i}]"),
                    format!("{f:?} is not a JSON pointer (it must start with '/')"),
                ));
            }
        }
        Ok(Shredder { fields })
    }

    /// The fields this shredder encrypts.
    ///
    /// ```
    /// assert!(annals_crypto::Shredder::new(["/a"]).unwrap().fields().len() == 1);
    /// ```
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The id of the secret holding `subject`'s key.
    ///
    /// ```
    /// assert_eq!(annals_crypto::Shredder::secret_id("user-1"), "annals-crypto/user-1");
    /// ```
    pub fn secret_id(subject: &str) -> String {
        format!("{SECRET_PREFIX}{subject}")
    }

    /// Deletes `subject`'s key for good: every field encrypted for it now reads as
    /// [`ERASED`]. [`Error::NotFound`] when the subject has no key (or it is already
    /// deleted).
    ///
    /// ```
    /// # use annals_core::{EventStore, MemoryStore};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// assert!(annals_crypto::Shredder::forget(&store, "nobody").await.is_err());
    /// # });
    /// ```
    pub async fn forget(store: &dyn EventStore, subject: &str) -> Result<()> {
        store.delete_secret(&Self::secret_id(subject)).await
    }

    /// The subject's key, creating it on first use. Refuses a subject whose key was
    /// deleted: new data for a forgotten subject cannot be protected by a dead key.
    async fn key_for(store: &dyn EventStore, subject: &str) -> Result<Key<Aes256Gcm>> {
        check_name("subject", subject, true)?;
        if SECRET_PREFIX.len() + subject.len() > MAX_NAME_BYTES {
            return Err(Error::invalid(
                "subject",
                format!(
                    "is {} bytes long; the limit is {} bytes",
                    subject.len(),
                    MAX_NAME_BYTES - SECRET_PREFIX.len()
                ),
            ));
        }
        let id = Self::secret_id(subject);
        for _ in 0..2 {
            if let Some(secret) = store.get_secret(&id).await? {
                return match secret.secret {
                    Some(text) => decode_key(&id, &text),
                    None => Err(Error::invalid(
                        "subject",
                        format!("{subject:?} was forgotten (its key is deleted); nothing can be encrypted for it"),
                    )),
                };
            }
            let key = Aes256Gcm::generate_key(OsRng);
            match store.set_secret(&id, &STANDARD.encode(key)).await {
                Ok(_) => return Ok(key),
                // Another writer created it first: read theirs.
                Err(Error::SecretAlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::invalid("subject", "its key could not be created"))
    }

    /// Encrypts this shredder's fields of `payload` for `subject` (creating the
    /// subject's key on first use). The payload must be a JSON document; fields it does
    /// not have are skipped.
    ///
    /// ```
    /// # use annals_core::{Json, MemoryStore};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let s = annals_crypto::Shredder::new(["/ssn"])?;
    /// let out = s.encrypt(&store, "p-1", &Json::from_raw(r#"{"ssn":"123","age":40}"#)).await?;
    /// let v: serde_json::Value = out.parse()?;
    /// assert!(v["ssn"].as_str().unwrap().starts_with(annals_crypto::ENVELOPE_PREFIX));
    /// assert_eq!(v["age"], 40);
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn encrypt(
        &self,
        store: &dyn EventStore,
        subject: &str,
        payload: &Json,
    ) -> Result<Json> {
        let mut value: Value = payload
            .parse()
            .map_err(|e| Error::invalid("payload", format!("not JSON: {e}")))?;
        let mut key = None;
        for pointer in &self.fields {
            let Some(field) = value.pointer_mut(pointer) else {
                continue;
            };
            if field
                .as_str()
                .is_some_and(|s| s.starts_with(ENVELOPE_PREFIX))
            {
                continue; // already encrypted
            }
            let key = match &key {
                Some(k) => k,
                None => key.insert(Self::key_for(store, subject).await?),
            };
            let plain = serde_json::to_vec(field)
                .map_err(|e| Error::invalid(pointer.clone(), e.to_string()))?;
            *field = Value::String(seal(key, subject, &plain)?);
        }
        Json::from_value(&value)
    }

    /// Decrypts every encrypted field of `payload` (wherever it is, whichever subject it
    /// belongs to); a field whose subject's key is deleted reads as [`ERASED`]. A payload
    /// without encrypted fields is returned as it is (same bytes).
    ///
    /// ```
    /// # use annals_core::{Json, MemoryStore};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let s = annals_crypto::Shredder::new(["/a"])?;
    /// let plain = Json::from_raw(r#"{ "a": 1 }"#);
    /// assert_eq!(s.decrypt(&store, &plain).await?, plain);
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn decrypt(&self, store: &dyn EventStore, payload: &Json) -> Result<Json> {
        let mut keys = Keys::new();
        decrypt_json(store, payload, &mut keys).await
    }

    /// The event with its payload decrypted ([`Shredder::decrypt`]).
    ///
    /// ```
    /// # use annals_core::{EventStore, ExpectedVersion, MemoryStore, ProposedEvent, StreamId, Json, ReadAll};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let s = annals_crypto::Shredder::new(["/name"])?;
    /// let sealed = s.encrypt(&store, "u1", &Json::from_raw(r#"{"name":"Ann"}"#)).await?;
    /// store.append_to_stream(&StreamId::new("u1"), ExpectedVersion::Any, vec![ProposedEvent::new("Registered", sealed)]).await?;
    /// let event = store.read_all(ReadAll::forward()).await?.events.remove(0);
    /// let open = s.decrypt_event(&store, event).await?;
    /// assert_eq!(open.payload.as_str(), Some(r#"{"name":"Ann"}"#));
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn decrypt_event(
        &self,
        store: &dyn EventStore,
        event: RecordedEvent,
    ) -> Result<RecordedEvent> {
        let mut keys = Keys::new();
        decrypt_one(store, event, &mut keys).await
    }

    /// Every event decrypted, looking each subject's key up once.
    ///
    /// ```
    /// # use annals_core::MemoryStore;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let s = annals_crypto::Shredder::new(["/name"])?;
    /// assert!(s.decrypt_events(&MemoryStore::new(), vec![]).await?.is_empty());
    /// # Ok::<(), annals_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn decrypt_events(
        &self,
        store: &dyn EventStore,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>> {
        let mut keys = Keys::new();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(decrypt_one(store, e, &mut keys).await?);
        }
        Ok(out)
    }
}

async fn decrypt_one(
    store: &dyn EventStore,
    mut event: RecordedEvent,
    keys: &mut Keys,
) -> Result<RecordedEvent> {
    event.payload = decrypt_json(store, &event.payload, keys)
        .await
        .map_err(|e| match e {
            Error::Corrupted { detail, .. } => Error::Corrupted {
                location: format!("event {} (position {}) payload", event.id, event.position),
                detail,
            },
            other => other,
        })?;
    Ok(event)
}

async fn decrypt_json(store: &dyn EventStore, payload: &Json, keys: &mut Keys) -> Result<Json> {
    // Cheap test first: most payloads carry no envelope at all.
    let has_envelope = payload
        .as_bytes()
        .windows(ENVELOPE_PREFIX.len())
        .any(|w| w == ENVELOPE_PREFIX.as_bytes());
    if !has_envelope {
        return Ok(payload.clone());
    }
    let mut value: Value = payload
        .parse()
        .map_err(|e| Error::invalid("payload", format!("not JSON: {e}")))?;
    let mut envelopes = Vec::new();
    collect_envelopes(&value, String::new(), &mut envelopes);
    for (pointer, subject) in envelopes {
        if !keys.contains_key(&subject) {
            let key = match store.get_secret(&Shredder::secret_id(&subject)).await? {
                Some(secret) => match secret.secret {
                    Some(text) => Some(decode_key(&secret.id, &text)?),
                    None => None,
                },
                None => None,
            };
            keys.insert(subject.clone(), key);
        }
        let Some(field) = value.pointer_mut(&pointer) else {
            continue;
        };
        let opened = match (keys.get(&subject), field.as_str()) {
            (Some(Some(key)), Some(text)) => {
                let plain = open(key, text)?;
                serde_json::from_slice(&plain).map_err(|e| Error::Corrupted {
                    location: pointer.clone(),
                    detail: format!("decrypted field is not JSON: {e}"),
                })?
            }
            _ => Value::String(ERASED.to_owned()),
        };
        *field = opened;
    }
    Json::from_value(&value)
}

/// (JSON pointer, subject) of every envelope string in `value`.
fn collect_envelopes(value: &Value, at: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => {
            if let Some(subject) = envelope_subject(s) {
                out.push((at, subject));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_envelopes(v, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                collect_envelopes(v, format!("{at}/{escaped}"), out);
            }
        }
        _ => {}
    }
}

fn envelope_subject(s: &str) -> Option<String> {
    let rest = s.strip_prefix(ENVELOPE_PREFIX)?;
    let (subject, _) = rest.split_once(':')?;
    let bytes = URL_SAFE_NO_PAD.decode(subject).ok()?;
    String::from_utf8(bytes).ok()
}

fn decode_key(id: &str, text: &str) -> Result<Key<Aes256Gcm>> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| Error::Corrupted {
        location: format!("secret {id:?}"),
        detail: format!("not a base64 key: {e}"),
    })?;
    if bytes.len() != 32 {
        return Err(Error::Corrupted {
            location: format!("secret {id:?}"),
            detail: format!("a key has 32 bytes, this one {}", bytes.len()),
        });
    }
    Ok(*Key::<Aes256Gcm>::from_slice(&bytes))
}

fn seal(key: &Key<Aes256Gcm>, subject: &str, plain: &[u8]) -> Result<String> {
    let cipher = Aes256Gcm::new(key);
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: subject.as_bytes(),
            },
        )
        .map_err(|_| Error::invalid("payload", "the field could not be encrypted"))?;
    let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    Ok(format!(
        "{ENVELOPE_PREFIX}{}:{}",
        URL_SAFE_NO_PAD.encode(subject.as_bytes()),
        STANDARD.encode(bytes)
    ))
}

fn open(key: &Key<Aes256Gcm>, envelope: &str) -> Result<Vec<u8>> {
    let bad = |detail: &str| Error::Corrupted {
        location: "encrypted field".into(),
        detail: detail.to_owned(),
    };
    let rest = envelope
        .strip_prefix(ENVELOPE_PREFIX)
        .ok_or_else(|| bad("not an envelope"))?;
    let (subject, data) = rest.split_once(':').ok_or_else(|| bad("no ciphertext"))?;
    let subject = URL_SAFE_NO_PAD
        .decode(subject)
        .map_err(|_| bad("subject is not base64url"))?;
    let bytes = STANDARD
        .decode(data)
        .map_err(|_| bad("ciphertext is not base64"))?;
    if bytes.len() < NONCE_BYTES {
        return Err(bad("ciphertext too short"));
    }
    let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
    Aes256Gcm::new(key)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &subject,
            },
        )
        .map_err(|_| bad("authentication failed (tampered ciphertext or a wrong key)"))
}
