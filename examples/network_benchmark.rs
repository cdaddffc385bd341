//! Duet and Chromium on the same impaired networks, side by side (issue 14).
//!
//! For each network profile, one call native↔native (`duet --headless` with
//! `--video test:noisy`, as `tests/e2e/network.rs` makes them) and one call
//! Chromium↔Chromium (the page `duet serve` hands out, `?test=1&noisy=1`:
//! the same stamped, noisy picture at 640x480), each peer in a network
//! namespace of the `duet-netem` rig, impaired the same way both directions.
//! Prints one Markdown row per peer of what it received.
//!
//! Where each figure is read: the app (headless) reads stamps when a frame is
//! decoded, the page when it is presented (`requestVideoFrameCallback`), so
//! the page's latency includes its own playout delay. Frames per second are
//! frames decoded over the seconds connected, for both. Freezes are each
//! side's own count (the app's rule, Chromium's `freezeCount`). Chromium in a
//! network namespace has no sound server to play to, so its beep count may be
//! zero for that reason alone.
//!
//! Needs root (namespaces), Debian's chromium and chromium-driver, and the
//! packages of `scripts/install-deps.sh`:
//!
//! ```sh
//! cargo build -p duet
//! cargo run --example network_benchmark -- 30 [outage|loss|cap]
//! ```
//!
//! The first argument is the seconds each call lasts once connected; the
//! second, if given, keeps only the profiles whose name holds it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/e2e/common/mod.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::network_call::NetworkCall;
use duet_netem::{LinkProfile, Side};
use serde_json::Value;

/// A network to call across, and an outage in the middle of the call.
struct Profile {
    name: &'static str,
    label: &'static str,
    link: LinkProfile,
    /// A rate cap each way (kbit/s), from before the call.
    cap_kbps: Option<u32>,
    outage: Option<Duration>,
}

/// When the outage starts, after both are connected.
const OUTAGE_AFTER: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(30);
    // Only the profiles whose name holds this, if given ("loss", "outage", "cap").
    let only = std::env::args().nth(2).unwrap_or_default();
    common::browser::installed().map_err(anyhow::Error::msg)?;
    let profiles = [
        Profile {
            name: "2 % loss, 40 ± 10 ms",
            label: "nb-loss2",
            link: LinkProfile::new(40, 10, 2.0),
            cap_kbps: None,
            outage: None,
        },
        Profile {
            name: "5 % loss, 60 ± 30 ms",
            label: "nb-loss5",
            link: LinkProfile::new(60, 30, 5.0),
            cap_kbps: None,
            outage: None,
        },
        Profile {
            name: "3 s outage, 10 ms each way",
            label: "nb-out3",
            link: LinkProfile::new(10, 0, 0.0),
            cap_kbps: None,
            outage: Some(Duration::from_secs(3)),
        },
        Profile {
            name: "500 kbit/s cap, 20 ms each way",
            label: "nb-cap500",
            link: LinkProfile::new(20, 0, 0.0),
            cap_kbps: Some(500),
            outage: None,
        },
        Profile {
            name: "100 kbit/s cap, 20 ms each way",
            label: "nb-cap100",
            link: LinkProfile::new(20, 0, 0.0),
            cap_kbps: Some(100),
            outage: None,
        },
    ];
    println!(
        "| profile | pair | peer | fps | size at the end | frames decoded / received | freezes (total) | video p50 / p95 ms | kbit/s received | beeps heard | resends received (RTX) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for profile in profiles.iter().filter(|p| p.name.contains(&only)) {
        let native = native_call(profile, seconds);
        let browsers = browser_call(profile, seconds);
        for (pair, reports) in [("native↔native", native), ("Chromium↔Chromium", browsers)] {
            for (peer, report) in ["caller", "callee"].iter().zip(&reports) {
                println!("| {} | {pair} | {peer} | {} |", profile.name, row(report));
            }
        }
    }
    Ok(())
}

/// Two headless apps across the rig: their reports.
fn native_call(profile: &Profile, seconds: u64) -> [Value; 2] {
    let mut call = NetworkCall::new(profile.label);
    impair(&mut call, profile);
    call.start(seconds, &["--give-up-after", "90"]);
    if let Some(outage) = profile.outage {
        call.expect_both("connected", Duration::from_secs(30));
        cut(&mut call, outage);
    }
    call.finish(Duration::from_secs(seconds + 120))
}

