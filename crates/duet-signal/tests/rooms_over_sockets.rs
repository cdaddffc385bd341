//! Room behaviour through the real server and the real client: join orders,
//! roles, ordered relay with `from`, isolation between rooms, and `peer-left`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{PATIENCE, RawPeer, id_of, start_server};
use duet_signal::{
    ClientConfig, IceCandidate, Role, RoleRequest, ServerConfig, ServerMessage, SignalEvent,
    SignalEvents, SignalSender, connect,
};

async fn join(
    url: &str,
    room: &str,
    role: RoleRequest,
) -> (SignalSender, SignalEvents, duet_signal::JoinedRoom) {
    let (tx, mut events) = connect(ClientConfig::new(url, room, role)).await.unwrap();
    let Some(SignalEvent::Joined(joined)) = events.recv().await else {
        panic!("the first event is Joined");
    };
    (tx, events, joined)
}

async fn next(events: &mut SignalEvents) -> SignalEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("the client is running")
}

#[tokio::test]
async fn caller_first_then_callee_pair_up_and_the_caller_hears_peer_joined() {
    let server = start_server(ServerConfig::default());
    let (_a, mut a_events, a) = join(server.url(), "order1", RoleRequest::Caller).await;
    assert_eq!((a.role, a.peers.len()), (Role::Caller, 0));
    let (_b, _b_events, b) = join(server.url(), "order1", RoleRequest::Callee).await;
    assert_eq!(
        (b.role, b.peers.clone()),
        (Role::Callee, vec![a.id.clone()])
    );
    assert_eq!(
        next(&mut a_events).await,
        SignalEvent::Message(ServerMessage::PeerJoined {
            id: b.id,
            role: Role::Callee
        })
    );
}

#[tokio::test]
async fn callee_first_then_caller_pair_up_and_the_caller_sees_the_peer_in_joined() {
    let server = start_server(ServerConfig::default());
    let (_b, mut b_events, b) = join(server.url(), "order2", RoleRequest::Callee).await;
    let (_a, _a_events, a) = join(server.url(), "order2", RoleRequest::Caller).await;
    assert_eq!(
        (a.role, a.peers.clone()),
        (Role::Caller, vec![b.id.clone()])
    );
    assert_eq!(
        next(&mut b_events).await,
        SignalEvent::Message(ServerMessage::PeerJoined {
            id: a.id,
            role: Role::Caller
        })
    );
}

#[tokio::test]
async fn auto_roles_give_callee_first_and_caller_second() {
    let server = start_server(ServerConfig::default());
    let (_x, _xe, x) = join(server.url(), "auto", RoleRequest::Auto).await;
    let (_y, _ye, y) = join(server.url(), "auto", RoleRequest::Auto).await;
    assert_eq!((x.role, y.role), (Role::Callee, Role::Caller));
}

#[tokio::test]
async fn relayed_messages_arrive_in_order_with_from() {
    let server = start_server(ServerConfig::default());
    let (a_tx, _a_events, a) = join(server.url(), "relay", RoleRequest::Caller).await;
    let (b_tx, mut b_events, _b) = join(server.url(), "relay", RoleRequest::Callee).await;
    a_tx.offer("v=0 offer").unwrap();
    for n in 0..150u16 {
        a_tx.candidate(Some(IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }))
        .unwrap();
    }
    a_tx.candidate(None).unwrap();
    assert_eq!(
        next(&mut b_events).await,
        SignalEvent::Message(ServerMessage::Offer {
            from: a.id.clone(),
            sdp: "v=0 offer".into()
        })
    );
    for n in 0..150u16 {
        match next(&mut b_events).await {
            SignalEvent::Message(ServerMessage::Candidate {
                from,
                candidate: Some(c),
            }) => {
                assert_eq!(from, a.id);
                assert_eq!(
                    c.candidate,
                    format!("candidate:{n} 1 udp 1 127.0.0.1 {n} typ host")
                );
            }
            other => panic!("candidate {n}: {other:?}"),
        }
    }
    assert_eq!(
        next(&mut b_events).await,
        SignalEvent::Message(ServerMessage::Candidate {
            from: a.id.clone(),
            candidate: None
        })
    );
    b_tx.answer("v=0 answer").unwrap();
}

#[tokio::test]
async fn long_messages_arrive_whole_though_both_ends_send_them_in_fragments() {
    let server = start_server(ServerConfig::default());
    let (a_tx, _a_events, a) = join(server.url(), "long", RoleRequest::Caller).await;
    let (_b_tx, mut b_events, _b) = join(server.url(), "long", RoleRequest::Callee).await;
    // Offers of a real call are 2–6 KiB; multi-byte characters straddle the
    // client's and the server's 512-byte fragment boundaries.
    for size in [500, 512, 1024, 4096, 60_000] {
        let sdp: String = "v=0 é€😀 ".chars().cycle().take(size / 3).collect();
        a_tx.offer(sdp.clone()).unwrap();
        assert_eq!(
            next(&mut b_events).await,
            SignalEvent::Message(ServerMessage::Offer {
                from: a.id.clone(),
                sdp
            })
        );
    }
}

