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
use crate::peer::count_feedback;

/// Payload size limit for RTP packets (leaves room for SRTP and extensions under a 1280 MTU).
const RTP_MTU: usize = 1150;

/// One encoded unit on its way to the network.
#[derive(Debug)]
pub(crate) struct EncodedUnit {
    pub(crate) data: Bytes,
    pub(crate) capture_time: SystemTime,
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

/// RTP state of one outgoing stream: sequence numbers and capture-time timestamps.
struct RtpStream {
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    first_capture: Option<SystemTime>,
    clock_rate: u32,
}

impl RtpStream {
    fn new(ssrc: u32, clock_rate: u32) -> RtpStream {
        RtpStream {
            ssrc,
            sequence: rand::random(),
            timestamp_base: rand::random(),
            first_capture: None,
            clock_rate,
        }
    }

    /// The RTP timestamp of a unit captured at `capture`: capture time in clock ticks.
    fn timestamp(&mut self, capture: SystemTime) -> u32 {
        let first = *self.first_capture.get_or_insert(capture);
        let elapsed = capture.duration_since(first).unwrap_or_default();
        let ticks = (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64;
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

/// Moves encoded units onto the current connection's track as RTP, timestamps from capture time.
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
        let timestamp = stream.timestamp(unit.capture_time);
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
    fn rtp_timestamps_follow_capture_time_not_frame_count() {
        let mut stream = RtpStream::new(1, 90_000);
        let start = SystemTime::now();
        let t0 = stream.timestamp(start);
        let t1 = stream.timestamp(start + Duration::from_millis(33));
        let t2 = stream.timestamp(start + Duration::from_millis(100));
        assert_eq!(t1.wrapping_sub(t0), 2970);
        assert_eq!(t2.wrapping_sub(t0), 9000);
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
