//! Per-frame costs of the media path: H.264 encode and decode, Opus encode and
//! decode, I420→RGBA for display, and the microphone's audio processing
//! (against resampling, per 10 ms), and the playout's clock-drift stretch (per
//! 20 ms packet). Each runs on one thread.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use duet_media::audio_processing::PROCESSING_FRAME_SAMPLES;
use duet_media::resample::StreamResampler;
use duet_media::stretch::ClockStretch;
use duet_media::{
    AudioProcessor, BeepSource, Decoded, H264Decoder, H264Encoder, OpusDecoder, OpusEncoder,
    ProcessingSettings, TestPatternSource,
};

fn with_noise(frame: &duet_media::VideoFrame, seed: u64) -> duet_media::VideoFrame {
    let mut frame = frame.clone();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for px in frame.planes_mut().0.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *px = px.saturating_add((state % 24) as u8);
    }
    frame
}

fn h264(c: &mut Criterion) {
    for (w, h, bitrate) in [(640, 480, 1_000_000), (1280, 720, 2_500_000)] {
        let source = TestPatternSource::new(w, h, 30).unwrap();
        let frames: Vec<_> = (0..120)
            .map(|i| source.draw(i, SystemTime::now()))
            .collect();

        let mut encoder = H264Encoder::new(bitrate, 30).unwrap();
        let mut n = 0;
        c.bench_function(&format!("h264 encode {w}x{h}"), |b| {
            b.iter(|| {
                n += 1;
                black_box(encoder.encode(&frames[n % frames.len()]).unwrap())
            })
        });

        // Sensor-like noise on every pixel: far harder to code than the pattern,
        // closer to a real camera in poor light (the worst case for the encoder).
        let noisy: Vec<_> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| with_noise(f, i as u64))
            .collect();
        let mut encoder = H264Encoder::new(bitrate, 30).unwrap();
        let mut n = 0;
        c.bench_function(&format!("h264 encode {w}x{h} noisy"), |b| {
            b.iter(|| {
                n += 1;
                black_box(encoder.encode(&noisy[n % noisy.len()]).unwrap())
            })
        });

        // A stream of 120 frames that starts with a keyframe, decoded in a loop.
        let mut encoder = H264Encoder::new(bitrate, 30).unwrap();
        let stream: Vec<Vec<u8>> = frames
            .iter()
            .filter_map(|f| encoder.encode(f).unwrap().map(|e| e.data))
            .collect();
        let mut decoder = H264Decoder::new().unwrap();
        let mut n = 0;
        c.bench_function(&format!("h264 decode {w}x{h}"), |b| {
            b.iter(|| {
                if n % stream.len() == 0 {
                    decoder = H264Decoder::new().unwrap();
                }
                let out = decoder.decode(&stream[n % stream.len()], SystemTime::now());
                n += 1;
                assert!(matches!(out, Decoded::Frame(_)));
                black_box(out)
            })
        });

        let frame = &frames[0];
        let mut rgba = Vec::new();
        c.bench_function(&format!("i420 to rgba {w}x{h}"), |b| {
            b.iter(|| {
                frame.to_rgba_into(&mut rgba).unwrap();
                black_box(&rgba);
            })
        });
    }
}

fn opus(c: &mut Criterion) {
    let mut source = BeepSource::new(880.0, SystemTime::now()).unwrap();
    let frames: Vec<_> = (0..50).map(|_| source.generate()).collect();
    let mut encoder = OpusEncoder::new(32_000).unwrap();
    let mut n = 0;
    c.bench_function("opus encode 20 ms", |b| {
        b.iter(|| {
            n += 1;
            black_box(encoder.encode(&frames[n % frames.len()].samples).unwrap())
        })
    });
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| encoder.encode(&f.samples).unwrap())
        .collect();
    let mut decoder = OpusDecoder::new().unwrap();
    let mut n = 0;
    c.bench_function("opus decode 20 ms", |b| {
        b.iter(|| {
            n += 1;
            black_box(decoder.decode(Some(&packets[n % packets.len()])))
        })
    });
}

/// Per 10 ms at 48 kHz, the unit WebRTC processing works in: one far-end
/// frame played, one microphone frame processed.
fn audio_processing(c: &mut Criterion) {
    // 2 s of noise under a 3 Hz syllable envelope as the far end; the
    // microphone hears it 30 ms later at half level over faint noise.
    let len = 2 * 48_000;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let far: Vec<f32> = (0..len)
        .map(|n| {
            0.3 * (n as f32 * 3.0 * std::f32::consts::TAU / 48_000.0)
                .sin()
                .abs()
                * noise()
        })
        .collect();
    let mic: Vec<f32> = (0..len)
        .map(|n| 0.5 * far[(n + len - 1_440) % len] + 0.003 * noise())
        .collect();
    let on = |echo_cancel, noise_suppression, auto_gain| ProcessingSettings {
        echo_cancel,
        noise_suppression,
        auto_gain,
    };
    for (name, settings) in [
        ("echo cancel", on(true, false, false)),
        ("noise suppression", on(false, true, false)),
        ("all three", ProcessingSettings::default()),
    ] {
        let mut processor = AudioProcessor::new(settings);
        let mut frame = vec![0.0; PROCESSING_FRAME_SAMPLES];
        let mut n = 0;
        c.bench_function(&format!("audio processing 10 ms {name}"), |b| {
            b.iter(|| {
                let at = n % (len / PROCESSING_FRAME_SAMPLES) * PROCESSING_FRAME_SAMPLES;
                n += 1;
                // Both clocks advance 10 ms a frame, the far end heard as captured.
                let ms = n as f64 * 10.0;
                processor.far_end(&far[at..at + PROCESSING_FRAME_SAMPLES], ms);
                frame.copy_from_slice(&mic[at..at + PROCESSING_FRAME_SAMPLES]);
                processor.process(&mut frame, ms).unwrap();
                black_box(&frame);
            })
        });
    }

    let mut resampler = StreamResampler::new(48_000, 44_100).unwrap();
    let mut n = 0;
    c.bench_function("resample 10 ms 48 kHz to 44.1 kHz", |b| {
        b.iter(|| {
            let at = n % (len / PROCESSING_FRAME_SAMPLES) * PROCESSING_FRAME_SAMPLES;
            n += 1;
            black_box(
                resampler
                    .push(&mic[at..at + PROCESSING_FRAME_SAMPLES])
                    .unwrap(),
            )
        })
    });
}

/// The playout's clock-drift stretch on one 20 ms packet of the speaker's
/// audio, at 1 (passing through) and at the ±0.5 % a drifting clock needs.
fn stretch(c: &mut Criterion) {
    let packet: Vec<f32> = (0..960)
        .map(|n| 0.3 * (n as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin())
        .collect();
    for ratio in [1.0, 1.005, 0.995] {
        let mut stretch = ClockStretch::new().unwrap();
        stretch.set_ratio(ratio);
        c.bench_function(&format!("stretch 20 ms at {ratio}"), |b| {
            b.iter(|| black_box(stretch.process(black_box(&packet)).unwrap().len()))
        });
    }
}

criterion_group!(benches, h264, opus, audio_processing, stretch);
criterion_main!(benches);
