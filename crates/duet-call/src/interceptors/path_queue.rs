//! When a queue on the path is overuse, reading by reading, without a clock
//! of its own.
//!
//! A queue deeper than [`QUEUE_LIMIT`] is overuse, except while the queue
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

/// A queue this deep on the path (one-way delay above its minimum) is overuse.
pub(crate) const QUEUE_LIMIT: Duration = Duration::from_millis(40);
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
}

impl QueueJudge {
    /// The sender backed off (for the queue or for loss).
    pub(crate) fn backed_off(&mut self) {
        self.state = State::BackedOff;
    }

    /// Whether a queue `queue` deep, read at `now`, is overuse.
    pub(crate) fn overused(&mut self, queue: Duration, now: Instant) -> bool {
        if queue <= QUEUE_LIMIT {
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
