//! The side-by-side benchmark of `BENCHMARKS.md`: in one run, the same stamped
//! 640x480 call at 30 fps (test signals both ways, through one `duet serve`)
//! made four ways: browser↔browser, window↔window, browser↔window and
//! native↔native. The browser is Debian's headless Chromium running the page
//! `duet serve` hands out, in its `?test=1` mode. A *window* peer is the app as
//! a person runs it: its window on an Xvfb display and its speaker on a
//! PulseAudio null sink, both started by the benchmark; a *native* peer is
//! `duet --headless`.
//!
//! Like for like: the page reads stamps when a frame is presented
//! (`requestVideoFrameCallback`) and beeps in an AudioWorklet on the output
//! graph; the window reads stamps when it paints a picture and beeps where
//! the speaker's device callback takes the samples. A headless peer has no
//! screen or speaker: its figures are taken at the decoder and where its sink
//! takes the audio, and are shown apart. Each peer's figures come from its own
//! report (the page's `window.duet.report()` has the shape of `--stats-json`);
//! CPU and memory are read from /proc for every process of a peer (all of
//! Chromium's), over the connected call. Medians by nearest rank
//! (`duet-measure`), as every Duet figure.
//!
//! ```sh
//! ./scripts/install-deps.sh            # chromium, chromium-driver, Xvfb, PulseAudio
//! cargo build --release -p duet
//! cargo run --release --example browser_benchmark -- [SECONDS] [RUNS]
//! ```
//! Defaults: 20 seconds, 3 runs of each pairing. Prints medians over the runs,
//! then the ratios native↔native / browser↔browser.

#[path = "../tests/e2e/common/mod.rs"]
mod common;
mod desk;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::browser::Browser;
use desk::VirtualDesk;
use duet_measure::{ProcessUsage, median};
use serde_json::Value;
use support::LineChild;

const SIZE: (u32, u32) = (640, 480);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Browser,
    /// The app with its window and speaker.
    Window,
    /// The app headless.
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Browser => "browser",
            Kind::Window => "window",
            Kind::Native => "native",
        }
    }
}

/// A window peer prints no progress lines; it counts as connected this long
/// after it started (its window opens and its call connects on loopback in
/// under half a second). CPU is measured over the call less this much, so a
/// window that hangs up after `--duration` is still running when it is read.
const WINDOW_CONNECTS_WITHIN: Duration = Duration::from_secs(1);
/// A native peer hangs up by its `--duration`; it has exited this long after
/// the benchmark's own measurement window.
const APP_ENDS_WITHIN: Duration = Duration::from_secs(20);

/// `duet ROLE` in `room` with the test signals, writing its report to `report`.
fn app_command(ctx: &Context, room: &str, role: &str, tone: u32, report: &Path) -> Command {
    let mut command = Command::new(&ctx.bin);
    command
        .args([role, "--server"])
        .arg(format!("ws://{}", ctx.addr))
        .args(["--room", room, "--video", "test", "--audio", "test"])
        .args(["--tone-hz", &tone.to_string()])
        .args(["--size", &format!("{}x{}", SIZE.0, SIZE.1), "--fps", "30"])
        .args(["--duration", &ctx.seconds.to_string(), "--stats-json"])
        .arg(report);
    command
}

/// One end of a call.
enum Peer {
    Native {
        app: LineChild,
        report: PathBuf,
    },
    Window {
        child: Child,
        started: Instant,
        report: PathBuf,
    },
    Browser(Box<Browser>),
}

