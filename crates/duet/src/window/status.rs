//! Where a call is, in words. [`CallStatus`] is worked out from the session's
//! events alone (no I/O, no drawing), so every sentence the window can show is
//! unit-tested here and the window only renders [`StatusLine`]s.

use std::time::{Duration, Instant};

use duet_call::{CallError, CallEvent, CallPhase, VerificationCode};
use duet_signal::{ClientError, ErrorCode, Role, RoleRequest};

use crate::invitation::Invitation;

/// The stage of one call attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Opening devices and connecting to the signaling server.
    ConnectingToServer,
    /// In the room, alone.
    Waiting,
    /// The other person is here; offer, answer and ICE are under way.
    Connecting,
    /// Media flows.
    InCall {
        /// When this call connected, for the timer.
        since: Instant,
    },
    /// The other person left or hung up; still in the room.
    PeerLeft,
    /// The connection dropped; trying again while the other person is there.
    ConnectionLost,
    /// The network under a call went away; the same call comes back by
    /// itself when it returns (ICE restart).
    Reconnecting {
        /// When the call connected, for the timer it keeps.
        since: Instant,
    },
    /// We hung up; nothing runs.
    Ended,
    /// The call could not be made, or stopped with an error.
    Failed(Problem),
}

/// Something that went wrong, and what the person can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What happened, in plain words.
    pub what: String,
    /// What to do next.
    pub next: String,
}

/// How a status line should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something is under way.
    Busy,
    /// All is well.
    Good,
    /// Needs attention but recovers by itself.
    Warning,
    /// Needs the person.
    Error,
}

/// The status line: a headline and a sentence under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// Short: where the call is.
    pub headline: String,
    /// Longer: what is happening or what to do.
    pub detail: String,
    /// Colour.
    pub tone: Tone,
}

/// Everything the window says about one end of a call.
#[derive(Debug, Clone)]
pub struct CallStatus {
    server: String,
    room: String,
    asked_role: RoleRequest,
    role: Option<Role>,
    stage: Stage,
    /// `Some(cause)` while the signaling client reconnects.
    signaling_lost: Option<String>,
    notices: Vec<String>,
    remote_picture: bool,
    /// The current connection's code, for the two people to compare.
    verification: Option<VerificationCode>,
}

/// Notices kept for display; older ones scroll away.
const MAX_NOTICES: usize = 3;

impl CallStatus {
    /// A call about to start against `server`, in `room`, asking for `role`.
    pub fn new(server: &str, room: &str, role: RoleRequest) -> CallStatus {
        CallStatus {
            server: server.to_owned(),
            room: room.to_owned(),
            asked_role: role,
            role: None,
            stage: Stage::ConnectingToServer,
            signaling_lost: None,
            notices: Vec::new(),
            remote_picture: false,
            verification: None,
        }
    }

    /// The stage.
    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// Device fallbacks and other things the person should know, newest last.
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// How the other person joins this call.
    pub fn invitation(&self) -> Invitation {
        let role = match self.role {
            Some(Role::Caller) => RoleRequest::Caller,
            Some(Role::Callee) => RoleRequest::Callee,
            None => self.asked_role,
        };
        Invitation::new(&self.server, &self.room, role)
    }

    /// In the room, alone (or again, after the other person left): the
    /// invitation is worth passing on.
    pub fn waiting(&self) -> bool {
        matches!(self.stage, Stage::Waiting | Stage::PeerLeft) && self.signaling_lost.is_none()
    }

    /// The verification code of the call that is on, to compare aloud.
    pub fn verification(&self) -> Option<&VerificationCode> {
        self.verification.as_ref().filter(|_| self.in_call())
    }

    /// A call is on: media flows, or its path is being brought back.
    pub fn in_call(&self) -> bool {
        matches!(
            self.stage,
            Stage::InCall { .. } | Stage::Reconnecting { .. }
        )
    }

    /// Nothing runs: the person may change the server and room and call (again).
    pub fn is_over(&self) -> bool {
        matches!(self.stage, Stage::Ended | Stage::Failed(_))
    }

    /// The remote picture of the current call is on screen.
    pub fn has_remote_picture(&self) -> bool {
        self.remote_picture && self.in_call()
    }

