//! The rate of a path's bottleneck while it is full, from how far apart the
//! packets behind it arrived.
//!
//! What the feedback reports got through says little about the path while
//! most packets are lost: the feedback crosses the peer's link, and when a
//! call squeezes into a narrow link both ways, most of the feedback is lost
//! too. Of a 100 kbit/s link, the bytes reported arrived read 50–70 kbit/s,
//! and only after half a second of feedback, 1.5 s into the squeeze. But a
//! full bottleneck sends one packet right after the other, so two packets
//! that arrived one after the other (nothing unreported between them) are
//! as far apart as the later one takes on the link: their sizes over their
//! spacing is the link's rate, read from the first feedback that gets
//! through. (The packet-pair idea of bottleneck probing.) Only spacings
//! soon after a loss count ([`FULL_FOR`]): a queue that drops is full.
//! Elsewhere the link may be idle between two packets (the spacing holds
//! the idle time too), or passing a burst it had saved up for (a shaper's
//! bucket: a few packets at the line's rate); counted, the first feedback
//! of a squeeze read a 100 kbit/s link as 153.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// How far back spacings are taken.
const WINDOW: Duration = Duration::from_secs(1);
/// Fewer spacings than this say too little...
const MIN_SPACINGS: usize = 3;
/// ...and so do spacings that add up to less than this: a few packets a
/// shaper let through back to back from its saved-up burst read as a link
/// far wider than it is.
const MIN_SPREAD: Duration = Duration::from_millis(30);

/// A packet sent within this many of a lost one met the queue full.
const FULL_FOR: usize = 10;
/// Nothing arrived for this long: the path was down (an outage), and what
/// was lost meanwhile says nothing of how much it carries. On a full
/// 100 kbit/s link something arrives every 100 ms.
const PATH_GAP: Duration = Duration::from_secs(1);

/// One packet that arrived after the one before it in the send order.
#[derive(Debug, Clone, Copy)]
struct Spacing {
    /// When the feedback on it was read here.
    at: Instant,
    bits: f64,
    /// How long after the packet before it this one arrived.
    after: Duration,
}

/// Reads the rate of a full bottleneck from transport-wide feedback.
#[derive(Debug, Default)]
pub(crate) struct ArrivalSpacing {
    spacings: VecDeque<Spacing>,
    /// The last packet reported on (its id), to pair the next one with.
    previous: Option<u64>,
    /// The latest arrival of the current run: a lost packet keeps it, so
    /// the next one that arrives is paired across it (a packet the queue
    /// dropped took no time on the link).
    last_arrival: Option<Duration>,
    /// Packets reported on in the current run since one was lost (the
    /// queue was full then); `None` while none of the run was.
    since_loss: Option<usize>,
    /// The latest arrival reported at all, across runs: what an outage
    /// is told by.
    latest_arrival: Option<Duration>,
}

