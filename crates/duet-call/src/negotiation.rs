//! The call's rules, without sockets: who offers, when a peer connection is
//! made or dropped, and which remote candidates must wait for a remote
//! description. [`Negotiator`] takes [`NegotiationEvent`]s and returns
//! [`NegotiationAction`]s; the session carries them out.
//!
//! Every peer connection gets a generation number. Events from a connection
//! that has since been replaced carry an old generation and are ignored, so a
//! late candidate or state change of a dropped call can never disturb the next.
//!
//! Time is an input, as in quinn and str0m: every event comes with the moment
//! it happened, [`Negotiator::poll_timeout`] says when the negotiator next
//! wants to be woken, and [`Negotiator::handle_timeout`] wakes it. Its timed
//! rules are the caller's (the callee only ever answers):
//!
//! - An offer not answered within [`ANSWER_TIMEOUT`] is a failed attempt: the
//!   connection is dropped and a fresh one offers again after a pause.
//! - An answered connection not connected within [`CONNECT_TIMEOUT`] is a
//!   failed attempt too. webrtc-rs reports no error for a DTLS handshake
//!   that lost the same flight eight times: the connection stays
//!   "connecting" until ICE fails as well, 14 s to 21 s after the start on
//!   the test network.
//! - A connected connection from which nothing arrives within
//!   [`HEARD_TIMEOUT`] is a failed attempt as well. DTLS can finish on one
//!   side only: when the caller's last flight is lost and the callee's
//!   resends go unanswered, the caller is "connected" and sends, while the
//!   callee waits in "connecting" and sends nothing (seen on the rig at 5 %
//!   loss twice in about 70 calls; the callee gave up after 30 s).
//! - After a failed attempt (no answer, a failed connection, a setup step that
//!   failed) the next offer waits [`RETRY_BACKOFF_FIRST`], doubling with every
//!   further failure up to [`RETRY_BACKOFF_MAX`]. A connected call, or a new
//!   peer, starts the count again: its first offer goes out at once.
//!
//! A connection that was up and whose path died (ICE failed: the network
//! went away, an address changed) is not dropped: the call is
//! "reconnecting" and the caller restarts ICE on it, with a new offer over
//! signaling as soon as signaling is up, again every [`RESTART_INTERVAL`]
//! while no answer brings it back. The callee answers such an offer on the
//! same connection: it knows a restart from a new call by the DTLS
//! fingerprint, which a restart keeps. After [`MAX_RESTARTS`] restarts that
//! did not bring the path back with signaling up, the connection is dropped
//! and the call set up afresh.

use std::time::{Duration, Instant};

use duet_signal::{IceCandidate, PeerId, Role};

/// How long a caller waits for the answer to its offer. A callee answers
/// as soon as the offer arrives, so this covers a lost message or a callee
/// that cannot use the offer, not a slow network.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an answered connection has to connect (ICE and DTLS). On a
/// clean path it takes a few hundred milliseconds, with 5 % loss a few
/// seconds (DTLS resends a lost flight after 1 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connected connection has for the first packet of the other
/// peer's media to arrive. Both sides send from the moment they connect, so
/// on any working path that takes a round trip; a DTLS handshake still being
/// finished on the other side resends its flight after 1, 2 and 4 s.
pub const HEARD_TIMEOUT: Duration = Duration::from_secs(8);

/// How long a restart offer is given to bring the path back before the
/// caller restarts again.
pub const RESTART_INTERVAL: Duration = Duration::from_secs(5);

/// Restarts (offered with signaling up) before the connection is given up.
pub const MAX_RESTARTS: u32 = 4;

/// The pause after the first failed attempt, before the caller offers again.
pub const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// The longest pause between attempts: a peer that comes back is called
/// again within this long.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// The pause before the next attempt after `failures` failed ones in a row (at least one).
pub fn retry_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(RETRY_BACKOFF_MAX)
}

