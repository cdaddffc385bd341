//! The `test` video source: the stamped pattern of `docs/test-signals.md` (colour
//! bars with a moving box under the stamp), paced to the wall clock; and
//! `test:noisy`, the same with sensor noise on every pixel, which costs an
//! encoder what a camera costs (the clean pattern costs a twentieth of it, so
//! a narrow link would never be stressed by it).

use std::time::{Duration, Instant, SystemTime};

use crate::MediaError;
use crate::frame::{VideoFrame, unix_ms};
use crate::stamp::{cell_size, draw_stamp};

/// Smallest picture the stamp fits in.
pub const MIN_WIDTH: u32 = 320;
/// Smallest height of a test picture.
pub const MIN_HEIGHT: u32 = 240;

/// 75 % colour bars in BT.601 limited range (Y, U, V).
const BARS: [(u8, u8, u8); 7] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
];

/// Keeps a steady frame rate against the monotonic clock: frame `n` is due at
/// `start + n × interval`; a source that fell behind skips ahead instead of
/// bursting. Time is an argument so the rule is testable.
#[derive(Debug, Clone)]
pub struct FramePacer {
    start: Instant,
    interval: Duration,
    next: u64,
}

impl FramePacer {
    /// Frame 0 is due at `start`.
    pub fn new(start: Instant, interval: Duration) -> FramePacer {
        FramePacer {
            start,
            interval,
            next: 0,
        }
    }

    /// When the next frame is due.
    pub fn due(&self) -> Instant {
        self.start
            + self
                .interval
                .saturating_mul(u32::try_from(self.next).unwrap_or(u32::MAX))
    }

    /// Marks the next frame as produced at `now`; when `now` is more than one
    /// interval late, the frames missed are skipped. Returns how many were skipped.
    pub fn advance(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        let on_time = (elapsed.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        let skipped = on_time.saturating_sub(self.next);
        self.next = self.next.max(on_time) + 1;
        skipped
    }

    /// Sleeps until the next frame is due, then marks it produced: what a
    /// source that paces itself does before each frame.
    pub fn wait(&mut self) -> u64 {
        let due = self.due();
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.advance(Instant::now())
    }
}

/// Draws and paces the stamped test pattern.
#[derive(Debug)]
pub struct TestPatternSource {
    /// The bars, drawn once; each frame starts as a copy.
    background: VideoFrame,
    pacer: FramePacer,
    frame_index: u64,
    noisy: bool,
}

impl TestPatternSource {
    /// A source of `width`×`height` at `fps`, first frame due now.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<TestPatternSource, MediaError> {
        if width < MIN_WIDTH || height < MIN_HEIGHT {
            return Err(MediaError::TooSmallForStamp { width, height });
        }
        if fps == 0 || fps > 240 {
            return Err(MediaError::BadFrameRate(fps));
        }
        let mut background = VideoFrame::black(width, height, SystemTime::now())?;
        let chroma_width = background.chroma_width();
        let bar_width = (width as usize).div_ceil(BARS.len());
        let (y, u, v) = background.planes_mut();
        for row in y.chunks_exact_mut(width as usize) {
            for (x, px) in row.iter_mut().enumerate() {
                *px = BARS[x / bar_width].0;
            }
        }
        let chroma_bar = bar_width.div_ceil(2).max(1);
        for (plane, pick) in [(u, 1), (v, 2)] {
            for row in plane.chunks_exact_mut(chroma_width) {
                for (x, px) in row.iter_mut().enumerate() {
                    let bar = BARS[(x / chroma_bar).min(BARS.len() - 1)];
                    *px = if pick == 1 { bar.1 } else { bar.2 };
                }
            }
        }
        Ok(TestPatternSource {
            background,
            pacer: FramePacer::new(Instant::now(), Duration::from_secs(1) / fps),
            frame_index: 0,
            noisy: false,
        })
    }

    /// The same pattern with fresh sensor-like noise on every pixel of every
    /// frame (the stamp stays clean, drawn over it).
    pub fn with_noise(mut self) -> TestPatternSource {
        self.noisy = true;
        self
    }

    /// Draws frame number `index` stamped with `capture_time`, without waiting.
    pub fn draw(&self, index: u64, capture_time: SystemTime) -> VideoFrame {
        let mut frame = self.background.clone();
        frame.capture_time = capture_time;
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        if self.noisy {
            add_sensor_noise(&mut frame, index);
        }
        // A box that slides across and back below the stamp: real motion to encode.
        let size = (height / 5).max(16);
        let top = cell_size(frame.width()) as usize + height / 3;
        let span = width.saturating_sub(size).max(1) as u64;
        let step = (index * 8) % (2 * span);
        let left = if step < span { step } else { 2 * span - step } as usize;
        let (y, _, _) = frame.planes_mut();
        for row in y.chunks_exact_mut(width).skip(top).take(size) {
            for (x, px) in row[left..left + size].iter_mut().enumerate() {
                *px = if (x / 8 + index as usize).is_multiple_of(2) {
                    235
                } else {
                    16
                };
            }
        }
        draw_stamp(&mut frame, unix_ms(capture_time));
        frame
    }

