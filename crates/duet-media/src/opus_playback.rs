//! Decoding a received Opus stream for playout, where a packet may come late
//! and still be played.
//!
//! A late packet is waited for: the speaker needs something for the ticks it
//! is missing, and then the packet is played after all. Made up by the
//! decoder's own concealment, that wait puts audio into the decoder's state
//! that the packet then contradicts: the decoder believes the concealed
//! audio came before the packet, when the packet covers that very time. On
//! what follows it overshoots, for tens of milliseconds and up to twice the
//! level: a beep at half of full scale came out clipped at full scale,
//! 20 ms of it, on a 100 kbit/s link. [`OpusPlayback`] makes up the wait
//! from a second decoder that follows the first, so the decoder that plays
//! the packets never hears of it, and crossfades from the made-up audio back
//! into the real one. A packet that is lost for good (never to be played) is
//! concealed by the decoder itself, or rebuilt from the next packet's
//! in-band FEC, as Opus means it to be.

use crate::MediaError;
use crate::frame::FRAME_SAMPLES;
use crate::opus_codec::{OpusDecoder, opus_packet_samples};
pub use crate::pitch_repeat::MAX_ALIGN;
use crate::pitch_repeat::{CycleRepeat, RecentAudio, in_step};

/// Samples over which the audio made up for a wait fades into the real audio
/// that follows it (5 ms): long enough that the step between the two is no
/// click, short enough that little of either is smeared.
const CROSSFADE: usize = FRAME_SAMPLES / 4;
/// The same after a packet lost for good (20 ms): the decoder's first packet
/// after its own concealment comes out a quarter to a third too quiet for
/// part of it, a dip that made a beep with a loss in its middle no steady tone.
const AFTER_A_LOSS: usize = FRAME_SAMPLES;

/// The received stream's decoder, and the one that makes up for late packets.
#[derive(Debug)]
pub struct OpusPlayback {
    /// Decodes every packet played and conceals packets lost for good.
    decoder: OpusDecoder,
    /// Fed everything `decoder` is, so its state is close to it; conceals
    /// the ticks spent waiting for a late packet.
    stand_in: OpusDecoder,
    /// The last tick played was made up (a wait, or a loss made up from
    /// the cycles before it): the next real audio fades in from where that
    /// left off.
    waited: bool,
    /// What played last, whose cycles a wait within a tone or a vowel repeats.
    recent: RecentAudio,
    /// The wait under way, made up from the cycles of what played before it
    /// (`None` when that was not periodic: the stand-in conceals it).
    repeat: Option<CycleRepeat>,
    /// A packet lost for good was made up from the cycles before it: the
    /// decoder's first audio after its own concealment of the loss is
    /// faded in over [`AFTER_A_LOSS`].
    lost_in_a_cycle: bool,
}

impl OpusPlayback {
    /// Two fresh 48 kHz mono decoders.
    pub fn new() -> Result<OpusPlayback, MediaError> {
        Ok(OpusPlayback {
            decoder: OpusDecoder::new()?,
            stand_in: OpusDecoder::new()?,
            waited: false,
            recent: RecentAudio::default(),
            repeat: None,
            lost_in_a_cycle: false,
        })
    }

    /// The audio of `packet`, exactly as long as its table of contents says
    /// (a packet that decodes to another length is cut or padded), so that
    /// the speaker is fed the timeline the playout moved through; after a
    /// wait, led in by up to [`MAX_ALIGN`] more of the wait. What is not
    /// Opus at all is concealed as 20 ms.
    pub fn packet(&mut self, packet: &[u8]) -> Vec<f32> {
        let Some(samples) = opus_packet_samples(packet) else {
            return self.lost(None);
        };
        let mut audio = self.decoder.decode(Some(packet));
        audio.resize(samples as usize, 0.0);
        self.fade_in(&mut audio);
        self.stand_in.decode(Some(packet));
        self.recent.played(&audio);
        audio
    }

    /// 20 ms while the packet due is late: it will be played when it comes.
    /// Within a tone or a vowel, more of its cycles; otherwise the stand-in's
    /// concealment.
    pub fn wait(&mut self) -> Vec<f32> {
        let concealed = self.stand_in.decode(None);
        let audio = self.cycles().unwrap_or(concealed);
        self.waited = true;
        self.recent.played(&audio);
        audio
    }

    /// 20 ms of a packet lost for good: rebuilt from `next`'s in-band FEC
    /// when the packet that follows it is here; otherwise, within a tone or
    /// a vowel, more of its cycles (the decoder conceals it all the same,
    /// so its state goes on as Opus means it to), or the decoder's
    /// concealment.
    pub fn lost(&mut self, next: Option<&[u8]>) -> Vec<f32> {
        if next.is_none()
            && let Some(made_up) = self.cycles()
        {
            rebuild(&mut self.decoder, None);
            rebuild(&mut self.stand_in, None);
            self.waited = true;
            self.lost_in_a_cycle = true;
            self.recent.played(&made_up);
            return made_up;
        }
        let mut audio = rebuild(&mut self.decoder, next);
        self.fade_in(&mut audio);
        rebuild(&mut self.stand_in, next);
        self.recent.played(&audio);
        audio
    }

