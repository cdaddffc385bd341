//! Echo cancellation, noise suppression and automatic gain for the microphone,
//! by `sonora`, a pure-Rust port of WebRTC's audio processing module (AEC3,
//! the WebRTC noise suppressor, AGC2).
//!
//! The three run in WebRTC's order (echo, then noise, then gain), each in its
//! own sonora instance, a "stage". One instance for all three would be a
//! little cheaper, but sonora reinitialises every submodule, AEC3 included,
//! whenever the set of enabled ones changes: switching noise suppression in
//! the settings panel would throw away the echo path AEC3 spent seconds
//! learning. With a stage each, a switch only decides whether its stage runs;
//! a stage switched off keeps its state and carries on from it when switched
//! back on, so sonora is never reconfigured mid-call.
//!
//! WebRTC works on 10 ms frames ([`PROCESSING_FRAME_SAMPLES`]); a 20 ms Duet
//! frame is two of them. The far end (what the speaker played) arrives in
//! device-sized bursts; it is cut into 10 ms frames and queued, and each
//! microphone frame first hands the echo canceller every far-end frame queued
//! since the last one, then is processed itself: WebRTC's rule of
//! `ProcessReverseStream` for what was played, then `ProcessStream` for what
//! was captured. AEC3 finds the delay between the two itself (its delay
//! estimator); sonora takes an optional hint (`set_stream_delay_ms`) only to
//! start from, so none is given.
//!
//! AEC3 does not adapt its filter around a far end that is one steady sine
//! (its render analyser masks narrow bands, where an adaptive filter would
//! diverge), so an echo of nothing but test beeps is left to its suppressor:
//! in `tests/e2e/echo.rs` that removed anywhere from 15 to 62 dB from one run to
//! the next. With speech around the beeps it learns the room from the speech
//! and removes about 50 dB of them every time. Calls carry speech; the test
//! does too.
//!
//! In double talk AEC3 favours removing echo over keeping the near talker: a
//! talker 7 dB louder than the echo lost 1.0–2.7 dB in this module's test, one
//! only as loud as the echo lost up to 24 dB above 2 kHz while both talked.

use std::collections::VecDeque;

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::MediaError;
use crate::frame::SAMPLE_RATE;

/// Samples in one 10 ms frame at 48 kHz: the unit WebRTC processing works in.
/// [`AudioProcessor::process`] takes whole multiples of it.
pub const PROCESSING_FRAME_SAMPLES: usize = SAMPLE_RATE as usize / 100;

/// Far-end frames kept for the echo canceller, 200 ms: more means nobody is
/// capturing (or the speaker's clock runs ahead of the microphone's), and the
/// newest audio is what the next microphone frame will echo.
const MAX_QUEUED_FAR_END_FRAMES: usize = 20;

type Frame = [f32; PROCESSING_FRAME_SAMPLES];

/// Which processing runs; each switchable at any time (a settings panel flips
/// them mid-call) without disturbing the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingSettings {
    /// Remove the far end's voice picked up from the speaker (AEC3).
    pub echo_cancel: bool,
    /// Remove stationary background noise (fans, hum, hiss).
    pub noise_suppression: bool,
    /// Bring the talker to a steady level (AGC2 adaptive digital gain).
    pub auto_gain: bool,
}

/// All on: what a call on laptop speakers needs, and what browsers do by default.
impl Default for ProcessingSettings {
    fn default() -> Self {
        ProcessingSettings {
            echo_cancel: true,
            noise_suppression: true,
            auto_gain: true,
        }
    }
}

impl ProcessingSettings {
    /// Nothing runs: the microphone's samples pass untouched (for headsets,
    /// studio microphones, or measuring the raw path).
    pub const OFF: ProcessingSettings = ProcessingSettings {
        echo_cancel: false,
        noise_suppression: false,
        auto_gain: false,
    };

    fn any(self) -> bool {
        self.echo_cancel || self.noise_suppression || self.auto_gain
    }
}

