//! The processor against real sonora with synthetic, seeded signals: a talker
//! made of harmonics under syllable envelopes, its echo through a delayed,
//! filtered path, tone bursts in white noise, a quiet talker.

use std::f32::consts::TAU;

use super::*;
use crate::speech_like::{SeededRandom, fade, speech_like};

const RATE: f32 = SAMPLE_RATE as f32;
const DUET_FRAME: usize = crate::frame::FRAME_SAMPLES;

fn ms(ms: f32) -> usize {
    (ms * RATE / 1000.0) as usize
}

fn tone(seconds: f32, hz: f32, amplitude: f32) -> Vec<f32> {
    (0..(seconds * RATE) as usize)
        .map(|n| amplitude * (TAU * hz * n as f32 / RATE).sin())
        .collect()
}

/// The room between speaker and microphone: 60 ms away, half as loud, with a
/// few reflections.
fn echo_of(far: &[f32]) -> Vec<f32> {
    let taps = [(0, 0.5), (ms(1.0), 0.2), (ms(3.0), -0.12), (ms(7.0), 0.06)];
    let delay = ms(60.0);
    (0..far.len())
        .map(|n| {
            taps.iter()
                .filter(|(lag, _)| n >= delay + lag)
                .map(|(lag, gain)| gain * far[n - delay - lag])
                .sum()
        })
        .collect()
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// Power of the `hz` component of `x` (Goertzel), as a sine's amplitude²/2.
fn tone_power(x: &[f32], hz: f32) -> f64 {
    let w = std::f64::consts::TAU * f64::from(hz) / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * magnitude2 / (x.len() as f64 * x.len() as f64)
}

/// Milliseconds at sample `n`: the clock of the far end's and the
/// microphone's times in these tests.
fn at_ms(n: usize) -> f64 {
    n as f64 * 1000.0 / f64::from(RATE)
}

/// Plays `far` and captures `mic` as devices would: the speaker callback
/// hands over 5–20 ms at a time and has always played up to the end of the
/// microphone frame being processed; the microphone delivers 20 ms frames.
fn call(processor: &mut AudioProcessor, far: &[f32], mic: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = SeededRandom::new(seed);
    let mut played = 0;
    let mut out = Vec::with_capacity(mic.len());
    for (n, chunk) in mic.chunks_exact(DUET_FRAME).enumerate() {
        let captured_to = (n + 1) * DUET_FRAME;
        while played < captured_to.min(far.len()) {
            let burst = ms(rng.range(5.0, 20.0)).min(far.len() - played);
            processor.far_end(&far[played..played + burst], at_ms(played));
            played += burst;
        }
        let mut frame = chunk.to_vec();
        processor
            .process(&mut frame, at_ms(n * DUET_FRAME))
            .expect("whole 10 ms frames");
        out.extend_from_slice(&frame);
    }
    out
}

fn only(echo_cancel: bool, noise_suppression: bool, auto_gain: bool) -> ProcessingSettings {
    ProcessingSettings {
        echo_cancel,
        noise_suppression,
        auto_gain,
    }
}

fn tail(x: &[f32], seconds: f32) -> &[f32] {
    &x[x.len() - (seconds * RATE) as usize..]
}

/// The echo is half the far end, 60 ms late, with reflections; the near
/// talker is a steady tone 7 dB louder than the echo, talking over it the
/// whole time (the hardest case: double talk throughout). AEC3 favours
/// removing echo in double talk: with the tone only as loud as the echo it
/// lost 1.4 dB at 600 Hz but 6.6 dB at 1 kHz and 12–24 dB from 2.5 kHz up
/// (above 2 kHz AEC3 applies the suppression of the 2 kHz band).
#[test]
fn echo_is_cancelled_and_the_near_talker_kept() {
    let seconds = 14.0;
    let far = speech_like(seconds, 0.5, 1);
    let echo = echo_of(&far);
    let settings = only(true, false, false);

    // Echo alone, to measure what is left of it.
    let out = call(&mut AudioProcessor::new(settings), &far, &echo, 2);
    let echo_level = db(power(tail(&echo, 4.0)));
    let reduction = echo_level - db(power(tail(&out, 4.0)));
    println!("echo: {echo_level:.1} dBFS reduced by {reduction:.1} dB over the last 4 s");
    assert!(reduction >= 30.0, "echo reduced by only {reduction:.1} dB");

    // Echo with the near talker over it.
    for near_hz in [600.0, 1_000.0, 1_750.0, 3_000.0] {
        let near = tone(seconds, near_hz, 0.2);
        let mic: Vec<f32> = echo.iter().zip(&near).map(|(e, n)| e + n).collect();
        let out = call(&mut AudioProcessor::new(settings), &far, &mic, 2);
        let near_level = db(power(tail(&near, 4.0)));
        let change =
            db(tone_power(tail(&out, 4.0), near_hz) / tone_power(tail(&near, 4.0), near_hz));
        println!("echo: near talker at {near_hz} Hz, {near_level:.1} dBFS: {change:+.2} dB");
        assert!(
            change.abs() <= 3.0,
            "near talker at {near_hz} Hz changed by {change:.2} dB"
        );
    }
}

/// Tone bursts of 200 ms at 300–1000 Hz with 200 ms pauses, white noise under
/// them 5 dB below the bursts. Returns (clean, noisy, burst starts).
fn bursts_in_noise(seconds: f32, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut rng = SeededRandom::new(seed);
    let total = (seconds * RATE) as usize;
    let (burst, period) = (ms(200.0), ms(400.0));
    let mut clean = vec![0.0f32; total];
    let mut starts = Vec::new();
    for start in (0..total - period).step_by(period) {
        let hz = rng.range(300.0, 1_000.0);
        for i in 0..burst {
            clean[start + i] = 0.1 * fade(i, burst, ms(10.0)) * (TAU * hz * i as f32 / RATE).sin();
        }
        starts.push(start);
    }
    let burst_power = 0.1f64 * 0.1 / 2.0;
    // Uniform noise in [-a, a] has power a²/3.
    let amplitude = (3.0 * burst_power / 10f64.powf(0.5)).sqrt() as f32;
    let noisy = clean
        .iter()
        .map(|s| s + amplitude * rng.range(-1.0, 1.0))
        .collect();
    (clean, noisy, starts)
}

/// (mean power in the middle half of the bursts, in the middle half of the
/// pauses) among bursts starting after `from`.
fn burst_and_pause_power(x: &[f32], starts: &[usize], from: usize) -> (f64, f64) {
    let (quarter, burst) = (ms(50.0), ms(200.0));
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for &start in starts.iter().filter(|&&s| s >= from) {
        on.extend_from_slice(&x[start + quarter..start + burst - quarter]);
        off.extend_from_slice(&x[start + burst + quarter..start + 2 * burst - quarter]);
    }
    (power(&on), power(&off))
}

/// (SNR in dB, burst power above the noise).
fn snr(x: &[f32], starts: &[usize], from: usize) -> (f64, f64) {
    let (on, off) = burst_and_pause_power(x, starts, from);
    (db((on - off) / off), on - off)
}

#[test]
fn noise_is_suppressed_and_the_bursts_kept() {
    let seconds = 12.0;
    let (_, noisy, starts) = bursts_in_noise(seconds, 3);
    let out = call(
        &mut AudioProcessor::new(only(false, true, false)),
        &[],
        &noisy,
        4,
    );
    let from = (6.0 * RATE) as usize;
    let (snr_in, signal_in) = snr(&noisy, &starts, from);
    let (snr_out, signal_out) = snr(&out, &starts, from);
    let improvement = snr_out - snr_in;
    let burst_change = db(signal_out / signal_in);
    println!(
        "noise suppression (High): SNR {snr_in:.1} dB -> {snr_out:.1} dB ({improvement:+.1} dB); bursts {burst_change:+.2} dB"
    );
    assert!(
        improvement >= 15.0,
        "SNR improved by only {improvement:.1} dB"
    );
    assert!(
        burst_change.abs() <= 6.0,
        "bursts changed by {burst_change:.2} dB"
    );
}

#[test]
fn everything_off_leaves_the_samples_bit_identical() {
    let mut rng = SeededRandom::new(5);
    let mut processor = AudioProcessor::new(ProcessingSettings::OFF);
    for _ in 0..100 {
        let far: Vec<f32> = (0..700).map(|_| rng.range(-1.0, 1.0)).collect();
        processor.far_end(&far, 0.0);
        let input: Vec<f32> = (0..DUET_FRAME)
            .map(|i| match i {
                0 => f32::MIN_POSITIVE,
                1 => -1.0,
                2 => 1.0,
                _ => rng.range(-1.0, 1.0),
            })
            .collect();
        let mut frame = input.clone();
        processor.process(&mut frame, 0.0).expect("processes");
        let same = frame
            .iter()
            .zip(&input)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same);
    }
    assert!(processor.echo.is_none() && processor.noise.is_none() && processor.gain.is_none());
    assert_eq!(processor.far.len(), 0, "far end kept while off");
}

