//! The far end (what the speaker played) in 10 ms frames, each with when it
//! was heard, handed to the echo canceller in step with the microphone.
//!
//! AEC3 lines the two up by counting: the n-th far-end frame handed over is
//! compared with the microphone frames around the n-th one processed, at
//! the echo path's delay, which it estimates. Far end handed over early only
//! makes that delay look longer, so everything queued is handed over before
//! the next microphone frame, as WebRTC does; that keeps working whatever
//! latency a device reports. What must not happen is far end that no
//! microphone frame lines up with getting counted: heard before the
//! microphone's first frame, or during a gap in it, it shifts every later
//! far-end frame against its echo. A call whose playout thread started late
//! handed AEC3 such a backlog (the newest 200 ms of a second of it, as the
//! queue then kept): it settled on a 430 ms echo path and cancelled nothing
//! for 11 s. So each far-end frame carries when it was heard, each
//! microphone frame when it was captured, and what was heard while nothing
//! was captured is dropped whenever it arrives.

use std::collections::VecDeque;

use super::{Frame, PROCESSING_FRAME_SAMPLES};
use crate::frame::SAMPLE_RATE;

/// One processing frame, in milliseconds.
pub(super) const FRAME_MS: f64 = 10.0;

/// A microphone frame starting further than this from where the last one
/// ended starts a new timeline: the microphone stalled, or the wall clock
/// was set.
const CAPTURE_GAP_MS: f64 = 100.0;

/// A far-end run starting further than this from where the last one ended
/// starts a new timeline (a new speaker, or the clock was set): the partial
/// frame before it is let go.
const RENDER_GAP_MS: f64 = 50.0;

/// Far-end frames kept, one second: more means nobody is capturing.
pub(super) const MAX_QUEUED_FRAMES: usize = 100;

const RATE: f64 = SAMPLE_RATE as f64;

/// A far-end frame and when its first sample was heard (ms, any clock the
/// microphone's times share).
struct TimedFrame {
    heard_ms: f64,
    samples: Frame,
}

/// Far-end audio waiting for the next microphone frame.
#[derive(Default)]
pub(super) struct FarEndQueue {
    frames: VecDeque<TimedFrame>,
    /// The start of the next frame (fewer than 480 samples), and when its
    /// first sample was heard.
    partial: Vec<f32>,
    partial_heard_ms: f64,
    /// Where the last microphone frame ended; `None` before the first.
    capture_end_ms: Option<f64>,
    /// When the microphone's frames began to follow each other without a
    /// gap: far end heard before that lines up with nothing.
    capture_since_ms: f64,
    dropped: u64,
}

impl FarEndQueue {
    /// Adds what was played, its first sample heard at `first_heard_ms`.
    pub(super) fn push(&mut self, played: &[f32], first_heard_ms: f64) {
        if played.is_empty() {
            return;
        }
        let expected = self.partial_heard_ms + self.partial.len() as f64 * 1000.0 / RATE;
        if self.partial.is_empty() || (first_heard_ms - expected).abs() > RENDER_GAP_MS {
            self.partial.clear();
            self.partial_heard_ms = first_heard_ms;
        }
        let mut rest = played;
        while !rest.is_empty() {
            let take = (PROCESSING_FRAME_SAMPLES - self.partial.len()).min(rest.len());
            let (now, later) = rest.split_at(take);
            self.partial.extend_from_slice(now);
            rest = later;
            if self.partial.len() == PROCESSING_FRAME_SAMPLES {
                if self.frames.len() == MAX_QUEUED_FRAMES {
                    self.frames.pop_front();
                    self.dropped += 1;
                }
                let mut samples = [0.0; PROCESSING_FRAME_SAMPLES];
                samples.copy_from_slice(&self.partial);
                self.frames.push_back(TimedFrame {
                    heard_ms: self.partial_heard_ms,
                    samples,
                });
                self.partial.clear();
                self.partial_heard_ms += FRAME_MS;
            }
        }
    }

    /// Hands `each` every far-end frame queued, oldest first, before the
    /// microphone frame captured from `capture_ms` is processed; drops those
    /// heard before the microphone's frames began to follow each other
    /// without a gap. Stops at the first error, which it returns.
    pub(super) fn hand_over<E>(
        &mut self,
        capture_ms: f64,
        mut each: impl FnMut(&Frame) -> Result<(), E>,
    ) -> Result<(), E> {
        let continues = self
            .capture_end_ms
            .is_some_and(|end| (capture_ms - end).abs() <= CAPTURE_GAP_MS);
        if !continues {
            self.capture_since_ms = capture_ms;
        }
        self.capture_end_ms = Some(capture_ms + FRAME_MS);
        while let Some(frame) = self.frames.pop_front() {
            if frame.heard_ms < self.capture_since_ms - FRAME_MS {
                self.dropped += 1;
            } else {
                each(&frame.samples)?;
            }
        }
        Ok(())
    }

