//! What congestion control lets the whole connection send, and the share of
//! it left for fresh video.
//!
//! The congestion controller's target is measured on everything the peer
//! sends (its transport-wide feedback covers audio and video alike), but only
//! the video encoder can follow it. When the encoder is given the whole
//! target, audio, RTCP and retransmissions come on top of it: on a link that
//! is full, the sender runs just over the link's rate, the loss asks for
//! resends, and the resends cause more loss. libwebrtc takes the measured
//! protection overhead off the encoder's target; so does Duet.
//!
//! The target counts packets as the link does (headers included), while the
//! encoder's bitrate is of its bitstream alone: on a narrow link, where a
//! picture is one or two packets, the headers of video's own packets are a
//! tenth of what it sends. The encoder is given its share of the target
//! net of them, as measured on what it sent lately.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::pacing::FRESH_MAX_WAIT;

/// The origin of the instants the budget keeps as numbers (the first time
/// one is asked for).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Fresh video waiting longer than this in the send queue holds back new
/// pictures: half the wait after which the queue drops it.
const BACKLOG_LIMIT: Duration = FRESH_MAX_WAIT.checked_div(2).expect("nonzero");

/// An instant (or none) that one thread sets and another reads: µs after
/// [`epoch`] plus one, 0 for none. An atomic, as the budget's other
/// figures: the pacer and the congestion controller set theirs on every
/// packet or feedback. Rounded up to the µs, so that what is read back is
/// never before what was stored (the pacer compares it with the exact
/// departures it kept).
#[derive(Debug, Clone, Default)]
struct SharedInstant(Arc<AtomicU64>);

impl SharedInstant {
    fn encode(at: Instant) -> u64 {
        let after = at
            .saturating_duration_since(epoch())
            .as_nanos()
            .div_ceil(1000);
        u64::try_from(after).unwrap_or(u64::MAX - 1) + 1
    }

    fn store(&self, at: Option<Instant>) {
        self.0
            .store(at.map_or(0, SharedInstant::encode), Ordering::Relaxed);
    }

    /// Stores `at` unless a later instant is stored.
    fn advance(&self, at: Instant) {
        self.0
            .fetch_max(SharedInstant::encode(at), Ordering::Relaxed);
    }

    fn load(&self) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(epoch() + Duration::from_micros(micros - 1)),
        }
    }
}

/// Shared by the congestion controller (which sets the target), the pacer
/// (which measures what is not fresh video) and the video encoder (which
/// spends the rest). Cheap to clone: every clone is the same budget.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendBudget {
    target_bps: Arc<AtomicU64>,
    overhead_bps: Arc<AtomicU64>,
    /// `f64` bits: payload bits per wire bit of fresh video lately; 0 while
    /// none was measured.
    video_payload_share: Arc<AtomicU64>,
    path_limited: Arc<AtomicBool>,
    /// When the oldest fresh video still in the send queue was queued.
    video_waiting_since: SharedInstant,
    /// When the newest packet the peer's feedback reported on left.
    reported_until: SharedInstant,
    /// The most the source being sent may use (a screen more than a
    /// camera), in bits per second; 0 until the video sender sets it.
    ceiling_bps: Arc<AtomicU64>,
    /// Counts the times the video source changed (or the camera came back
    /// on): the congestion controller lets a new source start at its target.
    sources: Arc<AtomicU64>,
    /// The path's round trip as last read from the connection's checks, in
    /// µs; 0 while none was read.
    round_trip_us: Arc<AtomicU64>,
    /// Counts the connections whose video waited for the peer's very first
    /// feedback (the budget outlives a connection made again mid-call).
    first_report_waits: Arc<AtomicU64>,
}

impl SendBudget {
    /// Sets the whole connection's target; returns the one before.
    pub(crate) fn set_target(&self, bps: u64) -> u64 {
        self.target_bps.swap(bps, Ordering::Relaxed)
    }

