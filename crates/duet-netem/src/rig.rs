//! The rig: two peers, each in a namespace of its own, joined by a bridge in
//! a third (the "hub", where the signaling server runs), with what each
//! peer's network does to the packets it sends.
//!
//! ```text
//!   peer A 10.99.0.2 ── eth0 ┐            ┌ eth0 ── 10.99.0.3 peer B
//!                            └─ br0 (hub) ┘
//!                               10.99.0.1: the server
//! ```
//!
//! Each direction is shaped where it leaves its peer: iptables queues every
//! packet out of `eth0` to the [`DelayLine`] (delay, jitter, loss), then
//! `tbf` caps the rate. An outage drops everything arriving at both peers,
//! on the input hook: a drop on output would make `sendto` fail, which no
//! real network does.

use std::net::Ipv4Addr;

use crate::RigError;
use crate::delay_line::{DelayLine, DelayLineCounts};
use crate::impairment::LinkProfile;
use crate::namespace::NetNamespace;

const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER_ADDRESSES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 3)];
/// Each peer namespace has its own netfilter queues, so both use the same.
const QUEUE: u16 = 0;
const OUTAGE_TABLE: &str = "duet_outage";
const CUT_TABLE: &str = "duet_cut";
const DTLS_TABLE: &str = "duet_dtls";
const CHANGE_CIPHER_TABLE: &str = "duet_change_cipher";

/// A table of its own with one filter chain on `hook` (with `policy`, say
/// `"policy drop ;"`, or nothing) holding one rule; deleting the table undoes it.
fn nft_chain(
    namespace: &NetNamespace,
    table: &str,
    hook: &str,
    policy: &str,
    rule: &[&str],
) -> Result<(), RigError> {
    namespace.run("nft", &["add", "table", "inet", table])?;
    let spec = format!("{{ type filter hook {hook} priority 0 ; {policy} }}");
    namespace.run("nft", &["add", "chain", "inet", table, hook, &spec])?;
    let mut args = vec!["add", "rule", "inet", table, hook];
    args.extend_from_slice(rule);
    namespace.run("nft", &args).map(drop)
}

/// Puts `table`'s input chain (`policy`, one `rule`) on `namespace`, or
/// takes it away.
fn input_filter(
    namespace: &NetNamespace,
    table: &str,
    policy: &str,
    rule: &[&str],
    on: bool,
) -> Result<(), RigError> {
    if on {
        nft_chain(namespace, table, "input", policy, rule)
    } else {
        namespace
            .run("nft", &["delete", "table", "inet", table])
            .map(drop)
    }
}

/// One of the rig's two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

#[derive(Debug)]
struct PeerNetwork {
    namespace: NetNamespace,
    delay_line: Option<DelayLine>,
}

/// Two peers on a bridge; everything is taken down when dropped.
#[derive(Debug)]
pub struct Rig {
    // Field order is drop order: delay lines stop before the namespaces go.
    peers: [PeerNetwork; 2],
    hub: NetNamespace,
}

