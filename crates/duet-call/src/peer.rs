//! One WebRTC peer connection as Duet makes it: exactly H.264 (constrained
//! baseline, packetization-mode 1) and Opus with in-band FEC, NACK, RTCP
//! reports, transport-wide congestion control feeding the video bitrate, and
//! keyframe requests and receiver reports surfaced to the application.
//!
//! The connection's event handler only forwards events into a channel: its
//! callbacks run on the connection's own task and must never block.

use crate::host_addrs::{host_candidate_addrs, other_interface_up};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::mdns::MulticastSocket;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCIceTransportPolicy;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
pub(crate) use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use crate::CallError;
use crate::ice_servers::IceServer;
use crate::interceptors::{SendBudget, VideoBitrates, build_registry};
use crate::negotiation::Generation;

/// The H.264 format every Duet peer offers and accepts (`docs/cli.md`; a WebRTC-compatible baseline).
pub(crate) use duet_media::h264::H264_FMTP;
/// The Opus format: 48 kHz stereo signalling (mono content), in-band FEC on.
pub(crate) const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";
/// Payload types Duet offers.
pub(crate) const H264_PAYLOAD_TYPE: u8 = 102;
/// Payload type of Opus.
pub(crate) const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Payload type of H.264's retransmissions (RFC 4588 RTX).
const H264_RTX_PAYLOAD_TYPE: u8 = 103;
/// Packets behind the newest that SRTP still accepts: ~2 s of video. With
/// RTX a resend comes on a stream of its own, but a peer may not offer RTX.
const SRTP_REPLAY_WINDOW: usize = 1024;
/// The lowest bitrate congestion control may ask for. A link of 100 kbit/s
/// must still carry every word (audio takes ~24 of it with its headers),
/// the feedback, and video at a few pictures a second in what is left. At
/// 40 kbit/s the floor alone filled 85–95 of the link's 100 on the wire:
/// its queue overflowed for 15 s after the call squeezed into it, every
/// loss a keyframe request. Chromium sends 30 kbit/s there.
pub(crate) const MIN_VIDEO_BPS: u32 = 20_000;
/// The lowest target of the whole connection: video's floor and narrow-link
/// audio (Opus at 24 kbit/s in 60 ms packets, ~21 kbit/s on the wire for speech) with
/// the feedback beside it. At video's floor alone a back-off that read the
/// rate of a link losing most of its packets (24 kbit/s of a 100 kbit/s
/// link) left audio the whole target: the pacer held video until it was
/// stale, and for 14 s every picture was a keyframe request.
pub(crate) const MIN_TARGET_BPS: u32 = MIN_VIDEO_BPS + 25_000;

/// Where a peer connection is, as the W3C `RTCPeerConnectionState` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Created; no connectivity checks yet.
    New,
    /// ICE checks or the DTLS handshake are under way ("checking" at the ICE level).
    Connecting,
    /// ICE and DTLS are up: media flows.
    Connected,
    /// Connectivity was lost; ICE may still get it back.
    Disconnected,
    /// The connection cannot be (re)established.
    Failed,
    /// Closed by this peer.
    Closed,
}

impl ConnectionState {
    /// The state webrtc reports, or `None` for its "unspecified" placeholder
    /// (which a running connection never reports).
    pub(crate) fn from_webrtc(state: RTCPeerConnectionState) -> Option<ConnectionState> {
        Some(match state {
            RTCPeerConnectionState::New => ConnectionState::New,
            RTCPeerConnectionState::Connecting => ConnectionState::Connecting,
            RTCPeerConnectionState::Connected => ConnectionState::Connected,
            RTCPeerConnectionState::Disconnected => ConnectionState::Disconnected,
            RTCPeerConnectionState::Failed => ConnectionState::Failed,
            RTCPeerConnectionState::Closed => ConnectionState::Closed,
            // "Unspecified", and any state a later webrtc adds.
            _ => return None,
        })
    }

