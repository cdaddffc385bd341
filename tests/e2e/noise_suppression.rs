//! Noise suppression end to end, with a real microphone (issue 13).
//!
//! Peer A's microphone is the monitor of a PulseAudio null sink into which
//! `paplay` plays a WAV: tone bursts of 200 ms (300–1000 Hz, a new pitch each
//! time, like the syllables of a voice) every 400 ms, over steady white noise
//! 5 dB below them, as a fan or a road would be. A sends its microphone to B,
//! which records what it receives. The call is made twice: with A's noise
//! suppression (the default) and with `--no-noise-suppression`. Echo
//! cancellation and gain control are off both times, so the figures are the
//! suppressor's alone.
//!
//! B's received signal-to-noise ratio (the bursts' power over the noise's,
//! read in the middle of the bursts and of the pauses) must rise by at least
//! 15 dB, and the bursts themselves must arrive within 3 dB of their level.

use crate::common;

use std::path::Path;

use common::pulse::PulseAudio;
use common::sound::{RATE, mean_square, write_wav};
use common::{CallSide, Scratch, serialised, start_server};
use duet_media::speech_like::white_noise;
use duet_media::wav_file::read_wav;

const ROOM: &str = "duet_room_a";
const CALL_SECONDS: u64 = 16;
/// The bursts' rhythm: 200 ms of tone, 200 ms of noise alone.
const BURST_SAMPLES: usize = 9_600;
const PERIOD_SAMPLES: usize = 2 * BURST_SAMPLES;
const BURST_AMPLITUDE: f32 = 0.1;
/// The noise's level under the bursts: 5 dB below them.
const SNR_PLAYED_DB: f64 = 5.0;
/// B's recording is read from this far into the call (the suppressor learns
/// the noise within its first seconds) to a second before its end.
const SETTLED_SECONDS: f64 = 6.0;

/// The bursts over the noise, long enough for the call.
fn write_microphone_sound(path: &Path) {
    let seconds = CALL_SECONDS as f32 + 10.0;
    let burst_power = f64::from(BURST_AMPLITUDE).powi(2) / 2.0;
    // Uniform noise in ±a has power a²/3.
    let noise_amplitude = (3.0 * burst_power / 10f64.powf(SNR_PLAYED_DB / 10.0)).sqrt();
    let mut samples = white_noise(seconds, noise_amplitude as f32, 5);
    let pitches = [330.0, 520.0, 410.0, 760.0, 610.0, 950.0, 470.0];
    for (burst, start) in (0..samples.len() - PERIOD_SAMPLES)
        .step_by(PERIOD_SAMPLES)
        .enumerate()
    {
        let hz = pitches[burst % pitches.len()];
        for n in 0..BURST_SAMPLES {
            // 10 ms fades, so the bursts do not click.
            let edge = n.min(BURST_SAMPLES - 1 - n) as f32 / 480.0;
            let fade = edge.min(1.0);
            samples[start + n] += BURST_AMPLITUDE
                * fade
                * (std::f32::consts::TAU * hz * n as f32 / RATE as f32).sin();
        }
    }
    write_wav(path, &samples);
}

/// (power in the middle halves of the bursts, in the middle halves of the
/// pauses) of a recording whose bursts start `offset` samples into each
/// period.
fn burst_and_pause_power(samples: &[f32], offset: usize) -> (f64, f64) {
    let quarter = BURST_SAMPLES / 4;
    let (mut on, mut off) = (0.0, 0.0);
    let mut periods = 0;
    let mut start = offset;
    while start + PERIOD_SAMPLES <= samples.len() {
        on += mean_square(&samples[start + quarter..start + BURST_SAMPLES - quarter]);
        off += mean_square(
            &samples[start + BURST_SAMPLES + quarter..start + PERIOD_SAMPLES - quarter],
        );
        periods += 1;
        start += PERIOD_SAMPLES;
    }
    let periods = f64::from(periods.max(1));
    (on / periods, off / periods)
}

