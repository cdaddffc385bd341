//! The async shell around [`Negotiator`]: it carries out its actions on the
//! signaling client and the peer connection, feeds it their events, and owns
//! the media paths for the life of the session. A session outlives single
//! calls: when the peer leaves, it waits, and a new peer gets a fresh call.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::{
    ClientConfig, ClientError, Role, RoleRequest, SignalEvent, SignalEvents, SignalSender,
};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::peer_connection::{
    RTCPeerConnectionState, RTCSessionDescription, RTCStatsReportEntry, StatsSelector,
};

use crate::CallError;
use crate::media::AudioOutput;
use crate::media::{
    DecodeChannel, FrameSlot, MediaNotice, MediaShared, MediaThreads, Outbound, VideoRequest,
    run_audio_receiver, run_rtp_writer, run_sender_feedback, run_video_receiver,
    start_audio_playout, start_audio_sender, start_video_decoder, start_video_sender,
};
use crate::negotiation::{CallPhase, Generation, NegotiationAction, NegotiationEvent, Negotiator};
use crate::peer::{
    BuiltPeer, ConnectionState, H264_FMTP, H264_PAYLOAD_TYPE, MIME_TYPE_H264, MIME_TYPE_OPUS,
    OPUS_FMTP, OPUS_PAYLOAD_TYPE, PeerEvent, PeerSettings, build_peer, ice_server,
    negotiated_codec,
};
use crate::playout::AudioPlayoutBuffer;
use crate::report::{CallReport, LiveFigures, NetworkSummary, ReportContext};

/// Everything a call needs to know before it starts (`docs/cli.md`'s call options).
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Signaling server URL.
    pub server: String,
    /// Room to join.
    pub room: String,
    /// Seat to ask for.
    pub role: RoleRequest,
    /// Video to send.
    pub video: VideoSpec,
    /// Audio to send.
    pub audio: AudioSpec,
    /// Frequency of the test beeps.
    pub tone_hz: f32,
    /// Capture width asked for.
    pub width: u32,
    /// Capture height asked for.
    pub height: u32,
    /// Capture rate asked for.
    pub fps: u32,
    /// Starting and maximum video bitrate, bits per second.
    pub max_video_bps: u32,
    /// STUN/TURN servers (`--ice`).
    pub ice_servers: Vec<String>,
    /// Where received audio goes.
    pub audio_output: AudioOutput,
    /// Keep local pictures for a self-view.
    pub preview: bool,
    /// Local addresses to gather ICE candidates on.
    pub udp_addrs: Vec<String>,
}

impl CallConfig {
    /// The defaults of `docs/cli.md` for this server, room and role.
    pub fn new(server: impl Into<String>, room: impl Into<String>, role: RoleRequest) -> Self {
        CallConfig {
            server: server.into(),
            room: room.into(),
            role,
            video: VideoSpec::Camera(0),
            audio: AudioSpec::Mic(None),
            tone_hz: 880.0,
            width: 640,
            height: 480,
            fps: 30,
            max_video_bps: 1_500_000,
            ice_servers: Vec::new(),
            audio_output: AudioOutput::Speaker(None),
            preview: false,
            // Every interface (webrtc-rs expands the wildcard but skips loopback), and
            // loopback too: a call between two apps on one machine then works, and
            // takes the shortest path, even where no network interface is up.
            udp_addrs: vec!["0.0.0.0:0".to_owned(), "127.0.0.1:0".to_owned()],
        }
    }
}

/// What the session tells its front end, in order.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// We hold a seat in the room.
    Joined {
        /// Room.
        room: String,
        /// Effective role.
        role: Role,
        /// After a signaling reconnect.
        resumed: bool,
    },
    /// The signaling server is gone; retrying. Media of a connected call keeps flowing.
    Reconnecting {
        /// Attempt number.
        attempt: u32,
        /// Delay before it.
        retry_in: Duration,
        /// What failed.
        cause: String,
    },
    /// Where the call is.
    Phase(CallPhase),
    /// The peer connection's state changed.
    ConnectionState(ConnectionState),
    /// The first remote picture of this call is ready for display.
    FirstRemoteFrame,
    /// Something the person should know (a device fallback).
    Notice(String),
    /// The session is over; the last event.
    Ended(Result<(), CallError>),
}

enum Command {
    HangUp,
    Report(oneshot::Sender<CallReport>),
}

