//! Helpers for the end-to-end tests: the real `duet` binary as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test file, and each example, uses a subset

pub mod browser;
pub mod network_call;
pub mod played;
pub mod pulse;
pub mod scale_out;
pub mod screen;
pub mod sound;
pub mod speakers;
pub mod wayland;
pub mod wayland_hint_proxy;
pub mod xdisplay;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `duet` binary of this build, built on first use (a no-op when it is up to date),
/// or the one `DUET_BIN` names. The suite's script builds the app in the same
/// cargo run as the tests and names it there: built here with `-p duet`, the
/// dependencies' features are resolved for the app alone, and a cold run
/// compiled most of the tree a second time inside the first test.
pub fn duet_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(given) = std::env::var_os("DUET_BIN") {
            let given = PathBuf::from(given);
            assert!(given.is_file(), "DUET_BIN names no file: {given:?}");
            return given;
        }
        // Test binaries live in <target>/<profile>/deps/; the app beside <profile>/.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("a target/<profile>/deps layout")
            .to_path_buf();
        let release = profile_dir
            .file_name()
            .is_some_and(|name| name == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "duet", "--bin", "duet"]);
        // `cargo test` hands the test its package's variables (CARGO_MANIFEST_DIR,
        // CARGO_PKG_NAME, ...). Build scripts that watch them (ring's) would see
        // them change, rebuild the WebRTC stack and the app here (over a minute
        // on 2 cores), and again at the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key == "CARGO_CRATE_NAME"
                || key == "CARGO_PRIMARY_PACKAGE"
            {
                build.env_remove(&*key);
            }
        }
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the duet binary failed");
        profile_dir.join("duet")
    })
    .clone()
}

/// Sends signal `name` (TERM, KILL, STOP, ...) to a child.
pub fn send_signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A running `duet` child, killed if the test ends without waiting for it.
pub struct DuetProcess {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl DuetProcess {
    pub fn spawn(args: &[&str]) -> DuetProcess {
        let mut child = Command::new(duet_bin())
            .args(args)
            .env("DUET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("duet starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        DuetProcess { child, stdout }
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    pub fn signal(&self, name: &str) {
        send_signal(&self.child, name);
    }

    /// Waits for exit up to `limit`; returns the status and how long it took.
    pub fn wait_for_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "duet did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut text).unwrap();
        }
        text
    }
}

impl Drop for DuetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `duet` child whose stdout lines are collected as they come (progress
/// lines of a headless call) and whose stderr goes to a file, so a long run
/// can never block on a full pipe.
pub struct LivePeer {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub stderr_path: PathBuf,
}

impl LivePeer {
    pub fn spawn(args: &[&str], dir: &std::path::Path, name: &str) -> LivePeer {
        LivePeer::spawn_with_env(args, dir, name, &[])
    }

    /// [`LivePeer::spawn`] with extra environment variables (a display for a window).
    pub fn spawn_with_env(
        args: &[&str],
        dir: &std::path::Path,
        name: &str,
        env: &[(&str, &str)],
    ) -> LivePeer {
        let mut command = Command::new(duet_bin());
        command.args(args).envs(env.iter().copied());
        LivePeer::spawn_command(command, dir, name)
    }

    /// Runs `command`, a `duet` with its arguments however it is reached (in
    /// a network namespace, say), as [`LivePeer::spawn`] does.
    pub fn spawn_command(command: Command, dir: &std::path::Path, name: &str) -> LivePeer {
        LivePeer::spawn_command_with_stdin(command, dir, name, Stdio::null())
    }

    /// [`LivePeer::spawn_command`] with its standard input piped: the test
    /// writes to `child.stdin` (what `--chat -` sends).
    pub fn spawn_command_piped(command: Command, dir: &std::path::Path, name: &str) -> LivePeer {
        LivePeer::spawn_command_with_stdin(command, dir, name, Stdio::piped())
    }

    fn spawn_command_with_stdin(
        mut command: Command,
        dir: &std::path::Path,
        name: &str,
        stdin: Stdio,
    ) -> LivePeer {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        if command.get_envs().all(|(key, _)| key != "DUET_LOG") {
            // `DUET_TEST_LOG=debug` (say) shows what a peer did, in its stderr.
            let filter = std::env::var("DUET_TEST_LOG").unwrap_or_else(|_| "info".to_owned());
            command.env("DUET_LOG", filter);
        }
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("duet starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LivePeer {
            child,
            lines,
            seen: Vec::new(),
            stderr_path,
        }
    }

    /// Waits for a stdout line containing `needle`; panics with everything seen on timeout.
    pub fn expect_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; saw {:?}; stderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// After exit: every line still on its way from the pipe, up to its end
    /// (`wait_for_exit` keeps only those already read when the process ended).
    pub fn read_to_end(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the output did not end within {limit:?}")
                }
            }
        }
    }

    pub fn signal(&self, name: &str) {
        send_signal(&self.child, name);
    }

    /// Resident memory now, from /proc (`duet-measure`, as the report reads it).
    pub fn rss_mb(&self) -> f64 {
        duet_measure::ProcessUsage::of(self.child.id())
            .expect("the child is running")
            .rss_mb
    }

    /// Waits for exit; panics (with stderr) after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "duet did not exit within {limit:?}; saw {:?}; stderr: {}",
                self.seen,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LivePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A path in the temporary folder that no other test of this run uses:
/// `duet-{name}-{pid}-{n}`. All end-to-end tests share one process, so the
/// process id alone would not tell two tests apart.
pub fn fresh_temp_path(name: &str) -> PathBuf {
    static TAKEN: AtomicUsize = AtomicUsize::new(0);
    let n = TAKEN.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("duet-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = fresh_temp_path(name);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_unless_kept(&self.0);
    }
}

