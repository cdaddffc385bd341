//! State the media threads, the async tasks and the session share.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use duet_media::ProcessingSettings;
use duet_media::source::{AudioSpec, VideoSpec};

use super::FrameSlot;
use super::counters::MediaCounters;
use super::device_switch::DeviceSwitch;
use crate::interceptors::SendBudget;
use crate::report::{LiveFigures, NetworkSummary};

/// State the media threads, the tasks and the session share.
#[derive(Debug)]
pub(crate) struct MediaShared {
    /// Counters for the report (atomics: bumped per packet without a lock).
    pub(crate) counters: MediaCounters,
    /// Network figures, refreshed every second.
    pub(crate) network: Mutex<NetworkSummary>,
    /// Media flows only while a connection is up.
    pub(crate) sending: AtomicBool,
    /// The encoder must send a keyframe next.
    pub(crate) keyframe_wanted: AtomicBool,
    /// Congestion control's target for the current connection, and what of
    /// it is left for fresh video.
    pub(crate) send_budget: SendBudget,
    /// The decoder cannot go on without a keyframe.
    pub(crate) pli_wanted: AtomicBool,
    /// The microphone is muted: silence is sent.
    pub(crate) mic_muted: AtomicBool,
    /// Which of echo cancellation, noise suppression and gain control run on
    /// the microphone (bits of [`ProcessingBits`]), switchable mid-call.
    pub(crate) processing: AtomicU8,
    /// The camera is off: a dark paused picture is sent.
    pub(crate) camera_off: AtomicBool,
    /// Everything stops.
    pub(crate) stopped: AtomicBool,
    /// The newest remote picture.
    pub(crate) remote_video: FrameSlot,
    /// The newest local picture (self-view), when asked for.
    pub(crate) local_video: Option<FrameSlot>,
    /// A new video source for the running call.
    pub(crate) video_switch: DeviceSwitch<VideoSpec>,
    /// A new audio source for the running call.
    pub(crate) audio_switch: DeviceSwitch<AudioSpec>,
    /// A new speaker (by name; `None` for the default one) for the running call.
    pub(crate) speaker_switch: DeviceSwitch<Option<String>>,
}

impl MediaShared {
    /// Shared state; `preview` keeps local pictures for a self-view.
    pub(crate) fn new(preview: bool) -> Arc<MediaShared> {
        Arc::new(MediaShared {
            counters: MediaCounters::new(),
            network: Mutex::new(NetworkSummary::default()),
            sending: AtomicBool::new(false),
            keyframe_wanted: AtomicBool::new(true),
            send_budget: SendBudget::default(),
            pli_wanted: AtomicBool::new(false),
            mic_muted: AtomicBool::new(false),
            processing: AtomicU8::new(ProcessingBits::from(ProcessingSettings::default()).0),
            camera_off: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            remote_video: FrameSlot::default(),
            local_video: preview.then(FrameSlot::default),
            video_switch: DeviceSwitch::default(),
            audio_switch: DeviceSwitch::default(),
            speaker_switch: DeviceSwitch::default(),
        })
    }

    /// Figures for a live display: cheap (atomic reads, two short locks).
    pub(crate) fn live(&self) -> LiveFigures {
        let network = self.network.lock().map(|n| *n).unwrap_or_default();
        self.counters.live(&network)
    }

    /// The microphone processing to run now.
    pub(crate) fn processing(&self) -> ProcessingSettings {
        ProcessingBits(self.processing.load(Ordering::Relaxed)).into()
    }

    /// Switches the microphone processing (takes effect with the next frame).
    pub(crate) fn set_processing(&self, settings: ProcessingSettings) {
        self.processing
            .store(ProcessingBits::from(settings).0, Ordering::Relaxed);
    }

    /// The network figures last read.
    pub(crate) fn network(&self) -> NetworkSummary {
        self.network.lock().map(|n| *n).unwrap_or_default()
    }
}

/// [`ProcessingSettings`] as the bits of one atomic byte, so the capture
/// thread reads them each frame without a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessingBits(u8);

const ECHO_CANCEL: u8 = 1;
const NOISE_SUPPRESSION: u8 = 2;
const AUTO_GAIN: u8 = 4;

impl From<ProcessingSettings> for ProcessingBits {
    fn from(settings: ProcessingSettings) -> ProcessingBits {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        ProcessingBits(
            bit(settings.echo_cancel, ECHO_CANCEL)
                | bit(settings.noise_suppression, NOISE_SUPPRESSION)
                | bit(settings.auto_gain, AUTO_GAIN),
        )
    }
}

impl From<ProcessingBits> for ProcessingSettings {
    fn from(bits: ProcessingBits) -> ProcessingSettings {
        ProcessingSettings {
            echo_cancel: bits.0 & ECHO_CANCEL != 0,
            noise_suppression: bits.0 & NOISE_SUPPRESSION != 0,
            auto_gain: bits.0 & AUTO_GAIN != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_settings_survive_the_trip_through_an_atomic() {
        let shared = MediaShared::new(false);
        assert_eq!(shared.processing(), ProcessingSettings::default());
        for bits in 0..8u8 {
            let settings = ProcessingSettings::from(ProcessingBits(bits));
            shared.set_processing(settings);
            assert_eq!(shared.processing(), settings);
        }
    }
}
