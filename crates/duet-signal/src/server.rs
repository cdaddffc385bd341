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

use std::collections::HashMap;
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
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AdmissionLimits, AdmissionTicket, SharedAdmission};
use crate::limits::{RateLimit, RateLimiter};
use crate::listener::{Acceptor, ConnectionInfo, HttpDeadlines};
use crate::log_text::excerpt;
use crate::origin::{BadOrigin, OriginPolicy};
use crate::outbox::{Outbox, OutboxLimits, Outgoing};
use crate::protocol::{ClientMessage, ErrorCode, MAX_FRAME_BYTES, ServerMessage, WS_PATH};
use crate::rooms::{Action, ConnId, RoomRegistry};
use crate::ws_write::{Socket, WriteError, by_deadline, close_gracefully, send_text};

/// Frames up to this size are read whole, so that the `too_large` error and the
/// 1009 close reach the peer cleanly. Larger frames are cut off by the
/// WebSocket layer at their header: the error and close are still sent, but the
/// unread rest of the frame makes the kernel reset the connection, which may
/// discard them at the peer. This bounds the memory one connection can pin
/// (a client may trickle a frame of this size and hold it), so it is kept at
/// four times the protocol's limit.
const HARD_FRAME_LIMIT: usize = 256 * 1024;

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
    /// Bytes queued for one connection before it is considered too slow and closed
    /// (an empty queue still takes one message of any size).
    pub outbox_max_bytes: usize,
    /// Longest a single write (message, ping, close frame) may wait for the peer
    /// to take it; a connection whose write stalls longer is dropped. The join and
    /// idle timeouts fire at most this late.
    pub write_timeout: Duration,
    /// How long shutdown waits for connections to take their close frames.
    pub shutdown_grace: Duration,
    /// Limit for the TLS handshake and for each HTTP request head, including the
    /// wait for the next request on a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Longest HTTP life of a connection that does not upgrade to a WebSocket.
    pub http_connection_lifetime: Duration,
    /// Connections that have not completed the WebSocket upgrade, from all addresses;
    /// more are refused at once (HTTP 503).
    pub max_pending_connections: usize,
    /// Open connections from one client address (IPv4, or IPv6 /64); more are refused
    /// at once (HTTP 429). Behind a reverse proxy every client has the proxy's address.
    pub max_connections_per_address: usize,
    /// `join` messages from one client address; beyond it the joining connection gets
    /// `rate_limited` and is closed.
    pub joins_per_address: RateLimit,
    /// Web origins (`https://example.com`) whose pages may open `/ws` besides the
    /// server's own; requests without `Origin` (not from a browser) are always allowed.
    pub allowed_origins: Vec<String>,
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
            outbox_max_bytes: 512 * 1024,
            write_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_millis(1500),
            header_read_timeout: Duration::from_secs(10),
            http_connection_lifetime: Duration::from_secs(60),
            max_pending_connections: 1024,
            max_connections_per_address: 256,
            joins_per_address: RateLimit {
                burst: 60,
                per_second: 1.0,
            },
            allowed_origins: Vec::new(),
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
    /// An allowed origin is not an origin.
    #[error(transparent)]
    Origin(#[from] BadOrigin),
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
    origins: OriginPolicy,
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
        let origins = OriginPolicy::new(&config.allowed_origins)?;
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
            origins,
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
        let hub = Arc::new(Hub::new(self.config, self.origins));
        let mut app = Router::new()
            .route(WS_PATH, get(upgrade))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(hub.clone());
        if let Some(routes) = self.other_routes {
            app = app.fallback_service(routes);
        }
        let acceptor = Acceptor {
            listener: tokio::net::TcpListener::from_std(self.listener)?,
            tls: self.tls.map(tokio_rustls::TlsAcceptor::from),
            router: app,
            admission: hub.admission.clone(),
            deadlines: HttpDeadlines {
                header_read: hub.config.header_read_timeout,
                lifetime: hub.config.http_connection_lifetime,
            },
            tracker: hub.tracker.clone(),
            shutdown: hub.shutdown.clone(),
            killed: hub.killed.clone(),
        };
        let accepting = tokio::spawn(acceptor.run());
        tokio::select! {
            () = shutdown => {}
            () = kill => {
                hub.killed.cancel();
                let _ = accepting.await;
                return Ok(());
            }
        }
        tracing::info!(
            "shutting down: closing {} connections",
            hub.connection_count()
        );
        let grace = hub.config.shutdown_grace;
        hub.shutdown.cancel();
        // The listener closes with the accept loop: no new connection waits in its backlog.
        let _ = accepting.await;
        hub.tracker.close();
        let drained = hub.tracker.wait();
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("some connections did not close within {grace:?}; dropping them");
            hub.killed.cancel();
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

#[derive(Debug)]
struct HubState {
    rooms: RoomRegistry,
    outboxes: HashMap<ConnId, Arc<Outbox>>,
    outbox_limits: OutboxLimits,
}

impl HubState {
    /// Carries out the registry's actions by queueing on each connection's outbox.
    fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (to, outgoing) = match action {
                Action::Send { to, message } => {
                    if let ServerMessage::Error { code, message } = &message {
                        // The message may quote what the client sent.
                        tracing::info!(conn = to.0, %code, message = %excerpt(message), "error");
                    }
                    (to, Outgoing::Text(message.to_json().into()))
                }
                Action::Close { conn, code, reason } => (conn, Outgoing::Close { code, reason }),
            };
            let Some(outbox) = self.outboxes.get(&to) else {
                continue;
            };
            if !outbox.push(outgoing, self.outbox_limits) {
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
    origins: OriginPolicy,
    admission: Arc<SharedAdmission>,
    next_conn: AtomicU64,
    live_connections: AtomicUsize,
    shutdown: CancellationToken,
    /// Cancelled to drop every connection without a goodbye (tests of a crashed server).
    killed: CancellationToken,
    tracker: TaskTracker,
}

impl Hub {
    fn new(config: ServerConfig, origins: OriginPolicy) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                rooms: RoomRegistry::new(rand::random()),
                outboxes: HashMap::new(),
                outbox_limits: OutboxLimits {
                    messages: config.outbox_capacity,
                    bytes: config.outbox_max_bytes,
                },
            }),
            admission: SharedAdmission::new(AdmissionLimits {
                max_pending: config.max_pending_connections,
                connections_per_address: config.max_connections_per_address,
                joins_per_address: config.joins_per_address,
            }),
            origins,
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
    let Some(info) = request.extensions().get::<ConnectionInfo>().cloned() else {
        // Every request comes through the accept loop, which attaches it.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    if !hub
        .origins
        .allows(origin, headers.get(header::HOST).map(HeaderValue::as_bytes))
    {
        tracing::debug!(peer = %info.peer, origin = %excerpt(&String::from_utf8_lossy(origin.unwrap_or_default())), "origin refused");
        return (
            StatusCode::FORBIDDEN,
            "this page's origin may not open /ws: only the server's own origin and the origins it allows\n",
        )
            .into_response();
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
                    info.ticket.upgraded();
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(socket_config()),
                    )
                    .await;
                    serve_connection(socket, &hub, &info.ticket).await;
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

async fn serve_connection(mut socket: Socket, hub: &Hub, ticket: &AdmissionTicket) {
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
                        if matches!(parsed, Ok(ClientMessage::Join { .. })) && !ticket.join() {
                            hub.with_rooms(|rooms, out| rooms.refuse(
                                conn,
                                ErrorCode::RateLimited,
                                "too many joins from your address; wait a minute".into(),
                                std::time::Instant::now(),
                                out,
                            ));
                            break Ending::Refused;
                        }
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
                    if !write_in_loop(hub, conn, &outbox, send_text(&mut socket, text)).await {
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
                if !write_in_loop(hub, conn, &outbox, socket.send(Message::Ping(Default::default()))).await {
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
    // Flush what was queued before the close: an error must reach the peer before
    // its close frame. All of it, close frame included, by one deadline.
    let mut budget = config.write_timeout;
    if hub.shutdown.is_cancelled() {
        budget = budget.min(config.shutdown_grace);
    }
    let deadline = Instant::now() + budget;
    while let Some(outgoing) = outbox.try_pop() {
        match outgoing {
            Outgoing::Text(text) => {
                if by_deadline(deadline, send_text(&mut socket, text))
                    .await
                    .is_err()
                {
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
    tokio::select! {
        () = close_gracefully(socket, code, reason, deadline) => {}
        () = hub.killed.cancelled() => {}
    }
}

/// One write of a connection's read loop, by [`ServerConfig::write_timeout`];
/// abandoned when the server stops or the connection is dropped for falling
/// behind. False when the connection should be dropped.
async fn write_in_loop(
    hub: &Hub,
    conn: ConnId,
    outbox: &Outbox,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> bool {
    let deadline = Instant::now() + hub.config.write_timeout;
    let result = tokio::select! {
        result = by_deadline(deadline, write) => result,
        () = outbox.kill.cancelled() => return false,
        () = hub.shutdown.cancelled() => return false,
        () = hub.killed.cancelled() => return false,
    };
    match result {
        Ok(()) => true,
        Err(WriteError::Stalled) => {
            tracing::info!(
                conn = conn.0,
                "a write waited {:?} for the peer; dropping the connection",
                hub.config.write_timeout
            );
            false
        }
        Err(err) => {
            tracing::debug!(conn = conn.0, %err, "write failed");
            false
        }
    }
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
