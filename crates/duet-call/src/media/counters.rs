//! What the media paths count while the call runs. Counters bumped per packet
//! or frame are atomics (no lock on the media paths); the latency samples,
//! pushed once per stamped frame or beep, sit behind one lock. The report and
//! the live figures read a snapshot.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use duet_measure::Samples;

use crate::report::{CounterSnapshot, LiveFigures, NetworkSummary};

/// Latency samples, in milliseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    /// One-way video latency from the stamps, read when a frame is decoded.
    pub(crate) video: Samples,
    /// One-way video latency from the stamps, read where a front end showed the picture.
    pub(crate) display: Samples,
    /// Mouth-to-ear latency from the beeps, read where the sink takes the samples.
    pub(crate) audio: Samples,
}

/// The counters the media threads and tasks bump.
#[derive(Debug)]
pub(crate) struct MediaCounters {
    /// Video frames handed to the network.
    pub(crate) frames_sent: AtomicU64,
    /// Bytes of video sent.
    pub(crate) video_bytes_sent: AtomicU64,
    /// Keyframes sent.
    pub(crate) keyframes_sent: AtomicU64,
    /// Keyframe requests (PLI and FIR) received from the remote.
    pub(crate) pli_received: AtomicU64,
    /// NACKs received from the remote.
    pub(crate) nack_received: AtomicU64,
    /// Whole access units received.
    pub(crate) frames_received: AtomicU64,
    /// Bytes of video received.
    pub(crate) video_bytes_received: AtomicU64,
    /// Access units dropped before decoding because decoding fell behind.
    pub(crate) frames_dropped: AtomicU64,
    /// Frames decoded into pictures.
    pub(crate) frames_decoded: AtomicU64,
    /// Decoded frames with a live test stamp (`docs/test-signals.md`).
    pub(crate) stamped_frames: AtomicU64,
    /// Video freezes (see `freeze`), once the rule judged an interval.
    freezes_judged: AtomicBool,
    freeze_count: AtomicU64,
    /// The freezes' durations added up, in microseconds.
    freezes_us: AtomicU64,
    /// Keyframe requests (PLI) this peer sent.
    pub(crate) pli_sent: AtomicU64,
    /// Audio packets sent.
    pub(crate) audio_packets_sent: AtomicU64,
    /// Audio packets received.
    pub(crate) audio_packets_received: AtomicU64,
    /// 20 ms ticks of audio made up for packets lost or late (concealment or FEC).
    pub(crate) audio_packets_concealed: AtomicU64,
    /// Times the output device ran out of audio after it had started playing.
    pub(crate) audio_device_underruns: AtomicU64,
    /// The output device's measured rate in Hz (`f64` bits; 0 for none yet).
    audio_device_rate_bits: AtomicU64,
    /// Beeps heard.
    pub(crate) beeps_detected: AtomicU64,
    /// Frequency of the last beep heard (`f32` bits; 0 for none).
    beep_hz_bits: AtomicU32,
    /// Size of the last decoded frame (width << 32 | height; 0 for none).
    last_size: AtomicU64,
    latencies: Mutex<Latencies>,
}

