//! Chat over the call's data channel, end to end: two headless apps, and an
//! app with the browser page in Chromium; 100 messages each way with
//! multi-byte text (and one of exactly 4 KB), every one received once, in
//! order and intact, and every one acknowledged as delivered; and a message
//! typed while the network is gone, delivered when it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::network_call::NetworkCall;
use common::{LivePeer, Scratch, duet_bin, peer, peer_args, serialised, start_server};
use duet_netem::Side;
use serde_json::Value;

const MESSAGES: usize = 100;

/// The messages one side sends: numbered, multi-byte, the 50th exactly 4096 bytes of UTF-8.
fn messages(from: &str) -> Vec<String> {
    (1..=MESSAGES)
        .map(|i| {
            if i == 50 {
                let head = format!("{from} {i:03} ");
                // "€" is 3 bytes: fill with it, then pad with ASCII to 4096.
                let euros = (4096 - head.len()) / 3;
                let pad = 4096 - head.len() - euros * 3;
                format!("{head}{}{}", "€".repeat(euros), "x".repeat(pad))
            } else {
                format!("{from} {i:03} héllo wörld · 日本語 · Ελληνικά · 👋🏽 «{i}»")
            }
        })
        .collect()
}

/// What a headless peer printed of the chat: the texts received, in order,
/// and the ids of its own messages said delivered and not delivered.
struct ChatSeen {
    received: Vec<String>,
    delivered: Vec<u64>,
    not_delivered: Vec<u64>,
}

fn chat_seen(lines: &[String]) -> ChatSeen {
    let mut seen = ChatSeen {
        received: Vec::new(),
        delivered: Vec::new(),
        not_delivered: Vec::new(),
    };
    let id = |rest: &str| rest.trim_start_matches('#').parse::<u64>().unwrap();
    for line in lines {
        if let Some(rest) = line.strip_prefix("chat: received #") {
            // `chat: received #N sent HH:MM:SS UTC "…"`
            let json = &rest[rest.find(" UTC ").expect("a time") + 5..];
            seen.received.push(serde_json::from_str(json).unwrap());
        } else if let Some(rest) = line.strip_prefix("chat: delivered ") {
            seen.delivered.push(id(rest));
        } else if let Some(rest) = line.strip_prefix("chat: not delivered ") {
            seen.not_delivered.push(id(rest));
        }
    }
    seen
}

fn assert_all_arrived(who: &str, received: &[String], sent: &[String]) {
    assert_eq!(
        received.len(),
        sent.len(),
        "{who} received {} of {}",
        received.len(),
        sent.len()
    );
    for (i, (got, want)) in received.iter().zip(sent).enumerate() {
        assert_eq!(got, want, "{who}: message {} differs", i + 1);
    }
}

fn assert_all_delivered(who: &str, seen: &ChatSeen) {
    let all: Vec<u64> = (1..=MESSAGES as u64).collect();
    assert_eq!(seen.delivered, all, "{who}: delivered");
    assert!(
        seen.not_delivered.is_empty(),
        "{who}: {:?} not delivered",
        seen.not_delivered
    );
}

