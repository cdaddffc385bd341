//! How instances sharing Redis pass messages to each other's connections:
//! one pub/sub channel per instance, carrying envelopes of a connection id
//! and the message's JSON exactly as the sending instance serialised it. The
//! receiver queues the JSON as it came, without parsing it again. Two small
//! control envelopes ride the same channel, in order with the messages: where
//! a connection's partner now is, and "close this one, its seat was resumed
//! elsewhere".
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
use crate::room_store::{Holder, InstanceId};
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
    /// The connection's partner is now there (`None`: it is alone).
    Partner {
        conn: ConnId,
        partner: Option<Holder>,
    },
}

impl Envelope {
    /// `T<conn> <json>`, `C<conn> <code>`, or `P<conn> <instance>:<conn>` (`P<conn> -`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Envelope::Text { conn, text } => {
                let mut bytes = format!("T{} ", conn.0).into_bytes();
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
            Envelope::Close { conn, code } => format!("C{} {code}", conn.0).into_bytes(),
            Envelope::Partner { conn, partner } => match partner {
                Some(at) => format!("P{} {}:{}", conn.0, at.instance, at.conn.0),
                None => format!("P{} -", conn.0),
            }
            .into_bytes(),
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
            b'P' => {
                let body = std::str::from_utf8(body).ok()?;
                let partner = match body {
                    "-" => None,
                    _ => {
                        let (instance, at) = body.split_once(':')?;
                        Some(Holder {
                            instance: InstanceId(u64::from_str_radix(instance, 16).ok()?),
                            conn: ConnId(at.parse().ok()?),
                        })
                    }
                };
                Some(Envelope::Partner { conn, partner })
            }
            _ => None,
        }
    }

    /// Carries it out on this instance.
    fn deliver(self, hub: &Hub) {
        match self {
            Envelope::Text { conn, text } => hub.queue(conn, Outgoing::Text(text)),
            Envelope::Close { conn, code } => {
                let reason = if code == REPLACED_CLOSE_CODE {
                    // Its seat went to a connection on another instance.
                    hub.rooms.replaced(conn);
                    "replaced"
                } else {
                    "closing"
                };
                hub.queue(conn, Outgoing::Close { code, reason });
            }
            Envelope::Partner { conn, partner } => hub.rooms.set_partner(conn, partner),
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
    if matches!(envelope, Envelope::Text { .. }) {
        hub.metrics.received();
    }
    envelope.deliver(hub);
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
        let moved = Envelope::Partner {
            conn: ConnId(3),
            partner: Some(Holder {
                instance: InstanceId(0xabc),
                conn: ConnId(12),
            }),
        };
        assert_eq!(&moved.encode(), b"P3 0000000000000abc:12");
        assert_eq!(Envelope::decode(&moved.encode()), Some(moved));
        let alone = Envelope::Partner {
            conn: ConnId(3),
            partner: None,
        };
        assert_eq!(Envelope::decode(&alone.encode()), Some(alone));
        for bad in [
            &b""[..],
            b"T",
            b"Tx {}",
            b"X1 {}",
            b"C1 nope",
            b"T1 \xff",
            b"P1 zz:1",
            b"P1 1",
        ] {
            assert_eq!(Envelope::decode(bad), None, "{bad:?}");
        }
    }
}
