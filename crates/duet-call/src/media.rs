//! The media paths of a call: capture and encode on threads of their own,
//! packetize onto whichever peer connection is current, and on the way back
//! reassemble, decode, measure and hand pictures and sound out.
//!
//! Threads do the blocking work (paced sources, codecs, playout); async tasks
//! only move packets. Every stage counts what passes through it into
//! [`MediaCounters`], from which the report is built.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use duet_media::devices::Speaker;
use duet_media::frame::{FRAME_SAMPLES, unix_ms};
use duet_media::source::{AudioSink, AudioSource, AudioSpec, Notice, VideoSource, VideoSpec};
use duet_media::stamp::live_latency_ms;
use duet_media::wav_file::WavRecorder;
use duet_media::{
    BeepDetector, Decoded, H264Decoder, H264Encoder, MediaError, OpusDecoder, OpusEncoder,
    StampReader, VideoFrame,
};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::CallError;
use crate::peer::{MIN_VIDEO_BPS, count_feedback, picture_loss_indication};
use crate::playout::{AudioPlayoutBuffer, Playout};
use crate::reassembly::{Reassembled, VideoReassembler};
use crate::report::{MediaCounters, NetworkSummary};

/// Payload size limit for RTP packets (leaves room for SRTP and extensions under a 1280 MTU).
const RTP_MTU: usize = 1150;
/// Keyframe requests are sent at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// The newest picture, for whoever draws it: a slot, not a queue, so a slow
/// reader never delays the call and never sees stale frames pile up. A reader
/// on its own thread can sleep until a newer picture comes ([`FrameSlot::wait_newer`]).
#[derive(Debug, Clone, Default)]
pub struct FrameSlot {
    inner: Arc<(Mutex<SlotState>, Condvar)>,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Arc<VideoFrame>>,
    version: u64,
}

impl FrameSlot {
    /// Replaces the picture and wakes the readers. The picture is shared, not
    /// copied: readers get a reference to the same planes.
    pub fn put(&self, frame: impl Into<Arc<VideoFrame>>) {
        let frame = frame.into();
        let (state, wake) = &*self.inner;
        if let Ok(mut state) = state.lock() {
            state.frame = Some(frame);
            state.version += 1;
        }
        wake.notify_all();
    }

    /// The newest picture, if any (shared, not copied).
    pub fn latest(&self) -> Option<Arc<VideoFrame>> {
        let (state, _) = &*self.inner;
        state.lock().ok().and_then(|state| state.frame.clone())
    }

    /// Increases with every new picture: cheap change detection for a UI.
    pub fn version(&self) -> u64 {
        let (state, _) = &*self.inner;
        state.lock().map(|state| state.version).unwrap_or(0)
    }

    /// Waits up to `timeout` for a picture newer than version `seen`; returns
    /// it with its version, or `None` when none came.
    pub fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<(Arc<VideoFrame>, u64)> {
        let (state, wake) = &*self.inner;
        let state = state.lock().ok()?;
        let (state, _) = wake
            .wait_timeout_while(state, timeout, |state| state.version <= seen)
            .ok()?;
        if state.version <= seen {
            return None;
        }
        state.frame.clone().map(|frame| (frame, state.version))
    }
}

/// A device change asked for while the call runs; the media thread that owns
/// the device carries it out between two frames, so the call never drops.
#[derive(Debug)]
pub struct DeviceSwitch<T> {
    wanted: Mutex<Option<T>>,
}

impl<T> Default for DeviceSwitch<T> {
    fn default() -> Self {
        DeviceSwitch {
            wanted: Mutex::new(None),
        }
    }
}

impl<T> DeviceSwitch<T> {
    /// Asks for `value`; a newer request replaces one not yet carried out.
    pub fn request(&self, value: T) {
        if let Ok(mut wanted) = self.wanted.lock() {
            *wanted = Some(value);
        }
    }

    /// The pending request, if any.
    pub fn take(&self) -> Option<T> {
        self.wanted.lock().ok().and_then(|mut wanted| wanted.take())
    }
}

