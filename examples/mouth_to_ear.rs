//! Mouth-to-ear audio latency through the microphone path, echo cancellation
//! on, like for like: two `duet` apps, two Chromium pages, and (both ways) an
//! app with a page, each pair in a real call through `duet serve` on
//! 127.0.0.1.
//!
//! ```sh
//! ./scripts/install-deps.sh            # chromium, chromium-driver, PulseAudio
//! cargo build --release -p duet
//! cargo build --release -p duet-e2e --example mouth_to_ear
//! ./target/release/examples/mouth_to_ear SECONDS RUNS [PAIRING ...]
//! ```
//! Defaults: 20 s connected per call, 3 runs. Each run makes one call of each
//! pairing, interleaved, so that a noisy moment of the machine spreads over
//! all of them; PAIRINGs choose some (`app-app`, `browser-browser`,
//! `app-browser`, `browser-app`: caller first). `DUET_BIN` picks another
//! `duet`; `DUET_BENCH_KEEP` keeps each app's stderr, and when each beep was
//! heard at the mouth and at the ear, in the folder it prints.
//!
//! # What is measured
//!
//! What a person would hear: from a sound entering the caller's microphone to
//! it coming out of the callee's speaker, through both sound devices' buffers,
//! each side's audio processing (echo cancellation, noise suppression and gain
//! control: the app's defaults, and Chromium's `getUserMedia` defaults, read
//! back from the page's track with `getSettings()`), Opus, the network, the
//! jitter buffer and the playout. Nothing is read from the app's or the page's
//! own report.
//!
//! Every call gets a private PulseAudio daemon ([`PulseAudio`]) with four
//! 48 kHz mono null sinks: `mouth`, whose monitor is the caller's microphone
//! (`PULSE_SOURCE=mouth.monitor`); `quiet`, whose monitor is the callee's;
//! `ear`, the callee's speaker (`PULSE_SINK=ear`); and `caller_speaker`. The
//! apps run `--headless --video test --audio mic --speaker default`; the
//! pages are `duet serve`'s `/` without `test=1`, so that with no camera they
//! send the test picture and open the microphone, in headless Chromium that
//! grants devices without asking and plays sound without a click. The
//! benchmark checks that each peer records and plays where it should
//! (PulseAudio's stream list) and that no microphone was replaced by test
//! beeps (those would be at 440 Hz anyway, never taken for the mouth's).
//!
//! - The mouth ([`Mouth`]: `pacat`) plays the 880 Hz beeps of
//!   `docs/test-signals.md` into `mouth`, each placed so that it is played
//!   at its whole second of the wall clock, by the clock PulseAudio reports
//!   for its stream (see [`probes`]). An ear at the mouth (on
//!   `mouth.monitor`, where the caller's microphone listens) checks when each
//!   one really started; beeps more than 10 ms off their second are counted
//!   "off time", not measured.
//! - The ear ([`Ear`]: `parec`) records `ear.monitor` and finds each beep's
//!   onset (a 5 ms RMS window rising above −34 dBFS after 300 ms below it,
//!   then an 880 Hz tone), timed by its own stream's clock.
//! - Latency of a beep = when its onset was heard at `ear` − the whole second
//!   it was played into `mouth`. Beeps count from 2 s after both peers are
//!   connected to 1.5 s before the call ends.
//!
//! How exact: each report of a stream's clock ties a sample to the wall
//! clock to the millisecond it is printed with, and a beep's instant comes
//! from the lower quartile of the reports within a second of it, so the
//! mouth and the ear are exact to a few tenths of a millisecond. Each call
//! checks the chain first with a loopback calibration: a second mouth plays
//! straight into `ear` (no call) for three beeps after two to settle, which
//! must read close to 0 ms (0.2–0.6 ms here, the onset rule's own lag
//! included); the figure is printed beside the latencies and subtracted from
//! nothing. That mouth then stays, silent, so that the ear's sink runs
//! through the whole call. What a null sink's monitor cannot do like a real
//! microphone: it hands the caller's app the sound up to one block of the
//! `mouth` sink (its lowest requested latency, 10 ms or so) before PulseAudio
//! plays it, so a real microphone's figure could be up to that much longer.
//!
//! Chromium lists no monitor source as a microphone, and finds none on a
//! machine that has nothing else: every call's daemon also has a silent
//! remapped source for it to list; the page's default microphone then opens
//! `PULSE_SOURCE`, which the routing check confirms. Headless Chromium plays
//! the remote audio to PulseAudio like any other (`PULSE_SINK`).
//! Medians and 95th percentiles are by nearest rank (`duet-measure`) over
//! every beep of every run of a pairing.