/// Echo cancellation, noise suppression and gain control for the microphone:
/// 48 kHz mono, whole 10 ms frames. Owned by the thread that captures; `Send`.
pub struct AudioProcessor {
    settings: ProcessingSettings,
    /// Each stage is made the first time it is switched on, then kept.
    echo: Option<AudioProcessing>,
    noise: Option<AudioProcessing>,
    gain: Option<AudioProcessing>,
    /// Far-end 10 ms frames not yet handed to the echo canceller, oldest first.
    far_frames: VecDeque<Frame>,
    /// The start of the next far-end frame (fewer than 480 samples).
    far_partial: Vec<f32>,
    /// Far-end frames dropped because the queue was full, for diagnostics.
    far_dropped: u64,
    /// sonora reads one buffer and writes another; the frame is copied here first.
    scratch: Frame,
}

impl std::fmt::Debug for AudioProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProcessor")
            .field("settings", &self.settings)
            .field("far_frames", &self.far_frames.len())
            .field("far_dropped", &self.far_dropped)
            .finish_non_exhaustive()
    }
}

impl AudioProcessor {
    /// A processor running what `settings` switches on. Infallible: sonora
    /// cannot refuse 48 kHz mono, the only format Duet uses.
    pub fn new(settings: ProcessingSettings) -> AudioProcessor {
        let mut processor = AudioProcessor {
            settings: ProcessingSettings::OFF,
            echo: None,
            noise: None,
            gain: None,
            far_frames: VecDeque::with_capacity(MAX_QUEUED_FAR_END_FRAMES),
            far_partial: Vec::with_capacity(PROCESSING_FRAME_SAMPLES),
            far_dropped: 0,
            scratch: [0.0; PROCESSING_FRAME_SAMPLES],
        };
        processor.set_settings(settings);
        processor
    }

    /// What runs now.
    pub fn settings(&self) -> ProcessingSettings {
        self.settings
    }

    /// Switches processing on or off from the next frame. Never reconfigures
    /// a running stage, so the echo canceller keeps what it has learned
    /// through any change of the other two, and through being switched off
    /// and on again. Switching a stage on for the first time builds it
    /// (allocates), so call this from outside the audio callback if that matters.
    pub fn set_settings(&mut self, settings: ProcessingSettings) {
        if settings.echo_cancel {
            self.echo.get_or_insert_with(|| stage(echo_config()));
        } else {
            // Far-end audio from before a pause would be misaligned after it.
            self.far_frames.clear();
            self.far_partial.clear();
        }
        if settings.noise_suppression {
            self.noise.get_or_insert_with(|| stage(noise_config()));
        }
        if settings.auto_gain {
            self.gain.get_or_insert_with(|| stage(gain_config()));
        }
        self.settings = settings;
    }

