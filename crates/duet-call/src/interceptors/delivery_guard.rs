//! What the path delivers, and the ceiling it sets the congestion
//! controller's target.
//!
//! webrtc-rs's GCC raises its delay-based target 8 % every 200 ms (×1.47 a
//! second) with nothing tying it to what arrives, so on a narrow link it
//! climbs to twice the link's rate between two detections, and every climb
//! is a burst of loss. libwebrtc keeps the delay-based estimate under 1.5 ×
//! the acknowledged bitrate; [`DeliveryGuard`] does the same from the very
//! transport-wide feedback GCC reads. It also watches the queue the sender
//! builds on the path (the lowest recent one-way delay above the lowest of
//! the last seconds: jitter delays some packets, a standing queue every one
//! of them, so jitter alone does not read as a queue, given enough packets:
//! [`JitterSpread`](super::path_queue::JitterSpread)): when it grows past
//! [`QUEUE_LIMIT`](super::path_queue::QUEUE_LIMIT) (and is not the queue
//! of the last back-off, draining: [`QueueJudge`]), or loss is heavy, the
//! guard sets a ceiling just under what got through and lets it rise only
//! [`CEILING_GROWTH`] a second, so a narrow link is followed without the
//! climb-and-crash of GCC alone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

use super::arrival_spacing::ArrivalSpacing;
use super::loss_sample::LossSample;
use super::path_queue::{JitterSpread, QueueJudge, one_way_delay_ms, packets_for_a_reading};
use super::recent_packets::RecentPackets;

/// How far back delivery is measured.
const WINDOW: Duration = Duration::from_secs(1);
/// How far back loss is measured: a second of a 300 kbit/s call is ~90
/// packets, too few to tell 5 % of random loss from 10 % of overuse.
const LOSS_WINDOW: Duration = Duration::from_secs(2);
/// Less feedback than this says too little about the path...
const MIN_SPAN: Duration = Duration::from_millis(500);
/// ...unless it reports heavy loss on at least this many packets, and the
/// rate of the full link is read from their arrivals ([`ArrivalSpacing`]):
/// a call that squeezes into a link a tenth of its rate loses nine in ten
/// of its feedback packets too, and the first to get through came a second
/// into the squeeze. Waiting for half a second more of it kept the link
/// flooded, and each second of flood is a second of speech lost.
const EARLY_JUDGED: usize = 20;
/// The target may lead what arrives by this factor (libwebrtc's).
const HEADROOM: f64 = 1.5;
/// How long the lowest one-way delay is remembered as the empty-queue one.
const BASE_WINDOW: Duration = Duration::from_secs(10);
/// The recent one-way delay is the lowest of this much feedback.
const RECENT: Duration = Duration::from_millis(200);
/// After overuse the ceiling is this share of what got through...
const BACK_OFF: f64 = 0.85;
/// ...or less, when the queue found is deeper than 15 % of this: the
/// back-off drains it within about this long. A call at 1.4 Mbit/s that
/// meets a 100 kbit/s link fills a 300 ms queue before the first feedback
/// says so; at 85 % of the rate read (a second that began before the queue
/// filled) it stayed full another second or two, and audio with it: 3–5
/// beeps lost where now 1–2 are.
const DRAIN_WITHIN: Duration = Duration::from_millis(500);
/// The deepest a back-off goes, as a share of what got through, and where
/// one for heavy loss goes before the delays say how deep the queue is.
const DEEPEST_BACK_OFF: f64 = 0.5;
/// The queue is read against the lowest delay of this much feedback at
/// least. Heavy loss is a queue overflowing, as full as it gets; but when a
/// call meets a narrow link as it starts, the first feedback to get through
/// already met the queue full, and read it as empty. Cut to 0.85 of the
/// rate, a 100 kbit/s link's 400 ms queue stayed full two more seconds, and
/// two more beeps were lost.
const QUEUE_KNOWN_AFTER: Duration = Duration::from_secs(1);
/// ...and rises this much a second while the path keeps up...
const CEILING_GROWTH: f64 = 0.10;
/// ...but only this much while it is near what got through when the path
/// was last overused: probing a narrow link again at 10 % a second fills
/// its queue faster than the queue can be seen, and each probe overshoots.
const NEAR_CAPACITY_GROWTH: f64 = 0.04;
/// "Near" is from this share of that rate (a back-off goes to 85 % of it,
/// from where the ceiling climbs back at the full pace)...
const NEAR_CAPACITY_FROM: f64 = 0.95;
/// ...up to this much above it.
const NEAR_CAPACITY_TO: f64 = 1.1;
/// A back-off within this long of the one before keeps the capacity that
/// one measured, when it was higher. After a 1.4 Mbit/s call hit a 500
/// kbit/s cap, the second back-off (during the drain) read 370 kbit/s: the
/// ceiling then climbed at the full 10 % a second through the link's real
/// rate, and overshot it by 10 %.
const CAPACITY_MEMORY: Duration = Duration::from_secs(5);
/// A link that carried less than this when it overflowed is narrow: there a
/// probe's queue is heard. At 100 kbit/s one packet of video is a tenth of
/// a second of the link, and audio (a fifth of what is sent) waits behind
/// what a probe puts in the queue: each probe at [`NEAR_CAPACITY_GROWTH`]
/// overflowed the link every 3–6 s, held audio back 50–130 ms, and a beep
/// that met it was broken up or late.
const NARROW_CAPACITY: f64 = 200_000.0;
/// On a narrow link a queue is answered by a cut to this share of what got
/// through, at most. There the queue goes on growing for half a second after
/// it is seen (the feedback and the encoder lag), and a link cut to 85 % of
/// its rate, with audio's fixed share in what is left, drained the 100 ms
/// it reached at a tenth of its rate: audio came 50–100 ms late for two
/// seconds, and a beep that met it was broken up.
const NARROW_BACK_OFF: f64 = 0.7;
/// On a narrow link the ceiling climbs back only to this share of the
/// capacity...
const NARROW_HOLD_SHARE: f64 = 0.9;
/// ...and stays there this long after the back-off before it probes again.
const NARROW_HOLD: Duration = Duration::from_secs(15);
/// After the video source changes (a screen shared or stopped, the camera
/// back on), the target is not held to [`HEADROOM`] times what the source
/// before it delivered for this long. A target the path once carried is
/// kept anyway (see [`DeliveryGuard::limit`]); this is for a call that
/// started on a quiet source (a still screen, a paused camera: a few tens
/// of kbit/s), whose target never rose: held to 1.5 times that, the next
/// source was encoded at 320x240 and climbed back 1.5 times a second, 8 s
/// to a camera's 1.4 Mbit/s. A path that cannot carry the new rate still
/// overflows into a back-off within the grace, as at a call's start.
const NEW_SOURCE_GRACE: Duration = Duration::from_secs(2);
/// A packet this much above the lowest delay waited behind a queue.
const BEHIND_QUEUE_MS: f64 = 10.0;
/// Backing off again within this long would act twice on one queue.
const BACK_OFF_INTERVAL: Duration = Duration::from_millis(300);
/// Loss is measured over [`LOSS_WINDOW`]: the loss that caused one back-off
/// is still in it for a while, and must not cause the next ones.
const LOSS_BACK_OFF_INTERVAL: Duration = Duration::from_secs(1);

