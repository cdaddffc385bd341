//! The async shell around [`Negotiator`]: it carries out its actions on the
//! signaling client and the peer connection, feeds it their events, and owns
//! the media paths for the life of the session. A session outlives single
//! calls: when the peer leaves, it waits, and a new peer gets a fresh call.
//!
//! This file starts the session and runs its loop. Beside it, one job each:
//! `handle` (what the front end holds: [`CallConfig`], [`CallHandle`],
//! [`CallEvents`]), `actions` (the negotiator's actions carried out on the
//! peer connection), `stats` (network figures), and the socket-free parts
//! with their tests: `routing` (where each signaling event and connection
//! state goes, and how the session ends) and `timing` (the report's set-up
//! and connected times). The negotiator's timers (answer timeout, retry
//! backoff) are its own rules; the loop only sleeps until
//! [`Negotiator::poll_timeout`].

mod actions;
mod handle;
mod routing;
mod stats;
mod timing;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_signal::{
    ClientConfig, ClientError, IceServerEntry, SignalEvent, SignalEvents, SignalSender,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::{mpsc, watch};

use crate::CallError;
use crate::chat::{ChatLink, start_chat};
use crate::ice_servers::IceServer;
use crate::media::{
    DecodeChannel, EncodedUnit, MediaNotice, MediaShared, MediaThreads, Outbound, VideoRequest,
    echo_reference, run_audio_receiver, run_rtp_writer, run_video_receiver, start_audio_playout,
    start_audio_sender, start_video_decoder, start_video_sender,
};
use crate::negotiation::{CallPhase, Generation, NegotiationEvent, Negotiator};
use crate::peer::{BuiltPeer, PeerEvent, PeerSettings};
use crate::playout::AudioPlayoutBuffer;
use crate::report::{CallReport, ReportContext};
use crate::turn_check::check_turn;
use crate::verification::VerificationCode;
use handle::Command;
pub use handle::{CallConfig, CallEvent, CallEvents, CallHandle, DEFAULT_SCREEN_BPS};
use routing::{Route, Stop, route_peer_state, route_signal};
use timing::CallTiming;

/// How long the end of a session waits for the signaling client to send what
/// is queued (the `bye`) and close; its own close waits at most a second.
const SIGNAL_CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// Opens the media, connects to the server and joins the room; then runs the
/// session in the background. Fails at once when the server cannot be reached,
/// the room is full or the role taken, or a source cannot be opened.
pub async fn start_call(config: CallConfig) -> Result<(CallHandle, CallEvents), CallError> {
    let ice_servers = config
        .ice_servers
        .iter()
        .map(|url| IceServer::parse(url))
        .collect::<Result<Vec<_>, _>>()?;
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
    check_turn_servers(&ice_servers, &events_tx);

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
    let (chat, chat_texts) = start_chat(events_tx.clone());
    let session = Session {
        given_ice_servers: ice_servers.clone(),
        server_ice_servers_checked: false,
        settings: PeerSettings {
            ice_servers,
            relay_only: config.relay_only,
            max_video_bps: config.starting_video_bps(),
            start_at_max: config.start_at_max_video_bps,
            udp_addrs: config.udp_addrs.clone(),
        },
        room: config.room.clone(),
        server: config.server.clone(),
        negotiator: Negotiator::new(),
        signal,
        events: events_tx,
        chat: Some(chat),
        shared: Arc::clone(&shared),
        peer: None,
        peer_events_tx,
        video_out,
        audio_out,
        decode,
        playout_buffer,
        timing: CallTiming::default(),
        codecs: Codecs::default(),
        verification: None,
        signaling_reconnects: 0,
        network_due: false,
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
            chat: chat_texts,
        },
        CallEvents { events },
    ))
}