/// Remote candidates taken per remote description; more are dropped. A
/// browser on a machine with many interfaces sends a few dozen at most; a
/// peer that sends thousands would have each one checked, paired and kept.
pub const MAX_REMOTE_CANDIDATES: u32 = 64;

/// A peer connection's generation: increases with every new connection.
pub type Generation = u64;

/// Something that happened, from signaling, from the peer connection or from the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationEvent {
    /// We hold a seat in the room (first join, or again after a signaling reconnect).
    Joined {
        /// Our effective role.
        role: Role,
        /// The peer already in the room, if any.
        peer: Option<PeerId>,
        /// `true` after a reconnect.
        resumed: bool,
    },
    /// The other peer arrived.
    PeerJoined(PeerId),
    /// The other peer left, hung up or timed out (as the server saw it).
    PeerLeft(PeerId),
    /// The other peer's offer.
    RemoteOffer {
        /// Sender.
        from: PeerId,
        /// SDP.
        sdp: String,
    },
    /// The other peer's answer.
    RemoteAnswer {
        /// Sender.
        from: PeerId,
        /// SDP.
        sdp: String,
    },
    /// A remote candidate; `None` is the end of candidates.
    RemoteCandidate {
        /// Sender.
        from: PeerId,
        /// Candidate.
        candidate: Option<IceCandidate>,
    },
    /// The other peer said `bye`.
    RemoteBye(PeerId),
    /// The remote description of connection `generation` has been applied.
    RemoteDescriptionApplied(Generation),
    /// Connection `generation` gathered a candidate (`None`: gathering complete).
    LocalCandidate(Generation, Option<IceCandidate>),
    /// Connection `generation` is connected (ICE and DTLS).
    Connected(Generation),
    /// The first packet of the other peer's media arrived on connection
    /// `generation`: the other side is connected too.
    Heard(Generation),
    /// Connection `generation` failed, or its peer stopped answering.
    Failed(Generation),
    /// The signaling connection broke (the client is reconnecting): nothing
    /// sent now would arrive.
    SignalingLost,
    /// The user hangs up.
    HangUp,
}

/// What the session must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiationAction {
    /// Close the current peer connection, if any, and stop its media.
    ClosePeerConnection,
    /// Make a fresh peer connection with this generation.
    NewPeerConnection(Generation),
    /// Create an offer, apply it locally and send it.
    SendOffer(Generation),
    /// Create an offer that restarts ICE (new credentials, same DTLS), apply
    /// it locally and send it.
    RestartIce(Generation),
    /// Apply this remote offer, then create, apply and send an answer.
    AnswerOffer(Generation, String),
    /// Apply this remote answer.
    ApplyAnswer(Generation, String),
    /// Hand a remote candidate to the connection (`None`: the remote has no more).
    AddRemoteCandidate(Generation, Option<IceCandidate>),
    /// Send one of our candidates to the peer.
    SendCandidate(Option<IceCandidate>),
    /// Send `bye`.
    SendBye,
    /// Tell the person (and the headless log) where the call is.
    Report(CallPhase),
}

/// Where the call is, in the words a status line needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPhase {
    /// In the room, alone.
    WaitingForPeer,
    /// The other peer is in the room.
    PeerPresent(PeerId),
    /// Offer/answer and ICE under way.
    Connecting,
    /// Media can flow.
    Connected,
    /// The other peer left or hung up; waiting for someone to join.
    PeerLeft,
    /// The connection failed or the peer went silent; trying again if the peer is still there.
    ConnectionLost,
    /// The path of a call that was up died; the same call is being brought
    /// back (ICE restart), media resumes when it is.
    Reconnecting,
    /// We hung up.
    HungUp,
}

