//! Where each thing the session hears goes: a signaling event or a peer
//! connection's state becomes news for the front end, an event for the
//! [`Negotiator`](crate::negotiation::Negotiator), or the end of the session.
//! Pure functions, so the session loop only carries out what they say.

use duet_signal::{ClientError, ServerMessage, SignalEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::CallError;
use crate::negotiation::{Generation, NegotiationEvent};
use crate::peer::ConnectionState;
use crate::session::CallEvent;

/// One thing for the session to do with what it heard, in order.
#[derive(Debug)]
pub(crate) enum Route {
    /// Tell the front end.
    Tell(CallEvent),
    /// Feed the negotiator.
    Negotiate(NegotiationEvent),
    /// The session cannot go on: end it with this error.
    Stop(CallError),
}

/// Routes one signaling event. `server` names the server in an error.
pub(crate) fn route_signal(event: SignalEvent, server: &str) -> Vec<Route> {
    use NegotiationEvent as N;
    use Route::{Negotiate, Stop, Tell};
    match event {
        SignalEvent::Joined(joined) => vec![
            Tell(CallEvent::Joined {
                room: joined.room,
                role: joined.role,
                resumed: joined.resumed,
            }),
            Negotiate(N::Joined {
                role: joined.role,
                peer: joined.peers.into_iter().next(),
                resumed: joined.resumed,
            }),
        ],
        SignalEvent::Message(ServerMessage::PeerJoined { id, .. }) => {
            vec![Negotiate(N::PeerJoined(id))]
        }
        SignalEvent::Message(ServerMessage::PeerLeft { id }) => vec![Negotiate(N::PeerLeft(id))],
        SignalEvent::Message(ServerMessage::Offer { from, sdp }) => {
            vec![Negotiate(N::RemoteOffer { from, sdp })]
        }
        SignalEvent::Message(ServerMessage::Answer { from, sdp }) => {
            vec![Negotiate(N::RemoteAnswer { from, sdp })]
        }
        SignalEvent::Message(ServerMessage::Candidate { from, candidate }) => {
            vec![Negotiate(N::RemoteCandidate { from, candidate })]
        }
        SignalEvent::Message(ServerMessage::Bye { from }) => vec![Negotiate(N::RemoteBye(from))],
        // The server closed us (room full, role taken, ...): this is the last event.
        SignalEvent::Message(ServerMessage::Error { code, message })
            if code.close_code().is_some() =>
        {
            vec![Stop(CallError::Signaling(ClientError::Rejected {
                code,
                message,
            }))]
        }
        SignalEvent::Message(ServerMessage::Error { code, message }) => {
            tracing::warn!(%code, %message, "the signaling server refused a message");
            Vec::new()
        }
        // The client hands `joined` out as `SignalEvent::Joined` and answers `pong` itself.
        SignalEvent::Message(ServerMessage::Joined { .. } | ServerMessage::Pong {}) => Vec::new(),
        SignalEvent::Reconnecting {
            attempt,
            retry_in,
            cause,
        } => vec![
            Tell(CallEvent::Reconnecting {
                attempt,
                retry_in,
                cause,
            }),
            Negotiate(N::SignalingLost),
        ],
        SignalEvent::GaveUp { cause } => {
            vec![Stop(CallError::Signaling(ClientError::Unreachable {
                url: server.to_owned(),
                reason: cause,
            }))]
        }
    }
}

/// Routes a state change of connection `generation`; `current` is the
/// connection the session holds. A replaced connection's states are not news.
pub(crate) fn route_peer_state(
    generation: Generation,
    state: RTCPeerConnectionState,
    current: Option<Generation>,
) -> Vec<Route> {
    if Some(generation) != current {
        return Vec::new();
    }
    let mut routes: Vec<Route> = ConnectionState::from_webrtc(state)
        .map(|state| Route::Tell(CallEvent::ConnectionState(state)))
        .into_iter()
        .collect();
    match state {
        RTCPeerConnectionState::Connected => {
            routes.push(Route::Negotiate(NegotiationEvent::Connected(generation)));
        }
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
            routes.push(Route::Negotiate(NegotiationEvent::Failed(generation)));
        }
        _ => {}
    }
    routes
}

/// Why the session's loop stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The person hung up, or every handle to the call was dropped.
    HungUp,
    /// Something the session cannot recover from.
    Failed(CallError),
}