impl Default for MediaCounters {
    fn default() -> Self {
        MediaCounters::new()
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl MediaCounters {
    /// All zero.
    pub(crate) fn new() -> MediaCounters {
        let zero = || AtomicU64::new(0);
        MediaCounters {
            frames_sent: zero(),
            video_bytes_sent: zero(),
            keyframes_sent: zero(),
            pli_received: zero(),
            nack_received: zero(),
            frames_received: zero(),
            video_bytes_received: zero(),
            frames_dropped: zero(),
            frames_decoded: zero(),
            stamped_frames: zero(),
            freezes_judged: AtomicBool::new(false),
            freeze_count: zero(),
            freezes_us: zero(),
            pli_sent: zero(),
            audio_packets_sent: zero(),
            audio_packets_received: zero(),
            audio_packets_concealed: zero(),
            audio_device_underruns: zero(),
            audio_device_rate_bits: zero(),
            beeps_detected: zero(),
            beep_hz_bits: AtomicU32::new(0),
            last_size: zero(),
            latencies: Mutex::new(Latencies::default()),
        }
    }

    /// The output device was measured to play `hz` samples a second (`None`: not yet).
    pub(crate) fn set_device_rate(&self, hz: Option<f64>) {
        let bits = hz
            .filter(|hz| hz.is_finite() && *hz > 0.0)
            .map_or(0, f64::to_bits);
        self.audio_device_rate_bits.store(bits, Ordering::Relaxed);
    }

    /// A frame of `width`×`height` was decoded.
    pub(crate) fn frame_decoded(&self, width: u32, height: u32) {
        bump(&self.frames_decoded, 1);
        self.last_size.store(
            (u64::from(width) << 32) | u64::from(height),
            Ordering::Relaxed,
        );
    }

    /// The freeze rule has judged frame intervals; its totals are now `count` and `total`.
    pub(crate) fn set_freezes(&self, count: u64, total: Duration) {
        self.freezes_judged.store(true, Ordering::Relaxed);
        self.freeze_count.store(count, Ordering::Relaxed);
        self.freezes_us
            .store(total.as_micros() as u64, Ordering::Relaxed);
    }

    /// A beep of `hz` was heard.
    pub(crate) fn beep_heard(&self, hz: f32) {
        bump(&self.beeps_detected, 1);
        self.beep_hz_bits.store(hz.to_bits(), Ordering::Relaxed);
    }

    /// Runs `f` on the latency samples (once per stamped frame or beep, not per packet).
    pub(crate) fn latencies(&self, f: impl FnOnce(&mut Latencies)) {
        if let Ok(mut latencies) = self.latencies.lock() {
            f(&mut latencies);
        }
    }

    fn last_size(&self) -> Option<(u32, u32)> {
        let packed = read(&self.last_size);
        (packed != 0).then_some(((packed >> 32) as u32, packed as u32))
    }

    /// Everything counted so far, for the report.
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let latencies = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        let beep_hz = f32::from_bits(self.beep_hz_bits.load(Ordering::Relaxed));
        CounterSnapshot {
            frames_sent: read(&self.frames_sent),
            video_bytes_sent: read(&self.video_bytes_sent),
            keyframes_sent: read(&self.keyframes_sent),
            pli_received: read(&self.pli_received),
            nack_received: read(&self.nack_received),
            frames_received: read(&self.frames_received),
            video_bytes_received: read(&self.video_bytes_received),
            frames_dropped: read(&self.frames_dropped),
            frames_decoded: read(&self.frames_decoded),
            stamped_frames: read(&self.stamped_frames),
            freeze_count: self
                .freezes_judged
                .load(Ordering::Relaxed)
                .then(|| read(&self.freeze_count)),
            total_freezes_duration: Duration::from_micros(read(&self.freezes_us)),
            video_latency: latencies.video,
            display_latency: latencies.display,
            last_size: self.last_size(),
            audio_packets_sent: read(&self.audio_packets_sent),
            audio_packets_received: read(&self.audio_packets_received),
            audio_packets_concealed: read(&self.audio_packets_concealed),
            audio_device_underruns: read(&self.audio_device_underruns),
            audio_device_rate_hz: Some(f64::from_bits(read(&self.audio_device_rate_bits)))
                .filter(|hz| *hz > 0.0),
            beeps_detected: read(&self.beeps_detected),
            beep_hz: (beep_hz > 0.0).then_some(beep_hz),
            audio_latency: latencies.audio,
            pli_sent: read(&self.pli_sent),
        }
    }

    /// Figures for a live display: a few atomic reads and two medians of the
    /// newest latency samples (the UI asks at most once a second).
    pub(crate) fn live(&self, network: &NetworkSummary) -> LiveFigures {
        let (video_latency_ms, audio_latency_ms) = self
            .latencies
            .lock()
            .map(|l| (l.video.recent_median(30), l.audio.recent_median(3)))
            .unwrap_or_default();
        LiveFigures {
            frames_sent: read(&self.frames_sent),
            frames_decoded: read(&self.frames_decoded),
            video_bytes_sent: read(&self.video_bytes_sent),
            video_bytes_received: read(&self.video_bytes_received),
            remote_size: self.last_size(),
            rtt_ms: network.rtt_ms,
            packets_lost: network.packets_lost,
            video_latency_ms,
            audio_latency_ms,
            path: network.path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_snapshot_has_nothing_measured() {
        let snapshot = MediaCounters::new().snapshot();
        assert_eq!(snapshot.frames_decoded, 0);
        assert_eq!(snapshot.last_size, None);
        assert_eq!(snapshot.beep_hz, None);
        assert_eq!(snapshot.freeze_count, None);
        assert!(snapshot.video_latency.is_empty());
    }

    #[test]
    fn counts_sizes_spans_and_samples_read_back() {
        let counters = MediaCounters::new();
        counters.frame_decoded(640, 480);
        counters.frame_decoded(320, 240);
        bump(&counters.frames_sent, 3);
        bump(&counters.video_bytes_sent, 1000);
        counters.beep_heard(880.0);
        counters.set_freezes(2, Duration::from_millis(700));
        counters.latencies(|l| {
            l.video.push(12.0);
            l.audio.push(40.0);
        });
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.frames_decoded, 2);
        assert_eq!(snapshot.frames_sent, 3);
        assert_eq!(snapshot.last_size, Some((320, 240)));
        assert_eq!(snapshot.beep_hz, Some(880.0));
        assert_eq!(snapshot.beeps_detected, 1);
        assert_eq!(snapshot.freeze_count, Some(2));
        assert_eq!(snapshot.total_freezes_duration, Duration::from_millis(700));
        let live = counters.live(&NetworkSummary::default());
        assert_eq!(live.remote_size, Some((320, 240)));
        assert_eq!(live.video_latency_ms, Some(12.0));
        assert_eq!(live.audio_latency_ms, Some(40.0));
        assert_eq!(live.video_bytes_sent, 1000);
    }

    #[test]
    fn counters_bumped_from_many_threads_lose_nothing() {
        let counters = std::sync::Arc::new(MediaCounters::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counters = std::sync::Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        bump(&counters.audio_packets_received, 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("counting thread");
        }
        assert_eq!(counters.snapshot().audio_packets_received, 40_000);
    }
}
