//! Reading a recording of what an output device played (`--record-audio`):
//! where each test beep starts and ends, whether it arrived whole, and how
//! the delay moved over the call.
//!
//! The recording holds exactly the samples the device played, silence it had
//! to make up included, one after the other at the device's rate. A beep's
//! position in it is therefore a time on the device's clock: if the delay
//! stays steady, beeps sent one second apart sit one device-second apart.

/// Samples a second of the recording.
pub const RATE: f64 = 48_000.0;

/// One beep found in a recording.
#[derive(Debug, Clone, Copy)]
pub struct PlayedBeep {
    /// Sample where it starts (first sample louder than 0.02).
    pub start: usize,
    /// One past its last sample louder than 0.1 (the codec's ringing after a
    /// tone stops stays under that).
    pub end: usize,
    /// The longest run of exact zeros inside it, in samples: a gap the device
    /// had to fill, or a packet dropped.
    pub longest_zero_run: usize,
}

impl PlayedBeep {
    pub fn length_ms(&self) -> f64 {
        (self.end - self.start) as f64 * 1000.0 / RATE
    }
}

/// The beeps of `samples`: bursts that rise above 0.02 after at least 300 ms
/// below it and pass 0.1 within 5 ms.
pub fn played_beeps(samples: &[f32]) -> Vec<PlayedBeep> {
    let quiet_needed = (0.3 * RATE) as usize;
    let mut beeps = Vec::new();
    let mut quiet = 0usize;
    let mut n = 0;
    while n < samples.len() {
        let loud = samples[n].abs();
        let rises = || {
            samples[n..samples.len().min(n + (0.005 * RATE) as usize)]
                .iter()
                .any(|s| s.abs() > 0.1)
        };
        if loud >= 0.02 && quiet >= quiet_needed && rises() {
            let start = n;
            // The burst ends at its last loud sample before 50 ms without one.
            let mut end = n + 1;
            let mut m = n;
            while m < samples.len() && m < end + (0.05 * RATE) as usize {
                if samples[m].abs() > 0.1 {
                    end = m + 1;
                }
                m += 1;
            }
            let mut longest_zero_run = 0;
            let mut run = 0;
            for &sample in &samples[start..end] {
                run = if sample == 0.0 { run + 1 } else { 0 };
                longest_zero_run = longest_zero_run.max(run);
            }
            beeps.push(PlayedBeep {
                start,
                end,
                longest_zero_run,
            });
            quiet = 0;
            n = end;
            continue;
        }
        quiet = if loud < 0.02 { quiet + 1 } else { 0 };
        n += 1;
    }
    beeps
}

/// How each beep's delay differs from the first one's, in milliseconds, with
/// the time (s into the recording, on the device's clock) it was heard.
/// `device_rate` is how many recorded samples the device plays per second of
/// the sender's clock (48000, or off by a skew). Beeps are sent on whole
/// seconds, so the k-th second's beep should sit k seconds after the first.
pub fn delay_changes(beeps: &[PlayedBeep], device_rate: f64) -> Vec<(f64, f64)> {
    let Some(first) = beeps.first() else {
        return Vec::new();
    };
    let t0 = first.start as f64 / device_rate;
    beeps
        .iter()
        .map(|beep| {
            let t = beep.start as f64 / device_rate;
            let seconds = (t - t0).round();
            (beep.start as f64 / RATE, (t - t0 - seconds) * 1000.0)
        })
        .collect()
}

/// The nearest-rank percentile `p` (0–100) of `values`; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beeps_are_found_with_their_gaps_and_delays() {
        let mut samples = vec![0.0f32; (4.0 * RATE) as usize];
        for second in 1..4 {
            // A 100 ms tone, the third second's 2 ms late and with a 3 ms hole.
            let start = (second as f64 * RATE) as usize + if second == 3 { 96 } else { 0 };
            for n in 0..4_800 {
                samples[start + n] = 0.5 * ((n as f32) * 0.115).sin() + 0.25;
            }
            if second == 3 {
                samples[start + 1_000..start + 1_144].fill(0.0);
            }
        }
        let beeps = played_beeps(&samples);
        assert_eq!(beeps.len(), 3, "{beeps:?}");
        assert!((beeps[0].length_ms() - 100.0).abs() < 0.1);
        assert_eq!(beeps[2].longest_zero_run, 144);
        let changes = delay_changes(&beeps, RATE);
        assert!((changes[2].1 - 2.0).abs() < 0.01, "{changes:?}");
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
    }
}
