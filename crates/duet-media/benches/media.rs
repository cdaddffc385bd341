//! Per-frame costs of the media path: H.264 encode and decode, Opus encode and
//! decode, and I420→RGBA for display. Each runs on one thread.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use duet_media::{
    BeepSource, Decoded, H264Decoder, H264Encoder, OpusDecoder, OpusEncoder, TestPatternSource,
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

criterion_group!(benches, h264, opus);
criterion_main!(benches);
