//! How much picture the target bitrate can carry, without a clock of its
//! own: full size, half size, or half size at half the frame rate (down to
//! a link of ~100 kbit/s).
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
//! On the narrowest links the frame rate stays at half: at 100 kbit/s the
//! encoder then makes pictures of ~600 bytes, while a sixth of the frame
//! rate (a rung Duet had) made them ~1.7 kB, each holding the link (and the
//! audio behind it) for 0.14 s. Measured on the rig (`tests/e2e/network.rs`, three
//! runs each): 10–12 pictures a second instead of 3.5–4.4, and 36–37 of 40
//! beeps in every direction instead of 34–38. Chromium too keeps its frame
//! rate there (25 pictures a second of 320x240 at 30 kbit/s).
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
/// The target holds the encoder down when it sends at least this share of
/// it; a quiet picture sends far less (the target leads what is sent by
/// half at most, so it sends two thirds of it or less).
const BINDING: f64 = 0.8;
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

/// What the encoder did with the pictures of one rung over [`SKIP_WINDOW`].
#[derive(Debug, Default, Clone, Copy)]
struct EncoderWindow {
    since: Option<Instant>,
    offered: u32,
    skipped: u32,
    bytes: u64,
}

/// A full [`EncoderWindow`], summed up.
#[derive(Debug, Clone, Copy)]
struct EncoderFigures {
    skipped_share: f64,
    output_bps: f64,
}

impl EncoderWindow {
    fn add(&mut self, bytes: Option<usize>, now: Instant) {
        self.since.get_or_insert(now);
        self.offered += 1;
        match bytes {
            Some(bytes) => self.bytes += bytes as u64,
            None => self.skipped += 1,
        }
    }

