//! Finds the beeps of `test-signals.md` in received audio: their onsets
//! (mouth-to-ear latency) and frequency (which sender they came from).
//!
//! Onset rule of the spec: the first 5 ms window whose RMS rises above 0.1 of
//! full scale after at least 300 ms below it. The window slides by one sample
//! (a running sum of squares), and the onset is the instant the window's RMS
//! crosses 0.1: for a beep at 0.5 amplitude that is under 0.5 ms after the
//! sound starts, so the latency is not biased by the window length.

use std::collections::VecDeque;

use crate::frame::SAMPLE_RATE;

const WINDOW: usize = (SAMPLE_RATE as usize) / 200; // 5 ms
const QUIET_NEEDED: u64 = SAMPLE_RATE as u64 * 3 / 10; // 300 ms
const THRESHOLD_RMS: f64 = 0.1;
/// The frequency is measured over the middle 50 ms of the 100 ms burst.
const MEASURE_FROM: usize = SAMPLE_RATE as usize / 40; // 25 ms after onset
const MEASURE_LEN: usize = SAMPLE_RATE as usize / 20; // 50 ms
/// An onset later than this after the whole second is a missing beep.
const LATEST_ONSET_MS: f64 = 500.0;

/// One beep heard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beep {
    /// Wall-clock time of the onset, ms since the epoch.
    pub onset_unix_ms: f64,
    /// Onset minus the whole second it follows: the one-way latency.
    pub latency_ms: f64,
    /// Frequency of the burst.
    pub frequency_hz: f64,
}

/// Streaming detector: feed it received samples with the wall-clock time of
/// the first sample of each chunk.
#[derive(Debug)]
pub struct BeepDetector {
    window: VecDeque<f32>,
    sum_squares: f64,
    /// Samples in a row with the RMS below the threshold.
    quiet: u64,
    /// Onset found, collecting the middle of the burst.
    pending: Option<PendingBeep>,
    found: Vec<Beep>,
}

#[derive(Debug)]
struct PendingBeep {
    onset_unix_ms: f64,
    samples: Vec<f32>,
}

impl Default for BeepDetector {
    fn default() -> Self {
        BeepDetector::new()
    }
}

impl BeepDetector {
    /// A detector that has heard nothing yet (counts as quiet, so a beep at
    /// the very start after 300 ms of silence is found).
    pub fn new() -> BeepDetector {
        BeepDetector {
            window: VecDeque::with_capacity(WINDOW + 1),
            sum_squares: 0.0,
            quiet: 0,
            pending: None,
            found: Vec::new(),
        }
    }

    /// Feeds `samples`, the first of which was received at `first_unix_ms`.
    pub fn push(&mut self, samples: &[f32], first_unix_ms: f64) {
        let ms_per_sample = 1000.0 / f64::from(SAMPLE_RATE);
        for (i, &sample) in samples.iter().enumerate() {
            let now_ms = first_unix_ms + i as f64 * ms_per_sample;
            if let Some(pending) = &mut self.pending {
                pending.samples.push(sample);
                if pending.samples.len() >= MEASURE_FROM + MEASURE_LEN {
                    let onset = pending.onset_unix_ms;
                    let middle = &pending.samples[MEASURE_FROM..MEASURE_FROM + MEASURE_LEN];
                    let frequency_hz = zero_crossing_frequency(middle);
                    let latency_ms = onset.rem_euclid(1000.0);
                    self.pending = None;
                    if latency_ms <= LATEST_ONSET_MS
                        && let Some(frequency_hz) = frequency_hz
                    {
                        self.found.push(Beep {
                            onset_unix_ms: onset,
                            latency_ms,
                            frequency_hz,
                        });
                    }
                }
            }
            let value = f64::from(sample);
            self.sum_squares += value * value;
            self.window.push_back(sample);
            if self.window.len() > WINDOW
                && let Some(old) = self.window.pop_front()
            {
                self.sum_squares -= f64::from(old) * f64::from(old);
            }
            let rms = (self.sum_squares.max(0.0) / WINDOW as f64).sqrt();
            if rms > THRESHOLD_RMS {
                if self.quiet >= QUIET_NEEDED && self.pending.is_none() {
                    self.pending = Some(PendingBeep {
                        onset_unix_ms: now_ms,
                        samples: Vec::with_capacity(MEASURE_FROM + MEASURE_LEN),
                    });
                }
                self.quiet = 0;
            } else {
                self.quiet += 1;
            }
        }
    }

