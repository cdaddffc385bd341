//! The room rules of `docs/protocol.md` as a socket-free state machine.
//!
//! [`RoomRegistry`] takes events about connections (a message arrived, the
//! connection went away) and answers with [`Action`]s (send this to that
//! connection, close that one). It owns no sockets and no clock. Who sits in
//! which room lives in a [`RoomStore`]: in this process's memory
//! ([`MemoryStore`](crate::MemoryStore)), or in Redis, shared by several
//! instances ([`RedisStore`](crate::RedisStore)). The registry decides on what
//! it read from the store and writes back only if the room did not change
//! meanwhile, deciding again if it did; so the rules stay here, whole (taking
//! a seat in `seating`, the rest below), and the same rule tests
//! (`rooms/tests.rs`) run against both stores. A peer seated on another
//! instance is addressed with [`Action::Forward`].
//!
//! Relays do not ask the store: each connection keeps where its partner is,
//! and whoever changes a room tells the other member (on its own instance
//! directly, on another with [`Action::ForwardPartner`], which goes before
//! the `peer-joined` it explains).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::{ClientMessage, ErrorCode, PeerId, Role, RoomName, ServerMessage};
use crate::room_store::{
    Holder, InstanceId, ReleasedSeat, RoomChange, RoomStore, SeatRecord, StoreError,
};

/// How long a seat's resume token outlives the connection that held it
/// (protocol 1.1).
pub const RESUME_GRACE: Duration = Duration::from_secs(60);

/// Close code of a connection whose seat was resumed by another (1.1).
pub const REPLACED_CLOSE_CODE: u16 = 4000;

/// Close code of a join refused while the room store does not answer: "try
/// again later" (RFC 6455). No error message goes before it: the protocol's
/// codes are a closed list, and a client that sees its connection closed
/// reconnects with backoff, which is what it should do.
pub const TRY_AGAIN_CLOSE_CODE: u16 = 1013;

/// Times a change is decided again because another connection changed the
/// room first. A room has two seats, so two tries settle any race between
/// two joiners; the rest is margin.
const ATTEMPTS: usize = 8;

/// The server's handle for one WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the server must do in answer to an event, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a connection.
    Send {
        /// Receiving connection.
        to: ConnId,
        /// The message.
        message: ServerMessage,
    },
    /// Close a connection after everything queued before this action has been sent.
    Close {
        /// Connection to close.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Short reason for the close frame.
        reason: &'static str,
    },
    /// Send a message to a connection of another instance.
    Forward {
        /// Receiving connection and its instance.
        to: Holder,
        /// The message.
        message: ServerMessage,
    },
    /// Tell a connection of another instance where its partner now is
    /// (`None`: alone), so its relays need not ask the store.
    ForwardPartner {
        /// The connection told, and its instance.
        to: Holder,
        /// Where its partner is.
        partner: Option<Holder>,
    },
    /// Close a connection of another instance.
    ForwardClose {
        /// Connection to close and its instance.
        to: Holder,
        /// WebSocket close code.
        code: u16,
    },
}

/// A seat this connection took.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldSeat {
    room: RoomName,
    role: Role,
    token: String,
}

#[derive(Debug)]
struct Connection {
    peer: PeerId,
    /// The seat it took, as far as this instance knows; the store has the
    /// last word (another connection may have resumed it).
    seat: Option<HeldSeat>,
    /// Where the other peer of its room is, as this instance was last told:
    /// relays go there without a round trip to the store.
    partner: Option<Holder>,
    /// Whether a `join` ever succeeded: the join timeout only applies to connections that never joined.
    ever_joined: bool,
}

/// A seat whose lost connection could not be taken out of the store (it was
/// unreachable); [`RoomRegistry::retry_releases`] tries again.
#[derive(Debug, Clone)]
struct PendingRelease {
    conn: ConnId,
    peer: PeerId,
    seat: HeldSeat,
}

/// The room rules over a [`RoomStore`]; the connections of this instance are its own.
#[derive(Debug)]
pub struct RoomRegistry<S> {
    store: S,
    /// This instance: seats it hands out are held by it.
    instance: InstanceId,
    /// Mixed into peer ids so they are not guessable from connection order.
    id_salt: u64,
    /// This instance's connections. Never locked across an await.
    connections: Mutex<HashMap<ConnId, Connection>>,
    /// Seats to take out of the store once it answers again.
    pending: Mutex<Vec<PendingRelease>>,
}

