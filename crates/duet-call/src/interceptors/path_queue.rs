//! When a queue on the path is overuse, reading by reading, without a clock
//! of its own.
//!
//! A queue deeper than [`QUEUE_LIMIT`] (on a narrow link,
//! [`NARROW_QUEUE_LIMIT`]) is overuse, except while the queue
//! the last back-off answered drains. On a narrow link that takes seconds:
//! a 100 kbit/s link with a 400 ms buffer, sent 15 % under its rate, drains
//! it in 2.7 s, and every reading until then is over the limit. Backing off
//! at each of them took the target to its floor for one congestion event.
//! After a back-off the queue is overuse again only if it grows by
//! [`QUEUE_LIMIT`] above the lowest it has drained to, or has stopped
//! draining: not [`DRAIN_PROGRESS`] lower within [`DRAIN_TIME`] (the link
//! may have narrowed again). A deep queue that drains slowly is waited
//! for: cutting again while it drains read what the sender itself had cut
//! to as the link's rate.
//!
//! A reading is the lowest delay of a few packets, so on a path that
//! jitters it is a queue only if it covers enough packets that jitter alone
//! seldom lifts them all over the limit: [`JitterSpread`] reads how far the
//! path's jitter spreads delays (from packets it reorders, which no queue
//! does), and [`packets_for_a_reading`] how many packets that takes.

use std::time::{Duration, Instant};

