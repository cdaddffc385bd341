//! Duet's call: the two-peer WebRTC session that the window and the headless
//! mode both drive. It joins the signaling client (`duet-signal`) and the
//! media (`duet-media`) into a call: H.264 and Opus each way over one peer
//! connection, set up by the roles of `signaling-v1.md`, re-established when a
//! peer leaves and another comes, and measured as it runs.
//!
//! - [`negotiation`]: the call's rules as a socket-free state machine ([`Negotiator`]).
//! - [`reassembly`], [`playout`]: RTP back into access units, and adaptive audio playout (no I/O).
//! - [`peer`]: how a peer connection is built (codecs, interceptors, congestion control).
//! - [`media`]: capture, encode, packetize; receive, decode, measure.
//! - [`session`]: the async shell that runs it all ([`start_call`]).
//! - [`report`]: what was measured, as the headless report of `cli.md`.

pub mod media;
pub mod negotiation;
pub mod peer;
pub mod playout;
pub mod reassembly;
pub mod report;
pub mod session;

pub use media::FrameSlot;
pub use negotiation::{CallPhase, Negotiator};
pub use report::{CallReport, LiveFigures};
pub use session::{AudioOutput, CallConfig, CallEvent, CallEvents, CallHandle, start_call};

/// Everything that can end or refuse a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The signaling server could not be reached, refused us, or went away for good.
    #[error("{0}")]
    Signaling(#[from] duet_signal::ClientError),
    /// A source, sink or codec failed.
    #[error("{0}")]
    Media(String),
    /// Neither video nor audio to send.
    #[error("no media to send: both --video and --audio are none")]
    NoMedia,
    /// An `--ice` value that is not a STUN or TURN URL.
    #[error("{0:?} is not a STUN or TURN server: use stun:HOST:PORT or turn:USER:PASS@HOST:PORT")]
    BadIceServer(String),
    /// The WebRTC stack refused something.
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

impl From<duet_media::MediaError> for CallError {
    fn from(err: duet_media::MediaError) -> CallError {
        CallError::Media(err.to_string())
    }
}
