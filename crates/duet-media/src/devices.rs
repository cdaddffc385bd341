//! Real devices: cameras through nokhwa, microphones and speakers through cpal.
//!
//! Every device can be missing (these test machines have none): opening one
//! then fails with a typed error, and the app falls back to the test sources.
//! Audio devices are chosen by name, which survives replugging; indexes do not.

mod library_chatter;
mod microphone;
mod output_queue;

pub use self::library_chatter::TerminalStderr;
use self::library_chatter::quietly;
pub use self::microphone::Microphone;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use self::output_queue::OutputQueue;
use crate::MediaError;
use crate::beep::{Beep, BeepDetector};
use crate::frame::{SAMPLE_RATE, VideoFrame};
use crate::resample::StreamResampler;

/// A camera as listed for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraEntry {
    /// Index to pass to `--video camera:N`.
    pub index: u32,
    /// Name for people.
    pub name: String,
}

/// Cameras present now (empty when there are none).
pub fn list_cameras() -> Result<Vec<CameraEntry>, MediaError> {
    let cameras = nokhwa::query(ApiBackend::Auto)
        .map_err(|e| MediaError::Device(format!("cannot list cameras: {e}")))?;
    Ok(cameras
        .into_iter()
        .filter_map(|info| match info.index() {
            CameraIndex::Index(index) => Some(CameraEntry {
                index: *index,
                name: info.human_name(),
            }),
            CameraIndex::String(_) => None,
        })
        .collect())
}

