//! The signaling server: a thin async shell around [`RoomRegistry`].
//!
//! Each WebSocket connection runs one task that reads frames, enforces the
//! per-connection limits (frame size, rate, join timeout, liveness), feeds
//! valid messages to the registry under one short-held lock, and writes what
//! the registry's actions queue for it. Room rules live in [`crate::rooms`].
//!
//! `run` takes its listener and its shutdown signal from the caller (as
//! mini-redis does), so tests bind port 0 and stop servers at will. The
//! server answers only `/ws` and `/healthz` itself; a binary that wants more on
//! the same listener (`duet serve` adds the browser client) hands its routes to
//! [`SignalServer::with_routes`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::{RateLimit, RateLimiter};
use crate::protocol::{ClientMessage, ErrorCode, MAX_FRAME_BYTES, ServerMessage, WS_PATH};
use crate::rooms::{Action, ConnId, RoomRegistry};
use crate::turn::TurnConfig;

/// Frames up to this size are read whole, so that the `too_large` error and the
/// 1009 close reach the peer cleanly. Larger frames are cut off by the
/// WebSocket layer at their header: the error and close are still sent, but the
/// unread rest of the frame makes the kernel reset the connection, which may
/// discard them at the peer. This bounds the memory one connection can pin.
const HARD_FRAME_LIMIT: usize = 2 * 1024 * 1024;

/// Longer messages go out as several frames of at most this size. The
/// WebSocket layer keeps its write buffer at the size of the largest frame it
/// ever wrote; with 4 KiB offers relayed on every connection, that was 4 KB
/// held by each of 10,000 connections for nothing.
const FRAGMENT_BYTES: usize = 1024;

/// A WebSocket of the server, on the connection hyper upgraded.
type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Tunables of the server; the defaults are what `duet serve` uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A connection that has not joined a room by then is closed (spec: 10 s).
    pub join_timeout: Duration,
    /// How often the server sends a WebSocket ping to each connection.
    pub ping_interval: Duration,
    /// A connection from which nothing (not even a pong) was heard for this long is dead.
    /// With the ping interval, a vanished peer is reported within `idle_timeout + ping_interval`.
    pub idle_timeout: Duration,
    /// Messages per connection.
    pub rate_limit: RateLimit,
    /// Connections beyond this are refused with 503 before the WebSocket upgrade.
    pub max_connections: usize,
    /// Messages queued for one connection before it is considered too slow and closed.
    pub outbox_capacity: usize,
    /// How long shutdown waits for connections to take their close frames.
    pub shutdown_grace: Duration,
    /// TURN servers whose short-lived credentials every `joined` carries.
    pub turn: Option<TurnConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            rate_limit: RateLimit::default(),
            max_connections: 50_000,
            outbox_capacity: 256,
            shutdown_grace: Duration::from_millis(1500),
            turn: None,
        }
    }
}