/// One packet the feedback reported on.
#[derive(Debug, Clone, Copy)]
struct Reported {
    at: Instant,
    sent: Instant,
    bytes: usize,
    arrived: bool,
    /// When it arrived, on the receiver's clock (if the feedback said).
    arrival: Option<Duration>,
}

/// One packet's one-way delay, in ms on an arbitrary origin.
#[derive(Debug, Clone, Copy)]
struct Delay {
    at: Instant,
    sent: Instant,
    ms: f64,
}

/// What the transport-wide feedback of the last second says got through.
///
/// Overuse is judged only on packets sent after the last back-off: those
/// sent before it still report the queue and loss the back-off answered
/// (a 100 kbit/s link with a 400 ms queue keeps reporting it for half a
/// second), and acting on them again would take the target to the floor
/// for one congestion event (TCP, too, halves once per window).
#[derive(Debug, Default)]
pub(crate) struct DeliveryGuard {
    reports: VecDeque<Reported>,
    delays: VecDeque<Delay>,
    /// The rate of the link while it is full.
    spacing: ArrivalSpacing,
    /// RTP packets reported on lately, to tell resends from first sendings.
    sent: RecentPackets,
    /// The send clock's origin for one-way delays.
    epoch: Option<Instant>,
    /// Set on overuse; rises while the path keeps up; gone once far above.
    ceiling: Option<f64>,
    /// What got through when the path was last overused.
    capacity: Option<f64>,
    last_back_off: Option<Instant>,
    /// Whether the queue read is overuse, or the last back-off's draining.
    queue_judge: QueueJudge,
    /// How far the path's jitter spreads delays.
    jitter: JitterSpread,
    /// How many packets the last reading of the queue spanned at least
    /// ([`packets_for_a_reading`]), to say when that changes.
    packets_per_reading: usize,
    /// When the ceiling last grew, or the path was last seen overused.
    last_change: Option<Instant>,
    /// Until when the ceiling stays under a narrow link's capacity.
    hold_until: Option<Instant>,
    /// The lowest ceiling: the lowest target the connection may have. A
    /// ceiling under it says nothing more, and would climb back to it
    /// at 10 % a second: 18 to 45 kbit/s took nine seconds.
    floor: f64,
    /// Until when a new source's target is not held to what the one
    /// before it delivered ([`NEW_SOURCE_GRACE`]).
    new_source_until: Option<Instant>,
    /// The latest instant the guard was told of.
    now: Option<Instant>,
    /// The last target the guard let through: what the path carried then.
    allowed: Option<f64>,
}

impl DeliveryGuard {
    /// A guard whose ceiling never goes under `floor_bps`.
    pub(crate) fn with_floor(floor_bps: f64) -> DeliveryGuard {
        DeliveryGuard {
            floor: floor_bps,
            ..DeliveryGuard::default()
        }
    }

    /// The video source changed: see [`NEW_SOURCE_GRACE`].
    pub(crate) fn new_source(&mut self, now: Instant) {
        self.new_source_until = Some(now + NEW_SOURCE_GRACE);
        self.tick(now);
    }

