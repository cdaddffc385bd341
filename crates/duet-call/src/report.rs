//! What a call measured, and the headless report of `docs/cli.md` built from it.
//! Every figure here is counted or timed by this peer from what it really
//! sent and received; nothing is estimated from configuration.

use std::time::Duration;

use duet_measure::{ProcessUsage, Samples, Summary};
use serde::Serialize;

/// What the media paths counted, read at one moment (see `media::counters`).
#[derive(Debug, Default, Clone)]
pub(crate) struct CounterSnapshot {
    pub(crate) frames_sent: u64,
    pub(crate) video_bytes_sent: u64,
    pub(crate) keyframes_sent: u64,
    pub(crate) pli_received: u64,
    pub(crate) nack_received: u64,
    pub(crate) frames_received: u64,
    pub(crate) video_bytes_received: u64,
    pub(crate) frames_dropped: u64,
    pub(crate) frames_decoded: u64,
    pub(crate) stamped_frames: u64,
    /// `None` until the freeze rule has judged an interval between two frames.
    pub(crate) freeze_count: Option<u64>,
    pub(crate) total_freezes_duration: Duration,
    /// One-way video latency from the stamps, read when a frame is decoded.
    pub(crate) video_latency: Samples,
    /// One-way video latency from the stamps, read where a front end showed
    /// the picture (empty headless).
    pub(crate) display_latency: Samples,
    pub(crate) last_size: Option<(u32, u32)>,
    /// Time from the first to the latest decoded frame.
    pub(crate) audio_packets_sent: u64,
    pub(crate) audio_packets_received: u64,
    pub(crate) audio_packets_concealed: u64,
    pub(crate) audio_device_underruns: u64,
    pub(crate) audio_device_rate_hz: Option<f64>,
    pub(crate) beeps_detected: u64,
    pub(crate) beep_hz: Option<f32>,
    /// Mouth-to-ear latency from the beeps.
    pub(crate) audio_latency: Samples,
    pub(crate) pli_sent: u64,
}

/// Running totals and current figures for a live display (the window's stats
/// overlay): cheap to take every frame, unlike the full [`CallReport`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LiveFigures {
    /// Video frames sent so far.
    pub frames_sent: u64,
    /// Video frames decoded so far.
    pub frames_decoded: u64,
    /// Bytes of video sent so far.
    pub video_bytes_sent: u64,
    /// Bytes of video received so far.
    pub video_bytes_received: u64,
    /// Size of the newest remote picture.
    pub remote_size: Option<(u32, u32)>,
    /// Round-trip time.
    pub rtt_ms: Option<f64>,
    /// Inbound packets lost so far.
    pub packets_lost: Option<i64>,
    /// One-way video latency of the newest stamped frames (median).
    pub video_latency_ms: Option<f64>,
    /// Mouth-to-ear latency of the newest beeps (median).
    pub audio_latency_ms: Option<f64>,
    /// Which way the packets go.
    pub path: Option<PathKind>,
}

/// Network figures from the peer connection's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct NetworkSummary {
    /// Round-trip time of the selected candidate pair.
    pub rtt_ms: Option<f64>,
    /// Inbound packets lost (video and audio).
    pub packets_lost: Option<i64>,
    /// Inbound video packets that came as retransmissions on their own RTX
    /// stream (RFC 4588); `null` until a video stream is received. A peer
    /// that did not negotiate RTX resends the packets themselves, which
    /// count here as nothing.
    pub retransmitted_packets_received: Option<u64>,
    /// Inbound interarrival jitter of the video stream.
    pub jitter_ms: Option<f64>,
    /// Type of the local candidate of the pair in use: `host`, `srflx`, `prflx` or `relay`.
    pub local_candidate_type: Option<&'static str>,
    /// Type of the remote candidate of the pair in use (a candidate learned
    /// from a connectivity check rather than signalled is `prflx`).
    pub remote_candidate_type: Option<&'static str>,
    /// Which way the call's packets go, from those two types.
    pub path: Option<PathKind>,
}

/// Which way a call's packets go, in the words a person understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight between the two machines' own addresses (the same network,
    /// or public addresses).
    Direct,
    /// Through a router's translated address, as STUN learned it.
    ThroughNat,
    /// Through a TURN relay: works everywhere, costs a detour.
    Relayed,
}

impl PathKind {
    /// The path of a pair of these local and remote candidate types.
    ///
    /// A peer-reflexive (`prflx`) candidate says only that a connectivity
    /// check came from an address not signalled yet: behind a NAT, or just a
    /// browser's host address hidden behind an mDNS name. It does not by
    /// itself make a path "through NAT"; a server-reflexive one does.
    pub fn of(local: &str, remote: &str) -> PathKind {
        let types = [local, remote];
        if types.contains(&"relay") {
            PathKind::Relayed
        } else if types.contains(&"srflx") {
            PathKind::ThroughNat
        } else {
            PathKind::Direct
        }
    }

