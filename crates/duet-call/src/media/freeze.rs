//! Video freezes as the W3C webrtc-stats count them (`freezeCount`,
//! `totalFreezesDuration`): an interval between two shown frames longer than
//! max(3 × the average interval, the average + 150 ms), the average taken over
//! the last 30 intervals. No clock of its own: the caller says when a frame
//! was shown. Headless, "shown" is "decoded and ready for display".

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Intervals the average is taken over (W3C: the last 30 rendered frames).
const AVERAGE_OVER: usize = 30;
/// Intervals needed before a freeze can be called (as libwebrtc does): a
/// stream's first few frames give no useful average.
const MIN_INTERVALS: usize = 5;
/// A freeze is at least this much longer than the average interval.
const MIN_INCREASE: Duration = Duration::from_millis(150);

/// Counts freezes in a stream of shown frames.
#[derive(Debug, Default)]
pub(crate) struct FreezeDetector {
    last_shown: Option<Instant>,
    intervals: VecDeque<Duration>,
    sum: Duration,
    freeze_count: u64,
    total_freezes: Duration,
    judged: bool,
}

impl FreezeDetector {
    /// A detector that has seen no frame.
    pub(crate) fn new() -> FreezeDetector {
        FreezeDetector::default()
    }

    /// A frame was shown at `now`. Returns the interval since the previous
    /// frame when that interval was a freeze.
    pub(crate) fn on_frame_shown(&mut self, now: Instant) -> Option<Duration> {
        let previous = self.last_shown.replace(now)?;
        let interval = now.saturating_duration_since(previous);
        let mut freeze = None;
        if self.intervals.len() >= MIN_INTERVALS {
            self.judged = true;
            let average = self.sum / self.intervals.len() as u32;
            let threshold = (average * 3).max(average + MIN_INCREASE);
            if interval > threshold {
                self.freeze_count += 1;
                self.total_freezes += interval;
                freeze = Some(interval);
            }
        }
        self.intervals.push_back(interval);
        self.sum += interval;
        if self.intervals.len() > AVERAGE_OVER
            && let Some(oldest) = self.intervals.pop_front()
        {
            self.sum -= oldest;
        }
        freeze
    }

    /// Whether a frame shown at `now` would end a freeze: the picture has
    /// already stood too long.
    pub(crate) fn frozen_at(&self, now: Instant) -> bool {
        let Some(last) = self.last_shown else {
            return false;
        };
        if self.intervals.len() < MIN_INTERVALS {
            return false;
        }
        let average = self.sum / self.intervals.len() as u32;
        now.saturating_duration_since(last) > (average * 3).max(average + MIN_INCREASE)
    }

    /// A new stream starts (a new call): the gap before its first frame is no
    /// freeze. The totals are kept.
    pub(crate) fn restart(&mut self) {
        self.last_shown = None;
        self.intervals.clear();
        self.sum = Duration::ZERO;
    }

    /// Whether any interval has been judged yet (before that, the counts
    /// say nothing).
    pub(crate) fn has_judged(&self) -> bool {
        self.judged
    }

    /// Freezes seen so far.
    pub(crate) fn freeze_count(&self) -> u64 {
        self.freeze_count
    }

    /// The freezes' intervals, added up.
    pub(crate) fn total_freezes_duration(&self) -> Duration {
        self.total_freezes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Shows frames at the given intervals after `start`; returns the freezes reported.
    fn show(detector: &mut FreezeDetector, start: Instant, intervals: &[u64]) -> Vec<Duration> {
        let mut at = start;
        let mut freezes = Vec::new();
        detector.on_frame_shown(at);
        for &interval in intervals {
            at += ms(interval);
            freezes.extend(detector.on_frame_shown(at));
        }
        freezes
    }

    #[test]
    fn a_steady_stream_has_no_freezes() {
        let mut detector = FreezeDetector::new();
        assert!(!detector.has_judged());
        let freezes = show(&mut detector, Instant::now(), &[33; 300]);
        assert!(detector.has_judged());
        assert!(freezes.is_empty());
        assert_eq!(detector.freeze_count(), 0);
        assert_eq!(detector.total_freezes_duration(), Duration::ZERO);
    }

    #[test]
    fn at_30_fps_a_gap_counts_only_beyond_the_average_plus_150_ms() {
        // Average 33 ms: 3 × 33 = 99 < 33 + 150 = 183, so the threshold is 183 ms.
        let mut detector = FreezeDetector::new();
        let mut intervals = vec![33; 10];
        intervals.push(180); // below 183: no freeze
        intervals.extend([33; 30]);
        intervals.push(400); // a freeze
        intervals.extend([33; 10]);
        let freezes = show(&mut detector, Instant::now(), &intervals);
        assert_eq!(freezes, vec![ms(400)]);
        assert_eq!(detector.freeze_count(), 1);
        assert_eq!(detector.total_freezes_duration(), ms(400));
    }

    #[test]
    fn at_a_low_frame_rate_a_gap_counts_only_beyond_three_times_the_average() {
        // Average 200 ms (5 fps): 3 × 200 = 600 > 200 + 150, so the threshold is 600 ms.
        let mut detector = FreezeDetector::new();
        let mut intervals = vec![200; 10];
        intervals.push(550);
        intervals.extend([200; 30]);
        intervals.push(700);
        let freezes = show(&mut detector, Instant::now(), &intervals);
        assert_eq!(freezes, vec![ms(700)]);
    }

    #[test]
    fn freezes_add_up_and_the_first_frames_are_not_judged() {
        let mut detector = FreezeDetector::new();
        // Too few intervals for an average: a long gap at the start is not judged.
        let mut intervals = vec![33, 33, 1000];
        // The long gap weighs on the average until 30 newer intervals push it out.
        intervals.extend([33; 30]);
        intervals.push(300);
        intervals.extend([33; 30]);
        intervals.push(500);
        show(&mut detector, Instant::now(), &intervals);
        assert_eq!(detector.freeze_count(), 2);
        assert_eq!(detector.total_freezes_duration(), ms(800));
    }

    #[test]
    fn the_gap_between_two_calls_is_no_freeze() {
        let mut detector = FreezeDetector::new();
        let start = Instant::now();
        show(&mut detector, start, &[33; 40]);
        detector.restart();
        let later = start + Duration::from_secs(60);
        let freezes = show(&mut detector, later, &[33; 40]);
        assert!(freezes.is_empty());
        assert_eq!(detector.freeze_count(), 0);
    }

    #[test]
    fn a_picture_that_stood_too_long_is_frozen_already() {
        let start = Instant::now();
        let mut detector = FreezeDetector::new();
        assert!(!detector.frozen_at(start), "nothing shown yet");
        for n in 0..10 {
            detector.on_frame_shown(start + ms(n * 33));
        }
        let last = start + ms(9 * 33);
        assert!(!detector.frozen_at(last + ms(150)));
        assert!(detector.frozen_at(last + ms(200)));
    }
}
