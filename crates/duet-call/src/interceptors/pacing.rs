//! The send queue between Duet's media and the network, without sockets.
//!
//! webrtc-rs's own pacer is one first-in-first-out queue at exactly the
//! congestion controller's target, 4096 packets deep: audio waits behind
//! video, retransmissions behind both, and whenever the encoder overshoots
//! the target the queue grows into seconds of delay. This one puts audio
//! and RTCP straight through (charging the budget), retransmissions before
//! fresh video, paces at [`PACING_FACTOR`] times the target as libwebrtc
//! does (nearer the target on a narrow link), and throws away what has waited too long to be useful: nothing here
//! can hold seconds of media.
//!
//! Retransmissions go first because the receiver shows frames in order: a
//! fresh frame cannot be shown before the older one a resend completes, so
//! a resend held behind a keyframe's burst delays everything after it (and,
//! held past the receiver's patience, turns a lost packet into a keyframe
//! request). Their volume is bounded: the NACK generator asks a few times at
//! most, resends may use only [`RESEND_SHARE`] of the target (beyond it
//! fresh video goes first: on a full link, the loss resends cause asks for
//! more resends), and a resend that waited [`RESEND_MAX_WAIT`] is dropped.
//!
//! While the peer's feedback is late (see `feedback_watch.rs`), video and
//! resends are held back and audio goes alone: the queue is told so by the
//! pacer around it ([`PacingQueue::set_held`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much faster than the target the queue drains on a link of
/// [`WIDE_FROM`] or more: bursts (a keyframe) spread out, but the queue
/// keeps up with an encoder that overshoots.
pub(crate) const PACING_FACTOR: f64 = 2.5;
/// ...and on a narrow link, one that holds the target under [`NARROW_TO`]
/// (a target that only follows a call that sends little says nothing of
/// the link), where one full-size packet is a tenth of a second of the
/// link: a keyframe's burst at 2.5 times the link rate would sit in the
/// bottleneck's queue ahead of audio (160 ms for a 3.4 kB keyframe at
/// 100 kbit/s). Paced near the link's rate, video waits here instead,
/// where audio goes first. Between the two the factor changes linearly.
const NARROW_PACING_FACTOR: f64 = 1.2;
const NARROW_TO: f64 = 100_000.0;
const WIDE_FROM: f64 = 400_000.0;

/// How much faster than `target_bps` the queue drains, on a path that holds
/// the target down (`path_limited`) or not.
fn pacing_factor(target_bps: f64, path_limited: bool) -> f64 {
    if !path_limited {
        return PACING_FACTOR;
    }
    let wide = ((target_bps - NARROW_TO) / (WIDE_FROM - NARROW_TO)).clamp(0.0, 1.0);
    NARROW_PACING_FACTOR + (PACING_FACTOR - NARROW_PACING_FACTOR) * wide
}
/// The most a burst may be ahead of the rate: 40 ms of it, at least one
/// full-size packet.
const BURST: Duration = Duration::from_millis(40);
const MIN_BURST_BITS: f64 = 12_000.0;
/// A retransmission that waited this long in the queue is given up: the
/// receiver has moved on (or will ask again).
pub(crate) const RESEND_MAX_WAIT: Duration = Duration::from_millis(100);
/// Resends may use at most this share of the target, over
/// [`RESEND_WINDOW`]: on a link that is full, every resend is a fresh packet
/// that cannot go, and the loss the resends cause asks for more resends.
pub(crate) const RESEND_SHARE: f64 = 0.5;
/// How much resend allowance can be saved up: a burst of resends after a
/// short loss goes at once, a long run of them at [`RESEND_SHARE`].
const RESEND_WINDOW: Duration = Duration::from_millis(200);
/// Fresh video that waited this long is dropped: a picture this late is
/// worse than a gap the receiver recovers from with a keyframe.
pub(crate) const FRESH_MAX_WAIT: Duration = Duration::from_millis(500);
/// While video is held back, one packet of it still goes this often: its
/// feedback tells when the path is back, should nothing else be sent that
/// the peer reports on.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Video that waited this long while held back is dropped when it may go
/// again: the path it waited for may have been down (an outage), and a
/// picture that late, sent after it, was shown 500 ms old.
const HELD_VIDEO_MAX_WAIT: Duration = Duration::from_millis(150);

