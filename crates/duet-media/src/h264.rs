//! H.264 for WebRTC with openh264: constrained baseline, real-time rate
//! control, keyframes on request, and a decoder that says when it needs a
//! keyframe instead of failing or showing garbage.

use std::time::Duration;

use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level,
    Profile, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSource;

use crate::MediaError;
use crate::frame::VideoFrame;

/// The SDP format parameters every Duet H.264 stream matches.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// One encoded picture: an Annex-B access unit.
#[derive(Debug, Clone)]
pub struct EncodedVideo {
    /// NAL units with start codes, SPS/PPS included before keyframes.
    pub data: Vec<u8>,
    /// Whether a decoder can start here.
    pub keyframe: bool,
}

impl YUVSource for VideoFrame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width() as usize, self.height() as usize)
    }

    fn strides(&self) -> (usize, usize, usize) {
        let chroma = self.chroma_width();
        (self.width() as usize, chroma, chroma)
    }

    fn y(&self) -> &[u8] {
        self.planes().0
    }

    fn u(&self) -> &[u8] {
        self.planes().1
    }

    fn v(&self) -> &[u8] {
        self.planes().2
    }
}

/// Real-time H.264 encoder.
pub struct H264Encoder {
    encoder: Encoder,
    bitrate_bps: u32,
    /// Ceiling the encoder was told; raising the target above it needs it raised first.
    max_bitrate_bps: u32,
    frames: u64,
    frame_interval: Duration,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("bitrate_bps", &self.bitrate_bps)
            .field("frames", &self.frames)
            .finish()
    }
}

impl H264Encoder {
    /// An encoder for `fps` frames per second at `bitrate_bps` to start with.
    pub fn new(bitrate_bps: u32, fps: u32) -> Result<H264Encoder, MediaError> {
        let fps = fps.clamp(1, 120);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .usage_type(UsageType::CameraVideoRealTime)
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .complexity(Complexity::Low)
            // openh264 holds the bitrate only when it may skip frames (as
            // libwebrtc configures it); skipped frames come out as `None`.
            .skip_frames(true)
            .scene_change_detect(false)
            // Keyframes come on request (PLI/FIR, and the caller's own
            // refreshes): an unasked one is a burst the caller may not want.
            .intra_frame_period(IntraFramePeriod::auto())
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|err| MediaError::Codec(format!("cannot create the H.264 encoder: {err}")))?;
        Ok(H264Encoder {
            encoder,
            bitrate_bps,
            max_bitrate_bps: bitrate_bps,
            frames: 0,
            frame_interval: Duration::from_secs(1) / fps,
        })
    }

    /// Encodes one frame. `None` when the encoder produced nothing for it.
    pub fn encode(&mut self, frame: &VideoFrame) -> Result<Option<EncodedVideo>, MediaError> {
        if !frame.width().is_multiple_of(2) || !frame.height().is_multiple_of(2) {
            return Err(MediaError::BadSize {
                width: frame.width(),
                height: frame.height(),
            });
        }
        let timestamp = openh264::Timestamp::from_millis(
            (self.frame_interval * u32::try_from(self.frames).unwrap_or(u32::MAX)).as_millis()
                as u64,
        );
        self.frames += 1;
        let stream = self
            .encoder
            .encode_at(frame, timestamp)
            .map_err(|err| MediaError::Codec(format!("H.264 encoding failed: {err}")))?;
        let keyframe = match stream.frame_type() {
            FrameType::IDR | FrameType::I => true,
            FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => return Ok(None),
        };
        let data = stream.to_vec();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedVideo { data, keyframe }))
    }

    /// The next encoded frame will be a keyframe (answer to a PLI or FIR).
    pub fn request_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// The target bitrate now.
    pub fn bitrate_bps(&self) -> u32 {
        self.bitrate_bps
    }

    /// Changes the target bitrate while running (from the congestion controller).
    /// Takes effect from the next frame; before the first frame it only changes
    /// what the encoder will start with... which openh264 sets at its first encode.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        if bps == self.bitrate_bps {
            return Ok(());
        }
        if self.frames == 0 {
            return Err(MediaError::Codec(
                "the H.264 bitrate can change only after the first frame".into(),
            ));
        }
        // The one spatial layer has its own ceiling and target beside the
        // overall ones; openh264 checks them against each other.
        let layers = [
            openh264_sys2::SPATIAL_LAYER_0,
            openh264_sys2::SPATIAL_LAYER_ALL,
        ];
        if bps > self.max_bitrate_bps {
            for layer in layers.into_iter().rev() {
                self.set_option(openh264_sys2::ENCODER_OPTION_MAX_BITRATE, layer, bps)?;
            }
            self.max_bitrate_bps = bps;
        }
        let order = if bps > self.bitrate_bps {
            [layers[1], layers[0]]
        } else {
            layers
        };
        for layer in order {
            self.set_option(openh264_sys2::ENCODER_OPTION_BITRATE, layer, bps)?;
        }
        self.bitrate_bps = bps;
        Ok(())
    }

    fn set_option(
        &mut self,
        option: openh264_sys2::ENCODER_OPTION,
        layer: openh264_sys2::LAYER_NUM,
        bps: u32,
    ) -> Result<(), MediaError> {
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: layer,
            iBitrate: i32::try_from(bps).unwrap_or(i32::MAX),
        };
        // SAFETY: the encoder is initialised (a frame was encoded, which is
        // when openh264 creates it), and both options take a pointer to an
        // SBitrateInfo that lives for the duration of the call.
        #[allow(unsafe_code)]
        let status = unsafe {
            self.encoder
                .raw_api()
                .set_option(option, std::ptr::from_mut(&mut info).cast())
        };
        if status != 0 {
            return Err(MediaError::Codec(format!(
                "openh264 refused bitrate {bps} for layer {layer} (option {option}, status {status})"
            )));
        }
        Ok(())
    }
}

