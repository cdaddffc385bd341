//! How instances sharing Redis pass messages to each other's connections:
//! one pub/sub channel per instance, carrying envelopes of a connection id
//! and the message's JSON exactly as the sending instance serialised it. The
//! receiver queues the JSON as it came, without parsing it again.
//!
//! Pub/sub delivers only to whoever listens at that moment: an instance
//! reconnects its subscription when Redis comes back, and messages sent
//! while it was away are lost (a call's media does not pass through here).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::Hub;
use crate::outbox::Outgoing;
use crate::rooms::{ConnId, REPLACED_CLOSE_CODE};

/// Pause before subscribing again after the subscription was lost.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

/// One message for one connection of the receiving instance.
#[derive(Debug, PartialEq)]
pub(crate) enum Envelope {
    /// Queue this JSON text.
    Text { conn: ConnId, text: Utf8Bytes },
    /// Close the connection with this code.
    Close { conn: ConnId, code: u16 },
}

impl Envelope {
    /// `T<conn> <json>` or `C<conn> <code>`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Envelope::Text { conn, text } => {
                let mut bytes = format!("T{} ", conn.0).into_bytes();
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
            Envelope::Close { conn, code } => format!("C{} {code}", conn.0).into_bytes(),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Envelope> {
        let (&kind, rest) = bytes.split_first()?;
        let space = rest.iter().position(|&b| b == b' ')?;
        let conn = ConnId(std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?);
        let body = &rest[space + 1..];
        match kind {
            b'T' => Some(Envelope::Text {
                conn,
                text: Utf8Bytes::try_from(bytes::Bytes::copy_from_slice(body)).ok()?,
            }),
            b'C' => Some(Envelope::Close {
                conn,
                code: std::str::from_utf8(body).ok()?.parse().ok()?,
            }),
            _ => None,
        }
    }

    /// What the connection's task does with it.
    fn into_outgoing(self) -> (ConnId, Outgoing) {
        match self {
            Envelope::Text { conn, text } => (conn, Outgoing::Text(text)),
            Envelope::Close { conn, code } => {
                let reason = if code == REPLACED_CLOSE_CODE {
                    "replaced"
                } else {
                    "closing"
                };
                (conn, Outgoing::Close { code, reason })
            }
        }
    }
}

/// Listens on this instance's channel until the server stops, subscribing
/// again whenever the subscription breaks. `first`: the subscription made
/// before the server started accepting.
pub(crate) async fn listen(hub: Arc<Hub>, first: redis::aio::PubSub) {
    let Some(store) = hub.redis_store().cloned() else {
        return;
    };
    let channel = store.channel(store.instance());
    let mut subscription = Some(first);
    loop {
        if let Some(mut pubsub) = subscription.take() {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => deliver(&hub, message.get_payload_bytes()),
                        None => break,
                    },
                    () = hub.shutdown.cancelled() => return,
                    () = hub.killed.cancelled() => return,
                }
            }
            tracing::warn!("lost the Redis subscription; subscribing again");
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
            () = hub.shutdown.cancelled() => return,
            () = hub.killed.cancelled() => return,
        }
        match subscribe(store.client(), &channel).await {
            Ok(pubsub) => {
                tracing::info!("subscribed to Redis again");
                subscription = Some(pubsub);
            }
            Err(err) => tracing::debug!(%err, "cannot subscribe to Redis yet"),
        }
    }
}

/// A subscription to `channel`.
pub(crate) async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

fn deliver(hub: &Hub, payload: &[u8]) {
    let Some(envelope) = Envelope::decode(payload) else {
        tracing::warn!("an envelope from another instance could not be read; dropped");
        return;
    };
    hub.metrics.received();
    let (conn, outgoing) = envelope.into_outgoing();
    hub.queue(conn, outgoing);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_carry_the_json_untouched_and_bad_ones_are_refused() {
        let json = r#"{"type":"offer","sdp":"v=0 ü","from":"p-1"}"#;
        let text = Envelope::Text {
            conn: ConnId(7),
            text: json.into(),
        };
        let bytes = text.encode();
        assert_eq!(&bytes[..3], b"T7 ");
        assert_eq!(&bytes[3..], json.as_bytes());
        assert_eq!(Envelope::decode(&bytes), Some(text));
        let close = Envelope::Close {
            conn: ConnId(9),
            code: 4000,
        };
        assert_eq!(Envelope::decode(&close.encode()), Some(close));
        for bad in [&b""[..], b"T", b"Tx {}", b"X1 {}", b"C1 nope", b"T1 \xff"] {
            assert_eq!(Envelope::decode(bad), None, "{bad:?}");
        }
    }
}
