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

/// Callbacks in the first moments after the device starts (or restarts,
/// after a gap) are left out: devices fill their buffers in a rush then.
const SETTLE_MS: f64 = 2_000.0;
/// The shortest span a rate is given for: over less, the callbacks' timing
/// jitter (a few milliseconds) is more than the drift being measured.
const SPAN_MS: f64 = 10_000.0;

/// The running least-squares fit of device samples against wall-clock time,
/// in segments: a device that stopped and restarted (an underrun of the
/// sound server, a reopened stream) starts a new one, and the rate is the
/// slope pooled within segments, so the time it spent stopped does not read
/// as a slow clock.
#[derive(Debug, Clone, Default)]
pub struct DeviceClock {
    /// The segment being measured.
    current: Segment,
    /// Sums of the segments before it: squared and cross deviations, span.
    earlier_square_s: f64,
    earlier_cross: f64,
    earlier_span_ms: f64,
}

/// One stretch of uninterrupted callbacks.
#[derive(Debug, Clone, Default)]
struct Segment {
    /// When its first callback was heard, ms since the epoch.
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

impl Segment {
    fn observe(&mut self, samples: u32, heard_unix_ms: f64) {
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

    /// How long its fit spans, in milliseconds.
    fn span_ms(&self) -> f64 {
        self.origin
            .map_or(0.0, |(origin_ms, _)| self.last_ms - origin_ms)
    }
}

impl DeviceClock {
    /// Nothing measured yet.
    pub fn new() -> DeviceClock {
        DeviceClock::default()
    }

    /// A callback whose first sample is heard at `heard_unix_ms` asked for
    /// `samples` samples (per channel).
    pub fn observe(&mut self, samples: u32, heard_unix_ms: f64) {
        self.current.observe(samples, heard_unix_ms);
    }

    /// The device stopped and started again: what comes next is fitted
    /// apart from what came before.
    pub fn restarted(&mut self) {
        let done = std::mem::take(&mut self.current);
        self.earlier_square_s += done.square_s;
        self.earlier_cross += done.cross;
        self.earlier_span_ms += done.span_ms();
    }

    /// Samples per second of wall clock the device plays, once it has played
    /// for long enough to tell.
    pub fn rate_hz(&self) -> Option<f64> {
        let square_s = self.earlier_square_s + self.current.square_s;
        let span_ms = self.earlier_span_ms + self.current.span_ms();
        if span_ms < SPAN_MS || square_s <= 0.0 {
            return None;
        }
        Some((self.earlier_cross + self.current.cross) / square_s)
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
    fn a_device_that_stopped_for_two_seconds_still_reads_its_own_rate() {
        let rate = 48_000.0 * 1.000_25;
        let mut clock = DeviceClock::new();
        let start = 1.8e12;
        let mut played = 0u64;
        // Three stretches of 20 s, each after a 2 s stop (an underrun of
        // the sound server): 6 % of the time asked for nothing.
        for stop in 0..3 {
            clock.restarted();
            for _ in 0..(20.0 * rate / 320.0) as u32 {
                let heard = start + played as f64 / rate * 1000.0 + f64::from(stop) * 2_000.0;
                clock.observe(320, heard);
                played += 320;
            }
        }
        let measured = clock.rate_hz().expect("a rate");
        assert!((measured / rate - 1.0).abs() < 5e-6, "{measured}");
    }

    #[test]
    fn too_short_a_span_gives_no_rate() {
        assert_eq!(DeviceClock::new().rate_hz(), None);
        assert_eq!(device(48_000.0, 480, 11.0, 0.0).rate_hz(), None);
        assert!(device(48_000.0, 480, 12.5, 0.0).rate_hz().is_some());
    }
}
