//! The video decode thread: decodes what the bounded decode queue holds and
//! shows each picture when its playout schedule says (`video_timing`):
//! reads its stamp, counts freezes and publishes it then.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use duet_media::frame::unix_ms;
use duet_media::stamp::live_latency_ms;
use duet_media::{Decoded, H264Decoder, StampReader, VideoFrame};
use tokio::sync::mpsc;

use super::MediaNotice;
use super::counters::bump;
use super::decode_queue::{DECODE_QUEUE_UNITS, DecodeChannel, DecodeInput};
use super::freeze::FreezeDetector;
use super::shared::MediaShared;
use super::threads::{MediaThreads, spawn};
use super::video_timing::{FrameTiming, PlayoutSchedule, Showing};
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
        let mut presenter = Presenter::new(Arc::clone(&shared), notices);
        while !shared.stopped.load(Ordering::Relaxed) {
            let wait = presenter.next_due().map_or(INPUT_WAIT, |due| {
                due.saturating_duration_since(Instant::now())
                    .min(INPUT_WAIT)
            });
            let message = queue.next(wait);
            presenter.show_due(Instant::now());
            let Some(message) = message else {
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
                    presenter.restart();
                    continue;
                }
            };
            match decoder.decode(&unit.data, SystemTime::now()) {
                Decoded::Frame(frame) => {
                    shared.counters.frame_decoded(frame.width(), frame.height());
                    presenter.on_decoded(frame, unit.timing);
                    presenter.show_due(Instant::now());
                }
                Decoded::Nothing => {}
                Decoded::NeedKeyframe => shared.pli_wanted.store(true, Ordering::Relaxed),
            }
        }
    })?;
    Ok(input)
}

/// Shows decoded pictures when their [`PlayoutSchedule`] says: reads their
/// stamps, counts freezes and hands them to the front end at that moment,
/// which is when a person sees them.
struct Presenter {
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
    schedule: PlayoutSchedule,
    /// Decoded pictures waiting for their moment, in order.
    waiting: VecDeque<(Instant, VideoFrame)>,
    freezes: FreezeDetector,
    first_of_call: bool,
}

impl Presenter {
    fn new(shared: Arc<MediaShared>, notices: mpsc::UnboundedSender<MediaNotice>) -> Presenter {
        Presenter {
            shared,
            notices,
            schedule: PlayoutSchedule::new(),
            waiting: VecDeque::new(),
            freezes: FreezeDetector::new(),
            first_of_call: true,
        }
    }

    /// A new call: nothing of the old one is shown.
    fn restart(&mut self) {
        self.schedule = PlayoutSchedule::new();
        self.waiting.clear();
        self.freezes.restart();
        self.first_of_call = true;
    }

    fn on_decoded(&mut self, frame: VideoFrame, timing: FrameTiming) {
        if self.waiting.is_empty() && self.freezes.frozen_at(Instant::now()) {
            self.schedule.catch_up();
        }
        let before = self.schedule.delay();
        let showing = self.schedule.schedule(timing);
        let after = self.schedule.delay();
        if before.abs_diff(after) >= Duration::from_millis(20)
            || (after.is_zero() && !before.is_zero())
        {
            tracing::debug!(
                ms = after.as_millis() as u64,
                "pictures are held back to smooth late frames"
            );
        }
        match showing {
            Showing::At(at) => self.waiting.push_back((at, frame)),
            Showing::Skip => {
                tracing::debug!("a picture from a moment that has passed is not shown");
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.waiting.front().map(|(at, _)| *at)
    }

    fn show_due(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, frame)) = self.waiting.pop_front() {
                self.show(frame);
            }
        }
    }

    fn show(&mut self, frame: VideoFrame) {
        let now = SystemTime::now();
        let shown_at = Instant::now();
        let counters = &self.shared.counters;
        // Only a live test stamp gives a latency (docs/test-signals.md).
        if let Some(ms) =
            StampReader::read(&frame).and_then(|stamp| live_latency_ms(stamp, unix_ms(now)))
        {
            bump(&counters.stamped_frames, 1);
            counters.latencies(|l| l.video.push(ms));
        }
        // Headless, a picture is shown once it is ready for display.
        if let Some(gap) = self.freezes.on_frame_shown(shown_at) {
            tracing::debug!(
                ms = gap.as_millis() as u64,
                held_back_ms = self.schedule.delay().as_millis() as u64,
                "the picture froze"
            );
        }
        if self.freezes.has_judged() {
            counters.set_freezes(
                self.freezes.freeze_count(),
                self.freezes.total_freezes_duration(),
            );
        }
        self.shared.remote_video.put(frame);
        if self.first_of_call {
            self.first_of_call = false;
            let _ = self.notices.send(MediaNotice::FirstRemoteFrame);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use duet_media::{H264Encoder, TestPatternSource};

    use super::*;
    use crate::media::decode_queue::ReceivedUnit;

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
        let start = Instant::now();
        for index in 0..8 {
            let frame = source.draw(index, SystemTime::now());
            if let Ok(Some(encoded)) = encoder.encode(&frame) {
                let keyframe = encoded.keyframe;
                let unit = ReceivedUnit {
                    data: Bytes::from(encoded.data),
                    timing: FrameTiming {
                        rtp_timestamp: index as u32 * 3000,
                        // As if each came in on time, 33 ms after the last.
                        completed: start + Duration::from_millis(index * 33),
                    },
                };
                input.with(|queue| queue.offer(unit, keyframe));
                offered += 1;
            }
        }
        assert!(offered >= 4, "the encoder gave {offered} units");
        let first = tokio::time::timeout(Duration::from_secs(10), notices_rx.recv()).await;
        assert!(matches!(first, Ok(Some(MediaNotice::FirstRemoteFrame))));
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.counters.snapshot().stamped_frames < offered && Instant::now() < deadline {
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
