//! The signaling client: join a room, then exchange typed messages with the
//! other peer through the server, riding out server restarts.
//!
//! [`connect`] resolves once the server has answered `join`, so "server
//! unreachable" and "room full" are plain errors at the call site. After that a
//! background task owns the WebSocket: it turns frames into [`SignalEvent`]s,
//! sends what [`SignalSender`] is given, pings the server to notice a silent
//! death, and when the connection drops it reconnects with capped exponential
//! backoff and joins the same room in the same seat, reporting both steps as
//! events. A refusal that cannot change by retrying (`room_full`, `role_taken`,
//! `bad_room`) ends the client instead of looping.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::limits::Backoff;
use crate::log_text::excerpt;
use crate::protocol::{
    ClientMessage, ErrorCode, IceCandidate, MAX_FRAME_BYTES, PeerId, Role, RoleRequest, RoomName,
    ServerMessage, WS_PATH,
};
use crate::ws_fragments::send_text;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How to reach the server and which seat to take.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL (`ws://host:port` or `wss://…`); `/ws` is appended when it has no path.
    pub server: String,
    /// Room to join.
    pub room: String,
    /// Seat to ask for on the first join; rejoins ask for the seat actually held.
    pub role: RoleRequest,
    /// Limit for TCP + TLS + WebSocket handshake + `joined`, per attempt.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Stop reconnecting after this long without a connection; `None` keeps trying.
    pub give_up_after: Option<Duration>,
    /// How often to ping the server.
    pub keepalive: Duration,
    /// The server is considered gone when nothing was heard from it for this long.
    pub dead_after: Duration,
    /// TLS settings for `wss://`; `None` trusts the WebPKI roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Local address to connect from; `None` lets the system choose. A load
    /// test spreads its connections over loopback addresses with it, as real
    /// clients come from many addresses.
    pub local_address: Option<IpAddr>,
}

impl ClientConfig {
    /// Defaults suited to a desktop app: 5 s to connect, reconnect from 250 ms up to 5 s, forever.
    pub fn new(server: impl Into<String>, room: impl Into<String>, role: RoleRequest) -> Self {
        ClientConfig {
            server: server.into(),
            room: room.into(),
            role,
            connect_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            give_up_after: None,
            keepalive: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            tls: None,
            local_address: None,
        }
    }
}

/// Why the client could not join, or stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The room name breaks the spec's rules (checked before connecting).
    #[error("invalid room name: {0}")]
    BadRoom(String),
    /// TCP, TLS or the WebSocket handshake failed.
    #[error("cannot reach the signaling server at {url}: {reason}")]
    Unreachable {
        /// Endpoint tried.
        url: String,
        /// Cause.
        reason: String,
    },
    /// No `joined` within the connect timeout.
    #[error("the signaling server at {url} did not answer within {after:?}")]
    Timeout {
        /// Endpoint tried.
        url: String,
        /// Limit that passed.
        after: Duration,
    },
    /// The server refused the join.
    #[error("{message} ({code})")]
    Rejected {
        /// The server's code.
        code: ErrorCode,
        /// The server's sentence.
        message: String,
    },
    /// The server broke the protocol (for example closed before answering `join`).
    #[error("the signaling server misbehaved: {0}")]
    Protocol(String),
    /// The client has stopped; nothing more can be sent.
    #[error("the signaling client has stopped")]
    Stopped,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoom {
    /// Room joined.
    pub room: String,
    /// Our id in the room.
    pub id: PeerId,
    /// The seat we hold.
    pub role: Role,
    /// Peers already there (zero or one).
    pub peers: Vec<PeerId>,
    /// `true` when this join followed a reconnect rather than the first connect.
    pub resumed: bool,
    /// The token that takes this seat back after a broken connection, if the
    /// server gives one (protocol 1.1).
    pub resume: Option<String>,
    /// STUN/TURN servers the server handed out (protocol 1.1).
    pub ice_servers: Vec<crate::turn::IceServerEntry>,
}

impl JoinedRoom {
    /// The seat a `joined` message gives; `None` for any other message.
    fn from_message(message: ServerMessage) -> Option<JoinedRoom> {
        match message {
            ServerMessage::Joined {
                room,
                id,
                role,
                peers,
                resume,
                resumed,
                ice_servers,
            } => Some(JoinedRoom {
                room,
                id,
                role,
                peers,
                resumed,
                resume,
                ice_servers,
            }),
            _ => None,
        }
    }
}

