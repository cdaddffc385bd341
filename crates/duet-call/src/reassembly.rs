//! H.264 access units back out of RTP, without sockets: packets are put in
//! sequence-number order, FU-A fragments and STAP-A aggregates are unpacked
//! (by `rtc`'s depacketizer), and a frame is released the moment its marker
//! packet completes it, never a frame later.
//!
//! A missing packet is waited for only as long as the measured jitter (plus a
//! round trip for a retransmission) says it could still come; then the broken
//! frame is dropped and reported, so the decoder asks for a keyframe.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

use crate::interceptors::NACK_INTERVAL;

/// The round trip assumed until one is measured (libwebrtc assumes the same):
/// assuming none would give up on the first second's losses before their
/// retransmissions could come.
const ASSUMED_RTT: Duration = Duration::from_millis(100);
/// The shortest and longest time a gap is waited for.
const MIN_WAIT: Duration = Duration::from_millis(15);
const MAX_WAIT: Duration = Duration::from_millis(400);
/// How much of the highest round trip seen is kept at each new reading: the
/// candidate pair's RTT is one keepalive's, and on a jittery path a single
/// reading can be half the round trip a retransmission really takes.
const RTT_MEMORY: f64 = 0.9;
/// More buffered packets than this means the stream is hopeless: start over.
const MAX_BUFFERED: usize = 4096;

/// What came out of the reassembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassembled {
    /// One whole access unit in Annex-B form, with its RTP timestamp.
    AccessUnit {
        /// Annex-B bytes.
        data: Bytes,
        /// RTP timestamp (90 kHz).
        rtp_timestamp: u32,
    },
    /// Packets were lost for good: the next pictures cannot be decoded cleanly.
    Lost {
        /// How many sequence numbers were given up on.
        packets: u64,
    },
}

#[derive(Debug)]
struct Buffered {
    timestamp: u32,
    marker: bool,
    payload: Bytes,
    arrived: Instant,
}

/// Reorders RTP packets of one H.264 stream and assembles access units.
#[derive(Debug)]
pub struct VideoReassembler {
    buffer: BTreeMap<u64, Buffered>,
    /// Extended sequence number of the first packet of the next frame.
    next: Option<u64>,
    /// Highest extended sequence number seen.
    highest: Option<u64>,
    /// Whether `next` is known to be a frame's first packet (it follows a
    /// marker). Not at the start of the stream, nor after starting over: the
    /// packets before it may have been lost.
    start_known: bool,
    jitter: JitterEstimator,
    /// `None` until measured.
    rtt: Option<Duration>,
    /// The missing packets of the last frame given up on (the first 64),
    /// and when: one of them that still comes shows the wait was too short
    /// (logged).
    given_up: Option<(Vec<u64>, Instant)>,
}

impl Default for VideoReassembler {
    fn default() -> Self {
        VideoReassembler {
            buffer: BTreeMap::new(),
            next: None,
            highest: None,
            start_known: false,
            jitter: JitterEstimator::with_clock_rate(90_000),
            rtt: None,
            given_up: None,
        }
    }
}

impl VideoReassembler {
    /// An empty reassembler.
    pub fn new() -> VideoReassembler {
        VideoReassembler::default()
    }

    /// Tells the reassembler the round-trip time, so it waits long enough for a NACKed packet.
    /// Zero means not measured yet. Readings below the round trip in use
    /// only lower it slowly (see [`RTT_MEMORY`]).
    pub fn set_rtt(&mut self, rtt: Duration) {
        if rtt.is_zero() {
            return;
        }
        self.rtt = Some(match self.rtt {
            Some(kept) if kept > rtt => rtt.max(kept.mul_f64(RTT_MEMORY)),
            _ => rtt,
        });
    }

    /// How long a gap is waited for before the frame is given up: the NACK
    /// goes out at the generator's next tick, its answer takes a round trip,
    /// and jitter may delay either.
    pub fn gap_wait(&self) -> Duration {
        let rtt = self.rtt.unwrap_or(ASSUMED_RTT);
        (self.jitter.jitter() * 3 + rtt * 3 / 2 + NACK_INTERVAL + Duration::from_millis(5))
            .clamp(MIN_WAIT, MAX_WAIT)
    }

