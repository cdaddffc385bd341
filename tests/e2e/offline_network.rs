//! A machine whose network goes nowhere (an offline LAN, a network namespace,
//! some VPNs) still makes calls (issue 14). Such a machine has no multicast
//! route, so mDNS cannot join its group (`ENODEV`); webrtc-rs used to fail
//! the whole connection on it, and the peer waited 30 s for "the other peer".
//! The server and both peers run in a namespace of their own that has only
//! its loopback.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{LivePeer, Scratch, duet_bin, number, peer_in, report, start_server_command};
use duet_netem::NetNamespace;

#[test]
fn a_machine_without_a_route_out_still_calls() {
    let _one_at_a_time = common::serialised();
    let scratch = Scratch::new("offline");
    let namespace = NetNamespace::new("offline").unwrap();
    assert_eq!(
        namespace.ip(&["route", "show"]).unwrap().trim(),
        "",
        "the namespace should have no route at all"
    );
    let mut serve = namespace.command(duet_bin());
    serve.args(["serve", "--listen", "127.0.0.1:0"]);
    let (_server, url) = start_server_command(&scratch, serve);

    let mut peers: Vec<LivePeer> = [("caller", "660"), ("callee", "880")]
        .into_iter()
        .map(|(role, tone)| {
            peer_in(
                &namespace,
                &scratch,
                role,
                role,
                &url,
                tone,
                &["--duration", "4"],
            )
        })
        .collect();
    for peer in &mut peers {
        let status = peer.wait_for_exit(Duration::from_secs(40));
        assert!(status.success(), "{status}: {}", peer.stderr());
    }
    for role in ["caller", "callee"] {
        let report = report(&scratch, role);
        assert_eq!(report["connected"], true, "{role}: {report}");
        assert!(
            number(&report, &["video", "frames_decoded"]) > 30.0,
            "{role}: {}",
            report["video"]
        );
        assert!(
            number(&report, &["audio", "beeps_detected"]) >= 2.0,
            "{role}: {}",
            report["audio"]
        );
    }
}