/// A packet's one-way delay in ms: its arrival on the receiver's clock
/// against its departure counted from the sender's `epoch`. The two clocks
/// share no origin, so only differences between delays mean anything (a
/// queue is a delay above the lowest).
pub(super) fn one_way_delay_ms(epoch: Instant, departure: Instant, arrival: Duration) -> f64 {
    let sent = departure.saturating_duration_since(epoch);
    (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0
}

/// The most a queue reading of a path that reorders may be jitter alone: the
/// chance that every packet it covers came that far above the lowest delay.
const JITTER_READ_AS_QUEUE: f64 = 0.0001;
/// A reading never needs more packets than this.
const MOST_PACKETS_FOR_A_READING: usize = 32;

/// The spread of a path's jitter is what the last one or two spans of this
/// length showed: a call that slowed down to a few packets a second sees a
/// packet overtaken seldom, so the spread is remembered a while.
const SPREAD_SPAN: Duration = Duration::from_secs(10);

/// A packet that arrived this much after one sent later was overtaken; less
/// is the feedback's rounding (its arrival times count in 250 µs steps).
const OVERTAKEN_BY_MS: f64 = 1.0;

/// What one span of packets showed of the path's jitter.
#[derive(Debug, Clone, Copy)]
struct SpreadSpan {
    began: Instant,
    /// A packet arrived after one sent later.
    reordered: bool,
    /// The widest difference between the delays of two packets sent one
    /// after the other.
    widest_ms: f64,
}

/// How far the path's jitter spreads one-way delays.
///
/// A queue keeps packets in order, so a path that reorders them jitters:
/// there the widest difference between two consecutive packets' delays is
/// the spread. A path that never reorders has none, however its delays
/// jump: a 100 kbit/s link holds audio 80 ms behind each video packet, in
/// order, and there a queue reading is the lowest of 200 ms, however few.
#[derive(Debug, Default)]
pub(crate) struct JitterSpread {
    current: Option<SpreadSpan>,
    previous: Option<SpreadSpan>,
    /// The packet reported before, in send order: departure and delay.
    before: Option<(Instant, f64)>,
}

impl JitterSpread {
    /// One packet sent at `sent` took `delay_ms`; reported at `now`, after
    /// the packets sent before it.
    pub(crate) fn on_delay(&mut self, now: Instant, sent: Instant, delay_ms: f64) {
        let before = self.before.replace((sent, delay_ms));
        let Some((sent_before, ms_before)) = before.filter(|&(at, _)| sent >= at) else {
            return;
        };
        if self
            .current
            .is_none_or(|span| now.saturating_duration_since(span.began) >= SPREAD_SPAN)
        {
            self.previous = self.current;
            self.current = Some(SpreadSpan {
                began: now,
                reordered: false,
                widest_ms: 0.0,
            });
        }
        let gap_ms = sent.duration_since(sent_before).as_secs_f64() * 1000.0;
        if let Some(span) = &mut self.current {
            span.reordered |= ms_before - delay_ms > gap_ms + OVERTAKEN_BY_MS;
            span.widest_ms = span.widest_ms.max((ms_before - delay_ms).abs());
        }
    }

    /// The spread in ms, as of `now`: 0 on a path that did not reorder.
    pub(crate) fn ms(&self, now: Instant) -> f64 {
        let spans = [self.current, self.previous];
        let recent = spans
            .iter()
            .flatten()
            .filter(|span| now.saturating_duration_since(span.began) < SPREAD_SPAN * 2);
        if !recent.clone().any(|span| span.reordered) {
            return 0.0;
        }
        recent.map(|span| span.widest_ms).fold(0.0, f64::max)
    }
}

/// How many packets a queue reading must cover on a path whose jitter
/// spreads delays over `spread_ms`, for jitter alone to lift all of them
/// over `limit` with a chance under [`JITTER_READ_AS_QUEUE`] (each packet's
/// delay taken as uniform over the spread). 1 where jitter cannot reach the
/// limit: there the lowest of the last 200 ms is read, whatever its count.
pub(crate) fn packets_for_a_reading(spread_ms: f64, limit: Duration) -> usize {
    let limit_ms = limit.as_secs_f64() * 1000.0;
    if spread_ms <= limit_ms {
        return 1;
    }
    let over_the_limit = 1.0 - limit_ms / spread_ms;
    let needed = JITTER_READ_AS_QUEUE.ln() / over_the_limit.ln();
    (needed.ceil() as usize).clamp(1, MOST_PACKETS_FOR_A_READING)
}

/// A queue this deep on the path (one-way delay above its minimum) is overuse.
pub(crate) const QUEUE_LIMIT: Duration = Duration::from_millis(40);
/// ...and on a narrow link this deep (see [`QueueJudge::set_narrow`]),
/// where the queue a back-off answered has drained only once it is this
/// shallow. There a probe's queue grows by tens of milliseconds between two
/// feedbacks: at 40 ms it was 40–80 deep by the time the cut took effect,
/// audio came that much later, and a word (a beep) that met it stalled.
/// Queue readings of a steady 100 kbit/s call are 0 ms (the lowest of 200
/// ms of feedback): in 20 directions of 35 s, one reading between 20 and 40
/// ms came without a probe's queue behind it.
const NARROW_QUEUE_LIMIT: Duration = Duration::from_millis(20);
/// A queue the last back-off answered has this long to drain by...
const DRAIN_TIME: Duration = Duration::from_secs(2);
/// ...at least this much.
const DRAIN_PROGRESS: Duration = Duration::from_millis(20);

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum State {
    /// No back-off to wait for.
    #[default]
    Steady,
    /// Backed off; no reading of packets sent since.
    BackedOff,
    /// Packets sent since the back-off still wait in the queue it answered;
    /// `since`: when it last drained by [`DRAIN_PROGRESS`].
    Draining { lowest: Duration, since: Instant },
}

/// Judges readings of the path's queue (taken on packets sent after the
/// last back-off).
#[derive(Debug, Default)]
pub(crate) struct QueueJudge {
    state: State,
    /// The link is narrow: [`NARROW_QUEUE_LIMIT`] applies.
    narrow: bool,
}

impl QueueJudge {
    /// The sender backed off (for the queue or for loss).
    pub(crate) fn backed_off(&mut self) {
        self.state = State::BackedOff;
    }

    /// Whether the link is narrow (its last overuse was under 200 kbit/s).
    pub(crate) fn set_narrow(&mut self, narrow: bool) {
        self.narrow = narrow;
    }

    /// A queue deeper than this is overuse.
    pub(crate) fn limit(&self) -> Duration {
        if self.narrow {
            NARROW_QUEUE_LIMIT
        } else {
            QUEUE_LIMIT
        }
    }

    /// Whether a queue `queue` deep, read at `now`, is overuse.
    pub(crate) fn overused(&mut self, queue: Duration, now: Instant) -> bool {
        let limit = self.limit();
        if queue <= limit {
            self.state = State::Steady;
            return false;
        }
        match self.state {
            State::Steady => true,
            State::BackedOff => {
                self.state = State::Draining {
                    lowest: queue,
                    since: now,
                };
                false
            }
            State::Draining { lowest, since } => {
                let growing = queue > lowest + QUEUE_LIMIT;
                let stuck = now.saturating_duration_since(since) > DRAIN_TIME;
                if growing || stuck {
                    return true;
                }
                let progress = queue + DRAIN_PROGRESS <= lowest;
                self.state = if progress {
                    State::Draining {
                        lowest: queue,
                        since: now,
                    }
                } else {
                    State::Draining { lowest, since }
                };
                false
            }
        }
    }

    /// Whether the queue of the last back-off has yet to drain: the sender
    /// does not probe for more meanwhile.
    pub(crate) fn draining(&self) -> bool {
        self.state != State::Steady
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_path_that_keeps_packets_in_order_has_no_jitter_spread() {
        let start = Instant::now();
        let mut spread = JitterSpread::default();
        // A narrow link's queue: a video packet every 60 ms takes 80 ms to
        // cross it, and the audio sent 20 and 40 ms after it waits behind
        // it; all in order, however the delays jump.
        for n in 0..100u64 {
            let sent = start + ms(n * 20);
            let delay = [90.0, 75.0, 55.0][(n % 3) as usize];
            spread.on_delay(sent + ms(100), sent, delay);
        }
        assert_eq!(spread.ms(start + ms(2_100)), 0.0);
    }

    #[test]
    fn a_path_that_reorders_spreads_delays_for_a_while() {
        let start = Instant::now();
        let mut spread = JitterSpread::default();
        // Two packets sent together, the second 60 ms less delayed: it
        // overtook the first.
        spread.on_delay(start + ms(100), start, 90.0);
        spread.on_delay(start + ms(100), start, 30.0);
        assert_eq!(spread.ms(start + ms(100)), 60.0);
        // Remembered for one span after the one it was seen in, while
        // packets go on in order.
        let in_order = |spread: &mut JitterSpread, seconds: std::ops::Range<u64>| {
            for n in seconds {
                let sent = start + ms(n * 1000);
                spread.on_delay(sent + ms(50), sent, 50.0);
            }
        };
        in_order(&mut spread, 1..15);
        assert_eq!(spread.ms(start + ms(15_000)), 60.0);
        in_order(&mut spread, 15..30);
        assert_eq!(spread.ms(start + ms(29_050)), 0.0, "forgotten");
    }

    #[test]
    fn a_reading_spans_more_packets_the_wider_the_jitter() {
        let limit = ms(20);
        assert_eq!(packets_for_a_reading(0.0, limit), 1, "in order");
        assert_eq!(
            packets_for_a_reading(20.0, limit),
            1,
            "never over the limit"
        );
        // (1 - 20/60)^23 < 1e-4 < (1 - 20/60)^22.
        assert_eq!(packets_for_a_reading(60.0, limit), 23);
        assert_eq!(packets_for_a_reading(60.0, QUEUE_LIMIT), 9);
        assert_eq!(packets_for_a_reading(5_000.0, limit), 32, "at most");
    }

    #[test]
    fn a_queue_over_the_limit_is_overuse_until_a_back_off() {
        let mut judge = QueueJudge::default();
        let now = Instant::now();
        assert!(!judge.overused(ms(30), now));
        assert!(judge.overused(ms(50), now));
        judge.backed_off();
        assert!(judge.draining());
        assert!(
            !judge.overused(ms(300), now),
            "the queue the back-off answered"
        );
    }

    #[test]
    fn on_a_narrow_link_a_shallower_queue_is_overuse_but_not_while_one_drains() {
        let mut judge = QueueJudge::default();
        let now = Instant::now();
        assert!(!judge.overused(ms(30), now), "40 ms on a wide link");
        judge.set_narrow(true);
        assert!(!judge.overused(ms(20), now));
        assert!(judge.overused(ms(30), now));
        // The queue a back-off answered is waited for until it is that
        // shallow: what is left of it is not a new overuse.
        judge.backed_off();
        assert!(!judge.overused(ms(80), now));
        assert!(!judge.overused(ms(35), now + ms(300)), "draining");
        assert!(!judge.overused(ms(30), now + ms(400)), "still draining");
        assert!(!judge.overused(ms(15), now + ms(600)), "drained");
        assert!(judge.overused(ms(25), now + ms(700)), "a new queue");
    }

    #[test]
    fn a_draining_queue_is_waited_for_and_a_growing_one_is_not() {
        let mut judge = QueueJudge::default();
        let start = Instant::now();
        judge.backed_off();
        for (n, queue) in [300, 250, 180, 120].into_iter().enumerate() {
            let now = start + ms(n as u64 * 300);
            assert!(!judge.overused(ms(queue), now), "draining at {queue} ms");
        }
        assert!(
            !judge.overused(ms(150), start + ms(1000)),
            "within the limit of the lowest"
        );
        assert!(
            judge.overused(ms(170), start + ms(1100)),
            "grew 50 ms from 120"
        );
    }

    #[test]
    fn a_deep_queue_that_keeps_draining_is_waited_for() {
        let mut judge = QueueJudge::default();
        let start = Instant::now();
        judge.backed_off();
        for (n, queue) in [360, 330, 300, 270, 240, 210].into_iter().enumerate() {
            let now = start + ms(n as u64 * 800);
            assert!(!judge.overused(ms(queue), now), "draining at {queue} ms");
        }
        assert!(
            judge.overused(ms(200), start + ms(6_500)),
            "stopped draining"
        );
    }

    #[test]
    fn a_queue_that_drains_ends_the_wait_and_one_that_stays_is_overuse() {
        let mut judge = QueueJudge::default();
        let start = Instant::now();
        judge.backed_off();
        assert!(!judge.overused(ms(200), start));
        assert!(!judge.overused(ms(20), start + ms(500)));
        assert!(!judge.draining());
        assert!(judge.overused(ms(60), start + ms(600)), "steady again");

        judge.backed_off();
        assert!(!judge.overused(ms(200), start));
        assert!(!judge.overused(ms(190), start + ms(1900)));
        assert!(
            judge.overused(ms(190), start + ms(2100)),
            "not drained in 2 s"
        );
    }
}
