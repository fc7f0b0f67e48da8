//! The maintenance toolkit against real backends: the in-memory reference and the
//! embedded store on disk. Every test runs on both (and on PostgreSQL — see
//! `postgres.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Backend::Memory).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::Backend::embedded()).await;
                }
            )*
        }
    };
}

on_every_backend!(
    export_then_import_reproduces_the_store,
    export_resumes_from_its_cursor,
    import_resumes_from_the_reported_offset_after_each_batch,
    unterminated_last_line_is_left_for_the_next_run,
    hostile_lines_stop_the_import_at_their_line,
    conflicting_line_keeps_everything_before_it,
    a_refused_batch_keeps_the_lines_before_the_refused_one_or_nothing,
    a_line_with_invalid_fields_keeps_the_lines_before_it_in_both_modes,
    an_expected_head_is_carried_from_batch_to_batch,
    a_refused_secret_is_named_by_its_line,
    auto_mode_empties_freezes_and_unfreezes,
    auto_mode_unfreezes_after_a_failed_import,
    batches_keep_commits_whole,
    incremental_import_appends_new_events_in_timestamp_order,
    incremental_import_refuses_older_events_and_writes_nothing,
    incremental_rollback_writes_nothing,
    secrets_round_trip_with_idx_and_tombstones,
    secrets_export_spans_pages,
    copy_is_lossless_and_verified,
    copy_refuses_a_non_empty_target,
    copy_keeps_every_snapshot,
    copy_without_stream_snapshots_leaves_them_out,
);
