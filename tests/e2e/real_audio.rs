//! The microphone path end to end with real audio devices (issue 13): a tone
//! and beeps played into peer A's microphone must reach peer B whole, at their
//! level and frequency, every beep heard, hardly a packet concealed.
//!
//! The devices are real: a private PulseAudio daemon whose null sink
//! `duet_mic_a` stands for the air in front of A's microphone, and its monitor
//! `duet_mic_a.monitor` for the microphone itself. A (`--audio mic`) opens it
//! through cpal and ALSA's PulseAudio plugin, picked by `PULSE_SOURCE`; the
//! default source is another, silent, null sink, so A hears the tone only if
//! that choice works. `paplay` plays a WAV file into the sink during the call;
//! `parecord` records what the monitor gives, the level that A's microphone
//! really hears. B (`--audio test`, headless) records what it receives
//! (`--record-audio`) and reports what it measured (`--stats-json`).
//!
//! B must hear the tone within 3 dB of the level the microphone heard and
//! within 2 % of its frequency, with fewer than 1 % of its 20 ms stretches
//! broken (what is heard, besides what B says it concealed); every beep at its
//! frequency; and report fewer than 1 % of its packets concealed
//! (`audio.packets_concealed`). Every figure is printed when any is wrong.
//!
//! The test signals hide the bug this catches: their RTP timestamps step by
//! exactly 960, a microphone's came from the wall clock, and the receiver
//! concealed most of its packets.

use crate::common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::pulse::PulseAudio;
use common::sound::tone_frequency;
use common::{LivePeer, Scratch, serialised, start_server};
use duet_media::BeepSource;
use duet_media::frame::unix_ms;
use duet_media::wav_file::{WavRecorder, read_wav};
use serde_json::Value;

/// Samples a second (all audio here is 48 kHz mono).
const RATE: usize = 48_000;
/// The null sink whose monitor is A's microphone.
const MIC_SINK: &str = "duet_mic_a";
/// The first seconds of the file: a steady tone at −12 dBFS peak.
const TONE_HZ: f64 = 440.0;
const TONE_AMPLITUDE: f64 = 0.25;
const TONE_SECONDS: f64 = 4.0;
/// Then the beeps of `docs/test-signals.md`, one at each of these whole
/// seconds of the file. 660 Hz: neither the tone nor the 880 Hz of test beeps
/// sent in place of a microphone, so B's `beep_hz` says whose beeps it heard.
const BEEP_HZ: f32 = 660.0;
const BEEP_SECONDS: std::ops::RangeInclusive<usize> = 5..=9;
const FILE_SECONDS: f64 = 9.5;
/// Long enough for the file to be played after both peers are connected.
const CALL_SECONDS: &str = "13";

/// The RMS of a sine of amplitude `amplitude`, in dB of full scale.
fn sine_level_db(amplitude: f64) -> f64 {
    db(amplitude / 2f64.sqrt())
}

fn db(rms: f64) -> f64 {
    20.0 * rms.max(1e-9).log10()
}

