//! Which packets the feedback reported on lately: a report on one already
//! reported is on a resend of it.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The RTP packets (by SSRC and sequence number) reported on in the last
/// [`RECENT_PACKETS`].
#[derive(Debug, Default)]
pub(crate) struct RecentPackets {
    seen: HashSet<(u32, u16)>,
    order: VecDeque<(Instant, (u32, u16))>,
}

/// Longer than any resend waits (the NACK generator gives up well before).
const RECENT_PACKETS: Duration = Duration::from_secs(2);

impl RecentPackets {
    /// Whether this is the first report on this packet lately.
    pub(crate) fn first_time(&mut self, now: Instant, ssrc: u32, sequence_number: u16) -> bool {
        while let Some((at, key)) = self.order.front() {
            if now.saturating_duration_since(*at) <= RECENT_PACKETS {
                break;
            }
            self.seen.remove(key);
            self.order.pop_front();
        }
        let key = (ssrc, sequence_number);
        let first = self.seen.insert(key);
        if first {
            self.order.push_back((now, key));
        }
        first
    }
}
