//! Received audio: the remote track into the playout buffer, and the playout
//! thread that decodes, plays and listens for beeps.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use duet_media::devices::Speaker;
use duet_media::frame::unix_ms;
use duet_media::source::{AudioSink, Notice};
use duet_media::wav_file::WavRecorder;
use duet_media::{BeepDetector, MediaError, OpusDecoder};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::shared::MediaShared;
use super::{MediaNotice, Opened, spawn_with_device};
use crate::CallError;
use crate::playout::{AudioPlayoutBuffer, Playout};

/// Reads the remote audio track into the playout buffer.
pub(crate) async fn run_audio_receiver(
    track: Arc<dyn TrackRemote>,
    shared: Arc<MediaShared>,
    buffer: Arc<Mutex<AudioPlayoutBuffer>>,
) {
    if let Ok(mut buffer) = buffer.lock() {
        *buffer = AudioPlayoutBuffer::new();
    }
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(packet) => {
                shared.count(|c| c.audio_packets_received += 1);
                if let Ok(mut buffer) = buffer.lock() {
                    buffer.push(packet.header.timestamp, packet.payload, Instant::now());
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// Starts the playout thread: every 20 ms of wall clock it takes what the
/// buffer says, decodes or conceals it, plays it and listens for beeps.
pub(crate) async fn start_audio_playout(
    output: AudioOutput,
    buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
) -> Result<Opened, CallError> {
    spawn_with_device(
        "duet-audio-playout",
        move || open_sink(&output).map(|(sink, notice)| (Some(sink), notice)),
        move |mut sink: AudioSink| {
            let mut decoder = match OpusDecoder::new() {
                Ok(decoder) => decoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let mut detector = BeepDetector::new();
            let period = Duration::from_millis(20);
            let mut due = Instant::now() + period;
            let mut ticks = 0u64;
            while !shared.stopped.load(Ordering::Relaxed) {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                due += period;
                if Instant::now() > due + period * 5 {
                    // Far behind (suspended?): resynchronise rather than burst.
                    due = Instant::now() + period;
                }
                if let Some(name) = shared.speaker_switch.take() {
                    match open_sink(&AudioOutput::Speaker(name)) {
                        Ok((new, notice)) => {
                            if let Some(notice) = notice {
                                let _ = notices.send(MediaNotice::Device(notice));
                            }
                            // A recording is finished properly; a speaker just closes.
                            let old = std::mem::replace(&mut sink, new);
                            if let Err(err) = old.finish() {
                                tracing::warn!(%err, "closing the previous audio output");
                            }
                        }
                        Err(err) => {
                            let _ = notices.send(MediaNotice::Device(err.to_string()));
                        }
                    }
                }
                let next = match buffer.lock() {
                    Ok(mut buffer) => {
                        ticks += 1;
                        if ticks.is_multiple_of(50) {
                            tracing::debug!(
                                depth = buffer.depth(),
                                target = buffer.target(),
                                concealed = buffer.concealed(),
                                "audio playout"
                            );
                        }
                        buffer.pop()
                    }
                    Err(_) => return,
                };
                let samples = match next {
                    Playout::Idle => continue,
                    Playout::Packet(packet) => decoder.decode(Some(&packet)),
                    Playout::Missing { next: Some(next) } => decoder.decode_fec(&next),
                    Playout::Missing { next: None } => decoder.decode(None),
                };
                let played_at = unix_ms(SystemTime::now()) as f64;
                detector.push(&samples, played_at);
                let beeps = detector.take();
                if !beeps.is_empty() {
                    shared.count(|c| {
                        for beep in &beeps {
                            c.beeps_detected += 1;
                            c.beep_hz = Some(beep.frequency_hz as f32);
                            c.audio_latency.push(beep.latency_ms);
                        }
                    });
                }
                if let Err(err) = sink.play(&samples) {
                    let _ = notices.send(MediaNotice::Device(format!(
                        "{err}; received audio is no longer played"
                    )));
                    sink = AudioSink::Null;
                }
            }
            if let Err(err) = sink.finish() {
                let _ = notices.send(MediaNotice::Failed(format!(
                    "cannot finish the audio recording: {err}"
                )));
            }
        },
    )
    .await?
    .ok_or_else(|| CallError::Media("the audio playout thread failed to start".into()))
}

/// Where received audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// Nowhere (headless without `--record-audio`).
    Discard,
    /// A 48 kHz mono WAV file (`--record-audio`).
    Record(std::path::PathBuf),
    /// A speaker: the default one, or one by name. Falls back to discarding, with a notice.
    Speaker(Option<String>),
}

fn open_sink(output: &AudioOutput) -> Result<(AudioSink, Option<Notice>), MediaError> {
    match output {
        AudioOutput::Discard => Ok((AudioSink::Null, None)),
        AudioOutput::Record(path) => Ok((AudioSink::Wav(WavRecorder::create(path)?), None)),
        AudioOutput::Speaker(name) => match Speaker::open(name.as_deref()) {
            Ok(speaker) => Ok((AudioSink::Speaker(Box::new(speaker)), None)),
            Err(err) => Ok((
                AudioSink::Null,
                Some(format!("{err}; received audio is not played")),
            )),
        },
    }
}