/// What the client hands out, in arrival order: the server's messages as the
/// protocol types them ([`ServerMessage`]), and what only the client knows
/// (that it holds a seat, that it lost the server and is reconnecting, that it
/// gave up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalEvent {
    /// We hold a seat (first join, and again after every reconnect). The
    /// client consumes the server's `joined` itself, so it arrives here and
    /// never as a [`SignalEvent::Message`].
    Joined(JoinedRoom),
    /// A message from the server after the join: the other peer's arrival,
    /// departure and relayed call messages, and errors. When an error's
    /// [`ErrorCode::close_code`] is `Some`, the server closed us and this is
    /// the last event. Never `joined` (see [`SignalEvent::Joined`]) nor
    /// `pong` (answered inside the client).
    Message(ServerMessage),
    /// The connection to the server dropped; the next attempt starts after `retry_in`.
    Reconnecting {
        /// Attempt number since the drop, from 1.
        attempt: u32,
        /// Delay before this attempt.
        retry_in: Duration,
        /// Why the last connection or attempt failed.
        cause: String,
    },
    /// Reconnecting was abandoned after [`ClientConfig::give_up_after`]; this is the last event.
    GaveUp {
        /// The last failure.
        cause: String,
    },
}

/// The sending half: relays call messages to the other peer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignalSender {
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Debug)]
enum Command {
    Send(ClientMessage),
    Close,
}

impl SignalSender {
    /// Sends any client message. While reconnecting, messages wait and go out after the rejoin.
    pub fn send(&self, message: ClientMessage) -> Result<(), ClientError> {
        self.commands
            .send(Command::Send(message))
            .map_err(|_| ClientError::Stopped)
    }

    /// Relays an SDP offer.
    pub fn offer(&self, sdp: impl Into<String>) -> Result<(), ClientError> {
        self.send(ClientMessage::Offer { sdp: sdp.into() })
    }

    /// Relays an SDP answer.
    pub fn answer(&self, sdp: impl Into<String>) -> Result<(), ClientError> {
        self.send(ClientMessage::Answer { sdp: sdp.into() })
    }

    /// Relays a trickled candidate, or end of candidates with `None`.
    pub fn candidate(&self, candidate: Option<IceCandidate>) -> Result<(), ClientError> {
        self.send(ClientMessage::Candidate { candidate })
    }

    /// Hangs up: the other peer gets `bye` and `peer-left`; we may `join` again later.
    pub fn bye(&self) -> Result<(), ClientError> {
        self.send(ClientMessage::Bye {})
    }

    /// Closes the connection to the server (after sending anything already queued).
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// The receiving half: a stream of [`SignalEvent`]s that ends when the client stops.
#[derive(Debug)]
pub struct SignalEvents {
    events: mpsc::UnboundedReceiver<SignalEvent>,
}

impl SignalEvents {
    /// The next event, or `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<SignalEvent> {
        self.events.recv().await
    }
}

impl Stream for SignalEvents {
    type Item = SignalEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SignalEvent>> {
        self.events.poll_recv(cx)
    }
}

/// Turns a `--server` value into the WebSocket endpoint: `ws`/`wss` (or `http`/`https`,
/// mapped to them), with `/ws` appended when the URL has no path.
pub fn endpoint_url(server: &str) -> Result<Url, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: server.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(server).map_err(|e| bad(&e.to_string()))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad("the scheme must be ws:// or wss://")),
    };
    if url.scheme() != scheme {
        url.set_scheme(scheme)
            .map_err(|()| bad("cannot change the scheme to ws/wss"))?;
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(WS_PATH);
    }
    Ok(url)
}

/// Connects, joins the configured room, and starts the background task.
///
/// The first event on the returned stream is the [`SignalEvent::Joined`] this resolved on.
pub async fn connect(config: ClientConfig) -> Result<(SignalSender, SignalEvents), ClientError> {
    let url = endpoint_url(&config.server)?;
    RoomName::parse(&config.room).map_err(ClientError::BadRoom)?;
    let tls = tls_settings(&config);
    let (socket, joined) = open_and_join(&url, &config, &tls, config.role, None).await?;

    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let _ = events_tx.send(SignalEvent::Joined(joined.clone()));
    let task = ClientTask {
        url,
        config,
        tls,
        role: joined.role,
        resume: joined.resume.clone(),
        commands,
        events: events_tx,
        pending: VecDeque::new(),
    };
    tokio::spawn(task.run(socket));
    Ok((
        SignalSender {
            commands: commands_tx,
        },
        SignalEvents { events },
    ))
}