impl Peer {
    fn start(kind: Kind, ctx: &Context, room: &str, role: &str, tone: u32) -> anyhow::Result<Peer> {
        match kind {
            Kind::Native => {
                let report = ctx.dir.join(format!("{room}-{role}.json"));
                let mut command = app_command(ctx, room, role, tone, &report);
                command.arg("--headless").stderr(Stdio::null());
                let app = LineChild::spawn(command, "a native peer")?;
                Ok(Peer::Native { app, report })
            }
            Kind::Window => {
                let report = ctx.dir.join(format!("{room}-{role}.json"));
                let child = app_command(ctx, room, role, tone, &report)
                    .envs(ctx.desk.env())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start a window peer")?;
                Ok(Peer::Window {
                    child,
                    started: Instant::now(),
                    report,
                })
            }
            Kind::Browser => {
                let browser = Browser::launch(&format!("{room}-{role}"));
                browser.open(&format!(
                    "http://{}/?room={room}&role={role}&test=1&size={}x{}&fps=30&tone={tone}",
                    ctx.addr, SIZE.0, SIZE.1
                ));
                Ok(Peer::Browser(Box::new(browser)))
            }
        }
    }

    /// Waits until the page is in the room (a native peer joins on its own).
    fn wait_until_ready(&self) {
        if let Peer::Browser(browser) = self {
            browser.wait_for_state("waiting", Duration::from_secs(20));
        }
    }

    fn is_connected(&mut self) -> bool {
        match self {
            Peer::Native { app, .. } => app.has_said(|line| line == "connected"),
            Peer::Window { started, .. } => started.elapsed() >= WINDOW_CONNECTS_WITHIN,
            Peer::Browser(browser) => browser.report()["connected"] == true,
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Peer::Native { app, .. } => vec![app.id()],
            Peer::Window { child, .. } => vec![child.id()],
            Peer::Browser(browser) => browser.process_ids(),
        }
    }

    /// The peer's report once its call has ended.
    fn finish(self) -> anyhow::Result<Value> {
        let read = |report: PathBuf| -> anyhow::Result<Value> {
            Ok(serde_json::from_str(&std::fs::read_to_string(report)?)?)
        };
        match self {
            Peer::Native { app, report } => {
                let status = app.finish(APP_ENDS_WITHIN)?;
                if !status.success() {
                    bail!("a native peer failed: {status}");
                }
                read(report)
            }
            Peer::Window {
                mut child, report, ..
            } => {
                let status = child.wait()?;
                if !status.success() {
                    bail!("a window peer failed: {status}");
                }
                read(report)
            }
            Peer::Browser(browser) => {
                let started = Instant::now();
                while browser.state() == "in-call" && started.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(browser.report())
            }
        }
    }
}

struct Context {
    bin: PathBuf,
    addr: String,
    dir: PathBuf,
    seconds: u32,
    desk: VirtualDesk,
}

/// What one peer measured in one call.
#[derive(Debug, Default, Clone)]
struct Figures {
    values: BTreeMap<&'static str, f64>,
}

const COLUMNS: &[(&str, &str)] = &[
    ("connected", "connected ms"),
    ("first_frame", "first remote frame ms"),
    ("shown_p50", "video p50 ms, shown"),
    ("shown_p99", "video p99 ms, shown"),
    ("decoded_p50", "video p50 ms, decoded"),
    ("decoded_p99", "video p99 ms, decoded"),
    ("decoded_share", "frames decoded / sent %"),
    ("fps", "fps received"),
    ("audio_p50", "audio p50 ms (device / worklet / sink)"),
    ("beeps", "beeps heard"),
    ("cpu", "CPU % of a core"),
    ("memory", "peak memory MB (PSS)"),
];

/// Where each kind of peer reads its received stamps: (shown, decoded).
/// The page only measures at presentation; a headless app only at decoding.
fn latency_fields(kind: Kind) -> (Option<&'static str>, Option<&'static str>) {
    match kind {
        Kind::Browser => (Some("latency_ms"), None),
        Kind::Window => (Some("display_latency_ms"), Some("latency_ms")),
        Kind::Native => (None, Some("latency_ms")),
    }
}

