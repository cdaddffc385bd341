//! How audio is packed for the link it crosses, without a clock of its own.
//!
//! On a normal link Duet sends Opus at 32 kbit/s in 20 ms packets. On a
//! narrow one (the path overflowed lately and holds the target down: a call
//! that sends little has a low target on any link, and keeps its audio) that costs more than it seems: each packet also carries ~58
//! bytes of RTP, UDP, IP and SRTP, so fifty packets a second are 23 kbit/s
//! of headers, and speech takes 55 kbit/s of a 100 kbit/s link. Below
//! [`NARROW_BELOW`] the sender packs 60 ms into a packet at 24 kbit/s (as
//! libwebrtc's audio network adaptor lengthens frames on a narrow uplink):
//! speech, coded at a variable rate, takes ~21 kbit/s on the wire, stays
//! wideband, and leaves the rest for pictures. It goes back above [`NORMAL_ABOVE`]; the gap and
//! [`MIN_DWELL`] keep a target that wavers near one line from switching
//! every few packets.

use std::time::{Duration, Instant};

use duet_media::frame::FRAME_SAMPLES;

/// The connection's target under which audio packs tight.
const NARROW_BELOW: u64 = 150_000;
/// The target above which it goes back to normal packing.
const NORMAL_ABOVE: u64 = 250_000;
/// The shortest time between two switches.
const MIN_DWELL: Duration = Duration::from_secs(2);
/// The longest a switch to longer packets waits for a pause in the sound.
/// The first long packet leaves 40 ms later than a short one with the same
/// start would have, so the receiver plays 40 ms of concealment there: in a
/// pause nobody hears it, in a word (or a beep) it is a gap. On the 100
/// kbit/s rig a switch 90 ms before a beep broke it up. Sound with no pause
/// (music) switches after this long anyway.
const PAUSE_WAIT: Duration = Duration::from_secs(1);

/// How the encoder packs audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioPacking {
    /// Opus bitrate.
    pub(crate) bitrate_bps: u32,
    /// 20 ms frames in one packet.
    pub(crate) frames_per_packet: usize,
}

impl AudioPacking {
    /// 20 ms packets at 32 kbit/s: the lowest latency, for links with room.
    pub(crate) const NORMAL: AudioPacking = AudioPacking {
        bitrate_bps: 32_000,
        frames_per_packet: 1,
    };
    /// 60 ms packets at 24 kbit/s: a third of the headers, for narrow links.
    /// Not 16: there the encoder narrowed speech to mediumband 3 s after the
    /// switch and to narrowband (a telephone's 4 kHz) 6 s after, saving only
    /// 3 kbit/s of what speech takes at 24 (11 against 14), and each step
    /// was a seam in the sound that broke a beep it fell in.
    pub(crate) const NARROW: AudioPacking = AudioPacking {
        bitrate_bps: 24_000,
        frames_per_packet: 3,
    };

    /// Samples (at 48 kHz) one packet carries.
    pub(crate) fn samples_per_packet(self) -> usize {
        FRAME_SAMPLES * self.frames_per_packet
    }
}

/// Picks the [`AudioPacking`] for the congestion controller's target.
#[derive(Debug)]
pub(crate) struct AudioRateRule {
    packing: AudioPacking,
    last_switch: Option<Instant>,
    /// Since when a switch to longer packets waits for a pause.
    waiting_since: Option<Instant>,
}

impl Default for AudioRateRule {
    fn default() -> Self {
        AudioRateRule {
            packing: AudioPacking::NORMAL,
            last_switch: None,
            waiting_since: None,
        }
    }
}

impl AudioRateRule {
    /// The packing for the next packet, given the whole connection's target
    /// (0 while there is none yet, which keeps the packing as it is),
    /// whether the path holds it down, and whether the sound is in a pause
    /// where the packet starts.
    pub(crate) fn packing(
        &mut self,
        target_bps: u64,
        path_limited: bool,
        pause: bool,
        now: Instant,
    ) -> AudioPacking {
        let wanted = if target_bps == 0 {
            self.packing
        } else if !path_limited {
            AudioPacking::NORMAL
        } else if target_bps < NARROW_BELOW {
            AudioPacking::NARROW
        } else if target_bps > NORMAL_ABOVE {
            AudioPacking::NORMAL
        } else {
            self.packing
        };
        let settled = self
            .last_switch
            .is_none_or(|at| now.saturating_duration_since(at) >= MIN_DWELL);
        let longer = wanted.frames_per_packet > self.packing.frames_per_packet;
        self.waiting_since = if wanted != self.packing && settled && longer {
            Some(self.waiting_since.unwrap_or(now))
        } else {
            None
        };
        let waited_out = self
            .waiting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= PAUSE_WAIT);
        if wanted != self.packing && settled && (!longer || pause || waited_out) {
            tracing::debug!(
                target_kbps = target_bps / 1000,
                packet_ms = wanted.frames_per_packet * 20,
                opus_kbps = wanted.bitrate_bps / 1000,
                "audio packing changed"
            );
            self.packing = wanted;
            self.last_switch = Some(now);
            self.waiting_since = None;
        }
        self.packing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_narrow_link_packs_audio_tight_and_a_wide_one_loosens_it_again() {
        let mut rule = AudioRateRule::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(
            rule.packing(0, true, true, at(0)),
            AudioPacking::NORMAL,
            "no target yet"
        );
        assert_eq!(
            rule.packing(1_400_000, true, true, at(0)),
            AudioPacking::NORMAL
        );
        assert_eq!(
            rule.packing(100_000, true, true, at(1)),
            AudioPacking::NARROW
        );
        assert_eq!(
            rule.packing(200_000, true, true, at(5)),
            AudioPacking::NARROW,
            "in the gap"
        );
        assert_eq!(
            rule.packing(300_000, true, true, at(6)),
            AudioPacking::NORMAL
        );
    }

