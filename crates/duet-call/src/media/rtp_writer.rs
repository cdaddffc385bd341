//! Encoded media onto whichever peer connection is current, as RTP, and what
//! the remote says back about our video.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::counters::bump;
use super::shared::MediaShared;
use crate::interceptors::count_feedback;

/// Payload size limit for RTP packets (leaves room for SRTP and extensions under a 1280 MTU).
const RTP_MTU: usize = 1150;

/// One encoded unit on its way to the network.
#[derive(Debug)]
pub(crate) struct EncodedUnit {
    pub(crate) data: Bytes,
    pub(crate) capture_time: SystemTime,
    /// Audio: the samples the unit carries, by which its stream's RTP
    /// timestamp advances. Video (`None`): the timestamp follows capture time.
    pub(crate) samples: Option<u32>,
}

/// Where encoded media goes now: the current connection's tracks.
#[derive(Clone)]
pub(crate) struct Outbound {
    /// Track.
    pub(crate) track: Arc<TrackLocalStaticRTP>,
    /// Its SSRC.
    pub(crate) ssrc: u32,
    /// Negotiated payload type.
    pub(crate) payload_type: u8,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

/// RTP state of one outgoing stream: sequence numbers and timestamps.
///
/// Video timestamps are capture time in 90 kHz ticks. Audio timestamps
/// advance by exactly the samples each packet carries, as receivers expect
/// (RFC 3550, 5.1): a microphone's capture times wander by a few hundred
/// microseconds from packet to packet, and timestamps taken from them made
/// every receiver that plays by timestamp hear gaps and overlaps. Only when
/// more than [`AUDIO_GAP_PACKETS`] packets' worth of time passed between two
/// captures (the source paused) does an audio timestamp skip, by whole
/// packets, so that the receiver sees the pause as the gap it was. A device
/// clock that drifts from the system clock never causes a skip: that is the
/// receiver's to absorb.
struct RtpStream {
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    first_capture: Option<SystemTime>,
    clock_rate: u32,
    /// Audio: ticks since the first unit at which the next unit starts.
    next_audio_ticks: u64,
    /// Audio: capture time of the previous unit, in ticks since the first.
    last_audio_capture: Option<u64>,
}

/// Packets' worth of time between two audio captures beyond which the
/// timestamp skips the gap.
const AUDIO_GAP_PACKETS: u64 = 3;

impl RtpStream {
    fn new(ssrc: u32, clock_rate: u32) -> RtpStream {
        RtpStream {
            ssrc,
            sequence: rand::random(),
            timestamp_base: rand::random(),
            first_capture: None,
            clock_rate,
            next_audio_ticks: 0,
            last_audio_capture: None,
        }
    }

    /// The RTP timestamp of a unit captured at `capture` carrying `samples`
    /// (audio) or none (video).
    fn timestamp(&mut self, capture: SystemTime, samples: Option<u32>) -> u32 {
        let first = *self.first_capture.get_or_insert(capture);
        let elapsed = capture.duration_since(first).unwrap_or_default();
        let captured_at = (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64;
        let ticks = match samples {
            None => captured_at,
            Some(samples) => {
                let step = u64::from(samples.max(1));
                if let Some(last) = self.last_audio_capture.replace(captured_at) {
                    let since = captured_at.saturating_sub(last);
                    if since > (AUDIO_GAP_PACKETS + 1) * step {
                        self.next_audio_ticks += (since - step) / step * step;
                    }
                }
                let start = self.next_audio_ticks;
                self.next_audio_ticks += step;
                start
            }
        };
        self.timestamp_base.wrapping_add(ticks as u32)
    }

    fn packet(&mut self, payload: Bytes, timestamp: u32, marker: bool, pt: u8) -> rtc::rtp::Packet {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker,
                payload_type: pt,
                sequence_number: self.sequence,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        };
        self.sequence = self.sequence.wrapping_add(1);
        packet
    }
}

/// Moves encoded units onto the current connection's track as RTP.
pub(crate) async fn run_rtp_writer(
    mut units: mpsc::Receiver<EncodedUnit>,
    mut outbound: watch::Receiver<Option<Outbound>>,
    video: bool,
) {
    let clock_rate = if video { 90_000 } else { 48_000 };
    let mut stream: Option<RtpStream> = None;
    let mut payloader = H264Payloader::default();
    while let Some(unit) = units.recv().await {
        let Some(out) = outbound.borrow_and_update().clone() else {
            stream = None;
            continue;
        };
        let stream = match &mut stream {
            Some(stream) if stream.ssrc == out.ssrc => stream,
            _ => stream.insert(RtpStream::new(out.ssrc, clock_rate)),
        };
        let timestamp = stream.timestamp(unit.capture_time, unit.samples);
        let payloads = if video {
            match payloader.payload(RTP_MTU, &unit.data) {
                Ok(payloads) => payloads,
                Err(err) => {
                    tracing::warn!(%err, "cannot packetize an access unit");
                    continue;
                }
            }
        } else {
            vec![unit.data]
        };
        let count = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            // Video: the marker ends a frame. Audio: it is left clear (no talk-spurt signalling).
            let marker = video && i + 1 == count;
            let packet = stream.packet(payload, timestamp, marker, out.payload_type);
            if let Err(err) = out.track.write_rtp(packet).await {
                tracing::debug!(%err, "RTP write failed (connection closing?)");
                break;
            }
        }
    }
}

