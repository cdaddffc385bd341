//! How much picture the target bitrate can carry, without a clock of its
//! own: full size, half size, or half size at half the frame rate.
//!
//! A noisy 640x480 picture costs ~1.4 Mbit/s at good quality; squeezed into
//! 300 kbit/s the encoder overshoots its target (a keyframe alone is a
//! third of a second of the link) and the picture falls apart. Browsers
//! answer a narrow link with fewer pixels and frames; so does Duet. A rung
//! is left downward when the target has been below what it needs for
//! [`DOWN_AFTER`], and upward when the target has carried the rung above
//! with room to spare for [`UP_AFTER`].
//!
//! The bits a picture needs depend on what it shows (a noisy camera needs
//! twice what a quiet one does), so the ladder also listens to the encoder:
//! when it skips more than [`SKIP_LIMIT`] of the pictures to hold the
//! target, the rung is too big for it, and the ladder steps down and
//! remembers the target it failed at before it tries that rung again (as
//! libwebrtc's quality scaler listens to its frame dropper).
//!
//! A shared screen is text to read more than motion: its ladder gives up
//! frame rate first (15, 7.5, 5 pictures a second) and size only last.

use std::time::{Duration, Instant};

/// Bits a rung needs per pixel it sends (~0.06 bpp: 550 kbit/s for 640x480
/// at 30 fps, 140 kbit/s for 320x240).
const MIN_BITS_PER_PIXEL: f64 = 0.06;
/// What a shared screen needs: its picture barely changes from one frame to
/// the next, and a static one sends little, which keeps the target (held
/// near what is delivered) low: judged as a camera it would be shrunk for
/// being quiet. At 0.008 a 1280x800 screen at 15 fps needs 123 kbit/s,
/// below the floor of the target, so only a 1920-wide screen on a link
/// under 250 kbit/s slows down.
const SCREEN_BITS_PER_PIXEL: f64 = 0.008;
/// Going back up needs this much more than the rung above needs.
const UP_MARGIN: f64 = 1.4;
const DOWN_AFTER: Duration = Duration::from_millis(1000);
const UP_AFTER: Duration = Duration::from_secs(3);
/// The share of pictures the encoder may skip, over [`SKIP_WINDOW`], before
/// the rung is given up: a keyframe's aftermath skips a few, a rung too big
/// for the target skips one in five or more.
const SKIP_LIMIT: f64 = 0.15;
const SKIP_WINDOW: Duration = Duration::from_secs(2);
/// The smallest width Duet halves to: below it the stamp of the test
/// signals cannot be read, and faces get hard to make out.
const MIN_WIDTH: u32 = 320;

/// What to encode from each captured picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rung {
    /// Encode at half width and height.
    pub(crate) half_size: bool,
    /// Encode one picture in this many.
    pub(crate) keep_one_in: u32,
}

const RUNGS: [Rung; 3] = [
    Rung {
        half_size: false,
        keep_one_in: 1,
    },
    Rung {
        half_size: true,
        keep_one_in: 1,
    },
    Rung {
        half_size: true,
        keep_one_in: 2,
    },
];

/// A screen's rungs: fewer pictures before fewer pixels.
const SCREEN_RUNGS: [Rung; 4] = [
    Rung {
        half_size: false,
        keep_one_in: 1,
    },
    Rung {
        half_size: false,
        keep_one_in: 2,
    },
    Rung {
        half_size: false,
        keep_one_in: 3,
    },
    Rung {
        half_size: true,
        keep_one_in: 3,
    },
];

/// Picks the rung for the current target.
#[derive(Debug, Default)]
pub(crate) struct EncodeLadder {
    /// The screen's ladder rather than the camera's.
    screen: bool,
    step: usize,
    /// Since when the target has been too low for this rung.
    short_since: Option<Instant>,
    /// Since when the target has been enough for the rung above.
    ample_since: Option<Instant>,
    /// Pictures given to the encoder at this rung since `skips_since`, and
    /// how many it skipped.
    offered: u32,
    skipped: u32,
    skips_since: Option<Instant>,
    /// The target each rung was given up at because the encoder skipped
    /// pictures (index: step): it is tried again only well above that.
    failed_at: [Option<f64>; 4],
}

