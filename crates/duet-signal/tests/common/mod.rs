//! Helpers shared by the socket tests: a real server on port 0 and a raw
//! WebSocket peer that can send anything, malformed frames included.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a different subset

use std::time::Duration;

use duet_signal::{ServerConfig, ServerMessage, SignalServer};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Generous bound for anything that should happen "now" on loopback.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Starts a real server on a free loopback port.
pub fn start_server(config: ServerConfig) -> duet_signal::RunningServer {
    SignalServer::bind("127.0.0.1:0".parse().unwrap(), None, config)
        .unwrap()
        .spawn()
}

/// What a raw peer saw when it read the next frame.
#[derive(Debug, PartialEq)]
pub enum Heard {
    Message(ServerMessage),
    Closed(Option<u16>),
}

/// A WebSocket peer driven frame by frame.
pub struct RawPeer {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawPeer {
    pub async fn connect(server_url: &str) -> RawPeer {
        let (socket, _) = tokio_tungstenite::connect_async(format!("{server_url}/ws"))
            .await
            .unwrap();
        RawPeer { socket }
    }

    pub fn from_socket(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> RawPeer {
        RawPeer { socket }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.socket.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket.send(Message::binary(bytes)).await.unwrap();
    }

    /// Sends a text frame, tolerating a connection the server already closed.
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> bool {
        self.socket.send(Message::text(text.into())).await.is_ok()
    }

    /// The next message or close, skipping control frames; panics after [`PATIENCE`].
    pub async fn next(&mut self) -> Heard {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Heard::Message(ServerMessage::parse(&text).unwrap());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Heard::Closed(frame.map(|f: CloseFrame| u16::from(f.code)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Heard::Closed(None),
                }
            }
        })
        .await
        .expect("the server said nothing in time")
    }

    pub async fn message(&mut self) -> ServerMessage {
        match self.next().await {
            Heard::Message(message) => message,
            Heard::Closed(code) => panic!("expected a message, the connection closed ({code:?})"),
        }
    }

    /// Joins and returns (id, role) from `joined`.
    pub async fn join(&mut self, room: &str, role: &str) -> ServerMessage {
        self.send_text(format!(
            r#"{{"type":"join","room":"{room}","role":"{role}"}}"#
        ))
        .await;
        let answer = self.message().await;
        assert!(matches!(answer, ServerMessage::Joined { .. }), "{answer:?}");
        answer
    }

    /// Proves the connection is open and in order: a ping is answered by a pong.
    pub async fn assert_open(&mut self) {
        self.send_text(r#"{"type":"ping"}"#).await;
        assert_eq!(self.message().await, ServerMessage::Pong {});
    }

    /// Stops reading and answering pings while keeping the TCP connection: a vanished peer.
    pub fn into_silent(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.socket
    }
}

pub fn id_of(joined: &ServerMessage) -> duet_signal::PeerId {
    match joined {
        ServerMessage::Joined { id, .. } => id.clone(),
        other => panic!("not joined: {other:?}"),
    }
}

/// A plain HTTP/1.1 GET over a real socket: (status code, body).
pub async fn get_path(server_url: &str, path: &str) -> (u16, String) {
    let addr = server_url.trim_start_matches("ws://");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: duet\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
            .await
            .unwrap();
        response
    };
    let response = tokio::time::timeout(PATIENCE, exchange).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
