//! The video decode thread: decodes, reads stamps, counts, publishes pictures.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use duet_media::frame::unix_ms;
use duet_media::stamp::latency_ms;
use duet_media::{Decoded, H264Decoder, StampReader};
use tokio::sync::mpsc;

use super::MediaNotice;
use super::shared::MediaShared;

/// Input of the decode thread.
#[derive(Debug)]
pub(crate) enum DecodeInput {
    /// A whole access unit.
    Unit(Bytes),
    /// Packets were lost: wait for a keyframe.
    Loss,
    /// A new call starts: forget the old stream.
    Reset,
}

/// Starts the video decode thread: decodes, reads stamps, counts, publishes pictures.
pub(crate) fn start_video_decoder(
    shared: Arc<MediaShared>,
    notices: mpsc::UnboundedSender<MediaNotice>,
) -> std::io::Result<std_mpsc::Sender<DecodeInput>> {
    let (input, rx) = std_mpsc::channel::<DecodeInput>();
    std::thread::Builder::new()
        .name("duet-video-decode".into())
        .spawn(move || {
            let mut decoder = match H264Decoder::new() {
                Ok(decoder) => decoder,
                Err(err) => {
                    let _ = notices.send(MediaNotice::Failed(err.to_string()));
                    return;
                }
            };
            let mut first_of_call = true;
            while let Ok(message) = rx.recv() {
                let unit = match message {
                    DecodeInput::Unit(unit) => unit,
                    DecodeInput::Loss => {
                        decoder.note_loss();
                        shared.pli_wanted.store(true, Ordering::Relaxed);
                        continue;
                    }
                    DecodeInput::Reset => {
                        match H264Decoder::new() {
                            Ok(fresh) => decoder = fresh,
                            Err(err) => tracing::warn!(%err, "keeping the old decoder"),
                        }
                        first_of_call = true;
                        continue;
                    }
                };
                match decoder.decode(&unit, SystemTime::now()) {
                    Decoded::Frame(frame) => {
                        let now = SystemTime::now();
                        let stamp = StampReader::read(&frame);
                        let now_instant = Instant::now();
                        shared.count(|c| {
                            c.frames_decoded += 1;
                            c.last_size = Some((frame.width(), frame.height()));
                            c.first_decoded.get_or_insert(now_instant);
                            c.last_decoded = Some(now_instant);
                            if let Some(stamp) = stamp {
                                c.stamped_frames += 1;
                                c.video_latency
                                    .push(f64::from(latency_ms(stamp, unix_ms(now))));
                            }
                        });
                        shared.remote_video.put(frame);
                        if first_of_call {
                            first_of_call = false;
                            let _ = notices.send(MediaNotice::FirstRemoteFrame);
                        }
                    }
                    Decoded::Nothing => {}
                    Decoded::NeedKeyframe => shared.pli_wanted.store(true, Ordering::Relaxed),
                }
            }
        })?;
    Ok(input)
}
