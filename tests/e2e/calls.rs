//! Real calls between two `duet` processes over WebRTC on loopback, through the
//! real `duet serve`: media both ways measured from the stamps and beeps,
//! launch orders, a full room, a peer killed mid-call, the server killed
//! mid-call, and thirty calls in a row in one process.
//!
//! The calls run one at a time (a lock), so two cores are never shared by more
//! than one call and the frame counts measure Duet, not the test machine.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{LivePeer, Scratch, number, peer, report, serialised, start_server};
use serde_json::Value;

/// `receiver` decoded at least 90 % of what `sender` sent, every picture's stamp
/// read, and it heard `sender`'s beeps at `sender`'s frequency.
fn assert_media_flowed(sender: &Value, receiver: &Value, sender_tone: f64) {
    let sent = number(sender, &["video", "frames_sent"]);
    let decoded = number(receiver, &["video", "frames_decoded"]);
    let stamped = number(receiver, &["video", "stamped_frames"]);
    assert!(sent >= 100.0, "too few frames sent: {sender:#}");
    assert!(
        decoded >= 0.9 * sent,
        "decoded {decoded} of {sent} frames; receiver: {receiver:#}"
    );
    assert_eq!(stamped, decoded, "every decoded frame's stamp reads");
    assert!(number(receiver, &["video", "latency_ms", "p50"]) < 500.0);
    assert!(
        number(receiver, &["audio", "beeps_detected"]) >= 3.0,
        "beeps: {receiver:#}"
    );
    let heard = number(receiver, &["audio", "beep_hz"]);
    assert!(
        (heard - sender_tone).abs() <= sender_tone * 0.02,
        "heard {heard} Hz, the sender beeps at {sender_tone} Hz"
    );
    assert!(number(receiver, &["audio", "latency_ms", "p50"]) < 500.0);
}

fn call_both_ways(first_role: &str, second_role: &str, name: &str) {
    let _one = serialised();
    let scratch = Scratch::new(name);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let tone = |role: &str| if role == "caller" { "880" } else { "660" };
    let mut first = peer(
        &scratch,
        first_role,
        first_role,
        &url,
        tone(first_role),
        &["--duration", "5"],
    );
    first.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut second = peer(
        &scratch,
        second_role,
        second_role,
        &url,
        tone(second_role),
        &["--duration", "5"],
    );
    for peer in [&mut first, &mut second] {
        peer.expect_line("connected", Duration::from_secs(20));
        peer.expect_line("first remote frame", Duration::from_secs(10));
    }
    assert!(first.wait_for_exit(Duration::from_secs(20)).success());
    assert!(second.wait_for_exit(Duration::from_secs(20)).success());
    let caller = report(&scratch, "caller");
    let callee = report(&scratch, "callee");
    assert_eq!(caller["role"], "caller");
    assert_eq!(callee["role"], "callee");
    assert_eq!(caller["connected"], true);
    assert!(number(&caller, &["time_to_connected_ms"]) > 0.0);
    assert!(number(&callee, &["time_to_first_remote_frame_ms"]) > 0.0);
    assert_media_flowed(&caller, &callee, 880.0);
    assert_media_flowed(&callee, &caller, 660.0);
}

#[test]
fn caller_then_callee_see_and_hear_each_other() {
    call_both_ways("caller", "callee", "caller-first");
}

#[test]
fn callee_then_caller_see_and_hear_each_other() {
    call_both_ways("callee", "caller", "callee-first");
}

/// The reports' `verification_code`: four pictures and six digits.
fn verification_code(report: &Value) -> String {
    let code = report["verification_code"]
        .as_str()
        .unwrap_or_else(|| panic!("no verification code: {report:#}"))
        .to_owned();
    let parts: Vec<&str> = code.split(' ').collect();
    assert_eq!(parts.len(), 6, "{code}");
    assert!(
        parts[4..]
            .iter()
            .all(|p| p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit()))
    );
    code
}