#[path = "../tests/e2e/common/mod.rs"]
mod common;
mod desk;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use common::browser::{self, Browser, Devices};
use desk::probes::{self, ClockSummary, Ear, Mouth};
use desk::{Direction, PulseAudio};
use duet_measure::{Summary, median};
use support::LineChild;

/// Test beeps a peer would send if its microphone failed: not the mouth's.
const FALLBACK_HZ: &str = "440";
/// Beeps count from this long after both peers are connected (microphones
/// and playouts have started)...
const SETTLE: Duration = Duration::from_secs(2);
/// ...to this long before the call ends (a beep must be heard before hang-up).
const TAIL: Duration = Duration::from_millis(1500);
/// The loopback calibration: beeps to let the mouth and ear settle, then
/// beeps measured.
const CALIBRATION_WARM_UP: usize = 2;
const CALIBRATION_BEEPS: usize = 3;
/// A beep counts when it started at the mouth within this of its whole second.
const ON_TIME_MS: f64 = 10.0;

/// The null sinks of a call.
const MOUTH: &str = "mouth";
const QUIET: &str = "quiet";
const EAR: &str = "ear";
const CALLER_SPEAKER: &str = "caller_speaker";
/// A microphone for Chromium to list (a silent one).
const LISTED_MIC: &str = "listed_mic";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args
        .first()
        .map_or(Ok(20), |s| s.parse())
        .context("the first argument is the call length in seconds")?;
    let runs: usize = args
        .get(1)
        .map_or(Ok(3), |s| s.parse())
        .context("the second argument is the number of runs")?;
    let shortest = (SETTLE + TAIL).as_secs() + 2;
    if seconds < shortest {
        bail!("calls of {seconds} s leave no beeps to measure: give at least {shortest}");
    }
    let pairings = Pairing::chosen(args.get(2..).unwrap_or_default())?;
    browser::installed().map_err(anyhow::Error::msg)?;
    let bin = support::release_duet()?;
    let dir = std::env::temp_dir().join(format!("duet-mouth-to-ear-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = support::Server::start(&bin)?;
    let bench = Bench {
        bin,
        addr: server.addr.clone(),
        dir: dir.clone(),
        seconds,
        keep: std::env::var_os("DUET_BENCH_KEEP").is_some(),
    };
    let mut results: BTreeMap<Pairing, Vec<CallFigures>> = BTreeMap::new();
    for run in 1..=runs {
        for pairing in &pairings {
            eprintln!("run {run}/{runs}: {pairing}");
            match bench.call(pairing, run) {
                Ok(figures) => {
                    eprintln!("  {figures}");
                    results.entry(*pairing).or_default().push(figures);
                }
                Err(err) => eprintln!("  {pairing}: {err:#}"),
            }
        }
    }
    drop(server);
    if bench.keep {
        eprintln!("app logs and beeps kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    print_table(&pairings, &results, seconds, runs);
    Ok(())
}

/// What every call of the benchmark shares.
struct Bench {
    bin: PathBuf,
    addr: String,
    dir: PathBuf,
    seconds: u64,
    /// Whether to keep each app's stderr and each call's beeps in `dir`.
    keep: bool,
}

impl Bench {
    /// One call of `pairing`, with its own sound server, calibration, mouth and ear.
    fn call(&self, pairing: &Pairing, run: usize) -> anyhow::Result<CallFigures> {
        let room = format!("{}-{run}", pairing.slug());
        let pulse = PulseAudio::start(&room)?;
        for sink in [MOUTH, QUIET, EAR, CALLER_SPEAKER] {
            pulse.load_null_sink(sink)?;
        }
        // Something for Chromium to list as a microphone (see the top).
        pulse.load_remapped_source(LISTED_MIC, &format!("{QUIET}.monitor"))?;

        // The measuring chain alone: a mouth straight into the ear. It stays,
        // silent, through the call, so that the ear's sink never stops.
        let mut ear = Ear::start(&pulse, &format!("{EAR}.monitor"))?;
        let mut calibrator = Mouth::start(&pulse, EAR)?;
        ear.wait_until_running(Duration::from_secs(10))?;
        calibrator.wait_for_beeps(
            CALIBRATION_WARM_UP + CALIBRATION_BEEPS,
            Duration::from_secs(10),
        )?;
        std::thread::sleep(Duration::from_millis(700));
        calibrator.hush();

        // The call, with an ear at the mouth that checks when its beeps start.
        let mouth = Mouth::start(&pulse, MOUTH)?;
        let mut at_mouth = Ear::start(&pulse, &format!("{MOUTH}.monitor"))?;
        at_mouth.wait_until_running(Duration::from_secs(10))?;
        let call = Call {
            bench: self,
            pulse: &pulse,
            room: &room,
        };
        let callee = call.peer(pairing.callee, Role::Callee)?;
        callee.wait_until_ready();
        let caller = call.peer(pairing.caller, Role::Caller)?;
        let mut peers = [caller, callee];
        let started = Instant::now();
        while !peers.iter_mut().all(Peer::is_connected) {
            for peer in &mut peers {
                peer.check_running()?;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the call did not connect within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let connected_at = SystemTime::now();
        let connected = Instant::now();
        std::thread::sleep(SETTLE);
        for peer in &mut peers {
            peer.check_microphone()?;
        }
        call.check_routing(&peers)?;
        let mics: Vec<MicSettings> = peers.iter().filter_map(Peer::mic_settings).collect();
        let length = Duration::from_secs(self.seconds);
        std::thread::sleep(length.saturating_sub(connected.elapsed()));
        let [caller, callee] = peers;
        caller.finish()?;
        callee.finish()?;
        let (played, mouth_clock) = mouth.finish()?;
        let (heard_at_mouth, at_mouth_clock) = at_mouth.finish()?;
        let (calibration_played, calibrator_clock) = calibrator.finish()?;
        let (heard, ear_clock) = ear.finish()?;

        let window = (connected_at + SETTLE)..(connected_at + length - TAIL);
        let measured: Vec<u64> = played
            .iter()
            .copied()
            .filter(|second| {
                window.contains(&(SystemTime::UNIX_EPOCH + Duration::from_secs(*second)))
            })
            .collect();
        let on_time: Vec<u64> = measured
            .iter()
            .copied()
            .filter(|second| {
                probes::delays_ms(&[*second], &heard_at_mouth)
                    .first()
                    .is_some_and(|offset| offset.abs() <= ON_TIME_MS)
            })
            .collect();
        let calibration_played = calibration_played
            .get(CALIBRATION_WARM_UP..)
            .unwrap_or_default();
        if self.keep {
            let mut log = String::from("second measured at_mouth_ms at_ear_ms\n");
            for second in &played {
                let at = |heard: &[f64]| {
                    probes::delays_ms(&[*second], heard)
                        .first()
                        .map_or("-".into(), |ms| format!("{ms:.2}"))
                };
                log += &format!(
                    "{second} {} {} {}\n",
                    measured.contains(second),
                    at(&heard_at_mouth),
                    at(&heard)
                );
            }
            std::fs::write(self.dir.join(format!("{room}-beeps.txt")), log)?;
        }
        Ok(CallFigures {
            latencies_ms: probes::delays_ms(&on_time, &heard),
            played: on_time.len(),
            off_time: measured.len() - on_time.len(),
            mouth_offsets_ms: probes::delays_ms(&measured, &heard_at_mouth),
            calibration_ms: probes::delays_ms(calibration_played, &heard),
            calibration_played: calibration_played.len(),
            clocks: [mouth_clock, at_mouth_clock, calibrator_clock, ear_clock]
                .into_iter()
                .reduce(ClockSummary::merge)
                .unwrap_or_default(),
            mics,
        })
    }
}

/// Who makes the call: the app or a Chromium page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    App,
    Browser,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Browser => "browser",
        }
    }
}

/// The caller talks into the mouth; the callee's speaker is the ear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pairing {
    caller: Kind,
    callee: Kind,
}

impl Pairing {
    const ALL: [Pairing; 4] = [
        Pairing::new(Kind::App, Kind::App),
        Pairing::new(Kind::Browser, Kind::Browser),
        Pairing::new(Kind::App, Kind::Browser),
        Pairing::new(Kind::Browser, Kind::App),
    ];

    const fn new(caller: Kind, callee: Kind) -> Pairing {
        Pairing { caller, callee }
    }

    /// The pairings named by `slugs` (`app-browser`, ...), or all of them.
    fn chosen(slugs: &[String]) -> anyhow::Result<Vec<Pairing>> {
        if slugs.is_empty() {
            return Ok(Pairing::ALL.to_vec());
        }
        slugs
            .iter()
            .map(|slug| {
                Pairing::ALL
                    .into_iter()
                    .find(|pairing| pairing.slug() == *slug)
                    .with_context(|| {
                        format!("no pairing {slug:?}: app-app, browser-browser, app-browser or browser-app")
                    })
            })
            .collect()
    }

    /// A name that is also a room name.
    fn slug(&self) -> String {
        format!("{}-{}", self.caller.name(), self.callee.name())
    }
}

impl fmt::Display for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.caller.name(), self.callee.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
        }
    }

    /// The source its microphone is.
    fn microphone(self) -> String {
        match self {
            Role::Caller => format!("{MOUTH}.monitor"),
            Role::Callee => format!("{QUIET}.monitor"),
        }
    }

    /// The sink its speaker is.
    fn speaker(self) -> &'static str {
        match self {
            Role::Caller => CALLER_SPEAKER,
            Role::Callee => EAR,
        }
    }
}

