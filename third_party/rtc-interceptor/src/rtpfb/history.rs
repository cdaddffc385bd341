//! What was sent, joined with what the receiver said about it.

use super::acknowledgement::{Acknowledgement, PacketReport};
use rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long after a later packet left a missing one may still arrive before it is reported lost
/// (Duet patch).
pub const REORDER_WINDOW: Duration = Duration::from_millis(100);

/// Records outgoing packets and matches incoming feedback against them.
///
/// The two feedback formats identify a packet differently — TWCC by its own transport-wide
/// sequence number, RFC 8888 by the stream's SSRC and RTP sequence number — so both indexes are
/// kept, pointing at one record.
#[derive(Debug, Default)]
pub struct History {
    /// Monotonic id, so reports come out in send order however sequence numbers wrap.
    next_id: u64,
    packets: HashMap<u64, PacketReport>,
    twcc_index: HashMap<u16, u64>,
    ssrc_sequence_index: HashMap<(u32, u16), u64>,
    /// Ids some feedback said something about, arrived or not (Duet patch): a packet no
    /// feedback named is unknown, not lost — the feedback about it was itself lost.
    acknowledged: HashSet<u64>,
    /// Highest id acknowledged so far.
    highest_acknowledged: Option<u64>,
    /// Lowest id not yet reported to the consumer.
    next_to_report: u64,
    /// TWCC feedback packets received so far, counting those the sender numbered but this end
    /// never got (Duet patch): the place in the feedback stream each missing report was made at.
    feedback_serial: u64,
    /// The feedback packet count of the newest TWCC feedback (Duet patch).
    last_feedback_count: Option<u8>,
    /// The serial of the newest feedback that came after one or more lost ones (Duet patch).
    feedback_lost_before: Option<u64>,
    /// For each packet the feedback named missing, the serial of the feedback that last did
    /// (Duet patch).
    named_missing_at: HashMap<u64, u64>,
    /// The latest arrival reported so far, and when a packet last arrived before it though sent
    /// after it (Duet patch): only a path that reorders names a packet still on its way missing.
    latest_arrival: Option<Duration>,
    reordered_at: Option<Instant>,
}

/// A path that reordered packets sent within this long of one is taken to still reorder (Duet
/// patch).
const REORDERING_MEMORY: Duration = Duration::from_secs(10);