    /// The state's name in the W3C API (`new`, `connecting`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::New => "new",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Failed => "failed",
            ConnectionState::Closed => "closed",
        }
    }
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a peer connection tells the session.
pub(crate) enum PeerEvent {
    /// A local candidate (`None`: gathering complete).
    LocalCandidate(Generation, Option<duet_signal::IceCandidate>),
    /// The connection state changed.
    State(Generation, RTCPeerConnectionState),
    /// The remote's track arrived.
    Track(Generation, Arc<dyn TrackRemote>),
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerEvent::LocalCandidate(g, c) => write!(f, "LocalCandidate({g}, {c:?})"),
            PeerEvent::State(g, s) => write!(f, "State({g}, {s})"),
            PeerEvent::Track(g, _) => write!(f, "Track({g})"),
        }
    }
}

/// Forwards the connection's callbacks into the session's channel.
struct ForwardingHandler {
    generation: Generation,
    events: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ForwardingHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let candidate = duet_signal::IceCandidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                let _ = self
                    .events
                    .send(PeerEvent::LocalCandidate(self.generation, Some(candidate)));
            }
            Err(err) => tracing::warn!(%err, "cannot describe a local candidate"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self
                .events
                .send(PeerEvent::LocalCandidate(self.generation, None));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(PeerEvent::State(self.generation, state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(PeerEvent::Track(self.generation, track));
    }
}

impl Drop for ForwardingHandler {
    fn drop(&mut self) {
        tracing::debug!(
            generation = self.generation,
            "peer connection handler freed"
        );
        HANDLERS_ALIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handlers of peer connections not yet freed: a leak check for long sessions and tests.
pub(crate) static HANDLERS_ALIVE: AtomicU64 = AtomicU64::new(0);

/// How to build peer connections.
#[derive(Debug, Clone)]
pub(crate) struct PeerSettings {
    /// STUN/TURN servers: `--ice` and those the signaling server handed out.
    pub(crate) ice_servers: Vec<IceServer>,
    /// Only relayed candidates (`--ice-transport relay`).
    pub(crate) relay_only: bool,
    /// Maximum video bitrate.
    pub(crate) max_video_bps: u32,
    /// Start each connection at the maximum, not low and climbing.
    pub(crate) start_at_max: bool,
    /// Local addresses to gather candidates on.
    pub(crate) udp_addrs: Vec<String>,
}

/// A built peer connection with our two outgoing tracks.
pub(crate) struct BuiltPeer {
    /// The connection.
    pub(crate) connection: Arc<dyn PeerConnection>,
    /// Outgoing video.
    pub(crate) video: Arc<TrackLocalStaticRTP>,
    /// Outgoing audio.
    pub(crate) audio: Arc<TrackLocalStaticRTP>,
    /// SSRC of the outgoing video.
    pub(crate) video_ssrc: u32,
    /// SSRC of the outgoing audio.
    pub(crate) audio_ssrc: u32,
    /// The senders of the two tracks, which know the negotiated payload types.
    pub(crate) video_sender: Arc<dyn RtpSender>,
    pub(crate) audio_sender: Arc<dyn RtpSender>,
}

impl std::fmt::Debug for BuiltPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltPeer")
            .field("video_ssrc", &self.video_ssrc)
            .field("audio_ssrc", &self.audio_ssrc)
            .finish_non_exhaustive()
    }
}

/// Whether this machine can resolve the `.local` names that browsers give
/// their host candidates. mDNS needs a socket in its multicast group, which a
/// machine without a multicast route cannot join (an offline LAN, a network
/// namespace, some VPNs: `ENODEV`); webrtc-rs then fails the whole
/// connection. Without mDNS the call still connects through plain addresses,
/// so its absence is a debug line, not a dead call.
fn multicast_dns_mode() -> MulticastDnsMode {
    match MulticastSocket::new().into_std() {
        Ok(_probe) => MulticastDnsMode::QueryOnly,
        Err(err) => {
            tracing::debug!(%err, "no mDNS here: .local candidates will not be resolved");
            MulticastDnsMode::Disabled
        }
    }
}

fn h264_codec() -> RTCRtpCodec {
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        rtcp_feedback: vec![
            feedback("ccm", "fir"),
            feedback("nack", ""),
            feedback("nack", "pli"),
        ],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Video's retransmissions on a stream of their own (RFC 4588), as browsers
/// send them. Without RTX a resend is the packet again: the receiver cannot
/// tell it from a late original, its SRTP replay check drops the resend of a
/// packet that did arrive, and congestion control then reads that as loss.
fn h264_rtx_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_RTX.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!("apt={H264_PAYLOAD_TYPE}"),
        rtcp_feedback: vec![],
    }
}

