//! [`MediaPacer`]: the [`PacingQueue`] as an interceptor in webrtc-rs's chain,
//! in the pacer's place. It stamps each packet with the instant it left
//! (the congestion controller's departure: the instant it was written would
//! charge the wait here to the path), and holds video back while the peer's
//! feedback is late ([`FeedbackWatch`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket,
};

use super::SendBudget;
use super::feedback_watch::FeedbackWatch;
use super::pacing::{PacingDrops, PacingQueue, PacingTotals, PacketClass, ResendOf};
use super::wire::wire_bytes;

/// How often the send side's mix is logged (at debug).
const MIX_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// How often what is not fresh video is measured for the [`SendBudget`].
const OVERHEAD_INTERVAL: Duration = Duration::from_millis(250);

/// Sorts outgoing packets into audio, fresh video and retransmissions, sends
/// them through a [`PacingQueue`] that follows the congestion controller's
/// target, and tells the video encoder (through the [`SendBudget`]) how much
/// of that target audio, RTCP and resends took.
pub(crate) struct MediaPacer {
    queue: PacingQueue<TaggedPacket>,
    /// The payload type that is audio.
    audio_payload_type: u8,
    reads: VecDeque<TaggedPacket>,
    /// What the queue had dropped when last logged.
    logged_drops: PacingDrops,
    /// What the queue let out since its mix was last logged.
    mix_log: TotalsWindow,
    budget: SendBudget,
    /// What the queue let out since the overhead was last measured.
    overhead: TotalsWindow,
    /// Fresh video written since the overhead was last measured.
    video_written: VideoBits,
    /// The RTX streams of the local tracks: a resend on one of them names
    /// the packet it repeats in its first two bytes (RFC 4588).
    rtx_ssrcs: Vec<u32>,
    /// Whether the peer's feedback is late; `None` until a local stream
    /// that the peer reports on (transport-wide feedback) is bound.
    watch: Option<FeedbackWatch>,
}

/// Bits of fresh video: its RTP payload, and all it takes on the wire.
#[derive(Debug, Default, Clone, Copy)]
struct VideoBits {
    payload: f64,
    wire: f64,
}

/// What a [`PacingQueue`] let out over one period: the send queue's
/// figures for a log line or for the [`SendBudget`].
struct TotalsWindow {
    period: Duration,
    since: Instant,
    at_start: PacingTotals,
}

impl TotalsWindow {
    fn new(period: Duration, now: Instant) -> TotalsWindow {
        TotalsWindow {
            period,
            since: now,
            at_start: PacingTotals::default(),
        }
    }

    /// Once the period is over: how long it was, and the bits let out in
    /// it (by class); a new period starts.
    fn close(&mut self, now: Instant, totals: PacingTotals) -> Option<(f64, PacingTotals)> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < self.period {
            return None;
        }
        let before = self.at_start;
        (self.since, self.at_start) = (now, totals);
        Some((
            elapsed.as_secs_f64(),
            PacingTotals {
                immediate_bits: totals.immediate_bits - before.immediate_bits,
                fresh_bits: totals.fresh_bits - before.fresh_bits,
                resend_bits: totals.resend_bits - before.resend_bits,
            },
        ))
    }
}

impl MediaPacer {
    pub(crate) fn new(target_bps: f64, audio_payload_type: u8, budget: SendBudget) -> MediaPacer {
        let now = Instant::now();
        MediaPacer {
            queue: PacingQueue::new(target_bps),
            audio_payload_type,
            reads: VecDeque::new(),
            logged_drops: PacingDrops::default(),
            mix_log: TotalsWindow::new(MIX_LOG_INTERVAL, now),
            budget,
            overhead: TotalsWindow::new(OVERHEAD_INTERVAL, now),
            video_written: VideoBits::default(),
            rtx_ssrcs: Vec::new(),
            watch: None,
        }
    }

    /// Holds video back while the peer's feedback is late
    /// ([`FeedbackWatch`]), and lets it go when it comes.
    fn follow_feedback(&mut self, now: Instant) {
        let Some(watch) = &mut self.watch else {
            return;
        };
        if let Some(until) = self.budget.reported_until() {
            watch.on_reported(now, until);
        }
        if let Some(round_trip) = self.budget.round_trip() {
            watch.set_round_trip(round_trip);
        }
        let late = watch.late(now);
        match (late, self.queue.held()) {
            (true, false) if watch.awaiting_first_report() => {
                tracing::debug!("the peer's first feedback is late: video waits for it");
                self.budget.note_waited_for_first_report();
            }
            (true, false) => tracing::debug!("the peer's feedback is late: video waits for it"),
            (false, true) => tracing::debug!("the peer's feedback came: video goes again"),
            _ => {}
        }
        self.queue.set_held(now, late);
    }

