//! Sound files for the peers to play, and the measures read from what they
//! recorded: shared by the tests of the audio path with real devices.

use std::path::Path;

use duet_media::wav_file::WavRecorder;

/// The rate of everything Duet plays and records.
pub const RATE: f64 = 48_000.0;

/// Writes 48 kHz mono samples as a WAV for `paplay` or `--audio FILE`.
pub fn write_wav(path: &Path, samples: &[f32]) {
    let mut wav = WavRecorder::create(path).expect("a WAV in the scratch directory");
    wav.write(samples).expect("the WAV is written");
    wav.finish().expect("the WAV is finished");
}

/// Mean power, 10·log10 of the mean square: 0 dB is a square wave at full
/// scale, −3 dB a full-scale sine.
pub fn power_db(samples: &[f32]) -> f64 {
    10.0 * mean_square(samples).max(1e-18).log10()
}

/// The mean square of `samples`.
pub fn mean_square(samples: &[f32]) -> f64 {
    samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len().max(1) as f64
}

/// The level (dB of full scale, RMS, averaged over `samples`) of the
/// component near `hz`: Goertzel over 100 ms Hann-windowed blocks. Short
/// blocks, because the receiver may play a touch fast or slow (it absorbs
/// clock drift by up to 0.7 %), which would move a tone off a long window's
/// narrow bin; the Hann window keeps a loud tone at one frequency from
/// leaking into the measure of a quiet one at another.
pub fn tone_level_db(samples: &[f32], hz: f64) -> f64 {
    let block = (RATE / 10.0) as usize;
    let coefficient = 2.0 * (std::f64::consts::TAU * hz / RATE).cos();
    let mut total_power = 0.0;
    let mut blocks = 0;
    for chunk in samples.chunks_exact(block) {
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for (n, &x) in chunk.iter().enumerate() {
            let hann = 0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / block as f64).cos();
            let s0 = f64::from(x) * hann + coefficient * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        // The Hann window halves a sine's amplitude in its bin.
        let amplitude =
            4.0 * (s1 * s1 + s2 * s2 - coefficient * s1 * s2).max(0.0).sqrt() / block as f64;
        total_power += amplitude * amplitude / 2.0;
        blocks += 1;
    }
    10.0 * (total_power / f64::from(blocks.max(1))).max(1e-18).log10()
}

/// The frequency of a tone in `samples`, from the spacing of its rising zero
/// crossings (each placed by linear interpolation between the two samples
/// around it), over the periods near their median. A gap inside the tone (a
/// dropout, played as silence) is one long period, left out; counted over
/// the whole span, such a gap reads low (a 660 Hz beep in the window test
/// was read as 549 and 608 Hz on a busy machine). `None` with fewer than two
/// whole periods.
pub fn tone_frequency(samples: &[f32]) -> Option<f64> {
    let crossings: Vec<f64> = samples
        .windows(2)
        .enumerate()
        .filter(|(_, pair)| pair[0] < 0.0 && pair[1] >= 0.0)
        .map(|(i, pair)| {
            let (a, b) = (f64::from(pair[0]), f64::from(pair[1]));
            i as f64 + a / (a - b)
        })
        .collect();
    let periods: Vec<f64> = crossings.windows(2).map(|pair| pair[1] - pair[0]).collect();
    if periods.len() < 2 {
        return None;
    }
    let mut sorted = periods.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let steady: Vec<f64> = periods
        .into_iter()
        .filter(|&period| period >= 0.5 * median && period <= 1.5 * median)
        .collect();
    let span: f64 = steady.iter().sum();
    (span > 0.0).then(|| steady.len() as f64 * RATE / span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, amplitude: f64, seconds: f64) -> Vec<f32> {
        (0..(seconds * RATE) as usize)
            .map(|n| (amplitude * (std::f64::consts::TAU * hz * n as f64 / RATE).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_sine_reads_at_its_level_and_not_at_another_frequency() {
        let tone = sine(880.0, 0.5, 1.0);
        // RMS of a sine of amplitude 0.5: 0.5/√2, −9.03 dBFS.
        assert!((tone_level_db(&tone, 880.0) + 9.03).abs() < 0.1);
        assert!((power_db(&tone) + 9.03).abs() < 0.05);
        assert!(tone_level_db(&tone, 300.0) < -60.0);
    }

    #[test]
    fn a_tone_with_a_dropout_in_it_reads_at_its_own_frequency() {
        // 40 ms of 660 Hz, 8 ms of silence, 40 ms more.
        let tone = sine(660.0, 0.5, 0.088);
        let mut samples = tone[..1_920].to_vec();
        samples.extend(std::iter::repeat_n(0.0, 384));
        samples.extend_from_slice(&tone[2_304..]);
        let hz = tone_frequency(&samples).expect("a tone");
        assert!((hz - 660.0).abs() < 660.0 * 0.01, "{hz:.1} Hz");
        // 880 Hz is not taken for 660.
        let hz = tone_frequency(&sine(880.0, 0.5, 0.088)).expect("a tone");
        assert!((hz - 880.0).abs() < 880.0 * 0.01, "{hz:.1} Hz");
        assert_eq!(tone_frequency(&[0.0; 960]), None);
    }
}
