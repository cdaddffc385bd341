//! Finds the beeps of `docs/test-signals.md` in received audio: their onsets
//! (mouth-to-ear latency) and frequency (which sender they came from).
//!
//! Onset rule of the spec: the first 5 ms window whose RMS rises above 0.1 of
//! full scale after at least 300 ms below it. The window slides by one sample
//! (a running sum of squares), and the onset is the instant the window's RMS
//! crosses 0.1: for a beep at 0.5 amplitude that is under 0.5 ms after the
//! sound starts, so the latency is not biased by the window length.
//!
//! Only test beeps count. Speech, music and noise also rise above 0.1 after a
//! pause, so an onset becomes a [`Beep`] only when what follows is a burst of
//! one steady tone: loud for about the beep's 100 ms (longer by a receiver's
//! wait for a late packet) and then quiet again, the same frequency (within
//! 2 %) and level in both halves of its middle 50 ms, and evenly spaced zero
//! crossings, as a sine has and a voice or noise has not.
//! A call whose sender talks into a microphone therefore reports no beeps and
//! no audio latency, rather than numbers read from speech.

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
/// How long a burst may stay loud to be a 100 ms beep: the 5 ms window and a
/// codec's smearing add a little, and a receiver that waits for a late
/// packet in the middle of a beep plays it longer by its wait (four 20 ms
/// ticks on a 100 kbit/s link: 185 ms), as it would a word. Speech and music
/// go on far longer, or are no steady tone.
const BURST_MS: std::ops::RangeInclusive<f64> = 70.0..=250.0;
/// A burst is judged once it has been quiet this long (it has ended) ...
const ENDED: usize = SAMPLE_RATE as usize / 20; // 50 ms
/// ... or this long after its onset, when it is too long to be a beep anyway.
const DECIDE_AFTER: usize = SAMPLE_RATE as usize * 3 / 10; // 300 ms
/// Frequencies a test beep may have.
const BEEP_HZ: std::ops::RangeInclusive<f64> = 290.0..=3100.0;
/// Largest relative difference between the two halves of the burst's middle
/// (frequency) and largest spread of its zero-crossing periods.
const STEADY: f64 = 0.02;
/// Largest relative difference of the level of the two halves.
const STEADY_LEVEL: f64 = 0.3;

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
    /// Samples from the onset on.
    samples: Vec<f32>,
    /// Samples from the onset to the last one whose window was still loud.
    loud_for: usize,
}

impl PendingBeep {
    /// The beep this burst is, or `None` when it is not a test beep.
    fn judge(&self) -> Option<Beep> {
        let loud_ms = self.loud_for as f64 * 1000.0 / f64::from(SAMPLE_RATE);
        if !BURST_MS.contains(&loud_ms) {
            return None;
        }
        let latency_ms = self.onset_unix_ms.rem_euclid(1000.0);
        if latency_ms > LATEST_ONSET_MS {
            return None;
        }
        let middle = self.samples.get(MEASURE_FROM..MEASURE_FROM + MEASURE_LEN)?;
        let frequency_hz = steady_tone_frequency(middle)?;
        Some(Beep {
            onset_unix_ms: self.onset_unix_ms,
            latency_ms,
            frequency_hz,
        })
    }
}

impl Default for BeepDetector {
    fn default() -> Self {
        BeepDetector::new()
    }
}

