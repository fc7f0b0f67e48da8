//! `GET /metrics`: counters, gauges and a latency histogram in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::registry::Registry;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// The server's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) appends: AtomicU64,
    pub(crate) appended_events: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) subscriptions_open: AtomicU64,
    pub(crate) subscription_events: AtomicU64,
    pub(crate) subscriptions_lagged: AtomicU64,
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_micros_sum: AtomicU64,
    /// The lag (events behind the head) each open subscription had at its last check.
    subscriber_lags: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    next_subscription: AtomicU64,
}

/// Counts one open subscription while it lives, and its lag.
pub(crate) struct OpenSubscription(Arc<Registry>, u64);

impl OpenSubscription {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        registry
            .metrics
            .subscriptions_open
            .fetch_add(1, Ordering::Relaxed);
        let id = registry
            .metrics
            .next_subscription
            .fetch_add(1, Ordering::Relaxed);
        OpenSubscription(registry, id)
    }

    /// Records how far behind the head this subscription was at its last check.
    pub(crate) fn lag(&self, events: u64) {
        self.0.metrics.lags().insert(self.1, events);
    }

    pub(crate) fn sent(&self) {
        self.0
            .metrics
            .subscription_events
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.metrics.lags().remove(&self.1);
        self.0
            .metrics
            .subscriptions_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    fn lags(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, u64>> {
        // A map of plain numbers is consistent whatever a panicking holder did.
        self.subscriber_lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn observe(&self, seconds: f64, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_micros_sum
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        counter(
            "annals_appends_total",
            "Successful append requests.",
            "counter",
            get(&self.appends),
        );
        counter(
            "annals_appended_events_total",
            "Events written by successful appends.",
            "counter",
            get(&self.appended_events),
        );
        counter(
            "annals_reads_total",
            "Read requests (events, streams).",
            "counter",
            get(&self.reads),
        );
        counter(
            "annals_subscriptions_open",
            "Live subscriptions (SSE) open now.",
            "gauge",
            get(&self.subscriptions_open),
        );
        let (max_lag, total_lag) = {
            let lags = self.lags();
            (
                lags.values().copied().max().unwrap_or(0),
                lags.values().sum::<u64>(),
            )
        };
        counter(
            "annals_subscriber_lag_events_max",
            "The largest lag (events behind the head) of an open subscription at its last check.",
            "gauge",
            max_lag,
        );
        counter(
            "annals_subscriber_lag_events_sum",
            "The lags of all open subscriptions at their last checks, added up.",
            "gauge",
            total_lag,
        );
        counter(
            "annals_subscription_events_total",
            "Events sent to subscribers.",
            "counter",
            get(&self.subscription_events),
        );
        counter(
            "annals_subscriptions_lagged_total",
            "Subscriptions closed with `event: lagged` (past --max-subscriber-lag).",
            "counter",
            get(&self.subscriptions_lagged),
        );
        counter(
            "annals_http_client_errors_total",
            "Requests answered with a 4xx status.",
            "counter",
            get(&self.client_errors),
        );
        counter(
            "annals_http_server_errors_total",
            "Requests answered with a 5xx status.",
            "counter",
            get(&self.server_errors),
        );
        let name = "annals_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a request (to the first byte for subscriptions).\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.requests);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&self.latency_micros_sum) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Times every request.
pub(crate) async fn track(
    State(reg): State<Arc<Registry>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    reg.metrics
        .observe(started.elapsed().as_secs_f64(), response.status().as_u16());
    response
}
