//! Sharing a screen under Xvfb: a window on the display shows the stamped
//! test pattern; a headless caller sends a "camera" (a file with no stamps),
//! shares that display, then goes back to the camera, all in one call; the
//! headless callee reads live stamps in the pictures it received (only the
//! shared screen carries them), follows 640x480 → 1280x800 → 640x480 without
//! a freeze over 500 ms, and ends on the camera's picture. And the browser
//! page shows a screen the app shares, at the screen's size, stamps live; and
//! shares its own (`getDisplayMedia`, Chromium's fake screen) with the app,
//! which follows the change of size without a freeze.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::browser::{Browser, Devices};
use common::xdisplay::{PatternWindow, VirtualDisplay};
use common::{Scratch, number, peer, peer_with_env, report, serialised, start_server};
use duet_media::VideoFrame;

/// The luma rows `rows` and columns `columns` of `frame` that differ from `other`'s.
fn changed_in(
    frame: &VideoFrame,
    other: &VideoFrame,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
) -> usize {
    let width = frame.width() as usize;
    let (a, b) = (frame.planes().0, other.planes().0);
    rows.flat_map(|row| columns.clone().map(move |column| row * width + column))
        .filter(|&at| a[at].abs_diff(b[at]) > 40)
        .count()
}

#[test]
fn the_shared_screen_shows_the_pointer_where_it_is() {
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::ConnectionExt as _;
    use x11rb::wrapper::ConnectionExt as _;

    let display = VirtualDisplay::start(320, 240);
    let mut screen = duet_media::screen::ScreenSource::open_on(&display.name, None, 15).unwrap();
    let (connection, number) = x11rb::connect(Some(&display.name)).unwrap();
    let root = connection.setup().roots[number].root;
    let point_at = |x: i16, y: i16| {
        connection
            .warp_pointer(x11rb::NONE, root, 0, 0, 0, 0, x, y)
            .unwrap();
        connection.sync().unwrap();
    };

    // Xvfb's root is a fine black-and-white weave; only the pointer moves.
    point_at(80, 60);
    let at_top_left = screen.next_frame().unwrap();
    point_at(240, 180);
    let at_bottom_right = screen.next_frame().unwrap();
    assert_eq!((at_top_left.width(), at_top_left.height()), (320, 240));

    // Xvfb's pointer is the X cursor, about 16 pixels a side around its hot spot.
    let near_first = changed_in(&at_top_left, &at_bottom_right, 50..70, 70..90);
    let near_second = changed_in(&at_top_left, &at_bottom_right, 170..190, 230..250);
    assert!(
        near_first > 20,
        "no pointer at (80, 60): {near_first} pixels changed"
    );
    assert!(
        near_second > 20,
        "no pointer at (240, 180): {near_second} pixels changed"
    );
    let everywhere = changed_in(&at_top_left, &at_bottom_right, 0..240, 0..320);
    assert_eq!(
        everywhere,
        near_first + near_second,
        "only the pointer's two places differ"
    );
}

/// A looped 640x480 picture with motion and no stamp: the camera of the test.
fn write_camera_file(path: &std::path::Path) {
    let frames: Vec<VideoFrame> = (0..30)
        .map(|i| {
            let mut frame = VideoFrame::black(640, 480, SystemTime::now()).unwrap();
            let (y, _, _) = frame.planes_mut();
            for row in 200..280 {
                let left = 100 + i * 12;
                y[row * 640 + left..row * 640 + left + 80].fill(200);
            }
            frame
        })
        .collect();
    duet_media::y4m_file::write_y4m(path, &frames, 30).unwrap();
}

