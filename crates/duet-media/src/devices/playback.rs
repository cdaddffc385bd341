//! The road from the playout thread to an output device, cut in two at the
//! device's real-time callback.
//!
//! The callback side ([`DeviceFeed`]) takes no lock, allocates nothing and
//! logs nothing: it copies device-rate samples out of a single-producer
//! single-consumer ring, fills what the ring lacks with silence, and reports
//! what it did (how many samples it played, how many it had to make up, and
//! when the first of them is heard) through a second ring.
//!
//! The other side ([`PlaybackFeeder`]) does everything that may allocate or
//! block: it resamples 48 kHz audio to the device's rate, keeps the device ring
//! topped up, and turns the callback's reports back into the 48 kHz samples
//! that were really played, silence included, timed by when they were heard.
//! Those feed the beep detector, the recording and the echo canceller's
//! far-end reference, so all three get exactly what went out, no more.

use std::collections::VecDeque;
use std::time::SystemTime;

use rtrb::{Consumer, Producer, RingBuffer};

use super::DeviceClock;
use crate::MediaError;
use crate::frame::{SAMPLE_RATE, unix_ms_f64};
use crate::resample::StreamResampler;

/// Most audio the device ring holds. The feeder keeps it far emptier (a few
/// tens of milliseconds); the room is for a device that asks for big buffers.
const RING_MS: usize = 500;
/// Callback reports the ring holds: at 10 ms a callback, 20 s without being read.
const REPORTS: usize = 2048;
/// How much later than the previous callback's last sample a callback's
/// first one may be heard before the device is taken to have stopped in
/// between (a sound server's underrun): well over the few milliseconds
/// callback timings jitter.
const GAP_MS: f64 = 40.0;
/// The longest stop filled with silence in what was played: a longer "gap"
/// is the system clock stepping, not the device stopping.
const MOST_GAP_MS: f64 = 10_000.0;
/// A stop that comes this soon after the device first asked is its stream
/// still starting (ALSA's pulse plugin asks for two periods, then waits a
/// second or two for the server's first timing report): silence all the
/// same, but not an underrun of a running device.
const STARTING_MS: f64 = 500.0;

/// Audio the ring still holds when the device comes back from a stop this
/// long is dropped, not played: it belonged to a moment half a second gone.
/// After a sound server held up for 2 s, the 45 ms left of a beep it had cut
/// were heard 2 s late, a stale fragment ahead of the live sound.
const STALE_AFTER_MS: f64 = 500.0;

/// What one callback did.
#[derive(Debug, Clone, Copy)]
struct Played {
    /// Device samples (per channel) the ring held over a long stop, dropped
    /// unplayed ([`STALE_AFTER_MS`]).
    stale: u32,
    /// Device samples (per channel) taken from the ring.
    played: u32,
    /// Device samples of silence played after them, because the ring ran dry.
    silent: u32,
    /// When the device plays the first of them, in milliseconds since the epoch.
    first_heard_unix_ms: f64,
}

/// Builds both halves for a device running at `device_rate`.
pub(crate) fn playback_channel(
    device_rate: u32,
) -> Result<(PlaybackFeeder, DeviceFeed), MediaError> {
    let device_rate = device_rate.max(1);
    let (samples_in, samples_out) = RingBuffer::new(device_rate as usize * RING_MS / 1000);
    let (reports_in, reports_out) = RingBuffer::new(REPORTS);
    let feeder = PlaybackFeeder {
        samples: samples_in,
        reports: reports_out,
        resampler: StreamResampler::new(SAMPLE_RATE, device_rate)?,
        pending: PendingSamples::new(device_rate),
        device_rate,
        started: false,
        underruns: 0,
        dropped: 0,
        largest_request: 0,
        clock: DeviceClock::new(),
        scratch: Vec::new(),
        heard_until_ms: None,
        first_heard_ms: None,
    };
    let feed = DeviceFeed {
        samples: samples_out,
        reports: reports_in,
        rate_hz: f64::from(device_rate),
        heard_until_ms: None,
    };
    Ok((feeder, feed))
}

/// The real-time half, owned by the device callback (or by the clock of a
/// virtual device).
pub(crate) struct DeviceFeed {
    samples: Consumer<f32>,
    reports: Producer<Played>,
    rate_hz: f64,
    /// When the last sample of the last callback is heard (ms since the
    /// epoch).
    heard_until_ms: Option<f64>,
}

