//! Real devices: cameras through nokhwa, microphones and speakers through cpal.
//!
//! Every device can be missing (these test machines have none): opening one
//! then fails with a typed error, and the app falls back to the test sources.
//! Audio devices are chosen by name, which survives replugging; indexes do not.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use crate::MediaError;
use crate::frame::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE, VideoFrame};
use crate::resample::{StreamResampler, downmix};

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

/// An open microphone delivering 20 ms frames at 48 kHz mono.
pub struct Microphone {
    _stream: cpal::Stream,
    frames: Receiver<AudioFrame>,
    name: String,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Gathers device callbacks into 20 ms frames at 48 kHz.
struct CaptureState {
    channels: usize,
    resampler: StreamResampler,
    pending: Vec<f32>,
    out: SyncSender<AudioFrame>,
}

impl CaptureState {
    fn push(&mut self, interleaved: &[f32]) {
        let mono = downmix(interleaved, self.channels);
        let resampled = match self.resampler.push(&mono) {
            Ok(samples) => samples,
            Err(err) => {
                tracing::warn!(%err, "microphone resampling failed");
                return;
            }
        };
        self.pending.extend_from_slice(&resampled);
        while self.pending.len() >= FRAME_SAMPLES {
            let samples: Vec<f32> = self.pending.drain(..FRAME_SAMPLES).collect();
            // The first sample of this frame was heard this long before now.
            let age = (samples.len() + self.pending.len()) as f64 / f64::from(SAMPLE_RATE);
            let capture_time = SystemTime::now() - Duration::from_secs_f64(age);
            match self.out.try_send(AudioFrame {
                samples,
                capture_time,
            }) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("audio consumer is behind; dropping a frame")
                }
            }
        }
    }
}

fn build_input(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    mut state: CaptureState,
) -> Result<cpal::Stream, cpal::Error> {
    let mut stream_config: cpal::StreamConfig = config.config();
    stream_config.buffer_size = small_buffer(config.buffer_size(), stream_config.sample_rate);
    let on_error = |err| tracing::warn!(%err, "microphone stream error");
    match config.sample_format() {
        cpal::SampleFormat::I16 => device.build_input_stream(
            stream_config,
            move |data: &[i16], _: &_| {
                let floats: Vec<f32> = data.iter().map(|&s| f32::from(s) / 32768.0).collect();
                state.push(&floats);
            },
            on_error,
            None,
        ),
        cpal::SampleFormat::I32 => device.build_input_stream(
            stream_config,
            move |data: &[i32], _: &_| {
                let floats: Vec<f32> = data.iter().map(|&s| s as f32 / 2_147_483_648.0).collect();
                state.push(&floats);
            },
            on_error,
            None,
        ),
        _ => device.build_input_stream(
            stream_config,
            move |data: &[f32], _: &_| state.push(data),
            on_error,
            None,
        ),
    }
}

impl Microphone {
    /// Opens the default microphone, or the one named `name`.
    pub fn open(name: Option<&str>) -> Result<Microphone, MediaError> {
        let device = find_device(true, name)?;
        let device_name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_else(|_| "microphone".into());
        let config = device
            .default_input_config()
            .map_err(|e| MediaError::NoMicrophone(format!("{device_name}: {e}")))?;
        let (tx, frames) = sync_channel(16);
        let state = CaptureState {
            channels: usize::from(config.channels()),
            resampler: StreamResampler::new(config.sample_rate(), SAMPLE_RATE)?,
            pending: Vec::new(),
            out: tx,
        };
        let stream = build_input(&device, &config, state)
            .map_err(|e| MediaError::NoMicrophone(format!("{device_name}: {e}")))?;
        stream
            .play()
            .map_err(|e| MediaError::NoMicrophone(format!("{device_name}: {e}")))?;
        Ok(Microphone {
            _stream: stream,
            frames,
            name: device_name,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next 20 ms, or `None` if the device delivered nothing for `timeout`.
    pub fn next_frame(&self, timeout: Duration) -> Option<AudioFrame> {
        self.frames.recv_timeout(timeout).ok()
    }
}

/// The most audio the speaker queue holds; beyond it the oldest is dropped so
/// that delay cannot build up.
const MAX_QUEUED_MS: usize = 200;

/// An open speaker fed with 48 kHz mono.
pub struct Speaker {
    _stream: cpal::Stream,
    queue: Arc<Mutex<VecDeque<f32>>>,
    resampler: StreamResampler,
    name: String,
    max_queued: usize,
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
        let device = find_device(false, name)?;
        let device_name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_else(|_| "speaker".into());
        let config = device
            .default_output_config()
            .map_err(|e| MediaError::NoSpeaker(format!("{device_name}: {e}")))?;
        let rate = config.sample_rate();
        let channels = usize::from(config.channels());
        let mut stream_config: cpal::StreamConfig = config.config();
        stream_config.buffer_size = small_buffer(config.buffer_size(), rate);
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        let feed = queue.clone();
        let stream = device
            .build_output_stream(
                stream_config,
                move |data: &mut [f32], _: &_| {
                    let mut queue = feed.lock().unwrap_or_else(|p| p.into_inner());
                    for frame in data.chunks_mut(channels) {
                        let sample = queue.pop_front().unwrap_or(0.0);
                        frame.fill(sample);
                    }
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
            queue,
            resampler: StreamResampler::new(SAMPLE_RATE, rate)?,
            name: device_name,
            max_queued: rate as usize * MAX_QUEUED_MS / 1000,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues 48 kHz mono samples for playback.
    pub fn play(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        let out = self.resampler.push(samples)?;
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.extend(out);
        let excess = queue.len().saturating_sub(self.max_queued);
        queue.drain(..excess);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Ok(mic) => {
                let _ = mic.next_frame(Duration::from_millis(200));
            }
            Err(err) => assert!(matches!(err, MediaError::NoMicrophone(_)), "{err}"),
        }
    }
}
