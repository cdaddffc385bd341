//! The playout's margin: depth that late packets asked for, and when it
//! goes back.

use super::{MAX_TARGET, TICKS_PER_PACKET};

/// Ticks without an underrun after which one packet of underrun margin is
/// given back (5 s), at first.
const CALM_TICKS: u32 = 250;
/// The longest calm asked for before giving margin back (60 s): reached when
/// giving it back keeps proving premature.
const MAX_CALM_TICKS: u32 = 3_000;
/// Samples played over which [`ArrivalLead`] watches how early packets come (3 s).
const LEAD_WINDOW: u64 = 3 * 48_000;
/// Ticks of lead left spare when unused margin is given back: jitter within
/// a window is not jitter for ever.
const LEAD_KEPT: u64 = 2;

/// Depth earned by underruns: a packet more for each, given back one at a
/// time after a calm period. A path whose packets come late now and then
/// (every few seconds) would otherwise glitch each time the margin was given
/// back; so when an underrun follows soon after a give-back, the calm asked
/// for next time doubles (up to a minute), and it halves again after a give-
/// back that held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnderrunMargin {
    pub(super) packets: usize,
    /// Packets played since the last underrun or give-back.
    calm_ticks: u32,
    /// How long a calm gives a packet back.
    calm_needed: u32,
    /// A packet was given back and the calm since has not yet lasted
    /// `calm_needed`: an underrun now says it was given back too soon.
    probing: bool,
}

impl Default for UnderrunMargin {
    fn default() -> Self {
        UnderrunMargin {
            packets: 0,
            calm_ticks: 0,
            calm_needed: CALM_TICKS,
            probing: false,
        }
    }
}

impl UnderrunMargin {
    /// A packet was played on time. True when the margin changed.
    pub(super) fn on_played(&mut self) -> bool {
        self.calm_ticks = self.calm_ticks.saturating_add(1);
        if self.calm_ticks < self.calm_needed {
            return false;
        }
        self.calm_ticks = 0;
        if self.probing {
            // The last give-back held: be a little quicker next time.
            self.calm_needed = (self.calm_needed / 2).max(CALM_TICKS);
        }
        self.probing = self.packets > 0;
        if self.packets > 0 {
            self.packets -= 1;
            return true;
        }
        false
    }

    /// The packet due was not there.
    pub(super) fn on_underrun(&mut self) {
        if self.probing {
            self.calm_needed = (self.calm_needed * 2).min(MAX_CALM_TICKS);
            self.probing = false;
        }
        self.packets = (self.packets + 1).min(MAX_TARGET);
        self.calm_ticks = 0;
    }

    /// Gives back up to `packets` of margin that went unused
    /// ([`ArrivalLead`]). Not on a path whose lateness recurs: once a
    /// give-back proved premature (the calm asked for grew), only calm
    /// gives margin back. True when the margin changed.
    pub(super) fn give_back(&mut self, packets: usize) -> bool {
        let given = packets.min(self.packets);
        if given == 0 || self.calm_needed > CALM_TICKS {
            return false;
        }
        self.packets -= given;
        // An underrun within the next calm says this was too soon.
        self.calm_ticks = 0;
        self.probing = true;
        true
    }

    /// The stream paused: the underrun that noticed it said nothing about
    /// jitter, so its packet is handed back.
    pub(super) fn on_pause(&mut self) {
        self.packets = self.packets.saturating_sub(1);
        self.probing = false;
    }
}

/// The least time, in samples, between a packet's arrival and when it was
/// due, over a window of audio played. Underruns earn margin a packet at a
/// time, and calm gives it back a packet per 5 s at most: right for a path
/// whose packets come late now and then, but the queue of a call squeezing
/// into a narrow link builds once, in half a second, and the margin its
/// underruns earned was kept long after. Packets that all come well before
/// they are due, for a whole window, show margin that is not used. On the
/// 100 kbit/s rig, giving it back took the median audio delay from 187 to
/// 159 ms, with as many beeps heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ArrivalLead {
    /// The least lead seen in this window; `Some(0)` after an underrun.
    least: Option<u64>,
    /// Samples played in this window.
    played: u64,
}

