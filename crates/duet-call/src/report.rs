//! What a call measured, and the headless report of `cli.md` built from it.
//! Every figure here is counted or timed by this peer from what it really
//! sent and received; nothing is estimated from configuration.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A set of latency samples in milliseconds, summarised as percentiles.
#[derive(Debug, Default, Clone)]
pub struct LatencySamples {
    samples: Vec<f64>,
}

/// Percentiles of one latency, as the report writes them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencySamples {
    /// Adds one sample.
    pub fn push(&mut self, ms: f64) {
        if ms.is_finite() {
            self.samples.push(ms);
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The median of the newest `n` samples: what latency is now, for a live display.
    pub fn recent_median(&self, n: usize) -> Option<f64> {
        let recent = &self.samples[self.samples.len().saturating_sub(n)..];
        if recent.is_empty() {
            return None;
        }
        let mut sorted = recent.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(sorted[sorted.len() / 2])
    }

    /// Nearest-rank percentiles, or `None` without samples.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Some(LatencySummary {
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Counters the media paths update while the call runs.
#[derive(Debug, Default, Clone)]
pub struct MediaCounters {
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
    /// One-way video latency from the stamps.
    pub video_latency: LatencySamples,
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
    pub audio_latency: LatencySamples,
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
    pub fn new(counters: &MediaCounters, network: &NetworkSummary) -> LiveFigures {
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
    pub latency_ms: Option<LatencySummary>,
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
    pub latency_ms: Option<LatencySummary>,
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
pub struct ReportContext {
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
    pub fn build(
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
        let usage = ProcessUsage::read();
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

/// CPU time and peak memory of this process (Linux `/proc`).
#[derive(Debug, Clone, Copy)]
pub struct ProcessUsage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (`VmHWM`).
    pub max_rss_mb: f64,
}

impl ProcessUsage {
    /// Reads this process's usage; `None` where `/proc` is not available.
    pub fn read() -> Option<ProcessUsage> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may contain spaces) start after ')'.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let ticks = 100.0; // USER_HZ on Linux
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb = |key: &str| -> Option<f64> {
            status
                .lines()
                .find(|l| l.starts_with(key))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(ProcessUsage {
            cpu_seconds: (utime + stime) / ticks,
            max_rss_mb: kb("VmHWM:")? / 1024.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_median_looks_only_at_the_newest_samples() {
        let mut samples = LatencySamples::default();
        assert_eq!(samples.recent_median(3), None);
        for ms in [100.0, 100.0, 100.0, 5.0, 7.0, 6.0] {
            samples.push(ms);
        }
        assert_eq!(samples.recent_median(3), Some(6.0));
        assert_eq!(samples.recent_median(100), Some(100.0));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples = LatencySamples::default();
        assert!(samples.summary().is_none());
        for ms in 1..=100 {
            samples.push(f64::from(ms));
        }
        samples.push(f64::NAN);
        let summary = samples.summary().expect("has samples");
        assert_eq!(summary.p50, 50.0);
        assert_eq!(summary.p95, 95.0);
        assert_eq!(summary.p99, 99.0);
        assert_eq!(summary.max, 100.0);
    }

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
