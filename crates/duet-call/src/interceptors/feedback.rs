//! Inbound RTCP the application acts on: keyframe requests and NACKs.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// Marks the inbound RTCP the application acts on (keyframe requests, NACKs) for
/// delivery to the local track, and passes every packet on unchanged: the
/// interceptors before it (reports, NACK responder, congestion control) have
/// already seen it, and dropping any would starve them.
#[derive(Default)]
pub(crate) struct FeedbackToApplication {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

fn is_feedback_for_application(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets
                .iter()
                .any(|p| is_feedback_for_application(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Counts an RTCP compound's keyframe requests and NACKs.
pub(crate) fn count_feedback(packets: &[Box<dyn rtc::rtcp::Packet>]) -> (u64, u64) {
    let mut keyframe_requests = 0;
    let mut nacks = 0;
    for packet in packets {
        let any = packet.as_any();
        if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
            keyframe_requests += 1;
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            nacks += nack.nacks.len() as u64;
        }
    }
    (keyframe_requests, nacks)
}

/// A PLI for the stream with this SSRC.
pub(crate) fn picture_loss_indication(media_ssrc: u32) -> Vec<Box<dyn rtc::rtcp::Packet>> {
    vec![Box::new(PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    })]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_counting_sees_keyframe_requests_and_each_nacked_packet() {
        let mut packets = picture_loss_indication(7);
        packets.push(Box::new(FullIntraRequest::default()));
        packets.push(Box::new(TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc: 7,
            nacks: vec![Default::default(), Default::default()],
        }));
        assert_eq!(count_feedback(&packets), (2, 2));
    }
}
