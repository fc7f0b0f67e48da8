//! `GET /metrics`: counters, gauges and a latency histogram per route in the Prometheus
//! text format; and one log line per request (`debug`, or `warn` for a 5xx).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
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
    /// Latency per route (`METHOD /path/{template}`; `unmatched` for unknown paths): the
    /// routes are a fixed set, so the label's cardinality is bounded.
    latency: std::sync::Mutex<std::collections::BTreeMap<String, Arc<Histogram>>>,
    /// The lag (events behind the head) each open subscription had at its last check.
    subscriber_lags: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    next_subscription: AtomicU64,
}

/// One route's request latencies.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    micros_sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.micros_sum
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
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

    fn observe(&self, route: &str, seconds: f64, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let histogram = {
            // Plain counters stay consistent whatever a panicking holder did.
            let mut routes = self
                .latency
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match routes.get(route) {
                Some(h) => Arc::clone(h),
                None => Arc::clone(routes.entry(route.to_owned()).or_default()),
            }
        };
        histogram.observe(seconds);
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
            "annals_http_requests_total",
            "Requests answered.",
            "counter",
            get(&self.requests),
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
            "# HELP {name} Time to answer a request, per route (to the first byte for subscriptions and exports).\n# TYPE {name} histogram"
        );
        let routes: Vec<(String, Arc<Histogram>)> = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(route, h)| (route.clone(), Arc::clone(h)))
            .collect();
        for (route, h) in routes {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            for (bucket, bound) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    get(bucket)
                );
            }
            let count = get(&h.count);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{route}\"}} {}",
                get(&h.micros_sum) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        out
    }
}

/// Times every request under its route and logs it: `debug` normally, `warn` when the
/// answer is a 5xx (a server fault or an unavailable store).
pub(crate) async fn track(
    State(reg): State<Arc<Registry>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{method} {}", path.as_str()),
        None => "unmatched".to_owned(),
    };
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    reg.metrics.observe(&route, elapsed.as_secs_f64(), status);
    let micros = elapsed.as_micros() as u64;
    if status >= 500 {
        tracing::warn!(%route, status, micros, "request failed");
    } else {
        tracing::debug!(%route, status, micros, "request");
    }
    response
}
