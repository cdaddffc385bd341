//! `duet caller`, `duet callee` and `duet call`: the call options of `cli.md`
//! and the headless mode, which prints progress lines, hangs up after
//! `--duration`, and writes the report of everything it measured.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duet_call::{
    AudioOutput, CallConfig, CallError, CallEvent, CallHandle, CallPhase, CallReport, ChatAuthor,
    ChatMessage, ChatState, ConnectionState, start_call,
};
use duet_media::ProcessingSettings;
use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::{ClientError, ErrorCode, RoleRequest};

use crate::invitation::{Invitation, new_room_name};

/// The call options of `cli.md`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    /// Signaling server, ws:// or wss://; /ws is appended when the URL has no path.
    #[arg(long, value_name = "URL", default_value = "ws://127.0.0.1:8787")]
    pub server: String,
    /// Room to join. A caller without one makes a new room nobody can guess
    /// and prints how the other person joins it; a callee needs one.
    #[arg(long, value_name = "NAME")]
    pub room: Option<String>,
    /// Video to send: camera, camera:N, test, test:noisy, screen, screen:N, a .y4m file, or none.
    #[arg(long, value_name = "SRC", default_value = "camera")]
    pub video: VideoSpec,
    /// Audio to send: mic, mic:NAME, test, a .wav file, or none.
    #[arg(long, value_name = "SRC", default_value = "mic")]
    pub audio: AudioSpec,
    /// Frequency of the test beeps (300–3000 Hz).
    #[arg(long, value_name = "F", default_value_t = 880.0)]
    pub tone_hz: f32,
    /// Capture size asked for.
    #[arg(long, value_name = "WxH", default_value = "640x480", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Capture rate asked for.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// Starting and maximum video bitrate in kbit/s (default: chosen from the size).
    #[arg(long, value_name = "KBPS", value_parser = clap::value_parser!(u32).range(150..=20_000))]
    pub bitrate: Option<u32>,
    /// STUN or TURN server (stun:HOST:PORT, turn:USER:PASS@HOST:PORT); repeatable.
    /// The password is what follows the last `:` before `@` (a user may hold
    /// colons); either part may be percent-encoded.
    #[arg(long, value_name = "URL")]
    pub ice: Vec<String>,
    /// `relay`: only relayed candidates, so the other person never learns
    /// this machine's addresses (needs a TURN server).
    #[arg(long, value_name = "all|relay", default_value = "all", value_parser = ["all", "relay"])]
    pub ice_transport: String,
    /// No window and no sound device: run the call, print progress lines, exit.
    #[arg(long)]
    pub headless: bool,
    /// Hang up (send bye) after this long connected, then exit.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write the report of docs/cli.md here when the call ends (with a window
    /// too, which then also measures video latency where pictures are shown).
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Write the remote audio, as decoded, to a 48 kHz mono WAV.
    #[arg(long, value_name = "FILE")]
    pub record_audio: Option<PathBuf>,
    /// Write the last decoded remote video frame as PNG.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Play received audio on this speaker (`default`: the system's). With a
    /// window, the one to start with; headless, a speaker is used only when named.
    #[arg(long, value_name = "NAME")]
    pub speaker: Option<String>,
    /// Headless without --speaker: make the virtual speaker's clock run this
    /// many parts per million fast (negative: slow), as a real sound card's
    /// may. For testing how the playout absorbs clock drift.
    #[arg(long, value_name = "PPM", default_value_t = 0, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-50_000..=50_000))]
    pub output_clock_skew: i32,
    /// Send the microphone without echo cancellation.
    #[arg(long)]
    pub no_echo_cancel: bool,
    /// Send the microphone without noise suppression.
    #[arg(long)]
    pub no_noise_suppression: bool,
    /// Send the microphone without automatic gain control.
    #[arg(long)]
    pub no_auto_gain: bool,
    /// Headless: once the call connects, send each line of FILE as a chat
    /// message (`-`: standard input, each line as it comes). Messages both
    /// ways are printed as `chat:` progress lines.
    #[arg(long, value_name = "FILE", requires = "headless")]
    pub chat: Option<PathBuf>,
    /// Headless: SECS after the call first connects, send video from SRC
    /// instead (a --video value), without dropping the call; repeatable
    /// (e.g. `--switch-video 2:screen --switch-video 5:camera`).
    #[arg(long, value_name = "SECS:SRC", requires = "headless", value_parser = parse_switch)]
    pub switch_video: Vec<VideoSwitch>,
    /// Give up when no call has connected after this many seconds (headless).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub give_up_after: f64,
}

