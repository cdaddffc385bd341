//! Making up the audio of a wait from the cycles of what just played, and
//! meeting the real audio in step when the wait ends.
//!
//! While a late packet is waited for, the speaker needs something. Within a
//! voiced sound or a tone, the most natural thing is more of the same: the
//! last cycles of the waveform, repeated in step (what WebRTC's NetEQ calls
//! expansion). Opus's own concealment of the same wait drifts in pitch and
//! fades within a tick: on a 100 kbit/s link an 880 Hz beep with a wait in
//! its middle came out 20–40 Hz flat and at half its level for part of it,
//! and stopped being one steady tone. [`RecentAudio`] keeps what played;
//! [`CycleRepeat`] repeats its last cycles, at full level for the first
//! ticks and fading after, so a long wait does not become a buzz. When the
//! packet comes, [`in_step`] finds where the made-up audio lines up with it.

use crate::frame::FRAME_SAMPLES;

/// Audio kept of what played (30 ms): room for the longest cycle looked for
/// and the stretch it is compared over.
const KEPT: usize = FRAME_SAMPLES * 3 / 2;
/// Shortest and longest stretch repeated (2–15 ms): the longest holds a
/// period of the lowest voice (70 Hz) and whole numbers of periods of any
/// tone, so a tone whose period is no whole number of samples is repeated
/// without slipping.
const SHORTEST_CYCLE: usize = FRAME_SAMPLES / 10;
const LONGEST_CYCLE: usize = FRAME_SAMPLES * 3 / 4;
/// Samples a candidate cycle is compared over (5 ms).
const COMPARED: usize = FRAME_SAMPLES / 4;
/// How alike the last cycle and the one before must be, in shape times
/// level (1 less their difference's energy over theirs), for the sound to
/// count as periodic: a tone or a vowel is, noise and most consonants are
/// not (those are left to the decoder's concealment).
const PERIODIC: f32 = 0.9;
/// Ticks of a wait repeated at full level; after them each tick fades to
/// [`FADE_PER_TICK`] of the level it started at.
const FULL_TICKS: u32 = 3;
const FADE_PER_TICK: f32 = 0.6;
/// Longest the made-up audio may run on to meet the real audio in step
/// (10 ms: a period of a 100 Hz voice): the audio that ends a wait is up to
/// this much longer than the packet it plays.
pub const MAX_ALIGN: usize = FRAME_SAMPLES / 2;
/// How alike in shape the made-up and the real audio must be to be worth
/// lining up (a faded concealment is still alike in shape).
const ALIGNABLE: f32 = 0.5;

/// The last [`KEPT`] samples played.
#[derive(Debug, Default)]
pub(crate) struct RecentAudio {
    samples: Vec<f32>,
}

impl RecentAudio {
    /// Notes `audio` as played after what was played before.
    pub(crate) fn played(&mut self, audio: &[f32]) {
        self.samples.extend_from_slice(audio);
        let excess = self.samples.len().saturating_sub(KEPT);
        self.samples.drain(..excess);
    }

    /// Forgets what played (the stream starts afresh).
    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// A repeat of the last cycle, when what played is periodic.
    pub(crate) fn repeat(&self) -> Option<CycleRepeat> {
        let end = self.samples.len();
        let last = self.samples.get(end.checked_sub(COMPARED)?..)?;
        let mut best: Option<(usize, f32)> = None;
        for cycle in SHORTEST_CYCLE..=LONGEST_CYCLE {
            let Some(start) = end.checked_sub(COMPARED + cycle) else {
                break;
            };
            // Alike in shape and in level: a sound that is still swelling
            // (a beep's first milliseconds) repeats as a stutter.
            let Some(alike) = Likeness::of(&self.samples[start..start + COMPARED], last) else {
                continue;
            };
            let likeness = alike.shape * alike.level;
            if best.is_none_or(|(_, most)| likeness > most) {
                best = Some((cycle, likeness));
            }
        }
        let (cycle, likeness) = best?;
        (likeness >= PERIODIC).then(|| CycleRepeat {
            cycle: self.samples[end - cycle..].to_vec(),
            at: 0,
            ticks: 0,
        })
    }
}

/// How much of `made_up` to play before `real` so the two meet in step: the
/// offset (under [`MAX_ALIGN`]) at which `made_up` is most like the start of
/// `real` in shape, or 0 when nothing there is like it (noise, silence).
pub(crate) fn in_step(made_up: &[f32], real: &[f32]) -> usize {
    let Some(real) = real.get(..COMPARED) else {
        return 0;
    };
    let mut best = (0, ALIGNABLE);
    for offset in 0..MAX_ALIGN {
        let Some(candidate) = made_up.get(offset..offset + COMPARED) else {
            break;
        };
        let Some(alike) = Likeness::of(candidate, real) else {
            continue;
        };
        // A later offset must be clearly better: the added delay is real.
        if alike.shape > best.1 + 0.01 {
            best = (offset, alike.shape);
        }
    }
    best.0
}

/// How alike two stretches of audio of one length are.
struct Likeness {
    /// Normalised correlation: 1 for the same waveform at any level.
    shape: f32,
    /// 1 for the same energy, less the further apart they are.
    level: f32,
}