impl ArrivalLead {
    /// A packet arrived `lead` samples before it is due.
    pub(super) fn on_arrival(&mut self, lead: u64) {
        self.least = Some(self.least.map_or(lead, |least| least.min(lead)));
    }

    /// A packet was late: nothing in this window is spare.
    pub(super) fn on_underrun(&mut self) {
        self.least = Some(0);
    }

    /// `samples` were played (or concealed). At the end of a window,
    /// returns how many ticks of margin went unused throughout it, beyond
    /// [`LEAD_KEPT`] spare ticks.
    pub(super) fn on_played(&mut self, samples: u64) -> usize {
        self.played += samples;
        if self.played < LEAD_WINDOW {
            return 0;
        }
        let least = self.least.take().unwrap_or(0);
        self.played = 0;
        (least / u64::from(TICKS_PER_PACKET))
            .saturating_sub(LEAD_KEPT)
            .try_into()
            .unwrap_or(0)
    }

    /// The stream paused: what came before says nothing of what follows.
    pub(super) fn reset(&mut self) {
        *self = ArrivalLead::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_of_early_packets_shows_the_lead_beyond_what_is_kept() {
        let tick = u64::from(TICKS_PER_PACKET);
        let mut lead = ArrivalLead::default();
        for early in [7, 5, 9, 6] {
            lead.on_arrival(early * tick);
            assert_eq!(lead.on_played(tick), 0, "mid-window");
        }
        // The least lead was 5 ticks, of which LEAD_KEPT stay.
        assert_eq!(lead.on_played(LEAD_WINDOW), 5 - LEAD_KEPT as usize);
        // A window with an underrun in it has nothing spare.
        lead.on_arrival(8 * tick);
        lead.on_underrun();
        lead.on_arrival(8 * tick);
        assert_eq!(lead.on_played(LEAD_WINDOW), 0);
        // Nor does one in which nothing arrived.
        assert_eq!(lead.on_played(LEAD_WINDOW), 0);
    }

    #[test]
    fn margin_given_back_too_soon_waits_longer_next_time() {
        let mut margin = UnderrunMargin::default();
        margin.on_underrun();
        assert_eq!(margin.packets, 1);
        // A packet late by one packet's worth every 8 s: an underrun
        // whenever no margin is left to absorb it. Each give-back is
        // followed by an underrun within the next calm, until the calm asked
        // for outlasts the 8 s.
        let (mut underruns, mut tick) = (Vec::new(), 0u32);
        for _ in 0..(5 * 60 * 50) {
            tick += 1;
            if tick % 400 == 0 && margin.packets == 0 {
                margin.on_underrun();
                underruns.push(tick);
            } else {
                margin.on_played();
            }
        }
        assert_eq!(margin.calm_needed, MAX_CALM_TICKS, "{margin:?}");
        // Glitches further and further apart, the last a minute apart: 7 in
        // five minutes instead of one every 8 s (37).
        assert!(underruns.len() <= 8, "{underruns:?}");
        let gaps: Vec<u32> = underruns.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(
            gaps.last().is_some_and(|&g| g >= MAX_CALM_TICKS),
            "{gaps:?}"
        );

        // A calm that lasts: the margin is given back, and having held, the
        // next give-back will come sooner.
        for _ in 0..(10 * 60 * 50) {
            margin.on_played();
        }
        assert_eq!(margin.packets, 0, "{margin:?}");
        assert_eq!(margin.calm_needed, MAX_CALM_TICKS / 2, "{margin:?}");
    }

    #[test]
    fn the_calm_asked_for_never_exceeds_a_minute() {
        let mut margin = UnderrunMargin::default();
        for _ in 0..20 {
            margin.on_underrun();
            while !margin.on_played() {}
        }
        margin.on_underrun();
        assert_eq!(margin.calm_needed, MAX_CALM_TICKS);
        assert!(margin.packets <= MAX_TARGET);
    }
}