    /// Time passes without feedback (the grace of a new source runs out).
    pub(crate) fn tick(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |before| before.max(now)));
    }

    pub(crate) fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.tick(now);
        let reports = match self.spacing.on_reports(now, reports) {
            Some(back_at) => {
                // Back after an outage: what was lost in it is not a path
                // too narrow. Judged as loss, it took a call back from a
                // 30 s outage to 134 kbit/s.
                self.reports.clear();
                &reports[back_at..]
            }
            None => reports,
        };
        for report in reports {
            let resend = !self
                .sent
                .first_time(now, report.ssrc, report.rtp_sequence_number);
            // From a peer without RTX a resend is the same RTP packet again,
            // which the receiver's SRTP replay check throws away whenever the
            // first copy did arrive (a reordered packet NACKed before it
            // came): it is reported lost without anything having been lost.
            // (An RTX resend has a sequence number of its own.)
            if resend && !report.arrived {
                continue;
            }
            self.record(
                now,
                report.departure,
                report.size,
                report.arrival.filter(|_| report.arrived),
            );
            if let Some(arrival) = report.arrival {
                let epoch = *self.epoch.get_or_insert(report.departure);
                let delay_ms = one_way_delay_ms(epoch, report.departure, arrival);
                self.record_delay(now, report.departure, delay_ms);
            }
        }
        self.update_ceiling(now);
    }

    fn record_delay(&mut self, now: Instant, sent: Instant, delay_ms: f64) {
        self.jitter.on_delay(now, sent, delay_ms);
        self.delays.push_back(Delay {
            at: now,
            sent,
            ms: delay_ms,
        });
        while self
            .delays
            .front()
            .is_some_and(|d| now.saturating_duration_since(d.at) > BASE_WINDOW)
        {
            self.delays.pop_front();
        }
    }

    /// How deep the standing queue on the path is now: the lowest one-way
    /// delay of the last [`RECENT`] above the lowest of the last
    /// [`BASE_WINDOW`] (as CoDel judges a queue by its minimum sojourn).
    ///
    /// On a path that reorders, the reading spans at least `packets`
    /// ([`packets_for_a_reading`]: as many as it takes for jitter alone to
    /// seldom lift them all over the queue's limit), and there is none
    /// until that many were sent since the last back-off. The few packets of 200 ms
    /// of a slow call (audio alone is 17 a second) on a 60 ± 30 ms path
    /// all came 20 ms above the lowest every few readings: each was a
    /// back-off to 70 % of the call's own rate, and a call that had once
    /// dropped low stayed at its floor (a minute of frozen video).
    fn queue(&self, now: Instant, packets: usize) -> Option<Duration> {
        let base = self.delays.iter().map(|d| d.ms).reduce(f64::min)?;
        let mut read = 0;
        let mut recent = f64::INFINITY;
        for delay in self.delays.iter().rev() {
            if read >= packets && now.saturating_duration_since(delay.at) > RECENT {
                break;
            }
            if self.since_back_off(delay.sent) {
                read += 1;
                recent = recent.min(delay.ms);
            }
        }
        (read >= packets.max(1)).then(|| Duration::from_secs_f64((recent - base).max(0.0) / 1000.0))
    }

    fn update_ceiling(&mut self, now: Instant) {
        let Some((delivered, loss)) = self.delivery() else {
            return;
        };
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        self.queue_judge
            .set_narrow(self.capacity.is_some_and(|c| c < NARROW_CAPACITY));
        let jitter_ms = self.jitter.ms(now);
        let packets = packets_for_a_reading(jitter_ms, self.queue_judge.limit());
        if packets != self.packets_per_reading {
            tracing::debug!(
                jitter_ms = jitter_ms as u64,
                packets,
                "queue readings span at least this many packets, for the path's jitter"
            );
            self.packets_per_reading = packets;
        }
        let queue = self.queue(now, packets);
        tracing::trace!(
            delivered_kbps = (delivered / 1000.0) as u64,
            queue_ms = queue.map(|q| q.as_millis() as u64),
            loss = format_args!("{:.3}", loss.share()),
            ceiling_kbps = self.ceiling.map(|c| (c / 1000.0) as u64),
            "path reading"
        );
        let queued = queue.is_some_and(|q| self.queue_judge.overused(q, now));
        // Packets sent while the queue of the last back-off drains still
        // meet it full, and a full queue drops what comes: that loss is the
        // same congestion event, which the queue's own reading follows. (A
        // path that loses without queueing, a policer, has no queue to wait
        // for.) Cutting again for it read what the sender itself had cut to
        // as the link's rate: 49 kbit/s of a 100 kbit/s link.
        let lossy = loss.heavy() && !self.queue_judge.draining();
        if queued || lossy {
            let interval = if queued {
                BACK_OFF_INTERVAL
            } else {
                LOSS_BACK_OFF_INTERVAL
            };
            if since(self.last_back_off).is_none_or(|elapsed| elapsed >= interval) {
                let queue_known = self.delays.front().is_some_and(|first| {
                    now.saturating_duration_since(first.at) >= QUEUE_KNOWN_AFTER
                });
                let share = if lossy && !queue_known {
                    DEEPEST_BACK_OFF
                } else if delivered < NARROW_CAPACITY {
                    back_off_share(queue).min(NARROW_BACK_OFF)
                } else {
                    back_off_share(queue)
                };
                // What arrived behind the queue came at the link's rate; a
                // second that began while a shaper let its saved-up burst
                // through reads wider.
                let window = delivered;
                let delivered = if queued && !lossy {
                    self.rate_behind_queue()
                        .map_or(delivered, |rate| rate.min(delivered))
                } else {
                    delivered
                };
                let backed_off = (delivered * share).max(self.floor);
                tracing::debug!(
                    delivered_kbps = (delivered / 1000.0) as u64,
                    window_kbps = (window / 1000.0) as u64,
                    full_link_kbps = self.spacing.rate().map(|rate| (rate / 1000.0) as u64),
                    loss = format_args!("{:.3}", loss.share()),
                    judged = loss.judged,
                    queue_ms = queue.map(|q| q.as_millis() as u64),
                    "path overused: backing off"
                );
                self.ceiling = Some(self.ceiling.map_or(backed_off, |c| c.min(backed_off)));
                // A back-off soon after another reads what got through while
                // the sender was already cutting down: not a narrower link.
                let same_event = since(self.last_back_off).is_some_and(|e| e < CAPACITY_MEMORY);
                self.capacity = Some(match self.capacity {
                    Some(capacity) if same_event => capacity.max(delivered),
                    _ => delivered,
                });
                self.last_back_off = Some(now);
                // Only a queue says the link is full at the rate read: under
                // heavy loss the feedback is lost too, and what it reports
                // got through is less than did.
                self.hold_until = (queued && !lossy)
                    .then_some(now + NARROW_HOLD)
                    .filter(|_| self.capacity.is_some_and(|c| c < NARROW_CAPACITY));
                self.queue_judge.backed_off();
            }
            // The ceiling climbs again from when the path stops being overused.
            self.last_change = Some(now);
        } else if self.queue_judge.draining() {
            // Nor while the queue of the last overuse drains.
            self.last_change = Some(now);
        } else if let Some(ceiling) = self.ceiling {
            let elapsed = since(self.last_change).unwrap_or(Duration::ZERO);
            // On a narrow link the whole climb back is slow, up to where a
            // link stops being narrow: the capacity read under heavy loss (a
            // call squeezing into the link) is 50–170 kbit/s for a 100
            // kbit/s link. A climb at the full pace to under it crossed the
            // link's rate and overflowed it; one that sped up 10 % above a
            // rate read too low met the link at 10 % a second, and the queue
            // was 80–90 ms deep when it was seen.
            let near = self.capacity.is_some_and(|capacity| {
                let range = if capacity < NARROW_CAPACITY {
                    0.0..NARROW_CAPACITY.max(capacity * NEAR_CAPACITY_TO)
                } else {
                    capacity * NEAR_CAPACITY_FROM..capacity * NEAR_CAPACITY_TO
                };
                range.contains(&ceiling)
            });
            let growth = if near {
                NEAR_CAPACITY_GROWTH
            } else {
                CEILING_GROWTH
            };
            let mut grown = ceiling * (1.0 + growth * elapsed.as_secs_f64());
            if let Some(hold) = self.hold_level(now)
                && ceiling <= hold
            {
                grown = grown.min(hold);
            }
            // Far above what the path is asked to carry, a ceiling says nothing.
            self.ceiling = (grown < delivered * 4.0).then_some(grown);
            self.last_change = Some(now);
        }
    }

    /// Where the ceiling stops climbing for now: under a narrow link's
    /// capacity, for [`NARROW_HOLD`] after it overflowed.
    fn hold_level(&self, now: Instant) -> Option<f64> {
        let capacity = self.capacity?;
        self.hold_until
            .is_some_and(|until| now < until)
            .then_some(capacity * NARROW_HOLD_SHARE)
    }

    /// Bits a second that arrived over the last [`WINDOW`], and the loss
    /// over the last [`LOSS_WINDOW`]; `None` with less than [`MIN_SPAN`] of
    /// feedback, unless it reports heavy loss ([`EARLY_JUDGED`]).
    ///
    /// Under heavy loss the link is full, and what the feedback reports got
    /// through is less than did (the feedback is lost too): the rate read
    /// from the arrivals' spacing is taken when it is higher.
    fn delivery(&self) -> Option<(f64, LossSample)> {
        let last = self.reports.back()?.at;
        let recent = || {
            self.reports
                .iter()
                .skip_while(|r| last.saturating_duration_since(r.at) > WINDOW)
        };
        let first = recent().next()?.at;
        let (judged, lost) = self
            .reports
            .iter()
            .filter(|r| self.since_back_off(r.sent))
            .fold((0usize, 0usize), |(judged, lost), r| {
                (judged + 1, lost + usize::from(!r.arrived))
            });
        let loss = LossSample { judged, lost };
        let full_link = if loss.heavy() {
            self.spacing.rate()
        } else {
            None
        };
        let span = last.saturating_duration_since(first);
        if span < MIN_SPAN {
            return full_link
                .filter(|_| loss.judged >= EARLY_JUDGED)
                .map(|rate| (rate, loss));
        }
        let delivered = rate_arrived(recent()).unwrap_or(0.0);
        // Under heavy loss the link is full from the first loss on, and what
        // arrived before it came while it was not: a call at 1.4 Mbit/s that
        // met a 100 kbit/s link read 158 over a window that began before
        // the squeeze, and the back-off to half of that kept the link's
        // queue full (300 ms) for another second and a half.
        let delivered = if loss.heavy() {
            let first_lost = recent().position(|r| !r.arrived).unwrap_or(0);
            let since_loss = || recent().skip(first_lost);
            (since_loss().count() >= EARLY_JUDGED)
                .then(|| rate_arrived(since_loss()))
                .flatten()
                .map_or(delivered, |full| full.min(delivered))
        } else {
            delivered
        };
        Some((
            full_link.map_or(delivered, |rate| rate.max(delivered)),
            loss,
        ))
    }

    /// Bits a second that arrived over the last [`WINDOW`], from the first
    /// packet that waited behind a queue ([`BEHIND_QUEUE_MS`] above the
    /// lowest delay) on: with the queue standing, the link was busy from
    /// then, so this is its rate (for what the feedback reports on; RTCP
    /// crosses it too, so a little under). The whole window reads a
    /// shaper's saved-up burst as rate: on the 100 kbit/s rig, whose token
    /// bucket holds 4 kB, the back-off of a call that started at 120
    /// kbit/s read 100–128 kbit/s over the window and 76–86 from here
    /// (later back-offs: 84–90 over the window). `None` with fewer than 8
    /// such packets, or less than 200 ms of them.
    fn rate_behind_queue(&self) -> Option<f64> {
        let epoch = self.epoch?;
        let base = self.delays.iter().map(|d| d.ms).reduce(f64::min)?;
        let last = self.reports.back()?.at;
        let mut arrived: Vec<(Duration, usize, bool)> = self
            .reports
            .iter()
            .filter(|r| last.saturating_duration_since(r.at) <= WINDOW)
            .filter_map(|r| {
                let arrival = r.arrival?;
                let delay_ms = one_way_delay_ms(epoch, r.sent, arrival);
                Some((arrival, r.bytes, delay_ms - base >= BEHIND_QUEUE_MS))
            })
            .collect();
        arrived.sort_by_key(|&(arrival, _, _)| arrival);
        // From the first packet that waited behind the queue on, the link
        // was busy (the queue stood when the back-off read it).
        let from = arrived.iter().position(|&(_, _, queued)| queued)?;
        let behind = &arrived[from..];
        let (first, _, _) = *behind.first()?;
        let (newest, _, _) = *behind.last()?;
        let span = newest.saturating_sub(first);
        if behind.len() < 8 || span < Duration::from_millis(200) {
            return None;
        }
        // The first one's own bytes crossed the link before `first`.
        let bytes: usize = behind.iter().skip(1).map(|&(_, bytes, _)| bytes).sum();
        Some(bytes as f64 * 8.0 / span.as_secs_f64())
    }

    /// Whether a packet sent at `sent` went at the rate of the last back-off.
    fn since_back_off(&self, sent: Instant) -> bool {
        self.last_back_off.is_none_or(|at| sent >= at)
    }

    /// One packet reported on at `now`: arrived at `arrival` (receiver's
    /// clock), or lost.
    fn record(&mut self, now: Instant, sent: Instant, bytes: usize, arrival: Option<Duration>) {
        self.reports.push_back(Reported {
            at: now,
            sent,
            bytes,
            arrived: arrival.is_some(),
            arrival,
        });
        while self
            .reports
            .front()
            .is_some_and(|r| now.saturating_duration_since(r.at) > LOSS_WINDOW)
        {
            self.reports.pop_front();
        }
    }

    /// The lowest target the connection may have.
    pub(crate) fn floor(&self) -> f64 {
        self.floor
    }

    /// The ceiling the path sets the target now, if it overflowed lately.
    pub(crate) fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// The path was found full at a rate above `bps` by other means (the
    /// [`StartRamp`](super::start_ramp::StartRamp)'s climb met it): the
    /// ceiling is `bps` at most from `now`, and climbs from there.
    pub(crate) fn hold_under(&mut self, now: Instant, bps: f64) {
        let bps = bps.max(self.floor);
        self.ceiling = Some(self.ceiling.map_or(bps, |ceiling| ceiling.min(bps)));
        self.last_change = Some(now);
    }

    /// `target` kept within reach of what the path delivers; `target` itself
    /// until there is a second's worth of feedback.
    ///
    /// What arrives bounds how far the target may climb, not the level it
    /// keeps: a source that sends less for a while (a still screen, a
    /// paused camera) says nothing of the path, and a target held to 1.5
    /// times its few tens of kbit/s left the next slide encoded at 60 kbit/s
    /// and sharp only seconds later. libwebrtc's rate control does the same
    /// ("don't decrease the estimate just because the throughput is low").
    /// The target comes down on what does speak of the path: the controller's
    /// overuse, heavy loss, a ceiling after a queue.
    pub(crate) fn limit(&mut self, target: f64) -> f64 {
        let Some((delivered, loss)) = self.delivery() else {
            // Too little feedback to say what gets through (at the start, or
            // most of it lost): a ceiling set on overuse still holds. Lifted
            // for want of feedback, the target of a call squeezing into a
            // 100 kbit/s link went back to 1.4 Mbit/s for 200 ms.
            return self.ceiling.map_or(target, |ceiling| target.min(ceiling));
        };
        let new_source = self
            .new_source_until
            .zip(self.now)
            .is_some_and(|(until, now)| now < until);
        let limited = if loss.heavy() {
            target.min(delivered)
        } else if new_source {
            target
        } else {
            let kept = self.allowed.unwrap_or(0.0);
            target.min((delivered * HEADROOM).max(kept))
        };
        let limited = self.ceiling.map_or(limited, |ceiling| limited.min(ceiling));
        self.allowed = Some(limited);
        limited
    }
}

