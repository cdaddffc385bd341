//! The signaling server: a thin async shell around [`RoomRegistry`](crate::RoomRegistry).
//!
//! The accept loop and each connection's HTTP life before the upgrade are in
//! `listener` (with the budgets of `admission`); each WebSocket connection
//! runs one task (`connection`) that reads frames, enforces the
//! per-connection limits, feeds valid messages to the registry under one
//! short-held lock (`hub`), and writes what the registry queues for it, every
//! write with a deadline (`ws_write`). Room rules live in [`crate::rooms`].
//!
//! `run` takes its listener and its shutdown signal from the caller (as
//! mini-redis does), so tests bind port 0 and stop servers at will. The
//! server answers only `/ws` and `/healthz` itself; a binary that wants more on
//! the same listener (`duet serve` adds the browser client) hands its routes to
//! [`SignalServer::with_routes`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::connection::upgrade;
use crate::hub::{Hub, ServerStore};
use crate::limits::RateLimit;
use crate::listener::{Acceptor, HttpDeadlines};
use crate::origin::{BadOrigin, OriginPolicy};
use crate::protocol::WS_PATH;
use crate::redis_store::{LEASE_RENEWAL, RedisConfig, RedisStore};
use crate::relay_bus;
use crate::room_store::{InstanceId, MemoryStore, StoreError};
use crate::tls::load_tls;
use crate::turn::TurnConfig;

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
    /// Kernel send buffer of each accepted socket (`SO_SNDBUF`; `None` keeps the
    /// kernel's autotuning, which lets one client that does not read pin
    /// megabytes of kernel memory). Signaling messages are small; a client that
    /// stops reading fills this quickly and its writes then stall and time out.
    pub send_buffer_bytes: Option<usize>,
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
    /// TURN servers whose short-lived credentials every `joined` carries.
    pub turn: Option<TurnConfig>,
    /// Share rooms with other instances through this Redis; `None` keeps them in memory.
    pub redis: Option<RedisConfig>,
    /// Every connection starts with a PROXY protocol v1 header (HAProxy's
    /// `send-proxy`): the client address in it is the one the per-address
    /// limits count. Only for a server that only a load balancer can reach.
    pub proxy_protocol: bool,
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
            outbox_max_bytes: 64 * 1024,
            write_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_millis(1500),
            header_read_timeout: Duration::from_secs(10),
            http_connection_lifetime: Duration::from_secs(60),
            send_buffer_bytes: Some(64 * 1024),
            max_pending_connections: 1024,
            max_connections_per_address: 256,
            joins_per_address: RateLimit {
                burst: 60,
                per_second: 1.0,
            },
            allowed_origins: Vec::new(),
            turn: None,
            redis: None,
            proxy_protocol: false,
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
    /// Redis (given with `--redis`) did not answer at start.
    #[error("cannot use Redis: {0}")]
    Redis(StoreError),
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

/// Connections the kernel completes and queues before the server accepts
/// them. std's listeners queue 128: a burst beyond that (every peer of an
/// instance that died reconnecting at once, a load balancer's surge) has its
/// SYNs dropped, and each of those peers waits a second for TCP to try again.
const ACCEPT_BACKLOG: i32 = 4096;

/// A listener as std binds it (address reuse on Unix, so a restarted server
/// can bind while old connections linger), but with [`ACCEPT_BACKLOG`].
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG)?;
    Ok(socket.into())
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
        let listener = bind_listener(addr).map_err(|source| ServerError::Bind { addr, source })?;
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
    /// `/ws`, `/healthz` and `/metrics` stay the server's own: `routes` answers only the
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
        let instance = InstanceId(rand::random());
        let (store, subscription) = match &self.config.redis {
            None => (ServerStore::Memory(MemoryStore::default()), None),
            Some(redis) => {
                let store = RedisStore::connect(redis.clone(), instance)
                    .await
                    .map_err(ServerError::Redis)?;
                // Subscribed before the first connection is accepted, so no
                // message for this instance's peers can go unheard.
                let subscription = relay_bus::subscribe(store.client(), &store.channel(instance))
                    .await
                    .map_err(|err| ServerError::Redis(StoreError::Unreachable(err.to_string())))?;
                (ServerStore::Redis(Box::new(store)), Some(subscription))
            }
        };
        let hub = Arc::new(Hub::new(self.config, self.origins, store, instance));
        if let Some(subscription) = subscription {
            hub.metrics.redis_answered();
            tokio::spawn(relay_bus::listen(hub.clone(), subscription));
            tokio::spawn(keep_lease(hub.clone()));
            tracing::info!(%instance, "sharing rooms through Redis");
        }
        let mut app = Router::new()
            .route(WS_PATH, get(upgrade))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
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
            send_buffer_bytes: hub.config.send_buffer_bytes,
            tracker: hub.tracker.clone(),
            shutdown: hub.shutdown.clone(),
            killed: hub.killed.clone(),
            proxy_protocol: hub.config.proxy_protocol,
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
        if let Some(store) = hub.redis_store()
            && let Err(err) = store.drop_lease().await
        {
            tracing::warn!(%err, "could not give up this instance's lease; it runs out by itself");
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

/// `200 ok`; with Redis, `503` while Redis does not answer (this instance
/// cannot seat anyone then).
async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    if hub.redis_store().is_some() && !hub.metrics.redis_up() {
        return (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n").into_response();
    }
    "ok".into_response()
}

/// The Prometheus text page.
async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics_page(),
    )
        .into_response()
}

/// Renews this instance's lease in Redis, measuring the round trip, frees
/// seats whose connections were lost while Redis was away, and releases the
/// seats of instances that died.
async fn keep_lease(hub: Arc<Hub>) {
    let Some(store) = hub.redis_store().cloned() else {
        return;
    };
    let mut ticks = tokio::time::interval(LEASE_RENEWAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = hub.shutdown.cancelled() => return,
            () = hub.killed.cancelled() => return,
        }
        match store.renew_lease().await {
            Ok(rtt) => {
                if !hub.metrics.redis_up() {
                    tracing::info!("Redis answers again");
                }
                hub.metrics.redis_round_trip(Some(rtt));
                hub.retry_releases().await;
                if let Err(err) = hub.reap().await {
                    tracing::warn!(%err, "could not look for instances that died");
                }
            }
            Err(err) => {
                if hub.metrics.redis_up() {
                    tracing::warn!(%err, "Redis does not answer; new joins are refused until it does");
                }
                hub.metrics.redis_round_trip(None);
            }
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
