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

/// The waiting, without the device: `next` is handed a way to wait for the
/// device's next frame.
#[derive(Debug, Default)]
pub(crate) struct MicWait {
    /// Since when silence has been sent in the microphone's place.
    silent_since: Option<Instant>,
    /// Whether the person was told about this silence.
    told: bool,
}

impl MicWait {
    /// The next 20 ms: the microphone's frame if it comes in time, otherwise
    /// silence; `wait` waits up to the given time for the device's frame.
    pub(crate) fn next(
        &mut self,
        name: &str,
        mut wait: impl FnMut(Duration) -> Option<AudioFrame>,
    ) -> (AudioFrame, Option<Notice>) {
        let timeout = if self.silent_since.is_some() {
            FRAME
        } else {
            FIRST_WAIT
        };
        if let Some(frame) = wait(timeout) {
            if self.silent_since.take().is_some() && self.told {
                tracing::info!(microphone = name, "the microphone's sound has come");
            }
            self.told = false;
            return (frame, None);
        }
        let now = Instant::now();
        let since = *self.silent_since.get_or_insert(now - timeout);
        let notice = (!self.told && now.duration_since(since) >= NOTICE_AFTER).then(|| {
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
    use std::collections::VecDeque;

    use super::*;

    fn frame(level: f32) -> AudioFrame {
        AudioFrame {
            samples: vec![level; FRAME_SAMPLES],
            capture_time: SystemTime::now(),
        }
    }

    #[test]
    fn a_microphone_that_starts_late_is_picked_up() {
        let mut wait = MicWait::default();
        let mut device: VecDeque<Option<AudioFrame>> =
            [None, None, None, Some(frame(0.5)), Some(frame(0.5))].into();
        let mut timeouts = Vec::new();
        let mut levels = Vec::new();
        for _ in 0..5 {
            let (frame, notice) = wait.next("test mic", |timeout| {
                timeouts.push(timeout);
                device.pop_front().flatten()
            });
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
    fn a_long_silence_is_told_once() {
        let mut wait = MicWait {
            silent_since: Some(Instant::now() - NOTICE_AFTER),
            told: false,
        };
        let (_, notice) = wait.next("USB mic", |_| None);
        let notice = notice.expect("told");
        assert!(notice.contains("USB mic"), "{notice}");
        let (_, again) = wait.next("USB mic", |_| None);
        assert_eq!(again, None);
    }
}