/// State the media threads, the tasks and the session share.
#[derive(Debug)]
pub struct MediaShared {
    /// Counters for the report.
    pub counters: Mutex<MediaCounters>,
    /// Network figures, refreshed every second.
    pub network: Mutex<NetworkSummary>,
    /// Media flows only while a connection is up.
    pub sending: AtomicBool,
    /// The encoder must send a keyframe next.
    pub keyframe_wanted: AtomicBool,
    /// Congestion control's target for the current connection (bits per second).
    pub target_bps: Arc<AtomicU64>,
    /// The decoder cannot go on without a keyframe.
    pub pli_wanted: AtomicBool,
    /// Round-trip time in microseconds.
    pub rtt_us: AtomicU64,
    /// The microphone is muted: silence is sent.
    pub mic_muted: AtomicBool,
    /// The camera is off: a dark paused picture is sent.
    pub camera_off: AtomicBool,
    /// Everything stops.
    pub stopped: AtomicBool,
    /// The newest remote picture.
    pub remote_video: FrameSlot,
    /// The newest local picture (self-view), when asked for.
    pub local_video: Option<FrameSlot>,
    /// A new video source for the running call.
    pub video_switch: DeviceSwitch<VideoSpec>,
    /// A new audio source for the running call.
    pub audio_switch: DeviceSwitch<AudioSpec>,
    /// A new speaker (by name; `None` for the default one) for the running call.
    pub speaker_switch: DeviceSwitch<Option<String>>,
}

impl MediaShared {
    /// Shared state; `preview` keeps local pictures for a self-view.
    pub fn new(preview: bool) -> Arc<MediaShared> {
        Arc::new(MediaShared {
            counters: Mutex::new(MediaCounters::default()),
            network: Mutex::new(NetworkSummary::default()),
            sending: AtomicBool::new(false),
            keyframe_wanted: AtomicBool::new(true),
            target_bps: Arc::new(AtomicU64::new(0)),
            pli_wanted: AtomicBool::new(false),
            rtt_us: AtomicU64::new(0),
            mic_muted: AtomicBool::new(false),
            camera_off: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            remote_video: FrameSlot::default(),
            local_video: preview.then(FrameSlot::default),
            video_switch: DeviceSwitch::default(),
            audio_switch: DeviceSwitch::default(),
            speaker_switch: DeviceSwitch::default(),
        })
    }

    /// Runs `f` on the counters.
    pub fn count(&self, f: impl FnOnce(&mut MediaCounters)) {
        if let Ok(mut counters) = self.counters.lock() {
            f(&mut counters);
        }
    }
}

/// Something the media paths tell the session.
#[derive(Debug)]
pub enum MediaNotice {
    /// A device failed and something else is used instead; for the person.
    Device(String),
    /// The first remote picture of the current call was decoded.
    FirstRemoteFrame,
    /// A media thread failed for good.
    Failed(String),
}

/// One encoded unit on its way to the network.
#[derive(Debug)]
pub struct EncodedUnit {
    data: Bytes,
    capture_time: SystemTime,
}

