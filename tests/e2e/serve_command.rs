//! `duet serve` as a user runs it: the address on the first line, the health
//! check, a real WebSocket join, clean exits on SIGINT/SIGTERM, and one-line
//! errors for a busy port or a missing certificate.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::io::{Read as _, Write as _};
use std::time::Duration;

use common::DuetProcess;
use duet_signal::{ClientConfig, RoleRequest, SignalEvent};

fn start_server() -> (DuetProcess, String) {
    let mut server = DuetProcess::spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let addr = server.line();
    assert!(
        addr.parse::<std::net::SocketAddr>().is_ok(),
        "the first line is the address, got {addr:?}"
    );
    (server, addr)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn serve_prints_its_address_and_answers_the_health_check() {
    let _one = common::serialised();
    let (_server, addr) = start_server();
    let response = http_get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
}

async fn joined_client(addr: &str) -> (duet_signal::SignalSender, duet_signal::SignalEvents) {
    let (tx, mut events) = duet_signal::connect(ClientConfig::new(
        format!("ws://{addr}"),
        "signals",
        RoleRequest::Auto,
    ))
    .await
    .unwrap();
    assert!(matches!(events.recv().await, Some(SignalEvent::Joined(_))));
    (tx, events)
}

fn stops_cleanly_on(signal: &str) {
    let (mut server, addr) = start_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_tx, mut events) = runtime.block_on(joined_client(&addr));
    server.signal(signal);
    let (status, took) = server.wait_for_exit(Duration::from_secs(5));
    assert!(status.success(), "{signal}: {status}");
    assert!(
        took < Duration::from_secs(2),
        "{signal}: exit took {took:?}"
    );
    // The client was told (close frame 1001) and starts reconnecting.
    let event = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), events.recv()).await });
    match event {
        Ok(Some(SignalEvent::Reconnecting { cause, .. })) => {
            assert!(cause.contains("1001"), "{cause}");
        }
        other => panic!("{signal}: expected a reconnect report, got {other:?}"),
    }
}

#[test]
fn sigterm_closes_connections_and_exits_0_within_2_seconds() {
    let _one = common::serialised();
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_closes_connections_and_exits_0_within_2_seconds() {
    let _one = common::serialised();
    stops_cleanly_on("INT");
}

#[test]
fn a_busy_port_is_a_one_line_error() {
    let _one = common::serialised();
    let (_first, addr) = start_server();
    let mut second = DuetProcess::spawn(&["serve", "--listen", &addr]);
    let (status, _) = second.wait_for_exit(Duration::from_secs(5));
    assert!(!status.success());
    let stderr = second.stderr();
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("duet: cannot listen on"), "{stderr}");
}

#[test]
fn a_missing_certificate_is_a_one_line_error_naming_the_file() {
    let _one = common::serialised();
    let mut server = DuetProcess::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    let (status, _) = server.wait_for_exit(Duration::from_secs(5));
    assert!(!status.success());
    let stderr = server.stderr();
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// The status line of a WebSocket upgrade request to `/ws` with `origin`.
fn upgrade_status(addr: &str, origin: Option<&str>) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    )
    .unwrap();
    let mut answer = [0u8; 512];
    let read = stream.read(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn pages_from_other_origins_are_refused_unless_allowed() {
    let _one = common::serialised();
    let mut server = DuetProcess::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-origin",
        "https://duet.example",
    ]);
    let addr = server.line();
    let own = format!("http://{addr}");
    for (origin, expected) in [
        (None, "101"),
        (Some(own.as_str()), "101"),
        (Some("https://duet.example"), "101"),
        (Some("https://elsewhere.example"), "403"),
    ] {
        let status = upgrade_status(&addr, origin);
        assert!(status.contains(expected), "{origin:?}: {status}");
    }
}

#[test]
fn turn_without_a_secret_is_a_one_line_error() {
    let _one = common::serialised();
    let mut server = DuetProcess::spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--turn-url",
        "turn:10.0.0.1:3478",
    ]);
    let (status, _) = server.wait_for_exit(Duration::from_secs(10));
    assert!(!status.success());
    let stderr = server.stderr();
    assert!(stderr.contains("--turn-url needs the secret"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