fn figures(
    kind: Kind,
    report: &Value,
    other: &Value,
    cpu: f64,
    memory: f64,
    seconds: f64,
) -> Figures {
    let at = |v: &Value, path: &[&str]| {
        let mut v = v;
        for key in path {
            v = &v[key];
        }
        v.as_f64()
    };
    let mut values = BTreeMap::new();
    let mut put = |key, value: Option<f64>| {
        if let Some(value) = value {
            values.insert(key, value);
        }
    };
    put("connected", at(report, &["time_to_connected_ms"]));
    put(
        "first_frame",
        at(report, &["time_to_first_remote_frame_ms"]),
    );
    let (shown, decoded) = latency_fields(kind);
    for (field, p50, p99) in [
        (shown, "shown_p50", "shown_p99"),
        (decoded, "decoded_p50", "decoded_p99"),
    ] {
        if let Some(field) = field {
            put(p50, at(report, &["video", field, "p50"]));
            put(p99, at(report, &["video", field, "p99"]));
        }
    }
    let decoded = at(report, &["video", "frames_decoded"]);
    let sent = at(other, &["video", "frames_sent"]);
    put(
        "decoded_share",
        decoded.zip(sent).map(|(d, s)| 100.0 * d / s.max(1.0)),
    );
    put(
        "fps",
        at(report, &["video", "stamped_frames"])
            .zip(at(report, &["duration_s"]))
            .map(|(n, s)| n / s.max(1.0)),
    );
    put("audio_p50", at(report, &["audio", "latency_ms", "p50"]));
    put("beeps", at(report, &["audio", "beeps_detected"]));
    put("cpu", Some(100.0 * cpu / seconds));
    put("memory", Some(memory));
    Figures { values }
}

/// One call of `caller_kind` with `callee_kind`; the figures of caller and callee.
fn one_call(
    ctx: &Context,
    caller_kind: Kind,
    callee_kind: Kind,
    run: usize,
) -> anyhow::Result<(Figures, Figures)> {
    let room = format!("{}-{}-{run}", caller_kind.name(), callee_kind.name());
    let callee = Peer::start(callee_kind, ctx, &room, "callee", 660)?;
    callee.wait_until_ready();
    let caller = Peer::start(caller_kind, ctx, &room, "caller", 880)?;
    let mut peers = [caller, callee];
    let started = Instant::now();
    while !peers.iter_mut().all(Peer::is_connected) {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{room}: the call did not connect within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The connected call: CPU over the window, memory sampled through it.
    let pids: Vec<Vec<u32>> = peers.iter().map(Peer::pids).collect();
    let cpu_seconds = |pids: &[u32]| ProcessUsage::of_all(pids).cpu_seconds;
    let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_seconds(p)).collect();
    let window = Instant::now();
    let mut peak = [0.0f64; 2];
    let length = Duration::from_secs(u64::from(ctx.seconds))
        .saturating_sub(WINDOW_CONNECTS_WITHIN + Duration::from_millis(500));
    while window.elapsed() < length {
        for (i, pids) in pids.iter().enumerate() {
            // Chromium starts helpers as it goes: look again each time.
            let pids = match &peers[i] {
                Peer::Browser(b) => b.process_ids(),
                Peer::Native { .. } | Peer::Window { .. } => pids.clone(),
            };
            let pss = ProcessUsage::of_all(&pids).pss_mb.unwrap_or(f64::NAN);
            peak[i] = peak[i].max(pss);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu_seconds(p) - before)
        .collect();
    let measured = window.elapsed().as_secs_f64();
    // Browser↔browser: the caller's page hangs up; a native peer does by its --duration.
    if let Peer::Browser(browser) = &peers[0]
        && callee_kind == Kind::Browser
    {
        browser.eval("document.getElementById('hangup').click(); return 0;");
    }
    let [caller, callee] = peers;
    let caller_report = caller.finish()?;
    let callee_report = callee.finish()?;
    Ok((
        figures(
            caller_kind,
            &caller_report,
            &callee_report,
            cpu[0],
            peak[0],
            measured,
        ),
        figures(
            callee_kind,
            &callee_report,
            &caller_report,
            cpu[1],
            peak[1],
            measured,
        ),
    ))
}

fn medians(all: &[Figures]) -> BTreeMap<&'static str, f64> {
    COLUMNS
        .iter()
        .filter_map(|(key, _)| {
            let values: Vec<f64> = all
                .iter()
                .filter_map(|f| f.values.get(key).copied())
                .collect();
            median(&values).map(|m| (*key, m))
        })
        .collect()
}

