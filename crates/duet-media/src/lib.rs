//! Duet's media: capture, test sources, H.264 and Opus codecs, and the stamp
//! and beep readers. It turns cameras, microphones, files and synthetic
//! signals into encoded H.264 and Opus, and encoded streams back into pictures
//! and sound; it knows nothing of WebRTC or signaling.
//!
//! - [`frame`]: I420 pictures and 20 ms 48 kHz mono audio frames.
//! - [`test_video`], [`test_audio`]: the stamped pattern and beeps of `docs/test-signals.md`.
//! - [`stamp`], [`beep`]: reading them back ([`StampReader`], [`BeepDetector`]).
//! - [`h264`], [`opus_codec`]: the codecs; [`opus_playback`]: decoding for a playout that waits for late packets.
//! - [`y4m_file`], [`wav_file`]: file sources and the WAV recorder.
//! - [`screen`]: sharing a screen or monitor (X11, or Wayland's desktop portal).
//! - [`devices`]: cameras (nokhwa), microphones and speakers (cpal).
//! - [`source`]: `--video`/`--audio` values opened with fallbacks.
//! - [`audio_processing`]: echo cancellation, noise suppression and gain for the microphone.
//! - [`stretch`]: absorbing the drift between the sender's clock and the speaker's.
//! - [`sink`]: where received audio is played (a speaker, or a virtual one), and what listens to it.

use std::path::PathBuf;

pub mod audio_processing;
pub mod beep;
pub mod devices;
pub mod frame;
pub mod h264;
mod mic_wait;
pub mod opus_codec;
pub mod opus_playback;
mod pitch_repeat;
pub mod resample;
pub mod screen;
mod screen_cursor;
mod screen_picture;
#[cfg(feature = "wayland-portal")]
mod screen_pipewire;
#[cfg(feature = "wayland-portal")]
mod screen_portal;
mod screen_x11;
pub mod sink;
pub mod source;
pub mod speech_like;
pub mod stamp;
pub mod stretch;
pub mod test_audio;
pub mod test_video;
pub mod wav_file;
pub mod y4m_file;

pub use audio_processing::{AudioProcessor, EchoStatus, ProcessingSettings};
pub use beep::{Beep, BeepDetector};
pub use frame::{AudioFrame, VideoFrame};
pub use h264::{Decoded, EncodedVideo, H264Decoder, H264Encoder};
pub use opus_codec::{OpusDecoder, OpusEncoder, opus_packet_samples};
pub use opus_playback::OpusPlayback;
pub use stamp::StampReader;
pub use test_audio::BeepSource;
pub use test_video::TestPatternSource;

/// Everything that can go wrong with media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A picture size the operation cannot use.
    #[error("unusable picture size {width}x{height}")]
    BadSize {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// The test pattern needs at least 320x240 for its stamp.
    #[error("{width}x{height} is too small for the test pattern; it needs at least 320x240")]
    TooSmallForStamp {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// A frame rate outside 1–240.
    #[error("unusable frame rate {0}; use 1 to 240")]
    BadFrameRate(u32),
    /// A test-tone frequency outside 300–3000 Hz.
    #[error("tone frequency {0} Hz is outside 300–3000 Hz")]
    BadToneFrequency(f32),
    /// Colour conversion failed.
    #[error("colour conversion failed: {0}")]
    Conversion(String),
    /// Resampling failed.
    #[error("resampling failed: {0}")]
    Resample(String),
    /// An encoder or decoder failed.
    #[error("{0}")]
    Codec(String),
    /// A video file is unusable.
    #[error("{}: {error}", path.display())]
    VideoFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: y4m_file::Y4mError,
    },
    /// An audio file is unusable.
    #[error("{}: {error}", path.display())]
    AudioFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: wav_file::WavError,
    },
    /// Listing devices failed.
    #[error("{0}")]
    Device(String),
    /// No camera could be opened.
    #[error("no camera: {0}")]
    NoCamera(String),
    /// The camera stopped delivering pictures.
    #[error("the camera stopped: {0}")]
    CameraStopped(String),
    /// No screen could be read (no display, no portal, a monitor that is not there,
    /// sharing declined in the portal's dialog).
    #[error("cannot share a screen: {0}")]
    NoScreen(String),
    /// No microphone could be opened.
    #[error("no microphone: {0}")]
    NoMicrophone(String),
    /// No speaker could be opened.
    #[error("no speaker: {0}")]
    NoSpeaker(String),
    /// Microphone samples for the audio processor that are not whole 10 ms
    /// frames (480 samples at 48 kHz).
    #[error("{0} samples is not a whole number of 10 ms frames (480 samples each)")]
    PartialAudioFrame(usize),
    /// The audio processing module refused a frame.
    #[error("audio processing failed: {0}")]
    AudioProcessing(String),
}
