//! What `--video SRC` and `--audio SRC` name (see `docs/cli.md`), opened with the
//! fallbacks a calling app needs: no camera or microphone means the test
//! signals, with a notice for the person, never a failed call.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::MediaError;
use crate::beep::{Beep, BeepDetector};
use crate::devices::{Camera, Microphone, Speaker};
use crate::frame::{AudioFrame, VideoFrame};
use crate::test_audio::BeepSource;
use crate::test_video::TestPatternSource;
use crate::wav_file::{WavRecorder, WavSource};
use crate::y4m_file::Y4mSource;

/// A `--video` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSpec {
    /// `camera` (index 0) or `camera:N`.
    Camera(u32),
    /// `test`: the stamped pattern.
    Test,
    /// A `.y4m` file, looped.
    File(PathBuf),
    /// `none`: send no video.
    None,
}

impl std::str::FromStr for VideoSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<VideoSpec, String> {
        match value {
            "camera" => Ok(VideoSpec::Camera(0)),
            "test" => Ok(VideoSpec::Test),
            "none" => Ok(VideoSpec::None),
            _ => {
                if let Some(index) = value.strip_prefix("camera:") {
                    return index
                        .parse()
                        .map(VideoSpec::Camera)
                        .map_err(|_| format!("camera:{index}: the camera index must be a number"));
                }
                if value.ends_with(".y4m") {
                    return Ok(VideoSpec::File(value.into()));
                }
                Err(format!(
                    "{value:?} is not a video source: use camera, camera:N, test, a .y4m file or none"
                ))
            }
        }
    }
}

/// An `--audio` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSpec {
    /// `mic` (the default device) or `mic:NAME`.
    Mic(Option<String>),
    /// `test`: the beeps.
    Test,
    /// A `.wav` file, looped.
    File(PathBuf),
    /// `none`: send no audio.
    None,
}

impl std::str::FromStr for AudioSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<AudioSpec, String> {
        match value {
            "mic" => Ok(AudioSpec::Mic(None)),
            "test" => Ok(AudioSpec::Test),
            "none" => Ok(AudioSpec::None),
            _ => {
                if let Some(name) = value.strip_prefix("mic:") {
                    return Ok(AudioSpec::Mic(Some(name.to_owned())));
                }
                if value.ends_with(".wav") {
                    return Ok(AudioSpec::File(value.into()));
                }
                Err(format!(
                    "{value:?} is not an audio source: use mic, mic:NAME, test, a .wav file or none"
                ))
            }
        }
    }
}

/// An open video source of any kind, paced in real time.
#[derive(Debug)]
pub enum VideoSource {
    /// A camera.
    Camera(Box<Camera>),
    /// The stamped test pattern.
    Test(TestPatternSource),
    /// A looped file.
    File(Y4mSource),
}

/// Something the person should be told about their devices.
pub type Notice = String;

