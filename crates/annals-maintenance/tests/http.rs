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

crate::maintenance_suite!(Some(Backend::http()));

/// A copy from an embedded store to a remote one and back is lossless both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_cross_the_wire_both_ways() {
    let local = Backend::embedded();
    let source = local.open().await;
    populate(&source, 40).await;
    let remote = Backend::http().open().await;
    let there = copy(&source, &remote, CopyOptions::default())
        .await
        .unwrap();
    assert!(there.verified(), "{there:?}");
    let back: Arc<dyn EventStore> = local.open().await;
    let again = copy(&remote, &back, CopyOptions::default()).await.unwrap();
    assert!(again.verified(), "{again:?}");
    assert_eq!(there.source, again.target);
}