fn parse_size(value: &str) -> Result<(u32, u32), String> {
    let (w, h) = value
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{value:?} is not a size: use WIDTHxHEIGHT, e.g. 640x480"))?;
    let w: u32 = w.parse().map_err(|_| format!("bad width in {value:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height in {value:?}"))?;
    if !(16..=4096).contains(&w) || !(16..=4096).contains(&h) {
        return Err(format!("{value:?}: width and height must be 16 to 4096"));
    }
    Ok((w, h))
}

/// One `--switch-video SECS:SRC`.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoSwitch {
    /// Seconds after the call first connects.
    at: f64,
    /// What to send from then on.
    spec: VideoSpec,
    /// SRC as given, for the progress line.
    source: String,
}

fn parse_switch(value: &str) -> Result<VideoSwitch, String> {
    let (at, source) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?}: use SECS:SRC, e.g. 2:screen"))?;
    let at: f64 = at
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| format!("{value:?}: {at:?} is not a number of seconds"))?;
    Ok(VideoSwitch {
        at,
        spec: source.parse()?,
        source: source.to_owned(),
    })
}

/// Exit statuses of a call, as the README documents them.
pub mod exit {
    /// Something else went wrong (bad arguments, a file that cannot be written).
    pub const FAILURE: u8 = 1;
    /// The signaling server could not be reached.
    pub const UNREACHABLE: u8 = 3;
    /// The server refused us: room full, role taken, bad room name.
    pub const REFUSED: u8 = 4;
    /// No call connected in time (ICE failed, or no peer came).
    pub const NOT_CONNECTED: u8 = 5;
    /// No media: nothing to send, or a source or codec failed.
    pub const NO_MEDIA: u8 = 6;
}

impl CallArgs {
    /// The room to join: the one given, or (not as callee) a new one, with
    /// the invitation to it printed for the person to pass on.
    fn resolve_room(&mut self, role: RoleRequest) -> Result<(), Failure> {
        if self.room.is_some() {
            return Ok(());
        }
        if role == RoleRequest::Callee {
            return Err(Failure::new(
                exit::FAILURE,
                "a callee needs --room NAME: the caller shows the room it made and the command that joins it",
            ));
        }
        let room = new_room_name();
        let invitation = Invitation::new(&self.server, &room, role);
        say(format!(
            "new room {room} (only people who know its name can join)"
        ));
        say(format!(
            "the other person joins with: {}",
            invitation.command()
        ));
        if let Some(link) = invitation.browser_link() {
            say(format!("or in a browser: {link}"));
        }
        self.room = Some(room);
        Ok(())
    }

    fn config(&self, role: RoleRequest) -> CallConfig {
        let room = self.room.as_deref().unwrap_or_default();
        let mut config = CallConfig::new(&self.server, room, role);
        config.video = self.video.clone();
        config.audio = self.audio.clone();
        config.tone_hz = self.tone_hz;
        (config.width, config.height) = self.size;
        config.fps = self.fps;
        // `--bitrate` bounds every source; without it a camera gets about
        // 0.15 bit per pixel at 30 fps (1.4 Mbit/s at 640x480, what a
        // camera's noisy picture needs to keep its frame rate; 4 at
        // 1280x720), and a screen, shared from the start or mid-call, more.
        config.max_video_bps = match self.bitrate {
            Some(kbps) => kbps * 1000,
            None => ((u64::from(self.size.0) * u64::from(self.size.1) * u64::from(self.fps)) * 3
                / 20)
                .clamp(300_000, 4_000_000) as u32,
        };
        // Given, it is where every connection starts too (`docs/cli.md`).
        config.start_at_max_video_bps = self.bitrate.is_some();
        config.max_screen_bps = match self.bitrate {
            Some(kbps) => kbps * 1000,
            None => duet_call::DEFAULT_SCREEN_BPS,
        };
        config.ice_servers = self.ice.clone();
        config.relay_only = self.ice_transport == "relay";
        let named_speaker = self
            .speaker
            .as_ref()
            .map(|name| Some(name.clone()).filter(|name| name != "default"));
        config.audio_output = match (self.headless, named_speaker) {
            (_, Some(name)) => AudioOutput::Speaker(name),
            (true, None) => AudioOutput::Virtual {
                skew_ppm: self.output_clock_skew,
            },
            (false, None) => AudioOutput::Speaker(None),
        };
        config.record_audio = self.record_audio.clone();
        config.processing = ProcessingSettings {
            echo_cancel: !self.no_echo_cancel,
            noise_suppression: !self.no_noise_suppression,
            auto_gain: !self.no_auto_gain,
        };
        config
    }
}