/// Where encoded media goes now: the current connection's tracks.
#[derive(Clone)]
pub struct Outbound {
    /// Track.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Its SSRC.
    pub ssrc: u32,
    /// Negotiated payload type.
    pub payload_type: u8,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

/// What `--video` asks for: opened on the capture thread (a camera handle cannot move between threads).
#[derive(Debug, Clone)]
pub struct VideoRequest {
    /// Source.
    pub spec: VideoSpec,
    /// Size asked for.
    pub width: u32,
    /// Size asked for.
    pub height: u32,
    /// Frame rate.
    pub fps: u32,
    /// Starting and maximum bitrate.
    pub max_bps: u32,
}

/// A started sender: its encoded units, and a notice when a device was replaced.
pub type Started = (Option<mpsc::Receiver<EncodedUnit>>, Option<Notice>);

/// Starts the video capture-and-encode thread, which opens the source; resolves once
/// it is open. `None` units for `--video none`.
pub async fn start_video_sender(
    request: VideoRequest,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
) -> Result<Started, CallError> {
    let (units, rx) = mpsc::channel(8);
    let VideoRequest {
        spec,
        width,
        height,
        fps,
        max_bps,
    } = request;
    let started = spawn_with_device(
        "duet-video-send",
        move || VideoSource::open(&spec, width, height, fps),
        move |mut source: VideoSource| {
            let mut encoder: Option<H264Encoder> = None;
            let mut encoded_size = (0, 0);
            while !shared.stopped.load(Ordering::Relaxed) {
                if let Some(new) =
                    switched_source(&shared.video_switch, "video", &notices, |spec| {
                        VideoSource::open(spec, width, height, fps)
                    })
                {
                    source = new;
                    // The new picture starts a new chain of references.
                    shared.keyframe_wanted.store(true, Ordering::Relaxed);
                }
                let (mut frame, notice) = match source.next_frame() {
                    Ok(next) => next,
                    Err(err) => {
                        let _ = notices.send(MediaNotice::Failed(format!("video source: {err}")));
                        return;
                    }
                };
                if let Some(notice) = notice {
                    let _ = notices.send(MediaNotice::Device(notice));
                }
                if shared.camera_off.load(Ordering::Relaxed) {
                    frame = paused_picture(&frame);
                }
                if let Some(preview) = &shared.local_video {
                    preview.put(frame.clone());
                }
                if !shared.sending.load(Ordering::Relaxed) {
                    continue;
                }
                // A source whose size changes (a camera fallback) needs a new encoder.
                let size = (frame.width() & !1, frame.height() & !1);
                if encoder.is_none() || size != encoded_size {
                    match H264Encoder::new(max_bps, fps) {
                        Ok(new) => encoder = Some(new),
                        Err(err) => {
                            let _ = notices.send(MediaNotice::Failed(err.to_string()));
                            return;
                        }
                    }
                    encoded_size = size;
                }
                let Some(encoder) = encoder.as_mut() else {
                    continue;
                };
                let target = shared.target_bps.load(Ordering::Relaxed) as u32;
                if target > 0 {
                    let target = target.clamp(MIN_VIDEO_BPS, max_bps);
                    let current = encoder.bitrate_bps();
                    if current.abs_diff(target) > current / 20
                        && let Err(err) = encoder.set_bitrate(target)
                    {
                        tracing::debug!(%err, "bitrate not changed yet");
                    }
                }
                if shared.keyframe_wanted.swap(false, Ordering::Relaxed) {
                    encoder.request_keyframe();
                }
                let frame = if (frame.width(), frame.height()) == size {
                    frame
                } else {
                    match crop_to_even(&frame) {
                        Some(frame) => frame,
                        None => continue,
                    }
                };
                let encoded = match encoder.encode(&frame) {
                    Ok(Some(encoded)) => encoded,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(%err, "dropping a frame the encoder refused");
                        continue;
                    }
                };
                shared.count(|c| {
                    c.frames_sent += 1;
                    c.video_bytes_sent += encoded.data.len() as u64;
                    c.keyframes_sent += u64::from(encoded.keyframe);
                });
                let unit = EncodedUnit {
                    data: Bytes::from(encoded.data),
                    capture_time: frame.capture_time,
                };
                if units.try_send(unit).is_err() {
                    // The network side is behind; a dropped frame breaks the chain of references.
                    shared.keyframe_wanted.store(true, Ordering::Relaxed);
                }
            }
        },
    )
    .await?;
    Ok(started.map_or((None, None), |(_, notice)| (Some(rx), notice)))
}

/// A media thread that opened its device, and what opening it said.
type Opened = (std::thread::JoinHandle<()>, Option<Notice>);

/// Starts a media thread that first opens its device (camera, microphone and
/// speaker handles cannot move between threads) and then runs with it. Resolves
/// once opening is done: `None` when there is nothing to open (`none`), an error
/// when opening failed (a bad file is the user's to fix before anyone is called).
async fn spawn_with_device<D>(
    name: &str,
    open: impl FnOnce() -> Result<(Option<D>, Option<Notice>), MediaError> + Send + 'static,
    run: impl FnOnce(D) + Send + 'static,
) -> Result<Option<Opened>, CallError> {
    let (opened_tx, opened) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match open() {
            Ok((Some(device), notice)) => {
                let _ = opened_tx.send(Ok(notice));
                run(device);
            }
            // Dropping the sender tells the caller there is nothing to run.
            Ok((None, _)) => {}
            Err(err) => {
                let _ = opened_tx.send(Err(err));
            }
        })
        .map_err(|err| CallError::Media(format!("cannot start a media thread: {err}")))?;
    match opened.await {
        Ok(Ok(notice)) => Ok(Some((thread, notice))),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Ok(None),
    }
}