    /// When [`poll`](Self::poll) next has something to do: the moment the
    /// gap the stream is stuck on has been waited for long enough. `None` when nothing waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        Some(self.gap_seen_at()? + self.gap_wait())
    }

    /// When the gap the stream is stuck on was seen: the arrival of the
    /// first packet beyond it, when its NACK went out. A large frame paced
    /// out over a few hundred milliseconds must not have that time counted
    /// against its retransmission. Without a gap (a frame whose tail is
    /// still coming), the oldest packet's arrival.
    fn gap_seen_at(&self) -> Option<Instant> {
        let next = self.next?;
        let mut expected = next;
        let beyond_gap = self
            .buffer
            .range(next..)
            .skip_while(|(seq, _)| {
                let in_run = **seq == expected;
                expected += 1;
                in_run
            })
            .map(|(_, p)| p.arrived)
            .min();
        beyond_gap.or_else(|| self.buffer.values().map(|p| p.arrived).min())
    }

    /// Adds one packet and returns whatever it completes, in order.
    pub fn push(
        &mut self,
        sequence_number: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
        now: Instant,
    ) -> Vec<Reassembled> {
        let seq = self.extend(sequence_number);
        match self.next {
            // Before any frame is placed, an earlier packet may still be the
            // head of the first one (reordered at the start of the stream).
            Some(next) if seq < next && !self.start_known && next - seq <= MAX_BUFFERED as u64 => {
                self.next = Some(seq);
            }
            // Late or duplicate: its frame is already out (or given up on).
            Some(next) if seq < next => {
                if let Some((missing, at)) = &self.given_up
                    && missing.contains(&seq)
                {
                    tracing::debug!(
                        after_ms = now.saturating_duration_since(*at).as_millis() as u64,
                        wait_ms = self.gap_wait().as_millis() as u64,
                        "a packet came after its frame was given up"
                    );
                }
                return Vec::new();
            }
            Some(_) => {}
            None => self.next = Some(seq),
        }
        self.jitter.on_packet(timestamp, now);
        self.buffer.entry(seq).or_insert(Buffered {
            timestamp,
            marker,
            payload,
            arrived: now,
        });
        let mut out = Vec::new();
        if self.buffer.len() > MAX_BUFFERED {
            let packets = self.buffer.len() as u64;
            self.buffer.clear();
            self.next = Some(seq + 1);
            self.start_known = false;
            out.push(Reassembled::Lost { packets });
            return out;
        }
        self.drain(now, &mut out);
        out
    }

    /// Gives up on gaps that have waited long enough; call it every few milliseconds.
    pub fn poll(&mut self, now: Instant) -> Vec<Reassembled> {
        let mut out = Vec::new();
        self.drain(now, &mut out);
        out
    }

    fn extend(&mut self, sequence_number: u16) -> u64 {
        let seq = match self.highest {
            None => u64::from(sequence_number) + (1 << 16),
            Some(highest) => {
                let cycle = highest & !0xffff;
                let candidates = [
                    cycle.wrapping_sub(1 << 16) | u64::from(sequence_number),
                    cycle | u64::from(sequence_number),
                    (cycle + (1 << 16)) | u64::from(sequence_number),
                ];
                candidates
                    .into_iter()
                    .min_by_key(|c| c.abs_diff(highest))
                    .unwrap_or(highest)
            }
        };
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        seq
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<Reassembled>) {
        loop {
            let Some(next) = self.next else { return };
            // Padding-only packets (a browser's bandwidth probes, sent on the
            // media stream when RTX is not negotiated) sit between frames and
            // carry no picture: they only keep the sequence numbers whole.
            if self.buffer.get(&next).is_some_and(|p| p.payload.is_empty()) {
                self.buffer.remove(&next);
                self.next = Some(next + 1);
                continue;
            }
            if let Some(end) = self.complete_frame_from(next) {
                if self.start_known || self.begins_frame(next, end) {
                    out.push(self.take_frame(next, end));
                } else {
                    // The stream was joined after this frame's head: it is a tail.
                    out.push(self.drop_until(next, end + 1));
                }
                continue;
            }
            // Stuck on a gap: give up once it has been waited for long enough.
            let Some(seen) = self.gap_seen_at() else {
                return;
            };
            if now.saturating_duration_since(seen) < self.gap_wait() {
                return;
            }
            let Some(resume) = self.resume_point(next) else {
                // No frame end in sight yet; wait for more packets.
                return;
            };
            let missing: Vec<u64> = (next..resume)
                .filter(|seq| !self.buffer.contains_key(seq))
                .collect();
            let count = missing.len();
            // The first few, by their numbers on the wire: after an outage
            // there may be thousands.
            let numbers: Vec<u16> = missing.iter().take(16).map(|seq| *seq as u16).collect();
            tracing::debug!(
                missing = count,
                first = ?numbers,
                waited_ms = now.saturating_duration_since(seen).as_millis() as u64,
                wait_ms = self.gap_wait().as_millis() as u64,
                "giving up on a frame"
            );
            self.given_up = Some((missing.into_iter().take(64).collect(), now));
            out.push(self.drop_until(next, resume));
        }
    }

    /// Where the stream is picked up after the broken frame at `next`: after
    /// the first marker, or earlier at a packet that plainly starts a later
    /// frame (when what was lost is the broken frame's marker packet, the
    /// frame after it is whole and may be a keyframe asked for).
    fn resume_point(&self, next: u64) -> Option<u64> {
        let mut broken_timestamp = None;
        for (&seq, packet) in self.buffer.range(next..) {
            let later_frame = broken_timestamp.is_none_or(|ts| ts != packet.timestamp);
            if seq > next && later_frame && starts_frame(&packet.payload) {
                return Some(seq);
            }
            if packet.marker {
                return Some(seq + 1);
            }
            if !packet.payload.is_empty() {
                broken_timestamp = Some(packet.timestamp);
            }
        }
        None
    }

    /// Drops the packets from `start` up to (not including) `resume`, the
    /// first packet of a frame, and reports them lost.
    fn drop_until(&mut self, start: u64, resume: u64) -> Reassembled {
        self.buffer.retain(|seq, _| *seq >= resume);
        self.next = Some(resume);
        self.start_known = true;
        Reassembled::Lost {
            packets: resume - start,
        }
    }

    /// Whether the frame `start..=end` visibly begins with its first packet.
    fn begins_frame(&self, start: u64, end: u64) -> bool {
        self.buffer
            .range(start..=end)
            .map(|(_, p)| &p.payload)
            .find(|payload| !payload.is_empty())
            .is_some_and(|payload| starts_frame(payload))
    }

    /// The last sequence number of a frame that starts at `start` and is all here.
    fn complete_frame_from(&self, start: u64) -> Option<u64> {
        for (expected, (seq, packet)) in (start..).zip(self.buffer.range(start..)) {
            if *seq != expected {
                return None;
            }
            if packet.marker {
                return Some(*seq);
            }
        }
        None
    }

    fn take_frame(&mut self, start: u64, end: u64) -> Reassembled {
        let mut depacketizer = H264Packet::default();
        let mut data = BytesMut::new();
        let mut timestamp = 0;
        let mut broken = false;
        let mut fragments = FragmentCheck::default();
        for seq in start..=end {
            if let Some(packet) = self.buffer.remove(&seq) {
                if packet.payload.is_empty() {
                    continue;
                }
                timestamp = packet.timestamp;
                broken |= !fragments.accepts(&packet.payload);
                if !aggregate_is_whole(&packet.payload) {
                    // The depacketizer would read past its end.
                    broken = true;
                    continue;
                }
                match depacketizer.depacketize(&packet.payload) {
                    Ok(nal) => data.extend_from_slice(&nal),
                    Err(err) => {
                        tracing::debug!(%err, "undecodable H.264 payload");
                        broken = true;
                    }
                }
            }
        }
        self.next = Some(end + 1);
        self.start_known = true;
        broken |= fragments.inside;
        if broken || data.is_empty() {
            Reassembled::Lost {
                packets: end + 1 - start,
            }
        } else {
            Reassembled::AccessUnit {
                data: data.freeze(),
                rtp_timestamp: timestamp,
            }
        }
    }
}

