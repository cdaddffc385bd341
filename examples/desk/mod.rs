//! A desktop without hardware for the benchmarks: an Xvfb display for windowed
//! peers, and private PulseAudio daemons whose null sinks are paced speakers
//! (and, through their monitors, microphones).
#![allow(dead_code)] // each example uses a subset

pub mod probes;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// What to install when the sound server's programs are missing.
const PULSE_HINT: &str = "./scripts/install-deps.sh installs it (Debian's pulseaudio, \
                          pulseaudio-utils and libasound2-plugins)";

/// A desktop without hardware for windowed peers: an Xvfb display and a
/// PulseAudio daemon with a null sink (a paced speaker), both private to this
/// run and stopped when dropped. Windowed peers get [`VirtualDesk::env`].
pub struct VirtualDesk {
    xvfb: Child,
    /// `:N`.
    pub display: String,
    /// The sound server, when it started (without it a window's speaker falls
    /// back to discarding audio, and audio is measured where the decoder hands it out).
    pub audio: Option<PulseAudio>,
}

impl VirtualDesk {
    pub fn start() -> anyhow::Result<VirtualDesk> {
        let number = 500 + std::process::id() % 400;
        let display = format!(":{number}");
        let xvfb = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Xvfb (./scripts/install-deps.sh installs it)")?;
        let audio = PulseAudio::start("desk")
            .and_then(|pulse| {
                pulse.load_null_sink("speaker")?;
                pulse.pactl(&["set-default-sink", "speaker"])?;
                Ok(pulse)
            })
            .map_err(|err| eprintln!("{err:#}"))
            .ok();
        // Give the X server a moment to accept clients.
        std::thread::sleep(Duration::from_millis(500));
        Ok(VirtualDesk {
            xvfb,
            display,
            audio,
        })
    }

    /// The environment a windowed `duet` needs on this desk.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = vec![("DISPLAY", self.display.clone().into())];
        if let Some(pulse) = &self.audio {
            env.extend(pulse.env());
        }
        env
    }
}

impl Drop for VirtualDesk {
    fn drop(&mut self) {
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
    }
}

/// A PulseAudio daemon private to one run, killed (and its folder removed)
/// when dropped; children reach it through [`PulseAudio::env`], as the
/// end-to-end tests' daemon (`tests/e2e/common/pulse.rs`) does. It starts with no
/// default script (`-n`): no restore databases carrying volumes from one run
/// to the next, no suspend-on-idle, only the null sinks the run loads.
///
/// A null sink plays nowhere, paced by the system clock; its `.monitor`
/// source hears what is played into it, sample for sample, so it can stand
/// for a microphone. `duet` and Chromium reach the daemon through libpulse
/// (`duet` through ALSA's PulseAudio plugin), which honours `PULSE_SINK` and
/// `PULSE_SOURCE` for the default device.
pub struct PulseAudio {
    /// Holds `runtime/` (0700: the socket and pid file) and `config/` (the cookie).
    dir: PathBuf,
    runtime_dir: PathBuf,
    config_dir: PathBuf,
}

