//! The delay line: a thread in a namespace that takes the packets the kernel
//! queues to it (iptables' NFQUEUE target, as these kernels have no netem)
//! and gives each its verdict when its [`LinkProfile`] says it arrives.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nfq::{Queue, Verdict};

use crate::RigError;
use crate::impairment::{LinkProfile, ReleaseQueue};
use crate::namespace::{NetNamespace, enter};

/// How long the thread sleeps at most when nothing is due: the most a
/// packet waits beyond its arrival time.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// Packets the kernel may hold for the thread; beyond that it drops them, as
/// a full router queue would.
const QUEUE_MAX_LEN: u32 = 4096;

/// What one delay line did, for the benchmark's table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DelayLineCounts {
    pub passed: u64,
    pub lost: u64,
    /// IP bytes of the packets passed and lost: what the sender sent.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Shared {
    profile: Mutex<LinkProfile>,
    stop: AtomicBool,
    passed: AtomicU64,
    lost: AtomicU64,
    bytes: AtomicU64,
}

/// One direction's delay line; stops (releasing what it holds) when dropped.
#[derive(Debug)]
pub struct DelayLine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DelayLine {
    /// Starts taking the packets queued to `queue_num` in `namespace`. Returns
    /// once the queue is bound, so no packet slips past unqueued after it.
    pub fn start(
        namespace: &NetNamespace,
        queue_num: u16,
        profile: LinkProfile,
    ) -> Result<DelayLine, RigError> {
        let handle = namespace.open()?;
        let shared = Arc::new(Shared {
            profile: Mutex::new(profile),
            ..Shared::default()
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("delay-line-{queue_num}"))
            .spawn(move || {
                let queue = enter(&handle).and_then(|()| bind(queue_num));
                match queue {
                    Ok(queue) => {
                        let _ = ready_tx.send(Ok(()));
                        if let Err(err) = serve(queue, &thread_shared) {
                            tracing::error!("delay line {queue_num} stopped: {err}");
                        }
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })
            .map_err(|source| RigError::Io {
                what: "start the delay line".into(),
                source,
            })?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(RigError::Io {
                what: "start the delay line".into(),
                source: ErrorKind::BrokenPipe.into(),
            })
        });
        let line = DelayLine {
            shared,
            thread: Some(thread),
        };
        ready.map(|()| line)
    }

    /// Changes what the line does to packets from now on.
    pub fn set_profile(&self, profile: LinkProfile) {
        *self
            .shared
            .profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = profile;
    }

    pub fn counts(&self) -> DelayLineCounts {
        DelayLineCounts {
            passed: self.shared.passed.load(Ordering::Relaxed),
            lost: self.shared.lost.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind(queue_num: u16) -> Result<Queue, RigError> {
    let netlink = |what: &str, source: std::io::Error| RigError::Io {
        what: format!("{what} netfilter queue {queue_num}"),
        source,
    };
    let mut queue = Queue::open().map_err(|err| netlink("open", err))?;
    queue.bind(queue_num).map_err(|err| netlink("bind", err))?;
    queue
        .set_queue_max_len(queue_num, QUEUE_MAX_LEN)
        .map_err(|err| netlink("size", err))?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// Takes packets in and lets them out when due, until told to stop.
fn serve(mut queue: Queue, shared: &Shared) -> std::io::Result<()> {
    let mut rng = rand::rng();
    let mut held = ReleaseQueue::default();
    while !shared.stop.load(Ordering::Relaxed) {
        loop {
            let mut message = match queue.recv() {
                Ok(message) => message,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                // The kernel's answer to a verdict on a packet it had
                // already dropped (see `give_verdict`): nothing to do.
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            shared
                .bytes
                .fetch_add(message.get_payload().len() as u64, Ordering::Relaxed);
            let profile = *shared
                .profile
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match profile.arrival(Instant::now(), &mut rng) {
                Some(due) => held.hold(due, message),
                None => {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    message.set_verdict(Verdict::Drop);
                    give_verdict(&mut queue, message)?;
                }
            }
        }
        let now = Instant::now();
        while let Some(mut message) = held.pop_due(now) {
            shared.passed.fetch_add(1, Ordering::Relaxed);
            message.set_verdict(Verdict::Accept);
            give_verdict(&mut queue, message)?;
        }
        let idle = held.next_due().map_or(IDLE_POLL, |due| {
            due.saturating_duration_since(now).min(IDLE_POLL)
        });
        std::thread::sleep(idle);
    }
    // Let what is still held go, as a link that is switched off would have
    // delivered it.
    while let Some(mut message) = held.pop_due(Instant::now() + Duration::from_secs(3600)) {
        message.set_verdict(Verdict::Accept);
        give_verdict(&mut queue, message)?;
    }
    Ok(())
}

/// Hands the kernel its verdict on `message`. A packet the kernel no longer
/// holds is not an error of the line: the kernel drops every queued packet of
/// a namespace when a netfilter hook there goes away (an outage's table being
/// deleted, say), and then answers the verdict with `ENOENT`.
fn give_verdict(queue: &mut Queue, message: nfq::Message) -> std::io::Result<()> {
    match queue.verdict(message) {
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
