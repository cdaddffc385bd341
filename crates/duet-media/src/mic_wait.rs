//! A microphone that is slow to start (PulseAudio gives a new recording
//! stream nothing for its first second or two) or that pauses is waited for,
//! not replaced: until its sound comes, the call sends silence at the pace of
//! real time, and the moment its frames arrive they are sent instead. The
//! person is told once if the wait grows long.

use std::time::{Duration, Instant, SystemTime};

use crate::frame::{AudioFrame, FRAME_SAMPLES};
use crate::source::Notice;

/// How long a microphone may keep us waiting before silence is sent in its
/// place (a device's buffer can hold this much).
const FIRST_WAIT: Duration = Duration::from_millis(200);
/// One frame of audio: the pace of the silence.
const FRAME: Duration = Duration::from_millis(20);
/// Silence this long gets a notice.
const NOTICE_AFTER: Duration = Duration::from_secs(3);
/// How far the silence may fall behind its clock and still catch up. A
/// thread held up longer than this (a stopped process, a swapping machine)
/// starts the silence's clock again rather than sending a burst of it: the
/// far side would only cut the burst away, and the RTP timestamps skip the
/// gap by themselves.
const MOST_BEHIND: Duration = Duration::from_millis(100);

/// The waiting, without the device: `next` is handed a way to wait for the
/// device's next frame.
#[derive(Debug, Default)]
pub(crate) struct MicWait {
    /// Silence being sent in the microphone's place.
    silence: Option<Silence>,
    /// Whether the person was told about this silence.
    told: bool,
}

/// One stretch of silence in the microphone's place, paced by the clock: the
/// k-th frame is due k × 20 ms after the first. Paced by the waits instead
/// (20 ms each, plus however late the thread woke), silence went out a few
/// per cent slower than real time, and the far side's playout ran dry every
/// half second until its buffer had grown 80 ms deeper than it needed.
#[derive(Debug, Clone, Copy)]
struct Silence {
    /// When the microphone was last waited for in vain (for the notice).
    waiting_since: Instant,
    /// When the first frame of silence went out.
    first_sent: Instant,
    /// Frames of silence sent so far.
    frames: u32,
}

impl Silence {
    /// When the next frame of silence is due.
    fn next_due(&self) -> Instant {
        self.first_sent + FRAME * self.frames
    }
}

impl MicWait {
    /// The next 20 ms: the microphone's frame if it comes in time, otherwise
    /// silence; `wait` waits up to the given time for the device's frame.
    pub(crate) fn next(
        &mut self,
        name: &str,
        wait: impl FnMut(Duration) -> Option<AudioFrame>,
    ) -> (AudioFrame, Option<Notice>) {
        self.next_by(Instant::now, name, wait)
    }

