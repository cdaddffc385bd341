//! Real devices: cameras through nokhwa, microphones and speakers through cpal.
//!
//! Every device can be missing (these test machines have none): opening one
//! then fails with a typed error, and the app falls back to the test sources.
//! Audio devices are chosen by name, which survives replugging; indexes do not.

mod device_clock;
mod library_chatter;
mod microphone;
mod playback;
mod speaker;
mod stream_errors;

pub use self::device_clock::DeviceClock;
pub use self::library_chatter::TerminalStderr;
use self::library_chatter::quietly;
pub use self::microphone::Microphone;
pub use self::playback::PlaybackFeeder;
pub use self::speaker::{Speaker, VirtualSpeaker};

use std::time::SystemTime;

use cpal::traits::{DeviceTrait, HostTrait};
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use crate::MediaError;
use crate::frame::VideoFrame;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
