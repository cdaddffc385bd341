//! Network namespaces: a network of a test's own, as a machine that is not
//! this one would have it. Needs root, as CI and these sessions have.
//!
//! A fresh namespace has a loopback interface and nothing else: no default
//! route, so nothing leaves it, and no multicast route, like an offline LAN or
//! a VPN that takes every route.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::RigError;

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// A new namespace with its loopback up. The name is fresh each time:
    /// the kernel deletes namespaces asynchronously, so a name used a moment
    /// ago may still be taken.
    pub fn new(label: &str) -> Result<NetNamespace, RigError> {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "duet-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let namespace = NetNamespace { name };
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside the namespace; its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, RigError> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `program ARGS` inside the namespace; its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, RigError> {
        run(self.command(program).args(args))
    }

    /// `program` to be run inside the namespace (`ip netns exec` replaces
    /// itself with it, so the child is the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// The namespace's handle, for a thread to enter it with [`enter`].
    pub fn open(&self) -> Result<NamespaceHandle, RigError> {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        File::open(&path)
            .map(NamespaceHandle)
            .map_err(|source| RigError::Io {
                what: format!("open {}", path.display()),
                source,
            })
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// An open namespace, which a thread can enter (the handle is `Send`, the
/// namespace name's lookup is done).
#[derive(Debug)]
pub struct NamespaceHandle(File);

/// Moves the calling thread (only it) into the namespace: sockets it opens
/// from then on live there.
pub fn enter(handle: &NamespaceHandle) -> Result<(), RigError> {
    nix::sched::setns(&handle.0, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|err| RigError::Io {
        what: "enter the network namespace".into(),
        source: err.into(),
    })
}

/// Runs `command`; its stdout, or an error saying what failed and why
/// (without root, or without iproute2 or nftables, nothing here works).
pub(crate) fn run(command: &mut Command) -> Result<String, RigError> {
    let shown = format!("{command:?}");
    let out = command.output().map_err(|source| RigError::Io {
        what: format!("run {shown} (is it installed? scripts/install-deps.sh installs it)"),
        source,
    })?;
    if !out.status.success() {
        return Err(RigError::Command {
            command: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