impl Likeness {
    /// `None` when either is silent.
    fn of(a: &[f32], b: &[f32]) -> Option<Likeness> {
        let energy = |s: &[f32]| s.iter().map(|x| x * x).sum::<f32>();
        let (a_energy, b_energy) = (energy(a), energy(b));
        if a_energy < f32::EPSILON || b_energy < f32::EPSILON {
            return None;
        }
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let both = (a_energy * b_energy).sqrt();
        Some(Likeness {
            shape: dot / both,
            level: 2.0 * both / (a_energy + b_energy),
        })
    }
}

/// The last cycle of a periodic sound, played on and on from where it ended.
#[derive(Debug)]
pub(crate) struct CycleRepeat {
    cycle: Vec<f32>,
    /// Where in the cycle the next sample comes from.
    at: usize,
    /// Ticks made so far.
    ticks: u32,
}

impl CycleRepeat {
    /// The next `len` samples, at the level the wait has come to.
    pub(crate) fn next(&mut self, len: usize) -> Vec<f32> {
        let level = |ticks: u32| FADE_PER_TICK.powi(ticks.saturating_sub(FULL_TICKS) as i32);
        let (from, to) = (level(self.ticks), level(self.ticks + 1));
        self.ticks += 1;
        (0..len)
            .map(|i| {
                let sample = self.cycle[self.at];
                self.at = (self.at + 1) % self.cycle.len();
                let through = i as f32 / len as f32;
                sample * (from + (to - from) * through)
            })
            .collect()
    }

    /// What would come next, without moving on: the audio the real audio
    /// fades in from when the wait ends.
    pub(crate) fn peek(&self, len: usize) -> Vec<f32> {
        let level = FADE_PER_TICK.powi(self.ticks.saturating_sub(FULL_TICKS) as i32);
        (0..len)
            .map(|i| self.cycle[(self.at + i) % self.cycle.len()] * level)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::PI;

    fn tone(hz: f32, from: usize, len: usize) -> Vec<f32> {
        (from..from + len)
            .map(|i| 0.5 * (2.0 * PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    #[test]
    fn a_tone_goes_on_in_step_for_the_first_ticks_of_a_wait() {
        for hz in [300.0, 880.0, 1234.5, 2900.0] {
            let mut recent = RecentAudio::default();
            recent.played(&tone(hz, 0, 2 * FRAME_SAMPLES));
            let mut repeat = recent.repeat().expect("a tone is periodic");
            let made_up: Vec<f32> = (0..FULL_TICKS)
                .flat_map(|_| repeat.next(FRAME_SAMPLES))
                .collect();
            let truth = tone(hz, 2 * FRAME_SAMPLES, made_up.len());
            let worst = made_up
                .iter()
                .zip(&truth)
                .fold(0.0f32, |worst, (a, b)| worst.max((a - b).abs()));
            // Within 1 % of the tone's level of where the tone would be.
            assert!(worst < 0.01, "{hz} Hz: off by {worst}");
        }
    }

    #[test]
    fn a_long_wait_fades() {
        let mut recent = RecentAudio::default();
        recent.played(&tone(440.0, 0, 2 * FRAME_SAMPLES));
        let mut repeat = recent.repeat().expect("a tone is periodic");
        let loudest = |audio: &[f32]| audio.iter().fold(0.0f32, |l, s| l.max(s.abs()));
        let levels: Vec<f32> = (0..8)
            .map(|_| loudest(&repeat.next(FRAME_SAMPLES)))
            .collect();
        assert!(levels[..3].iter().all(|&l| l > 0.49), "{levels:?}");
        assert!(levels[7] < 0.1, "{levels:?}");
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1e-3), "{levels:?}");
    }

    #[test]
    fn noise_and_silence_are_not_repeated() {
        let mut state = 1u64;
        let noise: Vec<f32> = (0..2 * FRAME_SAMPLES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let mut recent = RecentAudio::default();
        recent.played(&noise);
        assert!(recent.repeat().is_none(), "noise");
        recent.played(&vec![0.0; 2 * FRAME_SAMPLES]);
        assert!(recent.repeat().is_none(), "silence");
        recent.clear();
        assert!(recent.repeat().is_none(), "nothing played");
    }

    #[test]
    fn the_real_audio_is_met_where_the_made_up_audio_is_in_step_with_it() {
        // A tone made up from where it was, the real one 100 samples on.
        let made_up = tone(440.0, 0, FRAME_SAMPLES);
        let real = tone(440.0, 100, FRAME_SAMPLES);
        assert!((98..=100).contains(&in_step(&made_up, &real)));
        // In step already: nothing added.
        assert_eq!(in_step(&made_up, &made_up), 0);
        // Faded (the decoder's concealment dies away): the shape still counts.
        let faded: Vec<f32> = made_up.iter().map(|s| s * 0.2).collect();
        assert!((98..=100).contains(&in_step(&faded, &real)));
        // Silence on either side: nothing added.
        assert_eq!(in_step(&[0.0; FRAME_SAMPLES], &real), 0);
        assert_eq!(in_step(&made_up, &[0.0; FRAME_SAMPLES]), 0);
    }

    #[test]
    fn what_the_wait_ends_on_is_what_would_come_next() {
        let mut recent = RecentAudio::default();
        recent.played(&tone(880.0, 0, 2 * FRAME_SAMPLES));
        let mut repeat = recent.repeat().expect("a tone is periodic");
        let _ = repeat.next(FRAME_SAMPLES);
        let peeked = repeat.peek(100);
        assert_eq!(peeked, repeat.next(FRAME_SAMPLES)[..100]);
    }
}