/// Runs a call, in a window or headless; returns the process exit status.
pub fn run(runtime: &tokio::runtime::Runtime, mut args: CallArgs, role: RoleRequest) -> ExitCode {
    if let Err(failure) = args.resolve_room(role) {
        eprintln!("duet: {}", failure.reason);
        return ExitCode::from(failure.status);
    }
    if !args.headless {
        let close_after = args.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
        let outcome = crate::window::run_call_window(
            runtime,
            args.config(role),
            close_after,
            args.stats_json.clone(),
        );
        return window_exit(outcome);
    }
    match runtime.block_on(headless(&args, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("duet: {}", failure.reason);
            ExitCode::from(failure.status)
        }
    }
}

/// `duet demo`; returns the process exit status.
pub fn demo(runtime: &tokio::runtime::Runtime) -> ExitCode {
    window_exit(crate::window::run_demo(runtime))
}

/// The exit status of a window run: 0 when a call connected, otherwise why not.
fn window_exit(outcome: anyhow::Result<crate::window::WindowOutcome>) -> ExitCode {
    match outcome {
        Ok(crate::window::WindowOutcome {
            report_failure: Some(reason),
            ..
        }) => {
            eprintln!("duet: {reason}");
            ExitCode::from(exit::FAILURE)
        }
        Ok(outcome) if outcome.connected => ExitCode::SUCCESS,
        Ok(outcome) => {
            let (status, reason) = match &outcome.failure {
                Some(err) => (classify(err), err.to_string()),
                None => (
                    exit::NOT_CONNECTED,
                    "the window was closed before a call connected".to_owned(),
                ),
            };
            eprintln!("duet: {reason}");
            ExitCode::from(status)
        }
        Err(err) => {
            eprintln!("duet: {err:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Why a headless run failed, and its exit status.
#[derive(Debug)]
struct Failure {
    reason: String,
    status: u8,
}

impl Failure {
    fn new(status: u8, reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            status,
        }
    }
}

fn classify(err: &CallError) -> u8 {
    match err {
        CallError::Signaling(ClientError::Rejected {
            code: ErrorCode::RoomFull | ErrorCode::RoleTaken | ErrorCode::BadRoom,
            ..
        }) => exit::REFUSED,
        CallError::Signaling(ClientError::BadRoom(_)) => exit::REFUSED,
        CallError::Signaling(_) => exit::UNREACHABLE,
        CallError::Media(_) | CallError::NoMedia => exit::NO_MEDIA,
        CallError::BadIceServer(_) => exit::FAILURE,
        CallError::WebRtc(_) => exit::NOT_CONNECTED,
    }
}

/// One progress line on stdout, flushed at once (scripts read it live).
fn say(line: impl AsRef<str>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

async fn headless(args: &CallArgs, role: RoleRequest) -> Result<(), Failure> {
    let config = args.config(role);
    let mut chat_lines = ChatLines::open(args.chat.as_deref())?;
    say(format!("connecting to {}", args.server));
    let (call, mut events) = start_call(config)
        .await
        .map_err(|err| Failure::new(classify(&err), err.to_string()))?;
    let started = Instant::now();
    let give_up = Duration::from_secs_f64(args.give_up_after.max(1.0));
    let duration = args.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut connected_at: Option<Instant> = None;
    let mut ever_connected = false;
    // A call that was up and is gone: since when, and whether the peer left
    // (the server said so) or the path to it died.
    let mut gone: Option<(Instant, CallPhase)> = None;
    // Why the last attempt to set the call up failed, if it did.
    let mut setup_failure: Option<String> = None;
    let mut last_state: Option<ConnectionState> = None;
    let mut failure: Option<Failure> = None;
    let mut hung_up = false;
    let mut ever_switched = false;
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);

    loop {
        let deadline = match (connected_at, duration, ever_connected) {
            (Some(at), Some(duration), _) => Some(at + duration),
            (None, _, false) => Some(started + give_up),
            // Nobody is waiting on a headless run: a call that is gone and
            // does not come back within the same time ends it.
            (None, _, true) => gone.as_ref().map(|(since, _)| *since + give_up),
            _ => None,
        };
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    CallEvent::Joined { room, role, resumed } => {
                        if resumed {
                            say(format!("rejoined room {room} as {role}"));
                        } else {
                            say(format!("joined room {room} as {role}"));
                        }
                    }
                    CallEvent::Reconnecting { attempt, retry_in, cause } => say(format!(
                        "signaling lost ({cause}); reconnecting, attempt {attempt} in {} ms",
                        retry_in.as_millis()
                    )),
                    CallEvent::Phase(phase) => match phase {
                        CallPhase::WaitingForPeer => say("waiting for the other peer"),
                        CallPhase::PeerPresent(id) => say(format!("peer present ({id})")),
                        CallPhase::Connecting => say("connecting"),
                        CallPhase::Connected => {
                            connected_at = Some(Instant::now());
                            ever_connected = true;
                            gone = None;
                            say("connected");
                            chat_lines.start(&call);
                            if !ever_switched {
                                ever_switched = true;
                                schedule_switches(&call, &args.switch_video);
                            }
                        }
                        CallPhase::PeerLeft => {
                            say("peer left");
                            connected_at = None;
                            if ever_connected {
                                gone = Some((Instant::now(), CallPhase::PeerLeft));
                            }
                            // A timed run whose peer hung up first is over: the call ended by bye.
                            if ever_connected && duration.is_some() {
                                hung_up = true;
                                call.hang_up();
                            }
                        }
                        CallPhase::ConnectionLost | CallPhase::Reconnecting => {
                            say(if phase == CallPhase::Reconnecting {
                                "reconnecting"
                            } else {
                                "connection lost"
                            });
                            connected_at = None;
                            // The peer may still be in the room, or the call is being
                            // restarted. If it never comes back, the clock below ends
                            // the run; if the peer also leaves, `peer left` takes over
                            // (and restarts the clock).
                            if ever_connected {
                                gone.get_or_insert((Instant::now(), CallPhase::ConnectionLost));
                            }
                        }
                        CallPhase::HungUp => say("hang-up"),
                    },
                    CallEvent::ConnectionState(state) => {
                        if last_state != Some(state) {
                            say(format!("ice: {state}"));
                            last_state = Some(state);
                        }
                    }
                    CallEvent::FirstRemoteFrame => say("first remote frame"),
                    CallEvent::Verification(code) => say(format!(
                        "verification code: {code} ({}): the same on both sides means nobody is in between",
                        code.names().join(", ")
                    )),
                    CallEvent::Notice(text) => say(format!("notice: {text}")),
                    // The notice before it said why.
                    CallEvent::VideoKept(_) | CallEvent::ScreenEnded => {}
                    CallEvent::Chat(message) => say(chat_line(&message)),
                    CallEvent::SetupFailed(text) => {
                        say(format!("notice: {text}"));
                        setup_failure = Some(text);
                    }
                    CallEvent::Ended(result) => {
                        if let Err(err) = result
                            && failure.is_none()
                        {
                            failure = Some(Failure::new(classify(&err), err.to_string()));
                        }
                        break;
                    }
                }
            }
            _ = sleep, if !hung_up => {
                hung_up = true;
                if let Some((_, how)) = &gone {
                    say(format!("no call again within {} s", give_up.as_secs()));
                    if *how == CallPhase::ConnectionLost {
                        failure = Some(Failure::new(
                            exit::NOT_CONNECTED,
                            format!(
                                "the call was lost and did not come back within {} s",
                                give_up.as_secs()
                            ),
                        ));
                    }
                } else if !ever_connected {
                    let reason = if last_state == Some(ConnectionState::Failed) {
                        "ICE failed: no network path to the other peer".to_owned()
                    } else if let Some(setup) = &setup_failure {
                        format!("no call within {} s: {setup}", give_up.as_secs())
                    } else if last_state.is_none() {
                        format!("no call within {} s: the other peer never came", give_up.as_secs())
                    } else {
                        format!("no call within {} s: the connection never completed", give_up.as_secs())
                    };
                    failure = Some(Failure::new(exit::NOT_CONNECTED, reason));
                }
                call.hang_up();
            }
            _ = &mut shutdown, if !hung_up => {
                hung_up = true;
                call.hang_up();
            }
        }
    }

    let report = call.report().await;
    if let (Some(report), Some(path)) = (&report, &args.stats_json) {
        write_report(path, report)
            .map_err(|err| Failure::new(exit::FAILURE, format!("{err:#}")))?;
    }
    if let Some(path) = &args.snapshot {
        match call.remote_video().latest() {
            Some(frame) => write_png(path, &frame)
                .map_err(|err| Failure::new(exit::FAILURE, format!("{err:#}")))?,
            None => say("notice: no remote picture to snapshot"),
        }
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    if !ever_connected {
        return Err(Failure::new(
            exit::NOT_CONNECTED,
            "the call never connected",
        ));
    }
    Ok(())
}

/// Carries out `--switch-video`, counting from now (the call connected).
fn schedule_switches(call: &CallHandle, switches: &[VideoSwitch]) {
    for switch in switches.iter().cloned() {
        let call = call.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(switch.at)).await;
            say(format!("switching video to {}", switch.source));
            call.switch_video(switch.spec);
        });
    }
}