/// The one thing the negotiator may be waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The answer to the offer of this connection is due.
    Answer(Generation, Instant),
    /// This answered connection is due to connect.
    Connect(Generation, Instant),
    /// The caller offers again (after a failed attempt).
    Retry(Instant),
    /// The caller's restart of this connection has had its time.
    Restart(Generation, Instant),
    /// This connected connection is due to have heard from the other peer.
    Heard(Generation, Instant),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Answer(_, at)
            | Deadline::Connect(_, at)
            | Deadline::Retry(at)
            | Deadline::Restart(_, at)
            | Deadline::Heard(_, at) => at,
        }
    }
}

/// The state of the one peer connection we may have.
#[derive(Debug)]
struct Connection {
    generation: Generation,
    remote_description: bool,
    /// Remote candidates that came before the remote description.
    early_candidates: Vec<Option<IceCandidate>>,
    /// Remote candidates taken since the last remote description came
    /// (at most [`MAX_REMOTE_CANDIDATES`]), and whether dropping more was said.
    remote_candidates: u32,
    candidates_dropped: bool,
    connected: bool,
    /// Something of the other peer's media arrived.
    heard: bool,
    /// The remote DTLS fingerprint of the offer it answered (callee): a new
    /// offer with the same one is an ICE restart of this connection.
    remote_fingerprint: Option<String>,
    /// Its path died after it was up; it is being restarted.
    restarting: bool,
    /// Restarts offered with signaling up since the path died (caller).
    restarts_tried: u32,
}

impl Connection {
    /// Counts a remote candidate against [`MAX_REMOTE_CANDIDATES`]; `false`
    /// (said once per connection) when it is one too many.
    fn take_remote_candidate(&mut self) -> bool {
        if self.remote_candidates < MAX_REMOTE_CANDIDATES {
            self.remote_candidates += 1;
            return true;
        }
        if !std::mem::replace(&mut self.candidates_dropped, true) {
            tracing::warn!(
                "the other peer sent more than {MAX_REMOTE_CANDIDATES} candidates; dropping the rest"
            );
        }
        false
    }
}

/// The call's state machine: see the module documentation.
#[derive(Debug, Default)]
pub struct Negotiator {
    role: Option<Role>,
    peer: Option<PeerId>,
    connection: Option<Connection>,
    next_generation: Generation,
    hung_up: bool,
    deadline: Option<Deadline>,
    /// Failed attempts since the last connected call or new peer.
    failures: u32,
    /// Whether signaling can carry messages now.
    signaling_down: bool,
    /// ICE restarts offered or answered, for the report.
    ice_restarts: u64,
}

impl Negotiator {
    /// A negotiator that has not joined yet.
    pub fn new() -> Negotiator {
        Negotiator::default()
    }

    /// Our role, once joined.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The peer we are calling with, if one is in the room.
    pub fn peer(&self) -> Option<&PeerId> {
        self.peer.as_ref()
    }

    /// The current connection's generation, if there is one.
    pub fn generation(&self) -> Option<Generation> {
        self.connection.as_ref().map(|c| c.generation)
    }

    /// Whether the current connection is connected.
    pub fn is_connected(&self) -> bool {
        self.connection.as_ref().is_some_and(|c| c.connected)
    }

