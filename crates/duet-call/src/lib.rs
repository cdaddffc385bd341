//! Duet's call: the two-peer WebRTC session that the window and the headless
//! mode both drive. It joins the signaling client (`duet-signal`) and the
//! media (`duet-media`) into a call: H.264 and Opus each way over one peer
//! connection, set up by the roles of `docs/protocol.md`, restarted (ICE
//! restart) when its network path dies, re-established when a peer leaves and
//! another comes, and measured as it runs.
//!
//! Inside (private modules; the public API is re-exported here):
//! - `negotiation`: the call's rules as a socket-free state machine ([`Negotiator`]).
//! - `reassembly`, `playout`: RTP back into access units, and adaptive audio playout (no I/O).
//! - `peer`: how a peer connection is built (codecs, settings, tracks).
//! - `interceptors`: its RTP/RTCP chain: congestion control kept within what
//!   the path delivers, a send queue that puts audio first and never holds
//!   seconds, fast NACK, the feedback the application acts on.
//! - `media`: capture, encode, packetize; receive, decode, measure; one module per job.
//! - `session`: the async shell that runs it all ([`start_call`]).
//! - `chat`: text messages over a data channel of the call ([`CallHandle::send_chat`]).
//! - `verification`: the short code two people compare to rule out anyone in the middle.
//! - `report`: what was measured, as the headless report of `docs/cli.md` ([`CallReport`]).

mod chat;
mod drift;
mod host_addrs;
mod ice_servers;
mod interceptors;
mod media;
mod negotiation;
mod peer;
mod playout;
mod reassembly;
mod report;
mod session;
mod turn_check;
mod verification;

pub use chat::{ChatAuthor, ChatError, ChatMessage, ChatState, MAX_CHAT_BYTES};
pub use ice_servers::{IceServer, IceServerError};
pub use media::{AudioOutput, FrameSlot};
pub use negotiation::{ANSWER_TIMEOUT, CallPhase, Negotiator, RETRY_BACKOFF_FIRST};
pub use peer::ConnectionState;
pub use report::{AudioReport, CallReport, LiveFigures, NetworkSummary, PathKind, VideoReport};
pub use session::{CallConfig, CallEvent, CallEvents, CallHandle, DEFAULT_SCREEN_BPS, start_call};
pub use verification::{EMOJI as VERIFICATION_EMOJI, VerificationCode};

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
    /// An `--ice` value that is not a STUN or TURN server Duet can use.
    #[error("{0}")]
    BadIceServer(#[from] IceServerError),
    /// The WebRTC stack refused something.
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

impl From<duet_media::MediaError> for CallError {
    fn from(err: duet_media::MediaError) -> CallError {
        CallError::Media(err.to_string())
    }
}
