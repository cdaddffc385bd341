//! The congestion controller: webrtc-rs's GCC, its target kept within what
//! the path delivers ([`DeliveryGuard`]) and published in the
//! [`SendBudget`] for the video encoder and the pacer.

use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

use super::SendBudget;
use super::delivery_guard::DeliveryGuard;
use super::wire::PACKET_OVERHEAD_BYTES;

/// GCC, kept within reach of what the path delivers, publishing its target
/// in the [`SendBudget`] the video encoder spends (the pacer hears it
/// through the interceptor chain).
pub(crate) struct PublishingEstimator {
    pub(crate) inner: Gcc,
    pub(crate) guard: DeliveryGuard,
    pub(crate) budget: SendBudget,
    /// The budget's count of new sources when last looked at.
    pub(crate) sources_seen: u64,
    /// The target as last worked out (the guard keeps state between two).
    pub(crate) target: f64,
}

impl PublishingEstimator {
    /// GCC's delay-based half, within the guard. Its loss-based half is
    /// left out: it cuts by half the loss share every 200 ms while loss is
    /// above 10 %, so the loss of one overshoot takes the target to the
    /// floor, and below 2 % it only climbs 5 % a step; the guard's ceiling
    /// answers loss from what got through instead.
    fn update_target(&mut self) {
        self.target = self
            .guard
            .limit(self.inner.delay_based_bitrate())
            .max(self.guard.floor());
    }

    /// Takes on the ceiling of the source now sent (see
    /// [`SendBudget::set_ceiling`]), and tells the guard of a new source.
    fn follow_source(&mut self, now: Instant) {
        let sources = self.budget.sources();
        if sources != self.sources_seen {
            self.sources_seen = sources;
            self.guard.new_source(now);
        }
        self.follow_ceiling();
    }

    fn follow_ceiling(&mut self) {
        if let Some(ceiling) = self.budget.ceiling()
            && ceiling as f64 != self.inner.max()
        {
            tracing::debug!(
                from_kbps = self.inner.max() as u64 / 1000,
                to_kbps = ceiling / 1000,
                "video ceiling"
            );
            self.inner.set_max(ceiling as f64);
        }
    }

    /// Works out the target and publishes it in the budget.
    fn publish(&mut self) {
        self.update_target();
        let target = self.target as u64;
        self.budget.set_path_limited(self.guard.ceiling().is_some());
        let before = self.budget.set_target(target);
        if before.abs_diff(target) * 10 > before {
            tracing::debug!(
                kbps = target / 1000,
                gcc_kbps = self.inner.delay_based_bitrate() as u64 / 1000,
                gcc_loss_kbps = self.inner.loss_based_bitrate() as u64 / 1000,
                ceiling_kbps = self.guard.ceiling().map(|c| c as u64 / 1000),
                "video target"
            );
        }
    }
}

impl BandwidthEstimator for PublishingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        // Measured as the link measures them: a target in RTP bytes would
        // leave the headers of every packet unbudgeted.
        let on_the_wire: Vec<PacketReport> = reports
            .iter()
            .map(|report| PacketReport {
                size: report.size + PACKET_OVERHEAD_BYTES,
                ..report.clone()
            })
            .collect();
        tracing::trace!(
            reported = reports.len(),
            arrived = reports.iter().filter(|r| r.arrived).count(),
            "transport feedback"
        );
        if let Some(newest) = reports.iter().map(|report| report.departure).max() {
            self.budget.note_reported_until(newest);
        }
        self.follow_source(now);
        self.inner.on_reports(now, &on_the_wire);
        self.guard.on_reports(now, &on_the_wire);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.follow_source(now);
        self.guard.tick(now);
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimator(budget: &SendBudget, max_bps: f64) -> PublishingEstimator {
        PublishingEstimator {
            inner: Gcc::new(max_bps, 100_000.0, max_bps),
            guard: DeliveryGuard::with_floor(100_000.0),
            budget: budget.clone(),
            sources_seen: budget.sources(),
            target: max_bps,
        }
    }

    #[test]
    fn the_ceiling_of_the_source_sent_becomes_the_controllers() {
        let budget = SendBudget::default();
        let mut estimator = estimator(&budget, 1_382_400.0);
        let now = Instant::now();

        // No ceiling set yet: the one it was built with holds.
        estimator.handle_timeout(now);
        assert_eq!(estimator.inner.max(), 1_382_400.0);
        assert_eq!(budget.target_bps(), 1_382_400);

        // A screen is shared: a higher ceiling, climbed to, not jumped to.
        budget.set_ceiling(2_500_000);
        estimator.handle_timeout(now);
        assert_eq!(estimator.inner.max(), 2_500_000.0);
        assert_eq!(budget.target_bps(), 1_382_400);

        // Back on a camera with a lower ceiling than the target: at once.
        budget.set_ceiling(800_000);
        estimator.handle_timeout(now);
        assert_eq!(estimator.inner.max(), 800_000.0);
        assert_eq!(budget.target_bps(), 800_000);
    }

    #[test]
    fn a_new_source_reaches_the_guard_once() {
        let budget = SendBudget::default();
        budget.note_new_source();
        // Built after it: that source is the one it starts with.
        let mut estimator = estimator(&budget, 1_382_400.0);
        estimator.handle_timeout(Instant::now());
        assert_eq!(estimator.sources_seen, 1);
        budget.note_new_source();
        budget.note_new_source();
        estimator.handle_timeout(Instant::now());
        assert_eq!(estimator.sources_seen, 3);
    }
}
