//! State shared by every connection task: the room registry, the outboxes
//! its actions are queued on, the way to other instances (with Redis), the
//! admission budgets, the metrics, and the server's stop signals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AdmissionLimits, SharedAdmission};
use crate::log_text::excerpt;
use crate::metrics::{Gauges, Metrics};
use crate::origin::OriginPolicy;
use crate::outbox::{Outbox, OutboxLimits, Outgoing};
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};
use crate::redis_store::RedisStore;
use crate::relay_bus::Envelope;
use crate::room_store::{
    InstanceId, MemoryStore, ReleasedSeat, RoomChange, RoomStore, SeatRecord, StoreError,
};
use crate::rooms::{Action, ConnId, RoomRegistry};
use crate::server::ServerConfig;
use crate::turn::TurnConfig;

/// The store a server keeps its rooms in: its own memory, or Redis shared
/// with other instances.
#[derive(Debug)]
pub(crate) enum ServerStore {
    Memory(MemoryStore),
    Redis(Box<RedisStore>),
}

impl RoomStore for ServerStore {
    async fn seats(
        &self,
        room: &crate::protocol::RoomName,
        now: Instant,
    ) -> Result<Vec<SeatRecord>, StoreError> {
        match self {
            ServerStore::Memory(store) => store.seats(room, now).await,
            ServerStore::Redis(store) => store.seats(room, now).await,
        }
    }

    async fn change(&self, change: RoomChange<'_>, now: Instant) -> Result<bool, StoreError> {
        match self {
            ServerStore::Memory(store) => store.change(change, now).await,
            ServerStore::Redis(store) => store.change(change, now).await,
        }
    }

    async fn released(
        &self,
        token: &str,
        now: Instant,
    ) -> Result<Option<ReleasedSeat>, StoreError> {
        match self {
            ServerStore::Memory(store) => store.released(token, now).await,
            ServerStore::Redis(store) => store.released(token, now).await,
        }
    }
}

