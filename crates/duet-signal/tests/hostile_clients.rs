//! The server holds under hostile clients (issue 15), over real sockets: a
//! client that never reads, slow request heads, idle keep-alive, more
//! connections or joins than one address may have, a crowd that never
//! upgrades, pages of other origins, and client text that tries to forge log
//! lines. Timeouts are shortened through [`ServerConfig`]; every wait has a
//! generous bound so that a wedged server fails the test instead of hanging it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PATIENCE, RawPeer, start_server};
use duet_signal::{ErrorCode, RateLimit, ServerConfig, ServerMessage};
use futures_util::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

fn addr_of(server: &duet_signal::RunningServer) -> std::net::SocketAddr {
    server.local_addr()
}

/// Reads until the server closes the connection; the bytes read, or `None`
/// if it was still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let reading = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, reading).await.ok()?;
    Some(seen)
}

/// Opens a WebSocket; the HTTP status when the server refuses it.
async fn try_websocket(url: &str, origin: Option<&str>) -> Result<RawPeer, u16> {
    let mut request = format!("{url}/ws").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .expect("the server answered the handshake")
    {
        Ok((socket, _)) => Ok(RawPeer::from_socket(socket)),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("handshake failed without an HTTP answer: {err}"),
    }
}

/// Retries opening a WebSocket until the server admits it; how long that took.
async fn admitted_within(url: &str, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut peer) = try_websocket_quietly(url).await {
            peer.assert_open().await;
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "still refused after {patience:?}: the old connection is pinned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn try_websocket_quietly(url: &str) -> Result<RawPeer, ()> {
    match tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(format!("{url}/ws")),
    )
    .await
    {
        Ok(Ok((socket, _))) => Ok(RawPeer::from_socket(socket)),
        _ => Err(()),
    }
}

#[tokio::test]
async fn a_client_that_floods_joins_and_never_reads_is_dropped_and_pins_nothing() {
    // One connection per address: the flooder's slot must come back for anyone
    // else from its address to get in.
    let config = ServerConfig {
        join_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_millis(300),
        max_connections_per_address: 1,
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr_of(&server)).await.unwrap();
    let (mut flooder, _) = tokio_tungstenite::client_async(format!("{}/ws", server.url()), stream)
        .await
        .unwrap();
    // Each bad join is answered with an error that quotes its 60 KB role.
    let role = "x".repeat(60_000);
    let join = format!(r#"{{"type":"join","room":"r","role":"{role}"}}"#);
    let flood = async {
        for _ in 0..150 {
            if flooder.send(Message::text(join.clone())).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), flood).await;
    // The flooder still exists and still does not read; its slot must free up.
    let waited = admitted_within(server.url(), PATIENCE).await;
    eprintln!("admitted again after {waited:?}");
    drop(flooder);
}

/// A joined peer that never reads while its partner sends it 60 KB offers:
/// the partner must hear `peer-left` without the silent peer doing anything.
async fn a_silent_partner_is_dropped(config: ServerConfig) -> Duration {
    let server = start_server(config);
    let mut talker = RawPeer::connect(server.url()).await;
    talker.join("stall", "caller").await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr_of(&server)).await.unwrap();
    let (mut silent, _) = tokio_tungstenite::client_async(format!("{}/ws", server.url()), stream)
        .await
        .unwrap();
    silent
        .send(Message::text(
            r#"{"type":"join","room":"stall","role":"callee"}"#,
        ))
        .await
        .unwrap();
    assert!(matches!(
        talker.message().await,
        ServerMessage::PeerJoined { .. }
    ));
    let started = Instant::now();
    let offer = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "s".repeat(60_000));
    loop {
        talker.send_text(offer.clone()).await;
        let heard = tokio::time::timeout(Duration::from_millis(20), talker.message()).await;
        if let Ok(message) = heard {
            assert!(
                matches!(message, ServerMessage::PeerLeft { .. }),
                "{message:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the silent peer is still in the room after {PATIENCE:?}"
        );
    }
    drop(silent);
    started.elapsed()
}

