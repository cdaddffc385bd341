//! The congestion controller's target, kept within what the path delivers,
//! and published for the video encoder.
//!
//! webrtc-rs's GCC raises its delay-based target 8 % every 200 ms (×1.47 a
//! second) with nothing tying it to what arrives, so on a narrow link it
//! climbs to twice the link's rate between two detections, and every climb
//! is a burst of loss. libwebrtc keeps the delay-based estimate under 1.5 ×
//! the acknowledged bitrate; [`DeliveryGuard`] does the same from the very
//! transport-wide feedback GCC reads. It also watches the queue the sender
//! builds on the path (one-way delay above its minimum): when it grows past
//! [`QUEUE_LIMIT`], or loss is heavy, the guard sets a ceiling just under
//! what got through and lets it rise only [`CEILING_GROWTH`] a second, so a
//! narrow link is followed without the climb-and-crash of GCC alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// How far back delivery is measured.
const WINDOW: Duration = Duration::from_secs(1);
/// Less feedback than this says too little about the path.
const MIN_SPAN: Duration = Duration::from_millis(500);
/// The target may lead what arrives by this factor (libwebrtc's).
const HEADROOM: f64 = 1.5;
/// Above this share of packets lost, the path is overused.
const HEAVY_LOSS: f64 = 0.1;
/// A queue this deep on the path (one-way delay above its minimum) is overuse.
const QUEUE_LIMIT: Duration = Duration::from_millis(40);
/// How long the lowest one-way delay is remembered as the empty-queue one.
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// The recent one-way delay is the average of this much feedback.
const RECENT: Duration = Duration::from_millis(200);
/// After overuse the ceiling is this share of what got through...
const BACK_OFF: f64 = 0.85;
/// ...and rises this much a second while the path keeps up.
const CEILING_GROWTH: f64 = 0.10;
/// Backing off again within this long would act twice on one queue.
const BACK_OFF_INTERVAL: Duration = Duration::from_millis(300);

/// What the transport-wide feedback of the last second says got through.
#[derive(Debug, Default)]
pub(crate) struct DeliveryGuard {
    /// (when reported, bytes, arrived)
    reports: VecDeque<(Instant, usize, bool)>,
    /// (when reported, one-way delay in ms on an arbitrary origin)
    delays: VecDeque<(Instant, f64)>,
    /// The send clock's origin for one-way delays.
    epoch: Option<Instant>,
    /// Set on overuse; rises while the path keeps up; gone once far above.
    ceiling: Option<f64>,
    last_change: Option<Instant>,
}

impl DeliveryGuard {
    pub(crate) fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        for report in reports {
            self.record(now, report.size, report.arrived);
            if let Some(arrival) = report.arrival {
                let epoch = *self.epoch.get_or_insert(report.departure);
                let sent = report.departure.saturating_duration_since(epoch);
                let delay_ms = (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0;
                self.record_delay(now, delay_ms);
            }
        }
        self.update_ceiling(now);
    }

    fn record_delay(&mut self, now: Instant, delay_ms: f64) {
        self.delays.push_back((now, delay_ms));
        while self
            .delays
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > BASE_WINDOW)
        {
            self.delays.pop_front();
        }
    }

    /// How deep the queue on the path is now: the recent one-way delay above
    /// the lowest of the last [`BASE_WINDOW`].
    fn queue(&self, now: Instant) -> Option<Duration> {
        let base = self.delays.iter().map(|(_, d)| *d).reduce(f64::min)?;
        let recent: Vec<f64> = self
            .delays
            .iter()
            .rev()
            .take_while(|(at, _)| now.saturating_duration_since(*at) <= RECENT)
            .map(|(_, d)| *d)
            .collect();
        if recent.is_empty() {
            return None;
        }
        let average = recent.iter().sum::<f64>() / recent.len() as f64;
        Some(Duration::from_secs_f64((average - base).max(0.0) / 1000.0))
    }

    fn update_ceiling(&mut self, now: Instant) {
        let Some((delivered, loss)) = self.delivery() else {
            return;
        };
        let elapsed = self
            .last_change
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let overused = loss > HEAVY_LOSS || self.queue(now).is_some_and(|q| q > QUEUE_LIMIT);
        if overused {
            if self.last_change.is_none() || elapsed >= BACK_OFF_INTERVAL {
                let backed_off = delivered * BACK_OFF;
                self.ceiling = Some(self.ceiling.map_or(backed_off, |c| c.min(backed_off)));
                self.last_change = Some(now);
            }
        } else if let Some(ceiling) = self.ceiling {
            let grown = ceiling * (1.0 + CEILING_GROWTH * elapsed.as_secs_f64());
            // Far above what the path is asked to carry, a ceiling says nothing.
            self.ceiling = (grown < delivered * 4.0).then_some(grown);
            self.last_change = Some(now);
        }
    }

    /// Bits a second that arrived over the window, and the share lost;
    /// `None` with less than [`MIN_SPAN`] of feedback.
    fn delivery(&self) -> Option<(f64, f64)> {
        let (first, ..) = self.reports.front()?;
        let (last, ..) = self.reports.back()?;
        let span = last.saturating_duration_since(*first);
        if span < MIN_SPAN {
            return None;
        }
        let delivered_bytes: usize = self
            .reports
            .iter()
            .filter(|(_, _, arrived)| *arrived)
            .map(|(_, bytes, _)| bytes)
            .sum();
        let lost = self.reports.iter().filter(|(.., arrived)| !arrived).count();
        Some((
            delivered_bytes as f64 * 8.0 / span.as_secs_f64(),
            lost as f64 / self.reports.len() as f64,
        ))
    }

    fn record(&mut self, now: Instant, bytes: usize, arrived: bool) {
        self.reports.push_back((now, bytes, arrived));
        while self
            .reports
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) > WINDOW)
        {
            self.reports.pop_front();
        }
    }

    /// `target` kept within reach of what the path delivers; `target` itself
    /// until there is a second's worth of feedback.
    pub(crate) fn limit(&self, target: f64) -> f64 {
        let Some((delivered, loss)) = self.delivery() else {
            return target;
        };
        let lead = if loss > HEAVY_LOSS { 1.0 } else { HEADROOM };
        let limited = target.min(delivered * lead);
        self.ceiling.map_or(limited, |ceiling| limited.min(ceiling))
    }
}

