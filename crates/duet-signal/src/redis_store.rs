//! Rooms in Redis, shared by every `duet serve --redis` instance.
//!
//! Layout (every key under a prefix, `duet:` by default):
//! - `room:NAME`: a hash with at most the fields `caller` and `callee`, each
//!   a seat `PEER|TOKEN|INSTANCE|CONN`. Keyed by role, a room cannot hold two
//!   of one role nor more than two peers.
//! - `released:TOKEN`: `ROOM|ROLE|PEER`, a seat whose connection was lost,
//!   expiring after the resume grace (Redis's own expiry).
//! - `lease:INSTANCE`: present while that instance lives; every instance
//!   renews its own every [`LEASE_RENEWAL`] and is listed in `instances`.
//! - `held:INSTANCE`: the seats (`ROOMKEY|ROLE`) that instance's connections
//!   hold, kept with every change of a room.
//!
//! A crashed instance's lease runs out after [`LEASE`]; the next instance to
//! look ([`RedisStore::reap`], every lease renewal) releases its seats
//! (resumable for the grace, as a lost connection's are) and names the peers
//! who must hear `peer-left`.
//!
//! Each operation is one Lua script, so Redis runs it whole: reading a room,
//! changing it only if it is still as read, reaping a dead instance. No two
//! instances can interleave inside a join.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::protocol::{PeerId, Role, RoomName};
use crate::room_store::{
    Holder, InstanceId, ReleasedSeat, RoomChange, RoomStore, SeatRecord, StoreError,
};
use crate::rooms::{ConnId, RESUME_GRACE};

/// How long an instance's lease lasts without renewal: a crashed instance's
/// seats are released this long after its last renewal at the latest.
pub const LEASE: Duration = Duration::from_secs(10);

/// How often a live instance renews its lease (and measures Redis's round trip).
pub const LEASE_RENEWAL: Duration = Duration::from_secs(2);

/// Longest wait for one Redis answer: beyond it the store counts as unreachable
/// (a join is refused rather than left hanging).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads a room, refreshing the reader's own lease.
/// KEYS[1] room; ARGV: prefix, own instance, lease ms.
const SEATS: &str = r"
redis.call('SET', ARGV[1]..'lease:'..ARGV[2], '1', 'PX', ARGV[3])
local out = {}
for _, role in ipairs({'caller', 'callee'}) do
  local seat = redis.call('HGET', KEYS[1], role)
  if seat then
    table.insert(out, role)
    table.insert(out, seat)
  end
end
return out
";

/// Releases the seats of every instance whose lease ran out; returns, for
/// each seat released whose room has another peer, the released peer's id,
/// the other peer's role and seat.
/// ARGV: prefix, grace ms.
const REAP: &str = r"
local out = {}
local roomprefix = ARGV[1]..'room:'
for _, inst in ipairs(redis.call('SMEMBERS', ARGV[1]..'instances')) do
  if redis.call('EXISTS', ARGV[1]..'lease:'..inst) == 0 then
    for _, held in ipairs(redis.call('SMEMBERS', ARGV[1]..'held:'..inst)) do
      local roomkey, role = string.match(held, '^(.*)|(%a+)$')
      local seat = roomkey and redis.call('HGET', roomkey, role)
      if seat then
        local peer, token, owner = string.match(seat, '^([^|]*)|([^|]*)|([^|]*)|')
        if owner == inst then
          redis.call('HDEL', roomkey, role)
          local room = string.sub(roomkey, string.len(roomprefix) + 1)
          redis.call('SET', ARGV[1]..'released:'..token, room..'|'..role..'|'..peer, 'PX', ARGV[2])
          local other = 'caller'
          if role == 'caller' then other = 'callee' end
          local partner = redis.call('HGET', roomkey, other)
          if partner then
            table.insert(out, peer)
            table.insert(out, other)
            table.insert(out, partner)
          end
        end
      end
    end
    redis.call('DEL', ARGV[1]..'held:'..inst)
    redis.call('SREM', ARGV[1]..'instances', inst)
  end
end
return out
";

/// Changes a room if it still holds what was read.
/// KEYS[1] room; ARGV: expected caller, expected callee, new caller, new
/// callee ('' for an empty seat), released token, its record, grace ms,
/// reclaimed token ('' for none), prefix.
const CHANGE: &str = r"
local old = {
  caller = redis.call('HGET', KEYS[1], 'caller') or '',
  callee = redis.call('HGET', KEYS[1], 'callee') or '',
}
if old.caller ~= ARGV[1] or old.callee ~= ARGV[2] then
  return 0
