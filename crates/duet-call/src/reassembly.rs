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
    jitter: JitterEstimator,
    /// `None` until measured.
    rtt: Option<Duration>,
}

impl Default for VideoReassembler {
    fn default() -> Self {
        VideoReassembler {
            buffer: BTreeMap::new(),
            next: None,
            highest: None,
            jitter: JitterEstimator::with_clock_rate(90_000),
            rtt: None,
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

    /// When [`poll`](Self::poll) next has something to do: the moment the oldest
    /// waiting packet has waited long enough. `None` when nothing waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.buffer.values().map(|p| p.arrived).min()?;
        Some(oldest + self.gap_wait())
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
        if self.next.is_some_and(|next| seq < next) {
            // Late or duplicate: its frame is already out (or given up on).
            return Vec::new();
        }
        if self.next.is_none() {
            self.next = Some(seq);
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
                out.push(self.take_frame(next, end));
                continue;
            }
            // Stuck on a gap: give up once the oldest waiting packet has waited long enough.
            let oldest = self.buffer.values().map(|p| p.arrived).min();
            let Some(oldest) = oldest else { return };
            if now.saturating_duration_since(oldest) < self.gap_wait() {
                return;
            }
            // Drop up to the end of the broken frame: the first marker after the gap.
            let end = self
                .buffer
                .range(next..)
                .find(|(_, p)| p.marker)
                .map(|(seq, _)| *seq);
            let Some(end) = end else {
                // No frame end in sight yet; wait for more packets.
                return;
            };
            let dropped = end + 1 - next;
            self.buffer.retain(|seq, _| *seq > end);
            self.next = Some(end + 1);
            out.push(Reassembled::Lost { packets: dropped });
        }
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
    const FU_A: u8 = 28;

    /// Whether `payload` may follow what came before it.
    fn accepts(&mut self, payload: &[u8]) -> bool {
        let nal_type = payload.first().map(|b| b & 0x1f);
        if nal_type != Some(Self::FU_A) {
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
            self.jitter_s += (d - self.jitter_s) / 16.0;
        }
        self.last = Some((timestamp, arrived));
    }

    /// The estimate.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter_s.clamp(0.0, 10.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::packetizer::Payloader;

    /// Packets of one access unit with `nal_count` NAL units of `nal_size` bytes each.
    fn packetize(frame: u32, nal_size: usize) -> Vec<(bool, Bytes)> {
        let mut annex_b = Vec::new();
        for nal in 0..2u8 {
            annex_b.extend_from_slice(&[0, 0, 0, 1, 0x65]);
            annex_b.extend((0..nal_size).map(|i| (i as u32 + frame) as u8 ^ nal));
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
        assert_eq!(&data[..5], &[0, 0, 0, 1, 0x65]);
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
}
