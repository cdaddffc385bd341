//! Capture and encode of the video this peer sends, on a thread of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use duet_media::MediaError;
use duet_media::screen::ScreenSource;
use duet_media::source::{Notice, VideoSource, VideoSpec};
use duet_media::{H264Encoder, VideoFrame};
use tokio::sync::mpsc;

use super::counters::bump;
use super::device_switch::{DeviceSwitch, OpeningAside, settle_switch};
use super::encode_ladder::EncodeLadder;
use super::keyframe_pacer::KeyframePacer;
use super::rtp_writer::EncodedUnit;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn_with_device};
use super::{MediaNotice, Started, next_or_fail};
use crate::CallError;
use crate::peer::MIN_VIDEO_BPS;

/// An encoder is made again once the target is this many times the rate it
/// was started at. openh264 started at a narrow link's rate and raised to
/// 1.38 Mbit/s makes its next keyframe at 94 kB (one started at 1.38 Mbit/s:
/// 2.4 kB) and then skips a quarter of the pictures: on a clean rig link a
/// call that started at 120 kbit/s froze for 265 ms at its 10 s refresh, and
/// the ladder took it down to 320x240.
const ENCODER_OUTGROWN: u32 = 4;

/// Whether an encoder started at `started_bps` should be made again for
/// `target_bps` (see [`ENCODER_OUTGROWN`]).
fn encoder_outgrown(started_bps: u32, target_bps: u32) -> bool {
    target_bps / ENCODER_OUTGROWN >= started_bps
}

/// What `--video` asks for: opened on the capture thread (a camera handle cannot move between threads).
#[derive(Debug, Clone)]
pub(crate) struct VideoRequest {
    /// Source.
    pub(crate) spec: VideoSpec,
    /// Size asked for.
    pub(crate) width: u32,
    /// Size asked for.
    pub(crate) height: u32,
    /// Frame rate.
    pub(crate) fps: u32,
    /// Most bitrate of a camera, a test picture or a file.
    pub(crate) max_bps: u32,
    /// Most bitrate of a screen: sharp text needs more than a face.
    pub(crate) max_screen_bps: u32,
}

impl VideoRequest {
    /// The most `source` may be sent at.
    fn ceiling(&self, screen: bool) -> u32 {
        if screen {
            self.max_screen_bps
        } else {
            self.max_bps
        }
    }
}

/// Carries out a pending switch of the video source: the new source once it
/// is open. A screen is opened aside (`screen_opening`), so the current
/// source keeps going while the desktop portal's dialog waits for the person
/// (a newer switch calls that off); anything else opens between two frames.
fn switched_video(
    switch: &DeviceSwitch<VideoSpec>,
    screen_opening: &mut Option<(VideoSpec, OpeningAside<ScreenSource>)>,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    (width, height, fps): (u32, u32, u32),
) -> Option<VideoSource> {
    if screen_opening.is_some() && switch.is_pending() {
        tracing::info!("screen sharing called off before it started");
        *screen_opening = None;
    }
    if let Some((spec, opening)) = screen_opening.as_ref() {
        let opened = opening.poll()?;
        let opened = opened.map(|screen| (Some(VideoSource::Screen(Box::new(screen))), None));
        let new = settle_video_switch(spec, notices, opened);
        *screen_opening = None;
        return new;
    }
    let spec = switch.take()?;
    if let VideoSpec::Screen(monitor) = spec {
        let started =
            OpeningAside::start(move |call_off| ScreenSource::open_unless(monitor, fps, call_off));
        match started {
            Ok(opening) => *screen_opening = Some((spec, opening)),
            Err(err) => return settle_video_switch(&spec, notices, Err(err)),
        }
        return None;
    }
    let opened = VideoSource::open(&spec, width, height, fps);
    settle_video_switch(&spec, notices, opened)
}