/// Controls a running session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallHandle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<MediaShared>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::HangUp => "HangUp",
            Command::Report(_) => "Report",
        })
    }
}

impl CallHandle {
    /// Hangs up (`bye`) and ends the session; [`CallEvent::Ended`] follows.
    pub fn hang_up(&self) {
        let _ = self.commands.send(Command::HangUp);
    }

    /// The report of everything measured so far.
    pub async fn report(&self) -> Option<CallReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Report(tx)).ok()?;
        rx.await.ok()
    }

    /// Mutes or unmutes the microphone (silence is sent while muted).
    pub fn set_mic_muted(&self, muted: bool) {
        self.shared.mic_muted.store(muted, Ordering::Relaxed);
    }

    /// Turns the camera off (the remote sees a dark paused picture) or on.
    pub fn set_camera_off(&self, off: bool) {
        self.shared.camera_off.store(off, Ordering::Relaxed);
    }

    /// Sends video from another source from the next frame on, without
    /// dropping the call; a source that cannot be opened leaves the current
    /// one in place and says so in a [`CallEvent::Notice`]. Ignored for
    /// a call started with `--video none`.
    pub fn switch_video(&self, spec: VideoSpec) {
        self.shared.video_switch.request(spec);
    }

    /// Sends audio from another source, like [`CallHandle::switch_video`].
    pub fn switch_audio(&self, spec: AudioSpec) {
        self.shared.audio_switch.request(spec);
    }

    /// Plays received audio on another speaker (`None`: the default one).
    pub fn switch_speaker(&self, name: Option<String>) {
        self.shared.speaker_switch.request(name);
    }

    /// Figures for a live display; cheap (atomic reads and two short locks),
    /// unlike [`CallHandle::report`]. Meant to be read about once a second.
    pub fn live(&self) -> LiveFigures {
        self.shared.live()
    }

    /// Records the latency of a stamped remote picture at the moment a front
    /// end showed it (the window, right after painting it): what a person sees,
    /// as opposed to [`CallReport`]'s decode-time `latency_ms`. Reported as
    /// `video.display_latency_ms`.
    pub fn record_display_latency(&self, ms: f64) {
        self.shared.counters.latencies(|l| l.display.push(ms));
    }

    /// The newest remote picture.
    pub fn remote_video(&self) -> FrameSlot {
        self.shared.remote_video.clone()
    }

    /// The newest local picture, when the session keeps a self-view.
    pub fn local_video(&self) -> Option<FrameSlot> {
        self.shared.local_video.clone()
    }
}

/// The events of a running session.
#[derive(Debug)]
pub struct CallEvents {
    events: mpsc::UnboundedReceiver<CallEvent>,
}

impl CallEvents {
    /// The next event; `None` after [`CallEvent::Ended`].
    pub async fn recv(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }
}