/// Carries out a pending switch of a media source: the newly opened source,
/// or `None` (the current one stays) when none was asked for, the spec was
/// `none`, or it cannot be opened — the last said in a notice.
fn switched_source<Spec: std::fmt::Debug, Source>(
    switch: &DeviceSwitch<Spec>,
    what: &str,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    open: impl FnOnce(&Spec) -> Result<(Option<Source>, Option<Notice>), MediaError>,
) -> Option<Source> {
    let spec = switch.take()?;
    match open(&spec) {
        Ok((new, notice)) => {
            if let Some(notice) = notice {
                let _ = notices.send(MediaNotice::Device(notice));
            }
            if new.is_some() {
                tracing::info!(?spec, "{what} source switched");
            }
            new
        }
        Err(err) => {
            let _ = notices.send(MediaNotice::Device(format!(
                "{err}; the {what} source is unchanged"
            )));
            None
        }
    }
}

/// What the remote sees with the camera off: a dark picture with a pause sign,
/// still sent at the frame rate, so nobody mistakes it for a frozen call.
fn paused_picture(frame: &VideoFrame) -> VideoFrame {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let Ok(mut paused) = VideoFrame::black(frame.width(), frame.height(), frame.capture_time)
    else {
        return frame.clone();
    };
    let (luma, _, _) = paused.planes_mut();
    luma.fill(40);
    // Two light bars in the middle, each a tenth of the height wide and a third tall.
    let bar_w = (h / 10).max(2);
    let bar_h = (h / 3).max(4);
    let top = (h - bar_h) / 2;
    for left in [w / 2 - bar_w * 3 / 2, w / 2 + bar_w / 2] {
        for row in top..top + bar_h {
            let start = row * w + left.min(w);
            let end = (start + bar_w).min((row + 1) * w);
            luma[start..end].fill(170);
        }
    }
    paused
}

fn crop_to_even(frame: &VideoFrame) -> Option<VideoFrame> {
    let (w, h) = (frame.width() & !1, frame.height() & !1);
    let mut out = VideoFrame::black(w, h, frame.capture_time).ok()?;
    let (sy, su, sv) = frame.planes();
    let src_cw = frame.chroma_width();
    let dst_cw = out.chroma_width();
    let (dy, du, dv) = out.planes_mut();
    for row in 0..h as usize {
        let s = row * frame.width() as usize;
        dy[row * w as usize..(row + 1) * w as usize].copy_from_slice(&sy[s..s + w as usize]);
    }
    for row in 0..(h as usize / 2) {
        let s = row * src_cw;
        du[row * dst_cw..(row + 1) * dst_cw].copy_from_slice(&su[s..s + dst_cw]);
        dv[row * dst_cw..(row + 1) * dst_cw].copy_from_slice(&sv[s..s + dst_cw]);
    }
    Some(out)
}

