//! Calls across NATs (issue 16): two peers behind two routers that translate
//! their addresses (`duet_netem::NatRig`), `duet serve` and a real coturn on
//! the public network between them. With routers that give each destination
//! a port of its own, only the TURN relay joins the two; with routers that
//! keep a port per source, STUN's reflexive addresses do. Needs root and
//! coturn (`scripts/install-deps.sh`).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{LivePeer, Scratch, duet_bin, number, peer_in, report, start_server_command};
use duet_netem::{NatKind, NatRig, PUBLIC_ADDRESS, Side};
use serde_json::Value;

const TURN_SECRET: &str = "duet-test-secret";
const TURN_PORT: u16 = 3478;

/// A coturn on the public network that takes short-lived credentials made
/// with [`TURN_SECRET`]; stopped when dropped.
struct Coturn {
    _process: LivePeer,
}

impl Coturn {
    fn start(rig: &NatRig, scratch: &Scratch) -> Coturn {
        let public = PUBLIC_ADDRESS.to_string();
        let mut command = rig.public().command("turnserver");
        command.args([
            "-n",
            "--use-auth-secret",
            "--static-auth-secret",
            TURN_SECRET,
            "--realm",
            "duet.test",
            "--listening-ip",
            &public,
            "--relay-ip",
            &public,
            "--listening-port",
            &TURN_PORT.to_string(),
            "--min-port",
            "50000",
            "--max-port",
            "50999",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--fingerprint",
            "--log-file",
            "stdout",
            "--simple-log",
            // Its own files, not the system's.
            "--pidfile",
            scratch.path("turnserver.pid").to_str().unwrap(),
            "--db",
            scratch.path("turndb").to_str().unwrap(),
        ]);
        let mut coturn = LivePeer::spawn_command(command, &scratch.0, "coturn");
        // The last line of its start-up: its listeners are open by then.
        coturn.expect_line("IO method (admin thread)", Duration::from_secs(20));
        Coturn { _process: coturn }
    }
}

/// `turn:USER:PASS@…` with coturn's short-lived credentials for `name`,
/// expiring `valid_for` from now (negative: already expired).
fn hand_typed_turn(name: &str, valid_for: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let username = format!("{}:{name}", now + valid_for);
    let password = duet_signal::turn::password(TURN_SECRET, &username);
    format!("turn:{username}:{password}@{PUBLIC_ADDRESS}:{TURN_PORT}")
}

/// The rig, `duet serve` on the public network, and a scratch directory.
struct NatCall {
    // Field order is drop order: the server and coturn stop before the rig goes.
    _server: LivePeer,
    _coturn: Coturn,
    rig: NatRig,
    scratch: Scratch,
    url: String,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// What `duet serve` is told about TURN.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// Nothing: peers bring their own `--ice`.
    Plain,
    /// `--turn-url` and the secret (from a file, as a deployment keeps it):
    /// every `joined` carries credentials.
    HandingOutTurn,
}

impl NatCall {
    /// One test at a time: the rig, coturn and `duet serve` on the public network.
    fn new(label: &str, kind: NatKind, serve: Serve) -> NatCall {
        assert!(
            turnserver_installed(),
            "coturn is missing: run scripts/install-deps.sh"
        );
        let one_at_a_time = common::serialised();
        let scratch = Scratch::new(label);
        let rig = NatRig::new(label, kind).expect("the NAT rig needs root, iproute2 and nftables");
        let coturn = Coturn::start(&rig, &scratch);
        let secret_file = scratch.path("turn-secret");
        std::fs::write(&secret_file, format!("{TURN_SECRET}\n")).unwrap();
        let turn_url = format!("turn:{PUBLIC_ADDRESS}:{TURN_PORT}");
        let mut command = rig.public().command(duet_bin());
        command.args(["serve", "--listen", &format!("{PUBLIC_ADDRESS}:0")]);
        if serve == Serve::HandingOutTurn {
            command.args(["--turn-url", &turn_url, "--turn-secret-file"]);
            command.arg(&secret_file);
        }
        let (server, url) = start_server_command(&scratch, command);
        NatCall {
            rig,
            scratch,
            url,
            _server: server,
            _coturn: coturn,
            _one_at_a_time: one_at_a_time,
        }
    }