/// Where `--chat` lines come from, until the call first connects.
enum ChatLines {
    None,
    /// The lines of a file, read before the call (a wrong path is found at once).
    File(Vec<String>),
    Stdin,
    Started,
}

impl ChatLines {
    fn open(path: Option<&Path>) -> Result<ChatLines, Failure> {
        match path {
            None => Ok(ChatLines::None),
            Some(path) if path == Path::new("-") => Ok(ChatLines::Stdin),
            Some(path) => std::fs::read_to_string(path)
                .map(|text| ChatLines::File(text.lines().map(str::to_owned).collect()))
                .map_err(|err| {
                    Failure::new(
                        exit::FAILURE,
                        format!("cannot read the chat lines in {}: {err}", path.display()),
                    )
                }),
        }
    }

    /// Sends the lines (those of stdin as they come), the first time the call connects.
    fn start(&mut self, call: &CallHandle) {
        match std::mem::replace(self, ChatLines::Started) {
            ChatLines::File(lines) => {
                for line in lines {
                    send_chat_line(call, &line);
                }
            }
            ChatLines::Stdin => {
                let call = call.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncBufReadExt as _;
                    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        send_chat_line(&call, &line);
                    }
                });
            }
            ChatLines::None => *self = ChatLines::None,
            ChatLines::Started => {}
        }
    }
}

