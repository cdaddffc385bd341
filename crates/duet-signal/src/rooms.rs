//! The room rules of `docs/protocol.md` as a socket-free state machine.
//!
//! [`RoomRegistry`] takes events about connections (a message arrived, the
//! connection went away) and answers with [`Action`]s (send this to that
//! connection, close that one). It owns no sockets and no clock, so every rule
//! (seats, roles, relay, errors) is unit-tested below without any I/O; the
//! async server in [`crate::server`] only moves bytes to and from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::{
    ClientMessage, ErrorCode, PeerId, Role, RoleRequest, RoomName, ServerMessage,
};

/// How long a seat's resume token outlives the connection that held it
/// (protocol 1.1).
pub const RESUME_GRACE: Duration = Duration::from_secs(60);

/// Close code of a connection whose seat was resumed by another (1.1).
pub const REPLACED_CLOSE_CODE: u16 = 4000;

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
}

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seat {
    /// Connected, no successful `join` yet (or left the room with `bye`).
    Lobby,
    /// Holds a seat in a room.
    InRoom { room: RoomName, role: Role },
}

#[derive(Debug)]
struct Connection {
    peer: PeerId,
    seat: Seat,
    /// Whether a `join` ever succeeded: the join timeout only applies to connections that never joined.
    ever_joined: bool,
    /// The resume token of the seat it holds.
    token: Option<String>,
}

/// A seat as its resume token knows it.
#[derive(Debug)]
struct Ticket {
    room: RoomName,
    role: Role,
    peer: PeerId,
    /// The connection holding the seat; `None` once it was lost.
    holder: Option<ConnId>,
    /// When the holder was lost: the token is good for [`RESUME_GRACE`] more.
    released_at: Option<Instant>,
}

/// One occupant of a room.
#[derive(Debug, Clone)]
struct Member {
    conn: ConnId,
    role: Role,
}

/// Who is in which room and in which seat; the whole of the server's shared state.
#[derive(Debug)]
pub struct RoomRegistry {
    connections: HashMap<ConnId, Connection>,
    /// Occupants by room; a room exists only while it has at least one member, and never more than two.
    rooms: HashMap<RoomName, Vec<Member>>,
    /// Mixed into peer ids so they are not guessable from connection order.
    id_salt: u64,
    /// Seats by resume token.
    tickets: HashMap<String, Ticket>,
}

impl RoomRegistry {
    /// An empty registry. `id_salt` makes peer ids unpredictable; tests pass a constant.
    pub fn new(id_salt: u64) -> RoomRegistry {
        RoomRegistry {
            connections: HashMap::new(),
            rooms: HashMap::new(),
            id_salt,
            tickets: HashMap::new(),
        }
    }