/// An outgoing track with one encoding; `rtx_ssrc` names its retransmission
/// stream, used where the remote accepts RTX.
fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
    id: &str,
) -> TrackLocalStaticRTP {
    TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("duet-{ssrc:08x}"),
        format!("{id}-{ssrc:08x}"),
        id.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                rtx: rtx_ssrc.map(|ssrc| RTCRtpRtxParameters { ssrc }),
                ..Default::default()
            },
            active: true,
            codec,
            ..Default::default()
        }],
    ))
}

/// Builds a peer connection of generation `generation` with both outgoing tracks added.
pub(crate) async fn build_peer(
    settings: &PeerSettings,
    generation: Generation,
    events: mpsc::UnboundedSender<PeerEvent>,
    budget: SendBudget,
) -> Result<BuiltPeer, CallError> {
    let webrtc = |err: rtc::shared::error::Error| CallError::WebRtc(err.to_string());
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .map_err(webrtc)?;
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_rtx_codec(),
                payload_type: H264_RTX_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .map_err(webrtc)?;
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .map_err(webrtc)?;

    let registry = build_registry(
        &mut media,
        VideoBitrates {
            min_bps: MIN_TARGET_BPS,
            max_bps: settings.max_video_bps,
            start_at_max: settings.start_at_max,
        },
        OPUS_PAYLOAD_TYPE,
        budget,
    )
    .map_err(webrtc)?;

    // Faster ICE than the defaults (checks every 200 ms, waits for reflexive
    // candidates): on a LAN or loopback this connects in tens of milliseconds.
    // A peer that stops answering is disconnected after 2 s and failed after 6 s,
    // inside the 10 s in which a dead peer must be noticed.
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(25))
        .with_host_acceptance_min_wait(Some(Duration::ZERO))
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        // A relayed pair is taken as soon as it works, not 2 s later: where
        // only a relay connects, that wait was most of the time to connect.
        .with_relay_acceptance_min_wait(Some(Duration::ZERO))
        .with_ice_timeouts(
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(4)),
            Some(Duration::from_millis(500)),
        )
        .with_multicast_dns_mode(multicast_dns_mode())
        // Retransmissions come without RTX, as the packets they replace: SRTP's
        // default replay window (64 packets, a third of a keyframe) would refuse
        // the resends of a keyframe's first packets as too old.
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        .build();

    let ice_servers = settings.ice_servers.iter().map(IceServer::to_rtc).collect();
    let policy = if settings.relay_only {
        RTCIceTransportPolicy::Relay
    } else {
        RTCIceTransportPolicy::All
    };
    let configuration = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(policy)
        .build();

    HANDLERS_ALIVE.fetch_add(1, Ordering::Relaxed);
    let handler = Arc::new(ForwardingHandler { generation, events });
    let connection = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine)
        .with_handler(handler)
        .with_udp_addrs(host_candidate_addrs(
            &settings.udp_addrs,
            other_interface_up(),
        ))
        .build()
        .await
        .map_err(webrtc)?;
    let connection: Arc<dyn PeerConnection> = Arc::new(connection);

    let video_ssrc = rand::random::<u32>();
    let audio_ssrc = rand::random::<u32>();
    let video = Arc::new(local_track(
        RtpCodecKind::Video,
        h264_codec(),
        video_ssrc,
        Some(rand::random::<u32>()),
        "video",
    ));
    let audio = Arc::new(local_track(
        RtpCodecKind::Audio,
        opus_codec(),
        audio_ssrc,
        None,
        "audio",
    ));
    let video_sender = connection
        .add_track(Arc::clone(&video) as Arc<dyn TrackLocal>)
        .await
        .map_err(webrtc)?;
    let audio_sender = connection
        .add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
        .await
        .map_err(webrtc)?;
    Ok(BuiltPeer {
        connection,
        video,
        audio,
        video_ssrc,
        audio_ssrc,
        video_sender,
        audio_sender,
    })
}

