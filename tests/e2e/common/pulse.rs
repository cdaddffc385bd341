//! A private PulseAudio daemon: real, paced audio devices for tests on a
//! machine without a sound card (`../shared/platform-notes.md`, "Devices when
//! there are none"). Null sinks are speakers that play nowhere; each one's
//! `.monitor` source hears what is played into it, so it can serve as a
//! microphone. `duet` reaches the daemon through cpal's ALSA host: ALSA's
//! `default` device is PulseAudio's (libasound2-plugins) whenever a daemon
//! runs, and libpulse picks the source named by `PULSE_SOURCE`.
//!
//! The daemon starts with no default script (`-n`): no device or stream
//! restore databases (they live in the user's home and would carry volumes
//! from one run to the next), no suspend-on-idle; only what the test loads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What to install when the sound server's programs are missing.
const INSTALL_HINT: &str = "./scripts/install-deps.sh installs it (Debian's pulseaudio, \
                            pulseaudio-utils and libasound2-plugins)";

/// A PulseAudio daemon private to one test, killed (and its folder removed)
/// when dropped. Children reach it with [`PulseAudio::env`].
pub struct PulseAudio {
    /// Holds `runtime/` (0700: the socket and pid file) and `config/` (the
    /// cookie and state), so nothing is shared with another daemon.
    dir: PathBuf,
    runtime_dir: PathBuf,
    config_dir: PathBuf,
}

