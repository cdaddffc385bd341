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

/// A desktop without hardware for windowed peers: an Xvfb display and a
/// PulseAudio daemon with a null sink (a paced speaker), both private to this
/// run and stopped when dropped. Windowed peers get [`VirtualDesk::env`].
pub struct VirtualDesk {
    xvfb: Child,
    runtime_dir: PathBuf,
    /// `:N`.
    pub display: String,
    /// Whether PulseAudio started (without it a window's speaker falls back to
    /// discarding audio, and audio is measured where the decoder hands it out).
    pub audio: bool,
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
        let runtime_dir = std::env::temp_dir().join(format!("duet-desk-{}", std::process::id()));
        std::fs::create_dir_all(&runtime_dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let audio = Command::new("pulseaudio")
            .args(["-D", "--exit-idle-time=-1", "--disallow-exit"])
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        // Give the X server a moment to accept clients.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(VirtualDesk {
            xvfb,
            runtime_dir,
            display,
            audio,
        })
    }

    /// The environment a windowed `duet` needs on this desk.
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("DISPLAY", self.display.clone().into()),
            ("XDG_RUNTIME_DIR", self.runtime_dir.clone().into_os_string()),
        ]
    }
}

impl Drop for VirtualDesk {
    fn drop(&mut self) {
        if self.audio {
            let _ = Command::new("pulseaudio")
                .arg("--kill")
                .env("XDG_RUNTIME_DIR", &self.runtime_dir)
                .status();
        }
        let _ = self.xvfb.kill();
        let _ = self.xvfb.wait();
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}
