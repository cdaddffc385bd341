//! The room rules, each a worked example. Every rule test runs twice: over
//! the in-memory store and over Redis (a real `redis-server` started for the
//! test on a free port), so both stores keep the rules the same.

use std::cell::Cell;
use std::sync::Arc;

use super::*;
use crate::hub::ServerStore;
use crate::protocol::IceCandidate;
use crate::redis_store::{RedisConfig, RedisStore};
use crate::room_store::MemoryStore;
use crate::test_redis::RedisServer;

/// What every `joined` shows as its resume token in these tests; the
/// real (random) ones are kept in [`Harness::tokens`].
const TOKEN: &str = "TOKEN";

/// The resume grace of these tests: short, because over Redis time really passes.
const GRACE: Duration = Duration::from_millis(600);

/// Which store the rule tests of this thread run over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    Redis,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Memory) };
}

/// Runs one rule test over `backend`.
fn over(backend: Backend, test: fn()) {
    BACKEND.with(|b| b.set(backend));
    test();
}

/// A registry and a way to feed it messages as JSON, the way the server does.
struct Harness {
    registry: RoomRegistry<ServerStore>,
    runtime: tokio::runtime::Runtime,
    ids: HashMap<ConnId, PeerId>,
    tokens: HashMap<ConnId, String>,
    now: Instant,
    /// Dropped (and stopped) after the registry.
    _redis: Option<RedisServer>,
}

impl Harness {
    fn new() -> Harness {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let (store, redis) = match BACKEND.with(Cell::get) {
            Backend::Memory => (ServerStore::Memory(MemoryStore::new(GRACE)), None),
            Backend::Redis => {
                let redis = RedisServer::start();
                let config = RedisConfig {
                    resume_grace: GRACE,
                    ..RedisConfig::new(redis.url())
                };
                let store = runtime
                    .block_on(RedisStore::connect(config, InstanceId(1)))
                    .expect("the test's redis-server answers");
                (ServerStore::Redis(Box::new(store)), Some(redis))
            }
        };
        Harness {
            registry: RoomRegistry::new(store, InstanceId(1), 7),
            runtime,
            ids: HashMap::new(),
            tokens: HashMap::new(),
            now: Instant::now(),
            _redis: redis,
        }
    }

    /// Time passes: the clock the registry is given, and (over Redis, whose
    /// expiry keeps its own time) the real one.
    fn wait(&mut self, time: Duration) {
        self.now += time;
        if matches!(self.registry.store(), ServerStore::Redis(_)) {
            std::thread::sleep(time);
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
            Ok(message) => {
                self.runtime
                    .block_on(self.registry.handle(conn, message, self.now, &mut out));
            }
            Err(reason) => self.registry.bad_message(conn, reason, &mut out),
        }
        self.note_tokens(&mut out);
        out
    }

    fn close(&mut self, conn: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        self.runtime
            .block_on(self.registry.disconnect(conn, self.now, &mut out));
        out
    }

    fn refuse(&mut self, conn: ConnId, code: ErrorCode) -> Vec<Action> {
        let mut out = Vec::new();
        self.runtime.block_on(self.registry.refuse(
            conn,
            code,
            "slow down".into(),
            self.now,
            &mut out,
        ));
        out
    }

    /// Rooms the store holds (over Redis: of the rooms these tests use).
    fn rooms_in_store(&self) -> usize {
        let rooms = ["r", "s", "other", "elsewhere"].map(|r| RoomName::parse(r).expect("valid"));
        let store = self.registry.store();
        rooms
            .iter()
            .filter(|room| {
                let seats = self.runtime.block_on(store.seats(room, self.now));
                !seats.expect("the store answers").is_empty()
            })
            .count()
    }
}

