//! The sound libraries' own lines kept out of the terminal.
//!
//! On a machine without a sound card or a JACK server, every look at the
//! audio devices makes ALSA and JACK print dozens of lines of their own to
//! the process's stderr ("ALSA lib confmisc.c:165 … Cannot get card index",
//! "jack server is not running or cannot be started"). A person should see
//! only Duet's lines. Whatever fails for real still reaches them: cpal returns
//! it as an error, which Duet reports in its own words. So while Duet calls
//! into the sound libraries ([`quietly`]), stderr (file descriptor 2) is a
//! pipe whose lines go to the debug log (`DUET_LOG=debug` shows them), and
//! Duet's own log lines are written to the terminal's stderr as it was before
//! any of this ([`TerminalStderr`]).
// dup(2)/dup2(2) are the only way to take stderr from C libraries; each call
// below is on descriptors this module owns, and stderr is put back by a guard.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{BufRead as _, BufReader, PipeReader, Write};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The process's stderr before any capture, kept open for Duet's own lines.
static TERMINAL: OnceLock<Option<File>> = OnceLock::new();
/// One capture at a time (stderr is one per process).
static CAPTURE: Mutex<()> = Mutex::new(());
/// How long the end of a capture waits for the last captured lines.
const FORWARDER_GRACE: Duration = Duration::from_millis(500);

fn terminal() -> Option<&'static File> {
    TERMINAL
        .get_or_init(|| {
            // SAFETY: dup of stderr; the new descriptor is owned by the File.
            let fd = unsafe { libc::dup(libc::STDERR_FILENO) };
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
        })
        .as_ref()
}

/// A writer to stderr as it was when Duet started, untouched by [`quietly`]:
/// give it to the log subscriber so that Duet's own lines always reach the
/// terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalStderr;

impl TerminalStderr {
    /// Takes hold of the terminal's stderr now, before any capture: call
    /// once at start-up.
    pub fn init() -> TerminalStderr {
        let _ = terminal();
        TerminalStderr
    }
}

impl Write for TerminalStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match terminal() {
            Some(mut file) => file.write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match terminal() {
            Some(mut file) => file.flush(),
            None => std::io::stderr().flush(),
        }
    }
}

/// Runs `work` (calls into ALSA, JACK and friends through cpal) with what
/// they print to stderr sent to the debug log instead of the terminal.
pub(crate) fn quietly<T>(work: impl FnOnce() -> T) -> T {
    quietly_into(work, |line| {
        tracing::debug!(target: "duet::sound_library", "{line}");
    })
}

/// [`quietly`], with each captured line handed to `sink`.
fn quietly_into<T>(work: impl FnOnce() -> T, sink: impl FnMut(&str) + Send + 'static) -> T {
    let Some(terminal) = terminal() else {
        return work();
    };
    // A panic in an earlier capture leaves the lock poisoned, not stderr
    // redirected (the guard put it back): capturing again is safe.
    let _one = CAPTURE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let Ok((reader, writer)) = std::io::pipe() else {
        return work();
    };
    let (done, finished) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name("duet-stderr".into())
        .spawn(move || {
            forward_lines(reader, sink);
            let _ = done.send(());
        });
    if spawned.is_err() {
        return work();
    }
    // SAFETY: both descriptors are open; fd 2 now refers to the pipe.
    let redirected = unsafe { libc::dup2(writer.as_raw_fd(), libc::STDERR_FILENO) } >= 0;
    drop(writer);
    let result = {
        let _restore = redirected.then_some(Restore(terminal));
        work()
    };
    // Stderr is the terminal again, so the pipe has no writer left and the
    // forwarder reads what is left and stops. Unless a library started a
    // process that inherited the pipe as its stderr (libjack starts a JACK
    // server where one is installed): then the forwarder goes on logging
    // that process's lines, and Duet does not wait for it.
    let _ = finished.recv_timeout(FORWARDER_GRACE);
    result
}

fn forward_lines(reader: PipeReader, mut sink: impl FnMut(&str)) {
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        let line = line.trim_end();
        if !line.is_empty() {
            sink(line);
        }
    }
}

/// Puts the terminal back as stderr when dropped (also on a panic).
struct Restore(&'static File);

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: both descriptors are open; this closes fd 2's pipe end.
        unsafe { libc::dup2(self.0.as_raw_fd(), libc::STDERR_FILENO) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn write_to_fd_2(text: &str) {
        // SAFETY: writing a buffer we own to stderr.
        unsafe { libc::write(libc::STDERR_FILENO, text.as_ptr().cast(), text.len()) };
    }

    #[test]
    fn what_a_library_prints_is_captured_and_stderr_comes_back() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let answer = quietly_into(
            || {
                write_to_fd_2("ALSA lib confmisc.c:165:(snd_config_get_card) Cannot get card\n");
                write_to_fd_2("jack server is not running or cannot be started\n\n");
                42
            },
            {
                let lines = Arc::clone(&lines);
                move |line| lines.lock().expect("lines").push(line.to_owned())
            },
        );
        assert_eq!(answer, 42);
        // Written after the capture: the terminal's, not the sink's.
        write_to_fd_2("");
        assert_eq!(
            *lines.lock().expect("lines"),
            [
                "ALSA lib confmisc.c:165:(snd_config_get_card) Cannot get card",
                "jack server is not running or cannot be started"
            ]
        );
        // SAFETY: asking which file fd 2 is.
        let (now, terminal) = unsafe {
            let mut now: libc::stat = std::mem::zeroed();
            let mut terminal: libc::stat = std::mem::zeroed();
            libc::fstat(libc::STDERR_FILENO, &mut now);
            libc::fstat(
                super::terminal().expect("terminal").as_raw_fd(),
                &mut terminal,
            );
            (now, terminal)
        };
        assert_eq!(
            (now.st_dev, now.st_ino),
            (terminal.st_dev, terminal.st_ino),
            "stderr restored"
        );
    }

    #[test]
    fn a_process_started_inside_that_keeps_stderr_does_not_hold_us_up() {
        let started = std::time::Instant::now();
        let mut child = quietly_into(
            || {
                std::process::Command::new("sleep")
                    .arg("5")
                    .spawn()
                    .expect("sleep starts")
            },
            |_| {},
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_panic_inside_puts_stderr_back() {
        let caught = std::panic::catch_unwind(|| quietly_into(|| panic!("inside"), |_| {}));
        assert!(caught.is_err());
        let again = quietly_into(|| 7, |_| {});
        assert_eq!(again, 7, "capturing works after a panic");
    }
}