/// [`settle_switch`] of the video, which also says when the source asked for
/// was not opened: the window shows which source is really sent.
fn settle_video_switch(
    spec: &VideoSpec,
    notices: &mpsc::UnboundedSender<MediaNotice>,
    opened: Result<(Option<VideoSource>, Option<Notice>), MediaError>,
) -> Option<VideoSource> {
    let failed = opened.is_err();
    let new = settle_switch(spec, "video", notices, opened);
    if failed {
        let _ = notices.send(MediaNotice::VideoKept(spec.clone()));
    }
    new
}

/// What the sender of `source` starts with: the encode ladder of its kind,
/// and its ceiling (a screen may use more than a camera, and a camera after
/// it less again), which congestion control follows.
fn follow_source(
    source: &VideoSource,
    request: &VideoRequest,
    shared: &MediaShared,
) -> (EncodeLadder, u32) {
    let max_bps = request.ceiling(source.is_screen());
    shared.send_budget.set_ceiling(u64::from(max_bps));
    (EncodeLadder::new(source.is_screen()), max_bps)
}

/// Starts the video capture-and-encode thread, which opens the source; resolves once
/// it is open. `None` units for `--video none`.
pub(crate) async fn start_video_sender(
    request: VideoRequest,
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<Started, CallError> {
    let (units, rx) = mpsc::channel(8);
    let VideoRequest {
        spec,
        width,
        height,
        fps,
        ..
    } = request.clone();
    let started = spawn_with_device(
        "duet-video-send",
        threads,
        move || VideoSource::open(&spec, width, height, fps),
        move |mut source: VideoSource| {
            let mut encoder: Option<H264Encoder> = None;
            let mut encoded_as = ((0, 0), 0);
            // The bitrate the encoder was made with.
            let mut started_bps = 0;
            let mut keyframes = KeyframePacer::default();
            let (mut ladder, mut max_bps) = follow_source(&source, &request, &shared);
            let mut captured: u64 = 0;
            let mut was_off = false;
            // Whether the last picture was skipped for the send queue.
            let mut backlogged = false;
            // A screen being opened (the portal's dialog may be open).
            let mut screen_opening: Option<(VideoSpec, OpeningAside<ScreenSource>)> = None;
            while !shared.stopped.load(Ordering::Relaxed) {
                if let Some(new) = switched_video(
                    &shared.video_switch,
                    &mut screen_opening,
                    &notices,
                    (width, height, fps),
                ) {
                    source = new;
                    (ladder, max_bps) = follow_source(&source, &request, &shared);
                    shared.send_budget.note_new_source();
                    // The new picture starts a new chain of references.
                    shared.keyframe_wanted.store(true, Ordering::Relaxed);
                }
                let was_screen = source.is_screen();
                let Some(mut frame) = next_or_fail(source.next_frame(), "video source", &notices)
                else {
                    return;
                };
                if was_screen && !source.is_screen() {
                    // The screen went away (sharing stopped from the
                    // desktop): the test pattern stands in, and the window
                    // goes back to what it sent before.
                    let _ = notices.send(MediaNotice::ScreenEnded);
                    (ladder, max_bps) = follow_source(&source, &request, &shared);
                    shared.send_budget.note_new_source();
                }
                let camera_off = shared.camera_off.load(Ordering::Relaxed);
                if camera_off {
                    frame = paused_picture(&frame);
                } else if was_off {
                    // The paused picture cost next to nothing; the camera will not.
                    shared.send_budget.note_new_source();
                }
                was_off = camera_off;
                // Shared with the self-view, not copied: the encoder reads the same planes.
                let frame = Arc::new(frame);
                if let Some(preview) = &shared.local_video {
                    preview.put(Arc::clone(&frame));
                }
                if !shared.sending.load(Ordering::Relaxed) {
                    continue;
                }
                if shared.send_budget.video_backlogged(Instant::now()) {
                    if !backlogged {
                        tracing::debug!("video waits in the send queue: pictures skipped");
                    }
                    backlogged = true;
                    continue;
                }
                backlogged = false;
                let target = u32::try_from(shared.send_budget.video_bps()).unwrap_or(u32::MAX);
                // A screen runs at its own rate (5–15 pictures a second).
                let fps = source.frame_rate(fps);
                // A link too narrow for the picture gets fewer pixels, then frames.
                let rung = ladder.rung(target, frame.width(), frame.height(), fps, Instant::now());
                captured += 1;
                if !captured.is_multiple_of(u64::from(rung.keep_one_in)) {
                    continue;
                }
                let frame = if rung.half_size {
                    match frame.half_size() {
                        Ok(half) => Arc::new(half),
                        Err(_) => frame,
                    }
                } else {
                    frame
                };
                // A new size or frame rate (the ladder, a camera fallback), or a
                // target the encoder has outgrown, needs a new encoder, whose
                // first picture is a keyframe.
                let size = (frame.width() & !1, frame.height() & !1);
                let rate = fps / rung.keep_one_in;
                let outgrown = target > 0 && encoder_outgrown(started_bps, target.min(max_bps));
                if encoder.is_none() || (size, rate) != encoded_as || outgrown {
                    if encoder.is_some() {
                        tracing::debug!(
                            ?size,
                            fps = rate,
                            target,
                            started_bps,
                            "encoding a new picture size, rate or bitrate"
                        );
                    }
                    // Started at the current target: a keyframe at the ceiling
                    // would be a burst the narrow link it is meant for cannot carry.
                    let start_bps = if target > 0 {
                        target.clamp(MIN_VIDEO_BPS, max_bps)
                    } else {
                        max_bps
                    };
                    started_bps = start_bps;
                    match H264Encoder::new(start_bps, rate.max(1)) {
                        Ok(new) => encoder = Some(new),
                        Err(err) => {
                            let _ = notices.send(MediaNotice::Failed(err.to_string()));
                            return;
                        }
                    }
                    encoded_as = (size, rate);
                }
                let Some(encoder) = encoder.as_mut() else {
                    continue;
                };
                if target > 0 {
                    let target = target.clamp(MIN_VIDEO_BPS, max_bps);
                    let current = encoder.bitrate_bps();
                    if current.abs_diff(target) > current / 20
                        && let Err(err) = encoder.set_bitrate(target)
                    {
                        tracing::debug!(%err, "bitrate not changed yet");
                    }
                }
                let asked = shared.keyframe_wanted.swap(false, Ordering::Relaxed);
                if keyframes.keyframe_now(asked, encoder.bitrate_bps(), Instant::now()) {
                    encoder.request_keyframe();
                }
                let cropped;
                let to_encode: &VideoFrame = if (frame.width(), frame.height()) == size {
                    &frame
                } else {
                    match crop_to_even(&frame) {
                        Some(frame) => {
                            cropped = frame;
                            &cropped
                        }
                        None => continue,
                    }
                };
                let encoded = encoder.encode(to_encode);
                if let Ok(result) = &encoded {
                    let bytes = result.as_ref().map(|encoded| encoded.data.len());
                    ladder.encoded(bytes, Instant::now());
                }
                let encoded = match encoded {
                    Ok(Some(encoded)) => encoded,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(%err, "dropping a frame the encoder refused");
                        continue;
                    }
                };
                let counters = &shared.counters;
                bump(&counters.frames_sent, 1);
                bump(&counters.video_bytes_sent, encoded.data.len() as u64);
                bump(&counters.keyframes_sent, u64::from(encoded.keyframe));
                if encoded.keyframe {
                    tracing::debug!(
                        bytes = encoded.data.len(),
                        target = encoder.bitrate_bps(),
                        "keyframe sent"
                    );
                    keyframes.keyframe_sent(
                        encoded.data.len(),
                        encoder.bitrate_bps(),
                        Instant::now(),
                    );
                }
                let unit = EncodedUnit {
                    data: Bytes::from(encoded.data),
                    capture_time: frame.capture_time,
                    samples: None,
                };
                if units.try_send(unit).is_err() {
                    // The network side is behind; a dropped frame breaks the chain of references.
                    shared.keyframe_wanted.store(true, Ordering::Relaxed);
                }
            }
        },
    )
    .await?;
    Ok(started.map_or((None, None), |notice| (Some(rx), notice)))
}

