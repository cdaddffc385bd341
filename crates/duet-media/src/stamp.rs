//! The stamp of `docs/test-signals.md`: 40 black-or-white cells across the top of a
//! frame carrying its capture time, so a receiver measures latency from the
//! picture alone.
//!
//! Only test pictures carry stamps. Camera pictures and noisy video can, by
//! chance, read as a valid sync pattern and checksum (about one frame in 256
//! of pure noise did), which would report a latency that was never measured.
//! So a cell counts only when it is clearly black or clearly white, as the
//! stamp draws it and a codec keeps it: its centre's mean luma at least
//! [`MARGIN`] away from the threshold and its pixels even. A frame with one
//! undecided cell has no stamp.

use crate::frame::VideoFrame;

/// Cells in the stamp row.
const CELLS: u32 = 40;
const WHITE: u8 = 235;
const BLACK: u8 = 16;
/// Luma above this reads as a 1.
const THRESHOLD: u32 = 126;
/// How far from [`THRESHOLD`] a cell's mean luma must be to be read at all
/// (a stamp's cells are 16 and 235; H.264 at low rates keeps them within ~20).
const MARGIN: u32 = 45;
/// Largest mean absolute deviation of a cell's centre pixels from their mean.
const MAX_SPREAD: u32 = 24;

/// The cell size for a frame `width` pixels wide (`floor(W / 40)`).
pub fn cell_size(width: u32) -> u32 {
    width / CELLS
}

/// The 6-bit checksum: sum of the four bytes, modulo 64.
fn checksum(value: u32) -> u32 {
    value
        .to_be_bytes()
        .iter()
        .map(|&b| u32::from(b))
        .sum::<u32>()
        % 64
}

/// The 40 bits of a stamp, cell 0 first.
fn bits(value: u32) -> [bool; CELLS as usize] {
    let mut bits = [false; CELLS as usize];
    bits[0] = true;
    bits[1] = false;
    for i in 0..32 {
        bits[2 + i] = value >> (31 - i) & 1 == 1;
    }
    let sum = checksum(value);
    for i in 0..6 {
        bits[34 + i] = sum >> (5 - i) & 1 == 1;
    }
    bits
}

/// Draws the stamp for `stamp_ms` (milliseconds since the epoch, taken modulo
/// 2^32) into the top `s` rows of `frame`, with neutral chroma under it.
pub fn draw_stamp(frame: &mut VideoFrame, stamp_ms: u64) {
    let s = cell_size(frame.width()) as usize;
    if s == 0 {
        return;
    }
    let width = frame.width() as usize;
    let chroma_width = frame.chroma_width();
    let rows = s.min(frame.height() as usize);
    let bits = bits((stamp_ms % (1 << 32)) as u32);
    let (y, u, v) = frame.planes_mut();
    for row in y.chunks_exact_mut(width).take(rows) {
        for (cell, &bit) in bits.iter().enumerate() {
            row[cell * s..(cell + 1) * s].fill(if bit { WHITE } else { BLACK });
        }
    }
    let chroma_rows = rows.div_ceil(2);
    let chroma_cols = (CELLS as usize * s).div_ceil(2).min(chroma_width);
    for plane in [u, v] {
        for row in plane.chunks_exact_mut(chroma_width).take(chroma_rows) {
            row[..chroma_cols].fill(128);
        }
    }
}

/// Reads stamps back from decoded frames of any size.
#[derive(Debug, Default, Clone, Copy)]
pub struct StampReader;

impl StampReader {
    /// The stamp of a frame (ms since the epoch modulo 2^32), or `None` when the
    /// sync cells or the checksum do not match (no stamp, or a damaged one).
    pub fn read(frame: &VideoFrame) -> Option<u32> {
        let (y, _, _) = frame.planes();
        Self::read_luma(y, frame.width(), frame.height(), frame.width() as usize)
    }

    /// The same from a bare luma plane with its stride (a screenshot, a GPU buffer).
    pub fn read_luma(luma: &[u8], width: u32, height: u32, stride: usize) -> Option<u32> {
        let s = cell_size(width) as usize;
        if s < 2 || (height as usize) < s || luma.len() < stride * s {
            return None;
        }
        let half = s / 2;
        let offset = s / 4;
        let mut read = [false; CELLS as usize];
        let mut centre = Vec::with_capacity(half * half);
        for (cell, bit) in read.iter_mut().enumerate() {
            let x0 = cell * s + offset;
            centre.clear();
            for row in offset..offset + half {
                let start = row * stride + x0;
                centre.extend(luma[start..start + half].iter().map(|&p| u32::from(p)));
            }
            let mean = centre.iter().sum::<u32>() / centre.len() as u32;
            let spread =
                centre.iter().map(|&p| p.abs_diff(mean)).sum::<u32>() / centre.len() as u32;
            if mean.abs_diff(THRESHOLD) < MARGIN || spread > MAX_SPREAD {
                return None;
            }
            *bit = mean > THRESHOLD;
        }
        if !read[0] || read[1] {
            return None;
        }
        let value = read[2..34]
            .iter()
            .fold(0u32, |acc, &b| acc << 1 | u32::from(b));
        let sum = read[34..40]
            .iter()
            .fold(0u32, |acc, &b| acc << 1 | u32::from(b));
        (sum == checksum(value)).then_some(value)
    }
}