    /// What the speaker just played (48 kHz mono): the echo canceller's
    /// far-end reference. Any length; kept in 10 ms frames until the next
    /// [`process`](Self::process), at most 200 ms of them (the oldest go).
    /// Ignored while echo cancellation is off.
    pub fn far_end(&mut self, played: &[f32]) {
        if !self.settings.echo_cancel {
            return;
        }
        let mut rest = played;
        while !rest.is_empty() {
            let take = (PROCESSING_FRAME_SAMPLES - self.far_partial.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.far_partial.extend_from_slice(now);
            rest = later;
            if self.far_partial.len() == PROCESSING_FRAME_SAMPLES {
                if self.far_frames.len() == MAX_QUEUED_FAR_END_FRAMES {
                    self.far_frames.pop_front();
                    self.far_dropped += 1;
                }
                let mut frame = [0.0; PROCESSING_FRAME_SAMPLES];
                frame.copy_from_slice(&self.far_partial);
                self.far_frames.push_back(frame);
                self.far_partial.clear();
            }
        }
    }

    /// Far-end 10 ms frames dropped so far because nothing consumed them
    /// within 200 ms: non-zero during a call means the microphone stalled or
    /// the speaker's clock runs faster than the microphone's.
    pub fn far_end_dropped(&self) -> u64 {
        self.far_dropped
    }

    /// Processes microphone samples in place: 48 kHz mono, any whole number
    /// of 10 ms frames (a Duet frame is two). Any other length is refused
    /// with [`MediaError::PartialAudioFrame`] and the samples are left as
    /// they were: carrying the remainder over would delay the microphone by
    /// up to 10 ms and make the output lag the input, which an in-place API
    /// cannot express. With every setting off, sonora is not called at all
    /// and the samples stay bit-identical.
    pub fn process(&mut self, near: &mut [f32]) -> Result<(), MediaError> {
        if !near.len().is_multiple_of(PROCESSING_FRAME_SAMPLES) {
            return Err(MediaError::PartialAudioFrame(near.len()));
        }
        let settings = self.settings;
        if !settings.any() {
            return Ok(());
        }
        for frame in near.chunks_exact_mut(PROCESSING_FRAME_SAMPLES) {
            if settings.echo_cancel
                && let Some(echo) = &mut self.echo
            {
                while let Some(far) = self.far_frames.pop_front() {
                    echo.process_render_f32(&[&far], &mut [&mut self.scratch])
                        .map_err(sonora_error)?;
                }
                run(echo, frame, &mut self.scratch)?;
            }
            if settings.noise_suppression
                && let Some(noise) = &mut self.noise
            {
                run(noise, frame, &mut self.scratch)?;
            }
            if settings.auto_gain
                && let Some(gain) = &mut self.gain
            {
                run(gain, frame, &mut self.scratch)?;
            }
        }
        Ok(())
    }
}

/// One capture frame through one stage, in place.
fn run(
    stage: &mut AudioProcessing,
    frame: &mut [f32],
    scratch: &mut Frame,
) -> Result<(), MediaError> {
    scratch.copy_from_slice(frame);
    stage
        .process_capture_f32(&[scratch.as_slice()], &mut [frame])
        .map_err(sonora_error)
}

fn sonora_error(error: sonora::Error) -> MediaError {
    MediaError::AudioProcessing(error.to_string())
}

/// A sonora instance for 48 kHz mono in and out. Its internal processing rate
/// stays at sonora's default of 32 kHz (two bands): voice has nothing above
/// 16 kHz worth the third band's cost.
fn stage(config: Config) -> AudioProcessing {
    let stream = StreamConfig::new(SAMPLE_RATE, 1);
    AudioProcessing::builder()
        .config(config)
        .capture_config(stream)
        .render_config(stream)
        .build()
}

/// AEC3 with its defaults, which keep the high-pass filter on: DC offset,
/// mains hum and rumble (it cuts below 80 Hz, passes 100 Hz and up) carry no
/// voice, and the echo canceller would otherwise spend its adaptation on them.
fn echo_config() -> Config {
    Config {
        echo_canceller: Some(EchoCanceller::default()),
        ..Config::default()
    }
}

/// Noise suppression at `High` (a target of about 18 dB), the level Chromium
/// uses. On tone bursts in white noise at 5 dB SNR (this module's test) the
/// SNR rose by 13.0 dB at `Moderate`, 16.3 dB at `High` and 17.8 dB at
/// `VeryHigh`, the bursts within 0.2 dB each time; `High` takes most of the
/// gain without the most aggressive setting. sonora runs its high-pass filter
/// with it too, a second time when the echo stage ran; the two together still
/// pass 100 Hz and up within 1 dB.
fn noise_config() -> Config {
    Config {
        noise_suppression: Some(NoiseSuppression {
            level: NoiseSuppressionLevel::High,
            ..NoiseSuppression::default()
        }),
        ..Config::default()
    }
}

/// AGC2 as Chromium runs it on desktops: adaptive digital gain with sonora's
/// (WebRTC's) defaults (up to 50 dB of gain, changing at most 6 dB/s, starting
/// at 15 dB),
/// no fixed gain, and no input volume controller, since Duet does not drive
/// the operating system's microphone volume. Its limiter keeps the result
/// from clipping.
fn gain_config() -> Config {
    Config {
        gain_controller2: Some(GainController2 {
            input_volume_controller: false,
            adaptive_digital: Some(AdaptiveDigital::default()),
            ..GainController2::default()
        }),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests;
