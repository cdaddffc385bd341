//! The wire types of `docs/protocol.md`, one serde enum per direction, tagged by `type`.
//!
//! Parsing is strict where the spec is strict (a missing or mistyped field is a
//! `bad_message`) and lenient where it is lenient (unknown extra fields are
//! ignored, and because relayed messages are re-serialised from these types,
//! they are never relayed either).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::turn::IceServerEntry;

/// Largest text frame the server accepts; larger frames get `too_large` and close code 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Path of the WebSocket endpoint on the server.
pub const WS_PATH: &str = "/ws";

/// The two seats of a room. The caller creates the offer; the callee answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends the offer as soon as it learns a callee is present.
    Caller,
    /// Never offers; waits for the caller's offer and answers it.
    Callee,
}

impl Role {
    /// The seat a second peer takes when this one is held.
    pub fn other(self) -> Role {
        match self {
            Role::Caller => Role::Callee,
            Role::Callee => Role::Caller,
        }
    }

    /// The wire spelling (`caller` or `callee`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Callee => "callee",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role asked for in `join`: a seat, or `auto` to let the server pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleRequest {
    /// Only the caller seat will do.
    Caller,
    /// Only the callee seat will do.
    Callee,
    /// Callee in an empty room, otherwise whichever seat is free.
    #[default]
    Auto,
}

impl From<Role> for RoleRequest {
    fn from(role: Role) -> Self {
        match role {
            Role::Caller => RoleRequest::Caller,
            Role::Callee => RoleRequest::Callee,
        }
    }
}

impl fmt::Display for RoleRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleRequest::Caller => "caller",
            RoleRequest::Callee => "callee",
            RoleRequest::Auto => "auto",
        })
    }
}

/// A peer's id as the server hands it out (`p-…`); opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PeerId(pub String);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated room name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    /// Longest room name the spec allows.
    pub const MAX_LEN: usize = 64;

    /// Checks a name against the spec's rules; the error is a sentence for a person.
    pub fn parse(name: &str) -> Result<RoomName, String> {
        if name.is_empty() {
            return Err("the room name is empty".into());
        }
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "the room name is {} characters long; at most {} are allowed",
                name.chars().count(),
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "the room name contains {bad:?}; only letters, digits, '_' and '-' are allowed"
            ));
        }
        Ok(RoomName(name.to_owned()))
    }

    /// The name as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A trickle-ICE candidate with the fields of the browser's `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:…` attribute line (empty string is a browser's end-of-candidates form).
    pub candidate: String,
    /// Media stream identification tag of the m-line this candidate belongs to.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line this candidate belongs to.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    /// ICE ufrag of the session the candidate belongs to, when the sender gave it.
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
}

/// Deserialises a field that must be present but may be `null`.
///
/// serde treats a missing `Option` field as `None`; the spec wants a missing
/// `candidate` to be a `bad_message` while `null` means end of candidates.
fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

/// Everything a peer may send to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// First message of a connection: take a seat in a room.
    Join {
        /// Room to join; validated by the server (a bad name is `bad_room`, not `bad_message`).
        room: String,
        /// Seat asked for; absent or `null` means `auto`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<RoleRequest>,
        /// The token of a seat this peer held before its connection broke
        /// (1.1): the server gives the seat back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    /// SDP offer, relayed to the other peer.
    Offer {
        /// Session description text.
        sdp: String,
    },
    /// SDP answer, relayed to the other peer.
    Answer {
        /// Session description text.
        sdp: String,
    },
    /// Trickle ICE candidate; `None` (`null`) means end of candidates.
    Candidate {
        /// The candidate, or `None` for end of candidates.
        #[serde(deserialize_with = "required_nullable")]
        candidate: Option<IceCandidate>,
    },
    /// Hang up; the server relays it and then treats the sender as gone from the room.
    Bye {},
    /// Application keep-alive; answered with `pong`.
    Ping {},
}