#[test]
fn a_caller_without_a_room_makes_a_private_one_and_both_ends_get_the_same_code() {
    let _one = serialised();
    let scratch = Scratch::new("new-room");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let caller_report = scratch.path("caller.json");
    let mut caller = LivePeer::spawn(
        &[
            "caller",
            "--headless",
            "--server",
            &url,
            "--video",
            "test",
            "--audio",
            "test",
            "--size",
            "320x240",
            "--duration",
            "3",
            "--stats-json",
            caller_report.to_str().unwrap(),
        ],
        &scratch.0,
        "caller",
    );
    let joins = caller.expect_line("the other person joins with: ", Duration::from_secs(30));
    let command = joins.split_once("joins with: ").unwrap().1.to_owned();
    let room = command.rsplit_once("--room ").unwrap().1.to_owned();
    assert_eq!(command, format!("duet callee --server {url} --room {room}"));
    assert_eq!(room.len(), 19, "80 bits in four groups: {room}");
    let link = caller.expect_line("or in a browser: ", Duration::from_secs(5));
    assert!(link.ends_with(&format!("/?room={room}")), "{link}");
    caller.expect_line(
        &format!("joined room {room} as caller"),
        Duration::from_secs(30),
    );

    // A callee must be told the room.
    let mut lost = LivePeer::spawn(
        &["callee", "--headless", "--server", &url],
        &scratch.0,
        "lost",
    );
    assert_eq!(lost.wait_for_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(lost.stderr().contains("--room"), "{}", lost.stderr());

    let mut callee = peer(
        &scratch,
        "callee",
        "callee",
        &url,
        "660",
        &["--room", &room, "--size", "320x240", "--duration", "3"],
    );
    for end in [&mut caller, &mut callee] {
        end.expect_line("verification code: ", Duration::from_secs(20));
        end.expect_line("connected", Duration::from_secs(20));
    }
    assert!(caller.wait_for_exit(Duration::from_secs(20)).success());
    assert!(callee.wait_for_exit(Duration::from_secs(20)).success());
    let (caller, callee) = (report(&scratch, "caller"), report(&scratch, "callee"));
    assert_eq!(caller["room"], room.as_str());
    assert_eq!(
        verification_code(&caller),
        verification_code(&callee),
        "nobody in between: the same code on both ends"
    );
}

#[test]
fn a_third_peer_is_told_the_room_is_full_and_exits_non_zero() {
    let _one = serialised();
    let scratch = Scratch::new("room-full");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let small = ["--size", "320x240", "--duration", "30"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &small);
    let mut callee = peer(&scratch, "callee", "callee", &url, "660", &small);
    caller.expect_line("connected", Duration::from_secs(20));
    callee.expect_line("connected", Duration::from_secs(20));
    let mut third = peer(&scratch, "third", "call", &url, "440", &[]);
    let status = third.wait_for_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(4), "room_full has its own exit status");
    let stderr = third.stderr();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("duet: ") && last.contains("room_full"),
        "one-line reason expected, got {stderr:?}"
    );
}

#[test]
fn a_killed_callee_is_noticed_and_a_new_one_gets_video_without_restarting_the_caller() {
    let _one = serialised();
    let scratch = Scratch::new("killed-callee");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let small = ["--size", "320x240"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &small);
    let mut first = peer(&scratch, "callee1", "callee", &url, "660", &small);
    caller.expect_line("first remote frame", Duration::from_secs(20));
    first.expect_line("first remote frame", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));

    first.signal("KILL");
    let killed = std::time::Instant::now();
    caller.expect_line("peer left", Duration::from_secs(10));
    assert!(killed.elapsed() < Duration::from_secs(10));

    let mut second = peer(&scratch, "callee2", "callee", &url, "660", &small);
    caller.expect_line("connected", Duration::from_secs(20));
    caller.expect_line("first remote frame", Duration::from_secs(10));
    second.expect_line("first remote frame", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));

    caller.signal("TERM");
    assert!(caller.wait_for_exit(Duration::from_secs(5)).success());
    let report = report(&scratch, "caller");
    assert_eq!(number(&report, &["calls_connected"]), 2.0);
}

#[test]
fn a_headless_run_whose_peer_is_gone_for_good_ends_once_nobody_came_back() {
    let _one = serialised();
    let scratch = Scratch::new("gone-for-good");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let args = ["--size", "320x240", "--give-up-after", "4"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &args);
    let callee = peer(&scratch, "callee", "callee", &url, "660", &args);
    caller.expect_line("first remote frame", Duration::from_secs(20));
    callee.signal("KILL");
    caller.expect_line("peer left", Duration::from_secs(10));
    let left = std::time::Instant::now();
    caller.expect_line("no call again within 4 s", Duration::from_secs(10));
    let status = caller.wait_for_exit(Duration::from_secs(10));
    // The call connected and the other peer left: that is a call that ended.
    assert!(status.success(), "{status}: {}", caller.stderr());
    assert!(
        left.elapsed() < Duration::from_secs(9),
        "{:?}",
        left.elapsed()
    );
    assert_eq!(report(&scratch, "caller")["connected"], true);
}

