//! Who may open a connection and who may join: budgets per client address and
//! a cap on connections that have not completed the WebSocket upgrade.
//!
//! [`Admission`] is a clock-free state machine (time is an argument); the
//! server holds it behind one lock and ties each connection to it with an
//! [`AdmissionTicket`] that gives the connection's share back when dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::limits::{RateLimit, RateLimiter};

/// The budgets [`Admission`] enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdmissionLimits {
    /// Connections, from all addresses, that have not completed the upgrade.
    pub max_pending: usize,
    /// Open connections (upgraded or not) from one address.
    pub connections_per_address: usize,
    /// `join` messages from one address.
    pub joins_per_address: RateLimit,
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many connections are still before their upgrade.
    TooManyPending,
    /// The address already holds its budget of connections.
    TooManyFromAddress,
}

impl Refusal {
    /// One line for the refused client.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooManyPending => "the server is busy; try again shortly",
            Refusal::TooManyFromAddress => "too many connections from your address",
        }
    }
}

/// What the budgets are charged to: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64, so single IPv6 addresses cost it nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AddressKey(IpAddr);

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    AddressKey(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

#[derive(Debug)]
struct PerAddress {
    connections: usize,
    joins: RateLimiter,
}

/// The admission state of the whole server.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    pending: usize,
    addresses: HashMap<AddressKey, PerAddress>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            pending: 0,
            addresses: HashMap::new(),
        }
    }

    fn entry(&mut self, key: AddressKey, now: Instant) -> &mut PerAddress {
        let joins = self.limits.joins_per_address;
        self.addresses.entry(key).or_insert_with(|| PerAddress {
            connections: 0,
            joins: RateLimiter::new(joins, now),
        })
    }

    /// A new connection from `key`; on success it counts as pending and
    /// against its address until [`Admission::upgraded`] and [`Admission::closed`].
    pub fn open(&mut self, key: AddressKey, now: Instant) -> Result<(), Refusal> {
        if self.pending >= self.limits.max_pending {
            return Err(Refusal::TooManyPending);
        }
        let limit = self.limits.connections_per_address;
        let entry = self.entry(key, now);
        if entry.connections >= limit {
            return Err(Refusal::TooManyFromAddress);
        }
        entry.connections += 1;
        self.pending += 1;
        Ok(())
    }

    /// A pending connection completed its upgrade.
    pub fn upgraded(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// A connection admitted by [`Admission::open`] is gone.
    pub fn closed(&mut self, key: AddressKey, was_pending: bool) {
        if was_pending {
            self.pending = self.pending.saturating_sub(1);
        }
        if let Some(entry) = self.addresses.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }

    /// Takes one join from the budget of `key`; false when it is spent.
    pub fn join(&mut self, key: AddressKey, now: Instant) -> bool {
        self.entry(key, now).joins.allow(now)
    }

    /// Forgets addresses with no connection whose join budget has refilled;
    /// what remains is bounded by open connections and recent joiners.
    pub fn prune(&mut self, now: Instant) {
        self.addresses
            .retain(|_, entry| entry.connections > 0 || !entry.joins.is_full(now));
    }

    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending
    }

    #[cfg(test)]
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.len()
    }
}

/// [`Admission`] shared by the accept loop and the connection tasks.
#[derive(Debug)]
pub(crate) struct SharedAdmission(Mutex<Admission>);

impl SharedAdmission {
    pub fn new(limits: AdmissionLimits) -> Arc<SharedAdmission> {
        Arc::new(SharedAdmission(Mutex::new(Admission::new(limits))))
    }

    pub fn lock(&self) -> MutexGuard<'_, Admission> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<AdmissionTicket, Refusal> {
        let key = AddressKey::of(ip);
        self.lock().open(key, Instant::now())?;
        Ok(AdmissionTicket {
            admission: Arc::clone(self),
            key,
            pending: AtomicBool::new(true),
        })
    }
}

/// One admitted connection's share of the budgets, given back on drop.
#[derive(Debug)]
pub(crate) struct AdmissionTicket {
    admission: Arc<SharedAdmission>,
    key: AddressKey,
    pending: AtomicBool,
}

