//! Several `duet serve --redis` instances sharing rooms: real Redis, real
//! HAProxy, real `duet` peers calling over WebRTC on loopback. A call whose
//! two peers sit on different instances connects and carries media; a peer
//! whose instance is killed comes back through HAProxy on the other one,
//! resumes its seat, and the call goes on; Redis restarted mid-call loses no
//! seat and leaves no room half-joined.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::scale_out::{Haproxy, Instance, Redis};
use common::{LivePeer, Scratch, number, peer, report, serialised};
use serde_json::Value;

/// `receiver` decoded at least 90 % of the pictures `sender` sent, each
/// stamp read, and heard its beeps: media went on the whole call.
fn assert_media_flowed(sender: &Value, receiver: &Value, sender_tone: f64) {
    let sent = number(sender, &["video", "frames_sent"]);
    let decoded = number(receiver, &["video", "frames_decoded"]);
    assert!(sent >= 100.0, "too few frames sent: {sender:#}");
    assert!(
        decoded >= 0.9 * sent,
        "decoded {decoded} of {sent} frames; receiver: {receiver:#}"
    );
    assert_eq!(number(receiver, &["video", "stamped_frames"]), decoded);
    assert!(
        number(receiver, &["audio", "beeps_detected"]) >= 3.0,
        "{receiver:#}"
    );
    let heard = number(receiver, &["audio", "beep_hz"]);
    assert!(
        (heard - sender_tone).abs() <= sender_tone * 0.02,
        "heard {heard} Hz"
    );
}

/// A log without its terminal colour codes (`ESC [ … m`).
fn without_colours(log: &str) -> String {
    let mut plain = String::with_capacity(log.len());
    let mut in_code = false;
    for c in log.chars() {
        match (in_code, c) {
            (false, '\u{1b}') => in_code = true,
            (false, c) => plain.push(c),
            (true, 'm') => in_code = false,
            (true, _) => {}
        }
    }
    plain
}

const SMALL: [&str; 2] = ["--size", "320x240"];

#[test]
fn a_caller_on_one_instance_and_a_callee_on_another_see_and_hear_each_other() {
    let _one = serialised();
    let scratch = Scratch::new("two-instances");
    let redis = Redis::start(&scratch);
    let one = Instance::start(&scratch, "instance1", &redis.url(), &[]);
    let two = Instance::start(&scratch, "instance2", &redis.url(), &[]);
    let args = [SMALL[0], SMALL[1], "--duration", "6"];
    let mut caller = peer(&scratch, "caller", "caller", &one.url(), "880", &args);
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut callee = peer(&scratch, "callee", "callee", &two.url(), "660", &args);
    for peer in [&mut caller, &mut callee] {
        peer.expect_line("first remote frame", Duration::from_secs(20));
    }

    // Each instance holds one peer; the offer, answer and candidates crossed
    // over Redis, and both instances say so.
    for instance in [&one, &two] {
        let addr = &instance.addr;
        assert_eq!(instance.metric("duet_joined_peers"), Some(1.0), "{addr}");
        assert_eq!(instance.metric("duet_connections"), Some(1.0), "{addr}");
        let forwarded = instance.metric("duet_messages_forwarded_total");
        assert!(forwarded >= Some(1.0), "{addr}: {forwarded:?}");
        let received = instance.metric("duet_messages_received_total");
        assert!(received >= Some(1.0), "{addr}: {received:?}");
        assert_eq!(instance.metric("duet_redis_up"), Some(1.0), "{addr}");
        let rtt = instance.metric("duet_redis_round_trip_seconds");
        assert!(rtt.is_some_and(|s| s > 0.0), "{rtt:?}");
        assert!(instance.get("/healthz").starts_with("HTTP/1.1 200"));
    }

    assert!(caller.wait_for_exit(Duration::from_secs(30)).success());
    assert!(callee.wait_for_exit(Duration::from_secs(30)).success());
    let (caller, callee) = (report(&scratch, "caller"), report(&scratch, "callee"));
    assert_media_flowed(&caller, &callee, 880.0);
    assert_media_flowed(&callee, &caller, 660.0);
}

