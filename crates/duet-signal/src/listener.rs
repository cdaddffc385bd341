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
    /// Every connection starts with a PROXY protocol v1 header (from a load
    /// balancer), whose client address counts instead of the socket's.
    pub proxy_protocol: bool,
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
            if self.proxy_protocol {
                let task = self.behind_proxy(stream, peer, http.clone(), answering.clone());
                tokio::spawn(self.tracker.track_future(task));
                continue;
            }
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
            self.tune(&stream);
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

impl Acceptor {
    fn tune(&self, stream: &TcpStream) {
        // Signaling is many small messages in both directions: without
        // TCP_NODELAY, Nagle's algorithm and delayed ACKs hold some of
        // them back for ~40 ms.
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = self.send_buffer_bytes {
            let _ = socket2::SockRef::from(stream).set_send_buffer_size(bytes);
        }
    }

    /// A connection from a load balancer: its PROXY header first (by the
    /// header deadline), then admission by the client address it names.
    fn behind_proxy(
        &self,
        mut stream: TcpStream,
        proxy: SocketAddr,
        http: http1::Builder,
        answering: Arc<Semaphore>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.tune(&stream);
        let admission = self.admission.clone();
        let (tls, router, deadlines) = (self.tls.clone(), self.router.clone(), self.deadlines);
        let (shutdown, killed) = (self.shutdown.clone(), self.killed.clone());
        async move {
            let header =
                tokio::time::timeout(deadlines.header_read, read_proxy_header(&mut stream));
            let peer = match header.await {
                Ok(Ok(Some(client))) => client,
                Ok(Ok(None)) => proxy,
                Ok(Err(reason)) => {
                    tracing::debug!(%proxy, reason, "not a PROXY protocol header; closing");
                    return;
                }
                Err(_) => return,
            };
            let ticket = match admission.admit(peer.ip()) {
                Ok(ticket) => Arc::new(ticket),
                Err(refusal) => {
                    tracing::debug!(%peer, reason = refusal.reason(), "connection refused");
                    if tls.is_none()
                        && let Ok(permit) = answering.try_acquire_owned()
                    {
                        let _ = tokio::time::timeout(REFUSAL_LINGER, refuse_plain(stream, refusal))
                            .await;
                        drop(permit);
                    }
                    return;
                }
            };
            let info = ConnectionInfo { peer, ticket };
            serve_http(stream, info, tls, router, http, deadlines, shutdown, killed).await;
        }
    }
}

/// The longest PROXY protocol v1 header (its specification, section 2.1).
const MAX_PROXY_HEADER: usize = 107;

/// Reads a PROXY protocol v1 header, byte by byte so nothing after it is taken.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, &'static str> {
    let mut line = Vec::with_capacity(MAX_PROXY_HEADER);
    while !line.ends_with(b"\r\n") {
        if line.len() >= MAX_PROXY_HEADER {
            return Err("longer than a PROXY header can be");
        }
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => line.push(byte[0]),
            _ => return Err("closed before its PROXY header ended"),
        }
    }
    parse_proxy_header(&line)
}

/// The client address of a PROXY protocol v1 header (`PROXY TCP4 SRC DST
/// SRCPORT DSTPORT\r\n`); `None` for `PROXY UNKNOWN` (the proxy's own
/// connection, a health check say).
pub(crate) fn parse_proxy_header(line: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not text")?;
    let line = line.strip_suffix("\r\n").ok_or("no CRLF")?;
    let mut words = line.split(' ');
    if words.next() != Some("PROXY") {
        return Err("does not start with PROXY");
    }
    match words.next() {
        Some("UNKNOWN") => return Ok(None),
        Some("TCP4" | "TCP6") => {}
        _ => return Err("neither TCP4, TCP6 nor UNKNOWN"),
    }
    let (Some(source), Some(_destination), Some(port), Some(_), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err("not five fields");
    };
    let ip: std::net::IpAddr = source.parse().map_err(|_| "a bad source address")?;
    let port: u16 = port.parse().map_err(|_| "a bad source port")?;
    Ok(Some(SocketAddr::new(ip, port)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_give_the_client_address_and_bad_ones_are_refused() {
        let header = |text: &str| parse_proxy_header(text.as_bytes());
        assert_eq!(
            header("PROXY TCP4 203.0.113.7 10.0.0.1 51234 8787\r\n"),
            Ok(Some(
                "203.0.113.7:51234"
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            ))
        );
        assert_eq!(
            header("PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n"),
            Ok(Some(
                "[2001:db8::1]:4000"
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            ))
        );
        assert_eq!(header("PROXY UNKNOWN\r\n"), Ok(None));
        for bad in [
            "GET / HTTP/1.1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 nope 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(header(bad).is_err(), "{bad:?}");
        }
    }
}
