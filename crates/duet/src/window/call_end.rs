//! One end of a call as the window drives it: starts sessions on the async
//! runtime, turns their events into a [`CallStatus`], and carries out the
//! person's choices (mute, camera, devices, hang up, call again). Every method
//! returns at once: the UI thread never waits on the network or a device.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use duet_call::{AudioOutput, CallConfig, CallError, CallEvent, CallHandle, CallPhase, start_call};
use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::RoleRequest;
use eframe::egui;

use super::chat::ChatHistory;
use super::picture::{GpuPictures, Picture};
use super::screen_share::ScreenShareToggle;
use super::stats::{StatsMeter, StatsView};
use super::status::CallStatus;
use super::video::VideoFeed;

/// How late a self-view picture may be drawn: with a remote picture coming,
/// it is drawn with that; alone, the self-view still moves at 25 fps.
const SELF_VIEW_REPAINT: Duration = Duration::from_millis(40);

/// How often the running figures are read (the overlay shows rates per second).
const FIGURES_EVERY: Duration = Duration::from_secs(1);

/// How long the window waits for the session's report when a call ends.
const REPORT_WAIT: Duration = Duration::from_secs(2);

/// What the session's task tells the window.
enum Message {
    Started(CallHandle),
    StartFailed(CallError),
    Event(CallEvent),
}

/// One end of a call, with everything the window shows of it.
#[derive(Debug)]
pub struct CallEnd {
    runtime: tokio::runtime::Handle,
    ctx: egui::Context,
    config: CallConfig,
    status: CallStatus,
    /// Counts call attempts; messages of an earlier attempt are ignored.
    attempt: u64,
    handle: Option<CallHandle>,
    /// A session is running (started and not yet ended).
    running: bool,
    hang_up_when_started: bool,
    messages_tx: std_mpsc::Sender<(u64, Message)>,
    messages: std_mpsc::Receiver<(u64, Message)>,
    muted: bool,
    camera_off: bool,
    meter: StatsMeter,
    /// When the running figures were last read.
    figures_read: Option<Instant>,
    /// The call's own stamp reader finds stamps in the remote video (the
    /// other end sends the test pattern): only then is the display latency
    /// measured, never on a camera's picture.
    remote_stamped: bool,
    gpu: GpuPictures,
    remote_id: egui::Id,
    local_id: egui::Id,
    remote: Option<VideoFeed>,
    local: Option<VideoFeed>,
    ever_connected: bool,
    peer_left: bool,
    last_error: Option<CallError>,
    report_to: Option<PathBuf>,
    report_failure: Option<String>,
    chat: ChatHistory,
    /// What to send again when screen sharing stops.
    screen_share: ScreenShareToggle,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Started(_) => f.write_str("Started"),
            Message::StartFailed(err) => write!(f, "StartFailed({err})"),
            Message::Event(event) => write!(f, "Event({event:?})"),
        }
    }
}