impl EncodeLadder {
    /// A ladder for a shared screen (`true`) or a camera-like picture, from the top.
    pub(crate) fn new(screen: bool) -> EncodeLadder {
        EncodeLadder {
            screen,
            ..EncodeLadder::default()
        }
    }

    fn rungs(&self) -> &'static [Rung] {
        if self.screen { &SCREEN_RUNGS } else { &RUNGS }
    }

    /// The rung for a picture of `width`x`height` captured at `fps`, with
    /// congestion control's `target_bps`, at `now`.
    pub(crate) fn rung(
        &mut self,
        target_bps: u32,
        width: u32,
        height: u32,
        fps: u32,
        now: Instant,
    ) -> Rung {
        let can_halve = width / 2 >= MIN_WIDTH;
        let rungs = self.rungs();
        let screen = self.screen;
        let nominal_needs = |step: usize| {
            let rung = rungs[step];
            let (w, h) = if rung.half_size && can_halve {
                (width / 2, height / 2)
            } else {
                (width, height)
            };
            let rate = f64::from(fps) / f64::from(rung.keep_one_in);
            let bits_per_pixel = if screen {
                SCREEN_BITS_PER_PIXEL
            } else {
                MIN_BITS_PER_PIXEL
            };
            f64::from(w) * f64::from(h) * rate * bits_per_pixel
        };
        let target = f64::from(target_bps);
        if self.step + 1 < rungs.len() && self.skipping_too_much(now) {
            tracing::debug!(
                step = self.step,
                skipped = self.skipped,
                offered = self.offered,
                target_bps,
                "the encoder skips pictures to hold the target: a smaller rung"
            );
            self.failed_at[self.step] = Some(target);
            self.step_to(self.step + 1);
        }
        // A rung is tried again only well above where the encoder failed it.
        let failed_at = self.failed_at;
        let needs = |step: usize| nominal_needs(step).max(failed_at[step].unwrap_or(0.0));
        if self.step + 1 < rungs.len() && target < needs(self.step) {
            let since = *self.short_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= DOWN_AFTER {
                self.step_to(self.step + 1);
            }
        } else {
            self.short_since = None;
        }
        if self.step > 0 && target >= needs(self.step - 1) * UP_MARGIN {
            let since = *self.ample_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= UP_AFTER {
                self.step_to(self.step - 1);
            }
        } else {
            self.ample_since = None;
        }
        let rung = rungs[self.step];
        Rung {
            half_size: rung.half_size && can_halve,
            keep_one_in: rung.keep_one_in,
        }
    }

    /// The encoder took a picture of the current rung (`skipped`: it gave
    /// nothing back for it, to hold the target).
    pub(crate) fn encoded(&mut self, skipped: bool, now: Instant) {
        self.skips_since.get_or_insert(now);
        self.offered += 1;
        self.skipped += u32::from(skipped);
    }

    /// Whether the encoder skipped more than [`SKIP_LIMIT`] over the last
    /// [`SKIP_WINDOW`]; starts a new window once one is full.
    fn skipping_too_much(&mut self, now: Instant) -> bool {
        let Some(since) = self.skips_since else {
            return false;
        };
        if now.saturating_duration_since(since) < SKIP_WINDOW {
            return false;
        }
        let too_much = f64::from(self.skipped) > f64::from(self.offered) * SKIP_LIMIT;
        self.reset_skips();
        too_much
    }

    fn reset_skips(&mut self) {
        self.offered = 0;
        self.skipped = 0;
        self.skips_since = None;
    }

    fn step_to(&mut self, step: usize) {
        self.step = step;
        self.short_since = None;
        self.ample_since = None;
        // A new rung is a new encoder: its first picture is a keyframe.
        self.reset_skips();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Rung = Rung {
        half_size: false,
        keep_one_in: 1,
    };
    const HALF: Rung = Rung {
        half_size: true,
        keep_one_in: 1,
    };
    const HALF_SLOW: Rung = Rung {
        half_size: true,
        keep_one_in: 2,
    };

    /// The rung after each second at each target, for 640x480 at 30 fps.
    fn walk(targets_kbps: &[u32]) -> Vec<Rung> {
        let start = Instant::now();
        let mut ladder = EncodeLadder::default();
        let mut rungs = Vec::new();
        for (second, kbps) in targets_kbps.iter().enumerate() {
            let mut rung = FULL;
            for tick in 0..10u64 {
                let now = start + Duration::from_millis(second as u64 * 1000 + tick * 100);
                rung = ladder.rung(kbps * 1000, 640, 480, 30, now);
            }
            rungs.push(rung);
        }
        rungs
    }

    #[test]
    fn a_narrow_link_halves_the_picture_then_the_frame_rate() {
        let rungs = walk(&[1500, 1500, 400, 400, 400, 100, 100, 100]);
        assert_eq!(
            rungs,
            vec![FULL, FULL, FULL, HALF, HALF, HALF, HALF_SLOW, HALF_SLOW]
        );
    }

    #[test]
    fn coming_back_up_waits_for_a_lasting_margin() {
        let rungs = walk(&[100, 100, 100, 400, 400, 400, 400, 1000, 1000, 1000, 1000]);
        assert_eq!(rungs[2], HALF_SLOW);
        // 400 kbit/s carries half size at 30 fps with room: up after 3 s.
        assert_eq!(&rungs[3..7], &[HALF_SLOW, HALF_SLOW, HALF_SLOW, HALF]);
        // 1 Mbit/s carries full size (550 × 1.4 = 770 needed): up after 3 s.
        assert_eq!(&rungs[7..], &[HALF, HALF, HALF, FULL]);
        // A target that dips below the margin starts the wait again.
        let rungs = walk(&[100, 100, 100, 400, 400, 150, 400, 400, 400, 400]);
        assert_eq!(rungs[2], HALF_SLOW);
        assert_eq!(rungs[8], HALF_SLOW);
        assert_eq!(rungs[9], HALF);
    }

    #[test]
    fn a_shared_screen_gives_up_frame_rate_before_size() {
        let start = Instant::now();
        let mut ladder = EncodeLadder::new(true);
        let mut seen = Vec::new();
        // 1920x1080 at 15 fps needs 249 kbit/s; 7.5 fps 124, 5 fps 83, and
        // 960x540 at 5 fps 21: 20 kbit/s carries none of them.
        for tick in 0..40u64 {
            let now = start + Duration::from_millis(tick * 100);
            let rung = ladder.rung(20_000, 1920, 1080, 15, now);
            if seen.last() != Some(&rung) {
                seen.push(rung);
            }
        }
        assert_eq!(seen, SCREEN_RUNGS);
        assert_eq!(seen[0], FULL);
        // A quiet 1280x800 screen at the target's floor keeps its size and rate.
        let mut ladder = EncodeLadder::new(true);
        for tick in 0..40u64 {
            let now = start + Duration::from_millis(tick * 100);
            assert_eq!(ladder.rung(150_000, 1280, 800, 15, now), FULL);
        }
    }

    #[test]
    fn a_small_picture_is_never_halved_below_320_wide() {
        let start = Instant::now();
        let mut ladder = EncodeLadder::default();
        let mut rung = FULL;
        for tick in 0..50u64 {
            rung = ladder.rung(
                50_000,
                320,
                240,
                30,
                start + Duration::from_millis(tick * 100),
            );
        }
        assert_eq!(
            rung,
            Rung {
                half_size: false,
                keep_one_in: 2
            }
        );
    }

    #[test]
    fn a_rung_the_encoder_cannot_hold_is_left_and_tried_again_only_well_above() {
        let start = Instant::now();
        let mut ladder = EncodeLadder::default();
        // 30 pictures a second; at full size the encoder skips one in four.
        let rung_at = |ladder: &mut EncodeLadder, from_s: u64, to_s: u64, kbps: u32| {
            let mut rung = FULL;
            for frame in from_s * 30..to_s * 30 {
                let now = start + Duration::from_millis(frame * 1000 / 30);
                rung = ladder.rung(kbps * 1000, 640, 480, 30, now);
                ladder.encoded(rung == FULL && frame % 4 == 0, now);
            }
            rung
        };
        assert_eq!(
            rung_at(&mut ladder, 0, 1, 800),
            FULL,
            "a second is too soon"
        );
        assert_eq!(rung_at(&mut ladder, 1, 3, 800), HALF);
        // The target alone would allow full size again (800 > 1.4 x 553
        // kbit/s), but not at the rate the encoder failed it at...
        assert_eq!(rung_at(&mut ladder, 3, 10, 800), HALF);
        // ...only at 1.4 times that.
        assert_eq!(rung_at(&mut ladder, 10, 15, 1150), FULL);
    }
}
