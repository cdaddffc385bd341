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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared by the congestion controller (which sets the target), the pacer
/// (which measures what is not fresh video) and the video encoder (which
/// spends the rest). Cheap to clone: every clone is the same budget.
#[derive(Debug, Clone, Default)]
pub(crate) struct SendBudget {
    target_bps: Arc<AtomicU64>,
    overhead_bps: Arc<AtomicU64>,
    path_limited: Arc<AtomicBool>,
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

    /// What audio, RTCP and resends sent lately, in bits per second.
    pub(crate) fn set_overhead(&self, bps: u64) {
        self.overhead_bps.store(bps, Ordering::Relaxed);
    }

    /// What fresh video may spend: the target less the overhead, or 0 while
    /// congestion control has no target yet. It never falls below half the
    /// target: resends are held to a share of it, and audio is small, so an
    /// overhead that large is a burst the next measurement will not repeat.
    pub(crate) fn video_bps(&self) -> u64 {
        let target = self.target_bps.load(Ordering::Relaxed);
        let overhead = self.overhead_bps.load(Ordering::Relaxed);
        target.saturating_sub(overhead).max(target / 2)
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
}