fn tls_settings(config: &ClientConfig) -> Arc<rustls::ClientConfig> {
    config.tls.clone().unwrap_or_else(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(config) => Arc::new(config),
            // The ring provider supports the default versions; this cannot happen.
            Err(err) => {
                tracing::error!(%err, "bug: cannot build the TLS client configuration");
                Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        }
    })
}

/// A TCP connection to `url`'s host from `local` (port chosen by the system).
async fn connect_from(local: IpAddr, url: &Url) -> std::io::Result<TcpStream> {
    let host = url
        .host_str()
        .ok_or_else(|| std::io::Error::other("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let mut last = None;
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(remote).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::other(format!("{host} has no address of the family of {local}"))
    }))
}

/// One attempt: WebSocket handshake, `join`, and the server's answer, within the connect timeout.
async fn open_and_join(
    url: &Url,
    config: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    role: RoleRequest,
    resume: Option<String>,
) -> Result<(Socket, JoinedRoom), ClientError> {
    let attempt = async {
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(4 * MAX_FRAME_BYTES))
            .max_frame_size(Some(4 * MAX_FRAME_BYTES));
        let connector = Some(Connector::Rustls(tls.clone()));
        let handshake = match config.local_address {
            None => {
                tokio_tungstenite::connect_async_tls_with_config(
                    url.as_str(),
                    Some(ws_config),
                    true,
                    connector,
                )
                .await
            }
            Some(local) => {
                let stream =
                    connect_from(local, url)
                        .await
                        .map_err(|err| ClientError::Unreachable {
                            url: url.to_string(),
                            reason: err.to_string(),
                        })?;
                tokio_tungstenite::client_async_tls_with_config(
                    url.as_str(),
                    stream,
                    Some(ws_config),
                    connector,
                )
                .await
            }
        };
        let (mut socket, _response) = handshake.map_err(|err| ClientError::Unreachable {
            url: url.to_string(),
            reason: describe_ws_error(&err),
        })?;
        let join = ClientMessage::Join {
            room: config.room.clone(),
            role: Some(role),
            resume,
        };
        socket
            .send(Message::text(join.to_json()))
            .await
            .map_err(|err| ClientError::Unreachable {
                url: url.to_string(),
                reason: describe_ws_error(&err),
            })?;
        loop {
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Protocol(format!(
                        "the server closed the connection before answering join ({})",
                        frame.map(|f| f.reason.to_string()).unwrap_or_default()
                    )));
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    return Err(ClientError::Unreachable {
                        url: url.to_string(),
                        reason: describe_ws_error(&err),
                    });
                }
                None => {
                    return Err(ClientError::Protocol(
                        "the server closed the connection before answering join".into(),
                    ));
                }
            };
            match ServerMessage::parse(&text) {
                Ok(message @ ServerMessage::Joined { .. }) => {
                    if let Some(joined) = JoinedRoom::from_message(message) {
                        return Ok((socket, joined));
                    }
                }
                Ok(ServerMessage::Error { code, message }) => {
                    return Err(ClientError::Rejected { code, message });
                }
                Ok(other) => tracing::debug!(?other, "ignored before joined"),
                Err(err) => {
                    tracing::warn!(err = %excerpt(&err.to_string()), "unreadable message from the server")
                }
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout {
            url: url.to_string(),
            after: config.connect_timeout,
        })?
}

fn describe_ws_error(err: &tungstenite::Error) -> String {
    match err {
        tungstenite::Error::Io(io) => io.to_string(),
        tungstenite::Error::Http(response) => {
            format!(
                "the server answered HTTP {} instead of a WebSocket",
                response.status()
            )
        }
        other => other.to_string(),
    }
}

/// How one connection's session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The user closed or dropped every handle: stop.
    Stopped,
    /// The server closed us for good; the error event has been sent: stop.
    Refused,
    /// The connection dropped: reconnect.
    Lost(String),
}

/// The background task that owns the WebSocket.
#[derive(Debug)]
struct ClientTask {
    url: Url,
    config: ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    /// The seat we hold; rejoins ask for exactly this one so the call keeps its offerer.
    role: Role,
    /// The server's token for our seat: a rejoin sends it back, so the
    /// server gives us the seat even while our old connection still looks
    /// open to it (a NAT timeout, a Wi-Fi change).
    resume: Option<String>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SignalEvent>,
    /// Messages given to the sender while disconnected, sent after the rejoin.
    pending: VecDeque<ClientMessage>,
}

