//! Capture and encode of the audio this peer sends, on a thread of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use duet_media::frame::{FRAME_SAMPLES, unix_ms_f64};
use duet_media::source::{AudioSource, AudioSpec};
use duet_media::{AudioProcessor, OpusEncoder};
use tokio::sync::mpsc;

use super::audio_rate::{AudioPacking, AudioRateRule};
use super::counters::bump;
use super::device_switch::switched_source;
use super::echo_reference::PlayedReader;
use super::rtp_writer::EncodedUnit;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn_with_device};
use super::{MediaNotice, Started, next_or_fail};
use crate::CallError;
use crate::playout::is_quiet;

/// Starts the audio capture-and-encode thread, which opens the source; resolves once it is open.
///
/// Each packet carries 20 ms, or 60 ms on a narrow link ([`AudioRateRule`]).
///
/// A microphone's sound goes through echo cancellation (against `played`,
/// what this peer's speaker played), noise suppression and gain control, as
/// `MediaShared::processing` says at each frame. The test beeps and WAV files
/// are sent as they are: nothing acoustic happened to them.
pub(crate) async fn start_audio_sender(
    spec: AudioSpec,
    tone_hz: f32,
    mut played: PlayedReader,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<Started, CallError> {
    let (units, rx) = mpsc::channel(16);
    let started = spawn_with_device(
        "duet-audio-send",
        threads,
        move || AudioSource::open(&spec, tone_hz),
        move |mut source: AudioSource| {
            let mut rate = AudioRateRule::default();
            let mut packing = AudioPacking::NORMAL;
            // The frames of the packet being filled, and when its first was captured.
            let mut pending: Vec<f32> =
                Vec::with_capacity(AudioPacking::NARROW.samples_per_packet());
            let mut pending_capture = None;
            // Whether the frame before this one was a pause.
            let mut previous_quiet = true;
            let mut encoder = match OpusEncoder::new(packing.bitrate_bps) {
                Ok(encoder) => encoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let mut processor = AudioProcessor::new(shared.processing());
            let silence = vec![0.0f32; FRAME_SAMPLES];
            let mut echo_log = EchoLog::default();
            while !shared.stopped.load(Ordering::Relaxed) {
                if let Some(new) =
                    switched_source(&shared.audio_switch, "audio", &notices, |spec| {
                        AudioSource::open(spec, tone_hz)
                    })
                {
                    source = new;
                }
                let Some(mut frame) = next_or_fail(source.next_frame(), "audio source", &notices)
                else {
                    return;
                };
                let microphone = matches!(source, AudioSource::Mic(_));
                let settings = shared.processing();
                if processor.settings() != settings {
                    processor.set_settings(settings);
                }
                played.drain(|samples, heard_ms| {
                    if microphone {
                        processor.far_end(samples, heard_ms);
                    }
                });
                if microphone {
                    let captured_ms = unix_ms_f64(frame.capture_time);
                    if let Err(err) = processor.process(&mut frame.samples, captured_ms) {
                        tracing::warn!(%err, "microphone frame sent unprocessed");
                    }
                    echo_log.frame(&processor);
                }
                if !shared.sending.load(Ordering::Relaxed) {
                    pending.clear();
                    continue;
                }
                let samples = if shared.mic_muted.load(Ordering::Relaxed) {
                    &silence
                } else {
                    &frame.samples
                };
                // A packet's packing is chosen as it starts, a change to
                // longer packets in a pause (between two quiet frames).
                let quiet = is_quiet(samples);
                let pause = std::mem::replace(&mut previous_quiet, quiet) && quiet;
                if pending.is_empty() {
                    let budget = &shared.send_budget;
                    let chosen = rate.packing(
                        budget.target_bps(),
                        budget.path_limited(),
                        pause,
                        Instant::now(),
                    );
                    if chosen.bitrate_bps != packing.bitrate_bps
                        && let Err(err) = encoder.set_bitrate(chosen.bitrate_bps)
                    {
                        tracing::warn!(%err, "audio bitrate not changed");
                    }
                    packing = chosen;
                    pending_capture = Some(frame.capture_time);
                }
                pending.extend_from_slice(samples);
                if pending.len() < packing.samples_per_packet() {
                    continue;
                }
                let capture_time = pending_capture.take().unwrap_or(frame.capture_time);
                match encoder.encode(&pending) {
                    Ok(packet) => {
                        bump(&shared.counters.audio_packets_sent, 1);
                        let _ = units.try_send(EncodedUnit {
                            data: Bytes::from(packet),
                            capture_time,
                            samples: u32::try_from(pending.len()).ok(),
                        });
                    }
                    Err(err) => tracing::warn!(%err, "dropping audio the encoder refused"),
                }
                pending.clear();
            }
        },
    )
    .await?;
    Ok(started.map_or((None, None), |notice| (Some(rx), notice)))
}

/// Logs where the echo canceller stands every few seconds (at debug level):
/// what to read first when a call's echo is not cancelled.
#[derive(Debug, Default)]
struct EchoLog {
    frames: u32,
}

impl EchoLog {
    /// Every 5 s of 20 ms frames.
    const EVERY_FRAMES: u32 = 250;

    fn frame(&mut self, processor: &AudioProcessor) {
        self.frames += 1;
        if self.frames.is_multiple_of(Self::EVERY_FRAMES)
            && let Some(status) = processor.echo_status()
        {
            tracing::debug!(
                delay_ms = status.delay_ms,
                erle_db = status.erle_db.map(|db| db.round()),
                far_frames_dropped = processor.far_end_dropped(),
                "echo canceller"
            );
        }
    }
}