    /// The window's figures once it spans [`SKIP_WINDOW`] (and a new one
    /// starts); `None` before.
    fn close(&mut self, now: Instant) -> Option<EncoderFigures> {
        let elapsed = now.saturating_duration_since(self.since?);
        if elapsed < SKIP_WINDOW {
            return None;
        }
        let figures = EncoderFigures {
            skipped_share: f64::from(self.skipped) / f64::from(self.offered.max(1)),
            output_bps: self.bytes as f64 * 8.0 / elapsed.as_secs_f64(),
        };
        *self = EncoderWindow::default();
        Some(figures)
    }
}

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
    /// What the encoder is doing at this rung.
    window: EncoderWindow,
    /// The last full window's figures at this rung.
    figures: Option<EncoderFigures>,
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
        if let Some(figures) = self.window.close(now) {
            self.figures = Some(figures);
            if self.step + 1 < rungs.len() && figures.skipped_share > SKIP_LIMIT {
                tracing::debug!(
                    step = self.step,
                    skipped = figures.skipped_share,
                    target_bps,
                    "the encoder skips pictures to hold the target: a smaller rung"
                );
                self.failed_at[self.step] = Some(target);
                self.step_to(self.step + 1);
            }
        }
        // A rung is tried again only well above where the encoder failed it.
        let failed_at = self.failed_at;
        let needs = |step: usize| nominal_needs(step).max(failed_at[step].unwrap_or(0.0));
        // A picture that costs far less than the target (a quiet one) is not
        // shrunk for a low target: the target follows what is sent, and the
        // picture is not what holds it down.
        let binding = self
            .figures
            .is_some_and(|figures| figures.output_bps >= target * BINDING);
        if self.step + 1 < rungs.len() && binding && target < needs(self.step) {
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

    /// The encoder took a picture of the current rung and gave back `bytes`
    /// (`None`: it skipped the picture to hold the target).
    pub(crate) fn encoded(&mut self, bytes: Option<usize>, now: Instant) {
        self.window.add(bytes, now);
    }

    fn step_to(&mut self, step: usize) {
        self.step = step;
        self.short_since = None;
        self.ample_since = None;
        // A new rung is a new encoder, whose first picture is a keyframe:
        // its skips are counted afresh. Whether the target binds is kept: a
        // smaller rung of a picture the target held down is held down too.
        self.window = EncoderWindow::default();
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

    /// A picture of `width`x`height` at `fps`, through the ladder and an
    /// encoder that sends `spends` of the target (1: the target holds it
    /// down; less: a quiet picture) and skips the pictures `skips` says.
    struct Drive {
        ladder: EncodeLadder,
        start: Instant,
        frame: u64,
        width: u32,
        height: u32,
        fps: u32,
        spends: f64,
    }

    impl Drive {
        fn new(ladder: EncodeLadder, width: u32, height: u32, fps: u32) -> Drive {
            Drive {
                ladder,
                start: Instant::now(),
                frame: 0,
                width,
                height,
                fps,
                spends: 1.0,
            }
        }

        /// `seconds` at `kbps`; the rung at the end.
        fn run(&mut self, seconds: f64, kbps: u32, skips: impl Fn(u64) -> bool) -> Rung {
            let frames = (seconds * f64::from(self.fps)) as u64;
            let mut rung = FULL;
            for _ in 0..frames {
                let now = self.start + Duration::from_secs(self.frame) / self.fps;
                rung = self
                    .ladder
                    .rung(kbps * 1000, self.width, self.height, self.fps, now);
                if self.frame.is_multiple_of(u64::from(rung.keep_one_in)) {
                    let rate = f64::from(self.fps) / f64::from(rung.keep_one_in);
                    let bytes = f64::from(kbps) * 1000.0 * self.spends / 8.0 / rate;
                    let bytes = (!skips(self.frame)).then_some(bytes as usize);
                    self.ladder.encoded(bytes, now);
                }
                self.frame += 1;
            }
            rung
        }
    }

    const NO_SKIPS: fn(u64) -> bool = |_| false;

    /// The rung after each second at each target, for 640x480 at 30 fps,
    /// after two seconds at the first target (the ladder's first look at
    /// what the encoder sends).
    fn walk(targets_kbps: &[u32]) -> Vec<Rung> {
        let mut drive = Drive::new(EncodeLadder::default(), 640, 480, 30);
        drive.run(2.0, targets_kbps[0], NO_SKIPS);
        targets_kbps
            .iter()
            .map(|kbps| drive.run(1.0, *kbps, NO_SKIPS))
            .collect()
    }

    #[test]
    fn a_narrow_link_halves_the_picture_then_the_frame_rate() {
        let rungs = walk(&[1500, 1500, 400, 400, 400, 100, 100, 100, 40, 40]);
        // Not below half the frame rate, however narrow the link.
        assert_eq!(
            rungs,
            vec![
                FULL, FULL, FULL, HALF, HALF, HALF, HALF_SLOW, HALF_SLOW, HALF_SLOW, HALF_SLOW
            ]
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
    fn a_quiet_picture_is_not_shrunk_for_a_target_that_follows_it() {
        // The clean test pattern: 30 kbit/s sent, so congestion control's
        // target (which leads what arrives by half) sits at ~45 kbit/s.
        let mut drive = Drive::new(EncodeLadder::default(), 640, 480, 30);
        drive.spends = 0.66;
        assert_eq!(drive.run(10.0, 45, NO_SKIPS), FULL);
    }

    #[test]
    fn a_shared_screen_gives_up_frame_rate_before_size() {
        let mut drive = Drive::new(EncodeLadder::new(true), 1920, 1080, 15);
        // 1920x1080 at 15 fps needs 249 kbit/s; 7.5 fps 124, 5 fps 83, and
        // 960x540 at 5 fps 21: 20 kbit/s carries none of them.
        let mut seen = vec![drive.run(2.0, 20, NO_SKIPS)];
        for _ in 0..30 {
            let rung = drive.run(0.2, 20, NO_SKIPS);
            if seen.last() != Some(&rung) {
                seen.push(rung);
            }
        }
        assert_eq!(seen, SCREEN_RUNGS);
        // A quiet 1280x800 screen keeps its size and rate.
        let mut drive = Drive::new(EncodeLadder::new(true), 1280, 800, 15);
        drive.spends = 0.5;
        assert_eq!(drive.run(6.0, 150, NO_SKIPS), FULL);
    }

    #[test]
    fn a_small_picture_is_never_halved_below_320_wide() {
        let mut drive = Drive::new(EncodeLadder::default(), 320, 240, 30);
        // Halving is skipped; the frame rate goes down instead.
        assert_eq!(
            drive.run(7.0, 50, NO_SKIPS),
            Rung {
                half_size: false,
                keep_one_in: 2
            }
        );
    }

    #[test]
    fn a_rung_the_encoder_cannot_hold_is_left_and_tried_again_only_well_above() {
        let mut drive = Drive::new(EncodeLadder::default(), 640, 480, 30);
        // At full size the encoder skips one picture in four.
        let skips = |frame: u64| frame.is_multiple_of(4);
        assert_eq!(drive.run(1.0, 800, skips), FULL, "a second is too soon");
        assert_eq!(drive.run(2.0, 800, skips), HALF);
        // The target alone would allow full size again (800 > 1.4 x 553
        // kbit/s), but not at the rate the encoder failed it at...
        assert_eq!(drive.run(7.0, 800, NO_SKIPS), HALF);
        // ...only at 1.4 times that.
        assert_eq!(drive.run(5.0, 1150, NO_SKIPS), FULL);
    }
}
