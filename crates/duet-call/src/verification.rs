//! The short code two people read to each other to know that nobody sits in
//! the middle of their call, the signaling server included.
//!
//! Each peer's DTLS certificate is named by its fingerprint in that peer's
//! session description, and DTLS refuses a certificate that does not match
//! the fingerprint it was given. Someone in the middle must therefore hand
//! each side a fingerprint of their own, and the two sides then hold
//! different pairs. Both peers hash the same pair (their own and the other's,
//! sorted), so they show the same code exactly when nobody replaced one.
//!
//! The derivation (`docs/protocol.md`, "Verification code"), which the
//! browser page repeats in JavaScript:
//! 1. From each description take the first `a=fingerprint:` value, trimmed
//!    and lowercased (`sha-256 ab:cd:…`).
//! 2. SHA-256 over the two, sorted bytewise and joined by one `\n`.
//! 3. Four emoji: the low 6 bits of digest bytes 0–3 index [`EMOJI`]. Six
//!    digits: digest bytes 4–7 as a big-endian number, modulo 1,000,000.

/// The 64 pictures of the code, in the order and with the names of the
/// Matrix specification's short authentication strings, chosen there to be
/// told apart at a glance and named without ambiguity.
pub const EMOJI: [(&str, &str); 64] = [
    ("🐶", "dog"),
    ("🐱", "cat"),
    ("🦁", "lion"),
    ("🐎", "horse"),
    ("🦄", "unicorn"),
    ("🐷", "pig"),
    ("🐘", "elephant"),
    ("🐰", "rabbit"),
    ("🐼", "panda"),
    ("🐓", "rooster"),
    ("🐧", "penguin"),
    ("🐢", "turtle"),
    ("🐟", "fish"),
    ("🐙", "octopus"),
    ("🦋", "butterfly"),
    ("🌷", "flower"),
    ("🌳", "tree"),
    ("🌵", "cactus"),
    ("🍄", "mushroom"),
    ("🌏", "globe"),
    ("🌙", "moon"),
    ("☁️", "cloud"),
    ("🔥", "fire"),
    ("🍌", "banana"),
    ("🍎", "apple"),
    ("🍓", "strawberry"),
    ("🌽", "corn"),
    ("🍕", "pizza"),
    ("🎂", "cake"),
    ("❤️", "heart"),
    ("😀", "smiley"),
    ("🤖", "robot"),
    ("🎩", "hat"),
    ("👓", "glasses"),
    ("🔧", "spanner"),
    ("🎅", "santa"),
    ("👍", "thumbs up"),
    ("☂️", "umbrella"),
    ("⌛", "hourglass"),
    ("⏰", "clock"),
    ("🎁", "gift"),
    ("💡", "light bulb"),
    ("📕", "book"),
    ("✏️", "pencil"),
    ("📎", "paperclip"),
    ("✂️", "scissors"),
    ("🔒", "lock"),
    ("🔑", "key"),
    ("🔨", "hammer"),
    ("☎️", "telephone"),
    ("🏁", "flag"),
    ("🚂", "train"),
    ("🚲", "bicycle"),
    ("✈️", "aeroplane"),
    ("🚀", "rocket"),
    ("🏆", "trophy"),
    ("⚽", "ball"),
    ("🎸", "guitar"),
    ("🎺", "trumpet"),
    ("🔔", "bell"),
    ("⚓", "anchor"),
    ("🎧", "headphones"),
    ("📁", "folder"),
    ("📌", "pin"),
];

/// The code of one connection: what both people should see alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationCode {
    emoji: [usize; 4],
    digits: u32,
}

impl VerificationCode {
    /// The code of a connection from its two session descriptions (ours and
    /// the other peer's, in either order); `None` when one has no fingerprint.
    pub fn from_descriptions(local_sdp: &str, remote_sdp: &str) -> Option<VerificationCode> {
        let mut pair = [fingerprint(local_sdp)?, fingerprint(remote_sdp)?];
        pair.sort();
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.join("\n").as_bytes());
        let bytes = digest.as_ref();
        let emoji = [0, 1, 2, 3].map(|i| usize::from(bytes[i] & 63));
        let digits = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) % 1_000_000;
        Some(VerificationCode { emoji, digits })
    }

    /// The names of the four pictures, to read aloud ("dog, rocket, …").
    pub fn names(&self) -> [&'static str; 4] {
        self.emoji.map(|i| EMOJI[i].1)
    }

    /// The four pictures alone.
    pub fn pictures(&self) -> [&'static str; 4] {
        self.emoji.map(|i| EMOJI[i].0)
    }

    /// The six digits, as two groups of three (`"048 213"`).
    pub fn digits(&self) -> String {
        format!("{:03} {:03}", self.digits / 1000, self.digits % 1000)
    }
}