    /// [`MicWait::next`] on the clock `now`.
    fn next_by(
        &mut self,
        now: impl Fn() -> Instant,
        name: &str,
        mut wait: impl FnMut(Duration) -> Option<AudioFrame>,
    ) -> (AudioFrame, Option<Notice>) {
        let timeout = match &mut self.silence {
            Some(silence) => {
                let now = now();
                if now.saturating_duration_since(silence.next_due()) > MOST_BEHIND {
                    silence.first_sent = now;
                    silence.frames = 0;
                }
                silence.next_due().saturating_duration_since(now)
            }
            None => FIRST_WAIT,
        };
        if let Some(frame) = wait(timeout) {
            if let Some(silence) = self.silence.take() {
                if self.told {
                    tracing::info!(microphone = name, "the microphone's sound has come");
                } else {
                    tracing::debug!(
                        microphone = name,
                        silent_frames = silence.frames,
                        age_ms = SystemTime::now()
                            .duration_since(frame.capture_time)
                            .unwrap_or_default()
                            .as_millis(),
                        "the microphone's sound has come"
                    );
                }
            }
            self.told = false;
            return (frame, None);
        }
        let now = now();
        let silence = self.silence.get_or_insert_with(|| {
            tracing::debug!(
                microphone = name,
                waited_ms = timeout.as_millis(),
                "no sound from the microphone; sending silence until it comes"
            );
            Silence {
                waiting_since: now.checked_sub(timeout).unwrap_or(now),
                first_sent: now,
                frames: 0,
            }
        });
        silence.frames = silence.frames.saturating_add(1);
        let waited = now.duration_since(silence.waiting_since);
        let notice = (!self.told && waited >= NOTICE_AFTER).then(|| {
            self.told = true;
            format!(
                "no sound from the microphone {name} for {} s; sending silence until it comes",
                NOTICE_AFTER.as_secs()
            )
        });
        let silence = AudioFrame {
            samples: vec![0.0; FRAME_SAMPLES],
            capture_time: SystemTime::now(),
        };
        (silence, notice)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::VecDeque;

    use super::*;

    fn frame(level: f32) -> AudioFrame {
        AudioFrame {
            samples: vec![level; FRAME_SAMPLES],
            capture_time: SystemTime::now(),
        }
    }

    /// A clock the test moves: each wait lasts its whole timeout plus
    /// `oversleep` when the device gives nothing, and nothing when it does.
    struct TestClock {
        now: Cell<Instant>,
        oversleep: Duration,
    }

    impl TestClock {
        fn new(oversleep: Duration) -> TestClock {
            TestClock {
                now: Cell::new(Instant::now()),
                oversleep,
            }
        }

        fn now(&self) -> Instant {
            self.now.get()
        }

        /// `wait`'s next 20 ms from a device that gives `frame` at once (or
        /// nothing, waited for to the end of the timeout); the timeout asked
        /// for goes to `timeouts`.
        fn next(
            &self,
            wait: &mut MicWait,
            mut frame: Option<AudioFrame>,
            timeouts: &mut Vec<Duration>,
        ) -> (AudioFrame, Option<Notice>) {
            wait.next_by(
                || self.now.get(),
                "test mic",
                |timeout| {
                    timeouts.push(timeout);
                    if frame.is_none() {
                        self.now.set(self.now.get() + timeout + self.oversleep);
                    }
                    frame.take()
                },
            )
        }
    }

    #[test]
    fn a_microphone_that_starts_late_is_picked_up() {
        let clock = TestClock::new(Duration::ZERO);
        let mut wait = MicWait::default();
        let mut device: VecDeque<Option<AudioFrame>> =
            [None, None, None, Some(frame(0.5)), Some(frame(0.5))].into();
        let mut timeouts = Vec::new();
        let mut levels = Vec::new();
        for _ in 0..5 {
            let (frame, notice) =
                clock.next(&mut wait, device.pop_front().flatten(), &mut timeouts);
            assert_eq!(notice, None);
            assert_eq!(frame.samples.len(), FRAME_SAMPLES);
            levels.push(frame.samples[0]);
        }
        assert_eq!(
            levels,
            [0.0, 0.0, 0.0, 0.5, 0.5],
            "silence, then the microphone"
        );
        assert_eq!(
            timeouts,
            [FIRST_WAIT, FRAME, FRAME, FRAME, FIRST_WAIT],
            "paced while silent"
        );
    }

    #[test]
    fn silence_keeps_the_pace_of_real_time_when_the_thread_wakes_late() {
        // Every wait ends 3 ms late, as a sleeping thread on a busy machine's does.
        let clock = TestClock::new(Duration::from_millis(3));
        let mut wait = MicWait::default();
        let mut sent_at = Vec::new();
        for _ in 0..100 {
            let (frame, _) = clock.next(&mut wait, None, &mut Vec::new());
            assert_eq!(frame.samples, vec![0.0; FRAME_SAMPLES]);
            sent_at.push(clock.now());
        }
        let first = sent_at[0];
        for (k, at) in sent_at.iter().enumerate() {
            let due = first + FRAME * u32::try_from(k).expect("small");
            assert!(
                at.duration_since(due) <= Duration::from_millis(3),
                "frame {k} went out {:?} after it was due",
                at.duration_since(due)
            );
        }
    }

    #[test]
    fn silence_held_up_for_long_starts_its_clock_again_instead_of_bursting() {
        let clock = TestClock::new(Duration::ZERO);
        let mut wait = MicWait::default();
        for _ in 0..10 {
            clock.next(&mut wait, None, &mut Vec::new());
        }
        // The thread is held up for a second.
        clock.now.set(clock.now() + Duration::from_secs(1));
        let mut timeouts = Vec::new();
        for _ in 0..10 {
            clock.next(&mut wait, None, &mut timeouts);
        }
        assert_eq!(timeouts[0], Duration::ZERO, "one frame goes out at once");
        assert!(
            timeouts[1..].iter().all(|&t| t == FRAME),
            "then at the pace of real time, not a burst of 50: {timeouts:?}"
        );
    }

    #[test]
    fn a_long_silence_is_told_once() {
        let long_ago = Instant::now() - NOTICE_AFTER;
        let mut wait = MicWait {
            silence: Some(Silence {
                waiting_since: long_ago,
                first_sent: long_ago,
                frames: 0,
            }),
            told: false,
        };
        let (_, notice) = wait.next("USB mic", |_| None);
        let notice = notice.expect("told");
        assert!(notice.contains("USB mic"), "{notice}");
        let (_, again) = wait.next("USB mic", |_| None);
        assert_eq!(again, None);
    }
}
