//! The network figures of the live display and the report (round-trip
//! time, jitter, packets lost), read from the peer connection's statistics.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use webrtc::peer_connection::{RTCStatsReportEntry, StatsSelector};

use super::Session;
use crate::report::NetworkSummary;

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
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::IceCandidatePair(pair)
                    if pair.nominated && pair.current_round_trip_time > 0.0 =>
                {
                    network.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
                    self.shared.rtt_us.store(
                        (pair.current_round_trip_time * 1e6) as u64,
                        Ordering::Relaxed,
                    );
                }
                RTCStatsReportEntry::InboundRtp(inbound) => {
                    any_inbound = true;
                    let received = &inbound.received_rtp_stream_stats;
                    lost += received.packets_lost.max(0);
                    if received.rtp_stream_stats.kind == RtpCodecKind::Video {
                        // Jitter is kept in RTP ticks of the 90 kHz video clock.
                        network.jitter_ms = Some(received.jitter / 90.0);
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