#[test]
fn media_keeps_flowing_while_the_server_is_down_and_both_rejoin_when_it_returns() {
    let _one = serialised();
    let scratch = Scratch::new("server-killed");
    let (mut server, url) = start_server(&scratch, "127.0.0.1:0");
    let listen = url.trim_start_matches("ws://").to_owned();
    let timed = ["--size", "320x240", "--duration", "9"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &timed);
    let mut callee = peer(&scratch, "callee", "callee", &url, "660", &timed);
    caller.expect_line("first remote frame", Duration::from_secs(20));
    callee.expect_line("first remote frame", Duration::from_secs(20));

    server.signal("KILL");
    server.wait_for_exit(Duration::from_secs(5));
    caller.expect_line("signaling lost", Duration::from_secs(10));
    callee.expect_line("signaling lost", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));

    let (_server, _) = start_server(&scratch, &listen);
    caller.expect_line("rejoined room duet as caller", Duration::from_secs(15));
    callee.expect_line("rejoined room duet as callee", Duration::from_secs(15));

    assert!(caller.wait_for_exit(Duration::from_secs(30)).success());
    assert!(callee.wait_for_exit(Duration::from_secs(30)).success());
    let caller_report = report(&scratch, "caller");
    let callee_report = report(&scratch, "callee");
    // One call, never interrupted: the whole 9 s of media arrived.
    assert_eq!(number(&caller_report, &["calls_connected"]), 1.0);
    assert_media_flowed(&caller_report, &callee_report, 880.0);
    assert_media_flowed(&callee_report, &caller_report, 660.0);
}

#[test]
fn thirty_calls_in_a_row_in_one_caller_all_connect_and_memory_stays_flat() {
    let _one = serialised();
    let scratch = Scratch::new("soak");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let small = ["--size", "320x240", "--fps", "15"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &small);
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut rss_after_third = 0.0;
    for call in 1..=30 {
        let name = format!("callee{call}");
        let args = ["--size", "320x240", "--fps", "15", "--duration", "1"];
        let mut callee = peer(&scratch, &name, "callee", &url, "660", &args);
        let status = callee.wait_for_exit(Duration::from_secs(30));
        assert!(status.success(), "call {call} failed: {}", callee.stderr());
        assert_eq!(report(&scratch, &name)["connected"], true, "call {call}");
        caller.expect_line("peer left", Duration::from_secs(10));
        if call == 3 {
            rss_after_third = caller.rss_mb();
        }
    }
    let rss_after_last = caller.rss_mb();
    caller.signal("TERM");
    assert!(caller.wait_for_exit(Duration::from_secs(5)).success());
    let report = report(&scratch, "caller");
    assert_eq!(number(&report, &["calls_connected"]), 30.0);
    assert!(
        rss_after_last - rss_after_third < 20.0,
        "RSS grew from {rss_after_third:.1} MB after call 3 to {rss_after_last:.1} MB after call 30"
    );
    // Closed peer connections are really freed: at most the last one is still winding down.
    assert!(
        number(&report, &["peer_connections_alive"]) <= 1.0,
        "{report:#}"
    );
}

#[test]
fn a_peer_that_freezes_without_a_word_is_noticed_within_ten_seconds() {
    let _one = serialised();
    let scratch = Scratch::new("frozen-callee");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let small = ["--size", "320x240"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &small);
    let mut callee = peer(&scratch, "callee", "callee", &url, "660", &small);
    caller.expect_line("first remote frame", Duration::from_secs(20));
    callee.expect_line("first remote frame", Duration::from_secs(20));

    // SIGSTOP: the process neither sends nor closes anything, and its sockets stay
    // open, so only the call's own liveness checks can tell.
    callee.signal("STOP");
    let frozen = std::time::Instant::now();
    // The path is dead: the call says so and tries to bring it back (ICE
    // restart), as for a network that went away.
    caller.expect_line("reconnecting", Duration::from_secs(10));
    assert!(frozen.elapsed() < Duration::from_secs(10));
    callee.signal("CONT");
    caller.signal("TERM");
    assert!(caller.wait_for_exit(Duration::from_secs(5)).success());
}

