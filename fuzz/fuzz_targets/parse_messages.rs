//! Any bytes a peer or a server could send: parsing must return, never panic,
//! and whatever parses must serialise and parse back to the same message.
#![no_main]

use duet_signal::{ClientMessage, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(message) = ClientMessage::parse(&text) {
        assert_eq!(ClientMessage::parse(&message.to_json()).ok(), Some(message));
    }
    if let Ok(message) = ServerMessage::parse(&text) {
        assert_eq!(ServerMessage::parse(&message.to_json()).ok(), Some(message));
    }
});