#[test]
fn settings_switched_mid_call_take_effect_and_keep_the_echo_canceller() {
    let far = speech_like(16.0, 0.5, 6);
    let echo = echo_of(&far);
    let (converge, window) = ((8.0 * RATE) as usize, (1.0 * RATE) as usize);
    let mut processor = AudioProcessor::new(ProcessingSettings::default());
    call(&mut processor, &far[..converge], &echo[..converge], 7);

    // Noise suppression and gain off: the echo canceller must not start over.
    processor.set_settings(only(true, false, false));
    assert_eq!(processor.settings(), only(true, false, false));
    let range = converge..converge + window;
    let out = call(&mut processor, &far[range.clone()], &echo[range.clone()], 8);
    let kept = db(power(&echo[range]) / power(&out));

    // A fresh canceller over the same second, for comparison.
    let start = converge + window;
    let range = start..start + window;
    let fresh_out = call(
        &mut AudioProcessor::new(only(true, false, false)),
        &far[range.clone()],
        &echo[range.clone()],
        8,
    );
    let fresh = db(power(&echo[range]) / power(&fresh_out));

    // Everything off: untouched.
    processor.set_settings(ProcessingSettings::OFF);
    let range = start..start + window;
    let out = call(&mut processor, &far[range.clone()], &echo[range.clone()], 9);
    assert_eq!(out, echo[range]);

    // Echo cancellation back on: it resumes from what it had learned.
    processor.set_settings(only(true, false, false));
    let range = start + window..start + 2 * window;
    let out = call(
        &mut processor,
        &far[range.clone()],
        &echo[range.clone()],
        10,
    );
    let resumed = db(power(&echo[range]) / power(&out));

    // Gain on alone: a quiet talker gets louder.
    processor.set_settings(only(false, false, true));
    let quiet = speech_like(4.0, 0.01, 11);
    let out = call(&mut processor, &[], &quiet, 12);
    let gain = db(power(tail(&out, 1.0)) / power(tail(&quiet, 1.0)));

    println!(
        "switching: echo -{kept:.1} dB in the first second after NS and AGC went off \
         (a fresh canceller: -{fresh:.1} dB), -{resumed:.1} dB in the first second \
         after being off; AGC alone +{gain:.1} dB"
    );
    assert!(kept >= 25.0, "echo canceller lost its state: {kept:.1} dB");
    assert!(
        resumed >= 25.0,
        "echo canceller did not resume: {resumed:.1} dB"
    );
    assert!(gain >= 6.0, "gain switched on did nothing: {gain:.1} dB");
}