    /// Forgets everything: far end from before a pause would be misaligned
    /// after it.
    pub(super) fn clear(&mut self) {
        self.frames.clear();
        self.partial.clear();
        self.capture_end_ms = None;
    }

    /// Frames waiting.
    pub(super) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Frames let go without being handed over (see
    /// [`AudioProcessor::far_end_dropped`](super::AudioProcessor::far_end_dropped)).
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heard times of the frames handed over for the microphone frame
    /// captured from `capture_ms`.
    fn due(queue: &mut FarEndQueue, capture_ms: f64) -> Vec<f64> {
        let mut heard = Vec::new();
        queue
            .hand_over(capture_ms, |frame| {
                heard.push(f64::from(frame[0]));
                Ok::<(), ()>(())
            })
            .expect("never fails");
        heard
    }

    /// `ms` of far end heard from `from_ms`, each sample holding the time it
    /// was heard, in runs of 7 ms as a device callback would hand them over.
    fn play(queue: &mut FarEndQueue, from_ms: f64, ms: f64) {
        let samples: Vec<f32> = (0..(ms * RATE / 1000.0) as usize)
            .map(|n| (from_ms + n as f64 * 1000.0 / RATE) as f32)
            .collect();
        let run = (7.0 * RATE / 1000.0) as usize;
        for (k, chunk) in samples.chunks(run).enumerate() {
            queue.push(chunk, from_ms + (k * run) as f64 * 1000.0 / RATE);
        }
    }

    #[test]
    fn far_end_heard_before_the_first_microphone_frame_is_dropped_whenever_it_arrives() {
        let mut queue = FarEndQueue::default();
        play(&mut queue, 1_000.0, 60.0);
        // The first frame takes what was heard from just before it on, and
        // what was heard after it too: early is harmless.
        assert_eq!(
            due(&mut queue, 1_030.0),
            vec![1_020.0, 1_030.0, 1_040.0, 1_050.0]
        );
        assert_eq!(queue.dropped(), 2);
        // The playout thread started a second late: its backlog is heard
        // from before the microphone began, and only the part after is kept.
        let mut late = FarEndQueue::default();
        for capture in [0.0, 10.0, 20.0] {
            assert_eq!(due(&mut late, capture), Vec::<f64>::new());
        }
        play(&mut late, -1_000.0, 1_050.0);
        assert_eq!(
            due(&mut late, 30.0),
            vec![-10.0, 0.0, 10.0, 20.0, 30.0, 40.0]
        );
        assert_eq!(late.dropped(), 99);
    }

    #[test]
    fn far_end_that_arrives_late_is_handed_over_late_not_dropped() {
        let mut queue = FarEndQueue::default();
        play(&mut queue, 0.0, 30.0);
        assert_eq!(due(&mut queue, 0.0), vec![0.0, 10.0, 20.0]);
        // The playout thread was held up for 50 ms: the microphone goes on.
        for capture in [10.0, 20.0, 30.0, 40.0] {
            assert_eq!(due(&mut queue, capture), Vec::<f64>::new());
        }
        play(&mut queue, 30.0, 70.0);
        assert_eq!(
            due(&mut queue, 50.0),
            vec![30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_gap_in_the_microphone_drops_what_was_played_during_it() {
        let mut queue = FarEndQueue::default();
        play(&mut queue, 0.0, 20.0);
        assert_eq!(due(&mut queue, 0.0).len(), 2);
        play(&mut queue, 20.0, 530.0);
        // The microphone stalled for half a second.
        assert_eq!(
            due(&mut queue, 500.0),
            vec![490.0, 500.0, 510.0, 520.0, 530.0, 540.0]
        );
        assert_eq!(queue.dropped(), 47);
        // The wall clock was set back a minute: both sides follow it.
        play(&mut queue, -60_000.0, 30.0);
        assert_eq!(
            due(&mut queue, -60_000.0),
            vec![-60_000.0, -59_990.0, -59_980.0]
        );
    }

    #[test]
    fn a_speaker_starting_over_lets_its_partial_frame_go_and_nobody_capturing_keeps_a_second() {
        let mut queue = FarEndQueue::default();
        play(&mut queue, 0.0, 15.0);
        play(&mut queue, 5_000.0, 20.0);
        assert_eq!(due(&mut queue, 5_000.0), vec![5_000.0, 5_010.0]);
        assert_eq!(queue.dropped(), 1);
        play(&mut queue, 6_000.0, 60_000.0);
        assert_eq!(queue.len(), MAX_QUEUED_FRAMES);
        assert!(queue.dropped() > 5_000);
        queue.clear();
        assert_eq!(queue.len(), 0);
    }
}
