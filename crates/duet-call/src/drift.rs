//! How fast to play received audio so that the playout buffer holds steady
//! while the sender's clock and the output device's clock disagree.
//!
//! The sender makes 48,000 samples a second by its sound card's crystal, the
//! receiver's sound card plays 48,000 a second by its own; 0.1–0.5 % apart is
//! common. The buffer's depth tells which way they differ: it creeps up when
//! the sender is faster, down when the device is. [`DriftControl`] turns the
//! depth into a playout ratio (output samples per received sample) for
//! `duet_media::stretch::ClockStretch` in two layers, moved a little at a time
//! so that the correction is slow, smooth and inaudible:
//!
//! - beyond a dead band of half a packet, a strong proportional and integral
//!   correction: a big drift (or a jump) is met within seconds;
//! - inside it, a gentle one on the whole error, so slow that the packet
//!   grid averages out: it finds a small steady drift (a device 250 ppm off)
//!   and brings the depth back to the target, instead of letting the depth
//!   wander from one edge of the band to the other while the delay a person
//!   hears drifts with it.
//!
//! The buffer then neither grows its delay nor runs dry.

/// Depth error (ms) inside which nothing is corrected: the depth steps by a
/// whole 20 ms packet, so ±10 ms of it is the packet grid, not drift.
const DEAD_BAND_MS: f64 = 10.0;
/// Ratio change per millisecond of error beyond the dead band: 10 ms beyond
/// asks for 0.5 %, the largest drift two sound cards plausibly have, so the
/// depth moves little before a drift is matched.
const GAIN_PER_MS: f64 = 0.005 / 10.0;
/// What each packet adds to the lasting correction per millisecond of error
/// beyond the dead band: a steady drift is then matched with the depth back
/// at the band's edge, not held further off by the proportional part alone
/// (10 ms beyond for 10 s builds up 0.5 %).
const INTEGRAL_PER_MS: f64 = 0.005 / 10.0 / 500.0;
/// Ratio change per millisecond of the whole error: 10 ms off asks for 500 ppm,
/// so a device 250 ppm off settles 5 ms from the target before the gentle
/// integral takes that back; the depth's ±10 ms of packet grid, smoothed,
/// stirs the ratio by a few hundred ppm at most, far below hearing.
const FINE_GAIN_PER_MS: f64 = 0.000_05;
/// What each packet adds to the lasting correction per millisecond of the
/// whole error: with [`FINE_GAIN_PER_MS`] critically damped (no overshoot),
/// settling in about a minute.
const FINE_INTEGRAL_PER_MS: f64 = FINE_GAIN_PER_MS * FINE_GAIN_PER_MS * 1000.0 / 4.0 / 50.0;
/// The largest change of ratio from one packet to the next.
const SLEW_PER_PACKET: f64 = 0.000_2;
/// Weight of each new depth reading in the running average: about 0.5 s of packets.
const SMOOTHING: f64 = 1.0 / 25.0;

/// The playout ratio that keeps the buffer's depth at its target.
#[derive(Debug, Clone)]
pub struct DriftControl {
    /// Running average of the depth, in milliseconds.
    depth_ms: Option<f64>,
    ratio: f64,
    /// The lasting part of the correction, built up while the error lasts.
    integral: f64,
    /// The largest distance from 1 the ratio may take.
    max_stretch: f64,
}

impl DriftControl {
    /// Starts at ratio 1, never straying further than `max_stretch` from it.
    pub fn new(max_stretch: f64) -> DriftControl {
        DriftControl {
            depth_ms: None,
            ratio: 1.0,
            integral: 0.0,
            max_stretch,
        }
    }

