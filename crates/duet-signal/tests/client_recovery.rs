//! The client against a real server that misbehaves: restarts, refusals,
//! nobody listening, TLS.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, start_server};
use duet_signal::{
    ClientConfig, ClientError, ErrorCode, Role, RoleRequest, ServerConfig, ServerMessage,
    SignalEvent, SignalEvents, SignalServer, TlsFiles, connect,
};

async fn next(events: &mut SignalEvents) -> SignalEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("the client is running")
}

fn fast_reconnect(url: &str, room: &str, role: RoleRequest) -> ClientConfig {
    ClientConfig {
        reconnect_initial: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..ClientConfig::new(url, room, role)
    }
}

/// Waits for the `Joined` of a reconnect, skipping the `Reconnecting` reports
/// (at least one must come, counting `already_seen` the caller consumed).
async fn until_rejoined(events: &mut SignalEvents, already_seen: u32) -> duet_signal::JoinedRoom {
    let mut reconnecting = already_seen;
    loop {
        match next(events).await {
            SignalEvent::Reconnecting { .. } => reconnecting += 1,
            SignalEvent::Joined(joined) => {
                assert!(
                    reconnecting >= 1,
                    "a reconnect is reported before the rejoin"
                );
                assert!(joined.resumed);
                return joined;
            }
            SignalEvent::Message(ServerMessage::PeerLeft { .. }) => {}
            other => panic!("unexpected while reconnecting: {other:?}"),
        }
    }
}

