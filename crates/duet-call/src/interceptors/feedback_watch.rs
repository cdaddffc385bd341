//! Whether the peer's feedback on what was sent is late: then video waits.
//!
//! The congestion controller learns that a link is full from the feedback
//! on what got through; until that feedback comes, it keeps the rate it
//! had. When a call meets a link a tenth of its rate both ways (a call
//! starting on a narrow mobile link), nine in ten of the peer's feedback
//! packets are lost in the same flood, and the first to get through came
//! 1.0–1.6 s into it: by then the link's queue had been full for a second,
//! and the speech in it lost or late. libwebrtc bounds the bytes in flight
//! (its congestion window) for this; Duet bounds the time: when the oldest
//! packet not yet reported on left [`LATE_AFTER`] longer ago than feedback
//! usually takes, video and resends wait until the feedback comes. Audio
//! still goes, so the link drains to what matters, and its feedback is what
//! tells when the path is back (after an outage, too).
//!
//! The first report is owed only once the peer was heard from. When the
//! handshake's last flight is lost, one peer is connected a second or more
//! before the other, and what it sends meanwhile the other can neither read
//! nor report on. Waited for from the first packet sent, that report read
//! as a flood: in a call over a 5 % loss link whose peers connected 1.1 s
//! apart, the sender climbed back from 47 kbit/s, took jitter for a queue,
//! and sent 152 kbit/s for the whole minute (the peer saw 14.5 fps, 18 s of
//! it frozen).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much later than usual the feedback may be. It comes every 100 ms,
/// and is held back up to 100 ms more where a packet may only be reordered;
/// with this margin, video waits only when three or more feedback packets
/// in a row were lost (once in 40 s of a path that loses 5 %).
pub(crate) const LATE_AFTER: Duration = Duration::from_millis(500);
/// Until the first feedback came, its report is late this much more than a
/// round trip of the path (as the connectivity checks measured it) after a
/// packet left: the peer reports every 100 ms, and may be held up a little.
/// A call that starts on a link a tenth of its rate both ways fills the
/// link's queue with its first picture, and whatever is sent while that
/// queue is full (430 ms of it at 100 kbit/s on the test rig) reaches the
/// peer too late to be heard. Waiting the full [`LATE_AFTER`] for a first
/// report that the flood itself holds back kept the link flooded for half
/// a second after connecting: on the rig, 36–39 beeps of 40 were heard per
/// direction (16 directions, median 38), 37–40 with a first wait of 250 ms
/// (median 39).
const FIRST_REPORT_MARGIN: Duration = Duration::from_millis(200);
/// ...or this long, while no round trip was measured. A fixed 250 ms made a
/// path with a 300 ms round trip hold its video ~150 ms at every call's
/// start, and its first second's pictures came late enough to raise the
/// 95th percentile of a 15 s call's video latency by 30–55 ms.
const FIRST_LATE_AFTER: Duration = Duration::from_millis(250);
/// How long the quickest feedback is remembered as the usual delay.
const USUAL_MEMORY: Duration = Duration::from_secs(10);

/// The packets the peer's feedback has yet to report on, and how long its
/// reports take.
#[derive(Debug, Default)]
pub(crate) struct FeedbackWatch {
    /// When each packet not yet reported on left, oldest first.
    unreported: VecDeque<Instant>,
    /// The newest departure reported on so far.
    reported_until: Option<Instant>,
    /// How long each report took (from the departure of the newest packet
    /// it covered), with when it came: the quickest is the usual delay.
    delays: VecDeque<(Instant, Duration)>,
    /// The quickest of `delays` (asked for at every packet).
    usual: Duration,
    /// The path's round trip, from the connectivity checks.
    round_trip: Option<Duration>,
    /// When the first packet from the peer (media or RTCP) came: it can
    /// read and report on what is sent from then on.
    heard_from_peer: Option<Instant>,
}

impl FeedbackWatch {
    /// A packet the feedback will report on left at `departure`.
    pub(crate) fn on_sent(&mut self, departure: Instant) {
        self.unreported.push_back(departure);
    }

