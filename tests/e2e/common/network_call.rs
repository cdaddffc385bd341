//! A call between two headless peers across the impaired network of a
//! [`Rig`]: the caller in namespace A, the callee in B, `duet serve` on the
//! hub, all sending the noisy stamped picture (what a camera costs) and the
//! beeps.

use std::time::Duration;

use duet_netem::{Rig, Side};
use serde_json::Value;

use super::{LivePeer, Scratch, duet_bin, peer_in, report, start_server_command};

/// The two peers are named after their sides.
pub const NAMES: [&str; 2] = ["A", "B"];

pub struct NetworkCall {
    pub rig: Rig,
    pub scratch: Scratch,
    pub url: String,
    /// The caller (in A) and the callee (in B), once started.
    pub peers: Vec<LivePeer>,
    pub server: LivePeer,
    label: String,
}

impl NetworkCall {
    /// The rig with its links clean and the server running on the hub.
    pub fn new(label: &str) -> NetworkCall {
        let scratch = Scratch::new(label);
        let rig = Rig::new(label).expect("the rig needs root, iproute2, iptables and nftables");
        let mut serve = rig.hub().command(duet_bin());
        serve.args(["serve", "--listen", &format!("{}:0", rig.hub_address())]);
        let (server, url) = start_server_command(&scratch, serve);
        NetworkCall {
            rig,
            scratch,
            url,
            peers: Vec::new(),
            server,
            label: label.to_owned(),
        }
    }

    /// Starts the caller, waits until it is in the room, starts the callee;
    /// each hangs up `seconds` after it connected. `extra` goes to both.
    pub fn start(&mut self, seconds: u64, extra: &[&str]) {
        let seconds = seconds.to_string();
        for (side, name, role, tone) in [
            (Side::A, NAMES[0], "caller", "660"),
            (Side::B, NAMES[1], "callee", "880"),
        ] {
            let mut args = vec!["--video", "test:noisy", "--duration", &seconds];
            args.extend_from_slice(extra);
            let namespace = self.rig.namespace(side);
            let mut peer = peer_in(namespace, &self.scratch, name, role, &self.url, tone, &args);
            if side == Side::A {
                peer.expect_line("waiting for the other peer", Duration::from_secs(30));
            }
            self.peers.push(peer);
        }
    }

    /// Waits for both to print `needle`.
    pub fn expect_both(&mut self, needle: &str, limit: Duration) {
        for peer in &mut self.peers {
            peer.expect_line(needle, limit);
        }
    }

    /// Waits for both to exit successfully; their reports. With
    /// `DUET_TEST_KEEP=DIR` their logs are kept in DIR as `LABEL-A.stderr`.
    pub fn finish(&mut self, limit: Duration) -> [Value; 2] {
        for peer in &mut self.peers {
            let status = peer.wait_for_exit(limit);
            if let Ok(dir) = std::env::var("DUET_TEST_KEEP") {
                let name = peer
                    .stderr_path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let _ = std::fs::copy(&peer.stderr_path, format!("{dir}/{}-{name}", self.label));
            }
            let stderr = peer.stderr();
            assert!(status.success(), "{status}: {stderr}");
            // A loopback candidate paired with the other namespace's address:
            // every check from it fails in the kernel (see `host_addrs`).
            assert!(
                !stderr.contains("Failed to write packet"),
                "a peer wrote from an address that cannot reach the other: {stderr}"
            );
        }
        NAMES.map(|name| report(&self.scratch, name))
    }
}
