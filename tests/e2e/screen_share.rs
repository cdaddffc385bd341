//! Sharing a screen under Xvfb: a window on the display shows the stamped
//! test pattern; a headless caller sends a "camera" (a file with no stamps),
//! shares that display, then goes back to the camera, all in one call; the
//! headless callee reads live stamps in the pictures it received (only the
//! shared screen carries them), follows 640x480 → 1280x800 → 640x480 without
//! a freeze over 500 ms, and ends on the camera's picture. The same on a
//! Wayland desktop through the desktop portal and PipeWire, whose dialog
//! takes 2 s to answer (the camera goes on) or is declined, or whose
//! sharing is stopped from the desktop. And the browser
//! page shows a screen the app shares, at the screen's size, stamps live; and
//! shares its own (`getDisplayMedia`, Chromium's fake screen) with the app,
//! which follows the change of size without a freeze.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, SystemTime};

use common::browser::{Browser, Devices};
use common::wayland::{PatternSurface, Pick, WaylandDesktop};
use common::xdisplay::{PatternWindow, VirtualDisplay};
use common::{LivePeer, Scratch, number, peer, peer_with_env, report, serialised, start_server};
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
    let _one = common::serialised();
    use x11rb::connection::Connection as _;
    use x11rb::protocol::xproto::ConnectionExt as _;
    use x11rb::wrapper::ConnectionExt as _;

    let display = VirtualDisplay::start(320, 240);
    let mut screen = duet_media::screen::X11Screen::open(&display.name, None, 15).unwrap();
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
    camera_screen_camera(&scratch, &[("DISPLAY", display.name.as_str())], 2..5);
}

/// The same on Wayland: the screen comes through the desktop portal, whose
/// dialog the person takes 2 s to answer; the camera goes on meanwhile (no
/// freeze over 500 ms).
#[test]
fn on_wayland_the_screen_is_shared_through_the_desktop_portal() {
    let _one = serialised();
    let scratch = Scratch::new("screen-portal");
    let desktop = WaylandDesktop::start("share", Pick::After(Duration::from_secs(2)));
    let _pattern = PatternSurface::show(&desktop, 1280, 240, 15);
    let env = desktop.env();
    let env = borrowed(&env);
    if let Err(panic) = std::panic::catch_unwind(|| camera_screen_camera(&scratch, &env, 2..7)) {
        eprintln!("{}", desktop.logs());
        std::panic::resume_unwind(panic);
    }
}

/// A share declined in the portal's dialog: one line says so, and the test
/// pattern goes on without a freeze.
#[test]
fn on_wayland_a_share_declined_in_the_portal_leaves_the_call_as_it_was() {
    let _one = serialised();
    let scratch = Scratch::new("screen-declined");
    let desktop = WaylandDesktop::start("declined", Pick::Declined);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let env = desktop.env();
    let env = borrowed(&env);
    let sharing = ["--switch-video", "1:screen", "--duration", "5"];
    let (mut sharer, mut viewer) =
        sharer_and_viewer(&scratch, &url, &env, &sharing, &["--duration", "20"]);
    both_finish(&mut sharer, &mut viewer, || desktop.logs());
    let declined: Vec<&String> = sharer
        .seen
        .iter()
        .filter(|line| line.starts_with("notice: cannot share a screen"))
        .collect();
    assert_eq!(
        declined,
        [
            "notice: cannot share a screen: sharing was declined in the desktop portal's dialog; \
          the video source is unchanged"
        ],
        "{:?}",
        sharer.seen
    );
    // The test pattern all along: about 5 s at 30 fps, every frame stamped.
    viewer_report(&scratch, 100.0);
}

