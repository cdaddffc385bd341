//! Reading the test signals' stamps off a screenshot: proof that real decoded
//! video is on screen, wherever and however large it is drawn.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use duet_media::StampReader;

/// The luma (BT.601 limited range, as the stamps are specified) of a PNG's pixels, with its size.
pub fn png_luma(png_bytes: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let luma = pixels[..w * h * channels]
        .chunks_exact(channels)
        .map(|px| {
            // ImageMagick writes a grey PNG when every pixel is grey.
            let (r, g, b) = if channels >= 3 {
                (f32::from(px[0]), f32::from(px[1]), f32::from(px[2]))
            } else {
                (f32::from(px[0]), f32::from(px[0]), f32::from(px[0]))
            };
            (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round() as u8
        })
        .collect();
    (luma, w, h)
}

/// A stamp found on screen: where, how large its cells, and its value.
#[derive(Debug, Clone, Copy)]
pub struct ScreenStamp {
    pub x: usize,
    pub y: usize,
    pub width: f32,
    pub latency_ms: i64,
}

const WHITE: u8 = 200;

/// Every stamp of `test-signals.md` on a screen of luma: at each top-left corner
/// of a white area, the picture's displayed width is tried around 40 times the
/// white cell's width; the row of cells is resampled to a 640-wide frame and
/// read by the project's own [`StampReader`]. Only stamps within 30 s of now
/// count (anything else would be a chance match). `mirrored` reads the screen
/// flipped left to right, as the self-view shows the local picture.
pub fn find_stamps(luma: &[u8], w: usize, h: usize, mirrored: bool) -> Vec<ScreenStamp> {
    let at = |x: usize, y: usize| {
        if mirrored {
            luma[y * w + (w - 1 - x)]
        } else {
            luma[y * w + x]
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut found: Vec<ScreenStamp> = Vec::new();
    let mut row = vec![0u8; 640 * 16];
    for y in 1..h.saturating_sub(8) {
        for x in 1..w.saturating_sub(8) {
            if at(x, y) < WHITE || at(x - 1, y) >= WHITE || at(x, y - 1) >= WHITE {
                continue;
            }
            if found
                .iter()
                .any(|f| x.abs_diff(f.x) < 8 && y.abs_diff(f.y) < 8)
            {
                continue;
            }
            // The white cell's width, measured a little below its top edge.
            let probe = (y + 2).min(h - 1);
            let cell = (x..w).take_while(|&xx| at(xx, probe) >= WHITE).count() as f32;
            if cell < 4.0 {
                continue;
            }
            // Cell 1 is always black and cell 0 as tall as it is wide: this
            // cheap check skips white text and the like.
            let (half, one_and_half) = ((cell / 2.0) as usize, (cell * 1.5) as usize);
            if x + one_and_half >= w
                || y + half >= h
                || at(x + one_and_half, y + half) > 60
                || at(x + half, y + half) < WHITE
            {
                continue;
            }
            let mut width = (cell - 1.5) * 40.0;
            while width <= (cell + 1.5) * 40.0 {
                let scale = width / 640.0;
                if x as f32 + width > w as f32 || y as f32 + 16.0 * scale > h as f32 {
                    break;
                }
                for (r, out) in row.chunks_exact_mut(640).enumerate() {
                    let sy = y + ((r as f32 + 0.5) * scale) as usize;
                    for (c, px) in out.iter_mut().enumerate() {
                        *px = at(x + ((c as f32 + 0.5) * scale) as usize, sy);
                    }
                }
                if let Some(stamp) = StampReader::read_luma(&row, 640, 16, 640) {
                    let latency = duet_media::stamp::latency_ms(stamp, now_ms) as i32;
                    if latency.abs() < 30_000 {
                        found.push(ScreenStamp {
                            x,
                            y,
                            width,
                            latency_ms: i64::from(latency),
                        });
                        break;
                    }
                }
                width += 2.0;
            }
        }
    }
    found
}

/// A thread that draws the stamped test pattern (`docs/test-signals.md`)
/// `fps` times a second as BGRX pixels and hands each picture to a window
/// or surface to show; stopped (and joined) when dropped.
pub struct PatternPainter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    painter: Option<std::thread::JoinHandle<()>>,
}

impl PatternPainter {
    /// Starts painting: `show` gets each `width`x`height` picture, and the
    /// painting ends when it returns `false`.
    pub fn start<Show>(width: u32, height: u32, fps: u32, mut show: Show) -> PatternPainter
    where
        Show: FnMut(&[u8]) -> bool + Send + 'static,
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let painter = std::thread::spawn({
            let stop = std::sync::Arc::clone(&stop);
            move || {
                let pattern = duet_media::TestPatternSource::new(width, height, fps).unwrap();
                let interval = std::time::Duration::from_secs(1) / fps;
                let mut index = 0;
                while !stop.load(Ordering::Relaxed) {
                    let frame = pattern.draw(index, SystemTime::now());
                    index += 1;
                    let mut bgrx = frame.to_rgba().unwrap();
                    for px in bgrx.chunks_exact_mut(4) {
                        px.swap(0, 2);
                    }
                    if !show(&bgrx) {
                        break;
                    }
                    std::thread::sleep(interval);
                }
            }
        });
        PatternPainter {
            stop,
            painter: Some(painter),
        }
    }
}

impl Drop for PatternPainter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(painter) = self.painter.take() {
            let _ = painter.join();
        }
    }
}