#[test]
fn odd_lengths_empty_input_and_a_far_end_nobody_consumes() {
    let mut processor = AudioProcessor::new(ProcessingSettings::default());
    processor.process(&mut [], 0.0).expect("nothing to do");
    for len in [1, 479, 481, 959, 961, 1_000] {
        let mut samples = vec![0.25f32; len];
        let err = processor.process(&mut samples, 0.0);
        assert!(
            matches!(err, Err(MediaError::PartialAudioFrame(n)) if n == len),
            "{err:?}"
        );
        assert!(
            samples.iter().all(|&s| s == 0.25),
            "refused samples changed"
        );
    }
    let mut samples = vec![0.25f32; 3 * PROCESSING_FRAME_SAMPLES];
    processor
        .process(&mut samples, 0.0)
        .expect("30 ms is three frames");

    // A minute of far end in odd bursts with the microphone stalled.
    let burst = vec![0.1f32; 333];
    let mut played = 0;
    for _ in 0..(60 * SAMPLE_RATE as usize / burst.len()) {
        processor.far_end(&burst, at_ms(played));
        played += burst.len();
        assert!(processor.far.len() <= far_end::MAX_QUEUED_FRAMES);
    }
    assert!(processor.far_end_dropped() > 5_000, "{processor:?}");
    processor.far_end(&[], at_ms(played));

    // The microphone comes back: what was heard before it is let go, what
    // was heard since is handed over.
    let mut frame = vec![0.0f32; DUET_FRAME];
    processor
        .process(&mut frame, at_ms(played) - 40.0)
        .expect("processes");
    assert_eq!(processor.far.len(), 0);
}

