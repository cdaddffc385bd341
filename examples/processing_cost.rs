//! What the microphone's audio processing (echo cancellation, noise
//! suppression, automatic gain) costs a whole call: two calls at the same
//! time, one with the processing on (the default), one with all three off,
//! each peer's CPU sampled over the same seconds.
//!
//! ```sh
//! ./scripts/install-deps.sh      # PulseAudio
//! cargo build --release -p duet
//! cargo build --release -p duet-e2e --example processing_cost
//! ./target/release/examples/processing_cost SECONDS RUNS [VIDEO]
//! ```
//! Defaults: 30 s calls, 3 runs, audio only. VIDEO `test` adds the 640x480
//! test video both ways (the whole call as people make it; the processing is
//! then a small part, under the noise of two video calls sharing two cores).
//! `DUET_BIN` picks another `duet`.
//!
//! Each call is what the processing is for: every peer's speaker plays into
//! a room (a 48 kHz null sink of a private PulseAudio daemon) whose monitor is
//! that peer's microphone, so each microphone hears its own speaker (the
//! echo), and a talker (`paplay` of `duet_media::speech_like` syllables) speaks
//! into each room. The peers run `--headless --audio mic --speaker default`.
//! Both calls run side by side, so a busy moment of the machine
//! weighs on both alike; each run gives the ratio of the two calls' CPU, and
//! the last lines are the medians of the runs.

mod desk;
mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use desk::PulseAudio;
use duet_measure::{ProcessUsage, median};
use duet_media::speech_like::speech_like;
use duet_media::wav_file::WavRecorder;
use support::{Server, release_duet};

/// Seconds after the start before CPU is sampled (connecting, the first keyframe).
const SETTLE_S: u64 = 8;
/// Flags that turn the processing off.
const OFF: [&str; 3] = [
    "--no-echo-cancel",
    "--no-noise-suppression",
    "--no-auto-gain",
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let video = args.next().unwrap_or_else(|| "none".to_owned());
    if video != "none" && video != "test" {
        bail!("VIDEO is `none` or `test`, not {video:?}");
    }
    if seconds < SETTLE_S + 10 {
        bail!("calls of at least {} s, please", SETTLE_S + 10);
    }
    let bin = release_duet()?;
    let scratch = std::env::temp_dir().join(format!("duet-processing-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let talker = scratch.join("talker.wav");
    write_wav(&talker, &speech_like(seconds as f32 + 15.0, 0.3, 1))?;

    let mut ratios = Vec::new();
    let (mut on_all, mut off_all) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let pulse = PulseAudio::start(&format!("processing-{run}"))?;
        let server = Server::start(&bin)?;
        let mut calls = Vec::new();
        for (name, flags) in [("on", &[][..]), ("off", &OFF[..])] {
            calls.push(Call::start(
                &bin, &pulse, &server, &talker, &scratch, name, run, seconds, &video, flags,
            )?);
        }
        std::thread::sleep(Duration::from_secs(SETTLE_S));
        let window = Duration::from_secs(seconds - SETTLE_S - 2);
        let before: Vec<f64> = calls
            .iter()
            .map(Call::cpu_seconds)
            .collect::<Result<_, _>>()?;
        std::thread::sleep(window);
        let after: Vec<f64> = calls
            .iter()
            .map(Call::cpu_seconds)
            .collect::<Result<_, _>>()?;
        // Per peer: each call has two.
        let percent =
            |call: usize| 100.0 * (after[call] - before[call]) / window.as_secs_f64() / 2.0;
        let (on, off) = (percent(0), percent(1));
        for call in calls {
            call.finish(Duration::from_secs(seconds + 30))?;
        }
        println!(
            "run {run}: processing on {on:.1} %, off {off:.1} % of a core per peer; \
             ratio {:.3}, difference {:+.1} points",
            on / off,
            on - off
        );
        ratios.push(on / off);
        on_all.push(on);
        off_all.push(off);
    }
    println!(
        "median per peer: processing on {:.1} %, off {:.1} % of a core; median ratio {:.3}",
        median(&on_all).unwrap_or(f64::NAN),
        median(&off_all).unwrap_or(f64::NAN),
        median(&ratios).unwrap_or(f64::NAN)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// One call: two peers, each with its own room, and the rooms' talkers.
struct Call {
    peers: Vec<Child>,
    talkers: Vec<Child>,
    reports: Vec<std::path::PathBuf>,
}

impl Call {
    #[allow(clippy::too_many_arguments)]
    fn start(
        bin: &Path,
        pulse: &PulseAudio,
        server: &Server,
        talker: &Path,
        scratch: &Path,
        name: &str,
        run: usize,
        seconds: u64,
        video: &str,
        flags: &[&str],
    ) -> anyhow::Result<Call> {
        let mut call = Call {
            peers: Vec::new(),
            talkers: Vec::new(),
            reports: Vec::new(),
        };
        for role in ["caller", "callee"] {
            let room = format!("{name}_{role}");
            pulse.load_null_sink(&room)?;
            call.talkers.push(
                pulse
                    .command("paplay")
                    .arg(format!("--device={room}"))
                    .arg(talker)
                    .spawn()
                    .context("cannot run paplay")?,
            );
            let report = scratch.join(format!("{name}-{run}-{role}.json"));
            call.peers.push(
                pulse
                    .command(bin)
                    .env("PULSE_SINK", &room)
                    .env("PULSE_SOURCE", format!("{room}.monitor"))
                    .args([role, "--headless", "--server"])
                    .arg(format!("ws://{}", server.addr))
                    .args(["--room", &format!("processing-{name}-{run}")])
                    .args(["--video", video, "--audio", "mic", "--speaker", "default"])
                    .args(["--duration", &seconds.to_string(), "--stats-json"])
                    .arg(&report)
                    .args(flags)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("cannot start duet")?,
            );
            call.reports.push(report);
        }
        Ok(call)
    }

    /// CPU seconds both peers have used so far.
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.peers
            .iter()
            .map(|peer| {
                ProcessUsage::of(peer.id())
                    .map(|usage| usage.cpu_seconds)
                    .context("a peer ended before its CPU was read")
            })
            .sum()
    }

    /// Waits for both peers; checks each connected and heard the other.
    fn finish(mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + limit;
        for peer in &mut self.peers {
            loop {
                if let Some(status) = peer.try_wait()? {
                    if !status.success() {
                        bail!("a peer failed: {status}");
                    }
                    break;
                }
                if std::time::Instant::now() > deadline {
                    let _ = peer.kill();
                    bail!("a peer did not end by itself");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for talker in &mut self.talkers {
            let _ = talker.kill();
            let _ = talker.wait();
        }
        for path in &self.reports {
            let report: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("no report at {}", path.display()))?,
            )?;
            let received = report["audio"]["packets_received"].as_u64().unwrap_or(0);
            if report["connected"] != true || received == 0 {
                bail!("{}: the call did not carry audio", path.display());
            }
        }
        Ok(())
    }
}

fn write_wav(path: &Path, samples: &[f32]) -> anyhow::Result<()> {
    let mut wav = WavRecorder::create(path)?;
    wav.write(samples)?;
    wav.finish()?;
    Ok(())
}
