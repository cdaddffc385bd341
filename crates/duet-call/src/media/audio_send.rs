//! Capture and encode of the audio this peer sends, on a thread of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use duet_media::frame::FRAME_SAMPLES;
use duet_media::source::{AudioSource, AudioSpec};
use duet_media::{AudioProcessor, OpusEncoder};
use tokio::sync::mpsc;

use super::counters::bump;
use super::device_switch::switched_source;
use super::echo_reference::PlayedReader;
use super::rtp_writer::EncodedUnit;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn_with_device};
use super::{MediaNotice, Started, next_or_fail};
use crate::CallError;

/// Starts the audio capture-and-encode thread, which opens the source; resolves once it is open.
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
            let mut encoder = match OpusEncoder::new(32_000) {
                Ok(encoder) => encoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let mut processor = AudioProcessor::new(shared.processing());
            let silence = vec![0.0f32; FRAME_SAMPLES];
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
                played.drain(|samples| {
                    if microphone {
                        processor.far_end(samples);
                    }
                });
                if microphone && let Err(err) = processor.process(&mut frame.samples) {
                    tracing::warn!(%err, "microphone frame sent unprocessed");
                }
                if !shared.sending.load(Ordering::Relaxed) {
                    continue;
                }
                let samples = if shared.mic_muted.load(Ordering::Relaxed) {
                    &silence
                } else {
                    &frame.samples
                };
                match encoder.encode(samples) {
                    Ok(packet) => {
                        bump(&shared.counters.audio_packets_sent, 1);
                        let _ = units.try_send(EncodedUnit {
                            data: Bytes::from(packet),
                            capture_time: frame.capture_time,
                            samples: Some(FRAME_SAMPLES as u32),
                        });
                    }
                    Err(err) => tracing::warn!(%err, "dropping audio the encoder refused"),
                }
            }
        },
    )
    .await?;
    Ok(started.map_or((None, None), |notice| (Some(rx), notice)))
}