    /// For the stats overlay.
    pub fn words(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::ThroughNat => "through NAT",
            PathKind::Relayed => "relayed (TURN)",
        }
    }
}

/// The `video` object of the report.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct VideoReport {
    /// The negotiated codec (from its MIME type), `null` before any negotiation.
    pub codec: Option<String>,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_decoded: u64,
    /// Access units dropped before decoding because decoding fell behind.
    pub frames_dropped: u64,
    pub stamped_frames: u64,
    pub latency_ms: Option<Summary>,
    pub display_latency_ms: Option<Summary>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps_received: Option<f64>,
    pub bitrate_kbps_sent: Option<f64>,
    pub bitrate_kbps_received: Option<f64>,
    pub keyframes_sent: u64,
    pub pli_received: u64,
    pub nack_received: u64,
    pub pli_sent: u64,
    /// Freezes as the W3C webrtc-stats define them (see `media::freeze`);
    /// "shown" is "decoded and ready for display". `null` until an interval
    /// between two frames was judged.
    pub freeze_count: Option<u64>,
    /// The freezes' durations added up; `null` like `freeze_count`.
    pub total_freezes_duration_ms: Option<f64>,
}

/// The `audio` object of the report.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct AudioReport {
    /// The negotiated codec (from its MIME type), `null` before any negotiation.
    pub codec: Option<String>,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// 20 ms of audio made up by the receiver for packets lost or late.
    pub packets_concealed: u64,
    /// Times the output device (a speaker, or headless the virtual one) ran
    /// out of audio after it had started playing: each is heard as a click.
    pub device_underruns: u64,
    /// How fast the output device really plays, in samples a second of this
    /// machine's wall clock (`null` until it has played for 12 s). A device
    /// off its nominal rate is drift the playout absorbs; a recording of what
    /// it played is timed by this rate, not the nominal one.
    pub device_rate_hz: Option<f64>,
    pub beeps_detected: u64,
    pub beep_hz: Option<f64>,
    pub latency_ms: Option<Summary>,
}

/// The headless report (`--stats-json`) of `docs/cli.md`.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct CallReport {
    pub role: String,
    pub room: String,
    pub connected: bool,
    pub time_to_connected_ms: Option<f64>,
    pub time_to_first_remote_frame_ms: Option<f64>,
    pub duration_s: f64,
    pub video: VideoReport,
    pub audio: AudioReport,
    pub network: NetworkSummary,
    pub cpu_seconds: Option<f64>,
    pub max_rss_mb: Option<f64>,
    /// How many calls this run connected (more than one when peers came and went).
    pub calls_connected: u64,
    /// Peer connections created and not yet freed (a leak shows as a growing number).
    pub peer_connections_alive: u64,
    /// The short code both peers derive from the two DTLS fingerprints
    /// (`docs/protocol.md`): equal on both sides of a call nobody intercepts.
    pub verification_code: Option<String>,
    /// ICE restarts: a call whose path died is restarted on the same
    /// connection (offered as caller, answered as callee).
    pub ice_restarts: u64,
    /// Signaling reconnects that resumed the seat in the room.
    pub signaling_reconnects: u64,
}

/// Inputs for [`CallReport::build`] that are not media counters.
#[derive(Debug, Clone)]
pub(crate) struct ReportContext {
    /// Effective role.
    pub(crate) role: String,
    /// Room.
    pub(crate) room: String,
    /// Time from learning the peer is present to connected.
    pub(crate) time_to_connected: Option<Duration>,
    /// Time from learning the peer is present to the first decoded remote frame.
    pub(crate) time_to_first_remote_frame: Option<Duration>,
    /// Time spent connected.
    pub(crate) connected_for: Duration,
    /// Calls connected.
    pub(crate) calls_connected: u64,
    /// MIME type of the negotiated video codec (`video/H264`).
    pub(crate) video_mime_type: Option<String>,
    /// MIME type of the negotiated audio codec (`audio/opus`).
    pub(crate) audio_mime_type: Option<String>,
    /// Signaling reconnects that resumed.
    pub(crate) signaling_reconnects: u64,
    /// ICE restarts offered or answered.
    pub(crate) ice_restarts: u64,
    /// The last connection's verification code.
    pub(crate) verification_code: Option<String>,
}