/// The share of what got through that a back-off keeps, for a queue this
/// deep on the path: [`BACK_OFF`], or less, so that the queue drains within
/// [`DRAIN_WITHIN`].
/// Bits a second that arrived of `reports`: the bytes that arrived over
/// the span of the feedback or of the arrivals, whichever is longer. The
/// feedback of a second covers more than a second of arrivals (its first
/// report is on packets that came up to 200 ms before it): over the
/// feedback's span alone, a 100 kbit/s link read 106. `None` over no time.
fn rate_arrived<'a>(reports: impl Iterator<Item = &'a Reported> + Clone) -> Option<f64> {
    let bytes: usize = reports.clone().filter(|r| r.arrived).map(|r| r.bytes).sum();
    let first_at = reports.clone().next()?.at;
    let feedback_span = span(
        reports
            .clone()
            .map(|r| r.at.saturating_duration_since(first_at)),
    );
    let arrival_span = span(reports.filter_map(|r| r.arrival));
    let span = feedback_span.max(arrival_span);
    (!span.is_zero()).then(|| bytes as f64 * 8.0 / span.as_secs_f64())
}

/// From the earliest of `times` to the latest.
fn span(times: impl Iterator<Item = Duration> + Clone) -> Duration {
    times
        .clone()
        .max()
        .zip(times.min())
        .map_or(Duration::ZERO, |(last, first)| last.saturating_sub(first))
}