fn send_chat_line(call: &CallHandle, line: &str) {
    if line.trim().is_empty() {
        return;
    }
    if let Err(err) = call.send_chat(line) {
        say(format!("notice: message not sent: {err}"));
    }
}

/// A chat message as a progress line; the text as a JSON string, so that
/// any text stays on one line and reads back exactly.
fn chat_line(message: &ChatMessage) -> String {
    let text = serde_json::to_string(&message.text).unwrap_or_default();
    match (message.author, message.state) {
        (ChatAuthor::Peer, _) => format!(
            "chat: received #{} sent {} {text}",
            message.id,
            crate::window::chat::utc_time_of_day(message.sent_at_ms)
        ),
        (ChatAuthor::Me, ChatState::Sending) => format!("chat: sending #{} {text}", message.id),
        (ChatAuthor::Me, state) => format!("chat: {} #{}", state.as_str(), message.id),
    }
}

/// Writes `report` as pretty JSON (the `--stats-json` file).
pub(crate) fn write_report(path: &Path, report: &CallReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot serialise the report")?;
    std::fs::write(path, json + "\n")
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

fn write_png(path: &Path, frame: &duet_media::VideoFrame) -> anyhow::Result<()> {
    let rgba = frame.to_rgba().context("cannot convert the snapshot")?;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut encoder =
        png::Encoder::new(std::io::BufWriter::new(file), frame.width(), frame.height());
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .write_image_data(&rgba)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .finish()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines_keep_any_text_on_one_line() {
        let message = ChatMessage {
            id: 3,
            author: ChatAuthor::Peer,
            text: "two\nlines \"quoted\" ✓".into(),
            sent_at_ms: 1_700_000_000_000 + 5_000,
            state: ChatState::Received,
        };
        assert_eq!(
            chat_line(&message),
            r#"chat: received #3 sent 22:13:25 UTC "two\nlines \"quoted\" ✓""#
        );
        let mine = ChatMessage {
            author: ChatAuthor::Me,
            state: ChatState::NotDelivered,
            ..message
        };
        assert_eq!(chat_line(&mine), "chat: not delivered #3");
    }

    #[test]
    fn switches_parse_as_seconds_and_a_source() {
        let parsed = |value: &str| parse_switch(value).map(|s| (s.at, s.spec, s.source));
        assert_eq!(
            parsed("2:screen"),
            Ok((2.0, VideoSpec::Screen(None), "screen".into()))
        );
        assert_eq!(
            parsed("0.5:screen:1"),
            Ok((0.5, VideoSpec::Screen(Some(1)), "screen:1".into()))
        );
        assert_eq!(
            parsed("5:camera"),
            Ok((5.0, VideoSpec::Camera(0), "camera".into()))
        );
        assert!(parse_switch("screen").is_err());
        assert!(parse_switch("-1:test").is_err());
        assert!(parse_switch("2:movie.mp4").is_err());
    }

    #[test]
    fn a_shared_screen_gets_a_higher_bitrate_unless_one_is_given() {
        // The window's Share screen switches mid-call, so every call knows both.
        for video in ["screen", "test"] {
            let config = config_for(&["--video", video]);
            assert_eq!(config.max_screen_bps, duet_call::DEFAULT_SCREEN_BPS);
            assert_eq!(config.max_video_bps, 1_382_400);
        }
        let given = config_for(&["--video", "screen", "--bitrate", "800"]);
        assert_eq!(
            (given.max_video_bps, given.max_screen_bps),
            (800_000, 800_000)
        );
    }

    #[test]
    fn a_given_bitrate_is_where_the_call_starts_else_it_climbs() {
        assert!(!config_for(&["--video", "test"]).start_at_max_video_bps);
        let given = config_for(&["--video", "test", "--bitrate", "800"]);
        assert!(given.start_at_max_video_bps);
    }

    #[test]
    fn sizes_parse_and_nonsense_is_refused() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert_eq!(parse_size("1280X720"), Ok((1280, 720)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x480").is_err());
        assert!(parse_size("axb").is_err());
    }

    /// The call configuration these flags make.
    fn config_for(flags: &[&str]) -> CallConfig {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            call: CallArgs,
        }
        let args = std::iter::once("duet").chain(flags.iter().copied());
        let cli = <Cli as clap::Parser>::try_parse_from(args).expect("flags parse");
        cli.call.config(RoleRequest::Caller)
    }

    fn args_for(flags: &[&str]) -> CallArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            call: CallArgs,
        }
        let args = std::iter::once("duet").chain(flags.iter().copied());
        <Cli as clap::Parser>::try_parse_from(args)
            .expect("flags parse")
            .call
    }

    #[test]
    fn a_caller_without_a_room_makes_a_new_one_and_a_callee_must_name_one() {
        let mut caller = args_for(&["--headless"]);
        caller
            .resolve_room(RoleRequest::Caller)
            .expect("a new room");
        let room = caller.room.clone().expect("a room");
        assert_eq!(room.len(), 19, "{room}");
        assert_eq!(caller.config(RoleRequest::Caller).room, room);

        let mut again = args_for(&["--headless"]);
        again.resolve_room(RoleRequest::Auto).expect("a new room");
        assert_ne!(again.room, Some(room), "every new room is another");

        let mut callee = args_for(&["--headless"]);
        let failure = callee
            .resolve_room(RoleRequest::Callee)
            .expect_err("a callee without a room");
        assert!(failure.reason.contains("--room"), "{}", failure.reason);
        assert_eq!(failure.status, exit::FAILURE);

        let mut named = args_for(&["--room", "kitchen"]);
        named.resolve_room(RoleRequest::Callee).expect("named");
        assert_eq!(named.room.as_deref(), Some("kitchen"));
    }

    fn output_for(flags: &[&str]) -> AudioOutput {
        config_for(flags).audio_output
    }

    #[test]
    fn headless_plays_on_a_virtual_speaker_unless_a_speaker_is_named() {
        assert_eq!(output_for(&["--headless"]), AudioOutput::HEADLESS);
        assert_eq!(
            output_for(&["--headless", "--output-clock-skew", "-5000"]),
            AudioOutput::Virtual { skew_ppm: -5000 }
        );
        assert_eq!(
            output_for(&["--headless", "--speaker", "default"]),
            AudioOutput::Speaker(None)
        );
        assert_eq!(
            output_for(&["--speaker", "duet_a"]),
            AudioOutput::Speaker(Some("duet_a".into()))
        );
        assert_eq!(output_for(&[]), AudioOutput::Speaker(None));
    }

    #[test]
    fn microphone_processing_is_on_unless_each_part_is_switched_off() {
        let processing = |flags: &[&str]| config_for(flags).processing;
        assert_eq!(processing(&[]), ProcessingSettings::default());
        assert_eq!(
            processing(&[
                "--no-echo-cancel",
                "--no-noise-suppression",
                "--no-auto-gain"
            ]),
            ProcessingSettings::OFF
        );
        assert!(!processing(&["--no-echo-cancel"]).echo_cancel);
        assert!(processing(&["--no-echo-cancel"]).auto_gain);
    }
}