/// Opens the media, connects to the server and joins the room; then runs the
/// session in the background. Fails at once when the server cannot be reached,
/// the room is full or the role taken, or a source cannot be opened.
pub async fn start_call(config: CallConfig) -> Result<(CallHandle, CallEvents), CallError> {
    for url in &config.ice_servers {
        ice_server(url)?;
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    let (notices_tx, notices) = mpsc::unbounded_channel();
    let shared = MediaShared::new(config.preview);
    let mut threads = MediaThreads::new();

    let started = start_media(&config, &shared, &notices_tx, &mut threads).await;
    let (video_units, audio_units, decode, playout_buffer, notices_said) = match started {
        Ok(started) => started,
        Err(err) => {
            stop_media(&shared, threads).await;
            return Err(err);
        }
    };
    for notice in notices_said {
        let _ = events_tx.send(CallEvent::Notice(notice));
    }

    let client_config = ClientConfig::new(&config.server, &config.room, config.role);
    let (signal, mut signal_events) = match duet_signal::connect(client_config).await {
        Ok(connected) => connected,
        Err(err) => {
            stop_media(&shared, threads).await;
            return Err(err.into());
        }
    };
    let first = signal_events.recv().await;

    let (video_out, video_out_rx) = watch::channel(None);
    let (audio_out, audio_out_rx) = watch::channel(None);
    if let Some(units) = video_units {
        tokio::spawn(run_rtp_writer(units, video_out_rx, true));
    }
    if let Some(units) = audio_units {
        tokio::spawn(run_rtp_writer(units, audio_out_rx, false));
    }

    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (peer_events_tx, peer_events) = mpsc::unbounded_channel();
    let session = Session {
        settings: PeerSettings {
            ice_servers: config.ice_servers.clone(),
            max_video_bps: config.max_video_bps,
            udp_addrs: config.udp_addrs.clone(),
        },
        room: config.room.clone(),
        server: config.server.clone(),
        negotiator: Negotiator::new(),
        signal,
        events: events_tx,
        shared: Arc::clone(&shared),
        peer: None,
        peer_events_tx,
        video_out,
        audio_out,
        decode,
        playout_buffer,
        timing: Timing::default(),
        codecs: Codecs::default(),
        signaling_reconnects: 0,
    };
    tokio::spawn(session.run(
        first,
        signal_events,
        peer_events,
        notices,
        commands,
        threads,
    ));
    Ok((
        CallHandle {
            commands: commands_tx,
            shared,
        },
        CallEvents { events },
    ))
}

/// What [`start_media`] started: the encoded units of each sender (`None` for
/// `none`), the decoder's queue, the playout buffer, and notices for the person.
type StartedMedia = (
    Option<mpsc::Receiver<crate::media::EncodedUnit>>,
    Option<mpsc::Receiver<crate::media::EncodedUnit>>,
    DecodeChannel,
    Arc<Mutex<AudioPlayoutBuffer>>,
    Vec<String>,
);

/// Starts the media threads (senders, playout, decoder); each joins `threads`.
/// Sources first: a wrong file is the user's to fix before anyone is called.
async fn start_media(
    config: &CallConfig,
    shared: &Arc<MediaShared>,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<StartedMedia, CallError> {
    let video = VideoRequest {
        spec: config.video.clone(),
        width: config.width,
        height: config.height,
        fps: config.fps,
        max_bps: config.max_video_bps,
    };
    let (video_units, video_notice) =
        start_video_sender(video, Arc::clone(shared), notices.clone(), threads).await?;
    let (audio_units, audio_notice) = start_audio_sender(
        config.audio.clone(),
        config.tone_hz,
        Arc::clone(shared),
        notices.clone(),
        threads,
    )
    .await?;
    let playout_buffer = Arc::new(Mutex::new(AudioPlayoutBuffer::new()));
    let sink_notice = start_audio_playout(
        config.audio_output.clone(),
        Arc::clone(&playout_buffer),
        Arc::clone(shared),
        notices.clone(),
        threads,
    )
    .await?;
    if video_units.is_none() && audio_units.is_none() {
        return Err(CallError::NoMedia);
    }
    let decode = start_video_decoder(Arc::clone(shared), notices.clone(), threads)?;
    let said = [video_notice, audio_notice, sink_notice]
        .into_iter()
        .flatten()
        .collect();
    Ok((video_units, audio_units, decode, playout_buffer, said))
}

/// Stops the media threads and waits (boundedly) until they have returned,
/// so their devices are closed.
async fn stop_media(shared: &MediaShared, threads: MediaThreads) {
    shared.stopped.store(true, Ordering::Relaxed);
    threads.join_async().await;
}

/// The codecs the current call negotiated (MIME types), for the report.
#[derive(Debug, Default)]
struct Codecs {
    video: Option<String>,
    audio: Option<String>,
}

/// When things happened in the current and the first call, for the report.
#[derive(Debug, Default)]
struct Timing {
    peer_seen: Option<Instant>,
    connected_at: Option<Instant>,
    connected_total: Duration,
    calls_connected: u64,
    first_time_to_connected: Option<Duration>,
    first_time_to_frame: Option<Duration>,
    frame_seen_this_call: bool,
}

struct CurrentPeer {
    generation: Generation,
    built: BuiltPeer,
}

struct Session {
    settings: PeerSettings,
    room: String,
    server: String,
    negotiator: Negotiator,
    signal: SignalSender,
    events: mpsc::UnboundedSender<CallEvent>,
    shared: Arc<MediaShared>,
    peer: Option<CurrentPeer>,
    peer_events_tx: mpsc::UnboundedSender<PeerEvent>,
    video_out: watch::Sender<Option<Outbound>>,
    audio_out: watch::Sender<Option<Outbound>>,
    decode: DecodeChannel,
    playout_buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    timing: Timing,
    codecs: Codecs,
    /// Signaling reconnects that resumed our seat.
    signaling_reconnects: u64,
}

/// Why the loop stopped.
enum Stop {
    HungUp,
    Failed(CallError),
}

impl Session {
    async fn run(
        mut self,
        first: Option<SignalEvent>,
        mut signal_events: SignalEvents,
        mut peer_events: mpsc::UnboundedReceiver<PeerEvent>,
        mut notices: mpsc::UnboundedReceiver<MediaNotice>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        threads: MediaThreads,
    ) {
        let mut pending: VecDeque<NegotiationEvent> = VecDeque::new();
        if let Some(first) = first {
            self.on_signal(first, &mut pending);
        }
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            while let Some(event) = pending.pop_front() {
                let actions = self.negotiator.handle(event);
                self.apply(actions, &mut pending).await;
            }
            tokio::select! {
                event = signal_events.recv() => match event {
                    Some(SignalEvent::GaveUp { cause }) => {
                        break Stop::Failed(CallError::Signaling(ClientError::Unreachable {
                            url: self.server.clone(),
                            reason: cause,
                        }));
                    }
                    Some(SignalEvent::Error { code, message }) if code.close_code().is_some() => {
                        break Stop::Failed(CallError::Signaling(ClientError::Rejected { code, message }));
                    }
                    Some(event) => self.on_signal(event, &mut pending),
                    None => break Stop::Failed(CallError::Signaling(ClientError::Stopped)),
                },
                Some(event) = peer_events.recv() => self.on_peer_event(event, &mut pending).await,
                Some(notice) = notices.recv() => match notice {
                    MediaNotice::Device(text) => self.emit(CallEvent::Notice(text)),
                    MediaNotice::FirstRemoteFrame => self.on_first_frame(),
                    MediaNotice::Failed(text) => break Stop::Failed(CallError::Media(text)),
                },
                command = commands.recv() => match command {
                    Some(Command::HangUp) | None => break Stop::HungUp,
                    Some(Command::Report(reply)) => {
                        let _ = reply.send(self.report());
                    }
                },
                _ = stats_tick.tick() => self.refresh_network().await,
            }
        };
        // Hang up: bye to the peer, close the connection, stop the media.
        let actions = self.negotiator.handle(NegotiationEvent::HangUp);
        self.apply(actions, &mut pending).await;
        self.shared.stopped.store(true, Ordering::Relaxed);
        // Let the bye leave before the client goes; the media threads stop meanwhile.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.signal.close();
        // Camera, microphone and speaker are closed before anyone hears the call ended
        // (a "Call again" must be able to open them).
        threads.join_async().await;
        let report = self.report();
        self.emit(CallEvent::Ended(match stop {
            Stop::HungUp => Ok(()),
            Stop::Failed(err) => Err(err),
        }));
        // The report stays available after the end.
        while let Some(command) = commands.recv().await {
            if let Command::Report(reply) = command {
                let _ = reply.send(report.clone());
            }
        }
    }

    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }

    fn on_signal(&mut self, event: SignalEvent, pending: &mut VecDeque<NegotiationEvent>) {
        use NegotiationEvent as N;
        match event {
            SignalEvent::Joined(joined) => {
                if joined.resumed {
                    self.signaling_reconnects += 1;
                }
                self.emit(CallEvent::Joined {
                    room: joined.room.clone(),
                    role: joined.role,
                    resumed: joined.resumed,
                });
                pending.push_back(N::Joined {
                    role: joined.role,
                    peer: joined.peers.into_iter().next(),
                    resumed: joined.resumed,
                });
            }
            SignalEvent::PeerJoined { id, .. } => pending.push_back(N::PeerJoined(id)),
            SignalEvent::PeerLeft { id } => pending.push_back(N::PeerLeft(id)),
            SignalEvent::Offer { from, sdp } => pending.push_back(N::RemoteOffer { from, sdp }),
            SignalEvent::Answer { from, sdp } => pending.push_back(N::RemoteAnswer { from, sdp }),
            SignalEvent::Candidate { from, candidate } => {
                pending.push_back(N::RemoteCandidate { from, candidate })
            }
            SignalEvent::Bye { from } => pending.push_back(N::RemoteBye(from)),
            SignalEvent::Error { code, message } => {
                tracing::warn!(%code, %message, "the signaling server refused a message");
            }
            SignalEvent::Reconnecting {
                attempt,
                retry_in,
                cause,
            } => self.emit(CallEvent::Reconnecting {
                attempt,
                retry_in,
                cause,
            }),
            SignalEvent::GaveUp { .. } => {}
        }
    }

    async fn on_peer_event(&mut self, event: PeerEvent, pending: &mut VecDeque<NegotiationEvent>) {
        let current = self.peer.as_ref().map(|p| p.generation);
        match event {
            PeerEvent::LocalCandidate(generation, candidate) => {
                pending.push_back(NegotiationEvent::LocalCandidate(generation, candidate));
            }
            PeerEvent::State(generation, state) => {
                if Some(generation) != current {
                    return;
                }
                if let Some(state) = ConnectionState::from_webrtc(state) {
                    self.emit(CallEvent::ConnectionState(state));
                }
                match state {
                    RTCPeerConnectionState::Connected => {
                        pending.push_back(NegotiationEvent::Connected(generation));
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        pending.push_back(NegotiationEvent::Failed(generation));
                    }
                    _ => {}
                }
            }
            PeerEvent::Track(generation, track) => {
                if Some(generation) != current {
                    return;
                }
                let shared = Arc::clone(&self.shared);
                match track.kind().await {
                    RtpCodecKind::Video => {
                        tokio::spawn(run_video_receiver(track, shared, self.decode.clone()));
                    }
                    RtpCodecKind::Audio => {
                        let buffer = Arc::clone(&self.playout_buffer);
                        tokio::spawn(run_audio_receiver(track, shared, buffer));
                    }
                    _ => {}
                }
            }
        }
    }

    fn on_first_frame(&mut self) {
        if self.timing.frame_seen_this_call || !self.negotiator.is_connected() {
            return;
        }
        self.timing.frame_seen_this_call = true;
        if self.timing.first_time_to_frame.is_none() {
            self.timing.first_time_to_frame = self.timing.peer_seen.map(|at| at.elapsed());
        }
        self.emit(CallEvent::FirstRemoteFrame);
    }

    async fn apply(
        &mut self,
        actions: Vec<NegotiationAction>,
        pending: &mut VecDeque<NegotiationEvent>,
    ) {
        for action in actions {
            if let Err(err) = self.apply_one(action, pending).await {
                tracing::warn!(%err, "call setup step failed");
                self.emit(CallEvent::Notice(format!("call setup failed: {err}")));
                if let Some(generation) = self.peer.as_ref().map(|p| p.generation) {
                    // Do not spin on a peer whose descriptions we cannot use.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    pending.push_back(NegotiationEvent::Failed(generation));
                }
                return;
            }
        }
    }

    async fn apply_one(
        &mut self,
        action: NegotiationAction,
        pending: &mut VecDeque<NegotiationEvent>,
    ) -> Result<(), CallError> {
        let webrtc = |err: webrtc::error::Error| CallError::WebRtc(err.to_string());
        match action {
            NegotiationAction::ClosePeerConnection => self.close_peer().await,
            NegotiationAction::NewPeerConnection(generation) => {
                let built = build_peer(
                    &self.settings,
                    generation,
                    self.peer_events_tx.clone(),
                    Arc::clone(&self.shared.target_bps),
                )
                .await?;
                tokio::spawn(run_sender_feedback(
                    Arc::clone(&built.video),
                    Arc::clone(&self.shared),
                ));
                self.peer = Some(CurrentPeer { generation, built });
                self.timing.frame_seen_this_call = false;
            }
            NegotiationAction::SendOffer(generation) => {
                let connection = self.connection(generation)?;
                let offer = connection.create_offer(None).await.map_err(webrtc)?;
                let sdp = apply_local(connection.as_ref(), offer).await?;
                self.signal.offer(sdp)?;
            }
            NegotiationAction::AnswerOffer(generation, sdp) => {
                let connection = self.connection(generation)?;
                let offer = RTCSessionDescription::offer(sdp).map_err(webrtc)?;
                connection
                    .set_remote_description(offer)
                    .await
                    .map_err(webrtc)?;
                pending.push_front(NegotiationEvent::RemoteDescriptionApplied(generation));
                let answer = connection.create_answer(None).await.map_err(webrtc)?;
                let sdp = apply_local(connection.as_ref(), answer).await?;
                self.signal.answer(sdp)?;
                self.start_outbound().await;
            }
            NegotiationAction::ApplyAnswer(generation, sdp) => {
                let connection = self.connection(generation)?;
                let answer = RTCSessionDescription::answer(sdp).map_err(webrtc)?;
                connection
                    .set_remote_description(answer)
                    .await
                    .map_err(webrtc)?;
                pending.push_front(NegotiationEvent::RemoteDescriptionApplied(generation));
                self.start_outbound().await;
            }
            NegotiationAction::AddRemoteCandidate(generation, candidate) => {
                let connection = self.connection(generation)?;
                match candidate {
                    Some(candidate) if !candidate.candidate.is_empty() => {
                        let init = RTCIceCandidateInit {
                            candidate: candidate.candidate,
                            sdp_mid: candidate.sdp_mid,
                            sdp_mline_index: candidate.sdp_mline_index,
                            username_fragment: candidate.username_fragment,
                            ..Default::default()
                        };
                        if let Err(err) = connection.add_ice_candidate(init).await {
                            // One bad candidate (an mDNS name we cannot resolve, a
                            // protocol we do not speak) must not end the call.
                            tracing::debug!(%err, "remote candidate not usable");
                        }
                    }
                    _ => tracing::debug!("remote end of candidates"),
                }
            }
            NegotiationAction::SendCandidate(candidate) => self.signal.candidate(candidate)?,
            NegotiationAction::SendBye => self.signal.bye()?,
            NegotiationAction::Report(phase) => self.on_phase(&phase),
        }
        Ok(())
    }

    fn connection(
        &self,
        generation: Generation,
    ) -> Result<Arc<dyn webrtc::peer_connection::PeerConnection>, CallError> {
        self.peer
            .as_ref()
            .filter(|p| p.generation == generation)
            .map(|p| Arc::clone(&p.built.connection))
            .ok_or_else(|| CallError::WebRtc("the connection was replaced".into()))
    }

    /// Points the media writers at the current connection's tracks, with the
    /// payload types the two descriptions agreed on.
    async fn start_outbound(&mut self) {
        if let Some(peer) = &self.peer {
            let built = &peer.built;
            let video = negotiated_codec(
                built.video_sender.as_ref(),
                MIME_TYPE_H264,
                H264_FMTP,
                H264_PAYLOAD_TYPE,
            )
            .await;
            let audio = negotiated_codec(
                built.audio_sender.as_ref(),
                MIME_TYPE_OPUS,
                OPUS_FMTP,
                OPUS_PAYLOAD_TYPE,
            )
            .await;
            tracing::debug!(?video, ?audio, "negotiated codecs");
            let (video_pt, audio_pt) = (video.payload_type, audio.payload_type);
            self.codecs.video = video.mime_type.or(self.codecs.video.take());
            self.codecs.audio = audio.mime_type.or(self.codecs.audio.take());
            let _ = self.video_out.send(Some(Outbound {
                track: Arc::clone(&built.video),
                ssrc: built.video_ssrc,
                payload_type: video_pt,
            }));
            let _ = self.audio_out.send(Some(Outbound {
                track: Arc::clone(&built.audio),
                ssrc: built.audio_ssrc,
                payload_type: audio_pt,
            }));
        }
    }

    async fn close_peer(&mut self) {
        self.shared.sending.store(false, Ordering::Relaxed);
        let _ = self.video_out.send(None);
        let _ = self.audio_out.send(None);
        if let Some(peer) = self.peer.take()
            && let Err(err) = peer.built.connection.close().await
        {
            tracing::debug!(%err, "closing the peer connection");
        }
        if let Some(since) = self.timing.connected_at.take() {
            self.timing.connected_total += since.elapsed();
        }
    }

    fn on_phase(&mut self, phase: &CallPhase) {
        match phase {
            CallPhase::PeerPresent(_) => self.timing.peer_seen = Some(Instant::now()),
            CallPhase::Connected => {
                self.timing.calls_connected += 1;
                self.timing.connected_at = Some(Instant::now());
                if self.timing.first_time_to_connected.is_none() {
                    self.timing.first_time_to_connected =
                        self.timing.peer_seen.map(|at| at.elapsed());
                }
                self.shared.keyframe_wanted.store(true, Ordering::Relaxed);
                self.shared.sending.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
        self.emit(CallEvent::Phase(phase.clone()));
    }

    async fn refresh_network(&mut self) {
        let Some(peer) = &self.peer else { return };
        if !self.negotiator.is_connected() {
            return;
        }
        let report = peer
            .built
            .connection
            .get_stats(Instant::now(), StatsSelector::None)
            .await;
        let mut network = NetworkSummary::default();
        let mut lost = 0i64;
        let mut any_inbound = false;
        let (local_type, remote_type) = selected_candidate_types(&report);
        network.local_candidate_type = local_type;
        network.remote_candidate_type = remote_type;
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::IceCandidatePair(pair)
                    if pair.nominated && pair.current_round_trip_time > 0.0 =>
                {
                    network.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
                    self.shared.rtt_us.store(
                        (pair.current_round_trip_time * 1e6) as u64,
                        Ordering::Relaxed,
                    );
                }
                RTCStatsReportEntry::InboundRtp(inbound) => {
                    any_inbound = true;
                    let received = &inbound.received_rtp_stream_stats;
                    lost += received.packets_lost.max(0);
                    if received.rtp_stream_stats.kind == RtpCodecKind::Video {
                        // Jitter is kept in RTP ticks of the 90 kHz video clock.
                        network.jitter_ms = Some(received.jitter / 90.0);
                    }
                }
                _ => {}
            }
        }
        if any_inbound {
            network.packets_lost = Some(lost);
        }
        if let Ok(mut shared) = self.shared.network.lock() {
            *shared = network;
        }
    }

    fn report(&self) -> CallReport {
        let mut connected_for = self.timing.connected_total;
        if let Some(since) = self.timing.connected_at {
            connected_for += since.elapsed();
        }
        let context = ReportContext {
            role: self
                .negotiator
                .role()
                .map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            room: self.room.clone(),
            time_to_connected: self.timing.first_time_to_connected,
            time_to_first_remote_frame: self.timing.first_time_to_frame,
            connected_for,
            calls_connected: self.timing.calls_connected,
            video_mime_type: self.codecs.video.clone(),
            audio_mime_type: self.codecs.audio.clone(),
            signaling_reconnects: self.signaling_reconnects,
        };
        CallReport::build(
            context,
            &self.shared.counters.snapshot(),
            self.shared.network(),
        )
    }
}