/// Starts the audio capture-and-encode thread, which opens the source; resolves once it is open.
pub async fn start_audio_sender(
    spec: AudioSpec,
    tone_hz: f32,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
) -> Result<Started, CallError> {
    let (units, rx) = mpsc::channel(16);
    let started = spawn_with_device(
        "duet-audio-send",
        move || AudioSource::open(&spec, tone_hz),
        move |mut source: AudioSource| {
            let mut encoder = match OpusEncoder::new(32_000) {
                Ok(encoder) => encoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let silence = vec![0.0f32; FRAME_SAMPLES];
            while !shared.stopped.load(Ordering::Relaxed) {
                if let Some(new) =
                    switched_source(&shared.audio_switch, "audio", &notices, |spec| {
                        AudioSource::open(spec, tone_hz)
                    })
                {
                    source = new;
                }
                let (frame, notice) = match source.next_frame() {
                    Ok(next) => next,
                    Err(err) => {
                        let _ = notices.send(MediaNotice::Failed(format!("audio source: {err}")));
                        return;
                    }
                };
                if let Some(notice) = notice {
                    let _ = notices.send(MediaNotice::Device(notice));
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
                        shared.count(|c| c.audio_packets_sent += 1);
                        let _ = units.try_send(EncodedUnit {
                            data: Bytes::from(packet),
                            capture_time: frame.capture_time,
                        });
                    }
                    Err(err) => tracing::warn!(%err, "dropping audio the encoder refused"),
                }
            }
        },
    )
    .await?;
    Ok(started.map_or((None, None), |(_, notice)| (Some(rx), notice)))
}

/// RTP state of one outgoing stream: sequence numbers and capture-time timestamps.
struct RtpStream {
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    first_capture: Option<SystemTime>,
    clock_rate: u32,
}

impl RtpStream {
    fn new(ssrc: u32, clock_rate: u32) -> RtpStream {
        RtpStream {
            ssrc,
            sequence: rand::random(),
            timestamp_base: rand::random(),
            first_capture: None,
            clock_rate,
        }
    }

    /// The RTP timestamp of a unit captured at `capture`: capture time in clock ticks.
    fn timestamp(&mut self, capture: SystemTime) -> u32 {
        let first = *self.first_capture.get_or_insert(capture);
        let elapsed = capture.duration_since(first).unwrap_or_default();
        let ticks = (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64;
        self.timestamp_base.wrapping_add(ticks as u32)
    }

    fn packet(&mut self, payload: Bytes, timestamp: u32, marker: bool, pt: u8) -> rtc::rtp::Packet {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: self.sequence,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.sequence = self.sequence.wrapping_add(1);
        packet
    }
}

/// Moves encoded units onto the current connection's track as RTP, timestamps from capture time.
pub async fn run_rtp_writer(
    mut units: mpsc::Receiver<EncodedUnit>,
    mut outbound: watch::Receiver<Option<Outbound>>,
    video: bool,
) {
    let clock_rate = if video { 90_000 } else { 48_000 };
    let mut stream: Option<RtpStream> = None;
    let mut payloader = H264Payloader::default();
    while let Some(unit) = units.recv().await {
        let Some(out) = outbound.borrow_and_update().clone() else {
            stream = None;
            continue;
        };
        let stream = match &mut stream {
            Some(stream) if stream.ssrc == out.ssrc => stream,
            _ => stream.insert(RtpStream::new(out.ssrc, clock_rate)),
        };
        let timestamp = stream.timestamp(unit.capture_time);
        let payloads = if video {
            match payloader.payload(RTP_MTU, &unit.data) {
                Ok(payloads) => payloads,
                Err(err) => {
                    tracing::warn!(%err, "cannot packetize an access unit");
                    continue;
                }
            }
        } else {
            vec![unit.data]
        };
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            // Video: the marker ends a frame. Audio: it is left clear (no talk-spurt signalling).
            let marker = video && i + 1 == count;
            let packet = stream.packet(payload, timestamp, marker, out.payload_type);
            if let Err(err) = out.track.write_rtp(packet).await {
                tracing::debug!(%err, "RTP write failed (connection closing?)");
                break;
            }
        }
    }
}

/// Reads what the remote says about our outgoing video: keyframe requests and NACKs.
pub async fn run_sender_feedback(track: Arc<TrackLocalStaticRTP>, shared: Arc<MediaShared>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        let (keyframe_requests, nacks) = count_feedback(&packets);
        if keyframe_requests > 0 {
            shared.keyframe_wanted.store(true, Ordering::Relaxed);
        }
        shared.count(|c| {
            c.pli_received += keyframe_requests;
            c.nack_received += nacks;
        });
    }
}

/// Input of the decode thread.
#[derive(Debug)]
pub enum DecodeInput {
    /// A whole access unit.
    Unit(Bytes),
    /// Packets were lost: wait for a keyframe.
    Loss,
    /// A new call starts: forget the old stream.
    Reset,
}

