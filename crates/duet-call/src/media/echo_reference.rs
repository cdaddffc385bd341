//! What the speaker played, carried from the playout thread to the capture
//! thread: the echo canceller's far-end reference.
//!
//! A single-producer single-consumer ring of runs, each with when its first
//! sample was heard (the echo canceller lines the far end up with the
//! microphone by these times): neither thread waits for the other. The
//! capture thread drains it every frame, whether or not it runs the echo
//! canceller, so the reference is never stale when it is switched on; if the
//! capture thread stalls, what does not fit is dropped (the canceller keeps
//! only a second anyway).

use rtrb::{Consumer, Producer, RingBuffer};

/// Room for about a second of runs: a device callback hands over 5-20 ms.
const CAPACITY: usize = 128;

/// Played samples (48 kHz mono) and when the first of them was heard (ms
/// since the Unix epoch).
#[derive(Debug)]
struct PlayedRun {
    samples: Vec<f32>,
    first_heard_ms: f64,
}

/// Makes the two ends.
pub(crate) fn echo_reference() -> (PlayedTap, PlayedReader) {
    let (producer, consumer) = RingBuffer::new(CAPACITY);
    (PlayedTap(producer), PlayedReader(consumer))
}

/// The playout thread's end: what the device played goes in.
#[derive(Debug)]
pub(crate) struct PlayedTap(Producer<PlayedRun>);

impl PlayedTap {
    /// Adds played samples, the first heard at `first_heard_ms`; dropped
    /// when the ring is full.
    pub(crate) fn push(&mut self, played: &[f32], first_heard_ms: f64) {
        if !played.is_empty() && !self.0.is_full() {
            let _ = self.0.push(PlayedRun {
                samples: played.to_vec(),
                first_heard_ms,
            });
        }
    }
}

/// The capture thread's end.
#[derive(Debug)]
pub(crate) struct PlayedReader(Consumer<PlayedRun>);

impl PlayedReader {
    /// Hands `each` everything played since the last call, oldest first,
    /// run by run with when each run's first sample was heard.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&[f32], f64)) {
        while let Ok(run) = self.0.pop() {
            each(&run.samples, run.first_heard_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn played_runs_arrive_in_order_with_their_times_and_an_overfull_ring_drops_the_newest() {
        let (mut tap, mut reader) = echo_reference();
        let played: Vec<f32> = (0..1_000).map(|n| n as f32).collect();
        tap.push(&played[..400], 10.0);
        tap.push(&[], 15.0);
        tap.push(&played[400..], 18.0);
        let mut got = Vec::new();
        let mut times = Vec::new();
        reader.drain(|s, at| {
            got.extend_from_slice(s);
            times.push(at);
        });
        assert_eq!(got, played);
        assert_eq!(times, vec![10.0, 18.0]);
        for n in 0..CAPACITY + 50 {
            tap.push(&[0.5; 480], n as f64 * 10.0);
        }
        times.clear();
        reader.drain(|_, at| times.push(at));
        assert_eq!(times.len(), CAPACITY);
        assert_eq!(times.last(), Some(&((CAPACITY - 1) as f64 * 10.0)));
    }
}
