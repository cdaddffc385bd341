//! Frames for the screen: scaled to fit a window (aspect ratio kept) and
//! converted to RGBA, by libraries (fast_image_resize, yuv), off the UI thread.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::MediaError;
use crate::frame::VideoFrame;

/// An RGBA picture ready to upload as a texture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbaImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes, row by row.
    pub pixels: Vec<u8>,
}

/// The largest size with the frame's aspect ratio that fits in `max_w`×`max_h`
/// (never upscaled, never below 2x2, always even).
pub fn fit(width: u32, height: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    let scale = (f64::from(max_w) / f64::from(width))
        .min(f64::from(max_h) / f64::from(height))
        .min(1.0);
    let even = |v: f64| ((v as u32) & !1).max(2);
    (
        even(f64::from(width) * scale),
        even(f64::from(height) * scale),
    )
}

/// Scales I420 frames (plane by plane, then one colour conversion at the
/// target size, which is cheaper than converting first) into RGBA.
pub struct DisplayScaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl std::fmt::Debug for DisplayScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DisplayScaler").finish_non_exhaustive()
    }
}

impl Default for DisplayScaler {
    fn default() -> Self {
        DisplayScaler::new()
    }
}

impl DisplayScaler {
    /// A bilinear scaler: sharp enough for video, cheap enough for every frame.
    pub fn new() -> DisplayScaler {
        DisplayScaler {
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(
                fast_image_resize::FilterType::Bilinear,
            )),
        }
    }

    /// `frame` scaled to fit `max_w`×`max_h`, as RGBA.
    pub fn to_rgba(
        &mut self,
        frame: &VideoFrame,
        max_w: u32,
        max_h: u32,
    ) -> Result<RgbaImage, MediaError> {
        let (w, h) = fit(frame.width(), frame.height(), max_w, max_h);
        let scaled = if (w, h) == (frame.width(), frame.height()) {
            None
        } else {
            Some(self.scale(frame, w, h)?)
        };
        let source = scaled.as_ref().unwrap_or(frame);
        let mut pixels = Vec::new();
        source.to_rgba_into(&mut pixels)?;
        Ok(RgbaImage {
            width: source.width(),
            height: source.height(),
            pixels,
        })
    }

    /// `frame` resized to exactly `w`×`h` in I420.
    pub fn scale(&mut self, frame: &VideoFrame, w: u32, h: u32) -> Result<VideoFrame, MediaError> {
        let mut out = VideoFrame::black(w, h, frame.capture_time)?;
        let (src_cw, src_ch) = (frame.chroma_width() as u32, frame.height().div_ceil(2));
        let (dst_cw, dst_ch) = (out.chroma_width() as u32, h.div_ceil(2));
        let (sy, su, sv) = frame.planes();
        let (dy, du, dv) = out.planes_mut();
        for (src, sw, sh, dst, dw, dh) in [
            (sy, frame.width(), frame.height(), dy, w, h),
            (su, src_cw, src_ch, du, dst_cw, dst_ch),
            (sv, src_cw, src_ch, dv, dst_cw, dst_ch),
        ] {
            let error = |e: &dyn std::fmt::Display| MediaError::Conversion(format!("scaling: {e}"));
            let src = ImageRef::new(sw, sh, src, PixelType::U8).map_err(|e| error(&e))?;
            let mut dst =
                Image::from_slice_u8(dw, dh, dst, PixelType::U8).map_err(|e| error(&e))?;
            self.resizer
                .resize(&src, &mut dst, &self.options)
                .map_err(|e| error(&e))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::StampReader;
    use crate::test_video::TestPatternSource;
    use std::time::SystemTime;

    #[test]
    fn fitting_keeps_the_aspect_ratio_and_never_upscales() {
        assert_eq!(fit(1280, 720, 640, 640), (640, 360));
        assert_eq!(fit(640, 480, 1920, 1080), (640, 480));
        assert_eq!(fit(640, 480, 320, 100), (132, 100));
    }

    #[test]
    fn a_scaled_frame_keeps_its_stamp_and_converts() {
        let source = TestPatternSource::new(1280, 720, 30).expect("valid");
        let frame = source.draw(3, SystemTime::now());
        let mut scaler = DisplayScaler::new();
        let small = scaler.scale(&frame, 640, 360).expect("scales");
        assert_eq!(StampReader::read(&small), StampReader::read(&frame));
        let image = scaler.to_rgba(&frame, 800, 800).expect("converts");
        assert_eq!((image.width, image.height), (800, 450));
        assert_eq!(image.pixels.len(), 800 * 450 * 4);
    }
}