/// One call's sound server and room.
struct Call<'a> {
    bench: &'a Bench,
    pulse: &'a PulseAudio,
    room: &'a str,
}

impl Call<'_> {
    fn peer(&self, kind: Kind, role: Role) -> anyhow::Result<Peer> {
        let mut env = self.pulse.env();
        env.push(("PULSE_SOURCE", role.microphone().into()));
        env.push(("PULSE_SINK", role.speaker().into()));
        match kind {
            Kind::App => {
                let log = self
                    .bench
                    .dir
                    .join(format!("{}-{}.log", self.room, role.name()));
                let mut command = Command::new(&self.bench.bin);
                command
                    .args([role.name(), "--headless", "--server"])
                    .arg(format!("ws://{}", self.bench.addr))
                    .args(["--room", self.room, "--video", "test", "--audio", "mic"])
                    .args(["--speaker", "default", "--tone-hz", FALLBACK_HZ])
                    .args(["--duration", &self.bench.seconds.to_string()])
                    .envs(env)
                    .stdin(Stdio::null())
                    .stderr(std::fs::File::create(&log)?);
                let app = LineChild::spawn(command, &format!("the {} app", role.name()))?;
                Ok(Peer::App { app, role, log })
            }
            Kind::Browser => {
                let browser = Browser::launch_with_env(
                    &format!("{}-{}", self.room, role.name()),
                    Devices::Granted,
                    env,
                );
                browser.open(&format!(
                    "http://{}/?room={}&role={}&tone={FALLBACK_HZ}",
                    self.bench.addr,
                    self.room,
                    role.name()
                ));
                Ok(Peer::Browser {
                    browser: Box::new(browser),
                    role,
                })
            }
        }
    }

    /// Each peer's microphone records its own source, and the callee plays
    /// into the ear: the measurement means nothing otherwise.
    fn check_routing(&self, peers: &[Peer]) -> anyhow::Result<()> {
        let streams = self.pulse.streams()?;
        for peer in peers {
            let pids = peer.pids();
            let ours = |direction: Direction| -> Vec<&str> {
                streams
                    .iter()
                    .filter(|s| s.direction == direction)
                    .filter(|s| s.process_id.is_some_and(|pid| pids.contains(&pid)))
                    .map(|s| s.device.as_str())
                    .collect()
            };
            let role = peer.role();
            let microphone = role.microphone();
            let only = |devices: &[&str], wanted: &str| {
                !devices.is_empty() && devices.iter().all(|device| *device == wanted)
            };
            let (recording, playing) = (ours(Direction::Recording), ours(Direction::Playback));
            if !only(&recording, &microphone) {
                bail!(
                    "the {} records from {recording:?}, not {microphone} (streams: {streams:?})",
                    role.name()
                );
            }
            if role == Role::Callee && !only(&playing, EAR) {
                bail!("the callee plays into {playing:?}, not {EAR} (streams: {streams:?})");
            }
        }
        Ok(())
    }
}