impl DeviceFeed {
    /// Fills an interleaved buffer of `channels` channels (every channel gets
    /// the same sample) whose first frame is heard at `first_heard`.
    pub(crate) fn fill(&mut self, data: &mut [f32], channels: usize, first_heard: SystemTime) {
        let channels = channels.max(1);
        let frames = data.len() / channels;
        let first_heard_ms = unix_ms_f64(first_heard);
        let mut stale = 0;
        if self
            .heard_until_ms
            .is_some_and(|until_ms| first_heard_ms - until_ms > STALE_AFTER_MS)
            && let Ok(chunk) = self.samples.read_chunk(self.samples.slots())
        {
            stale = chunk.len();
            chunk.commit_all();
        }
        self.heard_until_ms = Some(first_heard_ms + frames as f64 * 1000.0 / self.rate_hz);
        let available = frames.min(self.samples.slots());
        let mut played = 0;
        if let Ok(chunk) = self.samples.read_chunk(available) {
            let (first, second) = chunk.as_slices();
            for (frame, &sample) in data.chunks_mut(channels).zip(first.iter().chain(second)) {
                frame.fill(sample);
            }
            played = chunk.len();
            chunk.commit_all();
        }
        data[played * channels..].fill(0.0);
        // A full report ring means nobody reads it: the report is lost, not waited for.
        let _ = self.reports.push(Played {
            stale: stale as u32,
            played: played as u32,
            silent: (frames - played) as u32,
            first_heard_unix_ms: first_heard_ms,
        });
    }
}

/// The side that may allocate: feeds the device and hears back what it played.
pub struct PlaybackFeeder {
    samples: Producer<f32>,
    reports: Consumer<Played>,
    resampler: StreamResampler,
    pending: PendingSamples,
    device_rate: u32,
    /// Whether the device has played anything yet (silence before that is no underrun).
    started: bool,
    underruns: u64,
    dropped: u64,
    /// The most device samples one callback has asked for.
    largest_request: u32,
    /// How fast the device really plays.
    clock: DeviceClock,
    scratch: Vec<f32>,
    /// When the last sample of the last callback is heard (ms since the
    /// epoch): the next callback's first one should follow it.
    heard_until_ms: Option<f64>,
    /// When the first sample the device ever asked for is heard.
    first_heard_ms: Option<f64>,
}

impl std::fmt::Debug for PlaybackFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaybackFeeder")
            .field("device_rate", &self.device_rate)
            .field("queued_ms", &self.queued_ms())
            .field("underruns", &self.underruns)
            .finish_non_exhaustive()
    }
}

impl PlaybackFeeder {
    /// Audio waiting for the device, in milliseconds.
    pub fn queued_ms(&self) -> f64 {
        let queued = self.samples.buffer().capacity() - self.samples.slots();
        queued as f64 * 1000.0 / f64::from(self.device_rate)
    }

    /// Queues 48 kHz mono samples for the device. What does not fit in the
    /// ring (a device that stopped asking) is dropped and counted.
    pub fn push(&mut self, samples: &[f32]) -> Result<(), MediaError> {
        let out = self.resampler.push(samples)?;
        let room = self.samples.slots();
        let fits = out.len().min(room);
        if let Ok(chunk) = self.samples.write_chunk_uninit(fits) {
            chunk.fill_from_iter(out[..fits].iter().copied());
        }
        self.dropped += (out.len() - fits) as u64;
        self.pending.push(samples, fits, out.len());
        Ok(())
    }

