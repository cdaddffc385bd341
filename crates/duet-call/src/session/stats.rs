//! The network figures of the live display and the report (round-trip
//! time, jitter, packets lost, the candidate types of the pair in use), read
//! from the peer connection's statistics.

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};

use super::Session;
use crate::report::{NetworkSummary, PathKind};

impl Session {
    /// Reads the current connection's statistics into the shared network figures.
    pub(super) async fn refresh_network(&mut self) {
        let Some(peer) = &self.peer else { return };
        if !self.negotiator.is_connected() {
            return;
        }
        let report = peer
            .built
            .connection
            .get_stats(Instant::now(), StatsSelector::None)
            .await;
        let mut network = NetworkSummary::default();
        let mut lost = 0i64;
        let mut any_inbound = false;
        let (local_type, remote_type) = selected_candidate_types(&report);
        network.local_candidate_type = local_type;
        network.remote_candidate_type = remote_type;
        if let (Some(local), Some(remote)) = (local_type, remote_type) {
            network.path = Some(PathKind::of(local, remote));
        }
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::IceCandidatePair(pair)
                    if pair.nominated && pair.current_round_trip_time > 0.0 =>
                {
                    network.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
                    if let Ok(round_trip) =
                        Duration::try_from_secs_f64(pair.current_round_trip_time)
                    {
                        self.shared.send_budget.set_round_trip(round_trip);
                    }
                }
                RTCStatsReportEntry::InboundRtp(inbound) => {
                    any_inbound = true;
                    let received = &inbound.received_rtp_stream_stats;
                    lost += received.packets_lost.max(0);
                    if received.rtp_stream_stats.kind == RtpCodecKind::Video {
                        // Jitter is kept in RTP ticks of the 90 kHz video clock.
                        network.jitter_ms = Some(received.jitter / 90.0);
                        network.retransmitted_packets_received =
                            Some(inbound.retransmitted_packets_received);
                    }
                }
                _ => {}
            }
        }
        if any_inbound {
            network.packets_lost = Some(lost);
        }
        if let Ok(mut shared) = self.shared.network.lock() {
            *shared = network;
        }
    }
}

/// The candidate types (`host`, `srflx`, `prflx`, `relay`) of the selected
/// candidate pair in a stats report (see [`candidate_types`]).
fn selected_candidate_types(
    report: &webrtc::peer_connection::RTCStatsReport,
) -> (Option<&'static str>, Option<&'static str>) {
    let mut selected = None;
    let mut pairs = Vec::new();
    let mut candidates = Vec::new();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::Transport(transport)
                if !transport.selected_candidate_pair_id.is_empty() =>
            {
                selected = Some(transport.selected_candidate_pair_id.as_str());
            }
            RTCStatsReportEntry::IceCandidatePair(pair) => pairs.push(PairIds {
                id: &pair.stats.id,
                nominated: pair.nominated,
                local: &pair.local_candidate_id,
                remote: &pair.remote_candidate_id,
            }),
            RTCStatsReportEntry::LocalCandidate(candidate) => candidates.push((
                true,
                candidate.stats.id.as_str(),
                candidate_type_name(candidate.candidate_type),
            )),
            RTCStatsReportEntry::RemoteCandidate(candidate) => candidates.push((
                false,
                candidate.stats.id.as_str(),
                candidate_type_name(candidate.candidate_type),
            )),
            _ => {}
        }
    }
    candidate_types(selected, &pairs, &candidates)
}

/// A candidate pair's ids in a stats report.
struct PairIds<'a> {
    id: &'a str,
    nominated: bool,
    local: &'a str,
    remote: &'a str,
}

/// The rule, without webrtc's types: the pair the transport names as
/// selected (else the nominated one), and the types of its two candidates,
/// given as (local?, stats id, type). webrtc lists every signalled remote
/// candidate in its stats, but not one the ICE agent learned from a
/// connectivity check: a remote candidate of the pair that is not listed is
/// therefore peer-reflexive (`prflx`).
fn candidate_types(
    selected: Option<&str>,
    pairs: &[PairIds<'_>],
    candidates: &[(bool, &str, Option<&'static str>)],
) -> (Option<&'static str>, Option<&'static str>) {
    let Some(pair) = pairs
        .iter()
        .find(|pair| selected.map_or(pair.nominated, |id| pair.id == id))
    else {
        return (None, None);
    };
    let find = |local: bool, candidate_id: &str| {
        candidates
            .iter()
            .find(|(is_local, stats_id, _)| {
                *is_local == local && candidate_stats_is(stats_id, candidate_id)
            })
            .map(|(_, _, kind)| *kind)
    };
    let local = find(true, pair.local).flatten();
    let remote = match find(false, pair.remote) {
        Some(kind) => kind,
        None if !pair.remote.is_empty() => Some("prflx"),
        None => None,
    };
    (local, remote)
}

/// Whether the candidate stats with id `stats_id` describe the candidate
/// `candidate_id` (webrtc prefixes the candidate's id in its stats id).
fn candidate_stats_is(stats_id: &str, candidate_id: &str) -> bool {
    !candidate_id.is_empty()
        && (stats_id == candidate_id
            || stats_id
                .strip_suffix(candidate_id)
                .is_some_and(|prefix| prefix.ends_with('_')))
}

fn candidate_type_name(
    candidate_type: webrtc::peer_connection::RTCIceCandidateType,
) -> Option<&'static str> {
    use webrtc::peer_connection::RTCIceCandidateType as T;
    match candidate_type {
        T::Host => Some("host"),
        T::Srflx => Some("srflx"),
        T::Prflx => Some("prflx"),
        T::Relay => Some("relay"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANDIDATES: &[(bool, &str, Option<&str>)] = &[
        (true, "RTCLocalIceCandidate_a", Some("host")),
        (true, "RTCLocalIceCandidate_b", Some("srflx")),
        (false, "RTCRemoteIceCandidate_x", Some("relay")),
    ];

    fn pair<'a>(id: &'a str, nominated: bool, local: &'a str, remote: &'a str) -> PairIds<'a> {
        PairIds {
            id,
            nominated,
            local,
            remote,
        }
    }

    #[test]
    fn the_selected_pair_names_the_candidate_types() {
        let pairs = [pair("p1", false, "a", "x"), pair("p2", true, "b", "x")];
        assert_eq!(
            candidate_types(Some("p1"), &pairs, CANDIDATES),
            (Some("host"), Some("relay"))
        );
        // Without a selected id, the nominated pair.
        assert_eq!(
            candidate_types(None, &pairs, CANDIDATES),
            (Some("srflx"), Some("relay"))
        );
    }

    #[test]
    fn a_remote_candidate_learned_from_a_check_is_peer_reflexive() {
        let pairs = [pair("p1", true, "a", "learned")];
        assert_eq!(
            candidate_types(None, &pairs, CANDIDATES),
            (Some("host"), Some("prflx"))
        );
    }

    #[test]
    fn no_pair_in_use_gives_no_types() {
        let pairs = [pair("p1", false, "a", "x")];
        assert_eq!(candidate_types(None, &pairs, CANDIDATES), (None, None));
        assert_eq!(
            candidate_types(Some("gone"), &pairs, CANDIDATES),
            (None, None)
        );
    }

    #[test]
    fn candidate_ids_match_whole_suffixes_only() {
        assert!(candidate_stats_is("RTCLocalIceCandidate_abc", "abc"));
        assert!(candidate_stats_is("abc", "abc"));
        assert!(!candidate_stats_is("RTCLocalIceCandidate_xabc", "abc"));
        assert!(!candidate_stats_is("RTCLocalIceCandidate_", ""));
    }
}
