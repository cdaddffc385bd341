//! Short-lived TURN credentials, handed to each joined peer (`ice_servers` in
//! `joined`, `docs/protocol.md`), so nobody has to invent, share or rotate a
//! TURN password by hand.
//!
//! The form is the one coturn's `use-auth-secret` (and most TURN servers)
//! accept: the user name is `EXPIRY:PEER_ID` (EXPIRY in Unix seconds), the
//! password base64(HMAC-SHA1(secret, user name)). The TURN server, holding
//! the same secret, checks both without asking anyone; after EXPIRY it
//! refuses them. Pure functions of their inputs, the clock included.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One ICE server as a browser's `RTCIceServer` has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServerEntry {
    /// `turn:HOST:PORT` URLs sharing these credentials.
    pub urls: Vec<String>,
    /// User name (for TURN).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Password (for TURN).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// The TURN servers a `duet serve` hands out and the secret it shares with them.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// `turn:HOST:PORT` URLs (`--turn-url`).
    pub urls: Vec<String>,
    /// The secret shared with the TURN server (`--turn-secret`).
    pub secret: String,
    /// How long credentials stay valid (`--turn-ttl`).
    pub ttl: Duration,
}

impl fmt::Debug for TurnConfig {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"…")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnConfig {
    /// Credentials for `peer`, valid from `now_unix` (seconds) for the TTL.
    pub fn credentials_for(&self, peer: &str, now_unix: u64) -> IceServerEntry {
        let username = format!("{}:{peer}", now_unix.saturating_add(self.ttl.as_secs()));
        IceServerEntry {
            urls: self.urls.clone(),
            credential: password(&self.secret, &username),
            username,
        }
    }
}

/// base64(HMAC-SHA1(secret, username)): the password a TURN server with the
/// same secret expects for `username`.
pub fn password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_coturns_hmac_of_the_user_name() {
        // RFC 2202's second HMAC-SHA1 test case, base64-encoded.
        assert_eq!(
            password("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn credentials_expire_after_the_ttl_and_name_the_peer() {
        let config = TurnConfig {
            urls: vec!["turn:10.0.0.1:3478".into()],
            secret: "s3cret".into(),
            ttl: Duration::from_secs(3600),
        };
        let entry = config.credentials_for("p-3f2a", 1_764_460_000);
        assert_eq!(entry.username, "1764463600:p-3f2a");
        assert_eq!(entry.credential, password("s3cret", "1764463600:p-3f2a"));
        assert_eq!(entry.urls, vec!["turn:10.0.0.1:3478"]);
        let json = serde_json::to_value(&entry).expect("serialises");
        assert_eq!(json["username"], "1764463600:p-3f2a");
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let config = TurnConfig {
            urls: vec![],
            secret: "hunter2".into(),
            ttl: Duration::from_secs(1),
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