/// The candidate types (`host`, `srflx`, `prflx`, `relay`) of the selected
/// candidate pair in a stats report (see [`candidate_types`]).
fn selected_candidate_types(
    report: &webrtc::peer_connection::RTCStatsReport,
) -> (Option<&'static str>, Option<&'static str>) {
    let mut selected = None;
    let mut pairs = Vec::new();
    let mut candidates = Vec::new();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::Transport(transport)
                if !transport.selected_candidate_pair_id.is_empty() =>
            {
                selected = Some(transport.selected_candidate_pair_id.as_str());
            }
            RTCStatsReportEntry::IceCandidatePair(pair) => pairs.push(PairIds {
                id: &pair.stats.id,
                nominated: pair.nominated,
                local: &pair.local_candidate_id,
                remote: &pair.remote_candidate_id,
            }),
            RTCStatsReportEntry::LocalCandidate(candidate) => candidates.push((
                true,
                candidate.stats.id.as_str(),
                candidate_type_name(candidate.candidate_type),
            )),
            RTCStatsReportEntry::RemoteCandidate(candidate) => candidates.push((
                false,
                candidate.stats.id.as_str(),
                candidate_type_name(candidate.candidate_type),
            )),
            _ => {}
        }
    }
    candidate_types(selected, &pairs, &candidates)
}

