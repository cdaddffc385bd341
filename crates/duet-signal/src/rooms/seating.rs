//! Taking a seat: a plain `join`, or one with a resume token (a seat lost a
//! moment ago, or one a ghost connection still holds), each decided on the
//! room as read from the store and written back only if it did not change.

use std::time::Instant;

use super::{
    ATTEMPTS, Action, ConnId, HeldSeat, REPLACED_CLOSE_CODE, RoomRegistry, error_and_close,
    unavailable,
};
use crate::protocol::{ErrorCode, PeerId, Role, RoleRequest, RoomName, ServerMessage};
use crate::room_store::{RoomChange, RoomStore, SeatRecord, StoreError};

impl<S: RoomStore> RoomRegistry<S> {
    /// `join` with a resume token: gives `conn` the seat the token names, if
    /// it is good and the seat can be had. `false`: handle as a plain join.
    pub(super) async fn resume(
        &self,
        conn: ConnId,
        room_name: &str,
        token: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<bool, StoreError> {
        let Ok(room) = RoomName::parse(room_name) else {
            return Ok(false);
        };
        let me = self.holder(conn);
        for _ in 0..ATTEMPTS {
            let seats = self.store.seats(&room, now).await?;
            if let Some(held) = seats.iter().find(|s| s.token == token) {
                // A ghost: the old connection still looks open (here or on
                // an instance that died). It hands over its seat and is
                // closed; the other peer hears nothing.
                let (role, peer, ghost) = (held.role, held.peer.clone(), held.holder);
                let after = seats
                    .iter()
                    .map(|s| SeatRecord {
                        holder: if s.token == token { me } else { s.holder },
                        ..s.clone()
                    })
                    .collect();
                let change = RoomChange {
                    room: &room,
                    expected: &seats,
                    seats: after,
                    release: None,
                    reclaim: None,
                };
                if !self.store.change(change, now).await? {
                    continue;
                }
                if ghost.instance == self.instance {
                    if let Some(old) = self.connections().get_mut(&ghost.conn) {
                        old.seat = None;
                        old.partner = None;
                    }
                    out.push(Action::Close {
                        conn: ghost.conn,
                        code: REPLACED_CLOSE_CODE,
                        reason: "replaced",
                    });
                } else {
                    out.push(Action::ForwardClose {
                        to: ghost,
                        code: REPLACED_CLOSE_CODE,
                    });
                }
                self.seated(
                    conn,
                    &room,
                    role,
                    peer,
                    token,
                    &seats,
                    Taken::FromGhost,
                    out,
                );
                return Ok(true);
            }
            // Lost a moment ago: the seat comes back if nobody took it.
            let Some(released) = self.store.released(&token, now).await? else {
                return Ok(false);
            };
            if released.room != room
                || seats.len() >= 2
                || seats.iter().any(|s| s.role == released.role)
            {
                return Ok(false);
            }
            let mut after = seats.clone();
            after.push(SeatRecord {
                role: released.role,
                peer: released.peer.clone(),
                token: token.clone(),
                holder: me,
            });
            let change = RoomChange {
                room: &room,
                expected: &seats,
                seats: after,
                release: None,
                reclaim: Some(token.clone()),
            };
            if self.store.change(change, now).await? {
                self.seated(
                    conn,
                    &room,
                    released.role,
                    released.peer,
                    token,
                    &seats,
                    Taken::Released,
                    out,
                );
                return Ok(true);
            }
        }
        Err(StoreError::Unreachable(format!(
            "room {room} changed {ATTEMPTS} times while a seat was resumed"
        )))
    }

    /// `conn` took a seat: note it, answer `joined`, and tell the other peer
    /// unless the seat changed hands unseen.
    #[allow(clippy::too_many_arguments)] // the seat, who took it, and how
    fn seated(
        &self,
        conn: ConnId,
        room: &RoomName,
        role: Role,
        peer: PeerId,
        token: String,
        before: &[SeatRecord],
        how: Taken,
        out: &mut Vec<Action>,
    ) {
        {
            let mut connections = self.connections();
            let Some(joiner) = connections.get_mut(&conn) else {
                return;
            };
            joiner.peer = peer.clone();
            joiner.seat = Some(HeldSeat {
                room: room.clone(),
                role,
                token: token.clone(),
            });
            joiner.ever_joined = true;
            joiner.partner = before.iter().find(|s| s.token != token).map(|s| s.holder);
        }
        let others: Vec<&SeatRecord> = before.iter().filter(|s| s.token != token).collect();
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::Joined {
                room: room.as_str().to_owned(),
                id: peer.clone(),
                role,
                peers: others.iter().map(|s| s.peer.clone()).collect(),
                resume: Some(token),
                resumed: how != Taken::Fresh,
                // The server adds TURN credentials (it knows the clock and the secret).
                ice_servers: Vec::new(),
            },
        });
        for other in others {
            // Where the joiner is goes first: the other peer answers `peer-joined` at once.
            self.tell_partner(other.holder, Some(self.holder(conn)), out);
            if how != Taken::FromGhost {
                out.push(self.send_to(
                    other.holder,
                    ServerMessage::PeerJoined {
                        id: peer.clone(),
                        role,
                    },
                ));
            }
        }
        // Room names are secrets of their two people: debug only.
        match how {
            Taken::Fresh => tracing::info!(%peer, %role, "join"),
            Taken::Released | Taken::FromGhost => {
                tracing::info!(%peer, %role, replaced_ghost = how == Taken::FromGhost, "resume");
            }
        }
        tracing::debug!(%room, %peer, "took a seat");
    }

    pub(super) async fn join(
        &self,
        conn: ConnId,
        room_name: &str,
        asked: RoleRequest,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let fail = |out: &mut Vec<Action>, code: ErrorCode, message: String| {
            error_and_close(conn, code, message, 1000, out);
        };
        let room = match RoomName::parse(room_name) {
            Ok(room) => room,
            Err(reason) => return fail(out, ErrorCode::BadRoom, reason),
        };
        let Some(peer) = self.connections().get(&conn).map(|c| c.peer.clone()) else {
            return;
        };
        // 128 random bits: the seat's key, unguessable by anyone else.
        let token = format!("{:032x}", rand::random::<u128>());
        for _ in 0..ATTEMPTS {
            let seats = match self.store.seats(&room, now).await {
                Ok(seats) => seats,
                Err(err) => return unavailable(conn, &err, out),
            };
            let role = match seat_for(&room, &seats, asked) {
                Ok(role) => role,
                Err((code, message)) => return fail(out, code, message),
            };
            let mut after = seats.clone();
            after.push(SeatRecord {
                role,
                peer: peer.clone(),
                token: token.clone(),
                holder: self.holder(conn),
            });
            let change = RoomChange {
                room: &room,
                expected: &seats,
                seats: after,
                release: None,
                reclaim: None,
            };
            match self.store.change(change, now).await {
                Ok(true) => {
                    tracing::debug!(asked = %asked, "role asked");
                    return self.seated(conn, &room, role, peer, token, &seats, Taken::Fresh, out);
                }
                Ok(false) => {}
                Err(err) => return unavailable(conn, &err, out),
            }
        }
        let err = StoreError::Unreachable(format!(
            "room {room} changed {ATTEMPTS} times during a join"
        ));
        unavailable(conn, &err, out);
    }
}

