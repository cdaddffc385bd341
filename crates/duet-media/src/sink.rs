//! Where received audio goes: a speaker or a virtual one, with everything that
//! listens to what it played.
//!
//! The sink's device plays at its own clock; [`AudioSink::play`] only queues.
//! [`AudioSink::collect_played`] then reads back what the device really
//! played, silence it made up included, each run timed by when it is heard,
//! and hands it to the beep detector (latency is measured where a person hears
//! it), to the recording (`--record-audio`: exactly what was played), and to
//! the caller (the echo canceller's far-end reference).

use crate::MediaError;
use crate::beep::{Beep, BeepDetector};
use crate::devices::{PlaybackFeeder, Speaker, VirtualSpeaker};
use crate::wav_file::WavRecorder;

/// A device that plays received audio, with the beep detector and the
/// recording that listen to it.
#[derive(Debug)]
pub struct AudioSink {
    output: SinkOutput,
    /// A copy of exactly what is played.
    recording: Option<WavRecorder>,
    detector: BeepDetector,
}

#[derive(Debug)]
enum SinkOutput {
    Speaker(Box<Speaker>),
    Virtual(Box<VirtualSpeaker>),
}

impl SinkOutput {
    fn feeder(&mut self) -> &mut PlaybackFeeder {
        match self {
            SinkOutput::Speaker(speaker) => speaker.feeder(),
            SinkOutput::Virtual(speaker) => speaker.feeder(),
        }
    }
}

impl AudioSink {
    /// Plays on `speaker`.
    pub fn speaker(speaker: Speaker) -> AudioSink {
        AudioSink::with(SinkOutput::Speaker(Box::new(speaker)))
    }

    /// Plays on a virtual speaker (headless runs: nothing is heard, but audio
    /// is played at a device's pace). `skew_ppm` makes its clock run fast or
    /// slow, as a sound card's may (see [`VirtualSpeaker`]).
    pub fn virtual_speaker(skew_ppm: i32) -> Result<AudioSink, MediaError> {
        let speaker = VirtualSpeaker::start(skew_ppm)?;
        Ok(AudioSink::with(SinkOutput::Virtual(Box::new(speaker))))
    }

    fn with(output: SinkOutput) -> AudioSink {
        AudioSink {
            output,
            recording: None,
            detector: BeepDetector::new(),
        }
    }

    /// Also writes what is played to `recorder` (`--record-audio`), from now on.
    pub fn record_to(&mut self, recorder: WavRecorder) {
        self.recording = Some(recorder);
    }

    /// Takes the recording away (to carry it on to the sink that replaces this one).
    pub fn take_recording(&mut self) -> Option<WavRecorder> {
        self.recording.take()
    }

    fn feeder(&mut self) -> &mut PlaybackFeeder {
        self.output.feeder()
    }

    /// Audio queued for the device and not yet played, in milliseconds.
    pub fn queued_ms(&mut self) -> f64 {
        self.feeder().queued_ms()
    }