/// What a packet is to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketClass {
    /// RTCP and audio: small, and late audio is a gap in speech.
    Immediate,
    /// Video sent for the first time.
    FreshVideo,
    /// Video sent again because the receiver asked for it.
    Resend(ResendOf),
}

/// The packet a resend repeats: its stream and sequence number as first
/// sent. The receiver asks for a lost packet several times before the first
/// resend can arrive; while one resend of it waits here, another would add
/// nothing but delay for the resends behind it, so the one waiting moves to
/// the front instead (a packet asked for again is lost, not reordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResendOf {
    pub(crate) ssrc: u32,
    pub(crate) sequence_number: u16,
}

#[derive(Debug)]
struct Waiting<T> {
    since: Instant,
    bits: f64,
    item: T,
    /// For resends, the packet they repeat.
    repeats: Option<ResendOf>,
}

/// What the queue dropped, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacingDrops {
    pub(crate) stale_resends: u64,
    pub(crate) stale_video: u64,
    /// Resends of a packet whose resend was still waiting.
    pub(crate) repeated_resends: u64,
}

/// Bits the queue let out, by class, since it was made: what a log of the
/// send side's mix (fresh media against resends) is computed from.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct PacingTotals {
    pub(crate) immediate_bits: f64,
    pub(crate) fresh_bits: f64,
    pub(crate) resend_bits: f64,
}

/// The paced send queue.
#[derive(Debug)]
pub(crate) struct PacingQueue<T> {
    target_bps: f64,
    rate_bps: f64,
    budget_bits: f64,
    /// What resends may still spend; refilled at [`RESEND_SHARE`] of the target.
    resend_budget_bits: f64,
    last_refill: Option<Instant>,
    fresh: VecDeque<Waiting<T>>,
    resends: VecDeque<Waiting<T>>,
    /// Let out, with when.
    ready: VecDeque<(Instant, T)>,
    /// Fresh video and resends wait (the peer's feedback is late).
    held: bool,
    /// When a packet last went while video was held back.
    last_probe: Option<Instant>,
    drops: PacingDrops,
    totals: PacingTotals,
}

impl<T> PacingQueue<T> {
    /// A queue for a congestion controller whose target is `target_bps`.
    pub(crate) fn new(target_bps: f64) -> PacingQueue<T> {
        let mut queue = PacingQueue {
            target_bps: 0.0,
            rate_bps: 0.0,
            budget_bits: 0.0,
            resend_budget_bits: 0.0,
            last_refill: None,
            fresh: VecDeque::new(),
            resends: VecDeque::new(),
            ready: VecDeque::new(),
            held: false,
            last_probe: None,
            drops: PacingDrops::default(),
            totals: PacingTotals::default(),
        };
        queue.set_target(target_bps, false);
        queue.budget_bits = queue.burst_bits();
        queue.resend_budget_bits = queue.resend_burst_bits();
        queue
    }

    /// Follows the congestion controller; `path_limited`: the path holds
    /// the target down.
    pub(crate) fn set_target(&mut self, target_bps: f64, path_limited: bool) {
        self.target_bps = target_bps;
        self.rate_bps = (target_bps * pacing_factor(target_bps, path_limited)).max(MIN_BURST_BITS);
        self.budget_bits = self.budget_bits.min(self.burst_bits());
        self.resend_budget_bits = self.resend_budget_bits.min(self.resend_burst_bits());
    }

    /// Whether fresh video and resends are held back.
    pub(crate) fn held(&self) -> bool {
        self.held
    }

    /// Holds fresh video and resends back, or lets them go again: audio
    /// and RTCP go either way, and one packet every [`PROBE_INTERVAL`].
    pub(crate) fn set_held(&mut self, now: Instant, held: bool) {
        if held && !self.held {
            self.last_probe = None;
        }
        if !held && self.held {
            let before = self.fresh.len();
            self.fresh
                .retain(|w| now.saturating_duration_since(w.since) <= HELD_VIDEO_MAX_WAIT);
            self.drops.stale_video += (before - self.fresh.len()) as u64;
        }
        self.held = held;
    }