#[test]
fn a_peer_whose_instance_is_killed_resumes_through_haproxy_and_the_call_goes_on() {
    let _one = serialised();
    let scratch = Scratch::new("instance-killed");
    let redis = Redis::start(&scratch);
    let behind = ["--proxy-protocol"];
    let mut one = Instance::start(&scratch, "instance1", &redis.url(), &behind);
    let two = Instance::start(&scratch, "instance2", &redis.url(), &behind);
    let haproxy = Haproxy::start(&scratch, [&one.addr, &two.addr]);
    let url = format!("ws://{}", haproxy.addr);
    let args = [SMALL[0], SMALL[1], "--duration", "10"];
    let mut caller = peer(&scratch, "caller", "caller", &url, "880", &args);
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut callee = peer(&scratch, "callee", "callee", &url, "660", &args);
    for peer in [&mut caller, &mut callee] {
        peer.expect_line("first remote frame", Duration::from_secs(20));
    }
    // HAProxy sends each new peer to the instance with fewer connections.
    assert_eq!(one.metric("duet_joined_peers"), Some(1.0));
    assert_eq!(two.metric("duet_joined_peers"), Some(1.0));
    let moved_role = if without_colours(&one.process.stderr()).contains("role=caller") {
        "caller"
    } else {
        "callee"
    };

    one.process.signal("KILL");
    one.process.wait_for_exit(Duration::from_secs(5));
    let (moved, _stayed) = if moved_role == "caller" {
        (&mut caller, &mut callee)
    } else {
        (&mut callee, &mut caller)
    };
    moved.expect_line("signaling lost", Duration::from_secs(10));
    moved.expect_line(
        &format!("rejoined room duet as {moved_role}"),
        Duration::from_secs(15),
    );
    assert_eq!(two.metric("duet_joined_peers"), Some(2.0));
    assert_eq!(two.metric("duet_resumes_total"), Some(1.0));

    let (caller, callee) = finish_without_peer_left(&scratch, &mut caller, &mut callee);
    // One call, never interrupted.
    assert_eq!(number(&caller, &["calls_connected"]), 1.0);
    assert_eq!(number(&callee, &["calls_connected"]), 1.0);
    assert_media_flowed(&caller, &callee, 880.0);
    assert_media_flowed(&callee, &caller, 660.0);
}

/// Both peers exit 0 and neither ever saw the other leave; their reports.
fn finish_without_peer_left(
    scratch: &Scratch,
    caller: &mut LivePeer,
    callee: &mut LivePeer,
) -> (Value, Value) {
    for peer in [&mut *caller, &mut *callee] {
        assert!(peer.wait_for_exit(Duration::from_secs(30)).success());
        assert!(
            !peer.seen.iter().any(|line| line.contains("peer left")),
            "{:?}",
            peer.seen
        );
    }
    (report(scratch, "caller"), report(scratch, "callee"))
}

/// What a fresh connection to `addr` hears in answer to joining `room`:
/// the `type` of the first message, and its `code` when it is an error.
fn join_answer(addr: &str, room: &str) -> (String, Option<String>) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let join = format!(r#"{{"type":"join","room":"{room}"}}"#);
        socket.send(Message::text(join)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s");
        let text = match answer {
            Some(Ok(Message::Text(text))) => text,
            // Refused without a protocol message: the close code says why.
            Some(Ok(Message::Close(Some(frame)))) => {
                return ("close".to_owned(), Some(u16::from(frame.code).to_string()));
            }
            other => panic!("no answer to a join: {other:?}"),
        };
        let answer: Value = serde_json::from_str(&text).unwrap();
        (
            answer["type"].as_str().unwrap_or_default().to_owned(),
            answer["code"].as_str().map(str::to_owned),
        )
    })
}

/// Polls an instance's health check until it answers with `status`.
fn wait_for_health(instance: &Instance, status: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !instance
        .get("/healthz")
        .starts_with(&format!("HTTP/1.1 {status}"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never answered {status}",
            instance.addr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn while_redis_restarts_joins_are_refused_the_call_goes_on_and_no_room_is_left_half_joined() {
    let _one = serialised();
    let scratch = Scratch::new("redis-restart");
    let mut redis = Redis::start(&scratch);
    let one = Instance::start(&scratch, "instance1", &redis.url(), &[]);
    let two = Instance::start(&scratch, "instance2", &redis.url(), &[]);
    let args = [SMALL[0], SMALL[1], "--duration", "10"];
    let mut caller = peer(&scratch, "caller", "caller", &one.url(), "880", &args);
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut callee = peer(&scratch, "callee", "callee", &two.url(), "660", &args);
    for peer in [&mut caller, &mut callee] {
        peer.expect_line("first remote frame", Duration::from_secs(20));
    }

    redis.kill();
    wait_for_health(&one, "503");
    assert_eq!(
        join_answer(&one.addr, "elsewhere"),
        ("close".to_owned(), Some("1013".to_owned())),
        "a join is refused with \"try again later\" while Redis is away"
    );
    redis.restart();
    wait_for_health(&one, "200");
    wait_for_health(&two, "200");

    // Both seats of the call are still taken, whole: a third peer finds the room full.
    assert_eq!(
        join_answer(&two.addr, "duet"),
        ("error".to_owned(), Some("room_full".to_owned()))
    );
    // And joins work again.
    assert_eq!(join_answer(&one.addr, "elsewhere").0, "joined");

    let (caller, callee) = finish_without_peer_left(&scratch, &mut caller, &mut callee);
    assert_eq!(number(&caller, &["calls_connected"]), 1.0);
    assert_media_flowed(&caller, &callee, 880.0);
    assert_media_flowed(&callee, &caller, 660.0);
}
