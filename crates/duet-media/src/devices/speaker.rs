//! Where received audio is heard: a real speaker (cpal), or a virtual one
//! that plays nothing but keeps a device's time.
//!
//! Both are driven the same way: the device's clock (a sound card's callback,
//! or the virtual speaker's own 10 ms tick) takes samples from a
//! [`PlaybackFeeder`]'s ring, so the device, not a timer of the playout
//! thread, decides how fast audio is played. Everything that listens to what
//! was played (the beep detector, the recording, the echo canceller) reads it
//! back from the feeder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use cpal::traits::{DeviceTrait, StreamTrait};

use super::playback::{DeviceFeed, PlaybackFeeder, playback_channel};
use super::stream_errors::StreamErrorLog;
use super::{device_name, find_device, quietly, small_buffer};
use crate::MediaError;
use crate::frame::SAMPLE_RATE;

/// An open speaker, fed 48 kHz mono through its [`PlaybackFeeder`].
///
/// Samples are timed when the callback hands them over, plus the delay cpal
/// reports for the buffer (its `playback` instant minus its `callback`
/// instant: when the device expects to play the buffer's first sample); where
/// cpal reports no such delay, the callback's wall clock alone.
pub struct Speaker {
    _stream: cpal::Stream,
    feeder: PlaybackFeeder,
    name: String,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Opens the default speaker, or the one named `name`.
    pub fn open(name: Option<&str>) -> Result<Speaker, MediaError> {
        quietly(|| Speaker::open_loudly(name))
    }

    fn open_loudly(name: Option<&str>) -> Result<Speaker, MediaError> {
        let device = find_device(false, name)?;
        let device_name = device_name(&device, "speaker");
        let failed =
            |e: &dyn std::fmt::Display| MediaError::NoSpeaker(format!("{device_name}: {e}"));
        let config = device.default_output_config().map_err(|e| failed(&e))?;
        let rate = config.sample_rate();
        let channels = usize::from(config.channels());
        let mut stream_config: cpal::StreamConfig = config.config();
        stream_config.buffer_size = small_buffer(config.buffer_size(), rate);
        let (feeder, mut feed) = playback_channel(rate)?;
        let mut errors = StreamErrorLog::default();
        let stream = device
            .build_output_stream(
                stream_config,
                move |data: &mut [f32], info: &cpal::OutputCallbackInfo| {
                    let first_heard = SystemTime::now() + playback_delay(&info.timestamp());
                    feed.fill(data, channels, first_heard);
                },
                // cpal calls this off the real-time path, when the stream fails.
                move |err| errors.warn("speaker", &err),
                None,
            )
            .map_err(|e| failed(&e))?;
        stream.play().map_err(|e| failed(&e))?;
        Ok(Speaker {
            _stream: stream,
            feeder,
            name: device_name,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its feeder: queue audio there, and read back what was played.
    pub fn feeder(&mut self) -> &mut PlaybackFeeder {
        &mut self.feeder
    }
}

/// The delay until a buffer is played, as the device reports it; zero when it
/// reports none (or something implausible).
fn playback_delay(timestamp: &cpal::OutputStreamTimestamp) -> Duration {
    timestamp
        .playback
        .checked_duration_since(timestamp.callback)
        .filter(|delay| *delay < Duration::from_secs(1))
        .unwrap_or_default()
}

/// How often the virtual speaker's clock asks for audio.
const VIRTUAL_PERIOD: Duration = Duration::from_millis(10);

/// A speaker without sound, for headless runs: a thread plays the part of a
/// sound card's callback, taking 10 ms of audio every 10 ms of the system
/// clock, and hears each sample the moment it takes it.
///
/// Its clock can be made to run fast or slow (`skew_ppm`, parts per million)
/// to stand for a sound card whose crystal is off: the playout must absorb
/// the difference without growing its delay or leaving gaps.
pub struct VirtualSpeaker {
    feeder: PlaybackFeeder,
    stop: Arc<AtomicBool>,
    clock: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VirtualSpeaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualSpeaker")
            .field("feeder", &self.feeder)
            .finish_non_exhaustive()
    }
}

impl VirtualSpeaker {
    /// Starts one whose clock runs `skew_ppm` parts per million fast (or slow, negative).
    pub fn start(skew_ppm: i32) -> Result<VirtualSpeaker, MediaError> {
        let (feeder, feed) = playback_channel(SAMPLE_RATE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clock = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("duet-virtual-speaker".into())
                .spawn(move || run_clock(feed, &stop, skew_ppm))
                .map_err(|e| MediaError::Device(format!("cannot start the virtual speaker: {e}")))?
        };
        Ok(VirtualSpeaker {
            feeder,
            stop,
            clock: Some(clock),
        })
    }

    /// Its feeder: queue audio there, and read back what was played.
    pub fn feeder(&mut self) -> &mut PlaybackFeeder {
        &mut self.feeder
    }
}

impl Drop for VirtualSpeaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(clock) = self.clock.take() {
            let _ = clock.join();
        }
    }
}

/// The virtual device's callback loop: every period, as many samples as its
/// (skewed) clock says have passed, carrying the fraction to the next period.
fn run_clock(mut feed: DeviceFeed, stop: &AtomicBool, skew_ppm: i32) {
    let per_second = f64::from(SAMPLE_RATE) * (1.0 + f64::from(skew_ppm) / 1e6);
    let per_period = per_second * VIRTUAL_PERIOD.as_secs_f64();
    let mut buffer = Vec::with_capacity(per_period.ceil() as usize + 1);
    let mut owed = 0.0;
    let mut due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        due += VIRTUAL_PERIOD;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > VIRTUAL_PERIOD * 10 {
            // Far behind (the machine was suspended): a sound card would not
            // catch up either; start from now.
            due = now;
        }
        owed += per_period;
        let frames = owed.floor();
        owed -= frames;
        buffer.resize(frames as usize, 0.0);
        feed.fill(&mut buffer, 1, SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_virtual_speaker_plays_at_its_clock_rate_and_hears_what_it_took() {
        let mut speaker = VirtualSpeaker::start(0).expect("starts");
        let started = Instant::now();
        let mut heard = 0usize;
        let mut loud = 0usize;
        while started.elapsed() < Duration::from_millis(300) {
            // 200 ms ahead: a test thread held up by a busy machine must not
            // run the device dry.
            while speaker.feeder().queued_ms() < 200.0 {
                speaker.feeder().push(&[0.5; 480]).expect("push");
            }
            speaker.feeder().take_played(|samples, _| {
                heard += samples.len();
                loud += samples.iter().filter(|&&s| s == 0.5).count();
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        // 300 ms at 48 kHz, give or take a few periods on a busy machine.
        assert!((11_000..=16_000).contains(&heard), "{heard}");
        assert!(
            loud + 480 >= heard,
            "only the first period may be silence: {loud}/{heard}"
        );
    }
}