/// GCC, kept within reach of what the path delivers, publishing its target
/// to the video encoder (the pacer hears it through the interceptor chain).
pub(crate) struct PublishingEstimator {
    pub(crate) inner: Gcc,
    pub(crate) guard: DeliveryGuard,
    /// The lowest target ever published.
    pub(crate) min_bps: f64,
    pub(crate) target_bps: Arc<AtomicU64>,
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
            .max(self.min_bps)
    }

    fn publish(&self) {
        let target = self.target() as u64;
        let before = self.target_bps.swap(target, Ordering::Relaxed);
        if before.abs_diff(target) * 10 > before {
            tracing::debug!(
                kbps = target / 1000,
                gcc_kbps = self.inner.delay_based_bitrate() as u64 / 1000,
                gcc_loss_kbps = self.inner.loss_based_bitrate() as u64 / 1000,
                ceiling_kbps = self.guard.ceiling.map(|c| c as u64 / 1000),
                "video target"
            );
        }
    }
}

impl BandwidthEstimator for PublishingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        self.guard.on_reports(now, reports);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `kbps` offered for a second in 1200-byte packets, `lost` of every 10 lost.
    fn feed(guard: &mut DeliveryGuard, start: Instant, kbps: f64, lost: usize) {
        let packets = (kbps * 1000.0 / 8.0 / 1200.0) as usize;
        for n in 0..packets {
            let at = start + Duration::from_secs_f64(n as f64 / packets as f64);
            guard.record(at, 1200, n % 10 >= lost);
        }
    }

    #[test]
    fn the_target_leads_what_arrives_by_half_at_most() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        assert_eq!(guard.limit(2_000_000.0), 2_000_000.0, "no feedback yet");
        feed(&mut guard, start, 400.0, 0);
        let limited = guard.limit(2_000_000.0);
        assert!((590_000.0..620_000.0).contains(&limited), "{limited}");
        assert_eq!(guard.limit(300_000.0), 300_000.0, "a lower target stands");
    }

    #[test]
    fn under_heavy_loss_the_target_is_what_got_through() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 1 Mbit/s offered, 3 in 10 lost: 700 kbit/s arrive.
        feed(&mut guard, start, 1000.0, 3);
        let limited = guard.limit(1_500_000.0);
        assert!((680_000.0..720_000.0).contains(&limited), "{limited}");
    }

    #[test]
    fn a_growing_queue_sets_a_ceiling_that_rises_slowly() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 500 kbit/s arriving with an empty queue: no ceiling.
        for n in 0..100u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            guard.record(at, 625, true);
            guard.record_delay(at, 20.0);
            guard.update_ceiling(at);
        }
        assert_eq!(guard.ceiling, None);
        // The queue grows to 90 ms: back off to 85 % of what arrives.
        for n in 100..130u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            guard.record(at, 625, true);
            guard.record_delay(at, 20.0 + f64::from(n - 100) * 3.0);
            guard.update_ceiling(at);
        }
        let ceiling = guard.ceiling.expect("overuse sets a ceiling");
        assert!((400_000.0..450_000.0).contains(&ceiling), "{ceiling}");
        assert!(guard.limit(2_000_000.0) <= ceiling);
        // The queue drains; a second later the ceiling is 10 % higher.
        for n in 130..230u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            guard.record(at, 625, true);
            guard.record_delay(at, 20.0);
            guard.update_ceiling(at);
        }
        let risen = guard.ceiling.expect("still there");
        assert!(
            (ceiling * 1.08..ceiling * 1.12).contains(&risen),
            "{ceiling} -> {risen}"
        );
    }

    #[test]
    fn old_feedback_is_forgotten() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        feed(&mut guard, start, 200.0, 0);
        feed(&mut guard, start + Duration::from_secs(3), 1000.0, 0);
        let limited = guard.limit(5_000_000.0);
        assert!(limited > 1_400_000.0, "{limited}");
    }
}