/// Starts the video decode thread: decodes, reads stamps, counts, publishes pictures.
pub fn start_video_decoder(
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
) -> std::io::Result<std_mpsc::Sender<DecodeInput>> {
    let (input, rx) = std_mpsc::channel::<DecodeInput>();
    std::thread::Builder::new()
        .name("duet-video-decode".into())
        .spawn(move || {
            let mut decoder = match H264Decoder::new() {
                Ok(decoder) => decoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let mut first_of_call = true;
            while let Ok(message) = rx.recv() {
                let unit = match message {
                    DecodeInput::Unit(unit) => unit,
                    DecodeInput::Loss => {
                        decoder.note_loss();
                        shared.pli_wanted.store(true, Ordering::Relaxed);
                        continue;
                    }
                    DecodeInput::Reset => {
                        match H264Decoder::new() {
                            Ok(fresh) => decoder = fresh,
                            Err(err) => tracing::warn!(%err, "keeping the old decoder"),
                        }
                        first_of_call = true;
                        continue;
                    }
                };
                match decoder.decode(&unit, SystemTime::now()) {
                    Decoded::Frame(frame) => {
                        let now = SystemTime::now();
                        // Only a live test stamp gives a latency (docs/test-signals.md).
                        let latency = StampReader::read(&frame)
                            .and_then(|stamp| live_latency_ms(stamp, unix_ms(now)));
                        let now_instant = Instant::now();
                        shared.count(|c| {
                            c.frames_decoded += 1;
                            c.last_size = Some((frame.width(), frame.height()));
                            c.first_decoded.get_or_insert(now_instant);
                            c.last_decoded = Some(now_instant);
                            if let Some(latency) = latency {
                                c.stamped_frames += 1;
                                c.video_latency.push(latency);
                            }
                        });
                        shared.remote_video.put(frame);
                        if first_of_call {
                            first_of_call = false;
                            let _ = notices.send(MediaNotice::FirstRemoteFrame);
                        }
                    }
                    Decoded::Nothing => {}
                    Decoded::NeedKeyframe => shared.pli_wanted.store(true, Ordering::Relaxed),
                }
            }
        })?;
    Ok(input)
}

/// Reads the remote video track: reorders, reassembles, feeds the decoder, sends PLIs.
pub async fn run_video_receiver(
    track: Arc<dyn TrackRemote>,
    shared: Arc<MediaShared>,
    decode: std_mpsc::Sender<DecodeInput>,
) {
    let _ = decode.send(DecodeInput::Reset);
    let mut reassembler = VideoReassembler::new();
    let mut last_pli: Option<Instant> = None;
    let mut media_ssrc: Option<u32> = None;
    // The first picture needs a keyframe; the sender sends one on connect, and a PLI
    // covers the case where that one was lost.
    shared.pli_wanted.store(false, Ordering::Relaxed);
    loop {
        // Wake for a gap that has waited long enough, or now and then for a PLI
        // the decoder asked for; otherwise only packets wake this task.
        let wake = reassembler
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + PLI_INTERVAL);
        let out = tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    media_ssrc = Some(packet.header.ssrc);
                    let size = packet.payload.len() as u64;
                    shared.count(|c| c.video_bytes_received += size);
                    reassembler.push(
                        packet.header.sequence_number,
                        packet.header.timestamp,
                        packet.header.marker,
                        packet.payload,
                        Instant::now(),
                    )
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                reassembler.set_rtt(Duration::from_micros(shared.rtt_us.load(Ordering::Relaxed)));
                reassembler.poll(Instant::now())
            }
        };
        if shared.pli_wanted.load(Ordering::Relaxed)
            && let Some(ssrc) = media_ssrc
            && last_pli.is_none_or(|at| at.elapsed() >= PLI_INTERVAL)
        {
            shared.pli_wanted.store(false, Ordering::Relaxed);
            last_pli = Some(Instant::now());
            if track
                .write_rtcp(picture_loss_indication(ssrc))
                .await
                .is_ok()
            {
                shared.count(|c| c.pli_sent += 1);
            }
        }
        for item in out {
            let input = match item {
                Reassembled::AccessUnit { data, .. } => {
                    shared.count(|c| c.frames_received += 1);
                    DecodeInput::Unit(data)
                }
                Reassembled::Lost { packets } => {
                    tracing::debug!(packets, "video packets lost for good");
                    DecodeInput::Loss
                }
            };
            if decode.send(input).is_err() {
                return;
            }
        }
    }
}

