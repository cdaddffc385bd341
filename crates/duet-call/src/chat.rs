//! Text chat in a call, over a WebRTC data channel of the call's own peer
//! connection: nothing goes through the signaling server. Messages are
//! numbered, acknowledged by the receiver, resent on the next connection when
//! the peer connection is replaced, and marked as not delivered when nobody
//! acknowledged them within [`GIVE_UP_AFTER`](log::GIVE_UP_AFTER).
//!
//! - `wire`: the frames on the channel (JSON, shared with the browser page).
//! - `log`: the rules, socket-free ([`ChatLog`](log::ChatLog)).
//! - `channel`: the async shell that runs them on the current data channel.

mod channel;
mod log;
mod wire;

pub(crate) use channel::{ChatLink, open_chat_channel, start_chat};
pub(crate) use log::ChatLog;

/// The most a message may hold: 4 KB of UTF-8.
pub const MAX_CHAT_BYTES: usize = 4096;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatAuthor {
    /// This side.
    Me,
    /// The other person.
    Peer,
}

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatState {
    /// Ours, not yet acknowledged by the peer (perhaps waiting for the connection).
    Sending,
    /// Ours, acknowledged: the peer has it.
    Delivered,
    /// Ours, and nobody acknowledged it in time (or the call ended first).
    NotDelivered,
    /// The peer's.
    Received,
}

impl ChatState {
    /// The word for it in progress lines and the window.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatState::Sending => "sending",
            ChatState::Delivered => "delivered",
            ChatState::NotDelivered => "not delivered",
            ChatState::Received => "received",
        }
    }
}

/// One message, as shown; a message is shown again when its state changes
/// (same `author` and `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Number of the message among its author's, from 1.
    pub id: u64,
    /// Who wrote it.
    pub author: ChatAuthor,
    /// Its text.
    pub text: String,
    /// When its author sent it: the author's clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Where it is.
    pub state: ChatState,
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Nothing but white space.
    #[error("an empty message is not sent")]
    Empty,
    /// Over [`MAX_CHAT_BYTES`].
    #[error("a message holds at most 4096 bytes of UTF-8; this one has {0}")]
    TooLong(usize),
    /// The call is over.
    #[error("the call has ended")]
    Ended,
}
