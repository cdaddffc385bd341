//! A connection's first flight of video: a few kilobytes sent before the
//! peer's feedback says how the path carries them.
//!
//! A call starts at the full rate of its source (a sharp first picture on
//! any ordinary link), and its first picture is a keyframe of ~47 kB at
//! 640x480. On a link a tenth of that rate both ways, that keyframe alone is
//! four seconds of the link: the link's queue (430 ms at 100 kbit/s on the
//! test rig) overflowed within 50 ms of connecting, and the speech sent in
//! the first half second was lost with the picture, or came too late to be
//! heard. No feedback can come sooner than a round trip, so the sender may
//! not learn of the link before it floods it; it can only bound what it
//! risks. Until the feedback has reported on its first [`FIRST_FLIGHT_BITS`]
//! of video, the pacer lets no more video out (TCP's initial window is the
//! same idea); the receiver reports on a stream's first packet after 10 ms
//! and again after 40 (a patch of webrtc-rs's receiver), so on an ordinary
//! path the rest of the first picture waits only a round trip and those
//! 10 ms (7–14 ms in all on the clean rig link, 104–105 ms at 40 ± 10 ms
//! each way).
//!
//! The flight also measures the link: its packets leave back to back, so a
//! bottleneck spaces them out by its rate. [`FlightReading`] reads that
//! rate from the feedback; far below the target, the start's rate would
//! have flooded the link, and the target starts again low
//! ([`StartRamp`](super::start_ramp::StartRamp)).

use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// What video may send (on the wire) before the feedback reported on it:
/// a keyframe's parameter sets and four full-size packets (the last one
/// goes into debt). More than a shaper's saved-up burst (4 kB on the test
/// rig, which lets that much through at the line's rate), so some of it
/// queues and shows the rate; less than that burst and the rig's
/// 100 kbit/s queue (5.3 kB) together, so none of it is lost. Audio sent
/// behind it waits for what queued: 150–240 ms on the rig.
pub(crate) const FIRST_FLIGHT_BITS: f64 = 40_000.0;

/// A flight that arrived at less than this share of the target met a link
/// far narrower than the start assumed. Jitter spreads a flight too: at
/// 60 ± 30 ms a flight arrives over up to 60 ms, read as ~640 kbit/s, and a
/// quarter of the camera's 1.38 Mbit/s is 345. The 100 kbit/s rig link read
/// as ~200 (its burst let three of the five packets through at once).
const NARROW_SHARE: f64 = 0.25;

/// When the first flight's packets left (the first one, and the one that
/// used up [`FIRST_FLIGHT_BITS`]), and how many there were: a flight goes
/// out in one burst, its packets often all stamped with the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlightWindow {
    pub(crate) first: Instant,
    pub(crate) last: Instant,
    pub(crate) packets: usize,
}

/// What the feedback said of the first flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlightVerdict {
    /// The flight arrived at this rate (bits a second on the wire), far
    /// below the target: the link is narrow.
    Narrow(f64),
    /// It arrived about as fast as it left, or too little of it to tell.
    Clear,
}

/// Reads the rate a first flight arrived at from transport-wide feedback.
#[derive(Debug)]
pub(crate) struct FlightReading {
    window: FlightWindow,
    /// The flight's packets that arrived: when (receiver's clock), and
    /// their size in bits on the wire.
    arrivals: Vec<(Duration, f64)>,
    /// Packets that left in the flight's time reported on, arrived or not.
    reported: usize,
}

impl FlightReading {
    pub(crate) fn new(window: FlightWindow) -> FlightReading {
        FlightReading {
            window,
            arrivals: Vec::new(),
            reported: 0,
        }
    }

    /// The flight read.
    pub(crate) fn window(&self) -> FlightWindow {
        self.window
    }

    /// One feedback's reports (sizes on the wire). Once the feedback has
    /// reported on the whole flight (or on a packet sent after it: one that
    /// it never names, it never will): the verdict against `target_bps`.
    pub(crate) fn on_reports(
        &mut self,
        reports: &[PacketReport],
        target_bps: f64,
    ) -> Option<FlightVerdict> {
        let in_flight = |report: &&PacketReport| {
            report.departure >= self.window.first && report.departure <= self.window.last
        };
        for report in reports.iter().filter(in_flight) {
            self.reported += 1;
            if let Some(arrival) = report.arrival.filter(|_| report.arrived) {
                self.arrivals.push((arrival, (report.size * 8) as f64));
            }
        }
        let covered = self.reported >= self.window.packets
            || reports
                .iter()
                .any(|report| report.departure > self.window.last);
        covered.then(|| self.verdict(target_bps))
    }