end
if ARGV[8] ~= '' and redis.call('DEL', ARGV[9]..'released:'..ARGV[8]) == 0 then
  return 0
end
local function held(seat)
  return ARGV[9]..'held:'..string.match(seat, '^[^|]*|[^|]*|([^|]*)|')
end
local new = { caller = ARGV[3], callee = ARGV[4] }
for _, role in ipairs({'caller', 'callee'}) do
  if old[role] ~= new[role] then
    if old[role] ~= '' then
      redis.call('SREM', held(old[role]), KEYS[1]..'|'..role)
    end
    if new[role] == '' then
      redis.call('HDEL', KEYS[1], role)
    else
      redis.call('HSET', KEYS[1], role, new[role])
      redis.call('SADD', held(new[role]), KEYS[1]..'|'..role)
    end
  end
end
if ARGV[5] ~= '' then
  redis.call('SET', ARGV[9]..'released:'..ARGV[5], ARGV[6], 'PX', ARGV[7])
end
return 1
";

/// Where to find Redis and how this instance appears there.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Put before every key and channel, so several deployments (or tests) can share one Redis.
    pub prefix: String,
    /// How long a released seat stays resumable.
    pub resume_grace: Duration,
}

impl RedisConfig {
    /// The defaults for `url`: prefix `duet:`, the protocol's resume grace.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "duet:".into(),
            resume_grace: RESUME_GRACE,
        }
    }
}

/// The [`RoomStore`] several instances share. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    /// Reconnects by itself after Redis goes away.
    connection: ConnectionManager,
    client: redis::Client,
    config: RedisConfig,
    instance: InstanceId,
    seats_script: Script,
    change_script: Script,
    reap_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.config.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn unreachable(err: redis::RedisError) -> StoreError {
    StoreError::Unreachable(err.to_string())
}

impl RedisStore {
    /// Connects to Redis as `instance`; fails if Redis does not answer now.
    pub async fn connect(
        config: RedisConfig,
        instance: InstanceId,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|err| StoreError::Unreachable(format!("{}: {err}", config.url)))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(|err| StoreError::Unreachable(format!("{}: {err}", config.url)))?;
        let store = RedisStore {
            connection,
            client,
            config,
            instance,
            seats_script: Script::new(SEATS),
            change_script: Script::new(CHANGE),
            reap_script: Script::new(REAP),
        };
        store.renew_lease().await?;
        Ok(store)
    }

    /// This instance's id.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The client, for opening this instance's subscription.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The pub/sub channel messages for `instance`'s connections go to.
    pub fn channel(&self, instance: InstanceId) -> String {
        format!("{}bus:{instance}", self.config.prefix)
    }

    /// Keeps this instance's seats alive; returns Redis's round-trip time.
    pub async fn renew_lease(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut connection = self.connection.clone();
        let prefix = &self.config.prefix;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(format!("{prefix}lease:{}", self.instance))
            .arg("1")
            .arg("PX")
            .arg(millis(LEASE))
            .ignore()
            .cmd("SADD")
            .arg(format!("{prefix}instances"))
            .arg(self.instance.to_string())
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(started.elapsed())
    }

    /// Releases the seats of instances whose lease ran out (they crashed, or
    /// lost Redis for longer than [`LEASE`]); returns each released peer with
    /// the seat of the peer left alone in its room, who must be told.
    pub async fn reap(&self) -> Result<Vec<(PeerId, SeatRecord)>, StoreError> {
        let mut connection = self.connection.clone();
        let flat: Vec<String> = self
            .reap_script
            .arg(&self.config.prefix)
            .arg(millis(self.config.resume_grace))
            .invoke_async(&mut connection)
            .await
            .map_err(unreachable)?;
        flat.chunks(3)
            .map(|triple| match triple {
                [peer, role, seat] => Ok((PeerId(peer.clone()), decode_seat(role, seat)?)),
                _ => Err(StoreError::Corrupt("an odd reply to a reap".into())),
            })
            .collect()
    }

    /// Gives up this instance's lease (on a clean shutdown, after its seats were freed).
    pub async fn drop_lease(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(format!("{}lease:{}", self.config.prefix, self.instance))
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)
    }

    /// Sends an envelope to another instance's channel.
    pub(crate) async fn publish(
        &self,
        instance: InstanceId,
        envelope: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PUBLISH")
            .arg(self.channel(instance))
            .arg(envelope)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)
    }

    fn room_key(&self, room: &RoomName) -> String {
        format!("{}room:{}", self.config.prefix, room.as_str())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn encode_seat(seat: &SeatRecord) -> String {
    format!(
        "{}|{}|{}|{}",
        seat.peer.0, seat.token, seat.holder.instance, seat.holder.conn.0
    )
}

fn decode_seat(role: &str, text: &str) -> Result<SeatRecord, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("seat {role:?} = {text:?}"));
    let role = parse_role(role).ok_or_else(corrupt)?;
    let mut parts = text.split('|');
    let (Some(peer), Some(token), Some(instance), Some(conn), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(corrupt());
    };
    Ok(SeatRecord {
        role,
        peer: PeerId(peer.to_owned()),
        token: token.to_owned(),
        holder: Holder {
            instance: InstanceId(u64::from_str_radix(instance, 16).map_err(|_| corrupt())?),
            conn: ConnId(conn.parse().map_err(|_| corrupt())?),
        },
    })
}

