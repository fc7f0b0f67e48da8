//! The maintenance behaviour on PostgreSQL (`ANNALS_TEST_POSTGRES_URL`, default the
//! local server): the same list as every backend. Without a reachable server the tests
//! fail under `CI=true` and are skipped, saying so on the terminal, elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

crate::maintenance_suite!(annals_testkit::services::POSTGRES
    .available()
    .map(crate::support::Backend::Postgres));
