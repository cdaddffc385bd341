//! The speaker's queue, without a device: resampled samples wait here for the
//! output callback, next to the 48 kHz samples they were made from, so the
//! callback can tell which received samples it is handing to the device (the
//! beep detector listens to exactly those).

use std::collections::VecDeque;

use crate::frame::SAMPLE_RATE;

/// Device-rate samples queued for the output callback, and the 48 kHz samples
/// they came from, kept in step.
#[derive(Debug)]
pub(crate) struct OutputQueue {
    /// Samples at the device's rate, in the order the device plays them.
    device: VecDeque<f32>,
    /// The 48 kHz samples the queued device samples were made from.
    heard: VecDeque<f32>,
    /// 48 kHz samples given to the resampler that have not come out of it yet.
    in_resampler: VecDeque<f32>,
    /// The device's rate: one device sample stands for `SAMPLE_RATE / device_rate` 48 kHz samples.
    device_rate: u64,
    /// Remainders (in 1/`device_rate` of a 48 kHz sample) of the samples
    /// moving `in_resampler` → `heard` and `heard` → the callback.
    carry_in: u64,
    carry_out: u64,
    /// Most device samples queued; older ones are dropped beyond it.
    max_queued: usize,
}

impl OutputQueue {
    /// A queue for a device at `device_rate` holding at most `max_queued` device samples.
    pub(crate) fn new(device_rate: u32, max_queued: usize) -> OutputQueue {
        OutputQueue {
            device: VecDeque::new(),
            heard: VecDeque::new(),
            in_resampler: VecDeque::new(),
            device_rate: u64::from(device_rate.max(1)),
            carry_in: 0,
            carry_out: 0,
            max_queued,
        }
    }

    /// Queues `resampled`, what the resampler returned for `original` (48 kHz).
    /// A resampler holds some input back; the 48 kHz samples move on only as
    /// their device samples come out.
    pub(crate) fn push(&mut self, original: &[f32], resampled: &[f32]) {
        self.in_resampler.extend(original);
        let count = to_48k(&mut self.carry_in, resampled.len(), self.device_rate);
        let count = count.min(self.in_resampler.len());
        self.heard.extend(self.in_resampler.drain(..count));
        self.device.extend(resampled);
        let excess = self.device.len().saturating_sub(self.max_queued);
        if excess > 0 {
            self.device.drain(..excess);
            let heard_excess = (excess as u64 * u64::from(SAMPLE_RATE) / self.device_rate) as usize;
            let heard_excess = heard_excess.min(self.heard.len());
            self.heard.drain(..heard_excess);
        }
    }

    /// Fills `out` (device samples, one per frame) from the queue, silence
    /// when it runs dry, and puts the 48 kHz samples those came from in `heard`.
    pub(crate) fn pop_into(&mut self, out: &mut [f32], heard: &mut Vec<f32>) {
        heard.clear();
        let available = out.len().min(self.device.len());
        for (slot, sample) in out.iter_mut().zip(self.device.drain(..available)) {
            *slot = sample;
        }
        out[available..].fill(0.0);
        let count = to_48k(&mut self.carry_out, available, self.device_rate).min(self.heard.len());
        heard.extend(self.heard.drain(..count));
    }

    /// Device samples queued now.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.device.len()
    }
}

/// How many whole 48 kHz samples `device_samples` at `device_rate` stand for;
/// the remainder stays in `carry` for the next call, so nothing drifts.
fn to_48k(carry: &mut u64, device_samples: usize, device_rate: u64) -> usize {
    let total = *carry + device_samples as u64 * u64::from(SAMPLE_RATE);
    *carry = total % device_rate;
    (total / device_rate) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_48_khz_the_callback_hears_exactly_what_it_plays() {
        let mut queue = OutputQueue::new(48_000, 9_600);
        let samples: Vec<f32> = (0..960).map(|n| n as f32).collect();
        queue.push(&samples, &samples);
        let mut out = vec![0.0; 480];
        let mut heard = Vec::new();
        queue.pop_into(&mut out, &mut heard);
        assert_eq!(out, samples[..480]);
        assert_eq!(heard, samples[..480]);
        // Runs dry: the rest of the buffer is silence, and only real samples are heard.
        let mut out = vec![1.0; 600];
        queue.pop_into(&mut out, &mut heard);
        assert_eq!(out[..480], samples[480..]);
        assert!(out[480..].iter().all(|&s| s == 0.0));
        assert_eq!(heard, samples[480..]);
        assert_eq!(queue.queued(), 0);
    }

    #[test]
    fn at_another_rate_heard_samples_follow_played_ones_in_proportion() {
        // 44.1 kHz device: 441 device samples stand for 480 received ones.
        let mut queue = OutputQueue::new(44_100, 44_100);
        let original = vec![0.5f32; 4_800];
        let resampled = vec![0.5f32; 4_410];
        queue.push(&original, &resampled);
        let mut out = vec![0.0; 441];
        let mut heard = Vec::new();
        let mut total_heard = 0;
        for _ in 0..10 {
            queue.pop_into(&mut out, &mut heard);
            total_heard += heard.len();
        }
        assert_eq!(total_heard, 4_800);
    }

    #[test]
    fn samples_held_in_the_resampler_are_not_heard_before_they_come_out() {
        let mut queue = OutputQueue::new(44_100, 44_100);
        // The resampler kept everything back (it waits for a whole chunk).
        queue.push(&[0.25; 480], &[]);
        let mut out = vec![0.0; 441];
        let mut heard = Vec::new();
        queue.pop_into(&mut out, &mut heard);
        assert!(heard.is_empty());
        // Next push: the chunk comes out, with the held samples first.
        queue.push(&[0.75; 480], &[0.5; 882]);
        queue.pop_into(&mut out, &mut heard);
        assert_eq!(heard.len(), 480);
        assert!(heard.iter().all(|&s| s == 0.25));
    }

    #[test]
    fn an_overfull_queue_drops_its_oldest_samples_on_both_sides() {
        let mut queue = OutputQueue::new(48_000, 100);
        let samples: Vec<f32> = (0..250).map(|n| n as f32).collect();
        queue.push(&samples, &samples);
        assert_eq!(queue.queued(), 100);
        let mut out = vec![0.0; 100];
        let mut heard = Vec::new();
        queue.pop_into(&mut out, &mut heard);
        assert_eq!(out, samples[150..]);
        assert_eq!(heard, samples[150..]);
    }
}
