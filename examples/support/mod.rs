//! What the benchmark examples share: the release `duet` binary, a
//! `duet serve` of their own on a free loopback port, and children whose
//! output lines they follow.
#![allow(dead_code)] // each example uses a subset

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// `target/release/duet`, or `$DUET_BIN`; an error saying how to build it when missing.
pub fn release_duet() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("DUET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/duet"));
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p duet` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `duet serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`, as the server printed it.
    pub addr: String,
}

impl Server {
    pub fn start(bin: &std::path::Path) -> anyhow::Result<Server> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start duet serve")?;
        let mut addr = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut addr)?;
        Ok(Server {
            child,
            addr: addr.trim().to_owned(),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process whose stdout lines a thread hands over as they come (a
/// headless `duet`'s progress lines, say); killed when dropped.
pub struct LineChild {
    child: Child,
    lines: Receiver<String>,
    /// Every line received so far, oldest first.
    seen: Vec<String>,
}

impl LineChild {
    /// Starts `command` with its stdout piped to us; `what` names it in errors.
    pub fn spawn(mut command: Command, what: &str) -> anyhow::Result<LineChild> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(LineChild {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Whether it has printed a line that `wanted` accepts.
    pub fn has_said(&mut self, wanted: impl Fn(&str) -> bool) -> bool {
        self.seen.extend(self.lines.try_iter());
        self.seen.iter().any(|line| wanted(line))
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for it to exit (and kills it after that); its exit status.
    pub fn finish(mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("it did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