const NAL_TYPE: u8 = 0x1f;
const NAL_SLICE: u8 = 1;
const NAL_SPS: u8 = 7;
const NAL_AUD: u8 = 9;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

/// Whether an RTP payload is certainly the first packet of an access unit:
/// its first NAL unit is an access unit delimiter, a sequence parameter set
/// (which leads every keyframe), or the first slice of a non-IDR picture
/// (`first_mb_in_slice` 0: the slice header's first bit is set). An IDR slice
/// or a PPS may follow a lost SPS in the same frame, so they do not count.
fn starts_frame(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    let (nal_type, first_body_byte) = match header & NAL_TYPE {
        // The first aggregated unit: two length bytes, then the unit.
        NAL_STAP_A => match (payload.get(3), payload.get(4)) {
            (Some(inner), body) => (inner & NAL_TYPE, body.copied()),
            (None, _) => return false,
        },
        NAL_FU_A => match payload.get(1) {
            Some(fu) if fu & 0x80 != 0 => (fu & NAL_TYPE, payload.get(2).copied()),
            _ => return false,
        },
        nal_type => (nal_type, payload.get(1).copied()),
    };
    match nal_type {
        NAL_AUD | NAL_SPS => true,
        NAL_SLICE => first_body_byte.is_some_and(|b| b & 0x80 != 0),
        _ => false,
    }
}

/// Whether a STAP-A payload's length fields stay inside it (`rtc`'s
/// depacketizer indexes past the end of one that stops after a unit with a
/// single byte left, and panics). Other payloads pass.
fn aggregate_is_whole(payload: &[u8]) -> bool {
    if payload.first().is_none_or(|h| h & NAL_TYPE != NAL_STAP_A) {
        return true;
    }
    let mut rest = &payload[1..];
    while !rest.is_empty() {
        let [high, low, tail @ ..] = rest else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([*high, *low]));
        let Some(after) = tail.get(size..) else {
            return false;
        };
        rest = after;
    }
    true
}

/// Checks that FU-A fragments (RFC 6184) come as whole runs: a start, then
/// middles, then an end. A frame whose first fragment was lost (say the
/// stream was joined mid-frame) would otherwise reach the decoder as if
/// whole, with a NAL unit missing its head.
#[derive(Debug, Default)]
struct FragmentCheck {
    /// Inside a fragmented NAL unit, waiting for its end.
    inside: bool,
}

impl FragmentCheck {
    /// Whether `payload` may follow what came before it.
    fn accepts(&mut self, payload: &[u8]) -> bool {
        let nal_type = payload.first().map(|b| b & NAL_TYPE);
        if nal_type != Some(NAL_FU_A) {
            // A whole NAL unit or an aggregate cannot interrupt a fragmented one.
            return !std::mem::take(&mut self.inside);
        }
        let Some(header) = payload.get(1) else {
            return false;
        };
        let (first, last) = (header & 0x80 != 0, header & 0x40 != 0);
        let in_order = first != self.inside;
        self.inside = !last && (first || self.inside);
        in_order
    }
}

/// The largest change in transit time counted as jitter.
const MAX_TRANSIT_CHANGE_S: f64 = 3.0;

