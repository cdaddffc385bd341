//! The queue between the video receiver and the decode thread, bounded: when
//! decoding falls behind, queued pictures would only add latency, so the queue
//! drops access units up to the next keyframe instead (and asks the sender for
//! one when none is on its way). [`DecodeQueue`] is the rule, without threads;
//! [`DecodeChannel`] shares it between the async receiver and the thread.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::video_timing::FrameTiming;

/// An access unit as it came off the network, with what its playout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceivedUnit {
    /// Annex-B bytes.
    pub(crate) data: Bytes,
    pub(crate) timing: FrameTiming,
}

/// Access units queued at most: about a quarter of a second at 30 fps. A
/// burst released at once by the reassembler after a recovered loss fits.
pub(crate) const DECODE_QUEUE_UNITS: usize = 8;

/// Input of the decode thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeInput {
    /// A whole access unit.
    Unit {
        data: ReceivedUnit,
        /// It starts a new chain of references (an IDR picture).
        keyframe: bool,
    },
    /// Packets were lost: wait for a keyframe.
    Loss,
    /// A new call starts: forget the old stream.
    Reset,
}

/// What became of an access unit offered to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued for decoding.
    Queued,
    /// Access units were dropped (the offered one, queued ones, or both).
    Dropped {
        /// How many access units were dropped.
        units: u64,
        /// No keyframe is queued or was offered: ask the sender for one.
        ask_keyframe: bool,
    },
}

/// The bounded decode queue's rule.
#[derive(Debug)]
pub(crate) struct DecodeQueue {
    items: VecDeque<DecodeInput>,
    capacity: usize,
    /// Access units in `items`.
    units: usize,
    /// Units are dropped until a keyframe comes.
    awaiting_keyframe: bool,
}

impl DecodeQueue {
    /// A queue of at most `capacity` access units (at least one).
    pub(crate) fn new(capacity: usize) -> DecodeQueue {
        DecodeQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            units: 0,
            awaiting_keyframe: false,
        }
    }

    /// Offers an access unit. While there is room it is queued; when the queue
    /// is full the units before the newest keyframe (queued or this one) go,
    /// and without any keyframe everything goes until one comes.
    pub(crate) fn offer(&mut self, data: ReceivedUnit, keyframe: bool) -> Offered {
        if self.awaiting_keyframe {
            if !keyframe {
                return Offered::Dropped {
                    units: 1,
                    ask_keyframe: true,
                };
            }
            self.awaiting_keyframe = false;
        } else if self.units >= self.capacity {
            let dropped = if keyframe {
                self.drop_before(self.items.len())
            } else if let Some(newest) = self.newest_queued_keyframe().filter(|&at| at > 0) {
                self.drop_before(newest)
            } else {
                let dropped = self.drop_before(self.items.len()) + 1;
                self.awaiting_keyframe = true;
                return Offered::Dropped {
                    units: dropped,
                    ask_keyframe: true,
                };
            };
            self.push(DecodeInput::Unit { data, keyframe });
            return Offered::Dropped {
                units: dropped,
                ask_keyframe: false,
            };
        }
        self.push(DecodeInput::Unit { data, keyframe });
        Offered::Queued
    }

    /// Packets were lost for good: the decoder must wait for a keyframe.
    /// Losses in a row are one mark (the queue stays bounded while the
    /// decoder is stalled).
    pub(crate) fn note_loss(&mut self) {
        if !self.awaiting_keyframe && self.items.back() != Some(&DecodeInput::Loss) {
            self.items.push_back(DecodeInput::Loss);
        }
    }

    /// A new call starts: whatever is queued belongs to the old one.
    pub(crate) fn reset(&mut self) {
        self.items.clear();
        self.units = 0;
        self.awaiting_keyframe = false;
        self.items.push_back(DecodeInput::Reset);
    }

    /// The next input for the decoder.
    pub(crate) fn pop(&mut self) -> Option<DecodeInput> {
        let item = self.items.pop_front()?;
        if matches!(item, DecodeInput::Unit { .. }) {
            self.units -= 1;
        }
        Some(item)
    }

    /// Access units queued now.
    #[cfg(test)]
    pub(crate) fn units(&self) -> usize {
        self.units
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, item: DecodeInput) {
        if matches!(item, DecodeInput::Unit { .. }) {
            self.units += 1;
        }
        self.items.push_back(item);
    }

    fn newest_queued_keyframe(&self) -> Option<usize> {
        self.items
            .iter()
            .rposition(|item| matches!(item, DecodeInput::Unit { keyframe: true, .. }))
    }

    /// Drops the inputs before index `end` (loss marks too: what follows
    /// starts at a keyframe); returns how many access units went.
    fn drop_before(&mut self, end: usize) -> u64 {
        let mut dropped = 0;
        for item in self.items.drain(..end) {
            if matches!(item, DecodeInput::Unit { .. }) {
                dropped += 1;
            }
        }
        self.units -= dropped;
        dropped as u64
    }
}

/// The decode queue shared between the receiver (which offers without
/// blocking) and the decode thread (which waits, a bounded time, for input).
#[derive(Debug, Clone)]
pub(crate) struct DecodeChannel {
    inner: Arc<(Mutex<DecodeQueue>, Condvar)>,
}

impl DecodeChannel {
    /// A channel of at most `capacity` access units.
    pub(crate) fn new(capacity: usize) -> DecodeChannel {
        DecodeChannel {
            inner: Arc::new((Mutex::new(DecodeQueue::new(capacity)), Condvar::new())),
        }
    }