    /// Takes one session event into account.
    pub fn apply(&mut self, event: &CallEvent, now: Instant) {
        match event {
            CallEvent::Joined { room, role, .. } => {
                self.room.clone_from(room);
                self.role = Some(*role);
                self.signaling_lost = None;
                if self.stage == Stage::ConnectingToServer {
                    self.stage = Stage::Waiting;
                }
            }
            CallEvent::Reconnecting { attempt, cause, .. } => {
                self.signaling_lost = Some(format!("{cause} (attempt {attempt})"));
            }
            CallEvent::Phase(phase) => {
                self.stage = match phase {
                    CallPhase::WaitingForPeer => Stage::Waiting,
                    CallPhase::PeerPresent(_) | CallPhase::Connecting => match self.stage {
                        // A re-offer on a live call is not a new call.
                        Stage::InCall { since } => Stage::InCall { since },
                        _ => Stage::Connecting,
                    },
                    CallPhase::Connected => match self.stage {
                        Stage::InCall { since } | Stage::Reconnecting { since } => {
                            Stage::InCall { since }
                        }
                        _ => Stage::InCall { since: now },
                    },
                    CallPhase::Reconnecting => match self.stage {
                        Stage::InCall { since } | Stage::Reconnecting { since } => {
                            Stage::Reconnecting { since }
                        }
                        _ => Stage::Reconnecting { since: now },
                    },
                    CallPhase::PeerLeft => Stage::PeerLeft,
                    CallPhase::ConnectionLost => Stage::ConnectionLost,
                    CallPhase::HungUp => Stage::Ended,
                };
                if !self.in_call() {
                    self.remote_picture = false;
                }
            }
            CallEvent::ConnectionState(_)
            | CallEvent::Chat(_)
            | CallEvent::VideoKept(_)
            | CallEvent::ScreenEnded => {}
            CallEvent::FirstRemoteFrame => self.remote_picture = true,
            CallEvent::Verification(code) => self.verification = Some(code.clone()),
            CallEvent::Notice(text) | CallEvent::SetupFailed(text) => {
                if self.notices.last() != Some(text) {
                    self.notices.push(text.clone());
                }
                if self.notices.len() > MAX_NOTICES {
                    self.notices.remove(0);
                }
            }
            CallEvent::Ended(result) => {
                self.signaling_lost = None;
                self.remote_picture = false;
                self.stage = match result {
                    Ok(()) => Stage::Ended,
                    Err(err) => Stage::Failed(self.problem(err)),
                };
            }
        }
    }

    /// The call could not start.
    pub fn fail(&mut self, err: &CallError) {
        self.stage = Stage::Failed(self.problem(err));
        self.remote_picture = false;
    }

    /// A fresh attempt, possibly with another server and room.
    pub fn restart(&mut self, server: &str, room: &str) {
        *self = CallStatus {
            notices: std::mem::take(&mut self.notices),
            ..CallStatus::new(server, room, self.asked_role)
        };
    }

    /// What the status line says now.
    pub fn line(&self, now: Instant) -> StatusLine {
        let (headline, detail, tone) = match &self.stage {
            Stage::ConnectingToServer => (
                "Connecting to the server…".to_owned(),
                format!("Signaling server {}", self.server),
                Tone::Busy,
            ),
            Stage::Waiting => (
                "Waiting for the other person".to_owned(),
                format!(
                    "Room “{}”. They join with: {}",
                    self.room,
                    self.invitation().command()
                ),
                Tone::Busy,
            ),
            Stage::Connecting => (
                "Connecting…".to_owned(),
                "The other person is here; setting up the call.".to_owned(),
                Tone::Busy,
            ),
            Stage::InCall { since } => (
                format!("In call · {}", clock(now.saturating_duration_since(*since))),
                match &self.signaling_lost {
                    Some(_) => "The signaling server is gone; the call goes on while Duet reconnects to it.".to_owned(),
                    None => format!("Room “{}”", self.room),
                },
                if self.signaling_lost.is_some() { Tone::Warning } else { Tone::Good },
            ),
            Stage::PeerLeft => (
                "The other person left".to_owned(),
                format!("Waiting in room “{}” for someone to join.", self.room),
                Tone::Warning,
            ),
            Stage::ConnectionLost => (
                "Connection lost — reconnecting…".to_owned(),
                "Nothing arrives from the other person; trying to reach them again.".to_owned(),
                Tone::Warning,
            ),
            Stage::Reconnecting { since } => (
                format!("Reconnecting… {}", clock(now.saturating_duration_since(*since))),
                "The network went away; the call comes back by itself when it returns.".to_owned(),
                Tone::Warning,
            ),
            Stage::Ended => (
                "Call ended".to_owned(),
                "Press H or Call to call again.".to_owned(),
                Tone::Busy,
            ),
            Stage::Failed(problem) => (problem.what.clone(), problem.next.clone(), Tone::Error),
        };
        // Reconnecting to the server outside a call changes the headline itself.
        if let (Some(cause), false) = (&self.signaling_lost, self.in_call() || self.is_over()) {
            return StatusLine {
                headline: "Reconnecting to the server…".to_owned(),
                detail: format!("Lost {}: {cause}", self.server),
                tone: Tone::Warning,
            };
        }
        StatusLine {
            headline,
            detail,
            tone,
        }
    }