/// PEM files for serving `wss://`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A TLS file is missing or unreadable, or holds no usable key or certificate.
    #[error("TLS setup failed with {path}: {reason}")]
    Tls {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP server failed while running.
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// A bound, not yet running server; its address is known before it serves.
#[derive(Debug)]
pub struct SignalServer {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: ServerConfig,
    /// Answers every request the signaling routes do not.
    other_routes: Option<Router>,
}

impl SignalServer {
    /// Binds `addr` (port 0 picks a free port) and loads the TLS files if given.
    pub fn bind(
        addr: SocketAddr,
        tls: Option<&TlsFiles>,
        config: ServerConfig,
    ) -> Result<SignalServer, ServerError> {
        let tls = tls.map(load_tls).transpose()?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(SignalServer {
            listener,
            local_addr,
            tls,
            config,
            other_routes: None,
        })
    }

    /// Serves `routes` on the same listener, beside the signaling endpoints.
    ///
    /// `/ws` and `/healthz` stay the server's own: `routes` answers only the
    /// requests they do not match, so no route handed in can shadow the
    /// protocol (and none can collide with it, which would panic in axum's
    /// `merge`). Without this, every other path gets `404`.
    pub fn with_routes(mut self, routes: Router) -> SignalServer {
        self.other_routes = Some(routes);
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients pass as `--server`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Serves until `shutdown` completes, then stops accepting, sends every
    /// connection a close frame and returns within [`ServerConfig::shutdown_grace`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// [`SignalServer::run`], plus `kill`: when it completes, every socket is
    /// dropped at once without close frames, as if the process had died.
    async fn run_until(
        self,
        shutdown: impl Future<Output = ()>,
        kill: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let hub = Arc::new(Hub::new(self.config));
        let mut app = Router::new()
            .route(WS_PATH, get(upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(hub.clone());
        if let Some(routes) = self.other_routes {
            app = app.fallback_service(routes);
        }
        let handle = axum_server::Handle::new();
        let serving = {
            let handle = handle.clone();
            let make_service = app.into_make_service();
            let listener = self.listener;
            async move {
                // Signaling is many small messages in both directions: without
                // TCP_NODELAY, Nagle's algorithm and delayed ACKs hold some of
                // them back for ~40 ms.
                let nodelay = axum_server::accept::NoDelayAcceptor::new();
                match self.tls {
                    Some(tls) => {
                        let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                        let acceptor =
                            axum_server::tls_rustls::RustlsAcceptor::new(tls).acceptor(nodelay);
                        axum_server::from_tcp(listener)?
                            .acceptor(acceptor)
                            .handle(handle)
                            .serve(make_service)
                            .await
                    }
                    None => {
                        axum_server::from_tcp(listener)?
                            .acceptor(nodelay)
                            .handle(handle)
                            .serve(make_service)
                            .await
                    }
                }
            }
        };
        tokio::pin!(serving);
        tokio::select! {
            result = &mut serving => return result.map_err(ServerError::Serve),
            () = shutdown => {}
            () = kill => {
                handle.shutdown();
                hub.killed.cancel();
                return Ok(());
            }
        }
        tracing::info!(
            "shutting down: closing {} connections",
            hub.connection_count()
        );
        let grace = hub.config.shutdown_grace;
        handle.graceful_shutdown(Some(grace));
        hub.shutdown.cancel();
        hub.tracker.close();
        let drained = async {
            let _ = (&mut serving).await;
            hub.tracker.wait().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}");
        }
        Ok(())
    }

    /// Starts the server on the current runtime; for tests and the embedded demo server.
    pub fn spawn(self) -> RunningServer {
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let local_addr = self.local_addr;
        let url = self.url();
        let task = tokio::spawn({
            let (stop, kill) = (stop.clone(), kill.clone());
            async move {
                self.run_until(stop.cancelled_owned(), kill.cancelled_owned())
                    .await
            }
        });
        RunningServer {
            local_addr,
            url,
            stop,
            kill,
            task,
        }
    }
}

/// A server running on a tokio task.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    url: String,
    stop: CancellationToken,
    kill: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL clients pass as `--server`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Graceful shutdown: close frames to every connection, then stop.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.stop.cancel();
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ServerError::Serve(std::io::Error::other(join))),
        }
    }

    /// Abrupt stop, as if the process died: connections drop without close
    /// frames and the port is released. Resolves once the listener is closed.
    pub async fn kill(self) {
        self.kill.cancel();
        let _ = self.task.await;
    }
}

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let tls_error = |path: &Path, reason: String| ServerError::Tls {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| tls_error(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(
            &files.cert,
            "no certificate found in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| tls_error(&files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.key, format!("does not match the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the connection task writes next.
#[derive(Debug)]
enum Outgoing {
    Text(Utf8Bytes),
    Close { code: u16, reason: &'static str },
}

/// The way into a connection task from the outside.
/// What waits to be written to one connection. A queue that costs nothing
/// while empty: a channel allocates a block of slots up front, 1.5 KB on each
/// of 10,000 connections.
#[derive(Debug, Default)]
struct Outbox {
    queue: Mutex<VecDeque<Outgoing>>,
    ready: Notify,
    /// Cancelled to drop a connection that cannot keep up with what it is sent.
    kill: CancellationToken,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `outgoing`; false when `capacity` messages are already waiting.
    fn push(&self, outgoing: Outgoing, capacity: usize) -> bool {
        let mut queue = self.lock();
        if queue.len() >= capacity {
            return false;
        }
        queue.push_back(outgoing);
        drop(queue);
        self.ready.notify_one();
        true
    }

    fn try_pop(&self) -> Option<Outgoing> {
        self.lock().pop_front()
    }

    /// The next message; cancel-safe (a message is only taken when returned).
    async fn pop(&self) -> Outgoing {
        loop {
            if let Some(outgoing) = self.try_pop() {
                return outgoing;
            }
            self.ready.notified().await;
        }
    }
}

#[derive(Debug)]
struct HubState {
    rooms: RoomRegistry,
    outboxes: HashMap<ConnId, Arc<Outbox>>,
    outbox_capacity: usize,
    turn: Option<TurnConfig>,
}

/// Seconds since the Unix epoch: TURN credentials expire by the wall clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl HubState {
    /// Carries out the registry's actions by queueing on each connection's outbox.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (to, outgoing) = match action {
                Action::Send { to, mut message } => {
                    if let ServerMessage::Error { code, message } = &message {
                        tracing::info!(conn = to.0, %code, %message, "error");
                    }
                    if let (
                        Some(turn),
                        ServerMessage::Joined {
                            id, ice_servers, ..
                        },
                    ) = (&self.turn, &mut message)
                    {
                        ice_servers.push(turn.credentials_for(&id.0, unix_now()));
                    }
                    (to, Outgoing::Text(message.to_json().into()))
                }
                Action::Close { conn, code, reason } => (conn, Outgoing::Close { code, reason }),
            };
            let Some(outbox) = self.outboxes.get(&to) else {
                continue;
            };
            if !outbox.push(outgoing, self.outbox_capacity) {
                tracing::warn!(
                    conn = to.0,
                    "connection is not reading its messages; dropping it"
                );
                outbox.kill.cancel();
            }
        }
    }
}

