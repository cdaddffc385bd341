//! The video decode thread: decodes what the bounded decode queue holds,
//! reads stamps, counts frames and freezes, and publishes pictures.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use duet_media::frame::unix_ms;
use duet_media::stamp::live_latency_ms;
use duet_media::{Decoded, H264Decoder, StampReader};
use tokio::sync::mpsc;

use super::MediaNotice;
use super::counters::bump;
use super::decode_queue::{DECODE_QUEUE_UNITS, DecodeChannel, DecodeInput};
use super::freeze::FreezeDetector;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn};
use crate::CallError;

/// How long the thread waits for input before it looks at the stop flag again.
const INPUT_WAIT: Duration = Duration::from_millis(100);

/// Starts the video decode thread; returns the queue that feeds it. The
/// thread returns within [`INPUT_WAIT`] of `shared.stopped`.
pub(crate) fn start_video_decoder(
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    threads: &mut MediaThreads,
) -> Result<DecodeChannel, CallError> {
    let input = DecodeChannel::new(DECODE_QUEUE_UNITS);
    let queue = input.clone();
    spawn("duet-video-decode", threads, move || {
        let mut decoder = match H264Decoder::new() {
            Ok(decoder) => decoder,
            Err(err) => {
                let _ = notices.send(MediaNotice::Failed(err.to_string()));
                return;
            }
        };
        let mut first_of_call = true;
        let mut freezes = FreezeDetector::new();
        while !shared.stopped.load(Ordering::Relaxed) {
            let Some(message) = queue.next(INPUT_WAIT) else {
                continue;
            };
            let unit = match message {
                DecodeInput::Unit { data, .. } => data,
                DecodeInput::Loss => {
                    decoder.note_loss();
                    shared.pli_wanted.store(true, Ordering::Relaxed);
                    continue;
                }
                DecodeInput::Reset => {
                    match H264Decoder::new() {
                        Ok(fresh) => decoder = fresh,
                        Err(err) => tracing::warn!(%err, "keeping the old decoder"),
                    }
                    first_of_call = true;
                    freezes.restart();
                    continue;
                }
            };
            match decoder.decode(&unit, SystemTime::now()) {
                Decoded::Frame(frame) => {
                    let now = SystemTime::now();
                    let shown_at = Instant::now();
                    let counters = &shared.counters;
                    counters.frame_decoded(frame.width(), frame.height());
                    // Only a live test stamp gives a latency (docs/test-signals.md).
                    if let Some(ms) = StampReader::read(&frame)
                        .and_then(|stamp| live_latency_ms(stamp, unix_ms(now)))
                    {
                        bump(&counters.stamped_frames, 1);
                        counters.latencies(|l| l.video.push(ms));
                    }
                    // Headless, a picture is shown once it is decoded and ready for display.
                    freezes.on_frame_shown(shown_at);
                    if freezes.has_judged() {
                        counters
                            .set_freezes(freezes.freeze_count(), freezes.total_freezes_duration());
                    }
                    shared.remote_video.put(frame);
                    if first_of_call {
                        first_of_call = false;
                        let _ = notices.send(MediaNotice::FirstRemoteFrame);
                    }
                }
                Decoded::Nothing => {}
                Decoded::NeedKeyframe => shared.pli_wanted.store(true, Ordering::Relaxed),
            }
        }
    })?;
    Ok(input)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use duet_media::{H264Encoder, TestPatternSource};

    use super::*;

    /// The real decoder on its real thread: stamped pictures come out counted
    /// and shown, and the thread returns promptly when the session stops.
    #[tokio::test]
    async fn the_decode_thread_decodes_counts_and_stops_when_told() {
        let shared = MediaShared::new(false);
        let (notices, mut notices_rx) = mpsc::unbounded_channel();
        let mut threads = MediaThreads::new();
        let input = start_video_decoder(Arc::clone(&shared), notices, &mut threads)
            .expect("decoder starts");
        let source = TestPatternSource::new(320, 240, 30).expect("valid");
        let mut encoder = H264Encoder::new(500_000, 30).expect("encoder");
        input.with(|queue| queue.reset());
        let mut offered = 0;
        for index in 0..8 {
            let frame = source.draw(index, SystemTime::now());
            if let Ok(Some(encoded)) = encoder.encode(&frame) {
                let keyframe = encoded.keyframe;
                input.with(|queue| queue.offer(Bytes::from(encoded.data), keyframe));
                offered += 1;
            }
        }
        assert!(offered >= 4, "the encoder gave {offered} units");
        let first = tokio::time::timeout(Duration::from_secs(10), notices_rx.recv()).await;
        assert!(matches!(first, Ok(Some(MediaNotice::FirstRemoteFrame))));
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.counters.snapshot().frames_decoded < offered && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counted = shared.counters.snapshot();
        assert_eq!(counted.frames_decoded, offered);
        assert_eq!(counted.stamped_frames, offered);
        assert_eq!(counted.last_size, Some((320, 240)));
        assert!(shared.remote_video.latest().is_some());
        shared.stopped.store(true, Ordering::Relaxed);
        assert!(threads.join_async().await, "the decode thread returned");
    }
}
