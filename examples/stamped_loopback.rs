//! Sends the stamped test pattern through a real H.264 encoder and decoder and
//! prints what the receiver reads from each picture: the measurement the call
//! makes on every frame, without the network.
//!
//! `cargo run --release --example stamped_loopback`

use std::time::SystemTime;

use duet_media::frame::unix_ms;
use duet_media::stamp::latency_ms;
use duet_media::{Decoded, H264Decoder, H264Encoder, StampReader, TestPatternSource};

fn main() -> anyhow::Result<()> {
    let mut source = TestPatternSource::new(640, 480, 30)?;
    let mut encoder = H264Encoder::new(1_000_000, 30)?;
    let mut decoder = H264Decoder::new()?;
    for _ in 0..30 {
        let frame = source.next_frame();
        let Some(encoded) = encoder.encode(&frame)? else {
            continue;
        };
        match decoder.decode(&encoded.data, frame.capture_time) {
            Decoded::Frame(picture) => match StampReader::read(&picture) {
                Some(stamp) => println!(
                    "{} bytes{}  stamp {stamp}  encode+decode {} ms",
                    encoded.data.len(),
                    if encoded.keyframe { " (keyframe)" } else { "" },
                    latency_ms(stamp, unix_ms(SystemTime::now()))
                ),
                None => println!("a picture without a readable stamp"),
            },
            Decoded::Nothing => {}
            Decoded::NeedKeyframe => encoder.request_keyframe(),
        }
    }
    Ok(())
}
