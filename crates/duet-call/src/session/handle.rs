//! What a front end holds of a running session: the call's settings
//! ([`CallConfig`]), its controls ([`CallHandle`]) and its news
//! ([`CallEvents`] of [`CallEvent`]s).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_media::ProcessingSettings;
use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::{Role, RoleRequest};
use tokio::sync::{mpsc, oneshot};

use crate::CallError;
use crate::chat::{ChatError, ChatLog, ChatMessage};
use crate::media::{AudioOutput, FrameSlot, MediaShared};
use crate::negotiation::CallPhase;
use crate::peer::ConnectionState;
use crate::report::{CallReport, LiveFigures};
use crate::verification::VerificationCode;

/// Everything a call needs to know before it starts (the call options of `docs/cli.md`).
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
    /// Most video bitrate of a camera, a test picture or a file, bits per
    /// second.
    pub max_video_bps: u32,
    /// Every connection starts at its source's most video bitrate, instead
    /// of at 120 kbit/s and climbing to it while the path shows no queue:
    /// what `--bitrate` asks for (the starting and most video bitrate).
    pub start_at_max_video_bps: bool,
    /// Most video bitrate while a screen is sent (from the start or after a
    /// switch mid-call): sharp text at up to 1920 pixels across needs more
    /// than a face.
    pub max_screen_bps: u32,
    /// STUN/TURN servers (`--ice`); those the signaling server hands out are added.
    pub ice_servers: Vec<String>,
    /// Only relayed candidates (`--ice-transport relay`): the other peer never
    /// learns this machine's addresses.
    pub relay_only: bool,
    /// Where received audio is played.
    pub audio_output: AudioOutput,
    /// A 48 kHz mono WAV file that gets a copy of the received audio as it
    /// is played (`--record-audio`).
    pub record_audio: Option<std::path::PathBuf>,
    /// Echo cancellation, noise suppression and gain control on the
    /// microphone (all on unless switched off).
    pub processing: ProcessingSettings,
    /// Keep local pictures for a self-view.
    pub preview: bool,
    /// Local addresses to gather ICE candidates on.
    pub udp_addrs: Vec<String>,
}

/// What a shared screen may use unless told otherwise: sharp text at 5–15
/// pictures a second of up to 1920 pixels across.
pub const DEFAULT_SCREEN_BPS: u32 = 2_500_000;

impl CallConfig {
    /// The most video bitrate of the source the call starts with.
    pub(crate) fn starting_video_bps(&self) -> u32 {
        if self.video.is_screen() {
            self.max_screen_bps
        } else {
            self.max_video_bps
        }
    }

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
            start_at_max_video_bps: false,
            max_screen_bps: DEFAULT_SCREEN_BPS,
            ice_servers: Vec::new(),
            relay_only: false,
            audio_output: AudioOutput::Speaker(None),
            record_audio: None,
            processing: ProcessingSettings::default(),
            preview: false,
            // Every interface (webrtc-rs expands the wildcard but skips loopback), and
            // loopback too, which is kept only where no other interface is up
            // (`host_addrs`): a call between two apps on one machine then works
            // even where no network is.
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
    /// The connection's verification code, for the two people to compare
    /// (a new one with each new connection).
    Verification(VerificationCode),
    /// A chat message to show: a new one, or one of ours whose state
    /// changed (same author and id: replace it).
    Chat(ChatMessage),
    /// Something the person should know (a device fallback).
    Notice(String),
    /// A switch to this video source failed (a [`CallEvent::Notice`] said
    /// why): the source before it is still sent.
    VideoKept(VideoSpec),
    /// The shared screen went away (sharing stopped from the desktop, a
    /// display closed): the test pattern is sent until another source is
    /// asked for.
    ScreenEnded,
    /// A step of setting up the connection failed (the line says which and
    /// why); the call is tried again, and if it never connects this is the
    /// likeliest reason.
    SetupFailed(String),
    /// The session is over; the last event.
    Ended(Result<(), CallError>),
}

pub(super) enum Command {
    HangUp,
    Report(oneshot::Sender<CallReport>),
}

/// Controls a running session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) shared: Arc<MediaShared>,
    pub(super) chat: mpsc::UnboundedSender<String>,
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

    /// Sends a chat message to the peer over the call's data channel: now,
    /// or when the connection is back. It comes back as [`CallEvent::Chat`]
    /// (sending, then delivered or not delivered). Refused at once when it
    /// is empty or over 4 KB of UTF-8.
    pub fn send_chat(&self, text: &str) -> Result<(), ChatError> {
        ChatLog::check(text)?;
        self.chat
            .send(text.to_owned())
            .map_err(|_| ChatError::Ended)
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

    /// Switches echo cancellation, noise suppression and gain control on
    /// the microphone, from the next 20 ms on. The echo canceller keeps what
    /// it learned while switched off.
    pub fn set_processing(&self, settings: ProcessingSettings) {
        self.shared.set_processing(settings);
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
    pub(super) events: mpsc::UnboundedReceiver<CallEvent>,
}

impl CallEvents {
    /// The next event; `None` after [`CallEvent::Ended`].
    pub async fn recv(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }
}