fn back_off_share(queue: Option<Duration>) -> f64 {
    let drain = queue.map_or(0.0, |q| q.as_secs_f64() / DRAIN_WITHIN.as_secs_f64());
    BACK_OFF.min(1.0 - drain).max(DEEPEST_BACK_OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kbps` offered for a second in 1200-byte packets, `lost` of every 10 lost.
    fn feed(guard: &mut DeliveryGuard, start: Instant, kbps: f64, lost: usize) {
        let packets = (kbps * 1000.0 / 8.0 / 1200.0) as usize;
        for n in 0..packets {
            let at = start + Duration::from_secs_f64(n as f64 / packets as f64);
            let arrived = n % 10 >= lost;
            guard.record(at, at, 1200, arrived.then_some(Duration::ZERO));
        }
    }

    /// One packet of `bytes` reported at `at`, arrived after `delay_ms` or lost.
    fn report(guard: &mut DeliveryGuard, at: Instant, bytes: usize, delay_ms: Option<f64>) {
        sent_and_reported(guard, at, at, bytes, delay_ms);
    }

    /// One packet sent at `sent`, reported at `at`.
    fn sent_and_reported(
        guard: &mut DeliveryGuard,
        sent: Instant,
        at: Instant,
        bytes: usize,
        delay_ms: Option<f64>,
    ) {
        guard.record(at, sent, bytes, delay_ms.map(|_| Duration::ZERO));
        if let Some(delay_ms) = delay_ms {
            guard.record_delay(at, sent, delay_ms);
        }
        guard.update_ceiling(at);
    }

    #[test]
    fn the_target_leads_what_arrives_by_half_at_most() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        assert_eq!(guard.limit(2_000_000.0), 2_000_000.0, "no feedback yet");
        // Without enough feedback to measure, a ceiling set on overuse holds.
        guard.ceiling = Some(300_000.0);
        assert_eq!(guard.limit(2_000_000.0), 300_000.0);
        guard.ceiling = None;
        feed(&mut guard, start, 400.0, 0);
        let limited = guard.limit(2_000_000.0);
        assert!((590_000.0..620_000.0).contains(&limited), "{limited}");
        assert_eq!(guard.limit(300_000.0), 300_000.0, "a lower target stands");
    }

    #[test]
    fn a_ceiling_handed_over_holds_the_target_above_the_floor() {
        let now = Instant::now();
        let mut guard = DeliveryGuard::with_floor(45_000.0);
        guard.hold_under(now, 100_000.0);
        assert_eq!(guard.limit(1_400_000.0), 100_000.0);
        guard.hold_under(now, 200_000.0);
        assert_eq!(guard.ceiling(), Some(100_000.0), "the lower one stands");
        guard.hold_under(now, 20_000.0);
        assert_eq!(guard.ceiling(), Some(45_000.0), "never under the floor");
    }

    #[test]
    fn a_quiet_spell_bounds_the_climb_but_does_not_lower_the_target() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // A camera: 1 Mbit/s gets through.
        feed(&mut guard, start, 1000.0, 0);
        let camera = guard.limit(2_000_000.0);
        assert!((1_400_000.0..1_600_000.0).contains(&camera), "{camera}");
        // A still screen: 40 kbit/s. The target stays where the camera had it...
        feed(&mut guard, start + Duration::from_secs(2), 40.0, 0);
        assert_eq!(guard.limit(2_000_000.0), camera);
        // ...and does not climb past it on the screen's delivery.
        assert_eq!(guard.limit(3_000_000.0), camera);
        // The controller's own back-off (overuse) lowers it, and then only
        // what arrives lets it climb again.
        assert_eq!(guard.limit(800_000.0), 800_000.0);
        assert_eq!(guard.limit(2_000_000.0), 800_000.0);
    }

    #[test]
    fn a_new_source_is_not_held_to_what_a_quiet_one_delivered() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // A call that starts on a still screen: 40 kbit/s get through.
        feed(&mut guard, start, 40.0, 0);
        let held = guard.limit(1_400_000.0);
        assert!(held < 100_000.0, "{held}");

        // The camera comes on: the controller's target stands at once, and
        // after the grace too, unless the path says otherwise.
        let switched = start + Duration::from_secs(1);
        guard.new_source(switched);
        assert_eq!(guard.limit(1_400_000.0), 1_400_000.0);
        guard.tick(switched + Duration::from_millis(2_100));
        assert_eq!(guard.limit(1_400_000.0), 1_400_000.0);

        // A ceiling set by overuse still holds within the grace, and the
        // back-off for heavy loss too.
        guard.new_source(switched + Duration::from_secs(3));
        guard.ceiling = Some(500_000.0);
        assert_eq!(guard.limit(1_400_000.0), 500_000.0);
        let mut lossy = DeliveryGuard::default();
        feed(&mut lossy, start, 1000.0, 3);
        lossy.update_ceiling(start + Duration::from_secs(1));
        lossy.new_source(start + Duration::from_secs(1));
        assert!(lossy.limit(1_500_000.0) < 720_000.0);
    }

    #[test]
    fn heavy_loss_in_the_first_feedback_backs_off_at_once() {
        use super::super::arrival_spacing::tests::squeezed;
        // A call at 1 Mbit/s meets a 100 kbit/s link as it starts: the one
        // feedback that got through reports 50 packets, 5 of them arrived,
        // 100 ms apart. Far less than MIN_SPAN of feedback, but enough.
        let reports = squeezed(0, 0.0, 50);
        let mut guard = DeliveryGuard::default();
        guard.on_reports(Instant::now(), &reports);
        let ceiling = guard.ceiling().expect("backed off on the first feedback");
        // Half the link's rate: no delay was read before the queue filled.
        assert!((ceiling - 50_000.0).abs() < 1.0, "{ceiling}");
        assert!(guard.limit(1_400_000.0) <= ceiling);

        // Ten packets, one arrived: too few to say anything yet.
        let mut guard = DeliveryGuard::default();
        guard.on_reports(Instant::now(), &squeezed(0, 0.0, 10));
        assert_eq!(guard.ceiling(), None);
        assert_eq!(guard.limit(1_400_000.0), 1_400_000.0);
    }

    #[test]
    fn under_heavy_loss_what_arrived_before_the_first_loss_is_not_counted() {
        let start = Instant::now();
        let ms = |ms: u64| Duration::from_millis(ms);
        let mut guard = DeliveryGuard::default();
        // 600 ms at 1 Mbit/s with nothing lost, then the link narrows to
        // 100 kbit/s: one packet in ten arrives, 100 ms after the one before.
        for n in 0..60 {
            let sent = start + ms(n * 10);
            guard.record(sent + ms(20), sent, 1250, Some(ms(n * 10 + 20)));
        }
        for n in 60..110 {
            let sent = start + ms(n * 10);
            let arrival = (n % 10 == 0).then(|| ms(600 + (n - 60) / 10 * 100 + 20));
            guard.record(sent + ms(20), sent, 1250, arrival);
        }
        let (delivered, loss) = guard.delivery().expect("a second of feedback");
        assert!(loss.heavy(), "{loss:?}");
        assert!(
            (75_000.0..115_000.0).contains(&delivered),
            "{delivered}, not the 1 Mbit/s before the loss"
        );
    }

    #[test]
    fn what_was_lost_in_an_outage_is_not_a_narrow_path() {
        use super::super::arrival_spacing::tests::packet;
        let start = Instant::now();
        // Packet `n` leaves at n × 10 ms and arrives 20 ms later, or is lost.
        let sent = |n: u64, arrived: bool| PacketReport {
            departure: start + Duration::from_millis(n * 10),
            ..packet(n, 1250, arrived.then_some(n as f64 * 10.0 + 20.0))
        };
        let mut guard = DeliveryGuard::default();
        // A second of arrivals...
        let before: Vec<_> = (0..100).map(|n| sent(n, true)).collect();
        guard.on_reports(start + Duration::from_secs(1), &before);
        // ...then a 3 s outage, whose 300 packets the first feedback after
        // it reports lost, with the first of the path's arrivals again...
        let after: Vec<_> = (100..450).map(|n| sent(n, n >= 400)).collect();
        guard.on_reports(start + Duration::from_millis(4_500), &after);
        // ...and half a second more of the path as it was before.
        let later: Vec<_> = (450..500).map(|n| sent(n, true)).collect();
        guard.on_reports(start + Duration::from_secs(5), &later);
        assert_eq!(guard.ceiling(), None, "no back-off for the outage");
    }

    #[test]
    fn heavy_loss_halves_the_rate_until_the_queue_can_be_read() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Half the packets lost from the first feedback on...
        let mut starting = DeliveryGuard::default();
        feed(&mut starting, at(1000), 1000.0, 5);
        let (delivered, _) = starting.delivery().expect("a second of feedback");
        starting.update_ceiling(at(2000));
        let halved = starting.ceiling().expect("backed off");
        assert!((halved / delivered - DEEPEST_BACK_OFF).abs() < 1e-9);

        // ...and after a second of delays read without a queue: the queue
        // read decides (none now: the usual share).
        let mut going = DeliveryGuard::default();
        for ms in (0..1000).step_by(10) {
            report(&mut going, at(ms), 1200, Some(20.0));
        }
        feed(&mut going, at(1000), 1000.0, 5);
        let (delivered, _) = going.delivery().expect("a second of feedback");
        going.update_ceiling(at(2000));
        let cut = going.ceiling().expect("backed off");
        assert!(
            (cut / delivered - BACK_OFF).abs() < 1e-9,
            "{cut} of {delivered}"
        );
    }

    #[test]
    fn what_got_through_is_measured_over_the_arrivals_it_covers() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 1 Mbit arrived over 990 ms, reported on by feedback over 792 ms.
        for n in 0..100u64 {
            let at = start + Duration::from_millis(200 + n * 8);
            guard.record(at, at, 1250, Some(Duration::from_millis(n * 10)));
        }
        let (delivered, _) = guard.delivery().expect("enough feedback");
        let expected = 1_000_000.0 / 0.99;
        assert!((delivered - expected).abs() < 1.0, "{delivered}");
    }

    #[test]
    fn under_heavy_loss_the_target_is_what_got_through() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 1 Mbit/s offered, 3 in 10 lost: 700 kbit/s arrive.
        feed(&mut guard, start, 1000.0, 3);
        let limited = guard.limit(1_500_000.0);
        assert!((680_000.0..720_000.0).contains(&limited), "{limited}");
    }

    #[test]
    fn a_growing_queue_sets_a_ceiling_that_rises_slowly() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 500 kbit/s arriving with an empty queue: no ceiling.
        for n in 0..100u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            report(&mut guard, at, 625, Some(20.0));
        }
        assert_eq!(guard.ceiling, None);
        // The queue grows to 150 ms: back off to 85 % of what arrives.
        for n in 100..150u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            report(&mut guard, at, 625, Some(20.0 + f64::from(n - 100) * 3.0));
        }
        let ceiling = guard.ceiling.expect("overuse sets a ceiling");
        assert!((400_000.0..450_000.0).contains(&ceiling), "{ceiling}");
        assert!(guard.limit(2_000_000.0) <= ceiling);
        // The queue drains: the ceiling climbs back 10 % a second to near the
        // ~500 kbit/s that got through at the overuse, 4 % a second near it,
        // and 10 % a second again once well above it (the link may have
        // widened).
        // A queue keeps packets in order: it drains by at most the 10 ms
        // between two of them.
        let mut delay = 20.0 + 49.0 * 3.0;
        let mut drained = |guard: &mut DeliveryGuard, from: u32, to: u32| {
            for n in from..to {
                let at = start + Duration::from_millis(u64::from(n) * 10);
                delay = f64::max(delay - 10.0, 20.0);
                report(guard, at, 625, Some(delay));
            }
            guard.ceiling.expect("still there")
        };
        let growth = |from: f64, to: f64| to / from - 1.0;
        let ceiling = drained(&mut guard, 150, 165);
        let climbing = drained(&mut guard, 165, 215);
        let near = drained(&mut guard, 215, 315);
        assert!(
            (0.045..0.055).contains(&growth(ceiling, climbing)),
            "climbing back: {ceiling} -> {climbing}"
        );
        assert!((480_000.0..560_000.0).contains(&near), "{near}");
        let nearer = drained(&mut guard, 315, 365);
        assert!(
            (0.015..0.025).contains(&growth(near, nearer)),
            "near capacity: {near} -> {nearer}"
        );
        let above = drained(&mut guard, 365, 915);
        assert!(above > 560_000.0, "{above}");
        let later = drained(&mut guard, 915, 1015);
        assert!(
            (0.09..0.11).contains(&growth(above, later)),
            "well above: {above} -> {later}"
        );
    }

    #[test]
    fn on_a_narrow_link_the_ceiling_holds_under_capacity_before_probing() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        let at = |ms: u32| start + Duration::from_millis(u64::from(ms));
        // 100 kbit/s in 125-byte packets; the queue grows from 1 s to 1.5 s.
        let send = |guard: &mut DeliveryGuard, from: u32, to: u32, queued: bool| {
            for n in from..to {
                let queue = if queued {
                    f64::from(n - from) * 3.0
                } else {
                    0.0
                };
                report(guard, at(n * 10), 125, Some(20.0 + queue));
            }
        };
        send(&mut guard, 0, 100, false);
        send(&mut guard, 100, 150, true);
        let capacity = guard.capacity.expect("a back-off");
        assert!(capacity < NARROW_CAPACITY, "{capacity}");
        // Cut deep enough that the queue drains while it is still growing.
        let cut = guard.ceiling.expect("a ceiling");
        assert!(
            cut <= capacity * NARROW_BACK_OFF + 1.0,
            "{cut} of {capacity}"
        );
        // 14 s later the ceiling has climbed back to 90 % of it, no more.
        send(&mut guard, 150, 1550, false);
        let held = guard.ceiling.expect("a ceiling");
        assert!(
            (held / capacity - NARROW_HOLD_SHARE).abs() < 0.01,
            "{held} of {capacity}"
        );
        // After the hold it probes again.
        send(&mut guard, 1550, 2000, false);
        let probing = guard.ceiling.expect("a ceiling");
        assert!(probing > capacity * 0.95, "{probing} of {capacity}");
        // Above the rate read it goes on at the slow pace, up to where a
        // link stops being narrow: that rate may have been read low.
        let mut second = 20;
        while guard.ceiling.expect("a ceiling") < capacity * NEAR_CAPACITY_TO * 1.05 {
            assert!(second < 40, "the ceiling stopped climbing");
            send(&mut guard, second * 100, (second + 1) * 100, false);
            second += 1;
        }
        let above = guard.ceiling.expect("a ceiling");
        send(&mut guard, second * 100, (second + 1) * 100, false);
        let growth = guard.ceiling.expect("a ceiling") / above - 1.0;
        assert!(
            (0.035..0.045).contains(&growth),
            "{growth} a second above {above}"
        );
    }

    #[test]
    fn a_shapers_saved_up_burst_is_not_read_as_the_links_rate() {
        use super::super::arrival_spacing::tests::packet;
        let start = Instant::now();
        let ms = |ms: f64| start + Duration::from_secs_f64(ms / 1000.0);
        let mut guard = DeliveryGuard::default();
        // 200 kbit/s offered in 250-byte packets to a 100 kbit/s link
        // behind a 4 kB token bucket (12.5 bytes a ms), 20 ms away.
        let (mut tokens, mut tokens_at) = (4000.0f64, 0.0f64);
        let mut in_flight: Vec<PacketReport> = Vec::new();
        let mut read = None;
        for id in 0..400u64 {
            let sent = id as f64 * 10.0;
            let from = sent.max(tokens_at);
            tokens = (tokens + (from - tokens_at) * 12.5).min(4000.0);
            let wait = ((250.0 - tokens) / 12.5).max(0.0);
            tokens += wait * 12.5 - 250.0;
            tokens_at = from + wait;
            let mut report = packet(id, 250, Some(tokens_at + 20.0));
            report.departure = ms(sent);
            in_flight.push(report);
            // Feedback every 100 ms on what has arrived.
            if id % 10 == 9 {
                let now = sent + 10.0;
                let arrived: Vec<PacketReport> = in_flight
                    .iter()
                    .filter(|r| r.arrival.is_some_and(|a| a.as_secs_f64() * 1000.0 <= now))
                    .cloned()
                    .collect();
                in_flight.retain(|r| r.arrival.is_some_and(|a| a.as_secs_f64() * 1000.0 > now));
                guard.on_reports(ms(now), &arrived);
                if let Some(capacity) = guard.capacity {
                    read = Some((capacity, guard.delivery().map(|(rate, _)| rate)));
                    break;
                }
            }
        }
        let (capacity, window) = read.expect("a back-off");
        assert!(
            window.is_some_and(|window| window > 120_000.0),
            "the second's delivery: {window:?}"
        );
        assert!(
            (90_000.0..=105_000.0).contains(&capacity),
            "capacity {capacity}"
        );
    }

    #[test]
    fn a_deep_queue_is_drained_within_half_a_second() {
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(back_off_share(None), BACK_OFF);
        assert_eq!(back_off_share(ms(60)), BACK_OFF);
        assert!((back_off_share(ms(150)) - 0.7).abs() < 1e-9);
        assert_eq!(back_off_share(ms(300)), DEEPEST_BACK_OFF);
    }

    #[test]
    fn loss_while_the_queue_drains_is_the_same_congestion() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        let at = |n: u32| start + Duration::from_millis(u64::from(n) * 10);
        for n in 0..100 {
            report(&mut guard, at(n), 125, Some(20.0));
        }
        // The queue fills to 300 ms and the link drops 4 packets in 10.
        for n in 100..160 {
            let lost = n % 10 < 4;
            report(
                &mut guard,
                at(n),
                125,
                (!lost).then_some(20.0 + 5.0 * f64::from(n - 100)),
            );
        }
        let backed_off = guard.last_back_off.expect("a back-off");
        // It drains, 60 ms a second, still dropping as many.
        for n in 160..400 {
            let lost = n % 10 < 4;
            let queue = 320.0 - 0.6 * f64::from(n - 160);
            report(&mut guard, at(n), 125, (!lost).then_some(20.0 + queue));
        }
        assert_eq!(
            guard.last_back_off,
            Some(backed_off),
            "cut again while draining"
        );
    }

    #[test]
    fn one_congestion_event_backs_off_once() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // (reported at, sent at, queue in ms) of packets on their way.
        let mut in_flight: VecDeque<(Instant, Instant, f64)> = VecDeque::new();
        let mut queue_ms: f64 = 0.0;
        let mut ceiling: Option<f64> = None;
        let mut back_offs = 0;
        for n in 0..300u32 {
            let now = start + Duration::from_millis(u64::from(n) * 10);
            // From 1 s on the sender sends twice what the link carries, so
            // each packet waits 10 ms longer than the one before it, until
            // it backs off; the queue then drains as fast.
            if n >= 100 {
                queue_ms = if ceiling.is_none() {
                    queue_ms + 10.0
                } else {
                    (queue_ms - 10.0).max(0.0)
                };
            }
            let reported = now + Duration::from_secs_f64(queue_ms / 1000.0);
            in_flight.push_back((reported, now, queue_ms));
            while let Some(&(at, sent, queued)) = in_flight.front() {
                if at > now {
                    break;
                }
                in_flight.pop_front();
                sent_and_reported(&mut guard, sent, at, 1250, Some(20.0 + queued));
            }
            if let Some(new) = guard.ceiling {
                if ceiling.is_none_or(|old| new < old) {
                    back_offs += 1;
                }
                ceiling = Some(new);
            }
        }
        assert_eq!(
            back_offs, 1,
            "the queue of packets sent before the back-off read as new overuse"
        );
    }

    #[test]
    fn a_second_back_off_in_one_event_keeps_the_capacity_of_the_first() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Packets numbered `packets`, one every `gap_ms` from `offset_ms`; with
        // `lossy`, 2 of every 5 lost.
        let send =
            |guard: &mut DeliveryGuard, packets: std::ops::Range<u64>, gap_ms, offset_ms, lossy| {
                for n in packets {
                    let lost = lossy && n % 5 < 2;
                    report(
                        guard,
                        at(offset_ms + n * gap_ms),
                        625,
                        (!lost).then_some(20.0),
                    );
                }
            };
        // 500 kbit/s arrive, then 40 % of the packets are lost: a back-off.
        send(&mut guard, 0..100, 10, 0, false);
        send(&mut guard, 100..200, 10, 0, true);
        let first = guard.capacity.expect("a back-off");
        // Another second of heavy loss at a lower rate, still draining.
        send(&mut guard, 200..300, 20, 0, true);
        assert!(guard.last_back_off > Some(at(2000)), "backed off again");
        assert_eq!(guard.capacity, Some(first), "the first read stands");
        // Long after, a back-off reads the link afresh.
        send(&mut guard, 300..400, 20, 6000, false);
        send(&mut guard, 400..500, 20, 6000, true);
        assert!(guard.capacity < Some(first), "a narrower link is believed");
    }

    #[test]
    fn jitter_without_a_standing_queue_is_not_overuse() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 500 kbit/s, each packet delayed 20–120 ms in a shuffled order,
        // for 5 s: on average 50 ms above the lowest delay.
        for n in 0..500u32 {
            let at = start + Duration::from_millis(u64::from(n) * 10);
            let jitter = f64::from((n * 37) % 101);
            report(&mut guard, at, 625, Some(20.0 + jitter));
        }
        assert_eq!(guard.ceiling, None, "jitter read as a queue");
    }

    #[test]
    fn jitter_at_a_slow_calls_few_packets_is_not_a_queue() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        // A call on a 60 ± 30 ms path that once backed off to a narrow
        // link's rate: 3 s of video in bursts of four packets, then a minute
        // of 25 packets a second (audio in 60 ms packets and a little
        // video). Before the reading spanned enough packets, the few of
        // 200 ms all came 20 ms above the lowest every second or so, and
        // each time the guard backed off again: 697 times in 10 minutes.
        let mut back_offs = 0;
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed);
            let start = Instant::now();
            let mut guard = DeliveryGuard::with_floor(20_000.0);
            guard.capacity = Some(80_000.0);
            let mut send = |guard: &mut DeliveryGuard, sent: Instant| {
                let delay = 30.0 + rng.random_range(0.0..60.0);
                let at = sent + Duration::from_secs_f64(delay / 1000.0);
                sent_and_reported(guard, sent, at, 200, Some(delay));
            };
            for n in 0..300u64 {
                send(&mut guard, start + Duration::from_millis(n / 4 * 40));
            }
            let slow = start + Duration::from_secs(3);
            for n in 0..(60 * 25) {
                let backed_off = guard.last_back_off;
                send(&mut guard, slow + Duration::from_millis(n * 40));
                back_offs += usize::from(guard.last_back_off != backed_off);
            }
        }
        assert!(back_offs <= 3, "{back_offs} back-offs in 10 minutes");
    }

    #[test]
    fn five_percent_of_random_loss_is_not_overuse() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        // 300 kbit/s in 90 packets a second for 60 s, each lost with a
        // chance of 5 % (a fixed pseudo-random sequence).
        let mut seed: u32 = 0x2545_f491;
        for n in 0..5400u32 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let lost = seed >> 16 < 65_536 / 20;
            let at = start + Duration::from_micros(u64::from(n) * 11_111);
            report(&mut guard, at, 416, (!lost).then_some(20.0));
        }
        assert_eq!(guard.ceiling, None, "random loss read as congestion");
    }

    #[test]
    fn random_loss_after_a_back_off_does_not_cut_again() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        // Each back-off starts a new, smaller loss sample: judged on its
        // share alone, 8 % of random loss crossed 10 % in one of them
        // sooner or later, and every crossing cut the target again.
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed);
            let start = Instant::now();
            let mut guard = DeliveryGuard::default();
            let mut n = 0u32;
            let mut send = |guard: &mut DeliveryGuard, seconds: u32, loss: f64| {
                for _ in 0..seconds * 90 {
                    let lost = rng.random_bool(loss);
                    let at = start + Duration::from_micros(u64::from(n) * 11_111);
                    report(guard, at, 1000, (!lost).then_some(20.0));
                    n += 1;
                }
            };
            send(&mut guard, 2, 0.4);
            assert!(guard.last_back_off.is_some(), "40 % of loss not seen");
            // Once those packets have left the loss sample, 8 % of random loss.
            send(&mut guard, 2, 0.08);
            let backed_off = guard.last_back_off;
            send(&mut guard, 60, 0.08);
            assert_eq!(
                guard.last_back_off, backed_off,
                "random loss read as congestion (seed {seed})"
            );
        }
    }

    #[test]
    fn old_feedback_is_forgotten() {
        let start = Instant::now();
        let mut guard = DeliveryGuard::default();
        feed(&mut guard, start, 200.0, 0);
        feed(&mut guard, start + Duration::from_secs(3), 1000.0, 0);
        let limited = guard.limit(5_000_000.0);
        assert!(limited > 1_400_000.0, "{limited}");
    }
}
