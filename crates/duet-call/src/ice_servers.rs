//! STUN and TURN servers as people write them (`--ice`, `docs/cli.md`) and as
//! the signaling server hands them out (`ice_servers` in `joined`), checked
//! before a call starts rather than skipped in silence halfway through one.
//!
//! webrtc-rs 0.21 relays over UDP only: it skips `turns:` and
//! `?transport=tcp` servers with nothing but a log line, which would leave a
//! person on a UDP-blocking network with a call that never connects and no
//! reason. Such URLs are refused here with a sentence that says why.

use webrtc::peer_connection::RTCIceServer;

/// Why an ICE server cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceServerError {
    /// Not a STUN or TURN URL at all.
    #[error("{0:?} is not a STUN or TURN server: use stun:HOST:PORT or turn:USER:PASS@HOST:PORT")]
    NotAnIceServer(String),
    /// A TURN server without the user and password it needs.
    #[error("{0:?} has no credentials: a TURN server needs turn:USER:PASS@HOST:PORT")]
    NoCredentials(String),
    /// A kind of server the WebRTC stack cannot use.
    #[error("{url:?}: {why}")]
    Unsupported {
        /// As given.
        url: String,
        /// Why not, and what works instead.
        why: &'static str,
    },
}

/// One STUN or TURN server, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:HOST:PORT` or `turn:HOST:PORT[?transport=udp]`, without credentials.
    pub url: String,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN password (empty for STUN).
    pub credential: String,
}

impl IceServer {
    /// Parses `stun:HOST:PORT` or `turn:USER:PASS@HOST:PORT`.
    ///
    /// The password is what follows the **last** `:` before the `@`, so a
    /// user name with colons works: coturn's short-lived names are
    /// `EXPIRY:NAME` (`turn:1795992873:duet-a:PASSWORD@host:3478`). Either
    /// part may be percent-encoded (`%3A` for `:`, `%40` for `@`).
    pub fn parse(url: &str) -> Result<IceServer, IceServerError> {
        let not_ice = || IceServerError::NotAnIceServer(url.to_owned());
        let (scheme, rest) = url.split_once(':').ok_or_else(not_ice)?;
        let scheme = scheme.to_ascii_lowercase();
        if rest.is_empty() {
            return Err(not_ice());
        }
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, rest),
        };
        if address.is_empty() || address.starts_with('/') {
            return Err(not_ice());
        }
        match scheme.as_str() {
            "stun" | "turn" => {}
            "turns" => {
                return Err(IceServerError::Unsupported {
                    url: redacted(url),
                    why: "TURN over TLS (turns:) is not supported: Duet's WebRTC stack relays over UDP only; use turn:HOST:PORT",
                });
            }
            "stuns" => {
                return Err(IceServerError::Unsupported {
                    url: redacted(url),
                    why: "STUN over TLS (stuns:) is not supported; use stun:HOST:PORT",
                });
            }
            _ => return Err(not_ice()),
        }
        if let Some((_, query)) = address.split_once('?')
            && query
                .split('&')
                .any(|pair| pair.eq_ignore_ascii_case("transport=tcp"))
        {
            return Err(IceServerError::Unsupported {
                url: redacted(url),
                why: "TURN over TCP (?transport=tcp) is not supported: Duet's WebRTC stack relays over UDP only; drop ?transport=tcp",
            });
        }
        let (username, credential) = match credentials {
            Some(credentials) => {
                let (user, pass) = credentials
                    .rsplit_once(':')
                    .ok_or_else(|| IceServerError::NoCredentials(redacted(url)))?;
                (percent_decoded(user), percent_decoded(pass))
            }
            None => (String::new(), String::new()),
        };
        if scheme == "turn" && (username.is_empty() || credential.is_empty()) {
            return Err(IceServerError::NoCredentials(redacted(url)));
        }
        Ok(IceServer {
            url: format!("{scheme}:{address}"),
            username,
            credential,
        })
    }

    /// A server the signaling server handed out (`ice_servers` in `joined`):
    /// its URL without credentials, and the credentials beside it.
    pub fn from_parts(
        url: &str,
        username: &str,
        credential: &str,
    ) -> Result<IceServer, IceServerError> {
        if url.contains('@') {
            return Err(IceServerError::NotAnIceServer(redacted(url)));
        }
        let with_credentials = match url.split_once(':') {
            Some((scheme, address)) if !username.is_empty() => {
                let encode = |text: &str| {
                    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                };
                format!(
                    "{scheme}:{}:{}@{address}",
                    encode(username),
                    encode(credential)
                )
            }
            _ => url.to_owned(),
        };
        IceServer::parse(&with_credentials)
    }

    /// Whether this is a TURN (relay) server.
    pub fn is_turn(&self) -> bool {
        self.url.starts_with("turn:")
    }

    /// The server as webrtc-rs takes it.
    pub(crate) fn to_rtc(&self) -> RTCIceServer {
        RTCIceServer {
            urls: vec![self.url.clone()],
            username: self.username.clone(),
            credential: self.credential.clone(),
        }
    }
}

