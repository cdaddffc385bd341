//! Two peers in a call that play what they receive to speakers of their own
//! (PulseAudio null sinks: real, paced devices that play nowhere), each
//! recording what its speaker played and reporting what it measured.

use std::path::PathBuf;

use super::pulse::PulseAudio;
use super::{LivePeer, Scratch, peer_with_env};

/// The caller and the callee, each playing to its own null sink.
pub struct SpeakerCall {
    pub peers: Vec<LivePeer>,
}

impl SpeakerCall {
    /// Loads a null sink per peer into `pulse` and starts a call of
    /// `seconds` in `room` on the server at `url`: the caller ("a") sends
    /// 660 Hz beeps, the callee ("b") 880 Hz, and each records what its
    /// speaker played to `a.wav` / `b.wav` in `scratch`.
    pub fn start(
        scratch: &Scratch,
        pulse: &PulseAudio,
        url: &str,
        room: &str,
        seconds: u64,
    ) -> SpeakerCall {
        let duration = seconds.to_string();
        let env = pulse.env();
        let mut peers = Vec::new();
        for (name, role, tone) in [("a", "caller", "660"), ("b", "callee", "880")] {
            let sink = format!("duet_speaker_{name}");
            pulse.load_null_sink(&sink);
            let record = SpeakerCall::recording(scratch, name);
            let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.push(("PULSE_SINK", &sink));
            let extra = [
                "--room",
                room,
                "--speaker",
                "default",
                "--duration",
                &duration,
                "--record-audio",
                record.to_str().unwrap(),
            ];
            peers.push(peer_with_env(scratch, name, role, url, tone, &extra, &env));
        }
        SpeakerCall { peers }
    }

    /// Where peer `name` records what its speaker played.
    pub fn recording(scratch: &Scratch, name: &str) -> PathBuf {
        scratch.path(&format!("{name}.wav"))
    }

    /// Waits for both peers to end the call by themselves (`limit` at most
    /// each), and checks they did so without an error.
    pub fn wait(&mut self, limit: std::time::Duration) {
        for peer in &mut self.peers {
            let status = peer.wait_for_exit(limit);
            assert!(status.success(), "{}", peer.stderr());
        }
    }
}
