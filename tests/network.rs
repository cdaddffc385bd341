//! Calls over networks that are not a perfect loopback (issue 14): loss,
//! jitter with reordering, a narrow link, outages, a broken signaling
//! connection. Each runs two headless peers in network namespaces joined by
//! an impaired bridge (`duet-netem`), sending the noisy stamped picture,
//! which costs what a camera costs. Needs root.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::network_call::{NAMES, NetworkCall};
use common::number;
use duet_netem::LinkProfile;
use serde_json::Value;

/// One line per peer of what it received, for the log of a failed run.
fn summary(name: &str, report: &Value) -> String {
    let video = &report["video"];
    let audio = &report["audio"];
    format!(
        "{name}: {:.1} fps, {}/{} frames, freezes {} ({} ms), video p50/p95 {}/{} ms, \
         {} kbit/s, beeps {}, audio p50 {} ms, concealed {}, nacks {}, plis {}",
        video["fps_received"].as_f64().unwrap_or(0.0),
        video["frames_decoded"],
        video["frames_received"],
        video["freeze_count"],
        video["total_freezes_duration_ms"],
        video["latency_ms"]["p50"],
        video["latency_ms"]["p95"],
        video["bitrate_kbps_received"],
        audio["beeps_detected"],
        audio["latency_ms"]["p50"],
        audio["packets_concealed"],
        video["nack_received"],
        video["pli_received"],
    )
}

/// A call of `seconds` over `profile` (both ways); both reports.
fn call_over(label: &str, profile: LinkProfile, seconds: u64) -> [Value; 2] {
    let _one_at_a_time = common::serialised();
    let mut call = NetworkCall::new(label);
    call.rig.set_links(profile).unwrap();
    call.start(seconds, &[]);
    let reports = call.finish(Duration::from_secs(seconds + 60));
    if let Ok(dir) = std::env::var("DUET_TEST_KEEP") {
        for name in NAMES {
            let _ = std::fs::copy(
                call.scratch.path(&format!("{name}.stderr")),
                format!("{dir}/{label}-{name}.stderr"),
            );
        }
    }
    for (name, report) in NAMES.iter().zip(&reports) {
        eprintln!("{}", summary(name, report));
    }
    reports
}

/// What every call over a lossy link must hold: the frame rate, freezes in
/// total, video latency and beeps heard.
struct Holds {
    min_fps: f64,
    max_freezes_ms_per_minute: f64,
    max_video_p95_ms: f64,
    min_beeps_share: f64,
}

fn check(reports: &[Value; 2], seconds: u64, holds: &Holds) {
    for (name, report) in NAMES.iter().zip(reports) {
        let line = summary(name, report);
        let fps = number(report, &["video", "fps_received"]);
        assert!(fps >= holds.min_fps, "{line}");
        let frozen = number(report, &["video", "total_freezes_duration_ms"]);
        let minutes = number(report, &["duration_s"]) / 60.0;
        assert!(
            frozen <= holds.max_freezes_ms_per_minute * minutes,
            "frozen {frozen} ms: {line}"
        );
        assert!(
            number(report, &["video", "latency_ms", "p95"]) < holds.max_video_p95_ms,
            "{line}"
        );
        // A beep every second of the call, less the one cut at either end.
        let beeps = number(report, &["audio", "beeps_detected"]);
        assert!(
            beeps >= (holds.min_beeps_share * (seconds - 1) as f64).floor(),
            "{line}"
        );
    }
}

#[test]
fn two_percent_loss_and_40_ms_of_jitter_keep_the_picture_moving() {
    let seconds = 30;
    let reports = call_over("loss2", LinkProfile::new(40, 10, 2.0), seconds);
    check(
        &reports,
        seconds,
        &Holds {
            min_fps: 28.0,
            max_freezes_ms_per_minute: 0.0,
            max_video_p95_ms: 150.0,
            min_beeps_share: 0.95,
        },
    );
    for report in &reports {
        assert_eq!(number(report, &["video", "freeze_count"]), 0.0, "{report}");
    }
}

#[test]
fn five_percent_loss_and_heavy_reordering_keep_the_call_usable() {
    let seconds = 30;
    let reports = call_over("loss5", LinkProfile::new(60, 30, 5.0), seconds);
    check(
        &reports,
        seconds,
        &Holds {
            min_fps: 25.0,
            max_freezes_ms_per_minute: 1000.0,
            max_video_p95_ms: 250.0,
            min_beeps_share: 0.90,
        },
    );
}

#[test]
fn a_clean_link_carries_the_noisy_picture_at_full_rate() {
    let seconds = 15;
    let reports = call_over("clean", LinkProfile::default(), seconds);
    check(
        &reports,
        seconds,
        &Holds {
            min_fps: 28.0,
            max_freezes_ms_per_minute: 0.0,
            max_video_p95_ms: 100.0,
            min_beeps_share: 1.0,
        },
    );
}
