//! What `--video SRC` and `--audio SRC` name (see `docs/cli.md`), opened with the
//! fallbacks a calling app needs: no camera or microphone means the test
//! signals, with a notice for the person, never a failed call.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::MediaError;
use crate::devices::{Camera, Microphone};
use crate::frame::{AudioFrame, VideoFrame};
use crate::screen::ScreenSource;
use crate::test_audio::BeepSource;
use crate::test_video::TestPatternSource;
use crate::wav_file::WavSource;
use crate::y4m_file::Y4mSource;

/// A `--video` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSpec {
    /// `camera` (index 0) or `camera:N`.
    Camera(u32),
    /// `test`: the stamped pattern.
    Test,
    /// `test:noisy`: the stamped pattern with sensor-like noise, costing
    /// what a camera costs to encode.
    NoisyTest,
    /// `screen` (the whole X screen) or `screen:N` (monitor N of it).
    Screen(Option<u32>),
    /// A `.y4m` file, looped.
    File(PathBuf),
    /// `none`: send no video.
    None,
}

impl VideoSpec {
    /// A shared screen rather than a camera-like picture.
    pub fn is_screen(&self) -> bool {
        matches!(self, VideoSpec::Screen(_))
    }
}

impl std::str::FromStr for VideoSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<VideoSpec, String> {
        match value {
            "camera" => Ok(VideoSpec::Camera(0)),
            "test" => Ok(VideoSpec::Test),
            "test:noisy" => Ok(VideoSpec::NoisyTest),
            "screen" => Ok(VideoSpec::Screen(None)),
            "none" => Ok(VideoSpec::None),
            _ => {
                if let Some(index) = value.strip_prefix("camera:") {
                    return index
                        .parse()
                        .map(VideoSpec::Camera)
                        .map_err(|_| format!("camera:{index}: the camera index must be a number"));
                }
                if let Some(index) = value.strip_prefix("screen:") {
                    return index
                        .parse()
                        .map(|n| VideoSpec::Screen(Some(n)))
                        .map_err(|_| {
                            format!("screen:{index}: the screen number must be a number")
                        });
                }
                if value.ends_with(".y4m") {
                    return Ok(VideoSpec::File(value.into()));
                }
                Err(format!(
                    "{value:?} is not a video source: use camera, camera:N, test, test:noisy, screen, screen:N, a .y4m file or none"
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
    /// A shared screen.
    Screen(Box<ScreenSource>),
}

/// Something the person should be told about their devices.
pub type Notice = String;

impl VideoSource {
    /// Opens `spec`; a camera that cannot be opened falls back to the test
    /// pattern with a notice. `Ok(None)` for `none`. Files and screens are
    /// not replaced: a wrong file or a missing display is the user's to fix,
    /// so its error is returned. A screen keeps its own size and a rate of
    /// 5–15 pictures a second ([`crate::screen`]).
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
            VideoSpec::NoisyTest => Ok((
                Some(VideoSource::Test(
                    TestPatternSource::new(width, height, fps)?.with_noise(),
                )),
                None,
            )),
            VideoSpec::File(path) => Ok((
                Some(VideoSource::File(Y4mSource::open(path, Some(fps))?)),
                None,
            )),
            VideoSpec::Screen(monitor) => Ok((
                Some(VideoSource::Screen(Box::new(ScreenSource::open(
                    *monitor, fps,
                )?))),
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

    /// A shared screen rather than a camera-like picture.
    pub fn is_screen(&self) -> bool {
        matches!(self, VideoSource::Screen(_))
    }

    /// The rate pictures come at, when `asked` (`--fps`) was asked for: a
    /// screen's own (5–15), else `asked`.
    pub fn frame_rate(&self, asked: u32) -> u32 {
        if self.is_screen() {
            crate::screen::screen_fps(asked)
        } else {
            asked
        }
    }

    /// The next frame. A camera that stops is replaced by the test pattern,
    /// and the notice says so.
    pub fn next_frame(&mut self) -> Result<(VideoFrame, Option<Notice>), MediaError> {
        match self {
            VideoSource::Test(source) => Ok((source.next_frame(), None)),
            VideoSource::File(source) => Ok((source.next_frame()?, None)),
            VideoSource::Screen(screen) => match screen.next_frame() {
                Ok(frame) => Ok((frame, None)),
                Err(err) => {
                    tracing::warn!(%err, "screen lost; switching to the test pattern");
                    let mut test = TestPatternSource::new(640, 480, 30)?;
                    let frame = test.next_frame();
                    *self = VideoSource::Test(test);
                    Ok((
                        frame,
                        Some(format!("{err}; sending the test pattern instead")),
                    ))
                }
            },
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

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn specs_parse_as_cli_md_writes_them() {
        assert_eq!("camera".parse(), Ok(VideoSpec::Camera(0)));
        assert_eq!("camera:2".parse(), Ok(VideoSpec::Camera(2)));
        assert_eq!("test".parse(), Ok(VideoSpec::Test));
        assert_eq!("test:noisy".parse(), Ok(VideoSpec::NoisyTest));
        assert!("test:loud".parse::<VideoSpec>().is_err());
        assert_eq!("clip.y4m".parse(), Ok(VideoSpec::File("clip.y4m".into())));
        assert_eq!("none".parse(), Ok(VideoSpec::None));
        assert_eq!("screen".parse(), Ok(VideoSpec::Screen(None)));
        assert_eq!("screen:1".parse(), Ok(VideoSpec::Screen(Some(1))));
        assert!("screen:x".parse::<VideoSpec>().is_err());
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
}