    /// 20 ms of silence: nothing to play, the stream has not started or has
    /// paused. Whatever comes next starts afresh.
    pub fn silence(&mut self) -> Vec<f32> {
        self.waited = false;
        self.lost_in_a_cycle = false;
        self.repeat = None;
        self.recent.clear();
        vec![0.0; FRAME_SAMPLES]
    }

    /// The next 20 ms of the cycles that played before this wait or loss
    /// began, when what played was periodic.
    fn cycles(&mut self) -> Option<Vec<f32>> {
        if !self.waited {
            self.repeat = self.recent.repeat();
        }
        self.repeat
            .as_mut()
            .map(|repeat| repeat.next(FRAME_SAMPLES))
    }

    /// After a wait, `audio` (what the real decoder made next) starts from
    /// where the stand-in's audio would have gone on, in step with it: the
    /// made-up audio runs on until its waveform lines up with the real
    /// audio's start (at most [`MAX_ALIGN`] more), so a tone or a voice goes
    /// on in phase. Faded in at whatever phase the wait ended, a beep came
    /// out with a kink in its waveform and was no longer one steady tone.
    fn fade_in(&mut self, audio: &mut Vec<f32>) {
        if !std::mem::take(&mut self.waited) {
            return;
        }
        // The stand-in then went on concealing: it conceals a packet that is
        // in fact played, as the real decoder did in the wait before this.
        let concealed = self.stand_in.decode(None);
        let went_on = match self.repeat.take() {
            Some(repeat) => repeat.peek(concealed.len()),
            None => concealed,
        };
        let lead_in = in_step(&went_on, audio);
        let made_up = &went_on[lead_in..];
        let crossfade = if std::mem::take(&mut self.lost_in_a_cycle) {
            AFTER_A_LOSS
        } else {
            CROSSFADE
        };
        let len = crossfade.min(audio.len()).min(made_up.len());
        for (i, (sample, made_up)) in audio.iter_mut().zip(made_up).take(len).enumerate() {
            let weight = (i as f32 + 0.5) / len as f32;
            *sample = *sample * weight + made_up * (1.0 - weight);
        }
        audio.splice(0..0, went_on[..lead_in].iter().copied());
    }
}

