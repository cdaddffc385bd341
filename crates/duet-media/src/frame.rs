//! Raw pictures and sound as they travel between sources, codecs and sinks.

use std::time::{SystemTime, UNIX_EPOCH};

use yuv::{YuvPlanarImage, YuvRange, YuvStandardMatrix};

use crate::MediaError;

/// Milliseconds since the Unix epoch: the clock stamps and beeps are measured against.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, with the fraction: the clock a
/// speaker's heard times and a microphone's capture times share (the echo
/// canceller lines the two up by it).
pub fn unix_ms_f64(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

/// Samples per second of every audio frame in Duet.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms audio frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// One picture in I420 (BT.601, limited range): the format the codecs and the
/// stamp reader work in. Planes are tightly packed: stride = width.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    width: u32,
    height: u32,
    /// Y plane, then U, then V.
    data: Vec<u8>,
    /// When the picture was captured (or drawn), for pacing and latency.
    pub capture_time: SystemTime,
}

impl std::fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("capture_ms", &unix_ms(self.capture_time))
            .finish()
    }
}

impl VideoFrame {
    /// A black frame (Y=16, neutral chroma).
    pub fn black(
        width: u32,
        height: u32,
        capture_time: SystemTime,
    ) -> Result<VideoFrame, MediaError> {
        if width == 0 || height == 0 || width > 8192 || height > 8192 {
            return Err(MediaError::BadSize { width, height });
        }
        let (luma, chroma) = Self::plane_sizes(width, height);
        let mut data = vec![16u8; luma + 2 * chroma];
        data[luma..].fill(128);
        Ok(VideoFrame {
            width,
            height,
            data,
            capture_time,
        })
    }

    /// Wraps I420 planes; fails if they are not the size `width`×`height` needs.
    pub fn from_planes(
        width: u32,
        height: u32,
        y: &[u8],
        u: &[u8],
        v: &[u8],
        capture_time: SystemTime,
    ) -> Result<VideoFrame, MediaError> {
        let mut frame = VideoFrame::black(width, height, capture_time)?;
        let (luma, chroma) = Self::plane_sizes(width, height);
        if y.len() != luma || u.len() != chroma || v.len() != chroma {
            return Err(MediaError::BadSize { width, height });
        }
        frame.data[..luma].copy_from_slice(y);
        frame.data[luma..luma + chroma].copy_from_slice(u);
        frame.data[luma + chroma..].copy_from_slice(v);
        Ok(frame)
    }

    /// Bytes of the luma plane and of each chroma plane.
    pub fn plane_sizes(width: u32, height: u32) -> (usize, usize) {
        let (w, h) = (width as usize, height as usize);
        (w * h, w.div_ceil(2) * h.div_ceil(2))
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of the chroma planes.
    pub fn chroma_width(&self) -> usize {
        (self.width as usize).div_ceil(2)
    }

    /// The Y, U and V planes.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (luma, chroma) = Self::plane_sizes(self.width, self.height);
        let (y, uv) = self.data.split_at(luma);
        let (u, v) = uv.split_at(chroma);
        (y, u, v)
    }

    /// The picture at half its width and height (each output sample the
    /// average of a 2x2 block): what the sender encodes when the link cannot
    /// carry the full size. A stamp survives it (`docs/test-signals.md`: its
    /// cells scale with the width).
    pub fn half_size(&self) -> Result<VideoFrame, MediaError> {
        let (width, height) = (self.width / 2, self.height / 2);
        let mut half = VideoFrame::black(width, height, self.capture_time)?;
        let (y, u, v) = self.planes();
        let chroma_width = self.chroma_width();
        let half_chroma_width = half.chroma_width();
        let (hy, hu, hv) = half.planes_mut();
        downscale_plane(y, self.width as usize, hy, width as usize);
        downscale_plane(u, chroma_width, hu, half_chroma_width);
        downscale_plane(v, chroma_width, hv, half_chroma_width);
        Ok(half)
    }

    /// The Y, U and V planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (luma, chroma) = Self::plane_sizes(self.width, self.height);
        let (y, uv) = self.data.split_at_mut(luma);
        let (u, v) = uv.split_at_mut(chroma);
        (y, u, v)
    }

    /// Converts to RGBA (for display), `width * height * 4` bytes, into `rgba`.
    pub fn to_rgba_into(&self, rgba: &mut Vec<u8>) -> Result<(), MediaError> {
        let (y, u, v) = self.planes();
        let chroma_stride = self.chroma_width() as u32;
        let image = YuvPlanarImage {
            y_plane: y,
            y_stride: self.width,
            u_plane: u,
            u_stride: chroma_stride,
            v_plane: v,
            v_stride: chroma_stride,
            width: self.width,
            height: self.height,
        };
        rgba.resize(self.width as usize * self.height as usize * 4, 0);
        yuv::yuv420_to_rgba(
            &image,
            rgba,
            self.width * 4,
            YuvRange::Limited,
            YuvStandardMatrix::Bt601,
        )
        .map_err(|err| MediaError::Conversion(err.to_string()))
    }

    /// Converts to a new RGBA buffer.
    pub fn to_rgba(&self) -> Result<Vec<u8>, MediaError> {
        let mut rgba = Vec::new();
        self.to_rgba_into(&mut rgba)?;
        Ok(rgba)
    }

    /// Builds a frame from packed RGB (as cameras decode to), converting with the library.
    pub fn from_rgb(
        width: u32,
        height: u32,
        rgb: &[u8],
        capture_time: SystemTime,
    ) -> Result<VideoFrame, MediaError> {
        VideoFrame::from_packed(width, height, rgb, 3, capture_time, yuv::rgb_to_yuv420)
    }

    /// Builds a frame from packed BGRA or BGRX (as X11 screens read), converting with the library.
    pub fn from_bgra(
        width: u32,
        height: u32,
        bgra: &[u8],
        capture_time: SystemTime,
    ) -> Result<VideoFrame, MediaError> {
        VideoFrame::from_packed(width, height, bgra, 4, capture_time, yuv::bgra_to_yuv420)
    }

    /// A frame from `bytes_per_pixel`-byte packed pixels, through `convert`
    /// (one of the library's packed-to-I420 conversions).
    fn from_packed(
        width: u32,
        height: u32,
        pixels: &[u8],
        bytes_per_pixel: u32,
        capture_time: SystemTime,
        convert: PackedToI420,
    ) -> Result<VideoFrame, MediaError> {
        let mut frame = VideoFrame::black(width, height, capture_time)?;
        if pixels.len() != width as usize * height as usize * bytes_per_pixel as usize {
            return Err(MediaError::BadSize { width, height });
        }
        let chroma_stride = frame.chroma_width() as u32;
        let (y, u, v) = frame.planes_mut();
        let mut image = yuv::YuvPlanarImageMut {
            y_plane: yuv::BufferStoreMut::Borrowed(y),
            y_stride: width,
            u_plane: yuv::BufferStoreMut::Borrowed(u),
            u_stride: chroma_stride,
            v_plane: yuv::BufferStoreMut::Borrowed(v),
            v_stride: chroma_stride,
            width,
            height,
        };
        convert(
            &mut image,
            pixels,
            width * bytes_per_pixel,
            YuvRange::Limited,
            YuvStandardMatrix::Bt601,
            yuv::YuvConversionMode::Balanced,
        )
        .map_err(|err| MediaError::Conversion(err.to_string()))?;
        Ok(frame)
    }
}

