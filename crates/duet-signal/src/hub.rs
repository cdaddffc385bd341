//! State shared by every connection task: the room registry and the outboxes
//! it queues on, the admission budgets, and the server's stop signals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{AdmissionLimits, SharedAdmission};
use crate::log_text::excerpt;
use crate::origin::OriginPolicy;
use crate::outbox::{Outbox, OutboxLimits, Outgoing};
use crate::protocol::ServerMessage;
use crate::rooms::{Action, ConnId, RoomRegistry};
use crate::server::ServerConfig;
use crate::turn::TurnConfig;

#[derive(Debug)]
pub(crate) struct HubState {
    pub(crate) rooms: RoomRegistry,
    pub(crate) outboxes: HashMap<ConnId, Arc<Outbox>>,
    pub(crate) outbox_limits: OutboxLimits,
    /// Credentials for these go into every `joined`.
    pub(crate) turn: Option<TurnConfig>,
}

/// Seconds since the Unix epoch: TURN credentials expire by the wall clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl HubState {
    /// Carries out the registry's actions by queueing on each connection's outbox.
    pub(crate) fn apply(&mut self, actions: Vec<Action>) {
        for action in actions {
            let (to, outgoing) = match action {
                Action::Send { to, mut message } => {
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
                    (to, Outgoing::Text(message.to_json().into()))
                }
                Action::Close { conn, code, reason } => (conn, Outgoing::Close { code, reason }),
            };
            let Some(outbox) = self.outboxes.get(&to) else {
                continue;
            };
            if !outbox.push(outgoing, self.outbox_limits) && !outbox.kill.is_cancelled() {
                tracing::info!(
                    conn = to.0,
                    "connection is not reading its messages; dropping it"
                );
                outbox.kill.cancel();
            }
        }
    }
}

/// State shared by all connection tasks.
#[derive(Debug)]
pub(crate) struct Hub {
    /// One lock around the rooms and the outboxes; held only to compute and queue, never across an await.
    pub(crate) state: Mutex<HubState>,
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
    pub(crate) fn new(config: ServerConfig, origins: OriginPolicy) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                rooms: RoomRegistry::new(rand::random()),
                outboxes: HashMap::new(),
                outbox_limits: OutboxLimits {
                    messages: config.outbox_capacity,
                    bytes: config.outbox_max_bytes,
                },
                turn: config.turn.clone(),
            }),
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding the lock would be a bug in the registry; the
        // state is still structurally valid, so keep serving the other rooms.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.live_connections.load(Ordering::Relaxed)
    }

    /// Runs `f` against the registry and carries out what it asks for.
    pub(crate) fn with_rooms(&self, f: impl FnOnce(&mut RoomRegistry, &mut Vec<Action>)) {
        let mut actions = Vec::new();
        let mut state = self.lock();
        f(&mut state.rooms, &mut actions);
        state.apply(actions);
    }
}
