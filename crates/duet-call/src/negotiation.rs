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
//! wants to be woken, and [`Negotiator::handle_timeout`] wakes it. Its two
//! timed rules, both the caller's (the callee only ever answers):
//!
//! - An offer not answered within [`ANSWER_TIMEOUT`] is a failed attempt: the
//!   connection is dropped and a fresh one offers again after a pause.
//! - After a failed attempt (no answer, a failed connection, a setup step that
//!   failed) the next offer waits [`RETRY_BACKOFF_FIRST`], doubling with every
//!   further failure up to [`RETRY_BACKOFF_MAX`]. A connected call, or a new
//!   peer, starts the count again: its first offer goes out at once.

use std::time::{Duration, Instant};

use duet_signal::{IceCandidate, PeerId, Role};

/// How long a caller waits for the answer to its offer. A callee answers
/// as soon as the offer arrives, so this covers a lost message or a callee
/// that cannot use the offer, not a slow network.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Connection `generation` failed, or its peer stopped answering.
    Failed(Generation),
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
    /// We hung up.
    HungUp,
}

/// The one thing the negotiator may be waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The answer to the offer of this connection is due.
    Answer(Generation, Instant),
    /// The caller offers again (after a failed attempt).
    Retry(Instant),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Answer(_, at) | Deadline::Retry(at) => at,
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
    connected: bool,
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
            Deadline::Retry(_) => {
                if self.role == Some(Role::Caller)
                    && self.peer.is_some()
                    && self.connection.is_none()
                {
                    self.offer(now, &mut actions);
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
                match peer {
                    Some(peer) => self.peer_arrived(peer, resumed, now, &mut actions),
                    None => {
                        // After a reconnect a connected call keeps going: media does not
                        // need the server, and the peer will rejoin too.
                        if !(resumed && self.is_connected()) {
                            self.peer = None;
                            self.drop_connection(&mut actions);
                            self.deadline = None;
                            actions.push(A::Report(CallPhase::WaitingForPeer));
                        }
                    }
                }
            }
            E::PeerJoined(peer) => {
                let resumed = self.is_connected();
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
                // Every offer starts a fresh connection: a caller only re-offers after
                // it dropped its own (restart, failure or a new caller).
                self.drop_connection(&mut actions);
                let generation = self.open_connection(&mut actions);
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
                match &mut self.connection {
                    Some(connection) if connection.remote_description => {
                        actions.push(A::AddRemoteCandidate(connection.generation, candidate));
                    }
                    Some(connection) => connection.early_candidates.push(candidate),
                    // The callee makes its connection on the offer, which comes first;
                    // a candidate with no connection at all belongs to a dropped call.
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
                        self.deadline = None;
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
                    self.failures = 0;
                    actions.push(A::Report(CallPhase::Connected));
                }
            }
            E::Failed(generation) => {
                if self.current(generation).is_some() {
                    self.attempt_failed(now, &mut actions);
                }
            }
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
        if resumed && self.is_connected() {
            // The server restarted (ids are new) but our media never stopped.
            self.peer = Some(peer);
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
            connected: false,
        });
        actions.push(NegotiationAction::NewPeerConnection(generation));
        generation
    }

    fn drop_connection(&mut self, actions: &mut Vec<NegotiationAction>) {
        if matches!(self.deadline, Some(Deadline::Answer(..))) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use NegotiationAction as A;
    use NegotiationEvent as E;

    /// A negotiator on a virtual clock: time moves only when a test says so.
    struct Clocked {
        negotiator: Negotiator,
        now: Instant,
    }

    impl Clocked {
        fn new() -> Clocked {
            Clocked {
                negotiator: Negotiator::new(),
                now: Instant::now(),
            }
        }

        fn handle(&mut self, event: E) -> Vec<A> {
            self.negotiator.handle(event, self.now)
        }

        /// Moves the clock on by `by` and wakes the negotiator.
        fn advance(&mut self, by: Duration) -> Vec<A> {
            self.now += by;
            self.negotiator.handle_timeout(self.now)
        }

        /// How long until the negotiator wants to be woken.
        fn due_in(&self) -> Option<Duration> {
            self.negotiator
                .poll_timeout()
                .map(|at| at.saturating_duration_since(self.now))
        }
    }

    impl std::ops::Deref for Clocked {
        type Target = Negotiator;
        fn deref(&self) -> &Negotiator {
            &self.negotiator
        }
    }

    fn peer(name: &str) -> PeerId {
        PeerId(name.to_owned())
    }

    fn candidate(line: &str) -> Option<IceCandidate> {
        Some(IceCandidate {
            candidate: line.to_owned(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        })
    }

    fn joined(role: Role, other: Option<&str>) -> E {
        E::Joined {
            role,
            peer: other.map(peer),
            resumed: false,
        }
    }

    #[test]
    fn a_caller_offers_as_soon_as_a_callee_is_in_the_room_whoever_came_first() {
        let mut first = Clocked::new();
        assert_eq!(
            first.handle(joined(Role::Caller, None)),
            vec![A::Report(CallPhase::WaitingForPeer)]
        );
        let actions = first.handle(E::PeerJoined(peer("b")));
        assert!(actions.contains(&A::NewPeerConnection(1)));
        assert_eq!(actions.last(), Some(&A::SendOffer(1)));

        let mut second = Clocked::new();
        let actions = second.handle(joined(Role::Caller, Some("b")));
        assert_eq!(actions.last(), Some(&A::SendOffer(1)));
    }

    #[test]
    fn a_callee_never_offers_and_answers_every_offer_on_a_fresh_connection() {
        let mut callee = Clocked::new();
        let actions = callee.handle(joined(Role::Callee, Some("a")));
        assert!(!actions.iter().any(|a| matches!(a, A::SendOffer(_))));
        let actions = callee.handle(E::RemoteOffer {
            from: peer("a"),
            sdp: "v=0 first".into(),
        });
        assert_eq!(
            actions,
            vec![
                A::NewPeerConnection(1),
                A::Report(CallPhase::Connecting),
                A::AnswerOffer(1, "v=0 first".into())
            ]
        );
        // A re-offer (the caller restarted its connection) replaces ours.
        let actions = callee.handle(E::RemoteOffer {
            from: peer("a"),
            sdp: "v=0 again".into(),
        });
        assert_eq!(actions[0], A::ClosePeerConnection);
        assert!(actions.contains(&A::AnswerOffer(2, "v=0 again".into())));
    }

    #[test]
    fn candidates_before_the_remote_description_wait_and_none_is_lost() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert!(
            caller
                .handle(E::RemoteCandidate {
                    from: peer("b"),
                    candidate: candidate("one"),
                })
                .is_empty()
        );
        caller.handle(E::RemoteCandidate {
            from: peer("b"),
            candidate: None,
        });
        assert_eq!(
            caller.handle(E::RemoteAnswer {
                from: peer("b"),
                sdp: "answer".into()
            }),
            vec![A::ApplyAnswer(1, "answer".into())]
        );
        assert_eq!(
            caller.handle(E::RemoteDescriptionApplied(1)),
            vec![
                A::AddRemoteCandidate(1, candidate("one")),
                A::AddRemoteCandidate(1, None)
            ]
        );
        assert_eq!(
            caller.handle(E::RemoteCandidate {
                from: peer("b"),
                candidate: candidate("two"),
            }),
            vec![A::AddRemoteCandidate(1, candidate("two"))]
        );
    }

    #[test]
    fn messages_from_strangers_and_events_of_old_connections_are_ignored() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert!(
            caller
                .handle(E::RemoteAnswer {
                    from: peer("x"),
                    sdp: "s".into()
                })
                .is_empty()
        );
        caller.handle(E::Failed(1));
        caller.advance(RETRY_BACKOFF_FIRST);
        assert_eq!(caller.generation(), Some(2));
        assert!(
            caller
                .handle(E::LocalCandidate(1, candidate("old")))
                .is_empty()
        );
        assert!(caller.handle(E::Connected(1)).is_empty());
        assert_eq!(
            caller.handle(E::LocalCandidate(2, candidate("new"))),
            vec![A::SendCandidate(candidate("new"))]
        );
    }

    #[test]
    fn peer_left_drops_the_call_and_a_new_peer_gets_a_fresh_one() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        caller.handle(E::Connected(1));
        assert!(caller.is_connected());
        assert_eq!(
            caller.handle(E::PeerLeft(peer("b"))),
            vec![A::ClosePeerConnection, A::Report(CallPhase::PeerLeft)]
        );
        assert!(caller.peer().is_none());
        let actions = caller.handle(E::PeerJoined(peer("c")));
        assert_eq!(actions.last(), Some(&A::SendOffer(2)));
        // A bye from the peer is the same as it leaving.
        caller.handle(E::Connected(2));
        let actions = caller.handle(E::RemoteBye(peer("c")));
        assert_eq!(actions[0], A::ClosePeerConnection);
    }

    #[test]
    fn a_failed_connection_is_offered_again_by_the_caller_after_a_pause() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert_eq!(
            caller.handle(E::Failed(1)),
            vec![A::ClosePeerConnection, A::Report(CallPhase::ConnectionLost)]
        );
        assert_eq!(caller.generation(), None);
        assert_eq!(caller.due_in(), Some(RETRY_BACKOFF_FIRST));
        // Woken early (another timer of the session), it does nothing yet.
        assert!(
            caller
                .advance(RETRY_BACKOFF_FIRST - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            caller.advance(Duration::from_millis(1)),
            vec![
                A::NewPeerConnection(2),
                A::Report(CallPhase::Connecting),
                A::SendOffer(2)
            ]
        );
    }

    #[test]
    fn a_callee_whose_connection_failed_waits_for_the_next_offer_with_no_timer() {
        let mut callee = Clocked::new();
        callee.handle(joined(Role::Callee, Some("a")));
        callee.handle(E::RemoteOffer {
            from: peer("a"),
            sdp: "o".into(),
        });
        assert_eq!(callee.due_in(), None, "a callee never waits for an answer");
        assert_eq!(
            callee.handle(E::Failed(1)),
            vec![A::ClosePeerConnection, A::Report(CallPhase::ConnectionLost)]
        );
        assert_eq!(callee.due_in(), None);
        assert!(callee.advance(RETRY_BACKOFF_MAX * 4).is_empty());
    }

    #[test]
    fn an_unanswered_offer_is_dropped_and_made_again_on_a_fresh_connection() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert_eq!(caller.due_in(), Some(ANSWER_TIMEOUT));
        // A candidate from the callee is not an answer.
        caller.handle(E::RemoteCandidate {
            from: peer("b"),
            candidate: candidate("one"),
        });
        assert!(
            caller
                .advance(ANSWER_TIMEOUT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(
            caller.advance(Duration::from_millis(1)),
            vec![A::ClosePeerConnection, A::Report(CallPhase::ConnectionLost)]
        );
        assert_eq!(caller.due_in(), Some(RETRY_BACKOFF_FIRST));
        let actions = caller.advance(RETRY_BACKOFF_FIRST);
        assert_eq!(actions.last(), Some(&A::SendOffer(2)));
        assert_eq!(caller.due_in(), Some(ANSWER_TIMEOUT));
    }

    #[test]
    fn an_answer_in_time_stops_the_answer_clock() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        caller.advance(ANSWER_TIMEOUT / 2);
        caller.handle(E::RemoteAnswer {
            from: peer("b"),
            sdp: "answer".into(),
        });
        caller.handle(E::RemoteDescriptionApplied(1));
        assert_eq!(caller.due_in(), None);
        assert!(caller.advance(ANSWER_TIMEOUT * 2).is_empty());
        assert_eq!(caller.generation(), Some(1));
    }

    #[test]
    fn the_backoff_doubles_with_each_failure_up_to_a_cap_and_restarts_once_connected() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        let mut pauses = Vec::new();
        for _ in 0..7 {
            let generation = caller.generation().expect("a connection");
            caller.handle(E::Failed(generation));
            let pause = caller.due_in().expect("a retry is due");
            pauses.push(pause.as_millis());
            let actions = caller.advance(pause);
            assert!(actions.contains(&A::SendOffer(generation + 1)));
        }
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        // A failure after a connected call is a first failure again.
        let generation = caller.generation().expect("a connection");
        caller.handle(E::Connected(generation));
        caller.handle(E::Failed(generation));
        assert_eq!(caller.due_in(), Some(RETRY_BACKOFF_FIRST));
    }

    #[test]
    fn retry_backoff_is_capped_for_any_number_of_failures() {
        assert_eq!(retry_backoff(0), RETRY_BACKOFF_FIRST);
        assert_eq!(retry_backoff(1), RETRY_BACKOFF_FIRST);
        assert_eq!(retry_backoff(2), RETRY_BACKOFF_FIRST * 2);
        assert_eq!(retry_backoff(40), RETRY_BACKOFF_MAX);
        assert_eq!(retry_backoff(u32::MAX), RETRY_BACKOFF_MAX);
    }

    #[test]
    fn a_peer_leaving_during_the_pause_cancels_the_retry_and_a_new_peer_is_called_at_once() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        caller.handle(E::Failed(1));
        caller.handle(E::Failed(1)); // late, for a connection already dropped: ignored
        assert_eq!(caller.due_in(), Some(RETRY_BACKOFF_FIRST));
        caller.handle(E::PeerLeft(peer("b")));
        assert_eq!(caller.due_in(), None);
        assert!(caller.advance(RETRY_BACKOFF_MAX).is_empty());
        let actions = caller.handle(E::PeerJoined(peer("c")));
        assert_eq!(actions.last(), Some(&A::SendOffer(2)));
        assert_eq!(caller.due_in(), Some(ANSWER_TIMEOUT));
    }

    #[test]
    fn hanging_up_stops_every_timer() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert!(caller.due_in().is_some());
        caller.handle(E::HangUp);
        assert_eq!(caller.due_in(), None);
        assert!(caller.advance(ANSWER_TIMEOUT * 10).is_empty());
    }

    #[test]
    fn a_signaling_reconnect_keeps_a_connected_call_untouched() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        caller.handle(E::Connected(1));
        // The server came back empty: we rejoin first, then the callee (new id).
        assert!(
            caller
                .handle(E::Joined {
                    role: Role::Caller,
                    peer: None,
                    resumed: true
                })
                .is_empty()
        );
        assert!(caller.handle(E::PeerJoined(peer("b2"))).is_empty());
        assert_eq!(caller.peer(), Some(&peer("b2")));
        assert_eq!(caller.generation(), Some(1));
    }

    #[test]
    fn a_reconnect_during_negotiation_starts_over() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        let actions = caller.handle(E::Joined {
            role: Role::Caller,
            peer: Some(peer("b2")),
            resumed: true,
        });
        assert_eq!(actions[0], A::ClosePeerConnection);
        assert_eq!(actions.last(), Some(&A::SendOffer(2)));
    }

    #[test]
    fn hanging_up_says_bye_closes_and_then_ignores_everything() {
        let mut caller = Clocked::new();
        caller.handle(joined(Role::Caller, Some("b")));
        assert_eq!(
            caller.handle(E::HangUp),
            vec![
                A::SendBye,
                A::ClosePeerConnection,
                A::Report(CallPhase::HungUp)
            ]
        );
        assert!(caller.handle(E::PeerJoined(peer("c"))).is_empty());
    }
}
