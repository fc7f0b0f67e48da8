//! A rate limit in messages per second.

use std::time::Duration;

use tokio::time::Instant;

use annals_core::{Error, Result};

/// Spaces messages so that message `n` (counting from 0) is never sent before
/// `start + n / rate` seconds: over any run, `count` messages take at least
/// `(count - 1) / rate` seconds. Without a rate, nothing waits.
///
/// ```
/// use annals_channels::RateLimiter;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut limiter = RateLimiter::new(Some(1000.0))?;
/// let start = std::time::Instant::now();
/// for _ in 0..11 {
///     limiter.acquire(1).await;
/// }
/// assert!(start.elapsed() >= std::time::Duration::from_millis(10));
/// assert!(RateLimiter::new(Some(0.0)).is_err());
/// # Ok::<(), annals_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_second: Option<f64>,
    start: Option<Instant>,
    sent: u64,
}

impl RateLimiter {
    /// A limiter at `per_second` messages per second (`None` = unlimited). A rate that
    /// is not a positive finite number is [`Error::InvalidInput`] on field `rate_limit`.
    ///
    /// ```
    /// assert!(annals_channels::RateLimiter::new(None).is_ok());
    /// assert!(annals_channels::RateLimiter::new(Some(f64::NAN)).is_err());
    /// ```
    pub fn new(per_second: Option<f64>) -> Result<Self> {
        if let Some(r) = per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::invalid(
                    "rate_limit",
                    format!("{r} is not a positive number of messages per second"),
                ));
            }
        }
        Ok(RateLimiter {
            per_second,
            start: None,
            sent: 0,
        })
    }

    /// The rate, if any.
    ///
    /// ```
    /// assert_eq!(annals_channels::RateLimiter::new(Some(5.0)).unwrap().per_second(), Some(5.0));
    /// ```
    pub fn per_second(&self) -> Option<f64> {
        self.per_second
    }

    /// A batch size that keeps bursts short under the rate (about a tenth of a second of
    /// messages, at least 1, at most `max`).
    ///
    /// ```
    /// let l = annals_channels::RateLimiter::new(Some(200.0)).unwrap();
    /// assert_eq!(l.batch_size(100), 20);
    /// assert_eq!(annals_channels::RateLimiter::new(None).unwrap().batch_size(100), 100);
    /// ```
    pub fn batch_size(&self, max: usize) -> usize {
        match self.per_second {
            Some(r) => ((r / 10.0).ceil() as usize).clamp(1, max.max(1)),
            None => max.max(1),
        }
    }

    /// Waits until the next `count` messages may be sent (the last of them on time),
    /// then counts them as sent.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut l = annals_channels::RateLimiter::new(None).unwrap();
    /// l.acquire(1_000_000).await; // no rate: returns at once
    /// # });
    /// ```
    pub async fn acquire(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        let Some(rate) = self.per_second else {
            return;
        };
        let start = *self.start.get_or_insert_with(Instant::now);
        let last = self.sent + count - 1;
        let due = start + Duration::from_secs_f64(last as f64 / rate);
        tokio::time::sleep_until(due).await;
        self.sent += count;
    }
}
