//! Where the room rules keep who sits in which room: the [`RoomStore`]
//! interface and its in-memory implementation.
//!
//! [`RoomRegistry`](crate::RoomRegistry) decides (seats, roles, resume); a
//! store only remembers, and applies a change to a room only if the room is
//! still as the registry saw it ([`RoomChange::expected`]). That one
//! compare-and-set is what keeps two servers joining the same room at once
//! from seating three peers or half a join: the loser reads again and decides
//! again. [`MemoryStore`] serves one process; [`RedisStore`](crate::RedisStore)
//! lets several `duet serve` instances share their rooms.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::{PeerId, Role, RoomName};
use crate::rooms::{ConnId, RESUME_GRACE};

/// One `duet serve` process among those sharing a store; random per start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub u64);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The connection that holds a seat: which instance, and which of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The instance the connection is open on.
    pub instance: InstanceId,
    /// The connection there.
    pub conn: ConnId,
}

/// One taken seat of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRecord {
    /// The seat: a room has one of each.
    pub role: Role,
    /// The id its peer is known by; a resumed seat keeps it.
    pub peer: PeerId,
    /// The seat's resume token (protocol 1.1).
    pub token: String,
    /// Who holds it now.
    pub holder: Holder,
}

/// A seat whose connection was lost: its token takes it back until the grace is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedSeat {
    /// Where the seat was.
    pub room: RoomName,
    /// Which seat.
    pub role: Role,
    /// The peer id that comes back with it.
    pub peer: PeerId,
}

/// A change of one room, made only if the room still holds exactly `expected`.
#[derive(Debug)]
pub struct RoomChange<'a> {
    /// The room changed.
    pub room: &'a RoomName,
    /// The seats the decision was made on.
    pub expected: &'a [SeatRecord],
    /// The seats after the change.
    pub seats: Vec<SeatRecord>,
    /// A seat given up by a lost connection, resumable by this token for the store's grace.
    pub release: Option<(String, ReleasedSeat)>,
    /// A released seat taken back: the change fails if the token has expired meanwhile.
    pub reclaim: Option<String>,
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The shared store (Redis) did not answer.
    #[error("the room store is unreachable: {0}")]
    Unreachable(String),
    /// The store holds something this server did not write.
    #[error("the room store holds a record this server cannot read: {0}")]
    Corrupt(String),
}

/// Storage of rooms, seats and resume tokens, shared by all connections (and,
/// for a shared store, all instances). Seats come back ordered caller first.
pub trait RoomStore: Send + Sync {
    /// The seats of `room` at `now`.
    fn seats(
        &self,
        room: &RoomName,
        now: Instant,
    ) -> impl Future<Output = Result<Vec<SeatRecord>, StoreError>> + Send;

    /// Applies `change` if the room still holds `change.expected`; `false` when it does not.
    fn change(
        &self,
        change: RoomChange<'_>,
        now: Instant,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The seat `token` was released from, while its grace lasts.
    fn released(
        &self,
        token: &str,
        now: Instant,
    ) -> impl Future<Output = Result<Option<ReleasedSeat>, StoreError>> + Send;
}

/// The rooms of one process, in its memory: `duet serve` without `--redis`.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<MemoryRooms>,
    /// How long a released seat stays resumable.
    grace: Duration,
}

#[derive(Debug, Default)]
struct MemoryRooms {
    /// Seats by room, caller first; a room exists only while it has a seat.
    rooms: HashMap<RoomName, Vec<SeatRecord>>,
    /// Released seats by token, with the moment their grace ends.
    released: HashMap<String, (ReleasedSeat, Instant)>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(RESUME_GRACE)
    }
}

impl MemoryStore {
    /// An empty store whose released seats stay resumable for `grace`.
    pub fn new(grace: Duration) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(MemoryRooms::default()),
            grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryRooms> {
        // Every change below is made whole before the guard drops.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rooms with at least one seat.
    pub fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Every room's seats (tests check invariants on them).
    pub fn rooms(&self) -> Vec<(RoomName, Vec<SeatRecord>)> {
        let state = self.lock();
        state
            .rooms
            .iter()
            .map(|(room, seats)| (room.clone(), seats.clone()))
            .collect()
    }

    /// Released seats not yet expired at `now`.
    pub fn released_count(&self, now: Instant) -> usize {
        let state = self.lock();
        state
            .released
            .values()
            .filter(|(_, end)| now < *end)
            .count()
    }
}

/// Seats in the store's order: caller first.
pub(crate) fn in_seat_order(mut seats: Vec<SeatRecord>) -> Vec<SeatRecord> {
    seats.sort_by_key(|seat| seat.role != Role::Caller);
    seats
}

impl RoomStore for MemoryStore {
    async fn seats(&self, room: &RoomName, _now: Instant) -> Result<Vec<SeatRecord>, StoreError> {
        Ok(self.lock().rooms.get(room).cloned().unwrap_or_default())
    }

    async fn change(&self, change: RoomChange<'_>, now: Instant) -> Result<bool, StoreError> {
        let mut state = self.lock();
        state.released.retain(|_, (_, end)| now < *end);
        let current = state.rooms.get(change.room).map(Vec::as_slice);
        if current.unwrap_or_default() != change.expected {
            return Ok(false);
        }
        if let Some(token) = &change.reclaim
            && state.released.remove(token).is_none()
        {
            return Ok(false);
        }
        if change.seats.is_empty() {
            state.rooms.remove(change.room);
        } else {
            state
                .rooms
                .insert(change.room.clone(), in_seat_order(change.seats));
        }
        if let Some((token, seat)) = change.release {
            state.released.insert(token, (seat, now + self.grace));
        }
        Ok(true)
    }

    async fn released(
        &self,
        token: &str,
        now: Instant,
    ) -> Result<Option<ReleasedSeat>, StoreError> {
        let state = self.lock();
        Ok(state
            .released
            .get(token)
            .filter(|(_, end)| now < *end)
            .map(|(seat, _)| seat.clone()))
    }
}
