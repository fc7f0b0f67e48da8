//! # annals-testkit
//!
//! The behaviour of an Annals event store, written once and run against every backend:
//!
//! - [`conformance`]: one public async function per behaviour, each taking a fresh,
//!   empty store and panicking with a clear message on any deviation;
//! - [`conformance_suite!`]: generates one `#[tokio::test]` per conformance function
//!   from a factory, so a backend runs the whole suite with one line and failures are
//!   reported per behaviour;
//! - [`model`]: a model-based property test that drives random operation sequences
//!   against a backend and against [`annals_core::MemoryStore`], the reference, and
//!   compares every answer;
//! - [`services`]: the one rule for tests that need PostgreSQL, NATS, Redis or
//!   RabbitMQ: where it is, and whether the test runs, is skipped (loudly) or fails
//!   (under `CI=true`).
//!
//! A backend's `tests/conformance.rs` (here with the in-memory backend):
//!
//! ```no_run
//! use std::sync::Arc;
//! use annals_testkit::TestStore;
//!
//! annals_testkit::conformance_suite!(async {
//!     TestStore::new(Arc::new(annals_core::MemoryStore::new()))
//! });
//!
//! #[test]
//! fn behaves_like_the_reference() {
//!     annals_testkit::model::check_against_reference(64, || async {
//!         TestStore::new(Arc::new(annals_core::MemoryStore::new()))
//!     });
//! }
//! # fn main() {}
//! ```
//!
//! A single behaviour can also be checked directly:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = annals_core::MemoryStore::new();
//! annals_testkit::conformance::append_assigns_dense_positions_and_versions(&store).await;
//! # });
//! ```
//!
//! The suite needs this crate under its own name (`annals_testkit`) in the backend's
//! dev-dependencies; it brings its own tokio.

// This crate is a test suite: a failed `unwrap`/`expect` is a failed test, with the
// message saying which behaviour broke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::any::Any;
use std::sync::Arc;

use annals_core::EventStore;

pub mod conformance;
pub mod model;
pub mod services;
pub mod wrap;

/// What a backend's test factory hands the suite: a fresh, empty store, and whatever
/// must outlive it (a temporary directory, a database handle).
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn EventStore>,
    /// Dropped after the test, never looked at: keeps e.g. a temp dir alive.
    pub guard: Box<dyn Any + Send>,
}

impl TestStore {
    /// A store that needs nothing kept alive beside it.
    ///
    /// ```
    /// let t = annals_testkit::TestStore::new(std::sync::Arc::new(annals_core::MemoryStore::new()));
    /// assert_eq!(t.store.backend(), "memory");
    /// ```
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        TestStore {
            store,
            guard: Box::new(()),
        }
    }

    /// A store with a guard that is dropped only after the test is done with the store.
    ///
    /// ```
    /// let dir = std::env::temp_dir();
    /// let t = annals_testkit::TestStore::with_guard(
    ///     std::sync::Arc::new(annals_core::MemoryStore::new()), dir);
    /// assert!(t.guard.downcast_ref::<std::path::PathBuf>().is_some());
    /// ```
    pub fn with_guard(store: Arc<dyn EventStore>, guard: impl Any + Send) -> Self {
        TestStore {
            store,
            guard: Box::new(guard),
        }
    }
}