    /// Caller in A, callee in B, each with `extra[i]`, for a short call.
    fn peers(&self, extra: [&[&str]; 2]) -> Vec<LivePeer> {
        let mut peers = Vec::new();
        for (index, (side, name, role, tone)) in [
            (Side::A, "A", "caller", "660"),
            (Side::B, "B", "callee", "880"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut args = vec!["--size", "320x240", "--duration", "3"];
            args.extend_from_slice(extra[index]);
            let namespace = self.rig.peer(side);
            let mut peer = peer_in(namespace, &self.scratch, name, role, &self.url, tone, &args);
            if side == Side::A {
                peer.expect_line("waiting for the other peer", Duration::from_secs(30));
            }
            peers.push(peer);
        }
        peers
    }

    /// Both exit 0; their reports.
    fn finish(&self, peers: &mut [LivePeer]) -> [Value; 2] {
        let statuses: Vec<_> = peers
            .iter_mut()
            .map(|peer| peer.wait_for_exit(Duration::from_secs(60)))
            .collect();
        // DUET_TEST_KEEP=DIR keeps the peers' logs (with DUET_TEST_LOG=debug, say).
        if let Ok(dir) = std::env::var("DUET_TEST_KEEP") {
            for (peer, name) in peers.iter().zip(["A", "B"]) {
                let _ = std::fs::write(
                    format!("{dir}/{name}-{}.stderr", std::process::id()),
                    peer.stderr(),
                );
            }
        }
        // Both logs: why one end failed is often in the other's.
        if !statuses.iter().all(|status| status.success()) {
            let logs: Vec<String> = peers.iter().map(LivePeer::stderr).collect();
            panic!(
                "{statuses:?}\n--- A ---\n{}\n--- B ---\n{}",
                logs[0], logs[1]
            );
        }
        for peer in peers.iter() {
            // A candidate the relay or the other peer can never reach (a
            // loopback address, say) makes coturn refuse its permission.
            let stderr = peer.stderr();
            assert!(
                !stderr.contains("permission request failed")
                    && !stderr.contains("Failed to write packet"),
                "a peer offered or used an address nobody can reach: {stderr}"
            );
        }
        let reports = ["A", "B"].map(|name| report(&self.scratch, name));
        // For BENCHMARKS.md (`--nocapture`): how long each end took.
        for (name, report) in ["A", "B"].iter().zip(&reports) {
            eprintln!(
                "{name}: path {} ({}/{}), connected after {} ms, first picture after {} ms, \
                 video latency p50 {} ms, audio p50 {} ms",
                report["network"]["path"],
                report["network"]["local_candidate_type"],
                report["network"]["remote_candidate_type"],
                report["time_to_connected_ms"],
                report["time_to_first_remote_frame_ms"],
                report["video"]["latency_ms"]["p50"],
                report["audio"]["latency_ms"]["p50"],
            );
        }
        reports
    }
}

/// Pictures and beeps arrived both ways.
fn assert_media_both_ways(reports: &[Value; 2]) {
    for report in reports {
        assert_eq!(report["connected"], true, "{report:#}");
        assert!(
            number(report, &["video", "stamped_frames"]) > 30.0,
            "{:#}",
            report["video"]
        );
        assert!(
            number(report, &["audio", "beeps_detected"]) >= 2.0,
            "{:#}",
            report["audio"]
        );
    }
}

fn candidate_types(report: &Value) -> (String, String) {
    let network = &report["network"];
    (
        network["local_candidate_type"]
            .as_str()
            .unwrap_or("none")
            .to_owned(),
        network["remote_candidate_type"]
            .as_str()
            .unwrap_or("none")
            .to_owned(),
    )
}

/// Both give up without a call (exit status 5).
fn assert_no_call(peers: &mut [LivePeer]) {
    for peer in peers {
        let status = peer.wait_for_exit(Duration::from_secs(40));
        assert_eq!(status.code(), Some(5), "{}", peer.stderr());
    }
}

/// Both ends' packets went through the relay.
fn assert_relayed(reports: &[Value; 2]) {
    for report in reports {
        let (local, remote) = candidate_types(report);
        assert!(
            local == "relay" || remote == "relay",
            "not relayed: {local}/{remote}"
        );
        assert_eq!(report["network"]["path"], "relayed");
    }
}

fn turnserver_installed() -> bool {
    Command::new("turnserver").arg("--help").output().is_ok()
}

#[test]
fn behind_two_nats_only_the_relay_connects_and_hand_typed_credentials_work() {
    let call = NatCall::new("nat-relay", NatKind::Symmetric, Serve::Plain);

    // Without TURN there is no way through: the topology forces the relay.
    let give_up: &[&str] = &["--give-up-after", "8"];
    let mut peers = call.peers([give_up, give_up]);
    assert_no_call(&mut peers);

    // Expired credentials: coturn refuses them, and the person is told so.
    let expired = hand_typed_turn("duet-a", -60);
    let mut peers = call.peers([&["--ice", &expired, "--give-up-after", "8"], give_up]);
    // The check runs as the call starts: the notice may come before the
    // line the caller was waited for by.
    let refused = "notice: TURN refused the credentials";
    if !peers[0].seen.iter().any(|line| line.contains(refused)) {
        peers[0].expect_line(refused, Duration::from_secs(20));
    }
    assert_no_call(&mut peers);

    // coturn's short-lived credentials typed by hand: the user name holds a colon.
    let (a, b) = (
        hand_typed_turn("duet-a", 600),
        hand_typed_turn("duet-b", 600),
    );
    let mut peers = call.peers([&["--ice", &a], &["--ice", &b]]);
    let reports = call.finish(&mut peers);
    assert_media_both_ways(&reports);
    assert_relayed(&reports);
}

#[test]
fn through_nats_that_keep_ports_stun_connects_and_relay_only_hides_the_addresses() {
    let call = NatCall::new("nat-stun", NatKind::EndpointIndependent, Serve::Plain);

    // STUN only: each learns its router's public address, and the two punch through.
    let stun = format!("stun:{PUBLIC_ADDRESS}:{TURN_PORT}");
    let mut peers = call.peers([&["--ice", &stun], &["--ice", &stun]]);
    let reports = call.finish(&mut peers);
    assert_media_both_ways(&reports);
    for report in &reports {
        let (local, remote) = candidate_types(report);
        assert!(local != "relay" && remote != "relay", "{local}/{remote}");
        assert!(
            ["srflx", "prflx"].contains(&local.as_str())
                || ["srflx", "prflx"].contains(&remote.as_str()),
            "through the NATs' public addresses: {local}/{remote}"
        );
    }

    // Relay only: nothing but the relay's address is offered, so neither
    // peer's own or public address reaches the other.
    let (a, b) = (
        hand_typed_turn("duet-a", 600),
        hand_typed_turn("duet-b", 600),
    );
    let mut peers = call.peers([
        &["--ice", &a, "--ice-transport", "relay"],
        &["--ice", &b, "--ice-transport", "relay"],
    ]);
    let reports = call.finish(&mut peers);
    assert_media_both_ways(&reports);
    for report in &reports {
        // The other side's relay may be learned from its first check
        // (peer-reflexive) before its candidate arrives: the same address.
        let (local, remote) = candidate_types(report);
        assert_eq!(local, "relay", "{local}/{remote}");
    }
}

#[test]
fn behind_two_nats_the_credentials_the_server_hands_out_relay_the_call() {
    let call = NatCall::new("nat-served", NatKind::Symmetric, Serve::HandingOutTurn);

    // No --ice at all: the peers take the server's TURN server and credentials.
    let mut peers = call.peers([&[], &[]]);
    let reports = call.finish(&mut peers);
    assert_media_both_ways(&reports);
    assert_relayed(&reports);
}

/// Chromium behind router A, in a call with the app behind router B.
struct PageAndApp<T> {
    /// What the page's work returned.
    page: T,
    /// The app, as the callee.
    app: LivePeer,
    leave: std::sync::mpsc::Sender<()>,
    browser_side: std::thread::JoinHandle<()>,
}

impl<T> PageAndApp<T> {
    /// Opens the page (`query` after `/?`, as the caller) in Chromium behind
    /// router A and waits until it is in the room; then starts the app behind
    /// router B as the callee with `app_args`, while `on_page` runs on the
    /// page. The thread that starts Chromium (and talks to it) lives in A's
    /// network, and so do the processes it starts.
    fn start(
        call: &NatCall,
        name: &str,
        query: &str,
        app_args: &[&str],
        on_page: impl FnOnce(&common::browser::Browser) -> T + Send + 'static,
    ) -> PageAndApp<T>
    where
        T: Send + 'static,
    {
        common::browser::installed().unwrap_or_else(|missing| panic!("{missing}"));
        let page_url = format!(
            "{}/?role=caller&{query}",
            call.url.replacen("ws://", "http://", 1)
        );
        let home = call.rig.peer(Side::A).open().unwrap();
        let (to_test, from_browser) = std::sync::mpsc::channel();
        let (leave, wait_to_leave) = std::sync::mpsc::channel::<()>();
        let name = name.to_owned();
        let browser_side = std::thread::spawn(move || {
            duet_netem::enter(&home).unwrap();
            let browser = common::browser::Browser::launch(&name);
            browser.open(&page_url);
            browser.wait_for_state("waiting", Duration::from_secs(30));
            to_test.send(None).unwrap();
            to_test.send(Some(on_page(&browser))).unwrap();
            // Stay in the call until the test is done with it.
            let _ = wait_to_leave.recv_timeout(Duration::from_secs(60));
        });
        assert!(
            from_browser
                .recv_timeout(Duration::from_secs(90))
                .unwrap()
                .is_none()
        );
        let app = peer_in(
            call.rig.peer(Side::B),
            &call.scratch,
            "B",
            "callee",
            &call.url,
            "660",
            app_args,
        );
        let page = from_browser
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .expect("what the page's work returned");
        PageAndApp {
            page,
            app,
            leave,
            browser_side,
        }
    }

