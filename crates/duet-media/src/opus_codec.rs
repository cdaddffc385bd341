//! Opus for calls: 48 kHz mono, 20 ms frames (packed one to three to a packet), VoIP mode with in-band FEC, and
//! a decoder that conceals lost packets.

use opus::{Application, Bitrate, Channels};

use crate::MediaError;
use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// Largest Opus packet we produce (over what 60 ms at 510 kbit/s needs).
const MAX_PACKET: usize = 4000;
/// The longest audio one Opus packet can carry: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// The samples at 48 kHz that an Opus packet carries, as its table of
/// contents says; `None` for something that is not an Opus packet. Duet sends
/// 20 ms packets (60 ms on a narrow link), other senders also 10, 40 or 60 ms ones: a receiver that
/// plays by timestamp needs to know how far each packet reaches.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    if packet.is_empty() {
        return None;
    }
    let samples = opus::packet::get_nb_samples(packet, SAMPLE_RATE).ok()?;
    u32::try_from(samples)
        .ok()
        .filter(|&n| n > 0 && n as usize <= MAX_PACKET_SAMPLES)
}

/// Opus encoder for mono packets of 20, 40 or 60 ms.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    packet: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

fn codec_error(what: &str, err: opus::Error) -> MediaError {
    MediaError::Codec(format!("Opus {what}: {err}"))
}

impl OpusEncoder {
    /// VoIP mode, in-band FEC on (tuned for 10 % loss), at `bitrate_bps`.
    pub fn new(bitrate_bps: u32) -> Result<OpusEncoder, MediaError> {
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)
            .map_err(|e| codec_error("encoder", e))?;
        encoder
            .set_inband_fec(true)
            .map_err(|e| codec_error("FEC", e))?;
        encoder
            .set_packet_loss_perc(10)
            .map_err(|e| codec_error("loss percentage", e))?;
        let mut this = OpusEncoder {
            encoder,
            packet: vec![0; MAX_PACKET],
        };
        this.set_bitrate(bitrate_bps)?;
        Ok(this)
    }

    /// Changes the bitrate (6–510 kbit/s).
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), MediaError> {
        let bps = i32::try_from(bps.clamp(6_000, 510_000)).unwrap_or(510_000);
        self.encoder
            .set_bitrate(Bitrate::Bits(bps))
            .map_err(|e| codec_error("bitrate", e))
    }

    /// Samples the decoder's output lags the input by (the encoder's lookahead).
    pub fn lookahead(&mut self) -> Result<usize, MediaError> {
        let samples = self
            .encoder
            .get_lookahead()
            .map_err(|e| codec_error("lookahead", e))?;
        Ok(usize::try_from(samples).unwrap_or(0))
    }

    /// Encodes one, two or three 20 ms frames ([`FRAME_SAMPLES`] each) into
    /// one packet: longer packets save headers on a narrow link.
    pub fn encode(&mut self, samples: &[f32]) -> Result<Vec<u8>, MediaError> {
        let frames = samples.len() / FRAME_SAMPLES;
        if !samples.len().is_multiple_of(FRAME_SAMPLES) || !(1..=3).contains(&frames) {
            return Err(MediaError::Codec(format!(
                "Opus packets here are 1 to 3 frames of {FRAME_SAMPLES} samples, got {} samples",
                samples.len()
            )));
        }
        let len = self
            .encoder
            .encode_float(samples, &mut self.packet)
            .map_err(|e| codec_error("encoding", e))?;
        Ok(self.packet[..len].to_vec())
    }
}

/// Opus decoder with packet-loss concealment.
pub struct OpusDecoder {
    decoder: opus::Decoder,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<OpusDecoder, MediaError> {
        let decoder = opus::Decoder::new(SAMPLE_RATE, Channels::Mono)
            .map_err(|e| codec_error("decoder", e))?;
        Ok(OpusDecoder { decoder })
    }

    /// Decodes a packet into the samples it carries (20 or 60 ms from Duet; up to
    /// 120 ms from other senders). `None` is a lost packet: the decoder
    /// conceals 20 ms of it (and a corrupt packet is concealed the same way).
    pub fn decode(&mut self, packet: Option<&[u8]>) -> Vec<f32> {
        let Some(packet) = packet else {
            return self.conceal();
        };
        let mut out = vec![0.0; MAX_PACKET_SAMPLES];
        match self.decoder.decode_float(packet, &mut out, false) {
            Ok(n) => {
                out.truncate(n.min(MAX_PACKET_SAMPLES));
                out
            }
            Err(err) => {
                tracing::debug!(%err, "Opus packet undecodable; concealing it");
                self.conceal()
            }
        }
    }

    /// 20 ms made up by the decoder's packet-loss concealment.
    fn conceal(&mut self) -> Vec<f32> {
        let mut out = vec![0.0; FRAME_SAMPLES];
        if self.decoder.decode_float(&[], &mut out, false).is_err() {
            out.fill(0.0);
        }
        out
    }

    /// Recovers a lost packet from the FEC data carried in the packet after it.
    pub fn decode_fec(&mut self, next_packet: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; FRAME_SAMPLES];
        if self
            .decoder
            .decode_float(next_packet, &mut out, true)
            .is_err()
        {
            return self.decode(None);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_says_how_much_audio_it_carries() {
        let mut encoder = OpusEncoder::new(32_000).expect("encoder");
        assert!(encoder.encode(&[0.1; 100]).is_err(), "not a whole frame");
        assert!(
            encoder.encode(&[0.1; 4 * FRAME_SAMPLES]).is_err(),
            "over 60 ms"
        );
        let long = encoder.encode(&[0.1; 3 * FRAME_SAMPLES]).expect("60 ms");
        assert_eq!(opus_packet_samples(&long), Some(3 * FRAME_SAMPLES as u32));
        let mut decoder = OpusDecoder::new().expect("decoder");
        assert_eq!(decoder.decode(Some(&long)).len(), 3 * FRAME_SAMPLES);
        let packet = encoder.encode(&[0.1; FRAME_SAMPLES]).expect("encodes");
        assert_eq!(opus_packet_samples(&packet), Some(FRAME_SAMPLES as u32));
        assert_eq!(decoder.decode(Some(&packet)).len(), FRAME_SAMPLES);
        assert_eq!(decoder.decode(None).len(), FRAME_SAMPLES, "concealment");
    }

    #[test]
    fn something_that_is_not_opus_has_no_length() {
        assert_eq!(opus_packet_samples(&[]), None);
        // A TOC byte of code 3 (arbitrary frame count) with no count byte.
        assert_eq!(opus_packet_samples(&[0x03]), None);
    }
}