fn parse_role(role: &str) -> Option<Role> {
    match role {
        "caller" => Some(Role::Caller),
        "callee" => Some(Role::Callee),
        _ => None,
    }
}

/// The encoded seat of `role` among `seats`, or '' for an empty one.
fn seat_of(seats: &[SeatRecord], role: Role) -> String {
    seats
        .iter()
        .find(|s| s.role == role)
        .map(encode_seat)
        .unwrap_or_default()
}

impl RoomStore for RedisStore {
    async fn seats(&self, room: &RoomName, _now: Instant) -> Result<Vec<SeatRecord>, StoreError> {
        let mut connection = self.connection.clone();
        let flat: Vec<String> = self
            .seats_script
            .key(self.room_key(room))
            .arg(&self.config.prefix)
            .arg(self.instance.to_string())
            .arg(millis(LEASE))
            .invoke_async(&mut connection)
            .await
            .map_err(unreachable)?;
        flat.chunks(2)
            .map(|pair| match pair {
                [role, seat] => decode_seat(role, seat),
                _ => Err(StoreError::Corrupt("an odd reply to a room read".into())),
            })
            .collect()
    }

    async fn change(&self, change: RoomChange<'_>, _now: Instant) -> Result<bool, StoreError> {
        let (released_token, released_seat) = match &change.release {
            Some((token, seat)) => (
                token.clone(),
                format!("{}|{}|{}", seat.room.as_str(), seat.role, seat.peer.0),
            ),
            None => (String::new(), String::new()),
        };
        let mut connection = self.connection.clone();
        let done: Value = self
            .change_script
            .key(self.room_key(change.room))
            .arg(seat_of(change.expected, Role::Caller))
            .arg(seat_of(change.expected, Role::Callee))
            .arg(seat_of(&change.seats, Role::Caller))
            .arg(seat_of(&change.seats, Role::Callee))
            .arg(released_token)
            .arg(released_seat)
            .arg(millis(self.config.resume_grace))
            .arg(change.reclaim.clone().unwrap_or_default())
            .arg(&self.config.prefix)
            .invoke_async(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(matches!(done, Value::Int(1)))
    }

    async fn released(
        &self,
        token: &str,
        _now: Instant,
    ) -> Result<Option<ReleasedSeat>, StoreError> {
        let mut connection = self.connection.clone();
        let record: Option<String> = redis::cmd("GET")
            .arg(format!("{}released:{token}", self.config.prefix))
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        let Some(record) = record else {
            return Ok(None);
        };
        let corrupt = || StoreError::Corrupt(format!("released seat {record:?}"));
        let mut parts = record.split('|');
        let (Some(room), Some(role), Some(peer), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt());
        };
        Ok(Some(ReleasedSeat {
            room: RoomName::parse(room).map_err(|_| corrupt())?,
            role: parse_role(role).ok_or_else(corrupt)?,
            peer: PeerId(peer.to_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_round_trip_through_their_encoding() {
        let seat = SeatRecord {
            role: Role::Callee,
            peer: PeerId("p-0123456789abcdef".into()),
            token: "ab".repeat(16),
            holder: Holder {
                instance: InstanceId(0xfeed),
                conn: ConnId(42),
            },
        };
        let text = encode_seat(&seat);
        assert_eq!(decode_seat("callee", &text).ok(), Some(seat));
        assert!(decode_seat("caller", "p|t|zz|1").is_err());
        assert!(decode_seat("host", &text).is_err());
        assert!(decode_seat("callee", "a|b|c").is_err());
    }
}
