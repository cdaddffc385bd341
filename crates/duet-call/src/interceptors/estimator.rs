//! The congestion controller: webrtc-rs's GCC, its target kept within what
//! the path delivers ([`DeliveryGuard`]) and published in the
//! [`SendBudget`] for the video encoder and the pacer.

use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

use super::SendBudget;
use super::delivery_guard::DeliveryGuard;
use super::start_ramp::{RampStep, StartRamp};
use super::wire::PACKET_OVERHEAD_BYTES;

/// Every connection starts at this target (bits a second on the wire, audio
/// included) and climbs from it ([`StartRamp`]). At up to 200 kbit/s
/// openh264 makes a 640x480 keyframe of 1.3 kB (at 1.38 Mbit/s, 47 kB): the
/// first picture comes sooner on any link, and a narrow one is not flooded.
/// On the 100 kbit/s rig the flood of a start at the source's 1.38 Mbit/s
/// lost the first keyframe, and the first picture came 1.7–3.3 s after
/// connecting; from here it came after 0.10–0.18 s, without a resend. A clean
/// link pays with a second of lower rate: it reached 1.38 Mbit/s 1.2 s
/// after connecting. Browsers start at 300 kbit/s; here that flooded the
/// 100 kbit/s link as the full rate did.
const CALL_START_BPS: f64 = 120_000.0;
/// The start's first step waits for feedback on this much sending at
/// [`CALL_START_BPS`]. A shaper's token bucket lets its first few kB through
/// at any rate: the rig's 4 kB hid a 100 kbit/s link for 0.4–0.5 s, and
/// after 100 ms of evidence the target doubled into it before its queue
/// could show.
const CALL_START_FIRST_STEP: Duration = Duration::from_millis(600);

/// A [`StartRamp`] starts from this much of what went out while video
/// waited (audio and the feedback): room beside them for video at a few
/// pictures a second, and about two thirds of a link that the start
/// flooded, where audio took a third to a half of it.
const RAMP_FROM_OVERHEAD: f64 = 1.5;

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
    /// Whether any feedback came yet.
    pub(crate) reported: bool,
    /// The budget's count of waits for a first report when this
    /// connection was made.
    pub(crate) first_report_waits_seen: u64,
    /// The climb back after a start that flooded the link, while it lasts.
    pub(crate) ramp: Option<StartRamp>,
}

impl PublishingEstimator {
    /// The controller of a new connection, for a source of up to `max_bps`
    /// (never under `min_bps`), made at `climb_from`: its target starts at
    /// [`CALL_START_BPS`] and climbs ([`StartRamp`]); with `None` (the
    /// user's `--bitrate`), at `max_bps`. It publishes that in `budget`.
    pub(crate) fn new(
        budget: &SendBudget,
        max_bps: f64,
        min_bps: f64,
        climb_from: Option<Instant>,
    ) -> PublishingEstimator {
        let ramp = climb_from
            .filter(|_| CALL_START_BPS < max_bps)
            .map(|now| StartRamp::new(now, CALL_START_BPS).with_first_step(CALL_START_FIRST_STEP));
        let target = ramp.as_ref().map_or(max_bps, StartRamp::rate);
        budget.set_target(target as u64);
        PublishingEstimator {
            inner: Gcc::new(max_bps, min_bps, max_bps),
            guard: DeliveryGuard::with_floor(min_bps),
            budget: budget.clone(),
            sources_seen: budget.sources(),
            target,
            reported: false,
            first_report_waits_seen: budget.first_report_waits(),
            ramp,
        }
    }

    /// GCC's delay-based half, within the guard. Its loss-based half is
    /// left out: it cuts by half the loss share every 200 ms while loss is
    /// above 10 %, so the loss of one overshoot takes the target to the
    /// floor, and below 2 % it only climbs 5 % a step; the guard's ceiling
    /// answers loss from what got through instead.
    fn update_target(&mut self) {
        let mut target = self.guard.limit(self.inner.delay_based_bitrate());
        if let Some(ramp) = &self.ramp {
            if ramp.rate() < target {
                target = ramp.rate();
            } else {
                tracing::debug!(
                    kbps = target as u64 / 1000,
                    "the climb back reached the target"
                );
                self.ramp = None;
            }
        }
        self.target = target.max(self.guard.floor());
    }

