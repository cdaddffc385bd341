//! Received audio: the remote track into the playout buffer, and the playout
//! thread that keeps the output device fed from it.
//!
//! The device is the clock. Its callback (or a virtual speaker's tick, headless)
//! takes samples from a lock-free ring (`duet_media::devices::PlaybackFeeder`);
//! this thread wakes every few milliseconds, tops the ring up to a small lead
//! by taking the next packet from the buffer, decoding it and stretching it by
//! the buffer's playout ratio (which absorbs the drift between the sender's
//! clock and the device's), and reads back what the device played: that is
//! where beeps are timed, what is recorded, and the echo canceller's far-end
//! reference.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_media::devices::Speaker;
use duet_media::sink::AudioSink;
use duet_media::source::Notice;
use duet_media::stretch::ClockStretch;
use duet_media::wav_file::WavRecorder;
use duet_media::{MediaError, OpusPlayback, opus_packet_samples};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::MediaNotice;
use super::counters::{MediaCounters, bump};
use super::echo_reference::PlayedTap;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn_with_device};
use crate::CallError;
use crate::playout::{AudioPlayoutBuffer, Playout, TICKS_PER_PACKET};

/// How often the playout thread looks at the device.
const POLL: Duration = Duration::from_millis(4);
/// The least audio kept queued ahead of the device; more when its callbacks
/// ask for more at once (twice the largest request).
const MIN_LEAD_MS: f64 = 20.0;

/// Where received audio is played (`--record-audio` records it as well,
/// whichever this is: see `CallConfig::record_audio`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOutput {
    /// A virtual speaker (headless): nothing is heard, but audio is played at
    /// a device's pace, its clock `skew_ppm` parts per million fast or slow.
    Virtual {
        /// How far the virtual device's clock is off (0 for none).
        skew_ppm: i32,
    },
    /// A speaker: the default one, or one by name. Falls back to a virtual
    /// speaker, with a notice.
    Speaker(Option<String>),
}

impl AudioOutput {
    /// A virtual speaker whose clock is right: headless runs.
    pub const HEADLESS: AudioOutput = AudioOutput::Virtual { skew_ppm: 0 };
}

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

