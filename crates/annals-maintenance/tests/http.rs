//! The maintenance toolkit through the HTTP client against a real server (embedded
//! stores behind it): every export, import, incremental-import, secrets and copy
//! behaviour the other backends pass, over the wire — and copies across the wire in both
//! directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use annals_core::EventStore;
use annals_maintenance::{copy, CopyOptions};
use support::*;

fn backend() -> Backend {
    Backend::http()
}

macro_rules! over_http {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                support::$name(&backend()).await;
            }
        )*
    };
}

over_http!(
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

/// A copy from an embedded store to a remote one and back is lossless both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_cross_the_wire_both_ways() {
    let local = Backend::embedded();
    let source = local.open().await;
    populate(&source, 40).await;
    let remote = backend().open().await;
    let there = copy(&source, &remote, CopyOptions::default())
        .await
        .unwrap();
    assert!(there.verified(), "{there:?}");
    let back: Arc<dyn EventStore> = local.open().await;
    let again = copy(&remote, &back, CopyOptions::default()).await.unwrap();
    assert!(again.verified(), "{again:?}");
    assert_eq!(there.source, again.target);
}
