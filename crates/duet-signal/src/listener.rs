//! The accept loop and each connection's HTTP life before its WebSocket upgrade.
//!
//! Written here rather than taken from axum_server so that a connection is
//! charged to its address from the moment it is accepted, every stage before
//! the upgrade has a deadline (TLS handshake, request headers, the whole
//! HTTP exchange), and running out of file descriptors refuses the waiting
//! connection instead of retrying `accept` on it every few milliseconds while
//! it hangs in the backlog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AdmissionTicket, Refusal, SharedAdmission};

/// Largest request head hyper buffers; an upgrade request is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How often forgotten addresses are pruned from the admission state.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// How often a summary of refused connections may be logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refused plain-HTTP connections being told why at once; past this, they are just closed.
const MAX_REFUSALS_ANSWERING: usize = 64;

/// How long a refused connection is given to take its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Pause after an accept error that is not fd exhaustion (ENOBUFS, ENOMEM…).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Deadlines of a connection before its upgrade.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpDeadlines {
    /// TLS handshake, and each request's head (also ends idle keep-alive).
    pub header_read: Duration,
    /// The whole HTTP life of a connection that does not upgrade.
    pub lifetime: Duration,
}

/// What a request handler learns about its connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub peer: SocketAddr,
    pub ticket: Arc<AdmissionTicket>,
}

/// Everything the accept loop needs.
pub(crate) struct Acceptor {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub router: Router,
    pub admission: Arc<SharedAdmission>,
    pub deadlines: HttpDeadlines,
    /// `SO_SNDBUF` of each accepted socket, if set.
    pub send_buffer_bytes: Option<usize>,
    pub tracker: TaskTracker,
    /// Stop accepting and close idle HTTP connections gracefully.
    pub shutdown: CancellationToken,
    /// Drop everything at once.
    pub killed: CancellationToken,
}

/// Counts refusals and logs them at most every [`REFUSAL_LOG_EVERY`].
#[derive(Debug)]
struct RefusalLog {
    since: Instant,
    pending: u64,
    per_address: u64,
    no_descriptor: u64,
}

impl RefusalLog {
    fn new() -> RefusalLog {
        RefusalLog {
            since: Instant::now(),
            pending: 0,
            per_address: 0,
            no_descriptor: 0,
        }
    }

    fn flush_if_due(&mut self) {
        if self.since.elapsed() < REFUSAL_LOG_EVERY {
            return;
        }
        if self.pending + self.per_address + self.no_descriptor > 0 {
            tracing::warn!(
                busy = self.pending,
                per_address = self.per_address,
                out_of_file_descriptors = self.no_descriptor,
                "connections refused in the last {:?}",
                self.since.elapsed()
            );
        }
        *self = RefusalLog::new();
    }
}

/// A file descriptor held in reserve: given up to accept-and-close one
/// connection when the process has run out, so the backlog drains and the
/// client learns at once instead of hanging.
#[derive(Debug)]
struct FdReserve(Option<std::fs::File>);

impl FdReserve {
    fn new() -> FdReserve {
        FdReserve(std::fs::File::open("/dev/null").ok())
    }

    /// Refuses one waiting connection; false when there was no fd to spare.
    fn refuse_one(&mut self, listener: &TcpListener) -> bool {
        let Some(reserve) = self.0.take() else {
            self.0 = std::fs::File::open("/dev/null").ok();
            return false;
        };
        drop(reserve);
        let refused = matches!(listener.accept().now_or_never(), Some(Ok(_)));
        self.0 = std::fs::File::open("/dev/null").ok();
        refused
    }
}

fn is_fd_exhaustion(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl Acceptor {
    /// Accepts until shutdown or kill; connection tasks go to the tracker.
    pub async fn run(self) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.deadlines.header_read)
            .max_buf_size(MAX_REQUEST_HEAD)
            .keep_alive(true);
        let mut reserve = FdReserve::new();
        let mut refusals = RefusalLog::new();
        let mut last_prune = Instant::now();
        let answering = Arc::new(Semaphore::new(MAX_REFUSALS_ANSWERING));
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                () = self.killed.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            refusals.flush_if_due();
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                self.admission.lock().prune(last_prune);
            }
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) if is_fd_exhaustion(&err) => {
                    refusals.no_descriptor += 1;
                    if !reserve.refuse_one(&self.listener) {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::debug!(%err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let ticket = match self.admission.admit(peer.ip()) {
                Ok(ticket) => Arc::new(ticket),
                Err(refusal) => {
                    match refusal {
                        Refusal::TooManyPending => refusals.pending += 1,
                        Refusal::TooManyFromAddress => refusals.per_address += 1,
                    }
                    tracing::debug!(%peer, reason = refusal.reason(), "connection refused");
                    if self.tls.is_none()
                        && let Ok(permit) = answering.clone().try_acquire_owned()
                    {
                        tokio::spawn(async move {
                            let _ =
                                tokio::time::timeout(REFUSAL_LINGER, refuse_plain(stream, refusal))
                                    .await;
                            drop(permit);
                        });
                    }
                    continue;
                }
            };
            // Signaling is many small messages in both directions: without
            // TCP_NODELAY, Nagle's algorithm and delayed ACKs hold some of
            // them back for ~40 ms.
            let _ = stream.set_nodelay(true);
            if let Some(bytes) = self.send_buffer_bytes {
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
            }
            let info = ConnectionInfo { peer, ticket };
            let task = serve_http(
                stream,
                info,
                self.tls.clone(),
                self.router.clone(),
                http.clone(),
                self.deadlines,
                self.shutdown.clone(),
                self.killed.clone(),
            );
            tokio::spawn(self.tracker.track_future(task));
        }
    }
}

/// Answers a refused plain-HTTP connection with one line, then reads what
/// the client sent until it closes: closing with its request unread would
/// reset the connection and could discard the answer before the client reads it.
async fn refuse_plain(mut stream: TcpStream, refusal: Refusal) {
    let status = match refusal {
        Refusal::TooManyPending => "503 Service Unavailable",
        Refusal::TooManyFromAddress => "429 Too Many Requests",
    };
    let body = format!("{}\n", refusal.reason());
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

#[allow(clippy::too_many_arguments)] // one connection's whole context, passed once
async fn serve_http(
    stream: TcpStream,
    info: ConnectionInfo,
    tls: Option<TlsAcceptor>,
    router: Router,
    http: http1::Builder,
    deadlines: HttpDeadlines,
    shutdown: CancellationToken,
    killed: CancellationToken,
) {
    let lifetime = tokio::time::sleep(deadlines.lifetime);
    tokio::pin!(lifetime);
    let io = match tls {
        None => Either::Left(stream),
        Some(tls) => {
            let handshake = tokio::time::timeout(deadlines.header_read, tls.accept(stream));
            tokio::select! {
                result = handshake => match result {
                    Ok(Ok(stream)) => Either::Right(stream),
                    Ok(Err(err)) => {
                        tracing::debug!(peer = %info.peer, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                () = shutdown.cancelled() => return,
                () = killed.cancelled() => return,
            }
        }
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(info.clone());
        tower_service::Service::call(&mut router.clone(), request)
    });
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => return,
        () = &mut lifetime => return,
        () = killed.cancelled() => return,
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = &mut connection => {}
        () = &mut lifetime => {}
        () = killed.cancelled() => {}
    }
}