/// Seconds since the Unix epoch: TURN credentials expire by the wall clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// State shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Hub {
    /// The room rules; they lock what they need only briefly, never across an await.
    pub(crate) rooms: RoomRegistry<ServerStore>,
    /// The way into each connection task of this instance.
    outboxes: Mutex<HashMap<ConnId, Arc<Outbox>>>,
    outbox_limits: OutboxLimits,
    /// Credentials for these go into every `joined`.
    turn: Option<TurnConfig>,
    pub(crate) metrics: Metrics,
    pub(crate) config: ServerConfig,
    pub(crate) origins: OriginPolicy,
    pub(crate) admission: Arc<SharedAdmission>,
    pub(crate) next_conn: AtomicU64,
    pub(crate) live_connections: AtomicUsize,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled to drop every connection without a goodbye (tests of a crashed server).
    pub(crate) killed: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Hub {
    pub(crate) fn new(
        config: ServerConfig,
        origins: OriginPolicy,
        store: ServerStore,
        instance: InstanceId,
    ) -> Hub {
        Hub {
            rooms: RoomRegistry::new(store, instance, rand::random()),
            outboxes: Mutex::new(HashMap::new()),
            outbox_limits: OutboxLimits {
                messages: config.outbox_capacity,
                bytes: config.outbox_max_bytes,
            },
            turn: config.turn.clone(),
            metrics: Metrics::new(),
            admission: SharedAdmission::new(AdmissionLimits {
                max_pending: config.max_pending_connections,
                connections_per_address: config.max_connections_per_address,
                joins_per_address: config.joins_per_address,
            }),
            origins,
            config,
            next_conn: AtomicU64::new(1),
            live_connections: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            killed: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    fn outboxes(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<Outbox>>> {
        // Inserting or removing one entry cannot leave the map half-changed.
        self.outboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The Redis store, when rooms are shared.
    pub(crate) fn redis_store(&self) -> Option<&RedisStore> {
        match self.rooms.store() {
            ServerStore::Redis(store) => Some(store.as_ref()),
            ServerStore::Memory(_) => None,
        }
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.live_connections.load(Ordering::Relaxed)
    }

    /// A new connection: registered with the rooms, its outbox reachable.
    pub(crate) fn connect(&self, conn: ConnId, outbox: Arc<Outbox>) {
        let peer = self.rooms.connect(conn);
        self.outboxes().insert(conn, outbox);
        tracing::debug!(conn = conn.0, %peer, "connected");
    }

    /// The connection is gone: nothing more is queued for it, and it leaves its room.
    pub(crate) async fn disconnect(&self, conn: ConnId) {
        self.outboxes().remove(&conn);
        let mut actions = Vec::new();
        self.rooms
            .disconnect(conn, Instant::now(), &mut actions)
            .await;
        self.apply(actions).await;
    }

    /// A valid message from `conn`.
    pub(crate) async fn handle(&self, conn: ConnId, message: ClientMessage) {
        let mut actions = Vec::new();
        self.rooms
            .handle(conn, message, Instant::now(), &mut actions)
            .await;
        self.apply(actions).await;
    }

    /// A frame from `conn` that is not a message.
    pub(crate) async fn bad_message(&self, conn: ConnId, reason: String) {
        let mut actions = Vec::new();
        self.rooms.bad_message(conn, reason, &mut actions);
        self.apply(actions).await;
    }

    /// `conn` is refused with an error that closes it.
    pub(crate) async fn refuse(&self, conn: ConnId, code: ErrorCode, message: String) {
        let mut actions = Vec::new();
        self.rooms
            .refuse(conn, code, message, Instant::now(), &mut actions)
            .await;
        self.apply(actions).await;
    }

    /// Seats of connections lost while Redis was away are freed now that it answers.
    pub(crate) async fn retry_releases(&self) {
        let mut actions = Vec::new();
        self.rooms
            .retry_releases(Instant::now(), &mut actions)
            .await;
        self.apply(actions).await;
    }

    /// Releases the seats of instances that died, telling their partners.
    pub(crate) async fn reap(&self) -> Result<(), StoreError> {
        let Some(store) = self.redis_store() else {
            return Ok(());
        };
        let lost = store.reap().await?;
        let mut actions = Vec::new();
        self.rooms.peers_lost(&lost, &mut actions);
        self.apply(actions).await;
        Ok(())
    }

    /// What `/metrics` shows.
    pub(crate) fn metrics_page(&self) -> String {
        self.metrics.render(&Gauges {
            connections: self.connection_count(),
            joined: self.rooms.seated_count(),
            rooms: self.rooms.room_count(),
            redis: self.redis_store().map(|_| ()),
        })
    }

    /// Queues `outgoing` for a connection of this instance.
    pub(crate) fn queue(&self, to: ConnId, outgoing: Outgoing) {
        let Some(outbox) = self.outboxes().get(&to).cloned() else {
            return;
        };
        if !outbox.push(outgoing, self.outbox_limits) && !outbox.kill.is_cancelled() {
            tracing::info!(
                conn = to.0,
                "connection is not reading its messages; dropping it"
            );
            outbox.kill.cancel();
        }
    }

    /// The message as it goes on the wire, with TURN credentials added to `joined`.
    fn wire_text(&self, to: ConnId, mut message: ServerMessage) -> String {
        self.metrics.sending(&message, false);
        if let ServerMessage::Error { code, message } = &message {
            // The message may quote what the client sent.
            tracing::info!(conn = to.0, %code, message = %excerpt(message), "error");
        }
        if let (
            Some(turn),
            ServerMessage::Joined {
                id, ice_servers, ..
            },
        ) = (&self.turn, &mut message)
        {
            ice_servers.push(turn.credentials_for(&id.0, unix_now()));
        }
        message.to_json()
    }

    /// Carries out the registry's actions, in order: queued on this
    /// instance's outboxes, or published to the instance that holds the peer.
    pub(crate) async fn apply(&self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    let text = self.wire_text(to, message);
                    self.queue(to, Outgoing::Text(text.into()));
                }
                Action::Close { conn, code, reason } => {
                    self.queue(conn, Outgoing::Close { code, reason });
                }
                Action::Forward { to, message } => {
                    self.metrics.sending(&message, true);
                    let envelope = Envelope::Text {
                        conn: to.conn,
                        text: message.to_json().into(),
                    };
                    self.forward(to.instance, envelope).await;
                }
                Action::ForwardPartner { to, partner } => {
                    let envelope = Envelope::Partner {
                        conn: to.conn,
                        partner,
                    };
                    self.forward(to.instance, envelope).await;
                }
                Action::ForwardClose { to, code } => {
                    self.forward(
                        to.instance,
                        Envelope::Close {
                            conn: to.conn,
                            code,
                        },
                    )
                    .await;
                }
            }
        }
    }

    async fn forward(&self, instance: InstanceId, envelope: Envelope) {
        let Some(store) = self.redis_store() else {
            // Only a shared store seats peers on other instances.
            return;
        };
        if !self.metrics.redis_up() {
            // Redis did not answer the last lease renewal: do not hold this
            // connection's task for a timeout per message.
            self.metrics.forward_failed();
            tracing::debug!("Redis is away; a message for another instance was lost");
            return;
        }
        if let Err(err) = store.publish(instance, envelope.encode()).await {
            self.metrics.forward_failed();
            tracing::warn!(%err, "a message for another instance was lost");
        }
    }
}
