//! The picture a shared screen is sent as, whatever reads it (X11 or the
//! desktop portal): at most [`MAX_SCREEN_WIDTH`] wide, scaled by averaging
//! so text stays legible, and 5–15 pictures a second.

/// Screens wider than this are scaled down to it (height in proportion).
pub const MAX_SCREEN_WIDTH: u32 = 1920;
/// The frame rates a shared screen is sent at.
pub const SCREEN_FPS: std::ops::RangeInclusive<u32> = 5..=15;

/// The frame rate to capture a screen at when `asked` (`--fps`) was asked for.
pub fn screen_fps(asked: u32) -> u32 {
    asked.clamp(*SCREEN_FPS.start(), *SCREEN_FPS.end())
}

/// The size a screen of `width`x`height` is sent at: at most
/// [`MAX_SCREEN_WIDTH`] wide, the same shape, even on both sides (I420).
pub fn sent_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = if width > MAX_SCREEN_WIDTH {
        let scaled = u64::from(height) * u64::from(MAX_SCREEN_WIDTH) / u64::from(width);
        (MAX_SCREEN_WIDTH, scaled as u32)
    } else {
        (width, height)
    };
    ((w & !1).max(2), (h & !1).max(2))
}

/// Scales a BGRX picture to `out_w`x`out_h` (smaller), each output pixel the
/// average of the source pixels under it (sharp text stays legible, unlike
/// picking one pixel of each block).
pub(crate) fn scale_bgrx(
    from: &[u8],
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
    to: &mut Vec<u8>,
) {
    let (width, height, out_w, out_h) = (
        width as usize,
        height as usize,
        out_w as usize,
        out_h as usize,
    );
    to.clear();
    to.resize(out_w * out_h * 4, 0);
    for oy in 0..out_h {
        let (y0, y1) = (
            oy * height / out_h,
            ((oy + 1) * height / out_h).max(oy * height / out_h + 1),
        );
        for ox in 0..out_w {
            let (x0, x1) = (
                ox * width / out_w,
                ((ox + 1) * width / out_w).max(ox * width / out_w + 1),
            );
            let mut sum = [0u32; 3];
            for row in y0..y1.min(height) {
                let line = &from[row * width * 4..];
                for col in x0..x1.min(width) {
                    for (c, total) in sum.iter_mut().enumerate() {
                        *total += u32::from(line[col * 4 + c]);
                    }
                }
            }
            let n = ((y1.min(height) - y0) * (x1.min(width) - x0)).max(1) as u32;
            let out = &mut to[(oy * out_w + ox) * 4..][..4];
            for c in 0..3 {
                out[c] = (sum[c] / n) as u8;
            }
            out[3] = 255;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screens_are_sent_at_most_1920_wide_in_their_shape_and_even() {
        assert_eq!(sent_size(1280, 800), (1280, 800));
        assert_eq!(sent_size(1920, 1080), (1920, 1080));
        assert_eq!(sent_size(2560, 1440), (1920, 1080));
        assert_eq!(sent_size(3840, 1080), (1920, 540));
        assert_eq!(sent_size(1366, 767), (1366, 766));
    }

    #[test]
    fn a_screen_is_sent_at_5_to_15_frames_a_second() {
        assert_eq!(screen_fps(30), 15);
        assert_eq!(screen_fps(10), 10);
        assert_eq!(screen_fps(1), 5);
    }

    #[test]
    fn scaling_averages_the_pixels_under_each_output_pixel() {
        // 4x2 BGRX: a white and a black column pair, scaled to 2x1.
        let white = [255, 255, 255, 0];
        let black = [0, 0, 0, 0];
        let row: Vec<u8> = [white, black, white, white].concat();
        let from = [row.clone(), row].concat();
        let mut to = Vec::new();
        scale_bgrx(&from, 4, 2, 2, 1, &mut to);
        assert_eq!(to, [127, 127, 127, 255, 255, 255, 255, 255]);
    }
}