/// What the decoder made of an access unit.
#[derive(Debug)]
pub enum Decoded {
    /// A picture ready for display.
    Frame(VideoFrame),
    /// Accepted, but no picture came out of it (parameter sets, buffering).
    Nothing,
    /// The stream is broken since a loss or corrupt data: ask the sender for a
    /// keyframe. Until one arrives, pictures are withheld rather than shown damaged.
    NeedKeyframe,
}

/// H.264 decoder that survives losses.
pub struct H264Decoder {
    decoder: Decoder,
    /// Set after a loss or an error; cleared by the next IDR.
    waiting_for_keyframe: bool,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("waiting_for_keyframe", &self.waiting_for_keyframe)
            .finish()
    }
}

impl H264Decoder {
    /// A decoder waiting for its first keyframe.
    pub fn new() -> Result<H264Decoder, MediaError> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|err| MediaError::Codec(format!("cannot create the H.264 decoder: {err}")))?;
        Ok(H264Decoder {
            decoder,
            waiting_for_keyframe: true,
        })
    }

    /// Whether the decoder is waiting for a keyframe.
    pub fn needs_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Tells the decoder that data was lost before the next access unit (the
    /// depacketizer saw a sequence gap): it waits for a keyframe.
    pub fn note_loss(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Decodes one Annex-B access unit captured at `capture_time`.
    pub fn decode(&mut self, access_unit: &[u8], capture_time: std::time::SystemTime) -> Decoded {
        if self.waiting_for_keyframe {
            if !is_idr(access_unit) {
                return Decoded::NeedKeyframe;
            }
            self.waiting_for_keyframe = false;
        }
        match self.decoder.decode(access_unit) {
            Ok(Some(yuv)) => match copy_frame(&yuv, capture_time) {
                Some(frame) => Decoded::Frame(frame),
                None => {
                    self.waiting_for_keyframe = true;
                    Decoded::NeedKeyframe
                }
            },
            Ok(None) => Decoded::Nothing,
            Err(err) => {
                tracing::debug!(%err, "H.264 decoding failed; waiting for a keyframe");
                self.waiting_for_keyframe = true;
                Decoded::NeedKeyframe
            }
        }
    }
}

/// Whether an access unit holds an IDR slice (NAL type 5).
pub fn is_idr(access_unit: &[u8]) -> bool {
    openh264::nal_units(access_unit).any(|nal| {
        let header = nal.iter().skip_while(|&&b| b == 0).nth(1);
        header.is_some_and(|h| h & 0x1f == 5)
    })
}

fn copy_frame(yuv: &impl YUVSource, capture_time: std::time::SystemTime) -> Option<VideoFrame> {
    let (w, h) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let mut frame =
        VideoFrame::black(u32::try_from(w).ok()?, u32::try_from(h).ok()?, capture_time).ok()?;
    let chroma_width = frame.chroma_width();
    let (y, u, v) = frame.planes_mut();
    copy_plane(yuv.y(), ys, y, w)?;
    copy_plane(yuv.u(), us, u, chroma_width)?;
    copy_plane(yuv.v(), vs, v, chroma_width)?;
    Some(frame)
}

fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], width: usize) -> Option<()> {
    for (row, out) in dst.chunks_exact_mut(width).enumerate() {
        let start = row * stride;
        out.copy_from_slice(src.get(start..start + width)?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::sync::mpsc;
    use std::time::{Duration, SystemTime};

    use proptest::prelude::*;

    use super::*;

    /// Real access units: a keyframe and the P pictures after it, of a
    /// moving pattern, encoded once for every case.
    fn encoded() -> &'static [EncodedVideo] {
        static UNITS: OnceLock<Vec<EncodedVideo>> = OnceLock::new();
        UNITS.get_or_init(|| {
            let mut encoder = H264Encoder::new(400_000, 30).expect("encoder");
            (0..6u32)
                .filter_map(|n| {
                    let mut frame = VideoFrame::black(160, 96, SystemTime::now()).expect("frame");
                    let (y, u, v) = frame.planes_mut();
                    for (i, px) in y.iter_mut().enumerate() {
                        *px = ((i as u32 % 160 + n * 7) ^ (i as u32 / 160 * 3)) as u8;
                    }
                    u.fill(90 + n as u8);
                    v.fill(160);
                    encoder.encode(&frame).expect("encodes")
                })
                .collect()
        })
    }

    /// What a lossy or hostile path may do to an access unit's bytes.
    #[derive(Debug, Clone)]
    enum Damage {
        Truncate(prop::sample::Index),
        Flip(prop::sample::Index, u8),
        Insert(prop::sample::Index, Vec<u8>),
        Remove(prop::sample::Index, prop::sample::Index),
        /// Bytes of another unit in the middle of this one.
        Splice(prop::sample::Index, usize, prop::sample::Index),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            any::<prop::sample::Index>().prop_map(Damage::Truncate),
            (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
            (
                any::<prop::sample::Index>(),
                proptest::collection::vec(any::<u8>(), 1..16)
            )
                .prop_map(|(i, b)| Damage::Insert(i, b)),
            (any::<prop::sample::Index>(), any::<prop::sample::Index>())
                .prop_map(|(a, b)| Damage::Remove(a, b)),
            (
                any::<prop::sample::Index>(),
                0usize..6,
                any::<prop::sample::Index>()
            )
                .prop_map(|(at, unit, from)| Damage::Splice(at, unit, from)),
        ]
    }

    fn apply(unit: &mut Vec<u8>, damage: &Damage) {
        let units = encoded();
        match damage {
            Damage::Truncate(at) => {
                let at = at.index(unit.len() + 1);
                unit.truncate(at);
            }
            Damage::Flip(at, x) if !unit.is_empty() => {
                let at = at.index(unit.len());
                unit[at] ^= x;
            }
            Damage::Insert(at, bytes) => {
                let at = at.index(unit.len() + 1);
                unit.splice(at..at, bytes.iter().copied());
            }
            Damage::Remove(a, b) if !unit.is_empty() => {
                let (a, b) = (a.index(unit.len()), b.index(unit.len()));
                unit.drain(a.min(b)..a.max(b));
            }
            Damage::Splice(at, other, from) => {
                let other = &units[other % units.len()].data;
                let from = from.index(other.len());
                let at = at.index(unit.len() + 1);
                unit.splice(at..at, other[from..].iter().copied());
            }
            _ => {}
        }
    }

    /// Property cases: few in the test suite (each decodes real pictures),
    /// `PROPTEST_CASES` for longer runs (docs/fuzzing.md).
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64)
    }

    /// Decodes `units` in order on another thread; `None` if it took longer
    /// than a generous deadline (stuck). Each outcome: a picture's size, or
    /// none.
    fn decode_all(units: Vec<Vec<u8>>) -> Option<Vec<Option<(u32, u32)>>> {
        let (done, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let mut decoder = H264Decoder::new().expect("decoder");
            let sizes: Vec<_> = units
                .iter()
                .map(|unit| match decoder.decode(unit, SystemTime::now()) {
                    Decoded::Frame(frame) => Some((frame.width(), frame.height())),
                    Decoded::Nothing | Decoded::NeedKeyframe => None,
                })
                .collect();
            let _ = done.send(sizes);
        });
        outcome.recv_timeout(Duration::from_secs(20)).ok()
    }

    #[test]
    fn the_real_units_decode_to_pictures_of_their_size() {
        assert!(encoded()[0].keyframe);
        let units = encoded().iter().map(|e| e.data.clone()).collect();
        let sizes = decode_all(units).expect("decodes in time");
        assert!(sizes.iter().all(|s| *s == Some((160, 96))), "{sizes:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Real access units, truncated, corrupted and spliced, in any order
        /// (after a clean keyframe or not, so that damaged P pictures reach
        /// openh264 too): the decoder answers each (a picture, nothing, or
        /// "need a keyframe") without panicking or hanging, and a picture it
        /// gives has a size `VideoFrame` allows.
        #[test]
        fn damaged_access_units_give_an_answer_never_a_panic_or_a_hang(
            clean_start in any::<bool>(),
            script in proptest::collection::vec(
                (0usize..6, proptest::collection::vec(damage(), 0..4)),
                1..8,
            ),
        ) {
            let units = encoded();
            let mut damaged = Vec::new();
            if clean_start {
                damaged.push(units[0].data.clone());
            }
            for (unit, damages) in &script {
                let mut bytes = units[unit % units.len()].data.clone();
                for d in damages {
                    apply(&mut bytes, d);
                }
                damaged.push(bytes);
            }
            let sizes = decode_all(damaged);
            prop_assert!(sizes.is_some(), "the decoder did not answer within 20 s");
            for (w, h) in sizes.into_iter().flatten().flatten() {
                prop_assert!(w > 0 && h > 0 && w <= 8192 && h <= 8192, "{}x{}", w, h);
            }
        }
    }
}