/// Starts the playout thread. Resolves once the sink is open, with a notice
/// if it was replaced.
pub(crate) async fn start_audio_playout(
    output: AudioOutput,
    record: Option<PathBuf>,
    played: PlayedTap,
    buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<Option<Notice>, CallError> {
    spawn_with_device(
        "duet-audio-playout",
        threads,
        move || {
            let (mut sink, notice) = open_sink(&output)?;
            if let Some(path) = record {
                sink.record_to(WavRecorder::create(&path)?);
            }
            Ok((Some(sink), notice))
        },
        move |sink: AudioSink| {
            let playout = match PlayoutLoop::new(sink, played, buffer, shared, notices) {
                Ok(playout) => playout,
                Err((err, notices)) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            playout.run();
        },
    )
    .await?
    .ok_or_else(|| CallError::Media("the audio playout thread failed to start".into()))
}

/// The playout thread's state: the sink, the decoders and the stretch.
struct PlayoutLoop {
    sink: AudioSink,
    /// What the device played, for the echo canceller.
    played: PlayedTap,
    buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    playback: OpusPlayback,
    stretch: ClockStretch,
    /// Underruns of sinks already closed (a speaker switch starts a new count).
    earlier_underruns: u64,
    packets: u64,
}

type StartError = (MediaError, mpsc::UnboundedSender<MediaNotice>);

impl PlayoutLoop {
    fn new(
        sink: AudioSink,
        played: PlayedTap,
        buffer: Arc<Mutex<AudioPlayoutBuffer>>,
        shared: Arc<MediaShared>,
        notices: mpsc::UnboundedSender<MediaNotice>,
    ) -> Result<PlayoutLoop, StartError> {
        let playback = OpusPlayback::new();
        let stretch = ClockStretch::new();
        let (playback, stretch) = match (playback, stretch) {
            (Ok(playback), Ok(stretch)) => (playback, stretch),
            (Err(err), _) | (_, Err(err)) => return Err((err, notices)),
        };
        Ok(PlayoutLoop {
            sink,
            played,
            buffer,
            shared,
            notices,
            playback,
            stretch,
            earlier_underruns: 0,
            packets: 0,
        })
    }

    fn run(mut self) {
        while !self.shared.stopped.load(Ordering::Relaxed) {
            if let Some(name) = self.shared.speaker_switch.take() {
                self.switch_speaker(name);
            }
            self.listen();
            let lead = MIN_LEAD_MS.max(2.0 * self.sink.largest_request_ms());
            while self.sink.queued_ms() < lead {
                if !self.play_next() {
                    break;
                }
            }
            std::thread::sleep(POLL);
        }
        self.listen();
        if let Err(err) = self.sink.finish() {
            let _ = self.notices.send(MediaNotice::Failed(format!(
                "cannot finish the audio recording: {err}"
            )));
        }
    }

    /// Decodes (or conceals) what the buffer says comes next, stretched, into
    /// the sink. False when the thread must end.
    fn play_next(&mut self) -> bool {
        let (next, ratio) = match self.buffer.lock() {
            Ok(mut buffer) => {
                self.packets += 1;
                if self.packets.is_multiple_of(250) {
                    tracing::debug!(
                        depth = buffer.depth(),
                        target = buffer.target(),
                        ratio = buffer.playout_ratio(),
                        concealed = buffer.concealed(),
                        skipped_quiet = buffer.skipped_quiet(),
                        "audio playout"
                    );
                }
                (buffer.pop(), buffer.playout_ratio())
            }
            Err(_) => return false,
        };
        if matches!(next, Playout::Late | Playout::Missing { .. }) {
            tracing::debug!(
                tick = self.packets,
                late = matches!(next, Playout::Late),
                from_fec = matches!(next, Playout::Missing { next: Some(_) }),
                "the packet due was missing (late or lost): concealed"
            );
            bump(&self.shared.counters.audio_packets_concealed, 1);
        }
        let decoded = matches!(next, Playout::Packet(_));
        let samples = decode_tick(&mut self.playback, next);
        if decoded && self.skips_quiet(&samples) {
            return true;
        }
        self.stretch.set_ratio(ratio);
        let played = self
            .stretch
            .process(&samples)
            .and_then(|stretched| self.sink.play(stretched));
        if let Err(err) = played {
            self.sink_failed(&err);
        }
        true
    }

    /// Whether the buffer leaves `samples`, a quiet packet, unplayed to
    /// bring its delay down (see [`AudioPlayoutBuffer::skips_quiet`]).
    fn skips_quiet(&self, samples: &[f32]) -> bool {
        let Ok(mut buffer) = self.buffer.lock() else {
            return false;
        };
        let skipped = buffer.skips_quiet(samples);
        if skipped {
            tracing::debug!(
                ms = samples.len() * 20 / TICKS_PER_PACKET as usize,
                depth = buffer.depth(),
                target = buffer.target(),
                "a pause played shorter: the delay comes down"
            );
        }
        skipped
    }

    /// Reads back what the device played: beeps, the recording, underruns.
    fn listen(&mut self) {
        let tap = &mut self.played;
        if let Err(err) = self
            .sink
            .collect_played(|samples, heard_ms| tap.push(samples, heard_ms))
        {
            let _ = self.notices.send(MediaNotice::Device(format!(
                "{err}; received audio is no longer recorded"
            )));
            if let Some(recording) = self.sink.take_recording() {
                let _ = recording.finish();
            }
        }
        count_beeps(&self.shared.counters, &mut self.sink);
        self.shared
            .counters
            .set_device_rate(self.sink.device_rate_hz());
        let underruns = self.earlier_underruns + self.sink.underruns();
        self.shared
            .counters
            .audio_device_underruns
            .store(underruns, Ordering::Relaxed);
    }

    /// The speaker failed: what was recorded is kept, and playing goes on,
    /// unheard, on a virtual speaker.
    fn sink_failed(&mut self, err: &MediaError) {
        let _ = self.notices.send(MediaNotice::Device(format!(
            "{err}; received audio is no longer played"
        )));
        match AudioSink::virtual_speaker(0) {
            Ok(sink) => self.replace_sink(sink),
            Err(err) => tracing::warn!(%err, "no virtual speaker to fall back on"),
        }
    }

    fn switch_speaker(&mut self, name: Option<String>) {
        match open_sink(&AudioOutput::Speaker(name)) {
            Ok((new, notice)) => {
                if let Some(notice) = notice {
                    let _ = self.notices.send(MediaNotice::Device(notice));
                }
                self.replace_sink(new);
            }
            Err(err) => {
                let _ = self.notices.send(MediaNotice::Device(err.to_string()));
            }
        }
    }

    /// Puts `new` in place of the sink; the recording goes on in the new one.
    fn replace_sink(&mut self, mut new: AudioSink) {
        self.listen();
        if let Some(recording) = self.sink.take_recording() {
            new.record_to(recording);
        }
        self.earlier_underruns += self.sink.underruns();
        self.sink = new;
    }
}

/// The audio for one tick of playout: the packet decoded, the tick made up
/// while a late packet is waited for, the lost one rebuilt from the next
/// one's FEC or concealed, or silence. As long as the buffer counted it
/// (`run_audio_receiver`): a packet's own length, 20 ms for the rest.
fn decode_tick(playback: &mut OpusPlayback, next: Playout) -> Vec<f32> {
    match next {
        // Nothing to play: the device still wants 20 ms of something.
        Playout::Idle => playback.silence(),
        Playout::Packet(packet) => playback.packet(&packet),
        Playout::Late => playback.wait(),
        Playout::Missing { next } => playback.lost(next.as_deref()),
    }
}

/// Counts the beeps `sink` heard since the last call.
fn count_beeps(counters: &MediaCounters, sink: &mut AudioSink) {
    let beeps = sink.take_beeps();
    if beeps.is_empty() {
        return;
    }
    for beep in &beeps {
        tracing::debug!(
            latency_ms = beep.latency_ms as u64,
            hz = beep.frequency_hz as u64,
            "beep heard"
        );
        counters.beep_heard(beep.frequency_hz as f32);
    }
    counters.latencies(|l| {
        for beep in &beeps {
            l.audio.push(beep.latency_ms);
        }
    });
}

fn open_sink(output: &AudioOutput) -> Result<(AudioSink, Option<Notice>), MediaError> {
    match output {
        AudioOutput::Virtual { skew_ppm } => Ok((AudioSink::virtual_speaker(*skew_ppm)?, None)),
        AudioOutput::Speaker(name) => match Speaker::open(name.as_deref()) {
            Ok(speaker) => Ok((AudioSink::speaker(speaker), None)),
            Err(err) => Ok((
                AudioSink::virtual_speaker(0)?,
                Some(format!("{err}; received audio is not played")),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use bytes::Bytes;
    use duet_media::OpusEncoder;
    use duet_media::opus_playback::MAX_ALIGN;
    use duet_media::stretch::MAX_STRETCH;
    use proptest::prelude::*;

    use super::*;

    /// The most packets the buffer holds (`playout::MAX_TARGET` times four).
    const DEPTH_CAP: usize = 40;
    /// The longest audio one Opus packet carries (120 ms).
    const MAX_PACKET_SAMPLES: usize = 5760;

    /// Real 20 ms Opus packets of a tone, encoded once.
    fn opus_packets() -> &'static [Bytes] {
        static PACKETS: OnceLock<Vec<Bytes>> = OnceLock::new();
        PACKETS.get_or_init(|| {
            let mut encoder = OpusEncoder::new(32_000).expect("encoder");
            (0..8)
                .map(|n| {
                    let tone: Vec<f32> = (0..TICKS_PER_PACKET as usize)
                        .map(|i| ((n * 960 + i) as f32 * 0.05).sin() * 0.3)
                        .collect();
                    Bytes::from(encoder.encode(&tone).expect("encodes"))
                })
                .collect()
        })
    }

    /// A packet's payload: real Opus, or bytes that may not be Opus at all.
    fn payload() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            4 => (0usize..8).prop_map(|i| opus_packets()[i].clone()),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        ]
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// A packet a step after the previous one (a packet on, a repeat, a
        /// little back or ahead), or at any timestamp at all.
        Packet {
            step: i64,
            anywhere: Option<u32>,
            payload: Bytes,
            later_ms: u16,
        },
        /// Several packets in a row arriving at once.
        Burst { packets: u8 },
        /// The device plays this many ticks with nothing arriving.
        Ticks { ticks: u8 },
    }

    fn event() -> impl Strategy<Value = Event> {
        let step = prop_oneof![
            6 => Just(i64::from(TICKS_PER_PACKET)),
            1 => Just(0i64),
            1 => -20_000i64..20_000,
            1 => (1i64..60).prop_map(|n| n * i64::from(TICKS_PER_PACKET)),
        ];
        prop_oneof![
            8 => (step, prop::option::weighted(0.05, any::<u32>()), payload(), 0u16..120)
                .prop_map(|(step, anywhere, payload, later_ms)| Event::Packet {
                    step,
                    anywhere,
                    payload,
                    later_ms,
                }),
            1 => (1u8..60).prop_map(|packets| Event::Burst { packets }),
            3 => (1u8..30).prop_map(|ticks| Event::Ticks { ticks }),
        ]
    }

    /// Feeds the receiver's side of a call: packets as the network hands
    /// them over, ticks as the device asks, each tick decoded as the
    /// playout thread does. Checks after every step what must always hold.
    struct Call {
        buffer: AudioPlayoutBuffer,
        playback: OpusPlayback,
        /// The last tick may have been made up (a wait, or a loss).
        waited: bool,
        ts: u32,
        now: Instant,
    }

    impl Call {
        fn new(first_ts: u32) -> Call {
            Call {
                buffer: AudioPlayoutBuffer::new(),
                playback: OpusPlayback::new().expect("decoders"),
                waited: false,
                ts: first_ts,
                now: Instant::now(),
            }
        }

        fn push(&mut self, payload: Bytes) -> Result<(), TestCaseError> {
            // As `run_audio_receiver` does.
            let samples = opus_packet_samples(&payload).unwrap_or(TICKS_PER_PACKET);
            self.buffer.push(self.ts, payload, samples, self.now);
            self.check()
        }

        /// One tick; what it played.
        fn tick(&mut self) -> Result<Playout, TestCaseError> {
            let next = self.buffer.pop();
            let samples = decode_tick(&mut self.playback, next.clone());
            let made = match &next {
                Playout::Packet(p) => opus_packet_samples(p).unwrap_or(TICKS_PER_PACKET),
                _ => TICKS_PER_PACKET,
            } as usize;
            // What ends a wait (or a made-up loss) is led in by up to
            // `MAX_ALIGN` more of it.
            let ends_a_wait =
                self.waited && matches!(next, Playout::Packet(_) | Playout::Missing { .. });
            let most = if ends_a_wait { MAX_ALIGN } else { 0 };
            let lead_in = samples.len().checked_sub(made);
            prop_assert!(
                lead_in.is_some_and(|extra| extra <= most),
                "{} samples for {made}",
                samples.len()
            );
            // A wait, or a loss (or what is no Opus) made up from the cycles
            // before it.
            self.waited = match &next {
                Playout::Late | Playout::Missing { next: None } => true,
                Playout::Packet(p) => opus_packet_samples(p).is_none(),
                _ => false,
            };
            prop_assert!(samples.len() <= MAX_PACKET_SAMPLES + MAX_ALIGN);
            prop_assert!(samples.iter().all(|s| s.is_finite()));
            self.now += Duration::from_millis(20);
            self.check()?;
            Ok(next)
        }

        fn check(&self) -> Result<(), TestCaseError> {
            prop_assert!(
                self.buffer.depth() <= DEPTH_CAP,
                "depth {}",
                self.buffer.depth()
            );
            prop_assert!((1..=10).contains(&self.buffer.target()));
            let ratio = self.buffer.playout_ratio();
            prop_assert!(ratio.is_finite() && (ratio - 1.0).abs() <= MAX_STRETCH + 1e-9);
            Ok(())
        }

        fn event(&mut self, event: Event) -> Result<(), TestCaseError> {
            match event {
                Event::Packet {
                    step,
                    anywhere,
                    payload,
                    later_ms,
                } => {
                    self.ts = anywhere.unwrap_or(self.ts.wrapping_add_signed(step as i32));
                    self.now += Duration::from_millis(u64::from(later_ms));
                    self.push(payload)?;
                }
                Event::Burst { packets } => {
                    for _ in 0..packets {
                        self.ts = self.ts.wrapping_add(TICKS_PER_PACKET);
                        self.push(opus_packets()[0].clone())?;
                    }
                }
                Event::Ticks { ticks } => {
                    for _ in 0..ticks {
                        self.tick()?;
                    }
                }
            }
            Ok(())
        }
    }

    proptest! {
        // 256 cases, or `PROPTEST_CASES` (docs/fuzzing.md).

        /// Packets in any order, with gaps, duplicates, bursts, starvation and
        /// timestamps that wrap or jump anywhere: no panic, the queue within
        /// its cap, the playout ratio within the stretch's bounds, and every
        /// tick's audio as long as what it stands for (20 ms, or the
        /// packet's own length).
        #[test]
        fn any_arrival_order_keeps_the_buffer_bounded_and_every_tick_whole(
            first_ts in prop_oneof![any::<u32>(), (0u32..20_000).prop_map(|d| u32::MAX - d)],
            events in proptest::collection::vec(event(), 1..200),
        ) {
            let mut call = Call::new(first_ts);
            for event in events {
                call.event(event)?;
            }
        }

        /// Whatever came before, a steady stream that then starts anywhere
        /// is soon played packet after packet: no earlier packet, however
        /// wild its timestamp, keeps playout stuck.
        #[test]
        fn a_steady_stream_after_any_history_is_played(
            first_ts in any::<u32>(),
            events in proptest::collection::vec(event(), 0..100),
            restart_ts in any::<u32>(),
        ) {
            let mut call = Call::new(first_ts);
            for event in events {
                call.event(event)?;
            }
            call.ts = restart_ts;
            let mut played = Vec::new();
            for _ in 0..150 {
                call.ts = call.ts.wrapping_add(TICKS_PER_PACKET);
                call.push(opus_packets()[1].clone())?;
                played.push(call.tick()?);
            }
            let stuck = played[100..].iter().filter(|p| !matches!(p, Playout::Packet(_))).count();
            let kinds: Vec<&str> = played
                .iter()
                .map(|p| match p {
                    Playout::Packet(p) if *p == opus_packets()[1] => "new",
                    Playout::Packet(_) => "old",
                    Playout::Late | Playout::Missing { .. } => "missing",
                    Playout::Idle => "idle",
                })
                .collect();
            prop_assert_eq!(stuck, 0, "{:?}", kinds);
        }
    }
}