    #[test]
    fn a_target_wavering_across_the_line_switches_at_most_every_two_seconds() {
        let mut rule = AudioRateRule::default();
        let start = Instant::now();
        assert_eq!(
            rule.packing(100_000, true, true, start),
            AudioPacking::NARROW
        );
        let mut switches = 0;
        let mut last = AudioPacking::NARROW;
        for tick in 1..=45 {
            let target = if tick % 2 == 0 { 100_000 } else { 400_000 };
            let now = start + Duration::from_millis(100 * tick);
            let packing = rule.packing(target, true, true, now);
            switches += usize::from(packing != last);
            last = packing;
        }
        assert_eq!(switches, 2, "4.5 s of wavering: a switch 2 s after each");
    }

    #[test]
    fn a_low_target_the_path_does_not_hold_down_keeps_normal_packing() {
        // Audio alone sends ~50 kbit/s, and the target follows it.
        let mut rule = AudioRateRule::default();
        let start = Instant::now();
        assert_eq!(
            rule.packing(75_000, false, true, start),
            AudioPacking::NORMAL
        );
        assert_eq!(
            rule.packing(75_000, true, true, start),
            AudioPacking::NARROW
        );
        let later = start + Duration::from_secs(3);
        assert_eq!(
            rule.packing(75_000, false, true, later),
            AudioPacking::NORMAL
        );
    }

    #[test]
    fn longer_packets_wait_for_a_pause_and_shorter_ones_do_not() {
        use AudioPacking as P;
        let start = Instant::now();
        // (target, a pause?, ms after the start, the packing chosen)
        let steps: [&[(u64, bool, u64, AudioPacking)]; 2] = [
            &[
                // Narrow, but a beep is sounding: no switch yet...
                (100_000, false, 0, P::NORMAL),
                (100_000, false, 80, P::NORMAL),
                // ...until the pause after it.
                (100_000, true, 120, P::NARROW),
                // Back to short packets at once, pause or not.
                (400_000, false, 2_200, P::NORMAL),
            ],
            // Sound without a pause switches after a second.
            &[
                (100_000, false, 0, P::NORMAL),
                (100_000, false, 990, P::NORMAL),
                (100_000, false, 1_000, P::NARROW),
            ],
        ];
        for steps in steps {
            let mut rule = AudioRateRule::default();
            for &(target, pause, ms, expected) in steps {
                let now = start + Duration::from_millis(ms);
                assert_eq!(rule.packing(target, true, pause, now), expected, "{ms} ms");
            }
        }
    }

    #[test]
    fn speech_packed_for_a_narrow_link_stays_wideband() {
        use duet_media::OpusEncoder;
        use duet_media::speech_like::speech_like;
        // A call's audio, packed normally for 2 s, then for a narrow link.
        let speech = speech_like(22.0, 0.5, 7);
        let mut encoder = OpusEncoder::new(AudioPacking::NORMAL.bitrate_bps).expect("encoder");
        let (normal, narrow) = speech.split_at(2 * 48_000);
        for frame in normal.chunks_exact(AudioPacking::NORMAL.samples_per_packet()) {
            encoder.encode(frame).expect("encodes");
        }
        encoder
            .set_bitrate(AudioPacking::NARROW.bitrate_bps)
            .expect("bitrate");
        for (n, frame) in narrow
            .chunks_exact(AudioPacking::NARROW.samples_per_packet())
            .enumerate()
        {
            let packet = encoder.encode(frame).expect("encodes");
            // The band, by the packet's first byte (RFC 6716, 3.1):
            // configurations 0-7 are SILK narrowband and mediumband.
            let configuration = packet[0] >> 3;
            assert!(
                configuration >= 8,
                "packet {n} ({} s after the switch) is configuration {configuration}",
                n * 60 / 1000
            );
        }
    }

    #[test]
    fn packets_carry_twenty_or_sixty_milliseconds() {
        assert_eq!(AudioPacking::NORMAL.samples_per_packet(), 960);
        assert_eq!(AudioPacking::NARROW.samples_per_packet(), 2880);
    }
}
