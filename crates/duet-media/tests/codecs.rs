//! The codecs end to end with the test signals: stamped video through H.264
//! and beeps through Opus, with and without loss.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duet_media::frame::unix_ms;
use duet_media::test_audio::sample_time;
use duet_media::{
    BeepDetector, BeepSource, Decoded, H264Decoder, H264Encoder, OpusDecoder, OpusEncoder,
    StampReader, TestPatternSource,
};

fn stamped_frames_survive_h264(width: u32, height: u32) {
    let source = TestPatternSource::new(width, height, 30).unwrap();
    let mut encoder = H264Encoder::new(1_000_000, 30).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let start = unix_ms(SystemTime::now());
    let mut read = 0;
    for i in 0..100u64 {
        let captured = UNIX_EPOCH + Duration::from_millis(start + i * 33);
        let frame = source.draw(i, captured);
        let encoded = encoder
            .encode(&frame)
            .unwrap()
            .expect("no frame is skipped");
        assert_eq!(encoded.keyframe, i == 0, "frame {i}");
        match decoder.decode(&encoded.data, captured) {
            Decoded::Frame(decoded) => {
                assert_eq!((decoded.width(), decoded.height()), (width, height));
                assert_eq!(
                    StampReader::read(&decoded),
                    Some(((start + i * 33) % (1 << 32)) as u32),
                    "{width}x{height} frame {i}"
                );
                read += 1;
            }
            other => panic!("{width}x{height} frame {i}: {other:?}"),
        }
    }
    assert_eq!(read, 100);
}

#[test]
fn every_stamp_reads_back_after_h264_at_640x480() {
    stamped_frames_survive_h264(640, 480);
}

#[test]
fn every_stamp_reads_back_after_h264_at_1280x720() {
    stamped_frames_survive_h264(1280, 720);
}

#[test]
fn every_stamp_reads_back_after_h264_at_320x240() {
    stamped_frames_survive_h264(320, 240);
}

/// Bits per second the encoder spends on `source` at Duet's default ceiling
/// (1.5 Mbit/s), keyframe left out.
fn bitrate_at_default_ceiling(source: &TestPatternSource) -> f64 {
    let mut encoder = H264Encoder::new(1_500_000, 30).unwrap();
    let mut bytes = 0;
    for i in 0..90u64 {
        let frame = source.draw(i, SystemTime::now());
        if let Some(encoded) = encoder.encode(&frame).unwrap()
            && i > 0
        {
            bytes += encoded.data.len();
        }
    }
    bytes as f64 * 8.0 / (89.0 / 30.0)
}

#[test]
fn the_noisy_pattern_costs_what_a_camera_costs_and_the_clean_one_little() {
    let clean = bitrate_at_default_ceiling(&TestPatternSource::new(640, 480, 30).unwrap());
    let noisy =
        bitrate_at_default_ceiling(&TestPatternSource::new(640, 480, 30).unwrap().with_noise());
    eprintln!("640x480 at 30 fps: clean {clean:.0} bit/s, noisy {noisy:.0} bit/s");
    assert!(noisy >= 1_000_000.0, "noisy: {noisy:.0} bit/s");
    assert!(clean < 300_000.0, "clean: {clean:.0} bit/s");
}

#[test]
fn a_lost_access_unit_asks_for_a_keyframe_and_the_keyframe_recovers() {
    let source = TestPatternSource::new(640, 480, 30).unwrap();
    let mut encoder = H264Encoder::new(1_000_000, 30).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let (mut recovered, mut asked) = (0, 0);
    let mut lost_pending = false;
    for i in 0..100u64 {
        let captured = SystemTime::now();
        let encoded = encoder.encode(&source.draw(i, captured)).unwrap().unwrap();
        if i % 10 == 5 {
            decoder.note_loss();
            lost_pending = true;
            continue;
        }
        match decoder.decode(&encoded.data, captured) {
            Decoded::NeedKeyframe => {
                assert!(lost_pending, "frame {i}: only after a loss");
                asked += 1;
                encoder.request_keyframe();
            }
            Decoded::Frame(frame) => {
                assert!(StampReader::read(&frame).is_some(), "frame {i}");
                if lost_pending {
                    assert!(encoded.keyframe, "frame {i}: recovery starts at a keyframe");
                    recovered += 1;
                    lost_pending = false;
                }
            }
            Decoded::Nothing => panic!("frame {i}: no picture"),
        }
    }
    assert_eq!(
        asked, 10,
        "each loss asks once, and the next frame is the keyframe"
    );
    assert_eq!(recovered, 10);
}