    /// Whether there is a call to keep: connected, or being restarted.
    fn call_is_up(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|c| c.connected || c.restarting)
    }

    /// ICE restarts this call went through (offered as caller, answered as callee).
    pub fn ice_restarts(&self) -> u64 {
        self.ice_restarts
    }

    /// When [`Negotiator::handle_timeout`] is next due, if anything is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.map(Deadline::at)
    }

    /// Lets time pass: carries out whatever fell due by `now`; returns what to do.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<NegotiationAction> {
        let mut actions = Vec::new();
        let Some(deadline) = self.deadline.filter(|d| d.at() <= now) else {
            return actions;
        };
        self.deadline = None;
        match deadline {
            Deadline::Answer(generation, _) => {
                if self.current(generation).is_some() {
                    tracing::info!(generation, "no answer to our offer; trying again");
                    self.attempt_failed(now, &mut actions);
                }
            }
            Deadline::Connect(generation, _) => {
                if self.current(generation).is_some_and(|c| !c.connected) {
                    tracing::info!(
                        generation,
                        "answered but not connected within {CONNECT_TIMEOUT:?}; trying again"
                    );
                    self.attempt_failed(now, &mut actions);
                }
            }
            Deadline::Retry(_) => {
                if self.role == Some(Role::Caller)
                    && self.peer.is_some()
                    && self.connection.is_none()
                {
                    self.offer(now, &mut actions);
                }
            }
            Deadline::Restart(generation, _) => {
                if self.current(generation).is_some_and(|c| c.restarting) {
                    self.restart(now, &mut actions);
                }
            }
            Deadline::Heard(generation, _) => {
                if self
                    .current(generation)
                    .is_some_and(|c| c.connected && !c.heard)
                {
                    tracing::info!(
                        generation,
                        "connected, but nothing came from the other peer within {HEARD_TIMEOUT:?}; trying again"
                    );
                    self.attempt_failed(now, &mut actions);
                }
            }
        }
        actions
    }

    /// Feeds one event that happened at `now`; returns what to do.
    pub fn handle(&mut self, event: NegotiationEvent, now: Instant) -> Vec<NegotiationAction> {
        use NegotiationAction as A;
        use NegotiationEvent as E;
        if self.hung_up {
            return Vec::new();
        }
        let mut actions = Vec::new();
        match event {
            E::Joined {
                role,
                peer,
                resumed,
            } => {
                self.role = Some(role);
                self.signaling_down = false;
                match peer {
                    Some(peer) => self.peer_arrived(peer, resumed, now, &mut actions),
                    None => {
                        // After a reconnect a connected call keeps going: media does not
                        // need the server, and the peer will rejoin too.
                        if !(resumed && self.call_is_up()) {
                            self.peer = None;
                            self.drop_connection(&mut actions);
                            self.deadline = None;
                            actions.push(A::Report(CallPhase::WaitingForPeer));
                        }
                    }
                }
            }
            E::PeerJoined(peer) => {
                let resumed = self.call_is_up();
                self.peer_arrived(peer, resumed, now, &mut actions);
            }
            E::PeerLeft(peer) | E::RemoteBye(peer) => {
                if self.peer.as_ref() == Some(&peer) {
                    self.peer = None;
                    self.drop_connection(&mut actions);
                    self.deadline = None;
                    actions.push(A::Report(CallPhase::PeerLeft));
                }
            }
            E::RemoteOffer { from, sdp } => {
                if self.role != Some(Role::Callee) {
                    tracing::warn!("ignoring an offer: the caller never answers");
                    return actions;
                }
                self.peer = Some(from);
                let fingerprint = crate::verification::fingerprint(&sdp);
                if let Some(connection) = &mut self.connection
                    && (connection.connected || connection.restarting)
                    && fingerprint.is_some()
                    && connection.remote_fingerprint == fingerprint
                {
                    // The same caller restarting ICE on the call we have.
                    let generation = connection.generation;
                    let was_restarting = std::mem::replace(&mut connection.restarting, true);
                    connection.connected = false;
                    connection.remote_description = false;
                    connection.remote_candidates = 0;
                    self.ice_restarts += 1;
                    if !was_restarting {
                        actions.push(A::Report(CallPhase::Reconnecting));
                    }
                    actions.push(A::AnswerOffer(generation, sdp));
                    return actions;
                }
                // Any other offer starts a fresh connection: a caller only offers
                // anew after it dropped its own (failure, or a new caller).
                self.drop_connection(&mut actions);
                let generation = self.open_connection(&mut actions);
                if let Some(connection) = &mut self.connection {
                    connection.remote_fingerprint = fingerprint;
                }
                actions.push(A::Report(CallPhase::Connecting));
                actions.push(A::AnswerOffer(generation, sdp));
            }
            E::RemoteAnswer { from, sdp } => {
                if self.peer.as_ref() != Some(&from) || self.role != Some(Role::Caller) {
                    return actions;
                }
                if let Some(connection) = &self.connection
                    && !connection.remote_description
                {
                    actions.push(A::ApplyAnswer(connection.generation, sdp));
                }
            }
            E::RemoteCandidate { from, candidate } => {
                if self.peer.as_ref() != Some(&from) {
                    return actions;
                }
                let Some(connection) = &mut self.connection else {
                    // The callee makes its connection on the offer, which comes first;
                    // a candidate with no connection at all belongs to a dropped call.
                    return actions;
                };
                if candidate.is_some() && !connection.take_remote_candidate() {
                    return actions;
                }
                match &mut self.connection {
                    Some(connection) if connection.remote_description => {
                        actions.push(A::AddRemoteCandidate(connection.generation, candidate));
                    }
                    Some(connection) => connection.early_candidates.push(candidate),
                    None => {}
                }
            }
            E::RemoteDescriptionApplied(generation) => {
                if let Some(connection) = self.current(generation) {
                    connection.remote_description = true;
                    for candidate in connection.early_candidates.drain(..) {
                        actions.push(A::AddRemoteCandidate(generation, candidate));
                    }
                    if matches!(self.deadline, Some(Deadline::Answer(g, _)) if g == generation) {
                        self.deadline = Some(Deadline::Connect(generation, now + CONNECT_TIMEOUT));
                    }
                }
            }
            E::LocalCandidate(generation, candidate) => {
                if self.current(generation).is_some() {
                    actions.push(A::SendCandidate(candidate));
                }
            }
            E::Connected(generation) => {
                if let Some(connection) = self.current(generation)
                    && !connection.connected
                {
                    connection.connected = true;
                    connection.restarting = false;
                    connection.restarts_tried = 0;
                    let heard = connection.heard;
                    self.failures = 0;
                    if matches!(
                        self.deadline,
                        Some(Deadline::Restart(g, _) | Deadline::Connect(g, _)) if g == generation
                    ) {
                        self.deadline = None;
                    }
                    // Only the caller offers again; its first connection
                    // must also be heard (a restarted one was, before).
                    if !heard && self.role == Some(Role::Caller) && self.deadline.is_none() {
                        self.deadline = Some(Deadline::Heard(generation, now + HEARD_TIMEOUT));
                    }
                    actions.push(A::Report(CallPhase::Connected));
                }
            }
            E::Heard(generation) => {
                if let Some(connection) = self.current(generation) {
                    connection.heard = true;
                    if matches!(self.deadline, Some(Deadline::Heard(g, _)) if g == generation) {
                        self.deadline = None;
                    }
                }
            }
            E::Failed(generation) => {
                let Some(connection) = self.current(generation) else {
                    return actions;
                };
                if connection.connected && !connection.restarting {
                    // The path of a call that was up died: keep the call.
                    connection.connected = false;
                    connection.restarting = true;
                    actions.push(A::Report(CallPhase::Reconnecting));
                    if self.role == Some(Role::Caller) {
                        self.restart(now, &mut actions);
                    }
                } else if !connection.restarting {
                    self.attempt_failed(now, &mut actions);
                }
                // A restart that fails again waits for its own deadline.
            }
            E::SignalingLost => self.signaling_down = true,
            E::HangUp => {
                if self.peer.is_some() {
                    actions.push(A::SendBye);
                }
                self.drop_connection(&mut actions);
                self.hung_up = true;
                self.deadline = None;
                actions.push(A::Report(CallPhase::HungUp));
            }
        }
        actions
    }

    fn peer_arrived(
        &mut self,
        peer: PeerId,
        resumed: bool,
        now: Instant,
        actions: &mut Vec<NegotiationAction>,
    ) {
        use NegotiationAction as A;
        if resumed && self.call_is_up() {
            // Signaling came back (or the server restarted: ids are new) but
            // our call never ended. One being restarted is offered again now:
            // what was sent while signaling was down is lost.
            self.peer = Some(peer);
            if self.role == Some(Role::Caller)
                && let Some(connection) = &mut self.connection
                && connection.restarting
            {
                connection.restarts_tried = 0;
                self.restart(now, actions);
            }
            return;
        }
        self.peer = Some(peer.clone());
        self.drop_connection(actions);
        self.deadline = None;
        self.failures = 0;
        actions.push(A::Report(CallPhase::PeerPresent(peer)));
        if self.role == Some(Role::Caller) {
            self.offer(now, actions);
        }
    }

    /// A fresh connection and its offer, whose answer is due within [`ANSWER_TIMEOUT`].
    fn offer(&mut self, now: Instant, actions: &mut Vec<NegotiationAction>) {
        let generation = self.open_connection(actions);
        actions.push(NegotiationAction::Report(CallPhase::Connecting));
        actions.push(NegotiationAction::SendOffer(generation));
        self.deadline = Some(Deadline::Answer(generation, now + ANSWER_TIMEOUT));
    }

    /// Offers an ICE restart of the current connection if signaling can carry
    /// it, and gives it [`RESTART_INTERVAL`]; after [`MAX_RESTARTS`] the
    /// connection is given up.
    fn restart(&mut self, now: Instant, actions: &mut Vec<NegotiationAction>) {
        let signaling_down = self.signaling_down;
        let Some(connection) = &mut self.connection else {
            return;
        };
        let generation = connection.generation;
        if !signaling_down {
            if connection.restarts_tried >= MAX_RESTARTS {
                tracing::info!(
                    generation,
                    "ICE restarts did not bring the call back; starting over"
                );
                self.attempt_failed(now, actions);
                return;
            }
            connection.restarts_tried += 1;
            // The answer brings a new remote description; candidates wait for it.
            connection.remote_description = false;
            connection.remote_candidates = 0;
            self.ice_restarts += 1;
            actions.push(NegotiationAction::RestartIce(generation));
        }
        self.deadline = Some(Deadline::Restart(generation, now + RESTART_INTERVAL));
    }

    /// The current connection will not do: drop it. The caller offers again
    /// after a backoff if the peer is still in the room; a callee waits for
    /// that offer.
    fn attempt_failed(&mut self, now: Instant, actions: &mut Vec<NegotiationAction>) {
        self.drop_connection(actions);
        actions.push(NegotiationAction::Report(CallPhase::ConnectionLost));
        self.deadline = None;
        if self.role == Some(Role::Caller) && self.peer.is_some() {
            self.failures = self.failures.saturating_add(1);
            self.deadline = Some(Deadline::Retry(now + retry_backoff(self.failures)));
        }
    }

    fn open_connection(&mut self, actions: &mut Vec<NegotiationAction>) -> Generation {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.connection = Some(Connection {
            generation,
            remote_description: false,
            early_candidates: Vec::new(),
            remote_candidates: 0,
            candidates_dropped: false,
            connected: false,
            heard: false,
            remote_fingerprint: None,
            restarting: false,
            restarts_tried: 0,
        });
        actions.push(NegotiationAction::NewPeerConnection(generation));
        generation
    }

    fn drop_connection(&mut self, actions: &mut Vec<NegotiationAction>) {
        if matches!(
            self.deadline,
            Some(Deadline::Answer(..) | Deadline::Connect(..) | Deadline::Restart(..))
        ) {
            self.deadline = None;
        }
        if self.connection.take().is_some() {
            actions.push(NegotiationAction::ClosePeerConnection);
        }
    }

    fn current(&mut self, generation: Generation) -> Option<&mut Connection> {
        self.connection
            .as_mut()
            .filter(|connection| connection.generation == generation)
    }
}

/// The `a=fingerprint` value of an SDP (its first, if several): the DTLS
/// certificate a connection keeps across ICE restarts.
#[cfg(test)]
mod tests;
