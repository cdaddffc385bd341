//! Seeded sounds with the shape of speech, for testing what processes voice
//! (echo cancellation, noise suppression, gain control) without a recording.
//!
//! Never used for latency: the beep detector refuses them (`beep.rs` tests
//! that syllables like these are not beeps).

use std::f32::consts::{PI, TAU};

use crate::frame::SAMPLE_RATE;

const RATE: f32 = SAMPLE_RATE as f32;

/// A talker: syllables of 120–300 ms with 60–200 ms gaps, each a harmonic
/// series on a pitch of 100–220 Hz gliding by up to 20 %, harmonics falling
/// 6 dB per octave up to 3.5 kHz, faded in and out over 20 ms. Never louder
/// than `peak`; the harmonics seldom line up, so its peaks reach about half
/// of it. The same `seed` gives the same talker.
///
/// Broadband like a voice, unlike a test beep: an echo canceller learns the
/// whole echo path from it.
pub fn speech_like(seconds: f32, peak: f32, seed: u64) -> Vec<f32> {
    let mut rng = SeededRandom::new(seed);
    let total = (seconds * RATE) as usize;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let len = samples_in_ms(rng.range(120.0, 300.0));
        let f0_start = rng.range(100.0, 220.0);
        let f0_end = f0_start * rng.range(0.8, 1.2);
        let harmonics = (3500.0 / f0_start.max(f0_end)) as usize;
        let norm: f32 = (1..=harmonics).map(|k| 1.0 / k as f32).sum();
        let mut phase = 0.0f32;
        for i in 0..len {
            let f0 = f0_start + (f0_end - f0_start) * i as f32 / len as f32;
            phase = (phase + TAU * f0 / RATE) % TAU;
            let voice: f32 = (1..=harmonics)
                .map(|k| (phase * k as f32).sin() / k as f32)
                .sum();
            out.push(peak * fade(i, len, samples_in_ms(20.0)) * voice / norm);
        }
        out.extend(std::iter::repeat_n(
            0.0,
            samples_in_ms(rng.range(60.0, 200.0)),
        ));
    }
    out.truncate(total);
    out
}

/// White noise, uniform in ±`amplitude`: a fan's or a road's steady hiss.
pub fn white_noise(seconds: f32, amplitude: f32, seed: u64) -> Vec<f32> {
    let mut rng = SeededRandom::new(seed);
    (0..(seconds * RATE) as usize)
        .map(|_| rng.range(-amplitude, amplitude))
        .collect()
}

fn samples_in_ms(ms: f32) -> usize {
    (ms * RATE / 1000.0) as usize
}

/// Raised-cosine fade in and out over `ramp` samples of a burst `len` long,
/// so syllables (and the crate's test bursts) do not click.
pub(crate) fn fade(i: usize, len: usize, ramp: usize) -> f32 {
    let edge = i.min(len - 1 - i);
    if edge >= ramp {
        1.0
    } else {
        0.5 - 0.5 * (PI * edge as f32 / ramp as f32).cos()
    }
}

/// xorshift64*: deterministic, and no `rand` dependency for it. Shared with
/// the crate's tests that need seeded randomness.
pub(crate) struct SeededRandom(u64);

impl SeededRandom {
    pub(crate) fn new(seed: u64) -> SeededRandom {
        SeededRandom(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BeepDetector;

    #[test]
    fn the_talker_has_syllables_and_pauses_and_repeats_with_its_seed() {
        let talker = speech_like(5.0, 0.5, 3);
        assert_eq!(talker.len(), 5 * SAMPLE_RATE as usize);
        assert_eq!(talker, speech_like(5.0, 0.5, 3));
        assert_ne!(talker, speech_like(5.0, 0.5, 4));
        let peak = talker.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((0.2..=0.5).contains(&peak), "peak {peak}");
        let silent = talker.iter().filter(|s| **s == 0.0).count() as f32 / talker.len() as f32;
        assert!((0.15..0.6).contains(&silent), "{silent} of it silent");
    }

    #[test]
    fn the_talker_is_not_beeps() {
        let mut detector = BeepDetector::new();
        for (n, frame) in speech_like(10.0, 0.5, 7).chunks(960).enumerate() {
            detector.push(frame, n as f64 * 20.0);
        }
        assert!(detector.beeps().is_empty(), "{:?}", detector.beeps());
    }

    #[test]
    fn white_noise_stays_within_its_amplitude_around_zero() {
        let noise = white_noise(2.0, 0.1, 9);
        assert!(noise.iter().all(|s| s.abs() <= 0.1));
        let mean = noise.iter().sum::<f32>() / noise.len() as f32;
        let power = noise.iter().map(|s| s * s).sum::<f32>() / noise.len() as f32;
        assert!(mean.abs() < 0.002, "{mean}");
        // Uniform in ±a has power a²/3.
        assert!((power / (0.01 / 3.0) - 1.0).abs() < 0.05, "{power}");
    }
}