/// The received bursts' level and SNR, in dB: (SNR, bursts' power above the
/// noise). Where the bursts fall in B's recording depends on when each side
/// started, so it is found: the offset, in 5 ms steps, at which the bursts
/// stand out most from the pauses.
fn received_snr(samples: &[f32]) -> (f64, f64) {
    let (on, off) = (0..PERIOD_SAMPLES)
        .step_by(240)
        .map(|offset| burst_and_pause_power(samples, offset))
        .max_by(|a, b| (a.0 / a.1.max(1e-18)).total_cmp(&(b.0 / b.1.max(1e-18))))
        .expect("offsets to try");
    let signal = (on - off).max(1e-18);
    (
        10.0 * (signal / off.max(1e-18)).log10(),
        10.0 * signal.log10(),
    )
}

/// Runs the call once; returns B's received (SNR, burst level) in dB.
fn noisy_call(noise_suppression: bool) -> (f64, f64) {
    let name = if noise_suppression { "ns-on" } else { "ns-off" };
    let scratch = Scratch::new(name);
    let sound = scratch.path("microphone.wav");
    write_microphone_sound(&sound);
    let pulse = PulseAudio::start(name);
    pulse.load_null_sink(ROOM);
    let monitor = format!("{ROOM}.monitor");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let env = pulse.env();
    let b_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a_env = b_env.clone();
    a_env.push(("PULSE_SOURCE", monitor.as_str()));
    let b_wav = scratch.path("B.wav");
    let mut a_args = vec![
        "--video",
        "none",
        "--audio",
        "mic",
        "--no-echo-cancel",
        "--no-auto-gain",
    ];
    if !noise_suppression {
        a_args.push("--no-noise-suppression");
    }
    // B sends beeps (it must send something); A plays them on its virtual
    // speaker, which no microphone hears.
    let b_args = vec![
        "--video",
        "none",
        "--audio",
        "test",
        "--record-audio",
        b_wav.to_str().expect("UTF-8 path"),
    ];
    let playing = pulse.play_during(ROOM, &sound);
    common::call_headless(
        &scratch,
        &url,
        CallSide {
            args: a_args,
            env: a_env,
        },
        CallSide {
            args: b_args,
            env: b_env,
        },
        CALL_SECONDS,
    );
    drop(playing);
    let received = read_wav(&b_wav).expect("B's recording");
    let from = (SETTLED_SECONDS * RATE) as usize;
    let to = received.len().saturating_sub(RATE as usize);
    assert!(
        to > from + 4 * RATE as usize,
        "B recorded only {} samples",
        received.len()
    );
    received_snr(&received[from..to])
}

#[test]
fn noise_under_tone_bursts_is_suppressed_and_the_bursts_arrive_whole() {
    let _one = serialised();
    common::duet_bin();
    let (snr_off, bursts_off) = noisy_call(false);
    let (snr_on, bursts_on) = noisy_call(true);
    let improvement = snr_on - snr_off;
    let burst_change = bursts_on - bursts_off;
    eprintln!(
        "B's received SNR: {snr_off:.1} dB without noise suppression, {snr_on:.1} dB with it \
         ({improvement:+.1} dB); the bursts {bursts_off:.1} and {bursts_on:.1} dBFS \
         ({burst_change:+.1} dB)"
    );
    assert!(
        (SNR_PLAYED_DB - 3.0..=SNR_PLAYED_DB + 3.0).contains(&snr_off),
        "without suppression B should receive the SNR played ({SNR_PLAYED_DB} dB), not {snr_off:.1} dB"
    );
    assert!(
        improvement >= 15.0,
        "noise suppression raised the SNR by only {improvement:.1} dB"
    );
    assert!(
        burst_change.abs() <= 3.0,
        "the bursts changed by {burst_change:+.1} dB"
    );
}

#[test]
fn the_burst_finder_finds_the_bursts_wherever_they_start() {
    let _one = common::serialised();
    let scratch = Scratch::new("ns-finder");
    let sound = scratch.path("microphone.wav");
    write_microphone_sound(&sound);
    let played = read_wav(&sound).expect("the WAV just written");
    for shift in [0, 1_234, 9_600, 17_000] {
        let (snr, _) = received_snr(&played[shift..shift + 10 * RATE as usize]);
        assert!(
            (snr - SNR_PLAYED_DB).abs() < 0.5,
            "shift {shift}: {snr:.2} dB"
        );
    }
}