#[test]
fn the_bitrate_changes_while_running() {
    let source = TestPatternSource::new(640, 480, 30).unwrap();
    let mut encoder = H264Encoder::new(300_000, 30).unwrap();
    // Noise is hard to compress, so the encoder is held by its bitrate, not by the picture.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut noisy = |i: u64| {
        let mut frame = source.draw(i, SystemTime::now());
        for px in frame.planes_mut().0.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *px = px.saturating_add((seed % 32) as u8);
        }
        frame
    };
    let mut bytes_at = |encoder: &mut H264Encoder, from: u64| -> usize {
        (from..from + 30)
            .map(|i| {
                encoder
                    .encode(&noisy(i))
                    .unwrap()
                    .map_or(0, |e| e.data.len())
            })
            .sum()
    };
    // Skip the first second of each setting: the rate controller settles.
    bytes_at(&mut encoder, 0);
    let low = bytes_at(&mut encoder, 60);
    encoder.set_bitrate(2_000_000).unwrap();
    bytes_at(&mut encoder, 120);
    let high = bytes_at(&mut encoder, 180);
    assert!(
        high > low * 2,
        "300 kbit/s: {low} bytes, 2 Mbit/s: {high} bytes"
    );
}

/// Runs 5 s of beeps through Opus, dropping every `drop_every`-th packet.
fn beeps_through_opus(hz: f32, drop_every: Option<usize>) {
    let start = UNIX_EPOCH + Duration::from_millis(1_764_000_000_500);
    let mut source = BeepSource::new(hz, start).unwrap();
    let mut encoder = OpusEncoder::new(32_000).unwrap();
    let mut decoder = OpusDecoder::new().unwrap();
    let lookahead = encoder.lookahead().unwrap();
    let mut detector = BeepDetector::new();
    let mut output_samples: u64 = 0;
    let first_sample = duet_media::test_audio::sample_index(start);
    for n in 0..250 {
        let frame = source.generate();
        let packet = encoder.encode(&frame.samples).unwrap();
        let decoded = match drop_every {
            Some(k) if n % k == k - 1 => decoder.decode(None),
            _ => decoder.decode(Some(&packet)),
        };
        // Decoded sample j is input sample j - lookahead: place it on the sender's timeline.
        let at = sample_time((first_sample + output_samples).saturating_sub(lookahead as u64));
        let ms = at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0;
        detector.push(&decoded, ms);
        output_samples += decoded.len() as u64;
    }
    let beeps = detector.beeps();
    assert_eq!(beeps.len(), 5, "{hz} Hz, drop {drop_every:?}: {beeps:?}");
    for beep in beeps {
        assert!(
            beep.latency_ms.abs() <= 5.0,
            "{hz} Hz onset off by {:.2} ms",
            beep.latency_ms
        );
        assert!(
            (beep.frequency_hz - f64::from(hz)).abs() <= f64::from(hz) * 0.02,
            "{hz} Hz read as {:.1}",
            beep.frequency_hz
        );
    }
}

#[test]
fn every_beep_survives_opus_on_time_and_at_its_frequency() {
    for hz in [440.0, 880.0, 2000.0] {
        beeps_through_opus(hz, None);
    }
}

#[test]
fn concealment_keeps_every_beep_with_10_percent_loss() {
    for hz in [440.0, 880.0, 2000.0] {
        beeps_through_opus(hz, Some(10));
    }
}

#[test]
fn corrupt_data_asks_for_a_keyframe_instead_of_failing() {
    let source = TestPatternSource::new(320, 240, 30).unwrap();
    let mut encoder = H264Encoder::new(500_000, 30).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    let now = SystemTime::now();
    let first = encoder.encode(&source.draw(0, now)).unwrap().unwrap();
    assert!(matches!(
        decoder.decode(&first.data, now),
        Decoded::Frame(_)
    ));
    // Garbage, then a P-frame with its slice data scrambled.
    let outcome = decoder.decode(&[0, 0, 0, 1, 0x41, 0xff, 0x00, 0x13, 0x37], now);
    assert!(!matches!(outcome, Decoded::Frame(_)), "{outcome:?}");
    let mut p = encoder.encode(&source.draw(1, now)).unwrap().unwrap();
    let len = p.data.len();
    for byte in &mut p.data[len / 2..] {
        *byte ^= 0x5a;
    }
    let _ = decoder.decode(&p.data, now);
    // Whatever openh264 made of it, a keyframe always brings the picture back.
    encoder.request_keyframe();
    let key = encoder.encode(&source.draw(2, now)).unwrap().unwrap();
    assert!(key.keyframe);
    assert!(matches!(decoder.decode(&key.data, now), Decoded::Frame(_)));
    // Before any keyframe, a fresh decoder asks for one.
    let p = encoder.encode(&source.draw(3, now)).unwrap().unwrap();
    let mut fresh = H264Decoder::new().unwrap();
    assert!(matches!(fresh.decode(&p.data, now), Decoded::NeedKeyframe));
}