    fn resend_rate_bps(&self) -> f64 {
        self.target_bps * RESEND_SHARE
    }

    /// At least one full-size packet, so a resend is never refused for size.
    fn resend_burst_bits(&self) -> f64 {
        (self.resend_rate_bps() * RESEND_WINDOW.as_secs_f64()).max(MIN_BURST_BITS)
    }

    pub(crate) fn drops(&self) -> PacingDrops {
        self.drops
    }

    pub(crate) fn totals(&self) -> PacingTotals {
        self.totals
    }

    /// The rate the queue drains at now.
    pub(crate) fn rate_bps(&self) -> f64 {
        self.rate_bps
    }

    fn burst_bits(&self) -> f64 {
        (self.rate_bps * BURST.as_secs_f64()).max(MIN_BURST_BITS)
    }

    /// Takes a packet of `bits` to send.
    pub(crate) fn push(&mut self, now: Instant, class: PacketClass, bits: f64, item: T) {
        self.refill(now);
        match class {
            PacketClass::Immediate => {
                self.budget_bits -= bits;
                self.totals.immediate_bits += bits;
                self.ready.push_back((now, item));
            }
            PacketClass::FreshVideo => self.fresh.push_back(Waiting {
                since: now,
                bits,
                item,
                repeats: None,
            }),
            PacketClass::Resend(of) => {
                let waiting = self.resends.iter().position(|w| w.repeats == Some(of));
                if let Some(waiting) = waiting.and_then(|at| self.resends.remove(at)) {
                    // Asked for again: the receiver still lacks it, where a
                    // packet that was only reordered is asked for once.
                    // It goes first, and its wait starts again.
                    self.drops.repeated_resends += 1;
                    self.resends.push_front(Waiting {
                        since: now,
                        ..waiting
                    });
                } else {
                    self.resends.push_back(Waiting {
                        since: now,
                        bits,
                        item,
                        repeats: Some(of),
                    });
                }
            }
        }
        self.release(now);
    }

    /// Lets out what the budget allows by `now`.
    pub(crate) fn release(&mut self, now: Instant) {
        self.refill(now);
        let before = self.resends.len();
        self.resends
            .retain(|w| now.saturating_duration_since(w.since) <= RESEND_MAX_WAIT);
        self.drops.stale_resends += (before - self.resends.len()) as u64;
        while self
            .fresh
            .front()
            .is_some_and(|w| now.saturating_duration_since(w.since) > FRESH_MAX_WAIT)
        {
            self.fresh.pop_front();
            self.drops.stale_video += 1;
        }
        // A packet goes whenever the budget is not in debt; it may take the
        // budget below zero, so a packet larger than the burst still goes.
        // Resends go first while their own allowance lasts.
        while self.budget_bits > 0.0 {
            if self.held && !self.probe_due(now) {
                break;
            }
            let resend = if self.resend_budget_bits > 0.0 {
                self.resends.pop_front()
            } else {
                None
            };
            let next = if let Some(resend) = resend {
                self.resend_budget_bits -= resend.bits;
                self.totals.resend_bits += resend.bits;
                resend
            } else if let Some(fresh) = self.fresh.pop_front() {
                self.totals.fresh_bits += fresh.bits;
                fresh
            } else {
                break;
            };
            self.budget_bits -= next.bits;
            if self.held {
                self.last_probe = Some(now);
            }
            self.ready.push_back((now, next.item));
        }
    }

