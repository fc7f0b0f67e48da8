//! The model-based test must notice a backend that deviates from the reference: these
//! wrap the reference with one injected bug each and expect the test to fail.

use std::sync::Arc;

use annals_core::{
    AppendRequest, AppendResult, Direction, Error, EventStore, MemoryStore, ReadAll, ReadAllPage,
    Result,
};
use annals_testkit::wrap::{Intercept, Wrapped};
use annals_testkit::TestStore;

#[derive(Clone, Copy)]
enum Bug {
    /// Backward store-wide reads ignore `skip`.
    BackwardSkipIgnored,
    /// Idempotent retries are refused as duplicates.
    RetryRefused,
    /// Appends ignore the overwrite flag.
    OverwriteIgnored,
    /// Appends drop their secret change.
    SecretChangeDropped,
}

struct Buggy {
    inner: MemoryStore,
    bug: Bug,
}

#[async_trait::async_trait]
impl Intercept for Buggy {
    fn inner(&self) -> &dyn EventStore {
        &self.inner
    }
    fn backend(&self) -> &'static str {
        "buggy"
    }
    async fn append(&self, mut request: AppendRequest) -> Result<AppendResult> {
        match self.bug {
            Bug::OverwriteIgnored => request.overwrite = false,
            Bug::SecretChangeDropped => request.secret = None,
            _ => {}
        }
        let result = self.inner.append(request).await?;
        match self.bug {
            Bug::RetryRefused if result.retried => Err(Error::DuplicateEventId {
                id: result.events[0].id.to_string(),
            }),
            _ => Ok(result),
        }
    }
    async fn read_all(&self, mut read: ReadAll) -> Result<ReadAllPage> {
        if matches!(self.bug, Bug::BackwardSkipIgnored) && read.direction == Direction::Backward {
            read.skip = 0;
        }
        self.inner.read_all(read).await
    }
}

fn check(bug: Bug) {
    annals_testkit::model::check_against_reference(256, move || async move {
        TestStore::new(Arc::new(Wrapped(Buggy {
            inner: MemoryStore::new(),
            bug,
        })))
    });
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_backward_reads_that_ignore_skip() {
    check(Bug::BackwardSkipIgnored);
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_refused_retries() {
    check(Bug::RetryRefused);
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_ignored_overwrites() {
    check(Bug::OverwriteIgnored);
}

#[test]
#[should_panic(expected = "the backend differs from the reference")]
fn model_test_catches_dropped_secret_changes() {
    check(Bug::SecretChangeDropped);
}