impl Rig {
    /// Builds the namespaces, the bridge and the two links, all clean.
    pub fn new(label: &str) -> Result<Rig, RigError> {
        let hub = NetNamespace::new(&format!("{label}-hub"))?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["addr", "add", &format!("{HUB_ADDRESS}/24"), "dev", "br0"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        let make_peer = |side: Side| -> Result<PeerNetwork, RigError> {
            let letter = if side == Side::A { "a" } else { "b" };
            let namespace = NetNamespace::new(&format!("{label}-{letter}"))?;
            let port = format!("port-{letter}");
            hub.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace.name(),
            ])?;
            hub.ip(&["link", "set", &port, "master", "br0", "up"])?;
            let address = PEER_ADDRESSES[side.index()];
            namespace.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
            namespace.ip(&["link", "set", "eth0", "up"])?;
            Ok(PeerNetwork {
                namespace,
                delay_line: None,
            })
        };
        let peers = [make_peer(Side::A)?, make_peer(Side::B)?];
        Ok(Rig { peers, hub })
    }

    /// Where the signaling server runs.
    pub fn hub(&self) -> &NetNamespace {
        &self.hub
    }

    /// The hub's address on the bridge, which both peers reach.
    pub fn hub_address(&self) -> Ipv4Addr {
        HUB_ADDRESS
    }

    pub fn namespace(&self, side: Side) -> &NetNamespace {
        &self.peers[side.index()].namespace
    }

    pub fn address(&self, side: Side) -> Ipv4Addr {
        PEER_ADDRESSES[side.index()]
    }

    /// What the network does to what `from` sends, from now on.
    pub fn set_link(&mut self, from: Side, profile: LinkProfile) -> Result<(), RigError> {
        let peer = &mut self.peers[from.index()];
        if let Some(line) = &peer.delay_line {
            line.set_profile(profile);
            return Ok(());
        }
        // The queue is bound before any packet is sent to it.
        peer.delay_line = Some(DelayLine::start(&peer.namespace, QUEUE, profile)?);
        peer.namespace.run(
            "iptables",
            &[
                "-A",
                "OUTPUT",
                "-o",
                "eth0",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &QUEUE.to_string(),
                "--queue-bypass",
            ],
        )?;
        Ok(())
    }

    /// The same profile both ways.
    pub fn set_links(&mut self, profile: LinkProfile) -> Result<(), RigError> {
        self.set_link(Side::A, profile)?;
        self.set_link(Side::B, profile)
    }

    /// Caps what `from` can send at `kbit_per_s`, or lifts the cap (`None`).
    /// The bottleneck's queue holds 100 ms, as a home router's might.
    pub fn set_rate(&mut self, from: Side, kbit_per_s: Option<u32>) -> Result<(), RigError> {
        let namespace = self.namespace(from);
        match kbit_per_s {
            Some(rate) => namespace
                .run(
                    "tc",
                    &[
                        "qdisc",
                        "replace",
                        "dev",
                        "eth0",
                        "root",
                        "tbf",
                        "rate",
                        &format!("{rate}kbit"),
                        "burst",
                        "4kb",
                        "latency",
                        "100ms",
                    ],
                )
                .map(drop),
            None => {
                // Deleting a cap that is not there is not an error.
                let _ = namespace.run("tc", &["qdisc", "del", "dev", "eth0", "root"]);
                Ok(())
            }
        }
    }

    /// Switches the network off (everything arriving at either peer is lost)
    /// or back on.
    pub fn set_outage(&mut self, on: bool) -> Result<(), RigError> {
        self.set_input_filter(OUTAGE_TABLE, "policy drop ;", &["iif", "lo", "accept"], on)
    }

    /// Drops every DTLS record on its way into either peer, or lets them
    /// through again: ICE (STUN) and everything else still pass, so a call
    /// finds its path and then cannot finish its handshake, as when the
    /// same handshake flight is lost again and again. DTLS is told apart by
    /// its first byte, a content type of 20 to 63 (RFC 7983).
    pub fn set_dtls_blocked(&mut self, on: bool) -> Result<(), RigError> {
        let dtls = ["udp", "length", ">", "8", "@th,64,8", "20-63", "drop"];
        self.set_input_filter(DTLS_TABLE, "", &dtls, on)
    }

    /// Drops the DTLS datagrams that begin with a ChangeCipherSpec record
    /// (content type 20) on their way into `into`, or lets them through
    /// again. The DTLS server's last flight begins with one: the server is
    /// connected, while a client on `into` waits for that flight to be sent
    /// again, as when it is lost on a lossy link (the client's own
    /// ChangeCipherSpec travels behind its certificate, in a datagram that
    /// begins with a handshake record).
    pub fn set_change_cipher_blocked(&mut self, into: Side, on: bool) -> Result<(), RigError> {
        let rule = ["udp", "length", ">", "8", "@th,64,8", "20", "drop"];
        input_filter(self.namespace(into), CHANGE_CIPHER_TABLE, "", &rule, on)
    }

    /// Puts `table`'s input chain (`policy`, one `rule`) on both peers, or
    /// takes it away.
    fn set_input_filter(
        &mut self,
        table: &str,
        policy: &str,
        rule: &[&str],
        on: bool,
    ) -> Result<(), RigError> {
        for peer in &self.peers {
            input_filter(&peer.namespace, table, policy, rule, on)?;
        }
        Ok(())
    }

    /// Breaks `side`'s TCP connections to the hub's `port` without the hub
    /// hearing of it, as when a NAT forgets a connection or a laptop moves
    /// to another Wi-Fi: the peer's socket fails at once, while the server
    /// still holds its end. The peer's reset is dropped on its way out.
    pub fn cut_tcp_to_hub(&mut self, side: Side, port: u16) -> Result<(), RigError> {
        let namespace = self.namespace(side);
        let dport = port.to_string();
        nft_chain(
            namespace,
            CUT_TABLE,
            "output",
            "",
            &["tcp", "dport", &dport, "drop"],
        )?;
        let killed = namespace.run(
            "ss",
            &[
                "-K",
                "-t",
                "dst",
                &HUB_ADDRESS.to_string(),
                "dport",
                "=",
                &format!(":{port}"),
            ],
        );
        let lifted = namespace.run("nft", &["delete", "table", "inet", CUT_TABLE]);
        killed?;
        lifted.map(drop)
    }

    /// What `from`'s delay line has done so far (zero before a profile is set).
    pub fn counts(&self, from: Side) -> DelayLineCounts {
        self.peers[from.index()]
            .delay_line
            .as_ref()
            .map(DelayLine::counts)
            .unwrap_or_default()
    }
}
