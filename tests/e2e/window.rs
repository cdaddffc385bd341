//! The real window under Xvfb: a windowed caller and a headless callee, and
//! `duet demo`. Screenshots of the display are read for stamps, so a pass
//! means real decoded video is on screen (not a placeholder), and the mirrored
//! self-view shows the local camera picture. Closing the window (the
//! WM_DELETE_WINDOW message a window manager sends for the close button)
//! must hang up (the other peer hears `bye`) and exit 0 within 2 s. A
//! windowed caller with `--stats-json` reports the latency of the pictures
//! it showed (`video.display_latency_ms`), which headless peers leave `null`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::screen::{ScreenStamp, find_stamps};
use common::sound::tone_frequency;
use common::xdisplay::VirtualDisplay;
use common::{LivePeer, Scratch, number, peer, report, serialised, start_server};

/// Takes screenshots until `ok` accepts the stamps on screen (unmirrored,
/// mirrored); panics after `limit`, leaving the last screenshot in `scratch`.
fn wait_for_screen(
    display: &VirtualDisplay,
    scratch: &Scratch,
    limit: Duration,
    ok: impl Fn(&[ScreenStamp], &[ScreenStamp]) -> bool,
) -> (Vec<ScreenStamp>, Vec<ScreenStamp>) {
    let started = Instant::now();
    let shot = scratch.path("screen.png");
    loop {
        let (luma, w, h) = display.screenshot(&shot);
        let remote = find_stamps(&luma, w, h, false);
        let local = find_stamps(&luma, w, h, true);
        if ok(&remote, &local) {
            return (remote, local);
        }
        if started.elapsed() > limit {
            let kept = std::env::temp_dir()
                .join(format!("duet-window-failure-{}.png", std::process::id()));
            let _ = std::fs::copy(&shot, &kept);
            panic!(
                "the screen never showed the expected video within {limit:?}: \
                 stamps {remote:?}, mirrored {local:?}; screenshot kept at {}",
                kept.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn window_env(display: &VirtualDisplay, scratch: &Scratch) -> Vec<(String, String)> {
    let runtime_dir = scratch.path("xdg");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    vec![
        ("DISPLAY".into(), display.name.clone()),
        ("XDG_RUNTIME_DIR".into(), runtime_dir.display().to_string()),
    ]
}

fn spawn_window(
    args: &[&str],
    scratch: &Scratch,
    name: &str,
    env: &[(String, String)],
) -> LivePeer {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    LivePeer::spawn_with_env(args, &scratch.0, name, &env)
}

/// Closes the window and returns how long the process took to exit, and its status.
fn close_and_time(display: &VirtualDisplay, app: &mut LivePeer, title: &str) -> (Duration, i32) {
    let started = Instant::now();
    let window_manager = display.close_window(title);
    let status = app.wait_for_exit(Duration::from_secs(10));
    let took = started.elapsed();
    drop(window_manager);
    (took, status.code().unwrap_or(-1))
}

#[test]
fn a_windowed_caller_shows_decoded_remote_video_and_its_self_view_and_hangs_up_on_close() {
    let _one = serialised();
    let scratch = Scratch::new("window-call");
    let display = VirtualDisplay::start(1280, 800);
    let mut server = LivePeer::spawn(&["serve", "--listen", "127.0.0.1:0"], &scratch.0, "server");
    let url = format!(
        "ws://{}",
        server.expect_line("127.0.0.1:", Duration::from_secs(30))
    );
    let mut callee = LivePeer::spawn(
        &[
            "callee",
            "--headless",
            "--server",
            &url,
            "--room",
            "window",
            "--video",
            "test",
            "--audio",
            "test",
            "--tone-hz",
            "660",
        ],
        &scratch.0,
        "callee",
    );
    callee.expect_line("joined room window as callee", Duration::from_secs(30));
    let env = window_env(&display, &scratch);
    let mut caller = spawn_window(
        &[
            "caller", "--server", &url, "--room", "window", "--video", "test", "--audio", "test",
        ],
        &scratch,
        "caller",
        &env,
    );
    callee.expect_line("first remote frame", Duration::from_secs(30));

    let (remote, local) = wait_for_screen(
        &display,
        &scratch,
        Duration::from_secs(30),
        |remote, local| {
            remote.iter().any(|s| s.width >= 400.0) && local.iter().any(|s| s.width >= 100.0)
        },
    );
    let big = remote.iter().find(|s| s.width >= 400.0).unwrap();
    assert!(
        (0..2_000).contains(&big.latency_ms),
        "the remote picture on screen is live: {big:?}"
    );
    let own = local.iter().find(|s| s.width >= 100.0).unwrap();
    assert!(
        own.width < big.width,
        "the self-view is the small one: {own:?} {big:?}"
    );

    let (took, status) = close_and_time(&display, &mut caller, "Duet");
    assert_eq!(status, 0, "stderr: {}", caller.stderr());
    assert!(took < Duration::from_secs(2), "closing took {took:?}");
    callee.expect_line("peer left", Duration::from_secs(5));
    drop(server.child.kill());
}

#[test]
fn the_demo_shows_both_ends_with_live_video_and_exits_when_closed() {
    let _one = serialised();
    let scratch = Scratch::new("window-demo");
    let display = VirtualDisplay::start(1280, 800);
    let env = window_env(&display, &scratch);
    let mut demo = spawn_window(&["demo"], &scratch, "demo", &env);

    // Two remote pictures (one per end) and two mirrored self-views.
    let (remote, local) = wait_for_screen(
        &display,
        &scratch,
        Duration::from_secs(40),
        |remote, local| {
            remote.iter().filter(|s| s.width >= 300.0).count() >= 2
                && local.iter().filter(|s| s.width >= 90.0).count() >= 2
        },
    );
    for stamp in remote.iter().filter(|s| s.width >= 300.0) {
        assert!((0..2_000).contains(&stamp.latency_ms), "live: {stamp:?}");
    }
    let left = remote.iter().map(|s| s.x).min().unwrap();
    let right = remote.iter().map(|s| s.x).max().unwrap();
    assert!(right > left + 400, "side by side: {remote:?} {local:?}");

    let (took, status) = close_and_time(&display, &mut demo, "Duet");
    assert_eq!(status, 0, "stderr: {}", demo.stderr());
    assert!(took < Duration::from_secs(2), "closing took {took:?}");
}

#[test]
fn a_windowed_call_writes_its_report_with_the_latency_of_the_pictures_it_showed() {
    let _one = serialised();
    let scratch = Scratch::new("window-report");
    let display = VirtualDisplay::start(1280, 800);
    let (mut server, url) = start_server(&scratch, "127.0.0.1:0");
    // The callee's run ends when the caller hangs up (a timed run whose peer left).
    let mut callee = peer(
        &scratch,
        "callee",
        "callee",
        &url,
        "660",
        &["--room", "window-report", "--duration", "60"],
    );
    callee.expect_line(
        "joined room window-report as callee",
        Duration::from_secs(30),
    );
    let env = window_env(&display, &scratch);
    let caller_report = scratch.path("caller.json");
    let caller_recording = scratch.path("caller.wav");
    let mut caller = spawn_window(
        &[
            "caller",
            "--record-audio",
            caller_recording.to_str().unwrap(),
            "--server",
            &url,
            "--room",
            "window-report",
            "--video",
            "test",
            "--audio",
            "test",
            "--duration",
            "6",
            "--stats-json",
            caller_report.to_str().unwrap(),
        ],
        &scratch,
        "caller",
        &env,
    );
    let status = caller.wait_for_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "caller: {status:?}, stderr: {}",
        caller.stderr()
    );
    let status = callee.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "callee: {status:?}, stderr: {}",
        callee.stderr()
    );

    let windowed = report(&scratch, "caller");
    let p50 = number(&windowed, &["video", "display_latency_ms", "p50"]);
    let max = number(&windowed, &["video", "display_latency_ms", "max"]);
    assert!(
        p50 > 0.0 && p50 < 1000.0 && max >= p50,
        "display latency of a live local call: {:#}",
        windowed["video"]
    );
    // Each shown picture was decoded first.
    let decode_p50 = number(&windowed, &["video", "latency_ms", "p50"]);
    assert!(
        p50 >= decode_p50,
        "a picture is shown after it is decoded: {:#}",
        windowed["video"]
    );
    let headless = report(&scratch, "callee");
    assert!(
        headless["video"]["display_latency_ms"].is_null(),
        "headless shows nothing: {:#}",
        headless["video"]
    );
    // The window played the callee's beeps (on a speaker, or nowhere when the
    // machine has none) and recorded what it played.
    let recorded = duet_media::wav_file::read_wav(&caller_recording).expect("the recording reads");
    let bursts = tone_bursts(&recorded);
    assert!(
        recorded.len() >= 3 * 48_000 && bursts.len() >= 3,
        "{:.1} s recorded, bursts at {bursts:?} Hz",
        recorded.len() as f64 / 48_000.0
    );
    assert!(
        bursts.iter().all(|hz| (hz - 660.0).abs() < 660.0 * 0.03),
        "the callee's 660 Hz beeps: {bursts:?}"
    );
    drop(server.child.kill());
}

/// The frequency of each loud burst in 48 kHz `samples` (runs of 20 ms
/// windows over 0.05 RMS), measured over the middle half of the burst.
fn tone_bursts(samples: &[f32]) -> Vec<f64> {
    let loud: Vec<bool> = samples
        .chunks_exact(960)
        .map(|window| (window.iter().map(|s| s * s).sum::<f32>() / 960.0).sqrt() > 0.05)
        .collect();
    let mut bursts = Vec::new();
    let mut start = None;
    for (index, &is_loud) in loud.iter().chain([&false]).enumerate() {
        match (is_loud, start) {
            (true, None) => start = Some(index),
            (false, Some(first)) => {
                let (from, to) = (first * 960, index * 960);
                let quarter = (to - from) / 4;
                if let Some(hz) = tone_frequency(&samples[from + quarter..to - quarter]) {
                    bursts.push(hz);
                }
                start = None;
            }
            _ => {}
        }
    }
    bursts
}

#[test]
fn a_timed_window_closes_when_the_other_person_hangs_up_first() {
    let _one = serialised();
    let scratch = Scratch::new("window-peer-hangs-up");
    let display = VirtualDisplay::start(1280, 800);
    let (mut server, url) = start_server(&scratch, "127.0.0.1:0");
    let env = window_env(&display, &scratch);
    let mut caller = spawn_window(
        &[
            "caller",
            "--server",
            &url,
            "--room",
            "hang-up",
            "--video",
            "test",
            "--audio",
            "test",
            "--duration",
            "120",
        ],
        &scratch,
        "caller",
        &env,
    );
    // The callee's own run is short: it hangs up first.
    let mut callee = peer(
        &scratch,
        "callee",
        "callee",
        &url,
        "660",
        &["--room", "hang-up", "--duration", "3"],
    );
    let status = callee.wait_for_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "callee: {status:?}, stderr: {}",
        callee.stderr()
    );
    let hung_up = Instant::now();
    let status = caller.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "the window closes once the other person hung up: {status:?}, stderr: {}",
        caller.stderr()
    );
    assert!(
        hung_up.elapsed() < Duration::from_secs(5),
        "{:?}",
        hung_up.elapsed()
    );
    drop(server.child.kill());
}