/// What the macros expand to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Generates one `#[tokio::test]` (multi-threaded runtime, 4 workers) per function of
/// [`conformance`], each running against a fresh store from `factory`, an async
/// expression that evaluates to a [`TestStore`].
///
/// ```no_run
/// annals_testkit::conformance_suite!(async {
///     annals_testkit::TestStore::new(std::sync::Arc::new(annals_core::MemoryStore::new()))
/// });
/// # fn main() {}
/// ```
///
/// This is the one list of the suite: a new conformance function is added here, as
/// `ref name` when it takes `&dyn EventStore` or `arc name` when it takes
/// `Arc<dyn EventStore>`.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::__conformance_tests! { ($factory)
            ref append_assigns_dense_positions_and_versions,
            ref append_shares_commit_id_and_numbers_commit_sequence,
            ref append_assigns_non_decreasing_timestamps,
            ref append_keeps_explicit_timestamps,
            ref timestamps_outside_years_0_to_9999_are_invalid_input,
            ref append_keeps_payload_and_metadata_byte_for_byte,
            ref append_generates_unique_event_ids,
            ref expected_version_any_accepts_every_version,
            ref expected_version_no_stream_requires_a_missing_stream,
            ref expected_version_stream_exists_requires_an_existing_stream,
            ref expected_version_exact_requires_that_version,
            ref explicit_versions_may_leave_gaps,
            ref explicit_version_not_above_current_is_a_version_conflict,
            ref explicit_version_zero_is_invalid_input,
            ref multi_stream_append_is_one_commit,
            ref multi_stream_append_stores_nothing_when_one_stream_fails,
            ref same_stream_twice_in_one_append_is_invalid_input,
            ref retry_with_same_ids_and_content_returns_the_original_result,
            ref retry_works_while_frozen,
            ref known_event_id_with_different_content_is_duplicate_event_id,
            ref partially_known_event_ids_are_duplicate_event_id,
            ref duplicate_event_id_inside_one_request_is_invalid_input,
            ref empty_append_succeeds_without_events,
            ref read_stream_selects_a_version_range,
            ref read_stream_backward_with_limit,
            ref read_stream_of_unknown_stream_is_empty,
            ref read_stream_from_version_zero_is_invalid_input,
            ref read_all_forward_and_backward,
            ref read_all_after_position,
            ref read_all_skip_and_limit,
            ref read_all_pages_chain_with_cursor,
            ref read_all_backward_pages_chain_with_cursor,
            ref read_all_cursor_continues_after_new_appends,
            ref read_all_filters_by_context_and_aggregate,
            ref read_all_filters_by_aggregate_ids_and_event_types,
            ref read_all_filters_by_inclusive_time_range,
            ref read_all_filters_by_version_range,
            ref read_all_filters_by_dispatched,
            ref read_all_refuses_cursor_never_issued,
            ref read_all_refuses_cursor_of_the_other_direction,
            ref streams_with_same_id_in_different_contexts_are_distinct,
            ref latest_event_by_filter,
            ref stream_info_and_stream_version,
            ref list_streams_filters_by_context_and_aggregate,
            ref list_streams_filters_by_creation_time,
            ref list_streams_orders_by_first_event_and_reverses,
            ref list_streams_pages_cover_every_stream_once,
            ref freeze_refuses_writes_and_keeps_reads,
            ref freeze_twice_is_already_frozen_and_unfreeze_twice_is_not_frozen,
            ref keyed_snapshots_save_load_overwrite_drop,
            ref stream_snapshot_latest_at_or_below_a_version,
            ref stream_snapshot_ties_go_to_the_most_recently_saved,
            ref stream_snapshot_prune_keeps_the_newest,
            ref stream_snapshot_version_zero_is_invalid_input,
            ref secrets_get_indexes_in_order,
            ref delete_secret_erases_the_value_and_the_id_is_never_reused,
            ref delete_unknown_or_deleted_secret_is_not_found,
            ref list_secrets_by_index_skip_limit_ids_and_tombstones,
            ref describe_counts_secrets,
            ref events_start_undispatched_and_undispatched_lists_them_in_order,
            ref mark_dispatched_is_idempotent,
            ref mark_dispatched_of_unknown_event_is_not_found,
            ref describe_reports_counts_head_and_last_timestamp,
            ref empty_stream_id_is_invalid_input,
            ref names_longer_than_256_bytes_are_invalid_input,
            ref names_with_nul_are_invalid_input,
            ref payload_that_is_not_json_is_invalid_input,
            ref payload_with_invalid_utf8_is_invalid_input,
            ref metadata_that_is_not_json_is_invalid_input,
            ref json_nested_deeper_than_128_is_invalid_input,
            ref invalid_names_outside_appends_are_invalid_input,
            arc concurrent_appends_with_same_expectation_have_one_winner,
            arc live_subscription_sees_every_event_once_in_order_under_concurrent_writers,
            arc live_subscription_wakes_for_the_last_of_concurrent_appends,
            ref subscription_from_the_middle_catches_up_then_follows_live,
            ref subscription_with_filter_delivers_only_matching_events,
            ref subscription_from_a_cursor,
            ref close_refuses_further_calls,
            ref close_ends_live_subscription,
            arc close_during_appends_fails_them_cleanly,
            ref drop_store_erases_data_and_closes,
            ref import_keeps_every_field_and_assigns_positions_after_the_head,
            ref import_of_an_export_into_an_empty_store_reproduces_it,
            ref import_of_a_stored_stream_version_is_skipped_or_a_version_conflict,
            ref import_of_a_stored_id_is_skipped_or_duplicate_event_id,
            ref import_below_a_streams_current_version_is_invalid_input,
            ref import_duplicates_inside_one_batch_are_invalid_input,
            ref import_with_one_bad_event_stores_nothing,
            ref maintenance_operations_work_while_frozen,
            ref import_with_expected_head_requires_that_head,
            ref import_keeps_timestamps_that_go_backwards,
            ref clear_events_empties_the_events_and_keeps_secrets_and_keyed_snapshots,
            ref clear_secrets_erases_every_secret_and_idx_restarts_at_zero,
            ref import_secrets_keeps_idx_and_tombstones,
            ref import_secrets_conflicts_are_skipped_or_secret_already_exists,
            ref overwrite_replaces_an_event_in_place,
            ref overwrite_replaces_the_id_or_keeps_it,
            ref overwrite_replaces_the_timestamp_or_keeps_it,
            ref overwrite_of_a_gap_or_a_non_increasing_version_is_a_version_conflict,
            ref overwrite_mixed_with_new_events_in_one_request,
            ref overwrite_of_version_one_moves_the_first_timestamp,
            ref overwrite_shows_in_filters_and_subscriptions,
            ref overwrite_is_frozen_or_a_conflict_without_the_flag_and_retries,
            ref overwrite_repeating_a_stored_event_beside_a_new_one,
            ref append_with_secret_set_stores_both,
            ref append_with_secret_set_on_a_used_id_stores_nothing,
            ref append_with_secret_delete_stores_the_tombstone_with_the_events,
            ref append_with_secret_while_frozen_is_frozen,
            ref append_with_secret_and_refused_events_stores_nothing,
            ref list_snapshots_in_key_order_after_a_key_with_a_limit,
            ref import_snapshots_keeps_timestamps_and_replaces_same_keys,
            ref list_stream_snapshots_lists_one_stream_oldest_save_first,
            ref mark_dispatched_at_marks_exactly_those_positions,
            ref mark_dispatched_at_of_a_missing_position_is_not_found,
        }
    };
}

/// Expands the list of [`conformance_suite!`] into tests; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (($factory:expr) $($how:ident $name:ident),* $(,)?) => {
        $( $crate::__conformance_test!(($factory) $how $name); )*
    };
}

/// One test of [`conformance_suite!`]; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    (($factory:expr) ref $name:ident) => {
        #[$crate::__private::tokio::test(
            flavor = "multi_thread",
            worker_threads = 4,
            crate = "annals_testkit::__private::tokio"
        )]
        async fn $name() {
            let test_store: $crate::TestStore = $factory.await;
            $crate::conformance::$name(&*test_store.store).await;
            drop(test_store);
        }
    };
    (($factory:expr) arc $name:ident) => {
        #[$crate::__private::tokio::test(
            flavor = "multi_thread",
            worker_threads = 4,
            crate = "annals_testkit::__private::tokio"
        )]
        async fn $name() {
            let test_store: $crate::TestStore = $factory.await;
            $crate::conformance::$name(::std::sync::Arc::clone(&test_store.store)).await;
            drop(test_store);
        }
    };
}
