//! Mapping driver errors into the one Annals error type.

use annals_core::Error;

/// The backend name carried by [`Error::Backend`].
pub(crate) const BACKEND: &str = "postgres";

/// SQLSTATE of a unique-constraint violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// Maps a driver error: a closed pool is [`Error::Closed`]; everything else is
/// [`Error::Backend`]. Conflict signals (SQLSTATE 23505) are mapped by their callers,
/// which know what the conflict means.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match err {
        sqlx::Error::PoolClosed => Error::Closed,
        other => Error::backend(BACKEND, other),
    }
}

/// The name of the unique constraint a statement violated, if that is what failed.
pub(crate) fn unique_violation(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

/// Whether the error means the connection can no longer be trusted (I/O, protocol).
pub(crate) fn connection_broken(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
    )
}

/// A stored value that cannot be turned back into what was written.
pub(crate) fn corrupted(location: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::Corrupted {
        location: location.into(),
        detail: detail.into(),
    }
}
