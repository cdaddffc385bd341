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
//! device-sized bursts, each with when it was heard; it is cut into 10 ms
//! frames and queued ([`far_end`]), and each microphone frame first hands the
//! echo canceller every far-end frame queued since the last one (less what
//! was heard while the microphone captured nothing), then is processed
//! itself: WebRTC's rule of `ProcessReverseStream` for what was played, then
//! `ProcessStream` for what was captured. AEC3 finds the delay between the
//! two itself (its delay estimator); sonora takes an optional hint
//! (`set_stream_delay_ms`) only to start from, so none is given.
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

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::MediaError;
use crate::frame::SAMPLE_RATE;

mod far_end;
use far_end::FarEndQueue;

/// Samples in one 10 ms frame at 48 kHz: the unit WebRTC processing works in.
/// [`AudioProcessor::process`] takes whole multiples of it.
pub const PROCESSING_FRAME_SAMPLES: usize = SAMPLE_RATE as usize / 100;

type Frame = [f32; PROCESSING_FRAME_SAMPLES];

/// The echo canceller's state, for the logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoStatus {
    /// The echo path's delay AEC3 estimates now.
    pub delay_ms: Option<i32>,
    /// Echo return loss enhancement: how much echo it removes, in dB.
    pub erle_db: Option<f64>,
}

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
    /// Far-end frames not yet handed to the echo canceller.
    far: FarEndQueue,
    /// sonora reads one buffer and writes another; the frame is copied here first.
    scratch: Frame,
}

impl std::fmt::Debug for AudioProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProcessor")
            .field("settings", &self.settings)
            .field("far_frames", &self.far.len())
            .field("far_dropped", &self.far.dropped())
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
            far: FarEndQueue::default(),
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
            self.far.clear();
        }
        if settings.noise_suppression {
            self.noise.get_or_insert_with(|| stage(noise_config()));
        }
        if settings.auto_gain {
            self.gain.get_or_insert_with(|| stage(gain_config()));
        }
        self.settings = settings;
    }

    /// What the speaker just played (48 kHz mono), its first sample heard
    /// at `first_heard_ms` (milliseconds on the clock [`process`](Self::process)'s
    /// capture times use): the echo canceller's far-end reference. Any
    /// length; kept in 10 ms frames until the next [`process`](Self::process),
    /// at most a second of them (the oldest go). Ignored while echo
    /// cancellation is off.
    pub fn far_end(&mut self, played: &[f32], first_heard_ms: f64) {
        if self.settings.echo_cancel {
            self.far.push(played, first_heard_ms);
        }
    }

    /// Far-end 10 ms frames let go without reaching the echo canceller: those
    /// heard while the microphone captured nothing (before it started, or
    /// while it stalled), and those beyond a second that nobody consumed.
    pub fn far_end_dropped(&self) -> u64 {
        self.far.dropped()
    }

    /// Where the echo canceller stands: the echo path's delay it found and
    /// how much echo it removes. `None` while echo cancellation was never on.
    pub fn echo_status(&self) -> Option<EchoStatus> {
        let stats = self.echo.as_ref()?.statistics();
        Some(EchoStatus {
            delay_ms: stats.delay_ms,
            erle_db: stats.echo_return_loss_enhancement,
        })
    }

    /// Processes microphone samples in place, their first captured at
    /// `captured_ms` (see [`far_end`](Self::far_end)): 48 kHz mono, any whole
    /// number of 10 ms frames (a Duet frame is two). Any other length is refused
    /// with [`MediaError::PartialAudioFrame`] and the samples are left as
    /// they were: carrying the remainder over would delay the microphone by
    /// up to 10 ms and make the output lag the input, which an in-place API
    /// cannot express. With every setting off, sonora is not called at all
    /// and the samples stay bit-identical.
    pub fn process(&mut self, near: &mut [f32], captured_ms: f64) -> Result<(), MediaError> {
        if !near.len().is_multiple_of(PROCESSING_FRAME_SAMPLES) {
            return Err(MediaError::PartialAudioFrame(near.len()));
        }
        let settings = self.settings;
        if !settings.any() {
            return Ok(());
        }
        for (n, frame) in near.chunks_exact_mut(PROCESSING_FRAME_SAMPLES).enumerate() {
            if settings.echo_cancel
                && let Some(echo) = &mut self.echo
            {
                let scratch = &mut self.scratch;
                let frame_ms = captured_ms + n as f64 * far_end::FRAME_MS;
                self.far.hand_over(frame_ms, |far| {
                    echo.process_render_f32(&[far], &mut [scratch])
                        .map_err(sonora_error)
                })?;
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