/// State shared by all connection tasks.
#[derive(Debug)]
struct Hub {
    /// One lock around the rooms and the outboxes; held only to compute and queue, never across an await.
    state: Mutex<HubState>,
    config: ServerConfig,
    next_conn: AtomicU64,
    live_connections: AtomicUsize,
    shutdown: CancellationToken,
    /// Cancelled to drop every connection without a goodbye (tests of a crashed server).
    killed: CancellationToken,
    tracker: TaskTracker,
}

impl Hub {
    fn new(config: ServerConfig) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                rooms: RoomRegistry::new(rand::random()),
                outboxes: HashMap::new(),
                outbox_capacity: config.outbox_capacity,
                turn: config.turn.clone(),
            }),
            config,
            next_conn: AtomicU64::new(1),
            live_connections: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            killed: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock would be a bug in the registry; the
        // state is still structurally valid, so keep serving the other rooms.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn connection_count(&self) -> usize {
        self.live_connections.load(Ordering::Relaxed)
    }

    /// Runs `f` against the registry and carries out what it asks for.
    fn with_rooms(&self, f: impl FnOnce(&mut RoomRegistry, &mut Vec<Action>)) {
        let mut actions = Vec::new();
        let mut state = self.lock();
        f(&mut state.rooms, &mut actions);
        state.apply(actions);
    }
}