    /// Waits until the next frame is due, then draws it stamped with the time now.
    pub fn next_frame(&mut self) -> VideoFrame {
        self.pacer.wait();
        let frame = self.draw(self.frame_index, SystemTime::now());
        self.frame_index += 1;
        frame
    }
}

/// Adds noise like a camera sensor's in dim indoor light: every sample moves
/// by up to ±15 levels (triangular, standard deviation 6.5) in luma and
/// half that in chroma, differently in every frame. xorshift64*: eight
/// samples' noise from each step, so a 640x480 frame costs well under a
/// millisecond.
fn add_sensor_noise(frame: &mut VideoFrame, index: u64) {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (y, u, v) = frame.planes_mut();
    for (plane, shift) in [(y, 0u32), (u, 1), (v, 1)] {
        for chunk in plane.chunks_mut(8) {
            let bits = next().to_le_bytes();
            for (px, byte) in chunk.iter_mut().zip(bits) {
                let noise = (i16::from(byte & 15) + i16::from(byte >> 4) - 15) >> shift;
                *px = (i16::from(*px) + noise).clamp(16, 235) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::StampReader;

    #[test]
    fn frames_carry_their_capture_time_and_move() {
        let source = TestPatternSource::new(640, 480, 30).expect("valid");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let a = source.draw(0, t);
        let b = source.draw(1, t);
        assert_eq!(
            StampReader::read(&a),
            Some((1_764_000_000_123u64 % (1 << 32)) as u32)
        );
        assert_ne!(
            a.planes().0,
            b.planes().0,
            "the picture moves between frames"
        );
    }

    #[test]
    fn noisy_frames_differ_everywhere_but_keep_their_stamp() {
        let clean = TestPatternSource::new(640, 480, 30).expect("valid");
        let noisy = TestPatternSource::new(640, 480, 30)
            .expect("valid")
            .with_noise();
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_500);
        let (a, b) = (noisy.draw(3, t), noisy.draw(4, t));
        assert_eq!(StampReader::read(&a), StampReader::read(&clean.draw(3, t)));
        assert!(StampReader::read(&a).is_some());
        let (ya, yb) = (a.planes().0, b.planes().0);
        let changed = ya.iter().zip(yb).filter(|(p, q)| p != q).count();
        assert!(
            changed > ya.len() * 8 / 10,
            "noise is fresh in each frame: {changed} of {} samples changed",
            ya.len()
        );
        let clean_y = clean.draw(3, t);
        let error: f64 = ya
            .iter()
            .zip(clean_y.planes().0)
            .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
            .sum::<f64>()
            / ya.len() as f64;
        assert!(
            (25.0..60.0).contains(&error),
            "noise power {error:.1} (a sensor's, not a snowstorm's)"
        );
    }

    #[test]
    fn sizes_below_320x240_and_silly_rates_are_refused() {
        assert!(matches!(
            TestPatternSource::new(319, 240, 30),
            Err(MediaError::TooSmallForStamp { .. })
        ));
        assert!(TestPatternSource::new(320, 239, 30).is_err());
        assert!(TestPatternSource::new(320, 240, 0).is_err());
        assert!(TestPatternSource::new(321, 241, 30).is_ok());
    }

    #[test]
    fn the_pacer_keeps_the_rate_and_skips_when_late() {
        let start = Instant::now();
        let interval = Duration::from_millis(10);
        let mut pacer = FramePacer::new(start, interval);
        assert_eq!(pacer.due(), start);
        assert_eq!(pacer.advance(start), 0);
        assert_eq!(pacer.due(), start + interval);
        // A little late: no skip, the schedule holds.
        assert_eq!(pacer.advance(start + Duration::from_millis(13)), 0);
        assert_eq!(pacer.due(), start + 2 * interval);
        // 55 ms: frames 2, 3 and 4 were missed; the next is frame 6 at 60 ms.
        assert_eq!(pacer.advance(start + Duration::from_millis(55)), 3);
        assert_eq!(pacer.due(), start + 6 * interval);
    }

    #[test]
    fn next_frame_is_paced_to_the_asked_rate() {
        let mut source = TestPatternSource::new(320, 240, 50).expect("valid");
        let started = Instant::now();
        for _ in 0..6 {
            source.next_frame();
        }
        // Frames 0..5 are due at 0..100 ms: the sixth cannot come before 100 ms.
        assert!(started.elapsed() >= Duration::from_millis(95));
    }
}