impl ArrivalSpacing {
    /// Takes one feedback's reports, in send order. Returns where the path
    /// came back after an outage ([`PATH_GAP`] without an arrival), if it
    /// did in these reports: the index of the first arrival after it. What
    /// was reported before it (lost in the outage) is not the path's rate
    /// or loss.
    pub(crate) fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) -> Option<usize> {
        let mut back_at = None;
        for (index, report) in reports.iter().enumerate() {
            // A packet no feedback named lies between these two: whether it
            // arrived, and when, is unknown, so the run starts again.
            let consecutive = self
                .previous
                .is_some_and(|previous| report.id == previous + 1);
            if !consecutive {
                self.last_arrival = None;
                self.since_loss = None;
            }
            self.since_loss = if report.arrived {
                self.since_loss.map(|n| n + 1)
            } else {
                Some(0)
            };
            let full = self.since_loss.is_some_and(|n| n <= FULL_FOR);
            if let Some(arrival) = report.arrival.filter(|_| report.arrived) {
                if self
                    .latest_arrival
                    .is_some_and(|latest| arrival > latest + PATH_GAP)
                {
                    // Back after an outage: the losses before were its.
                    back_at = Some(index);
                    self.last_arrival = None;
                    self.since_loss = None;
                }
                self.latest_arrival = Some(self.latest_arrival.map_or(arrival, |l| l.max(arrival)));
                let full = full && self.since_loss.is_some();
                if let Some(last) = self.last_arrival.filter(|_| full) {
                    // Reordered (it came before the one sent before it): it
                    // took its time on the link all the same, within the
                    // spread of the others.
                    self.spacings.push_back(Spacing {
                        at: now,
                        bits: report.size as f64 * 8.0,
                        after: arrival.saturating_sub(last),
                    });
                }
                // The later arrival stays the one to pair with.
                self.last_arrival = Some(self.last_arrival.map_or(arrival, |l| l.max(arrival)));
            }
            self.previous = Some(report.id);
        }
        while self
            .spacings
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > WINDOW)
        {
            self.spacings.pop_front();
        }
        back_at
    }

    /// Bits a second the bottleneck passed over the last second of
    /// feedback, if the bottleneck was full; `None` with too few spacings.
    pub(crate) fn rate(&self) -> Option<f64> {
        if self.spacings.len() < MIN_SPACINGS {
            return None;
        }
        let bits: f64 = self.spacings.iter().map(|s| s.bits).sum();
        let spread: Duration = self.spacings.iter().map(|s| s.after).sum();
        (spread >= MIN_SPREAD).then(|| bits / spread.as_secs_f64())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    /// A report on packet `id` of `bytes`, arrived at `arrival_ms` or lost.
    pub(crate) fn packet(id: u64, bytes: usize, arrival_ms: Option<f64>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: bytes,
            arrived: arrival_ms.is_some(),
            departure: Instant::now(),
            arrival: arrival_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0)),
            ecn: Ecn::NotEct,
        }
    }

    /// A 100 kbit/s link sent 1250-byte packets at 1 Mbit/s: one in ten
    /// gets through, 100 ms after the one before it.
    pub(crate) fn squeezed(first_id: u64, first_ms: f64, count: u64) -> Vec<PacketReport> {
        (0..count)
            .map(|n| {
                let arrived = n % 10 == 0;
                let at = first_ms + (n / 10) as f64 * 100.0;
                packet(first_id + n, 1250, arrived.then_some(at))
            })
            .collect()
    }

    #[test]
    fn a_full_link_reads_as_its_rate_through_heavy_loss() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // Three packets arrived: two spacings, too few.
        spacing.on_reports(now, &squeezed(0, 0.0, 30));
        assert_eq!(spacing.rate(), None);
        spacing.on_reports(now, &squeezed(30, 300.0, 20));
        let rate = spacing.rate().expect("four spacings");
        assert!((rate - 100_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn packets_whose_feedback_was_lost_break_the_pairing() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        spacing.on_reports(now, &squeezed(0, 0.0, 21));
        // Packets 21 to 99 were never reported on (their feedback was
        // lost): 100 comes 800 ms after 20, with seven arrivals unseen in
        // between. Paired with 20, the link would read 8 times slower.
        spacing.on_reports(now, &squeezed(100, 1000.0, 21));
        let rate = spacing.rate().expect("four spacings");
        assert!((rate - 100_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn a_burst_the_shaper_saved_up_says_nothing() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // Six packets through at once, before the queue filled...
        let mut reports: Vec<_> = (0..6)
            .map(|n| packet(n, 1250, Some(n as f64 * 0.5)))
            .collect();
        spacing.on_reports(now, &reports);
        assert_eq!(spacing.rate(), None);
        // ...then the squeeze: the link's own rate, not 2.5 times it.
        reports = squeezed(6, 100.0, 50);
        spacing.on_reports(now, &reports);
        let rate = spacing.rate().expect("four spacings");
        assert!((rate - 100_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn a_link_that_stopped_losing_says_nothing_more_of_its_rate() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // One loss, then 30 packets 50 ms apart that all arrived (a link
        // no longer full): only the ten right after the loss count.
        let mut reports = vec![packet(0, 1250, None)];
        reports.extend((1..=30).map(|n| packet(n, 1250, Some(n as f64 * 50.0))));
        spacing.on_reports(now, &reports[..3]);
        assert_eq!(spacing.rate(), None);
        spacing.on_reports(now, &reports[3..]);
        let rate = spacing.rate().expect("nine spacings");
        assert!((rate - 200_000.0).abs() < 1.0, "{rate}");
        assert_eq!(spacing.spacings.len(), 9);
    }

    #[test]
    fn what_was_lost_in_an_outage_says_nothing_of_the_link() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // Arrivals, then 30 packets lost in a 3 s outage, then arrivals
        // 10 ms apart again: a path that is not full.
        let mut reports: Vec<_> = (0..5)
            .map(|n| packet(n, 1250, Some(n as f64 * 10.0)))
            .collect();
        reports.extend((5..35).map(|n| packet(n, 1250, None)));
        reports.extend((35..60).map(|n| packet(n, 1250, Some(3_000.0 + n as f64 * 10.0))));
        assert_eq!(spacing.on_reports(now, &reports), Some(35));
        assert_eq!(spacing.rate(), None);
    }

    #[test]
    fn a_link_that_loses_nothing_says_nothing_of_its_rate() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // Tiny gaps (a receiver that read a batch of packets at once).
        let reports: Vec<_> = (0..20)
            .map(|n| packet(n, 1250, Some(n as f64 * 5.0)))
            .collect();
        spacing.on_reports(now, &reports);
        assert_eq!(spacing.rate(), None);
    }

    #[test]
    fn reordered_arrivals_do_not_shorten_the_spread() {
        let now = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        // After a loss, 2 arrives before 1: the spread is still 0 to 400 ms.
        let reports = [
            packet(0, 1250, None),
            packet(1, 1250, Some(0.0)),
            packet(2, 1250, Some(200.0)),
            packet(3, 1250, Some(100.0)),
            packet(4, 1250, Some(300.0)),
            packet(5, 1250, Some(400.0)),
        ];
        spacing.on_reports(now, &reports);
        let rate = spacing.rate().expect("four spacings");
        // 4 packets after the first, over 400 ms.
        assert!((rate - 100_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn old_spacings_are_forgotten() {
        let start = Instant::now();
        let mut spacing = ArrivalSpacing::default();
        spacing.on_reports(start, &squeezed(0, 0.0, 50));
        assert!(spacing.rate().is_some());
        spacing.on_reports(start + Duration::from_secs(2), &[]);
        assert_eq!(spacing.rate(), None);
    }
}