fn rms(samples: &[f32]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Writes what is played into A's microphone: the tone (with 5 ms fades, so
/// that it does not click), silence, then beeps made by Duet's own beep
/// source, exactly as `docs/test-signals.md` specifies them.
fn write_microphone_wav(path: &Path) {
    let mut samples = vec![0.0f32; (FILE_SECONDS * RATE as f64) as usize];
    let tone_len = (TONE_SECONDS * RATE as f64) as usize;
    let fade = RATE / 200;
    for (n, sample) in samples[..tone_len].iter_mut().enumerate() {
        let ramp = (n.min(tone_len - 1 - n) as f64 / fade as f64).min(1.0);
        let t = n as f64 / RATE as f64;
        *sample = (TONE_AMPLITUDE * ramp * (std::f64::consts::TAU * TONE_HZ * t).sin()) as f32;
    }
    // Sample n of the source is n / 48000 s after a whole second: a beep
    // starts on each whole second of the file, silence between.
    let beeps = BeepSource::new(BEEP_HZ, SystemTime::UNIX_EPOCH).expect("a valid beep frequency");
    let first = BEEP_SECONDS.start() * RATE;
    let end = ((BEEP_SECONDS.end() + 1) * RATE).min(samples.len());
    for (n, sample) in samples.iter_mut().enumerate().take(end).skip(first) {
        *sample = beeps.sample(n as u64);
    }
    let mut wav = WavRecorder::create(path).expect("the WAV to play is created");
    wav.write(&samples).expect("the WAV to play is written");
    wav.finish().expect("the WAV to play is finished");
}

/// The steady tone found in a recording.
#[derive(Debug, Clone, Copy)]
struct ToneFound {
    /// Where the tone starts, seconds into the recording.
    onset_s: f64,
    /// Its RMS level over the steady window, dB of full scale.
    level_db: f64,
    /// From the spacing of its rising zero crossings over the steady window.
    frequency_hz: f64,
    /// The quietest 20 ms (one packet) of the steady window, dB of full
    /// scale: a gap or a concealed packet shows here, not in the average.
    weakest_packet_db: f64,
    /// 20 ms stretches of the steady window more than [`BROKEN_DB`] below its
    /// level, and how many stretches it has.
    broken_packets: usize,
    packets: usize,
}

/// How far below the tone's level a 20 ms stretch counts as broken: a
/// concealed packet of a steady tone drops 10 dB or more, a codec's wobble
/// well under 1 dB.
const BROKEN_DB: f64 = 6.0;

/// Finds the tone in `samples`: it starts at the first 10 ms louder than
/// `floor_db`, and is measured from 0.5 s after that to 0.5 s before the
/// tone's end (`TONE_SECONDS` later), away from its fades and from whatever
/// the receiver did when sound first came. `None` if nothing is that loud or
/// less than 0.5 s of the window was recorded.
fn measure_tone(samples: &[f32], floor_db: f64) -> Option<ToneFound> {
    let block = RATE / 100;
    let onset = samples
        .chunks(block)
        .position(|chunk| db(rms(chunk)) > floor_db)?
        * block;
    let start = onset + RATE / 2;
    let end = (onset + (TONE_SECONDS * RATE as f64) as usize - RATE / 2).min(samples.len());
    if end < start + RATE / 2 {
        return None;
    }
    let window = &samples[start..end];
    let level_db = db(rms(window));
    let packet_levels: Vec<f64> = window
        .chunks_exact(RATE / 50)
        .map(|packet| db(rms(packet)))
        .collect();
    Some(ToneFound {
        onset_s: onset as f64 / RATE as f64,
        level_db,
        frequency_hz: tone_frequency(window).unwrap_or(0.0),
        weakest_packet_db: packet_levels.iter().copied().fold(f64::INFINITY, f64::min),
        broken_packets: packet_levels
            .iter()
            .filter(|&&packet_db| packet_db < level_db - BROKEN_DB)
            .count(),
        packets: packet_levels.len(),
    })
}

fn describe_tone(tone: Option<ToneFound>, reference_db: f64) -> String {
    match tone {
        Some(t) => format!(
            "{:.1} dBFS ({:+.1} dB), {:.1} Hz, {} of {} 20 ms stretches broken (quietest {:.1} dBFS), from {:.2} s into the recording",
            t.level_db,
            t.level_db - reference_db,
            t.frequency_hz,
            t.broken_packets,
            t.packets,
            t.weakest_packet_db,
            t.onset_s
        ),
        None => "no tone found".into(),
    }
}

fn read_report(path: &Path, who: &str) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{who} wrote no report at {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{who}'s report is not JSON: {err}"))
}

/// Sleeps until the next whole second of the wall clock at least 300 ms away.
fn sleep_until_whole_second() {
    let now = unix_ms(SystemTime::now());
    let mut target = (now / 1000 + 1) * 1000;
    if target - now < 300 {
        target += 1000;
    }
    std::thread::sleep(Duration::from_millis(target - now));
}

#[test]
fn a_tone_and_beeps_played_into_the_callers_microphone_reach_the_callee_whole() {
    microphone_call_reaches_the_callee_whole(Microphone::Warm);
}

/// A microphone that gives its first sound only a second or two after it
/// opened (what a null sink's monitor does for the first stream that records
/// it, and PulseAudio for a new recording stream) is waited for: it is not
/// replaced by test beeps, and its sound reaches B whole once it comes.
#[test]
fn a_microphone_slow_to_start_is_waited_for_not_replaced() {
    microphone_call_reaches_the_callee_whole(Microphone::Cold);
}

/// Whether A's microphone already gives sound when A opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Microphone {
    /// Another stream recorded the monitor first, so A gets sound at once.
    Warm,
    /// A is the first to record the monitor, which then starts late.
    Cold,
}