/// A codec both descriptions agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NegotiatedCodec {
    /// Payload type to stamp on outgoing packets.
    pub(crate) payload_type: u8,
    /// The codec's MIME type as negotiated (`video/H264`, `audio/opus`);
    /// `None` when the sender could not say (then Duet's own payload type is used).
    pub(crate) mime_type: Option<String>,
}

/// The codec `sender` sends with once both descriptions are applied. An
/// answerer must use the offerer's payload type: a browser gives H.264 another
/// number than Duet's 102, and packets sent with ours would be dropped by it.
pub(crate) async fn negotiated_codec(
    sender: &dyn RtpSender,
    mime_type: &str,
    fmtp: &str,
    ours: u8,
) -> NegotiatedCodec {
    let parameters = match sender.get_parameters().await {
        Ok(parameters) => Some(parameters),
        Err(err) => {
            tracing::debug!(%err, "no send parameters; keeping payload type {ours}");
            None
        }
    };
    let picked = parameters
        .as_ref()
        .and_then(|p| pick_codec(&p.rtp_parameters.codecs, mime_type, fmtp));
    picked.map_or(
        NegotiatedCodec {
            payload_type: ours,
            mime_type: None,
        },
        |codec| NegotiatedCodec {
            payload_type: codec.payload_type,
            mime_type: Some(codec.rtp_codec.mime_type.clone()),
        },
    )
}

/// Of the negotiated codecs, the one of `mime_type` whose format parameters
/// are exactly ours, else the first of that type.
fn pick_codec<'a>(
    codecs: &'a [RTCRtpCodecParameters],
    mime_type: &str,
    fmtp: &str,
) -> Option<&'a RTCRtpCodecParameters> {
    let same_params = |line: &str| {
        let mut a: Vec<&str> = line.split(';').map(str::trim).collect();
        let mut b: Vec<&str> = fmtp.split(';').map(str::trim).collect();
        a.sort_unstable();
        b.sort_unstable();
        b.iter().all(|p| a.contains(p))
    };
    let of_type = || {
        codecs
            .iter()
            .filter(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime_type))
    };
    of_type()
        .find(|c| same_params(&c.rtp_codec.sdp_fmtp_line))
        .or_else(|| of_type().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_type_is_the_negotiated_one_with_our_format_first() {
        let codec = |pt: u8, fmtp: &str| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                sdp_fmtp_line: fmtp.to_owned(),
                ..h264_codec()
            },
            payload_type: pt,
        };
        let browser_offer = [
            codec(
                103,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            ),
            codec(
                109,
                "profile-level-id=42e01f;level-asymmetry-allowed=1;packetization-mode=1",
            ),
        ];
        let pick = |codecs: &[RTCRtpCodecParameters], mime: &str, fmtp: &str| {
            pick_codec(codecs, mime, fmtp).map(|c| (c.payload_type, c.rtp_codec.mime_type.clone()))
        };
        assert_eq!(
            pick(&browser_offer, MIME_TYPE_H264, H264_FMTP),
            Some((109, "video/H264".to_owned()))
        );
        assert_eq!(
            pick(&browser_offer[..1], MIME_TYPE_H264, H264_FMTP),
            Some((103, "video/H264".to_owned()))
        );
        assert_eq!(pick(&browser_offer, MIME_TYPE_OPUS, OPUS_FMTP), None);
    }

    #[test]
    fn connection_states_map_from_webrtc_with_the_w3c_names() {
        use RTCPeerConnectionState as W;
        let mapped: Vec<String> = [
            W::New,
            W::Connecting,
            W::Connected,
            W::Disconnected,
            W::Failed,
            W::Closed,
        ]
        .into_iter()
        .map(|state| {
            let ours = ConnectionState::from_webrtc(state).expect("a real state");
            assert_eq!(ours.to_string(), state.to_string(), "same words as webrtc");
            ours.to_string()
        })
        .collect();
        assert_eq!(
            mapped,
            [
                "new",
                "connecting",
                "connected",
                "disconnected",
                "failed",
                "closed"
            ]
        );
        assert_eq!(ConnectionState::from_webrtc(W::Unspecified), None);
    }
}