impl CallReport {
    /// Builds the report from the counters, the network figures and this process's usage.
    pub(crate) fn build(
        context: ReportContext,
        counters: &CounterSnapshot,
        network: NetworkSummary,
    ) -> CallReport {
        let connected_s = context.connected_for.as_secs_f64();
        let per_s = |count: f64| (connected_s > 0.5).then(|| count / connected_s);
        let usage = ProcessUsage::this_process();
        CallReport {
            role: context.role,
            room: context.room,
            connected: context.calls_connected > 0,
            time_to_connected_ms: context.time_to_connected.map(ms),
            time_to_first_remote_frame_ms: context.time_to_first_remote_frame.map(ms),
            duration_s: round(connected_s, 3),
            video: VideoReport {
                codec: context.video_mime_type.as_deref().map(codec_name),
                frames_sent: counters.frames_sent,
                frames_received: counters.frames_received,
                frames_decoded: counters.frames_decoded,
                frames_dropped: counters.frames_dropped,
                stamped_frames: counters.stamped_frames,
                latency_ms: counters.video_latency.summary(),
                display_latency_ms: counters.display_latency.summary(),
                width: counters.last_size.map(|(w, _)| w),
                height: counters.last_size.map(|(_, h)| h),
                // Over the whole connected time: a call whose video stalled
                // for half of it received half the frames a second, whatever
                // the pace between its first and last picture.
                fps_received: per_s(counters.frames_decoded as f64).map(|v| round(v, 1)),
                bitrate_kbps_sent: per_s(counters.video_bytes_sent as f64 * 8.0 / 1000.0)
                    .map(|v| round(v, 1)),
                bitrate_kbps_received: per_s(counters.video_bytes_received as f64 * 8.0 / 1000.0)
                    .map(|v| round(v, 1)),
                keyframes_sent: counters.keyframes_sent,
                pli_received: counters.pli_received,
                nack_received: counters.nack_received,
                pli_sent: counters.pli_sent,
                freeze_count: counters.freeze_count,
                total_freezes_duration_ms: counters
                    .freeze_count
                    .map(|_| ms(counters.total_freezes_duration)),
            },
            audio: AudioReport {
                codec: context.audio_mime_type.as_deref().map(codec_name),
                packets_sent: counters.audio_packets_sent,
                packets_received: counters.audio_packets_received,
                packets_concealed: counters.audio_packets_concealed,
                device_underruns: counters.audio_device_underruns,
                device_rate_hz: counters.audio_device_rate_hz.map(|hz| round(hz, 2)),
                beeps_detected: counters.beeps_detected,
                beep_hz: counters.beep_hz.map(|hz| round(f64::from(hz), 1)),
                latency_ms: counters.audio_latency.summary(),
            },
            network,
            cpu_seconds: usage.map(|u| round(u.cpu_seconds, 2)),
            max_rss_mb: usage.map(|u| round(u.max_rss_mb, 1)),
            calls_connected: context.calls_connected,
            peer_connections_alive: crate::peer::HANDLERS_ALIVE
                .load(std::sync::atomic::Ordering::Relaxed),
            verification_code: context.verification_code,
            ice_restarts: context.ice_restarts,
            signaling_reconnects: context.signaling_reconnects,
        }
    }
}

/// The codec's name as the report gives it: the MIME subtype (`video/H264` → `H264`).
fn codec_name(mime_type: &str) -> String {
    mime_type
        .split_once('/')
        .map_or(mime_type, |(_, subtype)| subtype)
        .to_owned()
}

