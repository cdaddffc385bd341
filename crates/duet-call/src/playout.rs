//! Adaptive audio playout, without sockets or clocks of its own: Opus packets
//! go in as they arrive, and the output device, each time it has played what
//! it was given, takes out what to play next.
//!
//! Packets are played by the range of samples they cover, from their RTP
//! timestamp to the end of their audio, not looked up by exact timestamp:
//! the packet that starts within half a packet of where the previous one
//! ended is the next one, so a sender whose timestamps step unevenly (a
//! microphone's capture clock, other implementations) still plays whole, and
//! only a real gap is concealed. The buffer
//! starts one packet deep, grows when packets come late (an underrun) or the
//! measured jitter says it must, and gives the margin underruns earned back
//! after a calm, or sooner when every packet of a few seconds came well
//! before it was due (`margin`). Its depth is held at target by playing a
//! touch faster or slower ([`AudioPlayoutBuffer::playout_ratio`], see
//! `crate::drift`): that absorbs the drift between the sender's and the
//! device's clocks. Depth well above the target (after a burst, or when the
//! target came down) is given back in the next pause: a quiet packet goes
//! unplayed. Only a buffer far above its target is cut at once. A late
//! packet stalls playout for a tick of concealment and is then played; a
//! lost one (something newer is already here) is concealed, or recovered
//! from the next packet's in-band FEC.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;

use duet_media::stretch::MAX_STRETCH;

use crate::drift::DriftControl;
use crate::reassembly::JitterEstimator;

mod margin;

use margin::{ArrivalLead, UnderrunMargin};

/// RTP ticks in one 20 ms Opus packet at 48 kHz.
pub const TICKS_PER_PACKET: u32 = 960;
/// How far from where the previous packet ended the next may start and still
/// follow on without a gap: half a packet.
const SLACK: u64 = TICKS_PER_PACKET as u64 / 2;
/// Deepest the buffer is allowed to grow, in packets (200 ms).
const MAX_TARGET: usize = 10;
/// Packets above target beyond which the excess is dropped at once. Counted
/// in packets of the length sent, not in ticks: on a narrow link the sender
/// packs 60 ms into a packet, and two of them arriving together behind a
/// tenth of a second of video were three ticks above target, so the cut
/// dropped 60 ms from the middle of a word (or a beep).
const FAR_ABOVE: usize = 3;
/// Loudest sample (-40 dBFS) of a packet's audio that may go unplayed to bring
/// a deep buffer back down ([`AudioPlayoutBuffer::skips_quiet`]): a pause, a
/// quiet room's noise, never a word or a beep.
const QUIET_PEAK: f32 = 0.01;
/// Packets further than this ahead of the one playing (10 s) are dropped:
/// a wild timestamp, not audio that will be reached while the stream goes on.
const MAX_AHEAD: u64 = 480_000;
/// Packets in a row that come too late to play before the sender's timeline
/// is taken to have moved back (a restart), and playout starts over on it.
const LATE_RESTART: u32 = 10;

/// Whether `audio` is a pause: no sample above [`QUIET_PEAK`].
pub(crate) fn is_quiet(audio: &[f32]) -> bool {
    audio.iter().all(|sample| sample.abs() <= QUIET_PEAK)
}

/// The 20 ms ticks a packet of `samples` plays for (at least one).
fn ticks_of(samples: u64) -> usize {
    usize::try_from(samples.div_ceil(u64::from(TICKS_PER_PACKET)))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// What to play for one 20 ms tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Nothing has arrived yet (or the stream paused): play silence.
    Idle,
    /// Decode this packet.
    Packet(Bytes),
    /// The packet due is late, not lost: fill this tick, and play the packet
    /// when it comes. Not the decoder's concealment of a lost packet: the
    /// packet is still decoded after it (see `duet_media::OpusPlayback`).
    Late,
    /// The packet is missing; `next` is the following one if it is here (its FEC
    /// can rebuild the missing audio), otherwise conceal.
    Missing {
        /// The next packet, for in-band FEC.
        next: Option<Bytes>,
    },
}

/// One packet waiting to be played.
#[derive(Debug)]
struct Queued {
    payload: Bytes,
    /// Samples (RTP ticks) of audio it carries.
    samples: u64,
    /// Order of arrival.
    arrival: u64,
}

