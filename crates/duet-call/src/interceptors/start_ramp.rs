//! A cautious climb back after a call's start flooded its link.
//!
//! A call starts at the full rate of its source (a sharp first picture on
//! any ordinary link). On a link a tenth of that rate both ways, the first
//! picture fills the link's queue, the peer's feedback is lost in its own
//! flood, and video waits for it ([`FeedbackWatch`](super::feedback_watch)).
//! The report that ends the wait often covers only the audio sent while
//! video waited, all of it arrived: it says nothing of the link's rate, and
//! video went back at 1.4 Mbit/s. On the 100 kbit/s rig, 3 directions of 12
//! flooded the link a second time that way, for 0.3–0.7 s, until the queue
//! (260–310 ms deep) was read and backed off from; a beep was lost with it.
//!
//! A wait for the very first report is the sign of such a flood: on every
//! other link of the test rig (clean, 2 % and 5 % loss, jitter) the first
//! report came in time. So after it, [`StartRamp`] starts again low (from
//! half as much again as what went out while video waited; TCP's restart
//! after a timeout starts from one packet) and doubles each time the
//! feedback shows that what was sent at the rate got through without a
//! queue. It ends where the link shows a queue or heavy loss (handing the
//! rate before to the [`DeliveryGuard`](super::delivery_guard::DeliveryGuard)
//! as a ceiling), or once it reaches the controller's own target. Where the
//! first report was late for another reason (a busy peer), the climb costs
//! about a second of lower-rate video: with a temporary switch that made
//! video wait for every call's first report, a clean rig link climbed from
//! 45 kbit/s to 1.38 Mbit/s in 1.0 s (five doublings), and its first
//! picture came after 750–790 ms instead of ~160 (the wait had caught the
//! first keyframe in the send queue).
//!
//! On the 100 kbit/s rig the ramp engaged in every direction; in 2 of 18
//! the report that ended the wait held no loss, and video went on at
//! 52–57 kbit/s instead of 1.4 Mbit/s until the flood's loss was reported.

use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

use super::loss_sample::LossSample;

/// Each step multiplies the rate by this...
const GROWTH: f64 = 2.0;
/// ...once the feedback covers this much of sending at the rate.
const STEP_EVIDENCE: Duration = Duration::from_millis(100);
/// A queue this deep (the lowest one-way delay of one feedback's packets
/// above the lowest of all) is the link's rate met. The first report on a
/// step holds packets sent before its queue built up; the second, sent
/// 100–200 ms into the step, shows a queue of that much times the
/// overshoot. From [`StartRamp::new`]'s start at about two thirds of a
/// narrow link's rate, a step overshoots it by a third or so: a queue of
/// 30–70 ms before the back-off.
const QUEUE_LIMIT: Duration = Duration::from_millis(20);

/// What the ramp says after a feedback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RampStep {
    /// The target is held to this rate for now.
    Climbing(f64),
    /// The link's rate was met: the target stays under this rate (what got
    /// through before the step that met it), and the ramp is over.
    Met(f64),
}

/// The rate the sender climbs back from after a start that flooded the link.
#[derive(Debug)]
pub(crate) struct StartRamp {
    rate: f64,
    /// When the rate last changed: packets sent since went at it.
    step_at: Instant,
    /// The origin of the one-way delays.
    epoch: Option<Instant>,
    /// The lowest one-way delay seen, in ms: the empty-queue one.
    base_ms: f64,
    /// The newest departure of the packets sent at the rate that the
    /// feedback reported on, and the loss among them.
    newest_sent: Option<Instant>,
    loss: LossSample,
}

impl StartRamp {
    /// A ramp from `rate` (bits a second on the wire), at `now`.
    pub(crate) fn new(now: Instant, rate: f64) -> StartRamp {
        StartRamp {
            rate,
            step_at: now,
            epoch: None,
            base_ms: f64::INFINITY,
            newest_sent: None,
            loss: LossSample { judged: 0, lost: 0 },
        }
    }