fn chat_file(scratch: &Scratch, name: &str, lines: &[String]) -> String {
    let path = scratch.path(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn two_apps_chat_100_messages_each_way_in_order_and_intact() {
    let _one = serialised();
    let scratch = Scratch::new("chat-native");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let (from_a, from_b) = (messages("A"), messages("B"));
    let a_file = chat_file(&scratch, "a.txt", &from_a);
    let b_file = chat_file(&scratch, "b.txt", &from_b);
    let small = ["--size", "320x240", "--duration", "4"];
    let a_args: Vec<&str> = small
        .iter()
        .copied()
        .chain(["--chat", a_file.as_str()])
        .collect();
    let b_args: Vec<&str> = small
        .iter()
        .copied()
        .chain(["--chat", b_file.as_str()])
        .collect();
    let mut a = peer(&scratch, "A", "caller", &url, "880", &a_args);
    a.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut b = peer(&scratch, "B", "callee", &url, "660", &b_args);
    for (name, side) in [("A", &mut a), ("B", &mut b)] {
        let status = side.wait_for_exit(Duration::from_secs(40));
        assert!(status.success(), "{name}: {}", side.stderr());
        side.read_to_end(Duration::from_secs(5));
    }
    let (seen_a, seen_b) = (chat_seen(&a.seen), chat_seen(&b.seen));
    assert_all_arrived("A", &seen_a.received, &from_b);
    assert_all_arrived("B", &seen_b.received, &from_a);
    assert_all_delivered("A", &seen_a);
    assert_all_delivered("B", &seen_b);
}

#[test]
fn an_app_and_the_browser_page_chat_100_messages_each_way_in_order_and_intact() {
    let _one = serialised();
    let scratch = Scratch::new("chat-browser");
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let addr = url.trim_start_matches("ws://").trim().to_owned();
    let (from_app, from_page) = (messages("app"), messages("page"));
    let browser = Browser::launch("chat");
    browser.open(&format!(
        "http://{addr}/?room=chat&role=caller&test=1&size=320x240"
    ));
    browser.wait_for_state("waiting", Duration::from_secs(20));
    let app_file = chat_file(&scratch, "app.txt", &from_app);
    let args = [
        "--room",
        "chat",
        "--size",
        "320x240",
        "--duration",
        "6",
        "--chat",
        &app_file,
    ];
    let mut app: LivePeer = peer(&scratch, "app", "callee", &url, "660", &args);
    app.expect_line("connected", Duration::from_secs(30));
    let texts = serde_json::to_string(&from_page).unwrap();
    browser.eval(&format!(
        "for (const text of {texts}) window.duet.chat.send(text);"
    ));

    // The page has all of the app's messages, and its own are acknowledged.
    let started = Instant::now();
    let page = loop {
        let list = browser.eval("return window.duet.chat.messages();");
        let list = list.as_array().cloned().unwrap_or_default();
        let of = |author: &str| -> Vec<Value> {
            list.iter()
                .filter(|m| m["author"] == author)
                .cloned()
                .collect()
        };
        let (mine, theirs) = (of("me"), of("peer"));
        if theirs.len() >= MESSAGES && mine.iter().all(|m| m["state"] == "delivered") {
            break theirs;
        }
        if started.elapsed() >= Duration::from_secs(20) {
            app.wait_for_exit(Duration::from_secs(30));
            app.read_to_end(Duration::from_secs(5));
            let chat: Vec<_> = app
                .seen
                .iter()
                .filter(|l| l.starts_with("chat: "))
                .map(|l| l.chars().take(40).collect::<String>())
                .collect();
            eprintln!(
                "APP {} chat lines; last: {:?}",
                chat.len(),
                &chat[chat.len().saturating_sub(12)..]
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the page has {} of the app's messages; of its own not delivered: {:?}",
            theirs.len(),
            mine.iter()
                .filter(|m| m["state"] != "delivered")
                .map(|m| (m["id"].clone(), m["state"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let at_page: Vec<String> = page
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_all_arrived("the page", &at_page, &from_app);

    let status = app.wait_for_exit(Duration::from_secs(30));
    assert!(status.success(), "app: {}", app.stderr());
    app.read_to_end(Duration::from_secs(5));
    let seen = chat_seen(&app.seen);
    assert_all_arrived("the app", &seen.received, &from_page);
    assert_all_delivered("the app", &seen);
}

/// Writes `text` as one line to the standard input of a `--chat -` peer.
fn type_line(peer: &mut LivePeer, text: &str) {
    use std::io::Write as _;
    let stdin = peer.child.stdin.as_mut().unwrap();
    writeln!(stdin, "{text}").unwrap();
    stdin.flush().unwrap();
}

#[test]
fn a_message_sent_during_a_three_second_outage_is_delivered_after_it() {
    let _one = serialised();
    let mut call = NetworkCall::new("chat-outage");
    for (side, name, role) in [(Side::A, "A", "caller"), (Side::B, "B", "callee")] {
        let args = ["--duration", "15", "--give-up-after", "60", "--chat", "-"];
        let mut command = call.rig.namespace(side).command(duet_bin());
        command.args(peer_args(
            &call.scratch,
            name,
            role,
            &call.url,
            "880",
            &args,
        ));
        let mut peer = LivePeer::spawn_command_piped(command, &call.scratch.0, name);
        if side == Side::A {
            peer.expect_line("waiting for the other peer", Duration::from_secs(30));
        }
        call.peers.push(peer);
    }
    call.expect_both("connected", Duration::from_secs(20));
    type_line(&mut call.peers[0], "before the outage ✓");
    call.peers[1].expect_line("chat: received #1", Duration::from_secs(10));

    call.rig.set_outage(true).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let during = "typed while the network is gone — ünïcödé 🌧";
    type_line(&mut call.peers[0], during);
    call.peers[0].expect_line("chat: sending #2", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(2500));
    call.rig.set_outage(false).unwrap();
    let back = Instant::now();

    let line = call.peers[1].expect_line("chat: received #2", Duration::from_secs(20));
    let received: String = serde_json::from_str(&line[line.find(" UTC ").unwrap() + 5..]).unwrap();
    assert_eq!(received, during);
    call.peers[0].expect_line("chat: delivered #2", Duration::from_secs(10));
    eprintln!(
        "delivered {} ms after the network came back",
        back.elapsed().as_millis()
    );
    call.finish(Duration::from_secs(60));
    for peer in &mut call.peers {
        peer.read_to_end(Duration::from_secs(5));
        assert!(
            !peer
                .seen
                .iter()
                .any(|l| l.starts_with("chat: not delivered")),
            "{:?}",
            peer.seen
        );
    }
}
