//! Long text messages as several WebSocket frames (RFC 6455 fragmentation),
//! from either end.
//!
//! The WebSocket layer keeps its buffers at the size of the largest frame it
//! has seen: the writer's own, and on the other end the reader's. With 4 KiB
//! offers on every connection, whole-message frames held 4 KB of each buffer
//! for the life of each of 10,000 server connections. Every browser and
//! WebSocket library reassembles fragments.

use bytes::Bytes;
use futures_util::{Sink, SinkExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// Longer messages go out as several frames of at most this size. With the
/// server's 512-byte read buffer, a server holding 10,000 connections peaked
/// at 88 MB (`duet-load`); 1 KiB frames, 100 MB; 256 bytes, 82 MB for 15 %
/// more CPU; whole messages, 133 MB (BENCHMARKS.md).
pub(crate) const FRAGMENT_BYTES: usize = 512;

/// Sends a text message, a long one as fragments of at most [`FRAGMENT_BYTES`]
/// (a client's are masked by the WebSocket layer like any frame it writes).
pub(crate) async fn send_text<S>(socket: &mut S, text: Utf8Bytes) -> Result<(), tungstenite::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    if text.len() <= FRAGMENT_BYTES {
        return socket.send(Message::Text(text)).await;
    }
    let bytes = Bytes::from(text);
    let count = bytes.len().div_ceil(FRAGMENT_BYTES);
    for index in 0..count {
        let chunk =
            bytes.slice(index * FRAGMENT_BYTES..((index + 1) * FRAGMENT_BYTES).min(bytes.len()));
        let opcode = if index == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        socket
            .feed(Message::Frame(Frame::message(
                chunk,
                opcode,
                index + 1 == count,
            )))
            .await?;
    }
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames `text` goes out as.
    async fn frames(text: &str) -> Vec<Message> {
        let mut sent: Vec<Message> = Vec::new();
        {
            let mut sink = (&mut sent).sink_map_err(|never| match never {});
            send_text(&mut sink, Utf8Bytes::from(text.to_owned()))
                .await
                .expect("a Vec takes everything");
        }
        sent
    }

    #[tokio::test]
    async fn a_short_message_is_one_frame_and_a_long_one_fragments_in_order() {
        let short = "x".repeat(FRAGMENT_BYTES);
        assert_eq!(frames(&short).await, vec![Message::text(short)]);

        let long: String = ('a'..='z').cycle().take(FRAGMENT_BYTES * 2 + 100).collect();
        let sent = frames(&long).await;
        let mut whole = Vec::new();
        for (index, message) in sent.iter().enumerate() {
            let Message::Frame(frame) = message else {
                panic!("fragment {index} is not a raw frame: {message:?}");
            };
            let expected = if index == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            assert_eq!(frame.header().opcode, expected);
            assert_eq!(frame.header().is_final, index + 1 == sent.len());
            assert!(frame.payload().len() <= FRAGMENT_BYTES);
            whole.extend_from_slice(frame.payload());
        }
        assert_eq!(sent.len(), 3);
        assert_eq!(whole, long.as_bytes());
    }
}