impl ClientTask {
    async fn run(mut self, mut socket: Socket) {
        loop {
            let cause = match self.session(&mut socket).await {
                SessionEnd::Stopped | SessionEnd::Refused => return,
                SessionEnd::Lost(cause) => cause,
            };
            tracing::info!(%cause, "signaling connection lost; reconnecting");
            match self.reconnect(cause).await {
                Some(new_socket) => socket = new_socket,
                None => return,
            }
        }
    }

    /// Serves one connection until it ends.
    async fn session(&mut self, socket: &mut Socket) -> SessionEnd {
        while let Some(message) = self.pending.pop_front() {
            if let Err(err) = send_text(socket, message.to_json().into()).await {
                self.pending.push_front(message);
                return SessionEnd::Lost(describe_ws_error(&err));
            }
        }
        let mut last_heard = Instant::now();
        let mut keepalive = tokio::time::interval_at(
            Instant::now() + self.config.keepalive,
            self.config.keepalive,
        );
        loop {
            tokio::select! {
                frame = socket.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(end) = self.on_server_text(&text) {
                                return end;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let reason = frame.map(|f| format!("closed by the server ({} {})", u16::from(f.code), f.reason)).unwrap_or_else(|| "closed by the server".into());
                            return SessionEnd::Lost(reason);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return SessionEnd::Lost(describe_ws_error(&err)),
                        None => return SessionEnd::Lost("the connection closed".into()),
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Send(message)) => {
                        if let Err(err) = send_text(socket, message.to_json().into()).await {
                            self.pending.push_back(message);
                            return SessionEnd::Lost(describe_ws_error(&err));
                        }
                    }
                    Some(Command::Close) | None => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
                        return SessionEnd::Stopped;
                    }
                },
                _ = keepalive.tick() => {
                    if last_heard.elapsed() >= self.config.dead_after {
                        return SessionEnd::Lost(format!("nothing heard from the server for {:?}", self.config.dead_after));
                    }
                    if let Err(err) = socket.send(Message::Ping(Default::default())).await {
                        return SessionEnd::Lost(describe_ws_error(&err));
                    }
                }
            }
        }
    }

    /// Handles one frame from the server; `Some` ends the session.
    fn on_server_text(&mut self, text: &str) -> Option<SessionEnd> {
        let message = match ServerMessage::parse(text) {
            Ok(message) => message,
            Err(err) => {
                // A newer server may send message types we do not know; skip them.
                tracing::warn!(err = %excerpt(&err.to_string()), "ignoring an unreadable message from the server");
                return None;
            }
        };
        let event = match message {
            message @ ServerMessage::Joined { .. } => {
                let joined = JoinedRoom::from_message(message)?;
                if joined.resume.is_some() {
                    self.resume.clone_from(&joined.resume);
                }
                SignalEvent::Joined(joined)
            }
            ServerMessage::Pong {} => return None,
            ServerMessage::Error { code, .. } if code.close_code().is_some() => {
                self.emit(SignalEvent::Message(message));
                return Some(SessionEnd::Refused);
            }
            message => SignalEvent::Message(message),
        };
        self.emit(event);
        None
    }

    fn emit(&self, event: SignalEvent) {
        // Nobody listening is fine: the sender half may still be in use.
        let _ = self.events.send(event);
    }

    /// Reconnects with backoff; `None` means stop (refused for good, gave up, or closed by the user).
    async fn reconnect(&mut self, mut cause: String) -> Option<Socket> {
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        let started = Instant::now();
        loop {
            if let Some(limit) = self.config.give_up_after
                && started.elapsed() >= limit
            {
                self.emit(SignalEvent::GaveUp { cause });
                return None;
            }
            let delay = backoff.next_delay(rand::random());
            self.emit(SignalEvent::Reconnecting {
                attempt: backoff.attempts(),
                retry_in: delay,
                cause: cause.clone(),
            });
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    command = self.commands.recv() => match command {
                        Some(Command::Send(message)) => self.pending.push_back(message),
                        Some(Command::Close) | None => return None,
                    },
                }
            }
            let resume = self.resume.clone();
            match open_and_join(&self.url, &self.config, &self.tls, self.role.into(), resume).await
            {
                Ok((socket, mut joined)) => {
                    joined.resumed = true;
                    if joined.resume.is_some() {
                        self.resume.clone_from(&joined.resume);
                    }
                    tracing::info!(role = %joined.role, "rejoined after reconnect");
                    self.emit(SignalEvent::Joined(joined));
                    return Some(socket);
                }
                Err(ClientError::Rejected { code, message }) if code.close_code().is_some() => {
                    self.emit(SignalEvent::Message(ServerMessage::Error { code, message }));
                    return None;
                }
                Err(err) => cause = err.to_string(),
            }
        }
    }
}
