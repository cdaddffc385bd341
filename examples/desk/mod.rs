//! A desktop without hardware for the benchmarks' windowed peers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

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
