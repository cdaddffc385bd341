//! How Duet measures. Every figure Duet prints (the call report, the load
//! tool, the benchmarks, the tests' checks) summarises samples with the same
//! percentile rule and reads a process's CPU time and memory the same way, so
//! two figures side by side are the same statistic of the same quantity.
//!
//! - [`Samples`] and [`Summary`]: percentiles by **nearest rank** (the value at
//!   rank `ceil(q·n)` of the sorted samples, never an interpolation), the rule
//!   the browser client's report uses too.
//! - [`ProcessUsage`]: CPU seconds and memory of any process, from Linux `/proc`.

mod process;

pub use process::ProcessUsage;

use serde::Serialize;

/// The value at percentile `q` (0–100) of `sorted` (ascending) by nearest
/// rank; `None` when there are no samples.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A set of measurements (milliseconds, usually), summarised on demand.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    values: Vec<f64>,
}

/// The percentiles every Duet report gives of a set of measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Samples {
    /// An empty set.
    pub fn new() -> Samples {
        Samples::default()
    }

    /// Adds one measurement; NaN and infinities are not measurements and are ignored.
    pub fn push(&mut self, value: f64) {
        if value.is_finite() {
            self.values.push(value);
        }
    }

    /// Number of measurements.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The measurements in the order they were taken.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Nearest-rank percentiles of all measurements, or `None` without any.
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }

    /// The median of the newest `n` measurements: what a figure is now, for a
    /// live display.
    pub fn recent_median(&self, n: usize) -> Option<f64> {
        let mut recent = self.values[self.values.len().saturating_sub(n)..].to_vec();
        recent.sort_by(f64::total_cmp);
        nearest_rank(&recent, 50.0)
    }
}

impl FromIterator<f64> for Samples {
    fn from_iter<I: IntoIterator<Item = f64>>(iter: I) -> Samples {
        let mut samples = Samples::new();
        for value in iter {
            samples.push(value);
        }
        samples
    }
}

impl Summary {
    /// Nearest-rank percentiles of `values` (any order; NaN ignored), or `None` when empty.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            p50: nearest_rank(&sorted, 50.0)?,
            p95: nearest_rank(&sorted, 95.0)?,
            p99: nearest_rank(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// The median of `values` by nearest rank (the lower middle of an even count),
/// or `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    Summary::of(values).map(|s| s.p50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Samples = (1..=100).map(f64::from).collect();
        let summary = samples.summary().expect("samples");
        assert_eq!(
            (summary.p50, summary.p95, summary.p99, summary.max),
            (50.0, 95.0, 99.0, 100.0)
        );
        // Four samples: the median is the second (rank ceil(2.0) = 2), not an average.
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(&[7.0]), Some(7.0));
    }

    #[test]
    fn nothing_measured_has_no_percentiles() {
        assert_eq!(Samples::new().summary(), None);
        assert_eq!(median(&[]), None);
        assert_eq!(Samples::new().recent_median(3), None);
    }

    #[test]
    fn non_finite_values_are_not_measurements() {
        let mut samples = Samples::new();
        samples.push(f64::NAN);
        samples.push(f64::INFINITY);
        samples.push(5.0);
        assert_eq!(samples.len(), 1);
        assert_eq!(median(&[f64::NAN, 1.0, 2.0, 3.0]), Some(2.0));
    }

    #[test]
    fn the_recent_median_looks_only_at_the_newest() {
        let samples: Samples = [100.0, 100.0, 100.0, 1.0, 2.0, 3.0].into_iter().collect();
        assert_eq!(samples.recent_median(3), Some(2.0));
        assert_eq!(samples.recent_median(100), Some(3.0));
    }

    #[test]
    fn a_summary_serialises_as_the_report_writes_it() {
        let summary = Summary::of(&[1.0, 2.0]).expect("samples");
        let json = serde_json::to_value(summary).expect("serialises");
        assert_eq!(json["p50"], 1.0);
        assert_eq!(json["max"], 2.0);
    }
}
