//! The `test` audio source: the beeps of `docs/test-signals.md` (100 ms sine bursts
//! at amplitude 0.5 starting at every whole second of the wall clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::MediaError;
use crate::frame::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE};

/// Beep length.
pub const BEEP_MS: u64 = 100;
/// Beep amplitude, of full scale.
pub const BEEP_AMPLITUDE: f32 = 0.5;

/// Generates beeps from the wall clock: sample `n` is the sample at
/// `n / 48000` seconds after the Unix epoch, so every copy of the source, on
/// any machine with a synced clock, beeps at the same instants.
#[derive(Debug, Clone)]
pub struct BeepSource {
    frequency: f32,
    /// Absolute index of the next sample to produce.
    next_sample: u64,
}

impl BeepSource {
    /// Beeps at `frequency` Hz (300–3000), starting with the frame that holds `now`.
    pub fn new(frequency: f32, now: SystemTime) -> Result<BeepSource, MediaError> {
        if !(300.0..=3000.0).contains(&frequency) {
            return Err(MediaError::BadToneFrequency(frequency));
        }
        Ok(BeepSource {
            frequency,
            next_sample: sample_index(now),
        })
    }

    /// The sample with absolute index `n`.
    pub fn sample(&self, n: u64) -> f32 {
        let in_second = n % u64::from(SAMPLE_RATE);
        if in_second >= BEEP_MS * u64::from(SAMPLE_RATE) / 1000 {
            return 0.0;
        }
        let t = in_second as f64 / f64::from(SAMPLE_RATE);
        (f64::from(BEEP_AMPLITUDE) * (std::f64::consts::TAU * f64::from(self.frequency) * t).sin())
            as f32
    }

    /// The next 20 ms, without waiting.
    pub fn generate(&mut self) -> AudioFrame {
        let first = self.next_sample;
        let samples = (first..first + FRAME_SAMPLES as u64)
            .map(|n| self.sample(n))
            .collect();
        self.next_sample += FRAME_SAMPLES as u64;
        AudioFrame {
            samples,
            capture_time: sample_time(first),
        }
    }

    /// Waits until the next frame's last sample is due on the wall clock (as a
    /// microphone delivers a frame only once it has heard all of it), then returns it.
    pub fn next_frame(&mut self) -> AudioFrame {
        let due = sample_time(self.next_sample + FRAME_SAMPLES as u64);
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
        // A source that fell far behind (a suspended laptop) jumps to now rather than racing.
        let now_index = sample_index(SystemTime::now());
        if now_index > self.next_sample + u64::from(SAMPLE_RATE) {
            self.next_sample = now_index;
        }
        self.generate()
    }
}

/// Absolute sample index of a wall-clock instant.
pub fn sample_index(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_nanos() * u128::from(SAMPLE_RATE) / 1_000_000_000) as u64
}

/// Wall-clock instant of an absolute sample index.
pub fn sample_time(index: u64) -> SystemTime {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(SAMPLE_RATE);
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beeps_start_on_whole_seconds_and_last_100_ms() {
        let second = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let source = BeepSource::new(880.0, second).expect("valid");
        let base = sample_index(second);
        assert_eq!(base % 48_000, 0);
        // Silence just before, sound during, silence after.
        assert_eq!(source.sample(base - 1), 0.0);
        let peak = (base..base + 4800)
            .map(|n| source.sample(n).abs())
            .fold(0.0, f32::max);
        assert!((peak - 0.5).abs() < 0.01, "{peak}");
        assert_eq!(source.sample(base + 4800), 0.0);
    }

    #[test]
    fn frames_are_20_ms_and_contiguous() {
        let mut source = BeepSource::new(440.0, SystemTime::now()).expect("valid");
        let a = source.generate();
        let b = source.generate();
        assert_eq!(a.samples.len(), 960);
        let gap = b
            .capture_time
            .duration_since(a.capture_time)
            .expect("ordered");
        assert!((gap.as_secs_f64() - 0.02).abs() < 1e-6, "{gap:?}");
    }

    #[test]
    fn frequencies_outside_300_to_3000_hz_are_refused() {
        assert!(BeepSource::new(299.0, SystemTime::now()).is_err());
        assert!(BeepSource::new(3001.0, SystemTime::now()).is_err());
    }
}