/// Removes a test's folder, unless `DUET_TEST_KEEP` is set: then it stays
/// (and is named on stderr), to read the peers' and servers' logs after a run.
pub fn remove_unless_kept(dir: &Path) {
    if std::env::var_os("DUET_TEST_KEEP").is_some() {
        eprintln!("kept {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A number at `path` in a report (`--stats-json` or the web page's); panics with the report otherwise.
pub fn number(report: &Value, path: &[&str]) -> f64 {
    let mut value = report;
    for key in path {
        value = &value[key];
    }
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {report:#}"))
}

/// `duet serve` on `listen`; returns it and its `ws://` URL.
pub fn start_server(scratch: &Scratch, listen: &str) -> (LivePeer, String) {
    let mut command = Command::new(duet_bin());
    command.args(["serve", "--listen", listen]);
    start_server_command(scratch, command)
}

/// [`start_server`] from a `duet serve …` command however it is reached (in
/// a network namespace, say). Its first line on stdout is the address it
/// listens on.
pub fn start_server_command(scratch: &Scratch, command: Command) -> (LivePeer, String) {
    let mut server = LivePeer::spawn_command(command, &scratch.0, "server");
    let addr = server.expect_line(":", Duration::from_secs(30));
    let url = format!("ws://{addr}");
    (server, url)
}

/// A headless peer with the test sources.
pub fn peer(
    scratch: &Scratch,
    name: &str,
    role: &str,
    url: &str,
    tone: &str,
    extra: &[&str],
) -> LivePeer {
    peer_with_env(scratch, name, role, url, tone, extra, &[])
}

/// [`peer`] with extra environment variables (a sound server, a sink).
/// `DUET_TEST_LOG=debug` (say) shows what it did, in its stderr.
pub fn peer_with_env(
    scratch: &Scratch,
    name: &str,
    role: &str,
    url: &str,
    tone: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> LivePeer {
    let args = peer_args(scratch, name, role, url, tone, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    LivePeer::spawn_with_env(&args, &scratch.0, name, env)
}

/// The arguments of a headless [`peer`] named `name` (its report goes to
/// `NAME.json` in `scratch`), sending the test signals unless `extra` says
/// `--video` or `--audio`.
pub fn peer_args(
    scratch: &Scratch,
    name: &str,
    role: &str,
    url: &str,
    tone: &str,
    extra: &[&str],
) -> Vec<String> {
    let stats = scratch.path(&format!("{name}.json"));
    let mut args = vec![role, "--headless", "--server", url];
    // The test sources, unless `extra` names others.
    for option in ["--video", "--audio"] {
        if !extra.contains(&option) {
            args.extend([option, "test"]);
        }
    }
    args.extend(["--tone-hz", tone, "--stats-json", stats.to_str().unwrap()]);
    // Each test has a server of its own: one room name does for all.
    if !extra.contains(&"--room") {
        args.extend(["--room", "duet"]);
    }
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_owned).collect()
}

/// A headless [`peer`] run inside `namespace` (a network of its own).
/// `DUET_TEST_LOG=debug` (say) shows what it did, in its stderr.
pub fn peer_in(
    namespace: &duet_netem::NetNamespace,
    scratch: &Scratch,
    name: &str,
    role: &str,
    url: &str,
    tone: &str,
    extra: &[&str],
) -> LivePeer {
    let mut command = namespace.command(duet_bin());
    command.args(peer_args(scratch, name, role, url, tone, extra));
    LivePeer::spawn_command(command, &scratch.0, name)
}

/// The `--stats-json` report a [`peer`] named `name` wrote.
pub fn report(scratch: &Scratch, name: &str) -> Value {
    let text = std::fs::read_to_string(scratch.path(&format!("{name}.json")))
        .unwrap_or_else(|err| panic!("{name} wrote no report: {err}"));
    serde_json::from_str(&text).unwrap()
}

/// One end-to-end test at a time: every test takes it first (see
/// `main.rs`). Two cores are not enough for more than one call, and frame
/// counts and audio gaps should measure Duet, not the machine.
pub fn serialised() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One side of [`call_headless`]: what follows `caller`/`callee --headless
/// --server URL --duration S` on its command line, and the environment it
/// runs in (which PulseAudio devices it uses).
pub struct CallSide<'a> {
    pub args: Vec<&'a str>,
    pub env: Vec<(&'a str, &'a str)>,
}

/// A measured call between two headless peers: A (the caller) starts and
/// waits in the room, then B (the callee) joins; both hang up by themselves
/// after `seconds` and must exit 0 (else the test fails with the log of the
/// one that did not).
pub fn call_headless(scratch: &Scratch, url: &str, a: CallSide<'_>, b: CallSide<'_>, seconds: u64) {
    let duration = seconds.to_string();
    let args = |role: &'static str, side: &CallSide<'_>| -> Vec<String> {
        let room: &[&str] = if side.args.contains(&"--room") {
            &[]
        } else {
            &["--room", "duet"]
        };
        [role, "--headless", "--server", url, "--duration", &duration]
            .iter()
            .chain(room)
            .chain(side.args.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let a_args = args("caller", &a);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut caller = LivePeer::spawn_with_env(&a_args, &scratch.0, "A", &a.env);
    caller.expect_line("waiting for the other peer", Duration::from_secs(30));
    let b_args = args("callee", &b);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut callee = LivePeer::spawn_with_env(&b_args, &scratch.0, "B", &b.env);
    for peer in [&mut caller, &mut callee] {
        let status = peer.wait_for_exit(Duration::from_secs(seconds + 40));
        assert!(status.success(), "{}", peer.stderr());
    }
}
