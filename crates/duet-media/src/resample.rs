//! Any sample rate and channel count to Duet's 48 kHz mono, with rubato.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

use crate::MediaError;
use crate::frame::SAMPLE_RATE;

/// Averages interleaved channels into one.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Resamples a whole mono clip from `rate` to 48 kHz.
pub fn to_48k(mono: Vec<f32>, rate: u32) -> Result<Vec<f32>, MediaError> {
    if rate == SAMPLE_RATE || mono.is_empty() {
        return Ok(mono);
    }
    let error = |e: &dyn std::fmt::Display| MediaError::Resample(e.to_string());
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        SAMPLE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| error(&e))?;
    let len = mono.len();
    let input = [mono];
    let adapter = SequentialSliceOfVecs::new(&input, 1, len).map_err(|e| error(&e))?;
    let out = resampler
        .process_all(&adapter, len, None)
        .map_err(|e| error(&e))?;
    Ok(out.take_data())
}

/// Streaming resampler for device callbacks: push any number of mono samples
/// at one rate, pull samples at the other as they become available.
pub struct StreamResampler {
    resampler: Option<Fft<f32>>,
    pending: Vec<f32>,
    output: Vec<f32>,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// From `from` Hz to `to` Hz; a pass-through when they are equal.
    pub fn new(from: u32, to: u32) -> Result<StreamResampler, MediaError> {
        let resampler = if from == to {
            None
        } else {
            // 10 ms chunks keep the added delay small.
            let chunk = (from as usize / 100).max(64);
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Input)
                    .map_err(|e| MediaError::Resample(e.to_string()))?,
            )
        };
        Ok(StreamResampler {
            resampler,
            pending: Vec::new(),
            output: Vec::new(),
        })
    }

    /// Adds device-rate samples; returns all 48 kHz samples produced so far.
    pub fn push(&mut self, mono: &[f32]) -> Result<Vec<f32>, MediaError> {
        let Some(resampler) = &mut self.resampler else {
            return Ok(mono.to_vec());
        };
        self.pending.extend_from_slice(mono);
        loop {
            let need = resampler.input_frames_next();
            if self.pending.len() < need {
                break;
            }
            let chunk: Vec<f32> = self.pending.drain(..need).collect();
            let input = [chunk];
            let adapter = SequentialSliceOfVecs::new(&input, 1, need)
                .map_err(|e| MediaError::Resample(e.to_string()))?;
            let out = resampler
                .process(&adapter, None)
                .map_err(|e| MediaError::Resample(e.to_string()))?;
            self.output.extend(out.take_data());
        }
        Ok(std::mem::take(&mut self.output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_44k1_clip_becomes_48k_with_the_same_duration() {
        let one_second: Vec<f32> = (0..44_100).map(|n| (n as f32 * 0.05).sin() * 0.5).collect();
        let out = to_48k(one_second, 44_100).expect("resamples");
        assert!((47_000..=49_000).contains(&out.len()), "{}", out.len());
    }

    #[test]
    fn streaming_keeps_up_and_downmix_averages() {
        let mut stream = StreamResampler::new(16_000, SAMPLE_RATE).expect("valid");
        let mut produced = 0;
        for _ in 0..100 {
            produced += stream.push(&[0.1; 160]).expect("resamples").len();
        }
        // 1 s of 16 kHz input: about 1 s of 48 kHz output (minus the filter delay).
        assert!((45_000..=48_000).contains(&produced), "{produced}");
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
    }
}