/// Power while the talker speaks (samples inside syllables), in dBFS of a
/// full-scale sine's power... plainly: 10·log10 of the mean square.
fn speaking_level(x: &[f32]) -> f64 {
    let speaking: Vec<f32> = x.iter().copied().filter(|s| *s != 0.0).collect();
    db(power(&speaking))
}

#[test]
fn a_quiet_talker_is_brought_up() {
    let loud = speech_like(10.0, 1.0, 13);
    let scale = 10f64.powf((-40.0 - speaking_level(&loud)) / 20.0) as f32;
    let quiet: Vec<f32> = loud.iter().map(|s| s * scale).collect();
    let out = call(
        &mut AudioProcessor::new(only(false, false, true)),
        &[],
        &quiet,
        14,
    );
    let level = speaking_level(&quiet);
    let gain = db(power(tail(&out, 3.0)) / power(tail(&quiet, 3.0)));
    println!(
        "AGC: a talker at {level:.1} dBFS while speaking raised by {gain:.1} dB over the last 3 s"
    );
    assert!(gain >= 10.0, "raised by only {gain:.1} dB");
}

#[test]
fn the_processor_can_move_to_the_audio_thread() {
    fn send<T: Send>() {}
    send::<AudioProcessor>();
}

/// A sound server that played 20 ms of silence while the app was late: the
/// room heard the far end 20 ms later from then on. With someone talking
/// over the echo all along (a steady 300 Hz tone), AEC3 does not relearn the
/// jumped path: a reference without the silence leaves the echo's beeps
/// uncancelled for the rest of the call, which is why the talker of
/// `tests/e2e/echo.rs` pauses for breath. With the silence in the reference too,
/// nothing jumped, and the echo stays cancelled. (Putting such silences back
/// from the speaker's timestamps was tried: on a busy machine it made the
/// end-to-end test worse, 2 calls of 15 removing 30 dB against 7 of 9
/// without it.)
#[test]
fn a_stall_in_the_reference_too_keeps_the_echo_cancelled_through_double_talk() {
    let seconds = 16.0;
    let beeps = crate::BeepSource::new(880.0, std::time::UNIX_EPOCH).expect("a valid tone");
    let far: Vec<f32> = speech_like(seconds, 0.3, 1)
        .iter()
        .enumerate()
        .map(|(n, voice)| voice + beeps.sample(n as u64))
        .collect();
    let stall_at = ms(8_000.0);
    let mut heard = far[..stall_at].to_vec();
    heard.resize(stall_at + ms(20.0), 0.0);
    heard.extend_from_slice(&far[stall_at..]);
    let echo = echo_of(&heard);
    let talker = tone(seconds + 0.02, 300.0, 0.22);
    let mic: Vec<f32> = echo.iter().zip(&talker).map(|(e, t)| e + t).collect();
    let left_of_the_beeps = |reference: &[f32]| {
        let out = call(
            &mut AudioProcessor::new(only(true, false, false)),
            reference,
            &mic,
            2,
        );
        let measured = ms(11_000.0)..ms(15_000.0);
        db(tone_power(&out[measured.clone()], 880.0)) - db(tone_power(&echo[measured], 880.0))
    };
    let without = left_of_the_beeps(&far);
    let with = left_of_the_beeps(&heard);
    println!(
        "echo's beeps after a 20 ms stall: {without:+.1} dB without it in the reference, \
         {with:+.1} dB with it"
    );
    assert!(
        without > -20.0,
        "AEC3 relearned the path after all ({without:.1} dB): update tests/e2e/echo.rs's notes"
    );
    assert!(with < -40.0, "echo's beeps reduced by only {:.1} dB", -with);
}