/// RFC 3550 interarrival jitter of an RTP stream, kept in seconds.
#[derive(Debug)]
pub struct JitterEstimator {
    last: Option<(u32, Instant)>,
    jitter_s: f64,
    clock_rate: f64,
}

impl JitterEstimator {
    /// For a stream with this RTP clock rate.
    pub fn with_clock_rate(clock_rate: u32) -> JitterEstimator {
        JitterEstimator {
            last: None,
            jitter_s: 0.0,
            clock_rate: f64::from(clock_rate),
        }
    }

    /// Notes one packet's RTP timestamp and arrival time.
    pub fn on_packet(&mut self, timestamp: u32, arrived: Instant) {
        let rate = self.clock_rate;
        if let Some((last_ts, last_arrival)) = self.last {
            // Packets of one video frame share a timestamp; only frame starts say anything.
            if timestamp == last_ts {
                return;
            }
            let media = f64::from(timestamp.wrapping_sub(last_ts) as i32) / rate;
            let wall = if arrived >= last_arrival {
                arrived.duration_since(last_arrival).as_secs_f64()
            } else {
                -last_arrival.duration_since(arrived).as_secs_f64()
            };
            let d = (wall - media).abs();
            // Seconds off: the sender's timeline moved (a restart, a wild
            // timestamp), which says nothing about the network; start anew
            // from this packet rather than wait minutes for the estimate to
            // come back down.
            if d < MAX_TRANSIT_CHANGE_S {
                self.jitter_s += (d - self.jitter_s) / 16.0;
            }
        }
        self.last = Some((timestamp, arrived));
    }

