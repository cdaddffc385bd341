//! When things happened in the session's calls, for the report's
//! `time_to_connected_ms`, `time_to_first_remote_frame_ms`, `connected_ms` and
//! `calls_connected` (`docs/cli.md`). Time is an input, so the bookkeeping is
//! tested on a virtual clock.

use std::time::{Duration, Instant};

/// The session's call timeline: the first call's set-up times, and how long
/// all calls together were connected.
#[derive(Debug, Default)]
pub(crate) struct CallTiming {
    /// When the current peer came into the room.
    peer_seen: Option<Instant>,
    /// When the current call connected, while it is connected.
    connected_at: Option<Instant>,
    /// Connected time of the calls that have ended.
    connected_total: Duration,
    calls_connected: u64,
    first_time_to_connected: Option<Duration>,
    first_time_to_frame: Option<Duration>,
    frame_seen_this_call: bool,
    /// The current call's path died and is being restored: its next
    /// connection is the same call, not a new one.
    restoring: bool,
}

impl CallTiming {
    /// The other peer is in the room: set-up times count from here.
    pub(crate) fn peer_present(&mut self, now: Instant) {
        self.peer_seen = Some(now);
    }

    /// A fresh peer connection: its first remote picture is news again.
    pub(crate) fn new_connection(&mut self) {
        self.frame_seen_this_call = false;
        self.restoring = false;
    }

    /// The current call's path died; the call is being restored (ICE
    /// restart). The time until it is back is not connected time.
    pub(crate) fn reconnecting(&mut self, now: Instant) {
        self.connection_closed(now);
        self.restoring = true;
    }

    /// The current call connected (or came back).
    pub(crate) fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        if std::mem::take(&mut self.restoring) {
            return;
        }
        self.calls_connected += 1;
        if self.first_time_to_connected.is_none() {
            self.first_time_to_connected = self.since_peer_seen(now);
        }
    }

    /// The current peer connection was closed.
    pub(crate) fn connection_closed(&mut self, now: Instant) {
        if let Some(since) = self.connected_at.take() {
            self.connected_total += now.saturating_duration_since(since);
        }
    }

    /// A remote picture is ready for display; `true` when it is the first of
    /// a connected call, which the front end is told about.
    pub(crate) fn remote_frame(&mut self, now: Instant, connected: bool) -> bool {
        if self.frame_seen_this_call || !connected {
            return false;
        }
        self.frame_seen_this_call = true;
        if self.first_time_to_frame.is_none() {
            self.first_time_to_frame = self.since_peer_seen(now);
        }
        true
    }

    /// From the peer's arrival to the first call's connection.
    pub(crate) fn time_to_connected(&self) -> Option<Duration> {
        self.first_time_to_connected
    }

    /// From the peer's arrival to the first call's first remote picture.
    pub(crate) fn time_to_first_remote_frame(&self) -> Option<Duration> {
        self.first_time_to_frame
    }

    /// Calls that connected in this session.
    pub(crate) fn calls_connected(&self) -> u64 {
        self.calls_connected
    }

    /// How long all calls were connected, the current one up to `now`.
    pub(crate) fn connected_for(&self, now: Instant) -> Duration {
        let current = self
            .connected_at
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.connected_total + current
    }

    fn since_peer_seen(&self, now: Instant) -> Option<Duration> {
        self.peer_seen.map(|at| now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn set_up_times_count_from_the_peer_arriving_and_only_the_first_call_counts() {
        let t0 = Instant::now();
        let mut timing = CallTiming::default();
        timing.peer_present(t0 + ms(100));
        timing.new_connection();
        timing.connected(t0 + ms(400));
        assert!(timing.remote_frame(t0 + ms(550), true));
        assert_eq!(timing.time_to_connected(), Some(ms(300)));
        assert_eq!(timing.time_to_first_remote_frame(), Some(ms(450)));

        // The peer leaves; a second call takes longer but the figures stay the first's.
        timing.connection_closed(t0 + ms(1_400));
        timing.peer_present(t0 + ms(2_000));
        timing.new_connection();
        timing.connected(t0 + ms(3_000));
        assert!(timing.remote_frame(t0 + ms(3_500), true));
        assert_eq!(timing.time_to_connected(), Some(ms(300)));
        assert_eq!(timing.time_to_first_remote_frame(), Some(ms(450)));
        assert_eq!(timing.calls_connected(), 2);
    }

    #[test]
    fn only_the_first_picture_of_a_connected_call_is_news() {
        let t0 = Instant::now();
        let mut timing = CallTiming::default();
        timing.peer_present(t0);
        timing.new_connection();
        // A picture decoded before the call counts as connected is not the call's first.
        assert!(!timing.remote_frame(t0 + ms(10), false));
        assert_eq!(timing.time_to_first_remote_frame(), None);
        timing.connected(t0 + ms(20));
        assert!(timing.remote_frame(t0 + ms(30), true));
        assert!(!timing.remote_frame(t0 + ms(40), true));
        // A fresh connection (a retry, a new peer) has a first picture of its own.
        timing.new_connection();
        assert!(timing.remote_frame(t0 + ms(50), true));
        assert_eq!(timing.time_to_first_remote_frame(), Some(ms(30)));
    }

    #[test]
    fn connected_time_adds_up_closed_calls_and_the_current_one() {
        let t0 = Instant::now();
        let mut timing = CallTiming::default();
        assert_eq!(timing.connected_for(t0), Duration::ZERO);
        timing.connected(t0);
        timing.connection_closed(t0 + ms(1_000));
        // Closing again (no call connected) changes nothing.
        timing.connection_closed(t0 + ms(5_000));
        assert_eq!(timing.connected_for(t0 + ms(9_000)), ms(1_000));
        timing.connected(t0 + ms(10_000));
        assert_eq!(timing.connected_for(t0 + ms(10_250)), ms(1_250));
    }

    #[test]
    fn a_call_brought_back_after_its_path_died_is_one_call_not_counting_the_gap() {
        let t0 = Instant::now();
        let mut timing = CallTiming::default();
        timing.peer_present(t0);
        timing.new_connection();
        timing.connected(t0 + ms(100));
        timing.reconnecting(t0 + ms(5_100));
        assert_eq!(timing.connected_for(t0 + ms(30_000)), ms(5_000));
        timing.connected(t0 + ms(35_100));
        assert_eq!(timing.calls_connected(), 1);
        assert_eq!(timing.connected_for(t0 + ms(40_100)), ms(10_000));
        assert_eq!(timing.time_to_connected(), Some(ms(100)));
    }

    #[test]
    fn a_call_that_connects_with_no_peer_seen_has_no_set_up_time() {
        // A session resumed after a signaling reconnect may connect without a
        // `PeerPresent`: no figure rather than a made-up one.
        let t0 = Instant::now();
        let mut timing = CallTiming::default();
        timing.connected(t0);
        assert_eq!(timing.time_to_connected(), None);
        assert_eq!(timing.calls_connected(), 1);
    }
}
