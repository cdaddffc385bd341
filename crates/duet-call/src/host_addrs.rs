//! Which local addresses a call gathers its host candidates on.
//!
//! Duet asks for every interface and for loopback: a call between two apps
//! on a machine with no network up (offline, or a namespace with only `lo`)
//! can only use loopback. But a loopback candidate reaches loopback only;
//! webrtc-rs pairs it with every remote candidate all the same, and each
//! check from 127.0.0.1 to another machine's address fails in the kernel
//! (`EINVAL`), logged by webrtc-rs as an error, dozens a call. Where another
//! interface is up, two apps on the machine reach each other through its
//! address anyway, so loopback is left out.

use std::net::SocketAddr;

/// `configured` bind addresses (`IP:port`), without the loopback ones when
/// another interface is up and `configured` also asks for a non-loopback
/// address (a wildcard, say); as configured otherwise.
pub(crate) fn host_candidate_addrs(configured: &[String], other_interface_up: bool) -> Vec<String> {
    let loopback = |addr: &String| {
        addr.parse::<SocketAddr>()
            .is_ok_and(|addr| addr.ip().is_loopback())
    };
    let asks_for_more = configured.iter().any(|addr| !loopback(addr));
    if other_interface_up && asks_for_more {
        configured
            .iter()
            .filter(|addr| !loopback(addr))
            .cloned()
            .collect()
    } else {
        configured.to_vec()
    }
}

/// Whether an interface other than loopback has an IPv4 address usable for
/// host candidates (not link-local), as webrtc-rs counts them when it
/// expands a wildcard. Unknown counts as no.
pub(crate) fn other_interface_up() -> bool {
    match rtc::shared::ifaces::ifaces() {
        Ok(interfaces) => interfaces
            .iter()
            .filter_map(|i| i.addr)
            .any(|addr| match addr {
                SocketAddr::V4(v4) => {
                    let ip = v4.ip();
                    !ip.is_loopback() && !ip.is_unspecified() && !ip.is_link_local()
                }
                SocketAddr::V6(_) => false,
            }),
        Err(err) => {
            tracing::debug!(%err, "cannot list the network interfaces");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn loopback_is_left_out_only_where_another_interface_carries_the_call() {
        let default = addrs(&["0.0.0.0:0", "127.0.0.1:0"]);
        assert_eq!(host_candidate_addrs(&default, true), addrs(&["0.0.0.0:0"]));
        assert_eq!(host_candidate_addrs(&default, false), default);
        // Loopback alone was asked for: kept, whatever is up.
        let only = addrs(&["127.0.0.1:0"]);
        assert_eq!(host_candidate_addrs(&only, true), only);
    }
}