impl AdmissionTicket {
    /// The connection is a WebSocket now: it no longer counts as pending.
    pub fn upgraded(&self) {
        if self.pending.swap(false, Ordering::AcqRel) {
            self.admission.lock().upgraded();
        }
    }

    /// Takes one join from this connection's address.
    pub fn join(&self) -> bool {
        self.admission.lock().join(self.key, Instant::now())
    }
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        let was_pending = self.pending.load(Ordering::Acquire);
        self.admission.lock().closed(self.key, was_pending);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_pending: 3,
            connections_per_address: 2,
            joins_per_address: RateLimit {
                burst: 2,
                per_second: 1.0,
            },
        }
    }

    fn key(text: &str) -> AddressKey {
        AddressKey::of(text.parse().expect("an address"))
    }

    #[test]
    fn each_address_has_its_budget_of_connections() {
        let now = Instant::now();
        let mut a = Admission::new(limits());
        assert_eq!(a.open(key("10.0.0.1"), now), Ok(()));
        a.upgraded();
        assert_eq!(a.open(key("10.0.0.1"), now), Ok(()));
        a.upgraded();
        assert_eq!(
            a.open(key("10.0.0.1"), now),
            Err(Refusal::TooManyFromAddress)
        );
        assert_eq!(a.open(key("10.0.0.2"), now), Ok(()));
        a.closed(key("10.0.0.1"), false);
        assert_eq!(a.open(key("10.0.0.1"), now), Ok(()));
    }

    #[test]
    fn pending_connections_are_capped_across_addresses() {
        let now = Instant::now();
        let mut a = Admission::new(limits());
        for host in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            assert_eq!(a.open(key(host), now), Ok(()));
        }
        assert_eq!(a.open(key("10.0.0.4"), now), Err(Refusal::TooManyPending));
        a.upgraded();
        assert_eq!(a.pending(), 2);
        assert_eq!(a.open(key("10.0.0.4"), now), Ok(()));
        a.closed(key("10.0.0.4"), true);
        assert_eq!(a.pending(), 2);
    }

    #[test]
    fn joins_are_a_rate_per_address_that_outlives_its_connections() {
        let now = Instant::now();
        let mut a = Admission::new(limits());
        let k = key("10.0.0.1");
        a.open(k, now).expect("admitted");
        assert!(a.join(k, now) && a.join(k, now));
        assert!(!a.join(k, now));
        assert!(a.join(key("10.0.0.2"), now), "another address has its own");
        // Reconnecting does not refill the budget.
        a.closed(k, true);
        a.prune(now);
        a.open(k, now).expect("admitted");
        assert!(!a.join(k, now));
        assert!(a.join(k, now + Duration::from_secs(1)));
    }

    #[test]
    fn idle_addresses_are_forgotten_once_their_joins_refill() {
        let now = Instant::now();
        let mut a = Admission::new(limits());
        let k = key("10.0.0.1");
        a.open(k, now).expect("admitted");
        assert!(a.join(k, now));
        a.closed(k, true);
        a.prune(now);
        assert_eq!(a.tracked_addresses(), 1, "its join budget is not full yet");
        a.prune(now + Duration::from_secs(1));
        assert_eq!(a.tracked_addresses(), 0);
    }

    #[test]
    fn ipv6_is_charged_per_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
    }

    #[test]
    fn tickets_give_their_share_back() {
        let shared = SharedAdmission::new(limits());
        let ip: IpAddr = "10.0.0.1".parse().expect("an address");
        let first = shared.admit(ip).expect("admitted");
        let second = shared.admit(ip).expect("admitted");
        assert_eq!(
            shared.admit(ip).map(|_| ()),
            Err(Refusal::TooManyFromAddress)
        );
        first.upgraded();
        first.upgraded();
        assert_eq!(shared.lock().pending(), 1);
        drop(first);
        drop(second);
        assert_eq!(shared.lock().pending(), 0);
        assert!(shared.admit(ip).is_ok());
    }
}