    /// Every [`OVERHEAD_INTERVAL`]: what went out that was not fresh video.
    fn measure_overhead(&mut self, now: Instant) {
        if let Some((seconds, sent)) = self.overhead.close(now, self.queue.totals()) {
            let bits = sent.immediate_bits + sent.resend_bits;
            self.budget.set_overhead((bits / seconds).max(0.0) as u64);
            let video = std::mem::take(&mut self.video_written);
            if video.wire > 0.0 {
                self.budget
                    .set_video_payload_share(video.payload / video.wire);
            }
        }
    }

    /// Once a second, at debug: what went out, by class, against the rate.
    fn log_mix(&mut self, now: Instant) {
        if let Some((seconds, sent)) = self.mix_log.close(now, self.queue.totals()) {
            let kbps = |bits: f64| (bits / seconds / 1000.0).round();
            tracing::debug!(
                audio_rtcp_kbps = kbps(sent.immediate_bits),
                fresh_video_kbps = kbps(sent.fresh_bits),
                resend_kbps = kbps(sent.resend_bits),
                pacing_kbps = (self.queue.rate_bps() / 1000.0).round(),
                repeated_resends_so_far = self.queue.drops().repeated_resends,
                "send queue, last second"
            );
        }
    }

    /// The NACK responder marks what it resends, whether as the packet
    /// again or on an RTX stream.
    fn classify(&self, packet: &AttributedPacket) -> PacketClass {
        let Packet::Rtp(rtp) = &packet.packet else {
            return PacketClass::Immediate;
        };
        if rtp.header.payload_type == self.audio_payload_type {
            PacketClass::Immediate
        } else if packet.has(&Attribute::Retransmission) {
            let original = rtp
                .payload
                .get(..2)
                .filter(|_| self.rtx_ssrcs.contains(&rtp.header.ssrc))
                .map_or(rtp.header.sequence_number, |osn| {
                    u16::from_be_bytes([osn[0], osn[1]])
                });
            PacketClass::Resend(ResendOf {
                ssrc: rtp.header.ssrc,
                sequence_number: original,
            })
        } else {
            PacketClass::FreshVideo
        }
    }
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for MediaPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(watch) = &mut self.watch {
            watch.on_heard(msg.now);
        }
        self.follow_feedback(msg.now);
        // The congestion controller (wire-most) attaches a new target to the
        // feedback that produced it, on its way in.
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            self.queue
                .set_target(*bits_per_second, self.budget.path_limited());
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let class = self.classify(&msg.message);
        let bits = (wire_bytes(&msg.message.packet) * 8) as f64;
        if class == PacketClass::FreshVideo
            && let Packet::Rtp(rtp) = &msg.message.packet
        {
            self.video_written.payload += (rtp.payload.len() * 8) as f64;
            self.video_written.wire += bits;
        }
        let now = msg.now;
        self.follow_feedback(now);
        self.queue.push(now, class, bits, msg);
        self.budget
            .set_video_waiting_since(self.queue.oldest_fresh());
        self.measure_overhead(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        // The congestion controller, wire-ward, records `now` as the
        // packet's departure.
        let (released, mut packet) = self.queue.pop_ready()?;
        packet.now = released;
        if let (Some(watch), Packet::Rtp(_)) = (&mut self.watch, &packet.message.packet) {
            watch.on_sent(released);
        }
        Some(packet)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.follow_feedback(now);
        self.queue.release(now);
        self.budget
            .set_video_waiting_since(self.queue.oldest_fresh());
        let drops = self.queue.drops();
        let stale = |d: PacingDrops| (d.stale_resends, d.stale_video);
        if stale(drops) != stale(self.logged_drops) {
            tracing::debug!(
                stale_resends = drops.stale_resends,
                stale_video = drops.stale_video,
                "send queue dropped packets that waited too long"
            );
            self.logged_drops = drops;
        }
        self.log_mix(now);
        self.measure_overhead(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.queue.next_release()
    }
}

impl Interceptor for MediaPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let reported_on = info
            .rtp_header_extensions
            .iter()
            .any(|extension| extension.uri == rtc::sdp::extmap::TRANSPORT_CC_URI);
        if reported_on && self.watch.is_none() {
            self.watch = Some(FeedbackWatch::default());
        }
        if let Some(rtx) = info.ssrc_rtx
            && !self.rtx_ssrcs.contains(&rtx)
        {
            self.rtx_ssrcs.push(rtx);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.rtx_ssrcs.retain(|ssrc| Some(*ssrc) != info.ssrc_rtx);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload_type: u8, sequence_number: u16) -> Packet {
        Packet::Rtp(rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number,
                ..Default::default()
            },
            payload: vec![0; 100].into(),
        })
    }

    #[test]
    fn resends_are_known_by_the_responders_mark_not_by_their_numbers() {
        let pacer = MediaPacer::new(1e6, 111, SendBudget::default());
        let class = |packet: AttributedPacket| pacer.classify(&packet);
        assert_eq!(class(rtp(111, 5).into()), PacketClass::Immediate);
        assert_eq!(class(rtp(102, 5).into()), PacketClass::FreshVideo);
        // An RTX resend has a new, higher number on its own stream; a resend
        // without RTX has the old one. The mark is what tells either.
        let resend = |packet| AttributedPacket::new(packet).with(Attribute::Retransmission);
        let resend_of = |ssrc, sequence_number| {
            PacketClass::Resend(ResendOf {
                ssrc,
                sequence_number,
            })
        };
        assert_eq!(class(resend(rtp(103, 9))), resend_of(0, 9));
        assert_eq!(class(resend(rtp(102, 4))), resend_of(0, 4));
        assert_eq!(class(Packet::Rtcp(vec![]).into()), PacketClass::Immediate);
    }

    #[test]
    fn a_resend_on_an_rtx_stream_is_known_by_the_number_it_carries() {
        let mut pacer = MediaPacer::new(1e6, 111, SendBudget::default());
        pacer.bind_local_stream(&StreamInfo {
            ssrc: 40,
            ssrc_rtx: Some(41),
            ..Default::default()
        });
        let rtx = |rtx_sequence_number, original: u16| {
            let Packet::Rtp(mut packet) = rtp(103, rtx_sequence_number) else {
                unreachable!("rtp() makes RTP packets")
            };
            packet.header.ssrc = 41;
            let mut payload = original.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0; 100]);
            packet.payload = payload.into();
            AttributedPacket::new(Packet::Rtp(packet)).with(Attribute::Retransmission)
        };
        // Two resends of packet 700, each with a number of its own.
        for rtx_sequence_number in [3, 4] {
            assert_eq!(
                pacer.classify(&rtx(rtx_sequence_number, 700)),
                PacketClass::Resend(ResendOf {
                    ssrc: 41,
                    sequence_number: 700,
                })
            );
        }
    }

    #[test]
    fn a_packet_leaves_stamped_with_when_it_left_not_when_it_came() {
        use rtc::sansio::Protocol;

        // 100 kbit/s, paced at 250: 30 packets of 1200 bits written at
        // once, 12 kbit of them in the burst, the rest 4.8 ms apart.
        let mut pacer = MediaPacer::new(100_000.0, 111, SendBudget::default());
        let start = Instant::now();
        for n in 0..30 {
            let message = TaggedPacket {
                now: start,
                transport: Default::default(),
                message: rtp(102, n).into(),
            };
            pacer.handle_write(message).expect("queued");
        }
        let mut departures = Vec::new();
        for ms in 0..200 {
            pacer
                .handle_timeout(start + Duration::from_millis(ms))
                .expect("released");
            while let Some(packet) = pacer.poll_write() {
                departures.push(packet.now.duration_since(start).as_millis());
            }
        }
        assert_eq!(departures.len(), 30);
        assert_eq!(departures[0], 0);
        let last = departures[29];
        assert!((90..=100).contains(&last), "{departures:?}");
    }

    #[test]
    fn the_encoder_is_told_what_share_of_its_packets_is_payload() {
        use rtc::sansio::Protocol;

        let budget = SendBudget::default();
        let mut pacer = MediaPacer::new(1e6, 111, budget.clone());
        budget.set_target(100_000);
        let start = Instant::now();
        for (n, payload_type) in [(0u16, 102u8), (1, 111), (2, 102)] {
            let message = TaggedPacket {
                now: start + Duration::from_millis(u64::from(n) * 10),
                transport: Default::default(),
                message: rtp(payload_type, n).into(),
            };
            pacer.handle_write(message).expect("queued");
        }
        pacer
            .handle_timeout(start + OVERHEAD_INTERVAL + Duration::from_millis(1))
            .expect("released");
        // Video's packets: 100 bytes of payload in 100 + 12 (RTP) + 38 on the
        // wire; audio's packet counts as overhead, not in the share.
        let audio_bps = 150.0 * 8.0 / (OVERHEAD_INTERVAL.as_secs_f64() + 0.001);
        let expected = (100_000.0 - audio_bps) * 100.0 / 150.0;
        let video = budget.video_bps() as f64;
        assert!(
            (video - expected).abs() < 100.0,
            "{video} against {expected}"
        );
    }
}
