//! What a call measured, and the headless report of `cli.md` built from it.
//! Every figure here is counted or timed by this peer from what it really
//! sent and received; nothing is estimated from configuration.

use std::time::{Duration, Instant};

use duet_measure::{ProcessUsage, Samples, Summary};
use serde::Serialize;

/// Counters the media paths update while the call runs.
#[derive(Debug, Default, Clone)]
pub(crate) struct MediaCounters {
    /// Video frames handed to the network.
    pub frames_sent: u64,
    /// Bytes of video sent.
    pub video_bytes_sent: u64,
    /// Keyframes sent.
    pub keyframes_sent: u64,
    /// Keyframe requests (PLI and FIR) received from the remote.
    pub pli_received: u64,
    /// NACKs received from the remote.
    pub nack_received: u64,
    /// Whole access units received.
    pub frames_received: u64,
    /// Bytes of video received.
    pub video_bytes_received: u64,
    /// Frames decoded into pictures.
    pub frames_decoded: u64,
    /// Decoded frames whose stamp read back.
    pub stamped_frames: u64,
    /// One-way video latency from the stamps, read when a frame is decoded.
    pub video_latency: Samples,
    /// One-way video latency from the stamps, read where a front end showed the
    /// picture (empty headless).
    pub display_latency: Samples,
    /// Size of the last decoded frame.
    pub last_size: Option<(u32, u32)>,
    /// When the first and the latest frame were decoded.
    pub first_decoded: Option<Instant>,
    /// When the last frame was decoded.
    pub last_decoded: Option<Instant>,
    /// Audio packets sent.
    pub audio_packets_sent: u64,
    /// Audio packets received.
    pub audio_packets_received: u64,
    /// Beeps heard.
    pub beeps_detected: u64,
    /// Frequency of the last beep heard.
    pub beep_hz: Option<f32>,
    /// Mouth-to-ear latency from the beeps.
    pub audio_latency: Samples,
    /// Keyframe requests (PLI) this peer sent.
    pub pli_sent: u64,
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
}

impl LiveFigures {
    /// The figures in `counters` and `network` now.
    pub(crate) fn new(counters: &MediaCounters, network: &NetworkSummary) -> LiveFigures {
        LiveFigures {
            frames_sent: counters.frames_sent,
            frames_decoded: counters.frames_decoded,
            video_bytes_sent: counters.video_bytes_sent,
            video_bytes_received: counters.video_bytes_received,
            remote_size: counters.last_size,
            rtt_ms: network.rtt_ms,
            packets_lost: network.packets_lost,
            video_latency_ms: counters.video_latency.recent_median(30),
            audio_latency_ms: counters.audio_latency.recent_median(3),
        }
    }
}

/// Network figures from the peer connection's statistics.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct NetworkSummary {
    /// Round-trip time of the selected candidate pair.
    pub rtt_ms: Option<f64>,
    /// Inbound packets lost (video and audio).
    pub packets_lost: Option<i64>,
    /// Inbound interarrival jitter of the video stream.
    pub jitter_ms: Option<f64>,
}

/// The `video` object of the report.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct VideoReport {
    pub codec: &'static str,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_decoded: u64,
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
}

/// The `audio` object of the report.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct AudioReport {
    pub codec: &'static str,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub beeps_detected: u64,
    pub beep_hz: Option<f64>,
    pub latency_ms: Option<Summary>,
}

/// The headless report (`--stats-json`) of `cli.md`.
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
}

/// Inputs for [`CallReport::build`] that are not media counters.
#[derive(Debug, Clone)]
pub(crate) struct ReportContext {
    /// Effective role.
    pub role: String,
    /// Room.
    pub room: String,
    /// Time from learning the peer is present to connected.
    pub time_to_connected: Option<Duration>,
    /// Time from learning the peer is present to the first decoded remote frame.
    pub time_to_first_remote_frame: Option<Duration>,
    /// Time spent connected.
    pub connected_for: Duration,
    /// Calls connected.
    pub calls_connected: u64,
}

impl CallReport {
    /// Builds the report from the counters, the network figures and this process's usage.
    pub(crate) fn build(
        context: ReportContext,
        counters: &MediaCounters,
        network: NetworkSummary,
    ) -> CallReport {
        let connected_s = context.connected_for.as_secs_f64();
        let per_s = |count: f64| (connected_s > 0.5).then(|| count / connected_s);
        let decoding_s = match (counters.first_decoded, counters.last_decoded) {
            (Some(first), Some(last)) if last > first => Some((last - first).as_secs_f64()),
            _ => None,
        };
        let usage = ProcessUsage::this_process();
        CallReport {
            role: context.role,
            room: context.room,
            connected: context.calls_connected > 0,
            time_to_connected_ms: context.time_to_connected.map(ms),
            time_to_first_remote_frame_ms: context.time_to_first_remote_frame.map(ms),
            duration_s: round(connected_s, 3),
            video: VideoReport {
                codec: "H264",
                frames_sent: counters.frames_sent,
                frames_received: counters.frames_received,
                frames_decoded: counters.frames_decoded,
                stamped_frames: counters.stamped_frames,
                latency_ms: counters.video_latency.summary(),
                display_latency_ms: counters.display_latency.summary(),
                width: counters.last_size.map(|(w, _)| w),
                height: counters.last_size.map(|(_, h)| h),
                fps_received: decoding_s
                    .filter(|s| *s > 0.5)
                    .map(|s| round((counters.frames_decoded.saturating_sub(1)) as f64 / s, 1)),
                bitrate_kbps_sent: per_s(counters.video_bytes_sent as f64 * 8.0 / 1000.0)
                    .map(|v| round(v, 1)),
                bitrate_kbps_received: per_s(counters.video_bytes_received as f64 * 8.0 / 1000.0)
                    .map(|v| round(v, 1)),
                keyframes_sent: counters.keyframes_sent,
                pli_received: counters.pli_received,
                nack_received: counters.nack_received,
                pli_sent: counters.pli_sent,
            },
            audio: AudioReport {
                codec: "opus",
                packets_sent: counters.audio_packets_sent,
                packets_received: counters.audio_packets_received,
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
        }
    }
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
        };
        let report = CallReport::build(
            context,
            &MediaCounters::default(),
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
        ] {
            assert!(json["video"].get(key).is_some(), "video.{key} missing");
        }
        for key in [
            "codec",
            "packets_sent",
            "packets_received",
            "beeps_detected",
            "beep_hz",
            "latency_ms",
        ] {
            assert!(json["audio"].get(key).is_some(), "audio.{key} missing");
        }
        for key in ["rtt_ms", "packets_lost", "jitter_ms"] {
            assert!(json["network"].get(key).is_some(), "network.{key} missing");
        }
        assert!(json["video"]["latency_ms"].is_null());
        assert_eq!(json["connected"], false);
        assert!(json["max_rss_mb"].as_f64().is_some_and(|mb| mb > 1.0));
    }
}