    fn verdict(&mut self, target_bps: f64) -> FlightVerdict {
        self.arrivals.sort_by_key(|&(arrival, _)| arrival);
        let (Some(&(earliest, _)), Some(&(latest, _))) =
            (self.arrivals.first(), self.arrivals.last())
        else {
            return FlightVerdict::Clear;
        };
        let spread = latest.saturating_sub(earliest).as_secs_f64();
        // The earliest packet's own time on the link is before it arrived.
        let bits: f64 = self.arrivals.iter().skip(1).map(|&(_, bits)| bits).sum();
        if spread <= 0.0 || bits <= 0.0 {
            return FlightVerdict::Clear;
        }
        let rate = bits / spread;
        if rate < target_bps * NARROW_SHARE {
            FlightVerdict::Narrow(rate)
        } else {
            FlightVerdict::Clear
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::arrival_spacing::tests::packet;
    use super::*;

    const TARGET: f64 = 1_382_400.0;

    /// A flight of five 1200-byte packets that left at `start`; the first
    /// `burst` arrived at once, 5 ms after leaving, the others each
    /// `spacing_ms` after the one before.
    fn flight(start: Instant, burst: usize, spacing_ms: f64) -> Vec<PacketReport> {
        (0..5_usize)
            .map(|n| {
                let queued = n.saturating_sub(burst - 1) as f64;
                PacketReport {
                    departure: start,
                    ..packet(n as u64, 1200, Some(5.0 + queued * spacing_ms))
                }
            })
            .collect()
    }

    fn window(start: Instant) -> FlightWindow {
        FlightWindow {
            first: start,
            last: start,
            packets: 5,
        }
    }

    #[test]
    fn a_flight_a_shaper_spaced_out_reads_as_a_narrow_link() {
        let start = Instant::now();
        let mut reading = FlightReading::new(window(start));
        // 100 kbit/s behind a 4 kB burst: three at once, then 96 ms apart.
        let reports = flight(start, 3, 96.0);
        let verdict = reading.on_reports(&reports, TARGET);
        let Some(FlightVerdict::Narrow(rate)) = verdict else {
            panic!("{verdict:?}");
        };
        assert!((rate - 200_000.0).abs() < 1_000.0, "{rate}");
    }

    #[test]
    fn a_flight_that_arrived_together_or_jittered_is_clear() {
        let start = Instant::now();
        let mut clean = FlightReading::new(window(start));
        assert_eq!(
            clean.on_reports(&flight(start, 5, 0.0), TARGET),
            Some(FlightVerdict::Clear)
        );
        // Jitter of 60 ± 30 ms: arrived over up to 60 ms, in any order.
        let mut jittered = FlightReading::new(window(start));
        let mut reports = flight(start, 1, 15.0);
        reports.reverse();
        assert_eq!(
            jittered.on_reports(&reports, TARGET),
            Some(FlightVerdict::Clear)
        );
    }

    #[test]
    fn the_verdict_waits_for_the_whole_flight_and_counts_only_it() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut reading = FlightReading::new(FlightWindow {
            first: at(20),
            last: at(21),
            packets: 5,
        });
        let mut reports = flight(at(20), 3, 96.0);
        reports[4].departure = at(21);
        // Audio sent before the flight arrived long before it: not counted.
        let before = PacketReport {
            departure: at(0),
            ..packet(9, 100, Some(0.0))
        };
        let first = [vec![before], reports[..3].to_vec()].concat();
        assert_eq!(reading.on_reports(&first, TARGET), None, "not all yet");
        // The flight's last packets all left at its end.
        reports[3].departure = at(21);
        // The last one lost: the others tell.
        let mut rest = reports[3..].to_vec();
        rest[1].arrived = false;
        rest[1].arrival = None;
        let verdict = reading.on_reports(&rest, TARGET);
        let Some(FlightVerdict::Narrow(rate)) = verdict else {
            panic!("{verdict:?}");
        };
        // Three packets at once, the fourth 96 ms after them.
        assert!((rate - 9_600.0 * 3.0 / 0.096).abs() < 100.0, "{rate}");
    }

    #[test]
    fn a_flight_the_feedback_never_names_whole_is_read_from_what_came_after() {
        let start = Instant::now();
        let mut reading = FlightReading::new(window(start));
        let mut reports = flight(start, 3, 96.0);
        // The feedback on the last two was lost; audio after the flight is
        // reported on.
        reports.truncate(3);
        assert_eq!(reading.on_reports(&reports, TARGET), None);
        let after = PacketReport {
            departure: start + Duration::from_millis(20),
            ..packet(7, 100, Some(300.0))
        };
        assert_eq!(
            reading.on_reports(&[after], TARGET),
            Some(FlightVerdict::Clear),
            "three at once tell nothing"
        );
    }
}
