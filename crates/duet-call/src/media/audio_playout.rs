//! Received audio: the remote track into the playout buffer, and the playout
//! thread that decodes and plays it. The sink listens for the test beeps where
//! it takes the samples (a speaker in its device callback; see
//! `duet_media::source::AudioSink`), and this thread counts what it heard.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_media::devices::Speaker;
use duet_media::source::{AudioSink, Notice};
use duet_media::wav_file::WavRecorder;
use duet_media::{MediaError, OpusDecoder, opus_packet_samples};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::MediaNotice;
use super::counters::{MediaCounters, bump};
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn_with_device};
use crate::CallError;
use crate::playout::{AudioPlayoutBuffer, Playout, TICKS_PER_PACKET};

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
                bump(&shared.counters.audio_packets_received, 1);
                let samples = opus_packet_samples(&packet.payload).unwrap_or(TICKS_PER_PACKET);
                if let Ok(mut buffer) = buffer.lock() {
                    buffer.push(
                        packet.header.timestamp,
                        packet.payload,
                        samples,
                        Instant::now(),
                    );
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// Starts the playout thread: every 20 ms of wall clock it takes what the
/// buffer says, decodes or conceals it, plays it and counts the beeps the sink
/// heard. Resolves once the sink is open, with a notice if it was replaced.
pub(crate) async fn start_audio_playout(
    output: AudioOutput,
    record: Option<PathBuf>,
    buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<Option<Notice>, CallError> {
    spawn_with_device(
        "duet-audio-playout",
        threads,
        move || {
            let (sink, notice) = open_sink(&output)?;
            let sink = match record {
                Some(path) => sink.recording_to(WavRecorder::create(&path)?),
                None => sink,
            };
            Ok((Some(sink), notice))
        },
        move |mut sink: AudioSink| {
            let mut decoder = match OpusDecoder::new() {
                Ok(decoder) => decoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
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
                            // The recording goes on through the new speaker.
                            let mut old = std::mem::replace(&mut sink, new);
                            count_beeps(&shared.counters, &mut old);
                            if let Some(recording) = old.take_recording() {
                                sink = sink.recording_to(recording);
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
                if matches!(next, Playout::Missing { .. }) {
                    bump(&shared.counters.audio_packets_concealed, 1);
                }
                let samples = match next {
                    Playout::Idle => continue,
                    Playout::Packet(packet) => decoder.decode(Some(&packet)),
                    Playout::Missing { next: Some(next) } => decoder.decode_fec(&next),
                    Playout::Missing { next: None } => decoder.decode(None),
                };
                if let Err(err) = sink.play(&samples) {
                    let _ = notices.send(MediaNotice::Device(format!(
                        "{err}; received audio is no longer played or recorded"
                    )));
                    count_beeps(&shared.counters, &mut sink);
                    // Whatever failed (the speaker or the file), what was
                    // recorded so far is kept: finish it.
                    if let Some(recording) = sink.take_recording()
                        && let Err(err) = recording.finish()
                    {
                        tracing::warn!(%err, "finishing the audio recording");
                    }
                    sink = AudioSink::discard();
                }
                count_beeps(&shared.counters, &mut sink);
            }
            count_beeps(&shared.counters, &mut sink);
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

/// Counts the beeps `sink` heard since the last call.
fn count_beeps(counters: &MediaCounters, sink: &mut AudioSink) {
    let beeps = sink.take_beeps();
    if beeps.is_empty() {
        return;
    }
    for beep in &beeps {
        counters.beep_heard(beep.frequency_hz as f32);
    }
    counters.latencies(|l| {
        for beep in &beeps {
            l.audio.push(beep.latency_ms);
        }
    });
}

/// Where received audio is played (`--record-audio` records it as well,
/// whichever this is: see `CallConfig::record_audio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// Nowhere (headless).
    Discard,
    /// A speaker: the default one, or one by name. Falls back to discarding, with a notice.
    Speaker(Option<String>),
}

fn open_sink(output: &AudioOutput) -> Result<(AudioSink, Option<Notice>), MediaError> {
    match output {
        AudioOutput::Discard => Ok((AudioSink::discard(), None)),
        AudioOutput::Speaker(name) => match Speaker::open(name.as_deref()) {
            Ok(speaker) => Ok((AudioSink::speaker(speaker), None)),
            Err(err) => Ok((
                AudioSink::discard(),
                Some(format!("{err}; received audio is not played")),
            )),
        },
    }
}
