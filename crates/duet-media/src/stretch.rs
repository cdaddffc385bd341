//! Playing audio a touch faster or slower than it was made, to absorb the
//! difference between the sender's clock and the output device's.
//!
//! Two sound cards never run at exactly the same rate: 0.1–0.5 % apart is
//! common. Left alone, the receiver's buffer grows without end (and must drop
//! audio) or runs dry (and must play silence); both are heard as clicks. This
//! stretches or shrinks the stream by single samples, each slip hidden under a
//! 128-sample crossfade (rubato's `Slip`): no pitch change, no filter delay,
//! and at these rates nothing a listener notices.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Adjustable as _, FixedAsync, Resampler as _, Resizable as _, Slip};

use crate::MediaError;

/// The largest stretch (or shrink) asked of the stream, as a fraction. Slip
/// sustains ~0.73 % with 20 ms chunks; this stays inside it with room to spare
/// and is above the 0.5 % that two sound cards may differ by.
pub const MAX_STRETCH: f64 = 0.007;

/// Chunk processed at once: one 20 ms packet. Longer input is cut into these.
const CHUNK: usize = 960;

/// Stretches 48 kHz mono audio by a ratio kept within [`MAX_STRETCH`] of 1.
pub struct ClockStretch {
    slip: Slip<f32>,
    chunk: usize,
    ratio: f64,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    out: Vec<f32>,
}

impl std::fmt::Debug for ClockStretch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClockStretch")
            .field("ratio", &self.ratio)
            .finish_non_exhaustive()
    }
}

fn stretch_error(err: &dyn std::fmt::Display) -> MediaError {
    MediaError::Resample(err.to_string())
}

impl ClockStretch {
    /// A stretch at ratio 1 (audio passes unchanged).
    pub fn new() -> Result<ClockStretch, MediaError> {
        let slip = Slip::new(CHUNK, 1, FixedAsync::Input).map_err(|e| stretch_error(&e))?;
        let most_out = slip.output_frames_max();
        Ok(ClockStretch {
            slip,
            chunk: CHUNK,
            ratio: 1.0,
            input: vec![Vec::with_capacity(CHUNK)],
            output: vec![vec![0.0; most_out]],
            out: Vec::new(),
        })
    }

    /// Output samples per input sample from now on: above 1 plays slower
    /// (more samples out), below 1 faster. Clamped to [`MAX_STRETCH`].
    pub fn set_ratio(&mut self, ratio: f64) {
        let ratio = if ratio.is_finite() { ratio } else { 1.0 };
        self.ratio = ratio.clamp(1.0 - MAX_STRETCH, 1.0 + MAX_STRETCH);
        // Within the range Slip sustains, so it cannot refuse; if it ever
        // did, it would still apply the nearest ratio it can.
        let _ = self.slip.set_resample_ratio(self.ratio, false);
    }

    /// The ratio in use.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Stretches `samples` by the current ratio and returns the result, which
    /// is borrowed until the next call.
    pub fn process(&mut self, samples: &[f32]) -> Result<&[f32], MediaError> {
        self.out.clear();
        for piece in samples.chunks(CHUNK) {
            if piece.len() < 4 {
                // Too short to hide a slip in: passes as it is.
                self.out.extend_from_slice(piece);
                continue;
            }
            if piece.len() != self.chunk {
                self.slip
                    .set_chunk_size(piece.len())
                    .map_err(|e| stretch_error(&e))?;
                self.chunk = piece.len();
            }
            self.input[0].clear();
            self.input[0].extend_from_slice(piece);
            let input = SequentialSliceOfVecs::new(&self.input, 1, piece.len())
                .map_err(|e| stretch_error(&e))?;
            let most_out = self.output[0].len();
            let mut output = SequentialSliceOfVecs::new_mut(&mut self.output, 1, most_out)
                .map_err(|e| stretch_error(&e))?;
            let (_, written) = self
                .slip
                .process_into_buffer(&input, &mut output, None)
                .map_err(|e| stretch_error(&e))?;
            self.out.extend_from_slice(&self.output[0][..written]);
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, hz: f64) -> Vec<f32> {
        (0..n)
            .map(|i| (0.5 * (std::f64::consts::TAU * hz * i as f64 / 48_000.0).sin()) as f32)
            .collect()
    }

    #[test]
    fn at_ratio_one_audio_passes_unchanged() {
        let mut stretch = ClockStretch::new().expect("builds");
        let input = tone(960 * 5, 440.0);
        let mut out = Vec::new();
        for packet in input.chunks(960) {
            out.extend_from_slice(stretch.process(packet).expect("processes"));
        }
        assert_eq!(out, input);
    }

    #[test]
    fn a_ratio_changes_the_length_by_that_much_without_a_click() {
        for ratio in [1.005, 0.995] {
            let mut stretch = ClockStretch::new().expect("builds");
            stretch.set_ratio(ratio);
            let input = tone(48_000 * 4, 440.0);
            let mut out = Vec::new();
            for packet in input.chunks(960) {
                out.extend_from_slice(stretch.process(packet).expect("processes"));
            }
            let expected = input.len() as f64 * ratio;
            assert!(
                (out.len() as f64 - expected).abs() <= 2.0,
                "{ratio}: {} samples, expected {expected}",
                out.len()
            );
            // No click: from one sample to the next a 440 Hz tone at 0.5
            // moves at most 0.5·2π·440/48000 ≈ 0.029; a splice would jump.
            let biggest_step = out
                .windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .fold(0.0f32, f32::max);
            assert!(biggest_step < 0.035, "{ratio}: a step of {biggest_step}");
        }
    }

    #[test]
    fn ratios_beyond_the_limit_are_clamped_and_odd_lengths_pass() {
        let mut stretch = ClockStretch::new().expect("builds");
        stretch.set_ratio(1.5);
        assert_eq!(stretch.ratio(), 1.0 + MAX_STRETCH);
        stretch.set_ratio(f64::NAN);
        assert_eq!(stretch.ratio(), 1.0);
        for len in [0, 3, 120, 480, 2_880] {
            let out = stretch.process(&tone(len, 300.0)).expect("processes").len();
            assert_eq!(out, len, "ratio 1 keeps {len} samples");
        }
    }
}
