//! What one direction of a link does to each packet, decided without any
//! socket: drop it, or hold it until a release time. The delay line feeds it
//! the packets the kernel queues and releases them when it says so.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::Rng;

/// One direction of a link: what it does to every packet sent over it.
///
/// Each packet is delayed independently by `delay ± jitter` (uniform), so a
/// jitter larger than the gap between packets reorders them, as on a Wi-Fi
/// or mobile link; `loss` is the chance of each packet to be lost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkProfile {
    pub delay: Duration,
    pub jitter: Duration,
    /// Between 0 and 1.
    pub loss: f64,
}

impl LinkProfile {
    /// `delay_ms ± jitter_ms` with `loss_percent` % of packets lost.
    pub fn new(delay_ms: u64, jitter_ms: u64, loss_percent: f64) -> LinkProfile {
        LinkProfile {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            loss: (loss_percent / 100.0).clamp(0.0, 1.0),
        }
    }

    /// When a packet sent at `now` arrives, or `None` when it is lost.
    pub fn arrival(&self, now: Instant, rng: &mut impl Rng) -> Option<Instant> {
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return None;
        }
        let jitter = self.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rng.random_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay = (self.delay.as_secs_f64() + offset).max(0.0);
        Some(now + Duration::from_secs_f64(delay))
    }
}

/// Packets held until their arrival time, earliest first; packets due at the
/// same moment leave in the order they came.
#[derive(Debug)]
pub struct ReleaseQueue<P> {
    heap: BinaryHeap<Reverse<Held<P>>>,
    next_order: u64,
}

impl<P> Default for ReleaseQueue<P> {
    fn default() -> Self {
        ReleaseQueue {
            heap: BinaryHeap::new(),
            next_order: 0,
        }
    }
}

impl<P> ReleaseQueue<P> {
    pub fn hold(&mut self, due: Instant, packet: P) {
        let order = self.next_order;
        self.next_order += 1;
        self.heap.push(Reverse(Held { due, order, packet }));
    }

    /// The next packet due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<P> {
        if self.heap.peek()?.0.due > now {
            return None;
        }
        self.heap.pop().map(|held| held.0.packet)
    }

    /// When the earliest held packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|held| held.0.due)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[derive(Debug)]
struct Held<P> {
    due: Instant,
    order: u64,
    packet: P,
}

impl<P> PartialEq for Held<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl<P> Eq for Held<P> {}
impl<P> PartialOrd for Held<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Held<P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn loss_and_delay_are_what_was_asked() {
        let profile = LinkProfile::new(40, 10, 5.0);
        let mut rng = StdRng::seed_from_u64(7);
        let start = Instant::now();
        let arrivals: Vec<_> = (0..20_000)
            .map(|_| profile.arrival(start, &mut rng))
            .collect();
        let lost = arrivals.iter().filter(|a| a.is_none()).count();
        let loss = lost as f64 / arrivals.len() as f64;
        assert!((0.045..0.055).contains(&loss), "loss {loss}");
        let delays: Vec<f64> = arrivals
            .iter()
            .flatten()
            .map(|a| (*a - start).as_secs_f64() * 1000.0)
            .collect();
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((30.0..31.0).contains(&min), "min {min}");
        assert!((49.0..=50.0).contains(&max), "max {max}");
        assert!((39.5..40.5).contains(&mean), "mean {mean}");
    }

    #[test]
    fn jitter_wider_than_the_packet_gap_reorders_and_a_clean_link_does_not() {
        let mut rng = StdRng::seed_from_u64(1);
        for (jitter_ms, reorders) in [(30, true), (0, false)] {
            let profile = LinkProfile::new(60, jitter_ms, 0.0);
            let start = Instant::now();
            let mut queue = ReleaseQueue::default();
            for n in 0..200u32 {
                let sent = start + Duration::from_millis(u64::from(n) * 5);
                let due = profile.arrival(sent, &mut rng).expect("no loss asked");
                queue.hold(due, n);
            }
            let mut order = Vec::new();
            while let Some(n) = queue.pop_due(start + Duration::from_secs(10)) {
                order.push(n);
            }
            assert_eq!(order.len(), 200);
            let out_of_order = order.windows(2).filter(|w| w[1] < w[0]).count();
            assert_eq!(
                out_of_order > 0,
                reorders,
                "jitter {jitter_ms} ms: {order:?}"
            );
        }
    }

    #[test]
    fn nothing_leaves_before_it_is_due() {
        let start = Instant::now();
        let mut queue = ReleaseQueue::default();
        queue.hold(start + Duration::from_millis(20), "late");
        queue.hold(start + Duration::from_millis(10), "early");
        queue.hold(start + Duration::from_millis(10), "early too");
        assert_eq!(queue.next_due(), Some(start + Duration::from_millis(10)));
        assert_eq!(queue.pop_due(start + Duration::from_millis(9)), None);
        let now = start + Duration::from_millis(10);
        assert_eq!(queue.pop_due(now), Some("early"));
        assert_eq!(queue.pop_due(now), Some("early too"));
        assert_eq!(queue.pop_due(now), None);
        assert_eq!(queue.len(), 1);
    }
}
