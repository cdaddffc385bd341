//! The remote video track: reorder, reassemble, feed the decoder, ask for keyframes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use duet_media::h264::is_idr;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use super::counters::bump;
use super::decode_queue::{DecodeChannel, Offered, ReceivedUnit};
use super::shared::MediaShared;
use super::video_timing::FrameTiming;
use crate::interceptors::picture_loss_indication;
use crate::reassembly::{Reassembled, VideoReassembler};

/// Keyframe requests are sent at most this often.
const PLI_INTERVAL: Duration = Duration::from_millis(300);

/// Reads the remote video track: reorders, reassembles, feeds the decoder
/// through its bounded queue (counting what the queue drops), sends PLIs.
pub(crate) async fn run_video_receiver(
    track: Arc<dyn TrackRemote>,
    shared: Arc<MediaShared>,
    decode: DecodeChannel,
) {
    decode.with(|queue| queue.reset());
    let mut reassembler = VideoReassembler::new();
    let mut last_pli: Option<Instant> = None;
    let mut media_ssrc: Option<u32> = None;
    // The first picture needs a keyframe; the sender sends one on connect, and a PLI
    // covers the case where that one was lost.
    shared.pli_wanted.store(false, Ordering::Relaxed);
    loop {
        // Wake for a gap that has waited long enough, or now and then for a PLI
        // the decoder asked for; otherwise only packets wake this task.
        let wake = reassembler
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + PLI_INTERVAL);
        let out = tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                    media_ssrc = Some(packet.header.ssrc);
                    let size = packet.payload.len() as u64;
                    bump(&shared.counters.video_bytes_received, size);
                    reassembler.push(
                        packet.header.sequence_number,
                        packet.header.timestamp,
                        packet.header.marker,
                        packet.payload,
                        Instant::now(),
                    )
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => continue,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if let Some(round_trip) = shared.send_budget.round_trip() {
                    reassembler.set_rtt(round_trip);
                }
                reassembler.poll(Instant::now())
            }
        };
        for item in out {
            match item {
                Reassembled::AccessUnit {
                    data,
                    rtp_timestamp,
                } => {
                    bump(&shared.counters.frames_received, 1);
                    let keyframe = is_idr(&data);
                    let unit = ReceivedUnit {
                        data,
                        timing: FrameTiming {
                            rtp_timestamp,
                            completed: Instant::now(),
                        },
                    };
                    let offered = decode.with(|queue| queue.offer(unit, keyframe));
                    if let Some(Offered::Dropped {
                        units,
                        ask_keyframe,
                    }) = offered
                    {
                        tracing::debug!(units, "decoding is behind: dropped to a keyframe");
                        bump(&shared.counters.frames_dropped, units);
                        if ask_keyframe {
                            shared.pli_wanted.store(true, Ordering::Relaxed);
                        }
                    }
                }
                Reassembled::Lost { packets } => {
                    tracing::debug!(packets, "video packets lost for good");
                    decode.with(|queue| queue.note_loss());
                }
            }
        }
        if shared.pli_wanted.load(Ordering::Relaxed)
            && let Some(ssrc) = media_ssrc
            && last_pli.is_none_or(|at| at.elapsed() >= PLI_INTERVAL)
        {
            shared.pli_wanted.store(false, Ordering::Relaxed);
            last_pli = Some(Instant::now());
            if track
                .write_rtcp(picture_loss_indication(ssrc))
                .await
                .is_ok()
            {
                bump(&shared.counters.pli_sent, 1);
            }
        }
    }
}
