//! What a workload measures and the one JSON line it prints.

use std::time::Duration;

use serde::Serialize;

/// Per-operation latencies of one run.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    /// Room for `n` samples, so recording does not allocate while timing.
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }

    /// Adds one sample.
    pub fn record(&mut self, latency: Duration) {
        self.0.push(latency);
    }

    /// Adds every sample of another run (a concurrent writer's, say).
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The `q`-quantile (0 < q ≤ 1) by nearest rank, in microseconds; 0 when empty.
    fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, sorted.len()) - 1;
        sorted[index].as_secs_f64() * 1e6
    }

    /// The median and the 99th percentile, in microseconds.
    pub fn p50_p99_us(mut self) -> (f64, f64) {
        self.0.sort_unstable();
        (
            Self::quantile_us(&self.0, 0.50),
            Self::quantile_us(&self.0, 0.99),
        )
    }
}

/// What one workload run measured.
#[derive(Debug)]
pub struct Measured {
    /// Events written or read (syncs, for the fsync workload).
    pub events: u64,
    /// Wall-clock time of the timed part.
    pub elapsed: Duration,
    /// One sample per timed operation.
    pub latencies: Latencies,
}

/// The one JSON line a workload prints:
/// `{"workload":"w2","backend":"embedded","events":N,"seconds":S,"events_per_sec":R,"p50_us":..,"p99_us":..}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `w1` … `w6` or `fsync`.
    pub workload: &'static str,
    /// `memory`, `embedded`, or `raw` for the fsync workload.
    pub backend: &'static str,
    /// Events written or read (syncs, for the fsync workload).
    pub events: u64,
    /// Wall-clock seconds of the timed part.
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_sec: f64,
    /// Median per-operation latency, in microseconds.
    pub p50_us: f64,
    /// 99th-percentile per-operation latency, in microseconds.
    pub p99_us: f64,
    /// Events left undispatched at the end (`publisher-nats` only; must be 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undispatched: Option<u64>,
}

impl Report {
    /// Summarises a run.
    pub fn new(workload: &'static str, backend: &'static str, measured: Measured) -> Self {
        let seconds = measured.elapsed.as_secs_f64();
        let events_per_sec = if seconds > 0.0 {
            measured.events as f64 / seconds
        } else {
            0.0
        };
        let (p50_us, p99_us) = measured.latencies.p50_p99_us();
        Report {
            workload,
            backend,
            events: measured.events,
            seconds: round(seconds, 6),
            events_per_sec: round(events_per_sec, 1),
            p50_us: round(p50_us, 1),
            p99_us: round(p99_us, 1),
            undispatched: None,
        }
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: &[u64]) -> Latencies {
        let mut l = Latencies::default();
        for v in values {
            l.record(Duration::from_micros(*v));
        }
        l
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let l = micros(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(l.p50_p99_us(), (50.0, 99.0));
    }

    #[test]
    fn empty_latencies_report_zero() {
        assert_eq!(Latencies::default().p50_p99_us(), (0.0, 0.0));
    }

    #[test]
    fn report_serialises_fields_in_the_documented_order() {
        let report = Report::new(
            "w1",
            "memory",
            Measured {
                events: 4,
                elapsed: Duration::from_secs(2),
                latencies: micros(&[1, 2, 3, 4]),
            },
        );
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"workload":"w1","backend":"memory","events":4,"seconds":2.0,"events_per_sec":2.0,"p50_us":2.0,"p99_us":4.0}"#
        );
    }
}
