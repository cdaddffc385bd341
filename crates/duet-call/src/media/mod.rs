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
//! - `shared`: the state threads, tasks and session share.
//! - `video_send`, `audio_send`: capture and encode threads.
//! - `rtp_writer`: encoded units onto the current connection as RTP.
//! - `video_receive`, `video_decode`: the remote video track into pictures.
//! - `audio_playout`: the remote audio track into the sink.

mod audio_playout;
mod audio_send;
mod device_switch;
mod frame_slot;
mod rtp_writer;
mod shared;
mod video_decode;
mod video_receive;
mod video_send;

use duet_media::MediaError;
use duet_media::source::Notice;
use tokio::sync::{mpsc, oneshot};

pub use audio_playout::AudioOutput;
pub(crate) use audio_playout::{run_audio_receiver, start_audio_playout};
pub(crate) use audio_send::start_audio_sender;
pub use frame_slot::FrameSlot;
pub(crate) use rtp_writer::{EncodedUnit, Outbound, run_rtp_writer, run_sender_feedback};
pub(crate) use shared::MediaShared;
pub(crate) use video_decode::{DecodeInput, start_video_decoder};
pub(crate) use video_receive::run_video_receiver;
pub(crate) use video_send::{VideoRequest, start_video_sender};

use crate::CallError;

/// Something the media paths tell the session.
#[derive(Debug)]
pub(crate) enum MediaNotice {
    /// A device failed and something else is used instead; for the person.
    Device(String),
    /// The first remote picture of the current call was decoded.
    FirstRemoteFrame,
    /// A media thread failed for good.
    Failed(String),
}

/// A started sender: its encoded units, and a notice when a device was replaced.
pub(crate) type Started = (Option<mpsc::Receiver<EncodedUnit>>, Option<Notice>);

/// A media thread that opened its device, and what opening it said.
pub(crate) type Opened = (std::thread::JoinHandle<()>, Option<Notice>);

/// Starts a media thread that first opens its device (camera, microphone and
/// speaker handles cannot move between threads) and then runs with it. Resolves
/// once opening is done: `None` when there is nothing to open (`none`), an error
/// when opening failed (a bad file is the user's to fix before anyone is called).
pub(crate) async fn spawn_with_device<D>(
    name: &str,
    open: impl FnOnce() -> Result<(Option<D>, Option<Notice>), MediaError> + Send + 'static,
    run: impl FnOnce(D) + Send + 'static,
) -> Result<Option<Opened>, CallError> {
    let (opened_tx, opened) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match open() {
            Ok((Some(device), notice)) => {
                let _ = opened_tx.send(Ok(notice));
                run(device);
            }
            // Dropping the sender tells the caller there is nothing to run.
            Ok((None, _)) => {}
            Err(err) => {
                let _ = opened_tx.send(Err(err));
            }
        })
        .map_err(|err| CallError::Media(format!("cannot start a media thread: {err}")))?;
    match opened.await {
        Ok(Ok(notice)) => Ok(Some((thread, notice))),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Ok(None),
    }
}