    /// Registers a new connection and returns the peer id it will be known by.
    pub fn connect(&mut self, conn: ConnId) -> PeerId {
        let peer = PeerId(format!("p-{:016x}", splitmix64(conn.0 ^ self.id_salt)));
        self.connections.insert(
            conn,
            Connection {
                peer: peer.clone(),
                seat: Seat::Lobby,
                ever_joined: false,
                token: None,
            },
        );
        peer
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Number of rooms with at least one peer.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Whether the connection ever joined a room (the join timeout closes those that did not).
    pub fn has_joined(&self, conn: ConnId) -> bool {
        self.connections.get(&conn).is_some_and(|c| c.ever_joined)
    }

    /// A frame from `conn` that is not a valid message.
    pub fn bad_message(&mut self, conn: ConnId, reason: String, out: &mut Vec<Action>) {
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::error(ErrorCode::BadMessage, reason),
        });
    }

    /// A connection is refused for a cause of the error table that closes it
    /// (`too_large`, `rate_limited`): send the error, close, and leave the room.
    pub fn refuse(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::error(code, message),
        });
        out.push(Action::Close {
            conn,
            code: code.close_code().unwrap_or(1008),
            reason: code.as_str(),
        });
        self.disconnect(conn, now, out);
    }

    /// A valid message from `conn`, at `now`.
    pub fn handle(
        &mut self,
        conn: ConnId,
        message: ClientMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            // Messages can race with a close the registry already processed; nothing to do.
            return;
        };
        match message {
            ClientMessage::Ping {} => out.push(Action::Send {
                to: conn,
                message: ServerMessage::Pong {},
            }),
            ClientMessage::Join { room, role, resume } => {
                if matches!(connection.seat, Seat::InRoom { .. }) {
                    out.push(Action::Send {
                        to: conn,
                        message: ServerMessage::error(
                            ErrorCode::AlreadyJoined,
                            "this connection has already joined a room",
                        ),
                    });
                    return;
                }
                self.expire_tickets(now);
                let resumed = resume.is_some_and(|token| self.resume(conn, &room, token, out));
                if !resumed {
                    self.join(conn, &room, role.unwrap_or_default(), out);
                }
            }
            relay => self.relay(conn, relay, out),
        }
    }

    /// The connection is gone (closed, timed out, or refused) at `now`: tell
    /// the other peer. Its seat's token stays good for [`RESUME_GRACE`].
    pub fn disconnect(&mut self, conn: ConnId, now: Instant, out: &mut Vec<Action>) {
        if let Some(token) = self.connections.get(&conn).and_then(|c| c.token.clone())
            && let Some(ticket) = self.tickets.get_mut(&token)
        {
            ticket.holder = None;
            ticket.released_at = Some(now);
        }
        self.leave_room(conn, out);
        self.connections.remove(&conn);
        self.expire_tickets(now);
    }

    fn expire_tickets(&mut self, now: Instant) {
        self.tickets.retain(|_, ticket| {
            ticket
                .released_at
                .is_none_or(|at| now.saturating_duration_since(at) < RESUME_GRACE)
        });
    }

    /// `join` with a resume token: gives `conn` the seat the token names, if
    /// it is good and the seat can be had. `false`: handle as a plain join.
    fn resume(
        &mut self,
        conn: ConnId,
        room_name: &str,
        token: String,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(ticket) = self.tickets.get(&token) else {
            return false;
        };
        if ticket.room.as_str() != room_name {
            return false;
        }
        let (room, role, peer, holder) = (
            ticket.room.clone(),
            ticket.role,
            ticket.peer.clone(),
            ticket.holder,
        );
        let members = self.rooms.entry(room.clone()).or_default();
        let told_left = match holder {
            // A ghost: the old connection still looks open. It hands over
            // its seat and is closed; the other peer hears nothing.
            Some(old) => {
                if let Some(member) = members.iter_mut().find(|m| m.conn == old) {
                    member.conn = conn;
                }
                if let Some(ghost) = self.connections.get_mut(&old) {
                    ghost.seat = Seat::Lobby;
                    ghost.token = None;
                }
                out.push(Action::Close {
                    conn: old,
                    code: REPLACED_CLOSE_CODE,
                    reason: "replaced",
                });
                false
            }
            // Lost a moment ago: the seat comes back if nobody took it.
            None => {
                if members.len() >= 2 || members.iter().any(|m| m.role == role) {
                    if members.is_empty() {
                        self.rooms.remove(&room);
                    }
                    return false;
                }
                members.push(Member { conn, role });
                true
            }
        };
        let others: Vec<ConnId> = members
            .iter()
            .filter(|m| m.conn != conn)
            .map(|m| m.conn)
            .collect();
        let peers: Vec<PeerId> = others
            .iter()
            .filter_map(|c| self.connections.get(c).map(|c| c.peer.clone()))
            .collect();
        if let Some(joiner) = self.connections.get_mut(&conn) {
            joiner.peer = peer.clone();
            joiner.seat = Seat::InRoom {
                room: room.clone(),
                role,
            };
            joiner.ever_joined = true;
            joiner.token = Some(token.clone());
        }
        if let Some(ticket) = self.tickets.get_mut(&token) {
            ticket.holder = Some(conn);
            ticket.released_at = None;
        }
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::Joined {
                room: room.as_str().to_owned(),
                id: peer.clone(),
                role,
                peers,
                resume: Some(token),
                resumed: true,
                // The server adds TURN credentials (it knows the clock and the secret).
                ice_servers: Vec::new(),
            },
        });
        if told_left {
            for other in others {
                out.push(Action::Send {
                    to: other,
                    message: ServerMessage::PeerJoined {
                        id: peer.clone(),
                        role,
                    },
                });
            }
        }
        // Room names are secrets of their two people: debug only.
        tracing::info!(%peer, %role, replaced_ghost = !told_left, "resume");
        tracing::debug!(%room, %peer, "resumed in room");
        true
    }

    fn join(&mut self, conn: ConnId, room_name: &str, asked: RoleRequest, out: &mut Vec<Action>) {
        let fail = |out: &mut Vec<Action>, code: ErrorCode, message: String| {
            out.push(Action::Send {
                to: conn,
                message: ServerMessage::error(code, message),
            });
            out.push(Action::Close {
                conn,
                code: code.close_code().unwrap_or(1000),
                reason: code.as_str(),
            });
        };
        let room = match RoomName::parse(room_name) {
            Ok(room) => room,
            Err(reason) => return fail(out, ErrorCode::BadRoom, reason),
        };
        let members = self.rooms.get(&room).map(Vec::as_slice).unwrap_or_default();
        let role = match (members, asked) {
            ([], RoleRequest::Auto) => Role::Callee,
            ([], RoleRequest::Caller) => Role::Caller,
            ([], RoleRequest::Callee) => Role::Callee,
            ([other], RoleRequest::Auto) => other.role.other(),
            ([other], wanted) => {
                let wanted = match wanted {
                    RoleRequest::Caller => Role::Caller,
                    _ => Role::Callee,
                };
                if other.role == wanted {
                    return fail(
                        out,
                        ErrorCode::RoleTaken,
                        format!("the {wanted} role in room {room} is already taken"),
                    );
                }
                wanted
            }
            _ => {
                return fail(
                    out,
                    ErrorCode::RoomFull,
                    format!("room {room} already has two people in it"),
                );
            }
        };

        let present: Vec<Member> = members.to_vec();
        let Some(joiner) = self.connections.get_mut(&conn) else {
            return;
        };
        joiner.seat = Seat::InRoom {
            room: room.clone(),
            role,
        };
        joiner.ever_joined = true;
        let joiner_id = joiner.peer.clone();
        // 128 random bits: the seat's key, unguessable by anyone else.
        let token = format!("{:032x}", rand::random::<u128>());
        joiner.token = Some(token.clone());
        self.tickets.insert(
            token.clone(),
            Ticket {
                room: room.clone(),
                role,
                peer: joiner_id.clone(),
                holder: Some(conn),
                released_at: None,
            },
        );

        let peers: Vec<PeerId> = present
            .iter()
            .filter_map(|m| self.connections.get(&m.conn).map(|c| c.peer.clone()))
            .collect();
        out.push(Action::Send {
            to: conn,
            message: ServerMessage::Joined {
                room: room.as_str().to_owned(),
                id: joiner_id.clone(),
                role,
                peers,
                resume: Some(token),
                resumed: false,
                // The server adds TURN credentials (it knows the clock and the secret).
                ice_servers: Vec::new(),
            },
        });
        for member in &present {
            out.push(Action::Send {
                to: member.conn,
                message: ServerMessage::PeerJoined {
                    id: joiner_id.clone(),
                    role,
                },
            });
        }
        tracing::info!(peer = %joiner_id, %role, asked = %asked, "join");
        tracing::debug!(%room, peer = %joiner_id, "joined room");
        self.rooms
            .entry(room)
            .or_default()
            .push(Member { conn, role });
    }

    fn relay(&mut self, conn: ConnId, message: ClientMessage, out: &mut Vec<Action>) {
        let Some(sender) = self.connections.get(&conn) else {
            return;
        };
        let Seat::InRoom { room, .. } = &sender.seat else {
            out.push(Action::Send {
                to: conn,
                message: ServerMessage::error(
                    ErrorCode::NotJoined,
                    "join a room before sending call messages",
                ),
            });
            return;
        };
        let is_bye = matches!(message, ClientMessage::Bye {});
        let partner = self
            .rooms
            .get(room)
            .and_then(|members| members.iter().find(|m| m.conn != conn))
            .map(|m| m.conn);
        match (
            partner,
            ServerMessage::relayed(message, sender.peer.clone()),
        ) {
            (Some(to), Some(message)) => out.push(Action::Send { to, message }),
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
            if let Some(token) = self.connections.get_mut(&conn).and_then(|c| c.token.take()) {
                self.tickets.remove(&token);
            }
            self.leave_room(conn, out);
        }
    }

    /// Takes `conn` out of its room, telling the other member.
    fn leave_room(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let Seat::InRoom { room, role } = std::mem::replace(&mut connection.seat, Seat::Lobby)
        else {
            return;
        };
        let peer = connection.peer.clone();
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|m| m.conn != conn);
            for member in members.iter() {
                out.push(Action::Send {
                    to: member.conn,
                    message: ServerMessage::PeerLeft { id: peer.clone() },
                });
            }
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
        tracing::info!(%peer, %role, "leave");
        tracing::debug!(%room, %peer, "left room");
    }
}

