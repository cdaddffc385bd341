//! Duet's signaling: how two peers find each other before their call goes direct.
//!
//! - [`protocol`]: the wire messages of `signaling-v1.md`, parsed strictly.
//! - [`rooms`]: the room rules as a socket-free state machine ([`RoomRegistry`]).
//! - [`server`]: the async server around it (`duet serve`), WebSocket at `/ws`.
//! - [`client`]: a reconnecting client that hands out typed events and a typed sender.
//! - [`web`]: the browser client that the server hands out at `/`.
//!
//! This crate knows nothing of media or WebRTC; it only carries their messages.

pub mod client;
pub mod limits;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod web;

pub use client::{
    ClientConfig, ClientError, JoinedRoom, SignalEvent, SignalEvents, SignalSender, connect,
    endpoint_url,
};
pub use protocol::{
    ClientMessage, ErrorCode, IceCandidate, PeerId, Role, RoleRequest, ServerMessage,
};
pub use rooms::RoomRegistry;
pub use server::{RunningServer, ServerConfig, ServerError, SignalServer, TlsFiles};
