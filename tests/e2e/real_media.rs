//! Latency figures come only from the test signals. A call whose sender sends
//! pictures and sound that are not the test signals (here a video file of
//! noise and moving shapes, partly a *recorded* test pattern with day-old
//! stamps, and a WAV file of speech-like syllables and noise bursts) must
//! report no video or audio latency and no beeps at the receiver, while the
//! other direction of the same call, which carries the test signals, still
//! measures them.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::f32::consts::PI;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{LivePeer, Scratch, number, peer, report, serialised, start_server};
use duet_media::VideoFrame;
use duet_media::stamp::draw_stamp;
use duet_media::wav_file::WavRecorder;
use duet_media::y4m_file::write_y4m;

/// Deterministic noise in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// 2 s of 640x480 video: sensor-like noise on every pixel (±8 of luma, more
/// than a camera in good light has) with a moving box,
/// and for the second half a test pattern whose stamp is a day old (what a
/// recording of a test call would carry).
fn write_noisy_video(path: &Path) {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let day_ago = duet_media::frame::unix_ms(SystemTime::now()) - 86_400_000;
    let frames: Vec<VideoFrame> = (0..60u32)
        .map(|i| {
            let mut frame = VideoFrame::black(640, 480, SystemTime::now()).unwrap();
            let (y, u, v) = frame.planes_mut();
            for (n, p) in y.iter_mut().enumerate() {
                let (x, row) = ((n % 640) as u32, (n / 640) as u32);
                let boxed = (x.wrapping_sub(i * 8) % 640) < 120 && (200..320).contains(&row);
                let base = if boxed {
                    180.0
                } else {
                    60.0 + (x as f32 / 8.0)
                };
                *p = (base + 8.0 * noise.next()).clamp(16.0, 235.0) as u8;
            }
            for p in u.iter_mut().chain(v.iter_mut()) {
                *p = (128.0 + 4.0 * noise.next()) as u8;
            }
            if i >= 30 {
                draw_stamp(&mut frame, day_ago + u64::from(i) * 33);
            }
            frame
        })
        .collect();
    write_y4m(path, &frames, 30).unwrap();
}

/// 10 s of 48 kHz mono: a voiced "syllable" (a gliding pulse train through two
/// resonances) right after every whole second of the file, a noise burst in
/// the middle of each second, silence between.
fn write_speech_like_audio(path: &Path) {
    let mut noise = Noise(42);
    let mut samples = vec![0.0f32; 48_000 * 10];
    for second in 0..10 {
        let start = second * 48_000 + 480;
        let syllable = 4_800 + (second % 3) * 2_400; // 100 to 200 ms
        for n in 0..syllable {
            let t = n as f32 / 48_000.0;
            let pitch = 110.0 + 60.0 * (t * 9.0).sin() + 200.0 * t;
            let pulse = (-(pitch * t).fract() * 10.0).exp();
            let resonances = (2.0 * PI * 650.0 * t).sin() + 0.5 * (2.0 * PI * 1_150.0 * t).sin();
            samples[start + n] = 0.45 * pulse * resonances;
        }
        for n in 0..4_800 {
            samples[start + 24_000 + n] = 0.5 * noise.next();
        }
    }
    let mut recorder = WavRecorder::create(path).unwrap();
    recorder.write(&samples).unwrap();
    recorder.finish().unwrap();
}

#[test]
fn a_call_without_test_signals_reports_no_latency_and_no_beeps() {
    let _one = serialised();
    let scratch = Scratch::new("real-media");
    let video = scratch.path("noisy.y4m");
    let audio = scratch.path("speech.wav");
    write_noisy_video(&video);
    write_speech_like_audio(&audio);
    let (_server, url) = start_server(&scratch, "127.0.0.1:0");
    let stats = scratch.path("files.json");
    let mut files = LivePeer::spawn(
        &[
            "caller",
            "--headless",
            "--server",
            &url,
            "--room",
            "duet",
            "--video",
            video.to_str().unwrap(),
            "--audio",
            audio.to_str().unwrap(),
            "--stats-json",
            stats.to_str().unwrap(),
            "--duration",
            "8",
        ],
        &scratch.0,
        "files",
    );
    files.expect_line("waiting for the other peer", Duration::from_secs(30));
    let mut test = peer(
        &scratch,
        "test",
        "callee",
        &url,
        "660",
        &["--duration", "8"],
    );
    for peer in [&mut files, &mut test] {
        peer.expect_line("first remote frame", Duration::from_secs(20));
    }
    assert!(files.wait_for_exit(Duration::from_secs(30)).success());
    assert!(test.wait_for_exit(Duration::from_secs(30)).success());

    // The callee received noise, a stale recorded pattern and speech: pictures
    // and sound arrived, but no latency was made up from them.
    let heard_files = report(&scratch, "test");
    assert!(
        number(&heard_files, &["video", "frames_decoded"]) >= 60.0,
        "{heard_files:#}"
    );
    assert!(
        number(&heard_files, &["audio", "packets_received"]) >= 300.0,
        "{heard_files:#}"
    );
    assert_eq!(heard_files["video"]["stamped_frames"], 0, "{heard_files:#}");
    assert!(
        heard_files["video"]["latency_ms"].is_null(),
        "{heard_files:#}"
    );
    assert!(
        heard_files["video"]["display_latency_ms"].is_null(),
        "{heard_files:#}"
    );
    assert_eq!(heard_files["audio"]["beeps_detected"], 0, "{heard_files:#}");
    assert!(
        heard_files["audio"]["latency_ms"].is_null(),
        "{heard_files:#}"
    );
    assert!(heard_files["audio"]["beep_hz"].is_null(), "{heard_files:#}");

    // The other direction carried the test signals and measured them.
    let heard_test =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&stats).unwrap())
            .unwrap();
    assert!(
        number(&heard_test, &["video", "stamped_frames"]) >= 150.0,
        "{heard_test:#}"
    );
    assert!(number(&heard_test, &["video", "latency_ms", "p50"]) < 500.0);
    assert!(
        number(&heard_test, &["audio", "beeps_detected"]) >= 4.0,
        "{heard_test:#}"
    );
    assert!((number(&heard_test, &["audio", "beep_hz"]) - 660.0).abs() < 14.0);
}
