//! Duet's signaling: how two peers find each other before their call goes direct.
//!
//! - [`protocol`]: the wire messages of `docs/protocol.md`, parsed strictly.
//! - [`rooms`]: the room rules as a socket-free state machine ([`RoomRegistry`]),
//!   over a [`RoomStore`] that keeps the seats: [`MemoryStore`] in one process,
//!   or [`RedisStore`] shared by several `duet serve` instances.
//! - [`server`]: the async server around it (`duet serve`), WebSocket at `/ws`;
//!   a binary may serve more on the same listener ([`SignalServer::with_routes`]);
//!   `/metrics` in the Prometheus text format; with Redis, messages for a
//!   peer on another instance go over that instance's pub/sub channel.
//! - [`turn`]: short-lived TURN credentials for the peers it serves.
//! - [`client`]: a reconnecting client that hands out the server's messages
//!   ([`SignalEvent`]) and a typed sender.
//!
//! This crate knows nothing of media, WebRTC or browsers; it only carries
//! their messages.

mod admission;
pub mod client;
mod connection;
mod hub;
mod limits;
mod listener;
mod log_text;
mod metrics;
mod origin;
mod outbox;
pub mod protocol;
pub mod redis_store;
mod relay_bus;
pub mod room_store;
pub mod rooms;
pub mod server;
#[cfg(test)]
mod test_redis;
mod tls;
pub mod turn;
mod ws_fragments;
mod ws_write;

pub use client::{
    ClientConfig, ClientError, JoinedRoom, SignalEvent, SignalEvents, SignalSender, connect,
    endpoint_url,
};
pub use limits::RateLimit;
pub use origin::BadOrigin;
pub use protocol::{
    ClientMessage, ErrorCode, IceCandidate, PeerId, Role, RoleRequest, ServerMessage,
};
pub use redis_store::{RedisConfig, RedisStore};
pub use room_store::{InstanceId, MemoryStore, RoomStore};
pub use rooms::RoomRegistry;
pub use server::{RunningServer, ServerConfig, ServerError, SignalServer, TlsFiles};
pub use turn::{IceServerEntry, TurnConfig};
