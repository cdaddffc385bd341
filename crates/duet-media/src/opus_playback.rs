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

/// Samples over which the audio made up for a wait fades into the real audio
/// that follows it (5 ms): long enough that the step between the two is no
/// click, short enough that little of either is smeared.
const CROSSFADE: usize = FRAME_SAMPLES / 4;

/// The received stream's decoder, and the one that makes up for late packets.
#[derive(Debug)]
pub struct OpusPlayback {
    /// Decodes every packet played and conceals packets lost for good.
    decoder: OpusDecoder,
    /// Fed everything `decoder` is, so its state is close to it; conceals
    /// the ticks spent waiting for a late packet.
    stand_in: OpusDecoder,
    /// The last tick played was made up by `stand_in`: the next real audio
    /// fades in from where that left off.
    waited: bool,
}

impl OpusPlayback {
    /// Two fresh 48 kHz mono decoders.
    pub fn new() -> Result<OpusPlayback, MediaError> {
        Ok(OpusPlayback {
            decoder: OpusDecoder::new()?,
            stand_in: OpusDecoder::new()?,
            waited: false,
        })
    }

    /// The audio of `packet`, exactly as long as its table of contents says
    /// (a packet that decodes to another length is cut or padded), so that
    /// the speaker is fed the timeline the playout moved through. What is not
    /// Opus at all is concealed as 20 ms.
    pub fn packet(&mut self, packet: &[u8]) -> Vec<f32> {
        let Some(samples) = opus_packet_samples(packet) else {
            return self.lost(None);
        };
        let mut audio = self.decoder.decode(Some(packet));
        audio.resize(samples as usize, 0.0);
        self.fade_in(&mut audio);
        self.stand_in.decode(Some(packet));
        audio
    }

    /// 20 ms while the packet due is late: it will be played when it comes.
    pub fn wait(&mut self) -> Vec<f32> {
        self.waited = true;
        self.stand_in.decode(None)
    }

    /// 20 ms of a packet lost for good: rebuilt from `next`'s in-band FEC
    /// when the packet that follows it is here, otherwise concealed.
    pub fn lost(&mut self, next: Option<&[u8]>) -> Vec<f32> {
        let mut audio = rebuild(&mut self.decoder, next);
        self.fade_in(&mut audio);
        rebuild(&mut self.stand_in, next);
        audio
    }

    /// 20 ms of silence: nothing to play, the stream has not started or has
    /// paused. Whatever comes next starts afresh.
    pub fn silence(&mut self) -> Vec<f32> {
        self.waited = false;
        vec![0.0; FRAME_SAMPLES]
    }

    /// After a wait, `audio` (what the real decoder made next) starts from
    /// where the stand-in's audio would have gone on.
    fn fade_in(&mut self, audio: &mut [f32]) {
        if !std::mem::take(&mut self.waited) {
            return;
        }
        // The stand-in then went on concealing: it conceals a packet that is
        // in fact played, as the real decoder did in the wait before this.
        let went_on = self.stand_in.decode(None);
        let len = CROSSFADE.min(audio.len()).min(went_on.len());
        for (i, (sample, made_up)) in audio.iter_mut().zip(&went_on).take(len).enumerate() {
            let weight = (i as f32 + 0.5) / len as f32;
            *sample = *sample * weight + made_up * (1.0 - weight);
        }
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

    /// 60 ms packets at 24 kbit/s of a 100 ms 880 Hz beep at half of full
    /// scale, starting `offset_ms` into a packet, with silence around it.
    fn beep_packets(offset_ms: usize) -> (Vec<Vec<u8>>, usize) {
        let mut encoder = OpusEncoder::new(24_000).expect("encoder");
        let packet = 3 * FRAME_SAMPLES;
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

    /// The loudest sample played when the packet `late` of `packets` is
    /// waited for `ticks` ticks, then played.
    fn loudest_after_a_wait(packets: &[Vec<u8>], late: usize, ticks: usize) -> f32 {
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
        played.iter().fold(0.0, |loudest, s| loudest.max(s.abs()))
    }

    #[test]
    fn a_late_packet_played_after_its_wait_does_not_overshoot() {
        let mut loudest = 0.0f32;
        for offset_ms in (0..60).step_by(5) {
            let (packets, first) = beep_packets(offset_ms);
            for late in first..first + 3 {
                for ticks in 1..=3 {
                    loudest = loudest.max(loudest_after_a_wait(&packets, late, ticks));
                }
            }
        }
        // The beep itself peaks at about 0.56 once coded. Concealing the
        // wait with the playing decoder reached 1.0 (clipped) here.
        assert!(loudest < 0.6, "loudest sample {loudest}");
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
