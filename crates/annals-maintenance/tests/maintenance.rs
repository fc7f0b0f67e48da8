//! The maintenance toolkit against real backends: the in-memory reference and the
//! embedded store on disk (PostgreSQL in `postgres.rs`, the HTTP client in `http.rs`):
//! the same list of behaviours on each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod memory {
    crate::maintenance_suite!(Some(crate::support::Backend::Memory));
}

mod embedded {
    crate::maintenance_suite!(Some(crate::support::Backend::embedded()));
}
