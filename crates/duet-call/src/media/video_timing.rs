//! When each decoded picture is shown, without a clock of its own.
//!
//! Pictures are shown as they come unless some came late: a frame that
//! waited for a retransmission arrives a round trip after its neighbours,
//! and showing every frame the moment it is ready turns each such wait into
//! a visible freeze (the W3C rule counts a gap of the average interval plus
//! 150 ms). So the schedule keeps the late frames of the last few seconds
//! in view and delays every picture by just enough that such a frame still
//! leaves a gap shorter than a freeze: nothing on a clean link, a few tens
//! of milliseconds on a lossy one, never more than [`MAX_DELAY`].
//!
//! "Late" is measured against the picture's own RTP clock: a frame's
//! transit is its completion time minus its RTP time, and the fastest
//! transit of the last [`WINDOW`] is the baseline; the delay covers the
//! latest frame of that window, less [`UNCOVERED_MS`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What a frame's timing is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameTiming {
    /// 90 kHz RTP timestamp.
    pub(crate) rtp_timestamp: u32,
    /// When its last packet arrived (the frame became whole).
    pub(crate) completed: Instant,
}

/// How far back lateness is remembered.
const WINDOW: Duration = Duration::from_secs(4);
/// How much lateness is left uncovered: a gap of the frame interval plus
/// this stays under the freeze threshold (average + 150 ms) with room for
/// decoding. Every millisecond covered is a millisecond of delay on every
/// picture, so the schedule covers only what would otherwise freeze.
const UNCOVERED_MS: f64 = 80.0;
/// The most pictures are held back.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(300);
/// A picture later than this is not shown at all: it belongs to a moment
/// that has passed (after an outage, resume from what is current).
const TOO_LATE_MS: f64 = 1000.0;
/// How fast the delay comes down once late frames stop: 1 ms a frame, 30 ms
/// a second at 30 fps (a one-off, a keyframe squeezed through a narrow link,
/// should not hold every picture back for long).
const DECAY_MS_PER_FRAME: f64 = 1.0;
/// After a freeze the delay starts again from nothing and grows back this
/// much a frame at most (120 ms a second at 30 fps: pictures come 4 ms
/// further apart, never a freeze). Held back by the full delay, the first
/// picture after a freeze (a keyframe asked for when a frame was lost for
/// good) made the freeze that much longer: 143 ms of 548 on the 5 % link.
const REGROW_MS_PER_FRAME: f64 = 4.0;
/// Frames that complete this soon after the first one past a freeze are the
/// freeze's own tail (the keyframe that ends it, and what queued behind it):
/// late for a reason that is over, so their lateness is not covered. After
/// a 30 s outage, frames 380 ms late in the first 30 ms held every picture
/// back by the full 300 ms for 14 s.
const FREEZE_TAIL: Duration = Duration::from_millis(250);
const RTP_TICKS_PER_MS: f64 = 90.0;

/// What to do with a decoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Showing {
    At(Instant),
    /// Too late to be worth showing.
    Skip,
}

/// The playout schedule of one video stream.
#[derive(Debug, Default)]
pub(crate) struct PlayoutSchedule {
    epoch: Option<Instant>,
    /// Last RTP timestamp and its unwrapped tick count.
    last_rtp: Option<(u32, i64)>,
    /// Recent frames, oldest first.
    history: VecDeque<Seen>,
    delay_ms: f64,
    /// The delay grows back from a freeze at [`REGROW_MS_PER_FRAME`].
    regrowing: bool,
    /// A freeze ended: the first frame after it starts the tail.
    after_freeze: bool,
    /// Frames completed before this are a freeze's tail ([`FREEZE_TAIL`]).
    tail_until: Option<Instant>,
}

/// A frame the schedule has seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    completed: Instant,
    transit_ms: f64,
    /// Whether its lateness is covered: not for a freeze's tail.
    covered: bool,
}

impl PlayoutSchedule {
    pub(crate) fn new() -> PlayoutSchedule {
        PlayoutSchedule::default()
    }