#[test]
fn the_callee_sees_the_shared_screen_live_and_follows_camera_screen_camera() {
    let _one = serialised();
    let scratch = Scratch::new("screen-share");
    let display = VirtualDisplay::start(1280, 800);
    let _pattern = PatternWindow::show(&display.name, 1280, 240, 15);
    let camera = scratch.path("camera.y4m");
    write_camera_file(&camera);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");

    let caller_args = [
        "--video",
        camera.to_str().unwrap(),
        "--switch-video",
        "2:screen",
        "--switch-video",
        &format!("5:{}", camera.display()),
        "--duration",
        "8",
    ];
    let mut caller = peer_with_env(
        &scratch,
        "sharer",
        "caller",
        &url,
        "880",
        &caller_args,
        &[("DISPLAY", display.name.as_str())],
    );
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut callee = peer(
        &scratch,
        "viewer",
        "callee",
        &url,
        "660",
        &["--video", "none", "--duration", "20"],
    );
    for (name, side) in [("sharer", &mut caller), ("viewer", &mut callee)] {
        let status = side.wait_for_exit(Duration::from_secs(40));
        assert!(status.success(), "{name}: {}", side.stderr());
        side.read_to_end(Duration::from_secs(5));
    }
    assert!(
        caller
            .seen
            .iter()
            .filter(|l| l.starts_with("switching video"))
            .count()
            == 2,
        "{:?}",
        caller.seen
    );

    let viewer = report(&scratch, "viewer");
    let video = &viewer["video"];
    // About 3 s of the screen at 15 fps; only the screen carries stamps.
    let stamped = number(&viewer, &["video", "stamped_frames"]);
    assert!(
        stamped >= 25.0,
        "stamps read from the shared screen: {video:#}"
    );
    let latency = number(&viewer, &["video", "latency_ms", "p50"]);
    assert!(
        (0.0..500.0).contains(&latency),
        "the screen's stamps are live (p50 {latency} ms): {video:#}"
    );
    // Back on the camera at the end: its size, or half of it while the
    // congestion controller's estimate, held low by a quiet screen, climbs
    // back (the encode ladder's rule); never the screen's.
    let size = (video["width"].as_u64(), video["height"].as_u64());
    assert!(
        [(Some(640), Some(480)), (Some(320), Some(240))].contains(&size),
        "{video:#}"
    );
    let frozen = number(&viewer, &["video", "total_freezes_duration_ms"]);
    assert!(frozen < 500.0, "freezes of {frozen} ms in all: {video:#}");
    let sharer = report(&scratch, "sharer");
    assert!(
        number(&sharer, &["video", "keyframes_sent"]) >= 3.0,
        "{:#}",
        sharer["video"]
    );
}

#[test]
fn the_browser_page_shows_a_screen_the_app_shares_at_its_size_and_live() {
    let _one = serialised();
    let scratch = Scratch::new("screen-page");
    let display = VirtualDisplay::start(1280, 800);
    let _pattern = PatternWindow::show(&display.name, 1280, 240, 15);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let addr = url.trim_start_matches("ws://").trim().to_owned();
    let browser = Browser::launch("screen");
    browser.open(&format!(
        "http://{addr}/?room=duet&role=callee&test=1&size=320x240"
    ));
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let args = ["--video", "screen", "--duration", "8"];
    let env = [("DISPLAY", display.name.as_str())];
    let mut sharer = peer_with_env(&scratch, "sharer", "caller", &url, "660", &args, &env);
    let page = browser.wait_for_report(Duration::from_secs(30), |r| {
        r["video"]["stamped_frames"].as_f64() >= Some(30.0)
            && r["video"]["width"].as_f64() == Some(1280.0)
    });
    let video = &page["video"];
    assert_eq!(video["height"].as_f64(), Some(800.0), "{video:#}");
    let latency = video["latency_ms"]["p50"].as_f64().unwrap_or(f64::MAX);
    assert!((0.0..500.0).contains(&latency), "live stamps: {video:#}");
    assert!(
        sharer.wait_for_exit(Duration::from_secs(30)).success(),
        "{}",
        sharer.stderr()
    );
}

#[test]
fn the_page_shares_its_screen_mid_call_and_the_app_follows() {
    let _one = serialised();
    let scratch = Scratch::new("page-share");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let addr = url.trim_start_matches("ws://").trim().to_owned();
    let browser = Browser::launch_with("page-share", Devices::FakeCapture);
    browser.open(&format!(
        "http://{addr}/?room=duet&role=caller&test=1&size=320x240"
    ));
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let args = ["--video", "none", "--duration", "8"];
    let mut app = peer(&scratch, "app", "callee", &url, "660", &args);
    app.expect_line("first remote frame", Duration::from_secs(30));
    // Two seconds of the test picture sent before the switch, so the app has
    // stamped frames to read and a steady picture for the freeze count.
    browser.wait_for_report(Duration::from_secs(20), |r| {
        r["video"]["frames_sent"].as_f64() >= Some(60.0)
    });
    // A click, as a person's: the browser shares a screen only on a gesture.
    browser.click("screen");
    let started = std::time::Instant::now();
    while browser.text("screen") != "Stop sharing" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the page did not start sharing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        app.wait_for_exit(Duration::from_secs(30)).success(),
        "{}",
        app.stderr()
    );
    let received = report(&scratch, "app");
    let video = &received["video"];
    // The test picture was 320x240; the fake screen is larger.
    assert!(
        video["width"].as_u64() > Some(320),
        "the app ended on the screen's size: {video:#}"
    );
    let frozen = number(&received, &["video", "total_freezes_duration_ms"]);
    assert!(frozen < 500.0, "freezes of {frozen} ms in all: {video:#}");
    assert!(
        number(&received, &["video", "stamped_frames"]) > 0.0,
        "the test picture came first: {video:#}"
    );
}
