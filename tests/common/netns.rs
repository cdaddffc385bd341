//! Network namespaces: a network of a test's own, as a machine that is not
//! this one would have it (`../shared/platform-notes.md`, "Networks that are
//! not loopback"). Needs root, as CI and these sessions have.
//!
//! A fresh namespace has a loopback interface and nothing else: no default
//! route, so nothing leaves it, and no multicast route, like an offline LAN or
//! a VPN that takes every route.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace, deleted when dropped.
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// A new namespace with its loopback up. The name is fresh each time:
    /// the kernel deletes namespaces asynchronously, so a name used a moment
    /// ago may still be taken.
    pub fn new(label: &str) -> NetNamespace {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "duet-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let namespace = NetNamespace { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// Runs `ip ARGS` inside the namespace; panics with its error if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `program` to be run inside the namespace (`ip netns exec` replaces
    /// itself with it, so the child is the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Runs `command`; its stdout, or a panic saying what failed and why
/// (without root, or without `ip`, namespaces cannot be made).
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?} ({err}): is iproute2 installed?"));
    assert!(
        out.status.success(),
        "{command:?} failed (network namespaces need root): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