fn microphone_call_reaches_the_callee_whole(microphone: Microphone) {
    let _one = serialised();
    // Built before anything is timed.
    common::duet_bin();
    let scratch = Scratch::new("real-audio");
    let played = scratch.path("microphone.wav");
    write_microphone_wav(&played);
    let played_db = sine_level_db(TONE_AMPLITUDE);

    let pulse = PulseAudio::start("real-audio");
    // The default source is a silent room, so A can only hear the tone
    // through the source PULSE_SOURCE names.
    pulse.load_null_sink("duet_room");
    pulse.load_null_sink(MIC_SINK);
    pulse.set_default_source("duet_room.monitor");
    let mic_source = format!("{MIC_SINK}.monitor");

    // What A's microphone hears, for reference. Started first and waited for:
    // a null sink's monitor delivers its first samples up to 2 s late until a
    // stream asks it for a low latency (a quirk of the virtual device; a real
    // microphone starts at once), after which every new stream gets them at once.
    let record_reference = || {
        let mut reference = pulse.record(&mic_source, &scratch.path("reference.wav"));
        reference.wait_for_audio(Duration::from_millis(100), Duration::from_secs(10));
        reference
    };
    let mut reference = (microphone == Microphone::Warm).then(record_reference);

    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let env = pulse.env();
    let b_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a_env = b_env.clone();
    a_env.push(("PULSE_SOURCE", &mic_source));
    let (a_json, b_json, b_wav) = (
        scratch.path("A.json"),
        scratch.path("B.json"),
        scratch.path("B.wav"),
    );
    let common_args = [
        "--headless",
        "--server",
        &url,
        "--room",
        "duet",
        "--video",
        "test",
    ];
    let small = ["--size", "320x240", "--duration", CALL_SECONDS];
    let mut a = LivePeer::spawn_with_env(
        &[
            &["caller"][..],
            &common_args,
            &small,
            &[
                "--audio",
                "mic",
                // What arrives must be what the microphone heard: a steady
                // tone is exactly what noise suppression removes and gain
                // control raises (tests/e2e/echo.rs and tests/e2e/noise_suppression.rs test those).
                "--no-echo-cancel",
                "--no-noise-suppression",
                "--no-auto-gain",
                "--stats-json",
                a_json.to_str().expect("UTF-8 path"),
            ],
        ]
        .concat(),
        &scratch.0,
        "A",
        &a_env,
    );
    a.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut b = LivePeer::spawn_with_env(
        &[
            &["callee"][..],
            &common_args,
            &small,
            &[
                "--audio",
                "test",
                "--record-audio",
                b_wav.to_str().expect("UTF-8 path"),
                "--stats-json",
                b_json.to_str().expect("UTF-8 path"),
            ],
        ]
        .concat(),
        &scratch.0,
        "B",
        &b_env,
    );
    for peer in [&mut a, &mut b] {
        peer.expect_line("first remote frame", Duration::from_secs(20));
    }
    let reference = reference.take().unwrap_or_else(record_reference);
    // Which source A's microphone really records from.
    let a_streams: Vec<String> = pulse
        .recording_streams()
        .into_iter()
        .filter(|stream| stream.process_id == Some(a.child.id()))
        .map(|stream| stream.source)
        .collect();

    // B counts a beep only when it starts within 500 ms after a whole second
    // of the wall clock (docs/test-signals.md); starting the file on a whole
    // second puts every beep's onset at B one mouth-to-ear latency after one.
    sleep_until_whole_second();
    let player = pulse.play(MIC_SINK, &played);
    let playing = player
        .wait_with_output()
        .expect("paplay runs to the end of the file");
    assert!(
        playing.status.success(),
        "paplay failed: {}",
        String::from_utf8_lossy(&playing.stderr)
    );
    let a_status = a.wait_for_exit(Duration::from_secs(30));
    let b_status = b.wait_for_exit(Duration::from_secs(30));
    assert!(
        a_status.success() && b_status.success(),
        "A exited with {a_status}, B with {b_status}; A's stderr: {}; B's stderr: {}",
        a.stderr(),
        b.stderr()
    );
    let at_microphone = measure_tone(&reference.finish(), played_db - 20.0);
    let at_b = measure_tone(
        &read_wav(&b_wav).expect("B's recording is readable"),
        played_db - 20.0,
    );
    let b_report = read_report(&b_json, "B");
    let a_report = read_report(&a_json, "A");

    // Every figure first, then what is wrong with them.
    let audio = &b_report["audio"];
    let received = audio["packets_received"].as_u64().unwrap_or(0);
    let concealed = audio["packets_concealed"].as_u64();
    let beeps = audio["beeps_detected"].as_u64().unwrap_or(0);
    let beep_hz = audio["beep_hz"].as_f64();
    let beep_hz_text = beep_hz.map_or_else(|| "no".to_owned(), |hz| format!("{hz:.1}"));
    let beeps_played = BEEP_SECONDS.count() as u64;
    // Waiting for a microphone that is slow to give sound may be told; a
    // device replaced is never right here.
    let a_notices: Vec<&String> = a
        .seen
        .iter()
        .filter(|l| l.starts_with("notice:") && !l.contains("no sound from the microphone"))
        .collect();
    let reference_db = at_microphone.map_or(played_db, |t| t.level_db);
    let figures = format!(
        "played into {MIC_SINK}: {TONE_HZ} Hz at {played_db:.1} dBFS, then {beeps_played} beeps at {BEEP_HZ} Hz\n\
         heard at {mic_source} (parecord): {}\n\
         A recorded from: {a_streams:?}; A's notices: {a_notices:?}; A sent {} audio packets\n\
         arrived at B: {}\n\
         B's beeps: {beeps} of {beeps_played}, last at {beep_hz_text} Hz, latency {}\n\
         B's packets: {received} received, concealed: {}",
        describe_tone(at_microphone, played_db),
        a_report["audio"]["packets_sent"],
        describe_tone(at_b, reference_db),
        audio["latency_ms"],
        concealed.map_or_else(
            || "no audio.packets_concealed in the report (issue 13 adds it)".to_owned(),
            |c| format!("{c} ({:.1} %)", 100.0 * c as f64 / received.max(1) as f64)
        ),
    );

    let mut wrong = Vec::new();
    match at_microphone {
        Some(t) if (t.level_db - played_db).abs() <= 0.5
            && (t.frequency_hz - TONE_HZ).abs() <= TONE_HZ * 0.005 => {}
        _ => wrong.push(
            "the test rig: the microphone did not hear the file as played (null sink not at 100 %?)"
                .to_owned(),
        ),
    }
    if a_streams != [mic_source.clone()] {
        wrong.push(format!(
            "A does not record from {mic_source} (PULSE_SOURCE) alone: {a_streams:?}"
        ));
    }
    if !a_notices.is_empty() {
        wrong.push(format!("A replaced a device: {a_notices:?}"));
    }
    match at_b {
        None => wrong.push("no tone arrived at B".to_owned()),
        Some(t) => {
            if (t.level_db - reference_db).abs() > 3.0 {
                wrong.push(format!(
                    "the tone arrived {:+.1} dB off the level A's microphone heard (at most 3 dB)",
                    t.level_db - reference_db
                ));
            }
            if (t.frequency_hz - TONE_HZ).abs() > TONE_HZ * 0.02 {
                wrong.push(format!(
                    "the tone arrived at {:.1} Hz instead of {TONE_HZ} Hz (within 2 %)",
                    t.frequency_hz
                ));
            }
            // What is heard, not only what B says it concealed: fewer than
            // 1 % of the tone's 20 ms stretches may be broken, as of packets.
            if t.broken_packets * 100 >= t.packets {
                wrong.push(format!(
                    "the tone arrived broken: {} of its {} 20 ms stretches more than {BROKEN_DB} dB below its level (quietest {:.1} dBFS; fewer than 1 % allowed)",
                    t.broken_packets, t.packets, t.weakest_packet_db
                ));
            }
        }
    }
    if beeps != beeps_played {
        wrong.push(format!("B heard {beeps} beeps; {beeps_played} were played"));
    }
    if !beep_hz.is_some_and(|hz| (hz - f64::from(BEEP_HZ)).abs() <= f64::from(BEEP_HZ) * 0.02) {
        wrong.push(format!(
            "B's beeps were at {beep_hz_text} Hz, not {BEEP_HZ} Hz (within 2 %)"
        ));
    }
    match concealed {
        None => wrong.push(format!(
            "B's report has no integer audio.packets_concealed: {audio}"
        )),
        Some(c) if c as f64 >= 0.01 * received as f64 => wrong.push(format!(
            "B concealed {c} of {received} packets (less than 1 % allowed)"
        )),
        Some(_) => {}
    }
    if wrong.is_empty() {
        eprintln!("{figures}");
    }
    assert!(
        wrong.is_empty(),
        "the microphone's audio did not reach B whole:\n- {}\n\n{figures}",
        wrong.join("\n- ")
    );
}