impl Stop {
    /// What [`CallEvent::Ended`] says.
    pub(crate) fn outcome(self) -> Result<(), CallError> {
        match self {
            Stop::HungUp => Ok(()),
            Stop::Failed(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use duet_signal::{ErrorCode, JoinedRoom, PeerId, Role};

    use super::*;

    fn peer(name: &str) -> PeerId {
        PeerId(name.to_owned())
    }

    #[test]
    fn joining_tells_the_front_end_and_then_the_negotiator_with_the_peer_already_there() {
        let routes = route_signal(
            SignalEvent::Joined(JoinedRoom {
                room: "r".into(),
                id: peer("me"),
                role: Role::Callee,
                peers: vec![peer("a")],
                resumed: true,
                resume: None,
                ice_servers: Vec::new(),
            }),
            "ws://s",
        );
        assert!(matches!(
            &routes[..],
            [
                Route::Tell(CallEvent::Joined { room, role: Role::Callee, resumed: true }),
                Route::Negotiate(NegotiationEvent::Joined {
                    role: Role::Callee,
                    peer: Some(p),
                    resumed: true,
                }),
            ] if room == "r" && p == &peer("a")
        ));
    }

    #[test]
    fn relayed_messages_go_to_the_negotiator_unchanged() {
        let cases = [
            (
                SignalEvent::Message(ServerMessage::Offer {
                    from: peer("a"),
                    sdp: "o".into(),
                }),
                NegotiationEvent::RemoteOffer {
                    from: peer("a"),
                    sdp: "o".into(),
                },
            ),
            (
                SignalEvent::Message(ServerMessage::Answer {
                    from: peer("a"),
                    sdp: "x".into(),
                }),
                NegotiationEvent::RemoteAnswer {
                    from: peer("a"),
                    sdp: "x".into(),
                },
            ),
            (
                SignalEvent::Message(ServerMessage::Candidate {
                    from: peer("a"),
                    candidate: None,
                }),
                NegotiationEvent::RemoteCandidate {
                    from: peer("a"),
                    candidate: None,
                },
            ),
            (
                SignalEvent::Message(ServerMessage::Bye { from: peer("a") }),
                NegotiationEvent::RemoteBye(peer("a")),
            ),
            (
                SignalEvent::Message(ServerMessage::PeerJoined {
                    id: peer("b"),
                    role: Role::Caller,
                }),
                NegotiationEvent::PeerJoined(peer("b")),
            ),
            (
                SignalEvent::Message(ServerMessage::PeerLeft { id: peer("b") }),
                NegotiationEvent::PeerLeft(peer("b")),
            ),
        ];
        for (signal, expected) in cases {
            let routes = route_signal(signal, "ws://s");
            assert!(
                matches!(&routes[..], [Route::Negotiate(event)] if event == &expected),
                "{routes:?}"
            );
        }
    }

    #[test]
    fn a_closing_error_or_giving_up_ends_the_session_and_other_errors_do_not() {
        let full = route_signal(
            SignalEvent::Message(ServerMessage::Error {
                code: ErrorCode::RoomFull,
                message: "full".into(),
            }),
            "ws://s",
        );
        assert!(matches!(
            &full[..],
            [Route::Stop(CallError::Signaling(ClientError::Rejected {
                code: ErrorCode::RoomFull,
                ..
            }))]
        ));
        let refused = route_signal(
            SignalEvent::Message(ServerMessage::Error {
                code: ErrorCode::NoPeer,
                message: "alone".into(),
            }),
            "ws://s",
        );
        assert!(refused.is_empty());
        let gave_up = route_signal(
            SignalEvent::GaveUp {
                cause: "refused".into(),
            },
            "ws://s",
        );
        assert!(matches!(
            &gave_up[..],
            [Route::Stop(CallError::Signaling(ClientError::Unreachable { url, reason }))]
                if url == "ws://s" && reason == "refused"
        ));
    }

    #[test]
    fn a_signaling_reconnect_is_news_for_the_front_end_and_the_negotiator() {
        let routes = route_signal(
            SignalEvent::Reconnecting {
                attempt: 2,
                retry_in: Duration::from_millis(500),
                cause: "reset".into(),
            },
            "ws://s",
        );
        // The negotiator holds back ICE restart offers while signaling is down.
        assert!(matches!(
            &routes[..],
            [
                Route::Tell(CallEvent::Reconnecting { attempt: 2, .. }),
                Route::Negotiate(NegotiationEvent::SignalingLost)
            ]
        ));
    }

    #[test]
    fn peer_states_of_the_current_connection_are_told_and_fed_to_the_negotiator() {
        let connected = route_peer_state(3, RTCPeerConnectionState::Connected, Some(3));
        assert!(matches!(
            &connected[..],
            [
                Route::Tell(CallEvent::ConnectionState(state)),
                Route::Negotiate(NegotiationEvent::Connected(3)),
            ] if *state == ConnectionState::Connected
        ));
        for lost in [
            RTCPeerConnectionState::Failed,
            RTCPeerConnectionState::Closed,
        ] {
            let routes = route_peer_state(3, lost, Some(3));
            assert!(matches!(
                &routes[..],
                [
                    Route::Tell(_),
                    Route::Negotiate(NegotiationEvent::Failed(3))
                ]
            ));
        }
        let checking = route_peer_state(3, RTCPeerConnectionState::Connecting, Some(3));
        assert!(matches!(&checking[..], [Route::Tell(_)]));
    }

    #[test]
    fn states_of_a_replaced_connection_are_dropped() {
        assert!(route_peer_state(2, RTCPeerConnectionState::Failed, Some(3)).is_empty());
        assert!(route_peer_state(2, RTCPeerConnectionState::Connected, None).is_empty());
    }

    #[test]
    fn the_end_says_ok_after_a_hang_up_and_the_error_otherwise() {
        assert!(Stop::HungUp.outcome().is_ok());
        assert!(matches!(
            Stop::Failed(CallError::NoMedia).outcome(),
            Err(CallError::NoMedia)
        ));
    }
}
