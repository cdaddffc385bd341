//! A sound server held up for a moment (a busy machine, a page fault) runs
//! its clients' streams dry. Through PulseAudio's ALSA plugin such a stream
//! comes back only after 1–2 s (the plugin reconnects it and then waits for
//! the server's next timing report), and nothing said so: the report's
//! `audio.device_underruns` stayed 0, the recording of what was played
//! (`--record-audio`) lost the silence and every later beep seemed earlier,
//! and the device's measured rate read 4–9 % slow (it had asked for nothing
//! meanwhile).
//!
//! Here the private PulseAudio daemon both peers play to is stopped for
//! 60 ms in the middle of a call. Each peer must say its speaker ran dry
//! (when its stream did), keep the recording on the clock (the delay after
//! the stall where it was), read the device's rate right, and play on.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::played::{RATE, delay_changes, percentile, played_beeps};
use common::pulse::PulseAudio;
use common::speakers::SpeakerCall;
use common::{Scratch, number, report, start_server};
use duet_media::wav_file::read_wav;

const CALL_SECONDS: u64 = 24;
/// When the daemon is held up, after the peers start.
const STALL_AFTER: Duration = Duration::from_secs(11);

#[test]
fn a_sound_server_held_up_for_a_moment_is_reported_and_the_call_plays_on() {
    let _one_at_a_time = common::serialised();
    let scratch = Scratch::new("speaker-stall");
    let pulse = PulseAudio::start("speaker-stall");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let mut call = SpeakerCall::start(&scratch, &pulse, &url, "stall", CALL_SECONDS);
    std::thread::sleep(STALL_AFTER);
    pulse.stall(Duration::from_millis(60));
    call.wait(Duration::from_secs(CALL_SECONDS + 60));
    for (name, peer) in ["a", "b"].iter().zip(&mut call.peers) {
        let stderr = peer.stderr();
        let report = report(&scratch, name);
        let underruns = number(&report, &["audio", "device_underruns"]);
        // A device stopped so often that less than 10 s of steady play is
        // left reports no rate rather than a wrong one.
        let measured = report["audio"]["device_rate_hz"].as_f64();
        assert!(
            measured.is_some() || underruns >= 3.0,
            "{name}: no device rate after {underruns} underruns: {}",
            report["audio"]
        );
        let rate = measured.unwrap_or(48_000.0);
        let samples = read_wav(&SpeakerCall::recording(&scratch, name)).unwrap();
        let seconds = samples.len() as f64 / RATE;
        // The first 3 s hold the connection's start, and the hang-up may
        // cut the last beep short.
        let beeps: Vec<_> = played_beeps(&samples)
            .into_iter()
            .filter(|beep| {
                beep.start as f64 > 3.0 * RATE
                    && (beep.end as f64) < samples.len() as f64 - 2.0 * RATE
            })
            .collect();
        // The delays are read on the beeps that follow one a second before
        // them. The first sound after a stall was what the stream held when
        // it stopped: when the stall cut a beep (CI, 2026-12-03, and here
        // with both cores busy), its rest was heard as the stream came back,
        // 1.9 s later, and read as a beep 100 ms late. Audio held over a stop
        // of more than 500 ms is now dropped (`devices::playback`), but a
        // shorter stop still plays its rest a little late.
        let steady: Vec<_> = beeps
            .iter()
            .enumerate()
            .filter(|(i, beep)| *i == 0 || (beep.start - beeps[i - 1].start) as f64 <= 1.5 * RATE)
            .map(|(_, beep)| *beep)
            .collect();
        let delays = delay_changes(&steady, rate);
        let changes: Vec<f64> = delays.iter().map(|(_, change)| *change).collect();
        let summary = format!(
            "{name}: device at {rate:.1} Hz, {underruns} underruns, {} beeps in {seconds:.1} s \
             of recording, delay changes {:+.0}…{:+.0} ms",
            beeps.len(),
            percentile(&changes, 0.0),
            percentile(&changes, 100.0),
        );
        eprintln!("{summary}");
        // A busy machine's sound server also stalls by itself, a few times
        // a minute on some days, and each stall leaves a segment of a
        // couple of seconds to fit: the bounds below allow for that and
        // still catch what went wrong before (a rate 4–9 % slow, a
        // recording that lost the seconds of each stall).
        assert!(
            (rate / 48_000.0 - 1.0).abs() < 0.01,
            "the device's rate read wrong: {summary}"
        );
        // One beep a second between 3 s and 2 s before the end; each stall
        // takes the stream away for up to two of them.
        let expected = (seconds - 5.0).floor() - 1.0;
        assert!(
            beeps.len() as f64 >= expected - 2.0 * underruns.max(1.0),
            "{summary}"
        );
        // The delay after a stall is back where it was, give or take what
        // the new stream's first timing report is off by (the silence is in
        // the recording; the playout cuts the audio that waited meanwhile
        // back to its target). Without the silence it moved by seconds.
        let (late, early) = (percentile(&changes, 100.0), percentile(&changes, 0.0));
        assert!(late - early < 100.0, "{summary}");
        if stderr.contains("underrun") {
            assert!(underruns >= 1.0, "the stream ran dry unreported: {summary}");
        }
    }
}