impl ClientMessage {
    /// Parses one text frame. The error is a sentence suitable for a `bad_message` reply.
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        serde_json::from_str(text).map_err(|err| cap_reason(describe_parse_error(text, &err)))
    }

    /// The message as one JSON text frame.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// Whether the server relays this message to the other peer.
    pub fn is_relayed(&self) -> bool {
        matches!(
            self,
            ClientMessage::Offer { .. }
                | ClientMessage::Answer { .. }
                | ClientMessage::Candidate { .. }
                | ClientMessage::Bye {}
        )
    }
}

/// Longest `bad_message` reason sent back: serde's errors quote the offending
/// value, and a 60 KB value echoed back would double what a flooding client
/// makes the server buffer.
const MAX_REASON_CHARS: usize = 200;

fn cap_reason(mut reason: String) -> String {
    if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

/// Turns serde's error into a sentence that names what was wrong, classifying the
/// frame again only on this (rare) error path.
fn describe_parse_error(text: &str, err: &serde_json::Error) -> String {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return format!("the message is not valid JSON ({err})"),
    };
    let Some(object) = value.as_object() else {
        return "the message is not a JSON object".into();
    };
    match object.get("type") {
        None => "the message has no \"type\" field".into(),
        Some(serde_json::Value::String(kind)) => {
            const KNOWN: [&str; 6] = ["join", "offer", "answer", "candidate", "bye", "ping"];
            if KNOWN.contains(&kind.as_str()) {
                format!("invalid \"{kind}\" message: {err}")
            } else {
                format!("unknown message type {kind:?}")
            }
        }
        Some(_) => "the \"type\" field is not a string".into(),
    }
}

/// Error codes of the error table of `docs/protocol.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The room already has two peers. Closes the connection.
    RoomFull,
    /// The asked role is held by the peer in the room. Closes the connection.
    RoleTaken,
    /// Room name empty, too long or with other characters. Closes the connection.
    BadRoom,
    /// Not JSON, not an object, unknown type, or a missing or mistyped field.
    BadMessage,
    /// A relay message before `join`.
    NotJoined,
    /// A second `join` on one connection.
    AlreadyJoined,
    /// A relay message while alone in the room; the message is dropped.
    NoPeer,
    /// A frame over 64 KiB. Closes the connection with code 1009.
    TooLarge,
    /// More messages than the server's limit. Closes the connection with code 1008.
    RateLimited,
    /// A code this client does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The WebSocket close code that follows this error, or `None` when the connection stays open.
    pub fn close_code(self) -> Option<u16> {
        match self {
            ErrorCode::RoomFull | ErrorCode::RoleTaken | ErrorCode::BadRoom => Some(1000),
            ErrorCode::TooLarge => Some(1009),
            ErrorCode::RateLimited => Some(1008),
            ErrorCode::BadMessage
            | ErrorCode::NotJoined
            | ErrorCode::AlreadyJoined
            | ErrorCode::NoPeer
            | ErrorCode::Unknown => None,
        }
    }

    /// Whether retrying the same join can never succeed, so a client must not loop on it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ErrorCode::RoomFull | ErrorCode::RoleTaken | ErrorCode::BadRoom
        )
    }

    /// The wire spelling, e.g. `room_full`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RoomFull => "room_full",
            ErrorCode::RoleTaken => "role_taken",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::NoPeer => "no_peer",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the server sends to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Answer to `join`: the effective role and the peers already in the room.
    Joined {
        /// The room joined.
        room: String,
        /// This peer's id.
        id: PeerId,
        /// The seat this peer holds.
        role: Role,
        /// Ids of the peers already in the room (zero or one).
        peers: Vec<PeerId>,
        /// The token that takes this seat back after a broken connection (1.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
        /// This join resumed a seat held before (1.1).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
        /// STUN/TURN servers with short-lived credentials, for a server
        /// configured with TURN (1.1); peers use them besides their own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServerEntry>,
    },
    /// The other peer arrived.
    PeerJoined {
        /// Its id.
        id: PeerId,
        /// Its seat.
        role: Role,
    },
    /// The other peer left, hung up or timed out.
    PeerLeft {
        /// Its id.
        id: PeerId,
    },
    /// Relayed offer.
    Offer {
        /// Session description text.
        sdp: String,
        /// Sender's id.
        from: PeerId,
    },
    /// Relayed answer.
    Answer {
        /// Session description text.
        sdp: String,
        /// Sender's id.
        from: PeerId,
    },
    /// Relayed candidate; `None` is end of candidates (sent as `null`).
    Candidate {
        /// The candidate, or `None` for end of candidates.
        #[serde(deserialize_with = "required_nullable")]
        candidate: Option<IceCandidate>,
        /// Sender's id.
        from: PeerId,
    },
    /// Relayed hang-up.
    Bye {
        /// Sender's id.
        from: PeerId,
    },
    /// Answer to `ping`.
    Pong {},
    /// Something the peer sent was refused.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// A sentence for a person.
        message: String,
    },
}