/// An open camera delivering I420 frames.
pub struct Camera {
    camera: nokhwa::Camera,
    name: String,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Camera {
    /// Opens camera `index` asking for `width`×`height` at `fps`. A vague
    /// request makes some drivers fail ("failed to fulfill"), so explicit
    /// formats are tried in turn: MJPEG, YUYV and NV12 near the asked size,
    /// then whatever the camera does at the asked rate, then its default.
    pub fn open(index: u32, width: u32, height: u32, fps: u32) -> Result<Camera, MediaError> {
        let resolution = Resolution::new(width, height);
        let mut attempts: Vec<RequestedFormatType> =
            [FrameFormat::MJPEG, FrameFormat::YUYV, FrameFormat::NV12]
                .into_iter()
                .map(|format| {
                    RequestedFormatType::Closest(CameraFormat::new(resolution, format, fps))
                })
                .collect();
        attempts.push(RequestedFormatType::HighestFrameRate(fps));
        attempts.push(RequestedFormatType::None);
        let mut last_error = String::from("no format tried");
        for request in attempts {
            let requested = RequestedFormat::new::<RgbFormat>(request);
            match nokhwa::Camera::new(CameraIndex::Index(index), requested) {
                Ok(mut camera) => match camera.open_stream() {
                    Ok(()) => {
                        let name = camera.info().human_name();
                        tracing::info!(camera = %name, format = %camera.camera_format(), "camera open");
                        return Ok(Camera { camera, name });
                    }
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(MediaError::NoCamera(format!(
            "camera {index}: {last_error}"
        )))
    }

    /// The camera's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next picture and converts it to I420.
    pub fn next_frame(&mut self) -> Result<VideoFrame, MediaError> {
        let buffer = self
            .camera
            .frame()
            .map_err(|e| MediaError::CameraStopped(e.to_string()))?;
        let captured = SystemTime::now();
        let image = buffer
            .decode_image::<RgbFormat>()
            .map_err(|e| MediaError::CameraStopped(format!("undecodable frame: {e}")))?;
        let (w, h) = (image.width(), image.height());
        VideoFrame::from_rgb(w, h, image.as_raw(), captured)
    }
}

/// Names of the audio inputs (`input == true`) or outputs present.
pub fn list_audio_devices(input: bool) -> Result<Vec<String>, MediaError> {
    quietly(|| audio_devices(input))
}

fn audio_devices(input: bool) -> Result<Vec<String>, MediaError> {
    let host = cpal::default_host();
    let devices = if input {
        host.input_devices()
    } else {
        host.output_devices()
    }
    .map_err(|e| MediaError::Device(format!("cannot list audio devices: {e}")))?;
    Ok(devices
        .filter(|d| {
            if input {
                d.default_input_config().is_ok()
            } else {
                d.default_output_config().is_ok()
            }
        })
        .filter_map(|d| d.description().ok())
        // ALSA's `null` plugin "works" but is no device: it discards playback
        // and makes silence as fast as it is read.
        .filter(|desc| desc.driver() != Some("null"))
        .map(|desc| desc.name().to_owned())
        .collect())
}

/// What a device is called for the person: its name, or `fallback` (`"speaker"`).
fn device_name(device: &cpal::Device, fallback: &str) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| fallback.to_owned())
}

fn find_device(input: bool, name: Option<&str>) -> Result<cpal::Device, MediaError> {
    let host = cpal::default_host();
    let missing = |what: String| {
        if input {
            MediaError::NoMicrophone(what)
        } else {
            MediaError::NoSpeaker(what)
        }
    };
    match name {
        None => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or_else(|| missing("no default device".into())),
        Some(wanted) => {
            let mut devices = if input {
                host.input_devices()
            } else {
                host.output_devices()
            }
            .map_err(|e| missing(e.to_string()))?;
            devices
                .find(|d| d.description().is_ok_and(|desc| desc.name() == wanted))
                .ok_or_else(|| missing(format!("no device named {wanted:?}")))
        }
    }
}

/// A fixed buffer near 10 ms, within what the device allows: a default buffer
/// can add seconds of delay on some Linux audio servers.
fn small_buffer(range: &cpal::SupportedBufferSize, rate: u32) -> cpal::BufferSize {
    let want = rate / 100;
    match range {
        cpal::SupportedBufferSize::Range { min, max } => {
            cpal::BufferSize::Fixed(want.clamp(*min, *max))
        }
        cpal::SupportedBufferSize::Unknown => cpal::BufferSize::Fixed(want),
    }
}

/// The most audio the speaker queue holds; beyond it the oldest is dropped so
/// that delay cannot build up.
const MAX_QUEUED_MS: usize = 200;

/// An open speaker fed with 48 kHz mono.
///
/// It listens for the beeps of the test signal in what it plays, in the
/// device's output callback: the detector hears exactly the samples the
/// callback hands to the device, and times them at that callback. The time
/// is the wall clock on entering the callback plus the delay cpal reports for
/// the buffer (its `playback` instant minus its `callback` instant: when the
/// device expects to play the buffer's first sample); where cpal reports no
/// such delay (a `playback` instant not after `callback`), the callback's wall
/// clock alone. Take the beeps with [`Speaker::take_beeps`].
pub struct Speaker {
    _stream: cpal::Stream,
    state: Arc<Mutex<SpeakerState>>,
    resampler: StreamResampler,
    name: String,
}

/// What [`Speaker::play`] and the output callback share.
struct SpeakerState {
    queue: OutputQueue,
    detector: BeepDetector,
    beeps: Vec<Beep>,
    /// Scratch buffers of the callback (kept to avoid allocating in it).
    mono: Vec<f32>,
    heard: Vec<f32>,
}

impl SpeakerState {
    /// Fills an interleaved device buffer of `channels` channels and listens
    /// to what goes out, the buffer's first sample played at `first_played`.
    fn fill(&mut self, data: &mut [f32], channels: usize, first_played: SystemTime) {
        let frames = data.len() / channels.max(1);
        self.mono.resize(frames, 0.0);
        self.queue.pop_into(&mut self.mono, &mut self.heard);
        for (frame, &sample) in data.chunks_mut(channels.max(1)).zip(&self.mono) {
            frame.fill(sample);
        }
        if !self.heard.is_empty() {
            self.detector.push(&self.heard, unix_ms_f64(first_played));
            self.beeps.extend(self.detector.take());
        }
    }
}

/// Milliseconds since the epoch, with the fraction.
fn unix_ms_f64(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The delay until a buffer is played, as the device reports it; zero when it
/// reports none (or something implausible).
fn playback_delay(timestamp: &cpal::OutputStreamTimestamp) -> Duration {
    timestamp
        .playback
        .checked_duration_since(timestamp.callback)
        .filter(|delay| *delay < Duration::from_secs(1))
        .unwrap_or_default()
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Opens the default speaker, or the one named `name`.
    pub fn open(name: Option<&str>) -> Result<Speaker, MediaError> {
        quietly(|| Speaker::open_loudly(name))
    }

    fn open_loudly(name: Option<&str>) -> Result<Speaker, MediaError> {
        let device = find_device(false, name)?;
        let device_name = device_name(&device, "speaker");
        let config = device
            .default_output_config()
            .map_err(|e| MediaError::NoSpeaker(format!("{device_name}: {e}")))?;
        let rate = config.sample_rate();
        let channels = usize::from(config.channels());
        let mut stream_config: cpal::StreamConfig = config.config();
        stream_config.buffer_size = small_buffer(config.buffer_size(), rate);
        let state = Arc::new(Mutex::new(SpeakerState {
            queue: OutputQueue::new(rate, rate as usize * MAX_QUEUED_MS / 1000),
            detector: BeepDetector::new(),
            beeps: Vec::new(),
            mono: Vec::new(),
            heard: Vec::new(),
        }));
        let feed = Arc::clone(&state);
        let stream = device
            .build_output_stream(
                stream_config,
                move |data: &mut [f32], info: &cpal::OutputCallbackInfo| {
                    let handed_at = SystemTime::now();
                    let first_played = handed_at + playback_delay(&info.timestamp());
                    let mut state = feed.lock().unwrap_or_else(|p| p.into_inner());
                    state.fill(data, channels, first_played);
                },
                |err| tracing::warn!(%err, "speaker stream error"),
                None,
            )
            .map_err(|e| MediaError::NoSpeaker(format!("{device_name}: {e}")))?;
        stream
            .play()
            .map_err(|e| MediaError::NoSpeaker(format!("{device_name}: {e}")))?;
        Ok(Speaker {
            _stream: stream,
            state,
            resampler: StreamResampler::new(SAMPLE_RATE, rate)?,
            name: device_name,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues 48 kHz mono samples for playback.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        let out = self.resampler.push(samples)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queue.push(samples, &out);
        Ok(())
    }

    /// The beeps heard in what the device was handed since the last call.
    pub fn take_beeps(&self) -> Vec<Beep> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut state.beeps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FRAME_SAMPLES;

    // These machines have no camera, microphone or speaker: every call must
    // come back with a typed error (or an empty list), never panic or hang.

    #[test]
    fn listing_devices_does_not_fail_without_devices() {
        let cameras = list_cameras();
        assert!(cameras.is_ok() || matches!(cameras, Err(MediaError::Device(_))));
        let _ = list_audio_devices(true);
        let _ = list_audio_devices(false);
    }

    #[test]
    fn opening_a_missing_camera_is_a_typed_error() {
        if list_cameras().is_ok_and(|c| !c.is_empty()) {
            return; // a machine with a camera: nothing to check here
        }
        match Camera::open(0, 640, 480, 30) {
            Err(MediaError::NoCamera(reason)) => assert!(!reason.is_empty()),
            other => panic!("expected NoCamera, got {other:?}"),
        }
    }

    #[test]
    fn a_microphone_or_speaker_that_does_not_exist_by_name_is_a_typed_error() {
        let name = Some("no such device, surely");
        assert!(matches!(
            Microphone::open(name),
            Err(MediaError::NoMicrophone(_))
        ));
        assert!(matches!(Speaker::open(name), Err(MediaError::NoSpeaker(_))));
    }

    #[test]
    fn the_default_microphone_opens_or_fails_cleanly() {
        match Microphone::open(None) {
            Ok(mut mic) => {
                let _ = mic.next_frame(Duration::from_millis(200));
            }
            Err(err) => assert!(matches!(err, MediaError::NoMicrophone(_)), "{err}"),
        }
    }

    #[test]
    fn the_speaker_callback_times_beeps_at_the_moment_it_hands_them_over() {
        use crate::test_audio::BeepSource;
        use std::time::UNIX_EPOCH;

        // A beep made at a whole second, handed to a stereo device 70 ms later.
        let made = UNIX_EPOCH + Duration::from_millis(1_764_000_000_000 - 400);
        let mut source = BeepSource::new(880.0, made).expect("valid");
        let mut state = SpeakerState {
            queue: OutputQueue::new(SAMPLE_RATE, SAMPLE_RATE as usize),
            detector: BeepDetector::new(),
            beeps: Vec::new(),
            mono: Vec::new(),
            heard: Vec::new(),
        };
        let mut buffer = vec![0.0f32; FRAME_SAMPLES * 2];
        for _ in 0..60 {
            let frame = source.generate();
            state.queue.push(&frame.samples, &frame.samples);
            let first_played = frame.capture_time + Duration::from_millis(70);
            state.fill(&mut buffer, 2, first_played);
            assert_eq!(buffer[0], buffer[1], "both channels carry the sample");
        }
        assert_eq!(state.beeps.len(), 1, "{:?}", state.beeps);
        assert!(
            (state.beeps[0].latency_ms - 70.0).abs() < 1.0,
            "{:?}",
            state.beeps
        );
    }
}
