//! What `GET /metrics` reports, in the Prometheus text format: counters the
//! hub bumps as it carries out the registry's actions, and gauges read when
//! the page is asked for.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::protocol::{ErrorCode, ServerMessage};

/// Every code `errors_total` is labelled with.
const CODES: [ErrorCode; 10] = [
    ErrorCode::RoomFull,
    ErrorCode::RoleTaken,
    ErrorCode::BadRoom,
    ErrorCode::BadMessage,
    ErrorCode::NotJoined,
    ErrorCode::AlreadyJoined,
    ErrorCode::NoPeer,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Unknown,
];

/// Counters of one instance since it started.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Offers, answers, candidates and byes passed on to the other peer.
    relayed: AtomicU64,
    /// Of those, the ones that went to a peer on another instance.
    forwarded: AtomicU64,
    /// Messages from other instances delivered here.
    received: AtomicU64,
    /// Envelopes that could not be published to another instance.
    forward_failures: AtomicU64,
    /// Errors sent, by code (in the order of [`CODES`]).
    errors: [AtomicU64; CODES.len()],
    /// Seats taken back with a resume token.
    resumes: AtomicU64,
    /// The last Redis round trip in microseconds (`u64::MAX`: none yet).
    redis_rtt_micros: AtomicU64,
    /// Whether the last Redis round trip succeeded.
    redis_up: AtomicBool,
}

/// Gauges read from the registry when the page is rendered.
#[derive(Debug)]
pub(crate) struct Gauges {
    pub connections: usize,
    pub joined: usize,
    pub rooms: usize,
    /// `None` without Redis.
    pub redis: Option<()>,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            redis_rtt_micros: AtomicU64::new(u64::MAX),
            ..Metrics::default()
        }
    }

    /// A message about to be sent, here or on another instance.
    pub(crate) fn sending(&self, message: &ServerMessage, forwarded: bool) {
        match message {
            ServerMessage::Offer { .. }
            | ServerMessage::Answer { .. }
            | ServerMessage::Candidate { .. }
            | ServerMessage::Bye { .. } => {
                self.relayed.fetch_add(1, Ordering::Relaxed);
                if forwarded {
                    self.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMessage::Error { code, .. } => {
                if let Some(i) = CODES.iter().position(|c| c == code) {
                    self.errors[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMessage::Joined { resumed: true, .. } => {
                self.resumes.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn forward_failed(&self) {
        self.forward_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A Redis round trip ended: `Some(rtt)` when Redis answered.
    pub(crate) fn redis_round_trip(&self, rtt: Option<std::time::Duration>) {
        self.redis_up.store(rtt.is_some(), Ordering::Relaxed);
        if let Some(rtt) = rtt {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX - 1);
            self.redis_rtt_micros.store(micros, Ordering::Relaxed);
        }
    }

    /// Redis answered at start (before the first lease renewal is timed).
    pub(crate) fn redis_answered(&self) {
        self.redis_up.store(true, Ordering::Relaxed);
    }

    pub(crate) fn redis_up(&self) -> bool {
        self.redis_up.load(Ordering::Relaxed)
    }

    /// The page, in the Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut page = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(page, "# HELP duet_{name} {help}");
            let _ = writeln!(page, "# TYPE duet_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(page, "duet_{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value.to_string())];
        let count = |counter: &AtomicU64| one(counter.load(Ordering::Relaxed));
        let size = |n: usize| one(u64::try_from(n).unwrap_or(u64::MAX));
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections on this instance.",
            &size(gauges.connections),
        );
        metric(
            "joined_peers",
            "gauge",
            "Connections on this instance that hold a seat in a room.",
            &size(gauges.joined),
        );
        metric(
            "rooms",
            "gauge",
            "Rooms with at least one peer on this instance.",
            &size(gauges.rooms),
        );
        metric(
            "messages_relayed_total",
            "counter",
            "Offers, answers, candidates and byes passed on to the other peer.",
            &count(&self.relayed),
        );
        metric(
            "messages_forwarded_total",
            "counter",
            "Relayed messages sent to a peer on another instance.",
            &count(&self.forwarded),
        );
        metric(
            "messages_received_total",
            "counter",
            "Messages from other instances delivered to peers here.",
            &count(&self.received),
        );
        metric(
            "forward_failures_total",
            "counter",
            "Messages for another instance that could not be published.",
            &count(&self.forward_failures),
        );
        let errors: Vec<(String, String)> = CODES
            .iter()
            .zip(&self.errors)
            .map(|(code, n)| {
                (
                    format!("{{code=\"{}\"}}", code.as_str()),
                    n.load(Ordering::Relaxed).to_string(),
                )
            })
            .collect();
        metric(
            "errors_total",
            "counter",
            "Errors sent to peers, by protocol error code.",
            &errors,
        );
        metric(
            "resumes_total",
            "counter",
            "Seats taken back with a resume token.",
            &count(&self.resumes),
        );
        if gauges.redis.is_some() {
            metric(
                "redis_up",
                "gauge",
                "Whether Redis answered the last round trip (1) or not (0).",
                &one(u64::from(self.redis_up())),
            );
            let rtt = self.redis_rtt_micros.load(Ordering::Relaxed);
            if rtt != u64::MAX {
                #[allow(clippy::cast_precision_loss)] // microseconds fit a float's mantissa
                let seconds = rtt as f64 / 1e6;
                metric(
                    "redis_round_trip_seconds",
                    "gauge",
                    "Time of the last Redis round trip (a lease renewal).",
                    &[(String::new(), format!("{seconds:.6}"))],
                );
            }
        }
        page
    }
}
