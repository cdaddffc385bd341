//! The interceptor chain of a Duet peer connection: congestion control
//! (transport-wide feedback into GCC, whose target drives the encoder and
//! [`MediaPacer`]), NACK with a fast generator, RTCP reports, and the
//! feedback the application acts on.
//!
//! Built slot by slot rather than with webrtc-rs's `configure_*` helpers:
//! those put their own pacer and a 100 ms NACK tick in, and replacing a slot
//! afterwards logs a warning for every call.

mod arrival_spacing;
mod delivery_guard;
mod estimator;
mod feedback;
mod feedback_watch;
mod loss_sample;
mod pacer;
mod pacing;
mod path_queue;
mod recent_packets;
mod send_budget;
mod start_ramp;
mod wire;

use std::time::{Duration, Instant};

use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder,
    Registry, SenderReportBuilder, Slot, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

pub(crate) use feedback::{count_feedback, picture_loss_indication};
pub(crate) use send_budget::SendBudget;

use estimator::PublishingEstimator;
use feedback::FeedbackToApplication;
use pacer::MediaPacer;

/// How often missing packets are asked for again. A gap is asked for at the
/// next tick after it is seen, so this is most of the time a loss costs
/// beyond a round trip (webrtc-rs's default is 100 ms).
pub(crate) const NACK_INTERVAL: Duration = Duration::from_millis(20);
/// How often one packet is asked for. The generator does not know the round
/// trip: it asks again every tick until the packet comes, so on a 120 ms
/// round trip every ask beyond the first brings a duplicate. Each ask is one
/// more try at a loss that is otherwise for good (a freeze until the next
/// keyframe, ~0.5 s): at 5 % loss an ask or its resend is lost one time in
/// ten, and with three asks 0.3 packets a minute were lost for good
/// (measured: 10 directions of a 60 s call), with four 10 times fewer, for
/// one more resend per lost packet (~45 kbit/s of 1 Mbit/s at 5 % loss).
const MAX_NACKS_PER_PACKET: u16 = 4;
/// Sent packets kept for retransmission: ~2 s of 1.5 Mbit/s video.
const RESEND_HISTORY: u16 = 4096;

/// Bounds of the congestion controller's target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VideoBitrates {
    /// The lowest target of the whole connection (audio's share included).
    pub(crate) min_bps: u32,
    pub(crate) max_bps: u32,
    /// Start at `max_bps` rather than climb to it (`--bitrate`).
    pub(crate) start_at_max: bool,
}

/// Registers the feedback Duet's chain needs in `media` and builds the chain.
/// `budget` is where the congestion controller publishes its target and the
/// pacer what is not fresh video.
pub(crate) fn build_registry(
    media: &mut MediaEngine,
    bitrates: VideoBitrates,
    audio_payload_type: u8,
    budget: SendBudget,
) -> Result<Registry, rtc::shared::error::Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    configure_simulcast_extension_headers(media)?;

    // A connection made again mid-call climbs to the ceiling of the source
    // sent now, which may not be the one the call started with.
    let max_bps = budget
        .ceiling()
        .and_then(|bps| u32::try_from(bps).ok())
        .unwrap_or(bitrates.max_bps);
    let estimator = PublishingEstimator::new(
        &budget,
        f64::from(max_bps),
        f64::from(bitrates.min_bps),
        (!bitrates.start_at_max).then(Instant::now),
    );
    let first_target = estimator.target;
    Ok(Registry::new()
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(estimator).build(),
        )
        .with(
            Slot::Pacer,
            MediaPacer::new(first_target, audio_payload_type, budget),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(RESEND_HISTORY)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        )
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(Slot::from(14_000), FeedbackToApplication::default()))
}
