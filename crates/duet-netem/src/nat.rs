//! Two people at home: each peer behind a router of its own that translates
//! its private addresses (NAT), the two routers on a public network where the
//! signaling server and the TURN server run.
//!
//! ```text
//!  peer A 192.168.1.2 ── router A 192.168.1.1 | 10.98.0.2 ┐
//!                                                         ├─ br0 (public) 10.98.0.1: servers
//!  peer B 192.168.2.2 ── router B 192.168.2.1 | 10.98.0.3 ┘
//! ```
//!
//! The private networks are not routed to each other, so the peers' own
//! addresses never reach the other side. How each router maps a private
//! address and port to a public one is the [`NatKind`]: kept per source
//! (what STUN-learned addresses need), or a new port per destination, which
//! leaves a relay as the only way through. The public network routes
//! nowhere: its default route leads into a namespace that drops everything
//! (coturn relays only with some default route).

use std::net::Ipv4Addr;

use crate::RigError;
use crate::namespace::NetNamespace;
use crate::rig::Side;

/// The public network's own address: servers listen here.
pub const PUBLIC_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const ROUTER_PUBLIC: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 98, 0, 2), Ipv4Addr::new(10, 98, 0, 3)];
const ROUTER_PRIVATE: [Ipv4Addr; 2] =
    [Ipv4Addr::new(192, 168, 1, 1), Ipv4Addr::new(192, 168, 2, 1)];
const PEER_PRIVATE: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(192, 168, 2, 2)];

/// How a router picks the public port of a private address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// The same public port whatever the destination (Linux's masquerade
    /// keeps the source port): an address learned through STUN works for
    /// the other peer too.
    EndpointIndependent,
    /// A random public port per destination (`masquerade random`): what
    /// STUN saw is not what the other peer would reach, so only a relay
    /// connects the two.
    Symmetric,
}

#[derive(Debug)]
struct Home {
    // Field order is drop order: the peer before its router.
    peer: NetNamespace,
    router: NetNamespace,
}

/// Two homes behind routers on one public network; everything is taken down
/// when dropped.
#[derive(Debug)]
pub struct NatRig {
    homes: [Home; 2],
    public: NetNamespace,
    /// Held for its lifetime: the public network's default route leads here.
    _void: NetNamespace,
}

impl NatRig {
    /// Builds the public network, the void behind it, and the two homes.
    pub fn new(label: &str, kind: NatKind) -> Result<NatRig, RigError> {
        let public = NetNamespace::new(&format!("{label}-pub"))?;
        public.ip(&["link", "add", "br0", "type", "bridge"])?;
        public.ip(&["addr", "add", &format!("{PUBLIC_ADDRESS}/24"), "dev", "br0"])?;
        public.ip(&["link", "set", "br0", "up"])?;
        let void = NetNamespace::new(&format!("{label}-void"))?;
        veth(&public, "to-void", &void, "eth0")?;
        public.ip(&["addr", "add", "10.97.0.1/30", "dev", "to-void"])?;
        public.ip(&["link", "set", "to-void", "up"])?;
        void.ip(&["addr", "add", "10.97.0.2/30", "dev", "eth0"])?;
        void.ip(&["link", "set", "eth0", "up"])?;
        void.run("nft", &["add", "table", "inet", "void"])?;
        for hook in ["input", "forward"] {
            let spec = format!("{{ type filter hook {hook} priority 0 ; policy drop ; }}");
            void.run("nft", &["add", "chain", "inet", "void", hook, &spec])?;
        }
        public.ip(&["route", "add", "default", "via", "10.97.0.2"])?;

        let make_home = |side: Side| -> Result<Home, RigError> {
            let (letter, index) = match side {
                Side::A => ("a", 0),
                Side::B => ("b", 1),
            };
            let router = NetNamespace::new(&format!("{label}-r{letter}"))?;
            let peer = NetNamespace::new(&format!("{label}-{letter}"))?;
            let port = format!("port-{letter}");
            veth(&public, &port, &router, "wan")?;
            public.ip(&["link", "set", &port, "master", "br0", "up"])?;
            router.ip(&[
                "addr",
                "add",
                &format!("{}/24", ROUTER_PUBLIC[index]),
                "dev",
                "wan",
            ])?;
            router.ip(&["link", "set", "wan", "up"])?;
            veth(&router, "lan", &peer, "eth0")?;
            router.ip(&[
                "addr",
                "add",
                &format!("{}/24", ROUTER_PRIVATE[index]),
                "dev",
                "lan",
            ])?;
            router.ip(&["link", "set", "lan", "up"])?;
            peer.ip(&[
                "addr",
                "add",
                &format!("{}/24", PEER_PRIVATE[index]),
                "dev",
                "eth0",
            ])?;
            peer.ip(&["link", "set", "eth0", "up"])?;
            peer.ip(&[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_PRIVATE[index].to_string(),
            ])?;
            router.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
            router.run("nft", &["add", "table", "ip", "nat"])?;
            let spec = "{ type nat hook postrouting priority 100 ; }";
            router.run("nft", &["add", "chain", "ip", "nat", "postrouting", spec])?;
            let mut rule = vec![
                "add",
                "rule",
                "ip",
                "nat",
                "postrouting",
                "oifname",
                "wan",
                "masquerade",
            ];
            if kind == NatKind::Symmetric {
                rule.push("random");
            }
            router.run("nft", &rule)?;
            // Nothing unasked for comes in, as at any home router. Dropped
            // before conntrack confirms it, such a packet leaves no entry
            // behind; one that got through would hold the public port the
            // peer's next packet out needs, and the router would pick
            // another: a new mapping per destination after all.
            router.run("nft", &["add", "table", "inet", "guard"])?;
            let spec = "{ type filter hook prerouting priority -150 ; }";
            router.run(
                "nft",
                &["add", "chain", "inet", "guard", "prerouting", spec],
            )?;
            router.run(
                "nft",
                &[
                    "add",
                    "rule",
                    "inet",
                    "guard",
                    "prerouting",
                    "iifname",
                    "wan",
                    "ct",
                    "state",
                    "new",
                    "drop",
                ],
            )?;
            Ok(Home { peer, router })
        };
        let homes = [make_home(Side::A)?, make_home(Side::B)?];
        Ok(NatRig {
            homes,
            public,
            _void: void,
        })
    }

    /// The public network, where the servers run.
    pub fn public(&self) -> &NetNamespace {
        &self.public
    }

    /// A peer's home network.
    pub fn peer(&self, side: Side) -> &NetNamespace {
        &self.homes[side_index(side)].peer
    }

    /// A peer's router (its NAT).
    pub fn router(&self, side: Side) -> &NetNamespace {
        &self.homes[side_index(side)].router
    }

    /// A peer's own (private) address.
    pub fn peer_address(&self, side: Side) -> Ipv4Addr {
        PEER_PRIVATE[side_index(side)]
    }

    /// The public address a peer's router shows the world.
    pub fn public_address(&self, side: Side) -> Ipv4Addr {
        ROUTER_PUBLIC[side_index(side)]
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// A veth pair: `name` in `from`, `peer_name` in `to`.
fn veth(
    from: &NetNamespace,
    name: &str,
    to: &NetNamespace,
    peer_name: &str,
) -> Result<(), RigError> {
    from.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        peer_name,
        "netns",
        to.name(),
    ])
    .map(drop)
}