    /// Beeps found so far, oldest first.
    pub fn beeps(&self) -> &[Beep] {
        &self.found
    }

    /// Takes the beeps found so far.
    pub fn take(&mut self) -> Vec<Beep> {
        std::mem::take(&mut self.found)
    }
}

/// Frequency from the time between the first and last upward zero crossing,
/// each located by linear interpolation. `None` for a signal with no cycles.
fn zero_crossing_frequency(samples: &[f32]) -> Option<f64> {
    let mut first: Option<f64> = None;
    let mut last = 0.0;
    let mut cycles = 0u32;
    for (i, pair) in samples.windows(2).enumerate() {
        let (a, b) = (f64::from(pair[0]), f64::from(pair[1]));
        if a < 0.0 && b >= 0.0 {
            let at = i as f64 + a / (a - b);
            match first {
                None => first = Some(at),
                Some(_) => cycles += 1,
            }
            last = at;
        }
    }
    let first = first?;
    (cycles > 0).then(|| f64::from(cycles) * f64::from(SAMPLE_RATE) / (last - first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_audio::{BeepSource, sample_index, sample_time};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn every_beep_is_found_on_time_at_its_frequency() {
        for hz in [300.0, 880.0, 1234.0, 3000.0] {
            let start = UNIX_EPOCH + Duration::from_millis(1_764_000_000_300);
            let mut source = BeepSource::new(hz, start).expect("valid");
            let mut detector = BeepDetector::new();
            // 5 s of audio "received" 40 ms after it was made.
            for _ in 0..250 {
                let frame = source.generate();
                let sent_ms = crate::frame::unix_ms(frame.capture_time) as f64;
                let sent_exact = frame
                    .capture_time
                    .duration_since(UNIX_EPOCH)
                    .expect("after epoch")
                    .as_secs_f64()
                    * 1000.0;
                assert!((sent_exact - sent_ms).abs() < 1.0);
                detector.push(&frame.samples, sent_exact + 40.0);
            }
            let beeps = detector.beeps();
            assert_eq!(beeps.len(), 5, "{hz} Hz: {beeps:?}");
            for beep in beeps {
                assert!((beep.latency_ms - 40.0).abs() < 1.0, "{hz}: {beep:?}");
                assert!(
                    (beep.frequency_hz - f64::from(hz)).abs() < f64::from(hz) * 0.005,
                    "{beep:?}"
                );
            }
        }
    }

    #[test]
    fn silence_and_continuous_tone_give_no_beeps() {
        let mut detector = BeepDetector::new();
        detector.push(&vec![0.0; 48_000 * 3], 0.0);
        assert!(detector.beeps().is_empty());
        // A tone that never stops has one onset at most (no 300 ms quiet before the next).
        let tone: Vec<f32> = (0..48_000 * 3)
            .map(|n| 0.5 * (n as f32 * 0.1).sin())
            .collect();
        let mut detector = BeepDetector::new();
        detector.push(&tone, 0.0);
        assert!(detector.beeps().len() <= 1);
    }

    #[test]
    fn an_onset_more_than_500_ms_after_the_second_is_missing() {
        let start = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let mut source = BeepSource::new(880.0, start).expect("valid");
        let mut detector = BeepDetector::new();
        for _ in 0..100 {
            let frame = source.generate();
            let at = sample_time(sample_index(frame.capture_time));
            let ms = at
                .duration_since(UNIX_EPOCH)
                .expect("after epoch")
                .as_secs_f64()
                * 1000.0;
            detector.push(&frame.samples, ms + 600.0);
        }
        assert!(detector.beeps().is_empty(), "{:?}", detector.beeps());
    }
}