#[tokio::test]
async fn both_clients_reconnect_and_pair_again_when_the_server_restarts_on_the_same_port() {
    let first = start_server(ServerConfig::default());
    let addr = first.local_addr();
    let url = first.url().to_owned();
    let (caller_tx, mut caller) = connect(fast_reconnect(&url, "restart", RoleRequest::Auto))
        .await
        .unwrap();
    let (_callee_tx, mut callee) = connect(fast_reconnect(&url, "restart", RoleRequest::Auto))
        .await
        .unwrap();
    let SignalEvent::Joined(callee_first) = next(&mut caller).await else {
        panic!()
    };
    assert_eq!(
        callee_first.role,
        Role::Callee,
        "the first auto joiner is the callee"
    );
    let SignalEvent::Joined(caller_first) = next(&mut callee).await else {
        panic!()
    };
    assert_eq!(caller_first.role, Role::Caller);
    assert!(matches!(
        next(&mut caller).await,
        SignalEvent::Message(ServerMessage::PeerJoined { .. })
    ));

    // Roles above are named for who holds them: `caller` joined first and is the callee.
    first.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = SignalServer::bind(addr, None, ServerConfig::default())
        .unwrap()
        .spawn();

    let a = until_rejoined(&mut caller, 0).await;
    let b = until_rejoined(&mut callee, 0).await;
    assert_eq!(a.role, Role::Callee, "the same seat is taken again");
    assert_eq!(b.role, Role::Caller);
    // Whoever rejoined second sees the other in `joined`; the first hears `peer-joined`.
    let paired_in_joined = !a.peers.is_empty() || !b.peers.is_empty();
    assert!(paired_in_joined);
    let (first_back, first_events) = if a.peers.is_empty() {
        (&a, &mut caller)
    } else {
        (&b, &mut callee)
    };
    let _ = first_back;
    assert!(matches!(
        next(first_events).await,
        SignalEvent::Message(ServerMessage::PeerJoined { .. })
    ));

    // And the relay works again.
    caller_tx.offer("after restart").unwrap();
    assert_eq!(
        next(&mut callee).await,
        SignalEvent::Message(ServerMessage::Offer {
            from: a.id.clone(),
            sdp: "after restart".into()
        })
    );
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn messages_sent_while_the_server_is_down_go_out_after_the_rejoin() {
    let first = start_server(ServerConfig::default());
    let addr = first.local_addr();
    let url = first.url().to_owned();
    let (a_tx, mut a) = connect(fast_reconnect(&url, "queue", RoleRequest::Caller))
        .await
        .unwrap();
    next(&mut a).await;
    first.kill().await;
    // Wait until the client knows, then send while it is disconnected.
    assert!(matches!(
        next(&mut a).await,
        SignalEvent::Reconnecting { .. }
    ));
    a_tx.offer("queued").unwrap();
    let second = SignalServer::bind(addr, None, ServerConfig::default())
        .unwrap()
        .spawn();
    let (_b_tx, mut b) = connect(fast_reconnect(&url, "queue", RoleRequest::Callee))
        .await
        .unwrap();
    next(&mut b).await;
    until_rejoined(&mut a, 1).await;
    match next(&mut b).await {
        SignalEvent::Message(ServerMessage::PeerJoined { .. }) => {
            assert!(
                matches!(next(&mut b).await, SignalEvent::Message(ServerMessage::Offer { sdp, .. }) if sdp == "queued")
            );
        }
        SignalEvent::Message(ServerMessage::Offer { sdp, .. }) => assert_eq!(sdp, "queued"),
        other => panic!("{other:?}"),
    }
    second.shutdown().await.unwrap();
}

/// The server's refusal code, if the client was refused.
fn refusal(err: &ClientError) -> Option<ErrorCode> {
    match err {
        ClientError::Rejected { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn room_full_role_taken_and_bad_room_are_final_errors() {
    let server = start_server(ServerConfig::default());
    let _a = connect(ClientConfig::new(
        server.url(),
        "final",
        RoleRequest::Caller,
    ))
    .await
    .unwrap();
    let err = connect(ClientConfig::new(
        server.url(),
        "final",
        RoleRequest::Caller,
    ))
    .await
    .unwrap_err();
    assert_eq!(refusal(&err), Some(ErrorCode::RoleTaken), "{err}");
    let _b = connect(ClientConfig::new(
        server.url(),
        "final",
        RoleRequest::Callee,
    ))
    .await
    .unwrap();
    let err = connect(ClientConfig::new(server.url(), "final", RoleRequest::Auto))
        .await
        .unwrap_err();
    assert_eq!(refusal(&err), Some(ErrorCode::RoomFull), "{err}");
    assert_eq!(
        err.to_string(),
        "room final already has two people in it (room_full)"
    );
    // A bad room is caught before connecting.
    let err = connect(ClientConfig::new(
        server.url(),
        "no spaces",
        RoleRequest::Auto,
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::BadRoom(_)), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_prompt_error() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let err = connect(ClientConfig::new(
        format!("ws://127.0.0.1:{port}"),
        "r",
        RoleRequest::Auto,
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cannot reach the signaling server")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = ClientConfig {
        connect_timeout: Duration::from_millis(300),
        ..ClientConfig::new(format!("ws://{addr}"), "r", RoleRequest::Auto)
    };
    let err = connect(config).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn a_client_gives_up_when_told_to_and_says_so() {
    let server = start_server(ServerConfig::default());
    let config = ClientConfig {
        give_up_after: Some(Duration::from_millis(300)),
        ..fast_reconnect(server.url(), "gone", RoleRequest::Auto)
    };
    let (_tx, mut events) = connect(config).await.unwrap();
    next(&mut events).await;
    server.kill().await;
    loop {
        match next(&mut events).await {
            SignalEvent::Reconnecting { .. } => {}
            SignalEvent::GaveUp { cause } => {
                assert!(cause.contains("cannot reach"), "{cause}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        tokio::time::timeout(PATIENCE, events.recv()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_close_frames_and_returns_promptly() {
    let server = start_server(ServerConfig::default());
    let mut raw = common::RawPeer::connect(server.url()).await;
    raw.join("bye-server", "auto").await;
    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(raw.next().await, common::Heard::Closed(Some(1001)));
}

#[tokio::test]
async fn wss_works_with_the_servers_certificate() {
    let dir = std::env::temp_dir().join(format!("duet-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();

    let server = SignalServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Some(&files),
        ServerConfig::default(),
    )
    .unwrap();
    assert!(server.url().starts_with("wss://"));
    let port = server.local_addr().port();
    let server = server.spawn();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!("wss://localhost:{port}");
    let config = ClientConfig {
        tls: Some(Arc::new(tls)),
        ..ClientConfig::new(&url, "secure", RoleRequest::Auto)
    };
    let (_tx, mut events) = connect(config).await.unwrap();
    assert!(matches!(next(&mut events).await, SignalEvent::Joined(_)));

    // Without trusting the certificate, the client refuses the server.
    let err = connect(ClientConfig::new(&url, "secure", RoleRequest::Auto))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");

    // A key that is not PEM is a clear error naming the file.
    std::fs::write(&files.key, "not a key").unwrap();
    let err = SignalServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Some(&files),
        ServerConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