/// `url` with its password (if any) replaced, for error messages and logs.
fn redacted(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((credentials, address)) => match credentials.rsplit_once(':') {
            Some((before, _password)) if before.contains(':') => {
                format!("{before}:…@{address}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_turn_parse_as_the_cli_writes_them() {
        let stun = IceServer::parse("stun:stun.example.org:3478").unwrap();
        assert_eq!(stun.url, "stun:stun.example.org:3478");
        assert!(!stun.is_turn());
        let turn = IceServer::parse("turn:alice:s3cret@turn.example.org:3478").unwrap();
        assert_eq!(turn.url, "turn:turn.example.org:3478");
        assert_eq!(
            (turn.username.as_str(), turn.credential.as_str()),
            ("alice", "s3cret")
        );
        assert!(turn.is_turn());
        let udp = IceServer::parse("turn:a:b@10.0.0.1:3478?transport=udp").unwrap();
        assert_eq!(udp.url, "turn:10.0.0.1:3478?transport=udp");
    }

    #[test]
    fn a_short_lived_user_name_keeps_its_colon() {
        // Reproduced behind two NATs: the user reached coturn as "1795992873".
        let turn = IceServer::parse("turn:1795992873:duet-a:Zm9vYmFy+/=@10.0.3.1:3478").unwrap();
        assert_eq!(turn.username, "1795992873:duet-a");
        assert_eq!(turn.credential, "Zm9vYmFy+/=");
        assert_eq!(turn.url, "turn:10.0.3.1:3478");
    }

    #[test]
    fn percent_encoding_lets_any_character_through() {
        let turn = IceServer::parse("turn:us%40er:pa%3Ass%2Fw@host:3478").unwrap();
        assert_eq!(turn.username, "us@er");
        assert_eq!(turn.credential, "pa:ss/w");
    }

    #[test]
    fn what_the_stack_cannot_use_is_refused_with_the_reason() {
        let err = IceServer::parse("turns:u:p@host:5349").unwrap_err();
        assert!(err.to_string().contains("UDP only"), "{err}");
        assert!(
            !err.to_string().contains(":p@"),
            "no password in errors: {err}"
        );
        let err = IceServer::parse("turn:u:p@host:3478?transport=tcp").unwrap_err();
        assert!(err.to_string().contains("?transport=tcp"), "{err}");
        assert!(matches!(
            IceServer::parse("stuns:host:5349"),
            Err(IceServerError::Unsupported { .. })
        ));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "http://nope",
            "stun:",
            "turn:",
            "host:3478",
            "turn:u:p@",
            "stun:/x",
        ] {
            assert!(IceServer::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            IceServer::parse("turn:nopass@host:1"),
            Err(IceServerError::NoCredentials(_))
        ));
        assert!(matches!(
            IceServer::parse("turn:host:3478"),
            Err(IceServerError::NoCredentials(_))
        ));
    }

    #[test]
    fn servers_handed_out_by_the_signaling_server_keep_their_credentials_whole() {
        let turn = IceServer::from_parts(
            "turn:10.0.0.1:3478?transport=udp",
            "1764463600:p-3f2a",
            "q1+/w2=",
        )
        .unwrap();
        assert_eq!(turn.url, "turn:10.0.0.1:3478?transport=udp");
        assert_eq!(turn.username, "1764463600:p-3f2a");
        assert_eq!(turn.credential, "q1+/w2=");
        let stun = IceServer::from_parts("stun:10.0.0.1:3478", "", "").unwrap();
        assert_eq!(stun.url, "stun:10.0.0.1:3478");
        assert!(IceServer::from_parts("turns:h:5349", "u", "p").is_err());
        assert!(IceServer::from_parts("turn:u:p@h:1", "u", "p").is_err());
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redacted("turn:1795:a:secret@h:1"), "turn:1795:a:…@h:1");
        assert_eq!(redacted("turn:a:secret@h:1"), "turn:a:…@h:1");
        assert_eq!(redacted("stun:h:1"), "stun:h:1");
    }
}