/// What the remote sees with the camera off: a dark picture with a pause sign,
/// still sent at the frame rate, so nobody mistakes it for a frozen call.
fn paused_picture(frame: &VideoFrame) -> VideoFrame {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let Ok(mut paused) = VideoFrame::black(frame.width(), frame.height(), frame.capture_time)
    else {
        return frame.clone();
    };
    let (luma, _, _) = paused.planes_mut();
    luma.fill(40);
    // Two light bars in the middle, each a tenth of the height wide and a third tall.
    let bar_w = (h / 10).max(2);
    let bar_h = (h / 3).max(4);
    let top = (h - bar_h) / 2;
    for left in [w / 2 - bar_w * 3 / 2, w / 2 + bar_w / 2] {
        for row in top..top + bar_h {
            let start = row * w + left.min(w);
            let end = (start + bar_w).min((row + 1) * w);
            luma[start..end].fill(170);
        }
    }
    paused
}

fn crop_to_even(frame: &VideoFrame) -> Option<VideoFrame> {
    let (w, h) = (frame.width() & !1, frame.height() & !1);
    let mut out = VideoFrame::black(w, h, frame.capture_time).ok()?;
    let (sy, su, sv) = frame.planes();
    let src_cw = frame.chroma_width();
    let dst_cw = out.chroma_width();
    let (dy, du, dv) = out.planes_mut();
    for row in 0..h as usize {
        let s = row * frame.width() as usize;
        dy[row * w as usize..(row + 1) * w as usize].copy_from_slice(&sy[s..s + w as usize]);
    }
    for row in 0..(h as usize / 2) {
        let s = row * src_cw;
        du[row * dst_cw..(row + 1) * dst_cw].copy_from_slice(&su[s..s + dst_cw]);
        dv[row * dst_cw..(row + 1) * dst_cw].copy_from_slice(&sv[s..s + dst_cw]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use duet_media::StampReader;

    use super::*;

    #[test]
    fn the_paused_picture_is_dark_with_a_light_pause_sign_and_no_stamp() {
        let mut frame = VideoFrame::black(640, 480, SystemTime::now()).expect("valid");
        duet_media::stamp::draw_stamp(&mut frame, 123_456);
        let paused = paused_picture(&frame);
        let (luma, _, _) = paused.planes();
        assert_eq!(luma[0], 40, "dark background");
        assert_eq!(luma[240 * 640 + 640 / 2 - 48 - 10], 170, "left bar");
        assert_eq!(luma[240 * 640 + 640 / 2 + 48], 170, "right bar");
        assert_eq!(luma[240 * 640 + 640 / 2], 40, "gap between the bars");
        assert!(StampReader::read(&paused).is_none());
    }

    #[test]
    fn an_encoder_is_made_again_once_the_target_is_four_times_its_start() {
        assert!(!encoder_outgrown(120_000, 240_000));
        assert!(!encoder_outgrown(120_000, 479_999));
        assert!(encoder_outgrown(120_000, 480_000));
        // Coming down never makes it again.
        assert!(!encoder_outgrown(1_382_400, 100_000));
    }

    #[test]
    fn odd_sized_pictures_are_cropped_to_even_for_the_encoder() {
        let frame = VideoFrame::black(321, 241, SystemTime::now()).expect("valid");
        let cropped = crop_to_even(&frame).expect("crops");
        assert_eq!((cropped.width(), cropped.height()), (320, 240));
    }
}