/// The yuv crate's conversions from packed pixels to I420 (`rgb_to_yuv420`, `bgra_to_yuv420`).
type PackedToI420 = fn(
    &mut yuv::YuvPlanarImageMut<'_, u8>,
    &[u8],
    u32,
    YuvRange,
    YuvStandardMatrix,
    yuv::YuvConversionMode,
) -> Result<(), yuv::YuvError>;

/// 20 ms of 48 kHz mono audio, samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// [`FRAME_SAMPLES`] samples.
    pub samples: Vec<f32>,
    /// Wall-clock time of the first sample.
    pub capture_time: SystemTime,
}

/// 2x2 box average of `from` (rows of `from_width`) into `to` (rows of `to_width`).
fn downscale_plane(from: &[u8], from_width: usize, to: &mut [u8], to_width: usize) {
    if from_width == 0 || to_width == 0 {
        return;
    }
    for (row, out) in to.chunks_exact_mut(to_width).enumerate() {
        let top = from.chunks_exact(from_width).nth(2 * row);
        let bottom = from.chunks_exact(from_width).nth(2 * row + 1).or(top);
        let (Some(top), Some(bottom)) = (top, bottom) else {
            return;
        };
        for (x, px) in out.iter_mut().enumerate() {
            let (left, right) = (2 * x, (2 * x + 1).min(from_width - 1));
            let sum = u16::from(top[left])
                + u16::from(top[right])
                + u16::from(bottom[left])
                + u16::from(bottom[right]);
            *px = ((sum + 2) / 4) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_size_averages_blocks_and_keeps_the_stamp() {
        let source = crate::TestPatternSource::new(640, 480, 30).expect("valid");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_123_456);
        let frame = source.draw(5, t);
        let half = frame.half_size().expect("halves");
        assert_eq!((half.width(), half.height()), (320, 240));
        assert_eq!(half.capture_time, t);
        assert_eq!(
            crate::StampReader::read(&half),
            crate::StampReader::read(&frame)
        );
        let mut grey = VideoFrame::black(4, 2, t).expect("valid");
        grey.planes_mut()
            .0
            .copy_from_slice(&[10, 20, 30, 50, 30, 40, 70, 90]);
        assert_eq!(grey.half_size().expect("halves").planes().0, &[25, 60]);
    }

    #[test]
    fn rgba_conversion_keeps_grey_grey() {
        let frame = VideoFrame::black(64, 48, SystemTime::now()).expect("valid size");
        let rgba = frame.to_rgba().expect("converts");
        assert_eq!(rgba.len(), 64 * 48 * 4);
        // Limited-range black (Y=16) is RGB 0.
        assert!(
            rgba.chunks(4)
                .all(|px| px[0] < 3 && px[1] < 3 && px[2] < 3 && px[3] == 255)
        );
    }

    #[test]
    fn rgb_round_trip_is_close() {
        let (w, h) = (32u32, 16u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 40, 90]).collect();
        let frame = VideoFrame::from_rgb(w, h, &rgb, SystemTime::now()).expect("converts");
        let back = frame.to_rgba().expect("converts");
        for px in back.chunks(4) {
            assert!((i32::from(px[0]) - 200).abs() <= 4, "{px:?}");
            assert!((i32::from(px[1]) - 40).abs() <= 4, "{px:?}");
            assert!((i32::from(px[2]) - 90).abs() <= 4, "{px:?}");
        }
    }

    #[test]
    fn odd_sizes_have_rounded_up_chroma_and_wrong_planes_are_refused() {
        assert_eq!(VideoFrame::plane_sizes(5, 3), (15, 6));
        let now = SystemTime::now();
        assert!(VideoFrame::from_planes(4, 4, &[0; 16], &[0; 4], &[0; 4], now).is_ok());
        assert!(VideoFrame::from_planes(4, 4, &[0; 15], &[0; 4], &[0; 4], now).is_err());
        assert!(VideoFrame::black(0, 4, now).is_err());
    }
}
