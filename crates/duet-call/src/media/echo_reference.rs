//! What the speaker played, carried from the playout thread to the capture
//! thread: the echo canceller's far-end reference.
//!
//! A single-producer single-consumer ring: neither thread waits for the
//! other. The capture thread drains it every frame, whether or not it runs
//! the echo canceller, so the reference is never stale when it is switched on;
//! if the capture thread stalls, what does not fit is dropped (the canceller
//! only needs the last 200 ms anyway).

use rtrb::{Consumer, Producer, RingBuffer};

/// Room for one second of 48 kHz audio.
const CAPACITY: usize = 48_000;

/// Makes the two ends.
pub(crate) fn echo_reference() -> (PlayedTap, PlayedReader) {
    let (producer, consumer) = RingBuffer::new(CAPACITY);
    (PlayedTap(producer), PlayedReader(consumer))
}

/// The playout thread's end: what the device played goes in.
#[derive(Debug)]
pub(crate) struct PlayedTap(Producer<f32>);

impl PlayedTap {
    /// Adds played samples; those that do not fit are dropped.
    pub(crate) fn push(&mut self, played: &[f32]) {
        let fits = played.len().min(self.0.slots());
        if let Ok(chunk) = self.0.write_chunk_uninit(fits) {
            chunk.fill_from_iter(played[..fits].iter().copied());
        }
    }
}

/// The capture thread's end.
#[derive(Debug)]
pub(crate) struct PlayedReader(Consumer<f32>);

impl PlayedReader {
    /// Hands `each` everything played since the last call, oldest first (in
    /// up to two slices).
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&[f32])) {
        let available = self.0.slots();
        if let Ok(chunk) = self.0.read_chunk(available) {
            let (first, second) = chunk.as_slices();
            each(first);
            if !second.is_empty() {
                each(second);
            }
            chunk.commit_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn played_audio_arrives_in_order_and_an_overfull_ring_drops_the_newest() {
        let (mut tap, mut reader) = echo_reference();
        let played: Vec<f32> = (0..1_000).map(|n| n as f32).collect();
        tap.push(&played);
        let mut got = Vec::new();
        reader.drain(|s| got.extend_from_slice(s));
        assert_eq!(got, played);
        tap.push(&vec![1.0; CAPACITY + 500]);
        got.clear();
        reader.drain(|s| got.extend_from_slice(s));
        assert_eq!(got.len(), CAPACITY);
    }
}