impl PulseAudio {
    /// Starts a daemon of its own, named `name` in its folder's name.
    pub fn start(name: &str) -> anyhow::Result<PulseAudio> {
        let dir = std::env::temp_dir().join(format!("duet-pulse-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pulse = PulseAudio {
            runtime_dir: dir.join("runtime"),
            config_dir: dir.join("config"),
            dir,
        };
        for folder in [&pulse.dir, &pulse.runtime_dir, &pulse.config_dir] {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
            // PulseAudio refuses a runtime folder others can read.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))?;
        }
        let log = pulse.dir.join("pulseaudio.log");
        let started = pulse
            .command("pulseaudio")
            .args([
                "--daemonize=yes",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "-n",
                "--load=module-native-protocol-unix",
            ])
            .arg(format!("--log-target=file:{}", log.display()))
            .output()
            .with_context(|| format!("cannot run pulseaudio: {PULSE_HINT}"))?;
        if !started.status.success() {
            bail!(
                "pulseaudio did not start ({}); its log is {}",
                String::from_utf8_lossy(&started.stderr).trim(),
                log.display()
            );
        }
        // `--daemonize` returns once the daemon is up; make sure it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(err) = pulse.pactl(&["info"]) {
            if Instant::now() > deadline {
                return Err(err.context("pulseaudio started but does not answer"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pulse)
    }

    /// The environment that points a child at this daemon and nowhere else.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let socket = self.runtime_dir.join("pulse").join("native");
        let mut server = OsString::from("unix:");
        server.push(&socket);
        vec![
            ("XDG_RUNTIME_DIR", self.runtime_dir.clone().into()),
            ("XDG_CONFIG_HOME", self.config_dir.clone().into()),
            ("PULSE_SERVER", server),
        ]
    }

    /// `program` with [`PulseAudio::env`], and without this process's own
    /// choice of devices.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .envs(self.env())
            .env_remove("PULSE_SINK")
            .env_remove("PULSE_SOURCE")
            .stdin(Stdio::null());
        command
    }

    /// Runs `pactl ARGS` and returns its output.
    pub fn pactl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command("pactl")
            .args(args)
            .output()
            .with_context(|| format!("cannot run pactl: {PULSE_HINT}"))?;
        if !out.status.success() {
            bail!(
                "pactl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds a null sink `name` at 48 kHz mono float, so that what is played
    /// into it reaches its monitor `NAME.monitor` sample for sample.
    pub fn load_null_sink(&self, name: &str) -> anyhow::Result<()> {
        self.pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={name}"),
            "rate=48000",
            "channels=1",
            "format=float32le",
        ])?;
        Ok(())
    }

    /// Adds a source `name` that gives what `master` gives: not a monitor,
    /// so programs that list no monitor as a microphone (Chromium) list it.
    pub fn load_remapped_source(&self, name: &str, master: &str) -> anyhow::Result<()> {
        self.pactl(&[
            "load-module",
            "module-remap-source",
            &format!("source_name={name}"),
            &format!("master={master}"),
            "channels=1",
        ])?;
        Ok(())
    }

    /// The streams playing and recording now, each with its process and device.
    pub fn streams(&self) -> anyhow::Result<Vec<AudioStream>> {
        let mut streams = Vec::new();
        for (direction, devices, list, field) in [
            (Direction::Playback, "sinks", "sink-inputs", "sink"),
            (Direction::Recording, "sources", "source-outputs", "source"),
        ] {
            let devices = self.json(&["list", "short", devices])?;
            let name_of = |index: &Value| {
                devices
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|device| device["index"] == *index)
                    .and_then(|device| device["name"].as_str())
                    .unwrap_or("?")
                    .to_owned()
            };
            for stream in self.json(&["list", list])?.as_array().into_iter().flatten() {
                streams.push(AudioStream {
                    direction,
                    process_id: stream["properties"]["application.process.id"]
                        .as_str()
                        .and_then(|pid| pid.parse().ok()),
                    device: name_of(&stream[field]),
                });
            }
        }
        Ok(streams)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let text = self.pactl(&[&["--format=json"], args].concat())?;
        serde_json::from_str(&text).with_context(|| format!("pactl {}: not JSON", args.join(" ")))
    }

    /// The daemon's process id, from its pid file.
    fn process_id(&self) -> Option<u32> {
        std::fs::read_to_string(self.runtime_dir.join("pulse").join("pid"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }
}

impl Drop for PulseAudio {
    fn drop(&mut self) {
        let pid = self.process_id();
        // Signals the pid in this daemon's own pid file, and nothing else.
        let _ = self
            .command("pulseaudio")
            .arg("--kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // It tidies its runtime folder as it exits: wait, or the folder comes back.
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which way a stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into a sink (a `sink-input`).
    Playback,
    /// Out of a source (a `source-output`).
    Recording,
}

/// One stream of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    pub direction: Direction,
    pub process_id: Option<u32>,
    /// The sink or source it plays into or records from.
    pub device: String,
}