    /// Hands `each` the 48 kHz samples the device has played since the last
    /// call, in order, each run with the time its first sample was heard
    /// (milliseconds since the epoch). Silence the device made up is
    /// included, and so is the time it stopped asking (a sound server's
    /// underrun): that is silence heard too, and counted as an underrun
    /// unless the stream was still starting.
    pub fn take_played(&mut self, mut each: impl FnMut(&[f32], f64)) {
        while let Ok(report) = self.reports.pop() {
            let asked = report.played + report.silent;
            self.largest_request = self.largest_request.max(asked);
            let first_heard_ms = *self
                .first_heard_ms
                .get_or_insert(report.first_heard_unix_ms);
            if let Some(until_ms) = self.heard_until_ms {
                let gap_ms = report.first_heard_unix_ms - until_ms;
                if gap_ms > GAP_MS {
                    self.clock.restarted();
                    if until_ms - first_heard_ms < STARTING_MS {
                        tracing::debug!(gap_ms, "the device's stream took this long to start");
                    } else if self.started {
                        self.underruns += 1;
                        tracing::debug!(gap_ms, "the device stopped asking for audio");
                    }
                    if self.started && gap_ms < MOST_GAP_MS {
                        let silence = (gap_ms * f64::from(SAMPLE_RATE) / 1000.0) as usize;
                        self.scratch.clear();
                        self.scratch.resize(silence, 0.0);
                        each(&self.scratch, until_ms);
                    }
                }
            }
            self.heard_until_ms = Some(
                report.first_heard_unix_ms
                    + f64::from(asked) * 1000.0 / f64::from(self.device_rate),
            );
            self.clock.observe(asked, report.first_heard_unix_ms);
            if report.stale > 0 {
                tracing::debug!(
                    ms = f64::from(report.stale) * 1000.0 / f64::from(self.device_rate),
                    "audio held over the device's stop dropped"
                );
                self.pending.dropped(report.stale as usize);
            }
            if report.played > 0 {
                self.started = true;
            } else if report.silent == 0 {
                continue;
            }
            // The silence after stale audio was dropped is the same stop.
            if report.silent > 0 && self.started && report.stale == 0 {
                self.underruns += 1;
            }
            self.scratch.clear();
            self.pending.played(
                report.played as usize,
                report.silent as usize,
                &mut self.scratch,
            );
            if !self.scratch.is_empty() {
                each(&self.scratch, report.first_heard_unix_ms);
            }
        }
    }

    /// Callbacks that ran out of audio after playback had started.
    pub fn underruns(&self) -> u64 {
        self.underruns
    }

    /// The most audio one device callback has asked for so far, in
    /// milliseconds: what must be queued, at least, when the next one comes.
    pub fn largest_request_ms(&self) -> f64 {
        f64::from(self.largest_request) * 1000.0 / f64::from(self.device_rate)
    }

    /// Samples a second of wall clock the device really plays (see
    /// [`DeviceClock`]), once it has played long enough to tell.
    pub fn device_rate_hz(&self) -> Option<f64> {
        self.clock.rate_hz()
    }

    /// Device samples dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The 48 kHz samples behind the device samples in the ring, in step with
/// them: a device sample at `device_rate` stands for `48000 / device_rate`
/// samples at 48 kHz. Remainders are carried so that nothing drifts.
#[derive(Debug)]
struct PendingSamples {
    /// 48 kHz samples whose device samples are in the ring, oldest first.
    queued: VecDeque<f32>,
    /// 48 kHz samples the resampler holds back (they have no device samples yet).
    in_resampler: VecDeque<f32>,
    device_rate: u64,
    carry_in: u64,
    carry_out: u64,
}

impl PendingSamples {
    fn new(device_rate: u32) -> PendingSamples {
        PendingSamples {
            queued: VecDeque::new(),
            in_resampler: VecDeque::new(),
            device_rate: u64::from(device_rate.max(1)),
            carry_in: 0,
            carry_out: 0,
        }
    }

    /// `original` went into the resampler, which returned `made` device
    /// samples, of which `kept` went into the ring.
    fn push(&mut self, original: &[f32], kept: usize, made: usize) {
        self.in_resampler.extend(original);
        let out_of_resampler = to_48k(&mut self.carry_in, made, self.device_rate);
        let out_of_resampler = out_of_resampler.min(self.in_resampler.len());
        let kept_48k = if kept == made {
            out_of_resampler
        } else {
            (kept as u64 * u64::from(SAMPLE_RATE) / self.device_rate) as usize
        };
        let mut moved = self.in_resampler.drain(..out_of_resampler);
        self.queued.extend(moved.by_ref().take(kept_48k));
    }

    /// `stale` samples were dropped from the ring unplayed.
    fn dropped(&mut self, stale: usize) {
        let count = to_48k(&mut self.carry_out, stale, self.device_rate).min(self.queued.len());
        self.queued.drain(..count);
    }