#[tokio::test]
async fn no_message_ever_crosses_rooms_with_100_rooms_in_parallel() {
    // 200 joins from one address: more than its default budget.
    let server = start_server(ServerConfig {
        joins_per_address: duet_signal::RateLimit {
            burst: 1000,
            per_second: 100.0,
        },
        ..ServerConfig::default()
    });
    let url = server.url().to_owned();
    let mut rooms = Vec::new();
    for r in 0..100 {
        let url = url.clone();
        rooms.push(tokio::spawn(async move {
            let room = format!("room-{r}");
            let (a_tx, mut a_events, a) = join(&url, &room, RoleRequest::Caller).await;
            let (b_tx, mut b_events, b) = join(&url, &room, RoleRequest::Callee).await;
            assert_eq!(
                next(&mut a_events).await,
                SignalEvent::Message(ServerMessage::PeerJoined {
                    id: b.id.clone(),
                    role: Role::Callee
                })
            );
            for n in 0..20 {
                a_tx.offer(format!("{room} a {n}")).unwrap();
                b_tx.answer(format!("{room} b {n}")).unwrap();
            }
            for n in 0..20 {
                assert_eq!(
                    next(&mut b_events).await,
                    SignalEvent::Message(ServerMessage::Offer {
                        from: a.id.clone(),
                        sdp: format!("{room} a {n}")
                    })
                );
                assert_eq!(
                    next(&mut a_events).await,
                    SignalEvent::Message(ServerMessage::Answer {
                        from: b.id.clone(),
                        sdp: format!("{room} b {n}")
                    })
                );
            }
            // Let any stray cross-room traffic arrive, then check nothing else came.
            tokio::time::sleep(Duration::from_millis(300)).await;
            for events in [&mut a_events, &mut b_events] {
                if let Ok(Some(extra)) =
                    tokio::time::timeout(Duration::from_millis(10), events.recv()).await
                {
                    panic!("{room}: unexpected {extra:?}");
                }
            }
        }));
    }
    for room in rooms {
        room.await.unwrap();
    }
}

#[tokio::test]
async fn peer_left_follows_bye_and_the_seat_can_be_taken_again() {
    let server = start_server(ServerConfig::default());
    let (_a_tx, mut a_events, _a) = join(server.url(), "bye", RoleRequest::Caller).await;
    let (b_tx, _b_events, b) = join(server.url(), "bye", RoleRequest::Callee).await;
    next(&mut a_events).await; // peer-joined
    b_tx.bye().unwrap();
    assert_eq!(
        next(&mut a_events).await,
        SignalEvent::Message(ServerMessage::Bye { from: b.id.clone() })
    );
    assert_eq!(
        next(&mut a_events).await,
        SignalEvent::Message(ServerMessage::PeerLeft { id: b.id.clone() })
    );
    let (_c, _c_events, c) = join(server.url(), "bye", RoleRequest::Callee).await;
    assert_eq!(
        next(&mut a_events).await,
        SignalEvent::Message(ServerMessage::PeerJoined {
            id: c.id,
            role: Role::Callee
        })
    );
}

#[tokio::test]
async fn peer_left_follows_a_closed_connection() {
    let server = start_server(ServerConfig::default());
    let mut a = RawPeer::connect(server.url()).await;
    a.join("close", "caller").await;
    let (b_tx, _b_events, b) = join(server.url(), "close", RoleRequest::Callee).await;
    assert!(matches!(
        a.message().await,
        ServerMessage::PeerJoined { .. }
    ));
    b_tx.close();
    assert_eq!(a.message().await, ServerMessage::PeerLeft { id: b.id });
}

#[tokio::test]
async fn peer_left_follows_a_peer_that_stops_answering_pings() {
    let server = start_server(ServerConfig {
        ping_interval: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    });
    let mut a = RawPeer::connect(server.url()).await;
    a.join("vanish", "caller").await;
    let mut b = RawPeer::connect(server.url()).await;
    let b_id = id_of(&b.join("vanish", "callee").await);
    assert!(matches!(
        a.message().await,
        ServerMessage::PeerJoined { .. }
    ));
    // b's socket stays open but nothing reads it, so its pongs never come.
    let _silent = b.into_silent();
    let started = std::time::Instant::now();
    // `a` answers pings (its reads do), so only b is dropped.
    assert_eq!(a.message().await, ServerMessage::PeerLeft { id: b_id });
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "dropped too early: {waited:?}"
    );
    a.assert_open().await;
}