/// The adaptive buffer between the network and the speaker.
#[derive(Debug)]
pub struct AudioPlayoutBuffer {
    /// Waiting packets by extended RTP timestamp.
    packets: BTreeMap<u64, Queued>,
    /// Extended RTP timestamp where the audio played so far ends.
    next: Option<u64>,
    highest: Option<u64>,
    target: usize,
    /// Extra depth earned by underruns, given back after calm periods.
    margin: UnderrunMargin,
    /// How early packets came lately: margin they left unused is given back.
    lead: ArrivalLead,
    misses_in_a_row: u32,
    /// Packets that came too late to play, in a row.
    late_in_a_row: u32,
    /// Packets pushed so far (orders arrivals).
    arrivals: u64,
    /// How fast to play, so that the depth holds at target while the
    /// sender's clock and the device's disagree.
    drift: DriftControl,
    jitter: JitterEstimator,
    /// Packets played late or concealed, for statistics.
    concealed: u64,
    /// Ticks of quiet audio left unplayed to bring the delay down.
    skipped_quiet: u64,
}

impl Default for AudioPlayoutBuffer {
    fn default() -> Self {
        AudioPlayoutBuffer {
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            target: 1,
            margin: UnderrunMargin::default(),
            lead: ArrivalLead::default(),
            misses_in_a_row: 0,
            late_in_a_row: 0,
            arrivals: 0,
            drift: DriftControl::new(MAX_STRETCH),
            jitter: JitterEstimator::with_clock_rate(48_000),
            concealed: 0,
            skipped_quiet: 0,
        }
    }
}

impl AudioPlayoutBuffer {
    /// An empty buffer, one packet deep.
    pub fn new() -> AudioPlayoutBuffer {
        AudioPlayoutBuffer::default()
    }

    /// Target depth in packets.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Packets buffered now.
    pub fn depth(&self) -> usize {
        self.packets.len()
    }

    /// Output samples per received sample to play at now (see [`DriftControl`]).
    pub fn playout_ratio(&self) -> f64 {
        self.drift.ratio()
    }

    /// Packets that had to be concealed.
    pub fn concealed(&self) -> u64 {
        self.concealed
    }

    /// Ticks of quiet audio left unplayed so far ([`Self::skips_quiet`]).
    pub fn skipped_quiet(&self) -> u64 {
        self.skipped_quiet
    }

    /// Whether `audio`, just decoded from the packet [`Self::pop`] gave, goes
    /// unplayed: it is quiet, and the buffer holds more than a packet beyond
    /// its target behind it. The delay a burst or a target that came down
    /// left behind is then given back in the next pause, which nobody hears,
    /// instead of waiting to be far enough above target for a cut, which
    /// drops whatever is playing: a steady stream of 60 ms packets held three
    /// too deep lost a beep to the cut the moment its target fell by a tick.
    /// The decoder has decoded the packet, so its state runs on unbroken.
    pub fn skips_quiet(&mut self, audio: &[f32]) -> bool {
        let ticks = ticks_of(audio.len() as u64);
        if self.queued_ticks() < self.target + 1 + ticks || !is_quiet(audio) {
            return false;
        }
        self.skipped_quiet += ticks as u64;
        true
    }

    /// Adds a packet that arrived at `now`, carrying `samples` of audio
    /// (`duet_media::opus_packet_samples`).
    pub fn push(&mut self, rtp_timestamp: u32, payload: Bytes, samples: u32, now: Instant) {
        let ts = self.extend(rtp_timestamp);
        let samples = u64::from(samples.max(1));
        self.jitter.on_packet(rtp_timestamp, now);
        if self.next.is_some_and(|next| ts + samples <= next) {
            // Too late: its audio was played or concealed. Unless nothing
            // comes in time any more: the sender's timeline moved back.
            self.late_in_a_row += 1;
            if self.late_in_a_row <= LATE_RESTART {
                return;
            }
            self.packets.clear();
            self.next = None;
            self.drift.reset();
        }
        self.late_in_a_row = 0;
        if let Some(next) = self.next {
            self.lead.on_arrival(ts.saturating_sub(next));
        }
        self.arrivals += 1;
        let arrival = self.arrivals;
        self.packets.insert(
            ts,
            Queued {
                payload,
                samples,
                arrival,
            },
        );
        self.update_target();
        while self.queued_ticks() > MAX_TARGET * 4 {
            // Far behind (the tick stalled): drop the oldest rather than grow without bound.
            if let Some((first, queued)) = self.packets.pop_first() {
                self.next = Some(first + queued.samples);
            }
        }
    }

    /// Audio waiting, in 20 ms ticks (the target's unit): a sender on a
    /// narrow link packs 60 ms into a packet, so packets are not ticks.
    fn queued_ticks(&self) -> usize {
        self.packets.values().map(|q| ticks_of(q.samples)).sum()
    }