    /// Queues 48 kHz mono samples for the device.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        self.feeder().push(samples)
    }

    /// Reads back what the device has played since the last call: listens
    /// for beeps in it, records it, and hands it to `also` with when its
    /// first sample was heard (ms since the Unix epoch). A recording that
    /// fails is an error (the sink keeps playing; the caller decides).
    pub fn collect_played(&mut self, mut also: impl FnMut(&[f32], f64)) -> Result<(), MediaError> {
        let AudioSink {
            output,
            recording,
            detector,
        } = self;
        let mut failed = None;
        output.feeder().take_played(|samples, first_heard_unix_ms| {
            detector.push(samples, first_heard_unix_ms);
            also(samples, first_heard_unix_ms);
            if let Some(recorder) = recording
                && failed.is_none()
                && let Err(err) = recorder.write(samples)
            {
                failed = Some(err);
            }
        });
        failed.map_or(Ok(()), Err)
    }

    /// The beeps heard since the last call, timed when they were heard.
    pub fn take_beeps(&mut self) -> Vec<Beep> {
        self.detector.take()
    }

    /// The most audio one device callback has asked for, in milliseconds.
    pub fn largest_request_ms(&mut self) -> f64 {
        self.feeder().largest_request_ms()
    }

    /// How fast the device really plays, in samples a second of wall clock
    /// (at its own rate, not 48 kHz), once it has played long enough to tell.
    pub fn device_rate_hz(&mut self) -> Option<f64> {
        self.feeder().device_rate_hz()
    }

    /// Times the device ran out of audio after it had started playing, or
    /// stopped asking for it.
    pub fn underruns(&mut self) -> u64 {
        self.feeder().underruns()
    }

    /// Finishes the recording, if there is one.
    pub fn finish(self) -> Result<(), MediaError> {
        match self.recording {
            Some(recorder) => recorder.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_audio::BeepSource;
    use std::time::{Duration, Instant, SystemTime};

    /// How far ahead of its device the tests keep a sink: enough that a test
    /// thread held up by a busy machine (CI runs tests in parallel on two
    /// cores) does not run the device dry.
    const AHEAD_MS: f64 = 200.0;

    /// Plays `source` for `seconds` through `sink`, keeping its device
    /// [`AHEAD_MS`] ahead.
    fn play_for(sink: &mut AudioSink, seconds: f64, mut next: impl FnMut() -> Vec<f32>) {
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < seconds {
            while sink.queued_ms() < AHEAD_MS {
                sink.play(&next()).expect("queues");
            }
            sink.collect_played(|_, _| {})
                .expect("no recording to fail");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_virtual_speaker_hears_the_beeps_when_it_plays_them() {
        // Beeps made 300 ms before now, the first of them played at once:
        // each is heard about 300 ms after its second. Timed when queued
        // (200 ms ahead of the device) they would read about 100 ms.
        let made = SystemTime::now() - Duration::from_millis(300);
        let mut source = BeepSource::new(880.0, made).expect("valid");
        let mut sink = AudioSink::virtual_speaker(0).expect("starts");
        play_for(&mut sink, 2.3, || source.generate().samples);
        let beeps = sink.take_beeps();
        assert!(!beeps.is_empty());
        for beep in &beeps {
            assert!((beep.frequency_hz - 880.0).abs() < 5.0, "{beep:?}");
            assert!(
                (280.0..450.0).contains(&beep.latency_ms),
                "timed when heard: {beep:?}"
            );
        }
        assert_eq!(sink.underruns(), 0);
        assert!(sink.finish().is_ok());
    }

    #[test]
    fn noise_played_to_a_virtual_speaker_gives_no_beeps() {
        let mut sink = AudioSink::virtual_speaker(0).expect("starts");
        let mut state = 12_345u32;
        play_for(&mut sink, 1.5, || {
            (0..960)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 * 0.6 - 0.3
                })
                .collect()
        });
        assert!(sink.take_beeps().is_empty());
    }

    #[test]
    fn the_recording_holds_what_was_played_silence_included() {
        let path = std::env::temp_dir().join(format!("duet-sink-{}.wav", std::process::id()));
        let recorder = WavRecorder::create(&path).expect("creates");
        let mut sink = AudioSink::virtual_speaker(0).expect("starts");
        sink.record_to(recorder);
        sink.play(&[0.5; 4_800]).expect("queues");
        // Let it play the 100 ms and then run dry for a while.
        std::thread::sleep(Duration::from_millis(250));
        let mut handed = 0;
        sink.collect_played(|samples, _| handed += samples.len())
            .expect("records");
        sink.finish().expect("finishes");
        let samples = crate::wav_file::read_wav(&path).expect("reads");
        let _ = std::fs::remove_file(&path);
        assert_eq!(samples.len(), handed);
        assert!(samples.len() > 4_800 + 4_800, "{}", samples.len());
        let first_loud = samples.iter().position(|&s| s == 0.5).expect("played");
        assert!(
            samples[first_loud..first_loud + 4_800]
                .iter()
                .all(|&s| s == 0.5)
        );
        assert!(samples[first_loud + 4_800..].iter().all(|&s| s == 0.0));
    }
}