/// 20 ms of a lost packet from `decoder`: from `next`'s FEC, or concealed.
fn rebuild(decoder: &mut OpusDecoder, next: Option<&[u8]>) -> Vec<f32> {
    match next {
        Some(next) => decoder.decode_fec(next),
        None => decoder.decode(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opus_codec::OpusEncoder;

    /// `packet_ms` packets at 24 kbit/s of a 100 ms 880 Hz beep at half of
    /// full scale, starting `offset_ms` after the first second, with silence
    /// around it; and the packet it starts in.
    fn beep_packets(offset_ms: usize, packet_ms: usize) -> (Vec<Vec<u8>>, usize) {
        let mut encoder = OpusEncoder::new(24_000).expect("encoder");
        let packet = packet_ms * 48;
        let start = 48_000 + offset_ms * 48;
        let mut signal = vec![0.0f32; 96_000];
        for (i, sample) in signal[start..start + 4_800].iter_mut().enumerate() {
            *sample = 0.5 * (2.0 * std::f32::consts::PI * 880.0 * i as f32 / 48_000.0).sin();
        }
        let packets = signal
            .chunks(packet)
            .map(|chunk| encoder.encode(chunk).expect("encodes"))
            .collect();
        (packets, start / packet)
    }

    /// What is played of `packets` when the packet `late` is waited for
    /// `ticks` ticks, then played.
    fn played_after_a_wait(packets: &[Vec<u8>], late: usize, ticks: usize) -> Vec<f32> {
        let mut playback = OpusPlayback::new().expect("decoders");
        let mut played = Vec::new();
        for (n, packet) in packets.iter().enumerate() {
            if n == late {
                for _ in 0..ticks {
                    played.extend(playback.wait());
                }
            }
            played.extend(playback.packet(packet));
        }
        played
    }

    #[test]
    fn a_late_packet_played_after_its_wait_does_not_overshoot() {
        let mut loudest = 0.0f32;
        for offset_ms in (0..60).step_by(5) {
            let (packets, first) = beep_packets(offset_ms, 60);
            for late in first..first + 3 {
                for ticks in 1..=3 {
                    let played = played_after_a_wait(&packets, late, ticks);
                    loudest = played.iter().fold(loudest, |l, s| l.max(s.abs()));
                }
            }
        }
        // The beep itself peaks at about 0.56 once coded. Concealing the
        // wait with the playing decoder reached 1.0 (clipped) here.
        assert!(loudest < 0.6, "loudest sample {loudest}");
    }

    /// Whether `played` holds one test beep, at its frequency.
    fn one_steady_beep(played: &[f32]) -> bool {
        let mut detector = crate::beep::BeepDetector::new();
        detector.push(played, 0.0);
        detector.push(&[0.0; 48_000], played.len() as f64 / 48.0);
        let heard = detector.beeps();
        heard.len() == 1 && (heard[0].frequency_hz - 880.0).abs() <= 5.0
    }

    /// For beeps starting anywhere in 20 and 60 ms packets, `play` of each
    /// packet that starts `within` (ms) of the beep as played (the codec
    /// delays it 6.5 ms); `play` says which cases were no beep.
    fn each_packet_within_a_beep(
        within: std::ops::Range<usize>,
        mut play: impl FnMut(&[Vec<u8>], usize, usize) -> Vec<usize>,
    ) -> (usize, Vec<(usize, usize, usize)>) {
        let (mut tried, mut missed) = (0, Vec::new());
        for packet_ms in [20, 60] {
            for offset_ms in (0..60).step_by(5) {
                let (packets, first) = beep_packets(offset_ms, packet_ms);
                for n in first + 1..packets.len() {
                    let into_beep = (n * packet_ms).saturating_sub(1000 + offset_ms);
                    if within.contains(&into_beep) {
                        let failed = play(&packets, n, packet_ms);
                        tried += 1;
                        missed.extend(failed.into_iter().map(|case| (packet_ms, into_beep, case)));
                    }
                }
            }
        }
        (tried, missed)
    }

    #[test]
    fn a_packet_lost_in_the_middle_of_a_beep_leaves_it_one_steady_beep() {
        // Lost after 10 ms of the beep were heard, and before its last 10 ms.
        let (tried, missed) = each_packet_within_a_beep(17..96, |packets, lost, packet_ms| {
            let mut playback = OpusPlayback::new().expect("decoders");
            let mut played = Vec::new();
            for (n, packet) in packets.iter().enumerate() {
                if n == lost {
                    for _ in 0..packet_ms / 20 {
                        played.extend(playback.lost(None));
                    }
                } else {
                    played.extend(playback.packet(packet));
                }
            }
            if one_steady_beep(&played) {
                vec![]
            } else {
                vec![0]
            }
        });
        // Concealed by the decoder, 25 of these 64 were no beep.
        assert!(tried > 40, "{tried}");
        assert!(missed.is_empty(), "{} of {tried}: {missed:?}", missed.len());
    }

    #[test]
    fn a_wait_in_the_middle_of_a_beep_leaves_it_one_steady_beep() {
        // From 10 ms of the beep heard, the wait goes on with it, to its end;
        // 1 to 4 ticks of waiting.
        let (tried, missed) = each_packet_within_a_beep(17..106, |packets, late, _| {
            (1..=4)
                .filter(|&ticks| !one_steady_beep(&played_after_a_wait(packets, late, ticks)))
                .collect()
        });
        // Waits made up by the decoder's concealment: 20 of 48 of these
        // with 60 ms packets and one or two ticks waited were no beep (its
        // pitch drifted and it faded); at four ticks, all were too long.
        assert!(tried > 40, "{tried}");
        assert!(
            missed.is_empty(),
            "{} of {tried} packets: {missed:?}",
            missed.len()
        );
    }

    #[test]
    fn every_call_gives_the_audio_it_stands_for() {
        let mut encoder = OpusEncoder::new(32_000).expect("encoder");
        let long = encoder.encode(&[0.1; 3 * FRAME_SAMPLES]).expect("60 ms");
        let mut playback = OpusPlayback::new().expect("decoders");
        assert_eq!(playback.silence().len(), FRAME_SAMPLES);
        assert_eq!(playback.packet(&long).len(), 3 * FRAME_SAMPLES);
        assert_eq!(playback.wait().len(), FRAME_SAMPLES);
        assert_eq!(
            playback.packet(&long).len(),
            3 * FRAME_SAMPLES,
            "after a wait"
        );
        assert_eq!(playback.lost(Some(&long)).len(), FRAME_SAMPLES);
        assert_eq!(playback.lost(None).len(), FRAME_SAMPLES);
        assert_eq!(playback.packet(&[]).len(), FRAME_SAMPLES, "not Opus");
    }

    #[test]
    fn the_real_audio_after_a_wait_starts_where_the_made_up_audio_left_off() {
        let mut encoder = OpusEncoder::new(32_000).expect("encoder");
        let tone: Vec<Vec<u8>> = (0..20)
            .map(|n| {
                let frame: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|i| {
                        let t = (n * FRAME_SAMPLES + i) as f32 / 48_000.0;
                        0.3 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                    })
                    .collect();
                encoder.encode(&frame).expect("encodes")
            })
            .collect();
        let mut playback = OpusPlayback::new().expect("decoders");
        let mut played = Vec::new();
        for packet in &tone[..10] {
            played.extend(playback.packet(packet));
        }
        let made_up = playback.wait();
        let last_made_up = made_up[made_up.len() - 1];
        let real = playback.packet(&tone[10]);
        // One sample's step at most what a 440 Hz tone at 0.3 moves in one
        // sample (0.017), with room for the codec: no click at the seam.
        assert!(
            (real[0] - last_made_up).abs() < 0.05,
            "{last_made_up} then {}",
            real[0]
        );
    }
}
