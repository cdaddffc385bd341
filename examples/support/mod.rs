//! What the benchmark examples share: the release `duet` binary, and a
//! `duet serve` of their own on a free loopback port.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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
