//! The warnings a failing audio stream logs, kept readable.
//!
//! When a sound server's stream underruns, cpal's ALSA worker can report the
//! same failure over and over while it recovers: 150 "snd_pcm_avail_delay
//! failed" lines in one millisecond were seen after one underrun, burying
//! the underrun itself. Each distinct error is logged as it comes; the same
//! one again within a second is counted, and the count logged with the next
//! error let through.

use std::time::{Duration, Instant};

/// How long the same error is counted rather than logged again.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// Decides which of a stream's errors are logged.
#[derive(Debug, Default)]
pub(super) struct StreamErrorLog {
    /// The last error logged, and when.
    last: Option<(String, Instant)>,
    /// Errors not logged since.
    held_back: u64,
}

impl StreamErrorLog {
    /// Whether `error`, seen at `now`, is logged: `Some(n)` with the number
    /// of errors held back before it, `None` when it is held back itself.
    pub(super) fn admit(&mut self, error: &str, now: Instant) -> Option<u64> {
        if let Some((last, at)) = &self.last
            && last == error
            && now.duration_since(*at) < QUIET_FOR
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some((error.to_owned(), now));
        Some(std::mem::take(&mut self.held_back))
    }

    /// Logs `error` of the `device` (speaker, microphone) unless held back.
    pub(super) fn warn(&mut self, device: &str, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        if let Some(held_back) = self.admit(&error, Instant::now()) {
            if held_back == 0 {
                tracing::warn!(err = %error, "{device} stream error");
            } else {
                tracing::warn!(err = %error, repeats_held_back = held_back, "{device} stream error");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_error_within_a_second_is_counted_and_a_new_one_logged() {
        let mut log = StreamErrorLog::default();
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        assert_eq!(log.admit("underrun", ms(0)), Some(0));
        assert_eq!(log.admit("I/O error", ms(1)), Some(0));
        for n in 0..150 {
            assert_eq!(log.admit("I/O error", ms(1 + n / 10)), None);
        }
        assert_eq!(log.admit("underrun", ms(30)), Some(150));
        assert_eq!(log.admit("underrun", ms(500)), None);
        assert_eq!(log.admit("underrun", ms(1_100)), Some(1));
    }
}
