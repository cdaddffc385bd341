//! Impaired networks on one machine, for Duet's tests and benchmarks.
//!
//! Real calls cross Wi-Fi, mobile links and home routers; this crate makes
//! such networks here, without netem (these kernels have none): two peers in
//! network namespaces on a bridge ([`Rig`]), per direction a delay line
//! ([`DelayLine`], NFQUEUE: delay, jitter with reordering, loss), a rate cap
//! (`tbf`) and an outage (nftables). Needs root, iproute2, iptables and
//! nftables. [`NatRig`] puts two peers behind two routers that translate
//! addresses (NAT), as two people at home are, for calls through STUN and TURN.
//!
//! What a link does to a packet is decided in [`LinkProfile`] and
//! [`ReleaseQueue`], without sockets; the delay line is the thin loop that
//! feeds them the kernel's packets.

mod delay_line;
mod impairment;
mod namespace;
mod nat;
mod rig;

pub use delay_line::{DelayLine, DelayLineCounts};
pub use impairment::{LinkProfile, ReleaseQueue};
pub use namespace::{NamespaceHandle, NetNamespace, enter};
pub use nat::{NatKind, NatRig, PUBLIC_ADDRESS};
pub use rig::{Rig, Side};

/// Why a part of the rig could not be built or changed.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    #[error("{command} failed (network namespaces need root): {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