    /// Ticks of the longest packet waiting (1 when none is).
    fn longest_packet_ticks(&self) -> usize {
        self.packets
            .values()
            .map(|q| ticks_of(q.samples))
            .max()
            .unwrap_or(1)
    }

    /// Jitter of J means a packet can be up to ~2J late: keep that much in hand,
    /// plus whatever recent underruns asked for.
    fn update_target(&mut self) {
        let from_jitter =
            ((self.jitter.jitter().as_secs_f64() * 2.0 / 0.020).ceil() as usize).max(1);
        self.target = (from_jitter + self.margin.packets).clamp(1, MAX_TARGET);
    }

    /// What to play for the next 20 ms.
    pub fn pop(&mut self) -> Playout {
        let Some(next) = self.next else {
            // Start once the first packets fill the target depth.
            if self.queued_ticks() >= self.target
                && let Some((&first, _)) = self.packets.first_key_value()
            {
                self.next = Some(first);
                return self.pop();
            }
            return Playout::Idle;
        };
        let step = u64::from(TICKS_PER_PACKET);
        // Far above target (a burst after a stall): cut the delay now, one glitch
        // rather than seconds of lag.
        let queued = self.queued_ticks();
        let packet_ticks = self.longest_packet_ticks();
        if queued > self.target + FAR_ABOVE * packet_ticks {
            // Keep what arrived last: the newest audio of a burst, and never
            // packets that a wild timestamp left far ahead long ago.
            let mut by_arrival: Vec<(u64, u64)> = self
                .packets
                .iter()
                .map(|(&ts, q)| (q.arrival, ts))
                .collect();
            by_arrival.sort_unstable();
            let mut left = queued;
            let mut dropped = 0;
            for (_, ts) in by_arrival {
                if left <= self.target + packet_ticks {
                    break;
                }
                if let Some(gone) = self.packets.remove(&ts) {
                    let ticks = ticks_of(gone.samples);
                    left = left.saturating_sub(ticks);
                    dropped += ticks;
                }
            }
            if let Some((&first, _)) = self.packets.first_key_value() {
                self.next = Some(first);
                self.concealed += dropped as u64;
                return self.pop();
            }
        }
        // What lies wholly before the cursor overlaps audio already played.
        while self
            .packets
            .first_key_value()
            .is_some_and(|(&ts, queued)| ts + queued.samples <= next)
        {
            self.packets.pop_first();
        }
        // Hold the depth at target by playing a touch faster or slower. The
        // depth is taken before this packet is, so it counts the packet about
        // to play: `target` ticks wait behind it, however long it is. (Aimed
        // at `target` and one tick, a stream of 60 ms packets had nothing in
        // hand: each came 5–25 ms before it was due, and a queue of 30–45 ms on
        // a narrow link stalled five packets in a row.)
        let queued: u64 = self.packets.values().map(|q| q.samples).sum();
        let first = self
            .packets
            .first_key_value()
            .map(|(&ts, q)| (ts, ticks_of(q.samples)));
        let playing = first.map_or(1, |(_, ticks)| ticks);
        let target_ms = (self.target + playing) as f64 * f64::from(TICKS_PER_PACKET) / 48.0;
        self.drift.update(queued as f64 / 48.0, target_ms);
        match first.map(|(ts, _)| ts) {
            Some(ts) if ts <= next + SLACK => {
                let Some((ts, queued)) = self.packets.pop_first() else {
                    return Playout::Idle;
                };
                self.next = Some(ts + queued.samples);
                // The stream goes on from here: what lies far ahead of it
                // is a wild timestamp that would only skew the depth.
                drop(self.packets.split_off(&(ts + MAX_AHEAD)));
                self.misses_in_a_row = 0;
                let changed = self.margin.on_played();
                // Margin that went unused, given back no faster than the
                // depth it leaves above the target can stay under the cut.
                let unused = self.lead.on_played(queued.samples);
                let room = (self.target + FAR_ABOVE * packet_ticks)
                    .saturating_sub(self.queued_ticks() + packet_ticks);
                if self.margin.give_back(unused.min(room)) || changed {
                    self.update_target();
                }
                Playout::Packet(queued.payload)
            }
            None => {
                self.misses_in_a_row += 1;
                if self.misses_in_a_row > 10 {
                    // Not late but paused (the sender stopped, or is gone): the underrun
                    // said nothing about jitter, so undo its growth and start over on the
                    // next packet.
                    self.next = None;
                    self.misses_in_a_row = 0;
                    self.drift.reset();
                    self.margin.on_pause();
                    self.lead.reset();
                    self.update_target();
                    return Playout::Idle;
                }
                if self.misses_in_a_row == 1 {
                    // Underrun: the packet is late, not lost. Grow so this does not repeat.
                    self.margin.on_underrun();
                    self.lead.on_underrun();
                    self.update_target();
                }
                // Stall: conceal this tick but keep waiting for the same packet, so the
                // late one is played when it comes (20 ms more delay) instead of being
                // thrown away as too late, which would make every late packet a loss.
                self.concealed += 1;
                Playout::Late
            }
            Some(ts) => {
                // Something later is here and nothing covers the cursor: a packet was
                // lost (or badly reordered). Conceal one packet's worth, offering the
                // following packet for its FEC if it starts right after.
                self.concealed += 1;
                self.next = Some(next + step);
                Playout::Missing {
                    next: (ts <= next + step + SLACK)
                        .then(|| self.packets.get(&ts).map(|q| q.payload.clone()))
                        .flatten(),
                }
            }
        }
    }

