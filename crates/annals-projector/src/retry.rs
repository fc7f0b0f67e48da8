//! Bounded exponential backoff, shared by the projector and the publisher.

use std::time::Duration;

/// An error returned by application code (a projection handler, a flush function, a
/// publish function). It is reported as text in the status APIs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a failing call is retried: the first retry waits `initial`, each next one twice
/// as long, never more than `max`; after `max_attempts` failed attempts in a row
/// (`None` = never) the caller gives up.
///
/// ```
/// use std::time::Duration;
/// use annals_projector::Backoff;
/// let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50), Some(5));
/// assert_eq!(b.delay(1), Duration::from_millis(10));
/// assert_eq!(b.delay(2), Duration::from_millis(20));
/// assert_eq!(b.delay(4), Duration::from_millis(50)); // capped
/// assert!(!b.exhausted(4));
/// assert!(b.exhausted(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// How many attempts in a row may fail before giving up; `None` = retry forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, at most 10 attempts.
    ///
    /// ```
    /// assert_eq!(annals_projector::Backoff::default().max_attempts, Some(10));
    /// ```
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_attempts: Some(10),
        }
    }
}

impl Backoff {
    /// A backoff policy.
    ///
    /// ```
    /// let b = annals_projector::Backoff::new(std::time::Duration::ZERO, std::time::Duration::ZERO, None);
    /// assert!(!b.exhausted(u32::MAX));
    /// ```
    pub fn new(initial: Duration, max: Duration, max_attempts: Option<u32>) -> Self {
        Backoff {
            initial,
            max,
            max_attempts,
        }
    }

    /// The wait after the `failures`-th failure in a row (1-based).
    ///
    /// ```
    /// let b = annals_projector::Backoff::default();
    /// assert_eq!(b.delay(3), std::time::Duration::from_millis(400));
    /// ```
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Whether `failures` failed attempts in a row use up the budget.
    ///
    /// ```
    /// assert!(annals_projector::Backoff::default().exhausted(10));
    /// ```
    pub fn exhausted(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|max| failures >= max)
    }
}

/// Why a retry loop ended without success.
#[derive(Debug)]
pub(crate) enum Abort {
    /// A stop was requested while waiting.
    Stopped,
    /// The budget is used up (or the error cannot be retried); the last error and how
    /// many attempts failed.
    GaveUp { error: String, attempts: u32 },
}

/// Waits out the backoff after a failure, or gives up. `stop` interrupts the wait.
pub(crate) async fn after_failure(
    backoff: &Backoff,
    failures: u32,
    error: String,
    retryable: bool,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), Abort> {
    if !retryable || backoff.exhausted(failures) {
        return Err(Abort::GaveUp {
            error,
            attempts: failures,
        });
    }
    tokio::select! {
        biased;
        _ = stopped(stop) => Err(Abort::Stopped),
        () = tokio::time::sleep(backoff.delay(failures)) => Ok(()),
    }
}

/// Resolves when a stop is requested (or the requester is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Whether a stop has been requested (or the requester is gone).
pub(crate) fn stop_requested(stop: &tokio::sync::watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Calls the store until the call succeeds: after each failure `on_failure` sees the
/// error and the attempt count, then the backoff is waited out (or the caller gives up,
/// as in [`after_failure`]). Shared by the projector and the publisher.
pub(crate) async fn retry_store_call<T, Fut>(
    backoff: &Backoff,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    retryable: fn(&annals_core::Error) -> bool,
    mut on_failure: impl FnMut(String, u32),
    mut call: impl FnMut() -> Fut,
) -> Result<T, Abort>
where
    Fut: std::future::Future<Output = annals_core::Result<T>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => {
                failures += 1;
                let error = e.to_string();
                on_failure(error.clone(), failures);
                after_failure(backoff, failures, error, retryable(&e), stop).await?;
            }
        }
    }
}
