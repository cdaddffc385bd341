//! The media paths of a call: capture and encode on threads of their own,
//! packetize onto whichever peer connection is current, and on the way back
//! reassemble, decode, measure and hand pictures and sound out.
//!
//! Threads do the blocking work (paced sources, codecs, playout); async tasks
//! only move packets. Every stage counts what passes through it into the
//! shared counters, from which the report is built.
//!
//! - `frame_slot`: the newest picture for a front end ([`FrameSlot`]).
//! - `device_switch`: changing a source or speaker while the call runs.
//! - `shared`: the state threads, tasks and session share; `counters`: what they count.
//! - `threads`: the media threads, owned and joined before a session ends.
//! - `video_send`, `audio_send`: capture and encode threads; `encode_ladder`
//!   picks the picture size and frame rate the target bitrate can carry,
//!   `audio_rate` how tightly audio is packed for it.
//! - `rtp_writer`: encoded units onto the current connection as RTP.
//! - `video_receive`, `video_decode`: the remote video track into pictures,
//!   through the bounded `decode_queue`; `video_timing` says when each picture
//!   is shown and `freeze` counts freezes (neither does I/O).
//! - `audio_playout`: the remote audio track into the sink; `echo_reference`:
//!   what the sink played, back to the capture thread for the echo canceller.

mod audio_playout;
mod audio_rate;
mod audio_send;
mod counters;
mod decode_queue;
mod device_switch;
mod echo_reference;
mod encode_ladder;
mod frame_slot;
mod freeze;
mod keyframe_pacer;
mod rtp_writer;
mod shared;
mod threads;
mod video_decode;
mod video_receive;
mod video_send;
mod video_timing;

use duet_media::source::Notice;
use tokio::sync::mpsc;

pub use audio_playout::AudioOutput;
pub(crate) use audio_playout::{run_audio_receiver, start_audio_playout};
pub(crate) use audio_send::start_audio_sender;
pub(crate) use decode_queue::DecodeChannel;
pub(crate) use echo_reference::echo_reference;
pub use frame_slot::FrameSlot;
pub(crate) use rtp_writer::{EncodedUnit, Outbound, run_rtp_writer, run_sender_feedback};
pub(crate) use shared::MediaShared;
pub(crate) use threads::MediaThreads;
pub(crate) use video_decode::start_video_decoder;
pub(crate) use video_receive::run_video_receiver;
pub(crate) use video_send::{VideoRequest, start_video_sender};

/// Something the media paths tell the session.
#[derive(Debug)]
pub(crate) enum MediaNotice {
    /// A device failed and something else is used instead; for the person.
    Device(String),
    /// A switch to this video source failed; the one before is still sent.
    VideoKept(duet_media::source::VideoSpec),
    /// The shared screen went away; the test pattern is sent instead.
    ScreenEnded,
    /// The first remote picture of the current call was decoded.
    FirstRemoteFrame,
    /// A media thread failed for good.
    Failed(String),
}

/// What a sender thread does with its source's next frame: the frame, with
/// any device notice passed on to the person; `None` (and the session told)
/// when the source failed for good and the thread must end.
pub(crate) fn next_or_fail<F>(
    next: Result<(F, Option<Notice>), duet_media::MediaError>,
    what: &str,
    notices: &mpsc::UnboundedSender<MediaNotice>,
) -> Option<F> {
    match next {
        Ok((frame, notice)) => {
            if let Some(notice) = notice {
                let _ = notices.send(MediaNotice::Device(notice));
            }
            Some(frame)
        }
        Err(err) => {
            let _ = notices.send(MediaNotice::Failed(format!("{what}: {err}")));
            None
        }
    }
}

/// A started sender: its encoded units (`None` for `none`), and a notice when
/// a device was replaced.
pub(crate) type Started = (Option<mpsc::Receiver<EncodedUnit>>, Option<Notice>);