impl VideoSource {
    /// Opens `spec`; a camera that cannot be opened falls back to the test
    /// pattern with a notice. `Ok(None)` for `none`. Files are not replaced:
    /// a wrong file is the user's to fix, so its error is returned.
    pub fn open(
        spec: &VideoSpec,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<(Option<VideoSource>, Option<Notice>), MediaError> {
        match spec {
            VideoSpec::None => Ok((None, None)),
            VideoSpec::Test => Ok((
                Some(VideoSource::Test(TestPatternSource::new(
                    width, height, fps,
                )?)),
                None,
            )),
            VideoSpec::File(path) => Ok((
                Some(VideoSource::File(Y4mSource::open(path, Some(fps))?)),
                None,
            )),
            VideoSpec::Camera(index) => match Camera::open(*index, width, height, fps) {
                Ok(camera) => Ok((Some(VideoSource::Camera(Box::new(camera))), None)),
                Err(err) => {
                    tracing::warn!(%err, "using the test pattern instead of the camera");
                    let notice = format!("{err}; sending the test pattern instead");
                    let test = TestPatternSource::new(width.max(320), height.max(240), fps)?;
                    Ok((Some(VideoSource::Test(test)), Some(notice)))
                }
            },
        }
    }

    /// The next frame. A camera that stops is replaced by the test pattern,
    /// and the notice says so.
    pub fn next_frame(&mut self) -> Result<(VideoFrame, Option<Notice>), MediaError> {
        match self {
            VideoSource::Test(source) => Ok((source.next_frame(), None)),
            VideoSource::File(source) => Ok((source.next_frame()?, None)),
            VideoSource::Camera(camera) => match camera.next_frame() {
                Ok(frame) => Ok((frame, None)),
                Err(err) => {
                    tracing::warn!(%err, "camera lost; switching to the test pattern");
                    let mut test = TestPatternSource::new(640, 480, 30)?;
                    let frame = test.next_frame();
                    *self = VideoSource::Test(test);
                    Ok((
                        frame,
                        Some(format!("{err}; sending the test pattern instead")),
                    ))
                }
            },
        }
    }
}

/// An open audio source of any kind, paced in real time.
#[derive(Debug)]
pub enum AudioSource {
    /// A microphone.
    Mic(Box<Microphone>),
    /// The beeps.
    Test(BeepSource),
    /// A looped file.
    File(WavSource),
}

impl AudioSource {
    /// Opens `spec`; a microphone that cannot be opened falls back to the
    /// beeps at `tone_hz` with a notice. `Ok(None)` for `none`.
    pub fn open(
        spec: &AudioSpec,
        tone_hz: f32,
    ) -> Result<(Option<AudioSource>, Option<Notice>), MediaError> {
        match spec {
            AudioSpec::None => Ok((None, None)),
            AudioSpec::Test => Ok((
                Some(AudioSource::Test(BeepSource::new(
                    tone_hz,
                    SystemTime::now(),
                )?)),
                None,
            )),
            AudioSpec::File(path) => Ok((Some(AudioSource::File(WavSource::open(path)?)), None)),
            AudioSpec::Mic(name) => match Microphone::open(name.as_deref()) {
                Ok(mic) => Ok((Some(AudioSource::Mic(Box::new(mic))), None)),
                Err(err) => {
                    tracing::warn!(%err, "using test beeps instead of the microphone");
                    let beeps = BeepSource::new(tone_hz, SystemTime::now())?;
                    Ok((
                        Some(AudioSource::Test(beeps)),
                        Some(format!("{err}; sending test beeps instead")),
                    ))
                }
            },
        }
    }

    /// The next 20 ms. A microphone that gives nothing (slow to start, or
    /// paused) is waited for with silence in its place, never replaced.
    pub fn next_frame(&mut self) -> Result<(AudioFrame, Option<Notice>), MediaError> {
        match self {
            AudioSource::Test(source) => Ok((source.next_frame(), None)),
            AudioSource::File(source) => Ok((source.next_frame(), None)),
            AudioSource::Mic(mic) => Ok(mic.next_frame_or_silence()),
        }
    }
}

/// Where received audio goes, listening for the beeps of the test signal in
/// it, and optionally recorded as it is played (`--record-audio`).
///
/// Where beeps are timed depends on the output. A speaker times them in its
/// device's output callback, when the samples are handed to the device (see
/// [`Speaker`]). Without a device (discarding, headless), they are timed
/// here, with the wall clock when the sink takes the samples.
#[derive(Debug)]
pub struct AudioSink {
    output: SinkOutput,
    /// A copy of exactly what is played.
    recording: Option<WavRecorder>,
    /// Listens when discarding (the speaker listens in its callback).
    detector: BeepDetector,
}

#[derive(Debug)]
enum SinkOutput {
    Speaker(Box<Speaker>),
    Discard,
}

impl AudioSink {
    /// Plays on `speaker`.
    pub fn speaker(speaker: Speaker) -> AudioSink {
        AudioSink::with(SinkOutput::Speaker(Box::new(speaker)))
    }

    /// Drops what it is given (headless runs).
    pub fn discard() -> AudioSink {
        AudioSink::with(SinkOutput::Discard)
    }

    fn with(output: SinkOutput) -> AudioSink {
        AudioSink {
            output,
            recording: None,
            detector: BeepDetector::new(),
        }
    }

    /// Also writes what is played to `recorder` (`--record-audio`).
    pub fn recording_to(mut self, recorder: WavRecorder) -> AudioSink {
        self.recording = Some(recorder);
        self
    }

    /// Takes the recording away (to carry it on to the sink that replaces this one).
    pub fn take_recording(&mut self) -> Option<WavRecorder> {
        self.recording.take()
    }