fn ms(duration: Duration) -> f64 {
    round(duration.as_secs_f64() * 1000.0, 1)
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_every_field_cli_md_names_with_nulls_where_nothing_was_measured() {
        let context = ReportContext {
            role: "caller".into(),
            room: "duet".into(),
            time_to_connected: None,
            time_to_first_remote_frame: None,
            connected_for: Duration::ZERO,
            calls_connected: 0,
            video_mime_type: None,
            audio_mime_type: None,
            signaling_reconnects: 0,
            ice_restarts: 0,
            verification_code: None,
        };
        let report = CallReport::build(
            context,
            &CounterSnapshot::default(),
            NetworkSummary::default(),
        );
        let json = serde_json::to_value(&report).expect("serialises");
        for key in [
            "role",
            "room",
            "connected",
            "time_to_connected_ms",
            "time_to_first_remote_frame_ms",
            "duration_s",
            "cpu_seconds",
            "max_rss_mb",
            "calls_connected",
            "peer_connections_alive",
            "verification_code",
            "ice_restarts",
            "signaling_reconnects",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        for key in [
            "codec",
            "frames_sent",
            "frames_received",
            "frames_decoded",
            "stamped_frames",
            "latency_ms",
            "width",
            "height",
            "fps_received",
            "bitrate_kbps_sent",
            "bitrate_kbps_received",
            "keyframes_sent",
            "pli_received",
            "nack_received",
            "pli_sent",
            "frames_dropped",
            "display_latency_ms",
            "freeze_count",
            "total_freezes_duration_ms",
        ] {
            assert!(json["video"].get(key).is_some(), "video.{key} missing");
        }
        for key in [
            "codec",
            "packets_sent",
            "packets_received",
            "packets_concealed",
            "device_underruns",
            "device_rate_hz",
            "beeps_detected",
            "beep_hz",
            "latency_ms",
        ] {
            assert!(json["audio"].get(key).is_some(), "audio.{key} missing");
        }
        for key in [
            "rtt_ms",
            "packets_lost",
            "retransmitted_packets_received",
            "jitter_ms",
            "local_candidate_type",
            "remote_candidate_type",
        ] {
            assert!(json["network"].get(key).is_some(), "network.{key} missing");
        }
        for null in [
            &json["video"]["latency_ms"],
            &json["video"]["codec"],
            &json["video"]["freeze_count"],
            &json["audio"]["codec"],
            &json["network"]["local_candidate_type"],
            &json["verification_code"],
        ] {
            assert!(null.is_null(), "{null} where nothing was measured");
        }
        assert_eq!(json["ice_restarts"], 0);
        assert_eq!(json["connected"], false);
        assert!(json["max_rss_mb"].as_f64().is_some_and(|mb| mb > 1.0));
    }

    #[test]
    fn the_report_names_the_negotiated_codecs_and_the_measured_figures() {
        let context = ReportContext {
            role: "callee".into(),
            room: "duet".into(),
            time_to_connected: Some(Duration::from_millis(80)),
            time_to_first_remote_frame: Some(Duration::from_millis(150)),
            connected_for: Duration::from_secs(10),
            calls_connected: 1,
            video_mime_type: Some("video/H264".into()),
            audio_mime_type: Some("audio/opus".into()),
            signaling_reconnects: 2,
            ice_restarts: 1,
            verification_code: Some("🐶 🚀 🍕 🔑 048 213".into()),
        };
        let counters = CounterSnapshot {
            frames_decoded: 300,
            frames_dropped: 4,
            freeze_count: Some(1),
            total_freezes_duration: Duration::from_millis(412),
            ..CounterSnapshot::default()
        };
        let network = NetworkSummary {
            local_candidate_type: Some("host"),
            remote_candidate_type: Some("srflx"),
            path: Some(PathKind::of("host", "srflx")),
            ..NetworkSummary::default()
        };
        let json = serde_json::to_value(CallReport::build(context, &counters, network))
            .expect("serialises");
        assert_eq!(json["video"]["codec"], "H264");
        assert_eq!(json["audio"]["codec"], "opus");
        assert_eq!(json["video"]["frames_dropped"], 4);
        // 300 pictures over the 10 s connected, however they were spread.
        assert_eq!(json["video"]["fps_received"], 30.0);
        assert_eq!(json["video"]["freeze_count"], 1);
        assert_eq!(json["video"]["total_freezes_duration_ms"], 412.0);
        assert_eq!(json["network"]["local_candidate_type"], "host");
        assert_eq!(json["network"]["remote_candidate_type"], "srflx");
        assert_eq!(json["network"]["path"], "through_nat");
        assert_eq!(json["signaling_reconnects"], 2);
        assert_eq!(json["ice_restarts"], 1);
        assert_eq!(json["verification_code"], "🐶 🚀 🍕 🔑 048 213");
        assert_eq!(json["connected"], true);
    }

    #[test]
    fn the_path_is_relayed_if_either_end_relays_and_through_nat_if_translated() {
        assert_eq!(PathKind::of("host", "host"), PathKind::Direct);
        assert_eq!(PathKind::of("srflx", "host"), PathKind::ThroughNat);
        // A browser's host address hidden behind an mDNS name is learned
        // from its first check: peer-reflexive, and still direct.
        assert_eq!(PathKind::of("host", "prflx"), PathKind::Direct);
        assert_eq!(PathKind::of("prflx", "srflx"), PathKind::ThroughNat);
        assert_eq!(PathKind::of("relay", "prflx"), PathKind::Relayed);
        assert_eq!(PathKind::of("host", "relay"), PathKind::Relayed);
    }

    #[test]
    fn codec_names_are_the_mime_subtype() {
        assert_eq!(codec_name("video/H264"), "H264");
        assert_eq!(codec_name("audio/opus"), "opus");
        assert_eq!(codec_name("H264"), "H264");
    }
}
