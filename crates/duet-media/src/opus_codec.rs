//! Opus for calls: 48 kHz mono, 20 ms frames, VoIP mode with in-band FEC, and
//! a decoder that conceals lost packets.

use opus::{Application, Bitrate, Channels};

use crate::MediaError;
use crate::frame::{FRAME_SAMPLES, SAMPLE_RATE};

/// Largest Opus packet we produce (well over what 20 ms at 510 kbit/s needs).
const MAX_PACKET: usize = 1500;

/// Opus encoder for one 20 ms mono frame at a time.
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

    /// Encodes exactly [`FRAME_SAMPLES`] samples into one packet.
    pub fn encode(&mut self, samples: &[f32]) -> Result<Vec<u8>, MediaError> {
        if samples.len() != FRAME_SAMPLES {
            return Err(MediaError::Codec(format!(
                "Opus frames are {FRAME_SAMPLES} samples, got {}",
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

    /// Decodes a packet into 20 ms of samples. `None` is a lost packet: the
    /// decoder conceals it (and a corrupt packet is concealed the same way).
    pub fn decode(&mut self, packet: Option<&[u8]>) -> Vec<f32> {
        let mut out = vec![0.0; FRAME_SAMPLES];
        let result = match packet {
            Some(packet) => self.decoder.decode_float(packet, &mut out, false),
            None => self.decoder.decode_float(&[], &mut out, false),
        };
        match result {
            Ok(n) => out.resize(n.min(FRAME_SAMPLES), 0.0),
            Err(err) => {
                tracing::debug!(%err, "Opus packet undecodable; concealing it");
                if self.decoder.decode_float(&[], &mut out, false).is_err() {
                    out.fill(0.0);
                }
            }
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