    /// At the first feedback: if video waited for it, the start flooded
    /// the link, and the target climbs back ([`StartRamp`]).
    fn start_ramp_if_flooded(&mut self, now: Instant) {
        let waited = self.budget.first_report_waits() != self.first_report_waits_seen;
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if !waited {
            // The call's start climbs: what arrives meanwhile is what the
            // ramp let out, as below.
            if self.ramp.is_some() {
                self.guard.new_source(now);
            }
            return;
        }
        let from = (self.budget.overhead_bps() as f64 * RAMP_FROM_OVERHEAD).max(self.guard.floor());
        tracing::debug!(
            from_kbps = from as u64 / 1000,
            "the start flooded the link: the target climbs back"
        );
        self.ramp = Some(StartRamp::new(now, from));
        // What arrives while the target climbs is what the ramp let out,
        // not what the path can carry: as for a new source, it must not
        // hold the target to 1.5 times itself. Held so, the climb of a
        // clean path handed over at 280 kbit/s and took 6 s more to 1.3
        // Mbit/s.
        self.guard.new_source(now);
    }

    /// The ramp's reading of one feedback; where it met the link's rate,
    /// the guard keeps the target under what got through before.
    fn follow_ramp(&mut self, now: Instant, reports: &[PacketReport]) {
        let Some(ramp) = &mut self.ramp else {
            return;
        };
        if let RampStep::Met(rate) = ramp.on_reports(now, reports) {
            tracing::debug!(
                kbps = rate as u64 / 1000,
                "the climb back met the link's rate"
            );
            self.guard.hold_under(now, rate);
            self.ramp = None;
        }
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
        self.start_ramp_if_flooded(now);
        self.inner.on_reports(now, &on_the_wire);
        self.guard.on_reports(now, &on_the_wire);
        self.follow_ramp(now, &on_the_wire);
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
    use std::time::Duration;

    use super::*;

    fn estimator(budget: &SendBudget, max_bps: f64) -> PublishingEstimator {
        PublishingEstimator {
            inner: Gcc::new(max_bps, 100_000.0, max_bps),
            guard: DeliveryGuard::with_floor(100_000.0),
            budget: budget.clone(),
            sources_seen: budget.sources(),
            target: max_bps,
            reported: false,
            first_report_waits_seen: budget.first_report_waits(),
            ramp: None,
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

    /// Reports on packets sent every 10 ms from `from` to `to` ms after
    /// `start` at `bps` on the wire, each 30 ms on the way.
    fn arrived(start: Instant, from: u64, to: u64, bps: u64) -> Vec<PacketReport> {
        use super::super::arrival_spacing::tests::packet;
        let bytes = (bps / 8 / 100) as usize - PACKET_OVERHEAD_BYTES;
        (from..to)
            .step_by(10)
            .map(|t| PacketReport {
                departure: start + Duration::from_millis(t),
                ..packet(t, bytes, Some((t + 30) as f64))
            })
            .collect()
    }

    /// Feedback on 110 ms of sending at the target every 150 ms from
    /// `sent` ms on, until the start's climb ends (within 1.5 s); returns
    /// when it ended.
    fn climb(
        estimator: &mut PublishingEstimator,
        budget: &SendBudget,
        start: Instant,
        mut sent: u64,
    ) -> u64 {
        let give_up = sent + 1_500;
        while estimator.ramp.is_some() && sent < give_up {
            let bps = budget.target_bps();
            let at = start + Duration::from_millis(sent + 150);
            estimator.on_reports(at, &arrived(start, sent, sent + 110, bps));
            sent += 150;
        }
        assert!(estimator.ramp.is_none(), "the climb never ended");
        sent
    }

    #[test]
    fn after_a_wait_for_the_first_report_the_target_climbs_back_from_little() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let budget = SendBudget::default();
        let mut estimator = estimator(&budget, 1_382_400.0);
        // Video waited for the first report; audio and the feedback went out
        // at 120 kbit/s meanwhile.
        budget.set_overhead(120_000);
        budget.note_waited_for_first_report();
        estimator.on_reports(at(400), &arrived(start, 0, 300, 120_000));
        assert_eq!(budget.target_bps(), 180_000);
        // What went at that rate got through without a queue: it doubles...
        estimator.on_reports(at(550), &arrived(start, 400, 510, 180_000));
        assert_eq!(budget.target_bps(), 360_000);
        // ...at each report on the new rate, up to the controller's own
        // target, where the climb ends.
        let sent = climb(&mut estimator, &budget, start, 550);
        assert_eq!(sent, 850, "two more steps");
        assert!(budget.target_bps() > 1_000_000, "{}", budget.target_bps());
    }

    #[test]
    fn a_connection_starts_low_and_climbs_once_a_clean_path_shows_it() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let budget = SendBudget::default();
        let mut estimator = PublishingEstimator::new(&budget, 1_382_400.0, 20_000.0, Some(start));
        assert_eq!(
            budget.target_bps(),
            120_000,
            "published before any feedback"
        );
        // Connected 2 s later; 300 ms of sending is not yet enough to step.
        estimator.on_reports(at(2_350), &arrived(start, 2_000, 2_300, 120_000));
        assert_eq!(budget.target_bps(), 120_000);
        // 600 ms of it without a queue is.
        estimator.on_reports(at(2_650), &arrived(start, 2_300, 2_610, 120_000));
        assert_eq!(budget.target_bps(), 240_000);
        // From there it doubles at each report on the new rate.
        climb(&mut estimator, &budget, start, 2_650);
        assert_eq!(budget.target_bps(), 1_382_400);
    }

    #[test]
    fn a_bitrate_the_user_asked_for_is_where_the_connection_starts() {
        let budget = SendBudget::default();
        let estimator = PublishingEstimator::new(&budget, 800_000.0, 20_000.0, None);
        assert!(estimator.ramp.is_none());
        assert_eq!(budget.target_bps(), 800_000);
    }

    #[test]
    fn a_start_that_meets_a_queue_is_held_under_half_its_rate() {
        use super::super::arrival_spacing::tests::packet;
        let start = Instant::now();
        let budget = SendBudget::default();
        let mut estimator = PublishingEstimator::new(&budget, 1_382_400.0, 20_000.0, Some(start));
        // A link at two thirds of the start rate behind a token bucket:
        // after 250 ms each packet queues 5 ms more than the one before it.
        let queued: Vec<PacketReport> = (0..400)
            .step_by(10)
            .map(|t| PacketReport {
                departure: start + Duration::from_millis(t),
                ..packet(t, 1_200, Some((t + 30 + t.saturating_sub(250) / 2) as f64))
            })
            .collect();
        estimator.on_reports(start + Duration::from_millis(450), &queued);
        assert!(estimator.ramp.is_none());
        assert!(budget.target_bps() <= 60_000, "{}", budget.target_bps());
    }

    #[test]
    fn a_first_report_that_came_in_time_leaves_the_target_as_it_was() {
        let start = Instant::now();
        let budget = SendBudget::default();
        let mut estimator = estimator(&budget, 1_382_400.0);
        budget.set_overhead(120_000);
        let in_time = arrived(start, 0, 100, 1_382_400);
        estimator.on_reports(start + Duration::from_millis(150), &in_time);
        assert_eq!(budget.target_bps(), 1_382_400);
        // A wait noted later on is no start of this connection that flooded.
        budget.note_waited_for_first_report();
        let later = arrived(start, 100, 200, 1_382_400);
        estimator.on_reports(start + Duration::from_millis(300), &later);
        assert_eq!(budget.target_bps(), 1_382_400);
    }

    #[test]
    fn a_wait_at_an_earlier_connections_start_is_not_this_ones() {
        let start = Instant::now();
        let budget = SendBudget::default();
        // The call's first connection waited for its first report...
        budget.note_waited_for_first_report();
        // ...and the one made after it did not.
        let mut estimator = estimator(&budget, 1_382_400.0);
        budget.set_overhead(120_000);
        let in_time = arrived(start, 0, 100, 1_382_400);
        estimator.on_reports(start + Duration::from_millis(150), &in_time);
        assert_eq!(budget.target_bps(), 1_382_400);
        assert!(estimator.ramp.is_none());
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