fn cell(value: Option<&f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1}"))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args
        .next()
        .map_or(Ok(20), |s| s.parse())
        .context("SECONDS")?;
    let runs: usize = args.next().map_or(Ok(3), |s| s.parse()).context("RUNS")?;
    let bin = support::release_duet()?;
    let dir = std::env::temp_dir().join(format!("duet-browser-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = support::Server::start(&bin)?;
    let desk = VirtualDesk::start()?;
    if desk.audio.is_none() {
        eprintln!(
            "PulseAudio did not start: window peers measure audio at their sink, not a device"
        );
    }
    let ctx = Context {
        bin,
        addr: server.addr.clone(),
        dir: dir.clone(),
        seconds,
        desk,
    };

    let pairings = [
        ("browser↔browser", Kind::Browser, Kind::Browser),
        ("window↔window", Kind::Window, Kind::Window),
        ("browser↔window", Kind::Browser, Kind::Window),
        ("native↔native", Kind::Native, Kind::Native),
    ];
    let mut results: Vec<(&str, [Vec<Figures>; 2])> = pairings
        .iter()
        .map(|(name, ..)| (*name, [Vec::new(), Vec::new()]))
        .collect();
    // Runs interleave the pairings, so a noisy moment of the machine spreads over all of them.
    for run in 0..runs {
        for (i, (name, caller, callee)) in pairings.iter().enumerate() {
            eprintln!("run {}/{runs}: {name}", run + 1);
            let result = one_call(&ctx, *caller, *callee, run);
            match result {
                Ok((caller_figures, callee_figures)) => {
                    results[i].1[0].push(caller_figures);
                    results[i].1[1].push(callee_figures);
                }
                Err(err) => eprintln!("  {name}: {err:#}"),
            }
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{seconds} s calls, {}x{} at 30 fps, test signals both ways; medians of {runs} runs\n",
        SIZE.0, SIZE.1
    );
    print!("| caller↔callee | peer |");
    for (_, title) in COLUMNS {
        print!(" {title} |");
    }
    println!();
    println!("|{}", " --- |".repeat(COLUMNS.len() + 2));
    let mut by_pairing: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    for (name, [callers, callees]) in &results {
        for (role, all) in [("caller", callers), ("callee", callees)] {
            let m = medians(all);
            print!("| {name} | {role} ({}) |", all.len());
            for (key, _) in COLUMNS {
                print!(" {} |", cell(m.get(key)));
            }
            println!();
        }
        let both: Vec<Figures> = callers.iter().chain(callees).cloned().collect();
        by_pairing.insert(name, medians(&both));
    }
    println!("\nwindow↔window / browser↔browser, like for like (medians over both peers):\n");
    println!("| figure | browser↔browser | window↔window | window / browser |");
    println!("| --- | --- | --- | --- |");
    let empty = BTreeMap::new();
    let browsers = by_pairing.get("browser↔browser").unwrap_or(&empty);
    let natives = by_pairing.get("window↔window").unwrap_or(&empty);
    for (key, title) in COLUMNS {
        let (b, n) = (browsers.get(key), natives.get(key));
        let ratio = b
            .zip(n)
            .filter(|(b, _)| **b != 0.0)
            .map_or("–".into(), |(b, n)| format!("{:.2}", n / b));
        println!("| {title} | {} | {} | {ratio} |", cell(b), cell(n));
    }
    Ok(())
}