    /// Plays (or drops) 48 kHz mono samples, and records them if asked.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        if let Some(recorder) = &mut self.recording {
            recorder.write(samples)?;
        }
        match &mut self.output {
            SinkOutput::Speaker(speaker) => speaker.play(samples),
            SinkOutput::Discard => {
                listen(&mut self.detector, samples);
                Ok(())
            }
        }
    }

    /// The beeps heard since the last call, timed where the sink takes the
    /// samples (see [`AudioSink`]).
    pub fn take_beeps(&mut self) -> Vec<Beep> {
        match &self.output {
            SinkOutput::Speaker(speaker) => speaker.take_beeps(),
            SinkOutput::Discard => self.detector.take(),
        }
    }

    /// Finishes the recording, if there is one.
    pub fn finish(self) -> Result<(), MediaError> {
        match self.recording {
            Some(recorder) => recorder.finish(),
            None => Ok(()),
        }
    }
}

/// A headless sink takes the samples now: that is when they are timed.
fn listen(detector: &mut BeepDetector, samples: &[f32]) {
    let taken_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    detector.push(samples, taken_at);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn specs_parse_as_cli_md_writes_them() {
        assert_eq!("camera".parse(), Ok(VideoSpec::Camera(0)));
        assert_eq!("camera:2".parse(), Ok(VideoSpec::Camera(2)));
        assert_eq!("test".parse(), Ok(VideoSpec::Test));
        assert_eq!("clip.y4m".parse(), Ok(VideoSpec::File("clip.y4m".into())));
        assert_eq!("none".parse(), Ok(VideoSpec::None));
        assert!("camera:x".parse::<VideoSpec>().is_err());
        assert!("movie.mp4".parse::<VideoSpec>().is_err());
        assert_eq!("mic".parse(), Ok(AudioSpec::Mic(None)));
        assert_eq!(
            "mic:USB Audio".parse(),
            Ok(AudioSpec::Mic(Some("USB Audio".into())))
        );
        assert_eq!("a.wav".parse(), Ok(AudioSpec::File("a.wav".into())));
        assert!("a.mp3".parse::<AudioSpec>().is_err());
    }

    #[test]
    fn a_missing_camera_falls_back_to_the_test_pattern_with_a_notice() {
        if crate::devices::list_cameras().is_ok_and(|c| !c.is_empty()) {
            return;
        }
        let (source, notice) =
            VideoSource::open(&VideoSpec::Camera(0), 640, 480, 30).expect("falls back");
        assert!(matches!(source, Some(VideoSource::Test(_))));
        assert!(notice.is_some_and(|n| n.contains("test pattern")));
    }

    #[test]
    fn a_missing_microphone_falls_back_to_beeps_with_a_notice() {
        let spec = AudioSpec::Mic(Some("no such microphone".into()));
        let (source, notice) = AudioSource::open(&spec, 660.0).expect("falls back");
        assert!(matches!(source, Some(AudioSource::Test(_))));
        assert!(notice.is_some_and(|n| n.contains("beeps")));
    }

    #[test]
    fn a_wrong_file_is_an_error_not_a_fallback() {
        let err = VideoSource::open(&VideoSpec::File("/nonexistent/x.y4m".into()), 640, 480, 30);
        assert!(matches!(err, Err(MediaError::VideoFile { .. })));
    }

    #[test]
    fn a_headless_sink_hears_the_beeps_it_takes_timed_when_it_takes_them() {
        // Start just after a whole second of the wall clock, and take 2 s of
        // beeps at once: each is timed when taken, a few ms after that second.
        let past_second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .subsec_millis();
        std::thread::sleep(Duration::from_millis(u64::from(1_010 - past_second)));
        let made = SystemTime::now() - Duration::from_millis(2_500);
        let mut source = BeepSource::new(880.0, made).expect("valid");
        let mut sink = AudioSink::discard();
        let mut beeps = Vec::new();
        for _ in 0..100 {
            let frame = source.generate();
            sink.play(&frame.samples).expect("discarding cannot fail");
            beeps.extend(sink.take_beeps());
        }
        assert!(!beeps.is_empty());
        for beep in &beeps {
            assert!((beep.frequency_hz - 880.0).abs() < 5.0, "{beep:?}");
            assert!(beep.latency_ms < 300.0, "timed when taken: {beep:?}");
        }
        assert!(sink.finish().is_ok());
    }

    #[test]
    fn noise_played_to_a_headless_sink_gives_no_beeps() {
        let mut sink = AudioSink::discard();
        let mut state = 12_345u32;
        for _ in 0..250 {
            let noise: Vec<f32> = (0..960)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 * 0.6 - 0.3
                })
                .collect();
            sink.play(&noise).expect("discarding cannot fail");
        }
        assert!(sink.take_beeps().is_empty());
    }
}