/// The WebSocket handshake of RFC 6455 on hyper's upgrade, then one task per
/// connection. Written here rather than taken from axum so that the socket is
/// tokio-tungstenite's own, which can send a long message as several frames.
async fn upgrade(State(hub): State<Arc<Hub>>, mut request: Request) -> Response {
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let Some(accept) = websocket_key(request.headers())
        .map(|key| tungstenite::handshake::derive_accept_key(key.as_bytes()))
    else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (RFC 6455, version 13)\n",
        )
            .into_response();
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    if hub.live_connections.fetch_add(1, Ordering::AcqRel) >= hub.config.max_connections {
        hub.live_connections.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(
            "connection refused: {} connections open",
            hub.config.max_connections
        );
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response();
    }
    let task = hub.tracker.track_future({
        let hub = hub.clone();
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(socket_config()),
                    )
                    .await;
                    serve_connection(socket, &hub).await;
                }
                Err(err) => tracing::debug!(%err, "websocket upgrade failed"),
            }
            hub.live_connections.fetch_sub(1, Ordering::AcqRel);
        }
    });
    tokio::spawn(task);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The client's key, when the request asks for a WebSocket of version 13.
fn websocket_key(headers: &HeaderMap) -> Option<&HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    upgrade
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY))
        .flatten()
}

/// Small buffers: most messages are small, and there may be 10,000 sockets.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
}

/// Sends a text message, a long one as fragments of at most [`FRAGMENT_BYTES`].
async fn send_text(socket: &mut Socket, text: Utf8Bytes) -> Result<(), tungstenite::Error> {
    if text.len() <= FRAGMENT_BYTES {
        return socket.send(Message::Text(text)).await;
    }
    let bytes = Bytes::from(text);
    let count = bytes.len().div_ceil(FRAGMENT_BYTES);
    for index in 0..count {
        let chunk =
            bytes.slice(index * FRAGMENT_BYTES..((index + 1) * FRAGMENT_BYTES).min(bytes.len()));
        let opcode = if index == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        socket
            .feed(Message::Frame(Frame::message(
                chunk,
                opcode,
                index + 1 == count,
            )))
            .await?;
    }
    socket.flush().await
}