/// One-way latency in ms of a frame stamped `stamp` and shown at `now_ms`.
pub fn latency_ms(stamp: u32, now_ms: u64) -> u32 {
    ((now_ms % (1 << 32)) as u32).wrapping_sub(stamp)
}

/// The longest one-way latency a live stamp can show: a stamp older than this
/// (a recording of the test pattern played from a file, a clock far off) is
/// not a measurement of this call.
pub const MAX_PLAUSIBLE_LATENCY_MS: u32 = 30_000;

/// The latency of a live stamped picture shown at `now_ms`, or `None` when the
/// stamp cannot be from a live test signal of this call (older than
/// [`MAX_PLAUSIBLE_LATENCY_MS`], or from the future). Sender and receiver share
/// a clock (`docs/test-signals.md`), so a live stamp is never in the future.
pub fn live_latency_ms(stamp: u32, now_ms: u64) -> Option<f64> {
    let latency = latency_ms(stamp, now_ms);
    (latency <= MAX_PLAUSIBLE_LATENCY_MS).then_some(f64::from(latency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn stamps_round_trip_at_many_sizes() {
        for (w, h) in [
            (320, 240),
            (640, 480),
            (1280, 720),
            (333, 250),
            (1921, 1081),
        ] {
            let mut frame = VideoFrame::black(w, h, SystemTime::now()).expect("valid");
            for value in [0u64, 1, 0xdead_beef, u64::from(u32::MAX), 1_764_000_123_456] {
                draw_stamp(&mut frame, value);
                assert_eq!(
                    StampReader::read(&frame),
                    Some((value % (1 << 32)) as u32),
                    "{w}x{h} {value}"
                );
            }
        }
    }

    #[test]
    fn a_damaged_or_missing_stamp_reads_as_none() {
        let mut frame = VideoFrame::black(640, 480, SystemTime::now()).expect("valid");
        assert_eq!(StampReader::read(&frame), None, "black has no sync");
        draw_stamp(&mut frame, 123_456);
        let s = cell_size(640) as usize;
        let flip = |frame: &mut VideoFrame, cell: usize| {
            let (y, _, _) = frame.planes_mut();
            for row in 0..s {
                for x in cell * s..(cell + 1) * s {
                    y[row * 640 + x] = if y[row * 640 + x] > 126 { 16 } else { 235 };
                }
            }
        };
        // The lowest bit of the value: the checksum no longer matches.
        flip(&mut frame, 33);
        assert_eq!(StampReader::read(&frame), None);
        flip(&mut frame, 33);
        assert_eq!(StampReader::read(&frame), Some(123_456));
        // A broken sync pattern.
        flip(&mut frame, 1);
        assert_eq!(StampReader::read(&frame), None);
    }

    #[test]
    fn noisy_pictures_never_read_as_stamps() {
        // Pure noise used to pass the sync and checksum test about once in 256
        // frames; noise over a gray picture, and a picture of soft gradients,
        // must never give a stamp.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        };
        let mut frame = VideoFrame::black(640, 480, SystemTime::now()).expect("valid");
        for round in 0..3000u32 {
            let (y, _, _) = frame.planes_mut();
            for (i, p) in y.iter_mut().enumerate() {
                *p = match round % 3 {
                    0 => next(),
                    1 => 96u8.wrapping_add(next() / 4),
                    _ => ((i % 640) as u32 * 255 / 640) as u8 ^ (next() & 7),
                };
            }
            assert_eq!(StampReader::read(&frame), None, "round {round}");
        }
    }

    #[test]
    fn a_stamp_dimmed_by_a_codec_still_reads() {
        // Black cells read as 40 and white ones as 200, with some ringing.
        let mut frame = VideoFrame::black(640, 480, SystemTime::now()).expect("valid");
        draw_stamp(&mut frame, 1_764_000_123_456);
        let (y, _, _) = frame.planes_mut();
        for (i, p) in y.iter_mut().enumerate().take(640 * 16) {
            let ringing = (i % 5) as u8 * 3;
            *p = if *p > 126 {
                200 - ringing
            } else {
                40 + ringing
            };
        }
        assert_eq!(
            StampReader::read(&frame),
            Some((1_764_000_123_456u64 % (1 << 32)) as u32)
        );
    }

    #[test]
    fn latency_wraps_modulo_2_to_the_32() {
        assert_eq!(latency_ms(u32::MAX - 4, 1 << 32), 5);
        assert_eq!(latency_ms(100, 130), 30);
    }

    #[test]
    fn only_live_stamps_give_a_latency() {
        assert_eq!(live_latency_ms(100, 130), Some(30.0));
        assert_eq!(live_latency_ms(u32::MAX - 4, 1 << 32), Some(5.0));
        // A stamp from yesterday (a recorded test pattern) or from the future.
        assert_eq!(live_latency_ms(100, 100 + 86_400_000), None);
        assert_eq!(live_latency_ms(200, 100), None);
    }
}