    /// The device played `played` samples from the ring, then `silent` of
    /// silence: appends the 48 kHz samples those were to `out`.
    fn played(&mut self, played: usize, silent: usize, out: &mut Vec<f32>) {
        let count = to_48k(&mut self.carry_out, played, self.device_rate).min(self.queued.len());
        out.extend(self.queued.drain(..count));
        let silence = (silent as u64 * u64::from(SAMPLE_RATE) / self.device_rate) as usize;
        out.resize(out.len() + silence, 0.0);
    }
}

/// How many whole 48 kHz samples `device_samples` at `device_rate` stand for;
/// the remainder stays in `carry` for the next call.
fn to_48k(carry: &mut u64, device_samples: usize, device_rate: u64) -> usize {
    let total = *carry + device_samples as u64 * u64::from(SAMPLE_RATE);
    *carry = total % device_rate;
    (total / device_rate) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn played(feeder: &mut PlaybackFeeder) -> Vec<(Vec<f32>, f64)> {
        let mut runs = Vec::new();
        feeder.take_played(|samples, at| runs.push((samples.to_vec(), at)));
        runs
    }

    /// A second of steady 10 ms callbacks from the epoch on, each fed 10 ms
    /// of `level` just before.
    fn steady_second(feeder: &mut PlaybackFeeder, feed: &mut DeviceFeed, level: f32) {
        let mut mono = vec![0.0; 480];
        for n in 0..100 {
            feeder.push(&[level; 480]).expect("push");
            feed.fill(&mut mono, 1, UNIX_EPOCH + Duration::from_millis(n * 10));
        }
    }

    /// Each run's length and when its first sample was heard.
    fn timeline(runs: &[(Vec<f32>, f64)]) -> Vec<(usize, f64)> {
        runs.iter().map(|(s, at)| (s.len(), *at)).collect()
    }

    #[test]
    fn at_48_khz_the_device_plays_and_reports_exactly_what_was_queued() {
        let (mut feeder, mut feed) = playback_channel(48_000).expect("channel");
        let samples: Vec<f32> = (0..960).map(|n| n as f32 / 1000.0).collect();
        feeder.push(&samples).expect("push");
        assert!((feeder.queued_ms() - 20.0).abs() < 1e-9);
        let heard_at = UNIX_EPOCH + Duration::from_millis(1_000);
        let mut stereo = vec![0.0; 480 * 2];
        feed.fill(&mut stereo, 2, heard_at);
        assert_eq!(stereo[0], stereo[1], "both channels carry the sample");
        assert_eq!(stereo[2 * 479], samples[479]);
        let runs = played(&mut feeder);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, samples[..480]);
        assert_eq!(runs[0].1, 1_000.0);
        assert_eq!(feeder.underruns(), 0);
    }

    #[test]
    fn a_ring_that_runs_dry_plays_silence_reports_it_and_counts_an_underrun() {
        let (mut feeder, mut feed) = playback_channel(48_000).expect("channel");
        // Before anything was queued: silence, but no underrun yet.
        let mut mono = vec![1.0; 480];
        feed.fill(&mut mono, 1, UNIX_EPOCH);
        assert!(mono.iter().all(|&s| s == 0.0));
        feeder.push(&[0.5; 300]).expect("push");
        feed.fill(&mut mono, 1, UNIX_EPOCH);
        assert!(mono[..300].iter().all(|&s| s == 0.5));
        assert!(mono[300..].iter().all(|&s| s == 0.0));
        let runs = played(&mut feeder);
        let all: Vec<f32> = runs.into_iter().flat_map(|(s, _)| s).collect();
        assert_eq!(all.len(), 480 * 2, "the silence is part of what was played");
        assert_eq!(all[480..780], [0.5; 300]);
        assert_eq!(feeder.underruns(), 1);
    }