/// How a connection's read loop ended.
#[derive(Debug)]
enum Ending {
    /// The peer closed, or the socket failed: nothing more to send.
    Gone,
    /// Send what is queued, then close with this code.
    Close { code: u16, reason: &'static str },
    /// The registry refused the connection: its error and close are queued in the outbox.
    Refused,
}

async fn serve_connection(mut socket: Socket, hub: &Hub) {
    let conn = ConnId(hub.next_conn.fetch_add(1, Ordering::Relaxed));
    let outbox = Arc::new(Outbox::default());
    {
        let mut state = hub.lock();
        let peer = state.rooms.connect(conn);
        state.outboxes.insert(conn, Arc::clone(&outbox));
        tracing::debug!(conn = conn.0, %peer, "connected");
    }

    let config = &hub.config;
    let mut limiter = RateLimiter::new(config.rate_limit, Instant::now().into_std());
    let mut last_heard = Instant::now();
    let join_deadline = tokio::time::sleep(config.join_timeout);
    tokio::pin!(join_deadline);
    let mut join_checked = false;
    let mut pinger =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ending = loop {
        tokio::select! {
            frame = socket.next() => {
                last_heard = Instant::now();
                let frame = match frame {
                    None | Some(Ok(Message::Close(_))) => break Ending::Gone,
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => {
                        if is_oversized(&err) {
                            hub.with_rooms(|rooms, out| rooms.refuse(conn, ErrorCode::TooLarge, too_large_text(None), std::time::Instant::now(), out));
                            break Ending::Refused;
                        }
                        tracing::debug!(conn = conn.0, %err, "read failed");
                        break Ending::Gone;
                    }
                };
                if !matches!(frame, Message::Pong(_)) && !limiter.allow(last_heard.into_std()) {
                    hub.with_rooms(|rooms, out| rooms.refuse(
                        conn,
                        ErrorCode::RateLimited,
                        format!("more than {} messages in a burst or {}/s sustained", config.rate_limit.burst, config.rate_limit.per_second),
                        std::time::Instant::now(),
                        out,
                    ));
                    break Ending::Refused;
                }
                match frame {
                    Message::Text(text) if text.len() > MAX_FRAME_BYTES => {
                        hub.with_rooms(|rooms, out| rooms.refuse(conn, ErrorCode::TooLarge, too_large_text(Some(text.len())), std::time::Instant::now(), out));
                        break Ending::Refused;
                    }
                    Message::Text(text) => {
                        let parsed = ClientMessage::parse(text.as_str());
                        hub.with_rooms(|rooms, out| match parsed {
                            Ok(message) => rooms.handle(conn, message, std::time::Instant::now(), out),
                            Err(reason) => rooms.bad_message(conn, reason, out),
                        });
                    }
                    Message::Binary(_) => hub.with_rooms(|rooms, out| {
                        rooms.bad_message(conn, "binary frames are not part of the protocol; send JSON as text".into(), out);
                    }),
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
                }
            }
            outgoing = outbox.pop() => match outgoing {
                Outgoing::Text(text) => {
                    if let Err(err) = send_text(&mut socket, text).await {
                        tracing::debug!(conn = conn.0, %err, "write failed");
                        break Ending::Gone;
                    }
                }
                Outgoing::Close { code, reason } => break Ending::Close { code, reason },
            },
            _ = pinger.tick() => {
                if last_heard.elapsed() >= config.idle_timeout {
                    tracing::info!(conn = conn.0, "no sign of life for {:?}; dropping the connection", config.idle_timeout);
                    break Ending::Gone;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Ending::Gone;
                }
            }
            () = &mut join_deadline, if !join_checked => {
                join_checked = true;
                if !hub.lock().rooms.has_joined(conn) {
                    tracing::info!(conn = conn.0, "no join within {:?}", config.join_timeout);
                    break Ending::Close { code: 1008, reason: "no join within the join timeout" };
                }
            }
            () = outbox.kill.cancelled() => break Ending::Close { code: 1008, reason: "too slow reading messages" },
            () = hub.shutdown.cancelled() => break Ending::Close { code: 1001, reason: "server shutting down" },
            () = hub.killed.cancelled() => return,
        }
    };

    // Leave the room first so the partner hears `peer-left` without waiting for our close handshake.
    {
        let mut state = hub.lock();
        state.outboxes.remove(&conn);
        let mut actions = Vec::new();
        state
            .rooms
            .disconnect(conn, std::time::Instant::now(), &mut actions);
        state.apply(actions);
    }
    let mut close = match ending {
        Ending::Gone => return,
        Ending::Close { code, reason } => Some((code, reason)),
        Ending::Refused => None,
    };
    // Flush what was queued before the close: an error must reach the peer before its close frame.
    while let Some(outgoing) = outbox.try_pop() {
        match outgoing {
            Outgoing::Text(text) => {
                if send_text(&mut socket, text).await.is_err() {
                    return;
                }
            }
            Outgoing::Close { code, reason } => {
                close = close.or(Some((code, reason)));
                break;
            }
        }
    }
    let (code, reason) = close.unwrap_or((1000, "closing"));
    close_gracefully(socket, code, reason).await;
}

fn too_large_text(len: Option<usize>) -> String {
    match len {
        Some(len) => format!("a frame of {len} bytes is over the limit of {MAX_FRAME_BYTES} bytes"),
        None => format!("a frame is over the limit of {MAX_FRAME_BYTES} bytes"),
    }
}

fn is_oversized(err: &tungstenite::Error) -> bool {
    matches!(err, tungstenite::Error::Capacity(_))
}

/// Sends a close frame and waits briefly for the peer's, so that what was sent
/// before it (an error message) is not lost to a TCP reset.
async fn close_gracefully(mut socket: Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(frame)) = socket.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