/// One end of a call.
enum Peer {
    App {
        app: LineChild,
        role: Role,
        /// Its stderr.
        log: PathBuf,
    },
    Browser {
        browser: Box<Browser>,
        role: Role,
    },
}

/// An app hangs up by its `--duration`; it has exited this long after the call.
const APP_ENDS_WITHIN: Duration = Duration::from_secs(10);

impl Peer {
    fn role(&self) -> Role {
        match self {
            Peer::App { role, .. } | Peer::Browser { role, .. } => *role,
        }
    }

    /// Waits until a page is in the room (an app joins on its own).
    fn wait_until_ready(&self) {
        if let Peer::Browser { browser, .. } = self {
            browser.wait_for_state("waiting", Duration::from_secs(20));
        }
    }

    fn is_connected(&mut self) -> bool {
        match self {
            Peer::App { app, .. } => app.has_said(|line| line == "connected"),
            Peer::Browser { browser, .. } => browser.report()["connected"] == true,
        }
    }

    /// Fails, with its reason, when an app has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Peer::App { app, role, log } = self
            && let Some(status) = app.exited()
        {
            bail!("the {} app exited ({status}): {}", role.name(), reason(log));
        }
        Ok(())
    }

    /// Fails when the peer sends test beeps instead of its microphone.
    fn check_microphone(&mut self) -> anyhow::Result<()> {
        let role = self.role().name();
        match self {
            Peer::App { app, .. } => {
                if app.has_said(|line| line.contains("test beeps")) {
                    bail!("the {role} app could not open its microphone and sends test beeps");
                }
            }
            Peer::Browser { .. } => {
                let settings = self.mic_settings();
                if settings
                    .as_ref()
                    .is_none_or(|s| s.echo_cancellation.is_none())
                {
                    bail!("the {role} page sends no microphone ({settings:?})");
                }
            }
        }
        Ok(())
    }

    /// What the page's microphone track says of itself (`getSettings()`); `None` for an app.
    fn mic_settings(&self) -> Option<MicSettings> {
        let Peer::Browser { browser, .. } = self else {
            return None;
        };
        let settings = browser.eval(
            "const local = document.getElementById('local');
             const track = local && local.srcObject && local.srcObject.getAudioTracks()[0];
             if (!track) return null;
             const s = track.getSettings();
             return { label: track.label, echoCancellation: s.echoCancellation,
                      noiseSuppression: s.noiseSuppression, autoGainControl: s.autoGainControl };",
        );
        (!settings.is_null()).then(|| MicSettings {
            label: settings["label"].as_str().unwrap_or_default().to_owned(),
            echo_cancellation: settings["echoCancellation"].as_bool(),
            noise_suppression: settings["noiseSuppression"].as_bool(),
            auto_gain_control: settings["autoGainControl"].as_bool(),
        })
    }

    /// Process ids whose sound streams are this peer's.
    fn pids(&self) -> Vec<u32> {
        match self {
            Peer::App { app, .. } => vec![app.id()],
            Peer::Browser { browser, .. } => browser.process_ids(),
        }
    }

    /// Ends the peer's part: an app hangs up by its `--duration`, a page is closed.
    fn finish(self) -> anyhow::Result<()> {
        if let Peer::App { app, role, log } = self {
            let status = app
                .finish(APP_ENDS_WITHIN)
                .with_context(|| format!("the {} app", role.name()))?;
            if !status.success() {
                bail!(
                    "the {} app failed ({status}): {}",
                    role.name(),
                    reason(&log)
                );
            }
        }
        Ok(())
    }
}

