//! The one error type every Annals backend maps its failures into.

use std::sync::Arc;

use crate::model::{ExpectedVersion, Position, StreamId, Version};

/// Result alias used across Annals.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in an Annals store.
///
/// Backends translate their native failure signals (a unique-constraint violation, an
/// I/O error, a failed fsync) into these variants, so application code handles one set
/// of errors whatever the storage. [`Error::kind`] gives a comparable, copyable
/// classification (used by the HTTP server to choose a status code and by the
/// conformance suite to compare backends).
///
/// ```
/// use annals_core::{Error, ErrorKind};
/// let err = Error::invalid("events[0].type", "longer than 256 bytes");
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert_eq!(err.to_string(), "invalid input at events[0].type: longer than 256 bytes");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's current version did not satisfy the append's expectation.
    #[error("wrong expected version for stream {stream}: expected {expected}, actual version is {actual}")]
    WrongExpectedVersion {
        /// The stream the append targeted.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (0 = no stream).
        actual: Version,
    },
    /// An event carried an explicit version that is not above the stream's current one.
    #[error("version conflict in stream {stream}: version {version} is not above the current version {current}")]
    VersionConflict {
        /// The stream the event targeted.
        stream: StreamId,
        /// The version the event asked for.
        version: Version,
        /// The stream's current version.
        current: Version,
    },
    /// An event id already stored in this store was reused for different content.
    #[error("event id {id:?} is already used in this store for a different event")]
    DuplicateEventId {
        /// The reused id.
        id: String,
    },
    /// An import with an expected head position found the store's head elsewhere.
    #[error("wrong expected head position: expected {expected}, actual head position is {actual}")]
    WrongExpectedHead {
        /// The head position the caller expected.
        expected: Position,
        /// The store's head position when the import was checked.
        actual: Position,
    },
    /// The store is frozen; every write is refused until it is unfrozen.
    #[error("the store is frozen: writes are refused until it is unfrozen")]
    Frozen,
    /// `freeze` was called on a store that is already frozen.
    #[error("the store is already frozen")]
    AlreadyFrozen,
    /// `unfreeze` was called on a store that is not frozen.
    #[error("the store is not frozen")]
    NotFrozen,
    /// The named thing does not exist.
    #[error("{what} not found: {id:?}")]
    NotFound {
        /// What kind of thing was looked up: `event`, `secret`, `snapshot`, `store`.
        what: &'static str,
        /// The identifier that was looked up.
        id: String,
    },
    /// A secret id is in use, or was used before and deleted (ids are never reused).
    #[error("secret id {id:?} is already used in this store (secret ids are never reused)")]
    SecretAlreadyExists {
        /// The secret id.
        id: String,
    },
    /// An incremental import cannot be committed: the staged event at `index` (in staging
    /// order) is older than the store's newest event, and an incremental import only
    /// appends after it. Nothing was written.
    ///
    /// ```
    /// let err = annals_core::Error::ImportConflict { index: 2, reason: "older".into() };
    /// assert_eq!(err.kind(), annals_core::ErrorKind::ImportConflict);
    /// assert!(err.to_string().contains("staged[2]"));
    /// ```
    #[error("incremental import conflict at staged[{index}]: {reason}")]
    ImportConflict {
        /// The staged event's index, counted over every push of the import.
        index: usize,
        /// Why it cannot be appended.
        reason: String,
    },
    /// The caller's input is malformed; `field` names what was wrong and where.
    #[error("invalid input at {field}: {reason}")]
    InvalidInput {
        /// Where the bad value is, e.g. `events[2].payload` or `cursor`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A durable write failed earlier (e.g. fsync); the store refuses writes until reopened.
    #[error("the store is poisoned after a failed durable write and refuses writes until reopened: {reason}")]
    Poisoned {
        /// What failed originally.
        reason: String,
    },
    /// The store was closed (or dropped) and accepts no more calls.
    #[error("the store is closed")]
    Closed,
    /// Stored data failed a consistency check.
    #[error("corrupted data in {location}: {detail}")]
    Corrupted {
        /// Where: a table and key, a file and byte offset.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The backend does not support this operation.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },
    /// A failure inside the storage backend (I/O, driver, network).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// A copyable classification of [`Error`], for matching and comparing.
///
/// ```
/// use annals_core::{Error, ErrorKind};
/// assert_eq!(Error::Frozen.kind(), ErrorKind::Frozen);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::WrongExpectedVersion`].
    WrongExpectedVersion,
    /// See [`Error::VersionConflict`].
    VersionConflict,
    /// See [`Error::DuplicateEventId`].
    DuplicateEventId,
    /// See [`Error::WrongExpectedHead`].
    WrongExpectedHead,
    /// See [`Error::Frozen`].
    Frozen,
    /// See [`Error::AlreadyFrozen`].
    AlreadyFrozen,
    /// See [`Error::NotFrozen`].
    NotFrozen,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::SecretAlreadyExists`].
    SecretAlreadyExists,
    /// See [`Error::ImportConflict`].
    ImportConflict,
    /// See [`Error::InvalidInput`].
    InvalidInput,
    /// See [`Error::Poisoned`].
    Poisoned,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::Corrupted`].
    Corrupted,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::Backend`].
    Backend,
}

impl Error {
    /// An [`Error::InvalidInput`] naming the field and the reason.
    ///
    /// ```
    /// let err = annals_core::Error::invalid("cursor", "was never issued");
    /// assert!(err.to_string().contains("cursor"));
    /// ```
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::NotFound`].
    ///
    /// ```
    /// let err = annals_core::Error::not_found("secret", "user-1");
    /// assert_eq!(err.to_string(), "secret not found: \"user-1\"");
    /// ```
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }

    /// An [`Error::Backend`] wrapping any error of the named backend.
    ///
    /// ```
    /// let io = std::io::Error::other("disk full");
    /// let err = annals_core::Error::backend("embedded", io);
    /// assert_eq!(err.to_string(), "embedded backend error: disk full");
    /// ```
    pub fn backend(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            backend,
            source: Arc::new(source),
        }
    }

    /// The copyable classification of this error.
    ///
    /// ```
    /// assert_eq!(annals_core::Error::Closed.kind(), annals_core::ErrorKind::Closed);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongExpectedVersion { .. } => ErrorKind::WrongExpectedVersion,
            Error::VersionConflict { .. } => ErrorKind::VersionConflict,
            Error::DuplicateEventId { .. } => ErrorKind::DuplicateEventId,
            Error::WrongExpectedHead { .. } => ErrorKind::WrongExpectedHead,
            Error::Frozen => ErrorKind::Frozen,
            Error::AlreadyFrozen => ErrorKind::AlreadyFrozen,
            Error::NotFrozen => ErrorKind::NotFrozen,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::SecretAlreadyExists { .. } => ErrorKind::SecretAlreadyExists,
            Error::ImportConflict { .. } => ErrorKind::ImportConflict,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Poisoned { .. } => ErrorKind::Poisoned,
            Error::Closed => ErrorKind::Closed,
            Error::Corrupted { .. } => ErrorKind::Corrupted,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Backend { .. } => ErrorKind::Backend,
        }
    }
}

/// Errors compare by content where the content is data, and by kind for wrapped sources.
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Error::Backend { backend: a, .. }, Error::Backend { backend: b, .. }) => a == b,
            (Error::Poisoned { .. }, Error::Poisoned { .. }) => true,
            (Error::Corrupted { .. }, Error::Corrupted { .. }) => true,
            _ => self.kind() == other.kind() && self.to_string() == other.to_string(),
        }
    }
}
