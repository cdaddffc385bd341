//! Hostile clients that keep coming and going while the honest rooms relay:
//! the server must hold them off without the honest ones noticing.
//!
//! Three kinds, in turn:
//! - **never-reading:** a WebSocket with a 2 KiB receive buffer that joins a
//!   room with another never-reading client and sends it a 60 KB offer every
//!   second, reading nothing: the server's writes to it stall.
//! - **slowloris:** a request head sent one byte every 500 ms, never finished.
//! - **half-open:** a WebSocket that joins a room of its own and then goes
//!   silent (no reads, writes or pongs) without closing, as a peer whose
//!   network vanished looks to the server. (On loopback the kernel still
//!   acknowledges; a true half-open connection needs a lossy link.)
//!
//! Each client lives at most [`HOLD`] and then starts over; it comes from one
//! of [`ADDRESSES`] loopback addresses of its own, apart from the honest ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::SinkExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Longest life of one hostile connection before it starts over.
const HOLD: Duration = Duration::from_secs(15);
/// Loopback addresses the hostile clients come from.
const ADDRESSES: u8 = 8;
/// How often a never-reading client sends its partner an offer.
const OFFER_EVERY: Duration = Duration::from_secs(1);
/// Size of the never-reading clients' offers.
const OFFER_BYTES: usize = 60_000;

/// What the hostile clients saw, counted across all of them.
#[derive(Debug, Default)]
pub struct HostileCounts {
    /// Connections opened (TCP connected).
    pub opened: AtomicU64,
    /// Connections the server refused or closed before the client was done.
    pub cut_by_server: AtomicU64,
    /// Connections that lived their whole [`HOLD`] (the server let them be).
    pub held_to_the_end: AtomicU64,
}

/// Running hostile clients; [`Hostile::stop`] ends them.
pub struct Hostile {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    pub counts: Arc<HostileCounts>,
}

/// One kind of hostile client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostileKind {
    /// Joins, sends its partner 60 KB offers, never reads.
    NeverReading,
    /// Sends a request head one byte at a time, never finishing it.
    Slowloris,
    /// Joins, then neither reads, writes nor closes.
    HalfOpen,
}

impl Hostile {
    /// Starts `count` hostile clients against the server at `addr`: all of
    /// kind `only` if given, otherwise half never-reading (in pairs sharing a
    /// room) and a quarter each of the others.
    pub fn start(addr: SocketAddr, count: usize, only: Option<HostileKind>) -> Hostile {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(HostileCounts::default());
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..count {
            let kind = match (only, index % 4) {
                (Some(kind), _) => kind,
                (None, 0 | 1) => HostileKind::NeverReading,
                (None, 2) => HostileKind::Slowloris,
                (None, _) => HostileKind::HalfOpen,
            };
            let local = IpAddr::V4(Ipv4Addr::new(
                127,
                2,
                0,
                1 + (index % usize::from(ADDRESSES)) as u8,
            ));
            let (stop, counts) = (stop.clone(), counts.clone());
            tasks.spawn(async move {
                // Spread the starts so they do not all come and go together.
                tokio::time::sleep(Duration::from_millis(index as u64 * 37 % 5000)).await;
                while !stop.load(Ordering::Relaxed) {
                    let cut = match kind {
                        HostileKind::NeverReading => {
                            never_reading(addr, local, index / 4, &stop, &counts).await
                        }
                        HostileKind::Slowloris => slowloris(addr, local, &stop, &counts).await,
                        HostileKind::HalfOpen => {
                            half_open(addr, local, index, &stop, &counts).await
                        }
                    };
                    let counter = if cut {
                        &counts.cut_by_server
                    } else {
                        &counts.held_to_the_end
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        Hostile {
            stop,
            tasks,
            counts,
        }
    }

    pub async fn stop(mut self) -> Arc<HostileCounts> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        self.counts
    }
}

async fn tcp_from(
    local: IpAddr,
    addr: SocketAddr,
    receive_buffer: Option<u32>,
) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    if let Some(size) = receive_buffer {
        socket.set_recv_buffer_size(size).ok()?;
    }
    socket.bind(SocketAddr::new(local, 0)).ok()?;
    socket.connect(addr).await.ok()
}

/// A WebSocket to the server from `local` (counted as opened once the TCP
/// connection is up); `None` when the server refused it before or at the upgrade.
async fn websocket_from(
    local: IpAddr,
    addr: SocketAddr,
    receive_buffer: Option<u32>,
    counts: &HostileCounts,
) -> Option<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let stream = tcp_from(local, addr, receive_buffer).await?;
    counts.opened.fetch_add(1, Ordering::Relaxed);
    tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .ok()
        .map(|(socket, _)| socket)
}

/// Runs `f` until it ends (true: the server cut it off), [`HOLD`] passes or
/// the run stops (false).
async fn for_at_most(stop: &AtomicBool, f: impl std::future::Future<Output = ()>) -> bool {
    let stopped = async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = f => true,
        () = tokio::time::sleep(HOLD) => false,
        () = stopped => false,
    }
}

async fn never_reading(
    addr: SocketAddr,
    local: IpAddr,
    pair: usize,
    stop: &AtomicBool,
    counts: &HostileCounts,
) -> bool {
    let Some(mut socket) = websocket_from(local, addr, Some(2048), counts).await else {
        return true;
    };
    let join = format!(r#"{{"type":"join","room":"hostile-{pair}"}}"#);
    let offer = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "h".repeat(OFFER_BYTES));
    for_at_most(stop, async {
        if socket.send(Message::text(join)).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(OFFER_EVERY).await;
            if socket.send(Message::text(offer.clone())).await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn slowloris(
    addr: SocketAddr,
    local: IpAddr,
    stop: &AtomicBool,
    counts: &HostileCounts,
) -> bool {
    let Some(mut stream) = tcp_from(local, addr, None).await else {
        return true;
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    for_at_most(stop, async {
        if stream
            .write_all(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if stream.write_all(b"z").await.is_err() {
                return;
            }
        }
    })
    .await
}

async fn half_open(
    addr: SocketAddr,
    local: IpAddr,
    index: usize,
    stop: &AtomicBool,
    counts: &HostileCounts,
) -> bool {
    let Some(mut socket) = websocket_from(local, addr, None, counts).await else {
        return true;
    };
    if socket
        .send(Message::text(format!(
            r#"{{"type":"join","room":"half-{index}"}}"#
        )))
        .await
        .is_err()
    {
        return true;
    }
    // Silent from here on: the server can only tell by the missing pongs.
    // (Whether it dropped us is not visible without reading, so this counts
    // as held to the end.)
    for_at_most(stop, std::future::pending()).await;
    drop(socket);
    false
}