/// A bijective 64-bit mix (SplitMix64's finaliser): distinct inputs give distinct ids.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::IceCandidate;

    /// A registry and a way to feed it messages as JSON, the way the server does.
    /// What every `joined` shows as its resume token in these tests; the
    /// real (random) ones are kept in [`Harness::tokens`].
    const TOKEN: &str = "TOKEN";

    struct Harness {
        registry: RoomRegistry,
        ids: HashMap<ConnId, PeerId>,
        tokens: HashMap<ConnId, String>,
        now: Instant,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                registry: RoomRegistry::new(7),
                ids: HashMap::new(),
                tokens: HashMap::new(),
                now: Instant::now(),
            }
        }

        /// Keeps each `joined`'s real token and shows it as [`TOKEN`].
        fn note_tokens(&mut self, out: &mut [Action]) {
            for action in out {
                if let Action::Send {
                    to,
                    message:
                        ServerMessage::Joined {
                            resume: Some(token),
                            ..
                        },
                } = action
                {
                    self.tokens
                        .insert(*to, std::mem::replace(token, TOKEN.into()));
                }
            }
        }

        fn connect(&mut self, n: u64) -> ConnId {
            let conn = ConnId(n);
            let id = self.registry.connect(conn);
            self.ids.insert(conn, id);
            conn
        }

        fn id(&self, conn: ConnId) -> PeerId {
            self.ids[&conn].clone()
        }

        fn send(&mut self, conn: ConnId, json: &str) -> Vec<Action> {
            let mut out = Vec::new();
            match ClientMessage::parse(json) {
                Ok(message) => self.registry.handle(conn, message, self.now, &mut out),
                Err(reason) => self.registry.bad_message(conn, reason, &mut out),
            }
            self.note_tokens(&mut out);
            out
        }

        fn close(&mut self, conn: ConnId) -> Vec<Action> {
            let mut out = Vec::new();
            self.registry.disconnect(conn, self.now, &mut out);
            out
        }
    }

    fn send(to: ConnId, message: ServerMessage) -> Action {
        Action::Send { to, message }
    }

    fn error_code(actions: &[Action]) -> Option<ErrorCode> {
        actions.iter().find_map(|a| match a {
            Action::Send {
                message: ServerMessage::Error { code, .. },
                ..
            } => Some(*code),
            _ => None,
        })
    }

    fn closes(actions: &[Action]) -> Option<u16> {
        actions.iter().find_map(|a| match a {
            Action::Close { code, .. } => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn first_caller_then_callee_are_paired_and_told_about_each_other() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        let out = h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        assert_eq!(
            out,
            vec![send(
                a,
                ServerMessage::Joined {
                    room: "r".into(),
                    id: h.id(a),
                    role: Role::Caller,
                    peers: vec![],
                    resume: Some(TOKEN.into()),
                    resumed: false,
                    ice_servers: Vec::new(),
                }
            )]
        );
        let out = h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        assert_eq!(
            out,
            vec![
                send(
                    b,
                    ServerMessage::Joined {
                        room: "r".into(),
                        id: h.id(b),
                        role: Role::Callee,
                        peers: vec![h.id(a)],
                        resume: Some(TOKEN.into()),
                        resumed: false,
                        ice_servers: Vec::new(),
                    }
                ),
                send(
                    a,
                    ServerMessage::PeerJoined {
                        id: h.id(b),
                        role: Role::Callee
                    }
                ),
            ]
        );
    }

    #[test]
    fn auto_takes_callee_in_an_empty_room_and_the_free_seat_otherwise() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        let out = h.send(a, r#"{"type":"join","room":"r"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined {
                    role: Role::Callee,
                    ..
                },
                ..
            }
        ));
        let out = h.send(b, r#"{"type":"join","room":"r","role":"auto"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined {
                    role: Role::Caller,
                    ..
                },
                ..
            }
        ));

        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        let out = h.send(b, r#"{"type":"join","room":"r"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined {
                    role: Role::Callee,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn a_third_peer_gets_room_full_and_is_closed() {
        let mut h = Harness::new();
        let (a, b, c) = (h.connect(1), h.connect(2), h.connect(3));
        h.send(a, r#"{"type":"join","room":"r"}"#);
        h.send(b, r#"{"type":"join","room":"r"}"#);
        let out = h.send(c, r#"{"type":"join","room":"r","role":"caller"}"#);
        assert_eq!(error_code(&out), Some(ErrorCode::RoomFull));
        assert_eq!(closes(&out), Some(1000));
        assert!(out.iter().all(|a| match a {
            Action::Send { to, .. } | Action::Close { conn: to, .. } => *to == c,
        }));
    }

    #[test]
    fn asking_for_a_held_role_gets_role_taken_and_is_closed() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r","role":"callee"}"#);
        let out = h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        assert_eq!(error_code(&out), Some(ErrorCode::RoleTaken));
        assert_eq!(closes(&out), Some(1000));
        // The seat holder is not disturbed, and the seat stays free for a caller.
        let c = h.connect(3);
        let out = h.send(c, r#"{"type":"join","room":"r","role":"caller"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined {
                    role: Role::Caller,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn bad_room_names_are_refused_and_closed() {
        let mut h = Harness::new();
        for room in ["", "has space", "ünï", &"x".repeat(65)] {
            let c = h.connect(1);
            let out = h.send(
                c,
                &format!(r#"{{"type":"join","room":{}}}"#, serde_json::json!(room)),
            );
            assert_eq!(error_code(&out), Some(ErrorCode::BadRoom), "{room:?}");
            assert_eq!(closes(&out), Some(1000));
            assert!(!h.registry.has_joined(c));
        }
    }

    #[test]
    fn relay_adds_from_and_goes_only_to_the_partner() {
        let mut h = Harness::new();
        let (a, b, x) = (h.connect(1), h.connect(2), h.connect(3));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        h.send(x, r#"{"type":"join","room":"other"}"#);
        assert_eq!(
            h.send(a, r#"{"type":"offer","sdp":"v=0 o"}"#),
            vec![send(
                b,
                ServerMessage::Offer {
                    sdp: "v=0 o".into(),
                    from: h.id(a)
                }
            )]
        );
        assert_eq!(
            h.send(b, r#"{"type":"answer","sdp":"v=0 a"}"#),
            vec![send(
                a,
                ServerMessage::Answer {
                    sdp: "v=0 a".into(),
                    from: h.id(b)
                }
            )]
        );
        assert_eq!(
            h.send(
                b,
                r#"{"type":"candidate","candidate":{"candidate":"candidate:x","sdpMid":"0"}}"#
            ),
            vec![send(
                a,
                ServerMessage::Candidate {
                    candidate: Some(IceCandidate {
                        candidate: "candidate:x".into(),
                        sdp_mid: Some("0".into()),
                        sdp_mline_index: None,
                        username_fragment: None
                    }),
                    from: h.id(b)
                }
            )]
        );
        assert_eq!(
            h.send(x, r#"{"type":"offer","sdp":"lonely"}"#)
                .iter()
                .map(|a| match a {
                    Action::Send { to, .. } | Action::Close { conn: to, .. } => *to,
                })
                .collect::<Vec<_>>(),
            vec![x],
            "a message from another room reaches no one else"
        );
    }

    #[test]
    fn relay_before_join_is_not_joined_and_keeps_the_connection() {
        let mut h = Harness::new();
        let a = h.connect(1);
        for msg in [
            r#"{"type":"offer","sdp":"x"}"#,
            r#"{"type":"answer","sdp":"x"}"#,
            r#"{"type":"candidate","candidate":null}"#,
            r#"{"type":"bye"}"#,
        ] {
            let out = h.send(a, msg);
            assert_eq!(error_code(&out), Some(ErrorCode::NotJoined), "{msg}");
            assert_eq!(closes(&out), None);
        }
    }

    #[test]
    fn relay_while_alone_is_no_peer_and_dropped() {
        let mut h = Harness::new();
        let a = h.connect(1);
        h.send(a, r#"{"type":"join","room":"r"}"#);
        let out = h.send(a, r#"{"type":"offer","sdp":"x"}"#);
        assert_eq!(error_code(&out), Some(ErrorCode::NoPeer));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn second_join_is_already_joined_and_keeps_the_seat() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r"}"#);
        let out = h.send(a, r#"{"type":"join","room":"elsewhere"}"#);
        assert_eq!(error_code(&out), Some(ErrorCode::AlreadyJoined));
        assert_eq!(closes(&out), None);
        let out = h.send(b, r#"{"type":"join","room":"r"}"#);
        assert!(
            matches!(&out[0], Action::Send { message: ServerMessage::Joined { peers, .. }, .. } if peers.len() == 1)
        );
    }

    #[test]
    fn bad_messages_keep_the_connection_and_do_not_count_as_join() {
        let mut h = Harness::new();
        let a = h.connect(1);
        let out = h.send(a, "{nope");
        assert_eq!(error_code(&out), Some(ErrorCode::BadMessage));
        assert_eq!(closes(&out), None);
        assert!(!h.registry.has_joined(a));
        let out = h.send(a, r#"{"type":"join","room":"r"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined { .. },
                ..
            }
        ));
        assert!(h.registry.has_joined(a));
    }

    #[test]
    fn ping_is_answered_before_and_after_join() {
        let mut h = Harness::new();
        let a = h.connect(1);
        assert_eq!(
            h.send(a, r#"{"type":"ping"}"#),
            vec![send(a, ServerMessage::Pong {})]
        );
        h.send(a, r#"{"type":"join","room":"r"}"#);
        assert_eq!(
            h.send(a, r#"{"type":"ping"}"#),
            vec![send(a, ServerMessage::Pong {})]
        );
    }

    #[test]
    fn bye_is_relayed_then_peer_left_and_the_seat_is_free_again() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        let out = h.send(b, r#"{"type":"bye"}"#);
        assert_eq!(
            out,
            vec![
                send(a, ServerMessage::Bye { from: h.id(b) }),
                send(a, ServerMessage::PeerLeft { id: h.id(b) }),
            ]
        );
        // b may join again on the same connection, and gets the callee seat back.
        let out = h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        assert!(matches!(
            &out[0],
            Action::Send {
                message: ServerMessage::Joined {
                    role: Role::Callee,
                    ..
                },
                ..
            }
        ));
        // Relay after bye but before re-join is not_joined.
        let c = h.connect(3);
        h.send(c, r#"{"type":"join","room":"s"}"#);
        h.send(c, r#"{"type":"bye"}"#);
        assert_eq!(
            error_code(&h.send(c, r#"{"type":"offer","sdp":"x"}"#)),
            Some(ErrorCode::NotJoined)
        );
    }

    #[test]
    fn closing_tells_the_partner_and_empties_the_room() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r"}"#);
        h.send(b, r#"{"type":"join","room":"r"}"#);
        assert_eq!(
            h.close(a),
            vec![send(b, ServerMessage::PeerLeft { id: h.id(a) })]
        );
        assert_eq!(h.close(b), vec![]);
        assert_eq!(h.registry.room_count(), 0);
        assert_eq!(h.registry.connection_count(), 0);
        // Closing twice, or a message after close, is harmless.
        assert_eq!(h.close(b), vec![]);
        assert_eq!(h.send(b, r#"{"type":"ping"}"#), vec![]);
    }

    #[test]
    fn refusing_a_connection_sends_the_error_closes_and_frees_the_seat() {
        let mut h = Harness::new();
        let (a, b) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r"}"#);
        h.send(b, r#"{"type":"join","room":"r"}"#);
        let mut out = Vec::new();
        h.registry.refuse(
            a,
            ErrorCode::RateLimited,
            "slow down".into(),
            h.now,
            &mut out,
        );
        assert_eq!(error_code(&out), Some(ErrorCode::RateLimited));
        assert_eq!(closes(&out), Some(1008));
        assert!(out.contains(&send(b, ServerMessage::PeerLeft { id: h.id(a) })));
    }

    fn resume_json(token: &str) -> String {
        format!(r#"{{"type":"join","room":"r","role":"caller","resume":"{token}"}}"#)
    }

    #[test]
    fn a_resumed_seat_replaces_its_ghost_and_the_other_peer_hears_nothing() {
        let mut h = Harness::new();
        let (a, b, a2) = (h.connect(1), h.connect(2), h.connect(3));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        let token = h.tokens[&a].clone();
        assert_eq!(token.len(), 32, "128 bits in hex");
        // The caller comes back on a new connection; its old one still looks open.
        let out = h.send(a2, &resume_json(&token));
        assert_eq!(
            out,
            vec![
                Action::Close {
                    conn: a,
                    code: REPLACED_CLOSE_CODE,
                    reason: "replaced"
                },
                send(
                    a2,
                    ServerMessage::Joined {
                        room: "r".into(),
                        id: h.id(a),
                        role: Role::Caller,
                        peers: vec![h.id(b)],
                        resume: Some(TOKEN.into()),
                        resumed: true,
                        ice_servers: Vec::new(),
                    }
                ),
            ]
        );
        assert_eq!(h.tokens[&a2], token, "the same token keeps the seat");
        // The ghost's close is no news to the callee.
        assert!(h.close(a).is_empty());
        // Messages flow both ways with the caller's old id.
        let out = h.send(a2, r#"{"type":"offer","sdp":"x"}"#);
        assert_eq!(
            out,
            vec![send(
                b,
                ServerMessage::Offer {
                    sdp: "x".into(),
                    from: h.id(a)
                }
            )]
        );
        assert_eq!(h.send(b, r#"{"type":"bye"}"#).len(), 2);
    }

    #[test]
    fn a_seat_lost_a_moment_ago_comes_back_with_its_token_and_the_other_is_told() {
        let mut h = Harness::new();
        let (a, b, a2) = (h.connect(1), h.connect(2), h.connect(3));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        let token = h.tokens[&a].clone();
        assert_eq!(
            h.close(a),
            vec![send(b, ServerMessage::PeerLeft { id: h.id(a) })]
        );
        h.now += RESUME_GRACE - Duration::from_secs(1);
        let out = h.send(a2, &resume_json(&token));
        assert!(out.contains(&send(
            b,
            ServerMessage::PeerJoined {
                id: h.id(a),
                role: Role::Caller
            }
        )));
        assert!(matches!(
            &out[0],
            Action::Send { message: ServerMessage::Joined { resumed: true, id, .. }, .. } if *id == h.id(a)
        ));
    }

    #[test]
    fn expired_unknown_and_hung_up_tokens_are_plain_joins() {
        let mut h = Harness::new();
        let (a, a2) = (h.connect(1), h.connect(2));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        let token = h.tokens[&a].clone();
        h.close(a);
        h.now += RESUME_GRACE;
        let plain = |out: &[Action], id: &PeerId| {
            matches!(
                &out[0],
                Action::Send { message: ServerMessage::Joined { resumed: false, id: got, .. }, .. } if got == id
            )
        };
        let out = h.send(a2, &resume_json(&token));
        assert!(plain(&out, &h.id(a2)), "expired: {out:?}");

        let a3 = h.connect(3);
        let out = h.send(a3, &resume_json("00000000000000000000000000000000"));
        assert_eq!(
            error_code(&out),
            Some(ErrorCode::RoleTaken),
            "unknown: a plain join"
        );

        // A seat given up with `bye` cannot be taken back.
        let mut h = Harness::new();
        let (a, b, a2) = (h.connect(1), h.connect(2), h.connect(3));
        h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
        h.send(b, r#"{"type":"join","room":"r","role":"callee"}"#);
        let token = h.tokens[&a].clone();
        h.send(a, r#"{"type":"bye"}"#);
        let out = h.send(a2, &resume_json(&token));
        assert!(plain(&out, &h.id(a2)), "after bye: {out:?}");
    }

    #[test]
    fn peer_ids_are_distinct() {
        let mut registry = RoomRegistry::new(42);
        let ids: std::collections::HashSet<PeerId> =
            (0..10_000).map(|n| registry.connect(ConnId(n))).collect();
        assert_eq!(ids.len(), 10_000);
    }

    mod properties {
        use std::collections::HashSet;

        use proptest::prelude::*;

        use super::*;

        /// Something that happens to the server: a client's message, a
        /// connection opening or going, the server closing one it was told
        /// to close, time passing. Connections are picked by index among
        /// those open (`gone`: among those already gone, whose messages
        /// can still race with their close).
        #[derive(Debug, Clone)]
        enum Step {
            Connect,
            Join {
                conn: usize,
                room: usize,
                role: usize,
                /// A token some `joined` handed out, or one nobody did.
                resume: Option<Option<usize>>,
            },
            Relay {
                conn: usize,
                kind: usize,
            },
            Ping {
                conn: usize,
            },
            Bad {
                conn: usize,
            },
            Refuse {
                conn: usize,
            },
            Disconnect {
                conn: usize,
            },
            /// The server carries out a `Close` it was told to do.
            Close {
                which: usize,
            },
            MessageFromGone {
                conn: usize,
                kind: usize,
            },
            Wait {
                secs: u64,
            },
        }

        fn step() -> impl Strategy<Value = Step> {
            let conn = 0usize..8;
            prop_oneof![
                3 => Just(Step::Connect),
                6 => (
                    conn.clone(),
                    0usize..4,
                    0usize..4,
                    prop::option::of(prop::option::weighted(0.9, 0usize..16))
                )
                    .prop_map(|(conn, room, role, resume)| Step::Join { conn, room, role, resume }),
                4 => (conn.clone(), 0usize..4).prop_map(|(conn, kind)| Step::Relay { conn, kind }),
                1 => conn.clone().prop_map(|conn| Step::Ping { conn }),
                1 => conn.clone().prop_map(|conn| Step::Bad { conn }),
                1 => conn.clone().prop_map(|conn| Step::Refuse { conn }),
                3 => conn.clone().prop_map(|conn| Step::Disconnect { conn }),
                2 => (0usize..8).prop_map(|which| Step::Close { which }),
                1 => (conn, 0usize..5).prop_map(|(conn, kind)| Step::MessageFromGone { conn, kind }),
                2 => prop_oneof![0u64..5, 30u64..90].prop_map(|secs| Step::Wait { secs }),
            ]
        }

        const ROOMS: [&str; 4] = ["kitchen", "garden", "kitchen", "no spaces allowed!"];

        fn relay_json(kind: usize) -> &'static str {
            match kind % 5 {
                0 => r#"{"type":"offer","sdp":"v=0 o"}"#,
                1 => r#"{"type":"answer","sdp":"v=0 a"}"#,
                2 => r#"{"type":"candidate","candidate":{"candidate":"candidate:x","sdpMid":"0"}}"#,
                3 => r#"{"type":"bye"}"#,
                _ => r#"{"type":"join","room":"kitchen"}"#,
            }
        }

        /// The server's side of the registry: which connections it holds
        /// open, and the closes it was asked for and has not yet done.
        struct Server {
            registry: RoomRegistry,
            open: Vec<ConnId>,
            gone: Vec<ConnId>,
            to_close: Vec<ConnId>,
            tokens: Vec<String>,
            next_conn: u64,
            now: Instant,
            /// When the registry last had reason to expire tickets: a join
            /// of a connection not yet in a room, or a connection ending.
            looked: Option<Instant>,
        }

        impl Server {
            fn pick(&self, i: usize) -> Option<ConnId> {
                (!self.open.is_empty()).then(|| self.open[i % self.open.len()])
            }

            fn message(&mut self, conn: ConnId, json: &str, out: &mut Vec<Action>) {
                let message = ClientMessage::parse(json).expect("valid message");
                self.registry.handle(conn, message, self.now, out);
            }

            fn gone(&mut self, conn: ConnId) {
                self.open.retain(|c| *c != conn);
                self.to_close.retain(|c| *c != conn);
                self.gone.push(conn);
            }

            /// Runs one step; the actions it gave, and the connection it ended (if any).
            fn run(&mut self, step: &Step) -> (Vec<Action>, Option<ConnId>) {
                let mut out = Vec::new();
                let mut ended = None;
                match *step {
                    Step::Connect => {
                        self.next_conn += 1;
                        let conn = ConnId(self.next_conn);
                        self.registry.connect(conn);
                        self.open.push(conn);
                    }
                    Step::Join {
                        conn,
                        room,
                        role,
                        ref resume,
                    } => {
                        let Some(conn) = self.pick(conn) else {
                            return (out, None);
                        };
                        let seated = self.registry.connections.get(&conn);
                        if seated.is_some_and(|c| c.seat == Seat::Lobby) {
                            self.looked = Some(self.now);
                        }
                        let role = [
                            "",
                            r#","role":"auto""#,
                            r#","role":"caller""#,
                            r#","role":"callee""#,
                        ][role];
                        let resume = match resume {
                            None => String::new(),
                            Some(Some(i)) if !self.tokens.is_empty() => {
                                format!(r#","resume":"{}""#, self.tokens[i % self.tokens.len()])
                            }
                            Some(_) => r#","resume":"0123456789abcdef0123456789abcdef""#.into(),
                        };
                        let json = format!(
                            r#"{{"type":"join","room":{}{role}{resume}}}"#,
                            serde_json::json!(ROOMS[room])
                        );
                        self.message(conn, &json, &mut out);
                    }
                    Step::Relay { conn, kind } => {
                        if let Some(conn) = self.pick(conn) {
                            self.message(conn, relay_json(kind), &mut out);
                        }
                    }
                    Step::Ping { conn } => {
                        if let Some(conn) = self.pick(conn) {
                            self.message(conn, r#"{"type":"ping"}"#, &mut out);
                        }
                    }
                    Step::Bad { conn } => {
                        if let Some(conn) = self.pick(conn) {
                            self.registry.bad_message(conn, "not json".into(), &mut out);
                        }
                    }
                    Step::Refuse { conn } => {
                        if let Some(conn) = self.pick(conn) {
                            let code = ErrorCode::RateLimited;
                            self.registry.refuse(
                                conn,
                                code,
                                "slow down".into(),
                                self.now,
                                &mut out,
                            );
                            self.gone(conn);
                            ended = Some(conn);
                        }
                    }
                    Step::Disconnect { conn } => {
                        if let Some(conn) = self.pick(conn) {
                            self.registry.disconnect(conn, self.now, &mut out);
                            self.gone(conn);
                            ended = Some(conn);
                        }
                    }
                    Step::Close { which } => {
                        if !self.to_close.is_empty() {
                            let conn = self.to_close[which % self.to_close.len()];
                            self.registry.disconnect(conn, self.now, &mut out);
                            self.gone(conn);
                            ended = Some(conn);
                        }
                    }
                    Step::MessageFromGone { conn, kind } => {
                        if !self.gone.is_empty() {
                            let conn = self.gone[conn % self.gone.len()];
                            self.message(conn, relay_json(kind), &mut out);
                            // A message racing its connection's close does nothing.
                            assert!(out.is_empty(), "{out:?}");
                        }
                    }
                    Step::Wait { secs } => self.now += Duration::from_secs(secs),
                }
                for action in &out {
                    match action {
                        Action::Send {
                            message:
                                ServerMessage::Joined {
                                    resume: Some(token),
                                    ..
                                },
                            ..
                        } => {
                            self.tokens.push(token.clone());
                        }
                        Action::Close { conn, .. }
                            if self.open.contains(conn) && !self.to_close.contains(conn) =>
                        {
                            self.to_close.push(*conn);
                        }
                        _ => {}
                    }
                }
                if ended.is_some() {
                    self.looked = Some(self.now);
                }
                (out, ended)
            }

            /// What must hold between any two steps.
            fn check(
                &self,
                step: &Step,
                out: &[Action],
                ended: Option<ConnId>,
            ) -> Result<(), TestCaseError> {
                let registry = &self.registry;
                let open: HashSet<ConnId> = self.open.iter().copied().collect();
                let known: HashSet<ConnId> = registry.connections.keys().copied().collect();
                prop_assert_eq!(
                    &known,
                    &open,
                    "the registry's connections are the open ones"
                );
                for action in out {
                    let to = match action {
                        Action::Send { to, .. } => *to,
                        Action::Close { conn, .. } => *conn,
                    };
                    prop_assert!(
                        open.contains(&to) || Some(to) == ended,
                        "{:?} addresses {:?}, which is not open",
                        step,
                        to
                    );
                }
                for (room, members) in &registry.rooms {
                    prop_assert!(
                        (1..=2).contains(&members.len()),
                        "{} has {} members",
                        room,
                        members.len()
                    );
                    if let [a, b] = members.as_slice() {
                        prop_assert!(a.role != b.role && a.conn != b.conn, "{:?}", members);
                    }
                    for member in members {
                        let connection = registry.connections.get(&member.conn);
                        prop_assert!(connection.is_some(), "a seat held by a gone connection");
                        let seat = connection.map(|c| &c.seat);
                        prop_assert_eq!(
                            seat,
                            Some(&Seat::InRoom {
                                room: room.clone(),
                                role: member.role
                            })
                        );
                    }
                }
                for (conn, connection) in &registry.connections {
                    if let Seat::InRoom { room, .. } = &connection.seat {
                        let seated = registry
                            .rooms
                            .get(room)
                            .is_some_and(|m| m.iter().any(|m| m.conn == *conn));
                        prop_assert!(seated, "{:?} thinks it is in {} but is not", conn, room);
                    }
                    if let Some(token) = &connection.token {
                        let holder = registry.tickets.get(token).and_then(|t| t.holder);
                        prop_assert_eq!(holder, Some(*conn));
                    }
                }
                for (token, ticket) in &registry.tickets {
                    match ticket.holder {
                        Some(holder) => {
                            let connection = registry.connections.get(&holder);
                            prop_assert!(
                                connection.is_some(),
                                "a ticket held by a gone connection"
                            );
                            prop_assert_eq!(connection.and_then(|c| c.token.as_ref()), Some(token));
                            prop_assert!(ticket.released_at.is_none());
                        }
                        None => {
                            // A resumable seat: released, and gone once its grace
                            // is over and the registry next looks (a join or a close).
                            let released = ticket.released_at;
                            prop_assert!(released.is_some(), "a ticket neither held nor released");
                            if let (Some(at), Some(looked)) = (released, self.looked) {
                                let age = looked.saturating_duration_since(at);
                                prop_assert!(age < RESUME_GRACE, "an expired ticket kept");
                            }
                        }
                    }
                }
                Ok(())
            }
        }

        proptest! {
            // 256 cases, or `PROPTEST_CASES` (docs/fuzzing.md).

            /// Any interleaving of connections, joins (fresh or resumed),
            /// relays, hang-ups, refusals, closes and time: never a panic,
            /// never more than two in a room or two of one role, every
            /// action addressed to an open connection (or the one just
            /// ended), no seat held by a connection that is gone except as a
            /// resumable ticket, and those expire after their grace.
            #[test]
            fn any_sequence_of_events_keeps_the_rooms_consistent(
                steps in proptest::collection::vec(step(), 1..150),
            ) {
                let mut server = Server {
                    registry: RoomRegistry::new(7),
                    open: Vec::new(),
                    gone: Vec::new(),
                    to_close: Vec::new(),
                    tokens: Vec::new(),
                    next_conn: 0,
                    now: Instant::now(),
                    looked: None,
                };
                for step in &steps {
                    let (out, ended) = server.run(step);
                    server.check(step, &out, ended)?;
                }
                // Everyone leaves; after the grace nothing is left.
                for conn in server.open.clone() {
                    let mut out = Vec::new();
                    server.registry.disconnect(conn, server.now, &mut out);
                }
                let mut out = Vec::new();
                server.now += RESUME_GRACE;
                server.registry.connect(ConnId(u64::MAX));
                server.registry.disconnect(ConnId(u64::MAX), server.now, &mut out);
                prop_assert_eq!(server.registry.room_count(), 0);
                prop_assert_eq!(server.registry.connection_count(), 0);
                prop_assert!(server.registry.tickets.is_empty());
            }
        }
    }
}
