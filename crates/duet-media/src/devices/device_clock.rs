//! How fast an output device really plays, measured against the wall clock.
//!
//! A sound card's crystal is never exactly 48 kHz, and neither is a sound
//! server's timer: PulseAudio's null sink, for one, plays 250 ppm fast (it
//! rounds each block's duration down to whole microseconds). The playout
//! absorbs the difference by stretching, so the delay a person hears holds;
//! but anything that reads a recording of what the device played as 48,000
//! samples a second of the sender's time sees a delay that seems to creep by
//! the device's error. [`DeviceClock`] fits the line of samples asked for
//! against the time each callback says its first sample is heard, over the
//! whole call (a least-squares slope, so the jitter of single callbacks
//! averages out), and reports it in the call's report.

/// Callbacks in the first moments after the device starts are left out:
/// devices fill their buffers in a rush when they start.
const SETTLE_MS: f64 = 2_000.0;
/// The shortest span a rate is given for: over less, the callbacks' timing
/// jitter (a few milliseconds) is more than the drift being measured.
const SPAN_MS: f64 = 10_000.0;

/// The running least-squares fit of device samples against wall-clock time.
#[derive(Debug, Clone, Default)]
pub struct DeviceClock {
    /// When the first callback was heard, ms since the epoch.
    first_ms: Option<f64>,
    /// The fit's origin: the first callback after settling (ms since the
    /// epoch), and the samples asked for before it.
    origin: Option<(f64, u64)>,
    /// Samples asked for so far.
    samples: u64,
    /// Points in the fit, their means, and the sums of squared and
    /// cross deviations (Welford's update: stable over hours of callbacks).
    points: u64,
    mean_s: f64,
    mean_samples: f64,
    square_s: f64,
    cross: f64,
    last_ms: f64,
}

impl DeviceClock {
    /// Nothing measured yet.
    pub fn new() -> DeviceClock {
        DeviceClock::default()
    }

    /// A callback whose first sample is heard at `heard_unix_ms` asked for
    /// `samples` samples (per channel).
    pub fn observe(&mut self, samples: u32, heard_unix_ms: f64) {
        let first = *self.first_ms.get_or_insert(heard_unix_ms);
        if heard_unix_ms - first >= SETTLE_MS {
            let (origin_ms, origin_samples) =
                *self.origin.get_or_insert((heard_unix_ms, self.samples));
            let x = (heard_unix_ms - origin_ms) / 1000.0;
            let y = (self.samples - origin_samples) as f64;
            self.points += 1;
            let n = self.points as f64;
            let dx = x - self.mean_s;
            self.mean_s += dx / n;
            self.mean_samples += (y - self.mean_samples) / n;
            self.square_s += dx * (x - self.mean_s);
            self.cross += dx * (y - self.mean_samples);
            self.last_ms = heard_unix_ms;
        }
        self.samples += u64::from(samples);
    }

    /// Samples per second of wall clock the device plays, once it has played
    /// for long enough to tell.
    pub fn rate_hz(&self) -> Option<f64> {
        let (origin_ms, _) = self.origin?;
        if self.last_ms - origin_ms < SPAN_MS || self.square_s <= 0.0 {
            return None;
        }
        Some(self.cross / self.square_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of callbacks of `chunk` samples from a device playing
    /// at `rate`, each timing jittered by up to ±`jitter_ms`.
    fn device(rate: f64, chunk: u32, seconds: f64, jitter_ms: f64) -> DeviceClock {
        let mut clock = DeviceClock::new();
        let start = 1.8e12;
        let mut played = 0u64;
        let mut state = 7u32;
        while (played as f64) < rate * seconds {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let jitter = (f64::from(state >> 8) / f64::from(1u32 << 24) * 2.0 - 1.0) * jitter_ms;
            clock.observe(chunk, start + played as f64 / rate * 1000.0 + jitter);
            played += u64::from(chunk);
        }
        clock
    }

    #[test]
    fn a_device_250_ppm_fast_is_measured_to_a_few_ppm_through_callback_jitter() {
        let rate = 48_000.0 * 1.000_25;
        let measured = device(rate, 320, 60.0, 3.0).rate_hz().expect("a rate");
        assert!((measured / rate - 1.0).abs() < 5e-6, "{measured}");
    }

    #[test]
    fn an_exact_device_or_a_slow_one_reads_as_it_is() {
        for rate in [48_000.0, 44_100.0 * 0.995] {
            let measured = device(rate, 441, 30.0, 1.0).rate_hz().expect("a rate");
            assert!((measured / rate - 1.0).abs() < 1e-5, "{rate}: {measured}");
        }
    }

    #[test]
    fn too_short_a_span_gives_no_rate() {
        assert_eq!(DeviceClock::new().rate_hz(), None);
        assert_eq!(device(48_000.0, 480, 11.0, 0.0).rate_hz(), None);
        assert!(device(48_000.0, 480, 12.5, 0.0).rate_hz().is_some());
    }
}
