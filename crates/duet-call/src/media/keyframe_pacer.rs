//! How often a keyframe may be sent, whoever asks for one.
//!
//! A keyframe is several times the size of the frames around it. After a
//! burst of loss the receiver asks for one (PLI) on every frame it cannot
//! decode; answering each request would send a burst of keyframes into the
//! very link that just lost packets, which loses more and asks for more.
//! Requests are therefore remembered, never dropped, and answered at most
//! once per [`MIN_INTERVAL`]: a request that comes sooner is answered when
//! the interval is over, by one keyframe for all of them. On a narrow link
//! the interval is longer: keyframes may take at most half the target
//! bitrate ([`KEYFRAME_SHARE`]), so a 30 kB keyframe at 400 kbit/s holds the
//! next for 1.2 s.
//!
//! Unasked, a keyframe goes every [`REFRESH_INTERVAL`] as a safety net (a
//! decoder that went wrong without a loss to tell it), but only while the
//! target is at least [`REFRESH_FROM_BPS`]: on a 100 kbit/s link a 1 kB
//! keyframe is 80 ms of the link's queue, in front of audio, and each of
//! them every 10 s broke up the beep that met it. Libwebrtc sends none.

use std::time::{Duration, Instant};

/// The shortest time between two keyframes sent on request: ten frames at
/// 30 fps, about what a receiver needs to see the first one arrive (or not)
/// before it asks again.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(300);

/// The most of the target bitrate keyframes sent on request may take.
const KEYFRAME_SHARE: f64 = 0.5;
/// How long after the last keyframe an unasked one refreshes the picture...
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// ...when the video target is at least this.
const REFRESH_FROM_BPS: u32 = 300_000;

/// Decides, frame by frame, whether the encoder should make a keyframe.
#[derive(Debug, Default)]
pub(crate) struct KeyframePacer {
    /// A keyframe was asked for and not sent yet.
    pending: bool,
    /// When the last keyframe was asked of the encoder.
    last: Option<Instant>,
    /// How long after it the next may come.
    hold: Duration,
    /// When the last keyframe (asked for or not) went out.
    last_sent: Option<Instant>,
}

impl KeyframePacer {
    /// Called before encoding a frame at `now`, with whether a keyframe was
    /// asked for since the last call and the encoder's target. True when
    /// this frame should be one.
    pub(crate) fn keyframe_now(&mut self, asked: bool, target_bps: u32, now: Instant) -> bool {
        let refresh = target_bps >= REFRESH_FROM_BPS
            && self
                .last_sent
                .is_some_and(|last| now.saturating_duration_since(last) >= REFRESH_INTERVAL);
        self.pending |= asked || refresh;
        if !self.pending {
            return false;
        }
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.hold.max(MIN_INTERVAL))
        {
            return false;
        }
        self.pending = false;
        self.last = Some(now);
        true
    }

    /// A keyframe of `bytes` went out at `now` while the target was `target_bps`.
    pub(crate) fn keyframe_sent(&mut self, bytes: usize, target_bps: u32, now: Instant) {
        self.last_sent = Some(now);
        let bits = bytes as f64 * 8.0;
        let share = f64::from(target_bps.max(1)) * KEYFRAME_SHARE;
        self.hold = Duration::from_secs_f64((bits / share).min(5.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target at which pictures are refreshed unasked.
    const WIDE: u32 = 1_000_000;

    #[test]
    fn pictures_are_refreshed_unasked_every_ten_seconds_but_not_on_a_narrow_link() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut pacer = KeyframePacer::default();
        // The encoder's first picture is a keyframe of its own accord.
        pacer.keyframe_sent(30_000, WIDE, start);
        assert!(!pacer.keyframe_now(false, WIDE, at(9)));
        assert!(pacer.keyframe_now(false, WIDE, at(10)));
        pacer.keyframe_sent(30_000, WIDE, at(10));
        assert!(!pacer.keyframe_now(false, WIDE, at(15)));
        assert!(!pacer.keyframe_now(false, 100_000, at(25)), "narrow");
        assert!(pacer.keyframe_now(true, 100_000, at(26)), "asked");
    }

    #[test]
    fn on_a_narrow_link_big_keyframes_hold_the_next_longer() {
        let start = Instant::now();
        let mut pacer = KeyframePacer::default();
        assert!(pacer.keyframe_now(true, WIDE, start));
        // 30 kB at 400 kbit/s: half of the link for 1.2 s.
        pacer.keyframe_sent(30_000, 400_000, start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(!pacer.keyframe_now(true, WIDE, at(1_000)));
        assert!(!pacer.keyframe_now(false, WIDE, at(1_150)));
        assert!(
            pacer.keyframe_now(false, WIDE, at(1_200)),
            "the request waited, then went"
        );
        // A small keyframe on a wide link: the 300 ms floor holds.
        pacer.keyframe_sent(5_000, 2_000_000, at(1_200));
        assert!(!pacer.keyframe_now(true, WIDE, at(1_400)));
        assert!(pacer.keyframe_now(false, WIDE, at(1_500)));
    }

    #[test]
    fn the_first_request_is_answered_at_once() {
        let mut pacer = KeyframePacer::default();
        let now = Instant::now();
        assert!(!pacer.keyframe_now(false, WIDE, now));
        assert!(pacer.keyframe_now(true, WIDE, now));
        assert!(!pacer.keyframe_now(false, WIDE, now + Duration::from_millis(33)));
    }

    #[test]
    fn a_storm_of_requests_gets_one_keyframe_per_interval_and_the_last_is_not_forgotten() {
        let mut pacer = KeyframePacer::default();
        let start = Instant::now();
        // A request on every frame for one second, at 30 fps.
        let keyframes: Vec<u64> = (0..30u64)
            .filter(|n| pacer.keyframe_now(true, WIDE, start + Duration::from_millis(n * 33)))
            .collect();
        assert_eq!(keyframes, [0, 10, 20], "{keyframes:?}");
        // One more request just after a keyframe: answered once the interval is over.
        let last = start + Duration::from_millis(20 * 33);
        assert!(!pacer.keyframe_now(false, WIDE, last + Duration::from_millis(300 - 1)));
        let after = start + Duration::from_millis(30 * 33);
        assert!(
            pacer.keyframe_now(false, WIDE, after),
            "the pending request is kept"
        );
        assert!(!pacer.keyframe_now(false, WIDE, after + MIN_INTERVAL));
    }
}