    fn problem(&self, err: &CallError) -> Problem {
        let room = &self.room;
        let pick_room = "Pick another room in Settings, then press Call.";
        match err {
            CallError::Signaling(ClientError::Rejected { code, .. }) => match code {
                ErrorCode::RoomFull => Problem {
                    what: format!("Room “{room}” is full: two people are already in it."),
                    next: pick_room.to_owned(),
                },
                ErrorCode::RoleTaken => Problem {
                    what: format!(
                        "Someone in room “{room}” already joined as the {}.",
                        self.asked_role
                    ),
                    next: "Join as the other role (duet caller / duet callee), or pick another room in Settings.".to_owned(),
                },
                ErrorCode::BadRoom => bad_room(room),
                _ => Problem {
                    what: format!("The server refused us: {err}"),
                    next: "Press Call to try again.".to_owned(),
                },
            },
            CallError::Signaling(ClientError::BadRoom(_)) => bad_room(room),
            CallError::Signaling(ClientError::BadUrl { .. }) => Problem {
                what: format!("“{}” is not a server address.", self.server),
                next: "Enter one like ws://host:8787 in Settings, then press Call.".to_owned(),
            },
            CallError::Signaling(_) => Problem {
                what: format!("Cannot reach the server at {}.", self.server),
                next: "Check the address in Settings, or start a server with `duet serve`; then press Call.".to_owned(),
            },
            CallError::Media(reason) => Problem {
                what: format!("Your camera or microphone failed: {reason}"),
                next: "Choose other devices in Settings, then press Call.".to_owned(),
            },
            CallError::NoMedia => Problem {
                what: "Nothing to send: video and audio are both off.".to_owned(),
                next: "Choose a camera or a microphone in Settings, then press Call.".to_owned(),
            },
            CallError::BadIceServer(_) => Problem {
                what: err.to_string(),
                next: "Fix the --ice address and start Duet again.".to_owned(),
            },
            CallError::WebRtc(reason) => Problem {
                what: format!("The call could not be set up: {reason}"),
                next: "Press Call to try again.".to_owned(),
            },
        }
    }
}

fn bad_room(room: &str) -> Problem {
    Problem {
        what: format!("“{room}” cannot be used as a room name."),
        next: "Use 1 to 64 letters, digits, '-' or '_' in Settings, then press Call.".to_owned(),
    }
}