#[test]
fn the_tone_measurement_finds_level_frequency_and_gaps() {
    let _one = common::serialised();
    let tone =
        |n: usize| (0.25 * (std::f64::consts::TAU * 440.0 * n as f64 / 48_000.0).sin()) as f32;
    let mut samples = vec![0.0f32; RATE * 6];
    for (n, sample) in samples.iter_mut().enumerate().take(RATE * 5).skip(RATE) {
        *sample = tone(n);
    }
    let whole = measure_tone(&samples, -35.0).expect("the tone is found");
    assert!((whole.onset_s - 1.0).abs() < 0.011, "{whole:?}");
    assert!(
        (whole.level_db - sine_level_db(0.25)).abs() < 0.05,
        "{whole:?}"
    );
    assert!((whole.frequency_hz - 440.0).abs() < 0.5, "{whole:?}");
    assert!(
        (whole.weakest_packet_db - whole.level_db).abs() < 0.2,
        "{whole:?}"
    );
    assert_eq!((whole.broken_packets, whole.packets), (0, 150), "{whole:?}");

    // One packet in ten lost: the average drops under 1 dB, the gap shows.
    for packet in samples[RATE..RATE * 5].chunks_mut(RATE / 50).step_by(10) {
        packet.fill(0.0);
    }
    let gappy = measure_tone(&samples, -35.0).expect("the tone is found");
    assert!(whole.level_db - gappy.level_db < 1.0, "{gappy:?}");
    assert!(gappy.weakest_packet_db < whole.level_db - 40.0, "{gappy:?}");
    assert_eq!(gappy.broken_packets, 15, "{gappy:?}");

    assert!(measure_tone(&vec![0.0; RATE * 6], -35.0).is_none());
}