/// Reads what the remote says about our outgoing video: keyframe requests and NACKs.
pub(crate) async fn run_sender_feedback(track: Arc<TrackLocalStaticRTP>, shared: Arc<MediaShared>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        let (keyframe_requests, nacks) = count_feedback(&packets);
        if keyframe_requests > 0 {
            shared.keyframe_wanted.store(true, Ordering::Relaxed);
        }
        bump(&shared.counters.pli_received, keyframe_requests);
        bump(&shared.counters.nack_received, nacks);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn video_timestamps_follow_capture_time_not_frame_count() {
        let mut stream = RtpStream::new(1, 90_000);
        let start = SystemTime::now();
        let t0 = stream.timestamp(start, None);
        let t1 = stream.timestamp(start + Duration::from_millis(33), None);
        let t2 = stream.timestamp(start + Duration::from_millis(100), None);
        assert_eq!(t1.wrapping_sub(t0), 2970);
        assert_eq!(t2.wrapping_sub(t0), 9000);
    }

    #[test]
    fn audio_timestamps_step_by_the_samples_whatever_the_capture_times() {
        // Capture times as a microphone gives them: 20 ms give or take 0.3 ms.
        let mut stream = RtpStream::new(1, 48_000);
        let start = SystemTime::now();
        let wobble = [0i64, 310, -250, 120, -300, 280, 0, -90, 200, -310];
        let mut previous = None;
        for (i, offset_us) in wobble.iter().enumerate() {
            let capture = start + Duration::from_millis(20 * i as u64);
            let capture = if *offset_us >= 0 {
                capture + Duration::from_micros(offset_us.unsigned_abs())
            } else {
                capture - Duration::from_micros(offset_us.unsigned_abs())
            };
            let timestamp = stream.timestamp(capture, Some(960));
            if let Some(previous) = previous {
                assert_eq!(timestamp.wrapping_sub(previous), 960, "packet {i}");
            }
            previous = Some(timestamp);
        }
    }

    #[test]
    fn an_audio_pause_skips_whole_packets() {
        let mut stream = RtpStream::new(1, 48_000);
        let start = SystemTime::now();
        let t0 = stream.timestamp(start, Some(960));
        // 40 ms late is jitter, not a pause: still the next packet.
        let t1 = stream.timestamp(start + Duration::from_millis(60), Some(960));
        assert_eq!(t1.wrapping_sub(t0), 960);
        // 480 ms of nothing, then sound again: the gap shows, in packets.
        let t2 = stream.timestamp(start + Duration::from_millis(540), Some(960));
        assert_eq!(t2.wrapping_sub(t1), 960 * 24);
        let t3 = stream.timestamp(start + Duration::from_millis(560), Some(960));
        assert_eq!(t3.wrapping_sub(t2), 960);
    }

    #[test]
    fn a_device_clock_that_drifts_never_makes_a_skip() {
        // A microphone 1 % fast against the system clock, for 10 s.
        let mut stream = RtpStream::new(1, 48_000);
        let start = SystemTime::now();
        let t0 = stream.timestamp(start, Some(960));
        let mut last = t0;
        for i in 1..500u64 {
            let capture = start + Duration::from_micros(i * 19_800);
            last = stream.timestamp(capture, Some(960));
        }
        assert_eq!(last.wrapping_sub(t0), 499 * 960);
    }

    #[test]
    fn sequence_numbers_run_on_across_the_wrap() {
        let mut stream = RtpStream::new(1, 48_000);
        stream.sequence = u16::MAX;
        let a = stream.packet(Bytes::from_static(b"a"), 0, false, 111);
        let b = stream.packet(Bytes::from_static(b"b"), 0, false, 111);
        assert_eq!(a.header.sequence_number, u16::MAX);
        assert_eq!(b.header.sequence_number, 0);
    }
}