/// Reads the remote audio track into the playout buffer.
pub async fn run_audio_receiver(
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
pub async fn start_audio_playout(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_timestamps_follow_capture_time_not_frame_count() {
        let mut stream = RtpStream::new(1, 90_000);
        let start = SystemTime::now();
        let t0 = stream.timestamp(start);
        let t1 = stream.timestamp(start + Duration::from_millis(33));
        let t2 = stream.timestamp(start + Duration::from_millis(100));
        assert_eq!(t1.wrapping_sub(t0), 2970);
        assert_eq!(t2.wrapping_sub(t0), 9000);
    }

    #[test]
    fn sequence_numbers_run_on_across_the_wrap() {
        let mut stream = RtpStream::new(1, 48_000);
        stream.sequence = u16::MAX;
        let a = stream.packet(Bytes::from_static(b"a"), 0, false, 111);
        let b = stream.packet(Bytes::from_static(b"b"), 0, false, 111);
        assert_eq!(a.header.sequence_number, u16::MAX);
        assert_eq!(b.header.sequence_number, 0);
    }

    #[test]
    fn a_frame_slot_keeps_only_the_newest_picture() {
        let slot = FrameSlot::default();
        assert!(slot.latest().is_none());
        let now = SystemTime::now();
        slot.put(VideoFrame::black(4, 4, now).expect("valid"));
        slot.put(VideoFrame::black(8, 8, now).expect("valid"));
        assert_eq!(slot.latest().map(|f| f.width()), Some(8));
        assert_eq!(slot.version(), 2);
    }

    #[test]
    fn a_reader_waiting_on_a_frame_slot_wakes_for_a_newer_picture_only() {
        let slot = FrameSlot::default();
        assert!(slot.wait_newer(0, Duration::from_millis(5)).is_none());
        let writer = slot.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.put(VideoFrame::black(16, 16, SystemTime::now()).expect("valid"));
        });
        let (frame, version) = slot
            .wait_newer(0, Duration::from_secs(5))
            .expect("woken by the new picture");
        assert_eq!((frame.width(), version), (16, 1));
        assert!(slot.wait_newer(1, Duration::from_millis(5)).is_none());
        thread.join().expect("writer");
    }

    #[test]
    fn the_paused_picture_is_dark_with_a_light_pause_sign_and_no_stamp() {
        let mut frame = VideoFrame::black(640, 480, SystemTime::now()).expect("valid");
        duet_media::stamp::draw_stamp(&mut frame, 123_456);
        let paused = paused_picture(&frame);
        let (luma, _, _) = paused.planes();
        assert_eq!(luma[0], 40, "dark background");
        assert_eq!(luma[240 * 640 + 640 / 2 - 48 - 10], 170, "left bar");
        assert_eq!(luma[240 * 640 + 640 / 2 + 48], 170, "right bar");
        assert_eq!(luma[240 * 640 + 640 / 2], 40, "gap between the bars");
        assert!(StampReader::read(&paused).is_none());
    }

    #[test]
    fn a_device_switch_keeps_only_the_newest_request() {
        let switch = DeviceSwitch::default();
        assert_eq!(switch.take(), None::<u32>);
        switch.request(1);
        switch.request(2);
        assert_eq!(switch.take(), Some(2));
        assert_eq!(switch.take(), None);
    }

    #[test]
    fn odd_sized_pictures_are_cropped_to_even_for_the_encoder() {
        let frame = VideoFrame::black(321, 241, SystemTime::now()).expect("valid");
        let cropped = crop_to_even(&frame).expect("crops");
        assert_eq!((cropped.width(), cropped.height()), (320, 240));
    }
}