#[test]
fn no_call_gives_a_one_line_reason_and_its_own_exit_status() {
    let _one = common::serialised();
    let scratch = Scratch::new("no-call");
    // Nothing listens on port 9 of loopback.
    let mut unreachable = peer(&scratch, "a", "caller", "ws://127.0.0.1:9", "880", &[]);
    assert_eq!(
        unreachable.wait_for_exit(Duration::from_secs(20)).code(),
        Some(3)
    );
    let nothing = ["--video", "none", "--audio", "none"];
    let mut no_media = LivePeer::spawn(
        &[&["caller", "--headless"][..], &nothing[..]].concat(),
        &scratch.0,
        "b",
    );
    assert_eq!(
        no_media.wait_for_exit(Duration::from_secs(20)).code(),
        Some(6)
    );
    let mut bad_file = LivePeer::spawn(
        &[
            "caller",
            "--headless",
            "--video",
            "/nonexistent/clip.y4m",
            "--audio",
            "test",
        ],
        &scratch.0,
        "c",
    );
    assert_eq!(
        bad_file.wait_for_exit(Duration::from_secs(20)).code(),
        Some(6)
    );
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let mut alone = peer(
        &scratch,
        "d",
        "caller",
        &url,
        "880",
        &["--size", "320x240", "--give-up-after", "2"],
    );
    assert_eq!(alone.wait_for_exit(Duration::from_secs(20)).code(), Some(5));
    assert!(alone.stderr().contains("never came"), "{}", alone.stderr());
    for peer in [&unreachable, &no_media, &bad_file, &alone] {
        let stderr = peer.stderr();
        let reason: Vec<&str> = stderr.lines().filter(|l| l.starts_with("duet: ")).collect();
        assert_eq!(reason.len(), 1, "one reason line expected: {stderr:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        no_media.stderr().contains("no media"),
        "{}",
        no_media.stderr()
    );
    assert!(
        bad_file.stderr().contains("clip.y4m"),
        "{}",
        bad_file.stderr()
    );
}

/// The next event of `events` that `pred` accepts; panics if the call drops
/// (peer left, connection lost, ended) or after 20 s.
async fn wait_for(
    events: &mut duet_call::CallEvents,
    what: &str,
    pred: fn(&duet_call::CallEvent) -> bool,
) -> duet_call::CallEvent {
    use duet_call::{CallEvent, CallPhase};
    let next = async {
        loop {
            let event = events.recv().await.expect("the session runs");
            assert!(
                !matches!(
                    event,
                    CallEvent::Phase(CallPhase::PeerLeft | CallPhase::ConnectionLost)
                        | CallEvent::Ended(_)
                ),
                "the call dropped while waiting for {what}: {event:?}"
            );
            if pred(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
}

/// Switching camera and microphone during a call (the window's settings
/// panel) keeps the call: on these machines the devices are missing, so each
/// switch falls back to the test signals with a notice, and pictures keep
/// arriving on the same connection. Runs the call library in-process against
/// the real server.
#[test]
fn switching_devices_mid_call_keeps_the_call() {
    use duet_call::{AudioOutput, CallConfig, CallEvent, start_call};
    use duet_media::source::{AudioSpec, VideoSpec};
    use duet_signal::{RoleRequest, ServerConfig, SignalServer};

    let _one = serialised();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = SignalServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            None,
            ServerConfig::default(),
        )
        .unwrap()
        .spawn();
        let config = |role, tone| {
            let mut config = CallConfig::new(server.url(), "switch", role);
            config.video = VideoSpec::Test;
            config.audio = AudioSpec::Test;
            config.tone_hz = tone;
            config.audio_output = AudioOutput::HEADLESS;
            config
        };
        let (callee, mut callee_events) = start_call(config(RoleRequest::Callee, 660.0))
            .await
            .unwrap();
        let (caller, mut caller_events) = start_call(config(RoleRequest::Caller, 880.0))
            .await
            .unwrap();
        wait_for(&mut callee_events, "first remote frame", |e| {
            matches!(e, CallEvent::FirstRemoteFrame)
        })
        .await;
        wait_for(&mut caller_events, "first remote frame", |e| {
            matches!(e, CallEvent::FirstRemoteFrame)
        })
        .await;

        let before = callee.live().frames_decoded;
        caller.switch_video(VideoSpec::Camera(7));
        caller.switch_audio(AudioSpec::Mic(Some("no such microphone".into())));
        // Both threads switch on their own; their notices come in either order.
        let (mut camera, mut microphone) = (false, false);
        while !(camera && microphone) {
            let CallEvent::Notice(text) = wait_for(&mut caller_events, "the switch notices", |e| {
                matches!(e, CallEvent::Notice(_))
            })
            .await
            else {
                unreachable!("only notices are accepted")
            };
            camera |= text.contains("camera 7") && text.contains("test pattern");
            microphone |= text.contains("no such microphone") || text.contains("beeps");
        }
        // Two more seconds of the same call: pictures keep coming, nothing drops.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            wait_for(&mut caller_events, "nothing", |_| false),
        )
        .await;
        let after = callee.live().frames_decoded;
        assert!(
            after >= before + 40,
            "pictures kept coming: {before} then {after}"
        );
        let report = caller.report().await.unwrap();
        assert_eq!(report.calls_connected, 1, "one uninterrupted call");

        caller.hang_up();
        callee.hang_up();
        server.shutdown().await.unwrap();
    });
}
