//! Per-connection limits that need a clock, kept free of I/O: time is an argument.

use std::time::{Duration, Instant};

/// How many messages a connection may send: a burst, then a sustained rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages that may arrive back to back (a call setup with many candidates is bursty).
    pub burst: u32,
    /// Sustained messages per second once the burst is spent.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        // A call setup is an offer or answer plus a few dozen candidates at most;
        // this leaves ample room for renegotiation while stopping floods.
        RateLimit {
            burst: 200,
            per_second: 50.0,
        }
    }
}

/// A token bucket: each message takes a token, tokens come back at `per_second`.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> RateLimiter {
        RateLimiter {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
        }
    }

    /// Takes a token for a message arriving at `now`; `false` means over the limit.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.limit.per_second)
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket would be full at `now`: a limiter in that state
    /// remembers nothing and may be forgotten.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.limit.per_second >= f64::from(self.limit.burst)
    }
}

/// Capped exponential backoff for reconnecting; jitter is passed in so this stays deterministic.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, doubles per attempt, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Attempts made so far (a reconnect starts a new `Backoff`).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Delay before the next attempt. `jitter` in `[0, 1)` spreads it over
    /// 75–100 % of the nominal delay so that many clients of a restarted server
    /// do not all come back at the same instant.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.attempt.min(16);
        self.attempt = self.attempt.saturating_add(1);
        let nominal = self.initial.saturating_mul(1 << exp).min(self.max);
        nominal.mul_f64(0.75 + 0.25 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(
            RateLimit {
                burst: 10,
                per_second: 5.0,
            },
            start,
        );
        assert!((0..10).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        // 1 s later, 5 more tokens.
        let later = start + Duration::from_secs(1);
        assert!((0..5).all(|_| limiter.allow(later)));
        assert!(!limiter.allow(later));
        // A long pause refills only up to the burst.
        let much_later = later + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| limiter.allow(much_later)).count(), 10);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_nominal() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<u128> = (0..7)
            .map(|_| backoff.next_delay(1.0).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.attempts(), 7);
        let mut fresh = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(fresh.next_delay(0.0).as_millis(), 75);
        // Far past the cap, nothing overflows.
        for _ in 0..100 {
            assert!(backoff.next_delay(0.5) <= Duration::from_secs(2));
        }
    }
}