/// Why an app stopped: the line starting with `duet: ` it wrote to `log`.
fn reason(log: &std::path::Path) -> String {
    let stderr = std::fs::read_to_string(log).unwrap_or_default();
    let reason = stderr.lines().rfind(|line| line.starts_with("duet: "));
    reason.unwrap_or("no reason given").to_owned()
}

/// A page's microphone track, as `getSettings()` describes it.
#[derive(Debug, Clone, PartialEq)]
struct MicSettings {
    label: String,
    echo_cancellation: Option<bool>,
    noise_suppression: Option<bool>,
    auto_gain_control: Option<bool>,
}

/// What one call measured.
#[derive(Debug, Clone)]
struct CallFigures {
    /// Mouth-to-ear latency of each beep heard.
    latencies_ms: Vec<f64>,
    /// Beeps played into the mouth while the call was measured, and heard
    /// there within [`ON_TIME_MS`] of their whole second.
    played: usize,
    /// Beeps played then that were not (the mouth's timing was off).
    off_time: usize,
    /// When each beep started at the mouth (in its monitor), after its whole second.
    mouth_offsets_ms: Vec<f64>,
    /// The loopback calibration: latency of each beep heard, of those played.
    calibration_ms: Vec<f64>,
    calibration_played: usize,
    /// How the mouths' and ears' stream clocks reported.
    clocks: ClockSummary,
    /// The pages' microphone tracks.
    mics: Vec<MicSettings>,
}