impl<S: RoomStore> RoomRegistry<S> {
    /// An empty registry over `store`. `id_salt` makes peer ids unpredictable
    /// (tests pass a constant); `instance` tells this instance's seats from
    /// those of the others sharing the store.
    pub fn new(store: S, instance: InstanceId, id_salt: u64) -> RoomRegistry<S> {
        RoomRegistry {
            store,
            instance,
            id_salt,
            connections: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// The store the seats are kept in.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// This instance's id.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<ConnId, Connection>> {
        // Every update below is made whole before the guard drops.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn holder(&self, conn: ConnId) -> Holder {
        Holder {
            instance: self.instance,
            conn,
        }
    }

    /// `message` for `to`, wherever it is.
    fn send_to(&self, to: Holder, message: ServerMessage) -> Action {
        if to.instance == self.instance {
            Action::Send {
                to: to.conn,
                message,
            }
        } else {
            Action::Forward { to, message }
        }
    }

    /// Registers a new connection and returns the peer id it will be known by.
    pub fn connect(&self, conn: ConnId) -> PeerId {
        let peer = PeerId(format!(
            "p-{:016x}",
            splitmix64(conn.0 ^ self.id_salt ^ self.instance.0.rotate_left(17))
        ));
        self.connections().insert(
            conn,
            Connection {
                peer: peer.clone(),
                seat: None,
                partner: None,
                ever_joined: false,
            },
        );
        peer
    }

    /// `conn`'s partner is now at `partner` (told by another instance).
    pub fn set_partner(&self, conn: ConnId, partner: Option<Holder>) {
        if let Some(connection) = self.connections().get_mut(&conn) {
            connection.partner = partner;
        }
    }

    /// `conn`'s seat was resumed by a connection on another instance: it
    /// holds nothing any more (it is being closed).
    pub fn replaced(&self, conn: ConnId) {
        if let Some(connection) = self.connections().get_mut(&conn) {
            connection.seat = None;
            connection.partner = None;
        }
    }

    /// Tells `to` (here or on another instance) where its partner is.
    fn tell_partner(&self, to: Holder, partner: Option<Holder>, out: &mut Vec<Action>) {
        if to.instance == self.instance {
            self.set_partner(to.conn, partner);
        } else {
            out.push(Action::ForwardPartner { to, partner });
        }
    }

    /// Peers lost with an instance that died, each with the seat of the
    /// peer left alone in its room: that one hears `peer-left`.
    pub fn peers_lost(&self, lost: &[(PeerId, SeatRecord)], out: &mut Vec<Action>) {
        for (peer, alone) in lost {
            self.tell_partner(alone.holder, None, out);
            out.push(self.send_to(alone.holder, ServerMessage::PeerLeft { id: peer.clone() }));
            tracing::info!(%peer, "lost with its instance");
        }
    }

    /// Number of open connections on this instance.
    pub fn connection_count(&self) -> usize {
        self.connections().len()
    }

    /// This instance's connections that hold a seat.
    pub fn seated_count(&self) -> usize {
        self.connections()
            .values()
            .filter(|c| c.seat.is_some())
            .count()
    }

    /// Rooms with at least one peer on this instance.
    pub fn room_count(&self) -> usize {
        let connections = self.connections();
        let rooms: HashSet<&RoomName> = connections
            .values()
            .filter_map(|c| c.seat.as_ref().map(|s| &s.room))
            .collect();
        rooms.len()
    }

    /// Whether the connection ever joined a room (the join timeout closes those that did not).
    pub fn has_joined(&self, conn: ConnId) -> bool {
        self.connections().get(&conn).is_some_and(|c| c.ever_joined)
    }

    /// A frame from `conn` that is not a valid message.
    pub fn bad_message(&self, conn: ConnId, reason: String, out: &mut Vec<Action>) {
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::error(ErrorCode::BadMessage, reason),
        });
    }

    /// A connection is refused for a cause of the error table that closes it
    /// (`too_large`, `rate_limited`): send the error, close, and leave the room.
    pub async fn refuse(
        &self,
        conn: ConnId,
        code: ErrorCode,
        message: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        error_and_close(conn, code, message, 1008, out);
        self.disconnect(conn, now, out).await;
    }

    /// A valid message from `conn`, at `now`.
    pub async fn handle(
        &self,
        conn: ConnId,
        message: ClientMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let seated = match self.connections().get(&conn) {
            Some(connection) => connection.seat.is_some(),
            // Messages can race with a close the registry already processed; nothing to do.
            None => return,
        };
        match message {
            ClientMessage::Ping {} => out.push(Action::Send {
                to: conn,
                message: ServerMessage::Pong {},
            }),
            ClientMessage::Join { room, role, resume } => {
                if seated {
                    out.push(Action::Send {
                        to: conn,
                        message: ServerMessage::error(
                            ErrorCode::AlreadyJoined,
                            "this connection has already joined a room",
                        ),
                    });
                    return;
                }
                let resumed = match resume {
                    Some(token) => self.resume(conn, &room, token, now, out).await,
                    None => Ok(false),
                };
                match resumed {
                    Ok(true) => {}
                    Ok(false) => {
                        self.join(conn, &room, role.unwrap_or_default(), now, out)
                            .await
                    }
                    Err(err) => unavailable(conn, &err, out),
                }
            }
            relay => self.relay(conn, relay, now, out).await,
        }
    }

    /// The connection is gone (closed, timed out, or refused) at `now`: tell
    /// the other peer. Its seat's token stays good for the store's grace.
    pub async fn disconnect(&self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        let left = self.connections().remove(&conn);
        if let Some(Connection {
            peer,
            seat: Some(seat),
            ..
        }) = left
        {
            let release = PendingRelease { conn, peer, seat };
            if let Err(err) = self.leave(&release, true, now, out).await {
                tracing::warn!(%err, "a seat could not be freed; retrying when the store answers");
                self.pending_releases().push(release);
            }
        }
    }

    fn pending_releases(&self) -> MutexGuard<'_, Vec<PendingRelease>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Frees the seats of connections lost while the store was unreachable;
    /// the server calls this when the store answers again. `true` when none is left.
    pub async fn retry_releases(&self, now: Instant, out: &mut Vec<Action>) -> bool {
        let pending = std::mem::take(&mut *self.pending_releases());
        let mut failed = Vec::new();
        for release in pending {
            if self.leave(&release, true, now, out).await.is_err() {
                failed.push(release);
            }
        }
        let mut pending = self.pending_releases();
        pending.extend(failed);
        pending.is_empty()
    }

    async fn relay(
        &self,
        conn: ConnId,
        message: ClientMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let not_joined = |out: &mut Vec<Action>| {
            out.push(Action::Send {
                to: conn,
                message: ServerMessage::error(
                    ErrorCode::NotJoined,
                    "join a room before sending call messages",
                ),
            });
        };
        // The partner as last told: no round trip to the store per message.
        let Some((peer, partner)) = self
            .connections()
            .get(&conn)
            .and_then(|c| c.seat.as_ref().map(|_| (c.peer.clone(), c.partner)))
        else {
            return not_joined(out);
        };
        let is_bye = matches!(message, ClientMessage::Bye {});
        match (partner, ServerMessage::relayed(message, peer.clone())) {
            (Some(to), Some(message)) => out.push(self.send_to(to, message)),
            _ => out.push(Action::Send {
                to: conn,
                message: ServerMessage::error(
                    ErrorCode::NoPeer,
                    "nobody else is in the room yet; the message was dropped",
                ),
            }),
        }
        if is_bye {
            // A hang-up frees the seat for good; the connection may join again.
            let taken = self.connections().get_mut(&conn).and_then(|c| {
                c.partner = None;
                c.seat.take()
            });
            if let Some(seat) = taken {
                let release = PendingRelease { conn, peer, seat };
                if let Err(err) = self.leave(&release, false, now, out).await {
                    tracing::warn!(%err, "a hung-up seat could not be freed; retrying when the store answers");
                    self.pending_releases().push(release);
                }
            }
        }
    }

    /// Takes a seat out of its room (if `release.conn` still holds it) and
    /// tells the other member; `resumable`: its token stays good for the grace.
    async fn leave(
        &self,
        release: &PendingRelease,
        resumable: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), StoreError> {
        let PendingRelease { conn, peer, seat } = release;
        let me = self.holder(*conn);
        for _ in 0..ATTEMPTS {
            let seats = self.store.seats(&seat.room, now).await?;
            if !seats
                .iter()
                .any(|s| s.token == seat.token && s.holder == me)
            {
                // Resumed by another connection, or gone with the store: not ours to free.
                return Ok(());
            }
            let after: Vec<SeatRecord> = seats
                .iter()
                .filter(|s| s.token != seat.token)
                .cloned()
                .collect();
            let change = RoomChange {
                room: &seat.room,
                expected: &seats,
                seats: after.clone(),
                release: resumable.then(|| {
                    (
                        seat.token.clone(),
                        ReleasedSeat {
                            room: seat.room.clone(),
                            role: seat.role,
                            peer: peer.clone(),
                        },
                    )
                }),
                reclaim: None,
            };
            if self.store.change(change, now).await? {
                for other in after {
                    self.tell_partner(other.holder, None, out);
                    out.push(
                        self.send_to(other.holder, ServerMessage::PeerLeft { id: peer.clone() }),
                    );
                }
                tracing::info!(%peer, role = %seat.role, "leave");
                tracing::debug!(room = %seat.room, %peer, "left room");
                return Ok(());
            }
        }
        Err(StoreError::Unreachable(format!(
            "room {} changed {ATTEMPTS} times while a seat was freed",
            seat.room
        )))
    }
}

/// Sends `conn` the error `code` and closes it, with the close code the
/// protocol gives that error, or `otherwise` for an error that leaves it open.
fn error_and_close(
    conn: ConnId,
    code: ErrorCode,
    message: String,
    otherwise: u16,
    out: &mut Vec<Action>,
) {
    out.push(Action::Send {
        to: conn,
        message: ServerMessage::error(code, message),
    });
    out.push(Action::Close {
        conn,
        code: code.close_code().unwrap_or(otherwise),
        reason: code.as_str(),
    });
}

/// The store did not answer: the join is refused, and may be tried again later.
fn unavailable(conn: ConnId, err: &StoreError, out: &mut Vec<Action>) {
    tracing::warn!(%err, "a join was refused");
    out.push(Action::Close {
        conn,
        code: TRY_AGAIN_CLOSE_CODE,
        reason: "room store unreachable; try again later",
    });
}

/// A bijective 64-bit mix (SplitMix64's finaliser): distinct inputs give distinct ids.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

mod seating;
#[cfg(test)]
mod tests;
