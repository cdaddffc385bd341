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
}

impl PublishingEstimator {
    /// GCC's delay-based half, within the guard. Its loss-based half is
    /// left out: it cuts by half the loss share every 200 ms while loss is
    /// above 10 %, so the loss of one overshoot takes the target to the
    /// floor, and below 2 % it only climbs 5 % a step; the guard's ceiling
    /// answers loss from what got through instead.
    fn target(&self) -> f64 {
        self.guard
            .limit(self.inner.delay_based_bitrate())
            .max(self.guard.floor())
    }

    fn publish(&self) {
        let target = self.target() as u64;
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
        self.inner.on_reports(now, &on_the_wire);
        self.guard.on_reports(now, &on_the_wire);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.target()
    }

    fn handle_timeout(&mut self, now: Instant) {
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