/// How a connection came to hold a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// A plain join: a new peer, the other one is told.
    Fresh,
    /// A released seat taken back with its token: the other one is told it is back.
    Released,
    /// Taken over from a connection that still looked open: nobody is told.
    FromGhost,
}

/// The rule for seats: which role a joiner asking for `asked` gets in a room
/// holding `seats`, or why it gets none.
fn seat_for(
    room: &RoomName,
    seats: &[SeatRecord],
    asked: RoleRequest,
) -> Result<Role, (ErrorCode, String)> {
    match (seats, asked) {
        ([], RoleRequest::Auto) => Ok(Role::Callee),
        ([], RoleRequest::Caller) => Ok(Role::Caller),
        ([], RoleRequest::Callee) => Ok(Role::Callee),
        ([other], RoleRequest::Auto) => Ok(other.role.other()),
        ([other], wanted) => {
            let wanted = match wanted {
                RoleRequest::Caller => Role::Caller,
                _ => Role::Callee,
            };
            if other.role == wanted {
                return Err((
                    ErrorCode::RoleTaken,
                    format!("the {wanted} role in room {room} is already taken"),
                ));
            }
            Ok(wanted)
        }
        _ => Err((
            ErrorCode::RoomFull,
            format!("room {room} already has two people in it"),
        )),
    }
}