    /// While held: whether a packet may go as a probe at `now`.
    fn probe_due(&self, now: Instant) -> bool {
        self.last_probe
            .is_none_or(|at| now.saturating_duration_since(at) >= PROBE_INTERVAL)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + elapsed * self.rate_bps).min(self.burst_bits());
            self.resend_budget_bits = (self.resend_budget_bits + elapsed * self.resend_rate_bps())
                .min(self.resend_burst_bits());
        }
        self.last_refill = Some(now.max(self.last_refill.unwrap_or(now)));
    }

    /// The next packet to put on the wire, and when the queue let it out:
    /// its departure, for the congestion controller (the instant it was
    /// pushed would charge its wait here to the path).
    pub(crate) fn pop_ready(&mut self) -> Option<(Instant, T)> {
        self.ready.pop_front()
    }

    /// When the budget next lets a waiting packet out; `None` when nothing waits.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        if self.fresh.is_empty() && self.resends.is_empty() {
            return None;
        }
        let last = self.last_refill?;
        let debt = (-self.budget_bits).max(0.0) + 1.0;
        let mut wait = debt / self.rate_bps;
        if self.fresh.is_empty() && self.resend_budget_bits <= 0.0 {
            // Only resends wait, and their allowance is spent.
            let resend_debt = -self.resend_budget_bits + 1.0;
            let repaid = resend_debt / self.resend_rate_bps().max(1.0);
            // Past RESEND_MAX_WAIT they are dropped anyway.
            wait = wait.max(repaid.min(RESEND_MAX_WAIT.as_secs_f64()));
        }
        let paced = last + Duration::from_secs_f64(wait);
        match self.last_probe.filter(|_| self.held) {
            Some(probe) => Some(paced.max(probe + PROBE_INTERVAL)),
            None => Some(paced),
        }
    }

    /// When the oldest fresh video still waiting was queued.
    pub(crate) fn oldest_fresh(&self) -> Option<Instant> {
        self.fresh.front().map(|waiting| waiting.since)
    }

    /// Packets waiting for the budget.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.fresh.len() + self.resends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET_BITS: f64 = 1200.0 * 8.0;

    /// Runs the queue in 1 ms steps for `ms`; what left, with when.
    fn drain(queue: &mut PacingQueue<u32>, start: Instant, ms: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for t in 0..=ms {
            queue.release(start + Duration::from_millis(t));
            while let Some((_, item)) = queue.pop_ready() {
                out.push((t, item));
            }
        }
        out
    }

    /// A 200 kbit/s queue (500 kbit/s of pacing, a 20 kbit burst) that
    /// `bits` of audio have just taken into debt: nothing else goes for
    /// `(bits - 20_000) / 500` ms.
    fn queue_in_debt(start: Instant, bits: f64) -> PacingQueue<u32> {
        let mut queue = PacingQueue::new(200_000.0);
        queue.push(start, PacketClass::Immediate, bits, 0);
        queue.pop_ready();
        queue
    }

    /// The items of `drain`'s output, in order.
    fn items(out: &[(u64, u32)]) -> Vec<u32> {
        out.iter().map(|(_, n)| *n).collect()
    }

    #[test]
    fn audio_goes_at_once_even_behind_a_keyframe() {
        let start = Instant::now();
        // 1 Mbit/s target: paced at 2.5 Mbit/s.
        let mut queue = PacingQueue::new(1_000_000.0);
        for n in 0..40 {
            queue.push(start, PacketClass::FreshVideo, PACKET_BITS, n);
        }
        while queue.pop_ready().is_some() {}
        assert!(queue.waiting() > 20, "a 48 kB keyframe is paced");
        queue.push(start, PacketClass::Immediate, 1000.0, 999);
        assert_eq!(queue.pop_ready(), Some((start, 999)));
    }

    #[test]
    fn video_is_paced_at_two_and_a_half_times_the_target() {
        let start = Instant::now();
        let mut queue = PacingQueue::new(1_000_000.0);
        for n in 0..300 {
            queue.push(start, PacketClass::FreshVideo, PACKET_BITS, n);
        }
        let out = drain(&mut queue, start, 400);
        // 300 packets of 9600 bits at 2.5 Mbit/s: ~1.15 s, but anything
        // older than FRESH_MAX_WAIT is dropped first.
        let last_sent = out.last().map(|(t, _)| *t).unwrap_or(0);
        let sent_by_400 = out.len();
        let expected = (0.4 * 2_500_000.0 + 0.04 * 2_500_000.0) / PACKET_BITS;
        assert!(
            (sent_by_400 as f64 - expected).abs() < 4.0,
            "{sent_by_400} sent by 400 ms (expected ~{expected:.0}), last at {last_sent} ms"
        );
        let in_order = out.windows(2).all(|w| w[0].1 < w[1].1);
        assert!(in_order);
    }

    #[test]
    fn a_narrow_link_is_paced_nearer_its_rate() {
        assert_eq!(pacing_factor(1_400_000.0, true), PACING_FACTOR);
        assert_eq!(pacing_factor(400_000.0, true), PACING_FACTOR);
        assert!((pacing_factor(250_000.0, true) - 1.85).abs() < 1e-9);
        assert_eq!(pacing_factor(100_000.0, true), NARROW_PACING_FACTOR);
        assert_eq!(pacing_factor(40_000.0, true), NARROW_PACING_FACTOR);
        assert_eq!(
            pacing_factor(40_000.0, false),
            PACING_FACTOR,
            "a call that sends little, on any link"
        );
        let mut queue = PacingQueue::<u32>::new(100_000.0);
        assert!((queue.rate_bps() - 250_000.0).abs() < 1e-6);
        queue.set_target(100_000.0, true);
        assert!((queue.rate_bps() - 120_000.0).abs() < 1e-6);
    }

    #[test]
    fn resends_go_before_fresh_video_and_stale_ones_are_dropped() {
        let start = Instant::now();
        let mut queue = queue_in_debt(start, 30_000.0);
        queue.push(start, PacketClass::FreshVideo, PACKET_BITS, 1);
        queue.push(start, PacketClass::Resend(of(7)), PACKET_BITS, 2);
        let out = drain(&mut queue, start, 100);
        assert_eq!(items(&out), vec![2, 1], "{out:?}");

        // A resend that cannot go within RESEND_MAX_WAIT is given up: the
        // 60 kbit debt takes 120 ms.
        let mut queue = queue_in_debt(start, 80_000.0);
        queue.push(start, PacketClass::Resend(of(8)), PACKET_BITS, 3);
        queue.push(start, PacketClass::FreshVideo, PACKET_BITS, 4);
        let out = drain(&mut queue, start, 300);
        assert_eq!(items(&out), vec![4]);
        assert_eq!(queue.drops().stale_resends, 1);
    }

    fn of(sequence_number: u16) -> ResendOf {
        ResendOf {
            ssrc: 1,
            sequence_number,
        }
    }

    #[test]
    fn a_packet_whose_resend_still_waits_is_not_queued_again() {
        let start = Instant::now();
        let mut queue = queue_in_debt(start, 30_000.0);
        // Packet 7 asked for three times and packet 8 once, before any of
        // them could go (7 stays first, once).
        for (n, seq) in [(1, 7), (2, 7), (3, 8), (4, 7)] {
            queue.push(start, PacketClass::Resend(of(seq)), PACKET_BITS, n);
        }
        assert_eq!(queue.drops().repeated_resends, 2);
        let out = drain(&mut queue, start, 100);
        assert_eq!(items(&out), vec![1, 3]);
        assert_eq!(queue.drops().stale_resends, 0);
        let later = start + Duration::from_millis(100);
        queue.push(later, PacketClass::Resend(of(7)), PACKET_BITS, 5);
        assert_eq!(queue.pop_ready(), Some((later, 5)));
        // Another stream's packet 7 is another packet.
        let other = ResendOf {
            ssrc: 2,
            sequence_number: 7,
        };
        queue.push(later, PacketClass::Resend(of(9)), 40_000.0, 6);
        queue.push(later, PacketClass::Resend(other), PACKET_BITS, 7);
        queue.push(later, PacketClass::Resend(of(9)), PACKET_BITS, 8);
        assert_eq!(queue.drops().repeated_resends, 3);
    }

    #[test]
    fn a_packet_asked_for_again_goes_before_those_asked_for_once() {
        let start = Instant::now();
        // Nothing goes for 120 ms.
        let mut queue = queue_in_debt(start, 80_000.0);
        // 7, 8 and 9 asked for once; 7 again 60 ms later (a packet only
        // reordered would have come by then).
        for (n, seq) in [(1, 7), (2, 8), (3, 9)] {
            queue.push(start, PacketClass::Resend(of(seq)), PACKET_BITS, n);
        }
        let mut out = Vec::new();
        for t in 0..=300 {
            let now = start + Duration::from_millis(t);
            if t == 60 {
                queue.push(now, PacketClass::Resend(of(7)), PACKET_BITS, 4);
            }
            queue.release(now);
            while let Some((_, item)) = queue.pop_ready() {
                out.push((t, item));
            }
        }
        // 8 and 9 went stale at 100 ms; 7, asked again, waits until 160
        // and goes when the debt is paid.
        assert_eq!(items(&out), vec![1], "{out:?}");
        assert!((115..=125).contains(&out[0].0), "{out:?}");
        assert_eq!(queue.drops().stale_resends, 2);
        assert_eq!(queue.drops().repeated_resends, 1);
    }

    #[test]
    fn nothing_waits_longer_than_half_a_second() {
        let start = Instant::now();
        // A link far too slow for what is pushed: 100 kbit/s target.
        let mut queue = PacingQueue::new(100_000.0);
        let mut sent_at = Vec::new();
        for t in 0..3000u64 {
            let now = start + Duration::from_millis(t);
            if t % 10 == 0 {
                queue.push(now, PacketClass::FreshVideo, PACKET_BITS, t as u32);
            }
            queue.release(now);
            while let Some((_, pushed)) = queue.pop_ready() {
                sent_at.push(t - u64::from(pushed));
            }
        }
        let worst = sent_at.iter().max().copied().unwrap_or(0);
        assert!(worst <= 500, "a packet waited {worst} ms");
        assert!(queue.drops().stale_video > 0);
    }

    #[test]
    fn held_back_video_waits_but_audio_and_a_probe_a_second_go() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut queue = PacingQueue::new(1_000_000.0);
        queue.set_held(start, true);
        for n in 0..5 {
            queue.push(start, PacketClass::FreshVideo, PACKET_BITS, n);
        }
        queue.push(start, PacketClass::Immediate, 1000.0, 99);
        let mut out = Vec::new();
        for t in 0..=1_200 {
            if t == 900 {
                queue.push(at(t), PacketClass::FreshVideo, PACKET_BITS, 5);
            }
            queue.release(at(t));
            while let Some((_, item)) = queue.pop_ready() {
                out.push((t, item));
            }
        }
        // Audio at once, a probe at once and one a second later; what
        // waited past FRESH_MAX_WAIT was dropped.
        assert_eq!(out, vec![(0, 0), (0, 99), (1_000, 5)], "{out:?}");
        assert_eq!(queue.drops().stale_video, 4);
        queue.push(at(1_100), PacketClass::FreshVideo, PACKET_BITS, 6);
        queue.push(at(1_200), PacketClass::FreshVideo, PACKET_BITS, 7);
        assert_eq!(queue.next_release(), Some(at(2_000)));
        // Let go at 1.3 s: what waited longer than HELD_VIDEO_MAX_WAIT is
        // dropped, the rest goes at once.
        queue.set_held(at(1_300), false);
        assert_eq!(queue.drops().stale_video, 5);
        queue.release(at(1_300));
        assert_eq!(queue.pop_ready(), Some((at(1_300), 7)));
    }

    #[test]
    fn a_probe_is_counted_only_when_a_packet_went() {
        let start = Instant::now();
        let mut queue = PacingQueue::new(1_000_000.0);
        queue.set_held(start, true);
        // Nothing waits: nothing goes, and no probe is spent.
        queue.release(start);
        let later = start + Duration::from_millis(100);
        queue.push(later, PacketClass::FreshVideo, PACKET_BITS, 1);
        assert_eq!(queue.pop_ready(), Some((later, 1)));
    }

    #[test]
    fn the_next_release_is_when_the_debt_is_repaid() {
        let start = Instant::now();
        let mut queue = PacingQueue::new(400_000.0);
        assert_eq!(queue.next_release(), None);
        queue.push(
            start,
            PacketClass::Immediate,
            1_000_000.0 * 0.04 + 10_000.0,
            0,
        );
        queue.push(start, PacketClass::FreshVideo, PACKET_BITS, 1);
        let due = queue.next_release().expect("a packet waits");
        // 10 kbit of debt at 1 Mbit/s: 10 ms.
        let wait = due - start;
        assert!(
            (Duration::from_millis(9)..Duration::from_millis(11)).contains(&wait),
            "{wait:?}"
        );
        queue.release(due);
        assert_eq!(
            std::iter::from_fn(|| queue.pop_ready()).collect::<Vec<_>>(),
            vec![(start, 0), (due, 1)]
        );
    }
}