/// What [`start_media`] started: the encoded units of each sender (`None` for
/// `none`), the decoder's queue, the playout buffer, and notices for the person.
type StartedMedia = (
    Option<mpsc::Receiver<EncodedUnit>>,
    Option<mpsc::Receiver<EncodedUnit>>,
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
        max_screen_bps: config.max_screen_bps,
    };
    let (video_units, video_notice) =
        start_video_sender(video, Arc::clone(shared), notices.clone(), threads).await?;
    shared.set_processing(config.processing);
    let (played_tap, played_reader) = echo_reference();
    let (audio_units, audio_notice) = start_audio_sender(
        config.audio.clone(),
        config.tone_hz,
        played_reader,
        Arc::clone(shared),
        notices.clone(),
        threads,
    )
    .await?;
    let playout_buffer = Arc::new(Mutex::new(AudioPlayoutBuffer::new()));
    let sink_notice = start_audio_playout(
        config.audio_output.clone(),
        config.record_audio.clone(),
        played_tap,
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

struct CurrentPeer {
    generation: Generation,
    built: BuiltPeer,
}

struct Session {
    settings: PeerSettings,
    /// STUN/TURN servers from the command line; those of the signaling
    /// server join them in `settings`.
    given_ice_servers: Vec<IceServer>,
    /// Whether the signaling server's TURN servers were checked yet.
    server_ice_servers_checked: bool,
    room: String,
    server: String,
    negotiator: Negotiator,
    signal: SignalSender,
    events: mpsc::UnboundedSender<CallEvent>,
    /// The chat over the current connection's data channel (taken at the end).
    chat: Option<ChatLink>,
    shared: Arc<MediaShared>,
    peer: Option<CurrentPeer>,
    peer_events_tx: mpsc::UnboundedSender<PeerEvent>,
    video_out: watch::Sender<Option<Outbound>>,
    audio_out: watch::Sender<Option<Outbound>>,
    decode: DecodeChannel,
    playout_buffer: Arc<Mutex<AudioPlayoutBuffer>>,
    timing: CallTiming,
    codecs: Codecs,
    /// The verification code of the current (or last) connection.
    verification: Option<VerificationCode>,
    /// Signaling reconnects that resumed our seat.
    signaling_reconnects: u64,
    /// The network figures are read at once, not at the next tick: the send
    /// queue waits for the first feedback a round trip long (read from the
    /// connectivity checks) from the call's first packets on.
    network_due: bool,
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
        let mut stop = None;
        if let Some(first) = first {
            stop = self.on_signal(first, &mut pending);
        }
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            if let Some(stop) = stop.take() {
                break stop;
            }
            while let Some(event) = pending.pop_front() {
                let actions = self.negotiator.handle(event, Instant::now());
                self.apply(actions, &mut pending).await;
            }
            if std::mem::take(&mut self.network_due) {
                self.refresh_network().await;
            }
            let timer = self.negotiator.poll_timeout();
            tokio::select! {
                event = signal_events.recv() => match event {
                    Some(event) => stop = self.on_signal(event, &mut pending),
                    None => break Stop::Failed(CallError::Signaling(ClientError::Stopped)),
                },
                () = sleep_until(timer) => {
                    let actions = self.negotiator.handle_timeout(Instant::now());
                    self.apply(actions, &mut pending).await;
                }
                Some(event) = peer_events.recv() => {
                    stop = self.on_peer_event(event, &mut pending).await;
                }
                Some(notice) = notices.recv() => match notice {
                    MediaNotice::Device(text) => self.emit(CallEvent::Notice(text)),
                    MediaNotice::VideoKept(spec) => self.emit(CallEvent::VideoKept(spec)),
                    MediaNotice::ScreenEnded => self.emit(CallEvent::ScreenEnded),
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
        let actions = self
            .negotiator
            .handle(NegotiationEvent::HangUp, Instant::now());
        self.apply(actions, &mut pending).await;
        self.shared.stopped.store(true, Ordering::Relaxed);
        // The client sends what is queued (the bye), then closes and stops, which
        // ends its events: the call has not ended until the bye is out.
        self.signal.close();
        let drained = tokio::time::timeout(SIGNAL_CLOSE_LIMIT, async {
            while signal_events.recv().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::debug!("the signaling client did not stop in time");
        }
        // Camera, microphone and speaker are closed before anyone hears the call
        // ended (a "Call again" must be able to open them).
        threads.join_async().await;
        if let Some(chat) = self.chat.take() {
            chat.finish().await;
        }
        let report = self.report();
        self.emit(CallEvent::Ended(stop.outcome()));
        // Ended is the last event: dropping the session closes the events and
        // lets go of everything the call held. The report stays available.
        drop(self);
        while let Some(command) = commands.recv().await {
            if let Command::Report(reply) = command {
                let _ = reply.send(report.clone());
            }
        }
    }

    fn emit(&self, event: CallEvent) {
        let _ = self.events.send(event);
    }

    /// Carries out routes in order; `Some` when one ends the session.
    fn follow(
        &mut self,
        routes: Vec<Route>,
        pending: &mut VecDeque<NegotiationEvent>,
    ) -> Option<Stop> {
        for route in routes {
            match route {
                Route::Tell(event) => {
                    if matches!(event, CallEvent::Joined { resumed: true, .. }) {
                        self.signaling_reconnects += 1;
                    }
                    self.emit(event);
                }
                Route::Negotiate(event) => pending.push_back(event),
                Route::Stop(err) => return Some(Stop::Failed(err)),
            }
        }
        None
    }

    fn on_signal(
        &mut self,
        event: SignalEvent,
        pending: &mut VecDeque<NegotiationEvent>,
    ) -> Option<Stop> {
        if let SignalEvent::Joined(joined) = &event {
            self.take_server_ice_servers(&joined.ice_servers);
        }
        self.follow(route_signal(event, &self.server), pending)
    }

    /// Uses the STUN/TURN servers the signaling server handed out, beside
    /// those given on the command line; their credentials are fresh with each
    /// `joined`. The TURN ones are checked the first time.
    fn take_server_ice_servers(&mut self, entries: &[IceServerEntry]) {
        let mut handed_out = Vec::new();
        for entry in entries {
            for url in &entry.urls {
                match IceServer::from_parts(url, &entry.username, &entry.credential) {
                    Ok(server) => handed_out.push(server),
                    Err(err) => {
                        tracing::warn!(%err, "an ICE server from the signaling server cannot be used")
                    }
                }
            }
        }
        if handed_out.is_empty() {
            return;
        }
        if !self.server_ice_servers_checked {
            self.server_ice_servers_checked = true;
            check_turn_servers(&handed_out, &self.events);
        }
        self.settings.ice_servers = self
            .given_ice_servers
            .iter()
            .cloned()
            .chain(handed_out)
            .collect();
    }

    async fn on_peer_event(
        &mut self,
        event: PeerEvent,
        pending: &mut VecDeque<NegotiationEvent>,
    ) -> Option<Stop> {
        let current = self.peer.as_ref().map(|p| p.generation);
        match event {
            PeerEvent::LocalCandidate(generation, candidate) => {
                pending.push_back(NegotiationEvent::LocalCandidate(generation, candidate));
            }
            PeerEvent::State(generation, state) => {
                tracing::debug!(generation, %state, "peer connection state");
                return self.follow(route_peer_state(generation, state, current), pending);
            }
            PeerEvent::Track(generation, track) => {
                if Some(generation) != current {
                    return None;
                }
                // webrtc-rs opens a remote track on its first packet.
                pending.push_back(NegotiationEvent::Heard(generation));
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
        None
    }

    fn on_first_frame(&mut self) {
        if self
            .timing
            .remote_frame(Instant::now(), self.negotiator.is_connected())
        {
            self.emit(CallEvent::FirstRemoteFrame);
        }
    }

    fn on_phase(&mut self, phase: &CallPhase) {
        match phase {
            CallPhase::PeerPresent(_) => self.timing.peer_present(Instant::now()),
            CallPhase::Reconnecting => self.timing.reconnecting(Instant::now()),
            CallPhase::Connected => {
                self.timing.connected(Instant::now());
                self.network_due = true;
                self.shared.keyframe_wanted.store(true, Ordering::Relaxed);
                self.shared.sending.store(true, Ordering::Relaxed);
            }
            _ => {}
        }
        self.emit(CallEvent::Phase(phase.clone()));
    }

    fn report(&self) -> CallReport {
        let context = ReportContext {
            role: self
                .negotiator
                .role()
                .map_or_else(|| "unknown".to_owned(), |r| r.to_string()),
            room: self.room.clone(),
            time_to_connected: self.timing.time_to_connected(),
            time_to_first_remote_frame: self.timing.time_to_first_remote_frame(),
            connected_for: self.timing.connected_for(Instant::now()),
            calls_connected: self.timing.calls_connected(),
            video_mime_type: self.codecs.video.clone(),
            audio_mime_type: self.codecs.audio.clone(),
            signaling_reconnects: self.signaling_reconnects,
            ice_restarts: self.negotiator.ice_restarts(),
            verification_code: self.verification.as_ref().map(ToString::to_string),
        };
        CallReport::build(
            context,
            &self.shared.counters.snapshot(),
            self.shared.network(),
        )
    }
}

/// Checks each TURN server in the background; a refusal or silence becomes a
/// notice (`turn_check`).
fn check_turn_servers(servers: &[IceServer], events: &mpsc::UnboundedSender<CallEvent>) {
    for server in servers.iter().filter(|server| server.is_turn()).cloned() {
        let events = events.clone();
        tokio::spawn(async move {
            let verdict = check_turn(&server).await;
            tracing::debug!(url = %server.url, ?verdict, "TURN check");
            if let Some(notice) = verdict.notice(&server) {
                let _ = events.send(CallEvent::Notice(notice));
            }
        });
    }
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