impl fmt::Display for CallFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1} ms"));
        write!(
            f,
            "median {} ({}/{} beeps, {} off time; at the mouth {} after the second), \
             calibration {} ({}/{})",
            ms(median(&self.latencies_ms)),
            self.latencies_ms.len(),
            self.played,
            self.off_time,
            ms(median(&self.mouth_offsets_ms)),
            ms(median(&self.calibration_ms)),
            self.calibration_ms.len(),
            self.calibration_played
        )
    }
}

fn print_table(
    pairings: &[Pairing],
    results: &BTreeMap<Pairing, Vec<CallFigures>>,
    seconds: u64,
    runs: usize,
) {
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
    let range = |values: &[f64]| {
        let lowest = values.iter().copied().reduce(f64::min);
        let highest = values.iter().copied().reduce(f64::max);
        format!("{} ({} / {})", ms(median(values)), ms(lowest), ms(highest))
    };
    println!(
        "Mouth-to-ear latency, microphone path, echo cancellation on: {seconds} s calls, \
         {runs} run(s); percentiles by nearest rank over every beep\n"
    );
    println!(
        "| caller (mouth) → callee (ear) | calls | p50 ms | p95 ms | beeps heard / played (off time) | beep start at the mouth, ms after its second: p50 (min / max) | calibration ms: p50 (min / max) | calibration beeps heard / played |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let empty = Vec::new();
    let gather = |calls: &[CallFigures], field: fn(&CallFigures) -> &[f64]| -> Vec<f64> {
        calls
            .iter()
            .flat_map(|c| field(c).iter().copied())
            .collect()
    };
    for pairing in pairings {
        let calls = results.get(pairing).unwrap_or(&empty);
        let latencies = gather(calls, |c| &c.latencies_ms);
        let calibration = gather(calls, |c| &c.calibration_ms);
        let summary = Summary::of(&latencies);
        println!(
            "| {pairing} | {} | {} | {} | {} / {} ({}) | {} | {} | {} / {} |",
            calls.len(),
            ms(summary.map(|s| s.p50)),
            ms(summary.map(|s| s.p95)),
            latencies.len(),
            calls.iter().map(|c| c.played).sum::<usize>(),
            calls.iter().map(|c| c.off_time).sum::<usize>(),
            range(&gather(calls, |c| &c.mouth_offsets_ms)),
            range(&calibration),
            calibration.len(),
            calls.iter().map(|c| c.calibration_played).sum::<usize>(),
        );
    }
    let calls: Vec<&CallFigures> = results.values().flatten().collect();
    if let Some(clocks) = calls.iter().map(|c| c.clocks).reduce(ClockSummary::merge) {
        println!(
            "\nStream clocks (pacat and parec): {} reports; 90 % of them reached the benchmark \
             within {:.1} ms of the clock's reading; {} underruns of the mouths' streams.",
            clocks.reports, clocks.late_p90_ms, clocks.underruns
        );
    }
    let mics: Vec<&MicSettings> = calls.iter().flat_map(|c| &c.mics).collect();
    if !mics.is_empty() {
        let on = |setting: fn(&MicSettings) -> Option<bool>| {
            mics.iter().filter(|m| setting(m) == Some(true)).count()
        };
        let labels: BTreeSet<&str> = mics.iter().map(|m| m.label.as_str()).collect();
        println!(
            "\nChromium's microphone tracks ({} pages, {labels:?}), by `getSettings()`: \
             echoCancellation on in {}, noiseSuppression in {}, autoGainControl in {}.",
            mics.len(),
            on(|m| m.echo_cancellation),
            on(|m| m.noise_suppression),
            on(|m| m.auto_gain_control)
        );
    }
}
