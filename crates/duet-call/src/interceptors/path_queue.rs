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

use std::time::{Duration, Instant};

/// A packet's one-way delay in ms: its arrival on the receiver's clock
/// against its departure counted from the sender's `epoch`. The two clocks
/// share no origin, so only differences between delays mean anything (a
/// queue is a delay above the lowest).
pub(super) fn one_way_delay_ms(epoch: Instant, departure: Instant, arrival: Duration) -> f64 {
    let sent = departure.saturating_duration_since(epoch);
    (arrival.as_secs_f64() - sent.as_secs_f64()) * 1000.0
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

    /// Whether a queue `queue` deep, read at `now`, is overuse.
    pub(crate) fn overused(&mut self, queue: Duration, now: Instant) -> bool {
        let limit = if self.narrow {
            NARROW_QUEUE_LIMIT
        } else {
            QUEUE_LIMIT
        };
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