    /// The most the target may be now, in bits a second on the wire.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// One feedback's reports (in send order, sizes on the wire), at `now`.
    pub(crate) fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) -> RampStep {
        let mut lowest_now = f64::INFINITY;
        for report in reports {
            let at_rate = report.departure >= self.step_at;
            if let Some(arrival) = report.arrival.filter(|_| report.arrived) {
                let epoch = *self.epoch.get_or_insert(report.departure);
                let sent = report.departure.saturating_duration_since(epoch);
                let delay_ms = (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0;
                self.base_ms = self.base_ms.min(delay_ms);
                if at_rate {
                    lowest_now = lowest_now.min(delay_ms);
                }
            }
            if at_rate {
                self.newest_sent = Some(
                    self.newest_sent
                        .map_or(report.departure, |newest| newest.max(report.departure)),
                );
                self.loss.judged += 1;
                self.loss.lost += usize::from(!report.arrived);
            }
        }
        // The lowest delay of one report: jitter delays some packets, a
        // queue every one of them.
        let queued = lowest_now.is_finite()
            && lowest_now - self.base_ms > QUEUE_LIMIT.as_secs_f64() * 1000.0;
        if queued || self.loss.heavy() {
            return RampStep::Met(self.rate / GROWTH);
        }
        let shown = self
            .newest_sent
            .is_some_and(|newest| newest.saturating_duration_since(self.step_at) >= STEP_EVIDENCE);
        if shown {
            self.rate *= GROWTH;
            self.step_at = now;
            self.newest_sent = None;
            self.loss = LossSample { judged: 0, lost: 0 };
        }
        RampStep::Climbing(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::super::arrival_spacing::tests::packet;
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Packets every 10 ms from `from` to `to` ms after `origin`, each
    /// `delay_ms(t)` on the way (or lost), as one feedback reports them.
    fn sent_between(
        origin: Instant,
        from: u64,
        to: u64,
        delay_ms: impl Fn(u64) -> Option<u64>,
    ) -> Vec<PacketReport> {
        (from..to)
            .step_by(10)
            .map(|t| PacketReport {
                departure: origin + ms(t),
                ..packet(t, 1200, delay_ms(t).map(|delay| (t + delay) as f64))
            })
            .collect()
    }

    /// A ramp from `rate` made 200 ms after `origin`, once the report that
    /// ended the wait (on packets sent before, 30 ms on the way) was read.
    fn ramp_after_the_wait(origin: Instant, rate: f64) -> StartRamp {
        let mut ramp = StartRamp::new(origin + ms(200), rate);
        let before = sent_between(origin, 0, 200, |_| Some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(200), &before),
            RampStep::Climbing(rate)
        );
        ramp
    }

    #[test]
    fn a_path_that_keeps_up_doubles_the_rate_at_each_report() {
        let origin = Instant::now();
        let mut ramp = ramp_after_the_wait(origin, 70_000.0);
        // 60 ms of sending at the rate is too little to tell.
        let early = sent_between(origin, 200, 260, |_| Some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(290), &early),
            RampStep::Climbing(70_000.0)
        );
        // 100 ms of it, no queue: a step.
        let shown = sent_between(origin, 260, 310, |_| Some(31));
        assert_eq!(
            ramp.on_reports(origin + ms(340), &shown),
            RampStep::Climbing(140_000.0)
        );
        // Packets sent before the step say nothing of the new rate.
        let late = sent_between(origin, 310, 340, |_| Some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(360), &late),
            RampStep::Climbing(140_000.0)
        );
        let next = sent_between(origin, 340, 450, |_| Some(32));
        assert_eq!(
            ramp.on_reports(origin + ms(480), &next),
            RampStep::Climbing(280_000.0)
        );
        assert_eq!(ramp.rate(), 280_000.0);
    }

    #[test]
    fn a_queue_at_the_new_rate_ends_the_ramp_at_the_rate_before() {
        let origin = Instant::now();
        let mut ramp = ramp_after_the_wait(origin, 100_000.0);
        let kept_up = sent_between(origin, 200, 310, |_| Some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(340), &kept_up),
            RampStep::Climbing(200_000.0)
        );
        // At 1.4 times the link's rate the queue grows 4 ms every 10 ms.
        // The first report on it holds packets sent before it built up...
        let queue = |t: u64| Some(30 + (t - 340) * 4 / 10);
        let first = sent_between(origin, 340, 400, queue);
        assert_eq!(
            ramp.on_reports(origin + ms(430), &first),
            RampStep::Climbing(200_000.0)
        );
        // ...the second shows it.
        let second = sent_between(origin, 400, 500, queue);
        assert_eq!(
            ramp.on_reports(origin + ms(530), &second),
            RampStep::Met(100_000.0)
        );
    }

    #[test]
    fn jitter_is_no_queue_but_heavy_loss_ends_the_ramp() {
        let origin = Instant::now();
        let mut ramp = ramp_after_the_wait(origin, 100_000.0);
        // Delays of 30–50 ms: the lowest of each report is near the lowest
        // of all.
        let jittery = sent_between(origin, 200, 310, |t| Some(30 + (t * 7) % 21));
        assert_eq!(
            ramp.on_reports(origin + ms(350), &jittery),
            RampStep::Climbing(200_000.0)
        );
        // A packet lost now and then is chance...
        let one_lost = sent_between(origin, 350, 460, |t| (t != 400).then_some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(490), &one_lost),
            RampStep::Climbing(400_000.0)
        );
        // ...most of them lost is a link overflowing.
        let overflowing = sent_between(origin, 490, 600, |t| (t % 30 == 0).then_some(30));
        assert_eq!(
            ramp.on_reports(origin + ms(630), &overflowing),
            RampStep::Met(200_000.0)
        );
    }
}