impl CallEnd {
    /// An end that will call with `config` (a self-view is always kept),
    /// drawing its pictures with `gpu` under ids made from `name`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        ctx: egui::Context,
        mut config: CallConfig,
        gpu: GpuPictures,
        name: &str,
    ) -> Self {
        config.preview = true;
        let (messages_tx, messages) = std_mpsc::channel();
        CallEnd {
            runtime,
            ctx,
            status: CallStatus::new(&config.server, &config.room, config.role),
            config,
            attempt: 0,
            handle: None,
            running: false,
            hang_up_when_started: false,
            messages_tx,
            messages,
            muted: false,
            camera_off: false,
            meter: StatsMeter::default(),
            figures_read: None,
            remote_stamped: false,
            gpu,
            remote_id: egui::Id::unique((name, "remote picture")),
            local_id: egui::Id::unique((name, "self-view")),
            remote: None,
            local: None,
            ever_connected: false,
            peer_left: false,
            last_error: None,
            report_to: None,
            report_failure: None,
            chat: ChatHistory::default(),
            screen_share: ScreenShareToggle::default(),
        }
    }

    /// Writes the report of `docs/cli.md` to `path` whenever a call ends.
    pub fn write_report_to(&mut self, path: PathBuf) {
        self.report_to = Some(path);
    }

    /// Starts a call with the current settings (server, room, devices).
    pub fn start(&mut self) {
        self.attempt += 1;
        self.status.restart(&self.config.server, &self.config.room);
        self.handle = None;
        self.remote = None;
        self.local = None;
        self.meter.reset();
        self.figures_read = None;
        self.remote_stamped = false;
        self.peer_left = false;
        self.running = true;
        self.hang_up_when_started = false;
        self.last_error = None;
        self.chat.new_session();
        let attempt = self.attempt;
        let tx = self.messages_tx.clone();
        let ctx = self.ctx.clone();
        let config = self.config.clone();
        self.runtime.spawn(async move {
            let send = |message| {
                let _ = tx.send((attempt, message));
                ctx.request_repaint();
            };
            match start_call(config).await {
                Ok((handle, mut events)) => {
                    send(Message::Started(handle));
                    while let Some(event) = events.recv().await {
                        send(Message::Event(event));
                    }
                }
                Err(err) => send(Message::StartFailed(err)),
            }
        });
    }

    /// Takes in what the session said since the last frame, and samples the stats.
    pub fn poll(&mut self, now: Instant) {
        while let Ok((attempt, message)) = self.messages.try_recv() {
            if attempt != self.attempt {
                if let Message::Started(handle) = message {
                    handle.hang_up();
                }
                continue;
            }
            match message {
                Message::Started(handle) => self.started(handle),
                Message::StartFailed(err) => {
                    tracing::warn!(%err, "the call could not start");
                    self.running = false;
                    self.status.fail(&err);
                    self.last_error = Some(err);
                }
                Message::Event(event) => self.event(event, now),
            }
        }
        if let Some(handle) = &self.handle
            && self.status.in_call()
        {
            let due = self
                .figures_read
                .is_none_or(|read| now.saturating_duration_since(read) >= FIGURES_EVERY);
            if due {
                let figures = handle.live();
                self.remote_stamped = figures.video_latency_ms.is_some();
                self.meter.update(now, figures);
                self.figures_read = Some(now);
            }
            // The call timer ticks even when no picture arrives.
            self.ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn started(&mut self, handle: CallHandle) {
        handle.set_mic_muted(self.muted);
        handle.set_camera_off(self.camera_off);
        self.remote = Some(VideoFeed::start(
            "remote",
            handle.remote_video(),
            self.ctx.clone(),
            Duration::ZERO,
        ));
        self.local = handle
            .local_video()
            .map(|slot| VideoFeed::start("local", slot, self.ctx.clone(), SELF_VIEW_REPAINT));
        if self.hang_up_when_started {
            handle.hang_up();
        }
        self.handle = Some(handle);
    }

    fn event(&mut self, event: CallEvent, now: Instant) {
        match &event {
            CallEvent::Phase(CallPhase::Connected) => {
                if !self.status.in_call() {
                    self.meter.reset();
                    self.figures_read = None;
                }
                self.ever_connected = true;
            }
            CallEvent::Phase(CallPhase::PeerLeft) => self.peer_left = self.ever_connected,
            CallEvent::Chat(message) => self.chat.apply(message.clone()),
            CallEvent::Notice(text) | CallEvent::SetupFailed(text) => {
                tracing::info!("notice: {text}");
            }
            CallEvent::VideoKept(asked) => self.video_not_switched(asked),
            // Sharing stopped from the desktop: as if Stop sharing was pressed.
            CallEvent::ScreenEnded if self.config.video.is_screen() => self.toggle_screen_share(),
            CallEvent::Ended(result) => {
                if let Err(err) = result {
                    tracing::warn!(%err, "the call ended");
                    self.last_error = Some(err.clone());
                }
                self.running = false;
                if let Some(handle) = self.handle.take() {
                    self.write_report(&handle);
                }
                self.remote = None;
                self.local = None;
            }
            _ => {}
        }
        if let CallEvent::Phase(phase) = &event {
            tracing::info!(?phase, "call");
        }
        self.status.apply(&event, now);
    }

    /// Hangs up a running call, or calls again when none runs.
    pub fn hang_up_or_call(&mut self) {
        if self.running {
            self.hang_up();
        } else {
            self.start();
        }
    }

    /// Hangs up (`bye`); the session then ends.
    pub fn hang_up(&mut self) {
        match &self.handle {
            Some(handle) => handle.hang_up(),
            None => self.hang_up_when_started = true,
        }
    }

    /// For closing the window: hangs up and waits up to `limit` for the session
    /// to end, so the other person gets the `bye`.
    pub fn hang_up_and_wait(&mut self, limit: Duration) {
        if !self.running {
            return;
        }
        self.hang_up();
        let deadline = Instant::now() + limit;
        while self.running {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok((attempt, message)) if attempt == self.attempt => match message {
                    Message::Started(handle) => self.started(handle),
                    Message::StartFailed(_) => self.running = false,
                    Message::Event(event) => self.event(event, Instant::now()),
                },
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!("the call did not end within {limit:?}");
                    return;
                }
            }
        }
    }

    /// Mutes or unmutes the microphone.
    pub fn toggle_mute(&mut self) {
        self.muted = !self.muted;
        if let Some(handle) = &self.handle {
            handle.set_mic_muted(self.muted);
        }
    }

    /// Turns the camera off (the other person sees a paused picture) or on.
    pub fn toggle_camera(&mut self) {
        self.camera_off = !self.camera_off;
        if let Some(handle) = &self.handle {
            handle.set_camera_off(self.camera_off);
        }
    }

    /// Sends a chat message; one that cannot be sent says why in a notice.
    pub fn send_chat(&mut self, text: &str) {
        let refused = match &self.handle {
            Some(handle) => handle.send_chat(text).err(),
            None => Some(duet_call::ChatError::Ended),
        };
        if let Some(err) = refused {
            let notice = CallEvent::Notice(format!("message not sent: {err}"));
            self.status.apply(&notice, Instant::now());
        }
    }

    /// The chat's messages.
    pub fn chat(&self) -> &ChatHistory {
        &self.chat
    }

    /// The chat's messages, to mark them read.
    pub fn chat_mut(&mut self) -> &mut ChatHistory {
        &mut self.chat
    }

    /// Shares the screen instead of the camera (or whatever was sent), or
    /// goes back to it; the call goes on. Where no screen can be shared (no
    /// display at all) a notice says why and nothing changes; on Wayland the
    /// desktop portal asks which screen, and its refusal comes as a notice.
    pub fn toggle_screen_share(&mut self) {
        if !self.config.video.is_screen()
            && let Err(err) = duet_media::screen::this_sessions_screen()
        {
            self.status
                .apply(&CallEvent::Notice(err.to_string()), Instant::now());
            return;
        }
        let next = self.screen_share.pressed(&self.config.video);
        self.switch_video(next);
    }

    /// A switch to `asked` failed (the portal's dialog declined, say): the
    /// source before it is still sent, and the controls say so again.
    fn video_not_switched(&mut self, asked: &VideoSpec) {
        if let Some(sent) = self.screen_share.refused(asked, &self.config.video) {
            self.config.video = sent;
        }
    }

    /// Sends another video source, now and in later calls.
    pub fn switch_video(&mut self, spec: VideoSpec) {
        if let Some(handle) = &self.handle {
            handle.switch_video(spec.clone());
        }
        self.config.video = spec;
    }

    /// Sends another audio source, now and in later calls.
    pub fn switch_audio(&mut self, spec: AudioSpec) {
        if let Some(handle) = &self.handle {
            handle.switch_audio(spec.clone());
        }
        self.config.audio = spec;
    }

    /// Plays the other person on another speaker (`None`: the default one).
    pub fn switch_speaker(&mut self, name: Option<String>) {
        if let Some(handle) = &self.handle {
            handle.switch_speaker(name.clone());
        }
        self.config.audio_output = AudioOutput::Speaker(name);
    }

    /// Switches the microphone processing, in this call and the next.
    pub fn set_processing(&mut self, settings: duet_media::ProcessingSettings) {
        if let Some(handle) = &self.handle {
            handle.set_processing(settings);
        }
        self.config.processing = settings;
    }

    /// Server and room for the next call; an empty room is a new one
    /// (`crate::invitation`), except for a callee, who must join one.
    pub fn set_destination(&mut self, server: &str, room: &str) {
        self.config.server = server.trim().to_owned();
        let room = room.trim();
        self.config.room = if room.is_empty() && self.config.role != RoleRequest::Callee {
            crate::invitation::new_room_name()
        } else {
            room.to_owned()
        };
    }

    /// The call's settings.
    pub fn config(&self) -> &CallConfig {
        &self.config
    }

    /// Where the call is.
    pub fn status(&self) -> &CallStatus {
        &self.status
    }

    /// The microphone is muted.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// The camera is off.
    pub fn camera_off(&self) -> bool {
        self.camera_off
    }

    /// A session is running.
    pub fn running(&self) -> bool {
        self.running
    }

    /// A call connected at least once.
    pub fn ever_connected(&self) -> bool {
        self.ever_connected
    }

    /// Why the last attempt failed, if it did.
    pub fn last_error(&self) -> Option<&CallError> {
        self.last_error.as_ref()
    }

    /// How long the current call has been connected.
    pub fn connected_for(&self, now: Instant) -> Option<Duration> {
        match self.status.stage() {
            super::status::Stage::InCall { since } => Some(now.saturating_duration_since(*since)),
            _ => None,
        }
    }

    /// The stats overlay's figures.
    pub fn stats(&self) -> Option<&StatsView> {
        self.meter.view()
    }

    /// A call connected and then the other person left (hung up).
    pub fn peer_left(&self) -> bool {
        self.peer_left
    }

    /// Why the report could not be written, if it could not.
    pub fn report_failure(&self) -> Option<&str> {
        self.report_failure.as_deref()
    }

    /// Fetches the ended call's report from the session and writes it.
    fn write_report(&mut self, handle: &CallHandle) {
        let Some(path) = &self.report_to else { return };
        let (tx, rx) = std_mpsc::channel();
        let handle = handle.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(handle.report().await);
        });
        let written = match rx.recv_timeout(REPORT_WAIT) {
            Ok(Some(report)) => crate::call_command::write_report(path, &report),
            _ => Err(anyhow::anyhow!("the call's report could not be read")),
        };
        match written {
            Ok(()) => self.report_failure = None,
            Err(err) => {
                tracing::warn!("{err:#}");
                self.report_failure = Some(format!("{err:#}"));
            }
        }
    }

    /// The remote picture and the self-view, as the view draws them. The
    /// remote picture's display latency is measured when it carries stamps.
    pub fn pictures(&mut self) -> (Option<Picture>, Option<Picture>) {
        let latency_to = self.handle.clone().filter(|_| self.remote_stamped);
        let remote = match (&mut self.remote, self.status.has_remote_picture()) {
            (Some(feed), true) => feed.newest().map(|(frame, version)| {
                self.gpu
                    .picture(self.remote_id, frame, version, false, latency_to)
            }),
            _ => None,
        };
        let local = self
            .local
            .as_mut()
            .and_then(VideoFeed::newest)
            .map(|(frame, version)| self.gpu.picture(self.local_id, frame, version, true, None));
        (remote, local)
    }
}