    /// The page leaves once the app has exited; the page's result and the
    /// app's exit status.
    fn finish(mut self) -> (T, std::process::ExitStatus, LivePeer) {
        let status = self.app.wait_for_exit(Duration::from_secs(60));
        let _ = self.leave.send(());
        self.browser_side.join().unwrap();
        (self.page, status, self.app)
    }
}

#[test]
fn a_browser_behind_one_nat_and_the_app_behind_another_meet_through_the_servers_relay() {
    let call = NatCall::new("nat-web", NatKind::Symmetric, Serve::HandingOutTurn);
    let (page, status, app) = PageAndApp::start(
        &call,
        "nat-web",
        "room=duet&test=1&size=320x240",
        &["--size", "320x240", "--duration", "6"],
        |browser| {
            browser.wait_for_report(Duration::from_secs(40), |r| {
                // Sound: a headless Chromium in a network namespace has no sound
                // server to play to, so the page may hear no beep; packets say audio came.
                r["video"]["stamped_frames"].as_f64() >= Some(30.0)
                    && r["audio"]["packets_received"].as_f64() >= Some(100.0)
                    && r["network"]["path"].is_string()
            })
        },
    )
    .finish();
    assert!(status.success(), "{status}: {}", app.stderr());
    let app_report = report(&call.scratch, "B");
    assert_eq!(page["network"]["path"], "relayed", "{:#}", page["network"]);
    assert_eq!(
        app_report["network"]["path"], "relayed",
        "{:#}",
        app_report["network"]
    );
    assert!(
        number(&app_report, &["video", "stamped_frames"]) > 30.0,
        "{:#}",
        app_report["video"]
    );
    assert!(
        number(&app_report, &["audio", "packets_received"]) >= 100.0,
        "{:#}",
        app_report["audio"]
    );
    eprintln!(
        "browser A: connected after {} ms, first picture after {} ms; app B: connected after {} ms, first picture after {} ms",
        page["time_to_connected_ms"],
        page["time_to_first_remote_frame_ms"],
        app_report["time_to_connected_ms"],
        app_report["time_to_first_remote_frame_ms"],
    );
}

#[test]
fn a_page_given_expired_turn_credentials_says_the_relay_refused_them() {
    let call = NatCall::new("nat-web-401", NatKind::Symmetric, Serve::Plain);
    let expired = hand_typed_turn("duet-page", -60);
    let query = format!(
        "room=duet&test=1&size=320x240&ice={}",
        percent_encoded(&expired)
    );
    let (notices, _, _) = PageAndApp::start(
        &call,
        "nat-web-401",
        &query,
        &["--size", "320x240", "--give-up-after", "8"],
        |browser| {
            // The page asks coturn for a relay once the other peer is there
            // and the connection starts gathering; coturn answers 401 twice.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut notices = browser.text("notices");
            while !notices.contains("TURN refused the credentials")
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(200));
                notices = browser.text("notices");
            }
            notices
        },
    )
    .finish();
    assert!(
        notices.contains("TURN refused the credentials")
            && notices.contains(&format!("{PUBLIC_ADDRESS}:{TURN_PORT}")),
        "the page's notices: {notices:?}"
    );
}

/// `text` with every byte outside `A-Za-z0-9-._~` percent-encoded, for a query.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