    #[test]
    fn a_device_that_stopped_asking_is_heard_as_silence_for_as_long_and_counts_an_underrun() {
        let (mut feeder, mut feed) = playback_channel(48_000).expect("channel");
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut mono = vec![0.0; 480];
        steady_second(&mut feeder, &mut feed, 0.5);
        assert_eq!(played(&mut feeder).len(), 100);
        feeder.push(&[0.5; 960]).expect("push");
        feed.fill(&mut mono, 1, at(1_000));
        // The sound server underran: the next callback is heard 490 ms
        // after the first one's last sample, not right after it.
        feed.fill(&mut mono, 1, at(1_500));
        let runs = played(&mut feeder);
        assert_eq!(
            timeline(&runs),
            [(480, 1_000.0), (490 * 48, 1_010.0), (480, 1_500.0)]
        );
        assert!(runs[1].0.iter().all(|&s| s == 0.0));
        assert_eq!(runs[2].0, [0.5; 480]);
        assert_eq!(feeder.underruns(), 1);
        // Callbacks on time are no stop.
        feeder.push(&[0.5; 480]).expect("push");
        feed.fill(&mut mono, 1, at(1_510));
        assert_eq!(played(&mut feeder).len(), 1);
        assert_eq!(feeder.underruns(), 1);
    }

    #[test]
    fn audio_held_over_a_long_stop_is_dropped_not_played_late() {
        let (mut feeder, mut feed) = playback_channel(48_000).expect("channel");
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut mono = vec![0.0; 480];
        steady_second(&mut feeder, &mut feed, 0.25);
        // A beep's first half played, then the sound server stopped for 2 s
        // with its second half in the ring.
        feeder.push(&[0.5; 960]).expect("push");
        feed.fill(&mut mono, 1, at(1_000));
        feed.fill(&mut mono, 1, at(3_010));
        assert!(mono.iter().all(|&s| s == 0.0), "the rest is not played");
        feeder.push(&[0.75; 480]).expect("push");
        feed.fill(&mut mono, 1, at(3_020));
        assert_eq!(mono, [0.75; 480], "the live sound follows");
        let runs = played(&mut feeder);
        let heard: Vec<f32> = runs.iter().skip(100).flat_map(|(s, _)| s.clone()).collect();
        assert_eq!(heard.len(), 480 + 2_000 * 48 + 480 + 480);
        assert!(!heard[480..].contains(&0.5), "nor reported as played");
        assert_eq!(heard[heard.len() - 480..], [0.75; 480]);
        assert_eq!(feeder.underruns(), 1, "one stop");
    }

    #[test]
    fn a_stream_that_stalls_as_it_starts_is_heard_as_silence_but_is_no_underrun() {
        let (mut feeder, mut feed) = playback_channel(48_000).expect("channel");
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let mut mono = vec![0.0; 480];
        // Two periods asked for at once, then nothing for two seconds.
        feeder.push(&[0.5; 1_440]).expect("push");
        feed.fill(&mut mono, 1, at(1_000));
        feed.fill(&mut mono, 1, at(1_010));
        feed.fill(&mut mono, 1, at(3_020));
        let runs = played(&mut feeder);
        assert_eq!(
            timeline(&runs),
            [
                (480, 1_000.0),
                (480, 1_010.0),
                (2_000 * 48, 1_020.0),
                (480, 3_020.0)
            ]
        );
        // What was queued two seconds before is not played now.
        assert!(runs[3].0.iter().all(|&s| s == 0.0));
        assert_eq!(feeder.underruns(), 0);
    }

    #[test]
    fn at_another_rate_what_was_played_comes_back_at_48_khz_in_proportion() {
        let (mut feeder, mut feed) = playback_channel(44_100).expect("channel");
        for _ in 0..20 {
            feeder.push(&[0.25; 480]).expect("push");
        }
        let mut mono = vec![0.0; 441];
        let mut total = 0;
        for _ in 0..15 {
            feed.fill(&mut mono, 1, UNIX_EPOCH);
            total += played(&mut feeder)
                .iter()
                .map(|(s, _)| s.len())
                .sum::<usize>();
        }
        // 15 callbacks of 10 ms: 150 ms at 48 kHz, give or take the
        // resampler's first chunk.
        assert!((7_100..=7_200).contains(&total), "{total}");
        assert_eq!(feeder.underruns(), 0);
    }

    #[test]
    fn a_device_that_stops_asking_fills_the_ring_and_the_rest_is_counted() {
        let (mut feeder, _feed) = playback_channel(48_000).expect("channel");
        for _ in 0..30 {
            feeder.push(&[0.1; 960]).expect("push");
        }
        assert!((feeder.queued_ms() - RING_MS as f64).abs() < 1e-9);
        assert_eq!(feeder.dropped(), 30 * 960 - 48 * RING_MS as u64);
    }
}