/// A candidate pair's ids in a stats report.
struct PairIds<'a> {
    id: &'a str,
    nominated: bool,
    local: &'a str,
    remote: &'a str,
}

/// The rule, without webrtc's types: the pair the transport names as
/// selected (else the nominated one), and the types of its two candidates,
/// given as (local?, stats id, type). webrtc lists every signalled remote
/// candidate in its stats, but not one the ICE agent learned from a
/// connectivity check: a remote candidate of the pair that is not listed is
/// therefore peer-reflexive (`prflx`).
fn candidate_types(
    selected: Option<&str>,
    pairs: &[PairIds<'_>],
    candidates: &[(bool, &str, Option<&'static str>)],
) -> (Option<&'static str>, Option<&'static str>) {
    let Some(pair) = pairs
        .iter()
        .find(|pair| selected.map_or(pair.nominated, |id| pair.id == id))
    else {
        return (None, None);
    };
    let find = |local: bool, candidate_id: &str| {
        candidates
            .iter()
            .find(|(is_local, stats_id, _)| {
                *is_local == local && candidate_stats_is(stats_id, candidate_id)
            })
            .map(|(_, _, kind)| *kind)
    };
    let local = find(true, pair.local).flatten();
    let remote = match find(false, pair.remote) {
        Some(kind) => kind,
        None if !pair.remote.is_empty() => Some("prflx"),
        None => None,
    };
    (local, remote)
}

/// Whether the candidate stats with id `stats_id` describe the candidate
/// `candidate_id` (webrtc prefixes the candidate's id in its stats id).
fn candidate_stats_is(stats_id: &str, candidate_id: &str) -> bool {
    !candidate_id.is_empty()
        && (stats_id == candidate_id
            || stats_id
                .strip_suffix(candidate_id)
                .is_some_and(|prefix| prefix.ends_with('_')))
}

fn candidate_type_name(
    candidate_type: webrtc::peer_connection::RTCIceCandidateType,
) -> Option<&'static str> {
    use webrtc::peer_connection::RTCIceCandidateType as T;
    match candidate_type {
        T::Host => Some("host"),
        T::Srflx => Some("srflx"),
        T::Prflx => Some("prflx"),
        T::Relay => Some("relay"),
        _ => None,
    }
}

/// Applies our own offer or answer and returns the SDP to send (as applied,
/// with whatever candidates were gathered by then).
async fn apply_local(
    connection: &dyn webrtc::peer_connection::PeerConnection,
    description: RTCSessionDescription,
) -> Result<String, CallError> {
    let webrtc = |err: webrtc::error::Error| CallError::WebRtc(err.to_string());
    connection
        .set_local_description(description)
        .await
        .map_err(webrtc)?;
    let local = connection
        .local_description()
        .await
        .ok_or_else(|| CallError::WebRtc("no local description".into()))?;
    tracing::debug!(sdp = %local.sdp, kind = %local.sdp_type, "local description");
    Ok(local.sdp)
}

#[cfg(test)]
mod candidate_type_tests {
    use super::*;

    const CANDIDATES: &[(bool, &str, Option<&str>)] = &[
        (true, "RTCLocalIceCandidate_a", Some("host")),
        (true, "RTCLocalIceCandidate_b", Some("srflx")),
        (false, "RTCRemoteIceCandidate_x", Some("relay")),
    ];

    fn pair<'a>(id: &'a str, nominated: bool, local: &'a str, remote: &'a str) -> PairIds<'a> {
        PairIds {
            id,
            nominated,
            local,
            remote,
        }
    }

    #[test]
    fn the_selected_pair_names_the_candidate_types() {
        let pairs = [pair("p1", false, "a", "x"), pair("p2", true, "b", "x")];
        assert_eq!(
            candidate_types(Some("p1"), &pairs, CANDIDATES),
            (Some("host"), Some("relay"))
        );
        // Without a selected id, the nominated pair.
        assert_eq!(
            candidate_types(None, &pairs, CANDIDATES),
            (Some("srflx"), Some("relay"))
        );
    }

    #[test]
    fn a_remote_candidate_learned_from_a_check_is_peer_reflexive() {
        let pairs = [pair("p1", true, "a", "learned")];
        assert_eq!(
            candidate_types(None, &pairs, CANDIDATES),
            (Some("host"), Some("prflx"))
        );
    }

    #[test]
    fn no_pair_in_use_gives_no_types() {
        let pairs = [pair("p1", false, "a", "x")];
        assert_eq!(candidate_types(None, &pairs, CANDIDATES), (None, None));
        assert_eq!(
            candidate_types(Some("gone"), &pairs, CANDIDATES),
            (None, None)
        );
    }

    #[test]
    fn candidate_ids_match_whole_suffixes_only() {
        assert!(candidate_stats_is("RTCLocalIceCandidate_abc", "abc"));
        assert!(candidate_stats_is("abc", "abc"));
        assert!(!candidate_stats_is("RTCLocalIceCandidate_xabc", "abc"));
        assert!(!candidate_stats_is("RTCLocalIceCandidate_", ""));
    }
}
