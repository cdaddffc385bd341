//! The microphone: its device callback only turns each buffer into mono
//! samples and puts them in a lock-free ring (no lock, no allocation, no
//! logging on the real-time thread); the capture thread takes them out,
//! resamples them to 48 kHz and cuts them into 20 ms frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cpal::traits::{DeviceTrait, StreamTrait};
use rtrb::{Consumer, Producer, RingBuffer};

use super::stream_errors::StreamErrorLog;
use super::{device_name, find_device, quietly, small_buffer};
use crate::MediaError;
use crate::frame::{AudioFrame, FRAME_SAMPLES, SAMPLE_RATE};
use crate::mic_wait::MicWait;
use crate::resample::StreamResampler;
use crate::source::Notice;

/// How often the capture thread looks for new samples while it waits.
const POLL: Duration = Duration::from_millis(5);

/// An open microphone delivering 20 ms frames at 48 kHz mono.
pub struct Microphone {
    _stream: cpal::Stream,
    frames: FrameAssembler,
    name: String,
    /// The waiting while it gives no sound ([`Microphone::next_frame_or_silence`]).
    wait: MicWait,
}

impl std::fmt::Debug for Microphone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Microphone")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Microphone {
    /// Opens the default microphone, or the one named `name`.
    pub fn open(name: Option<&str>) -> Result<Microphone, MediaError> {
        quietly(|| Microphone::open_loudly(name))
    }

    fn open_loudly(name: Option<&str>) -> Result<Microphone, MediaError> {
        let device = find_device(true, name)?;
        let device_name = device_name(&device, "microphone");
        let failed =
            |e: &dyn std::fmt::Display| MediaError::NoMicrophone(format!("{device_name}: {e}"));
        let config = device.default_input_config().map_err(|e| failed(&e))?;
        let rate = config.sample_rate();
        // A second of the device's audio: far more than a stalled capture
        // thread should ever leave in it.
        let (producer, consumer) = RingBuffer::new(rate as usize);
        let overflowed = Arc::new(AtomicU64::new(0));
        let callback = MonoWriter {
            channels: usize::from(config.channels()).max(1),
            ring: producer,
            overflowed: Arc::clone(&overflowed),
        };
        let stream = build_input(&device, &config, callback).map_err(|e| failed(&e))?;
        stream.play().map_err(|e| failed(&e))?;
        Ok(Microphone {
            _stream: stream,
            frames: FrameAssembler::new(consumer, rate, overflowed)?,
            name: device_name,
            wait: MicWait::default(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next 20 ms, or `None` if the device delivered too little for it
    /// within `timeout`.
    pub fn next_frame(&mut self, timeout: Duration) -> Option<AudioFrame> {
        self.frames.next_frame(timeout)
    }

    /// The next 20 ms of sound, or of silence while the microphone gives
    /// none (slow to start, or paused), at the pace of real time; with a
    /// notice once the silence grows long (see `mic_wait`).
    pub fn next_frame_or_silence(&mut self) -> (AudioFrame, Option<Notice>) {
        let frames = &mut self.frames;
        self.wait
            .next(&self.name, |timeout| frames.next_frame(timeout))
    }
}

/// The device callback's side: interleaved samples in, mono samples into
/// the ring. What does not fit is counted, not waited for.
struct MonoWriter {
    channels: usize,
    ring: Producer<f32>,
    overflowed: Arc<AtomicU64>,
}

impl MonoWriter {
    fn write<T: Copy>(&mut self, interleaved: &[T], to_f32: impl Fn(T) -> f32) {
        let scale = 1.0 / self.channels as f32;
        let mut lost = 0;
        for frame in interleaved.chunks_exact(self.channels) {
            let mono = frame.iter().map(|&s| to_f32(s)).sum::<f32>() * scale;
            if self.ring.push(mono).is_err() {
                lost += 1;
            }
        }
        if lost > 0 {
            self.overflowed.fetch_add(lost, Ordering::Relaxed);
        }
    }
}

fn build_input(
    device: &cpal::Device,
    config: &cpal::SupportedStreamConfig,
    mut writer: MonoWriter,
) -> Result<cpal::Stream, cpal::Error> {
    let mut stream_config: cpal::StreamConfig = config.config();
    stream_config.buffer_size = small_buffer(config.buffer_size(), stream_config.sample_rate);
    // cpal calls this off the real-time path, when the stream fails.
    let mut errors = StreamErrorLog::default();
    let on_error = move |err: cpal::Error| errors.warn("microphone", &err);
    match config.sample_format() {
        cpal::SampleFormat::I16 => device.build_input_stream(
            stream_config,
            move |data: &[i16], _: &_| writer.write(data, |s| f32::from(s) / 32768.0),
            on_error,
            None,
        ),
        cpal::SampleFormat::I32 => device.build_input_stream(
            stream_config,
            move |data: &[i32], _: &_| writer.write(data, |s| s as f32 / 2_147_483_648.0),
            on_error,
            None,
        ),
        _ => device.build_input_stream(
            stream_config,
            move |data: &[f32], _: &_| writer.write(data, |s| s),
            on_error,
            None,
        ),
    }
}

/// The capture thread's side: mono samples out of the ring, resampled to
/// 48 kHz, cut into 20 ms frames.
struct FrameAssembler {
    ring: Consumer<f32>,
    device_rate: u32,
    resampler: StreamResampler,
    taken: Vec<f32>,
    pending: Vec<f32>,
    overflowed: Arc<AtomicU64>,
    overflow_told: u64,
}

impl FrameAssembler {
    fn new(
        ring: Consumer<f32>,
        device_rate: u32,
        overflowed: Arc<AtomicU64>,
    ) -> Result<FrameAssembler, MediaError> {
        Ok(FrameAssembler {
            ring,
            device_rate,
            resampler: StreamResampler::new(device_rate, SAMPLE_RATE)?,
            taken: Vec::new(),
            pending: Vec::new(),
            overflowed,
            overflow_told: 0,
        })
    }

    fn next_frame(&mut self, timeout: Duration) -> Option<AudioFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            self.take_from_ring();
            if self.pending.len() >= FRAME_SAMPLES {
                let samples: Vec<f32> = self.pending.drain(..FRAME_SAMPLES).collect();
                // The first sample of this frame was heard this long before now:
                // everything after it is still waiting here or in the ring.
                let waiting = (samples.len() + self.pending.len()) as f64 / f64::from(SAMPLE_RATE)
                    + self.ring.slots() as f64 / f64::from(self.device_rate);
                let capture_time = SystemTime::now() - Duration::from_secs_f64(waiting);
                return Some(AudioFrame {
                    samples,
                    capture_time,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    fn take_from_ring(&mut self) {
        let available = self.ring.slots();
        if available > 0
            && let Ok(chunk) = self.ring.read_chunk(available)
        {
            self.taken.clear();
            let (first, second) = chunk.as_slices();
            self.taken.extend_from_slice(first);
            self.taken.extend_from_slice(second);
            chunk.commit_all();
            match self.resampler.push(&self.taken) {
                Ok(samples) => self.pending.extend_from_slice(&samples),
                Err(err) => tracing::warn!(%err, "microphone resampling failed"),
            }
        }
        let overflowed = self.overflowed.load(Ordering::Relaxed);
        if overflowed > self.overflow_told {
            tracing::debug!(
                samples = overflowed - self.overflow_told,
                "the capture thread fell behind the microphone; samples were lost"
            );
            self.overflow_told = overflowed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(rate: u32, channels: usize, capacity: usize) -> (MonoWriter, FrameAssembler) {
        let (producer, consumer) = RingBuffer::new(capacity);
        let overflowed = Arc::new(AtomicU64::new(0));
        let writer = MonoWriter {
            channels,
            ring: producer,
            overflowed: Arc::clone(&overflowed),
        };
        let assembler = FrameAssembler::new(consumer, rate, overflowed).expect("resampler");
        (writer, assembler)
    }

    #[test]
    fn device_buffers_of_any_size_become_whole_frames_in_order() {
        let (mut writer, mut frames) = pair(48_000, 2, 48_000);
        // Stereo buffers of 7 ms (336 frames), left and right averaged.
        let mut sent = 0u32;
        for _ in 0..10 {
            let buffer: Vec<i16> = (0..336)
                .flat_map(|i| {
                    let level = ((sent + i) % 1000) as i16 * 10;
                    [level, level]
                })
                .collect();
            writer.write(&buffer, |s| f32::from(s) / 32768.0);
            sent += 336;
        }
        let mut got = Vec::new();
        while let Some(frame) = frames.next_frame(Duration::ZERO) {
            assert_eq!(frame.samples.len(), FRAME_SAMPLES);
            got.extend(frame.samples);
        }
        assert_eq!(
            got.len(),
            3 * FRAME_SAMPLES,
            "3360 samples make three frames"
        );
        for (i, sample) in got.iter().enumerate() {
            let expected = (i % 1000) as f32 * 10.0 / 32768.0;
            assert!(
                (sample - expected).abs() < 1e-6,
                "sample {i}: {sample} vs {expected}"
            );
        }
    }

    #[test]
    fn a_full_ring_counts_what_it_lost_instead_of_waiting() {
        let (mut writer, mut frames) = pair(48_000, 1, 1000);
        writer.write(&[0.5f32; 1500], |s| s);
        assert_eq!(writer.overflowed.load(Ordering::Relaxed), 500);
        assert!(
            frames.next_frame(Duration::ZERO).is_some(),
            "what fitted is kept"
        );
    }

    #[test]
    fn too_little_audio_is_no_frame() {
        let (mut writer, mut frames) = pair(48_000, 1, 48_000);
        writer.write(&[0.1f32; 900], |s| s);
        assert!(frames.next_frame(Duration::from_millis(10)).is_none());
        writer.write(&[0.1f32; 60], |s| s);
        assert!(frames.next_frame(Duration::ZERO).is_some());
    }
}