    /// The delay pictures are held back by now.
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay_ms / 1000.0)
    }

    /// The picture froze: the next one is shown as soon as it is ready
    /// (within [`REGROW_MS_PER_FRAME`]: waiting longer only lengthens the
    /// freeze), and the delay grows back from there.
    pub(crate) fn catch_up(&mut self) {
        self.delay_ms = 0.0;
        self.regrowing = true;
        self.after_freeze = true;
    }

    /// When the frame with `timing` should be shown.
    pub(crate) fn schedule(&mut self, timing: FrameTiming) -> Showing {
        let epoch = *self.epoch.get_or_insert(timing.completed);
        let ticks = self.unwrap(timing.rtp_timestamp);
        let transit_ms = timing
            .completed
            .saturating_duration_since(epoch)
            .as_secs_f64()
            * 1000.0
            - ticks as f64 / RTP_TICKS_PER_MS;
        if std::mem::take(&mut self.after_freeze) {
            self.tail_until = Some(timing.completed + FREEZE_TAIL);
        }
        let in_tail = self
            .tail_until
            .is_some_and(|until| timing.completed <= until);
        self.history.push_back(Seen {
            completed: timing.completed,
            transit_ms,
            covered: !in_tail,
        });
        while self
            .history
            .front()
            .is_some_and(|seen| timing.completed.saturating_duration_since(seen.completed) > WINDOW)
        {
            self.history.pop_front();
        }
        let base = self
            .history
            .iter()
            .map(|seen| seen.transit_ms)
            .fold(f64::INFINITY, f64::min);
        let lateness = transit_ms - base;
        if lateness > 150.0 {
            tracing::debug!(
                lateness_ms = lateness as u64,
                rtp = timing.rtp_timestamp,
                "a late picture"
            );
        }
        if lateness > TOO_LATE_MS {
            return Showing::Skip;
        }
        let worst = self
            .history
            .iter()
            .filter(|seen| seen.covered)
            .map(|seen| seen.transit_ms - base)
            .filter(|late| *late <= TOO_LATE_MS)
            .fold(0.0, f64::max);
        let needed = (worst - UNCOVERED_MS).clamp(0.0, MAX_DELAY.as_secs_f64() * 1000.0);
        self.delay_ms = if needed < self.delay_ms {
            (self.delay_ms - DECAY_MS_PER_FRAME).max(needed)
        } else if self.regrowing {
            (self.delay_ms + REGROW_MS_PER_FRAME).min(needed)
        } else {
            needed
        };
        // Grown back once it meets a need; a freeze's tail, needing
        // nothing, does not end the regrowth.
        self.regrowing &= self.delay_ms < needed || (in_tail && needed == 0.0);
        let wait_ms = (self.delay_ms - lateness).max(0.0);
        Showing::At(timing.completed + Duration::from_secs_f64(wait_ms / 1000.0))
    }

    /// RTP timestamps as a count that does not wrap (nor jump back on reordering).
    fn unwrap(&mut self, rtp: u32) -> i64 {
        let ticks = match self.last_rtp {
            None => i64::from(rtp),
            Some((last, last_ticks)) => last_ticks + i64::from(rtp.wrapping_sub(last) as i32),
        };
        self.last_rtp = Some((rtp, ticks));
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames at 30 fps (3000 ticks apart) completing `transit(n)` ms after
    /// their RTP time; how long each waited before being shown.
    fn run(frames: u32, transit: impl Fn(u32) -> f64) -> (Vec<f64>, PlayoutSchedule) {
        let start = Instant::now();
        let mut schedule = PlayoutSchedule::new();
        let mut waits = Vec::new();
        for n in 0..frames {
            let sent_ms = f64::from(n) * 1000.0 / 30.0;
            let completed = start + Duration::from_secs_f64((sent_ms + transit(n)) / 1000.0);
            let timing = FrameTiming {
                rtp_timestamp: 4_294_000_000u32.wrapping_add(n * 3000),
                completed,
            };
            match schedule.schedule(timing) {
                Showing::At(at) => waits.push((at - completed).as_secs_f64() * 1000.0),
                Showing::Skip => waits.push(f64::NAN),
            }
        }
        (waits, schedule)
    }

    /// Frame `n` of a 30 fps stream that began at `start`, complete
    /// `transit_ms` after its RTP time.
    fn frame_at(start: Instant, n: u32, transit_ms: f64) -> FrameTiming {
        FrameTiming {
            rtp_timestamp: n * 3000,
            completed: start
                + Duration::from_secs_f64((f64::from(n) * 1000.0 / 30.0 + transit_ms) / 1000.0),
        }
    }

    /// Transit of frame `n` when every tenth waits 200 ms for a resend.
    fn resend_every_tenth(n: u32) -> f64 {
        if n % 10 == 5 { 220.0 } else { 20.0 }
    }

    #[test]
    fn a_clean_stream_is_shown_the_moment_it_is_ready() {
        let (waits, schedule) = run(300, |n| 20.0 + f64::from(n % 3));
        assert!(waits.iter().all(|w| *w < 1.0), "{waits:?}");
        assert_eq!(schedule.delay(), Duration::ZERO);
    }

    #[test]
    fn retransmission_waits_are_smoothed_into_gaps_shorter_than_a_freeze() {
        // Every 40th frame waits 230 ms for a resend; the frames behind it
        // complete right after it (decoding is in order).
        let transit = |n: u32| {
            let k = n % 40;
            if k < 7 && n >= 40 {
                20.0 + (230.0 - f64::from(k) * 33.3).max(0.0)
            } else {
                20.0
            }
        };
        let (waits, schedule) = run(400, transit);
        // Shown times: completion plus wait. Once the first late frame has
        // been seen (it cannot be foreseen), no gap between consecutive shown
        // frames may reach the freeze threshold (~183 ms at 30 fps).
        let shown: Vec<f64> = (0..400)
            .map(|n| f64::from(n) * 1000.0 / 30.0 + transit(n) + waits[n as usize])
            .collect();
        let gap = |from: usize| {
            shown[from..]
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(0.0, f64::max)
        };
        assert!(
            gap(0) > 200.0,
            "the first wait is a freeze: {:.0} ms",
            gap(0)
        );
        // The W3C threshold here: the 33 ms average plus 150 ms.
        assert!(gap(60) < 183.0, "worst gap {:.0} ms", gap(60));
        let delay = schedule.delay().as_secs_f64() * 1000.0;
        assert!((90.0..=160.0).contains(&delay), "held back {delay:.0} ms");
    }

    #[test]
    fn the_delay_comes_back_down_when_late_frames_stop() {
        let (_, schedule) = run(900, |n| if n == 100 { 300.0 } else { 20.0 });
        assert_eq!(schedule.delay(), Duration::ZERO);
        let (_, schedule) = run(260, |n| if n == 100 { 300.0 } else { 20.0 });
        assert!(schedule.delay() > Duration::from_millis(100));
    }

    #[test]
    fn the_delay_is_capped_and_frames_from_the_past_are_skipped() {
        let (waits, schedule) = run(200, |n| match n {
            100 => 700.0,
            150 => 3000.0,
            _ => 20.0,
        });
        assert_eq!(schedule.delay(), MAX_DELAY);
        assert!(waits[150].is_nan(), "a frame 3 s late is not shown");
        assert!(waits.iter().filter(|w| w.is_nan()).count() == 1);
    }

    #[test]
    fn a_freezes_tail_of_late_frames_does_not_hold_the_pictures_after_it_back() {
        let start = Instant::now();
        let mut schedule = PlayoutSchedule::new();
        let frame = |n: u32, transit_ms: f64| frame_at(start, n, transit_ms);
        for n in 0..60 {
            schedule.schedule(frame(n, 20.0));
        }
        // 30 s without a frame, then the keyframe that ends the freeze, and
        // behind it five frames that waited 400 ms in the sender's queue
        // (all complete within 30 ms of it).
        schedule.catch_up();
        let resumed = 60 + 900;
        schedule.schedule(frame(resumed, 20.0));
        for k in 1..=5 {
            schedule.schedule(frame(resumed - 12 + k, 400.0 + f64::from(k)));
        }
        for n in resumed + 1..resumed + 60 {
            schedule.schedule(frame(n, 20.0));
            assert!(
                schedule.delay() <= Duration::from_millis(10),
                "frame {n}: held back {:?}",
                schedule.delay()
            );
        }
        // Lateness after the tail is covered as before.
        for n in resumed + 60..resumed + 120 {
            schedule.schedule(frame(n, resend_every_tenth(n)));
        }
        assert!(schedule.delay() > Duration::from_millis(100));
    }

    #[test]
    fn after_a_freeze_the_next_picture_is_shown_at_once_and_the_delay_grows_back() {
        let start = Instant::now();
        let mut schedule = PlayoutSchedule::new();
        let frame = |n: u32, transit_ms: f64| frame_at(start, n, transit_ms);
        // Every tenth frame waits 200 ms for a resend: pictures are held back.
        for n in 0..60 {
            schedule.schedule(frame(n, resend_every_tenth(n)));
        }
        let held = schedule.delay().as_secs_f64() * 1000.0;
        assert!(held > 100.0, "{held}");
        schedule.catch_up();
        let first = frame(70, 20.0);
        let Showing::At(at) = schedule.schedule(first) else {
            panic!("skipped");
        };
        let mut previous = (at - first.completed).as_secs_f64() * 1000.0;
        assert!(previous <= REGROW_MS_PER_FRAME + 0.01, "held {previous} ms");
        for n in 71..80 {
            let timing = frame(n, 20.0);
            let Showing::At(at) = schedule.schedule(timing) else {
                panic!("skipped");
            };
            let wait = (at - timing.completed).as_secs_f64() * 1000.0;
            assert!(
                wait - previous <= REGROW_MS_PER_FRAME + 0.01,
                "{previous} -> {wait}"
            );
            previous = wait;
        }
        assert!(previous > 0.0, "the delay grows back");
    }
}