    /// By `now`, the feedback reported on everything that left up to
    /// `until` (a packet whose feedback was lost is never reported on: it
    /// is forgotten with the others).
    pub(crate) fn on_reported(&mut self, now: Instant, until: Instant) {
        if self.reported_until.is_some_and(|before| until <= before) {
            return;
        }
        self.reported_until = Some(until);
        while self.unreported.front().is_some_and(|&sent| sent <= until) {
            self.unreported.pop_front();
        }
        self.delays
            .push_back((now, now.saturating_duration_since(until)));
        while self
            .delays
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > USUAL_MEMORY)
        {
            self.delays.pop_front();
        }
        self.usual = self
            .delays
            .iter()
            .map(|&(_, delay)| delay)
            .min()
            .unwrap_or(Duration::ZERO);
    }

    /// The path's round trip, as measured outside the feedback: what the
    /// first report is waited for on.
    pub(crate) fn set_round_trip(&mut self, round_trip: Duration) {
        self.round_trip = Some(round_trip);
    }

    /// A packet from the peer came at `at`.
    pub(crate) fn on_heard(&mut self, at: Instant) {
        self.heard_from_peer.get_or_insert(at);
    }

    /// Whether no feedback has come yet.
    pub(crate) fn awaiting_first_report(&self) -> bool {
        self.reported_until.is_none()
    }

    /// Whether, at `now`, the feedback on the oldest packet not reported on
    /// is [`LATE_AFTER`] later than usual. While no feedback has come yet,
    /// the first report is late [`FIRST_REPORT_MARGIN`] later than a round
    /// trip after the oldest packet sent since the peer was heard from;
    /// before that, it is not owed.
    pub(crate) fn late(&self, now: Instant) -> bool {
        let Some(&oldest) = self.unreported.front() else {
            return false;
        };
        let (owed_since, margin) = if self.reported_until.is_some() {
            (oldest, self.usual + LATE_AFTER)
        } else {
            let Some(heard) = self.heard_from_peer else {
                return false;
            };
            let margin = self.round_trip.map_or(FIRST_LATE_AFTER, |round_trip| {
                round_trip + FIRST_REPORT_MARGIN
            });
            (oldest.max(heard), margin)
        };
        now.saturating_duration_since(owed_since) > margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn feedback_that_keeps_coming_is_never_late() {
        let start = Instant::now();
        let mut watch = FeedbackWatch::default();
        assert!(!watch.late(start), "nothing sent");
        // A packet every 10 ms; feedback every 100 ms on what left 20 ms
        // before it, now and then 200 ms late (two reports lost).
        for t in (0..5_000).step_by(10) {
            let now = start + ms(t);
            watch.on_sent(now);
            let lost_reports = (t / 100) % 20 < 2;
            if t % 100 == 0 && t >= 100 && !lost_reports {
                watch.on_reported(now, now - ms(20));
            }
            assert!(!watch.late(now), "late at {t} ms");
        }
    }

    #[test]
    fn feedback_that_stops_is_late_after_the_usual_delay_and_the_margin() {
        let start = Instant::now();
        let mut watch = FeedbackWatch::default();
        // Reports take 40 ms: usual.
        for t in (0..1_000).step_by(10) {
            let now = start + ms(t);
            watch.on_sent(now);
            if t % 100 == 0 && t >= 100 {
                watch.on_reported(now, now - ms(40));
            }
        }
        // The last report (at 900 ms) covered up to 860 ms: the packet of
        // 870 ms is the oldest waiting, late once 540 ms have passed.
        assert!(!watch.late(start + ms(1_400)));
        assert!(watch.late(start + ms(1_420)));
        // A report that comes late still ends it.
        let now = start + ms(1_500);
        watch.on_reported(now, start + ms(990));
        assert!(!watch.late(now), "all reported on");
    }

    #[test]
    fn at_the_start_no_feedback_is_late_a_round_trip_and_the_margin_after() {
        let start = Instant::now();
        let mut watch = FeedbackWatch::default();
        watch.on_heard(start);
        watch.on_sent(start);
        watch.on_sent(start + ms(200));
        // No round trip measured yet.
        assert!(!watch.late(start + ms(250)));
        assert!(watch.late(start + ms(260)));
        // A round trip of 300 ms.
        watch.set_round_trip(ms(300));
        assert!(!watch.late(start + ms(500)));
        assert!(watch.late(start + ms(510)));
        // Once a report came (in 100 ms: usual), the full margin over the
        // usual delay holds for the packet of 200 ms.
        watch.on_reported(start + ms(100), start);
        assert!(!watch.late(start + ms(800)));
        assert!(watch.late(start + ms(810)));
    }

    #[test]
    fn no_first_report_is_owed_before_the_peer_is_heard_from() {
        let start = Instant::now();
        let mut watch = FeedbackWatch::default();
        watch.set_round_trip(ms(120));
        // Connected first: a packet every 20 ms for 1.1 s that the peer,
        // still finishing its handshake, drops unread.
        for t in (0..1_100).step_by(20) {
            watch.on_sent(start + ms(t));
            assert!(!watch.late(start + ms(t)), "late at {t} ms");
        }
        // Its first packet: what is sent from now on is owed a report, a
        // round trip and the margin from now.
        watch.on_heard(start + ms(1_100));
        assert!(!watch.late(start + ms(1_420)));
        assert!(watch.late(start + ms(1_421)));
        // Hearing from it again moves nothing.
        watch.on_heard(start + ms(1_300));
        assert!(watch.late(start + ms(1_421)));
        // Its report comes: on what it read.
        watch.on_reported(start + ms(1_430), start + ms(1_400));
        assert!(!watch.late(start + ms(1_430)));
    }

    #[test]
    fn an_older_report_changes_nothing() {
        let start = Instant::now();
        let mut watch = FeedbackWatch::default();
        watch.on_sent(start);
        watch.on_sent(start + ms(100));
        watch.on_reported(start + ms(150), start + ms(100));
        watch.on_reported(start + ms(700), start);
        assert!(!watch.late(start + ms(700)));
    }
}