/// Two Chromiums across the rig, each in its peer's namespace: their pages'
/// reports after `seconds` connected.
fn browser_call(profile: &Profile, seconds: u64) -> [Value; 2] {
    let mut call = NetworkCall::new(profile.label);
    impair(&mut call, profile);
    let page = call.url.replacen("ws://", "http://", 1);
    // Chromium offers a host candidate only for the address its default route
    // leaves from; the rig's peers share one subnet and have no default route.
    let hub = call.rig.hub_address().to_string();
    for side in [Side::A, Side::B] {
        call.rig
            .namespace(side)
            .ip(&["route", "add", "default", "via", &hub])
            .unwrap();
    }
    let (said, heard) = mpsc::channel::<(usize, Option<Value>)>();
    let mut sides = Vec::new();
    for (index, (side, role)) in [(Side::A, "caller"), (Side::B, "callee")]
        .into_iter()
        .enumerate()
    {
        let home = call.rig.namespace(side).open().unwrap();
        let url = format!("{page}/?room=bench&role={role}&test=1&noisy=1");
        let said = said.clone();
        let name = format!("{}-{role}", profile.label);
        sides.push(std::thread::spawn(move || {
            duet_netem::enter(&home).unwrap();
            let browser = Browser::launch(&name);
            browser.open(&url);
            if index == 0 {
                browser.wait_for_state("waiting", Duration::from_secs(30));
                said.send((index, None)).unwrap();
            }
            browser.wait_for_state("in-call", Duration::from_secs(60));
            said.send((index, None)).unwrap();
            said.send((index, Some(call_report(&browser, seconds))))
                .unwrap();
        }));
        if index == 0 {
            // The callee joins once the caller waits in the room.
            assert!(
                heard
                    .recv_timeout(Duration::from_secs(90))
                    .unwrap()
                    .1
                    .is_none()
            );
        }
    }
    let mut connected = 0;
    let mut reports = [Value::Null, Value::Null];
    while reports.iter().any(Value::is_null) {
        let (index, report) = heard
            .recv_timeout(Duration::from_secs(3 * seconds + 120))
            .expect("both pages report");
        match report {
            None => {
                connected += 1;
                if connected == 2
                    && let Some(outage) = profile.outage
                {
                    cut(&mut call, outage);
                }
            }
            Some(report) => reports[index] = report,
        }
    }
    for side in sides {
        side.join().unwrap();
    }
    reports
}

/// The page's report once it has been connected for `seconds` (as the app's
/// `--duration` counts them), or after twice that, however the call went.
fn call_report(browser: &Browser, seconds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(2 * seconds + 30);
    loop {
        let report = browser.report();
        if report["duration_s"].as_f64() >= Some(seconds as f64) || Instant::now() > deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The profile's link both ways, and its cap if it has one.
fn impair(call: &mut NetworkCall, profile: &Profile) {
    call.rig.set_links(profile.link).unwrap();
    if let Some(kbps) = profile.cap_kbps {
        for side in [Side::A, Side::B] {
            call.rig.set_rate(side, Some(kbps)).unwrap();
        }
    }
}

/// The network gone both ways for `outage`, some seconds into the call.
fn cut(call: &mut NetworkCall, outage: Duration) {
    std::thread::sleep(OUTAGE_AFTER);
    call.rig.set_outage(true).unwrap();
    std::thread::sleep(outage);
    call.rig.set_outage(false).unwrap();
}

/// What one peer received, as the table's cells.
fn row(report: &Value) -> String {
    if report["connected"] == false {
        return format!(
            "not connected at the end ({}) | | | | | | | |",
            report["state"]
        );
    }
    let video = &report["video"];
    let number = |value: &Value| value.as_f64().unwrap_or(f64::NAN);
    let seconds = number(&report["duration_s"]);
    let decoded = number(&video["frames_decoded"]);
    format!(
        "{:.1} | {}x{} | {decoded:.0} / {:.0} | {} ({:.1} s) | {:.0} / {:.0} | {:.0} | {} | {}",
        decoded / seconds,
        video["width"],
        video["height"],
        number(&video["frames_received"]),
        video["freeze_count"],
        number(&video["total_freezes_duration_ms"]) / 1000.0,
        number(&video["latency_ms"]["p50"]),
        number(&video["latency_ms"]["p95"]),
        number(&video["bitrate_kbps_received"]),
        report["audio"]["beeps_detected"],
        report["network"]["retransmitted_packets_received"],
    )
}
