//! The session against the real signaling server, in one process: two
//! sessions with the test signals make a call over WebRTC on loopback and
//! end it cleanly; and a caller whose offer is never answered offers again
//! on a fresh connection (the negotiator's answer timeout, driven by the
//! session's timer).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use duet_call::{ANSWER_TIMEOUT, RETRY_BACKOFF_FIRST};
use duet_call::{
    AudioOutput, CallConfig, CallEvent, CallEvents, CallHandle, CallPhase, start_call,
};
use duet_media::source::{AudioSpec, VideoSpec};
use duet_signal::{
    ClientConfig, RoleRequest, ServerConfig, ServerMessage, SignalEvent, SignalServer,
};

/// Bound for anything that takes a moment on a busy loopback machine; a hang
/// fails the test instead of stalling it.
const PATIENCE: Duration = Duration::from_secs(30);

fn start_server() -> duet_signal::RunningServer {
    SignalServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        None,
        ServerConfig::default(),
    )
    .unwrap()
    .spawn()
}

/// A small call with the test signals, received audio discarded, loopback only.
fn test_config(url: &str, role: RoleRequest) -> CallConfig {
    let mut config = CallConfig::new(url, "session-test", role);
    config.video = VideoSpec::Test;
    config.audio = AudioSpec::Test;
    config.audio_output = AudioOutput::HEADLESS;
    config.width = 320;
    config.height = 240;
    config.fps = 15;
    config.udp_addrs = vec!["127.0.0.1:0".to_owned()];
    config
}

/// Events until `wanted` accepts one; all of them, in order.
async fn until(
    events: &mut CallEvents,
    what: &str,
    wanted: impl Fn(&CallEvent) -> bool,
) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    let result = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = events.recv().await {
            let done = wanted(&event);
            seen.push(event);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(result, Ok(true), "no {what}; events: {seen:?}");
    seen
}

fn is_phase(event: &CallEvent, phase: &CallPhase) -> bool {
    matches!(event, CallEvent::Phase(p) if p == phase)
}

async fn start(url: &str, role: RoleRequest) -> (CallHandle, CallEvents) {
    start_call(test_config(url, role))
        .await
        .expect("the call starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_connect_see_each_other_and_end_cleanly_on_hang_up() {
    let server = start_server();
    let (caller, mut caller_events) = start(server.url(), RoleRequest::Caller).await;
    until(&mut caller_events, "wait for the callee", |e| {
        is_phase(e, &CallPhase::WaitingForPeer)
    })
    .await;
    let (callee, mut callee_events) = start(server.url(), RoleRequest::Callee).await;

    for events in [&mut caller_events, &mut callee_events] {
        let seen = until(events, "connected call", |e| {
            is_phase(e, &CallPhase::Connected)
        })
        .await;
        assert!(
            seen.iter().any(|e| is_phase(e, &CallPhase::Connecting)),
            "{seen:?}"
        );
        until(events, "first remote picture", |e| {
            matches!(e, CallEvent::FirstRemoteFrame)
        })
        .await;
    }

    // The caller hangs up: it ends without an error, and its bye reaches the callee.
    caller.hang_up();
    let seen = until(&mut caller_events, "end of the caller", |e| {
        matches!(e, CallEvent::Ended(_))
    })
    .await;
    assert!(seen.iter().any(|e| is_phase(e, &CallPhase::HungUp)));
    assert!(matches!(seen.last(), Some(CallEvent::Ended(Ok(())))));
    let seen = until(&mut callee_events, "the peer leaving", |e| {
        is_phase(e, &CallPhase::PeerLeft)
    })
    .await;
    assert!(
        !seen.iter().any(|e| matches!(e, CallEvent::Ended(_))),
        "{seen:?}"
    );

    // The report outlives the session and counts one connected call.
    let report = caller.report().await.expect("a report after the end");
    let report = serde_json::to_value(&report).unwrap();
    assert_eq!(report["calls_connected"], 1, "{report:#}");
    assert!(report["time_to_connected_ms"].as_f64().unwrap() > 0.0);
    assert!(report["time_to_first_remote_frame_ms"].as_f64().unwrap() > 0.0);

    callee.hang_up();
    let seen = until(&mut callee_events, "end of the callee", |e| {
        matches!(e, CallEvent::Ended(_))
    })
    .await;
    assert!(matches!(seen.last(), Some(CallEvent::Ended(Ok(())))));
    let after_end = tokio::time::timeout(PATIENCE, callee_events.recv()).await;
    assert!(
        matches!(after_end, Ok(None)),
        "Ended is the last event: {after_end:?}"
    );
    // The report is still there after the end.
    assert!(callee.report().await.is_some());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_never_answered_is_made_again_on_a_fresh_connection() {
    let server = start_server();
    // A callee that joins through the real client and never answers.
    let silent = ClientConfig::new(server.url(), "session-test", RoleRequest::Callee);
    let (_silent, mut heard) = duet_signal::connect(silent).await.unwrap();
    let (caller, mut caller_events) = start(server.url(), RoleRequest::Caller).await;

    let mut offers = Vec::new();
    let waited = tokio::time::timeout(ANSWER_TIMEOUT + RETRY_BACKOFF_FIRST + PATIENCE, async {
        while offers.len() < 2 {
            match heard.recv().await {
                Some(SignalEvent::Message(ServerMessage::Offer { sdp, .. })) => offers.push(sdp),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "offers heard: {}", offers.len());
    assert_eq!(offers.len(), 2);
    // A fresh connection has fresh ICE credentials.
    let ufrag = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=ice-ufrag:"))
            .map(str::to_owned)
    };
    assert!(ufrag(&offers[0]).is_some());
    assert_ne!(ufrag(&offers[0]), ufrag(&offers[1]));

    // The caller said so: the first attempt was lost, and a second one began.
    let seen = until(&mut caller_events, "the lost attempt", |e| {
        is_phase(e, &CallPhase::ConnectionLost)
    })
    .await;
    let attempts = seen
        .iter()
        .filter(|e| is_phase(e, &CallPhase::Connecting))
        .count();
    assert_eq!(attempts, 1, "{seen:?}");
    until(&mut caller_events, "the second attempt", |e| {
        is_phase(e, &CallPhase::Connecting)
    })
    .await;
    caller.hang_up();
    let seen = until(&mut caller_events, "the end", |e| {
        matches!(e, CallEvent::Ended(_))
    })
    .await;
    assert!(matches!(seen.last(), Some(CallEvent::Ended(Ok(())))));
    server.shutdown().await.unwrap();
}