    fn extend(&mut self, timestamp: u32) -> u64 {
        let ts = match self.highest {
            None => u64::from(timestamp) + (1 << 32),
            Some(highest) => {
                let cycle = highest & !0xffff_ffff;
                [
                    cycle.wrapping_sub(1 << 32) | u64::from(timestamp),
                    cycle | u64::from(timestamp),
                    (cycle + (1 << 32)) | u64::from(timestamp),
                ]
                .into_iter()
                .min_by_key(|c| c.abs_diff(highest))
                .unwrap_or(highest)
            }
        };
        self.highest = Some(self.highest.map_or(ts, |h| h.max(ts)));
        ts
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(i: u32) -> Bytes {
        Bytes::from(i.to_be_bytes().to_vec())
    }

    /// An empty buffer whose underruns so far ask for `target` ticks.
    fn buffer_with_target(target: usize) -> AudioPlayoutBuffer {
        let mut buffer = AudioPlayoutBuffer::new();
        buffer.margin.packets = target - 1;
        buffer.update_target();
        assert_eq!(buffer.target(), target);
        buffer
    }

    #[test]
    fn a_steady_stream_plays_in_order_one_packet_deep() {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        assert_eq!(buffer.pop(), Playout::Idle);
        for i in 0..50u32 {
            let now = start + Duration::from_millis(u64::from(i) * 20);
            buffer.push(
                1000 + i * TICKS_PER_PACKET,
                packet(i),
                TICKS_PER_PACKET,
                now,
            );
            assert_eq!(buffer.pop(), Playout::Packet(packet(i)));
        }
        assert_eq!(buffer.target(), 1);
        assert_eq!(buffer.concealed(), 0);
    }

    #[test]
    fn sixty_ms_packets_fill_the_depth_by_their_length_not_their_number() {
        let long = 3 * TICKS_PER_PACKET;
        let start = Instant::now();
        // Jitter that asks for three ticks of depth: one 60 ms packet is it.
        let mut buffer = buffer_with_target(3);
        buffer.push(0, packet(0), long, start);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)), "started at once");
        // A burst of six (360 ms) after a stall is cut back to the target
        // and one packet: three are dropped, one plays, two wait.
        for i in 1..=6u32 {
            buffer.push(
                i * long,
                packet(i),
                long,
                start + Duration::from_millis(400),
            );
        }
        assert_eq!(buffer.target(), 6, "the burst's jitter raised it");
        assert_eq!(buffer.pop(), Playout::Packet(packet(4)));
        assert_eq!(buffer.queued_ticks(), 6);
        assert_eq!(buffer.concealed(), 9, "three 60 ms packets dropped");
    }

    #[test]
    fn sixty_ms_packets_that_bunch_up_are_played_not_cut() {
        let long = 3 * TICKS_PER_PACKET;
        let start = Instant::now();
        // A narrow link's jitter: five ticks of depth.
        let mut buffer = buffer_with_target(5);
        for i in 0..2u32 {
            buffer.push(i * long, packet(i), long, start);
        }
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        // Three more arrive together after waiting behind video: four
        // packets wait, 12 ticks, seven above the target.
        for i in 2..5u32 {
            buffer.push(
                i * long,
                packet(i),
                long,
                start + Duration::from_millis(150),
            );
        }
        for i in 1..5u32 {
            assert_eq!(buffer.pop(), Playout::Packet(packet(i)), "packet {i}");
        }
        assert_eq!(buffer.concealed(), 0);
    }

    #[test]
    fn depth_left_above_target_is_given_back_in_a_pause_not_cut_from_a_word() {
        let long = 3 * TICKS_PER_PACKET;
        let start = Instant::now();
        let at = |i: u32| start + Duration::from_millis(u64::from(i) * 60);
        let mut buffer = buffer_with_target(3);
        // Four 60 ms packets wait, come at an even pace: three more than
        // the target needs, one short of a cut.
        for i in 0..4u32 {
            buffer.push(i * long, packet(i), long, at(i));
        }
        let loud = vec![0.5f32; long as usize];
        let quiet = vec![0.002f32; long as usize];
        // While the sender talks, all of it plays.
        for i in 0..6u32 {
            assert_eq!(buffer.pop(), Playout::Packet(packet(i)));
            assert!(!buffer.skips_quiet(&loud), "packet {i} is heard");
            buffer.push((i + 4) * long, packet(i + 4), long, at(i + 4));
        }
        // In the next pause one quiet packet goes unplayed; the buffer is
        // then its target and a packet deep, and plays even quiet audio.
        assert_eq!(buffer.pop(), Playout::Packet(packet(6)));
        assert!(buffer.skips_quiet(&quiet));
        assert_eq!(buffer.pop(), Playout::Packet(packet(7)));
        assert!(!buffer.skips_quiet(&quiet), "no shallower than it needs");
        assert_eq!(buffer.skipped_quiet(), 3);
        assert_eq!(buffer.concealed(), 0, "nothing cut, nothing concealed");
    }

    #[test]
    fn a_lost_packet_is_concealed_with_the_next_one_offered_for_fec() {
        let mut buffer = AudioPlayoutBuffer::new();
        let now = Instant::now();
        buffer.push(0, packet(0), TICKS_PER_PACKET, now);
        buffer.push(2 * TICKS_PER_PACKET, packet(2), TICKS_PER_PACKET, now);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        assert_eq!(
            buffer.pop(),
            Playout::Missing {
                next: Some(packet(2))
            }
        );
        assert_eq!(buffer.pop(), Playout::Packet(packet(2)));
        assert_eq!(buffer.concealed(), 1);
    }

    #[test]
    fn an_underrun_grows_the_buffer_and_extra_depth_is_played_off_without_a_skip() {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        buffer.push(0, packet(0), TICKS_PER_PACKET, start);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        assert_eq!(buffer.pop(), Playout::Late);
        assert_eq!(buffer.target(), 2);
        // Two packets more than the target asks for arrive at once (more
        // would be cut at once: see the burst test), then a steady stream:
        // the extra is played off a touch faster, every packet in order.
        let mut sent = 1u32;
        for _ in 0..4 {
            buffer.push(
                sent * TICKS_PER_PACKET,
                packet(sent),
                TICKS_PER_PACKET,
                start,
            );
            sent += 1;
        }
        let (mut now_ms, mut next_send_ms, mut played) = (0.0f64, 20.0f64, 1u32);
        while now_ms < 30_000.0 {
            if next_send_ms <= now_ms {
                let at = start + Duration::from_secs_f64(next_send_ms / 1000.0);
                buffer.push(sent * TICKS_PER_PACKET, packet(sent), TICKS_PER_PACKET, at);
                sent += 1;
                next_send_ms += 20.0;
            } else {
                assert_eq!(buffer.pop(), Playout::Packet(packet(played)));
                played += 1;
                now_ms += 20.0 * buffer.playout_ratio();
            }
        }
        assert!(buffer.depth() <= 2, "depth {}", buffer.depth());
        assert_eq!(buffer.concealed(), 1);
    }

    /// A sender whose clock runs `drift` fast (negative: slow) against the
    /// device, for `minutes`: each pop comes when the device has played the
    /// previous packet at the ratio the buffer asked for. Returns the deepest
    /// depth of the first minute, the deepest and shallowest after it, and
    /// the final ratio.
    fn simulate_drift(drift: f64, minutes: u64) -> (usize, usize, usize, f64) {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        let send_every = 20.0 / (1.0 + drift);
        let (mut next_send, mut next_pop, mut sent) = (0.0f64, 10.0f64, 0u32);
        let (mut first_minute, mut deepest, mut shallowest) = (0, 0, usize::MAX);
        while next_pop < minutes as f64 * 60_000.0 {
            if next_send <= next_pop {
                let at = start + Duration::from_secs_f64(next_send / 1000.0);
                buffer.push(sent * TICKS_PER_PACKET, packet(sent), TICKS_PER_PACKET, at);
                sent += 1;
                next_send += send_every;
            } else {
                let before = buffer.depth();
                assert!(
                    matches!(buffer.pop(), Playout::Packet(_) | Playout::Idle),
                    "a gap at {next_pop} ms"
                );
                if next_pop < 60_000.0 {
                    first_minute = first_minute.max(before);
                } else {
                    deepest = deepest.max(before);
                    shallowest = shallowest.min(before);
                }
                next_pop += 20.0 * buffer.playout_ratio();
            }
        }
        (first_minute, deepest, shallowest, buffer.playout_ratio())
    }

    #[test]
    fn a_sender_half_a_percent_fast_or_slow_neither_grows_the_delay_nor_runs_dry() {
        for drift in [0.005, -0.005] {
            let (first_minute, deepest, shallowest, ratio) = simulate_drift(drift, 5);
            // Target 2 (the start's underrun), aimed at with the packet about
            // to play: 3 deep, give or take the dead band and the packet grid;
            // one packet more while the drift is being found.
            assert!(first_minute <= 5, "{drift}: {first_minute} packets deep");
            assert!(deepest <= 4, "{drift}: {deepest} packets deep");
            assert!(shallowest >= 1, "{drift}: ran dry");
            // The ratio settles where it matches the two clocks.
            let matched = 1.0 / (1.0 + drift);
            assert!((ratio - matched).abs() < 0.001, "{drift}: ratio {ratio}");
        }
    }

    #[test]
    fn sixty_ms_packets_keep_their_target_in_hand_for_a_queue_that_builds() {
        // A narrow link's 60 ms packets, each played the moment it came
        // (nothing in hand), the buffer asked to keep two ticks (40 ms).
        // After 12 s a probe past the link's rate queues each packet a
        // little later than the one before: 30 ms within half a second.
        let long = 3 * TICKS_PER_PACKET;
        let start = Instant::now();
        let mut buffer = buffer_with_target(2);
        let (mut next_send, mut next_pop, mut sent) = (0.0f64, 1.0f64, 0u32);
        while next_pop < 13_000.0 {
            let queued_ms = ((next_send - 12_000.0) / 500.0 * 30.0).clamp(0.0, 30.0);
            if next_send + queued_ms <= next_pop {
                let at = start + Duration::from_secs_f64((next_send + queued_ms) / 1000.0);
                buffer.push(sent * long, packet(sent), long, at);
                sent += 1;
                next_send += 60.0;
            } else {
                // The device asks again once it has played what it was given.
                let played_ms = match buffer.pop() {
                    Playout::Packet(_) => 60.0,
                    _ => 20.0,
                };
                next_pop += played_ms * buffer.playout_ratio();
            }
        }
        assert_eq!(buffer.target(), 2, "no underrun raised it");
        // Aimed at the packet playing and one tick, the buffer kept nothing
        // in hand and waited out 2 ticks as the queue built.
        assert_eq!(buffer.concealed(), 0, "ticks concealed");
    }

    /// Plays a stream of 20 ms packets, sent on time, whose one-way delay
    /// is `delay(sent_ms)`, to a device that asks for more once it has
    /// played what it was given, for `until_ms`; `check(ms, buffer)` after
    /// each tick.
    fn play_stream(
        buffer: &mut AudioPlayoutBuffer,
        until_ms: f64,
        delay: impl Fn(f64) -> f64,
        mut check: impl FnMut(f64, &AudioPlayoutBuffer),
    ) {
        // Speech: a pause of 100 ms in every second.
        let pause = |payload: &Bytes| {
            let index = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
            index % 50 < 5
        };
        let start = Instant::now();
        let (mut next_send, mut next_pop, mut sent) = (0.0f64, 1.0f64, 0u32);
        let mut last_arrival = 0.0f64;
        while next_pop < until_ms {
            let arrival = (next_send + delay(next_send)).max(last_arrival);
            if arrival <= next_pop {
                let at = start + Duration::from_secs_f64(arrival / 1000.0);
                buffer.push(sent * TICKS_PER_PACKET, packet(sent), TICKS_PER_PACKET, at);
                last_arrival = arrival;
                sent += 1;
                next_send += 20.0;
            } else {
                if let Playout::Packet(payload) = buffer.pop()
                    && pause(&payload)
                    && buffer.skips_quiet(&[0.0; 960])
                {
                    continue;
                }
                next_pop += 20.0 * buffer.playout_ratio();
                check(next_pop, buffer);
            }
        }
    }

    #[test]
    fn margin_a_queue_that_built_once_asked_for_is_given_back_once_packets_come_early() {
        // A call squeezing into a narrow link: each packet queues 2.5 ms
        // more than the one before for 0.4 s, the sender backs off, the
        // queue drains within 0.2 s, and the path is clean after.
        let delay = |sent: f64| match sent {
            s if s < 1_000.0 => 0.0,
            s if s < 1_400.0 => (s - 1_000.0) / 400.0 * 100.0,
            s if s < 1_600.0 => 100.0 - (s - 1_400.0) / 200.0 * 100.0,
            _ => 0.0,
        };
        let mut buffer = AudioPlayoutBuffer::new();
        let (mut earned, mut concealed_by_2s, mut at_10s) = (0, 0, 0);
        play_stream(&mut buffer, 12_000.0, delay, |ms, buffer| {
            if ms < 2_000.0 {
                earned = earned.max(buffer.target());
                concealed_by_2s = buffer.concealed();
            } else if ms < 10_000.0 {
                at_10s = buffer.target();
            }
        });
        assert!(earned >= 4, "the queue earned {earned} ticks");
        assert!(at_10s <= 2, "still {at_10s} ticks 8 s after it drained");
        assert_eq!(
            buffer.concealed(),
            concealed_by_2s,
            "underruns after the drain"
        );
    }

    #[test]
    fn margin_that_recurring_lateness_uses_is_kept() {
        // Every 5 s a packet comes 60 ms late, the rest on time (a Wi-Fi
        // scan): the margin that absorbs it goes unused between times.
        let delay = |sent: f64| {
            if (sent / 20.0) as u64 % 250 == 100 {
                60.0
            } else {
                0.0
            }
        };
        let mut buffer = AudioPlayoutBuffer::new();
        play_stream(&mut buffer, 90_000.0, delay, |_, _| {});
        // Calm alone: 8 ticks in 90 s; the lead rule adds one give-back
        // that proves premature, then leaves the margin to the calm.
        assert!(
            buffer.concealed() <= 9,
            "{} ticks concealed",
            buffer.concealed()
        );
    }

    #[test]
    fn the_target_comes_back_down_when_the_jitter_does() {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        let mut t = start;
        for i in 0..400u32 {
            // A rough start (a 100 ms stall), then a perfectly steady stream.
            let late = if i == 5 {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            t += Duration::from_millis(20);
            buffer.push(i * TICKS_PER_PACKET, packet(i), TICKS_PER_PACKET, t + late);
            if i == 6 {
                assert!(buffer.target() >= 2, "the stall raised the target");
            }
        }
        assert_eq!(buffer.target(), 1, "the target after calm");
    }

    #[test]
    fn a_burst_far_above_target_is_cut_at_once_to_keep_the_delay_small() {
        let mut buffer = AudioPlayoutBuffer::new();
        let now = Instant::now();
        buffer.push(0, packet(0), TICKS_PER_PACKET, now);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        // Twelve packets at once (a stalled network let go): play the newest few.
        for i in 1..=12u32 {
            buffer.push(i * TICKS_PER_PACKET, packet(i), TICKS_PER_PACKET, now);
        }
        let played = buffer.pop();
        assert!(
            buffer.depth() <= buffer.target() + 1,
            "depth {}",
            buffer.depth()
        );
        assert_ne!(played, Playout::Packet(packet(1)), "old audio is skipped");
    }

    #[test]
    fn a_late_packet_stalls_playout_and_is_still_played() {
        let mut buffer = AudioPlayoutBuffer::new();
        let now = Instant::now();
        buffer.push(0, packet(0), TICKS_PER_PACKET, now);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        assert_eq!(buffer.pop(), Playout::Late);
        buffer.push(
            TICKS_PER_PACKET,
            packet(1),
            TICKS_PER_PACKET,
            now + Duration::from_millis(45),
        );
        assert_eq!(buffer.pop(), Playout::Packet(packet(1)), "late, not lost");
    }

    #[test]
    fn jittery_arrival_raises_the_target_within_its_cap() {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        for i in 0..100u32 {
            let wobble = if i % 2 == 0 { 0 } else { 45 };
            let now = start + Duration::from_millis(u64::from(i) * 20 + wobble);
            buffer.push(i * TICKS_PER_PACKET, packet(i), TICKS_PER_PACKET, now);
        }
        assert!(buffer.target() >= 3, "target {}", buffer.target());
        assert!(buffer.target() <= MAX_TARGET);
    }

    #[test]
    fn uneven_timestamp_steps_play_whole() {
        // A sender stamping from its capture clock: steps of 956 to 968, not 960.
        let steps = [960u32, 956, 968, 961, 959, 964, 957, 960, 966, 955];
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        let mut ts = 7_000u32;
        let mut played = 0;
        for (i, step) in steps.iter().cycle().take(200).enumerate() {
            let now = start + Duration::from_millis(20 * i as u64);
            buffer.push(ts, packet(i as u32), TICKS_PER_PACKET, now);
            ts = ts.wrapping_add(*step);
            match buffer.pop() {
                Playout::Packet(_) => played += 1,
                other => panic!("tick {i}: {other:?}"),
            }
        }
        assert_eq!(played, 200);
        assert_eq!(buffer.concealed(), 0);
    }

    #[test]
    fn longer_packets_move_the_cursor_by_what_they_carry() {
        // 40 ms packets from another sender: each is followed on at its end.
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        buffer.push(0, packet(0), 1920, start);
        for i in 0..5u32 {
            let next = i + 1;
            let arrives = start + Duration::from_millis(40 * u64::from(next));
            buffer.push(next * 1920, packet(next), 1920, arrives);
            assert_eq!(buffer.pop(), Playout::Packet(packet(i)), "packet {i}");
        }
        assert_eq!(buffer.concealed(), 0);
    }

    #[test]
    fn a_long_pause_stops_playout_until_packets_return() {
        let mut buffer = AudioPlayoutBuffer::new();
        let now = Instant::now();
        buffer.push(0, packet(0), TICKS_PER_PACKET, now);
        buffer.pop();
        let idle = (0..20).filter(|_| buffer.pop() == Playout::Idle).count();
        assert!(idle > 0);
        buffer.push(
            500 * TICKS_PER_PACKET,
            packet(500),
            TICKS_PER_PACKET,
            now + Duration::from_secs(10),
        );
        let played = (0..5).any(|_| buffer.pop() == Playout::Packet(packet(500)));
        assert!(played);
    }

    #[test]
    fn packets_a_wild_timestamp_left_far_ahead_are_dropped_not_jumped_to() {
        // Found by `a_steady_stream_after_any_history_is_played` (shrunk): a
        // few packets far ahead stayed queued while the stream went on below
        // them, until a cut kept them as "the newest" and jumped an hour
        // ahead, dropping everything after as too late.
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        let wild = 1_000_000_000u32;
        for i in 0..4 {
            buffer.push(
                wild + i * TICKS_PER_PACKET,
                packet(900 + i),
                TICKS_PER_PACKET,
                start,
            );
        }
        let mut played = Vec::new();
        for i in 0..400u32 {
            let now = start + Duration::from_millis(u64::from(i) * 20);
            buffer.push(i * TICKS_PER_PACKET, packet(i), TICKS_PER_PACKET, now);
            played.push(buffer.pop());
        }
        assert!(
            played[..2]
                .iter()
                .all(|p| matches!(p, Playout::Packet(_) | Playout::Idle)),
            "{played:?}"
        );
        let skipped = played
            .iter()
            .filter(|p| !matches!(p, Playout::Packet(_)))
            .count();
        assert!(skipped <= 1, "{skipped} ticks not played");
        assert!(
            played
                .iter()
                .all(|p| !matches!(p, Playout::Packet(b) if b[..] >= packet(900)[..]))
        );
        assert!(buffer.depth() <= 2, "depth {}", buffer.depth());

        // One such packet, too few for a cut, is dropped as soon as the
        // stream plays on: it would count in the depth the drift control holds.
        let mut buffer = AudioPlayoutBuffer::new();
        buffer.push(0, packet(0), TICKS_PER_PACKET, start);
        buffer.push(wild, packet(900), TICKS_PER_PACKET, start);
        assert_eq!(buffer.pop(), Playout::Packet(packet(0)));
        assert_eq!(buffer.depth(), 0);
    }

    #[test]
    fn a_sender_timeline_that_moves_back_restarts_playout_on_it() {
        let mut buffer = AudioPlayoutBuffer::new();
        let start = Instant::now();
        let mut tick = 0u64;
        let mut step = |buffer: &mut AudioPlayoutBuffer, ts: u32, n: u32| {
            tick += 1;
            buffer.push(
                ts,
                packet(n),
                TICKS_PER_PACKET,
                start + Duration::from_millis(tick * 20),
            );
            buffer.pop()
        };
        for i in 0..50u32 {
            step(&mut buffer, 5_000_000 + i * TICKS_PER_PACKET, i);
        }
        // The sender restarts its timestamps from zero.
        let after: Vec<Playout> = (0..40u32)
            .map(|i| step(&mut buffer, i * TICKS_PER_PACKET, 1000 + i))
            .collect();
        let back = after
            .iter()
            .position(|p| matches!(p, Playout::Packet(b) if b[..] >= packet(1000)[..]))
            .expect("the new timeline is played");
        assert!(
            back <= LATE_RESTART as usize + 3,
            "after {back} ticks: {after:?}"
        );
        assert!(
            after[back..]
                .iter()
                .all(|p| matches!(p, Playout::Packet(_)))
        );
    }
}
