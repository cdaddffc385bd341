//! The honest load: rooms of two real [`duet_signal`] clients that join, then
//! replay call setups and time every relayed message.
//!
//! A process drives one [`RoomShare`]; with several load processes
//! (`workers.rs`) each drives its own, and their [`ShareOutcome`]s are merged.
//! Both peers of a room live in the same process, so a message's latency is
//! read on the clock that stamped it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use duet_signal::{
    ClientConfig, IceCandidate, RoleRequest, ServerMessage, SignalEvent, SignalEvents, SignalSender,
};
use tokio::sync::Semaphore;

use crate::workers::say;

/// Size of the simulated offer and answer.
pub(crate) const SDP_BYTES: usize = 4096;
/// Candidates each side trickles per setup.
const CANDIDATES: u32 = 10;
/// Messages one room relays per setup: offer + answer + candidates both ways.
pub(crate) const MESSAGES_PER_SETUP: u64 = 2 + 2 * CANDIDATES as u64;

/// Honest connections per client address (127.1.x.y): below the server's
/// default per-address join burst, as real clients come from many addresses.
const CONNECTIONS_PER_ADDRESS: usize = 40;

/// The rooms one process drives: `count` rooms numbered from `first`, so
/// that rooms (and client addresses) of different processes never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomShare {
    pub first: usize,
    pub count: usize,
}

/// How the rooms join and how often they set up a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub rounds: u32,
    /// Time between two setups of one room; a share's rooms are spread evenly over it.
    pub interval: Duration,
    /// Connection attempts in flight at once while ramping up.
    pub connect_concurrency: usize,
}

/// What one share of rooms measured.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ShareOutcome {
    pub join_us: Vec<u32>,
    pub latencies_us: Vec<u32>,
    pub relayed: u64,
    pub errors: u64,
    pub ramp_s: f64,
    pub load_s: f64,
}

impl ShareOutcome {
    /// Adds another process's share; its phases ran side by side with ours,
    /// so the longer of each phase is the run's.
    pub(crate) fn merge(&mut self, other: ShareOutcome) {
        self.join_us.extend(other.join_us);
        self.latencies_us.extend(other.latencies_us);
        self.relayed += other.relayed;
        self.errors += other.errors;
        self.ramp_s = self.ramp_s.max(other.ramp_s);
        self.load_s = self.load_s.max(other.load_s);
    }
}

/// The loopback address honest connection `index` comes from.
fn honest_address(index: usize) -> std::net::IpAddr {
    let k = index / CONNECTIONS_PER_ADDRESS;
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        1,
        (k / 250) as u8,
        (k % 250 + 1) as u8,
    ))
}

/// Joins every room of `share` (callee first, then caller, as a real pair
/// arrives), waits for `go` with every connection held, then drives the
/// call setups until each room has done `pace.rounds`.
pub(crate) async fn run_share(
    url: &str,
    share: RoomShare,
    pace: Pace,
    go: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<ShareOutcome> {
    let clock = Instant::now();
    let ramp_started = Instant::now();
    let gate = Arc::new(Semaphore::new(pace.connect_concurrency.max(1)));
    let mut joins = tokio::task::JoinSet::new();
    for room in share.first..share.first + share.count {
        let (url, gate) = (url.to_owned(), gate.clone());
        joins.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let name = format!("load-{room}");
            let callee = join(&url, &name, RoleRequest::Callee, honest_address(2 * room)).await?;
            let caller = join(
                &url,
                &name,
                RoleRequest::Caller,
                honest_address(2 * room + 1),
            )
            .await?;
            anyhow::Ok((callee, caller))
        });
    }
    let mut rooms = Vec::with_capacity(share.count);
    let mut join_us = Vec::with_capacity(2 * share.count);
    while let Some(joined) = joins.join_next().await {
        let (callee, caller) = joined.context("a join task failed")??;
        join_us.push(callee.join_us);
        join_us.push(caller.join_us);
        rooms.push((callee, caller));
    }
    let ramp_s = ramp_started.elapsed().as_secs_f64();
    say(&format!(
        "{} connections joined in {ramp_s:.1} s",
        2 * share.count
    ));
    go.await?;

    let load_started = Instant::now();
    let room_count = rooms.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (callee, caller)) in rooms.into_iter().enumerate() {
        let offset = pace.interval.mul_f64(index as f64 / room_count as f64);
        tasks.spawn(drive_callee(callee, clock));
        tasks.spawn(drive_caller(
            caller,
            clock,
            load_started + offset,
            pace.interval,
            pace.rounds,
        ));
    }
    let mut outcome = ShareOutcome {
        join_us,
        ramp_s,
        ..ShareOutcome::default()
    };
    while let Some(result) = tasks.join_next().await {
        let received = result.context("a connection task failed")?;
        outcome.relayed += received.messages;
        outcome.errors += received.errors;
        outcome.latencies_us.extend(received.latencies_us);
    }
    outcome.load_s = load_started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// What one connection measured.
#[derive(Debug, Default)]
struct Received {
    latencies_us: Vec<u32>,
    messages: u64,
    errors: u64,
}

/// One joined connection.
struct Peer {
    tx: SignalSender,
    events: SignalEvents,
    join_us: u32,
}

async fn join(
    url: &str,
    room: &str,
    role: RoleRequest,
    from: std::net::IpAddr,
) -> anyhow::Result<Peer> {
    let started = Instant::now();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(30),
        local_address: Some(from),
        ..ClientConfig::new(url, room, role)
    };
    let (tx, mut events) = duet_signal::connect(config)
        .await
        .with_context(|| format!("{role} of {room}"))?;
    let join_us = micros(started.elapsed());
    // The first event is the Joined that connect resolved on.
    events.recv().await;
    Ok(Peer {
        tx,
        events,
        join_us,
    })
}

fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// `t=<ns since start>;` then padding to `len` bytes.
fn stamped(clock: Instant, len: usize) -> String {
    let mut text = format!("t={};", clock.elapsed().as_nanos());
    let pad = len.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('a', pad));
    text
}

fn candidate(clock: Instant) -> Option<IceCandidate> {
    Some(IceCandidate {
        candidate: format!(
            "{}candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            stamped(clock, 0)
        ),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    })
}

/// Latency of a message stamped by [`stamped`].
fn latency_us(clock: Instant, text: &str) -> Option<u32> {
    let sent: u128 = text.strip_prefix("t=")?.split(';').next()?.parse().ok()?;
    let now = clock.elapsed().as_nanos();
    Some(u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX))
}

/// Records one relayed message; returns whether it was an offer (the callee's cue).
fn record(received: &mut Received, clock: Instant, event: &SignalEvent) -> bool {
    let (text, is_offer) = match event {
        SignalEvent::Message(ServerMessage::Offer { sdp, .. }) => (sdp.as_str(), true),
        SignalEvent::Message(ServerMessage::Answer { sdp, .. }) => (sdp.as_str(), false),
        SignalEvent::Message(ServerMessage::Candidate {
            candidate: Some(c), ..
        }) => (c.candidate.as_str(), false),
        SignalEvent::Message(ServerMessage::Error { code, message }) => {
            say(&format!("server error {code}: {message}"));
            received.errors += 1;
            return false;
        }
        SignalEvent::Reconnecting { cause, .. } => {
            say(&format!("connection lost: {cause}"));
            received.errors += 1;
            return false;
        }
        _ => return false,
    };
    received.messages += 1;
    if let Some(us) = latency_us(clock, text) {
        received.latencies_us.push(us);
    }
    is_offer
}

/// How long a caller waits for a message still missing before it counts it
/// lost and leaves: well above any latency the runs have seen (3.8 s on a
/// saturated machine), so a slow message is reported slow, not lost.
const DRAIN: Duration = Duration::from_secs(10);

async fn drive_caller(
    mut peer: Peer,
    clock: Instant,
    first: Instant,
    interval: Duration,
    rounds: u32,
) -> Received {
    let mut received = Received::default();
    let expected = u64::from(rounds) * (1 + u64::from(CANDIDATES));
    for round in 0..rounds {
        let at = tokio::time::Instant::from_std(first + interval * round);
        // Listen while waiting for the next setup time.
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(at) => break,
                event = peer.events.recv() => match event {
                    Some(event) => { record(&mut received, clock, &event); }
                    None => return received,
                },
            }
        }
        let _ = peer.tx.offer(stamped(clock, SDP_BYTES));
        for _ in 0..CANDIDATES {
            let _ = peer.tx.candidate(candidate(clock));
        }
    }
    listen_until(&mut peer, &mut received, clock, expected).await;
    peer.tx.close();
    received
}

async fn drive_callee(mut peer: Peer, clock: Instant) -> Received {
    let mut received = Received::default();
    loop {
        let event = match tokio::time::timeout(Duration::from_secs(60), peer.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => break,
        };
        if matches!(event, SignalEvent::Message(ServerMessage::PeerLeft { .. })) {
            break;
        }
        if record(&mut received, clock, &event) {
            let _ = peer.tx.answer(stamped(clock, SDP_BYTES));
            for _ in 0..CANDIDATES {
                let _ = peer.tx.candidate(candidate(clock));
            }
        }
    }
    peer.tx.close();
    received
}

/// Keeps receiving until `expected` messages arrived or nothing came for [`DRAIN`].
async fn listen_until(peer: &mut Peer, received: &mut Received, clock: Instant, expected: u64) {
    while received.messages < expected {
        match tokio::time::timeout(DRAIN, peer.events.recv()).await {
            Ok(Some(event)) => {
                record(received, clock, &event);
            }
            Ok(None) | Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad_to_size() {
        let clock = Instant::now();
        let text = stamped(clock, SDP_BYTES);
        assert_eq!(text.len(), SDP_BYTES);
        let us = latency_us(clock, &text).expect("a stamp");
        assert!(us < 1_000_000);
        assert_eq!(latency_us(clock, "no stamp"), None);
    }

    #[test]
    fn shares_come_from_their_own_addresses_forty_to_each() {
        assert_eq!(honest_address(0), honest_address(39));
        assert_ne!(honest_address(39), honest_address(40));
        // 20,000 connections fit in 127.1.0.0/16 without wrapping.
        assert_eq!(honest_address(19_999).to_string(), "127.1.1.250");
    }

    #[test]
    fn merged_shares_add_up_and_keep_the_longer_phases() {
        let mut a = ShareOutcome {
            join_us: vec![1],
            latencies_us: vec![10, 20],
            relayed: 2,
            errors: 0,
            ramp_s: 3.0,
            load_s: 18.0,
        };
        a.merge(ShareOutcome {
            join_us: vec![2],
            latencies_us: vec![30],
            relayed: 1,
            errors: 1,
            ramp_s: 4.0,
            load_s: 17.0,
        });
        assert_eq!(a.join_us, [1, 2]);
        assert_eq!(a.latencies_us, [10, 20, 30]);
        assert_eq!((a.relayed, a.errors), (3, 1));
        assert_eq!((a.ramp_s, a.load_s), (4.0, 18.0));
    }
}
