//! The browser client that `duet serve` hands out at `/`, in Debian's headless
//! Chromium, against the native app: a browser caller with a native callee and
//! the other way round, each with the test signals, each side measuring what
//! the other sent (stamps and beeps), the page's screenshot read for the remote
//! stamp; and the page's words for a full room and for a missing room name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::browser::{Browser, Devices};
use common::screen::{find_stamps, png_luma};
use common::{LivePeer, Scratch, number, peer, report, serialised, start_server};
use serde_json::Value;

/// `duet serve` on a free port: the process, its `ws://` URL, and its `host:port` for pages.
fn serve(scratch: &Scratch) -> (LivePeer, String, String) {
    let (server, url) = start_server(scratch, "127.0.0.1:0");
    let addr = url.trim_start_matches("ws://").trim().to_owned();
    (server, url, addr)
}

/// What a receiver (browser page or native report, same shape) must have measured
/// of a sender with the test signals at `tone` Hz over a call of some seconds.
fn assert_received(who: &str, report: &Value, tone: f64) {
    assert_eq!(report["connected"], true, "{who}: {report:#}");
    assert!(
        report["video"]["codec"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("h264")),
        "{who} did not receive H.264: {report:#}"
    );
    assert!(
        report["audio"]["codec"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("opus")),
        "{who} did not receive Opus: {report:#}"
    );
    let stamped = number(report, &["video", "stamped_frames"]);
    assert!(
        stamped >= 60.0,
        "{who} read only {stamped} stamped frames: {report:#}"
    );
    let latency = number(report, &["video", "latency_ms", "p50"]);
    assert!(
        (0.0..1000.0).contains(&latency),
        "{who}: video latency p50 {latency} ms: {report:#}"
    );
    let beeps = number(report, &["audio", "beeps_detected"]);
    assert!(beeps >= 3.0, "{who} heard {beeps} beeps: {report:#}");
    let hz = number(report, &["audio", "beep_hz"]);
    assert!(
        (hz - tone).abs() <= tone * 0.02,
        "{who} heard beeps at {hz} Hz, not {tone}: {report:#}"
    );
    let audio_latency = number(report, &["audio", "latency_ms", "p50"]);
    assert!(
        (0.0..500.0).contains(&audio_latency),
        "{who}: audio latency p50 {audio_latency} ms: {report:#}"
    );
}