    /// The ratio to play the next packet at, given the buffer's depth before
    /// it was taken and the depth it should have (both in ms).
    pub fn update(&mut self, depth_ms: f64, target_ms: f64) -> f64 {
        let average = match self.depth_ms {
            None => depth_ms,
            Some(average) => average + (depth_ms - average) * SMOOTHING,
        };
        self.depth_ms = Some(average);
        let error = average - target_ms;
        let beyond = error.signum() * (error.abs() - DEAD_BAND_MS).max(0.0);
        // Too deep: play faster, fewer samples out than in.
        let unclamped = 1.0 - beyond * GAIN_PER_MS - error * FINE_GAIN_PER_MS - self.integral;
        let wanted = unclamped.clamp(1.0 - self.max_stretch, 1.0 + self.max_stretch);
        if unclamped == wanted {
            // Built up only while the correction is not at its limit, so it
            // does not overshoot once the error is gone.
            self.integral =
                (self.integral + beyond * INTEGRAL_PER_MS + error * FINE_INTEGRAL_PER_MS)
                    .clamp(-self.max_stretch, self.max_stretch);
        }
        self.ratio += (wanted - self.ratio).clamp(-SLEW_PER_PACKET, SLEW_PER_PACKET);
        self.ratio
    }

    /// The ratio last returned.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Forgets the depth (playout starts over: a new stream, after a pause).
    pub fn reset(&mut self) {
        self.depth_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_depth_on_target_plays_at_ratio_one_and_the_packet_grid_barely_stirs_it() {
        let mut control = DriftControl::new(0.007);
        for _ in 0..100 {
            assert_eq!(control.update(50.0, 50.0), 1.0);
        }
        // A packet in, a packet out: the depth read before each pop jumps by 20 ms.
        for n in 0..3_000 {
            let depth = if n % 2 == 0 { 40.0 } else { 60.0 };
            let ratio = control.update(depth, 50.0);
            assert!((ratio - 1.0).abs() < 0.000_3, "{n}: {ratio}");
        }
    }

    /// Plays `minutes` of packets to a device `device_ppm` fast, the depth read
    /// on a 20 ms grid; returns the mean depth error and the mean ratio over
    /// the last half.
    fn settle(device_ppm: f64, minutes: f64) -> (f64, f64) {
        let mut control = DriftControl::new(0.007);
        let target = 50.0;
        let mut depth: f64 = target; // ms of received audio waiting, exact
        let packets = (minutes * 60.0 * 50.0) as usize;
        let (mut errors, mut ratios) = (0.0, 0.0);
        for n in 0..packets {
            // Read on the grid of whole packets: whether the next one has
            // arrived depends on where the pop falls between two arrivals.
            let phase = (n as f64 * 7.31) % 20.0;
            let read = ((depth + phase) / 20.0).floor() * 20.0;
            let ratio = control.update(read, target);
            // The packet plays for 20 ms × ratio of device time, during which
            // 20 ms × ratio / (1 + drift) of sender audio arrives.
            depth += 20.0 * ratio / (1.0 + device_ppm * 1e-6) - 20.0;
            if n >= packets / 2 {
                errors += depth - target;
                ratios += ratio;
            }
        }
        let half = (packets - packets / 2) as f64;
        (errors / half, ratios / half)
    }

    #[test]
    fn a_small_steady_drift_is_found_and_the_depth_brought_back_to_target() {
        for ppm in [250.0, -250.0, 1_000.0] {
            let (error, ratio) = settle(ppm, 6.0);
            assert!(error.abs() < 3.0, "{ppm} ppm: {error} ms off target");
            assert!(
                ((ratio - 1.0) * 1e6 - ppm).abs() < 30.0,
                "{ppm} ppm: ratio {ratio}"
            );
        }
    }

    #[test]
    fn a_deep_buffer_plays_faster_a_shallow_one_slower_slowly_and_within_limits() {
        let mut control = DriftControl::new(0.007);
        let mut last = 1.0;
        for _ in 0..500 {
            let ratio = control.update(200.0, 40.0);
            assert!((last - ratio).abs() <= SLEW_PER_PACKET + 1e-12);
            last = ratio;
        }
        assert!((last - (1.0 - 0.007)).abs() < 1e-9, "{last}");
        let mut control = DriftControl::new(0.007);
        for _ in 0..500 {
            last = control.update(0.0, 60.0);
        }
        assert!(last > 1.0 && last <= 1.007, "{last}");
    }
}
