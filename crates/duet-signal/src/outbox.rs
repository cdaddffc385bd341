//! What waits to be written to one connection, bounded in messages and in bytes.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// What the connection task writes next.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Text(Utf8Bytes),
    Close { code: u16, reason: &'static str },
}

impl Outgoing {
    fn bytes(&self) -> usize {
        match self {
            Outgoing::Text(text) => text.len(),
            Outgoing::Close { .. } => 0,
        }
    }
}

/// How much one outbox may hold before its connection counts as not reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboxLimits {
    pub messages: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
}

/// The way into a connection task from the outside. A queue that costs nothing
/// while empty: a channel allocates a block of slots up front, 1.5 KB on each
/// of 10,000 connections.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Cancelled to drop a connection that cannot keep up with what it is sent.
    pub kill: CancellationToken,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `outgoing`; false when it would take the queue past `limits`.
    /// An empty queue takes any one message, so a limit below the largest
    /// message never wedges a connection.
    pub fn push(&self, outgoing: Outgoing, limits: OutboxLimits) -> bool {
        let mut queue = self.lock();
        let bytes = outgoing.bytes();
        if !queue.items.is_empty()
            && (queue.items.len() >= limits.messages
                || queue.bytes.saturating_add(bytes) > limits.bytes)
        {
            return false;
        }
        queue.bytes += bytes;
        queue.items.push_back(outgoing);
        drop(queue);
        self.ready.notify_one();
        true
    }

    pub fn try_pop(&self) -> Option<Outgoing> {
        let mut queue = self.lock();
        let outgoing = queue.items.pop_front()?;
        queue.bytes -= outgoing.bytes();
        Some(outgoing)
    }

    /// The next message; cancel-safe (a message is only taken when returned).
    pub async fn pop(&self) -> Outgoing {
        loop {
            if let Some(outgoing) = self.try_pop() {
                return outgoing;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Outgoing {
        Outgoing::Text("x".repeat(len).into())
    }

    #[test]
    fn bounded_in_bytes_as_well_as_in_messages() {
        let limits = OutboxLimits {
            messages: 3,
            bytes: 100,
        };
        let outbox = Outbox::default();
        assert!(outbox.push(text(60), limits));
        assert!(!outbox.push(text(41), limits), "161 bytes > 100");
        assert!(outbox.push(text(40), limits));
        assert!(outbox.push(
            Outgoing::Close {
                code: 1000,
                reason: ""
            },
            limits
        ));
        assert!(!outbox.push(text(0), limits), "3 messages already");
        assert!(outbox.try_pop().is_some());
        assert!(outbox.push(text(60), limits), "the bytes were given back");
    }

    #[test]
    fn an_empty_outbox_takes_one_message_over_the_byte_limit() {
        let limits = OutboxLimits {
            messages: 8,
            bytes: 10,
        };
        let outbox = Outbox::default();
        assert!(outbox.push(text(500), limits));
        assert!(!outbox.push(text(1), limits));
        assert!(matches!(outbox.try_pop(), Some(Outgoing::Text(t)) if t.len() == 500));
        assert!(outbox.try_pop().is_none());
        assert!(outbox.push(text(1), limits));
    }
}
