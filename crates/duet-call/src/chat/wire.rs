//! The chat's frames on the data channel: one JSON object per data-channel
//! message, the same for the app and the browser page (`docs/protocol.md`,
//! "Chat").

use serde::{Deserialize, Serialize};

/// One frame of the chat protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum ChatFrame {
    /// A message. `from` tags the sending session (random, new each run),
    /// so that the receiver can tell a resend from a new message after the
    /// channel was replaced, and a new peer's numbering from the old one's.
    Message {
        from: String,
        id: u64,
        /// The sender's wall clock, milliseconds since the Unix epoch.
        sent_at: u64,
        text: String,
    },
    /// The receiver has shown every message of session `to` up to `id`.
    Ack { to: String, id: u64 },
    /// The receiver missed messages of session `to` from `from` on (it
    /// shows them only in order): send them again.
    Resend { to: String, from: u64 },
    /// Sent by each side when its channel opens, and answered once: a peer's
    /// hello says its channel is open and read, so messages sent from then
    /// on are not lost to a channel the other side has not opened yet.
    Hello,
}

impl ChatFrame {
    /// The frame as sent.
    pub(crate) fn encode(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A received frame; `None` for anything else (logged by the caller).
    pub(crate) fn decode(text: &str) -> Option<ChatFrame> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_documented_json() {
        let message = ChatFrame::Message {
            from: "a1".into(),
            id: 7,
            sent_at: 1_700_000_000_000,
            text: "héllo 👋".into(),
        };
        assert_eq!(
            message.encode(),
            r#"{"type":"message","from":"a1","id":7,"sent_at":1700000000000,"text":"héllo 👋"}"#
        );
        assert_eq!(ChatFrame::decode(&message.encode()), Some(message));
        let ack = ChatFrame::Ack {
            to: "a1".into(),
            id: 7,
        };
        assert_eq!(ack.encode(), r#"{"type":"ack","to":"a1","id":7}"#);
        assert_eq!(ChatFrame::decode(&ack.encode()), Some(ack));
        let resend = ChatFrame::Resend {
            to: "a1".into(),
            from: 3,
        };
        assert_eq!(resend.encode(), r#"{"type":"resend","to":"a1","from":3}"#);
        assert_eq!(ChatFrame::Hello.encode(), r#"{"type":"hello"}"#);
        assert_eq!(
            ChatFrame::decode(r#"{"type":"hello"}"#),
            Some(ChatFrame::Hello)
        );
    }

    #[test]
    fn anything_else_is_not_a_frame() {
        for junk in [
            "",
            "{}",
            "[1]",
            r#"{"type":"message","id":1}"#,
            r#"{"type":"x"}"#,
            "\u{0}",
        ] {
            assert_eq!(ChatFrame::decode(junk), None, "{junk:?}");
        }
    }
}