/// `m:ss`, or `h:mm:ss` after an hour.
pub fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_signal::PeerId;

    fn joined(role: Role) -> CallEvent {
        CallEvent::Joined {
            room: "kitchen".into(),
            role,
            resumed: false,
        }
    }

    fn status() -> CallStatus {
        CallStatus::new("ws://example.test:8787", "kitchen", RoleRequest::Caller)
    }

    #[test]
    fn a_call_walks_from_the_server_to_the_room_to_the_call() {
        let t0 = Instant::now();
        let mut status = status();
        assert_eq!(status.line(t0).headline, "Connecting to the server…");
        status.apply(&joined(Role::Caller), t0);
        let line = status.line(t0);
        assert_eq!(line.headline, "Waiting for the other person");
        assert!(
            line.detail
                .contains("duet callee --server ws://example.test:8787 --room kitchen"),
            "{line:?}"
        );
        status.apply(
            &CallEvent::Phase(CallPhase::PeerPresent(PeerId("p2".into()))),
            t0,
        );
        assert_eq!(status.line(t0).headline, "Connecting…");
        status.apply(&CallEvent::Phase(CallPhase::Connected), t0);
        let line = status.line(t0 + Duration::from_secs(75));
        assert_eq!(line.headline, "In call · 1:15");
        assert_eq!(line.tone, Tone::Good);
        assert!(!status.has_remote_picture());
        status.apply(&CallEvent::FirstRemoteFrame, t0);
        assert!(status.has_remote_picture());
    }

    #[test]
    fn a_callee_tells_how_the_caller_joins() {
        let mut status = CallStatus::new("ws://h:1", "r", RoleRequest::Auto);
        status.apply(
            &CallEvent::Joined {
                room: "r".into(),
                role: Role::Callee,
                resumed: false,
            },
            Instant::now(),
        );
        assert!(
            status
                .line(Instant::now())
                .detail
                .contains("duet caller --server ws://h:1 --room r")
        );
    }

    #[test]
    fn losing_the_server_mid_call_keeps_the_call_and_its_timer() {
        let t0 = Instant::now();
        let mut status = status();
        status.apply(&joined(Role::Caller), t0);
        status.apply(&CallEvent::Phase(CallPhase::Connected), t0);
        status.apply(
            &CallEvent::Reconnecting {
                attempt: 2,
                retry_in: Duration::from_millis(400),
                cause: "connection reset".into(),
            },
            t0,
        );
        let line = status.line(t0 + Duration::from_secs(5));
        assert_eq!(line.headline, "In call · 0:05");
        assert_eq!(line.tone, Tone::Warning);
        assert!(line.detail.contains("reconnects"));
        status.apply(
            &CallEvent::Joined {
                room: "kitchen".into(),
                role: Role::Caller,
                resumed: true,
            },
            t0,
        );
        assert_eq!(status.line(t0).tone, Tone::Good);
    }

    #[test]
    fn losing_the_server_while_waiting_says_reconnecting() {
        let t0 = Instant::now();
        let mut status = status();
        status.apply(&joined(Role::Caller), t0);
        status.apply(
            &CallEvent::Reconnecting {
                attempt: 1,
                retry_in: Duration::from_millis(200),
                cause: "connection reset".into(),
            },
            t0,
        );
        let line = status.line(t0);
        assert_eq!(line.headline, "Reconnecting to the server…");
        assert!(line.detail.contains("connection reset (attempt 1)"));
    }

    #[test]
    fn peer_left_connection_lost_and_hang_up_each_have_their_words() {
        let t0 = Instant::now();
        let mut status = status();
        status.apply(&joined(Role::Caller), t0);
        status.apply(&CallEvent::Phase(CallPhase::Connected), t0);
        status.apply(&CallEvent::FirstRemoteFrame, t0);
        status.apply(&CallEvent::Phase(CallPhase::PeerLeft), t0);
        assert_eq!(status.line(t0).headline, "The other person left");
        assert!(!status.has_remote_picture());
        status.apply(&CallEvent::Phase(CallPhase::ConnectionLost), t0);
        assert_eq!(status.line(t0).headline, "Connection lost — reconnecting…");
        status.apply(&CallEvent::Phase(CallPhase::HungUp), t0);
        status.apply(&CallEvent::Ended(Ok(())), t0);
        assert_eq!(status.line(t0).headline, "Call ended");
        assert!(status.is_over());
    }

    #[test]
    fn refusals_and_unreachable_servers_say_what_to_do() {
        let cases = [
            (
                CallError::Signaling(ClientError::Rejected {
                    code: ErrorCode::RoomFull,
                    message: "full".into(),
                }),
                "Room “kitchen” is full",
                "another room",
            ),
            (
                CallError::Signaling(ClientError::Rejected {
                    code: ErrorCode::RoleTaken,
                    message: "taken".into(),
                }),
                "already joined as the caller",
                "other role",
            ),
            (
                CallError::Signaling(ClientError::Unreachable {
                    url: "ws://example.test:8787/ws".into(),
                    reason: "refused".into(),
                }),
                "Cannot reach the server at ws://example.test:8787",
                "duet serve",
            ),
            (
                CallError::Signaling(ClientError::BadRoom("bad".into())),
                "cannot be used as a room name",
                "letters, digits",
            ),
            (CallError::NoMedia, "Nothing to send", "Settings"),
        ];
        for (err, what, next) in cases {
            let mut status = status();
            status.fail(&err);
            let line = status.line(Instant::now());
            assert!(line.headline.contains(what), "{line:?}");
            assert!(line.detail.contains(next), "{line:?}");
            assert_eq!(line.tone, Tone::Error);
            assert!(status.is_over());
        }
    }

    #[test]
    fn notices_are_kept_once_and_only_the_newest_few() {
        let mut status = status();
        for text in ["a", "a", "b", "c", "d"] {
            status.apply(&CallEvent::Notice(text.into()), Instant::now());
        }
        assert_eq!(status.notices(), ["b", "c", "d"]);
        status.restart("ws://other:1", "den");
        assert_eq!(status.notices(), ["b", "c", "d"]);
        assert!(status.line(Instant::now()).detail.contains("ws://other:1"));
        assert_eq!(*status.stage(), Stage::ConnectingToServer);
    }

    #[test]
    fn a_failed_call_setup_is_shown_with_the_notices() {
        let mut status = status();
        let failed = "call setup failed: WebRTC: io error: No such device (os error 19)";
        status.apply(&CallEvent::SetupFailed(failed.into()), Instant::now());
        assert_eq!(status.notices(), [failed]);
    }

    #[test]
    fn the_clock_shows_hours_only_when_needed() {
        assert_eq!(clock(Duration::from_secs(59)), "0:59");
        assert_eq!(clock(Duration::from_secs(3_725)), "1:02:05");
    }
}