/// The local connection an action is for (one instance forwards nothing).
fn addressee(action: &Action) -> ConnId {
    match action {
        Action::Send { to, .. } | Action::Close { conn: to, .. } => *to,
        Action::Forward { .. } | Action::ForwardPartner { .. } | Action::ForwardClose { .. } => {
            panic!("one instance forwards nothing: {action:?}")
        }
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

fn a_third_peer_gets_room_full_and_is_closed() {
    let mut h = Harness::new();
    let (a, b, c) = (h.connect(1), h.connect(2), h.connect(3));
    h.send(a, r#"{"type":"join","room":"r"}"#);
    h.send(b, r#"{"type":"join","room":"r"}"#);
    let out = h.send(c, r#"{"type":"join","room":"r","role":"caller"}"#);
    assert_eq!(error_code(&out), Some(ErrorCode::RoomFull));
    assert_eq!(closes(&out), Some(1000));
    assert!(out.iter().all(|a| addressee(a) == c));
}

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
            .map(addressee)
            .collect::<Vec<_>>(),
        vec![x],
        "a message from another room reaches no one else"
    );
}

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

fn relay_while_alone_is_no_peer_and_dropped() {
    let mut h = Harness::new();
    let a = h.connect(1);
    h.send(a, r#"{"type":"join","room":"r"}"#);
    let out = h.send(a, r#"{"type":"offer","sdp":"x"}"#);
    assert_eq!(error_code(&out), Some(ErrorCode::NoPeer));
    assert_eq!(out.len(), 1);
}

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
    assert_eq!(h.rooms_in_store(), 0);
    assert_eq!(h.registry.connection_count(), 0);
    // Closing twice, or a message after close, is harmless.
    assert_eq!(h.close(b), vec![]);
    assert_eq!(h.send(b, r#"{"type":"ping"}"#), vec![]);
}

fn refusing_a_connection_sends_the_error_closes_and_frees_the_seat() {
    let mut h = Harness::new();
    let (a, b) = (h.connect(1), h.connect(2));
    h.send(a, r#"{"type":"join","room":"r"}"#);
    h.send(b, r#"{"type":"join","room":"r"}"#);
    let out = h.refuse(a, ErrorCode::RateLimited);
    assert_eq!(error_code(&out), Some(ErrorCode::RateLimited));
    assert_eq!(closes(&out), Some(1008));
    assert!(out.contains(&send(b, ServerMessage::PeerLeft { id: h.id(a) })));
}

fn resume_json(token: &str) -> String {
    format!(r#"{{"type":"join","room":"r","role":"caller","resume":"{token}"}}"#)
}

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
    h.wait(GRACE - Duration::from_millis(300));
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

fn expired_unknown_and_hung_up_tokens_are_plain_joins() {
    let mut h = Harness::new();
    let (a, a2) = (h.connect(1), h.connect(2));
    h.send(a, r#"{"type":"join","room":"r","role":"caller"}"#);
    let token = h.tokens[&a].clone();
    h.close(a);
    h.wait(GRACE + Duration::from_millis(50));
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
    let registry = RoomRegistry::new(MemoryStore::default(), InstanceId(3), 42);
    let ids: std::collections::HashSet<PeerId> =
        (0..10_000).map(|n| registry.connect(ConnId(n))).collect();
    assert_eq!(ids.len(), 10_000);
}

/// Two instances on one Redis: their registries, each over its own connection.
fn two_instances(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
) -> [Arc<RoomRegistry<RedisStore>>; 2] {
    [1, 2].map(|n| {
        let config = RedisConfig::new(redis.url());
        let store = runtime
            .block_on(RedisStore::connect(config, InstanceId(n)))
            .expect("the test's redis-server answers");
        Arc::new(RoomRegistry::new(store, InstanceId(n), n))
    })
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `json` from connection `conn`, handled by `registry` now: its actions.
fn handled(
    runtime: &tokio::runtime::Runtime,
    registry: &RoomRegistry<RedisStore>,
    conn: u64,
    json: &str,
) -> Vec<Action> {
    let mut out = Vec::new();
    let message = ClientMessage::parse(json).expect("valid");
    runtime.block_on(registry.handle(ConnId(conn), message, Instant::now(), &mut out));
    out
}

fn join_json(role: &str) -> String {
    format!(r#"{{"type":"join","room":"r","role":"{role}"}}"#)
}

#[test]
fn joins_racing_on_two_instances_seat_exactly_two_and_refuse_the_rest() {
    let redis = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let instances = two_instances(&runtime, &redis);
    for round in 0..20u64 {
        let room = format!("race{round}");
        let joins: Vec<_> = (0..6u64)
            .map(|i| {
                let registry = instances[usize::from(i % 2 == 1)].clone();
                let conn = ConnId(round * 10 + i);
                registry.connect(conn);
                let role = ["auto", "caller", "callee"][usize::try_from(i % 3).expect("small")];
                let json = format!(r#"{{"type":"join","room":"{room}","role":"{role}"}}"#);
                let message = ClientMessage::parse(&json).expect("valid");
                runtime.spawn(async move {
                    let mut out = Vec::new();
                    registry
                        .handle(conn, message, Instant::now(), &mut out)
                        .await;
                    (conn, out)
                })
            })
            .collect();
        let mut seated = Vec::new();
        for join in joins {
            let (conn, out) = runtime.block_on(join).expect("the join task ends");
            match out.first() {
                Some(Action::Send {
                    message: ServerMessage::Joined { role, .. },
                    ..
                }) => {
                    seated.push((conn, *role));
                }
                _ => assert!(
                    matches!(
                        error_code(&out),
                        Some(ErrorCode::RoomFull | ErrorCode::RoleTaken)
                    ),
                    "{out:?}"
                ),
            }
        }
        assert_eq!(seated.len(), 2, "round {round}: {seated:?}");
        assert_ne!(seated[0].1, seated[1].1);
        let name = RoomName::parse(&room).expect("valid");
        let seats = runtime
            .block_on(instances[0].store().seats(&name, Instant::now()))
            .expect("redis answers");
        let mut holders: Vec<ConnId> = seats.iter().map(|s| s.holder.conn).collect();
        let mut expected: Vec<ConnId> = seated.iter().map(|(conn, _)| *conn).collect();
        holders.sort();
        expected.sort();
        assert_eq!(holders, expected, "the store seats exactly the two told so");
    }
}

#[test]
fn a_peer_on_another_instance_is_reached_through_it_and_resumes_there() {
    let redis = RedisServer::start();
    let runtime = current_thread_runtime();
    let [one, two] = two_instances(&runtime, &redis);
    let run = |registry: &RoomRegistry<RedisStore>, conn: u64, json: &str| {
        handled(&runtime, registry, conn, json)
    };
    let caller = one.connect(ConnId(1));
    let callee = two.connect(ConnId(1));
    run(&one, 1, &join_json("caller"));
    let out = run(&two, 1, &join_json("callee"));
    let on_one = Holder {
        instance: InstanceId(1),
        conn: ConnId(1),
    };
    let on_two = Holder {
        instance: InstanceId(2),
        conn: ConnId(1),
    };
    // The caller's instance learns where its partner is before it hears of it.
    assert_eq!(
        out[1..],
        [
            Action::ForwardPartner {
                to: on_one,
                partner: Some(on_two)
            },
            Action::Forward {
                to: on_one,
                message: ServerMessage::PeerJoined {
                    id: callee.clone(),
                    role: Role::Callee
                }
            }
        ]
    );
    // What instance one's bus does with that envelope.
    one.set_partner(ConnId(1), Some(on_two));
    let Action::Send {
        message: ServerMessage::Joined {
            resume: Some(token),
            ..
        },
        ..
    } = &out[0]
    else {
        panic!("{out:?}");
    };
    let out = run(&one, 1, r#"{"type":"offer","sdp":"v=0 o"}"#);
    assert_eq!(
        out,
        vec![Action::Forward {
            to: on_two,
            message: ServerMessage::Offer {
                sdp: "v=0 o".into(),
                from: caller.clone()
            }
        }]
    );
    // The callee's instance is lost to it; it comes back through the other one.
    one.connect(ConnId(2));
    let out = run(
        &one,
        2,
        &format!(r#"{{"type":"join","room":"r","role":"callee","resume":"{token}"}}"#),
    );
    assert_eq!(
        out[0],
        Action::ForwardClose {
            to: on_two,
            code: REPLACED_CLOSE_CODE
        }
    );
    assert!(
        matches!(&out[1], Action::Send { to: ConnId(2), message: ServerMessage::Joined { resumed: true, id, .. } } if *id == callee),
        "{out:?}"
    );
    assert_eq!(out.len(), 2, "the caller is told nothing");
    // Instance two closes the old connection (its bus marks it replaced
    // first); its messages and its close change nothing now.
    two.replaced(ConnId(1));
    let out = run(&two, 1, r#"{"type":"answer","sdp":"late"}"#);
    assert_eq!(error_code(&out), Some(ErrorCode::NotJoined));
    let mut out = Vec::new();
    runtime.block_on(two.disconnect(ConnId(1), Instant::now(), &mut out));
    assert!(out.is_empty(), "{out:?}");
    // Both peers now sit on instance one and talk locally.
    assert_eq!(
        run(&one, 2, r#"{"type":"answer","sdp":"v=0 a"}"#),
        vec![send(
            ConnId(1),
            ServerMessage::Answer {
                sdp: "v=0 a".into(),
                from: callee
            }
        )]
    );
}

#[test]
fn when_an_instance_dies_its_seats_are_released_and_their_partners_told() {
    let redis = RedisServer::start();
    let runtime = current_thread_runtime();
    let [one, two] = two_instances(&runtime, &redis);
    let run = |registry: &RoomRegistry<RedisStore>, conn: u64, json: &str| {
        handled(&runtime, registry, conn, json)
    };
    one.connect(ConnId(1));
    let callee = two.connect(ConnId(1));
    run(&one, 1, &join_json("caller"));
    let out = run(&two, 1, &join_json("callee"));
    let Action::Send {
        message: ServerMessage::Joined {
            resume: Some(token),
            ..
        },
        ..
    } = &out[0]
    else {
        panic!("{out:?}");
    };
    one.set_partner(
        ConnId(1),
        Some(Holder {
            instance: InstanceId(2),
            conn: ConnId(1),
        }),
    );
    // While instance two lives, there is nothing to reap.
    assert!(
        runtime
            .block_on(one.store().reap())
            .expect("redis answers")
            .is_empty()
    );

    // Instance two dies: its lease runs out (here: is dropped at once).
    runtime
        .block_on(two.store().drop_lease())
        .expect("redis answers");
    let lost = runtime.block_on(one.store().reap()).expect("redis answers");
    let mut out = Vec::new();
    one.peers_lost(&lost, &mut out);
    assert_eq!(
        out,
        [send(
            ConnId(1),
            ServerMessage::PeerLeft { id: callee.clone() }
        )]
    );
    assert_eq!(
        error_code(&run(&one, 1, r#"{"type":"offer","sdp":"x"}"#)),
        Some(ErrorCode::NoPeer),
        "the caller is alone now"
    );
    assert!(
        runtime
            .block_on(one.store().reap())
            .expect("redis answers")
            .is_empty(),
        "once"
    );
    // The callee comes back through instance one with its token, and is announced.
    one.connect(ConnId(2));
    let out = run(
        &one,
        2,
        &format!(r#"{{"type":"join","room":"r","role":"callee","resume":"{token}"}}"#),
    );
    assert!(
        matches!(&out[0], Action::Send { message: ServerMessage::Joined { resumed: true, id, .. }, .. } if *id == callee),
        "{out:?}"
    );
    assert_eq!(
        out[1],
        send(
            ConnId(1),
            ServerMessage::PeerJoined {
                id: callee,
                role: Role::Callee
            }
        )
    );
}

#[test]
fn a_seat_lost_while_redis_was_away_is_freed_when_it_answers_again() {
    let dir = std::env::temp_dir().join(format!("duet-redis-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let mut redis = RedisServer::start_keeping_data(&dir);
    let runtime = current_thread_runtime();
    let [one, two] = two_instances(&runtime, &redis);
    let run =
        |registry: &RoomRegistry<RedisStore>, json: &str| handled(&runtime, registry, 1, json);
    let caller = one.connect(ConnId(1));
    two.connect(ConnId(1));
    run(&one, &join_json("caller"));
    run(&two, &join_json("callee"));
    let on_two = Holder {
        instance: InstanceId(2),
        conn: ConnId(1),
    };

    redis.kill();
    // The caller's connection ends while Redis is away: its seat cannot be
    // freed, and nobody is told anything yet.
    let mut out = Vec::new();
    runtime.block_on(one.disconnect(ConnId(1), Instant::now(), &mut out));
    assert!(out.is_empty(), "{out:?}");
    assert!(!runtime.block_on(one.retry_releases(Instant::now(), &mut out)));
    assert!(out.is_empty(), "{out:?}");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let mut out = Vec::new();
        if runtime.block_on(one.retry_releases(Instant::now(), &mut out)) {
            break out;
        }
        assert!(Instant::now() < deadline, "the seat was never freed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        out,
        [
            Action::ForwardPartner {
                to: on_two,
                partner: None
            },
            Action::Forward {
                to: on_two,
                message: ServerMessage::PeerLeft { id: caller }
            }
        ]
    );
    // The caller's seat is free again, the callee's still taken: nothing half-joined.
    one.connect(ConnId(2));
    let mut out = Vec::new();
    let join = ClientMessage::parse(&join_json("caller")).expect("valid");
    runtime.block_on(one.handle(ConnId(2), join, Instant::now(), &mut out));
    assert!(
        matches!(&out[0], Action::Send { message: ServerMessage::Joined { peers, .. }, .. } if peers.len() == 1),
        "{out:?}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

mod properties {
    use std::collections::HashSet;

    use futures_util::FutureExt as _;
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

    /// The memory store never waits: each step is done when it returns.
    fn ready<T>(step: impl std::future::Future<Output = T>) -> T {
        step.now_or_never()
            .expect("the memory store answers at once")
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
        registry: RoomRegistry<MemoryStore>,
        open: Vec<ConnId>,
        gone: Vec<ConnId>,
        to_close: Vec<ConnId>,
        tokens: Vec<String>,
        next_conn: u64,
        now: Instant,
    }

    impl Server {
        fn pick(&self, i: usize) -> Option<ConnId> {
            (!self.open.is_empty()).then(|| self.open[i % self.open.len()])
        }

        fn message(&mut self, conn: ConnId, json: &str, out: &mut Vec<Action>) {
            let message = ClientMessage::parse(json).expect("valid message");
            ready(self.registry.handle(conn, message, self.now, out));
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
                        ready(self.registry.refuse(
                            conn,
                            code,
                            "slow down".into(),
                            self.now,
                            &mut out,
                        ));
                        self.gone(conn);
                        ended = Some(conn);
                    }
                }
                Step::Disconnect { conn } => {
                    if let Some(conn) = self.pick(conn) {
                        ready(self.registry.disconnect(conn, self.now, &mut out));
                        self.gone(conn);
                        ended = Some(conn);
                    }
                }
                Step::Close { which } => {
                    if !self.to_close.is_empty() {
                        let conn = self.to_close[which % self.to_close.len()];
                        ready(self.registry.disconnect(conn, self.now, &mut out));
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
            let connections = registry.connections();
            let open: HashSet<ConnId> = self.open.iter().copied().collect();
            let known: HashSet<ConnId> = connections.keys().copied().collect();
            prop_assert_eq!(
                &known,
                &open,
                "the registry's connections are the open ones"
            );
            for action in out {
                let to = match action {
                    Action::Send { to, .. } | Action::Close { conn: to, .. } => *to,
                    Action::Forward { .. }
                    | Action::ForwardPartner { .. }
                    | Action::ForwardClose { .. } => {
                        return Err(TestCaseError::fail("one instance forwards nothing"));
                    }
                };
                prop_assert!(
                    open.contains(&to) || Some(to) == ended,
                    "{:?} addresses {:?}, which is not open",
                    step,
                    to
                );
            }
            let rooms = registry.store().rooms();
            for (room, seats) in &rooms {
                prop_assert!(
                    (1..=2).contains(&seats.len()),
                    "{} has {} seats",
                    room,
                    seats.len()
                );
                if let [a, b] = seats.as_slice() {
                    prop_assert!(a.role != b.role && a.holder != b.holder, "{:?}", seats);
                }
                for seat in seats {
                    let connection = connections.get(&seat.holder.conn);
                    prop_assert!(connection.is_some(), "a seat held by a gone connection");
                    prop_assert_eq!(
                        connection.and_then(|c| c.seat.as_ref()),
                        Some(&HeldSeat {
                            room: room.clone(),
                            role: seat.role,
                            token: seat.token.clone(),
                        })
                    );
                }
            }
            for (conn, connection) in connections.iter() {
                if let Some(held) = &connection.seat {
                    let seated = rooms.iter().any(|(room, seats)| {
                        *room == held.room
                            && seats
                                .iter()
                                .any(|s| s.holder.conn == *conn && s.token == held.token)
                    });
                    prop_assert!(
                        seated,
                        "{:?} thinks it is in {} but is not",
                        conn,
                        held.room
                    );
                    let partner = rooms
                        .iter()
                        .filter(|(room, _)| *room == held.room)
                        .flat_map(|(_, seats)| seats)
                        .find(|s| s.token != held.token)
                        .map(|s| s.holder);
                    prop_assert_eq!(connection.partner, partner, "{:?}'s partner", conn);
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
                registry: RoomRegistry::new(MemoryStore::new(RESUME_GRACE), InstanceId(1), 7),
                open: Vec::new(),
                gone: Vec::new(),
                to_close: Vec::new(),
                tokens: Vec::new(),
                next_conn: 0,
                now: Instant::now(),
            };
            for step in &steps {
                let (out, ended) = server.run(step);
                server.check(step, &out, ended)?;
            }
            // Everyone leaves; after the grace nothing is left.
            for conn in server.open.clone() {
                let mut out = Vec::new();
                ready(server.registry.disconnect(conn, server.now, &mut out));
            }
            let mut out = Vec::new();
            server.now += RESUME_GRACE;
            server.registry.connect(ConnId(u64::MAX));
            ready(server.registry.disconnect(ConnId(u64::MAX), server.now, &mut out));
            prop_assert_eq!(server.registry.room_count(), 0);
            prop_assert_eq!(server.registry.store().room_count(), 0);
            prop_assert_eq!(server.registry.connection_count(), 0);
            prop_assert_eq!(server.registry.store().released_count(server.now), 0);
        }
    }
}

/// Every rule test, over each store.
macro_rules! over_both_stores {
    ($($test:ident),* $(,)?) => {
        mod memory_store {
            $(#[test] fn $test() { super::over(super::Backend::Memory, super::$test) })*
        }
        mod redis_store {
            $(#[test] fn $test() { super::over(super::Backend::Redis, super::$test) })*
        }
    };
}

over_both_stores!(
    first_caller_then_callee_are_paired_and_told_about_each_other,
    auto_takes_callee_in_an_empty_room_and_the_free_seat_otherwise,
    a_third_peer_gets_room_full_and_is_closed,
    asking_for_a_held_role_gets_role_taken_and_is_closed,
    bad_room_names_are_refused_and_closed,
    relay_adds_from_and_goes_only_to_the_partner,
    relay_before_join_is_not_joined_and_keeps_the_connection,
    relay_while_alone_is_no_peer_and_dropped,
    second_join_is_already_joined_and_keeps_the_seat,
    bad_messages_keep_the_connection_and_do_not_count_as_join,
    ping_is_answered_before_and_after_join,
    bye_is_relayed_then_peer_left_and_the_seat_is_free_again,
    closing_tells_the_partner_and_empties_the_room,
    refusing_a_connection_sends_the_error_closes_and_frees_the_seat,
    a_resumed_seat_replaces_its_ghost_and_the_other_peer_hears_nothing,
    a_seat_lost_a_moment_ago_comes_back_with_its_token_and_the_other_is_told,
    expired_unknown_and_hung_up_tokens_are_plain_joins,
);
