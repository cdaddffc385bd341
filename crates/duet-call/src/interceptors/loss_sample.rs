//! Whether the loss the feedback reports is heavy: more than chance gives
//! a link that loses a few percent at random.

/// Above this share of packets lost, the path is overused...
const HEAVY_LOSS: f64 = 0.1;
/// ...when the sample says so with this confidence (the z of a one-sided
/// 99.9 % bound). The rig's 5 % link reads 4–8 % over two seconds, and up to
/// 15 % over one: judged on the share alone, each back-off (which starts a
/// new, smaller sample) made the next more likely, and one call's video
/// went from 1 Mbit/s to 40 kbit/s in 45 s. At 2.33 (99 %) a 60 s call at 8 %
/// still backed off now and then; at 3 about once in 80 such minutes.
const LOSS_CONFIDENCE_Z: f64 = 3.0;

/// Packets the feedback judged, and how many of them were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LossSample {
    pub(crate) judged: usize,
    pub(crate) lost: usize,
}

impl LossSample {
    pub(crate) fn share(self) -> f64 {
        self.lost as f64 / self.judged.max(1) as f64
    }

    /// Whether more than [`HEAVY_LOSS`] is lost beyond what chance gives a
    /// sample this size: the lower end of its Wilson score interval (at
    /// [`LOSS_CONFIDENCE_Z`]) is above it. 11 of 90 is not heavy; 30 of 90,
    /// or 5 of 5, is.
    pub(crate) fn heavy(self) -> bool {
        if self.judged == 0 {
            return false;
        }
        let n = self.judged as f64;
        let p = self.share();
        let z2 = LOSS_CONFIDENCE_Z * LOSS_CONFIDENCE_Z;
        let spread = LOSS_CONFIDENCE_Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
        let lower = (p + z2 / (2.0 * n) - spread) / (1.0 + z2 / n);
        lower > HEAVY_LOSS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_heavy_only_beyond_chance() {
        let sample = |lost, judged| LossSample { judged, lost };
        assert!(!sample(0, 0).heavy());
        assert!(!sample(11, 90).heavy(), "12 % of 90: chance");
        assert!(!sample(30, 300).heavy(), "10 %: not above");
        assert!(!sample(16, 90).heavy(), "18 % of 90: could be chance");
        assert!(sample(30, 90).heavy());
        assert!(sample(60, 300).heavy());
        assert!(sample(5, 5).heavy());
    }
}