#[tokio::test]
async fn a_peer_whose_writes_stall_is_dropped_by_the_write_deadline() {
    let waited = a_silent_partner_is_dropped(ServerConfig {
        write_timeout: Duration::from_millis(300),
        outbox_capacity: 100_000,
        outbox_max_bytes: 1 << 30,
        ..ServerConfig::default()
    })
    .await;
    eprintln!("peer-left after {waited:?}");
}

#[tokio::test]
async fn a_peer_whose_outbox_passes_its_byte_bound_is_dropped_even_mid_write() {
    let waited = a_silent_partner_is_dropped(ServerConfig {
        write_timeout: Duration::from_secs(3600),
        outbox_capacity: 100_000,
        outbox_max_bytes: 256 * 1024,
        ..ServerConfig::default()
    })
    .await;
    eprintln!("peer-left after {waited:?}");
}

#[tokio::test]
async fn slow_request_heads_and_idle_keep_alive_are_cut_off() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(400),
        ..ServerConfig::default()
    };
    let server = start_server(config);

    // Slowloris: a byte of header every 100 ms, never the blank line.
    let mut slow = TcpStream::connect(addr_of(&server)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: duet\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X").await.is_err() {
                return;
            }
        }
    };
    let cut_off = tokio::time::timeout(PATIENCE, trickle).await;
    assert!(
        cut_off.is_ok(),
        "a slow request head was held for {PATIENCE:?}"
    );
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(300),
        "cut off early: {held:?}"
    );

    // Keep-alive: one request answered, then nothing; the server hangs up.
    let mut idle = TcpStream::connect(addr_of(&server)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: duet\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut idle, PATIENCE)
        .await
        .expect("an idle keep-alive connection was held");
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn connections_past_the_address_budget_are_refused_until_one_closes() {
    let config = ServerConfig {
        max_connections_per_address: 3,
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let mut upgraded = RawPeer::connect(server.url()).await;
    let _idle_a = TcpStream::connect(addr_of(&server)).await.unwrap();
    let idle_b = TcpStream::connect(addr_of(&server)).await.unwrap();
    let mut refused = TcpStream::connect(addr_of(&server)).await.unwrap();
    let answer = read_until_closed(&mut refused, PATIENCE)
        .await
        .expect("a refused connection is closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.ends_with("too many connections from your address\n"),
        "{answer}"
    );
    assert_eq!(try_websocket(server.url(), None).await.err(), Some(429));
    // The connections already admitted are unaffected.
    upgraded.assert_open().await;
    drop(idle_b);
    admitted_within(server.url(), PATIENCE).await;
}

#[tokio::test]
async fn each_client_address_has_its_own_budget() {
    let config = ServerConfig {
        max_connections_per_address: 1,
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let mut first = RawPeer::connect(server.url()).await;
    assert_eq!(try_websocket(server.url(), None).await.err(), Some(429));
    let from_elsewhere = duet_signal::ClientConfig {
        local_address: Some("127.0.0.2".parse().unwrap()),
        ..duet_signal::ClientConfig::new(server.url(), "elsewhere", duet_signal::RoleRequest::Auto)
    };
    let (_tx, _events) = duet_signal::connect(from_elsewhere).await.unwrap();
    first.assert_open().await;
}

#[tokio::test]
async fn connections_that_never_upgrade_are_capped_and_websockets_do_not_count() {
    let config = ServerConfig {
        max_pending_connections: 2,
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let mut upgraded = RawPeer::connect(server.url()).await;
    let mut also_upgraded = RawPeer::connect(server.url()).await;
    let _idle_a = TcpStream::connect(addr_of(&server)).await.unwrap();
    let _idle_b = TcpStream::connect(addr_of(&server)).await.unwrap();
    // Let the server accept both before the next one arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(addr_of(&server)).await.unwrap();
    let answer = read_until_closed(&mut refused, PATIENCE)
        .await
        .expect("refused at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    upgraded.assert_open().await;
    also_upgraded.assert_open().await;
}

#[tokio::test]
async fn joins_past_the_address_budget_are_rate_limited() {
    let config = ServerConfig {
        joins_per_address: RateLimit {
            burst: 2,
            per_second: 0.01,
        },
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let mut a = RawPeer::connect(server.url()).await;
    a.join("budget-1", "caller").await;
    let mut b = RawPeer::connect(server.url()).await;
    b.join("budget-2", "caller").await;
    let mut c = RawPeer::connect(server.url()).await;
    c.send_text(r#"{"type":"join","room":"budget-3","role":"caller"}"#)
        .await;
    match c.message().await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::RateLimited),
        other => panic!("expected rate_limited, got {other:?}"),
    }
    assert_eq!(c.next().await, common::Heard::Closed(Some(1008)));
    a.assert_open().await;
}

#[tokio::test]
async fn only_the_same_origin_and_allowed_origins_may_open_ws_from_a_browser() {
    let config = ServerConfig {
        allowed_origins: vec!["https://friends.example".into()],
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let url = server.url().to_owned();
    let own = format!("http://{}", server.local_addr());
    assert!(
        try_websocket(&url, None).await.is_ok(),
        "no Origin: a native client"
    );
    assert!(try_websocket(&url, Some(&own)).await.is_ok(), "same origin");
    assert!(
        try_websocket(&url, Some("https://friends.example"))
            .await
            .is_ok()
    );
    assert_eq!(
        try_websocket(&url, Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert_eq!(try_websocket(&url, Some("null")).await.err(), Some(403));

    // The refusal says why in one line.
    let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.local_addr()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, raw.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response[..n]);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(body.lines().count(), 1, "{body:?}");
}

#[tokio::test]
async fn shutdown_completes_with_a_client_stuck_in_a_write() {
    let config = ServerConfig {
        // Only shutdown can end this write.
        write_timeout: Duration::from_secs(3600),
        join_timeout: Duration::from_secs(3600),
        shutdown_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server = start_server(config);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(server.local_addr()).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(format!("{}/ws", server.url()), stream)
        .await
        .unwrap();
    let join = format!(
        r#"{{"type":"join","room":"r","role":"{}"}}"#,
        "x".repeat(60_000)
    );
    let flood = async {
        for _ in 0..150 {
            if stuck.send(Message::text(join.clone())).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flood).await;
    let started = Instant::now();
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("shutdown finished")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// A current-thread runtime: the server's tasks run on this thread, under the
// subscriber set for it.
#[tokio::test(flavor = "current_thread")]
async fn client_text_cannot_forge_log_lines_or_flood_the_log_and_rooms_stay_out_of_info() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = start_server(ServerConfig::default());
    let mut peer = RawPeer::connect(server.url()).await;
    // A role with a newline and a forged line, then a 60 KB one.
    peer.send_text(
        r#"{"type":"join","room":"r","role":"x\n2026-01-01T00:00:00Z ERROR forged: admin logged in"}"#,
    )
    .await;
    assert!(matches!(peer.message().await, ServerMessage::Error { .. }));
    let huge = format!(
        r#"{{"type":"join","room":"r","role":"{}"}}"#,
        "y".repeat(60_000)
    );
    peer.send_text(huge).await;
    assert!(matches!(peer.message().await, ServerMessage::Error { .. }));
    peer.join("secret-kitchen-room", "caller").await;
    peer.assert_open().await;

    let log = captured.text();
    assert!(
        log.contains("unknown variant"),
        "the errors were logged: {log}"
    );
    for line in log.lines() {
        assert!(!line.starts_with("2026-01-01"), "forged line: {line}");
        assert!(line.len() < 1000, "a line of {} bytes", line.len());
    }
    assert!(
        !log.contains("secret-kitchen-room"),
        "room name at info: {log}"
    );
    drop(server);
}