    /// Says whether the target is held down by the path (it overflowed
    /// lately) rather than following what the call sends: a call that sends
    /// little (audio alone, a still picture) has a low target on any link.
    pub(crate) fn set_path_limited(&self, limited: bool) {
        self.path_limited.store(limited, Ordering::Relaxed);
    }

    /// Whether the path holds the target down.
    pub(crate) fn path_limited(&self) -> bool {
        self.path_limited.load(Ordering::Relaxed)
    }

    /// The whole connection's target, or 0 while there is none yet.
    pub(crate) fn target_bps(&self) -> u64 {
        self.target_bps.load(Ordering::Relaxed)
    }

    /// Sets the ceiling of the source being sent; the congestion
    /// controller takes it as its own from its next feedback on.
    pub(crate) fn set_ceiling(&self, bps: u64) {
        self.ceiling_bps.store(bps, Ordering::Relaxed);
    }

    /// Says the video source changed, or the camera came back on: what the
    /// source before it delivered says nothing of what this one will send.
    pub(crate) fn note_new_source(&self) {
        self.sources.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times [`SendBudget::note_new_source`] was called.
    pub(crate) fn sources(&self) -> u64 {
        self.sources.load(Ordering::Relaxed)
    }

    /// The path's round trip, as the connectivity checks measured it: how
    /// long the send queue waits for a call's first feedback, and how long
    /// the receiver waits for a resend.
    pub(crate) fn set_round_trip(&self, round_trip: Duration) {
        let micros = u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX);
        self.round_trip_us.store(micros, Ordering::Relaxed);
    }

    /// The path's round trip, or `None` while none was measured.
    pub(crate) fn round_trip(&self) -> Option<Duration> {
        Some(self.round_trip_us.load(Ordering::Relaxed))
            .filter(|&micros| micros > 0)
            .map(Duration::from_micros)
    }

    /// The ceiling of the source being sent, or `None` while none was set.
    pub(crate) fn ceiling(&self) -> Option<u64> {
        Some(self.ceiling_bps.load(Ordering::Relaxed)).filter(|&bps| bps > 0)
    }

    /// What audio, RTCP and resends sent lately, in bits per second.
    pub(crate) fn set_overhead(&self, bps: u64) {
        self.overhead_bps.store(bps, Ordering::Relaxed);
    }

    /// What audio, RTCP and resends sent lately, in bits per second.
    pub(crate) fn overhead_bps(&self) -> u64 {
        self.overhead_bps.load(Ordering::Relaxed)
    }