impl BeepDetector {
    /// A detector that has heard nothing yet. What came before its first
    /// sample was silence (a call's playout starts with its first packet),
    /// so a beep at the very start is found: counting the 300 ms of quiet
    /// from the first sample lost every beep that began within 0.3 s of a
    /// call's audio, though it was played whole.
    pub fn new() -> BeepDetector {
        BeepDetector {
            window: VecDeque::with_capacity(WINDOW + 1),
            sum_squares: 0.0,
            quiet: QUIET_NEEDED,
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
                let heard = pending.samples.len();
                let ended =
                    heard >= MEASURE_FROM + MEASURE_LEN && heard - pending.loud_for >= ENDED;
                if ended || heard >= DECIDE_AFTER {
                    match pending.judge() {
                        Some(beep) => self.found.push(beep),
                        None => tracing::debug!(
                            loud_ms = pending.loud_for as u64 * 1000 / u64::from(SAMPLE_RATE),
                            after_second_ms = pending.onset_unix_ms.rem_euclid(1000.0) as u64,
                            "a loud burst that is no test beep"
                        ),
                    }
                    self.pending = None;
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
                        samples: Vec::with_capacity(DECIDE_AFTER),
                        loud_for: 0,
                    });
                }
                if let Some(pending) = &mut self.pending {
                    pending.loud_for = pending.samples.len();
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

/// The frequency of `samples` if they are one steady tone in the range of the
/// test beeps: the same frequency and level in both halves, and zero crossings
/// evenly spaced. `None` for speech, noise, music or silence.
fn steady_tone_frequency(samples: &[f32]) -> Option<f64> {
    let (first, second) = samples.split_at(samples.len() / 2);
    let (level_a, level_b) = (rms(first), rms(second));
    if (level_a - level_b).abs() > STEADY_LEVEL * level_a.max(level_b) {
        return None;
    }
    let (whole, a, b) = (
        zero_crossing_frequency(samples)?,
        zero_crossing_frequency(first)?,
        zero_crossing_frequency(second)?,
    );
    let steady = (a - b).abs() <= STEADY * whole && periods_are_even(samples);
    (steady && BEEP_HZ.contains(&whole)).then_some(whole)
}

fn rms(samples: &[f32]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Upward zero crossings, each located by linear interpolation (in samples).
fn upward_crossings(samples: &[f32]) -> impl Iterator<Item = f64> + '_ {
    samples.windows(2).enumerate().filter_map(|(i, pair)| {
        let (a, b) = (f64::from(pair[0]), f64::from(pair[1]));
        (a < 0.0 && b >= 0.0).then(|| i as f64 + a / (a - b))
    })
}

/// Whether the periods between consecutive upward zero crossings are all
/// within [`STEADY`] of their mean (a sine: yes; a voice or noise: no).
fn periods_are_even(samples: &[f32]) -> bool {
    let crossings: Vec<f64> = upward_crossings(samples).collect();
    let periods: Vec<f64> = crossings.windows(2).map(|w| w[1] - w[0]).collect();
    if periods.len() < 2 {
        return false;
    }
    let mean = periods.iter().sum::<f64>() / periods.len() as f64;
    // One sample of jitter is allowed whatever the frequency (crossings are
    // interpolated, but a codec adds a little noise).
    let allowed = (STEADY * mean).max(1.0);
    periods.iter().all(|p| (p - mean).abs() <= allowed)
}

/// Frequency from the time between the first and last upward zero crossing.
/// `None` for a signal with no whole cycle.
fn zero_crossing_frequency(samples: &[f32]) -> Option<f64> {
    let mut crossings = upward_crossings(samples);
    let first = crossings.next()?;
    let (cycles, last) = crossings.fold((0u32, first), |(n, _), at| (n + 1, at));
    (cycles > 0).then(|| f64::from(cycles) * f64::from(SAMPLE_RATE) / (last - first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_audio::{BeepSource, sample_index, sample_time};
    use std::f32::consts::PI;
    use std::time::{Duration, UNIX_EPOCH};

    /// When `frame`'s first sample was made, in ms since the epoch.
    fn made_at_ms(frame: &crate::frame::AudioFrame) -> f64 {
        frame
            .capture_time
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_secs_f64()
            * 1000.0
    }

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
                let sent_exact = made_at_ms(&frame);
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
    fn a_beep_at_the_very_start_is_found() {
        let start = UNIX_EPOCH + Duration::from_millis(1_764_000_000_900);
        let mut source = BeepSource::new(880.0, start).expect("valid");
        let mut detector = BeepDetector::new();
        // Audio from 100 ms before a second: the beep begins 100 ms in.
        for _ in 0..25 {
            let frame = source.generate();
            detector.push(&frame.samples, made_at_ms(&frame) + 40.0);
        }
        let beeps = detector.take();
        assert_eq!(beeps.len(), 1, "{beeps:?}");
        assert!((beeps[0].latency_ms - 40.0).abs() < 1.0, "{beeps:?}");
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

    /// Deterministic pseudo-random numbers in [-1, 1) (xorshift), so the
    /// tests need no randomness crate and always hear the same sound.
    fn noise(seed: u64) -> impl FnMut() -> f32 {
        let mut state = seed.max(1);
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// Bursts of `make(n)` for `len_ms`, one starting at every whole second
    /// (where beeps would be), silence in between: the worst case for false beeps.
    fn bursts_on_the_second(
        seconds: usize,
        len_ms: usize,
        mut make: impl FnMut(usize) -> f32,
    ) -> Vec<f32> {
        // A second of silence first: the detector needs 300 ms of quiet before an onset.
        let mut out = vec![0.0; (seconds + 1) * 48_000];
        for second in 1..=seconds {
            let start = second * 48_000 + 960; // 20 ms after the second
            for n in 0..len_ms * 48 {
                out[start + n] = make(n);
            }
        }
        out
    }

    fn beeps_in(samples: &[f32]) -> Vec<Beep> {
        let mut detector = BeepDetector::new();
        for (i, chunk) in samples.chunks(960).enumerate() {
            detector.push(chunk, 1_764_000_000_000.0 + i as f64 * 20.0);
        }
        detector.take()
    }

    #[test]
    fn the_same_bursts_with_a_tone_are_beeps() {
        // The control for the tests below: the helper makes beeps when given a tone.
        let tone = bursts_on_the_second(5, 100, |n| {
            0.5 * (n as f32 * 2.0 * PI * 660.0 / 48_000.0).sin()
        });
        let beeps = beeps_in(&tone);
        assert_eq!(beeps.len(), 5, "{beeps:?}");
        assert!(beeps.iter().all(|b| (b.frequency_hz - 660.0).abs() < 3.0));
    }

    #[test]
    fn noise_bursts_are_not_beeps() {
        let mut next = noise(7);
        let samples = bursts_on_the_second(10, 100, |_| 0.6 * next());
        assert!(beeps_in(&samples).is_empty());
        // Steady noise, too.
        let mut next = noise(11);
        let steady: Vec<f32> = (0..48_000 * 5).map(|_| 0.3 * next()).collect();
        assert!(beeps_in(&steady).is_empty());
    }

    #[test]
    fn speech_like_syllables_are_not_beeps() {
        // Voiced "syllables" of 100 ms: a glottal pulse train whose pitch glides
        // (120 to 170 Hz) through two formant-like resonances, as a voice has.
        let samples = bursts_on_the_second(10, 100, |n| {
            let t = n as f32 / 48_000.0;
            let pitch = 120.0 + 500.0 * t;
            let phase = (pitch * t).fract();
            let pulse = (-phase * 12.0).exp();
            let formants = (2.0 * PI * 700.0 * t).sin() + 0.6 * (2.0 * PI * 1_200.0 * t).sin();
            0.5 * pulse * formants
        });
        assert!(beeps_in(&samples).is_empty());
        // Nor when as long as a beep stretched by waits.
        let samples = bursts_on_the_second(10, 220, |n| {
            let t = n as f32 / 48_000.0;
            let phase = ((120.0 + 250.0 * t) * t).fract();
            (-phase * 12.0).exp() * 0.5 * (2.0 * PI * 700.0 * t).sin()
        });
        assert!(beeps_in(&samples).is_empty());
    }

    #[test]
    fn a_beep_a_wait_made_longer_is_still_a_beep_and_is_found_once_it_ends() {
        // 100 ms and four 20 ms ticks that a receiver waited for a late
        // packet, going on with the tone.
        let tone = |n: usize| 0.5 * (n as f32 * 2.0 * PI * 880.0 / 48_000.0).sin();
        let stretched = bursts_on_the_second(5, 180, tone);
        assert_eq!(beeps_in(&stretched).len(), 5);
        // Judged 50 ms after it ends, not a fixed time after its onset: a
        // beep that ends just before the audio does still counts.
        let mut detector = BeepDetector::new();
        let beep: Vec<f32> = (0..4_800).map(tone).chain([0.0; 3_000]).collect();
        detector.push(&[0.0; 960], 1_764_000_000_980.0);
        detector.push(&beep, 1_764_000_001_000.0);
        assert_eq!(detector.beeps().len(), 1);
    }

    #[test]
    fn a_long_tone_or_a_glide_is_not_a_beep() {
        // The right frequency but 400 ms long: not a 100 ms burst.
        let long = bursts_on_the_second(5, 400, |n| {
            0.5 * (n as f32 * 2.0 * PI * 880.0 / 48_000.0).sin()
        });
        assert!(beeps_in(&long).is_empty());
        // 100 ms long but sliding from 600 to 1200 Hz (a whistle, a siren).
        let glide = bursts_on_the_second(5, 100, |n| {
            let t = n as f32 / 48_000.0;
            0.5 * (2.0 * PI * (600.0 * t + 3_000.0 * t * t)).sin()
        });
        assert!(beeps_in(&glide).is_empty());
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