impl ServerMessage {
    /// Parses one text frame from the server.
    pub fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The message as one JSON text frame.
    pub fn to_json(&self) -> String {
        to_json(self)
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// The relayed form of a client's message, with `from` added.
    /// Returns `None` for messages that are not relayed.
    pub fn relayed(message: ClientMessage, from: PeerId) -> Option<ServerMessage> {
        Some(match message {
            ClientMessage::Offer { sdp } => ServerMessage::Offer { sdp, from },
            ClientMessage::Answer { sdp } => ServerMessage::Answer { sdp, from },
            ClientMessage::Candidate { candidate } => ServerMessage::Candidate { candidate, from },
            ClientMessage::Bye {} => ServerMessage::Bye { from },
            ClientMessage::Join { .. } | ClientMessage::Ping {} => return None,
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these types cannot fail: every field is a string, number,
    // list or map with string keys.
    serde_json::to_string(value).unwrap_or_else(|err| {
        tracing::error!(%err, "bug: a protocol message failed to serialise");
        String::from("{}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_message_reasons_quote_at_most_a_short_prefix() {
        let role = "r".repeat(60_000);
        let reason =
            ClientMessage::parse(&format!(r#"{{"type":"join","room":"a","role":"{role}"}}"#))
                .expect_err("an unknown role");
        assert!(
            reason.starts_with("invalid \"join\" message: unknown variant"),
            "{reason}"
        );
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        let kind = "k".repeat(60_000);
        let reason = ClientMessage::parse(&format!(r#"{{"type":"{kind}"}}"#)).expect_err("unknown");
        assert!(reason.ends_with('…') && reason.len() < 300, "{reason}");
    }

    fn parse_ok(text: &str) -> ClientMessage {
        match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(err) => panic!("{text} should parse: {err}"),
        }
    }

    #[test]
    fn join_role_defaults_to_auto_when_absent_or_null() {
        assert_eq!(
            parse_ok(r#"{"type":"join","room":"demo"}"#),
            ClientMessage::Join {
                room: "demo".into(),
                role: None,
                resume: None
            }
        );
        assert_eq!(
            parse_ok(r#"{"type":"join","room":"demo","role":null}"#),
            ClientMessage::Join {
                room: "demo".into(),
                role: None,
                resume: None
            }
        );
        assert_eq!(
            parse_ok(r#"{"type":"join","room":"demo","role":"callee"}"#),
            ClientMessage::Join {
                room: "demo".into(),
                role: Some(RoleRequest::Callee),
                resume: None
            }
        );
    }

    #[test]
    fn browser_candidate_json_parses_as_is_and_null_means_end() {
        let browser = r#"{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#;
        match parse_ok(browser) {
            ClientMessage::Candidate { candidate: Some(c) } => {
                assert_eq!(c.sdp_mid.as_deref(), Some("0"));
                assert_eq!(c.sdp_mline_index, Some(0));
                assert_eq!(c.username_fragment.as_deref(), Some("abcd"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            parse_ok(r#"{"type":"candidate","candidate":null}"#),
            ClientMessage::Candidate { candidate: None }
        );
        // Browsers may send nulls for the optional fields.
        parse_ok(
            r#"{"type":"candidate","candidate":{"candidate":"","sdpMid":null,"sdpMLineIndex":null}}"#,
        );
    }

    #[test]
    fn missing_or_mistyped_fields_are_rejected_with_a_sentence() {
        for (text, expect) in [
            ("not json", "not valid JSON"),
            ("[1,2]", "not a JSON object"),
            ("{}", "no \"type\""),
            (r#"{"type":7}"#, "not a string"),
            (r#"{"type":"dance"}"#, "unknown message type"),
            (r#"{"type":"offer"}"#, "sdp"),
            (r#"{"type":"offer","sdp":5}"#, "invalid \"offer\""),
            (r#"{"type":"candidate"}"#, "candidate"),
            (r#"{"type":"join"}"#, "room"),
            (
                r#"{"type":"join","room":"a","role":"boss"}"#,
                "invalid \"join\"",
            ),
        ] {
            match ClientMessage::parse(text) {
                Ok(message) => panic!("{text} parsed as {message:?}"),
                Err(reason) => assert!(reason.contains(expect), "{text}: {reason}"),
            }
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_not_relayed() {
        let message = parse_ok(r#"{"type":"offer","sdp":"v=0","secret":"x","from":"p-forged"}"#);
        let relayed = ServerMessage::relayed(message, PeerId("p-real".into()))
            .expect("offers are relayed")
            .to_json();
        assert_eq!(relayed, r#"{"type":"offer","sdp":"v=0","from":"p-real"}"#);
        parse_ok(r#"{"type":"bye","reason":"done"}"#);
        parse_ok(r#"{"type":"ping","n":1}"#);
    }

    #[test]
    fn end_of_candidates_is_relayed_as_null() {
        let relayed = ServerMessage::relayed(
            ClientMessage::Candidate { candidate: None },
            PeerId("p-1".into()),
        )
        .expect("candidates are relayed");
        assert_eq!(
            relayed.to_json(),
            r#"{"type":"candidate","candidate":null,"from":"p-1"}"#
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let messages = [
            ServerMessage::Joined {
                room: "r".into(),
                id: PeerId("p-1".into()),
                role: Role::Caller,
                peers: vec![PeerId("p-2".into())],
                resume: Some("0123abcd".into()),
                resumed: true,
                ice_servers: vec![IceServerEntry {
                    urls: vec!["turn:t.example:3478?transport=udp".into()],
                    username: "1764460000:p-1".into(),
                    credential: "q1w2=".into(),
                }],
            },
            ServerMessage::PeerJoined {
                id: PeerId("p-2".into()),
                role: Role::Callee,
            },
            ServerMessage::PeerLeft {
                id: PeerId("p-2".into()),
            },
            ServerMessage::Pong {},
            ServerMessage::error(ErrorCode::RoomFull, "full"),
        ];
        for message in messages {
            let text = message.to_json();
            assert_eq!(ServerMessage::parse(&text).ok(), Some(message), "{text}");
        }
        assert_eq!(ServerMessage::Pong {}.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::error(ErrorCode::NoPeer, "alone").to_json(),
            r#"{"type":"error","code":"no_peer","message":"alone"}"#
        );
    }

    #[test]
    fn room_names_follow_the_spec() {
        assert!(RoomName::parse("a").is_ok());
        assert!(RoomName::parse("Room_1-b").is_ok());
        assert!(RoomName::parse(&"x".repeat(64)).is_ok());
        assert!(RoomName::parse("").is_err());
        assert!(RoomName::parse(&"x".repeat(65)).is_err());
        assert!(RoomName::parse("a b").is_err());
        assert!(RoomName::parse("é").is_err());
        assert!(RoomName::parse("a/b").is_err());
    }

    proptest! {
        #[test]
        fn no_byte_string_makes_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = ClientMessage::parse(&text);
            let _ = ServerMessage::parse(&text);
        }

        #[test]
        fn no_json_shaped_text_makes_the_parser_panic(
            kind in prop::sample::select(vec!["join", "offer", "answer", "candidate", "bye", "ping", "x", ""]),
            key in "[a-zA-Z]{0,12}",
            value in prop_oneof![
                Just("null".to_string()), Just("1".to_string()), Just("[]".to_string()),
                Just("{}".to_string()), "\"[ -~]{0,20}\"".prop_map(|s| s),
                Just(r#"{"candidate":"c","sdpMLineIndex":70000}"#.to_string()),
            ],
        ) {
            let text = format!(r#"{{"type":"{kind}","{key}":{value}}}"#);
            let _ = ClientMessage::parse(&text);
        }
    }
}
