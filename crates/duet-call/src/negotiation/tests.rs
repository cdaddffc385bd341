//! The negotiator's rules, each on a virtual clock.

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

/// A caller whose first offer was answered: connection 1, not yet connected.
fn answered_caller() -> Clocked {
    let mut caller = Clocked::new();
    caller.handle(joined(Role::Caller, Some("b")));
    caller.handle(E::RemoteAnswer {
        from: peer("b"),
        sdp: "answer".into(),
    });
    caller.handle(E::RemoteDescriptionApplied(1));
    caller
}

/// Nothing happens until `timeout` has passed; then the attempt fails: its
/// connection is closed and the call reported lost.
fn fails_exactly_after(caller: &mut Clocked, timeout: Duration) {
    assert!(
        caller
            .advance(timeout - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(
        caller.advance(Duration::from_millis(1)),
        vec![A::ClosePeerConnection, A::Report(CallPhase::ConnectionLost)]
    );
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
fn a_flood_of_remote_candidates_is_cut_at_the_limit_and_a_restart_takes_new_ones() {
    let mut caller = answered_caller();
    let added = |actions: Vec<A>| {
        actions
            .iter()
            .filter(|a| matches!(a, A::AddRemoteCandidate(_, Some(_))))
            .count()
    };
    let mut taken = 0;
    for i in 0..1000 {
        taken += added(caller.handle(E::RemoteCandidate {
            from: peer("b"),
            candidate: candidate(&format!("c{i}")),
        }));
    }
    assert_eq!(taken, MAX_REMOTE_CANDIDATES as usize);
    // The end of candidates still gets through.
    assert_eq!(
        caller.handle(E::RemoteCandidate {
            from: peer("b"),
            candidate: None,
        }),
        vec![A::AddRemoteCandidate(1, None)]
    );
    // The path dies: the restart's answer brings a new round of candidates.
    caller.handle(E::Connected(1));
    assert!(caller.handle(E::Failed(1)).contains(&A::RestartIce(1)));
    caller.handle(E::RemoteAnswer {
        from: peer("b"),
        sdp: "answer 2".into(),
    });
    caller.handle(E::RemoteDescriptionApplied(1));
    let after_restart = added(caller.handle(E::RemoteCandidate {
        from: peer("b"),
        candidate: candidate("new path"),
    }));
    assert_eq!(after_restart, 1);
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
    fails_exactly_after(&mut caller, ANSWER_TIMEOUT);
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
    assert_eq!(
        caller.due_in(),
        Some(CONNECT_TIMEOUT),
        "now the connect clock runs"
    );
    caller.advance(CONNECT_TIMEOUT / 2);
    caller.handle(E::Connected(1));
    assert_eq!(
        caller.due_in(),
        Some(HEARD_TIMEOUT),
        "now the clock runs for the other peer's media"
    );
    caller.advance(HEARD_TIMEOUT / 2);
    caller.handle(E::Heard(1));
    assert_eq!(caller.due_in(), None);
    assert!(caller.advance(CONNECT_TIMEOUT * 2).is_empty());
    assert_eq!(caller.generation(), Some(1));
}

/// DTLS can finish on one side only: the caller is connected and sends,
/// the callee still waits for the caller's last flight and sends nothing.
/// With nothing heard in time, the caller makes the call again.
#[test]
fn a_connection_connected_on_our_side_only_is_dropped_and_made_again() {
    let mut caller = answered_caller();
    assert_eq!(
        caller.handle(E::Connected(1)),
        vec![A::Report(CallPhase::Connected)]
    );
    fails_exactly_after(&mut caller, HEARD_TIMEOUT);
    let actions = caller.advance(RETRY_BACKOFF_FIRST);
    assert_eq!(actions.last(), Some(&A::SendOffer(2)));
    // The old connection's late media is not news.
    caller.handle(E::Heard(1));
    assert_eq!(caller.due_in(), Some(ANSWER_TIMEOUT));
}

/// Media may come before webrtc-rs says "connected" (the two travel apart).
#[test]
fn media_heard_before_connected_counts() {
    let mut caller = answered_caller();
    caller.handle(E::Heard(1));
    caller.handle(E::Connected(1));
    assert_eq!(caller.due_in(), None);
}

/// Only the caller offers again: a callee keeps no clock for the other peer.
#[test]
fn a_callee_connected_without_media_waits_for_the_caller() {
    let mut callee = Clocked::new();
    callee.handle(joined(Role::Callee, Some("a")));
    callee.handle(E::RemoteOffer {
        from: peer("a"),
        sdp: "offer".into(),
    });
    callee.handle(E::RemoteDescriptionApplied(1));
    callee.handle(E::Connected(1));
    assert_eq!(callee.due_in(), None);
}

/// webrtc-rs leaves a DTLS handshake that gave up "connecting" until ICE
/// fails too (14–21 s on the test network): an answered call that has not
/// connected in time is dropped and offered again, on a fresh connection.
#[test]
fn an_answered_connection_that_never_connects_is_dropped_and_made_again() {
    let mut caller = answered_caller();
    fails_exactly_after(&mut caller, CONNECT_TIMEOUT);
    let actions = caller.advance(RETRY_BACKOFF_FIRST);
    assert_eq!(actions.last(), Some(&A::SendOffer(2)));
    // The old connection's late "connected" is not news.
    assert!(caller.handle(E::Connected(1)).is_empty());
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
    // A connected call whose restarts all fail counts as a first failure again.
    let generation = caller.generation().expect("a connection");
    caller.handle(E::Connected(generation));
    caller.handle(E::Failed(generation));
    for _ in 1..MAX_RESTARTS {
        assert_eq!(caller.due_in(), Some(RESTART_INTERVAL));
        caller.advance(RESTART_INTERVAL);
    }
    assert_eq!(
        caller.advance(RESTART_INTERVAL),
        vec![A::ClosePeerConnection, A::Report(CallPhase::ConnectionLost)]
    );
    assert_eq!(caller.due_in(), Some(RETRY_BACKOFF_FIRST));
}

/// An SDP with just a DTLS fingerprint line, as the negotiator reads it.
fn sdp_with_fingerprint(fingerprint: &str) -> String {
    format!("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\na=fingerprint:sha-256 {fingerprint}\r\n")
}

#[test]
fn a_caller_whose_path_died_restarts_ice_on_the_same_connection() {
    let mut caller = answered_caller();
    caller.handle(E::Connected(1));
    caller.handle(E::Heard(1));
    assert_eq!(
        caller.handle(E::Failed(1)),
        vec![A::Report(CallPhase::Reconnecting), A::RestartIce(1)]
    );
    assert_eq!(caller.generation(), Some(1), "the connection is kept");
    // The callee's new candidates wait for its new answer.
    assert!(
        caller
            .handle(E::RemoteCandidate {
                from: peer("b"),
                candidate: candidate("candidate:new"),
            })
            .is_empty()
    );
    assert_eq!(
        caller.handle(E::RemoteAnswer {
            from: peer("b"),
            sdp: "answer 2".into(),
        }),
        vec![A::ApplyAnswer(1, "answer 2".into())]
    );
    assert_eq!(
        caller.handle(E::RemoteDescriptionApplied(1)),
        vec![A::AddRemoteCandidate(1, candidate("candidate:new"))]
    );
    assert_eq!(
        caller.handle(E::Connected(1)),
        vec![A::Report(CallPhase::Connected)]
    );
    assert_eq!(caller.due_in(), None);
    assert_eq!(caller.ice_restarts(), 1);
}

#[test]
fn a_restart_waits_for_signaling_and_is_offered_again_when_it_is_back() {
    let mut caller = Clocked::new();
    caller.handle(joined(Role::Caller, Some("b")));
    caller.handle(E::Connected(1));
    // The network went: signaling broke first, then ICE failed.
    assert!(caller.handle(E::SignalingLost).is_empty());
    assert_eq!(
        caller.handle(E::Failed(1)),
        vec![A::Report(CallPhase::Reconnecting)]
    );
    // Nothing is offered while signaling is down, however long it takes.
    for _ in 0..10 {
        assert!(caller.advance(RESTART_INTERVAL).is_empty());
    }
    // Back in the room with the callee still there: the restart goes out at once.
    assert_eq!(
        caller.handle(E::Joined {
            role: Role::Caller,
            peer: Some(peer("b")),
            resumed: true,
        }),
        vec![A::RestartIce(1)]
    );
    assert_eq!(caller.generation(), Some(1));
}

#[test]
fn a_callee_answers_a_restart_on_its_connection_and_a_new_caller_afresh() {
    let mut callee = Clocked::new();
    callee.handle(joined(Role::Callee, Some("a")));
    let first = sdp_with_fingerprint("AA:BB");
    callee.handle(E::RemoteOffer {
        from: peer("a"),
        sdp: first.clone(),
    });
    callee.handle(E::Connected(1));
    assert_eq!(
        callee.handle(E::Failed(1)),
        vec![A::Report(CallPhase::Reconnecting)]
    );
    assert_eq!(callee.due_in(), None, "the callee waits for the caller");
    // Same certificate: an ICE restart of this call.
    let restart = format!("{first}a=ice-ufrag:new\r\n");
    assert_eq!(
        callee.handle(E::RemoteOffer {
            from: peer("a"),
            sdp: restart.clone(),
        }),
        vec![A::AnswerOffer(1, restart)]
    );
    callee.handle(E::Connected(1));
    assert_eq!(callee.ice_restarts(), 1);
    // Another certificate: the caller started over; so does the callee.
    let other = sdp_with_fingerprint("CC:DD");
    assert_eq!(
        callee.handle(E::RemoteOffer {
            from: peer("a"),
            sdp: other.clone(),
        }),
        vec![
            A::ClosePeerConnection,
            A::NewPeerConnection(2),
            A::Report(CallPhase::Connecting),
            A::AnswerOffer(2, other)
        ]
    );
}

#[test]
fn the_dtls_fingerprint_is_read_from_the_sdp() {
    assert_eq!(
        crate::verification::fingerprint(&sdp_with_fingerprint("AB:CD")),
        Some("sha-256 ab:cd".into())
    );
    assert_eq!(crate::verification::fingerprint("v=0\r\n"), None);
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