impl std::fmt::Display for VerificationCode {
    /// `🐶 🚀 🍕 🔑 048 213`: the form of the report and of the browser page.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pictures().join(" "), self.digits())
    }
}

/// The first DTLS fingerprint of a session description, normalised.
pub(crate) fn fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=fingerprint:"))
        .map(|value| value.trim().to_ascii_lowercase())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "v=0\r\na=group:BUNDLE 0 1\r\na=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n";
    const B: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 1f:0e:2a:77:90:c3:5d:88:41:b2:aa:07:6e:19:d4:3c:52:8a:e1:f0:06:9b:7d:21:c8:3e:44:5a:bb:60:12:9f\r\n";

    /// `sdp` with the last byte of its fingerprint replaced by `last_pair`.
    fn with_fingerprint(sdp: &str, last_pair: &str) -> String {
        sdp.split("\r\n")
            .map(|line| match line.strip_prefix("a=fingerprint:") {
                Some(value) => format!("a=fingerprint:{}{last_pair}", &value[..value.len() - 2]),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn both_ends_of_a_call_get_the_same_code() {
        let caller = VerificationCode::from_descriptions(A, B).unwrap();
        let callee = VerificationCode::from_descriptions(B, A).unwrap();
        assert_eq!(caller, callee);
        assert_eq!(caller.to_string(), callee.to_string());
    }

    #[test]
    fn a_replaced_certificate_on_either_side_changes_the_code() {
        let honest = VerificationCode::from_descriptions(A, B).unwrap();
        // A relay in the middle answers each side with a certificate of its own.
        let other_a = with_fingerprint(A, "09");
        let other_b = with_fingerprint(B, "a0");
        assert_ne!(
            VerificationCode::from_descriptions(&other_a, B),
            Some(honest.clone())
        );
        assert_ne!(
            VerificationCode::from_descriptions(A, &other_b),
            Some(honest.clone())
        );
        // And what the two sides of such a call see differs from each other.
        let caller_side = VerificationCode::from_descriptions(A, &other_b).unwrap();
        let callee_side = VerificationCode::from_descriptions(B, &other_a).unwrap();
        assert_ne!(caller_side, callee_side);
    }

    #[test]
    fn hex_case_and_spacing_do_not_matter() {
        let upper = A.replace("sha-256 6B:8B", "SHA-256 6b:8b");
        assert_eq!(
            VerificationCode::from_descriptions(A, B),
            VerificationCode::from_descriptions(&upper, B)
        );
        let spaced = B.replace("a=fingerprint:sha", "a=fingerprint:  sha");
        assert_eq!(
            VerificationCode::from_descriptions(A, B),
            VerificationCode::from_descriptions(A, &spaced)
        );
    }

    #[test]
    fn a_description_without_a_fingerprint_has_no_code() {
        assert_eq!(VerificationCode::from_descriptions(A, "v=0\r\n"), None);
        assert_eq!(VerificationCode::from_descriptions("", B), None);
    }

    /// The documented derivation, step by step: if this changes, the two
    /// sides of a native-browser call stop agreeing.
    #[test]
    fn the_derivation_is_the_documented_one() {
        let code = VerificationCode::from_descriptions(A, B).unwrap();
        let pair = [fingerprint(B).unwrap(), fingerprint(A).unwrap()];
        assert!(pair[0] < pair[1], "b's fingerprint sorts first");
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.join("\n").as_bytes());
        let d = digest.as_ref();
        assert_eq!(
            code.emoji,
            [d[0] & 63, d[1] & 63, d[2] & 63, d[3] & 63].map(usize::from)
        );
        let number = (u32::from(d[4]) << 24 | u32::from(d[5]) << 16 | u32::from(d[6]) << 8)
            | u32::from(d[7]);
        assert_eq!(code.digits, number % 1_000_000);
        let text = code.to_string();
        // What the page's `verificationCode` (`crates/duet-web/static/privacy.js`)
        // gives for the same two descriptions, checked with node.
        assert_eq!(text, "🦄 👍 🔔 ⏰ 611 227");
        assert_eq!(code.names(), ["unicorn", "thumbs up", "bell", "clock"]);
        assert!(text.ends_with(&code.digits()));
        assert_eq!(code.digits().len(), 7);
    }

    #[test]
    fn every_picture_has_a_distinct_name() {
        let mut names: Vec<_> = EMOJI.iter().map(|(_, name)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 64);
    }
}