    /// The estimate.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter_s.clamp(0.0, MAX_TRANSIT_CHANGE_S))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    /// Packets of one access unit with `nal_count` NAL units of `nal_size` bytes each.
    fn packetize(frame: u32, nal_size: usize) -> Vec<(bool, Bytes)> {
        // Two slices of a P picture: the first starts at macroblock 0 (its
        // header's first bit set), the second does not.
        let mut annex_b = Vec::new();
        for nal in 0..2u8 {
            annex_b.extend_from_slice(&[0, 0, 0, 1, 0x41]);
            annex_b.push(if nal == 0 { 0x9a } else { 0x1a });
            annex_b.extend((1..nal_size).map(|i| (i as u32 + frame) as u8 ^ nal));
        }
        let mut payloader = H264Payloader::default();
        let payloads = payloader
            .payload(1200, &Bytes::from(annex_b))
            .expect("packetizes");
        let count = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| (i + 1 == count, p))
            .collect()
    }

    struct Stream {
        seq: u16,
        packets: Vec<(u16, u32, bool, Bytes)>,
    }

    impl Stream {
        fn new(first_seq: u16, frames: u32, nal_size: usize) -> Stream {
            let mut stream = Stream {
                seq: first_seq,
                packets: Vec::new(),
            };
            for frame in 0..frames {
                for (marker, payload) in packetize(frame, nal_size) {
                    stream
                        .packets
                        .push((stream.seq, frame * 3000, marker, payload));
                    stream.seq = stream.seq.wrapping_add(1);
                }
            }
            stream
        }
    }

    fn units(out: &[Reassembled]) -> Vec<u32> {
        out.iter()
            .filter_map(|r| match r {
                Reassembled::AccessUnit { rtp_timestamp, .. } => Some(*rtp_timestamp),
                Reassembled::Lost { .. } => None,
            })
            .collect()
    }

    #[test]
    fn fragmented_frames_come_out_whole_on_their_marker_across_the_sequence_wrap() {
        let stream = Stream::new(65_530, 4, 3000);
        assert!(stream.packets.len() > 8, "FU-A fragments expected");
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let mut out = Vec::new();
        for (seq, ts, marker, payload) in stream.packets {
            out.extend(reassembler.push(seq, ts, marker, payload, now));
        }
        assert_eq!(units(&out), vec![0, 3000, 6000, 9000]);
        let Reassembled::AccessUnit { data, .. } = &out[0] else {
            panic!("first is a unit")
        };
        // Two NAL units, each with its start code, unpacked from FU-A.
        assert_eq!(data.len(), 2 * (4 + 1 + 3000));
        assert_eq!(&data[..5], &[0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn a_frame_joined_after_its_first_fragment_is_lost_not_decoded() {
        let stream = Stream::new(100, 2, 3000);
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let mut out = Vec::new();
        // The first packet (the start of a fragmented NAL unit) never came.
        for (seq, ts, marker, payload) in stream.packets.into_iter().skip(1) {
            out.extend(reassembler.push(seq, ts, marker, payload, now));
        }
        assert!(
            matches!(out.first(), Some(Reassembled::Lost { .. })),
            "{out:?}"
        );
        assert_eq!(units(&out), vec![3000]);
    }

    #[test]
    fn fragment_runs_are_checked_start_middle_end() {
        let fu = |start: bool, end: bool| -> Vec<u8> {
            vec![28, (u8::from(start) << 7) | (u8::from(end) << 6) | 5, 0]
        };
        let single = vec![0x65, 0];
        let mut check = FragmentCheck::default();
        assert!(check.accepts(&fu(true, false)));
        assert!(check.accepts(&fu(false, false)));
        assert!(check.accepts(&fu(false, true)));
        assert!(check.accepts(&single));
        assert!(!check.accepts(&fu(false, true)), "an end without a start");
        let mut check = FragmentCheck::default();
        assert!(check.accepts(&fu(true, false)));
        assert!(
            !check.accepts(&single),
            "a whole NAL inside a fragmented one"
        );
        let mut check = FragmentCheck::default();
        assert!(check.accepts(&fu(true, false)));
        assert!(
            !check.accepts(&fu(true, false)),
            "a second start before the end"
        );
        assert!(!check.accepts(&[28]), "a fragment without its header");
    }

    #[test]
    fn padding_only_packets_between_frames_are_skipped_not_lost() {
        let stream = Stream::new(500, 3, 2500);
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut seq_shift = 0u16;
        for (s, t, m, p) in stream.packets {
            out.extend(reassembler.push(s.wrapping_add(seq_shift), t, m, p, now));
            if m {
                // Two probes after each frame, as Chrome sends them.
                for _ in 0..2 {
                    seq_shift += 1;
                    out.extend(reassembler.push(
                        s.wrapping_add(seq_shift),
                        t,
                        false,
                        Bytes::new(),
                        now,
                    ));
                }
            }
        }
        assert_eq!(units(&out), vec![0, 3000, 6000]);
        assert!(
            out.iter()
                .all(|r| matches!(r, Reassembled::AccessUnit { .. })),
            "nothing reported lost: {out:?}"
        );
    }

    #[test]
    fn reordered_packets_are_put_back_in_order_without_waiting() {
        let mut stream = Stream::new(100, 3, 2500);
        stream.packets.swap(1, 2);
        stream.packets.swap(4, 6);
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let out: Vec<_> = stream
            .packets
            .into_iter()
            .flat_map(|(s, t, m, p)| reassembler.push(s, t, m, p, now))
            .collect();
        assert_eq!(units(&out), vec![0, 3000, 6000]);
    }

    #[test]
    fn a_lost_packet_is_waited_for_then_its_frame_is_dropped_and_reported() {
        let stream = Stream::new(7, 3, 2500);
        let per_frame = stream.packets.len() / 3;
        let mut reassembler = VideoReassembler::new();
        let start = Instant::now();
        let mut out = Vec::new();
        for (i, (s, t, m, p)) in stream.packets.into_iter().enumerate() {
            if i == per_frame + 1 {
                continue; // lose a packet from the middle of frame 1
            }
            out.extend(reassembler.push(s, t, m, p, start));
        }
        assert_eq!(units(&out), vec![0], "frame 2 waits behind the gap");
        assert!(
            reassembler
                .poll(start + Duration::from_millis(5))
                .is_empty()
        );
        let deadline = reassembler.next_deadline().expect("a gap is waiting");
        assert!(deadline > start && deadline <= start + MAX_WAIT);
        let later = reassembler.poll(start + MAX_WAIT);
        assert!(matches!(later[0], Reassembled::Lost { .. }));
        assert_eq!(units(&later), vec![6000]);
    }

    #[test]
    fn a_gap_in_a_slowly_paced_frame_is_waited_for_from_when_it_was_seen() {
        // A keyframe on a narrow link leaves over a few hundred milliseconds.
        // Its next-to-last packet is lost: the gap shows when the marker
        // comes, and the resend is a round trip after that, however long
        // the frame's first packet has waited.
        let spacing = Duration::from_millis(20);
        let start = Instant::now();
        let lose_one = || {
            let mut stream = Stream::new(100, 1, 12_000);
            let lost_at = stream.packets.len() - 2;
            let lost = stream.packets.remove(lost_at);
            let mut reassembler = VideoReassembler::new();
            reassembler.set_rtt(Duration::from_millis(50));
            let mut out = Vec::new();
            let mut arrived = start;
            for (i, (s, t, m, p)) in stream.packets.into_iter().enumerate() {
                arrived = start + spacing * i as u32;
                out.extend(reassembler.push(s, t, m, p, arrived));
            }
            assert!(
                arrived - start > reassembler.gap_wait(),
                "the frame took longer than a gap's wait"
            );
            assert!(out.is_empty(), "given up as the gap showed: {out:?}");
            let deadline = arrived + reassembler.gap_wait();
            (reassembler, lost, deadline)
        };

        let (mut reassembler, lost, deadline) = lose_one();
        assert_eq!(reassembler.next_deadline(), Some(deadline));
        let resent = deadline - Duration::from_millis(1);
        assert!(reassembler.poll(resent).is_empty());
        let out = reassembler.push(lost.0, lost.1, lost.2, lost.3, resent);
        assert_eq!(units(&out), vec![0], "the resend completes the frame");

        let (mut reassembler, _, deadline) = lose_one();
        assert!(matches!(
            reassembler.poll(deadline)[..],
            [Reassembled::Lost { .. }]
        ));
    }

    #[test]
    fn a_retransmitted_packet_in_time_completes_its_frame() {
        let mut stream = Stream::new(500, 2, 2500);
        let late = stream.packets.remove(1);
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let mut out = Vec::new();
        for (s, t, m, p) in stream.packets {
            out.extend(reassembler.push(s, t, m, p, now));
        }
        assert!(units(&out).is_empty());
        out.extend(reassembler.push(late.0, late.1, late.2, late.3, now));
        assert_eq!(units(&out), vec![0, 3000]);
        // A duplicate of something already released is ignored.
        let dup = Stream::new(500, 1, 2500).packets.remove(0);
        assert!(reassembler.push(dup.0, dup.1, dup.2, dup.3, now).is_empty());
    }

    #[test]
    fn the_gap_wait_follows_jitter_and_round_trip_within_bounds() {
        let mut reassembler = VideoReassembler::new();
        // Before a round trip is measured, 100 ms is assumed.
        assert_eq!(reassembler.gap_wait(), Duration::from_millis(175));
        reassembler.set_rtt(Duration::from_micros(200));
        assert_eq!(reassembler.gap_wait(), Duration::from_micros(25_300));
        reassembler.set_rtt(Duration::from_millis(60));
        assert_eq!(reassembler.gap_wait(), Duration::from_millis(115));
        // A low reading after a high one lowers the wait only slowly.
        reassembler.set_rtt(Duration::from_millis(10));
        assert_eq!(reassembler.gap_wait(), Duration::from_millis(106));
        assert!(reassembler.gap_wait() >= Duration::from_millis(90));
        reassembler.set_rtt(Duration::from_secs(5));
        assert_eq!(reassembler.gap_wait(), MAX_WAIT);
    }

    #[test]
    fn jitter_is_zero_for_a_perfectly_paced_stream_and_grows_with_irregular_arrival() {
        let start = Instant::now();
        let mut steady = JitterEstimator::with_clock_rate(90_000);
        let mut bumpy = JitterEstimator::with_clock_rate(90_000);
        for i in 0..100u32 {
            let t = start + Duration::from_millis(u64::from(i) * 33);
            steady.on_packet(i * 2970, t);
            let wobble = Duration::from_millis(if i % 2 == 0 { 0 } else { 20 });
            bumpy.on_packet(i * 2970, t + wobble);
        }
        assert!(steady.jitter() < Duration::from_millis(1));
        assert!(
            bumpy.jitter() > Duration::from_millis(10),
            "{:?}",
            bumpy.jitter()
        );
    }

    #[test]
    fn a_stap_a_cut_after_a_unit_with_one_byte_left_is_lost_not_a_panic() {
        // `rtc`'s depacketizer reads a length field past the end of this
        // payload and panics; `hostile_packets_never_panic_and_stay_bounded`
        // finds it within its default cases when the check is taken out.
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let stap_a = Bytes::from_static(&[0x18, 0x00, 0x01, 0x09, 0x00]);
        let out = reassembler.push(10, 0, true, stap_a, now);
        assert_eq!(out, vec![Reassembled::Lost { packets: 1 }]);
        assert!(aggregate_is_whole(&[0x18, 0x00, 0x01, 0x09]));
        assert!(!aggregate_is_whole(&[0x18, 0x00, 0x02, 0x09]));
    }

    #[test]
    fn a_frame_joined_after_its_unfragmented_head_is_lost_not_decoded() {
        // Two single-NAL packets, the first (slice at macroblock 0) lost: no
        // FU-A run to notice it, only that the first packet seen starts nothing.
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let tail = Bytes::from_static(&[0x41, 0x1a, 1, 2, 3]);
        let out = reassembler.push(101, 0, true, tail, now);
        assert_eq!(out, vec![Reassembled::Lost { packets: 1 }]);
        let next = Bytes::from_static(&[0x41, 0x9a, 1, 2, 3]);
        let out = reassembler.push(102, 3000, true, next, now);
        assert_eq!(units(&out), vec![3000]);
    }

    #[test]
    fn the_first_packets_swapped_still_give_the_first_frame() {
        let stream = Stream::new(40, 2, 2500);
        let mut packets = stream.packets;
        packets.swap(0, 1);
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let out: Vec<_> = packets
            .into_iter()
            .flat_map(|(s, t, m, p)| reassembler.push(s, t, m, p, now))
            .collect();
        assert_eq!(units(&out), vec![0, 3000]);
    }

    #[test]
    fn a_lost_marker_packet_costs_its_frame_only_not_the_next_one() {
        let stream = Stream::new(900, 3, 2500);
        let per_frame = stream.packets.len() / 3;
        let mut reassembler = VideoReassembler::new();
        let start = Instant::now();
        let mut out = Vec::new();
        for (i, (s, t, m, p)) in stream.packets.into_iter().enumerate() {
            if i == 2 * per_frame - 1 {
                continue; // frame 1's last packet, the one with the marker
            }
            out.extend(reassembler.push(s, t, m, p, start));
        }
        out.extend(reassembler.poll(start + MAX_WAIT));
        assert_eq!(units(&out), vec![0, 6000]);
        assert!(out.contains(&Reassembled::Lost {
            packets: per_frame as u64
        }));
    }

    #[test]
    fn a_stream_without_markers_never_buffers_more_than_its_cap() {
        let mut reassembler = VideoReassembler::new();
        let now = Instant::now();
        let payload = Bytes::from_static(&[0x41, 0x1a, 0]);
        let mut lost = 0;
        for i in 0..3 * MAX_BUFFERED as u32 {
            for r in reassembler.push(i as u16, i, false, payload.clone(), now) {
                assert!(matches!(r, Reassembled::Lost { .. }));
                lost += 1;
            }
            assert!(reassembler.buffer.len() <= MAX_BUFFERED);
        }
        assert!(lost >= 2, "started over when full");
    }

    mod properties {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        /// An RTP payload a hostile or broken sender might send.
        fn hostile_payload() -> impl Strategy<Value = Vec<u8>> {
            let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
            prop_oneof![
                bytes(40),
                Just(Vec::new()),
                // Single NAL units of every type.
                (0u8..=255, bytes(24)).prop_map(|(h, b)| [vec![h], b].concat()),
                // FU-A with any start/end/type bits, sometimes cut short.
                (0u8..8, any::<u8>(), bytes(24)).prop_map(|(nri, fu, b)| [
                    vec![28 | (nri << 5), fu],
                    b
                ]
                .concat()),
                (0u8..8).prop_map(|nri| vec![28 | (nri << 5)]),
                // STAP-A with lengths that may not fit.
                (
                    0u8..8,
                    proptest::collection::vec((0u16..12, bytes(10)), 0..4),
                    bytes(3)
                )
                    .prop_map(|(nri, units, tail)| {
                        let mut p = vec![24 | (nri << 5)];
                        for (len, b) in units {
                            p.extend_from_slice(&len.to_be_bytes());
                            p.extend(b);
                        }
                        p.extend(tail);
                        p
                    }),
            ]
        }

        #[derive(Debug, Clone)]
        enum Event {
            /// A packet: its sequence number a small step from the last one
            /// (back, repeat, forward) or anywhere; its timestamp a frame on or anywhere.
            Packet {
                seq_step: i32,
                seq_anywhere: Option<u16>,
                ts_anywhere: Option<u32>,
                marker: bool,
                payload: Vec<u8>,
                later_ms: u8,
            },
            Poll {
                later_ms: u16,
            },
            Rtt {
                ms: u16,
            },
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                8 => (
                    -4i32..6,
                    prop::option::weighted(0.1, any::<u16>()),
                    prop::option::weighted(0.1, any::<u32>()),
                    prop::bool::weighted(0.3),
                    hostile_payload(),
                    0u8..10,
                )
                    .prop_map(|(seq_step, seq_anywhere, ts_anywhere, marker, payload, later_ms)| {
                        Event::Packet { seq_step, seq_anywhere, ts_anywhere, marker, payload, later_ms }
                    }),
                1 => (0u16..1000).prop_map(|later_ms| Event::Poll { later_ms }),
                1 => any::<u16>().prop_map(|ms| Event::Rtt { ms }),
            ]
        }

        /// One RTP packet: sequence number, timestamp, marker, payload.
        type Packet = (u16, u32, bool, Bytes);
        /// The RTP packets of a stream.
        type Packets = Vec<Packet>;

        /// Real-shaped access units: a keyframe is SPS, PPS and IDR slices,
        /// a P picture slices whose first starts at macroblock 0.
        fn access_unit(keyframe: bool, nal_sizes: &[usize], seed: u8) -> Vec<u8> {
            let mut au = Vec::new();
            if keyframe {
                au.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda]);
                au.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
            }
            for (n, &size) in nal_sizes.iter().enumerate() {
                au.extend_from_slice(&[0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }]);
                au.push(if n == 0 { 0x9a } else { 0x1a });
                // No zero bytes: no start code can appear inside.
                au.extend((1..size).map(|i| (i as u8).wrapping_add(seed) | 1));
            }
            au
        }

        /// Packets of each frame, and what the depacketizer makes of each whole frame.
        fn packetize_stream(
            frames: &[(bool, Vec<usize>)],
            first_seq: u16,
            first_ts: u32,
        ) -> (Vec<Packets>, Vec<Bytes>) {
            let mut payloader = H264Payloader::default();
            let mut seq = first_seq;
            let (mut per_frame, mut expected) = (Vec::new(), Vec::new());
            for (f, (keyframe, sizes)) in frames.iter().enumerate() {
                let ts = first_ts.wrapping_add(f as u32 * 3000);
                let au = access_unit(*keyframe, sizes, f as u8);
                let payloads = payloader
                    .payload(1200, &Bytes::from(au))
                    .expect("packetizes");
                let count = payloads.len();
                let mut depacketizer = H264Packet::default();
                let mut whole = BytesMut::new();
                let mut packets = Vec::new();
                for (i, payload) in payloads.into_iter().enumerate() {
                    whole.extend_from_slice(&depacketizer.depacketize(&payload).expect("valid"));
                    packets.push((seq, ts, i + 1 == count, payload));
                    seq = seq.wrapping_add(1);
                }
                per_frame.push(packets);
                expected.push(whole.freeze());
            }
            (per_frame, expected)
        }

        proptest! {
            // 256 cases, or `PROPTEST_CASES` (docs/fuzzing.md).
            /// Whatever a sender sends: no panic, the buffer within its cap,
            /// no empty access unit, and the next deadline always computable.
            #[test]
            fn hostile_packets_never_panic_and_stay_bounded(
                first_seq in any::<u16>(),
                first_ts in any::<u32>(),
                events in proptest::collection::vec(event(), 1..300),
            ) {
                let mut reassembler = VideoReassembler::new();
                let (mut seq, mut ts, mut now) = (first_seq, first_ts, Instant::now());
                for event in events {
                    let out = match event {
                        Event::Packet { seq_step, seq_anywhere, ts_anywhere, marker, payload, later_ms } => {
                            seq = seq_anywhere.unwrap_or(seq.wrapping_add_signed(seq_step as i16));
                            ts = ts_anywhere.unwrap_or(if marker { ts.wrapping_add(3000) } else { ts });
                            now += Duration::from_millis(u64::from(later_ms));
                            reassembler.push(seq, ts, marker, Bytes::from(payload), now)
                        }
                        Event::Poll { later_ms } => {
                            now += Duration::from_millis(u64::from(later_ms));
                            reassembler.poll(now)
                        }
                        Event::Rtt { ms } => {
                            reassembler.set_rtt(Duration::from_millis(u64::from(ms)));
                            Vec::new()
                        }
                    };
                    prop_assert!(reassembler.buffer.len() <= MAX_BUFFERED);
                    for r in out {
                        if let Reassembled::AccessUnit { data, .. } = r {
                            prop_assert!(!data.is_empty());
                        }
                    }
                    if let Some(deadline) = reassembler.next_deadline() {
                        prop_assert!(deadline <= now + MAX_WAIT);
                    }
                    prop_assert!(reassembler.gap_wait() >= MIN_WAIT && reassembler.gap_wait() <= MAX_WAIT);
                }
            }

            /// A real-shaped stream through loss, duplication and reordering:
            /// what comes out is exactly the frames all of whose packets
            /// arrived, each byte for byte, in order. (A frame with any packet
            /// missing, its first FU-A fragment included, never comes out.)
            /// Frames before the first packet that arrived are not owed (the
            /// receiver cannot tell they existed), but may come out if whole.
            #[test]
            fn lossy_reordered_streams_give_exactly_the_whole_frames(
                (frames, first_seq, first_ts, fates, lost_per_mille) in
                    (
                        proptest::collection::vec(
                            (any::<bool>(), proptest::collection::vec(2usize..3000, 1..4)),
                            1..10,
                        ),
                        any::<u16>(),
                        any::<u32>(),
                        0u32..300,
                        0usize..8,
                    )
                    .prop_flat_map(|(frames, first_seq, first_ts, lost_per_mille, depth)| {
                        let count = packetize_stream(&frames, first_seq, first_ts).0.concat().len();
                        let fates = proptest::collection::vec(
                            (0u32..1000, 0..=depth, prop::bool::weighted(0.05)),
                            count,
                        );
                        (Just(frames), Just(first_seq), Just(first_ts), fates, Just(lost_per_mille))
                    })
            ) {
                let (per_frame, expected) = packetize_stream(&frames, first_seq, first_ts);
                // Delivery order: each packet moved up to `depth` places later,
                // some lost, some twice.
                let mut delivery: Vec<(usize, usize, Packet)> = Vec::new();
                let mut index = 0;
                for (f, packets) in per_frame.iter().enumerate() {
                    for packet in packets {
                        let (roll, shift, twice) = fates[index];
                        if roll >= lost_per_mille {
                            delivery.push((index + shift, f, packet.clone()));
                            if twice {
                                delivery.push((index + shift + 1, f, packet.clone()));
                            }
                        }
                        index += 1;
                    }
                }
                delivery.sort_by_key(|(key, _, _)| *key);
                let mut arrived: HashMap<usize, std::collections::HashSet<u16>> = HashMap::new();
                for (_, f, packet) in &delivery {
                    arrived.entry(*f).or_default().insert(packet.0);
                }
                let whole = |f: usize| arrived.get(&f).is_some_and(|s| s.len() == per_frame[f].len());

                let mut reassembler = VideoReassembler::new();
                let now = Instant::now();
                let mut out = Vec::new();
                for (_, _, (s, t, m, p)) in &delivery {
                    out.extend(reassembler.push(*s, *t, *m, p.clone(), now));
                }
                out.extend(reassembler.poll(now + Duration::from_secs(10)));

                let by_ts: HashMap<u32, usize> = (0..frames.len())
                    .map(|f| (first_ts.wrapping_add(f as u32 * 3000), f))
                    .collect();
                let mut emitted = Vec::new();
                for r in &out {
                    if let Reassembled::AccessUnit { data, rtp_timestamp } = r {
                        let f = by_ts[rtp_timestamp];
                        prop_assert!(whole(f), "frame {} came out with packets missing", f);
                        prop_assert_eq!(data, &expected[f], "frame {} bytes", f);
                        emitted.push(f);
                    }
                }
                prop_assert!(emitted.windows(2).all(|w| w[0] < w[1]), "order {:?}", emitted);
                if let Some((_, first_frame, first_packet)) = delivery.first() {
                    let from = if per_frame[*first_frame][0].0 == first_packet.0 {
                        *first_frame
                    } else {
                        first_frame + 1
                    };
                    // Earlier whole frames may come out too (reordered at the start).
                    let owed: Vec<usize> = (from..frames.len()).filter(|&f| whole(f)).collect();
                    let emitted_owed: Vec<usize> =
                        emitted.iter().copied().filter(|&f| f >= from).collect();
                    prop_assert_eq!(emitted_owed, owed);
                }
            }
        }
    }
}