    /// Runs `f` on the queue and wakes the decode thread.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut DecodeQueue) -> R) -> Option<R> {
        let (queue, wake) = &*self.inner;
        let result = queue.lock().ok().map(|mut queue| f(&mut queue));
        wake.notify_one();
        result
    }

    /// The next input, waiting up to `timeout` for one.
    pub(crate) fn next(&self, timeout: Duration) -> Option<DecodeInput> {
        let (queue, wake) = &*self.inner;
        let mut queue = queue.lock().ok()?;
        if let Some(item) = queue.pop() {
            return Some(item);
        }
        let (mut queue, _) = wake
            .wait_timeout_while(queue, timeout, |queue| queue.is_empty())
            .ok()?;
        queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-byte unit; units with the same byte are equal.
    fn unit(n: u8) -> ReceivedUnit {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ReceivedUnit {
            data: Bytes::from(vec![n]),
            timing: FrameTiming {
                rtp_timestamp: u32::from(n) * 3000,
                completed: *EPOCH.get_or_init(std::time::Instant::now),
            },
        }
    }

    fn drain(queue: &mut DecodeQueue) -> Vec<DecodeInput> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    fn data_of(items: &[DecodeInput]) -> Vec<u8> {
        items
            .iter()
            .filter_map(|item| match item {
                DecodeInput::Unit { data, .. } => Some(data.data[0]),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn units_queue_in_order_while_there_is_room() {
        let mut queue = DecodeQueue::new(3);
        assert_eq!(queue.offer(unit(1), true), Offered::Queued);
        queue.note_loss();
        queue.note_loss(); // one mark for losses in a row
        assert_eq!(queue.offer(unit(2), false), Offered::Queued);
        assert_eq!(queue.offer(unit(3), false), Offered::Queued);
        assert_eq!(queue.units(), 3);
        let items = drain(&mut queue);
        assert_eq!(data_of(&items), vec![1, 2, 3]);
        assert_eq!(items[1], DecodeInput::Loss);
        assert_eq!(queue.units(), 0);
    }

    #[test]
    fn a_full_queue_without_a_keyframe_drops_everything_until_one_comes_and_asks_for_it() {
        let mut queue = DecodeQueue::new(3);
        for n in 1..=3 {
            queue.offer(unit(n), false);
        }
        assert_eq!(
            queue.offer(unit(4), false),
            Offered::Dropped {
                units: 4,
                ask_keyframe: true
            }
        );
        assert_eq!(queue.units(), 0);
        // Delta frames keep being dropped, and the request repeated, until a keyframe.
        assert_eq!(
            queue.offer(unit(5), false),
            Offered::Dropped {
                units: 1,
                ask_keyframe: true
            }
        );
        queue.note_loss(); // meaningless while waiting for a keyframe
        assert_eq!(queue.offer(unit(6), true), Offered::Queued);
        assert_eq!(queue.offer(unit(7), false), Offered::Queued);
        assert_eq!(data_of(&drain(&mut queue)), vec![6, 7]);
    }

    #[test]
    fn a_full_queue_skips_to_its_newest_keyframe_without_asking() {
        let mut queue = DecodeQueue::new(4);
        queue.offer(unit(1), false);
        queue.note_loss();
        queue.offer(unit(2), true);
        queue.offer(unit(3), false);
        queue.offer(unit(4), true);
        assert_eq!(
            queue.offer(unit(5), false),
            Offered::Dropped {
                units: 3,
                ask_keyframe: false
            }
        );
        assert_eq!(data_of(&drain(&mut queue)), vec![4, 5]);
    }

    #[test]
    fn a_keyframe_offered_to_a_full_queue_replaces_what_is_queued() {
        let mut queue = DecodeQueue::new(2);
        queue.offer(unit(1), true);
        queue.offer(unit(2), false);
        assert_eq!(
            queue.offer(unit(3), true),
            Offered::Dropped {
                units: 2,
                ask_keyframe: false
            }
        );
        assert_eq!(data_of(&drain(&mut queue)), vec![3]);
    }

    #[test]
    fn a_full_queue_whose_only_keyframe_is_first_drops_all_and_asks() {
        // Skipping to a keyframe at the head would free nothing.
        let mut queue = DecodeQueue::new(2);
        queue.offer(unit(1), true);
        queue.offer(unit(2), false);
        assert_eq!(
            queue.offer(unit(3), false),
            Offered::Dropped {
                units: 3,
                ask_keyframe: true
            }
        );
    }

    #[test]
    fn a_reset_forgets_the_old_call_and_stops_waiting_for_its_keyframe() {
        let mut queue = DecodeQueue::new(1);
        queue.offer(unit(1), false);
        queue.offer(unit(2), false); // full: now waiting for a keyframe
        queue.reset();
        assert_eq!(queue.offer(unit(3), false), Offered::Queued);
        assert_eq!(
            drain(&mut queue),
            vec![
                DecodeInput::Reset,
                DecodeInput::Unit {
                    data: unit(3),
                    keyframe: false
                }
            ]
        );
    }

    #[test]
    fn the_decode_thread_side_waits_a_bounded_time_and_wakes_for_input() {
        let channel = DecodeChannel::new(4);
        assert_eq!(channel.next(Duration::from_millis(5)), None);
        let sender = channel.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.with(|queue| queue.offer(unit(9), true));
        });
        let got = channel.next(Duration::from_secs(5));
        assert_eq!(
            got,
            Some(DecodeInput::Unit {
                data: unit(9),
                keyframe: true
            })
        );
        thread.join().expect("sender");
    }
}