impl PulseAudio {
    /// Starts a daemon of its own; panics (saying what to install) without PulseAudio.
    pub fn start(name: &str) -> PulseAudio {
        let dir = super::fresh_temp_path(&format!("pulse-{name}"));
        let runtime_dir = dir.join("runtime");
        let config_dir = dir.join("config");
        for folder in [&dir, &runtime_dir, &config_dir] {
            std::fs::create_dir_all(folder).expect("a folder for PulseAudio");
            // PulseAudio refuses a runtime folder others can read.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700))
                .expect("PulseAudio's folder made private");
        }
        let pulse = PulseAudio {
            dir,
            runtime_dir,
            config_dir,
        };
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
            .unwrap_or_else(|err| panic!("cannot run pulseaudio ({err}): {INSTALL_HINT}"));
        assert!(
            started.status.success(),
            "pulseaudio did not start: {}{}; its log: {}",
            String::from_utf8_lossy(&started.stderr),
            String::from_utf8_lossy(&started.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // `-D` returns once the daemon is up; make sure it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = pulse.try_pactl(&["info"]);
            if info.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pulseaudio does not answer: {}",
                String::from_utf8_lossy(&info.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pulse
    }

    /// The environment that points a child (a `duet`, `paplay`, `pactl`) at
    /// this daemon and nowhere else, whatever the test's own environment says.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let socket = self.runtime_dir.join("pulse").join("native");
        vec![
            ("XDG_RUNTIME_DIR", utf8(&self.runtime_dir)),
            ("XDG_CONFIG_HOME", utf8(&self.config_dir)),
            ("PULSE_SERVER", format!("unix:{}", utf8(&socket))),
        ]
    }

    /// Holds the daemon up for `pause` (SIGSTOP, then SIGCONT), as a busy
    /// machine or a page fault does a sound server: its clients' streams
    /// run dry.
    pub fn stall(&self, pause: Duration) {
        let pid = self.pid().expect("the daemon's pid file");
        let signal = |name: &str| {
            let status = Command::new("kill")
                .args([name, &pid.to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {name} {pid}");
        };
        signal("-STOP");
        std::thread::sleep(pause);
        signal("-CONT");
    }

    /// The daemon's process id, from its own pid file.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.runtime_dir.join("pulse").join("pid"))
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    }

    /// `program` with [`PulseAudio::env`], and without the test's own choice of devices.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .envs(self.env())
            .env_remove("PULSE_SINK")
            .env_remove("PULSE_SOURCE")
            .stdin(Stdio::null());
        command
    }

    fn try_pactl(&self, args: &[&str]) -> Output {
        self.command("pactl")
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("cannot run pactl ({err}): {INSTALL_HINT}"))
    }

    /// Runs `pactl ARGS`; returns its stdout, panics with its stderr if it fails.
    pub fn pactl(&self, args: &[&str]) -> String {
        let out = self.try_pactl(args);
        assert!(
            out.status.success(),
            "pactl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds a null sink `name` at 48 kHz mono float, so that what is played
    /// into it reaches its monitor `NAME.monitor` sample for sample.
    pub fn load_null_sink(&self, name: &str) {
        self.pactl(&[
            "load-module",
            "module-null-sink",
            &format!("sink_name={name}"),
            "rate=48000",
            "channels=1",
            "format=float32le",
        ]);
    }

    /// Makes `source` the one a program that names none records from.
    pub fn set_default_source(&self, source: &str) {
        self.pactl(&["set-default-source", source]);
    }

    /// Starts playing `wav` into `sink` (`paplay`); the child ends with the file.
    pub fn play(&self, sink: &str, wav: &Path) -> Child {
        self.command("paplay")
            .arg(format!("--device={sink}"))
            .arg(wav)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run paplay ({err}): {INSTALL_HINT}"))
    }

    /// Plays `wav` into `sink` for as long as the returned guard lives: a
    /// sound in the room (a talker, a fan) that outlasts the call it is heard
    /// in and is stopped when the test is done with it.
    pub fn play_during(&self, sink: &str, wav: &Path) -> PlayingSound {
        PlayingSound(self.play(sink, wav))
    }

    /// Starts recording `source` into `wav` (48 kHz mono float, `parecord`)
    /// at a low latency.
    pub fn record(&self, source: &str, wav: &Path) -> PulseRecording {
        let child = self
            .command("parecord")
            .args([
                &format!("--device={source}"),
                "--file-format=wav",
                "--format=float32le",
                "--rate=48000",
                "--channels=1",
                "--latency-msec=10",
            ])
            .arg(wav)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run parecord ({err}): {INSTALL_HINT}"));
        PulseRecording {
            child,
            path: wav.to_owned(),
        }
    }

    /// The recording streams connected now: which process reads which source.
    pub fn recording_streams(&self) -> Vec<RecordingStream> {
        let sources: Value =
            serde_json::from_str(&self.pactl(&["--format=json", "list", "short", "sources"]))
                .expect("pactl's JSON list of sources");
        let source_name = |index: &Value| {
            sources
                .as_array()
                .into_iter()
                .flatten()
                .find(|source| source["index"] == *index)
                .and_then(|source| source["name"].as_str())
                .unwrap_or("?")
                .to_owned()
        };
        let outputs: Value =
            serde_json::from_str(&self.pactl(&["--format=json", "list", "source-outputs"]))
                .expect("pactl's JSON list of source outputs");
        outputs
            .as_array()
            .into_iter()
            .flatten()
            .map(|output| RecordingStream {
                process_id: output["properties"]["application.process.id"]
                    .as_str()
                    .and_then(|pid| pid.parse().ok()),
                application: output["properties"]["application.name"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
                source: source_name(&output["source"]),
            })
            .collect()
    }
}

impl Drop for PulseAudio {
    fn drop(&mut self) {
        let pid = self.pid();
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
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        super::remove_unless_kept(&self.dir);
    }
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn utf8(path: &Path) -> String {
    path.to_str()
        .expect("the temporary folder's path is UTF-8")
        .to_owned()
}

/// One recording stream of the daemon (a `source-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingStream {
    pub process_id: Option<u32>,
    pub application: String,
    /// The name of the source it records from.
    pub source: String,
}

/// A `parecord` running; killed if dropped before [`PulseRecording::finish`].
pub struct PulseRecording {
    child: Child,
    path: PathBuf,
}

impl PulseRecording {
    /// Waits until the source has delivered `at_least` of audio to the file.
    ///
    /// A null sink renders in blocks of up to 2 s until a stream asks for a
    /// low latency, so its monitor's first samples come only that late: a
    /// quirk of the virtual device that no microphone has.
    pub fn wait_for_audio(&mut self, at_least: Duration, limit: Duration) {
        // 4 bytes a sample at 48 kHz, after a header of well under 100 bytes.
        let wanted = 100 + (at_least.as_secs_f64() * 48_000.0 * 4.0) as u64;
        let deadline = Instant::now() + limit;
        loop {
            let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
            if size >= wanted {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("parecord exited ({status}) before recording anything");
            }
            assert!(
                Instant::now() < deadline,
                "{} holds {size} bytes after {limit:?}: the source delivers no audio",
                self.path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops recording (SIGINT: parecord completes the file's header) and
    /// reads the recording as 48 kHz mono.
    pub fn finish(mut self) -> Vec<f32> {
        super::send_signal(&self.child, "INT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().expect("parecord's status").is_none() {
            assert!(Instant::now() < deadline, "parecord did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
        duet_media::wav_file::read_wav(&self.path).unwrap_or_else(|err| {
            panic!("the recording {} is unreadable: {err}", self.path.display())
        })
    }

    /// The process id, to tell its stream from others.
    pub fn process_id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PulseRecording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `paplay` stopped when dropped ([`PulseAudio::play_during`]).
pub struct PlayingSound(Child);

impl Drop for PlayingSound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
