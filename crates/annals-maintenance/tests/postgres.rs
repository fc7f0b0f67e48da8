//! The maintenance behaviour on PostgreSQL (`ANNALS_TEST_POSTGRES_URL`, default the
//! local server). Without a reachable server the tests fail under `CI=true` and are
//! skipped, saying so on the terminal, elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

fn backend() -> Option<Backend> {
    annals_testkit::services::POSTGRES
        .available()
        .map(Backend::Postgres)
}

macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(b) = backend() {
                    support::$name(&b).await;
                }
            }
        )*
    };
}

on_postgres!(
    export_then_import_reproduces_the_store,
    export_resumes_from_its_cursor,
    unterminated_last_line_is_left_for_the_next_run,
    hostile_lines_stop_the_import_at_their_line,
    conflicting_line_keeps_everything_before_it,
    a_refused_batch_keeps_the_lines_before_the_refused_one_or_nothing,
    a_line_with_invalid_fields_keeps_the_lines_before_it_in_both_modes,
    an_expected_head_is_carried_from_batch_to_batch,
    a_refused_secret_is_named_by_its_line,
    auto_mode_empties_freezes_and_unfreezes,
    batches_keep_commits_whole,
    incremental_import_appends_new_events_in_timestamp_order,
    incremental_import_refuses_older_events_and_writes_nothing,
    secrets_round_trip_with_idx_and_tombstones,
    copy_is_lossless_and_verified,
    copy_keeps_every_snapshot,
);