/// Sharing stopped from the desktop (its screen-cast backend gone): one
/// notice, the test pattern instead, and the call goes on without a freeze.
#[test]
fn on_wayland_sharing_stopped_from_the_desktop_leaves_the_call_going() {
    let _one = serialised();
    let scratch = Scratch::new("screen-stopped");
    let mut desktop = WaylandDesktop::start("stopped", Pick::After(Duration::ZERO));
    let _pattern = PatternSurface::show(&desktop, 1280, 240, 15);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let env = desktop.env();
    let env = borrowed(&env);
    let sharing = ["--video", "screen", "--duration", "8"];
    let viewing = ["--video", "none", "--duration", "20"];
    let (mut sharer, mut viewer) = sharer_and_viewer(&scratch, &url, &env, &sharing, &viewing);
    viewer.expect_line("first remote frame", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    desktop.stop_screen_casts();
    both_finish(&mut sharer, &mut viewer, || desktop.logs());
    let ended: Vec<&String> = sharer
        .seen
        .iter()
        .filter(|line| line.starts_with("notice: "))
        .collect();
    assert_eq!(ended.len(), 1, "{:?}\n{}", sharer.seen, sharer.stderr());
    assert!(
        ended[0].contains("sharing was stopped from the desktop")
            && ended[0].contains("sending the test pattern instead"),
        "{:?}",
        sharer.seen
    );
    // The screen's stamps first, then the test pattern's: stamped throughout.
    let seen = viewer_report(&scratch, 100.0);
    assert_eq!(
        seen["video"]["width"].as_u64(),
        Some(640),
        "ends on the test pattern: {seen:#}"
    );
}

/// A headless caller ("sharer", with `env` and `sharing` arguments) and,
/// once it waits, a headless callee ("viewer", with `viewing`).
fn sharer_and_viewer(
    scratch: &Scratch,
    url: &str,
    env: &[(&str, &str)],
    sharing: &[&str],
    viewing: &[&str],
) -> (LivePeer, LivePeer) {
    let mut sharer = peer_with_env(scratch, "sharer", "caller", url, "880", sharing, env);
    sharer.expect_line("waiting for the other peer", Duration::from_secs(30));
    let viewer = peer(scratch, "viewer", "callee", url, "660", viewing);
    (sharer, viewer)
}

/// Waits for the sharer and the viewer to end well (`context` adds what
/// explains a failure: the desktop's logs) and reads what they printed.
fn both_finish(sharer: &mut LivePeer, viewer: &mut LivePeer, context: impl Fn() -> String) {
    for (name, side) in [("sharer", sharer), ("viewer", viewer)] {
        let status = side.wait_for_exit(Duration::from_secs(40));
        assert!(status.success(), "{name}: {}\n{}", side.stderr(), context());
        side.read_to_end(Duration::from_secs(5));
    }
}

/// The viewer's report, once it shows no freeze over 500 ms in all and at
/// least `stamped` stamped pictures.
fn viewer_report(scratch: &Scratch, stamped: f64) -> serde_json::Value {
    let seen = report(scratch, "viewer");
    let frozen = number(&seen, &["video", "total_freezes_duration_ms"]);
    assert!(frozen < 500.0, "freezes of {frozen} ms in all: {seen:#}");
    let read = number(&seen, &["video", "stamped_frames"]);
    assert!(read >= stamped, "{read} stamped pictures: {seen:#}");
    seen
}

/// An environment as [`peer_with_env`] takes it.
fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

/// A caller sends a camera (a file without stamps), asks to share the screen
/// that `env` leads to at `share.start` s and goes back to the camera at
/// `share.end` s; the callee must have read live stamps from the screen
/// only, ended on the camera's size, and seen no freeze over 500 ms.
/// Returns the callee's report.
fn camera_screen_camera(
    scratch: &Scratch,
    env: &[(&str, &str)],
    share: std::ops::Range<u32>,
) -> serde_json::Value {
    let camera = scratch.path("camera.y4m");
    write_camera_file(&camera);
    let (_server, url) = start_server(scratch, "127.0.0.1:0");

    let caller_args = [
        "--video",
        camera.to_str().unwrap(),
        "--switch-video",
        &format!("{}:screen", share.start),
        "--switch-video",
        &format!("{}:{}", share.end, camera.display()),
        "--duration",
        &(share.end + 3).to_string(),
    ];
    let viewing = ["--video", "none", "--duration", "20"];
    let (mut caller, mut callee) = sharer_and_viewer(scratch, &url, env, &caller_args, &viewing);
    both_finish(&mut caller, &mut callee, String::new);
    let switches = caller
        .seen
        .iter()
        .filter(|l| l.starts_with("switching video"))
        .count();
    assert_eq!(switches, 2, "{:?}", caller.seen);
    assert!(
        !caller.seen.iter().any(|l| l.contains("cannot share")),
        "{:?}",
        caller.seen
    );

    let viewer = report(scratch, "viewer");
    let video = &viewer["video"];
    // About 3 s of the screen at 15 fps; only the screen carries stamps.
    let stamped = number(&viewer, &["video", "stamped_frames"]);
    assert!(
        stamped >= 25.0,
        "stamps read from the shared screen: {video:#}"
    );
    let latency = number(&viewer, &["video", "latency_ms", "p50"]);
    eprintln!(
        "screen seen: {stamped} stamped frames, latency {:#}",
        video["latency_ms"]
    );
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
    let sharer = report(scratch, "sharer");
    assert!(
        number(&sharer, &["video", "keyframes_sent"]) >= 3.0,
        "{:#}",
        sharer["video"]
    );
    viewer
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