/// An arrival this much before the latest one reported is a reordering, not the feedback's
/// rounding of arrival times to 250 µs (Duet patch).
const REORDERED_BY: Duration = Duration::from_millis(1);

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many packets are being tracked.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether nothing is being tracked.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Record a packet as it leaves.
    ///
    /// `departure` must be the instant the packet was **released** to the network, not the
    /// instant the application handed it over. A pacer can hold a packet for tens of
    /// milliseconds, and counting that as network delay is exactly the error that makes a
    /// bandwidth estimate collapse (chain contract rule 3).
    #[allow(clippy::too_many_arguments)]
    pub fn add_outgoing(
        &mut self,
        ssrc: u32,
        rtp_sequence_number: u16,
        is_twcc: bool,
        twcc_sequence_number: u16,
        size: usize,
        departure: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;

        if is_twcc {
            self.twcc_index.insert(twcc_sequence_number, id);
        }
        self.ssrc_sequence_index
            .insert((ssrc, rtp_sequence_number), id);

        self.packets.insert(
            id,
            PacketReport {
                ssrc,
                id,
                rtp_sequence_number,
                is_twcc,
                twcc_sequence_number,
                size,
                arrived: false,
                departure,
                arrival: None,
                ecn: Ecn::NotEct,
            },
        );

        id
    }

    /// Note the feedback packet count of a TWCC feedback, before its acknowledgements (Duet
    /// patch).
    ///
    /// A receiver names a packet missing while it is still on its way (a later one overtook it),
    /// and names it arrived in its next feedback only: if that feedback is lost, the packet reads
    /// as lost though it arrived. On a path with 60 ± 30 ms of jitter each feedback names several
    /// such packets, so one lost feedback (5 % of them on a 5 % loss path) read as a burst: 7 of
    /// 11 packets lost in 80 ms, 22 % of a call's first second, and the sender backed off from
    /// a link that lost 5 %. A gap in the counts says a feedback was lost; what the feedback
    /// before it named missing is then of unknown fate, like a packet no feedback named.
    pub fn on_twcc_feedback_count(&mut self, count: u8) {
        let Some(last) = self.last_feedback_count else {
            self.feedback_serial += 1;
            self.last_feedback_count = Some(count);
            return;
        };
        // Ahead by up to half the count's range: new, after `ahead - 1` lost ones. Behind: an
        // older feedback the network reordered, whose place was already counted as lost.
        let ahead = count.wrapping_sub(last);
        if ahead == 0 || ahead > 128 {
            return;
        }
        self.feedback_serial += u64::from(ahead);
        self.last_feedback_count = Some(count);
        if ahead > 1 {
            self.feedback_lost_before = Some(self.feedback_serial);
        }
    }

    /// Apply TWCC feedback, returning the round trip time it implies.
    ///
    /// `None` when the feedback names a packet this endpoint has no record of — which happens
    /// routinely at startup and after the history has been pruned, and is not an error.
    pub fn on_twcc_feedback(
        &mut self,
        received_at: Instant,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let id = *self.twcc_index.get(&acknowledgement.sequence_number)?;
        self.apply(received_at, id, acknowledgement)
    }

    /// Apply RFC 8888 feedback for one stream, returning the round trip time it implies.
    pub fn on_ccfb_feedback(
        &mut self,
        received_at: Instant,
        ssrc: u32,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let id = *self
            .ssrc_sequence_index
            .get(&(ssrc, acknowledgement.sequence_number))?;
        self.apply(received_at, id, acknowledgement)
    }

    fn apply(
        &mut self,
        received_at: Instant,
        id: u64,
        acknowledgement: Acknowledgement,
    ) -> Option<Duration> {
        let packet = self.packets.get_mut(&id)?;
        self.acknowledged.insert(id);

        packet.arrived = acknowledgement.arrived;
        packet.arrival = acknowledgement.arrival;
        packet.ecn = acknowledgement.ecn;

        if packet.arrived {
            self.named_missing_at.remove(&id);
        } else {
            self.named_missing_at.insert(id, self.feedback_serial);
        }

        if packet.arrived {
            self.highest_acknowledged = Some(match self.highest_acknowledged {
                Some(highest) => highest.max(id),
                None => id,
            });
        }

        // Round trip: this feedback arrived now, and the packet left then. Both instants are on
        // this endpoint's clock, so unlike the arrival times this is a real duration.
        Some(received_at.saturating_duration_since(packet.departure))
    }

    /// Take everything up to the highest *arrived* packet since the last call, in send order.
    ///
    /// Packets older than that which are still unreported are treated as lost and then dropped,
    /// once they left more than [`REORDER_WINDOW`] before that packet: until then a packet the
    /// network merely reordered may still arrive (the receiver reports it in its next feedback),
    /// and reporting stops at it. Loss feedback alone does not advance the reporting window;
    /// losses are emitted when a later packet is reported as arrived.
    ///
    /// A packet no feedback named (the feedback that would have was lost) is dropped without a
    /// report: its fate is unknown. So is one a feedback named missing, when a feedback after
    /// that one was lost ([`History::on_twcc_feedback_count`]).
    ///
    /// Duet patch: the published crate declared every such packet lost at once, so on a path
    /// that reorders a packet NACKed before it came read as lost, and on a path that loses 5 %
    /// of its packets one lost feedback made 100 ms of packets read as lost: together 15 to 30 %
    /// of the packets, where 5 % were lost.
    pub fn take_reports(&mut self) -> Vec<PacketReport> {
        let Some(highest) = self.highest_acknowledged else {
            return Vec::new();
        };
        if self.next_to_report > highest {
            return Vec::new();
        }
        let newest_departure = self.packets.get(&highest).map(|packet| packet.departure);

        let mut reports = Vec::new();
        let mut id = self.next_to_report;
        while id <= highest {
            if let Some(packet) = self.packets.get(&id) {
                let may_still_arrive = !packet.arrived
                    && newest_departure.is_some_and(|newest| {
                        newest.saturating_duration_since(packet.departure) < REORDER_WINDOW
                    });
                if may_still_arrive {
                    break;
                }
            }
            if let Some(packet) = self.packets.remove(&id) {
                if packet.is_twcc {
                    self.twcc_index.remove(&packet.twcc_sequence_number);
                }
                self.ssrc_sequence_index
                    .remove(&(packet.ssrc, packet.rtp_sequence_number));
                if let Some(arrival) = packet.arrival.filter(|_| packet.arrived) {
                    if self
                        .latest_arrival
                        .is_some_and(|latest| arrival + REORDERED_BY < latest)
                    {
                        self.reordered_at = Some(packet.departure);
                    }
                    self.latest_arrival = self.latest_arrival.max(Some(arrival));
                }
                let reorders = self.reordered_at.is_some_and(|at| {
                    packet.departure.saturating_duration_since(at) < REORDERING_MEMORY
                });
                let named_missing_at = self.named_missing_at.remove(&id);
                // Named missing on a path that reorders, and a feedback that may have named it
                // arrived was lost. (A path that keeps packets in order names missing only
                // what it lost: a queue that overflowed, whose feedback is lost too.)
                let fate_unknown = reorders
                    && named_missing_at.is_some_and(|named_at| {
                        self.feedback_lost_before
                            .is_some_and(|lost_before| lost_before > named_at)
                    });
                if self.acknowledged.remove(&id) && !fate_unknown {
                    reports.push(packet);
                }
            }
            id += 1;
        }
        self.next_to_report = id;

        reports
    }

    /// Drop records of packets sent before `cutoff` that were never acknowledged.
    ///
    /// Without this the history grows without bound on a lossy path: an unacknowledged packet is
    /// never reported and never removed, so nothing else would ever release it.
    pub fn prune_before(&mut self, cutoff: Instant) {
        let stale: Vec<u64> = self
            .packets
            .iter()
            .filter(|(_, packet)| packet.departure < cutoff && !packet.arrived)
            .map(|(&id, _)| id)
            .collect();

        for id in stale {
            self.acknowledged.remove(&id);
            self.named_missing_at.remove(&id);
            if let Some(packet) = self.packets.remove(&id) {
                // Only a TWCC packet has an entry under its transport-wide sequence number. A
                // non-TWCC packet carries whatever the caller passed — typically 0 — and removing
                // that key would evict whichever real TWCC packet holds it.
                if packet.is_twcc {
                    self.twcc_index.remove(&packet.twcc_sequence_number);
                }
                self.ssrc_sequence_index
                    .remove(&(packet.ssrc, packet.rtp_sequence_number));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history_with_three_packets(now: Instant) -> History {
        let mut history = History::new();
        for sequence_number in 0..3u16 {
            history.add_outgoing(1, 100 + sequence_number, true, sequence_number, 1200, now);
        }
        history
    }

    #[test]
    fn feedback_for_an_unknown_packet_is_ignored() {
        let now = Instant::now();
        let mut history = History::new();

        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(5, None, Ecn::NotEct)),
            "nothing was sent with that sequence number"
        );
        assert!(history.take_reports().is_empty());
    }

    #[test]
    fn twcc_feedback_matches_by_transport_wide_sequence_number() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        let rtt = history.on_twcc_feedback(
            now + Duration::from_millis(80),
            Acknowledgement::received(1, Some(Duration::from_millis(5)), Ecn::NotEct),
        );
        assert_eq!(Some(Duration::from_millis(80)), rtt);

        // Duet patch: packet 0, sent with 1 and not named yet, may still arrive...
        assert!(history.take_reports().is_empty(), "held for packet 0");
        // ...until a packet sent a reorder window later has.
        history.on_twcc_feedback(now, Acknowledgement::lost(0));
        let later = now + REORDER_WINDOW;
        history.add_outgoing(1, 103, true, 3, 1200, later);
        history.on_twcc_feedback(later, Acknowledgement::received(3, None, Ecn::NotEct));

        let reports = history.take_reports();
        assert_eq!(3, reports.len(), "2, never named, is not reported");
        assert!(!reports[0].arrived, "0 named lost");
        assert_eq!(101, reports[1].rtp_sequence_number);
        assert!(reports[1].arrived);
    }

    /// RFC 8888 names packets by the stream's own sequence number, so two streams can use the
    /// same one and must not be confused.
    #[test]
    fn ccfb_feedback_matches_by_ssrc_and_sequence_number() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);
        history.add_outgoing(2, 500, false, 0, 1000, now);

        history.on_ccfb_feedback(
            now + Duration::from_millis(50),
            2,
            Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::Ce),
        );

        // Duet patch: stream 1's packet, not named yet, may still arrive.
        assert!(history.take_reports().is_empty());
        history.on_ccfb_feedback(now, 1, Acknowledgement::lost(500));
        let later = now + REORDER_WINDOW;
        history.add_outgoing(2, 501, false, 0, 1000, later);
        history.on_ccfb_feedback(later, 2, Acknowledgement::received(501, None, Ecn::NotEct));

        let reports = history.take_reports();
        assert_eq!(3, reports.len());
        assert!(!reports[0].arrived, "stream 1's packet was named lost");
        assert!(reports[1].arrived, "stream 2's arrived");
        assert_eq!(Ecn::Ce, reports[1].ecn);
    }

    /// Feedback naming a stream that never sent that sequence number must not match another
    /// stream that did. RFC 8888 numbers packets per stream, so the same sequence number is in
    /// use on every stream at once — matching on it alone would attribute one stream's arrival to
    /// another and corrupt both their delay estimates.
    ///
    /// Deterministic by construction: only stream 1 ever sent 500, so a lookup that ignores the
    /// SSRC can only match stream 1's packet, and a correct one can only fail.
    #[test]
    fn ccfb_feedback_for_a_sequence_number_another_stream_sent_does_not_match() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 500, false, 0, 1000, now);

        assert_eq!(
            None,
            history.on_ccfb_feedback(
                now + Duration::from_millis(50),
                2,
                Acknowledgement::received(500, Some(Duration::from_millis(1)), Ecn::NotEct),
            ),
            "stream 2 never sent sequence 500"
        );
        assert!(
            history.take_reports().is_empty(),
            "and nothing was acknowledged, so stream 1's packet is still outstanding"
        );
    }

    #[test]
    fn nothing_is_reported_until_something_is_acknowledged() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        assert!(
            history.take_reports().is_empty(),
            "sent but not yet acknowledged"
        );
        assert_eq!(3, history.len(), "and still tracked");
    }

    /// A packet reported once must not be reported again: congestion control would count it
    /// twice, and a loss re-reported later looks like a reordered arrival.
    #[test]
    fn packets_are_reported_once() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        for sequence_number in 0..3 {
            history.on_twcc_feedback(
                now,
                Acknowledgement::received(sequence_number, None, Ecn::NotEct),
            );
        }
        assert_eq!(3, history.take_reports().len());
        assert!(history.take_reports().is_empty());
        assert!(history.is_empty(), "and released");
    }

    #[test]
    fn later_feedback_reports_only_what_follows() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now);

        history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct));
        assert_eq!(1, history.take_reports().len());

        history.on_twcc_feedback(now, Acknowledgement::received(1, None, Ecn::NotEct));
        let reports = history.take_reports();
        assert_eq!(1, reports.len());
        assert_eq!(101, reports[0].rtp_sequence_number);
    }

    /// A packet reported as lost does not advance the reporting window on its own — otherwise a
    /// long run of losses would flush packets that have not been heard about yet.
    #[test]
    fn a_loss_alone_does_not_advance_the_window() {
        let now = Instant::now();
        let mut history = history_with_three_packets(now);

        history.on_twcc_feedback(now, Acknowledgement::lost(1));
        assert!(
            history.take_reports().is_empty(),
            "nothing has been acknowledged as arrived"
        );
        assert_eq!(3, history.len());
    }

    /// The round trip is measured between two instants on *this* endpoint's clock, unlike the
    /// arrival times, which are on the receiver's.
    #[test]
    fn the_round_trip_is_measured_locally() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        assert_eq!(
            Some(Duration::from_millis(120)),
            history.on_twcc_feedback(
                now + Duration::from_millis(120),
                Acknowledgement::received(0, Some(Duration::from_secs(9999)), Ecn::NotEct),
            ),
            "the receiver's arrival clock does not affect it"
        );
    }

    /// Without pruning, an unacknowledged packet is never reported and never removed, so a lossy
    /// path grows the history without bound.
    /// A non-TWCC packet carries a meaningless `twcc_sequence_number` (whatever the caller
    /// passed, typically 0) and was never entered into the TWCC index. Removing that key when it
    /// is released evicts whichever *real* TWCC packet happens to hold it, and that packet's
    /// feedback can then never match.
    #[test]
    fn releasing_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // The non-TWCC packet is sent *first*, so reporting it does not sweep up the TWCC one:
        // the reporting window runs to the highest arrived id, and anything below it is dropped
        // as a loss regardless. Ordering this way isolates the index eviction from that.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // A real TWCC packet holding transport-wide sequence 0, sent after.
        history.add_outgoing(1, 100, true, 0, 1200, now);

        // Release the non-TWCC packet by reporting it.
        history.on_ccfb_feedback(now, 2, Acknowledgement::received(200, None, Ecn::NotEct));
        history.take_reports();

        assert!(
            history
                .on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct))
                .is_some(),
            "the TWCC packet is still matchable by its transport-wide sequence number"
        );
    }

    /// The same hazard on the pruning path.
    #[test]
    fn pruning_a_non_twcc_packet_does_not_evict_a_twcc_packets_index_entry() {
        let now = Instant::now();
        let mut history = History::new();

        // Old, non-TWCC, carrying the default 0 it never registered.
        history.add_outgoing(2, 200, false, 0, 1200, now);
        // Recent, a real TWCC packet holding transport-wide sequence 0.
        history.add_outgoing(1, 100, true, 0, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert!(
            history
                .on_twcc_feedback(
                    now + Duration::from_secs(5),
                    Acknowledgement::received(0, None, Ecn::NotEct)
                )
                .is_some(),
            "pruning the unrelated packet must not take the TWCC index entry with it"
        );
    }

    /// An acknowledged packet that has not been reported yet must survive pruning, or the arrival
    /// is lost and congestion control never hears about it.
    #[test]
    fn an_acknowledged_packet_is_not_pruned_before_it_is_reported() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);

        history.on_twcc_feedback(
            now + Duration::from_millis(50),
            Acknowledgement::received(0, None, Ecn::NotEct),
        );

        // Well past the cutoff, but it has been acknowledged and not yet collected.
        history.prune_before(now + Duration::from_secs(30));

        let reports = history.take_reports();
        assert_eq!(1, reports.len(), "the arrival survived to be reported");
        assert!(reports[0].arrived);
    }

    /// Ten packets 20 ms apart; feedback 0 names 0–5 arrived but 3 (still on its way: 4 overtook
    /// it, as 2 overtook 1), and the next feedback, which would name 3 arrived, is `lost` or not.
    /// Then 6–9 arrive.
    fn reordered_packet_whose_correction_is(lost: bool) -> Vec<PacketReport> {
        let start = Instant::now();
        let mut history = History::new();
        for n in 0..10u16 {
            let at = start + Duration::from_millis(u64::from(n) * 20);
            history.add_outgoing(1, 100 + n, true, n, 1200, at);
        }
        // Arrivals 60 ms after sending, but packet 1's 90 ms: 2 arrived first.
        let received = |n: u16| {
            let delay = if n == 1 { 90 } else { 60 };
            let arrival = Duration::from_millis(u64::from(n) * 20 + delay);
            Acknowledgement::received(n, Some(arrival), Ecn::NotEct)
        };
        let now = start + Duration::from_millis(300);
        history.on_twcc_feedback_count(0);
        for n in 0..6 {
            let ack = if n == 3 {
                Acknowledgement::lost(n)
            } else {
                received(n)
            };
            history.on_twcc_feedback(now, ack);
        }
        let mut reports = history.take_reports();
        if !lost {
            history.on_twcc_feedback_count(1);
            history.on_twcc_feedback(now, received(3));
        }
        history.on_twcc_feedback_count(2);
        for n in 6..10 {
            history.on_twcc_feedback(now, received(n));
        }
        reports.extend(history.take_reports());
        reports
    }

    #[test]
    fn a_packet_named_missing_and_then_arrived_is_not_lost() {
        let reports = reordered_packet_whose_correction_is(false);
        assert_eq!(10, reports.len());
        assert!(reports.iter().all(|report| report.arrived));
    }

    #[test]
    fn a_packet_named_missing_before_a_lost_feedback_is_of_unknown_fate() {
        let reports = reordered_packet_whose_correction_is(true);
        let ids: Vec<u16> = reports
            .iter()
            .map(|r| r.rtp_sequence_number - 100)
            .collect();
        assert_eq!(
            vec![0, 1, 2, 4, 5, 6, 7, 8, 9],
            ids,
            "3 is left out, not lost"
        );
        assert!(reports.iter().all(|report| report.arrived));
    }

    #[test]
    fn on_a_path_that_keeps_packets_in_order_a_packet_named_missing_is_lost() {
        let start = Instant::now();
        let mut history = History::new();
        for n in 0..10u16 {
            let at = start + Duration::from_millis(u64::from(n) * 20);
            history.add_outgoing(1, 100 + n, true, n, 1200, at);
        }
        let received = |n: u16| {
            let arrival = Duration::from_millis(u64::from(n) * 20 + 60);
            Acknowledgement::received(n, Some(arrival), Ecn::NotEct)
        };
        let now = start + Duration::from_millis(300);
        history.on_twcc_feedback_count(0);
        for n in 0..6 {
            let ack = if n == 3 {
                Acknowledgement::lost(n)
            } else {
                received(n)
            };
            history.on_twcc_feedback(now, ack);
        }
        let mut reports = history.take_reports();
        // The next feedback is lost: 3 was lost all the same (a queue overflowed).
        history.on_twcc_feedback_count(2);
        for n in 6..10 {
            history.on_twcc_feedback(now, received(n));
        }
        reports.extend(history.take_reports());
        assert_eq!(10, reports.len());
        assert!(!reports[3].arrived);
    }

    #[test]
    fn a_packet_named_missing_with_no_feedback_lost_is_lost() {
        let start = Instant::now();
        let mut history = history_with_three_packets(start);
        history.on_twcc_feedback_count(7);
        history.on_twcc_feedback(start, Acknowledgement::lost(0));
        history.on_twcc_feedback_count(8);
        // A feedback the network delayed behind the next one is no gap either.
        history.on_twcc_feedback_count(6);
        let later = start + REORDER_WINDOW;
        history.add_outgoing(1, 103, true, 3, 1200, later);
        history.on_twcc_feedback(later, Acknowledgement::received(3, None, Ecn::NotEct));
        let reports = history.take_reports();
        assert_eq!(
            1 + 1,
            reports.len(),
            "0 lost and 3 arrived; 1 and 2 never named"
        );
        assert!(!reports[0].arrived);
    }

    #[test]
    fn old_unacknowledged_packets_are_pruned() {
        let now = Instant::now();
        let mut history = History::new();
        history.add_outgoing(1, 100, true, 0, 1200, now);
        history.add_outgoing(1, 101, true, 1, 1200, now + Duration::from_secs(5));

        history.prune_before(now + Duration::from_secs(1));

        assert_eq!(1, history.len(), "only the recent one survives");
        assert_eq!(
            None,
            history.on_twcc_feedback(now, Acknowledgement::received(0, None, Ecn::NotEct)),
            "and the pruned one is no longer matchable"
        );
    }
}
