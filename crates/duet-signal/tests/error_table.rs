//! One test per row of the error table of `docs/protocol.md`, over real sockets: the code,
//! and whether the connection stays open or is closed (and with which code).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Heard, RawPeer, start_server};
use duet_signal::RateLimit;
use duet_signal::{ErrorCode, ServerConfig, ServerMessage};

fn code_of(message: &ServerMessage) -> ErrorCode {
    match message {
        ServerMessage::Error { code, .. } => *code,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn room_full_is_sent_and_the_connection_closed() {
    let server = start_server(ServerConfig::default());
    let (mut a, mut b, mut c) = (
        RawPeer::connect(server.url()).await,
        RawPeer::connect(server.url()).await,
        RawPeer::connect(server.url()).await,
    );
    a.join("full", "auto").await;
    b.join("full", "auto").await;
    assert!(matches!(
        a.message().await,
        ServerMessage::PeerJoined { .. }
    ));
    c.send_text(r#"{"type":"join","room":"full"}"#).await;
    assert_eq!(code_of(&c.message().await), ErrorCode::RoomFull);
    assert_eq!(c.next().await, Heard::Closed(Some(1000)));
    a.assert_open().await;
    b.assert_open().await;
}

#[tokio::test]
async fn role_taken_is_sent_and_the_connection_closed() {
    let server = start_server(ServerConfig::default());
    let (mut a, mut b) = (
        RawPeer::connect(server.url()).await,
        RawPeer::connect(server.url()).await,
    );
    a.join("seats", "caller").await;
    b.send_text(r#"{"type":"join","room":"seats","role":"caller"}"#)
        .await;
    assert_eq!(code_of(&b.message().await), ErrorCode::RoleTaken);
    assert_eq!(b.next().await, Heard::Closed(Some(1000)));
}

#[tokio::test]
async fn bad_room_is_sent_and_the_connection_closed() {
    let server = start_server(ServerConfig::default());
    for room in [
        String::new(),
        "spa ce".into(),
        "x".repeat(65),
        "sl/ash".into(),
    ] {
        let mut peer = RawPeer::connect(server.url()).await;
        peer.send_text(format!(r#"{{"type":"join","room":"{room}"}}"#))
            .await;
        assert_eq!(
            code_of(&peer.message().await),
            ErrorCode::BadRoom,
            "{room:?}"
        );
        assert_eq!(peer.next().await, Heard::Closed(Some(1000)));
    }
}

#[tokio::test]
async fn bad_message_is_sent_and_the_connection_stays_open() {
    let server = start_server(ServerConfig::default());
    let mut peer = RawPeer::connect(server.url()).await;
    for text in [
        "not json",
        "[]",
        "42",
        r#"{"no":"type"}"#,
        r#"{"type":"teleport"}"#,
        r#"{"type":"offer"}"#,
        r#"{"type":"offer","sdp":1}"#,
        r#"{"type":"candidate"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"join","room":"r","role":"king"}"#,
    ] {
        peer.send_text(text).await;
        assert_eq!(
            code_of(&peer.message().await),
            ErrorCode::BadMessage,
            "{text}"
        );
    }
    peer.send_binary(b"{\"type\":\"ping\"}".to_vec()).await;
    assert_eq!(code_of(&peer.message().await), ErrorCode::BadMessage);
    peer.assert_open().await;
    // A bad join did not count: a good one still works.
    peer.join("after-bad", "auto").await;
}

#[tokio::test]
async fn not_joined_is_sent_and_the_connection_stays_open() {
    let server = start_server(ServerConfig::default());
    let mut peer = RawPeer::connect(server.url()).await;
    peer.send_text(r#"{"type":"offer","sdp":"v=0"}"#).await;
    assert_eq!(code_of(&peer.message().await), ErrorCode::NotJoined);
    peer.assert_open().await;
}

#[tokio::test]
async fn already_joined_is_sent_and_the_connection_stays_open() {
    let server = start_server(ServerConfig::default());
    let mut peer = RawPeer::connect(server.url()).await;
    peer.join("once", "auto").await;
    peer.send_text(r#"{"type":"join","room":"twice"}"#).await;
    assert_eq!(code_of(&peer.message().await), ErrorCode::AlreadyJoined);
    peer.assert_open().await;
}

#[tokio::test]
async fn no_peer_is_sent_the_message_dropped_and_the_connection_stays_open() {
    let server = start_server(ServerConfig::default());
    let mut a = RawPeer::connect(server.url()).await;
    a.join("alone", "caller").await;
    a.send_text(r#"{"type":"offer","sdp":"lost"}"#).await;
    assert_eq!(code_of(&a.message().await), ErrorCode::NoPeer);
    a.assert_open().await;
    // The dropped offer is not delivered to a peer arriving later.
    let mut b = RawPeer::connect(server.url()).await;
    b.join("alone", "callee").await;
    assert!(matches!(
        a.message().await,
        ServerMessage::PeerJoined { .. }
    ));
    b.assert_open().await;
}

#[tokio::test]
async fn too_large_is_sent_and_the_connection_closed_with_1009() {
    let server = start_server(ServerConfig::default());
    // Just over the limit, and far over it.
    for size in [64 * 1024 + 1, 200 * 1024] {
        let mut peer = RawPeer::connect(server.url()).await;
        peer.join(&format!("big{size}"), "auto").await;
        let sdp = "x".repeat(size);
        peer.send_text(format!(r#"{{"type":"offer","sdp":"{sdp}"}}"#))
            .await;
        assert_eq!(
            code_of(&peer.message().await),
            ErrorCode::TooLarge,
            "{size}"
        );
        assert_eq!(peer.next().await, Heard::Closed(Some(1009)), "{size}");
    }
    // Beyond what the server reads at all, the connection still ends promptly
    // (the error may be lost to the TCP reset; see HARD_FRAME_LIMIT).
    let mut peer = RawPeer::connect(server.url()).await;
    peer.join("huge", "auto").await;
    let _ = peer.try_send_text("x".repeat(8 * 1024 * 1024)).await;
    loop {
        match peer.next().await {
            Heard::Message(message) => assert_eq!(code_of(&message), ErrorCode::TooLarge),
            Heard::Closed(code) => {
                assert!(matches!(code, None | Some(1009)), "{code:?}");
                break;
            }
        }
    }
    // Exactly at the limit is fine.
    let mut peer = RawPeer::connect(server.url()).await;
    let padding = "x".repeat(64 * 1024 - r#"{"type":"ping","p":""}"#.len());
    peer.send_text(format!(r#"{{"type":"ping","p":"{padding}"}}"#))
        .await;
    assert_eq!(peer.message().await, ServerMessage::Pong {});
}

#[tokio::test]
async fn rate_limited_is_sent_and_the_connection_closed_with_1008() {
    let server = start_server(ServerConfig {
        rate_limit: RateLimit {
            burst: 20,
            per_second: 5.0,
        },
        ..ServerConfig::default()
    });
    let mut peer = RawPeer::connect(server.url()).await;
    for _ in 0..40 {
        if !peer.try_send_text(r#"{"type":"ping"}"#).await {
            break;
        }
    }
    let mut pongs = 0;
    let code = loop {
        match peer.message().await {
            ServerMessage::Pong {} => pongs += 1,
            other => break code_of(&other),
        }
    };
    assert_eq!(code, ErrorCode::RateLimited);
    assert_eq!(pongs, 20, "the burst is served before the limit applies");
    assert_eq!(peer.next().await, Heard::Closed(Some(1008)));
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
    let server = start_server(ServerConfig {
        join_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut idle = RawPeer::connect(server.url()).await;
    let mut joined = RawPeer::connect(server.url()).await;
    joined.join("stays", "auto").await;
    let started = std::time::Instant::now();
    assert_eq!(idle.next().await, Heard::Closed(Some(1008)));
    assert!(started.elapsed() >= Duration::from_millis(250));
    joined.assert_open().await;
}