/// The page's screenshot shows the remote stamp, large and live (less than
/// 2 s older than the moment the screenshot was asked for: a cold Chromium
/// can take seconds to answer its first one), and the mirrored self-view.
fn assert_remote_video_on_screen(browser: &Browser, scratch: &Scratch) {
    let started = Instant::now();
    loop {
        let asked = Instant::now();
        let png = browser.screenshot();
        let took = asked.elapsed().as_millis() as i64;
        std::fs::write(scratch.path("page.png"), &png).unwrap();
        let (luma, w, h) = png_luma(&png);
        let stamps = find_stamps(&luma, w, h, false);
        let mirrored = find_stamps(&luma, w, h, true);
        let live = stamps
            .iter()
            .any(|s| s.width >= 400.0 && (s.latency_ms - took).abs() < 2000);
        let self_view = mirrored.iter().any(|s| s.width < 400.0);
        if live && self_view {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no large live remote stamp and mirrored self-view on the page: {stamps:?}, \
             mirrored {mirrored:?}, screenshot took {took} ms (kept at {}); page {:#}",
            scratch.path("page.png").display(),
            browser.report()["video"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A browser with the test signals calls a native callee, or the other way round.
fn browser_and_native_call(browser_role: &str) {
    let _one = serialised();
    let scratch = Scratch::new(&format!("browser-{browser_role}"));
    let (_server, url, addr) = serve(&scratch);
    let room = format!("web-{browser_role}");
    let native_role = if browser_role == "caller" {
        "callee"
    } else {
        "caller"
    };
    let browser = Browser::launch(browser_role);
    // The browser sends 880 Hz beeps, the native peer 660 Hz: each side proves
    // it hears the other, not itself.
    browser.open(&format!(
        "http://{addr}/?room={room}&role={browser_role}&test=1"
    ));
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let native_args = ["--room", room.as_str(), "--duration", "10"];
    let mut native = peer(&scratch, "native", native_role, &url, "660", &native_args);

    let page = browser.wait_for_report(Duration::from_secs(30), |r| {
        r["video"]["stamped_frames"].as_f64() >= Some(90.0)
            && r["audio"]["beeps_detected"].as_f64() >= Some(4.0)
    });
    assert_eq!(page["role"], browser_role);
    assert_remote_video_on_screen(&browser, &scratch);

    let status = native.wait_for_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "native {native_role}: {}",
        native.stderr()
    );
    let native_report = report(&scratch, "native");
    let code = native_report["verification_code"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        code.split(' ').count(),
        6,
        "a code of 4 pictures and 6 digits: {native_report:#}"
    );
    assert_eq!(
        browser.report()["verification_code"].as_str(),
        Some(code),
        "the page and the app derive the same code from the same two certificates"
    );
    assert!(
        browser.text("code").ends_with(code),
        "the page shows it: {:?}",
        browser.text("code")
    );
    // On one machine the two talk directly, and both reports say so.
    assert_eq!(
        native_report["network"]["path"], "direct",
        "{native_report:#}"
    );
    assert_eq!(browser.report()["network"]["path"], "direct");
    // The page's freezes come from Chromium's own count, as the app's from its own.
    let page_now = browser.report();
    for field in ["freeze_count", "total_freezes_duration_ms"] {
        assert!(
            page_now["video"][field].is_number(),
            "the page's report has video.{field}: {:#}",
            page_now["video"]
        );
    }
    assert_eq!(page_now["signaling_reconnects"], 0, "{page_now:#}");

    // The page hears the native bye in words, and waits for the next peer.
    browser.wait_for_state("peer-left", Duration::from_secs(10));
    let page = browser.report();
    assert_received("the browser", &page, 660.0);
    assert_received("the native peer", &native_report, 880.0);
    let sent = number(&page, &["video", "frames_sent"]);
    let decoded = number(&native_report, &["video", "frames_decoded"]);
    assert!(
        decoded >= 0.9 * sent.min(10.0 * 30.0),
        "the native peer decoded {decoded} of the browser's {sent} frames: {native_report:#}"
    );

    // A new peer in the room gets a fresh call, as with the native app.
    let next_args = ["--room", room.as_str(), "--duration", "2"];
    let mut next = peer(&scratch, "native-2", native_role, &url, "660", &next_args);
    browser.wait_for_state("in-call", Duration::from_secs(20));
    assert!(next.wait_for_exit(Duration::from_secs(30)).success());
}

#[test]
fn a_browser_caller_and_a_native_callee_see_and_hear_each_other() {
    browser_and_native_call("caller");
}

#[test]
fn a_native_caller_and_a_browser_callee_see_and_hear_each_other() {
    browser_and_native_call("callee");
}

#[test]
fn the_page_says_when_the_room_is_full_and_asks_for_a_room_when_none_is_given() {
    let _one = serialised();
    let scratch = Scratch::new("browser-room-full");
    let (_server, _, addr) = serve(&scratch);
    // Two peers in the room, kept there by holding their sockets open.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _occupants: Vec<_> = ["caller", "callee"]
        .iter()
        .map(|role| {
            runtime.block_on(async {
                use futures_util::{SinkExt as _, StreamExt as _};
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                    .await
                    .unwrap();
                let join = format!(r#"{{"type":"join","room":"full","role":"{role}"}}"#);
                ws.send(tokio_tungstenite::tungstenite::Message::text(join))
                    .await
                    .unwrap();
                let joined = ws.next().await.unwrap().unwrap();
                assert!(joined.to_text().unwrap().contains("\"joined\""));
                ws
            })
        })
        .collect();

    let browser = Browser::launch("room-full");
    browser.open(&format!("http://{addr}/?room=full&test=1"));
    browser.wait_for_state("refused", Duration::from_secs(20));
    let status = browser.text("status");
    assert!(status.contains("room is full"), "status: {status:?}");
    let detail = browser.text("calm-detail");
    assert!(
        detail.contains("already has two people"),
        "detail: {detail:?}"
    );

    browser.open(&format!("http://{addr}/"));
    browser.wait_for_state("form", Duration::from_secs(10));
    assert!(browser.text("join-form").contains("Room"));

    // "New call": a room nobody can guess, and the words to share it.
    browser.eval("document.querySelector('input[name=test]').checked = true; document.getElementById('new-call').click(); return true;");
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let room = browser.report()["room"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let groups: Vec<&str> = room.split('-').collect();
    assert!(
        groups.len() == 4 && groups.iter().all(|g| g.len() == 4),
        "80 bits in four groups of four: {room:?}"
    );
    let detail = browser.text("calm-detail");
    assert!(
        detail.contains(&format!("http://{addr}/?room={room}"))
            && detail.contains(&format!("duet callee --server ws://{addr} --room {room}")),
        "detail: {detail:?}"
    );
}

#[test]
fn the_page_says_when_devices_are_refused_missing_or_the_server_is_gone() {
    let _one = serialised();
    let scratch = Scratch::new("browser-words");
    let (server, _, addr) = serve(&scratch);

    // Devices refused (a person clicked "Block"): say so, offer the test signals.
    let refused = Browser::launch_with("refused", Devices::Refused);
    refused.open(&format!("http://{addr}/?room=words"));
    refused.wait_for_state("media-refused", Duration::from_secs(20));
    assert!(refused.text("status").contains("refused"));
    assert!(refused.text("actions").contains("Join with test signals"));
    drop(refused);

    // Allowed, but this machine has no camera or microphone: the call goes on
    // with the test signals in their place, and a notice says so.
    let browser = Browser::launch("no-devices");
    browser.open(&format!("http://{addr}/?room=words"));
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let notices = browser.text("notices");
    assert!(
        notices.contains("No camera could be opened") && notices.contains("test picture"),
        "notices: {notices:?}"
    );
    assert!(
        notices.contains("No microphone could be opened"),
        "notices: {notices:?}"
    );

    // The server goes away: the page says so and keeps trying.
    server.signal("KILL");
    browser.wait_for_state("server-gone", Duration::from_secs(10));
    let status = browser.text("status");
    assert!(
        status.contains("gone") && status.contains("reconnecting"),
        "status: {status:?}"
    );
}

#[test]
fn two_browsers_call_and_camera_off_mute_hang_up_and_call_again_work() {
    let _one = serialised();
    let scratch = Scratch::new("browser-pair");
    let (_server, _, addr) = serve(&scratch);
    let callee = Browser::launch("pair-callee");
    callee.open(&format!("http://{addr}/?room=pair&role=callee&test=1"));
    callee.wait_for_state("waiting", Duration::from_secs(20));
    let caller = Browser::launch("pair-caller");
    caller.open(&format!("http://{addr}/?room=pair&role=caller&test=1"));
    callee.wait_for_report(Duration::from_secs(20), |r| {
        r["video"]["stamped_frames"].as_f64() >= Some(30.0)
            && r["audio"]["beeps_detected"].as_f64() >= Some(1.0)
    });

    // Camera off and mute on the caller: the callee keeps getting pictures
    // (the paused one, without a stamp: not a frozen frame) and no more beeps.
    caller.eval("document.getElementById('camera').click(); document.getElementById('mute').click(); return 0;");
    std::thread::sleep(Duration::from_millis(1500));
    let before = callee.report();
    std::thread::sleep(Duration::from_secs(3));
    let after = callee.report();
    let grew = |path: &[&str]| number(&after, path) - number(&before, path);
    assert!(
        grew(&["video", "frames_decoded"]) >= 30.0,
        "pictures stopped with the camera off: {before:#} then {after:#}"
    );
    assert_eq!(
        grew(&["video", "stamped_frames"]),
        0.0,
        "the camera picture still arrives"
    );
    assert_eq!(
        grew(&["audio", "beeps_detected"]),
        0.0,
        "beeps still arrive while muted"
    );
    assert_eq!(caller.text("camera"), "Camera on");
    assert_eq!(caller.text("mute"), "Unmute");

    // Hang up: the other side hears it in words; Call again makes a new call.
    caller.eval("document.getElementById('hangup').click(); return 0;");
    callee.wait_for_state("peer-left", Duration::from_secs(10));
    caller.wait_for_state("ended", Duration::from_secs(10));
    assert_eq!(caller.text("hangup"), "Call again");
    caller.eval("document.getElementById('hangup').click(); return 0;");
    caller.wait_for_state("in-call", Duration::from_secs(20));
    callee.wait_for_state("in-call", Duration::from_secs(20));
}