    /// Says video waited for the peer's first feedback (the pacer does):
    /// the connection's start flooded the link
    /// ([`StartRamp`](super::start_ramp)).
    pub(crate) fn note_waited_for_first_report(&self) {
        self.first_report_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times [`SendBudget::note_waited_for_first_report`] was
    /// called: a connection compares it with the count when it was made.
    pub(crate) fn first_report_waits(&self) -> u64 {
        self.first_report_waits.load(Ordering::Relaxed)
    }

    /// What share of fresh video's bits on the wire was its payload lately
    /// (the rest: IP, UDP, RTP and SRTP headers).
    pub(crate) fn set_video_payload_share(&self, share: f64) {
        if share.is_finite() && share > 0.0 {
            self.video_payload_share
                .store(share.min(1.0).to_bits(), Ordering::Relaxed);
        }
    }

    /// Since when the oldest fresh video still in the send queue waits
    /// (`None`: none waits).
    pub(crate) fn set_video_waiting_since(&self, since: Option<Instant>) {
        self.video_waiting_since.store(since);
    }

    /// Whether the send queue holds video that has waited so long that a
    /// new picture should not be made. On a link at its floor, pictures
    /// that waited their 500 ms were dropped there, each a broken chain of
    /// references and a keyframe request, and the keyframes themselves
    /// waited and were dropped: ten seconds of keyframe requests every half
    /// second. A picture skipped before it is encoded breaks nothing.
    pub(crate) fn video_backlogged(&self, now: Instant) -> bool {
        self.video_waiting_since
            .load()
            .is_some_and(|since| now.saturating_duration_since(since) > BACKLOG_LIMIT)
    }

    /// The peer's feedback reported on the packets that left up to
    /// `departure` (the congestion controller says so; the pacer listens).
    pub(crate) fn note_reported_until(&self, departure: Instant) {
        self.reported_until.advance(departure);
    }

    /// When the newest packet the feedback reported on left, if any was.
    pub(crate) fn reported_until(&self) -> Option<Instant> {
        self.reported_until.load()
    }

    /// What the video encoder may spend, in bits of its bitstream a second:
    /// the target less the overhead, net of video's own packet headers, or 0
    /// while congestion control has no target yet. The wire share never
    /// falls below half the target: resends are held to a share of it, and
    /// audio is small, so an overhead that large is a burst the next
    /// measurement will not repeat.
    pub(crate) fn video_bps(&self) -> u64 {
        let target = self.target_bps.load(Ordering::Relaxed);
        let overhead = self.overhead_bps.load(Ordering::Relaxed);
        let on_the_wire = target.saturating_sub(overhead).max(target / 2);
        let share = f64::from_bits(self.video_payload_share.load(Ordering::Relaxed));
        if share > 0.0 {
            (on_the_wire as f64 * share) as u64
        } else {
            on_the_wire
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_gets_the_target_less_what_else_was_sent() {
        let budget = SendBudget::default();
        assert_eq!(budget.video_bps(), 0, "no target yet");
        let encoder_side = budget.clone();
        assert_eq!(budget.set_target(500_000), 0);
        assert_eq!(encoder_side.video_bps(), 500_000);
        budget.set_overhead(120_000);
        assert_eq!(encoder_side.video_bps(), 380_000);
        budget.set_overhead(400_000);
        assert_eq!(encoder_side.video_bps(), 250_000, "never under half");
    }

    #[test]
    fn video_waiting_a_quarter_second_holds_back_new_pictures() {
        let budget = SendBudget::default();
        let now = Instant::now();
        assert!(!budget.video_backlogged(now), "nothing waits");
        budget.set_video_waiting_since(Some(now));
        assert!(!budget.video_backlogged(now + Duration::from_millis(200)));
        assert!(budget.video_backlogged(now + Duration::from_millis(300)));
        budget.set_video_waiting_since(None);
        assert!(!budget.video_backlogged(now + Duration::from_millis(300)));
    }

    #[test]
    fn a_round_trip_is_none_until_measured() {
        let budget = SendBudget::default();
        assert_eq!(budget.round_trip(), None);
        budget.clone().set_round_trip(Duration::from_millis(42));
        assert_eq!(budget.round_trip(), Some(Duration::from_millis(42)));
    }

    #[test]
    fn what_the_feedback_reported_on_only_moves_forward() {
        let budget = SendBudget::default();
        assert_eq!(budget.reported_until(), None);
        let later = epoch() + Duration::from_millis(800);
        budget.note_reported_until(later);
        // An older instant (feedback that came out of order) changes nothing.
        budget.note_reported_until(later - Duration::from_millis(300));
        assert_eq!(budget.clone().reported_until(), Some(later));
        // Read back, an instant is never before the one stored.
        let odd = later + Duration::from_nanos(1_500);
        budget.note_reported_until(odd);
        let read = budget.reported_until().expect("stored");
        assert!(read >= odd && read - odd < Duration::from_micros(1));
    }

    #[test]
    fn video_gets_its_share_net_of_its_own_packet_headers() {
        let budget = SendBudget::default();
        budget.set_target(100_000);
        budget.set_overhead(20_000);
        budget.set_video_payload_share(0.9);
        assert_eq!(budget.video_bps(), 72_000);
        budget.set_video_payload_share(f64::NAN);
        budget.set_video_payload_share(0.0);
        assert_eq!(budget.video_bps(), 72_000, "nonsense is ignored");
    }
}
